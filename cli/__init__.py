"""The `vdm` command-line interface (Typer)."""
