"""One sampling path: `vdm sample`, `vdm eval`, the quickstart's sampling and the training previews
all go through vdm.backends.sampling, so one checkpoint, one seed and one set of options give the
same clips from every command."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import MICRO_UNET as MICRO
from typer.testing import CliRunner
from vdm.backends import sampling
from vdm.backends.torch.models.unet import UNetConfig, VideoUNet
from vdm.backends.torch.training.checkpoint import load_model, save_checkpoint
from vdm.cli.main import app
from vdm.export.onnx_export import ExportOptions, export_checkpoint

import vdm_ref

PARITY = 1e-3  # ORT vs torch, float32 network on CPU (as tests/test_ort_sampler.py)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    cfg = UNetConfig(**MICRO)
    model = VideoUNet(cfg)
    for p in model.conv_out.parameters():  # zero-initialised: make the outputs non-trivial
        torch.nn.init.normal_(p, std=0.1)
    meta = {"model_config": cfg.to_dict(), "schedule": vdm_ref.make_schedule("cosine", 1000).to_dict(),
            "prediction": "v", "variance": "fixed_small", "num_classes": 0,
            "data": {"kind": "moving_shapes", "frames": 4, "size": 8, "channels": 1}, "step": 1}
    path = tmp_path_factory.mktemp("sampling") / "model.safetensors"
    save_checkpoint(path, model=model, ema=model, optimizer=None, meta=meta)
    onnx_path = path.with_suffix(".onnx")
    export_checkpoint(path, onnx_path, ExportOptions())
    return path, onnx_path


def test_sample_eval_and_library_give_the_same_clips(ckpt, tmp_path):
    path, onnx_path = ckpt
    runner = CliRunner()
    res = runner.invoke(app, ["sample", "--model", str(path), "--backend", "torch", "--out", str(tmp_path / "a.npy"),
                              "--steps", "5", "--num", "5", "--batch-size", "2", "--seed", "3"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["eval", "--ckpt", str(path), "--num", "5", "--steps", "5", "--batch-size", "2",
                              "--seed", "3", "--device", "cpu", "--save-samples", str(tmp_path / "b.npy")])
    assert res.exit_code == 0, res.output
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert a.shape == (5, 1, 4, 8, 8) and np.abs(a).max() > 0.05
    np.testing.assert_array_equal(a, b)  # same backend, same options: identical
    # The quickstart's call (ORT) and the previews' call (an in-memory network) of the same module.
    options = sampling.SamplingOptions(steps=5, batch_size=2)
    ort = sampling.sample_videos(sampling.load_model(onnx_path, "ort"), 5, 3, options)
    assert np.abs(ort - a).max() <= PARITY
    net, meta = load_model(path)
    np.testing.assert_array_equal(sampling.sample_videos(sampling.torch_model(net, meta), 5, 3, options), a)
    # Another batch size draws the same noise per sample: equal up to the rounding of batched kernels.
    five = sampling.sample_videos(sampling.torch_model(net, meta), 5, 3,
                                  sampling.SamplingOptions(steps=5, batch_size=5))
    assert np.abs(five - a).max() <= 1e-5


def test_sample_k_depends_on_seed_and_index_only(ckpt):
    path, _ = ckpt
    model = sampling.load_model(path, "torch")
    five = sampling.sample_videos(model, 5, 7, sampling.SamplingOptions(steps=3, batch_size=5))
    two = sampling.sample_videos(model, 2, 7, sampling.SamplingOptions(steps=3, batch_size=1))
    other = sampling.sample_videos(model, 2, 8, sampling.SamplingOptions(steps=3, batch_size=2))
    assert np.abs(five[:2] - two).max() <= 1e-5  # same noise; batched kernels round differently
    assert np.abs(other - two).max() > 1e-3  # another seed, other clips
    # The documented noise: sample k draws (N + 1, C, T, H, W) from default_rng([seed, k]).
    plan = sampling.plan_sampling(model, 5, sampling.SamplingOptions(steps=3))
    want = np.random.default_rng([7, 4]).standard_normal((4, 1, 4, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(sampling.batch_noise(7, plan, 4, 5)[:, 0], want)


def test_bad_options_are_one_line_errors(ckpt):
    path, _ = ckpt
    model = sampling.load_model(path, "torch")
    for options, words in ((sampling.SamplingOptions(sampler="nope"), "unknown sampler"),
                           (sampling.SamplingOptions(steps=1001), "steps must lie in"),
                           (sampling.SamplingOptions(guidance=2.0), "unconditional"),
                           (sampling.SamplingOptions(size=7), "multiples of")):
        with pytest.raises(sampling.SamplingError, match=words) as info:
            sampling.sample_videos(model, 1, 0, options)
        assert "\n" not in str(info.value)
    with pytest.raises(sampling.SamplingError, match="ONNX"):
        sampling.load_model(path, "ort")


def test_solvers_run_on_both_backends_within_parity(ckpt):
    """Every solver of spec 17 samples a vp checkpoint on torch and on ONNX Runtime (its solver steps as
    ONNX graphs) from the same noise, within the backends' parity."""
    path, onnx_path = ckpt
    torch_m, ort_m = sampling.load_model(path, "torch"), sampling.load_model(onnx_path, "ort")
    for solver in vdm_ref.SOLVERS:
        options = sampling.SamplingOptions(sampler=solver, steps=4, batch_size=2)
        a = sampling.sample_videos(torch_m, 3, 5, options)
        b = sampling.sample_videos(ort_m, 3, 5, options)
        assert a.shape == (3, 1, 4, 8, 8) and np.abs(a).max() > 0.05, solver
        assert np.abs(a - b).max() <= PARITY, solver


