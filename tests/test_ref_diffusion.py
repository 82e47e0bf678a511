"""Spec sections 3 - 5 against Gaussian identities derived independently in the tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import vdm_ref
from vdm_ref import make_schedule

SCHEDS = {
    "linear": make_schedule("linear", 1000),
    "cosine": make_schedule("cosine", 1000),
    "scaled_linear_zero": make_schedule("scaled_linear", 1000, zero_terminal_snr=True),
    "sigmoid": make_schedule("sigmoid", 50, beta_start=1e-3, beta_end=0.05),
}
SHAPE = (3, 2, 2, 3, 3)


def _arrays(seed: int, n: int, shape: tuple[int, ...] = SHAPE) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(n)]


def _col(values: np.ndarray, ndim: int = len(SHAPE)) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1, *([1] * (ndim - 1)))


@st.composite
def sched_and_t(draw: st.DrawFn, live: bool = False) -> tuple[vdm_ref.Schedule, np.ndarray]:
    """A schedule and a (B,) timestep vector; live=True keeps abar_t > 0."""
    sched = SCHEDS[draw(st.sampled_from(sorted(SCHEDS)))]
    top = sched.T - 2 if live and sched.zero_terminal_snr else sched.T - 1
    t = draw(st.lists(st.integers(0, top), min_size=SHAPE[0], max_size=SHAPE[0]))
    return sched, np.array(t)


# --- 3. forward process -------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(sched_and_t(), st.integers(0, 2**32 - 1))
def test_q_sample_and_velocity_closed_forms(st_: tuple, seed: int) -> None:
    sched, t = st_
    x0, eps = _arrays(seed, 2)
    a = _col(sched.abar[t])
    x_t = vdm_ref.q_sample(sched, x0, t, eps)
    np.testing.assert_allclose(x_t, np.sqrt(a) * x0 + np.sqrt(1 - a) * eps, rtol=1e-13, atol=1e-14)
    mean, var = vdm_ref.q_mean_variance(sched, x0, t)
    assert var.shape == x0.shape
    np.testing.assert_allclose(mean, np.sqrt(a) * x0, rtol=1e-13)
    np.testing.assert_allclose(var, np.broadcast_to(1 - a, x0.shape), rtol=1e-13)
    # x_t - mean is the noise part, with the variance of 3.1.
    np.testing.assert_allclose(x_t - mean, np.sqrt(var) * eps, rtol=1e-9, atol=1e-12)
    v = vdm_ref.velocity(sched, x0, t, eps)
    np.testing.assert_allclose(v, np.sqrt(a) * eps - np.sqrt(1 - a) * x0, rtol=1e-13, atol=1e-14)
    # v is x_t rotated by 90 degrees in the (x0, eps) plane: |x_t|^2 + |v|^2 = |x0|^2 + |eps|^2.
    np.testing.assert_allclose(x_t**2 + v**2, x0**2 + eps**2, rtol=1e-12)


def test_q_sample_moments_empirically() -> None:
    sched = SCHEDS["cosine"]
    rng = np.random.default_rng(1)
    n = 200_000
    x0 = np.full((n, 1), 0.7)
    for t in (0, 300, 900):
        x_t = vdm_ref.q_sample(sched, x0, t, rng.standard_normal((n, 1)))
        a = sched.abar[t]
        se = math.sqrt((1 - a) / n)
        assert abs(x_t.mean() - math.sqrt(a) * 0.7) < 5 * se
        assert abs(x_t.var() - (1 - a)) < 5 * (1 - a) * math.sqrt(2 / n)


def test_scalar_t_broadcasts_over_the_batch() -> None:
    sched = SCHEDS["linear"]
    x0, eps = _arrays(0, 2)
    np.testing.assert_array_equal(vdm_ref.q_sample(sched, x0, 7, eps),
                                  vdm_ref.q_sample(sched, x0, np.full(SHAPE[0], 7), eps))


# --- 4. parameterisations ----------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(sched_and_t(live=True), st.integers(0, 2**32 - 1))
def test_conversions_round_trip(st_: tuple, seed: int) -> None:
    sched, t = st_
    x0, eps = _arrays(seed, 2)
    x_t = vdm_ref.q_sample(sched, x0, t, eps)
    v = vdm_ref.velocity(sched, x0, t, eps)
    # Coarse relative tolerance for x0 from eps: its error grows like 1/sqrt(abar_t), ~1e2 at worst here.
    np.testing.assert_allclose(vdm_ref.x0_from_eps(sched, x_t, t, eps), x0, rtol=1e-9, atol=1e-9 / np.sqrt(
        _col(sched.abar[t])).max())
    np.testing.assert_allclose(vdm_ref.eps_from_x0(sched, x_t, t, x0), eps, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(vdm_ref.x0_from_v(sched, x_t, t, v), x0, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(vdm_ref.eps_from_v(sched, x_t, t, v), eps, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(vdm_ref.v_from_x0_eps(sched, t, x0, eps), v, rtol=1e-12, atol=1e-14)
    for prediction, pred in (("eps", eps), ("x0", x0), ("v", v)):
        got_x0, got_eps = vdm_ref.predict_x0_eps(sched, x_t, t, pred, prediction)
        np.testing.assert_allclose(got_x0, x0, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(got_eps, eps, rtol=1e-8, atol=1e-8)


def test_terminal_zero_snr_step() -> None:
    sched = SCHEDS["scaled_linear_zero"]
    x_t, x0, v = _arrays(2, 3)
    t = sched.T - 1
    with pytest.raises(ValueError, match="abar_t = 0"):
        vdm_ref.x0_from_eps(sched, x_t, t, x0)
    np.testing.assert_array_equal(vdm_ref.eps_from_x0(sched, x_t, t, x0), x_t)  # sqrt(0) x0 = 0
    np.testing.assert_array_equal(vdm_ref.x0_from_v(sched, x_t, t, v), -v)
    np.testing.assert_array_equal(vdm_ref.eps_from_v(sched, x_t, t, v), x_t)


def test_split_model_output() -> None:
    out = np.arange(2 * 4 * 3).reshape(2, 4, 3).astype(float)
    pred, var = vdm_ref.split_model_output(out, 2)
    np.testing.assert_array_equal(pred, out[:, :2])
    np.testing.assert_array_equal(var, out[:, 2:])
    pred, var = vdm_ref.split_model_output(out, 4)
    assert var is None and np.array_equal(pred, out)
    with pytest.raises(ValueError, match="'out'"):
        vdm_ref.split_model_output(out, 3)


# --- 5. posterior --------------------------------------------------------------------------


def _bayes_posterior(a_s: np.ndarray, a_t: np.ndarray, x0: np.ndarray, x_t: np.ndarray):
    """q(x_s | x_t, x0) by Bayes' rule from q(x_s | x0) = N(sqrt(a_s) x0, 1 - a_s) and
    q(x_t | x_s) = N(sqrt(a_t / a_s) x_s, 1 - a_t / a_s): a precision-weighted combination."""
    k = np.sqrt(a_t / a_s)
    prec_prior = 1.0 / (1.0 - a_s)
    prec_like = k**2 / (1.0 - a_t / a_s)
    var = 1.0 / (prec_prior + prec_like)
    # The likelihood in x_s: N(x_t / k, (1 - a_t/a_s) / k^2), precision prec_like. Its
    # information term prec_like * x_t / k is written as k / (1 - a_t/a_s) * x_t so that it stays
    # defined at a_t = 0 (zero terminal SNR), where x_t says nothing and the posterior is the prior.
    mean = var * (prec_prior * np.sqrt(a_s) * x0 + k / (1.0 - a_t / a_s) * x_t)
    return mean, var


@st.composite
def pairs(draw: st.DrawFn) -> tuple[vdm_ref.Schedule, np.ndarray, np.ndarray]:
    sched = SCHEDS[draw(st.sampled_from(sorted(SCHEDS)))]
    t = np.array(draw(st.lists(st.integers(1, sched.T - 1), min_size=SHAPE[0], max_size=SHAPE[0])))
    s = np.array([draw(st.integers(0, int(ti) - 1)) for ti in t])
    return sched, s, t


@settings(max_examples=60, deadline=None)
@given(pairs(), st.integers(0, 2**32 - 1))
# The terminal step of a zero-terminal-SNR schedule (abar_T-1 = 0), which random draws rarely hit.
@example((SCHEDS["scaled_linear_zero"], np.array([0, 0, 0]), np.array([1, 1, 999])), 0)
def test_strided_posterior_is_bayes_rule(p: tuple, seed: int) -> None:
    sched, s, t = p
    x0, x_t = _arrays(seed, 2)
    want_mean, want_var = _bayes_posterior(_col(sched.abar[s]), _col(sched.abar[t]), x0, x_t)
    np.testing.assert_allclose(vdm_ref.posterior_mean(sched, x0, x_t, s, t), want_mean, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(vdm_ref.posterior_variance(sched, s, t), want_var.ravel(), rtol=1e-9)
    np.testing.assert_allclose(vdm_ref.posterior_log_variance_clipped(sched, s, t), np.log(want_var.ravel()),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(vdm_ref.effective_beta(sched, s, t), 1 - sched.abar[t] / sched.abar[s], rtol=1e-12)


@pytest.mark.parametrize("name", sorted(SCHEDS))
def test_full_schedule_posterior_is_the_ddpm_posterior(name: str) -> None:
    """s = t - 1: the textbook DDPM coefficients written with betas and alphas."""
    sched = SCHEDS[name]
    t = np.arange(1, sched.T)
    s = t - 1
    beta, alpha, abar, abar_prev = sched.betas[t], sched.alphas[t], sched.abar[t], sched.abar[s]
    np.testing.assert_allclose(vdm_ref.effective_beta(sched, s, t), beta, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(vdm_ref.posterior_variance(sched, s, t), beta * (1 - abar_prev) / (1 - abar),
                               rtol=1e-9)
    c0, ct = vdm_ref.posterior_mean_coefs(sched, s, t)
    np.testing.assert_allclose(c0, beta * np.sqrt(abar_prev) / (1 - abar), rtol=1e-9)
    np.testing.assert_allclose(ct, (1 - abar_prev) * np.sqrt(alpha) / (1 - abar), rtol=1e-9)


def test_effective_beta_composes() -> None:
    """(1 - beta_{s,u}) (1 - beta_{u,t}) = 1 - beta_{s,t}: forward steps compose."""
    sched = SCHEDS["cosine"]
    s, u, t = np.array([-1, 3, 100]), np.array([5, 400, 101]), np.array([999, 998, 900])
    lhs = (1 - vdm_ref.effective_beta(sched, s, u)) * (1 - vdm_ref.effective_beta(sched, u, t))
    # atol: 1 - beta_{s,t} = abar_t / abar_s is ~1e-9 here, and 1 - (1 - x) loses digits of x.
    np.testing.assert_allclose(lhs, 1 - vdm_ref.effective_beta(sched, s, t), rtol=1e-12, atol=1e-15)


def test_last_step_to_clean_data() -> None:
    sched = SCHEDS["linear"]
    x0, x_t = _arrays(3, 2)
    t = np.array([0, 500, 999])
    s = np.full(3, -1)
    np.testing.assert_allclose(vdm_ref.posterior_mean(sched, x0, x_t, s, t), x0, rtol=1e-15, atol=1e-15)
    np.testing.assert_array_equal(vdm_ref.posterior_variance(sched, s, t), 0.0)
    np.testing.assert_allclose(vdm_ref.effective_beta(sched, s, t), 1 - sched.abar[t], rtol=1e-15)
    floor = (1 - sched.abar[0]) / (1 - sched.abar[1]) * (1 - sched.abar[1] / sched.abar[0])  # betatilde_{0,1}
    np.testing.assert_allclose(vdm_ref.posterior_log_variance_clipped(sched, s, t), math.log(floor), rtol=1e-12)


def test_model_log_variance_rules() -> None:
    sched = SCHEDS["sigmoid"]
    s, t = np.array([-1, -1, 0, 10, 48]), np.array([0, 30, 1, 20, 49])
    a_s, a_t = sched.abar_at(s), sched.abar[t]
    beta = 1 - a_t / a_s
    tilde = (1 - a_s) / (1 - a_t) * beta
    tilde01 = (1 - sched.abar[0]) / (1 - sched.abar[1]) * (1 - sched.abar[1] / sched.abar[0])
    min_log = np.log(np.where(s < 0, tilde01, tilde))
    max_log_large = np.log(np.where(s < 0, tilde01, beta))
    small = vdm_ref.model_log_variance(sched, s, t, "fixed_small")
    np.testing.assert_allclose(small, min_log, rtol=1e-12)
    np.testing.assert_allclose(vdm_ref.model_log_variance(sched, s, t, "fixed_large"), max_log_large, rtol=1e-12)
    # learned_range interpolates in log space; at s = -1 its upper end stays log beta_{s,t} = log(1 - abar_t).
    shape = (5, 1, 1, 2, 2)
    for v in (-1.0, 0.0, 1.0, 3.0, -2.5):  # not clamped: values outside [-1, 1] extrapolate
        got = vdm_ref.model_log_variance(sched, s, t, "learned_range", np.full(shape, v))
        f = (v + 1) / 2
        want = f * np.log(beta) + (1 - f) * min_log
        np.testing.assert_allclose(got, np.broadcast_to(_col(want), shape), rtol=1e-12, atol=1e-12)
    got = vdm_ref.model_log_variance(sched, -1, 0, "learned_range", np.ones((1, 1)))
    assert got.item() == pytest.approx(math.log(sched.betas[0]), rel=1e-12)
    assert got.item() != pytest.approx(math.log(tilde01), rel=1e-3)


# --- errors -----------------------------------------------------------------------------------


def test_errors_name_the_argument() -> None:
    sched = SCHEDS["linear"]
    x0, eps = _arrays(4, 2)
    with pytest.raises(ValueError, match="'t'"):
        vdm_ref.q_sample(sched, x0, 1000, eps)
    with pytest.raises(ValueError, match="'t'"):
        vdm_ref.q_sample(sched, x0, -1, eps)
    with pytest.raises(ValueError, match="'t'"):
        vdm_ref.q_sample(sched, x0, np.array([1, 2]), eps)  # batch of 3
    with pytest.raises(ValueError, match="'t'"):
        vdm_ref.q_sample(sched, x0, 1.5, eps)
    with pytest.raises(ValueError, match="'noise'"):
        vdm_ref.q_sample(sched, x0, 5, eps[:, :1])
    with pytest.raises(ValueError, match="'x0'"):
        vdm_ref.q_sample(sched, np.where(x0 > 1, np.nan, x0), 5, eps)
    with pytest.raises(ValueError, match="'noise'"):
        vdm_ref.q_sample(sched, x0, 5, np.where(eps > 1, np.inf, eps))
    with pytest.raises(ValueError, match="'s'"):
        vdm_ref.posterior_variance(sched, 5, 5)
    with pytest.raises(ValueError, match="'s'"):
        vdm_ref.posterior_mean(sched, x0, eps, np.array([1, 9, 2]), np.array([2, 9, 3]))
    with pytest.raises(ValueError, match="'s'"):
        vdm_ref.effective_beta(sched, -2, 5)
    with pytest.raises(ValueError, match="'prediction'"):
        vdm_ref.predict_x0_eps(sched, x0, 5, eps, "score")
    with pytest.raises(ValueError, match="'variance'"):
        vdm_ref.model_log_variance(sched, 4, 5, "fixed_medium")
    with pytest.raises(ValueError, match="var_values"):
        vdm_ref.model_log_variance(sched, 4, 5, "learned_range")
