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

from .protocol import DTYPES, OPS, round_to_dtype


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

    @functools.wraps(fn)
    def method(self: NumpyAdapter, *args: Any, **kwargs: Any) -> Any:
        return _round_outputs(fn(*args, **kwargs), self.dtype)

    return method


for _op in OPS:
    if not hasattr(NumpyAdapter, _op):
        setattr(NumpyAdapter, _op, _numpy_op(_op))
