"""Spec section 15: noise-level schedules for sampling, checked against closed forms and exact rationals."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from vdm.backends.torch import sigmas as TS

from vdm_ref import sigmas as S


def _shift_exact(s: Fraction, k: Fraction) -> Fraction:
    return k * s / (1 + (k - 1) * s)


@pytest.mark.parametrize("k", [Fraction(1), Fraction(3), Fraction(1, 2), Fraction(25, 4)])
def test_flow_shift_against_rationals(k: Fraction) -> None:
    grid = [Fraction(i, 16) for i in range(17)]
    got = S.flow_shift([float(s) for s in grid], float(k))
    want = [float(_shift_exact(s, k)) for s in grid]
    np.testing.assert_allclose(got, want, rtol=4e-16, atol=0)
    assert got[0] == 0.0 and got[-1] == 1.0


def test_shifts_compose_by_multiplying() -> None:
    """Spec 15.2: shift_a(shift_b(s)) = shift_ab(s), so applying 3 twice is the shift 9."""
    s = np.linspace(0, 1, 33)
    np.testing.assert_allclose(S.flow_shift(S.flow_shift(s, 3.0), 3.0), S.flow_shift(s, 9.0), rtol=1e-15, atol=1e-16)
    np.testing.assert_array_equal(S.flow_shift(s, 1.0), s)


def test_flow_levels_shift_exactly_once() -> None:
    """Spec 15.7: uniform in [1/T, 1], one shift, final 0. A second shift (the kit's mutant) is caught."""
    N, k = 5, 3
    uniform = [Fraction(1) + (Fraction(1, 1000) - 1) * Fraction(i, N - 1) for i in range(N)]
    want = [float(_shift_exact(u, Fraction(k))) for u in uniform] + [0.0]
    got = S.flow_levels(N, shift=k)
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)
    twice = [float(_shift_exact(u, Fraction(k * k))) for u in uniform] + [0.0]
    assert abs(got[-2] - twice[-2]) > 1e-3  # 0.00299 once against 0.00893 twice
    assert got[-2] == pytest.approx(3 * 0.001 / (1 + 2 * 0.001), rel=1e-15)


def test_time_shifts_closed_forms() -> None:
    # exponential with power 1 is the flow shift by e^mu: mu = ln 3 at s = 1/2 gives 3/4.
    assert S.exponential_time_shift(0.5, math.log(3.0)) == pytest.approx(0.75, rel=1e-15)
    s = np.linspace(0, 1, 17)
    np.testing.assert_allclose(S.exponential_time_shift(s, 0.7), S.flow_shift(s, math.exp(0.7)), rtol=1e-15)
    np.testing.assert_allclose(S.linear_time_shift(s, 2.5), S.flow_shift(s, 2.5), rtol=1e-15)
    # power 2, mu = 0 at s = 1/3: 1 / (1 + 2^2) = 1/5; linear mu = 2 at s = 1/3, power 1: 2 / (2 + 2) = 1/2.
    assert S.exponential_time_shift(1 / 3, 0.0, 2.0) == pytest.approx(0.2, rel=1e-15)
    assert S.linear_time_shift(1 / 3, 2.0) == pytest.approx(0.5, rel=1e-15)
    assert S.exponential_time_shift(0.0, 1.0) == 0.0 and S.exponential_time_shift(1.0, 1.0) == 1.0


def test_dynamic_mu_line_and_sequence_length() -> None:
    assert S.dynamic_shift_mu(256) == pytest.approx(0.5, abs=1e-15)
    assert S.dynamic_shift_mu(4096) == pytest.approx(1.15, abs=1e-15)
    assert S.dynamic_shift_mu((256 + 4096) / 2) == pytest.approx(0.825, abs=1e-15)
    assert S.dynamic_shift_mu(8192) == pytest.approx(1.15 + 4096 * 0.65 / 3840, abs=1e-14)  # extended beyond
    assert S.sequence_length(21, 60, 104) == 21 * 30 * 52
    assert S.sequence_length(13, 64, 64, (1, 4, 4)) == 13 * 16 * 16
    mu = S.dynamic_shift_mu(S.sequence_length(1, 128, 128))  # 4096 tokens
    levels = S.flow_levels(10, mu=mu)
    np.testing.assert_allclose(levels[:-1], S.flow_shift(np.linspace(1, 1e-3, 10), math.exp(1.15)), rtol=1e-14)


def test_terminal_stretch() -> None:
    s = np.array([1.0, 0.8, 0.5, 0.2])
    got = S.stretch_to_terminal(s, 0.1)
    want = [float(1 - (1 - Fraction(x)) * Fraction(9, 10) / (1 - Fraction(0.2))) for x in s]
    np.testing.assert_allclose(got, want, rtol=1e-15)
    assert got[0] == 1.0 and got[-1] == pytest.approx(0.1, rel=1e-15)
    levels = S.flow_levels(8, shift=2.0, terminal=0.05)
    assert levels[-2] == pytest.approx(0.05, rel=1e-14) and levels[0] == 1.0 and levels[-1] == 0.0


