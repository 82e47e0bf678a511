"""Argument validation shared by the reference modules.

Every error names the offending argument, so a caller (or a backend author running the
conformance kit) can see at once what to fix.
"""

from __future__ import annotations

import numpy as np


def as_float64(name: str, x: object, *, finite: bool = True) -> np.ndarray:
    """Return ``x`` as a float64 array, rejecting non-numeric or non-finite input."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"argument '{name}' must be a numeric array: {exc}") from None
    if finite and not np.all(np.isfinite(arr)):
        raise ValueError(f"argument '{name}' contains NaN or Inf; the spec requires finite values")
    return arr


def noise_block(noise: np.ndarray | np.random.Generator, full: tuple[int, ...], rule: str) -> np.ndarray:
    """A sampling loop's noise of shape ``full``: drawn in one ``standard_normal`` call from a
    Generator, or a given array checked against ``full`` (``rule`` says how the shape is formed)."""
    if isinstance(noise, np.random.Generator):
        return noise.standard_normal(full)
    arr = as_float64("noise", noise)
    if arr.shape != full:
        raise ValueError(f"argument 'noise' must have shape {rule} = {full}, got {arr.shape}")
    return arr


def same_shape(**arrays: np.ndarray) -> None:
    """Require every named array to have the shape of the first."""
    (first, ref), *rest = arrays.items()
    for name, arr in rest:
        if arr.shape != ref.shape:
            raise ValueError(
                f"argument '{name}' has shape {arr.shape} but '{first}' has shape {ref.shape}; "
                "they must match"
            )


def timesteps(name: str, t: object, T: int, batch: int | None, *, allow_minus_one: bool) -> np.ndarray:
    """Validate integer timesteps: a scalar or a (B,) vector in [0, T-1] (or -1 if allowed)."""
    arr = np.asarray(t)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"argument '{name}' must hold integer timesteps, got {arr!r}")
    elif arr.dtype.kind not in "iu":
        raise TypeError(f"argument '{name}' must hold integer timesteps, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.ndim > 1:
        raise ValueError(f"argument '{name}' must be a scalar or a (B,) vector, got shape {arr.shape}")
    if batch is not None:
        if arr.ndim == 0:
            arr = np.full((batch,), int(arr), dtype=np.int64)
        elif arr.shape[0] != batch:
            raise ValueError(
                f"argument '{name}' has {arr.shape[0]} entries but the batch has {batch}"
            )
    lo = -1 if allow_minus_one else 0
    if np.any(arr < lo) or np.any(arr > T - 1):
        raise ValueError(
            f"argument '{name}' must lie in [{lo}, {T - 1}] for a schedule of T={T}, got "
            f"{np.unique(arr[(arr < lo) | (arr > T - 1)]).tolist()}"
        )
    return arr


def batch_of(name: str, x: np.ndarray) -> int:
    if x.ndim < 1:
        raise ValueError(f"argument '{name}' must have a leading batch axis, got a scalar")
    return x.shape[0]


def per_sample(values: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape a (B,) vector so that it broadcasts against a (B, ...) array of rank ``ndim``."""
    return values.reshape(values.shape + (1,) * (ndim - values.ndim))
