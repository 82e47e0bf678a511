"""`vdm conformance`: the shipped backends pass, reports and xfail lists, one-line input errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner
from vdm.backends.conformance.protocol import OPS, tolerance_for
from vdm.cli.main import app

EXAMPLE = "vdm.backends.conformance.example_backend:ExampleBackend"
VDM = [sys.executable, "-m", "vdm.cli.main"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["conformance", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_numpy_backend_passes() -> None:
    code, out, _ = invoke("numpy", "--cases", "4")
    assert code == 0, out
    assert f"{len(OPS)} passed, 0 failed" in out and "conformant" in out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_backend_passes_on_cpu(dtype: str) -> None:
    pytest.importorskip("vdm.backends.torch.ops")
    code, out, _ = invoke("torch", "--dtype", dtype, "--cases", "4")
    assert code == 0, out
    assert f"{len(OPS)} passed, 0 failed" in out


def test_example_backend_through_the_real_cli(tmp_path: Path) -> None:
    """The module:attr route in a fresh process, as a third-party author would run it."""
    report = tmp_path / "report.json"
    proc = subprocess.run([*VDM, "conformance", EXAMPLE, "--dtype", "float32", "--cases", "3", "--report",
                           str(report)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(report.read_text())
    assert doc["backend"]["name"] == "example-numpy" and doc["backend"]["dtype"] == "float32"
    assert doc["summary"] == {"pass": len(OPS), "fail": 0, "xfail": 0, "skip": 0, "ok": True}
    assert all(r["worst_ratio"] <= 1 for r in doc["results"])


def test_low_dtype_skips_clauses_the_spec_gives_no_tolerance() -> None:
    code, out, _ = invoke(EXAMPLE, "--dtype", "float16", "--cases", "2")
    assert code == 0
    low = [op for op in OPS if tolerance_for(op, "float16") is not None]
    assert low and len(low) < len(OPS)
    assert "spec gives no float16 tolerance" in out
    assert f"{len(low)} passed" in out and f"{len(OPS) - len(low)} skipped" in out


def test_a_broken_backend_fails_with_its_clause_in_the_table_and_report(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    code, out, _ = invoke("vdm.backends.conformance.broken:BetaPosteriorVariance", "--only", "5",
                          "--cases", "3", "--report", str(report))
    assert code == 1
    assert "NOT conformant" in out and "posterior_variance" in out
    doc = json.loads(report.read_text())
    status = {r["op"]: r["status"] for r in doc["results"]}
    assert status == {"effective_beta": "pass", "posterior_mean": "pass", "posterior_variance": "fail",
                      "posterior_log_variance_clipped": "pass", "model_log_variance": "pass"}
    failed = next(r for r in doc["results"] if r["status"] == "fail")
    assert failed["clause"] == "5.3" and failed["first_failure"]["case"]


def test_xfail_file_matching_unmatched_and_strict(tmp_path: Path) -> None:
    lst = tmp_path / "xfail.toml"
    lst.write_text('[[xfail]]\nop = "classifier_free_guidance"\nreason = "swapped on purpose"\n\n'
                   '[[xfail]]\nclause = "7.1"\nreason = "fixed long ago"\n')
    args = ("vdm.backends.conformance.broken:SwappedGuidance", "--only", "7.1,7.5", "--cases", "3", "--xfail",
            str(lst))
    code, out, _ = invoke(*args)
    assert code == 0, out
    assert "xfail" in out and "swapped on purpose" in out
    assert "unmatched xfail entry clause 7.1: fixed long ago" in out
    code, out, _ = invoke(*args, "--strict-xfail")
    assert code == 1


def test_allow_missing_reports_skips(tmp_path: Path) -> None:
    mod = tmp_path / "partial_backend.py"
    mod.write_text("import numpy as np\n\nclass Partial:\n    name, version, device, dtype = 'p', '0', 'cpu', "
                   "'float64'\n\n    def __init__(self, device='cpu', dtype='float64'):\n        pass\n\n"
                   "    def clip_x0(self, x0, limit=1.0):\n        if not np.all(np.isfinite(x0)):\n"
                   "            raise ValueError(\"argument 'x0' contains NaN or Inf\")\n"
                   "        return np.clip(x0, -limit, limit)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    base = [*VDM, "conformance", "partial_backend:Partial", "--only", "7.1,3.2", "--cases", "2"]
    proc = subprocess.run(base, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and "not implemented (required)" in proc.stdout
    proc = subprocess.run([*base, "--allow-missing"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and "not implemented" in proc.stdout and "1 passed" in proc.stdout


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


CUDA_MSG = "CUDA is not available on this machine; run on a GPU machine or use --device cpu"
BAD_INPUT = [
    (["nope"], "unknown backend 'nope'"),
    (["no_such_pkg.mod:Backend"], "cannot import backend module 'no_such_pkg.mod'"),
    (["vdm.backends.conformance.example_backend:Nope"], "has no attribute 'Nope'"),
    (["numpy", "--dtype", "float8"], "unknown dtype 'float8'"),
    (["numpy", "--xfail", "/no/such/xfail.json"], "cannot read xfail file"),
    (["numpy", "--only", "12.3"], "matches no op or clause"),
    (["numpy", "--device", "tpu"], "unknown device 'tpu'"),
    (["numpy", "--case", "random/nope/3"], "--case: 'random/nope/3' is not a case id"),
    ([EXAMPLE, "--dtype", "bfloat16"], "failed: ValueError"),
]
if not _cuda():
    BAD_INPUT += [(["torch:cuda"], CUDA_MSG), (["numpy", "--device", "cuda"], CUDA_MSG)]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    code, out, err = invoke(*args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in out + err


def test_bad_input_from_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"xfail": [{"op": "q_sample"}]}')
    proc = subprocess.run([*VDM, "conformance", "numpy", "--xfail", str(bad)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: xfail file '{bad}', entry 0: needs a non-empty 'reason'"
    assert proc.stdout == ""


def test_a_failure_prints_its_inputs_and_a_command_that_reproduces_it(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    spec = "vdm.backends.conformance.broken:CancellingDDIM"
    code, out, _ = invoke(spec, "--only", "ddim_step", "--cases", "2", "--report", str(report))
    assert code == 1
    command = f"vdm conformance {spec} --dtype float64 --case ddim_step/17"
    assert f"reproduce ddim_step: {command}\n" in out  # one unwrapped line below the table
    assert "inputs: schedule cosine T=10 zero_terminal_snr=True" in out and "t=[9, 9] s=[6, 7]" in out
    failure = json.loads(report.read_text())["results"][0]["first_failure"]
    assert failure["reproduce"] == command
    assert failure["inputs"]["schedule"] == {"name": "cosine", "T": 10, "params": {}, "zero_terminal_snr": True}
    assert failure["inputs"]["params"] == {"prediction": "v", "eta": 1.0}
    assert failure["inputs"]["inputs"]["x_t"] == {"shape": [2, 1, 3, 4, 4], "dtype": "float64"}
    # The command runs that one case, and fails the same way.
    again = tmp_path / "again.json"
    code, out, _ = invoke(*command.split()[2:], "--report", str(again))
    (result,) = json.loads(again.read_text())["results"]
    assert code == 1 and result["n_cases"] == 1 and result["first_failure"]["message"] == failure["message"]


def test_an_unwritable_report_fails_before_the_run_with_exit_3(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("keep")
    code, out, err = invoke("numpy", "--only", "5", "--report", str(tmp_path / "afile" / "r.json"))
    assert code == 3, out + err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "is a file, not a folder" in lines[0]
    assert "posterior_mean" not in out  # refused before any check ran
    assert (tmp_path / "afile").read_text() == "keep"
