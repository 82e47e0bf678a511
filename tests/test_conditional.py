"""`vdm sample --extend` / `--interpolate`: the window plans (backends/conditional.py) checked against
their definitions, and the whole path on a small real network on both backends (spec 18)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import MICRO_UNET as MICRO
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner
from vdm.backends import conditional, media, sampling
from vdm.backends.torch.models.unet import UNetConfig, VideoUNet
from vdm.backends.torch.training.checkpoint import save_checkpoint
from vdm.cli.main import app
from vdm.export.onnx_export import ExportOptions, export_checkpoint

import vdm_ref

PARITY = 1e-3  # ORT vs torch (as tests/test_sampling.py)


# --------------------------------------------------------------------------- window plans


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 9), st.data())
def test_extension_windows_cover_every_new_frame_once(window, data):
    overlap = data.draw(st.integers(1, window - 1))
    given_n = data.draw(st.integers(overlap, 12))
    total = data.draw(st.integers(given_n + 1, 40))
    known = set(range(given_n))
    for w in conditional.extension_windows(given_n, total, window, overlap):
        inside = set(range(w.start, w.start + window))
        assert len(known & inside) == overlap  # it observes exactly `overlap` frames made before it
        assert set(range(w.start, w.start + overlap)) <= known
        kept = {w.start + j for j in w.keep}
        assert not kept & known and kept <= inside and max(kept) < total
        known |= kept
    assert known == set(range(total))


@settings(max_examples=200, deadline=None)
@given(st.integers(3, 9), st.data())
def test_interpolation_windows_fill_every_gap_between_given_frames(window, data):
    factor = data.draw(st.integers(2, window - 1))
    n_in = data.draw(st.integers(2, 8))
    length = (n_in - 1) * factor + 1
    known = set(range(0, length, factor))
    for w in conditional.interpolation_windows(n_in, factor, window):
        given_in = sorted(known & set(range(w.start, w.start + window)) & set(range(0, length, factor)))
        assert w.start in given_in and len(given_in) >= 2  # given frames on both sides of what it keeps
        kept = {w.start + j for j in w.keep}
        assert not kept & known and kept and max(kept) < given_in[-1]
        known |= kept
    assert known == set(range(length))


@pytest.mark.parametrize("call,words", [
    (lambda: conditional.extension_windows(3, 10, 8, 4), "needs at least 4"),
    (lambda: conditional.extension_windows(4, 4, 8, 4), "must exceed"),
    (lambda: conditional.extension_windows(4, 10, 8, 8), "--overlap must lie in"),
    (lambda: conditional.interpolation_windows(5, 8, 8), "--factor must lie in"),
    (lambda: conditional.interpolation_windows(1, 2, 8), "at least 2"),
])
def test_impossible_plans_are_one_line(call, words):
    with pytest.raises(sampling.SamplingError, match=words) as info:
        call()
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- on a real network


def _micro_checkpoint(folder, seed: int, **meta_extra):
    """The micro network with random output weights, saved as a vp-v checkpoint; (path, net, meta)."""
    torch.manual_seed(seed)
    cfg = UNetConfig(**MICRO)
    net = VideoUNet(cfg)
    for p in net.conv_out.parameters():
        torch.nn.init.normal_(p, std=0.1)
    meta = {"model_config": cfg.to_dict(), "schedule": vdm_ref.make_schedule("cosine", 1000).to_dict(),
            "prediction": "v", "variance": "fixed_small", "num_classes": 0,
            "data": {"kind": "moving_shapes", "frames": 4, "size": 8, "channels": 1}, "step": 1, **meta_extra}
    path = folder / "model.safetensors"
    save_checkpoint(path, model=net, ema=net, optimizer=None, meta=meta)
    return path, net, meta


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    path, _, _ = _micro_checkpoint(tmp_path_factory.mktemp("cond"), 1)
    onnx_path = path.with_suffix(".onnx")
    export_checkpoint(path, onnx_path, ExportOptions())
    return path, onnx_path


def _clip(frames: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(-0.8, 0.8, (1, frames, 8, 8)).astype(np.float32)


def test_extension_keeps_the_clip_and_backends_agree(models):
    path, onnx_path = models
    torch_m, ort_m = sampling.load_model(path, "torch"), sampling.load_model(onnx_path, "ort")
    clip = _clip(3)
    options = sampling.SamplingOptions(sampler="dpmpp_2m", steps=6)
    a = conditional.extend(torch_m, clip, 9, num=2, overlap=2, options=options, method="replacement", seed=3)
    b = conditional.extend(ort_m, clip, 9, num=2, overlap=2, options=options, method="replacement", seed=3)
    assert a.videos.shape == (2, 1, 9, 8, 8) and a.given == (0, 1, 2)
    np.testing.assert_array_equal(a.videos[:, :, :3], np.repeat(clip[None], 2, axis=0))
    assert np.abs(a.videos[0] - a.videos[1]).max() > 1e-2  # two samples, two continuations
    assert np.abs(a.videos - b.videos).max() <= PARITY
    guided = conditional.extend(torch_m, clip, 9, num=2, overlap=2, options=options, method="reconstruction",
                                weight=5.0, seed=3)
    np.testing.assert_array_equal(guided.videos[:, :, :3], a.videos[:, :, :3])
    assert np.abs(guided.videos[:, :, 3:] - a.videos[:, :, 3:]).max() > 1e-3  # the gradient changes the frames
    with pytest.raises(sampling.SamplingError, match="--condition replacement") as info:
        conditional.extend(ort_m, clip, 9, num=1, overlap=2, options=options, method="reconstruction")
    assert "\n" not in str(info.value)


def test_guidance_weight_zero_is_replacement_with_one_noise_path(models):
    """Spec 18.3: w_r = 0 equals replacement with K = 1 (the initial noise of the observed frames)."""
    path, _ = models
    m = sampling.load_model(path, "torch")
    options = sampling.SamplingOptions(sampler="euler", steps=5)
    a = conditional.interpolate(m, _clip(3), 2, options=options, method="replacement", seed=1)
    b = conditional.interpolate(m, _clip(3), 2, options=options, method="reconstruction", weight=0.0, seed=1)
    assert a.videos.shape == (1, 1, 5, 8, 8) and a.given == (0, 2, 4)
    # Equal in exact arithmetic; here the solver's float64 latent reaches the float32 network rounded differently.
    np.testing.assert_allclose(a.videos, b.videos, atol=1e-4)
    c = conditional.interpolate(m, _clip(3), 2, options=options, method="reconstruction", weight=2.0, seed=1)
    assert np.abs(c.videos - a.videos).max() > 1e-3


def test_vdm_sample_extend_from_an_mp4_marks_the_given_frames(models, tmp_path):
    path, _ = models
    rgb = (np.random.default_rng(2).uniform(0, 255, (5, 16, 16, 3))).astype(np.uint8)
    clip_path = media.write_video(tmp_path / "clip.mp4", rgb, fps=8)
    out = tmp_path / "long.npy"
    res = CliRunner().invoke(app, ["sample", "--model", str(path), "--backend", "torch", "--extend", str(clip_path),
                                   "--frames", "11", "--steps", "4", "--num", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    videos = np.load(out)
    assert videos.shape == (2, 1, 11, 8, 8)
    # The given frames are the clip decoded as training decodes it: shorter side to 8, grayscale (BT.601).
    want = media.rgb_to_channels(media.decode_video(clip_path, 8), 1).astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(videos[0, 0, :5], want[..., 0], atol=1e-6)
    sheet = np.asarray(Image.open(media.sheet_path(out)).convert("RGB"))
    red = np.all(sheet == media.MARK_RGB, axis=-1)
    assert red.any(axis=0).nonzero()[0].max() < sheet.shape[1] * 6 // 11  # outlines on the first 5 columns only
    assert red[: sheet.shape[0] // 2].any() and red[sheet.shape[0] // 2:].any()  # on both samples' rows


@pytest.mark.parametrize("args,words", [
    (["--extend", "{bad}"], "cannot read the clip"),
    (["--extend", "{short}", "--overlap", "3"], "needs at least 3"),
    (["--extend", "{rgb}"], "the model takes 1 of 8x8"),
    (["--interpolate", "{short}", "--condition", "guess"], "unknown --condition"),
    (["--interpolate", "{short}", "--extend", "{short}"], "not both"),
    (["--interpolate", "{short}", "--sampler", "ddim"], "runs on the solvers"),
    (["--extend", "{many}"], "holds 2 clips"),
])
def test_bad_clips_and_options_are_one_line(models, tmp_path, args, words):
    path, _ = models
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    np.save(tmp_path / "short.npy", _clip(2))
    np.save(tmp_path / "rgb.npy", np.zeros((3, 4, 8, 8), np.float32))
    np.save(tmp_path / "many.npy", np.zeros((2, 1, 4, 8, 8), np.float32))
    files = {k: str(tmp_path / v) for k, v in (("bad", "bad.mp4"), ("short", "short.npy"), ("rgb", "rgb.npy"),
                                               ("many", "many.npy"))}
    res = CliRunner().invoke(app, ["sample", "--model", str(path), "--backend", "torch", "--steps", "2",
                                   "--out", str(tmp_path / "o.npy"), *[a.format(**files) for a in args]])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], res.output
    assert not (tmp_path / "o.npy").exists()


def test_reconstruction_on_ort_is_one_line_before_anything_runs(models, tmp_path):
    _, onnx_path = models
    np.save(tmp_path / "clip.npy", _clip(3))
    res = CliRunner().invoke(app, ["sample", "--model", str(onnx_path), "--backend", "ort", "--extend",
                                   str(tmp_path / "clip.npy"), "--condition", "reconstruction",
                                   "--out", str(tmp_path / "o.npy")])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "--condition replacement" in lines[0], res.output



# --------------------------------------------------------------------------- spec 18.8: a conditional-frame model


@pytest.fixture(scope="module")
def frames_model(tmp_path_factory):
    """The micro network saved as trained with given frames (vdm train --given-frames 0.5)."""
    return _micro_checkpoint(tmp_path_factory.mktemp("frames"), 2, train={"given_frames": 0.5})


def test_frames_conditioning_shows_the_network_the_given_frames(frames_model):
    path, net, meta = frames_model
    seen = []
    hook = net.register_forward_pre_hook(lambda mod, args: seen.append((args[0].clone(), args[1].clone())))
    try:
        m = sampling.torch_model(net, meta)
        assert m.given_frames and sampling.default_conditioning(m) == "frames"
        clip = _clip(3)
        options = sampling.SamplingOptions(sampler="euler", steps=4)
        got = conditional.extend(m, clip, 4, num=1, overlap=3, options=options, method="frames", seed=5)
    finally:
        hook.remove()
    np.testing.assert_array_equal(got.videos[:, :, :3], clip[None])
    assert len(seen) == 4
    for x, t in seen:  # one window, extension by 3 given frames: vp's given level is t = 0 (spec 18.8)
        assert t.shape == (1, 4) and torch.all(t[:, :3] == 0) and float(t[0, 3]) > 0
        np.testing.assert_array_equal(x[0, :, :3].numpy(), clip)  # noise-free, input scale 1
    replaced = conditional.extend(m, clip, 4, num=1, overlap=3, options=options, method="replacement", seed=5)
    assert np.abs(replaced.videos[:, :, 3] - got.videos[:, :, 3]).max() > 1e-3


def test_frames_conditioning_refusals_are_one_line(models, frames_model, tmp_path):
    path, onnx_path = models
    np.save(tmp_path / "clip.npy", _clip(3))
    for model, backend, words in ((path, "torch", "trained with given frames"),
                                  (onnx_path, "ort", "trained with given frames")):
        res = CliRunner().invoke(app, ["sample", "--model", str(model), "--backend", backend, "--extend",
                                       str(tmp_path / "clip.npy"), "--condition", "frames",
                                       "--out", str(tmp_path / "o.npy")])
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and words in lines[0], res.output
    res = CliRunner().invoke(app, ["sample", "--model", str(frames_model[0]), "--backend", "torch", "--extend",
                                   str(tmp_path / "clip.npy"), "--frames", "6", "--steps", "3",
                                   "--out", str(tmp_path / "f.npy")])
    assert res.exit_code == 0 and "frames" in res.output, res.output  # the default for such a model


def test_a_conditional_frame_model_exports_and_samples_on_onnx_runtime_like_torch(frames_model, tmp_path,
                                                                                   monkeypatch):
    """Exported, a model trained with given frames takes t (B, T); ONNX Runtime samples it unconditionally
    (host loop, IOBinding loop and the v1 sampler's bound loop) and with conditioning 'frames' within the
    backends' parity of torch."""
    import functools

    import onnx
    from vdm.backends.ort.sampler import OrtSampler
    from vdm.backends.ort.session import OrtDenoiser

    path = frames_model[0]
    onnx_path = tmp_path / "frames.onnx"
    report = export_checkpoint(path, onnx_path, ExportOptions())
    assert report.info.given_frames
    t_input = next(i for i in onnx.load(str(onnx_path)).graph.input if i.name == "t")
    assert len(t_input.type.tensor_type.shape.dim) == 2
    torch_m, ort_m = sampling.load_model(path, "torch"), sampling.load_model(onnx_path, "ort")
    assert ort_m.given_frames and sampling.default_conditioning(ort_m) == "frames"
    options = sampling.SamplingOptions(sampler="dpmpp_2m", steps=4, batch_size=2)
    clip = _clip(3)
    a = conditional.extend(torch_m, clip, 6, num=2, overlap=3, options=options, method="frames", seed=4)
    b = conditional.extend(ort_m, clip, 6, num=2, overlap=3, options=options, method="frames", seed=4)
    np.testing.assert_array_equal(b.videos[:, :, :3], np.repeat(clip[None], 2, axis=0))
    assert np.abs(a.videos - b.videos).max() <= PARITY
    plain = sampling.sample_videos(torch_m, 2, 1, options)
    assert np.abs(sampling.sample_videos(ort_m, 2, 1, options) - plain).max() <= PARITY
    monkeypatch.setattr(sampling, "_ort_solve", functools.partial(sampling._ort_solve, io_binding=True))
    assert np.abs(sampling.sample_videos(ort_m, 2, 1, options) - plain).max() <= PARITY
    den = OrtDenoiser(onnx_path)
    steps, noise = vdm_ref.inference_timesteps(1000, 3), np.random.default_rng(0).standard_normal((4, 1, 1, 4, 8, 8))
    host, bound = (OrtSampler(den, io_binding=flag).sample(steps, (1, 1, 4, 8, 8), noise.astype(np.float32))
                   for flag in (False, True))
    np.testing.assert_allclose(bound, host, atol=1e-5)
    from vdm.backends.ort.session import trt_profile

    assert trt_profile(den.info, (1, 2, 4))["t"] == ("1x1", "2x4", "4x8")  # TensorRT: t is (batch, frames)
