"""The installed layout: a `vdm` namespace, no generic top-level names, spec data shipped."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import vdm_ref

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(out)],
        check=True, capture_output=True,
    )
    (whl,) = out.glob("vdm-*.whl")
    return zipfile.ZipFile(whl).namelist()


def test_wheel_has_only_vdm_and_vdm_ref_top_level(wheel_names: list[str]) -> None:
    tops = {n.split("/")[0] for n in wheel_names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"vdm", "vdm_ref"}


def test_wheel_ships_every_python_module(wheel_names: list[str]) -> None:
    # A module added under a folder that pyproject's package list forgets would silently vanish.
    mapping = {
        "backends": "vdm/backends", "export": "vdm/export", "cli": "vdm/cli", "vdm_ref": "vdm_ref", "spec": "vdm/spec",
    }
    for folder, dest in mapping.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).as_posix()
            assert f"{dest}/{rel}" in wheel_names, f"{folder}/{rel} is missing from the wheel"


def test_wheel_ships_spec_data(wheel_names: list[str]) -> None:
    assert "vdm/spec/SPEC.md" in wheel_names
    assert "vdm/spec/tolerances.json" in wheel_names
    committed = sorted(p.name for p in (ROOT / "spec" / "vectors").glob("*") if p.suffix in {".json", ".npz"})
    assert committed, "no golden vectors committed"
    for name in committed:
        assert f"vdm/spec/vectors/{name}" in wheel_names


def _vdm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vdm.cli.main", *args], capture_output=True, text=True, timeout=120)


def test_version_prints_package_and_spec_versions() -> None:
    res = _vdm("--version")
    assert res.returncode == 0, res.stderr
    assert f"spec {vdm_ref.SPEC_VERSION}" in res.stdout
    assert res.stdout.startswith("vdm ")


def test_help_lists_commands_without_importing_torch() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from vdm.cli.main import app;"
        "r = CliRunner().invoke(app, ['--help']); print(r.output);"
        "print('TORCH_LOADED' if 'torch' in sys.modules else 'TORCH_ABSENT')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "TORCH_ABSENT" in res.stdout, "vdm --help must stay light: torch was imported"
    assert "--version" in res.stdout
