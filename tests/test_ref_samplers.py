"""Spec section 7: x0 processing, DDPM / DDIM steps, guidance and the loop, checked against
closed forms: exact moment propagation for Gaussian data, and sampling onto a finite point set."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vdm_ref
from vdm_ref import make_schedule

LIN = make_schedule("linear", 1000)
COS = make_schedule("cosine", 1000)
COS_ZERO = make_schedule("cosine", 100, zero_terminal_snr=True)
SHAPE = (3, 2, 2, 3, 3)


def _normal(seed: int, shape: tuple[int, ...] = SHAPE, scale: float = 1.0) -> np.ndarray:
    return scale * np.random.default_rng(seed).standard_normal(shape)


def _quantile(values: np.ndarray, p: float) -> float:
    """Linear interpolation between order statistics (spec 7.2), written out."""
    u = np.sort(values.ravel())
    h = p * (len(u) - 1)
    j = math.floor(h)
    return float(u[j]) if j == len(u) - 1 else float(u[j] + (h - j) * (u[j + 1] - u[j]))


# --- 7.1 / 7.2 -----------------------------------------------------------------------------


def test_clip_x0() -> None:
    x = np.array([[-3.0, -0.5, 0.2, 1.5]])
    np.testing.assert_array_equal(vdm_ref.clip_x0(x), [[-1.0, -0.5, 0.2, 1.0]])
    np.testing.assert_array_equal(vdm_ref.clip_x0(x, 0.3), [[-0.3, -0.3, 0.2, 0.3]])
    with pytest.raises(ValueError, match="'limit'"):
        vdm_ref.clip_x0(x, 0.0)


def test_quantile_interpolation_example() -> None:
    # |x| sorted = 0, 1, 2, 3, 10; p = 0.9: h = 3.6, so 3 + 0.6 * (10 - 3) = 7.2.
    x = np.array([[[3.0, -10.0, 0.0, 2.0, -1.0]]])
    got = vdm_ref.dynamic_threshold(x, 0.9)
    np.testing.assert_allclose(got, np.clip(x, -7.2, 7.2) / 7.2, rtol=1e-15)


def test_dynamic_threshold_is_per_sample_over_channels_and_frames() -> None:
    """Frames with different ranges: a per-frame (or per-channel) quantile gives another answer."""
    x = _normal(0, (2, 2, 3, 4, 4)) * np.array([0.5, 2.0, 6.0]).reshape(1, 1, 3, 1, 1)
    x[:, 1] *= 1.5  # channels differ too
    p = 0.9
    got = vdm_ref.dynamic_threshold(x, p)
    want = np.empty_like(x)
    for b in range(2):
        s = max(_quantile(np.abs(x[b]), p), 1.0)
        want[b] = np.clip(x[b], -s, s) / s
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)
    per_frame = np.empty_like(x)
    for b in range(2):
        for f in range(3):
            s = max(_quantile(np.abs(x[b, :, f]), p), 1.0)
            per_frame[b, :, f] = np.clip(x[b, :, f], -s, s) / s
    assert np.abs(per_frame - got).max() > 0.1
    # Samples are independent: changing sample 1 leaves sample 0 alone.
    y = x.copy()
    y[1] *= 10
    np.testing.assert_array_equal(vdm_ref.dynamic_threshold(y, p)[0], got[0])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.01, 5.0), st.floats(0.5, 1.0))
def test_dynamic_threshold_bounds(seed: int, scale: float, p: float) -> None:
    x = _normal(seed, scale=scale)
    out = vdm_ref.dynamic_threshold(x, p)
    assert np.all(np.abs(out) <= 1.0)
    inside = np.clip(x, -1, 1) * 0.999
    np.testing.assert_array_equal(vdm_ref.dynamic_threshold(inside, p), inside)  # floor 1: unchanged
    top = vdm_ref.dynamic_threshold(x, 1.0)  # p = 1: s_b = max(max |x_b|, 1)
    s = np.maximum(np.abs(x).reshape(SHAPE[0], -1).max(axis=1), 1.0).reshape(-1, 1, 1, 1, 1)
    np.testing.assert_allclose(top, x / s, rtol=1e-15)


def test_dynamic_threshold_floor_and_errors() -> None:
    x = np.linspace(-3, 3, 40).reshape(1, 1, 2, 4, 5)
    out = vdm_ref.dynamic_threshold(x, 0.5, floor=2.0)  # quantile 1.5 < floor 2
    np.testing.assert_allclose(out, np.clip(x, -2, 2) / 2, rtol=1e-15)
    with pytest.raises(ValueError, match="'quantile'"):
        vdm_ref.dynamic_threshold(x, 0.0)
    both = vdm_ref.process_x0(x, clip=0.5, threshold=0.9)  # threshold first, then clip
    np.testing.assert_array_equal(both, vdm_ref.clip_x0(vdm_ref.dynamic_threshold(x, 0.9), 0.5))


# --- 7.3 / 7.4 steps ---------------------------------------------------------------------------


@st.composite
def step_case(draw: st.DrawFn) -> tuple[vdm_ref.Schedule, np.ndarray, np.ndarray, str]:
    sched = draw(st.sampled_from([LIN, COS, COS_ZERO]))
    prediction = draw(st.sampled_from(vdm_ref.PREDICTIONS))
    top = sched.T - 2 if sched.zero_terminal_snr and prediction == "eps" else sched.T - 1
    t = np.array(draw(st.lists(st.integers(0, top), min_size=SHAPE[0], max_size=SHAPE[0])))
    s = np.array([draw(st.integers(-1, int(ti) - 1)) for ti in t])
    return sched, t, s, prediction


@settings(max_examples=80, deadline=None)
@given(step_case(), st.integers(0, 2**32 - 1), st.sampled_from([None, 1.0]))
def test_ddim_eta_one_is_ddpm_fixed_small(case: tuple, seed: int, clip: float | None) -> None:
    sched, t, s, prediction = case
    x_t, out, z = _normal(seed), _normal(seed + 1), _normal(seed + 2)
    ddim = vdm_ref.ddim_step(sched, x_t, t, s, out, z, prediction=prediction, eta=1.0, clip=clip)
    ddpm = vdm_ref.ddpm_step(sched, x_t, t, s, out, z, prediction=prediction, variance="fixed_small", clip=clip)
    np.testing.assert_allclose(ddim, ddpm, rtol=1e-8, atol=1e-8)
    sigma = vdm_ref.ddim_sigma(sched, t, s, 1.0)
    np.testing.assert_allclose(sigma**2, vdm_ref.posterior_variance(sched, s, t), rtol=1e-10, atol=1e-300)


def test_ddim_step_closed_form_and_eps_rederivation() -> None:
    sched = LIN
    t, s = np.array([999, 500, 20]), np.array([899, -1, 3])
    x_t, eps_raw = _normal(1), _normal(2, scale=0.3)
    a_t, a_s = sched.abar[t].reshape(-1, 1, 1, 1, 1), sched.abar_at(s).reshape(-1, 1, 1, 1, 1)
    x0 = (x_t - np.sqrt(1 - a_t) * eps_raw) / np.sqrt(a_t)
    assert np.abs(x0).max() > 1.0  # so clip=1 is active
    plain = vdm_ref.ddim_step(sched, x_t, t, s, eps_raw, None, prediction="eps")
    np.testing.assert_allclose(plain, np.sqrt(a_s) * x0 + np.sqrt(1 - a_s) * eps_raw, rtol=1e-9, atol=1e-9)
    clipped = vdm_ref.ddim_step(sched, x_t, t, s, eps_raw, None, prediction="eps", clip=1.0)
    x0c = np.clip(x0, -1, 1)
    eps_c = (x_t - np.sqrt(a_t) * x0c) / np.sqrt(1 - a_t)
    np.testing.assert_allclose(clipped, np.sqrt(a_s) * x0c + np.sqrt(1 - a_s) * eps_c, rtol=1e-9, atol=1e-9)
    stale = np.sqrt(a_s) * x0c + np.sqrt(1 - a_s) * eps_raw  # what keeping the model's eps would give
    assert np.abs(clipped - stale).max() > 1e-3
    # A clip that clips nothing changes nothing, and the variance channels of 2C outputs are ignored.
    np.testing.assert_allclose(vdm_ref.ddim_step(sched, x_t, t, s, eps_raw, None, clip=1e6), plain, rtol=1e-9)
    wide = np.concatenate([eps_raw, _normal(3)], axis=1)
    np.testing.assert_array_equal(vdm_ref.ddim_step(sched, x_t, t, s, wide, None), plain)
    # eta: sigma = eta sqrt((1 - a_s)/(1 - a_t)) sqrt(1 - a_t/a_s), and the noise enters as sigma z.
    z = _normal(4)
    half = vdm_ref.ddim_step(sched, x_t, t, s, eps_raw, z, eta=0.5)
    sigma = 0.5 * np.sqrt((1 - a_s) / (1 - a_t)) * np.sqrt(1 - a_t / a_s)
    np.testing.assert_allclose(half, np.sqrt(a_s) * x0 + np.sqrt(1 - a_s - sigma**2) * eps_raw + sigma * z,
                               rtol=1e-9, atol=1e-9)


def test_ddpm_step_closed_form_and_last_step() -> None:
    sched = COS
    t, s = np.array([999, 40, 1]), np.array([950, -1, 0])
    x_t, out, z = _normal(5), _normal(6), _normal(7)
    var_ch = np.random.default_rng(8).uniform(-1, 1, SHAPE)
    a_t, a_s = sched.abar[t].reshape(-1, 1, 1, 1, 1), sched.abar_at(s).reshape(-1, 1, 1, 1, 1)
    x0 = np.sqrt(a_t) * x_t - np.sqrt(1 - a_t) * out  # v prediction
    beta = 1 - a_t / a_s
    mean = np.sqrt(a_s) * beta / (1 - a_t) * x0 + np.sqrt(a_t / a_s) * (1 - a_s) / (1 - a_t) * x_t
    tilde01 = (1 - sched.abar[0]) / (1 - sched.abar[1]) * (1 - sched.abar[1] / sched.abar[0])
    min_log = np.log(np.where(s.reshape(-1, 1, 1, 1, 1) < 0, tilde01, (1 - a_s) / (1 - a_t) * beta))
    logvar = (var_ch + 1) / 2 * np.log(beta) + (1 - var_ch) / 2 * min_log
    keep = (s >= 0).reshape(-1, 1, 1, 1, 1)
    got = vdm_ref.ddpm_step(sched, x_t, t, s, np.concatenate([out, var_ch], 1), z, prediction="v",
                            variance="learned_range")
    np.testing.assert_allclose(got, mean + keep * np.exp(logvar / 2) * z, rtol=1e-9, atol=1e-12)
    # The s = -1 sample gets no noise: it is independent of z and equals x0_hat.
    other = vdm_ref.ddpm_step(sched, x_t, t, s, np.concatenate([out, var_ch], 1), -z, prediction="v",
                              variance="learned_range")
    np.testing.assert_array_equal(other[1], got[1])
    np.testing.assert_allclose(got[1], x0[1], rtol=1e-12, atol=1e-14)
    # With every s = -1 no noise is needed at all.
    last = vdm_ref.ddpm_step(sched, x_t, t, np.full(3, -1), out, None, prediction="x0")
    np.testing.assert_array_equal(last, out)


def test_step_errors() -> None:
    x, out = _normal(9), _normal(10)
    with pytest.raises(ValueError, match="'eta'"):
        vdm_ref.ddim_step(LIN, x, 10, 5, out, x, eta=1.5)
    with pytest.raises(ValueError, match="'s'"):
        vdm_ref.ddim_step(LIN, x, 10, 10, out)
    with pytest.raises(ValueError, match="'s'"):
        vdm_ref.ddpm_step(LIN, x, 10, 12, out, x)
    with pytest.raises(ValueError, match="'noise'"):
        vdm_ref.ddim_step(LIN, x, 10, 5, out, None, eta=0.5)
    with pytest.raises(ValueError, match="'noise'"):
        vdm_ref.ddpm_step(LIN, x, 10, 5, out, None)
    with pytest.raises(ValueError, match="'noise'"):
        vdm_ref.ddpm_step(LIN, x, 10, 5, out, x[:, :1])
    with pytest.raises(ValueError, match="2C channels"):
        vdm_ref.ddpm_step(LIN, x, 10, 5, out, x, variance="learned_range")
    with pytest.raises(ValueError, match="'out'"):
        vdm_ref.ddpm_step(LIN, x, 10, 5, out[:, :1], x)
    with pytest.raises(ValueError, match="'x_t'"):
        vdm_ref.ddim_step(LIN, np.full(SHAPE, np.nan), 10, 5, out)


# --- 7.5 guidance ------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(-5.0, 15.0))
def test_guidance_rule(seed: int, w: float) -> None:
    cond, uncond = _normal(seed), _normal(seed + 1)
    cfg = vdm_ref.classifier_free_guidance
    # uncond + 1 * (cond - uncond) is cond up to one rounding; w = 0 is exact.
    np.testing.assert_allclose(cfg(cond, uncond, 1.0), cond, rtol=0, atol=4.5e-16 * np.abs(uncond).max())
    np.testing.assert_array_equal(cfg(cond, uncond, 0.0), uncond)
    np.testing.assert_allclose(cfg(cond, uncond, w), (1 - w) * uncond + w * cond, rtol=1e-12, atol=1e-12)
    # Affine in w: the midpoint of two scales is the guidance at the mid scale.
    np.testing.assert_allclose(cfg(cond, uncond, w / 2), (cfg(cond, uncond, w) + uncond) / 2, rtol=1e-12, atol=1e-12)
    # 2C channels: the variance half comes from the conditional output.
    wide_c, wide_u = np.concatenate([cond, uncond], 1), np.concatenate([uncond, cond], 1)
    got = cfg(wide_c, wide_u, w, channels=SHAPE[1])
    np.testing.assert_allclose(got[:, : SHAPE[1]], cfg(cond, uncond, w), rtol=1e-15)
    np.testing.assert_array_equal(got[:, SHAPE[1]:], uncond)


# --- 7.6 loop -----------------------------------------------------------------------------------


def test_loop_calls_model_with_timesteps_and_uses_noise_layout() -> None:
    sched = make_schedule("linear", 20)
    ts = vdm_ref.inference_timesteps(20, 4, "linspace")
    shape = (2, 1, 1, 2, 2)
    seen: list[np.ndarray] = []

    def model(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        seen.append(t.copy())
        return 0.1 * x

    z = np.random.default_rng(0).standard_normal((5, *shape))
    got = vdm_ref.sample(model, sched, ts, shape, z, sampler="ddpm")
    assert [t.tolist() for t in seen] == [[int(t)] * 2 for t in ts]
    assert all(t.dtype == np.int64 for t in seen)
    # The loop written out from 7.6 with the pairs of 6.4.
    x = z[0]
    for i, t in enumerate(ts):
        s = int(ts[i + 1]) if i + 1 < len(ts) else -1
        x = vdm_ref.ddpm_step(sched, x, int(t), s, 0.1 * x, z[i + 1])
    np.testing.assert_array_equal(got, x)
    # A Generator means one draw of shape (N + 1, *shape).
    from_rng = vdm_ref.sample(model, sched, ts, shape, np.random.default_rng(0), sampler="ddpm")
    np.testing.assert_array_equal(from_rng, got)
    with pytest.raises(ValueError, match="'noise'"):
        vdm_ref.sample(model, sched, ts, shape, z[:4])
    with pytest.raises(ValueError, match="'sampler'"):
        vdm_ref.sample(model, sched, ts, shape, z, sampler="euler")
    with pytest.raises(ValueError, match="'timesteps'"):
        vdm_ref.sample(model, sched, ts[::-1], shape, z)
    with pytest.raises(ValueError, match="'timesteps'"):
        vdm_ref.sample(model, sched, np.array([25, 3]), shape, z[:3])


def _propagate(sched: vdm_ref.Schedule, ts: np.ndarray, mu: float, var: float, sampler: str,
               eta: float = 0.0) -> tuple[float, float]:
    """Exact mean and variance of x after each step, for x0 ~ N(mu, var) and the ideal denoiser.

    x0_hat = k x + mu g and eps_hat = g (x - sqrt(a) mu) / sqrt(1 - a), with
    k = sqrt(a) var / (a var + 1 - a) and g = 1 - sqrt(a) k, so each step is x_s = A x_t + b + noise.
    """
    m, v = 0.0, 1.0  # x at the first timestep is standard normal
    for i, t in enumerate(ts):
        s = int(ts[i + 1]) if i + 1 < len(ts) else -1
        a, a_s = float(sched.abar[t]), 1.0 if s < 0 else float(sched.abar[s])
        k = math.sqrt(a) * var / (a * var + 1 - a)
        g = 1 - math.sqrt(a) * k
        if sampler == "ddim":
            sig2 = (eta**2) * (1 - a_s) / (1 - a) * (1 - a / a_s)
            c = math.sqrt(1 - a_s - sig2)
            A = math.sqrt(a_s) * k + c * g / math.sqrt(1 - a)
            b = math.sqrt(a_s) * mu * g - c * g * math.sqrt(a) * mu / math.sqrt(1 - a)
        else:
            beta = 1 - a / a_s
            c0, ct = math.sqrt(a_s) * beta / (1 - a), math.sqrt(a / a_s) * (1 - a_s) / (1 - a)
            A, b = c0 * k + ct, c0 * mu * g
            sig2 = (1 - a_s) / (1 - a) * beta if s >= 0 else 0.0
        m, v = A * m + b, A * A * v + sig2
    return m, v


@pytest.mark.parametrize(
    ("sampler", "eta", "prediction", "N"),
    [("ddim", 0.0, "eps", 10), ("ddim", 0.0, "v", 1000), ("ddim", 0.5, "x0", 25), ("ddpm", 0.0, "eps", 1000),
     ("ddpm", 0.0, "v", 10)],
)
def test_gaussian_data_moments_follow_exact_propagation(sampler: str, eta: float, prediction: str, N: int) -> None:
    sched, mu, var = COS, 0.5, 0.09
    ts = vdm_ref.inference_timesteps(sched.T, N, "trailing")
    model = vdm_ref.gaussian_ideal_model(sched, mu, var, prediction)
    x = vdm_ref.sample(model, sched, ts, (8, 1, 4, 16, 16), np.random.default_rng(N), sampler=sampler,
                       prediction=prediction, eta=eta)
    m, v = _propagate(sched, ts, mu, var, sampler, eta)
    n = x.size  # every element is an independent draw
    assert abs(x.mean() - m) < 5 * math.sqrt(v / n)
    assert abs(x.var() - v) < 5 * v * math.sqrt(2 / n)
    if N == sched.T:  # many steps: the sampler reproduces the data distribution
        assert abs(m - mu) < 0.01 * mu and abs(v - var) < 0.02 * var
        assert abs(x.mean() - mu) < 0.01 * mu and abs(x.var() - var) < 0.03 * var


def test_ddpm_with_point_set_ideal_denoiser_lands_on_the_points() -> None:
    sched = LIN
    D = (1, 1, 2, 2)
    points = np.stack([np.full(D, -0.8), np.full(D, 0.7), np.array([0.5, -0.5, 0.5, -0.5]).reshape(D)])
    model = vdm_ref.points_ideal_model(sched, points, "eps")
    B = 600
    x = vdm_ref.sample(model, sched, vdm_ref.inference_timesteps(1000, 200, "trailing"), (B, *D),
                       np.random.default_rng(3), sampler="ddpm", prediction="eps")
    dist = np.linalg.norm(x.reshape(B, 1, -1) - points.reshape(1, 3, -1), axis=2)
    assert dist.min(axis=1).max() < 1e-6
    freq = np.bincount(dist.argmin(axis=1), minlength=3) / B
    assert np.all(np.abs(freq - 1 / 3) < 0.08)  # ~4 standard errors at B = 600


def test_ideal_models_closed_forms() -> None:
    sched = COS_ZERO
    x_t = _normal(11)
    t = np.array([0, 50, 99])  # includes abar_t = 0
    a = sched.abar[t].reshape(-1, 1, 1, 1, 1)
    x0 = vdm_ref.gaussian_ideal_model(sched, 0.2, 0.5, "x0")(x_t, t)
    np.testing.assert_allclose(x0, 0.2 + np.sqrt(a) * 0.5 / (a * 0.5 + 1 - a) * (x_t - np.sqrt(a) * 0.2), rtol=1e-13)
    eps = vdm_ref.gaussian_ideal_model(sched, 0.2, 0.5, "eps")(x_t, t)
    v = vdm_ref.gaussian_ideal_model(sched, 0.2, 0.5, "v")(x_t, t)
    np.testing.assert_allclose(np.sqrt(a) * x0 + np.sqrt(1 - a) * eps, x_t, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(v, np.sqrt(a) * eps - np.sqrt(1 - a) * x0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x0[2], 0.2)  # no signal left: the prior mean
    # Point set: brute-force posterior weights, no log-sum-exp, on a case where that is safe.
    pts = _normal(12, (4, *SHAPE[1:]), 0.3)
    t = np.array([75, 90, 99])  # noisy enough that exp(l_k) does not underflow
    a = sched.abar[t].reshape(-1, 1, 1, 1, 1)
    got = vdm_ref.points_ideal_model(sched, pts, "x0")(x_t, t)
    for b in range(3):
        w = np.exp(-((x_t[b] - np.sqrt(a[b]) * pts) ** 2).sum(axis=(1, 2, 3, 4)) / (2 * (1 - a[b].item())))
        assert w.sum() > 1e-200
        np.testing.assert_allclose(got[b], np.tensordot(w / w.sum(), pts, axes=1), rtol=1e-10, atol=1e-12)
    # Far from every point the raw weights underflow; the log-sum-exp form still gives the nearest point.
    far = vdm_ref.points_ideal_model(sched, pts, "x0")(np.full(SHAPE, 1e3) * np.sign(pts[0]), np.zeros(3, int))
    assert np.all(np.isfinite(far))
    with pytest.raises(ValueError, match="'prediction'"):
        vdm_ref.gaussian_ideal_model(sched, 0.0, 1.0, "score")
    with pytest.raises(ValueError, match="'points'"):
        vdm_ref.points_ideal_model(sched, np.zeros(3), "x0")
