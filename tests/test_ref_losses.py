"""Spec section 8: training objectives against closed forms, quadrature and Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vdm_ref
from vdm_ref import make_schedule

LIN = make_schedule("linear", 1000)
ZERO = make_schedule("cosine", 50, zero_terminal_snr=True)
SHAPE = (3, 1, 2, 4, 4)
BIN = 1.0 / 255.0
GL_NODES, GL_WEIGHTS = np.polynomial.legendre.leggauss(24)


def _normal(seed: int, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def _pixels(seed: int, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape) / 127.5 - 1.0


def _col(v: np.ndarray, ndim: int = len(SHAPE)) -> np.ndarray:
    return np.asarray(v, dtype=np.float64).reshape(-1, *([1] * (ndim - 1)))


def _bin_probability(x: float, mean: float, sigma: float) -> float:
    """Integral of the N(mean, sigma^2) density over [x - 1/255, x + 1/255] by Gauss-Legendre."""
    y = x + BIN * GL_NODES
    dens = np.exp(-0.5 * ((y - mean) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    return float(BIN * np.dot(GL_WEIGHTS, dens))


# --- 8.1 / 8.2 ---------------------------------------------------------------------------------


def test_training_target() -> None:
    x0, noise = _normal(0), _normal(1)
    t = np.array([0, 400, 999])
    a = _col(LIN.abar[t])
    np.testing.assert_array_equal(vdm_ref.training_target(LIN, x0, t, noise, "eps"), noise)
    np.testing.assert_array_equal(vdm_ref.training_target(LIN, x0, t, noise, "x0"), x0)
    np.testing.assert_allclose(vdm_ref.training_target(LIN, x0, t, noise, "v"),
                               np.sqrt(a) * noise - np.sqrt(1 - a) * x0, rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match="'prediction'"):
        vdm_ref.training_target(LIN, x0, t, noise, "score")


@pytest.mark.parametrize("sched", [LIN, ZERO], ids=["linear", "zero_snr"])
@pytest.mark.parametrize("gamma", [0.5, 5.0])
def test_min_snr_weights_closed_forms(sched: vdm_ref.Schedule, gamma: float) -> None:
    t = np.arange(sched.T)
    snr = [a / (1 - a) for a in sched.abar.tolist()]
    eps = vdm_ref.min_snr_weight(sched, t, "eps", gamma)
    x0 = vdm_ref.min_snr_weight(sched, t, "x0", gamma)
    v = vdm_ref.min_snr_weight(sched, t, "v", gamma)
    for i, r in enumerate(snr):
        assert eps[i] == pytest.approx(1.0 if r <= gamma else gamma / r, rel=1e-12)
        assert x0[i] == pytest.approx(min(r, gamma), rel=1e-12)
        assert v[i] == pytest.approx(min(r, gamma) / (r + 1), rel=1e-12)
    assert (eps < 1).any() and (eps == 1).any()  # both branches of the min are exercised
    if sched.zero_terminal_snr:  # SNR = 0 at the last step
        assert (eps[-1], x0[-1], v[-1]) == (1.0, 0.0, 0.0)


def test_min_snr_errors() -> None:
    with pytest.raises(ValueError, match="'gamma'"):
        vdm_ref.min_snr_weight(LIN, 3, "eps", 0.0)
    with pytest.raises(ValueError, match="'prediction'"):
        vdm_ref.min_snr_weight(LIN, 3, "score")
    with pytest.raises(ValueError, match="'t'"):
        vdm_ref.min_snr_weight(LIN, 1000, "eps")


@pytest.mark.parametrize("prediction", vdm_ref.PREDICTIONS)
def test_simple_loss(prediction: str) -> None:
    x0, noise, pred = _normal(2), _normal(3), _normal(4)
    t = np.array([3, 500, 990])
    target = vdm_ref.training_target(LIN, x0, t, noise, prediction)
    mse = ((pred - target) ** 2).reshape(3, -1).mean(axis=1)
    np.testing.assert_allclose(vdm_ref.simple_loss(LIN, x0, t, noise, pred, prediction), mse, rtol=1e-13)
    w = vdm_ref.min_snr_weight(LIN, t, prediction, 5.0)
    np.testing.assert_allclose(vdm_ref.simple_loss(LIN, x0, t, noise, pred, prediction, 5.0), w * mse, rtol=1e-13)
    np.testing.assert_array_equal(vdm_ref.simple_loss(LIN, x0, t, noise, target, prediction), 0.0)
    with pytest.raises(ValueError, match="'pred'"):
        vdm_ref.simple_loss(LIN, x0, t, noise, pred[:, :, :1], prediction)


# --- 8.3 ----------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.floats(-3, 3), st.floats(-4, 2), st.floats(-3, 3), st.floats(-4, 2))
def test_normal_kl_closed_form(m1: float, lv1: float, m2: float, lv2: float) -> None:
    s1, s2 = math.exp(lv1 / 2), math.exp(lv2 / 2)
    want = math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    got = vdm_ref.normal_kl(np.array(m1), np.array(lv1), np.array(m2), np.array(lv2))
    assert float(got) == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert float(got) >= -1e-15
    same = vdm_ref.normal_kl(np.array(m1), np.array(lv1), np.array(m1), np.array(lv1))
    assert float(same) == 0.0


def test_normal_kl_monte_carlo() -> None:
    m1, lv1, m2, lv2 = 0.3, -1.0, -0.4, 0.5
    rng = np.random.default_rng(5)
    x = m1 + math.exp(lv1 / 2) * rng.standard_normal(400_000)

    def logpdf(x: np.ndarray, m: float, lv: float) -> np.ndarray:
        return -0.5 * (math.log(2 * math.pi) + lv + (x - m) ** 2 / math.exp(lv))

    ratio = logpdf(x, m1, lv1) - logpdf(x, m2, lv2)
    kl = float(vdm_ref.normal_kl(np.array(m1), np.array(lv1), np.array(m2), np.array(lv2)))
    assert abs(ratio.mean() - kl) < 5 * ratio.std() / math.sqrt(len(x))


# --- 8.4 ----------------------------------------------------------------------------------------


def test_std_normal_cdf_values() -> None:
    assert float(vdm_ref.std_normal_cdf(0.0)) == 0.5
    assert float(vdm_ref.std_normal_cdf(1.959963984540054)) == pytest.approx(0.975, rel=1e-15)
    x = np.linspace(-8, 8, 101)
    np.testing.assert_allclose(vdm_ref.std_normal_cdf(x) + vdm_ref.std_normal_cdf(-x), 1.0, rtol=1e-15)
    # Exact in the far tail, where 0.5 * (1 + erf(x / sqrt 2)) would round to 0.
    assert float(vdm_ref.std_normal_cdf(-30.0)) == pytest.approx(4.906713927148187e-198, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.floats(-1.5, 1.5), st.floats(-5.0, 1.0))
def test_discretized_probabilities_sum_to_one(mean: float, log_scale: float) -> None:
    x = np.arange(256) / 127.5 - 1.0
    logp = vdm_ref.discretized_gaussian_log_likelihood(x, np.full(256, mean), np.full(256, log_scale))
    assert np.all(logp <= 0) and np.all(logp >= math.log(1e-12))
    # The bins tile the real line, so the probabilities telescope to 1 (floored bins add <= 256e-12).
    assert abs(np.exp(logp).sum() - 1.0) < 1e-9


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 254), st.floats(-1.2, 1.2), st.floats(-5.0, 0.0))
def test_discretized_interior_bins_match_quadrature(k: int, mean: float, log_scale: float) -> None:
    x = k / 127.5 - 1.0
    got = float(vdm_ref.discretized_gaussian_log_likelihood(np.array([x]), np.array([mean]), np.array([log_scale]))[0])
    p = _bin_probability(x, mean, math.exp(log_scale))
    if p > 1e-11:  # accurate even far in a tail (no cancellation of two CDFs near 1)
        assert got == pytest.approx(math.log(p), rel=1e-9)
    elif p < 1e-13:
        assert got == math.log(1e-12)


def test_discretized_edge_bins_and_floor() -> None:
    mean, log_scale = np.array([-0.9, 0.95]), np.array([-2.0, -2.5])
    x = np.array([-1.0, 1.0])
    got = vdm_ref.discretized_gaussian_log_likelihood(x, mean, log_scale)
    sig = np.exp(log_scale)
    low = 0.5 * (1 + math.erf((-1 + BIN - mean[0]) / sig[0] / math.sqrt(2)))  # from -inf
    high = 0.5 * (1 - math.erf((1 - BIN - mean[1]) / sig[1] / math.sqrt(2)))  # to +inf
    np.testing.assert_allclose(got, [math.log(low), math.log(high)], rtol=1e-12)
    # Far from the mean: the 1e-12 floor applies in every kind of bin.
    far = vdm_ref.discretized_gaussian_log_likelihood(np.array([-1.0, 0.0, 1.0]), np.array([1.0, 1.0, -1.0]),
                                                      np.full(3, -4.0))
    np.testing.assert_array_equal(far, math.log(1e-12))


# --- 8.5 / 8.6 ----------------------------------------------------------------------------------


def _setup(seed: int, t: np.ndarray, sched: vdm_ref.Schedule = LIN):
    x0, noise, pred, v = _pixels(seed), _normal(seed + 1), _normal(seed + 2), _normal(seed + 3)
    v = np.clip(v, -1, 1)
    a = _col(sched.abar[t])
    x_t = np.sqrt(a) * x0 + np.sqrt(1 - a) * noise
    return x0, noise, pred, v, x_t, a


def test_vlb_at_t0_is_decoder_nll() -> None:
    t = np.zeros(3, dtype=int)
    x0, _, pred, v, x_t, a = _setup(6, t)
    x0_hat = (x_t - np.sqrt(1 - a) * pred) / np.sqrt(a)  # eps prediction; the mean at s = -1 is x0_hat
    tilde01 = (1 - LIN.abar[0]) / (1 - LIN.abar[1]) * (1 - LIN.abar[1] / LIN.abar[0])
    logvar = (v + 1) / 2 * math.log(LIN.betas[0]) + (1 - v) / 2 * math.log(tilde01)
    ll = vdm_ref.discretized_gaussian_log_likelihood(x0, x0_hat, logvar / 2)
    want = -ll.reshape(3, -1).mean(axis=1) / math.log(2)
    got = vdm_ref.vlb_term(LIN, x0, x_t, t, np.concatenate([pred, v], 1), "eps")
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("prediction", vdm_ref.PREDICTIONS)
def test_vlb_at_t_positive_is_kl_in_bits(prediction: str) -> None:
    t = np.array([1, 300, 999])
    x0, _, pred, v, x_t, a = _setup(7, t)
    a_s = _col(LIN.abar[t - 1])
    # Model x0_hat from its prediction (4.x) and the posterior from Bayes' rule, written out.
    if prediction == "eps":
        x0_hat = (x_t - np.sqrt(1 - a) * pred) / np.sqrt(a)
    elif prediction == "x0":
        x0_hat = pred
    else:
        x0_hat = np.sqrt(a) * x_t - np.sqrt(1 - a) * pred
    beta = 1 - a / a_s
    tilde = (1 - a_s) / (1 - a) * beta

    def mean(x: np.ndarray) -> np.ndarray:
        return np.sqrt(a_s) * beta / (1 - a) * x + np.sqrt(a / a_s) * (1 - a_s) / (1 - a) * x_t

    lv_model = (v + 1) / 2 * np.log(beta) + (1 - v) / 2 * np.log(tilde)
    lv_true = np.log(tilde)
    kl = 0.5 * (lv_model - lv_true + np.exp(lv_true - lv_model) + (mean(x0) - mean(x0_hat)) ** 2
                * np.exp(-lv_model) - 1)
    want = kl.reshape(3, -1).mean(axis=1) / math.log(2)
    got = vdm_ref.vlb_term(LIN, x0, x_t, t, np.concatenate([pred, v], 1), prediction)
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-12)


def test_vlb_vanishes_for_a_perfect_model() -> None:
    t = np.array([1, 250, 900])
    x0, noise, _, _, x_t, _ = _setup(8, t)
    perfect = np.concatenate([noise, -np.ones_like(noise)], 1)  # true eps; v = -1 picks the true log-variance
    np.testing.assert_allclose(vdm_ref.vlb_term(LIN, x0, x_t, t, perfect, "eps"), 0.0, atol=1e-12)
    fixed = vdm_ref.vlb_term(LIN, x0, x_t, t, noise, "eps", "fixed_small")  # C channels suffice
    np.testing.assert_allclose(fixed, 0.0, atol=1e-12)
    assert np.all(vdm_ref.vlb_term(LIN, x0, x_t, t, noise + 0.1, "eps", "fixed_small") > 0)


@pytest.mark.parametrize(("prediction", "lam", "gamma"), [("eps", 0.001, None), ("v", 0.01, 5.0), ("x0", 0.001, 1.0)])
def test_hybrid_is_simple_plus_scaled_vlb(prediction: str, lam: float, gamma: float | None) -> None:
    sched = ZERO if prediction == "v" else LIN
    t = np.array([0, 5, sched.T - 1 if prediction == "v" else 700])
    x0, noise, pred, v, x_t, _ = _setup(9, t, sched)
    out = np.concatenate([pred, v], 1)
    simple = vdm_ref.simple_loss(sched, x0, t, noise, pred, prediction, gamma)
    vlb = vdm_ref.vlb_term(sched, x0, x_t, t, out, prediction, "learned_range")
    kwargs = {} if lam == 0.001 else {"lam": lam}  # 0.001 is the default
    got = vdm_ref.hybrid_loss(sched, x0, t, noise, out, prediction, min_snr_gamma=gamma, **kwargs)
    np.testing.assert_allclose(got, simple + lam * sched.T * vlb, rtol=1e-12)
    assert np.all(vlb > 0) and simple.sum() > 0  # both terms matter (min-SNR v weight is 0 at SNR = 0)
    with pytest.raises(ValueError, match="2C-channel"):
        vdm_ref.hybrid_loss(sched, x0, t, noise, pred, prediction)


@pytest.mark.parametrize("bad", ["mean1", "logvar1", "mean2", "logvar2"])
def test_normal_kl_refuses_non_finite_input_naming_it(bad):
    """Spec 1.7: NaN or Inf in any argument is an error naming it (it used to return NaN)."""
    args = {"mean1": np.zeros(3), "logvar1": np.zeros(3), "mean2": np.ones(3), "logvar2": np.zeros(3)}
    args[bad] = np.array([0.0, np.nan, 1.0])
    with pytest.raises(ValueError, match=f"'{bad}'"):
        vdm_ref.normal_kl(**args)
    np.testing.assert_allclose(vdm_ref.normal_kl(np.zeros(1), np.zeros(1), np.ones(1), np.zeros(1)), [0.5])
