"""How every command reports a user's mistake: one line on stderr and a non-zero exit status.

The exit statuses of every ``vdm`` command (each command's help lists the ones it uses):

====  =============  ==========================================================================
0     OK             done
1     FAILED         the work ran and failed its own check: training diverged, the exported
                     graph failed validation, a conformance clause failed
2     BAD_INPUT      bad input: a wrong option value, a missing or corrupt file, a checkpoint
                     with non-finite weights, an impossible shape
3     CANNOT_WRITE   an output could not be written: no space left, a read-only folder, a file
                     where a folder should be, the file-size limit
====  =============  ==========================================================================

:class:`OneLineErrors` is the group class of the ``vdm`` app: it prints click's usage errors
(unknown option, bad type, value out of range, missing argument) as the same one line instead
of a usage box, and rejects a non-finite number (NaN, inf) given to any option of any command.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup
from vdm.backends.files import one_line

try:  # typer >= 0.22 vendors click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer on the click package
    from click.exceptions import ClickException

OK = 0
FAILED = 1
BAD_INPUT = 2  # the exit status of every one-line user error
CANNOT_WRITE = 3

EXIT_STATUS_HELP = {
    OK: "done",
    FAILED: "failed its check",
    BAD_INPUT: "bad input",
    CANNOT_WRITE: "an output could not be written (full disk, read-only or blocked folder, file-size limit)",
}


def fail(message: str, code: int = BAD_INPUT) -> NoReturn:
    """Print ``error: message`` (one line) on stderr and exit with ``code``. Ranks other than 0 of a
    torchrun launch prefix their rank, so interleaved lines stay readable."""
    rank = os.environ.get("RANK")
    prefix = f"[rank {rank}] " if rank not in (None, "0") else ""
    typer.echo(f"{prefix}error: " + one_line(message, None), err=True)
    raise typer.Exit(code)


def require_extras(command: str, *extras: str) -> None:
    """Fail in one line, ``error: vdm train needs PyTorch: pip install 'vdm[torch]'``, unless the optional
    modules of ``extras`` (vdm.backends.extras.EXTRAS) are installed. Call it before a command's heavy imports."""
    from vdm.backends.extras import MissingExtra, require

    try:
        require(command, *extras)
    except MissingExtra as exc:
        fail(str(exc))


def _non_finite(value: Any) -> float | None:
    """The first NaN or infinity in an option's value (a number, or a list/tuple of them)."""
    for v in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(v, float) and not math.isfinite(v):
            return v
    return None


def _finite_callback(previous: Callable[..., Any] | None) -> Callable[..., Any]:
    def check(ctx: Any, param: Any, value: Any) -> Any:
        bad = _non_finite(value)
        if bad is not None:
            # No option of vdm means anything at NaN or infinity ("off" is spelled 0 or left unset).
            raise typer.BadParameter(f"{bad} is not a finite number")
        return previous(ctx, param, value) if previous is not None else value

    return check


def _non_finite_text(value: Any) -> str | None:
    """The first command-line word of ``value`` that reads as NaN or infinity ("nan", "-inf", ...)."""
    for v in value if isinstance(value, (list, tuple)) else (value,):
        try:
            if isinstance(v, str) and not math.isfinite(float(v)):
                return v
        except ValueError:
            continue
    return None


def _finite_process_value(previous: Callable[..., Any]) -> Callable[..., Any]:
    def process_value(ctx: Any, value: Any) -> Any:
        try:
            return previous(ctx, value)
        except typer.BadParameter:
            # A range check saw NaN first ("should be <= 1"); name the real problem instead.
            bad = _non_finite_text(value)
            if bad is None:
                raise
            raise typer.BadParameter(f"{bad} is not a finite number") from None

    return process_value


def require_finite(command: Any) -> Any:
    """Make every option of ``command`` reject NaN and infinity (idempotent)."""
    if not getattr(command, "_vdm_finite", False):
        for param in command.params:
            param.callback = _finite_callback(param.callback)
            param.process_value = _finite_process_value(param.process_value)
        command._vdm_finite = True
    return command


@contextlib.contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    try:
        yield
    except ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `vdm` alone prints the help, as before
            raise
        fail(exc.format_message(), exc.exit_code)


class OneLineErrors(TyperGroup):
    """The ``vdm`` group: one-line usage errors and finite numbers for every command."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _one_line_usage_errors():
            return super().invoke(ctx)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        return require_finite(command) if command is not None else None
