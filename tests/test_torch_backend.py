"""The PyTorch backend (vdm.backends.torch) held to vdm_ref, op by op, with spec/tolerances.json.

Every property test draws a schedule, shapes, timesteps, a dtype the op has a tolerance for and
values; it runs the torch op on the inputs in that dtype and vdm_ref on the same inputs rounded
to that dtype (as float64), and compares them with ``assert_within_tolerance``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from vdm.backends.torch import ops as O

import vdm_ref as R

TOL = json.loads((Path(__file__).resolve().parents[1] / "spec" / "tolerances.json").read_text())
LO_ABAR, HI_ABAR = TOL["low_precision_abar_range"]
TD = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda", id="cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")],
    ),
]
device_param = pytest.mark.parametrize("device", DEVICES)
# VDM_TEST_SCALE=10 runs ten times the examples (a soak run); the default keeps the file fast.
SCALE = float(os.environ.get("VDM_TEST_SCALE", "1"))


def examples(n: int) -> settings:
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None)


FAST = examples(200)
SLOW = examples(100)


# --- helpers ------------------------------------------------------------------------------------


def tolerance(op: str, dtype: str) -> tuple[float, float]:
    entry = TOL["ops"][op]
    if entry.get("tables_always_float64"):
        dtype = "float64"
    return entry[dtype]["rtol"], entry[dtype]["atol"]


def dtypes_for(op: str) -> list[str]:
    return [d for d in TD if d in TOL["ops"][op]]


def npy(x: torch.Tensor | np.ndarray | float) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def assert_within_tolerance(got: torch.Tensor | np.ndarray, want: np.ndarray, op: str, dtype: str) -> None:
    """Spec metric: max |got - want| / (atol + rtol |want|) <= 1; equal values (incl. infinities) match."""
    rtol, atol = tolerance(op, dtype)
    g, w = npy(got), np.asarray(want, dtype=np.float64)
    assert g.shape == w.shape, f"{op}: shape {g.shape} != reference {w.shape}"
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.abs(g - w) / (atol + rtol * np.abs(w))
    err = np.where(g == w, 0.0, err)
    worst = float(np.max(err, initial=0.0)) if not np.isnan(err).any() else math.inf
    assert worst <= 1.0, f"{op} [{dtype}]: error ratio {worst:.3g} (rtol={rtol}, atol={atol})"


def data(rng: np.random.Generator, shape: tuple[int, ...], dtype: str, device: str, scale: float = 1.0):
    """A random tensor in ``dtype`` on ``device`` and its exact float64 value for the reference."""
    x = torch.from_numpy(rng.standard_normal(shape) * scale).to(device=device, dtype=TD[dtype])
    return x, npy(x)


def as_time(t, device: str):
    """(torch argument, reference argument) for an int or a per-sample int vector."""
    if isinstance(t, int):
        return t, t
    return torch.tensor(t, dtype=torch.int64, device=device), np.asarray(t, dtype=np.int64)


# --- strategies ----------------------------------------------------------------------------------


@st.composite
def schedule_specs(draw, T=None):
    name = draw(st.sampled_from(R.SCHEDULES))
    T = draw(st.one_of(st.integers(2, 40), st.sampled_from([100, 257, 1000]))) if T is None else T
    params: dict[str, float] = {}
    if draw(st.booleans()):
        if name in ("linear", "sigmoid"):
            b0 = draw(st.floats(1e-5, 2e-3))
            params = {"beta_start": b0, "beta_end": draw(st.floats(b0, 0.05))}
            if name == "sigmoid":
                params["sigmoid_range"] = draw(st.floats(0.5, 8.0))
        elif name == "scaled_linear":
            b0 = draw(st.floats(1e-4, 2e-3))
            params = {"beta_start": b0, "beta_end": draw(st.floats(b0, 0.03))}
        else:
            params = {"s": draw(st.floats(0.0, 0.02)), "max_beta": draw(st.floats(0.5, 0.999))}
    return name, T, draw(st.booleans()), params


def build(spec, dtype: str, device: str):
    """(vdm_ref schedule, torch schedule); rejects the example if the reference refuses the spec."""
    name, T, zts, params = spec
    try:
        ref = R.make_schedule(name, T, zero_terminal_snr=zts, **params)
    except ValueError:
        with pytest.raises(ValueError):
            O.make_schedule(name, T, zero_terminal_snr=zts, **params)
        assume(False)
    return ref, O.make_schedule(name, T, zero_terminal_snr=zts, device=device, dtype=TD[dtype], **params)


def allowed_t(ref: R.Schedule, dtype: str) -> list[int]:
    """Timesteps the tolerances apply to: all in float64, abar in the low-precision range otherwise."""
    if dtype == "float64":
        return list(range(ref.T))
    return [int(i) for i in np.nonzero((ref.abar >= LO_ABAR) & (ref.abar <= HI_ABAR))[0]]


@st.composite
def shapes(draw, min_rank: int = 2):
    rank = draw(st.sampled_from([r for r in (2, 3, 4, 5) if r >= min_rank] + [5, 5]))
    dims = [draw(st.integers(1, 3)), draw(st.integers(1, 3))] + [draw(st.integers(1, 5)) for _ in range(rank - 2)]
    return tuple(dims)


def draw_t(draw, ref: R.Schedule, dtype: str, batch: int, *, exclude_zero_abar: bool = False):
    ts = allowed_t(ref, dtype)
    if exclude_zero_abar:
        ts = [t for t in ts if ref.abar[t] > 0]
    assume(ts)
    if draw(st.booleans()):
        return int(draw(st.sampled_from(ts)))
    return [int(draw(st.sampled_from(ts))) for _ in range(batch)]


def draw_pair(draw, ref: R.Schedule, dtype: str, batch: int | None, *, exclude_zero_abar: bool = False):
    """(t, s) with s < t: free pairs or strided pairs of an inference schedule; ints or vectors."""
    ts = allowed_t(ref, dtype)
    if exclude_zero_abar:
        ts = [t for t in ts if ref.abar[t] > 0]
    assume(ts)

    def one():
        if draw(st.booleans()):
            spacing = draw(st.sampled_from(R.SPACINGS))
            n = draw(st.integers(1, min(ref.T, 50)))
            pairs = [p for p in R.step_pairs(R.inference_timesteps(ref.T, n, spacing)) if p[0] in ts]
            pairs = [p for p in pairs if p[1] == -1 or p[1] in ts]
            if pairs:
                return draw(st.sampled_from(pairs))
        t = int(draw(st.sampled_from(ts)))
        return t, int(draw(st.sampled_from([-1] + [s for s in ts if s < t])))

    if batch is None or draw(st.booleans()):
        return one()
    pairs = [one() for _ in range(batch)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


seeds = st.integers(0, 2**32 - 1)


# --- spec 2 and 6: schedules and timesteps -----------------------------------------------------------


@device_param
@examples(200)
@given(spec=schedule_specs(), dtype=st.sampled_from(list(TD)))
def test_schedule_tables_match_reference_in_float64(device, spec, dtype):
    ref, sched = build(spec, dtype, device)
    got = sched.tables64()
    for key, want in ref.tables().items():
        assert got[key].dtype == torch.float64
        assert_within_tolerance(got[key], want, "make_schedule", dtype)
    # The compute tables are the float64 tables cast once.
    assert sched.abar.dtype == TD[dtype] and sched.abar.device.type == device
    assert torch.equal(sched.abar, sched.abar64.to(TD[dtype]))
    assert float(sched.abar_at(-1)) == 1.0
    assert sched.to_dict() == ref.to_dict()
    again = O.TorchSchedule.from_dict(ref.to_dict(), device=device, dtype=torch.float64)
    assert torch.equal(again.abar64, sched.abar64)
    moved = sched.to(dtype=torch.float64)
    assert moved.dtype == torch.float64 and torch.equal(moved.abar, sched.abar64)


def test_defaults_and_names_mirror_reference():
    assert O.DEFAULT_PARAMS == R.DEFAULT_PARAMS
    assert (O.SCHEDULES, O.SPACINGS, O.PREDICTIONS, O.VARIANCES) == (
        R.SCHEDULES, R.SPACINGS, R.PREDICTIONS, R.VARIANCES)
    assert {k: v.options for k, v in O.SAMPLERS.items()} == {k: v.options for k, v in R.SAMPLERS.items()}
    # Reference-only: the version string, and the exact-data tools the torch tests borrow from vdm_ref (the
    # ideal models of 7.6.1 and 14.8, the Gaussian-process check of 18.7), which no backend reimplements.
    reference_only = {"SPEC_VERSION", "ar1_covariance", "gp_denoiser_matrix", "gp_denoiser", "gp_conditional",
                      "conditional_w2"}
    missing = {n for n in R.__all__ if n not in reference_only and not n.endswith("_ideal_model")} - set(O.__all__)
    assert not missing
    assert O.READABLE_SPEC_MAJORS == R.READABLE_SPEC_MAJORS


@examples(100)
@given(T=st.integers(1, 1200), n=st.integers(1, 1200), spacing=st.sampled_from(R.SPACINGS), offset=st.integers(0, 5))
def test_inference_timesteps_exact(T, n, spacing, offset):
    try:
        want = R.inference_timesteps(T, n, spacing, offset)
    except (ValueError, TypeError) as exc:
        with pytest.raises(type(exc)):
            O.inference_timesteps(T, n, spacing, offset)
        return
    got = O.inference_timesteps(T, n, spacing, offset)
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), want)
    assert O.step_pairs(got) == R.step_pairs(want)


# --- spec 3 and 8.1: forward process and targets ------------------------------------------------------


@device_param
@FAST
@given(spec=schedule_specs(), shape=shapes(), seed=seeds, data_=st.data())
def test_forward_process(device, spec, shape, seed, data_):
    draw = data_.draw
    dtype = draw(st.sampled_from(dtypes_for("q_sample")))
    ref, sched = build(spec, dtype, device)
    rng = np.random.default_rng(seed)
    t, rt = as_time(draw_t(draw, ref, dtype, shape[0]), device)
    x0, rx0 = data(rng, shape, dtype, device, scale=draw(st.sampled_from([1.0, 3.0])))
    noise, rnoise = data(rng, shape, dtype, device)
    mean, var = O.q_mean_variance(sched, x0, t)
    rmean, rvar = R.q_mean_variance(ref, rx0, rt)
    assert_within_tolerance(mean, rmean, "q_mean_variance", dtype)
    assert_within_tolerance(var, rvar, "q_mean_variance", dtype)
    assert mean.dtype == TD[dtype] and var.shape == x0.shape
    assert_within_tolerance(O.q_sample(sched, x0, t, noise), R.q_sample(ref, rx0, rt, rnoise), "q_sample", dtype)
    if isinstance(t, int):  # a 0-d tensor is a scalar timestep too
        t0 = torch.tensor(t, device=device)
        assert torch.equal(O.q_sample(sched, x0, t0, noise), O.q_sample(sched, x0, t, noise))
    assert_within_tolerance(O.velocity(sched, x0, t, noise), R.velocity(ref, rx0, rt, rnoise), "velocity", dtype)
    for prediction in R.PREDICTIONS:
        assert_within_tolerance(O.training_target(sched, x0, t, noise, prediction),
                                R.training_target(ref, rx0, rt, rnoise, prediction), "training_target", dtype)
    if dtype in dtypes_for("v_from_x0_eps"):
        assert_within_tolerance(O.v_from_x0_eps(sched, t, x0, noise), R.v_from_x0_eps(ref, rt, rx0, rnoise),
                                "v_from_x0_eps", dtype)


def test_q_mean_variance_returns_fresh_memory():
    sched = O.make_schedule("linear", 10, dtype=torch.float64)
    _, var = O.q_mean_variance(sched, torch.zeros(1, 1, dtype=torch.float64), 3)
    var.fill_(7.0)
    assert float(sched.one_minus_abar[3]) != 7.0


# --- spec 4: parameterisations ------------------------------------------------------------------------


@device_param
@FAST
@given(spec=schedule_specs(), shape=shapes(), seed=seeds, data_=st.data())
def test_parameterisations(device, spec, shape, seed, data_):
    draw = data_.draw
    dtype = draw(st.sampled_from(dtypes_for("x0_from_eps")))
    ref, sched = build(spec, dtype, device)
    rng = np.random.default_rng(seed)
    t, rt = as_time(draw_t(draw, ref, dtype, shape[0], exclude_zero_abar=True), device)
    x_t, rx = data(rng, shape, dtype, device)
    other, ro = data(rng, shape, dtype, device)
    for op in ("x0_from_eps", "eps_from_x0", "x0_from_v", "eps_from_v"):
        assert_within_tolerance(getattr(O, op)(sched, x_t, t, other), getattr(R, op)(ref, rx, rt, ro), op, dtype)
    for prediction in R.PREDICTIONS:
        got, want = O.predict_x0_eps(sched, x_t, t, other, prediction), R.predict_x0_eps(ref, rx, rt, ro, prediction)
        for g, w in zip(got, want, strict=True):
            assert_within_tolerance(g, w, "predict_x0_eps", dtype)


def test_x0_from_eps_refuses_zero_abar():
    sched = O.make_schedule("linear", 20, zero_terminal_snr=True, dtype=torch.float64)
    x = torch.zeros(2, 1, 3, dtype=torch.float64)
    for t in (19, torch.tensor([3, 19])):
        with pytest.raises(ValueError, match="abar_t = 0"):
            O.x0_from_eps(sched, x, t, x)
    # v prediction is defined there.
    O.predict_x0_eps(sched, x, 19, x, "v")


@device_param
@FAST
@given(c=st.integers(1, 4), two=st.booleans(), rest=st.lists(st.integers(1, 3), max_size=3))
def test_split_model_output(device, c, two, rest):
    out = torch.randn(2, c * (2 if two else 1), *rest, device=device)
    pred, var = O.split_model_output(out, c)
    rpred, rvar = R.split_model_output(npy(out), c)
    np.testing.assert_array_equal(npy(pred), rpred)
    assert (var is None) == (rvar is None)
    if var is not None:
        np.testing.assert_array_equal(npy(var), rvar)


# --- spec 5: posterior ---------------------------------------------------------------------------------


@device_param
@FAST
@given(spec=schedule_specs(), shape=shapes(), seed=seeds, data_=st.data())
def test_posterior(device, spec, shape, seed, data_):
    draw = data_.draw
    dtype = draw(st.sampled_from(dtypes_for("posterior_mean")))
    ref, sched = build(spec, dtype, device)
    rng = np.random.default_rng(seed)
    t_, s_ = draw_pair(draw, ref, dtype, shape[0])
    (t, rt), (s, rs) = as_time(t_, device), as_time(s_, device)
    for op in ("effective_beta", "posterior_variance", "posterior_log_variance_clipped"):
        got = getattr(O, op)(sched, s, t)
        assert got.dtype == TD[dtype]
        assert_within_tolerance(got, getattr(R, op)(ref, rs, rt), op, dtype)
    for g, w in zip(O.posterior_mean_coefs(sched, s, t), R.posterior_mean_coefs(ref, rs, rt), strict=True):
        assert_within_tolerance(g, w, "posterior_mean", dtype)  # no own entry: judged as the mean it builds
    x0, rx0 = data(rng, shape, dtype, device)
    x_t, rx = data(rng, shape, dtype, device)
    assert_within_tolerance(O.posterior_mean(sched, x0, x_t, s, t), R.posterior_mean(ref, rx0, rx, rs, rt),
                            "posterior_mean", dtype)
    for variance in ("fixed_small", "fixed_large"):
        assert_within_tolerance(O.model_log_variance(sched, s, t, variance),
                                R.model_log_variance(ref, rs, rt, variance), "model_log_variance", dtype)
    v, rv = data(rng, shape, dtype, device)
    assert_within_tolerance(O.model_log_variance(sched, s, t, "learned_range", v),
                            R.model_log_variance(ref, rs, rt, "learned_range", rv), "model_log_variance", dtype)


# --- spec 7: x0 processing, steps, guidance, loop ------------------------------------------------------


def representable(value: float, dtype: str) -> float:
    return float(torch.tensor(value, dtype=torch.float64).to(TD[dtype]).double())


@device_param
@FAST
@given(shape=shapes(), seed=seeds, data_=st.data())
def test_clip_and_threshold(device, shape, seed, data_):
    draw = data_.draw
    dtype = draw(st.sampled_from(dtypes_for("dynamic_threshold")))
    rng = np.random.default_rng(seed)
    x0, rx0 = data(rng, shape, dtype, device, scale=draw(st.sampled_from([0.5, 2.0, 5.0])))
    # The limit is an input too: rounded to the dtype, as the exact (zero) tolerance requires.
    limit = representable(draw(st.floats(0.05, 4.0)), dtype)
    got = O.clip_x0(x0, limit)
    assert got.dtype == TD[dtype]
    assert_within_tolerance(got, R.clip_x0(rx0, limit), "clip_x0", dtype)
    quantile = draw(st.one_of(st.just(0.995), st.just(1.0), st.floats(0.01, 1.0)))
    floor = draw(st.sampled_from([1.0, 0.5, 0.0]))
    assert_within_tolerance(O.dynamic_threshold(x0, quantile, floor), R.dynamic_threshold(rx0, quantile, floor),
                            "dynamic_threshold", dtype)
    assert_within_tolerance(O.process_x0(x0, limit, quantile), R.process_x0(rx0, limit, quantile),
                            "dynamic_threshold", dtype)


def _step_inputs(draw, device, spec, shape, seed, op):
    dtype = draw(st.sampled_from(dtypes_for(op)))
    ref, sched = build(spec, dtype, device)
    prediction = draw(st.sampled_from(R.PREDICTIONS))
    t_, s_ = draw_pair(draw, ref, dtype, shape[0], exclude_zero_abar=prediction == "eps")
    rng = np.random.default_rng(seed)
    x_t, rx = data(rng, shape, dtype, device)
    two = draw(st.booleans())
    out, rout = data(rng, (shape[0], shape[1] * (2 if two else 1), *shape[2:]), dtype, device)
    noise, rnoise = data(rng, shape, dtype, device)
    clip = draw(st.sampled_from([None, 1.0, 2.5]))
    threshold = draw(st.sampled_from([None, 0.995, 0.9]))
    return dtype, ref, sched, prediction, as_time(t_, device), as_time(s_, device), (x_t, rx), (out, rout), \
        (noise, rnoise), clip, threshold, two


@device_param
@FAST
@given(spec=schedule_specs(), shape=shapes(min_rank=2), seed=seeds, data_=st.data())
def test_ddpm_step(device, spec, shape, seed, data_):
    draw = data_.draw
    (dtype, ref, sched, prediction, (t, rt), (s, rs), (x_t, rx), (out, rout), (noise, rnoise), clip, threshold,
     two) = _step_inputs(draw, device, spec, shape, seed, "ddpm_step")
    variance = draw(st.sampled_from(R.VARIANCES if two else ("fixed_small", "fixed_large")))
    kw = dict(prediction=prediction, variance=variance, clip=clip, threshold=threshold)
    got = O.ddpm_step(sched, x_t, t, s, out, noise, **kw)
    assert got.dtype == TD[dtype]
    assert_within_tolerance(got, R.ddpm_step(ref, rx, rt, rs, rout, rnoise, **kw), "ddpm_step", dtype)


@device_param
@FAST
@given(spec=schedule_specs(), shape=shapes(min_rank=2), seed=seeds, data_=st.data())
def test_ddim_step(device, spec, shape, seed, data_):
    draw = data_.draw
    (dtype, ref, sched, prediction, (t, rt), (s, rs), (x_t, rx), (out, rout), (noise, rnoise), clip, threshold,
     _) = _step_inputs(draw, device, spec, shape, seed, "ddim_step")
    eta = draw(st.sampled_from([0.0, 1.0, 0.3]))
    kw = dict(prediction=prediction, eta=eta, clip=clip, threshold=threshold)
    got = O.ddim_step(sched, x_t, t, s, out, noise, **kw)
    assert got.dtype == TD[dtype]
    assert_within_tolerance(got, R.ddim_step(ref, rx, rt, rs, rout, rnoise, **kw), "ddim_step", dtype)
    assert_within_tolerance(O.ddim_sigma(sched, t, s, eta), R.ddim_sigma(ref, rt, rs, eta), "ddim_step", dtype)
    ra_t, ra_s = ref.abar_at(rt), ref.abar_at(rs)
    got_var = O.ddim_direction_variance(torch.from_numpy(np.asarray(ra_t)), torch.from_numpy(np.asarray(ra_s)), eta)
    assert_within_tolerance(got_var, R.ddim_direction_variance(ra_t, ra_s, eta), "ddim_step", "float64")
    if eta == 0.0:  # deterministic: no noise needed
        assert torch.equal(O.ddim_step(sched, x_t, t, s, out, **kw), got)


def test_steps_without_noise():
    sched = O.make_schedule("cosine", 50, dtype=torch.float64)
    x = torch.randn(2, 2, 3, dtype=torch.float64)
    # Last step (s = -1) needs no noise, as an int or a tensor.
    a = O.ddpm_step(sched, x, 4, -1, x, None)
    b = O.ddpm_step(sched, x, torch.tensor([4, 4]), torch.tensor([-1, -1]), x, None)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="'noise'"):
        O.ddpm_step(sched, x, 4, 2, x, None)
    with pytest.raises(ValueError, match="'noise'"):
        O.ddpm_step(sched, x, torch.tensor([4, 4]), torch.tensor([-1, 2]), x, None)
    with pytest.raises(ValueError, match="'noise'"):
        O.ddim_step(sched, x, 4, 2, x, None, eta=0.5)
    O.ddim_step(sched, x, 4, -1, x, None, eta=0.5)


@device_param
@FAST
@given(shape=shapes(), seed=seeds, data_=st.data())
def test_classifier_free_guidance(device, shape, seed, data_):
    draw = data_.draw
    dtype = draw(st.sampled_from(dtypes_for("classifier_free_guidance")))
    rng = np.random.default_rng(seed)
    cond, rc = data(rng, shape, dtype, device)
    uncond, ru = data(rng, shape, dtype, device)
    scale = draw(st.sampled_from([0.0, 1.0, 3.0, 7.5]))
    channels = draw(st.sampled_from([None] + list(range(1, shape[1] + 1))))
    got = O.classifier_free_guidance(cond, uncond, scale, channels)
    assert got.dtype == TD[dtype]
    assert_within_tolerance(got, R.classifier_free_guidance(rc, ru, scale, channels), "classifier_free_guidance",
                            dtype)


def gaussian_ideal_model(abar64: torch.Tensor, mu: float, var: float, prediction: str):
    """Spec 7.6.1 (a) in torch: x0 ~ N(mu, var I); E[eps | x_t] = sqrt(1-a)(x_t - sqrt(a) mu) / (a var + 1 - a)."""

    def model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.dtype == torch.int64 and t.shape == (x_t.shape[0],)
        a = abar64[t].to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))
        denom = a * var + 1.0 - a
        eps = torch.sqrt(1.0 - a) * (x_t - torch.sqrt(a) * mu) / denom
        x0 = mu + torch.sqrt(a) * var / denom * (x_t - torch.sqrt(a) * mu)
        return {"eps": eps, "x0": x0, "v": torch.sqrt(a) * eps - torch.sqrt(1.0 - a) * x0}[prediction]

    return model


@device_param
@SLOW
@given(spec=schedule_specs(), shape=shapes(min_rank=3), seed=seeds, data_=st.data())
def test_sample_loop_with_ideal_denoiser(device, spec, shape, seed, data_):
    draw = data_.draw
    dtype = draw(st.sampled_from(dtypes_for("sample")))
    ref, sched = build(spec, dtype, device)
    prediction = draw(st.sampled_from(R.PREDICTIONS))
    assume(not (prediction == "eps" and ref.zero_terminal_snr))  # x0 from eps is undefined at abar = 0
    sampler = draw(st.sampled_from(tuple(R.SAMPLERS)))
    spacing = draw(st.sampled_from(R.SPACINGS))
    n = draw(st.integers(1, min(ref.T, 25)))
    steps = O.inference_timesteps(ref.T, n, spacing, device=device)
    if dtype != "float64":  # low precision: start where abar_t >= the range's floor (x0 from eps is
        steps = steps[sched.abar64[steps] >= LO_ABAR]  # ill-conditioned below it); the tail is kept
        n = len(steps)
        assume(n > 0)
    mu, var = draw(st.sampled_from([0.0, 0.5])), draw(st.sampled_from([1.0, 0.25]))
    kw = dict(sampler=sampler, prediction=prediction, eta=draw(st.sampled_from([0.0, 1.0])),
              clip=draw(st.sampled_from([None, 1.0])), threshold=draw(st.sampled_from([None, 0.995])))
    learned = sampler == "ddpm" and draw(st.booleans())
    tmodel = gaussian_ideal_model(sched.abar64, mu, var, prediction)
    rmodel = R.gaussian_ideal_model(ref, mu, var, prediction)
    if learned:  # 2C outputs; variance values 0 put the log-variance halfway between the bounds
        kw["variance"] = "learned_range"
        tm, rm = tmodel, rmodel
        tmodel = lambda x, t: torch.cat([tm(x, t), torch.zeros_like(x)], dim=1)  # noqa: E731
        rmodel = lambda x, t: np.concatenate([rm(x, t), np.zeros_like(x)], axis=1)  # noqa: E731
    noise, rnoise = data(np.random.default_rng(seed), (n + 1, *shape), dtype, device)
    calls = []
    got = O.sample(tmodel, sched, steps, shape, noise, progress=lambda i, k: calls.append((i, k)), **kw)
    assert got.dtype == TD[dtype] and got.shape == shape
    assert calls == [(i + 1, n) for i in range(n)]
    assert_within_tolerance(got, R.sample(rmodel, ref, npy(steps).astype(np.int64), shape, rnoise, **kw),
                            "sample", dtype)


def test_sample_with_generator_is_reproducible():
    sched = O.make_schedule("linear", 100)
    model = gaussian_ideal_model(sched.abar64, 0.0, 1.0, "eps")
    steps = O.inference_timesteps(100, 10)
    a = O.sample(model, sched, steps, (2, 1, 3, 4, 4), torch.Generator().manual_seed(0), sampler="ddpm")
    b = O.sample(model, sched, steps, (2, 1, 3, 4, 4), torch.Generator().manual_seed(0), sampler="ddpm")
    assert torch.equal(a, b) and a.dtype == torch.float32
    z = O.sampling_noise(torch.Generator().manual_seed(0), 10, (2, 1, 3, 4, 4))
    assert torch.equal(O.sample(model, sched, steps.tolist(), (2, 1, 3, 4, 4), z, sampler="ddpm"), a)


# --- spec 8: losses ------------------------------------------------------------------------------------


@device_param
@FAST
@given(spec=schedule_specs(), shape=shapes(), seed=seeds, data_=st.data())
def test_simple_loss_and_min_snr(device, spec, shape, seed, data_):
    draw = data_.draw
    dtype = draw(st.sampled_from(dtypes_for("simple_loss")))
    ref, sched = build(spec, dtype, device)
    rng = np.random.default_rng(seed)
    t, rt = as_time(draw_t(draw, ref, dtype, shape[0]), device)
    x0, rx0 = data(rng, shape, dtype, device)
    noise, rnoise = data(rng, shape, dtype, device)
    pred, rpred = data(rng, shape, dtype, device)
    prediction = draw(st.sampled_from(R.PREDICTIONS))
    gamma = draw(st.sampled_from([None, 5.0, 1.0]))
    got = O.simple_loss(sched, x0, t, noise, pred, prediction, gamma)
    assert got.shape == (shape[0],)
    assert_within_tolerance(got, R.simple_loss(ref, rx0, rt, rnoise, rpred, prediction, gamma), "simple_loss", dtype)
    if dtype in dtypes_for("min_snr_weight"):
        for g in (5.0, 0.5):
            assert_within_tolerance(O.min_snr_weight(sched, t, prediction, g), R.min_snr_weight(ref, rt, prediction, g),
                                    "min_snr_weight", dtype)


@device_param
@FAST
@given(shape=shapes(), seed=seeds, data_=st.data())
def test_normal_kl_and_discretized_likelihood(device, shape, seed, data_):
    draw = data_.draw
    dtype = draw(st.sampled_from(dtypes_for("discretized_gaussian_log_likelihood")))
    rng = np.random.default_rng(seed)
    m1, rm1 = data(rng, shape, dtype, device)
    m2, rm2 = data(rng, shape, dtype, device)
    lv1, rlv1 = data(rng, shape, dtype, device)
    lv2, rlv2 = data(rng, shape, dtype, device)
    assert_within_tolerance(O.normal_kl(m1, lv1, m2, lv2), R.normal_kl(rm1, rlv1, rm2, rlv2), "normal_kl", dtype)
    # 8-bit data on [-1, 1], endpoints included, so the edge bins are exercised.
    x = torch.from_numpy(rng.integers(0, 256, shape) / 127.5 - 1.0).to(device=device, dtype=TD[dtype])
    mean, rmean = data(rng, shape, dtype, device, scale=draw(st.sampled_from([0.01, 0.5, 2.0])))
    log_scale = torch.from_numpy(rng.uniform(-7.0, 1.0, shape)).to(device=device, dtype=TD[dtype])
    op = "discretized_gaussian_log_likelihood"
    assert_within_tolerance(O.discretized_gaussian_log_likelihood(x, mean, log_scale),
                            R.discretized_gaussian_log_likelihood(npy(x), rmean, npy(log_scale)), op, dtype)
    z = torch.from_numpy(rng.standard_normal(shape) * 10.0).to(device=device, dtype=TD[dtype])
    assert_within_tolerance(O.std_normal_cdf(z), R.std_normal_cdf(npy(z)), op, dtype)  # judged as its user


@device_param
@FAST
@given(spec=schedule_specs(), shape=shapes(), seed=seeds, data_=st.data())
def test_vlb_and_hybrid_loss(device, spec, shape, seed, data_):
    draw = data_.draw
    dtype = draw(st.sampled_from(dtypes_for("vlb_term")))
    ref, sched = build(spec, dtype, device)
    prediction = draw(st.sampled_from(R.PREDICTIONS))
    t, rt = as_time(draw_t(draw, ref, dtype, shape[0], exclude_zero_abar=prediction == "eps"), device)
    rng = np.random.default_rng(seed)
    x0 = torch.from_numpy(rng.integers(0, 256, shape) / 127.5 - 1.0).to(device=device, dtype=TD[dtype])
    rx0 = npy(x0)
    noise, rnoise = data(rng, shape, dtype, device)
    out, rout = data(rng, (shape[0], 2 * shape[1], *shape[2:]), dtype, device)
    x_t = O.q_sample(sched, x0, t, noise)
    rx = npy(x_t)
    for variance in R.VARIANCES:
        o, ro = (out, rout) if variance == "learned_range" else (out[:, : shape[1]], rout[:, : shape[1]])
        assert_within_tolerance(O.vlb_term(sched, x0, x_t, t, o, prediction, variance),
                                R.vlb_term(ref, rx0, rx, rt, ro, prediction, variance), "vlb_term", dtype)
    gamma = draw(st.sampled_from([None, 5.0]))
    lam = draw(st.sampled_from([0.001, 0.1]))
    assert_within_tolerance(O.hybrid_loss(sched, x0, t, noise, out, prediction, lam, gamma),
                            R.hybrid_loss(ref, rx0, rt, rnoise, rout, prediction, lam, gamma), "hybrid_loss", dtype)


# --- autograd -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction", R.PREDICTIONS)
def test_simple_loss_gradient_reaches_pred(prediction):
    sched = O.make_schedule("cosine", 100, dtype=torch.float64)
    x0, noise = torch.randn(3, 2, 2, 4, 4, dtype=torch.float64), torch.randn(3, 2, 2, 4, 4, dtype=torch.float64)
    pred = torch.randn(3, 2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 50, 99])
    O.simple_loss(sched, x0, t, noise, pred, prediction, 5.0).sum().backward()
    w = O.min_snr_weight(sched, t, prediction, 5.0).reshape(3, 1, 1, 1, 1)
    target = O.training_target(sched, x0, t, noise, prediction)
    torch.testing.assert_close(pred.grad, w * 2.0 * (pred.detach() - target) / pred[0].numel())


def test_q_sample_and_velocity_are_differentiable():
    sched = O.make_schedule("linear", 10, dtype=torch.float64)
    x0 = torch.randn(2, 1, 3, dtype=torch.float64, requires_grad=True)
    noise = torch.randn(2, 1, 3, dtype=torch.float64)
    t = torch.tensor([1, 8])
    (O.q_sample(sched, x0, t, noise).sum() + O.velocity(sched, x0, t, noise).sum()).backward()
    want = (sched.sqrt_abar[t] - sched.sqrt_one_minus_abar[t]).reshape(2, 1, 1).expand(2, 1, 3)
    torch.testing.assert_close(x0.grad, want)


@pytest.mark.parametrize("prediction", R.PREDICTIONS)
def test_hybrid_loss_vlb_sees_mean_detached(prediction):
    sched = O.make_schedule("linear", 50, dtype=torch.float64)
    x0 = torch.rand(2, 2, 3, 4, dtype=torch.float64) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 30])
    out = torch.randn(2, 4, 3, 4, dtype=torch.float64, requires_grad=True)
    O.hybrid_loss(sched, x0, t, noise, out, prediction, lam=0.1).sum().backward()
    # Mean channels: exactly the simple-loss gradient; variance channels: the VLB gradient.
    pred = out.detach()[:, :2].clone().requires_grad_(True)
    O.simple_loss(sched, x0, t, noise, pred, prediction).sum().backward()
    torch.testing.assert_close(out.grad[:, :2], pred.grad, rtol=0, atol=0)
    assert out.grad[:, 2:].abs().sum() > 0
    # Without the detach the VLB term does reach the mean channels (so the check above is meaningful).
    out2 = out.detach().clone().requires_grad_(True)
    O.vlb_term(sched, x0, O.q_sample(sched, x0, t, noise), t, out2, prediction).sum().backward()
    assert out2.grad[:, :2].abs().sum() > 0


# --- argument errors name the argument --------------------------------------------------------------------


def test_error_messages_name_the_argument():
    sched = O.make_schedule("linear", 10, dtype=torch.float64)
    x = torch.zeros(2, 1, 3, dtype=torch.float64)
    cases = [
        (lambda: O.make_schedule("nope"), "'name'"),
        (lambda: O.make_schedule("linear", 1), "'T'"),
        (lambda: O.make_schedule("linear", 10, s=0.1), "unknown parameter"),
        (lambda: O.inference_timesteps(10, 3, "middle"), "'spacing'"),
        (lambda: O.inference_timesteps(10, 30), "'N'"),
        (lambda: O.inference_timesteps(10, 3, "trailing", 1), "'offset'"),
        (lambda: O.q_sample(sched, x, 1, torch.zeros(2, 1, 4, dtype=torch.float64)), "'noise'"),
        (lambda: O.q_sample(sched, x, 10, x), "'t'"),
        (lambda: O.q_sample(sched, x, torch.tensor([1, 10]), x), "'t'"),
        (lambda: O.q_sample(sched, x, torch.tensor([1, 2, 3]), x), "'t'"),
        (lambda: O.q_sample(sched, x, torch.tensor([1.0, 2.0]), x), "'t'"),
        (lambda: O.q_sample(sched, x, 1, np.zeros((2, 1, 3))), "'noise'"),
        (lambda: O.q_sample(sched, x, 1, torch.zeros(2, 1, 3, dtype=torch.int64)), "'noise'"),
        (lambda: O.x0_from_v(sched, x, 1, torch.zeros(3, 1, 3, dtype=torch.float64)), "'v'"),
        (lambda: O.effective_beta(sched, 5, 5), "'s'"),
        (lambda: O.posterior_variance(sched, torch.tensor([1, 6]), torch.tensor([2, 5])), "'s'"),
        (lambda: O.posterior_variance(sched, -2, 5), "'s'"),
        (lambda: O.predict_x0_eps(sched, x, 1, x, "score"), "'prediction'"),
        (lambda: O.model_log_variance(sched, 1, 2, "huge"), "'variance'"),
        (lambda: O.split_model_output(torch.zeros(2, 3, 3), 2), "'out'"),
        (lambda: O.ddim_step(sched, x, 3, 1, x, eta=2.0), "'eta'"),
        (lambda: O.ddpm_step(sched, x, 3, 1, torch.zeros(2, 3, 3, dtype=torch.float64), x), "'out'"),
        (lambda: O.sample(lambda a, b: a, sched, [3, 1], (2, 1, 3), torch.Generator(), sampler="euler"), "'sampler'"),
        (lambda: O.sample(lambda a, b: a, sched, [1, 3], (2, 1, 3), torch.Generator()), "'timesteps'"),
        (lambda: O.sample(lambda a, b: a, sched, [10, 3], (2, 1, 3), torch.Generator()), "'timesteps'"),
        (lambda: O.sampling_noise(torch.zeros(2, 2, 1, 3), 3, (2, 1, 3)), "'noise'"),
        (lambda: O.classifier_free_guidance(x, torch.zeros(1, 1, 3, dtype=torch.float64), 2.0), "'out_uncond'"),
        (lambda: O.simple_loss(sched, x, 1, x, x, "eps", -1.0), "'min_snr_gamma'"),
        (lambda: O.min_snr_weight(sched, 1, "eps", 0.0), "'gamma'"),
        (lambda: O.clip_x0(x, 0.0), "'limit'"),
        (lambda: O.dynamic_threshold(x, 1.5), "'quantile'"),
        (lambda: O.training_target(sched, x, 1, x, "score"), "'prediction'"),
        (lambda: O.set_validation("sometimes"), "'mode'"),
    ]
    for call, needle in cases:
        with pytest.raises((ValueError, TypeError)) as info:
            call()
        assert needle in str(info.value), (needle, str(info.value))


# --- validation policy, host syncs, torch.compile -----------------------------------------------------------


def test_validation_policy():
    sched = O.make_schedule("linear", 10, dtype=torch.float64)
    s, t = torch.tensor([5]), torch.tensor([5])
    with pytest.raises(ValueError, match="'s'"):
        O.posterior_variance(sched, s, t)  # CPU tensors are checked by default ("auto")
    with O.validation("off"):
        O.posterior_variance(sched, s, t)  # unchecked: no host reads at all
    x = torch.tensor([[float("nan")]], dtype=torch.float64)
    O.q_sample(sched, x, 1, x)  # finiteness is a "full"-mode check
    with O.validation("full"), pytest.raises(ValueError, match="'x0'"):
        O.q_sample(sched, x, 1, x)


HOT_PATH = {
    "q_sample": lambda s, x, t, u: O.q_sample(s, x, t, x),
    "ddpm_step": lambda s, x, t, u: O.ddpm_step(s, x, t, u, x, x, variance="fixed_large", threshold=0.9),
    "ddim_step": lambda s, x, t, u: O.ddim_step(s, x, t, u, x, x, eta=0.5, prediction="v", clip=1.0),
    "simple_loss": lambda s, x, t, u: O.simple_loss(s, x, t, x, x, "v", 5.0),
    "hybrid_loss": lambda s, x, t, u: O.hybrid_loss(s, x, t, x, torch.cat([x, x], 1), "eps"),
}


@pytest.mark.parametrize("op", sorted(HOT_PATH))
def test_hot_path_compiles_without_graph_breaks(op):
    """fullgraph=True fails on any host read of a tensor (.item(), bool(tensor), .tolist())."""
    torch._dynamo.reset()
    sched = O.make_schedule("cosine", 100, dtype=torch.float32)
    x = torch.randn(2, 3, 2, 4, 4)
    t, s = torch.tensor([40, 70]), torch.tensor([10, -1])
    compiled = torch.compile(HOT_PATH[op], backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(sched, x, t, s), HOT_PATH[op](sched, x, t, s))


def test_ddim_step_under_aot_eager_and_inductor():
    sched = O.make_schedule("scaled_linear", 1000, zero_terminal_snr=True)
    x, out, noise = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 4, 3, 8, 8), torch.randn(2, 4, 3, 8, 8)
    t, s = torch.tensor([999, 500]), torch.tensor([900, 200])

    def step(x, t, s, out, noise):
        return O.ddim_step(sched, x, t, s, out, noise, prediction="v", eta=0.7)

    want = step(x, t, s, out, noise)
    for backend in ("aot_eager", "inductor"):
        torch._dynamo.reset()
        try:
            got = torch.compile(step, backend=backend, fullgraph=True)(x, t, s, out, noise)
        except Exception as exc:  # inductor needs a working C++ toolchain
            if backend == "inductor" and "ompil" in type(exc).__name__ + str(exc)[:500]:
                pytest.skip(f"inductor unavailable here: {type(exc).__name__}")
            raise
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("op", sorted(HOT_PATH))
def test_hot_path_has_no_host_sync_on_cuda(op):
    sched = O.make_schedule("cosine", 100, device="cuda")
    x = torch.randn(2, 3, 2, 4, 4, device="cuda")
    t, s = torch.tensor([40, 70], device="cuda"), torch.tensor([10, -1], device="cuda")
    HOT_PATH[op](sched, x, t, s)  # warm-up (lazy CUDA init may sync)
    torch.cuda.set_sync_debug_mode("error")
    try:
        HOT_PATH[op](sched, x, t, s)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_device_mismatch_is_named():
    sched = O.make_schedule("linear", 10, device="cuda")
    with pytest.raises(ValueError, match="'x0'"):
        O.q_sample(sched, torch.zeros(1, 1), 1, torch.zeros(1, 1, device="cuda"))
    with pytest.raises(ValueError, match="'t'"):
        O.q_sample(sched, torch.zeros(1, 1, device="cuda"), torch.tensor([1]), torch.zeros(1, 1, device="cuda"))
