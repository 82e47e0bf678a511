"""Spec section 6: inference timesteps and the previous-timestep rule, checked against exact rationals."""

from __future__ import annotations

from fractions import Fraction
from math import floor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vdm_ref
from vdm_ref import inference_timesteps, previous_timestep, step_pairs


@st.composite
def t_and_n(draw: st.DrawFn) -> tuple[int, int]:
    T = draw(st.integers(1, 2000))
    # Bias towards the edge cases N = 1 and N = T, which the spec calls out.
    N = draw(st.one_of(st.just(1), st.just(T), st.integers(1, T)))
    return T, N


def _round_half_even(q: Fraction) -> int:
    """Nearest integer, ties to even, written from the definition (not Python's round)."""
    lo = floor(q)
    if q - lo != Fraction(1, 2):
        return floor(q + Fraction(1, 2))
    return lo if lo % 2 == 0 else lo + 1


@settings(max_examples=300, deadline=None)
@given(t_and_n(), st.sampled_from(vdm_ref.SPACINGS))
def test_sequence_shape_order_and_range(tn: tuple[int, int], spacing: str) -> None:
    T, N = tn
    ts = inference_timesteps(T, N, spacing)
    assert ts.dtype == np.int64 and ts.shape == (N,)
    assert np.all(np.diff(ts) < 0)
    assert ts[0] <= T - 1 and ts[-1] >= 0
    pairs = step_pairs(ts)
    assert [t for t, _ in pairs] == ts.tolist()
    assert [s for _, s in pairs] == ts[1:].tolist() + [-1]
    assert all(previous_timestep(ts, i) == s for i, (_, s) in enumerate(pairs))
    if N == T:  # every spacing then visits every timestep
        assert ts.tolist() == list(range(T - 1, -1, -1))


@settings(max_examples=200, deadline=None)
@given(t_and_n())
def test_trailing_closed_form(tn: tuple[int, int]) -> None:
    T, N = tn
    ts = inference_timesteps(T, N, "trailing")
    assert ts[0] == T - 1
    assert ts.tolist() == [_round_half_even(T - Fraction(i * T, N)) - 1 for i in range(N)]


@settings(max_examples=200, deadline=None)
@given(t_and_n())
def test_linspace_closed_form(tn: tuple[int, int]) -> None:
    T, N = tn
    ts = inference_timesteps(T, N, "linspace")
    assert ts[0] == T - 1
    if N == 1:
        assert ts.tolist() == [T - 1]
        return
    assert ts[-1] == 0
    assert ts.tolist() == [_round_half_even(Fraction((T - 1) * (N - 1 - i), N - 1)) for i in range(N)]


