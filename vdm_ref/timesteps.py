"""Spec section 6: choosing N inference timesteps out of T, and the previous-timestep rule.

All formulas use exact integer arithmetic so that every backend gets the same sequence.
"""

from __future__ import annotations

import numpy as np

SPACINGS = ("leading", "trailing", "linspace")


def timesteps_leading(T: int, N: int, offset: int = 0) -> np.ndarray:
    """Spec 6.1: t_i = (N - 1 - i) * floor(T / N) + offset, i = 0..N-1."""
    return (np.arange(N - 1, -1, -1, dtype=np.int64) * (T // N)) + offset


def round_half_even(a: np.ndarray, b: int) -> np.ndarray:
    """Spec 6.2 / 6.3: a / b rounded to the nearest integer, ties to the even one, for integers
    a >= 0, b >= 1. Exact: the published spacings round with NumPy's ``round`` (half to even),
    and evaluating the quotient in floating point first would move some ties (spec 6.5)."""
    q, r = np.divmod(np.asarray(a, dtype=np.int64), b)
    return q + ((2 * r > b) | ((2 * r == b) & (q % 2 == 1)))


def timesteps_trailing(T: int, N: int) -> np.ndarray:
    """Spec 6.2: t_i = round_half_even((N - i) * T / N) - 1, i = 0..N-1 (always starts at T - 1)."""
    i = np.arange(N, dtype=np.int64)
    return round_half_even((N - i) * T, N) - 1


def timesteps_linspace(T: int, N: int) -> np.ndarray:
    """Spec 6.3: t_i = round_half_even((T - 1) * (N - 1 - i) / (N - 1)); N = 1 gives [T - 1] (6.5)."""
    if N == 1:
        return np.array([T - 1], dtype=np.int64)
    k = np.arange(N - 1, -1, -1, dtype=np.int64)
    return round_half_even((T - 1) * k, N - 1)


def inference_timesteps(T: int, N: int, spacing: str = "trailing", offset: int = 0) -> np.ndarray:
    """Spec 6: the N timesteps a sampler visits, strictly decreasing, all in [0, T-1].

    ``offset`` shifts leading spacing (6.1) only; the other spacings require offset = 0.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"argument 'spacing': unknown spacing {spacing!r}; choose one of {SPACINGS}")
    for name, value in (("T", T), ("N", N), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"argument '{name}' must be an integer, got {value!r}")
    if T < 1:
        raise ValueError(f"argument 'T' must be >= 1, got {T}")
    if not 1 <= N <= T:
        raise ValueError(f"argument 'N' must satisfy 1 <= N <= T = {T}, got N={N}")
    if spacing == "leading":
        top = (N - 1) * (T // N)
        if not 0 <= offset <= T - 1 - top:
            raise ValueError(
                f"argument 'offset' must lie in [0, {T - 1 - top}] for leading spacing with "
                f"T={T}, N={N}, got {offset}"
            )
        return timesteps_leading(T, N, offset)
    if offset != 0:
        raise ValueError(f"argument 'offset' applies to leading spacing only; got {offset} with {spacing!r}")
    return timesteps_trailing(T, N) if spacing == "trailing" else timesteps_linspace(T, N)


def previous_timestep(timesteps: np.ndarray, i: int) -> int:
    """Spec 6.4: the step from timesteps[i] goes to timesteps[i + 1], and the last one to -1.

    Never ``t - T // N``: that is wrong for linspace spacing and for trailing spacing when
    N does not divide T.
    """
    return int(timesteps[i + 1]) if i + 1 < len(timesteps) else -1


def step_pairs(timesteps: np.ndarray) -> list[tuple[int, int]]:
    """Spec 6.4: the (t, s) pairs a sampler steps through, s = previous_timestep(t)."""
    return [(int(t), previous_timestep(timesteps, i)) for i, t in enumerate(timesteps)]
