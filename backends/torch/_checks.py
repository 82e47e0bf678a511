"""Argument validation shared by the torch backend's spec modules (the role of vdm_ref._checks).

Validation policy:

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
import numbers
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .schedules import TorchSchedule

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


def inspect(x: Tensor) -> bool:
    """Whether value checks on tensor ``x`` run under the current policy."""
    mode = _mode[0]
    if mode == "off" or torch.compiler.is_compiling():
        return False
    return mode == "full" or x.device.type == "cpu"


def full() -> bool:
    return _mode[0] == "full" and not torch.compiler.is_compiling()


# --- shared argument helpers (used by the sibling modules) -----------------------------------


def opmath(dtype: torch.dtype) -> torch.dtype:
    """Arithmetic dtype: half types compute in float32 and round once at the end."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def data(name: str, x: Any, sched: TorchSchedule | None = None) -> Tensor:
    """Require a floating tensor (on the schedule's device when one is given)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"argument '{name}' must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"argument '{name}' must be a floating-point tensor, got dtype {x.dtype}")
    if sched is not None and x.device != sched.device:
        raise ValueError(f"argument '{name}' is on {x.device} but the schedule is on {sched.device}")
    if full() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"argument '{name}' contains NaN or Inf; the spec requires finite values")
    return x


def noise_block(noise: Tensor | torch.Generator, full: tuple[int, ...], rule: str, *,
                dtype: torch.dtype | None, device: torch.device | str | None) -> Tensor:
    """A sampling loop's noise of shape ``full``: ``torch.randn`` on a Generator's own device (dtype
    default float32), or a given tensor checked against ``full`` (``rule`` says how the shape is formed)."""
    if isinstance(noise, torch.Generator):
        z = torch.randn(full, generator=noise, device=noise.device, dtype=dtype or torch.float32)
        return z if device is None else z.to(device)
    z = data("noise", noise)
    if tuple(z.shape) != full:
        raise ValueError(f"argument 'noise' must have shape {rule} = {full}, got {tuple(z.shape)}")
    return z.to(device=device if device is not None else z.device, dtype=dtype or z.dtype)


def same_shape(**tensors: Tensor) -> None:
    (first, ref), *rest = tensors.items()
    for name, x in rest:
        if x.shape != ref.shape:
            raise ValueError(
                f"argument '{name}' has shape {tuple(x.shape)} but '{first}' has shape {tuple(ref.shape)}; "
                "they must match"
            )


def batch_of(name: str, x: Tensor) -> int:
    if x.ndim < 1:
        raise ValueError(f"argument '{name}' must have a leading batch axis, got a scalar")
    return x.shape[0]


def dtypes(*xs: Tensor) -> tuple[torch.dtype, torch.dtype]:
    """(result dtype, arithmetic dtype) for a set of data tensors: torch promotion, then opmath."""
    dt = xs[0].dtype
    for x in xs[1:]:
        dt = torch.promote_types(dt, x.dtype)
    return dt, opmath(dt)


def per_sample(v: Tensor, ndim: int) -> Tensor:
    """Reshape a (B,) vector to broadcast against a (B, ...) tensor of rank ``ndim``; 0-d stays."""
    return v if v.ndim == 0 else v.reshape(v.shape + (1,) * (ndim - v.ndim))


def timesteps(name: str, t: Any, sched: TorchSchedule, batch: int | None, *, allow_minus_one: bool) -> TimeArg:
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
    if (host or inspect(t)) and t.numel() and bool(((t < lo) | (t > hi)).any()):
        bad = torch.unique(t[(t < lo) | (t > hi)]).tolist()
        raise ValueError(f"argument '{name}' must lie in [{lo}, {hi}] for a schedule of T={sched.T}, got {bad}")
    return t.to(device=sched.device, dtype=torch.int64)


def host_any(cond: bool | Tensor) -> bool:
    """Host truth of ``cond.any()`` where the policy allows reading it (bools always)."""
    if isinstance(cond, Tensor):
        return inspect(cond) and bool(cond.any())
    return bool(cond)

