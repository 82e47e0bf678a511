"""Spec section 16 (training objectives for every noise process) in vdm_ref.

Distributions are checked against their CDFs written out here with math.erf, weights against
v1's min-SNR (8.2) and against the property that defines them, and EDM's loss against the
paper's lambda(sigma) ||D - x0||^2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import vdm_ref as R


def _phi_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def test_normal_quantile_inverts_the_normal_cdf():
    u = np.concatenate([np.random.default_rng(0).uniform(size=200), [1e-300, 1e-12, 0.25, 0.75, 1 - 2**-53]])
    q = R.normal_quantile(u)
    for ui, qi in zip(u, q, strict=True):
        # Phi at the quantile is u up to Phi's step across one ulp of q and a few ulp of the tail.
        step = math.exp(-qi * qi / 2) / math.sqrt(2 * math.pi) * max(abs(qi), 1e-300) * 2.3e-16
        assert abs(_phi_cdf(qi) - ui) <= step + 4e-16 * min(ui, 1 - ui) + 1e-300, (ui, qi)
    assert R.normal_quantile(0.975) == pytest.approx(1.959963984540054, rel=1e-15)  # the textbook 1.96
    assert R.normal_quantile(0.5) == 0.0 and R.normal_quantile(0.0) == -np.inf
    upper = 0.5 + u[:200] / 2  # 1 - upper is exact, so the symmetry must be too
    np.testing.assert_array_equal(R.normal_quantile(1 - upper), -R.normal_quantile(upper))
    with pytest.raises(ValueError, match="argument 'u'"):
        R.normal_quantile(1.0)


@pytest.mark.parametrize("m, std", [(0.0, 1.0), (0.5, 0.6), (-1.0, 2.0)])
def test_logit_normal_levels_follow_their_cdf(m, std):
    n = 5000
    u = np.random.default_rng(7).uniform(size=n)
    s = R.flow_level_from_uniform(u, "logit_normal", m=m, s=std)

    def cdf(x: float) -> float:  # P(S <= x) for S = sigmoid(N(m, std^2))
        return _phi_cdf((math.log(x / (1 - x)) - m) / std)

    got = np.array([cdf(x) for x in s])
    np.testing.assert_allclose(got, u, rtol=0, atol=1e-12)  # s is the quantile function at u
    # Kolmogorov-Smirnov against the same CDF: 1.63 / sqrt(n) is the 1% critical value.
    srt = np.sort(s)
    F = np.array([cdf(x) for x in srt])
    i = np.arange(1, n + 1)
    ks = max(np.max(i / n - F), np.max(F - (i - 1) / n))
    assert ks < 1.63 / math.sqrt(n), ks


def test_mode_density_and_shift():
    u = np.linspace(0.0, 0.999, 1000)
    s = R.flow_level_from_uniform(u, "mode", scale=1.29)
    assert s[0] == 1.0 and np.all(np.diff(s) < 0) and s[-1] < 0.01  # u = 0 is pure noise
    np.testing.assert_allclose(R.flow_level_from_uniform(u, "mode", scale=0.0), 1 - u, atol=1e-15)
    # 0.3 by hand: 1 - 0.3 - 1.29 (cos^2(0.15 pi) - 0.7)
    want = 0.7 - 1.29 * (math.cos(0.15 * math.pi) ** 2 - 0.7)
    assert R.flow_level_from_uniform(0.3, "mode", scale=1.29) == pytest.approx(want, rel=1e-14)
    plain = R.flow_level_from_uniform(u, "uniform")
    np.testing.assert_allclose(R.flow_level_from_uniform(u, "uniform", shift=3.0), 3 * plain / (1 + 2 * plain),
                               rtol=1e-15)
    with pytest.raises(ValueError, match="monotone"):
        R.flow_level_from_uniform(u, "mode", scale=2.0)
    with pytest.raises(ValueError, match="unknown parameter"):
        R.flow_level_from_uniform(u, "uniform", m=0.0)
    with pytest.raises(ValueError, match="argument 'density'"):
        R.flow_level_from_uniform(u, "cosmap")


def test_edm_log_normal_levels():
    n = 4000
    u = (np.arange(n) + 0.5) / n  # stratified: the sample moments of ln sigma are nearly exact
    ln_sigma = np.log(R.edm_sigma_from_uniform(u))
    assert ln_sigma.mean() == pytest.approx(-1.2, abs=1e-12)  # symmetric strata
    assert ln_sigma.std() == pytest.approx(1.2, rel=2e-3)
    with pytest.raises(ValueError, match="u = 0"):
        R.edm_sigma_from_uniform(0.0)


def test_vp_timesteps_are_uniform_integers():
    T, n = 10, 7
    u = (np.arange(n * T) + 0.5) / (n * T)
    t = R.vp_timestep_from_uniform(u, T)
    assert t.dtype == np.int64 and np.bincount(t).tolist() == [n] * T
    assert R.vp_timestep_from_uniform(1 - 2**-53, 1000) == 999


@pytest.mark.parametrize("sd", [0.5, 1.0])
def test_edm_loss_is_lambda_times_the_denoiser_error(sd):
    rng = np.random.default_rng(2)
    x0, eps, pred = (rng.standard_normal((3, 2, 4)) for _ in range(3))
    sig = np.array([0.05, 1.0, 30.0])
    x = x0 + sig[:, None, None] * eps
    c_skip, c_out, _, _ = R.edm_preconditioning(sig, sd)
    D = c_skip[:, None, None] * x + c_out[:, None, None] * pred
    lam = (sig**2 + sd**2) / (sig * sd) ** 2  # Karras et al. 2022, Table 1, written here
    np.testing.assert_allclose(R.edm_loss_weight(sig, sd), lam, rtol=1e-15)
    want = lam * ((D - x0) ** 2).reshape(3, -1).mean(axis=1)
    got = R.process_simple_loss(x0, eps, 1.0, sig, pred, "edm", sigma_data=sd)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_process_min_snr_is_v1_on_vp():
    for zts in (False, True):
        sched = R.make_schedule("cosine", 20, zero_terminal_snr=zts)
        t = np.arange(20)
        a, s = R.alpha_sigma("vp", t, sched=sched)
        for p in R.PREDICTIONS:
            for gamma in (5.0, 0.5):
                np.testing.assert_allclose(R.process_min_snr_weight(a, s, p, gamma),
                                           R.min_snr_weight(sched, t, p, gamma), rtol=1e-13, atol=1e-15)


def test_process_min_snr_turns_every_prediction_error_into_min_snr_times_the_x0_error():
    """Spec 16.4's defining property: an error d in the output moves x0_hat by c d (14.3)."""
    rng = np.random.default_rng(9)
    d = rng.standard_normal((1, 6))
    for a, s in ((0.9, 0.1), (0.2, 0.98), (1.0, 7.0), (0.5, 0.5)):
        snr = a * a / (s * s)
        for p in R.PREDICTION_TYPES:
            x = rng.standard_normal((1, 6))
            out = rng.standard_normal((1, 6))
            x0_err = R.to_x0_eps(x, a, s, out + d, p)[0] - R.to_x0_eps(x, a, s, out, p)[0]
            w = R.process_min_snr_weight(a, s, p, 5.0)
            assert w * np.mean(d**2) == pytest.approx(min(snr, 5.0) * np.mean(x0_err**2), rel=1e-10), (p, a, s)


