"""Spec section 18 on torch tensors: replacement and reconstruction guidance as x0-denoiser wrappers.

Mirrors ``vdm_ref.conditioning`` name for name. The difference is the Jacobian: the reference takes a
vector-Jacobian callable, here it defaults to autograd through the denoiser (one forward pass with
gradient tracking, one backward pass per call), and runs even inside ``torch.no_grad`` (the 7.6 loop
samples under it). Weights and observed-frame masks may differ per sample.

Batched autograd gives each sample its own gradient only if the denoiser treats samples
independently (no batch statistics, no attention across the batch), as vdm's networks do.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

import vdm_ref

from . import _checks
from .schedules import TorchSchedule

Level = Tensor | float
Denoiser = Callable[[Tensor, Level, Level], Tensor]
"""``denoise(z, alpha, sigma) -> x0_hat``: alpha, sigma are numbers or (B,) tensors (spec 18.4)."""

Vjp = Callable[[Tensor, Level, Level, Tensor], Tensor]
"""``vjp(z, alpha, sigma, c) -> c^T d x0_hat / d z``, shaped like z (spec 18.3)."""


# ----------------------------------------------------------------------------------- 18.1 masks


def extension_frames(frames: int, given: int) -> tuple[int, ...]:
    """Spec 18.1: extension observes the first ``given`` frames, b = (0, .., given - 1)."""
    if not 0 < given < frames:
        raise ValueError(f"argument 'given' must lie in [1, frames - 1] = [1, {frames - 1}], got {given}")
    return tuple(range(given))


def interpolation_frames(frames: int, factor: int) -> tuple[int, ...]:
    """Spec 18.1: interpolation by ``factor`` observes every factor-th frame, b = (0, k, 2k, ..)."""
    if not 2 <= factor < frames:
        raise ValueError(f"argument 'factor' must lie in [2, frames - 1] = [2, {frames - 1}], got {factor}")
    return tuple(range(0, frames, factor))


def frame_mask(
    frames: int,
    observed: Sequence[int] | Sequence[Sequence[int]],
    ndim: int = 5,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Spec 18.1: m = 1 on observed frames, 0 on generated ones, shaped (B, 1, F, 1, ..) for a
    (B, C, F, ...) latent of rank ``ndim``; one index list (B = 1) or one list per sample."""
    rows = [observed] if all(isinstance(i, numbers.Integral) for i in observed) else list(observed)
    mask = torch.zeros((len(rows), 1, frames) + (1,) * (ndim - 3), dtype=dtype)
    for row, idx in enumerate(rows):
        idx = [int(i) for i in idx]
        if any(not 0 <= i < frames for i in idx):
            raise ValueError(f"argument 'observed' must hold frame indices in [0, {frames - 1}], got {idx}")
        mask[row, 0, idx] = 1.0
    return mask.to(device)


def _mask(mask: Tensor, x: Tensor) -> Tensor:
    m = _checks.data("mask", mask)
    if _checks.inspect(m) and not bool(((m == 0) | (m == 1)).all()):
        raise ValueError("argument 'mask' must hold only 0 (generated) and 1 (observed)")
    try:
        torch.broadcast_shapes(m.shape, x.shape)
    except RuntimeError:
        raise ValueError(
            f"argument 'mask' of shape {tuple(m.shape)} does not broadcast against {tuple(x.shape)}"
        ) from None
    return m.to(dtype=x.dtype, device=x.device)


def _level(v: Level, x: Tensor) -> Level:
    """A noise level or weight: a number, or a (B,) tensor reshaped to broadcast per sample."""
    if isinstance(v, Tensor):
        return _checks.per_sample(v.to(dtype=x.dtype, device=x.device), x.ndim)
    return float(v)


# ----------------------------------------------------------------------------- 18.2 replacement


