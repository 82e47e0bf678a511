"""The sampling options `vdm sample` and `vdm eval` share, declared once (typer reads the
``Annotated`` metadata), so both commands name, bound and explain them the same way."""

from __future__ import annotations

from typing import Annotated

import typer
from vdm.backends.sampling import SAMPLER_NAMES

import vdm_ref

Sampler = Annotated[str | None, typer.Option(
    help=f"One of {', '.join(SAMPLER_NAMES)} ({', '.join(vdm_ref.SAMPLERS)}: vp models only). Default: ddim on a vp "
         "model, euler on flow and edm models (and with --extend/--interpolate).")]
Spacing = Annotated[str, typer.Option(help=f"Timestep spacing: {', '.join(vdm_ref.SPACINGS)}.")]
Eta = Annotated[float | None, typer.Option(
    min=0.0, max=1.0, help="Noise scale of ddim (default 0, deterministic) and euler_ancestral (default 1).")]
Shift = Annotated[float | None, typer.Option(
    help="Flow models: time shift of the levels (spec 15.2; default 1 = none).")]
Karras = Annotated[bool | None, typer.Option(
    "--karras/--no-karras", help="EDM models: Karras (default) or uniform sigmas (spec 15.5, 15.1).")]
FinalSigma = Annotated[str, typer.Option(help="Solvers' final level: zero or sigma_min (spec 15.6).")]
Clip = Annotated[float, typer.Option(min=0.0, help="Clip predicted x0 to [-clip, clip] (0 = off).")]
Threshold = Annotated[float | None, typer.Option(
    help="Dynamic thresholding quantile of predicted x0 (e.g. 0.995; off by default).")]
Guidance = Annotated[float | None, typer.Option(
    help="Classifier-free guidance scale w for conditional models (1 = plain conditional).")]
