"""`vdm quickstart`, drastically shortened (a few training steps), end to end."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner
from vdm.backends.ort import metadata as md
from vdm.cli.main import app


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path):
    out = tmp_path / "qs"
    res = CliRunner().invoke(app, ["quickstart", "--out", str(out), "--train-steps", "2", "--num", "2",
                                   "--sample-steps", "2"])
    assert res.exit_code == 0, res.output
    expected = {
        "model.onnx", "samples.gif", "samples.mp4", "samples.npy", "samples_sheet.png", "eval.json", "eval.txt",
        "train/loss.png", "train/metrics.csv", "train/last.safetensors",
    }
    for rel in expected:
        assert (out / rel).is_file() and (out / rel).stat().st_size > 0, rel
        assert rel.split("/")[-1] in res.stdout  # every file's location is printed
    samples = np.load(out / "samples.npy")
    assert samples.shape == (2, 1, 8, 16, 16) and np.abs(samples).max() <= 1.0
    report = json.loads((out / "eval.json").read_text())
    assert set(report["rows"]) == {"samples", "real", "noise"}
    assert report["settings"]["backend"] == "onnxruntime"
    info = md.read_props({p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props})
    assert info.process["family"] == "flow" and info.prediction == "flow"  # the measured default (README)
    assert report["settings"]["sampling"]["sampler"] == "euler"
    assert "coherent_fraction" in (out / "eval.txt").read_text()
    assert "[4/4]" in res.stdout and "parity: max abs error" in res.stdout

    # One sampling path: `vdm sample` (both backends) and `vdm eval` give the quickstart's clips.
    same = ["--num", "2", "--steps", "2", "--seed", "0", "--batch-size", "2"]
    runner = CliRunner()
    res = runner.invoke(app, ["sample", "--model", str(out / "model.onnx"), "--backend", "ort",
                              "--out", str(tmp_path / "ort.npy"), *same])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.load(tmp_path / "ort.npy"), samples)
    ckpt = str(out / "train/last.safetensors")
    res = runner.invoke(app, ["sample", "--model", ckpt, "--backend", "torch", "--out", str(tmp_path / "pt.npy"),
                              *same])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["eval", "--ckpt", ckpt, "--device", "cpu", "--save-samples", str(tmp_path / "ev.npy"),
                              *same])
    assert res.exit_code == 0, res.output
    pt = np.load(tmp_path / "pt.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "ev.npy"), pt)
    assert np.abs(pt - samples).max() <= 1e-3  # torch vs ONNX Runtime: the export's parity tolerance


def test_quickstart_rejects_bad_device(tmp_path):
    res = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path), "--device", "tpu"])
    assert res.exit_code == 2 and res.stderr.strip().startswith("error: ") and "Traceback" not in res.output


@pytest.mark.slow
def test_quickstart_vp_trains_the_measured_v_prediction_and_samples_with_ddim(tmp_path):
    out = tmp_path / "qs"
    res = CliRunner().invoke(app, ["quickstart", "--out", str(out), "--train-steps", "2", "--num", "2",
                                   "--steps", "2", "--process", "vp"])
    assert res.exit_code == 0, res.output
    info = md.read_props({p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props})
    assert info.process["family"] == "vp" and info.prediction == "v" and info.schedule["name"] == "cosine"
    report = json.loads((out / "eval.json").read_text())
    assert report["settings"]["sampling"]["sampler"] == "ddim"
    assert np.abs(np.load(out / "samples.npy")).max() > 0.05


def test_quickstart_refuses_a_sampler_the_process_lacks_before_training(tmp_path):
    res = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path / "q"), "--process", "flow",
                                   "--sampler", "ddim"])
    assert res.exit_code == 2 and "defined on vp models" in res.stderr and not (tmp_path / "q").exists()
