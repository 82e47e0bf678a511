"""The example backend's noise-level schedules (spec 15), in plain NumPy, written from the papers'
forms rather than the reference's: Karras' levels through logarithms, vp levels as sigma / alpha,
every flow shift as a move of the level's log-odds (shift k adds ln k to logit(s); the
resolution-dependent shift adds mu, or ln mu), uniform levels by ``np.linspace`` and the terminal
stretch as a rescale of 1 - s.

Levels are float64 host data at every compute dtype (spec 15, as the tables of 1.6), so nothing
here is cast to the backend's dtype. ``SigmaOps`` is a mixin with no state of its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

# Spec 15.3: the odds' shift of each resolution-dependent time shift, from mu.
_LOG_SHIFT: dict[str, Callable[[float], float]] = {
    "exponential": lambda mu: mu,
    "linear": lambda mu: math.log(mu),  # mu > 0, checked by the caller
}
# Spec 15.6: the final level from the levels and sigma_min.
_FINAL: dict[str, Callable[[np.ndarray, float], float]] = {
    "zero": lambda levels, sigma_min: 0.0,
    "sigma_min": lambda levels, sigma_min: sigma_min,
}


def _count(N: Any) -> int:
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
        raise ValueError(f"argument 'N' must be an integer >= 1, got {N!r}")
    return int(N)


def _positive(name: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"argument '{name}' must be finite and > 0, got {value!r}")
    return float(value)


def _shift_odds(s: np.ndarray, log_k: float) -> np.ndarray:
    """logit(s') = logit(s) + ln k, with s = 0 and s = 1 fixed: s' = 1 / (1 + e^-ln k (1 - s) / s)."""
    inner = (s > 0) & (s < 1)
    safe = np.where(inner, s, 0.5)
    moved = 1.0 / (1.0 + math.exp(-log_k) * (1.0 - safe) / safe)
    return np.where(inner, moved, s)


class SigmaOps:
    """Spec 15.2 and 15.5 - 15.8 for the example backend."""

    def karras_sigmas(self, N: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
                      rho: float = 7.0) -> np.ndarray:
        N = _count(N)
        lo, hi, rho = _positive("sigma_min", sigma_min), _positive("sigma_max", sigma_max), _positive("rho", rho)
        if not hi > lo:
            raise ValueError(f"argument 'sigma_max' must exceed 'sigma_min', got {hi} <= {lo}")
        # Karras et al. 2022, eq. 5: sigma_i^(1/rho) runs linearly from sigma_max^(1/rho) to sigma_min^(1/rho).
        ramp = np.linspace(0.0, 1.0, N) if N > 1 else np.zeros(1)
        root = np.exp(math.log(hi) / rho) * (1.0 - ramp) + np.exp(math.log(lo) / rho) * ramp
        return np.exp(rho * np.log(root))

    def with_final_level(self, levels: Any, final: str = "zero", sigma_min: float | None = None) -> np.ndarray:
        lv = np.asarray(levels, dtype=np.float64)
        if lv.ndim != 1 or lv.size == 0 or not np.all(np.isfinite(lv)):
            raise ValueError("argument 'levels' must be a non-empty 1-D sequence of finite noise levels")
        if final not in _FINAL:
            raise ValueError(f"argument 'final': unknown final level {final!r}; choose one of {tuple(_FINAL)}")
        last = _FINAL[final](lv, float(lv[-1] if sigma_min is None else sigma_min))
        if not 0.0 <= last <= lv[-1]:
            raise ValueError(f"argument 'sigma_min': the final level {last} must lie in [0, {lv[-1]}]")
        return np.concatenate([lv, [last]])

    def flow_levels(self, N: int, *, shift: float = 1.0, mu: float | None = None, time_shift: str = "exponential",
                    terminal: float | None = None, s_min: float = 1e-3, s_max: float = 1.0,
                    final: str = "zero") -> np.ndarray:
        N = _count(N)
        if mu is not None and shift != 1.0:
            raise ValueError("arguments 'shift' and 'mu': give one of them, the shift is applied once (spec 15.7)")
        if time_shift not in _LOG_SHIFT:
            raise ValueError(f"argument 'time_shift': unknown {time_shift!r}; choose one of {tuple(_LOG_SHIFT)}")
        if not (0.0 <= s_min < s_max <= 1.0):
            raise ValueError(f"arguments 's_min', 's_max' must satisfy 0 <= s_min < s_max <= 1, got {s_min}, {s_max}")
        s = np.linspace(s_max, s_min, N) if N > 1 else np.array([float(s_max)])
        if mu is None:
            log_k = math.log(_positive("shift", shift))
        else:
            if time_shift == "linear":
                _positive("mu", mu)
            log_k = _LOG_SHIFT[time_shift](float(mu))
        s = _shift_odds(s, log_k)
        if terminal is not None:
            if not 0.0 <= terminal < 1.0 or not s[-1] < 1.0:
                raise ValueError(f"argument 'terminal' must lie in [0, 1) below a last level < 1, got {terminal}")
            rest = 1.0 - s  # the stretch rescales the distance to 1 so that the last one is 1 - terminal
            s = 1.0 - rest * ((1.0 - terminal) / rest[-1])
        return self.with_final_level(s, final)

    def flow_shift(self, s: Any, shift: float) -> np.ndarray:
        lv = np.asarray(s, dtype=np.float64)
        if not np.all(np.isfinite(lv)) or np.any((lv < 0) | (lv > 1)):
            raise ValueError("argument 's' must hold finite flow levels in [0, 1]")
        return _shift_odds(lv, math.log(_positive("shift", shift)))

    def vp_sigmas(self, abar: Any) -> np.ndarray:
        a = np.asarray(abar, dtype=np.float64)
        if not np.all(np.isfinite(a)) or np.any((a < 0) | (a > 1)):
            raise ValueError("argument 'abar' must hold finite values in [0, 1]")
        # sigma / alpha of the vp pair (sqrt(abar), sqrt(1 - abar)), 14.6; alpha = 0 is infinitely noisy.
        with np.errstate(divide="ignore"):
            return np.where(a > 0, np.sqrt(1.0 - a) / np.sqrt(np.where(a > 0, a, 1.0)), np.inf)
