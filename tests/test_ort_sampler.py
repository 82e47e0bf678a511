"""Sampling an exported tiny model in ONNX Runtime against the PyTorch backend (same noise)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vdm.backends import sampling
from vdm.backends.ort.providers import device_problem
from vdm.backends.ort.sampler import OrtSampler
from vdm.backends.ort.session import ModelFileError, OrtDenoiser, read_model_info
from vdm.backends.torch.models import preset
from vdm.backends.torch.models.unet import VideoUNet
from vdm.export.onnx_export import export_model

import vdm_ref

NUM_CLASSES = 3
SHAPE = (2, 1, 8, 16, 16)
PARITY = 1e-3  # max abs difference of the final samples, float32 on CPU




def _tiny(schedule: str, tmp_path_factory, prediction: str = "eps", **overrides):
    torch.manual_seed(0)
    cfg = preset("tiny", image_size=16, frames=8, **overrides)
    model = VideoUNet(cfg).eval()
    for p in model.conv_out.parameters():  # zero-initialised: make the outputs non-trivial
        torch.nn.init.normal_(p, std=0.05)
    meta = {"spec_version": vdm_ref.SPEC_VERSION, "model_config": cfg.to_dict(),
            "schedule": vdm_ref.make_schedule(schedule, 1000).to_dict(), "prediction": prediction,
            "variance": "learned_range" if cfg.learn_sigma else "fixed_small", "num_classes": cfg.num_classes,
            "data": {"frames": 8, "size": 16, "channels": 1}}
    path = tmp_path_factory.mktemp("ort") / f"{schedule}.onnx"
    export_model(model, meta, path)
    return model, meta, path


@pytest.fixture(scope="module")
def linear_model(tmp_path_factory):
    return _tiny("linear", tmp_path_factory, num_classes=NUM_CLASSES, learn_sigma=True)


@pytest.fixture(scope="module")
def cosine_model(tmp_path_factory):
    return _tiny("cosine", tmp_path_factory, prediction="v")


def _parity(model, meta, path, options, num=2, seed=1):
    """The production sampling path (vdm.backends.sampling) on both backends, from one seed."""
    want = sampling.sample_videos(sampling.torch_model(model, meta), num, seed, options)
    got = sampling.sample_videos(sampling.load_model(path, "ort"), num, seed, options)
    return got, want


@pytest.mark.parametrize("sampler", list(vdm_ref.SAMPLERS))
@pytest.mark.parametrize("guidance", [None, 3.0])
def test_ort_matches_torch_linear(linear_model, sampler, guidance):
    model, meta, path = linear_model
    options = sampling.SamplingOptions(sampler=sampler, steps=8, guidance=guidance, klass=2)
    got, want = _parity(model, meta, path, options)
    assert np.abs(got - want).max() <= PARITY
    assert np.abs(want).max() > 0.1


@pytest.mark.parametrize("sampler", list(vdm_ref.SAMPLERS))
def test_ort_matches_torch_cosine_v(cosine_model, sampler):
    model, meta, path = cosine_model
    options = sampling.SamplingOptions(sampler=sampler, steps=8, spacing="leading", eta=0.5)
    got, want = _parity(model, meta, path, options)
    assert np.abs(got - want).max() <= PARITY


@pytest.mark.parametrize("guidance", [None, 2.0])
def test_iobinding_loop_equals_plain_loop(linear_model, guidance):
    _, _, path = linear_model
    smp = OrtSampler(OrtDenoiser(path, threads=1))
    steps = vdm_ref.inference_timesteps(1000, 4, "linspace")
    noise = np.random.default_rng(3).standard_normal((5, *SHAPE)).astype(np.float32)
    keep = noise.copy()
    results = []
    for bound in (False, True):
        smp.io_binding = bound
        results.append(smp.sample(steps, SHAPE, noise, sampler="ddpm", labels=np.array([1, 0]), guidance=guidance))
    assert np.array_equal(noise, keep)  # the caller's noise is never written to
    assert np.abs(results[0] - results[1]).max() <= 1e-6


def test_seed_and_progress(linear_model):
    _, _, path = linear_model
    smp = OrtSampler(OrtDenoiser(path, threads=1))
    steps = vdm_ref.inference_timesteps(1000, 3)
    calls = []
    a = smp.sample(steps, SHAPE, 7, progress=lambda i, n: calls.append((i, n)))
    b = smp.sample(steps, SHAPE, np.random.default_rng(7))
    assert np.array_equal(a, b) and calls == [(1, 3), (2, 3), (3, 3)]


def test_sampler_rejects_bad_requests(linear_model, cosine_model):
    _, _, path = linear_model
    smp = OrtSampler(OrtDenoiser(path, threads=1))
    steps = vdm_ref.inference_timesteps(1000, 2)
    with pytest.raises(ValueError, match="labels"):
        smp.sample(steps, SHAPE, 0, labels=np.array([0, 3 + 1]))
    with pytest.raises(ValueError, match="frames"):
        smp.sample(steps, (1, 1, 40, 16, 16), 0)
    with pytest.raises(ValueError, match="size"):
        smp.sample(steps, (1, 1, 8, 32, 32), 0)
    unc = OrtSampler(OrtDenoiser(cosine_model[2], threads=1))
    with pytest.raises(ValueError, match="unconditional"):
        unc.sample(steps, SHAPE, 0, guidance=2.0)


def test_model_file_errors(tmp_path, linear_model):
    import onnx
    from onnx import helper

    with pytest.raises(ModelFileError, match="not found"):
        read_model_info(tmp_path / "missing.onnx")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(linear_model[2].read_bytes()[:5000])
    with pytest.raises(ModelFileError, match="not a readable ONNX file"):
        read_model_info(truncated)
    io = [helper.make_tensor_value_info(n, 1, [2]) for n in "ab"]
    graph = helper.make_graph([helper.make_node("Relu", ["a"], ["b"])], "g", io[:1], io[1:])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(foreign))
    with pytest.raises(ModelFileError, match="not a vdm model"):
        read_model_info(foreign)


@pytest.mark.cuda
@pytest.mark.skipif(device_problem("cuda") is not None, reason="needs a usable CUDA GPU")
def test_cuda_sampling_matches_cpu(linear_model):
    _, _, path = linear_model
    steps = vdm_ref.inference_timesteps(1000, 6)
    noise = np.random.default_rng(4).standard_normal((7, *SHAPE)).astype(np.float32)
    cpu = OrtSampler(OrtDenoiser(path, device="cpu")).sample(steps, SHAPE, noise, labels=np.array([0, 1]),
                                                               guidance=2.0)
    gpu_den = OrtDenoiser(path, device="cuda")
    assert "CUDAExecutionProvider" in gpu_den.session.get_providers()
    smp = OrtSampler(gpu_den)
    assert smp.io_binding
    gpu = smp.sample(steps, SHAPE, noise, labels=np.array([0, 1]), guidance=2.0)
    assert np.abs(gpu - cpu).max() < 1e-3