def test_min_snr_at_the_ends_and_that_it_changes_the_loss():
    assert R.process_min_snr_weight(0.0, 1.0, "eps") == 1.0  # zero SNR, as 8.2
    assert R.process_min_snr_weight(0.0, 1.0, "flow") == 0.0
    assert R.process_min_snr_weight(1.0, 0.0, "x0", 3.0) == 3.0
    x0, eps, pred = np.ones((2, 3)), np.zeros((2, 3)), np.full((2, 3), 0.5)
    a, s = np.array([0.95, 0.3]), np.array([0.05, 0.7])
    plain = R.process_simple_loss(x0, eps, a, s, pred, "flow")
    weighted = R.process_simple_loss(x0, eps, a, s, pred, "flow", min_snr_gamma=5.0)
    np.testing.assert_allclose(weighted, plain * R.process_min_snr_weight(a, s, "flow", 5.0))
    assert not np.allclose(weighted, plain)


def test_flow_target_loss_by_hand():
    x0, eps = np.array([[1.0, 2.0]]), np.array([[0.5, -1.0]])
    pred = np.array([[0.0, 0.0]])
    # u = eps - x0 = (-0.5, -3); mean of squares = (0.25 + 9) / 2
    assert R.process_simple_loss(x0, eps, 0.6, 0.4, pred, "flow").item() == pytest.approx(4.625, rel=1e-15)
