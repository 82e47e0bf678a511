"""The `vdm_conformance` pytest plugin: inert by default, one item per clause with --vdm-backend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from vdm.backends.conformance.protocol import OPS

# Broken only for batches of 3: the golden vectors (batches 1 and 2) pass, so only the
# hypothesis-drawn cases can find it.
THIRD_PARTY = '''
import numpy as np

from vdm.backends.conformance.protocol import OPS
from vdm.backends.conformance.adapters import NumpyAdapter


class BatchOfThree(NumpyAdapter):
    name = "batch-of-three"

    def clip_x0(self, x0, limit=1.0):
        x0 = np.asarray(x0)
        return np.clip(x0, -limit, limit) * (1.0 if x0.shape[0] != 3 else 0.5)
'''


def run_pytest(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    (tmp_path / "third_party_backend.py").write_text(THIRD_PARTY)
    full_env = {**os.environ, "PYTHONPATH": str(tmp_path), **(env or {})}
    full_env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=tmp_path,
                          capture_output=True, text=True, env=full_env, timeout=300)


def test_plugin_import_is_cheap() -> None:
    code = ("import sys; import vdm.backends.conformance.pytest_plugin; "
            "print(sorted(m for m in ('torch', 'numpy', 'vdm_ref', 'hypothesis') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_plugin_is_inert_without_the_option(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path, "--collect-only", "-q")
    assert "vdm-conformance" not in proc.stdout
    assert "no tests collected" in proc.stdout


def test_one_item_per_clause_and_all_pass_on_numpy(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path, "--vdm-backend", "numpy", "-p", "vdm_conformance", "--vdm-cases", "3", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(OPS)} passed" in proc.stdout
    assert "vdm conformance: backend numpy" in proc.stdout


def test_hypothesis_finds_a_bug_the_golden_vectors_miss(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path, "--vdm-backend", "third_party_backend:BatchOfThree", "--vdm-cases", "40",
                      "-k", "clip_x0 or clip", "-q")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED vdm-conformance::7.1::clip_x0" in proc.stdout
    assert "clause 7.1 (clip_x0) at float64" in proc.stdout


def test_xfail_list_and_explicit_loading(tmp_path: Path) -> None:
    (tmp_path / "xfail.json").write_text(
        '{"xfail": [{"op": "classifier_free_guidance", "reason": "swapped on purpose"},'
        ' {"op": "clip_x0", "reason": "no longer broken"}]}')
    proc = run_pytest(tmp_path, "-p", "vdm_conformance", "--vdm-backend",
                      "vdm.backends.conformance.broken:SwappedGuidance", "--vdm-xfail", "xfail.json",
                      "--vdm-cases", "2", "-k", "guidance or clip_x0", "-q", "-rx",
                      env={"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout and "1 xfailed" in proc.stdout and "swapped on purpose" in proc.stdout
    assert "unmatched xfail entry clip_x0: no longer broken" in proc.stdout


def test_bad_backend_is_a_usage_error(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path, "--vdm-backend", "nope", "-q")
    assert proc.returncode == 4
    assert "vdm conformance: unknown backend 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr
