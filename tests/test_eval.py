"""Evaluation: Frechet distance against closed forms, feature networks, reports, `vdm eval`."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner
from vdm.backends.torch.evaluation import (
    EvalError,
    evaluate,
    feature_statistics,
    frechet_distance,
    load_feature_extractor,
    noise_clips,
    real_clips,
    real_reference,
    trace_sqrt_product,
)


def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T + 0.1 * np.eye(d)


# --------------------------------------------------------------------------- Frechet distance


@given(st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_diagonal_covariances_closed_form(d, seed):
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    v1, v2 = rng.uniform(0.01, 4, d), rng.uniform(0.01, 4, d)
    expect = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expect, rel=1e-9, abs=1e-9)


@given(st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_commuting_covariances_closed_form(d, seed):
    # Same eigenvectors: sqrt(S1 S2) = Q diag(sqrt(l1 l2)) Q^T, so d = |mu|^2 + sum (sqrt l1 - sqrt l2)^2.
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    l1, l2 = rng.uniform(0.01, 3, d), rng.uniform(0.01, 3, d)
    s1, s2 = (q * l1) @ q.T, (q * l2) @ q.T
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expect = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(l1) - np.sqrt(l2)) ** 2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expect, rel=1e-8, abs=1e-9)


@given(st.integers(1, 10), st.integers(0, 2**31 - 1))
def test_identity_symmetry_and_general_trace(d, seed):
    rng = np.random.default_rng(seed)
    s1, s2 = _spd(rng, d), _spd(rng, d)
    mu = rng.standard_normal(d)
    assert frechet_distance(mu, s1, mu, s1) == pytest.approx(0.0, abs=1e-8 * np.trace(s1))
    assert frechet_distance(mu, s1, 2 * mu, s2) == pytest.approx(frechet_distance(2 * mu, s2, mu, s1), rel=1e-8)
    # tr sqrt(S1 S2) = sum sqrt(eig(S1 S2)) computed directly from the non-symmetric product.
    direct = np.sum(np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)))
    assert trace_sqrt_product(s1, s2) == pytest.approx(direct, rel=1e-7)


def test_singular_covariances_and_shape_errors():
    s = np.zeros((3, 3))
    assert frechet_distance(np.zeros(3), s, np.ones(3), s) == pytest.approx(3.0)
    rank1 = np.outer([1.0, 2.0], [1.0, 2.0])
    assert frechet_distance(np.zeros(2), rank1, np.zeros(2), rank1) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="mu"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


def test_feature_statistics():
    f = np.random.default_rng(0).standard_normal((50, 3))
    mu, sigma = feature_statistics(f)
    assert np.allclose(mu, f.mean(0)) and np.allclose(sigma, np.cov(f.T))
    with pytest.raises(EvalError):
        feature_statistics(f[:1])


# --------------------------------------------------------------------------- feature networks


class _TinyFeatures(torch.nn.Module):
    """(N, C, T, H, W) -> (N, 4): pooled statistics through a fixed linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        stats = torch.stack([flat.mean(1), flat.std(1), (x[:, :, 1:] - x[:, :, :-1]).abs().flatten(1).mean(1)], 1)
        return self.lin(stats)


@pytest.fixture(scope="module")
def feature_nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("features")
    torch.manual_seed(0)
    net = _TinyFeatures().eval()
    x = torch.rand(2, 1, 4, 8, 8) * 2 - 1
    with warnings.catch_warnings():  # jit.trace and the legacy ONNX exporter warn; both are intended here
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.trace(net, x).save(str(d / "feat.pt"))
        torch.onnx.export(net, (x,), str(d / "feat.onnx"), dynamo=False, input_names=["video"], output_names=["f"],
                          dynamic_axes={"video": {0: "n", 2: "t", 3: "h", 4: "w"}, "f": {0: "n"}}, opset_version=17)
    return net, d / "feat.pt", d / "feat.onnx"


def test_torchscript_and_onnx_features_agree(feature_nets):
    net, pt, onnx_path = feature_nets
    videos = np.random.default_rng(1).uniform(-1, 1, (5, 1, 4, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(videos)).numpy()
    for path in (pt, onnx_path):
        got = load_feature_extractor(path, batch_size=2)(videos)
        assert got.shape == (5, 4)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_feature_file_errors(tmp_path):
    with pytest.raises(EvalError, match="not found"):
        load_feature_extractor(tmp_path / "nope.pt")
    for name in ("bad.pt", "bad.onnx"):
        (tmp_path / name).write_bytes(b"not a model at all")
        with pytest.raises(EvalError, match="cannot load"):
            load_feature_extractor(tmp_path / name)
    (tmp_path / "f.h5").write_bytes(b"x")
    with pytest.raises(EvalError, match="unknown format"):
        load_feature_extractor(tmp_path / "f.h5")


# --------------------------------------------------------------------------- evaluate / CLI


def test_real_clips_score_perfectly_and_noise_does_not():
    meta = {"kind": "moving_shapes", "frames": 8, "size": 16, "channels": 1, "options": {"num_objects": 1}}
    real = real_clips(meta, 8, seed=0)
    assert real.shape == (8, 1, 8, 16, 16) and real.min() >= -1 and real.max() <= 1
    noise = noise_clips(real.shape, 0)
    rep = evaluate(samples=real)
    assert rep["rows"]["samples"]["coherent_fraction"] > 0.7
    assert rep["rows"]["noise"]["coherent_fraction"] < 0.2
    assert np.abs(noise).max() <= 1


def test_eval_samples_file_with_features_and_report(tmp_path, feature_nets):
    _, pt, _ = feature_nets
    meta = {"kind": "moving_shapes", "frames": 4, "size": 8, "channels": 1}
    np.save(tmp_path / "s.npy", real_clips(meta, 6, seed=5))
    import typer
    from vdm.cli import eval as eval_cli

    app = typer.Typer()
    eval_cli.register(app)
    res = CliRunner().invoke(app, ["--samples", str(tmp_path / "s.npy"), "--features", str(pt),
                                   "--report", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert "real (held-out)" in res.output and "noise" in res.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert set(rep["rows"]) == {"samples", "real", "noise"}
    fr = rep["frechet"]
    assert fr["noise_vs_real"] > fr["samples_vs_real"]


def test_eval_cli_errors(tmp_path):
    import typer
    from vdm.cli import eval as eval_cli

    app = typer.Typer()
    eval_cli.register(app)
    runner = CliRunner()
    res = runner.invoke(app, ["--ckpt", str(tmp_path / "none.safetensors")])
    assert res.exit_code == 2 and "checkpoint not found" in res.output
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    res = runner.invoke(app, ["--ckpt", str(tmp_path / "bad.safetensors")])
    assert res.exit_code == 2 and "corrupt or truncated" in res.output
    np.save(tmp_path / "s.npy", np.zeros((2, 1, 4, 8, 8), np.float32))
    res = runner.invoke(app, ["--samples", str(tmp_path / "s.npy"), "--features", str(tmp_path / "f.onnx")])
    assert res.exit_code == 2 and "feature network not found" in res.output
    np.save(tmp_path / "bad.npy", np.zeros((2, 8, 8), np.float32))
    res = runner.invoke(app, ["--samples", str(tmp_path / "bad.npy")])
    assert res.exit_code == 2 and "(N, C, T, H, W)" in res.output
    res = runner.invoke(app, [])
    assert res.exit_code == 2 and "--ckpt" in res.output


@pytest.mark.slow
def test_eval_checkpoint_end_to_end(tmp_path):
    """Sample a (barely trained) checkpoint through `vdm eval` and write the report."""
    import typer
    from vdm.backends.sampling import SamplingOptions
    from vdm.backends.torch.training import TrainConfig, train
    from vdm.cli import eval as eval_cli

    model = {"base_channels": 8, "channel_mult": [1, 2], "attn_levels": [1], "temporal_attn_levels": [1],
             "norm_groups": 4}
    train(TrainConfig(model=model, frames=4, size=8, batch_size=4, steps=2, preview_every=0, device="cpu",
                      out_dir=str(tmp_path / "run")))
    app = typer.Typer()
    eval_cli.register(app)
    res = CliRunner().invoke(app, ["--ckpt", str(tmp_path / "run" / "last.safetensors"), "--num", "4", "--steps",
                                   "3", "--device", "cpu", "--report", str(tmp_path / "r.json"),
                                   "--save-samples", str(tmp_path / "s.npy")])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["settings"]["num"] == 4 and rep["settings"]["sampling"]["steps"] == 3 and rep["checkpoint_step"] == 2
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (4, 1, 4, 8, 8) and np.abs(samples).max() <= 1
    # Same seed, same samples (the sampler's noise comes from the seed only).
    rep2 = evaluate(ckpt=tmp_path / "run" / "last.safetensors", num=4, options=SamplingOptions(steps=3),
                    keep_videos=True)
    np.testing.assert_array_equal(rep2["videos"], samples)


def test_eval_with_guidance_samples_guided_clips_through_the_sampling_module(tmp_path):
    """`vdm eval --guidance 3` on a class-conditional checkpoint gives the sampling module's guided clips (same
    seed and options: identical), which differ from the plain conditional ones (guidance 1)."""
    from vdm.backends import sampling
    from vdm.backends.torch.models.unet import UNetConfig, VideoUNet
    from vdm.backends.torch.training.checkpoint import save_checkpoint
    from vdm.cli.main import app

    import vdm_ref

    torch.manual_seed(0)
    cfg = UNetConfig(in_channels=1, base_channels=8, channel_mult=(1, 2), attn_levels=(1,), temporal_attn_levels=(1,),
                     norm_groups=4, num_classes=3, frames=4, image_size=8)
    net = VideoUNet(cfg)
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)  # zero-initialised: make the outputs depend on the class
    meta = {"model_config": cfg.to_dict(), "schedule": vdm_ref.make_schedule("cosine", 1000).to_dict(),
            "prediction": "v", "variance": "fixed_small", "num_classes": 3,
            "data": {"kind": "moving_shapes", "frames": 4, "size": 8, "channels": 1, "num_objects": 1}, "step": 1}
    ckpt = tmp_path / "cond.safetensors"
    save_checkpoint(ckpt, model=net, ema=net, optimizer=None, meta=meta)
    res = CliRunner().invoke(app, ["eval", "--ckpt", str(ckpt), "--num", "4", "--steps", "4", "--guidance", "3",
                                   "--device", "cpu", "--batch-size", "4", "--seed", "2", "--save-samples",
                                   str(tmp_path / "g.npy"), "--report", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    guided = np.load(tmp_path / "g.npy")
    assert json.loads((tmp_path / "r.json").read_text())["settings"]["sampling"]["guidance"] == 3.0
    model = sampling.load_model(ckpt, "torch")
    want = sampling.sample_videos(model, 4, 2, sampling.SamplingOptions(steps=4, guidance=3.0, batch_size=4))
    np.testing.assert_array_equal(guided, want)
    plain = sampling.sample_videos(model, 4, 2, sampling.SamplingOptions(steps=4, guidance=1.0, batch_size=4))
    assert np.abs(plain - guided).max() > 1e-3


# --------------------------------------------------------------------------- natural-video statistics


def test_per_frame_statistics_closed_forms():
    from vdm.backends.torch.evaluation.video_stats import channel_means, frame_contrast, video_statistics

    # Channel c, frame t: level m_c + 0.1 t plus a +-a_c checkerboard. Mean over frames t = 0..3 is m_c + 0.15;
    # a +-a checkerboard has population std exactly a in every frame, whatever the frame's level.
    m, a = np.array([-0.5, 0.0, 0.25]), np.array([0.1, 0.2, 0.3])
    checker = np.where((np.arange(4)[:, None] + np.arange(4)[None]) % 2 == 0, 1.0, -1.0)
    ramp = 0.1 * np.arange(4)
    clip = m[:, None, None, None] + ramp[None, :, None, None] + a[:, None, None, None] * checker
    videos = np.stack([clip, clip])
    np.testing.assert_allclose(channel_means(videos), m + 0.15, atol=1e-12)
    np.testing.assert_allclose(frame_contrast(videos), a, atol=1e-12)
    stats = video_statistics(videos)
    assert list(stats) == ["mean_r", "mean_g", "mean_b", "contrast_r", "contrast_g", "contrast_b", "frame_diff",
                           "lag1_corr"]
    assert stats["frame_diff"] == pytest.approx(0.1)  # every pixel rises by 0.1 per frame
    assert list(video_statistics(videos[:, :1])) == ["mean", "contrast", "frame_diff", "lag1_corr"]


def test_temporal_statistics():
    from vdm.backends.torch.evaluation.video_stats import lag1_correlation, mean_abs_frame_difference

    rng = np.random.default_rng(0)
    still = np.repeat(rng.uniform(-1, 1, (3, 1, 1, 8, 8)), 5, axis=2)
    assert lag1_correlation(still) == pytest.approx(1.0) and mean_abs_frame_difference(still) == 0.0
    flip = still * (-1.0) ** np.arange(5)[None, None, :, None, None]
    assert lag1_correlation(flip) == pytest.approx(-1.0)
    # |x - (-x)| = 2 |x|, whose mean is 2 E|x| of the still image.
    assert mean_abs_frame_difference(flip) == pytest.approx(2 * np.abs(still).mean())
    noise = rng.standard_normal((8, 3, 6, 16, 16))
    assert abs(lag1_correlation(noise)) < 0.03
    # A second, plain implementation: NumPy's corrcoef of the (frame t, frame t+1) pairs.
    mixed = 0.6 * noise + 0.4 * np.roll(noise, 1, axis=2)
    pairs = np.corrcoef(mixed[:, :, :-1].ravel(), mixed[:, :, 1:].ravel())[0, 1]
    assert lag1_correlation(mixed) == pytest.approx(pairs, rel=1e-10)
    assert np.isnan(lag1_correlation(noise[:, :, :1])) and np.isnan(mean_abs_frame_difference(noise[:, :, :1]))


def test_statistics_gap():
    from vdm.backends.torch.evaluation.video_stats import statistics_gap

    assert statistics_gap({"a": 1.0, "b": 0.5, "c": float("nan")}, {"a": 0.0, "b": 0.0, "c": 1.0}) == 0.75
    assert statistics_gap({"a": 0.2}, {"a": 0.2}) == 0.0


# --------------------------------------------------------------------------- vdm eval on a real-video checkpoint


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    """A 1-step run on a folder of 10 videos, each of one flat grey level (20 + 20 i), so a clip's level says
    which file it came from; 30 % of the files held out."""
    from helpers import MICRO_TRAIN_MODEL
    from vdm.backends.media import write_video
    from vdm.backends.torch.training import TrainConfig, train

    base = tmp_path_factory.mktemp("video_run")
    root = base / "videos"
    for i in range(10):
        write_video(root / f"level {20 + 20 * i}.mp4", np.full((6, 16, 16, 3), 20 + 20 * i, np.uint8))
    train(TrainConfig(data=f"folder:{root}", model=MICRO_TRAIN_MODEL, frames=4, size=8, batch_size=2, steps=1,
                      heldout_fraction=0.3, preview_every=0, device="cpu", out_dir=str(base / "run")))
    return root, base / "run" / "last.safetensors"


def _levels(clips: np.ndarray) -> set[int]:
    return {int(round((float(c.mean()) + 1) * 127.5 / 20)) * 20 for c in clips}


def test_real_video_eval_uses_held_out_files_and_video_metrics(video_run, tmp_path):
    from vdm.backends.torch.training.checkpoint import read_meta

    root, ckpt = video_run
    data = read_meta(ckpt)["data"]
    held = data["options"]["heldout"]["files"]
    assert held and data["num_videos"] == 10 - len(held)
    held_levels = {int(name.split()[1].split(".")[0]) for name in held}
    real = real_clips(data, 12, seed=0)
    assert real.shape == (12, 3, 4, 8, 8)
    assert _levels(real) == held_levels  # only held-out files, each of them (12 draws cycle over them)

    samples = np.random.default_rng(0).uniform(-1, 1, (4, 3, 4, 8, 8)).astype(np.float32)
    rep = evaluate(samples=samples, ckpt=ckpt)
    rows = rep["rows"]
    assert set(rows["samples"]) == {"mean_r", "mean_g", "mean_b", "contrast_r", "contrast_g", "contrast_b",
                                    "frame_diff", "lag1_corr", "stats_gap"}
    assert "held out" in rep["settings"]["real_source"] and rep["settings"]["data_kind"] == "folder"
    # Flat held-out clips have no contrast and no motion; the uniform-noise samples have plenty.
    assert rows["real"]["contrast_r"] < 0.02 and rows["samples"]["contrast_r"] > 0.4
    assert rows["samples"]["stats_gap"] > rows["real"]["stats_gap"]
    # Reproducible: the same seed draws the same held-out clips.
    assert evaluate(samples=samples, ckpt=ckpt)["rows"] == rows
    # The cache: the training run's by default; --no-cache leaves a given folder untouched.
    assert rep["settings"]["cache_dir"] == data["cache_dir"]
    evaluate(samples=samples, ckpt=ckpt, cache=False, cache_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()
    evaluate(samples=samples, ckpt=ckpt, cache_dir=tmp_path / "own")
    assert len(list((tmp_path / "own").glob("*.npy"))) == len(held)


def test_real_video_eval_with_features(video_run, feature_nets):
    _, pt, _ = feature_nets
    _, ckpt = video_run
    samples = np.random.default_rng(1).uniform(-1, 1, (6, 3, 4, 8, 8)).astype(np.float32)
    rep = evaluate(samples=samples, ckpt=ckpt, features=pt)
    fr = rep["frechet"]
    assert fr["samples_vs_real"] > fr["real2_vs_real"] >= 0  # uniform noise is far from flat grey clips
    assert rep["rows"]["real"]["frechet_to_real"] == fr["real2_vs_real"]


def test_eval_cli_on_real_video(video_run, tmp_path):
    import typer
    from vdm.cli import eval as eval_cli

    _, ckpt = video_run
    np.save(tmp_path / "s.npy", np.zeros((3, 3, 4, 8, 8), np.float32))
    app = typer.Typer()
    eval_cli.register(app)
    res = CliRunner().invoke(app, ["--samples", str(tmp_path / "s.npy"), "--ckpt", str(ckpt), "--report",
                                   str(tmp_path / "r.json")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "lag1_corr" in res.output and "coherent_fraction" not in res.output
    assert "real clips: " in res.output and "held out" in res.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["rows"]["samples"]["lag1_corr"] is None  # constant clips: undefined, written as null
    assert rep["settings"]["metrics"].startswith("natural-video statistics")


def test_few_held_out_files_still_give_varied_clips(tmp_path):
    from vdm.backends.media import write_video

    levels = (10 + 12 * np.arange(20)).astype(np.uint8)  # frame t has level 10 + 12 t
    write_video(tmp_path / "ramp.mp4", np.broadcast_to(levels[:, None, None, None], (20, 16, 16, 3)).copy())
    write_video(tmp_path / "trained.mp4", np.zeros((20, 16, 16, 3), np.uint8))
    meta = {"kind": "folder", "frames": 4, "size": 8, "channels": 3,
            "options": {"root": str(tmp_path), "heldout": {"files": ["ramp.mp4"]}}}
    clips = real_clips(meta, 8, seed=0)
    starts = [round(((float(c[:, 0].mean()) + 1) * 127.5 - 10) / 12) for c in clips]
    assert len(set(starts)) >= 4 and all(0 <= s <= 16 for s in starts)  # 8 clips of the one file, not 8 copies
    assert min(float(c.mean()) for c in clips) > -0.95  # never the all-black training file
    again = real_reference(meta, seed=0).draw(8, 1)
    assert not np.array_equal(again, clips)  # the second draw is another sample
