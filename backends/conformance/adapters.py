"""Adapters for the backends that ship with vdm: ``numpy`` (vdm_ref itself) and ``torch``.

Both follow the protocol of README.md: NumPy arrays in (float64), NumPy arrays out. The torch
adapter is the model for wrapping a tensor library: convert at the boundary, compute in the
backend's dtype on its device, and hand the schedule over as the backend's own schedule object.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

import vdm_ref

from .protocol import DTYPES, OPS, round_to_dtype, tolerances


class BackendError(Exception):
    """A backend that cannot be loaded or run as asked; the message is one line for the user."""


def _round_outputs(result: Any, dtype: str) -> Any:
    if isinstance(result, tuple):
        return tuple(round_to_dtype(np.asarray(r), dtype) for r in result)
    return round_to_dtype(np.asarray(result), dtype)


class NumpyAdapter:
    """vdm_ref through the adapter protocol: the kit's self-test, and a backend that passes by
    definition. At a lower dtype it computes in float64 and rounds its outputs to that dtype."""

    name = "numpy"

    def __init__(self, device: str = "cpu", dtype: str = "float64") -> None:
        if device != "cpu":
            raise BackendError(f"the numpy backend runs on cpu only, not {device!r}")
        if dtype not in DTYPES:
            raise BackendError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        self.device, self.dtype = device, dtype
        self.version = f"vdm_ref {vdm_ref.SPEC_VERSION} (numpy {np.__version__})"

    def make_schedule(self, name: str, T: int, *, zero_terminal_snr: bool = False, **params: float) -> Any:
        return vdm_ref.make_schedule(name, T, zero_terminal_snr=zero_terminal_snr, **params)

    def inference_timesteps(self, T: int, N: int, spacing: str = "trailing", offset: int = 0) -> np.ndarray:
        return vdm_ref.inference_timesteps(T, N, spacing, offset)


def _numpy_op(op: str) -> Callable[..., Any]:
    fn = getattr(vdm_ref, op)
    # Noise-level schedules (spec 15) are float64 host data at every compute dtype, as the tables are.
    host_float64 = bool(tolerances()["ops"].get(op, {}).get("tables_always_float64"))

    @functools.wraps(fn)
    def method(self: NumpyAdapter, *args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        return result if host_float64 else _round_outputs(result, self.dtype)

    return method


for _op in OPS:
    if not hasattr(NumpyAdapter, _op):
        setattr(NumpyAdapter, _op, _numpy_op(_op))


_TORCH_DTYPES = {name: name for name in DTYPES}  # torch names them as the spec does


class TorchAdapter:
    """The PyTorch backend (``vdm.backends.torch.ops``) behind the adapter protocol.

    Ops receive a vdm_ref.Schedule; the adapter rebuilds it with the backend's own
    ``make_schedule`` from its name and parameters (cached), so every op runs on the tables the
    backend computes itself, exactly as in real use.
    """

    name = "torch"
    # The backend's value checks (NaN/Inf, timestep ranges on the device) run only in its "full"
    # validation mode; "auto", its default, skips those that cost a device sync. Spec 1.7 is
    # checked in the mode that checks.
    validation = "full"

    def __init__(self, device: str = "cpu", dtype: str = "float64") -> None:
        import torch
        from vdm.backends.torch import ops

        if dtype not in _TORCH_DTYPES:
            raise BackendError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            raise BackendError("CUDA is not available on this machine; run on a GPU machine or use --device cpu")
        self._torch, self._ops = torch, ops
        self.device, self.dtype = str(torch.device(device)), dtype
        self._tdtype = getattr(torch, _TORCH_DTYPES[dtype])
        self.version = f"torch {torch.__version__}"
        self._schedules: dict[tuple, Any] = {}

    # --- conversions at the boundary ---------------------------------------------------------

    def _schedule(self, sched: vdm_ref.Schedule) -> Any:
        key = (sched.name, sched.T, sched.params, sched.zero_terminal_snr)
        if key not in self._schedules:
            self._schedules[key] = self._ops.TorchSchedule.from_dict(sched.to_dict(), self.device, self._tdtype)
        return self._schedules[key]

    def _in(self, value: Any) -> Any:
        torch = self._torch
        if isinstance(value, vdm_ref.Schedule):
            return self._schedule(value)
        if isinstance(value, np.ndarray):
            if value.dtype.kind in "iu":  # timesteps: a 0-d array is a scalar
                return int(value) if value.ndim == 0 else torch.as_tensor(value, dtype=torch.int64, device=self.device)
            return torch.as_tensor(value, dtype=torch.float64).to(device=self.device, dtype=self._tdtype)
        return value

    def _host(self, value: Any) -> Any:
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            return self._torch.as_tensor(value, dtype=self._torch.float64)
        return self._in(value)

    def _out(self, value: Any) -> Any:
        torch = self._torch
        if isinstance(value, tuple):
            return tuple(self._out(v) for v in value)
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            # float64 holds every lower float exactly; NumPy has no bfloat16.
            return (value.double() if value.is_floating_point() else value).numpy()
        return value

    # --- ops with a signature of their own -----------------------------------------------------

    def make_schedule(self, name: str, T: int, *, zero_terminal_snr: bool = False, **params: float) -> dict:
        with self._ops.validation(self.validation):
            sched = self._ops.make_schedule(name, T, zero_terminal_snr=zero_terminal_snr, device=self.device,
                                            dtype=self._tdtype, **params)
        return {k: self._out(v) for k, v in sched.tables64().items()}

    def inference_timesteps(self, T: int, N: int, spacing: str = "trailing", offset: int = 0) -> np.ndarray:
        with self._ops.validation(self.validation):
            return self._out(self._ops.inference_timesteps(T, N, spacing, offset))

    def sample(self, model: Callable, sched: vdm_ref.Schedule, timesteps: Any, shape: tuple[int, ...],
               noise: np.ndarray, **kwargs: Any) -> np.ndarray:
        torch = self._torch

        def torch_model(x_t: Any, t: Any) -> Any:
            out = model(x_t.detach().cpu().double().numpy(), t.detach().cpu().numpy())
            return torch.as_tensor(np.asarray(out, dtype=np.float64)).to(device=self.device, dtype=self._tdtype)

        steps = torch.as_tensor(np.asarray(timesteps), dtype=torch.int64)
        with self._ops.validation(self.validation):
            return self._out(self._ops.sample(torch_model, self._schedule(sched), steps, tuple(shape),
                                              self._in(noise), **kwargs))

    def hybrid_loss_grad(self, sched: vdm_ref.Schedule, x0: np.ndarray, t: Any, noise: np.ndarray, out: np.ndarray,
                         prediction: str, lam: float = 0.001, min_snr_gamma: float | None = None) -> np.ndarray:
        """The optional gradient method (README 2): d(sum_b hybrid_loss_b)/d out by autograd, so the kit
        sees spec 8.6's stop-gradient, which the loss value cannot show."""
        out_t = self._in(out).detach().requires_grad_(True)
        with self._ops.validation(self.validation):
            loss = self._ops.hybrid_loss(self._in(sched), self._in(x0), self._in(t), self._in(noise), out_t,
                                         prediction, lam, min_snr_gamma)
        (grad,) = self._torch.autograd.grad(loss.sum(), out_t)
        return self._out(grad)

    def solve(self, denoise: Callable, x: np.ndarray, alphas: Any, sigmas: Any, solver: str = "euler",
              noise: np.ndarray | None = None, **options: Any) -> np.ndarray:
        """Spec 17.2: ``denoise(x, i)`` is a NumPy callable; the levels are host data (float64)."""
        torch = self._torch

        def torch_denoise(x_t: Any, i: int) -> Any:
            out = denoise(x_t.detach().cpu().double().numpy(), i)
            return torch.as_tensor(np.asarray(out, dtype=np.float64)).to(device=self.device, dtype=self._tdtype)

        with self._ops.validation(self.validation):
            return self._out(self._ops.solve(torch_denoise, self._in(x), np.asarray(alphas, dtype=np.float64),
                                             np.asarray(sigmas, dtype=np.float64), solver,
                                             None if noise is None else self._in(noise), **options))


def _torch_op(op: str) -> Callable[..., Any]:
    # Noise-level schedules (spec 15) are host data: their level arrays go in as float64 CPU tensors,
    # as a sampler hands them over, not as data on the device in the compute dtype.
    host_float64 = bool(tolerances()["ops"].get(op, {}).get("tables_always_float64"))

    def method(self: TorchAdapter, *args: Any, **kwargs: Any) -> Any:
        fn = getattr(self._ops, op)
        convert = self._host if host_float64 else self._in
        with self._ops.validation(self.validation):
            return self._out(fn(*(convert(a) for a in args), **{k: convert(v) for k, v in kwargs.items()}))

    method.__name__ = op
    method.__doc__ = f"vdm.backends.torch.ops.{op} on NumPy arrays."
    return method


for _op in OPS:
    if not hasattr(TorchAdapter, _op):
        setattr(TorchAdapter, _op, _torch_op(_op))
