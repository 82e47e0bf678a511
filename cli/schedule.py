"""`vdm schedule`: show a sampling plan (timesteps, noise levels, sampler) and draw its log-SNR.

Sources, any number of them on one plot: vdm's own schedules by name (the vp schedules of spec 2,
``flow`` for spec 15.7, ``edm`` for Karras levels) and diffusers scheduler configs
(``--from-diffusers scheduler_config.json``, read by vdm.backends.interop.diffusers).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Annotated

import typer

import vdm_ref

from .errors import fail

_OWN = ("flow", "edm")  # besides the names of vdm_ref.SCHEDULES


def _read_config(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read --from-diffusers {path}: {exc.strerror or exc}")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"--from-diffusers {path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")
    if not isinstance(config, dict):
        fail(f"--from-diffusers {path} must hold a JSON object (a scheduler config), got {type(config).__name__}")
    return config


def register(app: typer.Typer) -> None:
    @app.command("schedule")
    def schedule(
        names: Annotated[list[str] | None, typer.Argument(
            metavar="[NAME]...",
            help=f"vdm schedules to show: {', '.join(vdm_ref.SCHEDULES)} (vp, DDIM on spec 6 timesteps), "
            "flow (spec 15.7) or edm (Karras levels).",
        )] = None,
        from_diffusers: Annotated[list[Path] | None, typer.Option(
            "--from-diffusers", help="A diffusers scheduler_config.json (repeatable).")] = None,
        steps: Annotated[int, typer.Option(min=1, help="Sampling steps N.")] = 50,
        spacing: Annotated[str, typer.Option(help="Spacing of the vp schedules named (spec 6).")] = "trailing",
        zero_terminal_snr: Annotated[bool, typer.Option(
            "--zero-terminal-snr", help="Rescale the named vp schedules to zero terminal SNR (spec 2.5).")] = False,
        shift: Annotated[float, typer.Option(help="Flow time shift of 'flow' (spec 15.2).")] = 1.0,
        mu: Annotated[float | None, typer.Option(
            help="Resolution-dependent shift mu (spec 15.3) for 'flow' and dynamic-shifting configs.")] = None,
        seq_len: Annotated[int | None, typer.Option(
            min=1, help="Token count, turned into mu by a dynamic-shifting config's line (spec 15.3).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the plan(s) as JSON.")] = False,
        plot: Annotated[Path | None, typer.Option(help="Draw log-SNR and sigma against the step (PNG).")] = None,
    ) -> None:
        """Print the sampling plan of a schedule or a diffusers scheduler config; optionally plot it.

        Exit status: 0 done, 2 bad input, 3 the plot could not be written.
        """
        import numpy as np
        from vdm.backends.interop.diffusers import plan_from_diffusers
        from vdm.backends.interop.plan import edm_plan, flow_plan, vp_plan

        import vdm_ref

        own = {name: (lambda name=name: vp_plan(name, steps, spacing=spacing, zero_terminal_snr=zero_terminal_snr))
               for name in vdm_ref.SCHEDULES}
        own["flow"] = lambda: flow_plan(steps, shift=shift, mu=mu)
        own["edm"] = lambda: edm_plan(steps)
        names, configs = list(names or []), list(from_diffusers or [])
        if not names and not configs:
            fail(f"name a schedule ({', '.join([*vdm_ref.SCHEDULES, *_OWN])}) or give --from-diffusers FILE")
        plans, labels = [], []
        try:
            for name in names:
                if name not in own:
                    fail(f"unknown schedule {name!r}; choose one of {', '.join(own)} or use --from-diffusers")
                plans.append(own[name]())
                labels.append(name)
            for path in configs:
                plans.append(plan_from_diffusers(_read_config(path), steps, mu=mu, seq_len=seq_len))
                labels.append(f"{path.name} ({plans[-1].scheduler})")
        except (ValueError, TypeError) as exc:
            fail(str(exc))
        if as_json:
            out = [p.to_dict() for p in plans]
            typer.echo(json.dumps(out[0] if len(out) == 1 else out, indent=2))
        else:
            for label, p in zip(labels, plans, strict=True):
                typer.echo(f"{label}: {p.family}, {p.sampler}, prediction {p.prediction}, {len(p.timesteps)} network "
                           f"calls; timesteps {np.array2string(p.timesteps, precision=4, threshold=12)}")
                for note in p.notes:
                    typer.echo(f"  note: {note}")
        if plot is not None:
            if importlib.util.find_spec("PIL") is None:
                fail("vdm schedule --plot needs Pillow: pip install 'vdm[torch]'")
            from vdm.backends.media import save_line_plots

            steps_x = [np.arange(len(p.sigma)) for p in plans]
            panels = [
                ("log-SNR = log(alpha^2 / sigma^2) at each level, the final one included",
                 [(lbl, x, p.log_snr()) for lbl, x, p in zip(labels, steps_x, plans, strict=True)]),
                ("sigma of x = alpha x0 + sigma eps (spec 14.1)",
                 [(lbl, x, p.sigma) for lbl, x, p in zip(labels, steps_x, plans, strict=True)]),
            ]
            try:
                save_line_plots(plot, panels, log_y=(False, None))
            except OSError as exc:
                fail(f"cannot write --plot {plot}: {exc.strerror or exc}", code=3)
            if not as_json:
                typer.echo(f"wrote {plot}")
