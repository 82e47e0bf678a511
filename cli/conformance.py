"""`vdm conformance BACKEND`: check a backend against every clause of the spec."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from vdm.backends.conformance.protocol import DTYPES
from vdm.backends.conformance.runner import BUILTIN

from .errors import CANNOT_WRITE, fail, require_extras

# The built-in backends that need an extra (numpy needs none; a module:attr backend brings its own).
_BACKEND_EXTRAS = {"torch": "torch", "torch:cpu": "torch", "torch:cuda": "torch", "ort": "ort"}


def register(app: typer.Typer) -> None:
    @app.command("conformance")
    def conformance(
        backend: Annotated[str, typer.Argument(
            metavar="BACKEND",
            help=f"{', '.join(BUILTIN)} (ort: the sampler clauses), or package.module:attr "
            "(an adapter instance, class or factory).",
        )],
        device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cpu).")] = None,
        dtype: Annotated[str | None, typer.Option(
            help=f"One of {', '.join(DTYPES)} (default {DTYPES[0]}).")] = None,
        report: Annotated[Path | None, typer.Option(help="Write a JSON report here (atomically).")] = None,
        xfail: Annotated[Path | None, typer.Option(
            help="Expected-failure list (JSON, or TOML if *.toml).")] = None,
        cases: Annotated[int, typer.Option(min=0, help="Random cases per clause (besides golden vectors).")] = 20,
        seed: Annotated[int, typer.Option(help="Seed of the random cases.")] = 0,
        only: Annotated[str | None, typer.Option(
            help="Comma-separated ops, clauses (5.3) or sections (5).")] = None,
        case: Annotated[str | None, typer.Option(
            help="Run one check only, by the case id a failure reports (random/OP/K with its --seed, "
            "errors/OP/KIND, e2e/NAME or OP/K for a golden vector).")] = None,
        strict_xfail: Annotated[bool, typer.Option(
            "--strict-xfail", help="Fail on xfail entries that match no failing clause.")] = False,
        allow_missing: Annotated[bool, typer.Option(
            "--allow-missing", help="Report ops the backend lacks as skipped instead of failed.")] = False,
    ) -> None:
        """Check a backend against the spec: golden vectors, random cases and ideal-denoiser sampling.

        Exit status: 0 conformant, 1 a clause failed, 2 bad input, 3 --report cannot be written (checked
        before the run).
        """
        from rich.console import Console
        from vdm.backends.conformance.adapters import BackendError
        from vdm.backends.conformance.report import render
        from vdm.backends.conformance.runner import case_target, resolve_backend, run, select_ops
        from vdm.backends.conformance.xfail import XfailError, load_xfail

        if backend in _BACKEND_EXTRAS:
            require_extras(f"vdm conformance {backend}", _BACKEND_EXTRAS[backend])
        from vdm.backends.files import WriteError, check_writable

        if report is not None:
            try:  # before the run: an unwritable report fails at once
                check_writable(report)
            except WriteError as exc:
                fail(str(exc), CANNOT_WRITE)
        try:
            if case is not None:
                case_target(case)  # a malformed id is bad input: one line, exit 2
            ops = select_ops(only)
            entries = load_xfail(xfail) if xfail is not None else []
            adapter = resolve_backend(backend, device, dtype)
        except (BackendError, XfailError) as exc:
            fail(str(exc))
            return
        # Piped output (CI logs) gets a wide table rather than rich's 80-column default.
        console = Console() if Console().is_terminal else Console(width=160)
        err = Console(stderr=True)
        if err.is_terminal:
            with err.status("checking ...") as status:
                result = run(adapter, ops=ops, n_cases=cases, seed=seed, xfail=entries, allow_missing=allow_missing,
                             strict_xfail=strict_xfail, progress=lambda op: status.update(f"checking {op} ..."),
                             backend_spec=backend, case=case)
        else:
            result = run(adapter, ops=ops, n_cases=cases, seed=seed, xfail=entries, allow_missing=allow_missing,
                         strict_xfail=strict_xfail, backend_spec=backend, case=case)
        render(result, console)
        if report is not None:
            try:
                result.write(report)
            except OSError as exc:  # WriteError is one: it names the file and the cause
                fail(str(exc) if isinstance(exc, WriteError) else f"cannot write {report}: {exc.strerror or exc}",
                     CANNOT_WRITE)
            console.print(f"report written to {report}")
        if not result.ok:
            raise typer.Exit(1)