def test_karras_sigmas() -> None:
    sig = S.karras_sigmas(10)
    assert sig[0] == pytest.approx(80.0, rel=1e-14) and sig[-1] == pytest.approx(0.002, rel=1e-12)
    root = sig ** (1 / 7)
    np.testing.assert_allclose(np.diff(root, 2), 0.0, atol=1e-13)  # linear in sigma^(1/rho)
    i = 4
    want = (80 ** (1 / 7) + i / 9 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert sig[i] == pytest.approx(want, rel=1e-14)
    assert S.karras_sigmas(1).tolist() == [80.0]
    assert np.all(np.diff(S.karras_sigmas(50, 0.03, 14.6, 3.0)) < 0)


def test_uniform_levels() -> None:
    assert S.uniform_levels(1, 1.0, 0.001).tolist() == [1.0]
    np.testing.assert_allclose(S.uniform_levels(5, 1.0, 0.0), [1, 0.75, 0.5, 0.25, 0], rtol=0, atol=0)


@pytest.mark.parametrize("final", ["zero", "sigma_min"])
def test_final_level_is_always_there(final: str) -> None:
    """Spec 15.6: N + 1 levels, the last exactly 0 or sigma_min (the kit's 'final level mishandled' mutants)."""
    sig = S.karras_sigmas(6)
    out = S.with_final_level(sig, final)
    assert len(out) == 7
    np.testing.assert_array_equal(out[:-1], sig)
    assert out[-1] == (0.0 if final == "zero" else sig[-1])
    assert S.with_final_level(sig, "sigma_min", sigma_min=0.001)[-1] == 0.001
    assert S.flow_levels(4)[-1] == 0.0 and len(S.flow_levels(4)) == 5


def test_vp_sigmas() -> None:
    abar = np.array([0.999, 0.5, 0.01, 0.0])
    got = S.vp_sigmas(abar)
    np.testing.assert_allclose(got[:3], [math.sqrt(0.001 / 0.999), 1.0, math.sqrt(99.0)], rtol=1e-15)
    assert got[3] == math.inf


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: S.flow_shift(0.5, 0.0), "'shift'"),
        (lambda: S.flow_shift(1.5, 2.0), "'s'"),
        (lambda: S.flow_levels(4, shift=3.0, mu=1.0), "'shift' and 'mu'"),
        (lambda: S.flow_levels(4, time_shift="cubic", mu=1.0), "'time_shift'"),
        (lambda: S.uniform_levels(0, 1.0, 0.0), "'N'"),
        (lambda: S.karras_sigmas(5, 1.0, 0.5), "'sigma_max'"),
        (lambda: S.with_final_level([2.0, 1.0], "one"), "'final'"),
        (lambda: S.with_final_level([2.0, 1.0], "sigma_min", sigma_min=1.5), "'sigma_min'"),
        (lambda: S.stretch_to_terminal([1.0, 0.5], 1.0), "'terminal'"),
        (lambda: S.linear_time_shift(0.5, -1.0), "'mu'"),
    ],
)
def test_bad_arguments(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_torch_mirror_float64() -> None:
    s = np.linspace(0, 1, 41)
    pairs = [
        (S.flow_shift(s, 3.0), TS.flow_shift(s, 3.0)),
        (S.exponential_time_shift(s, 0.9, 1.5), TS.exponential_time_shift(s, 0.9, 1.5)),
        (S.linear_time_shift(s, 1.7), TS.linear_time_shift(s, 1.7)),
        (S.stretch_to_terminal(s[::-1][:-1], 0.1), TS.stretch_to_terminal(s[::-1][:-1].copy(), 0.1)),
        (S.karras_sigmas(37, 0.03, 14.6), TS.karras_sigmas(37, 0.03, 14.6)),
        (S.uniform_levels(9, 2.0, 0.5), TS.uniform_levels(9, 2.0, 0.5)),
        (S.flow_levels(12, shift=5.0, terminal=0.02), TS.flow_levels(12, shift=5.0, terminal=0.02)),
        (S.flow_levels(12, mu=0.8, time_shift="linear"), TS.flow_levels(12, mu=0.8, time_shift="linear")),
        (S.with_final_level([3.0, 2.0], "sigma_min"), TS.with_final_level([3.0, 2.0], "sigma_min")),
        (S.vp_sigmas([0.9, 0.2]), TS.vp_sigmas([0.9, 0.2])),
    ]
    for want, got in pairs:
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-14, atol=1e-300)
    assert TS.dynamic_shift_mu(1000) == S.dynamic_shift_mu(1000)
    assert TS.sequence_length(21, 60, 104) == S.sequence_length(21, 60, 104)


def _check_flow_levels(levels_fn) -> None:
    """Clause 15.7 from rationals: N + 1 levels, the shift once, the final level exactly 0."""
    for N, k in ((2, 3), (6, 5), (11, Fraction(5, 2))):
        got = levels_fn(N, float(k))
        uniform = [1 + (Fraction(1, 1000) - 1) * Fraction(i, N - 1) for i in range(N)]
        want = [float(_shift_exact(u, Fraction(k))) for u in uniform] + [0.0]
        assert len(got) == N + 1 and got[-1] == 0.0
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=0)


def test_clause_15_7_catches_the_double_shift_and_final_level_mutants() -> None:
    """Issue 9, item 7: the flow shift applied twice and the final level mishandled each fail 15.7."""
    _check_flow_levels(lambda N, k: S.flow_levels(N, shift=k))

    def shifted_twice(N: int, k: float) -> np.ndarray:
        return S.with_final_level(S.flow_shift(S.flow_shift(S.uniform_levels(N, 1.0, 1e-3), k), k))

    def final_dropped(N: int, k: float) -> np.ndarray:
        return S.flow_shift(S.uniform_levels(N, 1.0, 1e-3), k)

    def final_at_sigma_min(N: int, k: float) -> np.ndarray:
        return S.with_final_level(S.flow_shift(S.uniform_levels(N, 1.0, 1e-3), k), "sigma_min")

    for mutant in (shifted_twice, final_dropped, final_at_sigma_min):
        with pytest.raises(AssertionError):
            _check_flow_levels(mutant)