def replace_observed(z: Tensor, x_obs: Tensor, mask: Tensor, alpha: Level, sigma: Level, noise: Tensor) -> Tensor:
    """Spec 18.2: z' = (1 - m) z + m (alpha x^b + sigma eps)."""
    z, x_obs, noise = _checks.data("z", z), _checks.data("x_obs", x_obs), _checks.data("noise", noise)
    _checks.same_shape(z=z, x_obs=x_obs, noise=noise)
    m = _mask(mask, z)
    forward = _level(alpha, z) * x_obs.to(z.dtype) + _level(sigma, z) * noise.to(z.dtype)
    return (1.0 - m) * z + m * forward


def with_replacement(denoise: Denoiser, x_obs: Tensor, mask: Tensor, noise: Tensor) -> Denoiser:
    """Spec 18.2 as a denoiser wrapper: call k sees replace_observed(z, .., noise[k]); ``noise`` is
    (K, *z.shape), K = 1 reusing one eps for every call, else call K is an error."""
    noise = _checks.data("noise", noise)
    calls = [0]

    def replaced(z: Tensor, alpha: Level, sigma: Level) -> Tensor:
        k = 0 if noise.shape[0] == 1 else calls[0]
        if k >= noise.shape[0]:
            raise ValueError(f"argument 'noise' holds {noise.shape[0]} replacement draws; call {k + 1} needs one more")
        calls[0] += 1
        return denoise(replace_observed(z, x_obs, mask, alpha, sigma, noise[k]), alpha, sigma)

    return replaced


# ------------------------------------------------------------------- 18.3 reconstruction guidance


def reconstruction_residual(x_obs: Tensor, x0_hat: Tensor, mask: Tensor) -> Tensor:
    """Spec 18.3: r = m (x^b - x0_hat); -2 J^T r is the gradient of ||x^b - x0_hat^b(z)||^2 in z."""
    x_obs, x0_hat = _checks.data("x_obs", x_obs), _checks.data("x0_hat", x0_hat)
    _checks.same_shape(x_obs=x_obs, x0_hat=x0_hat)
    return _mask(mask, x0_hat) * (x_obs.to(x0_hat.dtype) - x0_hat)


def reconstruction_guided_x0(
    x0_hat: Tensor, jtr: Tensor, x_obs: Tensor, mask: Tensor, alpha: Level, weight: Level
) -> Tensor:
    """Spec 18.3: x0~ = m x^b + (1 - m) (x0_hat + w_r alpha J^T r); ``weight`` is a number or (B,)."""
    x0_hat, jtr = _checks.data("x0_hat", x0_hat), _checks.data("jtr", jtr)
    _checks.same_shape(x0_hat=x0_hat, jtr=jtr)
    m = _mask(mask, x0_hat)
    step = _level(weight, x0_hat) * _level(alpha, x0_hat)
    return m * x_obs.to(x0_hat.dtype) + (1.0 - m) * (x0_hat + step * jtr.to(x0_hat.dtype))


def _denoise_and_jtr(
    denoise: Denoiser, vjp: Vjp | None, z: Tensor, alpha: Level, sigma: Level, x_obs: Tensor, mask: Tensor
) -> tuple[Tensor, Tensor]:
    """x0_hat and J^T r at z: from ``vjp`` when given, else by autograd on one forward pass."""
    if vjp is not None:
        x0_hat = denoise(z, alpha, sigma)
        return x0_hat, vjp(z, alpha, sigma, reconstruction_residual(x_obs, x0_hat, mask))
    with torch.enable_grad():
        leaf = z.detach().requires_grad_(True)
        x0_hat = denoise(leaf, alpha, sigma)
        residual = reconstruction_residual(x_obs, x0_hat.detach(), mask)
        (jtr,) = torch.autograd.grad(x0_hat, leaf, grad_outputs=residual)
    return x0_hat.detach(), jtr


