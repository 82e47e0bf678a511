"""Entry point of the `vdm` console script.

Each sub-command lives in its own module that exposes ``register(app)``; heavy imports
(torch, onnxruntime) happen inside the commands so that ``vdm --help`` stays instant.
"""

from __future__ import annotations

import importlib
from importlib import metadata

import typer

import vdm_ref

from .errors import OneLineErrors

app = typer.Typer(
    cls=OneLineErrors,  # one-line usage errors, finite numbers only (see errors.py)
    name="vdm",
    help="vdm: reference toolkit for video diffusion models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Sub-command modules, in the order they appear in --help.
COMMAND_MODULES: list[str] = ["conformance", "train", "eval", "export", "sample", "schedule", "quickstart"]


def _version_callback(value: bool) -> None:
    if value:
        try:
            pkg = metadata.version("vdm")
        except metadata.PackageNotFoundError:  # running from a source tree without install
            pkg = "unknown"
        typer.echo(f"vdm {pkg} (spec {vdm_ref.SPEC_VERSION})")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the package and spec versions.",
        callback=_version_callback, is_eager=True,
    ),
) -> None:
    """vdm: spec, exact NumPy reference, PyTorch and ONNX Runtime backends."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"vdm.cli.{_name}").register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
