"""The layering rule of docs/ARCHITECTURE.md, read from the source: imports only go down
spec -> vdm_ref -> backends -> export -> cli. Every import of every module is resolved to its
installed name (relative imports included) through pyproject's package-dir."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]

# folder -> installed package, as pyproject's package-dir maps them (it maps package -> folder)
PACKAGE_DIR = {folder: package for package, folder in
               tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].items()}

# installed package -> the vdm packages it must never import
FORBIDDEN = {
    "vdm_ref": ("vdm",),  # the reference needs NumPy only
    "vdm.backends": ("vdm.export", "vdm.cli"),
    "vdm.export": ("vdm.cli",),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    package = PACKAGE_DIR[rel.parts[0]]
    parts = [*package.split("."), *rel.parts[1:-1]]
    if rel.stem != "__init__":
        parts.append(rel.stem)
    return ".".join(parts)


def imported_modules(source: str, name: str, is_package: bool) -> set[str]:
    """Every module an import statement of ``source`` names, relative imports resolved against ``name``."""
    found: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from vdm import cli`
    return found


def violations(source: str, name: str, is_package: bool = False) -> list[str]:
    rules = [bad for pkg, bad in FORBIDDEN.items() if name == pkg or name.startswith(pkg + ".")]
    out = []
    for target in sorted(imported_modules(source, name, is_package)):
        for bad in (b for rule in rules for b in rule):
            if target == bad or target.startswith(bad + "."):
                out.append(f"{name} imports {target}")
    return out


def sources() -> list[Path]:
    files = []
    for folder in PACKAGE_DIR:
        files += sorted((ROOT / folder).rglob("*.py"))
    return files


def test_the_tree_has_sources_to_check() -> None:
    names = {module_name(p) for p in sources()}
    assert {"vdm_ref.samplers", "vdm.backends.sampling", "vdm.export.onnx_export", "vdm.cli.main"} <= names


def test_imports_only_go_down() -> None:
    found = [v for p in sources() for v in violations(p.read_text(), module_name(p), p.name == "__init__.py")]
    assert found == []


@pytest.mark.parametrize(("source", "name", "words"), [
    ("from vdm.cli.errors import fail", "vdm.backends.sampling", "vdm.cli.errors"),
    ("from ...export import onnx_export", "vdm.backends.torch.ops", "vdm.export"),
    ("from .. import cli", "vdm.export.fp16", "vdm.cli"),
    ("import vdm.backends.files", "vdm_ref.samplers", "vdm.backends.files"),
    ("from vdm import export", "vdm.backends.ort.session", "vdm.export"),
])
def test_the_check_finds_an_upward_import(source: str, name: str, words: str) -> None:
    found = violations(source, name)
    assert found and words in found[0]


def test_allowed_imports_pass() -> None:
    assert violations("from vdm.backends.ort import metadata\nimport numpy", "vdm.export.onnx_export") == []
    assert violations("from . import sampling\nfrom ..files import one_line", "vdm.backends.torch.ops") == []
