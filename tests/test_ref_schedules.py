"""Spec section 2: the reference schedules checked against their closed forms and identities."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vdm_ref
from vdm_ref import make_schedule


@st.composite
def schedules(draw: st.DrawFn, max_T: int = 2000) -> tuple[str, int, dict[str, float], bool]:
    """A schedule name, T and parameters inside the valid region of spec 2."""
    name = draw(st.sampled_from(vdm_ref.SCHEDULES))
    T = draw(st.integers(2, max_T))
    params: dict[str, float] = {}
    if name != "cosine" and draw(st.booleans()):
        lo = draw(st.floats(1e-5, 1e-2))
        params = {"beta_start": lo, "beta_end": draw(st.floats(lo, 0.03))}
        if name == "sigmoid":
            params["sigmoid_range"] = draw(st.floats(0.5, 10.0))
    elif name == "cosine" and draw(st.booleans()):
        params = {"s": draw(st.floats(0.0, 0.1)), "max_beta": draw(st.floats(0.3, 0.999))}
    return name, T, params, draw(st.booleans())


def _scalar_betas(name: str, T: int, p: dict[str, float]) -> list[float]:
    """Spec 2.1 - 2.4 written out one scalar at a time, independently of the vectorised code."""
    out = []
    for i in range(T):
        if name == "linear":
            out.append(p["beta_start"] + (p["beta_end"] - p["beta_start"]) * i / (T - 1))
        elif name == "scaled_linear":
            r0, r1 = math.sqrt(p["beta_start"]), math.sqrt(p["beta_end"])
            out.append((r0 + (r1 - r0) * i / (T - 1)) ** 2)
        elif name == "cosine":
            def f(u: float) -> float:
                return math.cos((u + p["s"]) / (1 + p["s"]) * math.pi / 2) ** 2
            out.append(min(1 - f((i + 1) / T) / f(i / T), p["max_beta"]))
        else:
            r = p["sigmoid_range"]
            x = -r + 2 * r * i / (T - 1)
            out.append(p["beta_start"] + (p["beta_end"] - p["beta_start"]) / (1 + math.exp(-x)))
    return out


@settings(max_examples=60, deadline=None)
@given(schedules())
def test_abar_strictly_decreasing_in_unit_interval(spec: tuple[str, int, dict[str, float], bool]) -> None:
    name, T, params, zero = spec
    s = make_schedule(name, T, zero_terminal_snr=zero, **params)
    assert s.abar.dtype == np.float64 and s.abar.shape == (T,)
    assert np.all(np.diff(s.abar) < 0)
    assert 0.0 < s.abar[0] < 1.0
    if zero:
        assert s.abar[-1] == 0.0
    else:
        assert s.abar[-1] > 0.0
    assert np.all((s.betas > 0) & (s.betas <= 1.0))


@settings(max_examples=40, deadline=None)
@given(schedules(max_T=300))
def test_betas_match_scalar_closed_forms(spec: tuple[str, int, dict[str, float], bool]) -> None:
    name, T, params, _ = spec
    s = make_schedule(name, T, **params)
    want = _scalar_betas(name, T, {**vdm_ref.DEFAULT_PARAMS[name], **params})
    np.testing.assert_allclose(s.betas, want, rtol=1e-12, atol=1e-15)
    # 2.6: abar is the running product of 1 - beta.
    np.testing.assert_allclose(s.abar, np.cumprod([1.0 - b for b in want]), rtol=1e-12)


def test_default_parameters_are_the_spec_values() -> None:
    assert vdm_ref.DEFAULT_PARAMS == {
        "linear": {"beta_start": 1e-4, "beta_end": 0.02},
        "scaled_linear": {"beta_start": 0.00085, "beta_end": 0.012},
        "cosine": {"s": 0.008, "max_beta": 0.999},
        "sigmoid": {"beta_start": 1e-4, "beta_end": 0.02, "sigmoid_range": 6.0},
    }
    for name, params in vdm_ref.DEFAULT_PARAMS.items():
        assert np.array_equal(make_schedule(name, 100).betas, make_schedule(name, 100, **params).betas)


def test_endpoint_closed_forms() -> None:
    lin = make_schedule("linear", 1000)
    assert lin.betas[0] == 1e-4 and lin.betas[-1] == 0.02
    assert lin.betas[500] == pytest.approx(1e-4 + (0.02 - 1e-4) * 500 / 999, rel=1e-14)
    scl = make_schedule("scaled_linear", 1000)
    assert scl.betas[0] == pytest.approx(0.00085, rel=1e-15)
    assert scl.betas[-1] == pytest.approx(0.012, rel=1e-15)
    sig = make_schedule("sigmoid", 1001)
    assert sig.betas[0] == pytest.approx(1e-4 + (0.02 - 1e-4) / (1 + math.exp(6.0)), rel=1e-14)
    assert sig.betas[500] == pytest.approx((1e-4 + 0.02) / 2, rel=1e-14)  # sigmoid(0) = 1/2
    assert sig.betas[-1] == pytest.approx(1e-4 + (0.02 - 1e-4) / (1 + math.exp(-6.0)), rel=1e-14)
    cos = make_schedule("cosine", 1000)
    f = [math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2 for u in (0.0, 1e-3, 0.5)]
    assert cos.abar[0] == pytest.approx(f[1] / f[0], rel=1e-13)
    assert cos.abar[499] == pytest.approx(f[2] / f[0], rel=1e-11)  # abar_t = f((t+1)/T) / f(0) unclipped


def test_cosine_never_exceeds_max_beta_and_the_clip_can_be_active() -> None:
    default = make_schedule("cosine", 1000)
    assert np.all(default.betas <= 0.999)
    assert default.betas[-1] == 0.999  # f(1) ~ 0: the raw beta is ~1 and is clipped
    clipped = make_schedule("cosine", 50, max_beta=0.5)
    raw = np.array(_scalar_betas("cosine", 50, {"s": 0.008, "max_beta": math.inf}))
    active = raw > 0.5
    assert active.sum() >= 2
    assert np.all(clipped.betas[active] == 0.5)
    np.testing.assert_allclose(clipped.betas[~active], raw[~active], rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(schedules())
def test_zero_terminal_snr_exact_endpoints(spec: tuple[str, int, dict[str, float], bool]) -> None:
    name, T, params, _ = spec
    plain = make_schedule(name, T, **params)
    zero = make_schedule(name, T, zero_terminal_snr=True, **params)
    assert zero.abar[-1] == 0.0  # exactly, not merely small
    assert zero.abar[0] == plain.abar[0]  # bit-identical
    assert zero.betas[-1] == 1.0
    # 2.5: sqrt(abar') is the affine map of sqrt(abar) sending q_{T-1} -> 0 and q_0 -> q_0.
    q = np.sqrt(plain.abar)
    want = np.sqrt(plain.abar[0]) * (q - q[-1]) / (q[0] - q[-1])
    np.testing.assert_allclose(np.sqrt(zero.abar), want, rtol=1e-12, atol=1e-15)
    # Betas are re-derived so that the running product reproduces the rescaled abar.
    np.testing.assert_allclose(np.cumprod(1.0 - zero.betas), zero.abar, rtol=1e-12, atol=1e-300)
    assert np.array_equal(vdm_ref.rescale_zero_terminal_snr(plain.abar), zero.abar)


@settings(max_examples=40, deadline=None)
@given(schedules())
def test_snr_log_snr_sigma_identities(spec: tuple[str, int, dict[str, float], bool]) -> None:
    name, T, params, zero = spec
    s = make_schedule(name, T, zero_terminal_snr=zero, **params)
    tables = s.tables()
    assert list(tables) == ["betas", "alphas", "abar", "snr", "log_snr", "sigma"]
    np.testing.assert_array_equal(tables["alphas"], 1.0 - s.betas)
    live = s.abar > 0
    a, snr = s.abar[live], s.snr[live]
    np.testing.assert_allclose(snr * (1.0 - a), a, rtol=1e-12)
    np.testing.assert_allclose(np.exp(s.log_snr[live]), snr, rtol=1e-9)
    np.testing.assert_allclose(1.0 / (1.0 + np.exp(-s.log_snr[live])), a, rtol=1e-9)  # abar = sigmoid(logSNR)
    np.testing.assert_allclose(s.sigma[live] ** 2 * snr, 1.0, rtol=1e-12)
    if zero:
        assert s.snr[-1] == 0.0 and s.log_snr[-1] == -np.inf and s.sigma[-1] == np.inf


def test_abar_at_minus_one_is_one() -> None:
    s = make_schedule("linear", 10)
    np.testing.assert_array_equal(s.abar_at(np.array([-1, 0, 9])), [1.0, s.abar[0], s.abar[9]])


def test_tables_are_read_only_and_schedule_round_trips() -> None:
    s = make_schedule("sigmoid", 20, zero_terminal_snr=True, sigmoid_range=4.0)
    with pytest.raises(ValueError):
        s.abar[0] = 0.5
    d = s.to_dict()
    assert d == {"name": "sigmoid", "T": 20, "params": {"beta_start": 1e-4, "beta_end": 0.02, "sigmoid_range": 4.0},
                 "zero_terminal_snr": True}
    again = make_schedule(d["name"], d["T"], zero_terminal_snr=d["zero_terminal_snr"], **d["params"])
    assert np.array_equal(again.abar, s.abar)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("quadratic", 10), {}, "'name'"),
        (("linear", 1), {}, "'T'"),
        (("linear", 10.0), {}, "'T'"),
        (("linear", 10), {"s": 0.1}, "unknown parameter"),
        (("linear", 10), {"beta_start": 0.03, "beta_end": 0.02}, "beta_start"),
        (("linear", 10), {"beta_end": 1.0}, "beta_end"),
        (("linear", 10), {"beta_start": float("nan")}, "beta_start"),
        (("cosine", 10), {"max_beta": 1.0}, "max_beta"),
        (("cosine", 10), {"s": -0.1}, "cosine"),
        (("sigmoid", 10), {"sigmoid_range": 0.0}, "sigmoid_range"),
        (("linear", 5000), {"beta_start": 0.5, "beta_end": 0.9}, "strictly decreasing"),  # abar underflows to 0
    ],
)
def test_bad_schedule_arguments(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_schedule(*args, **kwargs)
