"""Spec section 2: noise schedules.

Each ``betas_*`` function is one clause; :func:`make_schedule` builds the tables every other
clause reads. Tables are computed once, in float64, and frozen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid")

# Default parameters per schedule (spec 2.1 - 2.4).
DEFAULT_PARAMS: dict[str, dict[str, float]] = {
    "linear": {"beta_start": 1e-4, "beta_end": 0.02},
    "scaled_linear": {"beta_start": 0.00085, "beta_end": 0.012},
    "cosine": {"s": 0.008, "max_beta": 0.999},
    "sigmoid": {"beta_start": 1e-4, "beta_end": 0.02, "sigmoid_range": 6.0},
}


def betas_linear(T: int, beta_start: float, beta_end: float) -> np.ndarray:
    """Spec 2.1: beta_i = beta_start + (beta_end - beta_start) * i / (T - 1)."""
    return np.linspace(beta_start, beta_end, T, dtype=np.float64)


def betas_scaled_linear(T: int, beta_start: float, beta_end: float) -> np.ndarray:
    """Spec 2.2: linear in sqrt(beta): beta_i = (sqrt(b0) + (sqrt(b1) - sqrt(b0)) i/(T-1))^2."""
    return np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), T, dtype=np.float64) ** 2


def betas_cosine(T: int, s: float, max_beta: float) -> np.ndarray:
    """Spec 2.3: f(u) = cos^2((u + s)/(1 + s) * pi/2); beta_i = min(1 - f((i+1)/T)/f(i/T), max_beta)."""
    u = np.arange(T + 1, dtype=np.float64) / T
    f = np.cos((u + s) / (1.0 + s) * (math.pi / 2)) ** 2
    return np.minimum(1.0 - f[1:] / f[:-1], max_beta)


def betas_sigmoid(T: int, beta_start: float, beta_end: float, sigmoid_range: float) -> np.ndarray:
    """Spec 2.4: beta_i = beta_start + (beta_end - beta_start) * sigmoid(-r + 2r i/(T-1))."""
    x = np.linspace(-sigmoid_range, sigmoid_range, T, dtype=np.float64)
    return beta_start + (beta_end - beta_start) / (1.0 + np.exp(-x))


def rescale_zero_terminal_snr(abar: np.ndarray) -> np.ndarray:
    """Spec 2.5: shift and scale sqrt(abar) so its last entry is 0 and its first is unchanged.

    With r_t = (sqrt(abar_t) - sqrt(abar_{T-1})) / (sqrt(abar_0) - sqrt(abar_{T-1})), the
    rescaled table is abar_0 * r_t^2. Written this way r_0 = 1 and r_{T-1} = 0 exactly in
    floating point, so abar_0 is kept bit for bit and abar_{T-1} is exactly 0.
    """
    root = np.sqrt(abar)
    r = (root - root[-1]) / (root[0] - root[-1])
    return abar[0] * r**2


def alphas_cumprod(betas: np.ndarray) -> np.ndarray:
    """Spec 2.6: abar_t = prod_{i<=t} (1 - beta_i)."""
    return np.cumprod(1.0 - betas)


def betas_from_abar(abar: np.ndarray) -> np.ndarray:
    """Spec 2.6: beta_t = 1 - abar_t / abar_{t-1}, with abar_{-1} = 1."""
    return 1.0 - abar / np.concatenate(([1.0], abar[:-1]))


def snr(abar: np.ndarray) -> np.ndarray:
    """Spec 2.6: SNR_t = abar_t / (1 - abar_t)."""
    with np.errstate(divide="ignore"):
        return abar / (1.0 - abar)


_BETAS = {
    "linear": betas_linear,
    "scaled_linear": betas_scaled_linear,
    "cosine": betas_cosine,
    "sigmoid": betas_sigmoid,
}


@dataclass(frozen=True)
class Schedule:
    """The float64 tables of spec 2.6 for one schedule.  Build it with :func:`make_schedule`.

    ``abar`` is the primary table: every other clause reads abar (and betas where it says so).
    """

    name: str
    T: int
    params: tuple[tuple[str, float], ...]
    zero_terminal_snr: bool
    betas: np.ndarray = field(repr=False)
    abar: np.ndarray = field(repr=False)

    @property
    def alphas(self) -> np.ndarray:
        return 1.0 - self.betas

    @property
    def snr(self) -> np.ndarray:
        return snr(self.abar)

    @property
    def log_snr(self) -> np.ndarray:
        """log(abar) - log(1 - abar); -inf where abar = 0 (zero terminal SNR)."""
        with np.errstate(divide="ignore"):
            return np.log(self.abar) - np.log1p(-self.abar)

    @property
    def sigma(self) -> np.ndarray:
        """sqrt((1 - abar) / abar): the noise level in the variance-exploding view; inf at abar = 0."""
        with np.errstate(divide="ignore"):
            return np.sqrt((1.0 - self.abar) / self.abar)

    def abar_at(self, t: np.ndarray) -> np.ndarray:
        """abar_t for integer t in [-1, T-1], with abar_{-1} = 1 (spec 1.2)."""
        t = np.asarray(t, dtype=np.int64)
        return np.where(t < 0, 1.0, self.abar[np.clip(t, 0, self.T - 1)])

    def to_dict(self) -> dict:
        """Name and parameters: enough for any backend to rebuild the same tables."""
        return {
            "name": self.name,
            "T": self.T,
            "params": dict(self.params),
            "zero_terminal_snr": self.zero_terminal_snr,
        }

    def tables(self) -> dict[str, np.ndarray]:
        return {
            "betas": self.betas,
            "alphas": self.alphas,
            "abar": self.abar,
            "snr": self.snr,
            "log_snr": self.log_snr,
            "sigma": self.sigma,
        }


def make_schedule(
    name: str, T: int = 1000, *, zero_terminal_snr: bool = False, **params: float
) -> Schedule:
    """Spec 2: build the schedule ``name`` with T steps; unspecified parameters take their defaults."""
    if name not in _BETAS:
        raise ValueError(f"argument 'name': unknown schedule {name!r}; choose one of {SCHEDULES}")
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 2:
        raise ValueError(f"argument 'T' must be an integer >= 2, got {T!r}")
    unknown = set(params) - set(DEFAULT_PARAMS[name])
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {sorted(unknown)} for schedule {name!r}; "
            f"it takes {sorted(DEFAULT_PARAMS[name])}"
        )
    merged = {**DEFAULT_PARAMS[name], **{k: float(v) for k, v in params.items()}}
    _check_params(name, merged)
    betas = _BETAS[name](int(T), **merged)
    abar = alphas_cumprod(betas)
    if zero_terminal_snr:
        abar = rescale_zero_terminal_snr(abar)
        betas = betas_from_abar(abar)
    if not (np.all(np.diff(abar) < 0) and abar[0] < 1.0):
        raise ValueError(
            f"schedule {name!r} with parameters {merged} does not give a strictly decreasing "
            "abar in (0, 1); check the parameters"
        )
    for arr in (betas, abar):
        arr.setflags(write=False)
    return Schedule(name, int(T), tuple(sorted(merged.items())), bool(zero_terminal_snr), betas, abar)


def _check_params(name: str, p: dict[str, float]) -> None:
    for key, value in p.items():
        if not math.isfinite(value):
            raise ValueError(f"parameter '{key}' of schedule {name!r} must be finite, got {value}")
    if "beta_start" in p:
        if not 0.0 < p["beta_start"] <= p["beta_end"] < 1.0:
            raise ValueError(
                f"schedule {name!r} needs 0 < beta_start <= beta_end < 1, got "
                f"beta_start={p['beta_start']}, beta_end={p['beta_end']}"
            )
    if name == "cosine" and not (p["s"] >= 0.0 and 0.0 < p["max_beta"] < 1.0):
        raise ValueError(f"cosine schedule needs s >= 0 and 0 < max_beta < 1, got {p}")
    if name == "sigmoid" and not p["sigmoid_range"] > 0.0:
        raise ValueError(f"sigmoid schedule needs sigmoid_range > 0, got {p['sigmoid_range']}")
