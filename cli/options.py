"""The sampling options `vdm sample` and `vdm eval` share, declared once (typer reads the
``Annotated`` metadata), so both commands name, bound and explain them the same way."""

from __future__ import annotations

from typing import Annotated

import typer
from vdm.backends.sampling import CONDITIONAL_DEFAULT_SAMPLER, DEFAULT_ETA, DEFAULT_SAMPLERS, SAMPLER_NAMES

import vdm_ref

_DEFAULTS = "; ".join(f"{s} on {' and '.join(f for f, d in DEFAULT_SAMPLERS.items() if d == s)} models"
                      for s in dict.fromkeys(DEFAULT_SAMPLERS.values()))
Sampler = Annotated[str | None, typer.Option(
    help=f"One of {', '.join(SAMPLER_NAMES)} ({', '.join(vdm_ref.SAMPLERS)}: vp models only). Default: {_DEFAULTS}; "
         f"{CONDITIONAL_DEFAULT_SAMPLER} with --extend/--interpolate.")]
Spacing = Annotated[str, typer.Option(help=f"Timestep spacing: {', '.join(vdm_ref.SPACINGS)}.")]
Eta = Annotated[float | None, typer.Option(
    min=0.0, max=1.0, help="Noise scale of " + ", ".join(f"{s} (default {e:g})" for s, e in DEFAULT_ETA.items())
                          + "; the other samplers are deterministic.")]
Shift = Annotated[float | None, typer.Option(
    help="Flow models: time shift of the levels (spec 15.2; default 1 = none).")]
Karras = Annotated[bool | None, typer.Option(
    "--karras/--no-karras", help="EDM models: Karras (default) or uniform sigmas (spec 15.5, 15.1).")]
FinalSigma = Annotated[str, typer.Option(
    help=f"Solvers' final level: {' or '.join(vdm_ref.sigmas.FINAL_LEVELS)} (spec 15.6).")]
Clip = Annotated[float, typer.Option(min=0.0, help="Clip predicted x0 to [-clip, clip] (0 = off).")]
Threshold = Annotated[float | None, typer.Option(
    help="Dynamic thresholding quantile of predicted x0 (e.g. 0.995; off by default).")]
Guidance = Annotated[float | None, typer.Option(
    help="Classifier-free guidance scale w for conditional models (1 = plain conditional).")]
