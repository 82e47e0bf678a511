"""Spec section 14 (noise processes) in vdm_ref: every expectation derived independently.

Conversions are checked by round trips through the process itself (x = alpha x0 + sigma eps
built in the test), against v1's own functions where the families meet, against the EDM
paper's formulas written out here, and by sampling 1-D Gaussian data with the ideal denoiser
in every family.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import vdm_ref as R

PREDS = tuple(R.PREDICTION_TYPES)


def _x(a, s, x0, eps):
    a, s = np.broadcast_arrays(np.asarray(a, float), np.asarray(s, float))
    shape = a.shape + (1,) * (x0.ndim - a.ndim)
    return a.reshape(shape) * x0 + s.reshape(shape) * eps


def _defined(prediction: str, a: float, s: float) -> bool:
    return not ((prediction == "eps" and a == 0) or (prediction == "x0" and s == 0))


# Noise levels with alpha and sigma each exactly 0 or at least 1e-3: near a singular end a
# conversion divides by alpha (eps) or sigma (x0), and the tolerance below scales with that.
_unit = st.one_of(st.just(0.0), st.just(1.0), st.floats(1e-3, 1.0 - 1e-3))
levels = st.one_of(
    _unit.map(lambda s: (1.0 - s, s)),  # flow, both ends included
    st.one_of(st.just(0.0), st.floats(1e-3, 80.0)).map(lambda s: (1.0, s)),  # edm
    _unit.map(lambda a: (math.sqrt(a), math.sqrt(1.0 - a))),  # vp (abar)
)


@given(pair=levels, sd=st.sampled_from((0.5, 1.0, 0.2)), seed=st.integers(0, 2**31))
def test_every_prediction_round_trips_through_x0_eps(pair, sd, seed):
    a, s = pair
    rng = np.random.default_rng(seed)
    x0, eps = rng.standard_normal((2, 3, 2, 2)), rng.standard_normal((2, 3, 2, 2))
    x = _x(a, s, x0, eps)
    scale = 1.0 + float(np.abs(x).max())
    for p in PREDS:
        out = R.from_x0_eps(x0, eps, a, s, p, sigma_data=sd)
        if not _defined(p, a, s):
            with pytest.raises(ValueError, match="'eps'|'x0'"):
                R.to_x0_eps(x, a, s, out, p, sigma_data=sd)
            continue
        # Rounding is amplified by 1/alpha (eps -> x0) or 1/sigma (x0 -> eps) only.
        tol = 1e-13 * scale * (1 + (80.0 / a if p == "eps" else 80.0)) * (1 + (1 / s if p == "x0" else 1))
        x0_hat, eps_hat = R.to_x0_eps(x, a, s, out, p, sigma_data=sd)
        np.testing.assert_allclose(x0_hat, x0, rtol=0, atol=tol)
        np.testing.assert_allclose(eps_hat, eps, rtol=0, atol=tol)
        for q in PREDS:  # any -> any, and back
            if not _defined(q, a, s):
                continue
            there = R.convert_prediction(x, a, s, out, p, q, sigma_data=sd)
            back = R.convert_prediction(x, a, s, there, q, p, sigma_data=sd)
            amp = (1 + 1 / a if "eps" in (p, q) else 1) * (1 + 1 / s if "x0" in (p, q) else 1)
            np.testing.assert_allclose(back, out, rtol=0, atol=1e-12 * scale * 80.0 * amp)


def test_vp_family_is_v1():
    sched = R.make_schedule("cosine", 50, zero_terminal_snr=True)
    rng = np.random.default_rng(1)
    x0, eps = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 3, 5))
    t = np.array([7, 49])
    a, s = R.alpha_sigma("vp", t, sched=sched)
    np.testing.assert_allclose(a**2, sched.abar[t], rtol=1e-15, atol=0)
    x = R.q_sample(sched, x0, t, eps)
    np.testing.assert_allclose(_x(a, s, x0, eps), x, rtol=0, atol=1e-15)
    np.testing.assert_allclose(R.from_x0_eps(x0, eps, a, s, "v"), R.velocity(sched, x0, t, eps), atol=1e-15)
    out = rng.standard_normal(x.shape)
    for p in ("x0", "v"):
        want = R.predict_x0_eps(sched, x, t, out, p)
        for got, w in zip(R.to_x0_eps(x, a, s, out, p), want, strict=True):
            np.testing.assert_allclose(got, w, atol=1e-14)
    # t = -1 is the clean level (1.2): alpha 1, sigma 0.
    assert R.alpha_sigma("vp", -1, sched=sched) == (1.0, 0.0)


def test_flow_velocity_is_noise_minus_data_and_dx_ds():
    """Spec 14.1 sign convention: u = eps - x0 = dx/ds along x(s) = (1 - s) x0 + s eps."""
    x0, eps = np.array([[2.0, -1.0]]), np.array([[0.5, 3.0]])
    s, h = 0.3, 1e-6
    a0, s0 = R.alpha_sigma("flow", s)
    a1, s1 = R.alpha_sigma("flow", s + h)
    dxds = (_x(a1, s1, x0, eps) - _x(a0, s0, x0, eps)) / h
    u = R.from_x0_eps(x0, eps, a0, s0, "flow")
    np.testing.assert_array_equal(u, np.array([[-1.5, 4.0]]))  # eps - x0, by hand
    np.testing.assert_allclose(dxds, u, rtol=1e-8)


def test_v_is_the_angular_velocity_of_the_rescaled_process():
    """Spec 14.3: v = d(x / r)/dphi with phi = atan2(sigma, alpha), here on an EDM level."""
    x0, eps = np.array([[0.7, -0.2]]), np.array([[-1.1, 0.4]])
    sig, h = 1.7, 1e-7

    def x_over_r(phi):
        return np.cos(phi) * x0 + np.sin(phi) * eps

    phi = math.atan2(sig, 1.0)
    deriv = (x_over_r(phi + h) - x_over_r(phi - h)) / (2 * h)
    np.testing.assert_allclose(R.from_x0_eps(x0, eps, 1.0, sig, "v"), deriv, rtol=1e-7)


@pytest.mark.parametrize("sd", [0.5, 1.0, 0.3])
@pytest.mark.parametrize("sigma", [0.002, 0.3, 1.0, 80.0])
def test_edm_preconditioning_matches_the_paper(sigma, sd):
    """Karras et al. 2022, Table 1 (x0 target), and the v scaling (c_out negative), written out here."""
    c_skip, c_out, c_in, c_noise = R.edm_preconditioning(sigma, sd)
    assert c_skip == pytest.approx(sd**2 / (sigma**2 + sd**2), rel=1e-14)
    assert c_out == pytest.approx(sigma * sd / math.sqrt(sigma**2 + sd**2), rel=1e-14)
    assert c_in == pytest.approx(1 / math.sqrt(sigma**2 + sd**2), rel=1e-14)
    assert c_noise == pytest.approx(math.log(sigma) / 4, rel=1e-14, abs=1e-15)
    v_skip, v_out, v_in, _ = R.edm_preconditioning(sigma, sd, "v")
    assert v_skip == pytest.approx(1 / (sigma**2 + 1), rel=1e-14)
    assert v_out == pytest.approx(-sigma / math.sqrt(sigma**2 + 1), rel=1e-14) and v_out < 0
    assert v_in == c_in
    assert R.edm_preconditioning(sigma, sd, "eps")[:2] == (1.0, -sigma)
    assert R.edm_preconditioning(sigma, sd, "x0")[:2] == (0.0, 1.0)


def test_edm_denoiser_recovers_x0_from_its_target_and_f_is_minus_v_at_unit_sigma_data():
    rng = np.random.default_rng(3)
    x0, eps = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    sig = np.array([0.1, 2.0, 40.0])
    x = _x(1.0, sig, x0, eps)
    f = R.from_x0_eps(x0, eps, 1.0, sig, "edm", sigma_data=0.5)
    c_skip, c_out, _, _ = R.edm_preconditioning(sig, 0.5)
    np.testing.assert_allclose(c_skip[:, None] * x + c_out[:, None] * f, x0, atol=1e-12)
    np.testing.assert_allclose(R.from_x0_eps(x0, eps, 1.0, sig, "edm", sigma_data=1.0),
                               -R.from_x0_eps(x0, eps, 1.0, sig, "v"), atol=1e-14)


def test_sigma_data_changes_only_the_edm_prediction():
    x0, eps = np.ones((1, 2)), np.full((1, 2), 2.0)
    for p in PREDS:
        a, b = (R.from_x0_eps(x0, eps, 0.6, 0.8, p, sigma_data=sd) for sd in (0.5, 1.0))
        assert (p == "edm") == (not np.array_equal(a, b)), p


def test_the_link_between_families():
    S = np.array([0.0, 0.25, 1.0, 7.0, np.inf])
    for fam in ("vp", "flow"):
        a, s = R.alpha_sigma_from_edm_sigma(fam, S)
        with np.errstate(divide="ignore"):
            np.testing.assert_allclose(s[:-1] / a[:-1], S[:-1], rtol=1e-15)
        assert (a[-1], s[-1]) == (0.0, 1.0)
    a, s = R.alpha_sigma_from_edm_sigma("vp", S[:-1])
    np.testing.assert_allclose(a**2 + s**2, 1.0, rtol=1e-15)  # variance preserving
    a, s = R.alpha_sigma_from_edm_sigma("flow", S)
    np.testing.assert_allclose(a + s, 1.0, rtol=1e-15)
    np.testing.assert_allclose(s[:-1], [0.0, 0.2, 0.5, 0.875], rtol=1e-15)  # s = S / (1 + S) by hand
    with pytest.raises(ValueError, match="zero SNR"):
        R.alpha_sigma_from_edm_sigma("edm", S)
    lam = R.half_log_snr(*R.alpha_sigma("flow", np.array([0.0, 0.5, 0.8, 1.0])))
    np.testing.assert_allclose(lam, [np.inf, 0.0, math.log(0.25), -np.inf])
    np.testing.assert_allclose(R.edm_sigma(0.6, 0.8), 0.8 / 0.6)


def test_network_conditioning_per_family():
    np.testing.assert_array_equal(R.network_condition("vp", np.array([0, 999])), [0, 999])
    assert R.network_condition("vp", np.array([3])).dtype == np.int64
    np.testing.assert_array_equal(R.network_condition("flow", np.array([0.0, 0.25, 1.0])), [0.0, 250.0, 1000.0])
    np.testing.assert_allclose(R.network_condition("edm", np.array([0.002, 80.0])),
                               [math.log(0.002) / 4, math.log(80.0) / 4])
    np.testing.assert_array_equal(R.input_scale("flow", np.array([0.5, 1.0])), [1.0, 1.0])
    np.testing.assert_allclose(R.input_scale("edm", 1.2, sigma_data=0.5), 1 / math.sqrt(1.44 + 0.25))


def test_errors_name_the_argument():
    x = np.zeros((1, 2))
    with pytest.raises(ValueError, match="'eps' cannot give x0 where alpha = 0"):
        R.to_x0_eps(x, 0.0, 1.0, x, "eps")
    with pytest.raises(ValueError, match="'x0' cannot give eps where sigma = 0"):
        R.to_x0_eps(x, 1.0, 0.0, x, "x0")
    with pytest.raises(ValueError, match="argument 'prediction'"):
        R.to_x0_eps(x, 1.0, 0.5, x, "velocity")
    with pytest.raises(ValueError, match="argument 'family'"):
        R.alpha_sigma("ve", 0.5)
    with pytest.raises(ValueError, match="both 0"):
        R.from_x0_eps(x, x, 0.0, 0.0, "v")
    with pytest.raises(ValueError, match="argument 'sigma' must be >= 0"):
        R.from_x0_eps(x, x, 1.0, -0.1, "v")
    with pytest.raises(ValueError, match="'level'"):
        R.alpha_sigma("flow", 1.5)
    with pytest.raises(ValueError, match="needs its schedule"):
        R.alpha_sigma("vp", 3)
    with pytest.raises(ValueError, match="argument 'sched'"):
        R.alpha_sigma("flow", 0.5, sched=R.make_schedule("linear", 10))
    with pytest.raises(ValueError, match="batch has 1"):
        R.to_x0_eps(x, np.array([1.0, 1.0]), 0.5, x, "v")
    with pytest.raises(ValueError, match="sigma_data"):
        R.from_x0_eps(x, x, 1.0, 0.5, "edm", sigma_data=0.0)


def test_process_config():
    assert [R.Process(f).prediction for f in R.FAMILIES] == ["eps", "flow", "edm"]
    p = R.Process("edm", "v", sigma_data=1.0)
    assert R.Process.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="argument 'prediction'"):
        R.Process("vp", "flow")
    with pytest.raises(ValueError, match="sigma_min"):
        R.Process("edm", sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="unknown process key"):
        R.Process.from_dict({"family": "flow", "shift": 3.0})


# --- 14.8: ideal denoisers and sampling in every family ----------------------------------------

MU, VAR = 0.3, 0.25


def test_process_ideal_gaussian_is_the_v1_model_on_vp():
    sched = R.make_schedule("linear", 100)
    t = np.array([0, 50, 99])
    a, s = R.alpha_sigma("vp", t, sched=sched)
    x = np.random.default_rng(4).standard_normal((3, 1, 2, 2))
    for p in R.PREDICTIONS:
        want = R.gaussian_ideal_model(sched, MU, VAR, p)(x, t)
        np.testing.assert_allclose(R.process_gaussian_ideal_model(MU, VAR, p)(x, a, s), want, atol=1e-12)


def test_ideal_points_denoiser_against_bayes_by_hand():
    pts = np.array([[[-1.0]], [[2.0]]])
    a, s, x = 0.8, 0.6, np.array([[[0.5]]])
    lk = [-((0.5 - a * p) ** 2) / (2 * s * s) for p in (-1.0, 2.0)]
    w = np.exp(lk) / np.exp(lk).sum()
    x0_hat = w[0] * -1.0 + w[1] * 2.0
    got = R.process_points_ideal_model(pts, "x0")(x, a, s)
    assert got.item() == pytest.approx(x0_hat, rel=1e-14)
    u = R.process_points_ideal_model(pts, "flow")(x, a, s)
    assert u.item() == pytest.approx((0.5 - a * x0_hat) / s - x0_hat, rel=1e-13)


def _grid(family: str, n: int, first: float):
    """(alpha, sigma) from the first noise level down to the clean end, on a fine grid."""
    if family == "flow":
        lv = np.linspace(first, 0.0, n + 1)
    elif family == "edm":  # Karras-like: uniform in sigma^(1/7), then the final 0
        lv = np.append((first ** (1 / 7) + np.linspace(0, 1, n) * (0.002 ** (1 / 7) - first ** (1 / 7))) ** 7, 0.0)
    else:
        sched = R.make_schedule("cosine", n, zero_terminal_snr=True)
        a = np.sqrt(np.append(sched.abar[::-1], 1.0))
        return a, np.sqrt(1.0 - a**2)
    return R.alpha_sigma(family, lv)


def _ddim_on_pair(model, prediction, a, s, x):
    """The first-order step of 14.6 on the pair: x <- alpha_s x0_hat + sigma_s eps_hat."""
    for i in range(len(a) - 1):
        x0_hat, eps_hat = R.to_x0_eps(x, a[i], s[i], model(x, a[i], s[i]), prediction)
        x = a[i + 1] * x0_hat + s[i + 1] * eps_hat
    return x


@pytest.mark.parametrize("family", list(R.FAMILIES))
def test_sampling_a_gaussian_reproduces_its_mean_and_std_in_every_family(family):
    """Deterministic sampling with the ideal denoiser is affine in the start, so pushing two
    starting points through it gives the output distribution exactly; it must approach N(MU, VAR)."""
    first = {"vp": None, "flow": 1.0, "edm": 80.0}[family]
    for prediction in R.FAMILIES[family].predictions:
        errs = []
        for n in (250, 1000):
            a, s = _grid(family, n, first)
            if prediction == "eps" and a[0] == 0:  # undefined at zero SNR (14.4): start one step later
                a, s = a[1:], s[1:]
            m0, sd0 = a[0] * MU, math.sqrt(a[0] ** 2 * VAR + s[0] ** 2)  # the exact marginal there
            ends = _ddim_on_pair(R.process_gaussian_ideal_model(MU, VAR, prediction),
                                 prediction, a, s, np.array([[m0], [m0 + sd0]]))
            errs.append(max(abs(ends[0, 0] - MU), abs(abs(ends[1, 0] - ends[0, 0]) - math.sqrt(VAR))))
        assert errs[1] < 2e-3, (prediction, errs)
        assert errs[1] < errs[0] / 2.5, (prediction, errs)  # first order: ~4x smaller for 4x the steps


def test_flow_euler_step_is_the_pair_step():
    a, s = R.alpha_sigma("flow", np.array([0.9, 0.6]))
    x = np.array([[0.4, -1.3]])
    u = np.array([[0.2, 0.9]])
    x0_hat, eps_hat = R.to_x0_eps(x, a[0], s[0], u, "flow")
    np.testing.assert_allclose(a[1] * x0_hat + s[1] * eps_hat, x + (0.6 - 0.9) * u, atol=1e-15)


def test_points_sampling_lands_on_the_points_in_every_family():
    pts = np.array([[[-0.8]], [[0.5]]])
    z = np.random.default_rng(5).standard_normal((64, 1, 1))
    for family, first, prediction in (("vp", None, "v"), ("flow", 1.0, "flow"), ("edm", 80.0, "edm")):
        a, s = _grid(family, 200, first)
        ends = _ddim_on_pair(R.process_points_ideal_model(pts, prediction), prediction, a, s, s[0] * z)
        dist = np.min(np.abs(ends.reshape(-1, 1) - pts.reshape(1, -1)), axis=1)
        assert dist.max() < 1e-6, family
        assert len(set(np.argmin(np.abs(ends.reshape(-1, 1) - pts.reshape(1, -1)), axis=1))) == 2
