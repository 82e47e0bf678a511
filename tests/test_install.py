"""`pip install vdm` is NumPy, typer and rich; PyTorch and ONNX Runtime come with extras, and whatever
needs a missing extra says in one line which one to install."""

from __future__ import annotations

import importlib.metadata as im
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from typer.testing import CliRunner
from vdm.backends.extras import EXTRAS, MissingExtra, require
from vdm.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
# Every import name an extra brings; none may load on the NumPy path.
OPTIONAL = sorted({m for mods in EXTRAS.values() for m in mods})


def _pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _applies(req: Requirement) -> bool:
    return req.marker is None or req.marker.evaluate({**default_environment(), "extra": ""})


def _modules_of(dist_name: str) -> set[str]:
    """The top-level import names an installed distribution provides (read from its RECORD)."""
    by_module = im.packages_distributions()
    return {m for m, dists in by_module.items() if canonicalize_name(dist_name) in map(canonicalize_name, dists)}


# --- the table of extras against pyproject.toml ------------------------------------------------------

def test_base_dependencies_bring_no_optional_module() -> None:
    base = [Requirement(r) for r in _pyproject()["project"]["dependencies"]]
    assert {canonicalize_name(r.name) for r in base} <= {"numpy", "typer", "rich", "tomli"}


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_extras_table_matches_pyproject(extra: str) -> None:
    # Both directions: every module of the table comes from a distribution of that extra, and every
    # distribution of the extra (installed here, on this platform) provides a module of the table.
    reqs = [r for r in map(Requirement, _pyproject()["project"]["optional-dependencies"][extra]) if _applies(r)]
    provided = {r.name: _modules_of(r.name) for r in reqs}
    for name, modules in provided.items():
        assert modules & set(EXTRAS[extra]), f"{name} of extra {extra!r} provides none of {sorted(EXTRAS[extra])}"
    assert set(EXTRAS[extra]) <= set().union(*provided.values())


def test_all_and_dev_bring_every_extra() -> None:
    optional = _pyproject()["project"]["optional-dependencies"]
    assert set(Requirement(optional["all"][0]).extras) == set(EXTRAS)
    assert any(canonicalize_name(Requirement(r).name) == "vdm" and "all" in Requirement(r).extras
               for r in optional["dev"])


# --- the one-line message ----------------------------------------------------------------------------

def test_require_names_every_missing_module_and_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    require("vdm train", *EXTRAS)  # everything is installed in the development environment
    monkeypatch.setitem(sys.modules, "torch", None)  # None in sys.modules: the import system finds nothing
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtra) as exc:
        require("vdm export", "torch", "ort")
    assert str(exc.value) == "vdm export needs PyTorch, ONNX Runtime: pip install 'vdm[torch,ort]'"
    assert isinstance(exc.value, ImportError)  # code that already tolerates ImportError keeps working
    with pytest.raises(MissingExtra, match=r"^x needs ONNX Runtime: pip install 'vdm\[ort\]'$"):
        require("x", "ort")
    with pytest.raises(ValueError, match="unknown extra 'jax'"):
        require("x", "jax")


COMMANDS = [  # argv, the extra it needs (the arguments are valid enough to reach the command's body)
    (["train", "--steps", "1"], "torch"),
    (["eval", "--ckpt", "c.safetensors"], "torch"),
    (["export", "m.onnx", "--ckpt", "c.safetensors"], "torch,ort"),
    (["sample", "--model", "m.onnx"], "ort"),
    (["sample", "--model", "c.safetensors", "--backend", "torch"], "torch"),
    (["quickstart"], "torch,ort"),
    (["conformance", "torch"], "torch"),
    (["conformance", "ort"], "ort"),
]