def with_reconstruction_guidance(
    denoise: Denoiser, x_obs: Tensor, mask: Tensor, weight: Level, vjp: Vjp | None = None
) -> Denoiser:
    """Spec 18.3 as a denoiser wrapper: the guided prediction x0~ for whichever solver runs.
    ``vjp`` None: J^T r by autograd through ``denoise``."""

    def guided(z: Tensor, alpha: Level, sigma: Level) -> Tensor:
        x0_hat, jtr = _denoise_and_jtr(denoise, vjp, z, alpha, sigma, x_obs, mask)
        return reconstruction_guided_x0(x0_hat, jtr, x_obs, mask, alpha, weight)

    return guided


# ---------------------------------------------------------------------- 18.4 / 18.6 the loop ends


def denoiser_as_vp_model(denoise: Denoiser, sched: TorchSchedule) -> Callable[[Tensor, Tensor], Tensor]:
    """Spec 18.4: a (wrapped) denoiser as the x0-prediction model of the 7.6 loop on a vp schedule,
    alpha = sqrt(abar_t), sigma = sqrt(1 - abar_t) per sample; run ``sample(.., prediction="x0")``."""

    def model(x_t: Tensor, t: Tensor) -> Tensor:
        return denoise(x_t, sched.sqrt_abar[t], sched.sqrt_one_minus_abar[t])

    return model


def denoiser_on_grid(denoise: Denoiser, alphas: Sequence[float] | Tensor, sigmas: Sequence[float] | Tensor
            ) -> Callable[[Tensor, int], Tensor]:
    """Spec 18.4: a (wrapped) denoiser as a solver's level-indexed ``denoise(x, i)`` (section 17)."""
    a = [float(v) for v in alphas]  # host numbers: one grid, read once
    s = [float(v) for v in sigmas]

    def at_level(x: Tensor, i: int) -> Tensor:
        return denoise(x, a[i], s[i])

    return at_level


def keep_observed(x: Tensor, x_obs: Tensor, mask: Tensor) -> Tensor:
    """Spec 18.6: the output's observed frames are the given frames, x = (1 - m) x + m x^b."""
    x, x_obs = _checks.data("x", x), _checks.data("x_obs", x_obs)
    _checks.same_shape(x=x, x_obs=x_obs)
    m = _mask(mask, x)
    return (1.0 - m) * x + m * x_obs.to(x.dtype)


# ------------------------------------------------------------------ 18.8 conditional-frame models


def given_level(process: vdm_ref.Process) -> float:
    """Spec 18.8: the given frames' level, a float64 host constant (``vdm_ref.given_level``)."""
    return vdm_ref.given_level(process)


def given_frame_inputs(process: vdm_ref.Process, x_in: Tensor, condition: Tensor | float, x_obs: Tensor,
                       mask: Tensor) -> tuple[Tensor, Tensor]:
    """Spec 18.8: what a conditional-frame network sees, as ``vdm_ref.given_frame_inputs``: the observed
    frames noise-free at the given level (its input scale and condition are float64 host constants),
    the generated frames as ``x_in`` with ``condition``. Returns (input, per-frame condition (B, F))."""
    x_in, x_obs = _checks.data("x_in", x_in), _checks.data("x_obs", x_obs)
    _checks.same_shape(x_in=x_in, x_obs=x_obs)
    m = _mask(mask, x_in)
    level = given_level(process)
    scale = float(vdm_ref.input_scale(process.family, level, sigma_data=process.sigma_data))
    c_given = float(vdm_ref.network_condition(process.family, level, sigma_data=process.sigma_data))
    b, f = x_in.shape[0], x_in.shape[2]
    c = torch.as_tensor(condition, dtype=torch.float64, device=x_in.device).expand(b)
    frame_m = m.reshape(m.shape[0], m.shape[2]).expand(b, f) > 0
    return (1.0 - m) * x_in + m * (scale * x_obs.to(x_in.dtype)), torch.where(frame_m, c_given, c[:, None])

