"""Spec section 15: noise-level schedules for sampling (flow shift, dynamic shift, terminal stretch,
Karras and uniform levels, the final level).

A sampling schedule is a strictly decreasing sequence of N noise levels followed by one final
level. Each transformation is one pure float64 function; :func:`flow_levels` composes them in the
order of 15.7, so the flow shift is applied exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from . import _checks
from .processes import SIGMA_MAX, SIGMA_MIN

# Resolution-dependent shift defaults (15.3): mu runs linearly from BASE_SHIFT at BASE_SEQ_LEN
# tokens to MAX_SHIFT at MAX_SEQ_LEN tokens, the values the open flow pipelines ship with.
BASE_SEQ_LEN = 256
MAX_SEQ_LEN = 4096
BASE_SHIFT = 0.5
MAX_SHIFT = 1.15
KARRAS_RHO = 7.0  # Karras et al. 2022, eq. 5


def _levels(name: str, values: object) -> np.ndarray:
    arr = _checks.as_float64(name, values)
    if arr.ndim != 1:
        raise ValueError(f"argument '{name}' must be a 1-D sequence of noise levels, got shape {arr.shape}")
    return arr


def _count(N: object) -> int:
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
        raise ValueError(f"argument 'N' must be an integer >= 1, got {N!r}")
    return int(N)


def _unit(name: str, s: np.ndarray) -> np.ndarray:
    if np.any((s < 0) | (s > 1)):
        raise ValueError(f"argument '{name}': flow noise levels must lie in [0, 1]")
    return s


def _positive(name: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"argument '{name}' must be a finite number > 0, got {value!r}")
    return float(value)


# --- 15.1 Uniform levels --------------------------------------------------------------------------


def uniform_levels(N: int, high: float, low: float) -> np.ndarray:
    """Spec 15.1: l_i = high + (low - high) * i / (N - 1), i = 0..N-1; N = 1 gives [high]."""
    N = _count(N)
    if not high > low:
        raise ValueError(f"arguments 'high' > 'low' required, got high={high}, low={low}")
    if N == 1:
        return np.array([float(high)])
    i = np.arange(N, dtype=np.float64)
    return high + (low - high) * (i / (N - 1))


# --- 15.2 The flow time shift ----------------------------------------------------------------------


def flow_shift(s: object, shift: float) -> np.ndarray:
    """Spec 15.2: s' = shift s / (1 + (shift - 1) s), shift > 0 (shift = 1: identity)."""
    shift = _positive("shift", shift)
    s = _unit("s", _checks.as_float64("s", s))
    return shift * s / (1.0 + (shift - 1.0) * s)


# --- 15.3 The resolution-dependent shift -----------------------------------------------------------


