"""Spec section 6 on torch tensors: choosing N inference timesteps out of T, and the previous-timestep rule.

Exact integer arithmetic, as in vdm_ref.timesteps, so every backend gets the same sequence.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

SPACINGS = ("leading", "trailing", "linspace")


def _arange_desc(N: int) -> Tensor:
    return torch.arange(N - 1, -1, -1, dtype=torch.int64)


def timesteps_leading(T: int, N: int, offset: int = 0) -> Tensor:
    """Spec 6.1: t_i = (N - 1 - i) * floor(T / N) + offset, i = 0..N-1."""
    return _arange_desc(N) * (T // N) + offset


def round_half_even(a: Tensor, b: int) -> Tensor:
    """Spec 6.2 / 6.3: a / b rounded to the nearest integer, ties to the even one (integers a >= 0,
    b >= 1), exactly: a float quotient would move some ties (spec 6.5)."""
    q = torch.div(a, b, rounding_mode="floor")
    r = a - q * b
    return q + ((2 * r > b) | ((2 * r == b) & (q % 2 == 1))).to(torch.int64)


def timesteps_trailing(T: int, N: int) -> Tensor:
    """Spec 6.2: t_i = round_half_even((N - i) * T / N) - 1, i = 0..N-1."""
    i = torch.arange(N, dtype=torch.int64)
    return round_half_even((N - i) * T, N) - 1


def timesteps_linspace(T: int, N: int) -> Tensor:
    """Spec 6.3: t_i = round_half_even((T - 1) * (N - 1 - i) / (N - 1)); N = 1 gives [T - 1] (6.5)."""
    if N == 1:
        return torch.tensor([T - 1], dtype=torch.int64)
    return round_half_even((T - 1) * _arange_desc(N), N - 1)


def inference_timesteps(
    T: int, N: int, spacing: str = "trailing", offset: int = 0, *, device: torch.device | str | None = None
) -> Tensor:
    """Spec 6: the N timesteps a sampler visits (int64, strictly decreasing, in [0, T-1])."""
    if spacing not in SPACINGS:
        raise ValueError(f"argument 'spacing': unknown spacing {spacing!r}; choose one of {SPACINGS}")
    for name, value in (("T", T), ("N", N), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"argument '{name}' must be an integer, got {value!r}")
    T, N, offset = int(T), int(N), int(offset)
    if T < 1:
        raise ValueError(f"argument 'T' must be >= 1, got {T}")
    if not 1 <= N <= T:
        raise ValueError(f"argument 'N' must satisfy 1 <= N <= T = {T}, got N={N}")
    if spacing == "leading":
        top = (N - 1) * (T // N)
        if not 0 <= offset <= T - 1 - top:
            raise ValueError(
                f"argument 'offset' must lie in [0, {T - 1 - top}] for leading spacing with T={T}, N={N}, got {offset}"
            )
        steps = timesteps_leading(T, N, offset)
    elif offset != 0:
        raise ValueError(f"argument 'offset' applies to leading spacing only; got {offset} with {spacing!r}")
    else:
        steps = timesteps_trailing(T, N) if spacing == "trailing" else timesteps_linspace(T, N)
    return steps if device is None else steps.to(device)


def previous_timestep(timesteps: Tensor | Sequence[int], i: int) -> int:
    """Spec 6.4: the step from timesteps[i] goes to timesteps[i + 1], and the last one to -1."""
    return int(timesteps[i + 1]) if i + 1 < len(timesteps) else -1


def step_pairs(timesteps: Tensor | Sequence[int]) -> list[tuple[int, int]]:
    """Spec 6.4: the (t, s) pairs a sampler steps through, s = previous_timestep(t). One host read."""
    steps = timesteps.tolist() if isinstance(timesteps, Tensor) else [int(t) for t in timesteps]
    return [(int(t), previous_timestep(steps, i)) for i, t in enumerate(steps)]
