"""The sampler update as ONNX graphs in ONNX Runtime, against vdm_ref (spec 7.1 - 7.6)."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner
from vdm.backends.conformance.protocol import OPS
from vdm.backends.ort import step_graph as sg
from vdm.backends.ort.conformance import OrtStepBackend
from vdm.backends.ort.sampler import StepConfig, noise_source, sample_host
from vdm.backends.ort.session import StepSessions
from vdm.cli.main import app

import vdm_ref

TOL = json.loads(resources.files("vdm.spec").joinpath("tolerances.json").read_text())["ops"]
SCHEDULES = {
    "linear": vdm_ref.make_schedule("linear", 1000),
    "cosine": vdm_ref.make_schedule("cosine", 1000),
    "ztsnr": vdm_ref.make_schedule("scaled_linear", 1000, zero_terminal_snr=True),
}


@pytest.fixture(scope="module", params=["float32", "float64"])
def backend(request):
    return OrtStepBackend(dtype=request.param)


def _ratio(got, want, op, dtype):
    tol = TOL[op][dtype]
    return float(np.max(np.abs(got - want) / (tol["atol"] + tol["rtol"] * np.abs(want))))


def _rounded(x, dtype):
    return np.asarray(x, np.float64).astype(dtype).astype(np.float64)


@settings(max_examples=25)
@given(data=st.data())
def test_steps_match_reference(backend, data):
    dtype = backend.dtype
    draw = data.draw
    name = draw(st.sampled_from(sorted(SCHEDULES)))
    sched = SCHEDULES[name]
    prediction = draw(st.sampled_from(["x0", "v"] if name == "ztsnr" else ["eps", "x0", "v"]))
    sampler = draw(st.sampled_from(["ddim", "ddpm"]))
    variance = draw(st.sampled_from(vdm_ref.VARIANCES))
    clip = draw(st.sampled_from([None, 1.0, 1.5]))
    threshold = draw(st.sampled_from([None, 0.995, 0.9]))
    eta = draw(st.sampled_from([0.0, 0.5, 1.0]))
    b = draw(st.integers(1, 3))
    shape = (b, draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4)), 3)
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    # float32: timesteps where abar is well conditioned (spec tolerances: low_precision_abar_range)
    pool = np.arange(1000) if dtype == "float64" else np.flatnonzero((sched.abar > 1e-3) & (sched.abar < 0.999))
    t = rng.choice(pool[1:], b)
    s = np.where(rng.random(b) < 0.3, -1, np.maximum(t - rng.integers(1, 200, b), -1))
    s = np.where(np.isin(s, pool) | (s < 0), s, -1)
    x = _rounded(rng.standard_normal(shape), dtype)
    wide = variance == "learned_range" or rng.random() < 0.5
    out = rng.standard_normal((b, 2 * shape[1] if wide else shape[1], *shape[2:])) * 2
    if wide:
        out[:, shape[1]:] = rng.uniform(-1, 1, out[:, shape[1]:].shape)
    out = _rounded(out, dtype)
    noise = _rounded(rng.standard_normal(shape), dtype)
    if sampler == "ddpm":
        want = vdm_ref.ddpm_step(sched, x, t, s, out, noise, prediction=prediction, variance=variance, clip=clip,
                                 threshold=threshold)
        got = backend.ddpm_step(sched, x, t, s, out, noise, prediction=prediction, variance=variance, clip=clip,
                                threshold=threshold)
    else:
        want = vdm_ref.ddim_step(sched, x, t, s, out, noise, prediction=prediction, eta=eta, clip=clip,
                                 threshold=threshold)
        got = backend.ddim_step(sched, x, t, s, out, noise, prediction=prediction, eta=eta, clip=clip,
                                threshold=threshold)
    assert got.dtype == np.dtype(dtype) and got.shape == shape
    assert _ratio(got, want, f"{sampler}_step", dtype) <= 1.0


@pytest.mark.parametrize("n", [1, 2, 7, 100, 8193])
@pytest.mark.parametrize("q", [0.5, 0.9, 0.995, 1.0])
def test_quantile_inputs_match_numpy(n, q):
    v = np.random.default_rng(n).standard_normal(n)
    inp = sg.quantile_inputs(n, q, 0.0, "float64")
    k = int(inp["q_k"][0])
    top = np.sort(v)[::-1][:k]
    lo, hi = top[inp["q_idx"]]
    assert lo + (hi - lo) * float(inp["q_frac"]) == pytest.approx(np.quantile(v, q), rel=1e-12, abs=1e-12)


def test_threshold_clip_guidance(backend):
    dtype = backend.dtype
    rng = np.random.default_rng(3)
    x0 = _rounded(rng.standard_normal((2, 3, 5, 4, 4)) * 3 * np.arange(1, 6).reshape(1, 1, 5, 1, 1), dtype)
    for q, floor in [(0.995, 1.0), (0.9, 0.5), (1.0, 1.5), (0.5, 1.0)]:
        got = backend.dynamic_threshold(x0, q, floor)
        assert _ratio(got, vdm_ref.dynamic_threshold(x0, q, floor), "dynamic_threshold", dtype) <= 1.0
    assert np.array_equal(backend.clip_x0(x0, 0.75), vdm_ref.clip_x0(x0, 0.75))
    c, u = _rounded(rng.standard_normal((2, 6, 3)), dtype), _rounded(rng.standard_normal((2, 6, 3)), dtype)
    for scale, ch in [(7.5, None), (3.0, 3), (0.0, 3), (-0.5, None)]:
        got = backend.classifier_free_guidance(c, u, scale, ch)
        want = vdm_ref.classifier_free_guidance(c, u, scale, ch)
        assert _ratio(got, want, "classifier_free_guidance", dtype) <= 1.0
        if ch is not None:
            assert np.array_equal(got[:, ch:], c[:, ch:])


def test_fused_guidance_step_equals_guidance_then_step():
    sched = SCHEDULES["cosine"]
    rng = np.random.default_rng(5)
    shape = (2, 1, 3, 4, 4)
    x = rng.standard_normal(shape).astype(np.float32)
    out = rng.standard_normal((4, 2, 3, 4, 4)).astype(np.float32)
    noise = rng.standard_normal(shape).astype(np.float32)
    cfg = StepConfig("ddpm", "eps", "learned_range", clip=1.0)
    t, s = np.full(2, 500), np.full(2, 400)
    steps = StepSessions()
    spec = cfg.spec(s, guidance=True)
    x_next, x_model = steps.step(spec, {"x": x, "out": out, "noise": noise, "w": np.array(3.0, np.float32),
                                        **cfg.feeds(spec, sched, t, s, shape)})
    guided = vdm_ref.classifier_free_guidance(out[:2], out[2:], 3.0, 1)
    want = vdm_ref.ddpm_step(sched, x, t, s, guided, noise, prediction="eps", variance="learned_range", clip=1.0)
    assert np.abs(x_next - want).max() < 1e-4
    assert np.array_equal(x_model, np.concatenate([x_next, x_next]))


def test_sample_loop_matches_reference_with_ideal_model():
    # Spec 7.6 with the closed-form Gaussian denoiser: the ORT loop reproduces vdm_ref's samples.
    from vdm_ref import ideal

    sched = SCHEDULES["linear"]
    model = ideal.gaussian_ideal_model(sched, 0.3, 0.25, "eps")
    steps = vdm_ref.inference_timesteps(1000, 12, "leading")
    shape = (3, 2, 2, 3, 3)
    noise = np.random.default_rng(0).standard_normal((13, *shape))
    sessions = StepSessions()
    for sampler in ("ddim", "ddpm"):
        cfg = StepConfig(sampler, "eps", "fixed_large", eta=0.5, clip=1.0)
        got = sample_host(lambda x, t: model(x.astype(np.float64), t), sched, steps, shape, noise, cfg, sessions)
        want = vdm_ref.sample(model, sched, steps, shape, noise, sampler=sampler, prediction="eps",
                              variance="fixed_large", eta=0.5, clip=1.0)
        assert np.abs(got - want).max() < 1e-4


def test_generator_noise_is_the_spec_stream():
    shape = (2, 1, 3, 4, 4)
    z = noise_source(np.random.default_rng(9), 4, shape)
    full = vdm_ref.sampling_noise(np.random.default_rng(9), 4, shape)
    assert all(np.array_equal(z(i), full[i].astype(np.float32)) for i in range(5))
    with pytest.raises(ValueError, match="shape"):
        noise_source(np.zeros((3, *shape)), 4, shape)


def test_bad_step_arguments(backend):
    sched = SCHEDULES["linear"]
    x = np.zeros((2, 1, 2, 2, 2))
    with pytest.raises(ValueError, match="smaller"):
        backend.ddim_step(sched, x, 10, 10, x)
    with pytest.raises(ValueError, match="noise"):
        backend.ddpm_step(sched, x, 10, 5, x, None)
    with pytest.raises(ValueError, match="2C"):
        backend.ddpm_step(sched, x, 10, 5, x, x, variance="learned_range")
    with pytest.raises(NotImplementedError):
        backend.q_sample(sched, x, 3, x)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conformance_kit_passes(dtype):
    # `ort` is a built-in name: the step graphs claim the section-7 clauses and nothing else.
    res = CliRunner().invoke(app, ["conformance", "ort", "--dtype", dtype, "--cases", "10"])
    assert res.exit_code == 0, res.output
    scope = OrtStepBackend.scope
    assert f"{len(scope)} passed, 0 failed, 0 xfailed, {len(OPS) - len(scope)} skipped" in res.stdout
    assert "outside the backend's declared scope" in res.stdout