def sequence_length(frames: int, height: int, width: int, patch: tuple[int, int, int] = (1, 2, 2)) -> int:
    """Spec 15.3: tokens the transformer sees, (frames // p_f) (height // p_h) (width // p_w), on the
    latent grid."""
    dims = (frames, height, width)
    if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in (*dims, *patch)):
        raise ValueError(f"arguments 'frames', 'height', 'width', 'patch' must be integers >= 1, got {dims}, {patch}")
    return math.prod(d // p for d, p in zip(dims, patch, strict=True))


def dynamic_shift_mu(
    seq_len: float,
    base_seq_len: float = BASE_SEQ_LEN,
    max_seq_len: float = MAX_SEQ_LEN,
    base_shift: float = BASE_SHIFT,
    max_shift: float = MAX_SHIFT,
) -> float:
    """Spec 15.3: mu = base_shift + (seq_len - base_seq_len) (max_shift - base_shift) / (max_seq_len - base_seq_len),
    the line through (base_seq_len, base_shift) and (max_seq_len, max_shift), extended beyond them."""
    if not max_seq_len != base_seq_len:
        raise ValueError("arguments 'base_seq_len' and 'max_seq_len' must differ")
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return float(base_shift + (seq_len - base_seq_len) * slope)


def exponential_time_shift(s: object, mu: float, power: float = 1.0) -> np.ndarray:
    """Spec 15.3: s' = e^mu / (e^mu + (1/s - 1)^power); 0 -> 0, 1 -> 1. With power = 1 this is
    flow_shift(s, e^mu)."""
    s = _unit("s", _checks.as_float64("s", s))
    with np.errstate(divide="ignore"):
        odds = np.where(s > 0, (1.0 / np.where(s > 0, s, 1.0) - 1.0) ** power, np.inf)
    return np.where(s > 0, math.exp(mu) / (math.exp(mu) + odds), 0.0)


def linear_time_shift(s: object, mu: float, power: float = 1.0) -> np.ndarray:
    """Spec 15.3: s' = mu / (mu + (1/s - 1)^power), mu > 0; with power = 1, flow_shift(s, mu)."""
    mu = _positive("mu", mu)
    s = _unit("s", _checks.as_float64("s", s))
    with np.errstate(divide="ignore"):
        odds = np.where(s > 0, (1.0 / np.where(s > 0, s, 1.0) - 1.0) ** power, np.inf)
    return np.where(s > 0, mu / (mu + odds), 0.0)


TIME_SHIFTS: dict[str, Callable[..., np.ndarray]] = {
    "exponential": exponential_time_shift,
    "linear": linear_time_shift,
}


# --- 15.4 The terminal stretch ---------------------------------------------------------------------


def stretch_to_terminal(s: object, terminal: float) -> np.ndarray:
    """Spec 15.4: s' = 1 - (1 - s) (1 - terminal) / (1 - s_last); the last level becomes ``terminal``,
    a level of 1 stays 1, and the map is affine in s."""
    s = _levels("s", s)
    if not 0.0 <= terminal < 1.0:
        raise ValueError(f"argument 'terminal' must lie in [0, 1), got {terminal}")
    if not s[-1] < 1.0:
        raise ValueError("argument 's': the last level must be < 1 to stretch it to a terminal value")
    return 1.0 - (1.0 - s) * ((1.0 - terminal) / (1.0 - s[-1]))


# --- 15.5 Karras levels ----------------------------------------------------------------------------


def karras_sigmas(
    N: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = KARRAS_RHO
) -> np.ndarray:
    """Spec 15.5: sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho
    (Karras et al. 2022, eq. 5); N = 1 gives [sigma_max]."""
    N = _count(N)
    sigma_min, sigma_max = _positive("sigma_min", sigma_min), _positive("sigma_max", sigma_max)
    rho = _positive("rho", rho)
    if not sigma_max > sigma_min:
        raise ValueError(f"argument 'sigma_max' must exceed 'sigma_min', got {sigma_max} <= {sigma_min}")
    ramp = np.zeros(1) if N == 1 else np.arange(N, dtype=np.float64) / (N - 1)
    top, bottom = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return (top + ramp * (bottom - top)) ** rho


# --- 15.6 The final level --------------------------------------------------------------------------


def final_zero(levels: np.ndarray, sigma_min: float) -> float:
    """Spec 15.6 ``final = "zero"``: the last step lands on clean data (level 0)."""
    return 0.0


def final_sigma_min(levels: np.ndarray, sigma_min: float) -> float:
    """Spec 15.6 ``final = "sigma_min"``: the last step lands on the family's smallest level."""
    return float(sigma_min)


FINAL_LEVELS: dict[str, Callable[[np.ndarray, float], float]] = {"zero": final_zero, "sigma_min": final_sigma_min}


def with_final_level(levels: object, final: str = "zero", sigma_min: float | None = None) -> np.ndarray:
    """Spec 15.6: the N levels followed by the final one (N + 1 values). ``sigma_min`` defaults to
    the last of ``levels``; the final level must not exceed it."""
    levels = _levels("levels", levels)
    if final not in FINAL_LEVELS:
        raise ValueError(f"argument 'final': unknown final level {final!r}; choose one of {tuple(FINAL_LEVELS)}")
    low = float(levels[-1]) if sigma_min is None else float(sigma_min)
    last = FINAL_LEVELS[final](levels, low)
    if not 0.0 <= last <= levels[-1]:
        raise ValueError(f"argument 'sigma_min': the final level {last} must lie in [0, {levels[-1]}]")
    return np.append(levels, last)


# --- 15.7 Flow sampling levels: the composition -----------------------------------------------------


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
) -> np.ndarray:
    """Spec 15.7: uniform levels in [s_min, s_max] (15.1), then ONE shift: the static flow shift
    (15.2) or, when ``mu`` is given, the resolution-dependent ``time_shift`` (15.3, and then
    ``shift`` must be 1); then the terminal stretch (15.4) if requested; then the final level
    (15.6). Returns N + 1 levels. ``s_min`` defaults to 1/T for T = 1000."""
    if mu is not None and shift != 1.0:
        raise ValueError("arguments 'shift' and 'mu' are two shifts: pass one (spec 15.7 applies the shift once)")
    if time_shift not in TIME_SHIFTS:
        raise ValueError(f"argument 'time_shift': unknown {time_shift!r}; choose one of {tuple(TIME_SHIFTS)}")
    s = uniform_levels(N, s_max, s_min)
    s = flow_shift(s, shift) if mu is None else TIME_SHIFTS[time_shift](s, mu)
    if terminal is not None:
        s = stretch_to_terminal(s, terminal)
    return with_final_level(s, final)


def vp_sigmas(abar: object) -> np.ndarray:
    """Spec 15.8: the EDM noise level of each entry of a vp abar table, sqrt((1 - abar) / abar)
    (14.6: sigma / alpha), the levels Euler-type samplers integrate over on a discrete schedule."""
    a = _checks.as_float64("abar", abar)
    if np.any((a < 0) | (a > 1)):
        raise ValueError("argument 'abar' must lie in [0, 1]")
    with np.errstate(divide="ignore"):
        return np.sqrt((1.0 - a) / a)  # inf where abar = 0 (zero terminal SNR)
