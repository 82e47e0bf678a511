"""Spec sections 2 and 6 on torch tensors: noise schedules, their tables, inference timesteps.

Tables are computed from the spec formulas in torch float64 on the CPU (never by calling
vdm_ref, so the conformance kit can catch a wrong table), checked, moved to the device once
and cast once to the compute dtype. Coefficients that are functions of one timestep (sqrt(abar),
sqrt(1 - abar), ...) are derived in float64 *before* the cast, so low-precision tables never
compute 1 - abar by cancellation.

Validation policy (shared by every module of this backend):

- always: argument types, dtypes, shapes and devices (metadata only, free);
- timestep ranges, ``s < t`` and abar_t = 0 checks: on Python ints always (host values); on
  tensors only when reading them costs no device sync, i.e. CPU tensors outside torch.compile
  tracing. Accelerator tensors are value-checked only in ``"full"`` mode, which syncs;
- finiteness of data: ``"full"`` mode only (a full extra pass over the data);
- ``"off"``: no value checks. Out-of-range timesteps are then undefined behaviour.

Select with ``set_validation(mode)`` or ``with validation(mode): ...``; the default is ``"auto"``.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid")
SPACINGS = ("leading", "trailing", "linspace")

# Spec 2.1 - 2.4 defaults (kept independent of vdm_ref; a test pins them to it).
DEFAULT_PARAMS: dict[str, dict[str, float]] = {
    "linear": {"beta_start": 1e-4, "beta_end": 0.02},
    "scaled_linear": {"beta_start": 0.00085, "beta_end": 0.012},
    "cosine": {"s": 0.008, "max_beta": 0.999},
    "sigmoid": {"beta_start": 1e-4, "beta_end": 0.02, "sigmoid_range": 6.0},
}

F64 = torch.float64
TimeArg = int | Tensor

# --- validation policy -------------------------------------------------------------------------

VALIDATION_MODES = ("off", "auto", "full")
_mode = ["auto"]


def set_validation(mode: str) -> str:
    """Set the value-check policy ("off", "auto", "full"; see the module docstring); returns the old one."""
    if mode not in VALIDATION_MODES:
        raise ValueError(f"argument 'mode': unknown validation mode {mode!r}; choose one of {VALIDATION_MODES}")
    old, _mode[0] = _mode[0], mode
    return old


@contextlib.contextmanager
def validation(mode: str) -> Iterator[None]:
    """Context manager form of :func:`set_validation`."""
    old = set_validation(mode)
    try:
        yield
    finally:
        set_validation(old)


def _inspect(x: Tensor) -> bool:
    """Whether value checks on tensor ``x`` run under the current policy."""
    mode = _mode[0]
    if mode == "off" or torch.compiler.is_compiling():
        return False
    return mode == "full" or x.device.type == "cpu"


def _full() -> bool:
    return _mode[0] == "full" and not torch.compiler.is_compiling()


# --- shared argument helpers (used by the sibling modules) -----------------------------------


def _opmath(dtype: torch.dtype) -> torch.dtype:
    """Arithmetic dtype: half types compute in float32 and round once at the end."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _data(name: str, x: Any, sched: TorchSchedule | None = None) -> Tensor:
    """Require a floating tensor (on the schedule's device when one is given)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"argument '{name}' must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"argument '{name}' must be a floating-point tensor, got dtype {x.dtype}")
    if sched is not None and x.device != sched.device:
        raise ValueError(f"argument '{name}' is on {x.device} but the schedule is on {sched.device}")
    if _full() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"argument '{name}' contains NaN or Inf; the spec requires finite values")
    return x


def _same_shape(**tensors: Tensor) -> None:
    (first, ref), *rest = tensors.items()
    for name, x in rest:
        if x.shape != ref.shape:
            raise ValueError(
                f"argument '{name}' has shape {tuple(x.shape)} but '{first}' has shape {tuple(ref.shape)}; "
                "they must match"
            )


def _batch_of(name: str, x: Tensor) -> int:
    if x.ndim < 1:
        raise ValueError(f"argument '{name}' must have a leading batch axis, got a scalar")
    return x.shape[0]


def _dtypes(*xs: Tensor) -> tuple[torch.dtype, torch.dtype]:
    """(result dtype, arithmetic dtype) for a set of data tensors: torch promotion, then opmath."""
    dt = xs[0].dtype
    for x in xs[1:]:
        dt = torch.promote_types(dt, x.dtype)
    return dt, _opmath(dt)


def _per_sample(v: Tensor, ndim: int) -> Tensor:
    """Reshape a (B,) vector to broadcast against a (B, ...) tensor of rank ``ndim``; 0-d stays."""
    return v if v.ndim == 0 else v.reshape(v.shape + (1,) * (ndim - v.ndim))


def _timesteps(name: str, t: Any, sched: TorchSchedule, batch: int | None, *, allow_minus_one: bool) -> TimeArg:
    """Validate integer timesteps: a Python int or an integer tensor, scalar or (B,), in [0, T-1]
    (or -1 if allowed). Returns an int or an int64 tensor on the schedule's device."""
    lo, hi = (-1 if allow_minus_one else 0), sched.T - 1
    if isinstance(t, float) and t.is_integer():
        t = int(t)
    if isinstance(t, numbers.Integral) and not isinstance(t, bool):
        if not lo <= t <= hi:
            raise ValueError(f"argument '{name}' must lie in [{lo}, {hi}] for a schedule of T={sched.T}, got {t}")
        return int(t)
    host = not isinstance(t, Tensor)
    if host:  # host sequences / NumPy arrays: converted once, checked on the host for free
        try:
            t = torch.as_tensor(t)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"argument '{name}' must be an int or an integer tensor: {exc}") from None
        if t.is_floating_point() and bool(torch.isfinite(t).all()) and bool((t == t.round()).all()):
            t = t.long()
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"argument '{name}' must hold integer timesteps, got dtype {t.dtype}")
    if t.ndim > 1:
        raise ValueError(f"argument '{name}' must be a scalar or a (B,) vector, got shape {tuple(t.shape)}")
    if batch is not None and t.ndim == 1 and t.shape[0] != batch:
        raise ValueError(f"argument '{name}' has {t.shape[0]} entries but the batch has {batch}")
    if not host and t.device != sched.device:
        raise ValueError(f"argument '{name}' is on {t.device} but the schedule is on {sched.device}")
    if (host or _inspect(t)) and t.numel() and bool(((t < lo) | (t > hi)).any()):
        bad = torch.unique(t[(t < lo) | (t > hi)]).tolist()
        raise ValueError(f"argument '{name}' must lie in [{lo}, {hi}] for a schedule of T={sched.T}, got {bad}")
    return t.to(device=sched.device, dtype=torch.int64)


