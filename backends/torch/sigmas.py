"""Spec section 15 on torch tensors: noise-level schedules for sampling, as in vdm_ref.sigmas.

Levels are computed in float64 (spec 1.6: tables are never computed in low precision) and cast
by the caller where they are used.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

# Defaults of spec 15.3 and 15.5, restated here: the backend is checked against vdm_ref, never built on it.
BASE_SEQ_LEN, MAX_SEQ_LEN, BASE_SHIFT, MAX_SHIFT = 256, 4096, 0.5, 1.15
KARRAS_RHO, SIGMA_MIN, SIGMA_MAX = 7.0, 0.002, 80.0
F64 = torch.float64


def sequence_length(frames: int, height: int, width: int, patch: tuple[int, int, int] = (1, 2, 2)) -> int:
    """Spec 15.3: (frames // p_f) (height // p_h) (width // p_w) tokens."""
    dims = (frames, height, width)
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in (*dims, *patch)):
        raise ValueError(f"arguments 'frames', 'height', 'width', 'patch' must be integers >= 1, got {dims}, {patch}")
    return math.prod(d // p for d, p in zip(dims, patch, strict=True))


def dynamic_shift_mu(
    seq_len: float, base_seq_len: float = BASE_SEQ_LEN, max_seq_len: float = MAX_SEQ_LEN,
    base_shift: float = BASE_SHIFT, max_shift: float = MAX_SHIFT,
) -> float:
    """Spec 15.3: mu on the line through (base_seq_len, base_shift) and (max_seq_len, max_shift)."""
    if max_seq_len == base_seq_len:
        raise ValueError("arguments 'base_seq_len' and 'max_seq_len' must differ")
    return float(base_shift + (seq_len - base_seq_len) * ((max_shift - base_shift) / (max_seq_len - base_seq_len)))


def _as64(name: str, x: object) -> Tensor:
    t = torch.as_tensor(x, dtype=F64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"argument '{name}' contains NaN or Inf; the spec requires finite values")
    return t


def _count(N: object) -> int:
    if isinstance(N, bool) or not isinstance(N, int) or N < 1:
        raise ValueError(f"argument 'N' must be an integer >= 1, got {N!r}")
    return N


def _unit(name: str, s: Tensor) -> Tensor:
    if bool(((s < 0) | (s > 1)).any()):
        raise ValueError(f"argument '{name}': flow noise levels must lie in [0, 1]")
    return s


def uniform_levels(N: int, high: float, low: float) -> Tensor:
    """Spec 15.1: l_i = high + (low - high) * i / (N - 1); N = 1 gives [high]."""
    N = _count(N)
    if not high > low:
        raise ValueError(f"arguments 'high' > 'low' required, got high={high}, low={low}")
    if N == 1:
        return torch.tensor([float(high)], dtype=F64)
    return high + (low - high) * (torch.arange(N, dtype=F64) / (N - 1))


def flow_shift(s: object, shift: float) -> Tensor:
    """Spec 15.2: s' = shift s / (1 + (shift - 1) s), shift > 0."""
    if not (math.isfinite(shift) and shift > 0):
        raise ValueError(f"argument 'shift' must be a finite number > 0, got {shift!r}")
    s = _unit("s", _as64("s", s))
    return shift * s / (1.0 + (shift - 1.0) * s)


def _odds(s: Tensor, power: float) -> Tensor:
    safe = torch.where(s > 0, s, torch.ones_like(s))
    return torch.where(s > 0, (1.0 / safe - 1.0) ** power, torch.full_like(s, math.inf))


def exponential_time_shift(s: object, mu: float, power: float = 1.0) -> Tensor:
    """Spec 15.3: s' = e^mu / (e^mu + (1/s - 1)^power); 0 -> 0."""
    s = _unit("s", _as64("s", s))
    return torch.where(s > 0, math.exp(mu) / (math.exp(mu) + _odds(s, power)), torch.zeros_like(s))


def linear_time_shift(s: object, mu: float, power: float = 1.0) -> Tensor:
    """Spec 15.3: s' = mu / (mu + (1/s - 1)^power), mu > 0."""
    if not mu > 0:
        raise ValueError(f"argument 'mu' must be > 0 for the linear time shift, got {mu}")
    s = _unit("s", _as64("s", s))
    return torch.where(s > 0, mu / (mu + _odds(s, power)), torch.zeros_like(s))


TIME_SHIFTS: dict[str, Callable[..., Tensor]] = {"exponential": exponential_time_shift, "linear": linear_time_shift}


def stretch_to_terminal(s: object, terminal: float) -> Tensor:
    """Spec 15.4: s' = 1 - (1 - s) (1 - terminal) / (1 - s_last)."""
    s = _as64("s", s)
    if not 0.0 <= terminal < 1.0:
        raise ValueError(f"argument 'terminal' must lie in [0, 1), got {terminal}")
    if not float(s[-1]) < 1.0:
        raise ValueError("argument 's': the last level must be < 1 to stretch it to a terminal value")
    return 1.0 - (1.0 - s) * ((1.0 - terminal) / (1.0 - s[-1]))


def karras_sigmas(
    N: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = KARRAS_RHO
) -> Tensor:
    """Spec 15.5: (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho; N = 1: [sigma_max]."""
    N = _count(N)
    if not (0 < sigma_min < sigma_max and rho > 0):
        raise ValueError(f"arguments need 0 < sigma_min < sigma_max and rho > 0, got {sigma_min}, {sigma_max}, {rho}")
    ramp = torch.zeros(1, dtype=F64) if N == 1 else torch.arange(N, dtype=F64) / (N - 1)
    top, bottom = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return (top + ramp * (bottom - top)) ** rho


def final_zero(levels: Tensor, sigma_min: float) -> float:
    """Spec 15.6 ``final = "zero"``."""
    return 0.0


def final_sigma_min(levels: Tensor, sigma_min: float) -> float:
    """Spec 15.6 ``final = "sigma_min"``."""
    return float(sigma_min)


FINAL_LEVELS: dict[str, Callable[[Tensor, float], float]] = {"zero": final_zero, "sigma_min": final_sigma_min}


def with_final_level(levels: object, final: str = "zero", sigma_min: float | None = None) -> Tensor:
    """Spec 15.6: the N levels followed by the final one (N + 1 values)."""
    levels = _as64("levels", levels)
    if final not in FINAL_LEVELS:
        raise ValueError(f"argument 'final': unknown final level {final!r}; choose one of {tuple(FINAL_LEVELS)}")
    low = float(levels[-1]) if sigma_min is None else float(sigma_min)
    last = FINAL_LEVELS[final](levels, low)
    if not 0.0 <= last <= float(levels[-1]):
        raise ValueError(f"argument 'sigma_min': the final level {last} must lie in [0, {float(levels[-1])}]")
    return torch.cat([levels, torch.tensor([last], dtype=F64, device=levels.device)])  # levels may be on a GPU


def flow_levels(
    N: int,
    *,
    shift: float = 1.0,
    mu: float | None = None,
    time_shift: str = "exponential",
    terminal: float | None = None,
    s_min: float = 1e-3,
    s_max: float = 1.0,
    final: str = "zero",
) -> Tensor:
    """Spec 15.7: uniform levels, ONE shift (static, or dynamic with ``mu``), the terminal stretch, the final level."""
    if mu is not None and shift != 1.0:
        raise ValueError("arguments 'shift' and 'mu' are two shifts: pass one (spec 15.7 applies the shift once)")
    if time_shift not in TIME_SHIFTS:
        raise ValueError(f"argument 'time_shift': unknown {time_shift!r}; choose one of {tuple(TIME_SHIFTS)}")
    s = uniform_levels(N, s_max, s_min)
    s = flow_shift(s, shift) if mu is None else TIME_SHIFTS[time_shift](s, mu)
    if terminal is not None:
        s = stretch_to_terminal(s, terminal)
    return with_final_level(s, final)


def vp_sigmas(abar: object) -> Tensor:
    """Spec 15.8: sqrt((1 - abar) / abar) per entry of a vp abar table (inf where abar = 0)."""
    a = _as64("abar", abar)
    if bool(((a < 0) | (a > 1)).any()):
        raise ValueError("argument 'abar' must lie in [0, 1]")
    return torch.sqrt((1.0 - a) / a)


__all__ = [
    "BASE_SEQ_LEN", "MAX_SEQ_LEN", "BASE_SHIFT", "MAX_SHIFT", "KARRAS_RHO", "TIME_SHIFTS", "FINAL_LEVELS",
    "sequence_length", "dynamic_shift_mu", "uniform_levels", "flow_shift", "exponential_time_shift",
    "linear_time_shift", "stretch_to_terminal", "karras_sigmas", "with_final_level", "flow_levels", "vp_sigmas",
]
