"""Spec section 2 on torch tensors: noise schedules and their tables.

Tables are computed from the spec formulas in torch float64 on the CPU (never by calling
vdm_ref, so the conformance kit can catch a wrong table), checked, moved to the device once
and cast once to the compute dtype. Coefficients that are functions of one timestep (sqrt(abar),
sqrt(1 - abar), ...) are derived in float64 *before* the cast, so low-precision tables never
compute 1 - abar by cancellation.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ._checks import F64, TimeArg

SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid")

# Spec 2.1 - 2.4 defaults (kept independent of vdm_ref; a test pins them to it).
DEFAULT_PARAMS: dict[str, dict[str, float]] = {
    "linear": {"beta_start": 1e-4, "beta_end": 0.02},
    "scaled_linear": {"beta_start": 0.00085, "beta_end": 0.012},
    "cosine": {"s": 0.008, "max_beta": 0.999},
    "sigmoid": {"beta_start": 1e-4, "beta_end": 0.02, "sigmoid_range": 6.0},
}


# --- spec 2: the beta formulas -------------------------------------------------------------------


def _linspace(start: float, stop: float, T: int) -> Tensor:
    """start + i * (stop - start) / (T - 1), i = 0..T-1, endpoint exact, in float64.

    Evaluated as i * step + start, the order NumPy's linspace uses: the tables feed cancellations
    (spec 2.5 differences of square roots, 1 - abar near abar = 1) where a 1-ulp difference in a
    beta would exceed the 1e-12 table tolerance, so the rounding order is part of the contract.
    """
    x = torch.arange(T, dtype=F64) * ((stop - start) / (T - 1)) + start
    x[-1] = stop
    return x


def betas_linear(T: int, beta_start: float, beta_end: float) -> Tensor:
    """Spec 2.1: beta_i = beta_start + (beta_end - beta_start) * i / (T - 1)."""
    return _linspace(beta_start, beta_end, T)


def betas_scaled_linear(T: int, beta_start: float, beta_end: float) -> Tensor:
    """Spec 2.2: beta_i = (sqrt(b0) + (sqrt(b1) - sqrt(b0)) i/(T-1))^2."""
    root = _linspace(math.sqrt(beta_start), math.sqrt(beta_end), T)
    return root * root


def betas_cosine(T: int, s: float, max_beta: float) -> Tensor:
    """Spec 2.3: f(u) = cos^2((u + s)/(1 + s) * pi/2); beta_i = min(1 - f((i+1)/T)/f(i/T), max_beta)."""
    u = torch.arange(T + 1, dtype=F64) / T
    f = torch.cos((u + s) / (1.0 + s) * (math.pi / 2)) ** 2
    return torch.clamp(1.0 - f[1:] / f[:-1], max=max_beta)


def betas_sigmoid(T: int, beta_start: float, beta_end: float, sigmoid_range: float) -> Tensor:
    """Spec 2.4: beta_i = beta_start + (beta_end - beta_start) * sigmoid(-r + 2r i/(T-1))."""
    x = _linspace(-sigmoid_range, sigmoid_range, T)
    # torch.div with a tensor numerator: `scalar / tensor` is reciprocal-then-multiply (two roundings).
    return beta_start + torch.div(torch.full_like(x, beta_end - beta_start), 1.0 + torch.exp(-x))


def _sqrt64(x: Tensor) -> Tensor:
    """Correctly rounded float64 sqrt for table building (host loop, construction only).

    torch's vectorised CPU sqrt is off by 1-2 ulp on ~1% of float64 inputs, and spec 2.5 divides
    differences of square roots, which turns that into relative errors above the 1e-12 tolerance
    for schedules whose abar barely moves. math.sqrt is IEEE correctly rounded.
    """
    return torch.tensor([math.sqrt(v) for v in x.tolist()], dtype=F64, device=x.device).reshape(x.shape)


def rescale_zero_terminal_snr(abar: Tensor) -> Tensor:
    """Spec 2.5: abar_0 * r_t^2 with r_t = (sqrt(abar_t) - sqrt(abar_{T-1})) / (sqrt(abar_0) - sqrt(abar_{T-1}))."""
    root = _sqrt64(abar)
    r = (root - root[-1]) / (root[0] - root[-1])
    return abar[0] * (r * r)


def alphas_cumprod(betas: Tensor) -> Tensor:
    """Spec 2.6: abar_t = prod_{i<=t} (1 - beta_i)."""
    return torch.cumprod(1.0 - betas, dim=0)


def betas_from_abar(abar: Tensor) -> Tensor:
    """Spec 2.6: beta_t = 1 - abar_t / abar_{t-1}, with abar_{-1} = 1."""
    return 1.0 - abar / torch.cat([abar.new_ones(1), abar[:-1]])


def snr(abar: Tensor) -> Tensor:
    """Spec 2.6: SNR_t = abar_t / (1 - abar_t)."""
    return abar / (1.0 - abar)


_BETAS = {
    "linear": betas_linear,
    "scaled_linear": betas_scaled_linear,
    "cosine": betas_cosine,
    "sigmoid": betas_sigmoid,
}


@dataclass(frozen=True, eq=False)
class TorchSchedule:
    """Spec 2.6 tables on one device. Build with :func:`make_schedule`.

    ``betas64`` / ``abar64`` are the float64 tables (device resident); ``betas``, ``alphas``,
    ``abar``, ``snr``, ``sqrt_abar``, ``sqrt_one_minus_abar``, ``one_minus_abar`` are the same
    quantities derived in float64 and cast once to ``dtype``.
    """

    name: str
    T: int
    params: tuple[tuple[str, float], ...]
    zero_terminal_snr: bool
    betas64: Tensor = field(repr=False)
    abar64: Tensor = field(repr=False)
    dtype: torch.dtype = torch.float32
    device: torch.device = field(init=False)
    betas: Tensor = field(init=False, repr=False)
    alphas: Tensor = field(init=False, repr=False)
    abar: Tensor = field(init=False, repr=False)
    snr: Tensor = field(init=False, repr=False)
    sqrt_abar: Tensor = field(init=False, repr=False)
    sqrt_one_minus_abar: Tensor = field(init=False, repr=False)
    one_minus_abar: Tensor = field(init=False, repr=False)
    abar_ext64: Tensor = field(init=False, repr=False)  # [1, abar_0, ...]: index t + 1, abar_{-1} = 1
    abar_ext: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.betas64.dtype != F64 or self.abar64.dtype != F64:
            raise TypeError("TorchSchedule tables must be float64; build schedules with make_schedule")
        if not (self.dtype.is_floating_point):
            raise TypeError(f"argument 'dtype' must be a floating dtype, got {self.dtype}")
        a = self.abar64
        derived = {
            "betas": self.betas64,
            "alphas": 1.0 - self.betas64,
            "abar": a,
            "snr": snr(a),
            "sqrt_abar": _sqrt64(a),
            "sqrt_one_minus_abar": _sqrt64(1.0 - a),
            "one_minus_abar": 1.0 - a,
        }
        set_ = object.__setattr__
        set_(self, "device", a.device)
        for key, table in derived.items():
            set_(self, key, table.to(self.dtype))  # the one cast
        ext = torch.cat([a.new_ones(1), a])
        set_(self, "abar_ext64", ext)
        set_(self, "abar_ext", ext.to(self.dtype))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TorchSchedule:
        """A new schedule on ``device`` in compute ``dtype`` (float64 tables moved, then cast once)."""
        device = self.device if device is None else device
        return TorchSchedule(
            self.name, self.T, self.params, self.zero_terminal_snr,
            self.betas64.to(device), self.abar64.to(device), self.dtype if dtype is None else dtype,
        )

    def abar_at(self, t: TimeArg) -> Tensor:
        """abar_t in the compute dtype for integer t in [-1, T-1], with abar_{-1} = 1 (spec 1.2)."""
        return self.abar_ext[t + 1]

    def tables64(self) -> dict[str, Tensor]:
        """The float64 tables of vdm_ref's ``Schedule.tables()``: betas, alphas, abar, snr, log_snr, sigma."""
        a = self.abar64
        return {
            "betas": self.betas64,
            "alphas": 1.0 - self.betas64,
            "abar": a,
            "snr": snr(a),
            "log_snr": torch.log(a) - torch.log1p(-a),
            "sigma": _sqrt64((1.0 - a) / a),
        }

    def tables(self) -> dict[str, Tensor]:
        """:meth:`tables64` cast to the compute dtype."""
        return {k: v.to(self.dtype) for k, v in self.tables64().items()}

    def to_dict(self) -> dict:
        """Name and parameters: enough for any backend to rebuild the same tables."""
        return {
            "name": self.name,
            "T": self.T,
            "params": dict(self.params),
            "zero_terminal_snr": self.zero_terminal_snr,
        }

    @staticmethod
    def from_dict(
        d: dict, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> TorchSchedule:
        """Rebuild a schedule from :meth:`to_dict` output (or vdm_ref's)."""
        return make_schedule(
            d["name"], d["T"], zero_terminal_snr=d.get("zero_terminal_snr", False),
            device=device, dtype=dtype, **d.get("params", {}),
        )


def make_schedule(
    name: str,
    T: int = 1000,
    *,
    zero_terminal_snr: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    **params: float,
) -> TorchSchedule:
    """Spec 2: build schedule ``name`` with T steps on ``device``, ops computing in ``dtype``."""
    if name not in _BETAS:
        raise ValueError(f"argument 'name': unknown schedule {name!r}; choose one of {SCHEDULES}")
    if isinstance(T, bool) or not isinstance(T, numbers.Integral) or T < 2:
        raise ValueError(f"argument 'T' must be an integer >= 2, got {T!r}")
    T = int(T)
    unknown = set(params) - set(DEFAULT_PARAMS[name])
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {sorted(unknown)} for schedule {name!r}; it takes {sorted(DEFAULT_PARAMS[name])}"
        )
    merged = {**DEFAULT_PARAMS[name], **{k: float(v) for k, v in params.items()}}
    _check_params(name, merged)
    betas = _BETAS[name](T, **merged)
    abar = alphas_cumprod(betas)
    if zero_terminal_snr:
        abar = rescale_zero_terminal_snr(abar)
        betas = betas_from_abar(abar)
    if not (bool((abar[1:] < abar[:-1]).all()) and float(abar[0]) < 1.0):
        raise ValueError(
            f"schedule {name!r} with parameters {merged} does not give a strictly decreasing abar in (0, 1); "
            "check the parameters"
        )
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return TorchSchedule(
        name, T, tuple(sorted(merged.items())), bool(zero_terminal_snr), betas.to(dev), abar.to(dev), dtype
    )


def _check_params(name: str, p: dict[str, float]) -> None:
    for key, value in p.items():
        if not math.isfinite(value):
            raise ValueError(f"parameter '{key}' of schedule {name!r} must be finite, got {value}")
    if "beta_start" in p and not 0.0 < p["beta_start"] <= p["beta_end"] < 1.0:
        raise ValueError(
            f"schedule {name!r} needs 0 < beta_start <= beta_end < 1, got "
            f"beta_start={p['beta_start']}, beta_end={p['beta_end']}"
        )
    if name == "cosine" and not (p["s"] >= 0.0 and 0.0 < p["max_beta"] < 1.0):
        raise ValueError(f"cosine schedule needs s >= 0 and 0 < max_beta < 1, got {p}")
    if name == "sigmoid" and not p["sigmoid_range"] > 0.0:
        raise ValueError(f"sigmoid schedule needs sigmoid_range > 0, got {p['sigmoid_range']}")

