"""Optional dependencies: which ``pip install 'vdm[EXTRA]'`` brings each module.

``pip install vdm`` installs only what vdm_ref, the spec, the conformance kit and the CLI need
(NumPy, typer, rich). Everything else comes with an extra, and whatever needs an extra calls
:func:`require` first, so a missing one is reported in one line that says what to install
instead of a traceback from deep inside an import.
"""

from __future__ import annotations

import importlib.util

# extra -> {import name: the name a person knows it by}. Mirrors [project.optional-dependencies]
# of pyproject.toml (a test pins the two together). PyAV and Pillow are in both extras because
# backends/media.py, which every command that writes pictures or videos uses, imports them,
# whether the videos come from PyTorch or from ONNX Runtime.
EXTRAS: dict[str, dict[str, str]] = {
    "torch": {"torch": "PyTorch", "safetensors": "safetensors", "av": "PyAV", "PIL": "Pillow"},
    "ort": {"onnxruntime": "ONNX Runtime", "onnx": "ONNX", "onnxscript": "onnxscript", "av": "PyAV",
            "PIL": "Pillow"},
}


class MissingExtra(ImportError):
    """An optional module is not installed; the message names the extra that brings it."""


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be found (found without importing them, so a check is cheap)."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; choose one of {', '.join(EXTRAS)}")
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def require(user: str, *extras: str) -> None:
    """Raise MissingExtra, ``"<user> needs PyTorch, Pillow: pip install 'vdm[torch]'"``, unless every module
    of every named extra is installed. ``user`` is a command (``vdm train``) or a module."""
    gaps = {extra: missing_modules(extra) for extra in extras}
    gaps = {extra: mods for extra, mods in gaps.items() if mods}
    if gaps:
        labels = dict.fromkeys(EXTRAS[extra][m] for extra, mods in gaps.items() for m in mods)
        raise MissingExtra(f"{user} needs {', '.join(labels)}: pip install 'vdm[{','.join(gaps)}]'")