@settings(max_examples=200, deadline=None)
@given(t_and_n(), st.data())
def test_leading_gaps_and_offset(tn: tuple[int, int], data: st.DataObject) -> None:
    T, N = tn
    top = (N - 1) * (T // N)
    offset = data.draw(st.integers(0, T - 1 - top))
    ts = inference_timesteps(T, N, "leading", offset)
    assert np.all(np.diff(ts) == -(T // N))
    assert ts[-1] == offset and ts[0] == top + offset <= T - 1
    with pytest.raises(ValueError, match="'offset'"):
        inference_timesteps(T, N, "leading", T - top)


def test_ties_round_to_even() -> None:
    """Spec 6.5: exact ties go to the even integer, whatever float64 would make of them."""
    # T - 1 = 9, N - 1 = 2: 9 * 1 / 2 = 4.5 rounds to 4; 999 / 6 = 166.5 -> 166, 3 * 999 / 6 = 499.5 -> 500.
    assert inference_timesteps(10, 3, "linspace").tolist() == [9, 4, 0]
    assert inference_timesteps(1000, 7, "linspace").tolist() == [999, 832, 666, 500, 333, 166, 0]
    # 1000 * 45 / 48 = 937.5 -> 938 - 1; float64 arange(1000, 0, -1000/48) holds it as 937.4999...
    assert inference_timesteps(1000, 48, "trailing")[3] == 937
    # 5 * 999 / 10 = 499.5 -> 500 here, but 27 * 999 / 54 = 499.5 -> 500 too: the rule never looks at N.
    assert inference_timesteps(1000, 11, "linspace")[5] == inference_timesteps(1000, 55, "linspace")[27] == 500


def test_published_table_2_examples() -> None:
    """Lin et al. 2023, Table 2, T = 1000, 10 steps (printed 1-based; here minus one)."""
    assert inference_timesteps(1000, 10, "trailing").tolist() == list(range(999, 0, -100))
    assert inference_timesteps(1000, 10, "linspace").tolist() == list(range(999, -1, -111))
    assert inference_timesteps(1000, 10, "leading").tolist() == list(range(900, -1, -100))


def test_exactly_n_entries_where_a_float_step_gives_n_plus_one() -> None:
    """Spec 6.5: at T = 1000, N = 61 a float64 arange(T, 0, -T/N) has 62 entries, the last -1."""
    assert len(np.arange(1000, 0, -1000 / 61)) == 62  # the float behaviour the spec rules out
    ts = inference_timesteps(1000, 61, "trailing")
    assert len(ts) == 61 and ts[-1] == 15  # round(1000 / 61 = 16.39) - 1


def test_t_minus_stride_is_wrong_for_linspace_and_trailing() -> None:
    """Spec 6.4: the previous timestep is the next entry, never t - T // N."""
    def naive(ts: np.ndarray, T: int, N: int) -> list[int]:
        return [int(t) - T // N for t in ts]

    def rule(ts: np.ndarray) -> list[int]:
        return [s for _, s in step_pairs(ts)]

    lin = inference_timesteps(10, 4, "linspace")
    assert lin.tolist() == [9, 6, 3, 0]
    assert rule(lin)[0] == 6 and naive(lin, 10, 4)[0] == 7
    trail = inference_timesteps(1000, 13, "trailing")
    assert trail[:3].tolist() == [999, 922, 845]
    assert rule(trail)[1] == 845 and naive(trail, 1000, 13)[1] == 846
    assert rule(trail)[-1] == -1 and naive(trail, 1000, 13)[-1] == 0
    lin13 = inference_timesteps(1000, 13, "linspace")
    assert rule(lin13)[0] == 916 and naive(lin13, 1000, 13)[0] == 923
    # For leading spacing the naive rule only goes wrong after the last step.
    lead = inference_timesteps(1000, 13, "leading")
    assert rule(lead)[:-1] == naive(lead, 1000, 13)[:-1]
    assert rule(lead)[-1] == -1 != naive(lead, 1000, 13)[-1]


def test_single_step_goes_straight_to_minus_one() -> None:
    for spacing in vdm_ref.SPACINGS:
        ts = inference_timesteps(1000, 1, spacing)
        assert step_pairs(ts) == [(int(ts[0]), -1)]
    assert inference_timesteps(1000, 1, "trailing").tolist() == [999]
    assert inference_timesteps(1000, 1, "leading").tolist() == [0]
    assert inference_timesteps(1000, 1, "leading", 999).tolist() == [999]


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        ((10, 11, "trailing"), ValueError, "'N'"),
        ((10, 0, "linspace"), ValueError, "'N'"),
        ((10, 5, "uniform"), ValueError, "'spacing'"),
        ((0, 1, "trailing"), ValueError, "'T'"),
        ((10.0, 5, "trailing"), TypeError, "'T'"),
        ((10, 5, "trailing", 1), ValueError, "'offset'"),
        ((10, 5, "linspace", 1), ValueError, "'offset'"),
        ((10, 5, "leading", -1), ValueError, "'offset'"),
        ((10, 5, "leading", 2), ValueError, "'offset'"),  # 4 * 2 + 2 = 10 > T - 1
    ],
)
def test_bad_arguments(args: tuple, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        inference_timesteps(*args)


def test_torch_mirror_equals_reference_for_every_n() -> None:
    """backends/torch/timesteps.py gives the same integers for every N <= T = 1000 (the two rounded spacings;
    leading is covered by tests/test_torch_backend.py)."""
    from vdm.backends.torch import timesteps as torch_timesteps

    for spacing in ("trailing", "linspace"):
        for N in range(1, 1001):
            want = inference_timesteps(1000, N, spacing)
            assert torch_timesteps.inference_timesteps(1000, N, spacing).tolist() == want.tolist(), (spacing, N)


def test_every_t_and_n_up_to_64_against_fractions() -> None:
    """Spec 6.2 / 6.3 for every T <= 64 and every N <= T, from exact rationals."""
    for T in range(1, 65):
        for N in range(1, T + 1):
            trail = [_round_half_even(Fraction((N - i) * T, N)) - 1 for i in range(N)]
            assert inference_timesteps(T, N, "trailing").tolist() == trail, (T, N)
            lin = [T - 1] if N == 1 else [_round_half_even(Fraction((T - 1) * (N - 1 - i), N - 1)) for i in range(N)]
            assert inference_timesteps(T, N, "linspace").tolist() == lin, (T, N)
