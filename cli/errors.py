"""How every command reports a user's mistake: one line on stderr and a non-zero exit status."""

from __future__ import annotations

import os
from typing import NoReturn

import typer

BAD_INPUT = 2  # the exit status of every one-line user error


def fail(message: str, code: int = BAD_INPUT) -> NoReturn:
    """Print ``error: message`` (one line) on stderr and exit with ``code``. Ranks other than 0 of a
    torchrun launch prefix their rank, so interleaved lines stay readable."""
    rank = os.environ.get("RANK")
    prefix = f"[rank {rank}] " if rank not in (None, "0") else ""
    typer.echo(f"{prefix}error: " + " ".join(str(message).split()), err=True)
    raise typer.Exit(code)


def require_extras(command: str, *extras: str) -> None:
    """Fail in one line, ``error: vdm train needs PyTorch: pip install 'vdm[torch]'``, unless the optional
    modules of ``extras`` (vdm.backends.extras.EXTRAS) are installed. Call it before a command's heavy imports."""
    from vdm.backends.extras import MissingExtra, require

    try:
        require(command, *extras)
    except MissingExtra as exc:
        fail(str(exc))