@pytest.mark.parametrize(("argv", "extra"), COMMANDS, ids=[" ".join(a[:3]) for a, _ in COMMANDS])
def test_command_without_its_extra_says_which_to_install(argv: list[str], extra: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    res = CliRunner().invoke(app, argv)
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2, res.output
    assert len(lines) == 1, res.output
    assert lines[0].startswith(f"error: vdm {argv[0]}")
    assert lines[0].endswith(f"pip install 'vdm[{extra}]'")


def test_eval_with_an_onnx_feature_network_needs_ort(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["eval", "--ckpt", "c.safetensors", "--features", "i3d.onnx"]
    assert CliRunner().invoke(app, argv).output.count("pip install") == 0  # PyTorch alone is enough to get further
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 2
    assert res.output.strip() == "error: vdm eval --features FILE.onnx needs ONNX Runtime: pip install 'vdm[ort]'"


def test_backend_packages_name_their_extra(tmp_path: Path) -> None:
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = sys.modules["onnxruntime"] = None
        for name in ("vdm.backends.torch.ops", "vdm.backends.ort.session", "vdm.export.onnx_export"):
            try:
                __import__(name)
            except ImportError as exc:
                print(type(exc).__name__, exc)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.stdout.splitlines() == [
        "MissingExtra vdm.backends.torch needs PyTorch: pip install 'vdm[torch]'",
        "MissingExtra vdm.backends.ort needs ONNX Runtime: pip install 'vdm[ort]'",
        "MissingExtra vdm.export needs PyTorch, ONNX Runtime: pip install 'vdm[torch,ort]'",
    ], res.stderr


def test_numpy_path_imports_no_optional_module(tmp_path: Path) -> None:
    # Blocks every optional module, imports the CLI, the kit and the backend-neutral modules, runs a small
    # `vdm conformance numpy`, and lists what got loaded: an import of a blocked module would fail the run.
    code = textwrap.dedent(f"""
        import pkgutil, sys
        for m in {OPTIONAL!r}:
            sys.modules[m] = None
        import vdm.backends, vdm.backends.conformance as kit, vdm.backends.sampling, vdm.backends.files
        for info in pkgutil.iter_modules(kit.__path__, "vdm.backends.conformance."):
            if info.name.endswith("pytest_plugin"):
                continue  # loaded by pytest only, which brings its own dependencies
            __import__(info.name)
        from typer.testing import CliRunner
        from vdm.cli.main import app
        assert CliRunner().invoke(app, ["--help"]).exit_code == 0
        res = CliRunner().invoke(app, ["conformance", "numpy", "--cases", "1", "--only", "2,5"])
        print(res.exit_code)
        print(res.output[-300:] if res.exit_code else "")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[0] == "0", res.stdout


# --- the bare package in a fresh environment, offline ------------------------------------------------

def _base_closure(metadata_text: str) -> list[im.Distribution]:
    """The installed distributions that the package's own requirements (no extras) pull in, transitively."""
    env = {**default_environment(), "extra": ""}
    meta = Parser().parsestr(metadata_text)
    todo = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
    seen: dict[str, im.Distribution] = {}
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate(env)):
            continue
        seen[name] = dist = im.distribution(req.name)
        todo += [Requirement(r) for r in dist.requires or []]
    return list(seen.values())


def _link_distributions(dists: list[im.Distribution], folder: Path) -> None:
    """A folder of symlinks to each distribution's top-level files and dist-info: the new environment sees
    these packages and nothing else of this one."""
    folder.mkdir()
    for dist in dists:
        assert dist.files is not None, f"{dist.metadata['Name']} has no RECORD to link from"
        for top in {f.parts[0] for f in dist.files if f.parts[0] != ".." and not f.name.endswith(".pth")}:
            target = Path(dist.locate_file(top))
            if target.exists() and not (folder / top).exists():
                (folder / top).symlink_to(target)


@pytest.mark.slow
def test_bare_install_runs_the_kit_offline(tmp_path: Path) -> None:
    # 1. a wheel of the project, built from a copy of the sources (no network, nothing written into the tree)
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("vdm_ref", "spec", "backends", "export", "cli"):
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "--no-cache-dir"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-index", "--no-build-isolation", str(src),
                    "-w", str(tmp_path / "wheel")], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "wheel").glob("vdm-*.whl")

    # 2. a fresh environment that sees only the base dependencies, linked from this one
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, env=env).stdout.strip()
    with zipfile.ZipFile(wheel) as zf:
        metadata_text = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    base = _base_closure(metadata_text)
    _link_distributions(base, tmp_path / "base")
    Path(purelib, "vdm_base_deps.pth").write_text(str(tmp_path / "base") + "\n")

    # 3. the bare package, with pip's own check that its dependencies are met
    subprocess.run([*pip, "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300, env=env)
    check = subprocess.run([*pip, "--python", str(py), "check"], capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stdout

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)

    vdm = str(venv / ("Scripts/vdm.exe" if os.name == "nt" else "bin/vdm"))
    probe = run(str(py), "-c", f"import importlib.util as u; print(sorted(m for m in {OPTIONAL!r} if u.find_spec(m)));"
                "import vdm_ref; print(vdm_ref.__file__)")
    found, where = probe.stdout.splitlines()
    assert found == "[]", f"optional modules visible in the bare environment: {found}"
    assert Path(where).is_relative_to(purelib), f"vdm_ref imported from {where}, not the installed wheel"
    assert run(str(py), "-c", "import torch").returncode != 0

    version = run(vdm, "--version")
    assert version.returncode == 0 and version.stdout.startswith("vdm "), version.stderr
    assert run(vdm, "--help").returncode == 0
    kit = run(vdm, "conformance", "numpy")
    assert kit.returncode == 0, kit.stdout[-2000:] + kit.stderr
    assert "conformant" in kit.stdout

    train = run(vdm, "train", "--steps", "1")
    assert train.returncode == 2
    assert train.stderr.strip().splitlines() == [
        "error: vdm train needs PyTorch, safetensors, PyAV, Pillow: pip install 'vdm[torch]'"]
    sample = run(vdm, "sample", "--model", "m.onnx")
    assert sample.returncode == 2
    assert sample.stderr.strip().splitlines() == [
        "error: vdm sample --backend ort needs ONNX Runtime, ONNX, onnxscript, PyAV, Pillow: pip install 'vdm[ort]'"]