def _host_any(cond: bool | Tensor) -> bool:
    """Host truth of ``cond.any()`` where the policy allows reading it (bools always)."""
    if isinstance(cond, Tensor):
        return _inspect(cond) and bool(cond.any())
    return bool(cond)


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


# --- spec 6: inference timesteps ---------------------------------------------------------------


def _arange_desc(N: int) -> Tensor:
    return torch.arange(N - 1, -1, -1, dtype=torch.int64)


def timesteps_leading(T: int, N: int, offset: int = 0) -> Tensor:
    """Spec 6.1: t_i = (N - 1 - i) * floor(T / N) + offset, i = 0..N-1."""
    return _arange_desc(N) * (T // N) + offset


def timesteps_trailing(T: int, N: int) -> Tensor:
    """Spec 6.2: t_i = T - 1 - floor(i * T / N), i = 0..N-1."""
    i = torch.arange(N, dtype=torch.int64)
    return T - 1 - torch.div(i * T, N, rounding_mode="floor")


def timesteps_linspace(T: int, N: int) -> Tensor:
    """Spec 6.3: t_i = round_half_up((T - 1) * (N - 1 - i) / (N - 1)); N = 1 gives [T - 1]."""
    if N == 1:
        return torch.tensor([T - 1], dtype=torch.int64)
    # round_half_up(a / b) = floor((2a + b) / (2b)) for non-negative integers.
    return torch.div(2 * (T - 1) * _arange_desc(N) + (N - 1), 2 * (N - 1), rounding_mode="floor")


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