def test_euler_on_a_vp_model_is_ddim(ckpt):
    """Spec 17.3: the first-order update equals DDIM (eta = 0) in exact arithmetic, so a vp model sampled
    with euler lands where ddim does from the same noise and timesteps (both float64 updates)."""
    path, _ = ckpt
    model = sampling.load_model(path, "torch")
    for clip in (None, 1.0):
        ddim = sampling.sample_videos(model, 2, 1, sampling.SamplingOptions(sampler="ddim", steps=6, clip=clip))
        euler = sampling.sample_videos(model, 2, 1, sampling.SamplingOptions(sampler="euler", steps=6, clip=clip))
        assert np.abs(ddim).max() > 0.05
        np.testing.assert_allclose(euler, ddim, atol=2e-5)
    # A different grid (another spacing) is a different answer: the comparison can fail.
    other = sampling.sample_videos(model, 2, 1, sampling.SamplingOptions(sampler="euler", steps=6, spacing="leading"))
    assert np.abs(other - euler).max() > 1e-3


def test_solver_options_that_do_not_apply_are_one_line_errors(ckpt):
    path, _ = ckpt
    model = sampling.load_model(path, "torch")
    for options, words in ((sampling.SamplingOptions(sampler="euler", shift=3.0), "--shift applies to flow"),
                           (sampling.SamplingOptions(sampler="euler", karras=True), "vp"),
                           (sampling.SamplingOptions(sampler="heun", eta=0.5), "deterministic"),
                           (sampling.SamplingOptions(sampler="euler", final="half"), "unknown final level")):
        with pytest.raises(sampling.SamplingError, match=words) as info:
            sampling.sample_videos(model, 1, 0, options)
        assert "\n" not in str(info.value)


def test_vdm_sample_dpmpp_2m_on_both_backends(ckpt, tmp_path):
    """`vdm sample --sampler dpmpp_2m --steps 10` on torch and ort: same noise, clips within parity."""
    path, onnx_path = ckpt
    runner = CliRunner()
    for backend, model in (("torch", path), ("ort", onnx_path)):
        res = runner.invoke(app, ["sample", "--model", str(model), "--backend", backend, "--sampler", "dpmpp_2m",
                                  "--steps", "10", "--num", "2", "--out", str(tmp_path / f"{backend}.npy")])
        assert res.exit_code == 0, res.output
    a, b = np.load(tmp_path / "torch.npy"), np.load(tmp_path / "ort.npy")
    assert np.abs(a).max() > 0.05 and np.abs(a - b).max() <= PARITY
    res = runner.invoke(app, ["sample", "--model", str(path), "--backend", "torch", "--sampler", "euler",
                              "--shift", "3", "--out", str(tmp_path / "x.npy")])
    assert res.exit_code == 2 and "--shift applies to flow" in res.output and not (tmp_path / "x.npy").exists()


def test_vdm_eval_and_sample_default_to_the_process_sampler(tmp_path):
    """A flow checkpoint has no DDIM (spec 7 is vp-only): with no --sampler, eval and sample take
    sampling.DEFAULT_SAMPLERS' euler; a vp checkpoint keeps DDIM."""
    torch.manual_seed(0)
    cfg = UNetConfig(**MICRO)
    net = VideoUNet(cfg)
    meta = {"model_config": cfg.to_dict(), "schedule": vdm_ref.make_schedule("cosine", 1000).to_dict(),
            "prediction": "flow", "process": vdm_ref.Process("flow").to_dict(), "variance": "fixed_small",
            "num_classes": 0, "data": {"kind": "moving_shapes", "frames": 4, "size": 8, "channels": 1}, "step": 1}
    path = tmp_path / "flow.safetensors"
    save_checkpoint(path, model=net, ema=net, optimizer=None, meta=meta)
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "--ckpt", str(path), "--num", "2", "--steps", "2", "--device", "cpu",
                              "--report", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    import json
    assert json.loads((tmp_path / "r.json").read_text())["settings"]["sampling"]["sampler"] == "euler"
    res = runner.invoke(app, ["sample", "--model", str(path), "--backend", "torch", "--steps", "2", "--num", "1",
                              "--out", str(tmp_path / "s.npy")])
    assert res.exit_code == 0 and "euler" in res.output, res.output
