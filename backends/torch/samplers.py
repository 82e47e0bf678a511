"""Spec section 7 on torch tensors: x0 processing, DDPM and DDIM steps, guidance, the sampling loop.

Mirrors ``vdm_ref.samplers``. The steps never branch on tensor values: the "no noise after the last
step" rule is a per-sample mask, and (s, t) coefficients are (B,) vectors computed in float64 and
cast. The loop reads its timesteps on the host once, before the first step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from . import _checks
from ._checks import TimeArg
from .diffusion import (
    abar_pair,
    eps_from_x0,
    model_logvar_batched,
    predict_x0_eps,
    split_model_output,
)
from .schedules import TorchSchedule
from .timesteps import step_pairs

Model = Callable[[Tensor, Tensor], Tensor]


def clip_x0(x0: Tensor, limit: float = 1.0) -> Tensor:
    """Spec 7.1: static clipping, x0 <- clip(x0, -limit, limit)."""
    if not limit > 0:
        raise ValueError(f"argument 'limit' must be > 0, got {limit}")
    return torch.clamp(_checks.data("x0", x0), -limit, limit)


def dynamic_threshold(x0: Tensor, quantile: float = 0.995, floor: float = 1.0) -> Tensor:
    """Spec 7.2: per sample b, s_b = max(quantile_p(|x0_b|), floor) over all channels and frames
    (linear interpolation between order statistics); x0_b <- clip(x0_b, -s_b, s_b) / s_b."""
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"argument 'quantile' must lie in (0, 1], got {quantile}")
    x0 = _checks.data("x0", x0)
    out, op = _checks.dtypes(x0)
    flat = x0.reshape(_checks.batch_of("x0", x0), -1).abs().to(op)
    n = flat.shape[1]
    # The interpolation position depends on shapes only, so it is host arithmetic; kthvalue avoids
    # torch.quantile's input-size limit and a full sort.
    pos = quantile * (n - 1)
    lo = min(int(math.floor(pos)), n - 1)
    frac = pos - lo
    below = flat.kthvalue(lo + 1, dim=1).values
    above = flat.kthvalue(lo + 2, dim=1).values if lo + 1 < n else below
    s = torch.clamp(below + (above - below) * frac, min=floor)
    s = _checks.per_sample(s, x0.ndim)
    xo = x0.to(op)
    return (torch.minimum(torch.maximum(xo, -s), s) / s).to(out)


def process_x0(x0: Tensor, clip: float | None = None, threshold: float | None = None) -> Tensor:
    """Spec 7.1 / 7.2: dynamic thresholding (if ``threshold`` is a quantile), then clipping (if ``clip``)."""
    if threshold is not None:
        x0 = dynamic_threshold(x0, threshold)
    if clip is not None:
        x0 = clip_x0(x0, clip)
    return x0


def _noise_needed(ss: TimeArg, noise: Tensor | None, what: str) -> bool:
    """Whether the stochastic term applies; raises if it does and ``noise`` is missing.

    With a tensor ``s`` and no noise this reads s on the host once (the loop always passes noise).
    """
    if noise is not None:
        return not (isinstance(ss, int) and ss < 0)
    if isinstance(ss, int):
        stochastic = ss >= 0
    else:
        stochastic = bool((ss >= 0).any())
    if stochastic:
        raise ValueError(f"argument 'noise' is required: {what}")
    return False


def ddpm_step(
    sched: TorchSchedule,
    x_t: Tensor,
    t: TimeArg,
    s: TimeArg,
    out: Tensor,
    noise: Tensor | None,
    *,
    prediction: str = "eps",
    variance: str = "fixed_small",
    clip: float | None = None,
    threshold: float | None = None,
) -> Tensor:
    """Spec 7.3: ancestral step x_s = mu(x0_hat, x_t) + [s >= 0] exp(logvar / 2) noise."""
    x_t = _checks.data("x_t", x_t, sched)
    b = _checks.batch_of("x_t", x_t)
    tt = _checks.timesteps("t", t, sched, b, allow_minus_one=False)
    ss = _checks.timesteps("s", s, sched, b, allow_minus_one=True)
    pred, var_values = split_model_output(out, x_t.shape[1])
    if variance == "learned_range" and var_values is None:
        raise ValueError("variance 'learned_range' needs a model output with 2C channels")
    x0, _ = predict_x0_eps(sched, x_t, tt, pred, prediction)
    x0 = process_x0(x0, clip, threshold)
    a_s, a_t, _ = abar_pair(sched, ss, tt, b)
    logvar = model_logvar_batched(sched, ss, tt, variance, var_values, b)
    dt, op = _checks.dtypes(x_t, pred)
    beta = 1.0 - a_t / a_s
    c0 = _checks.per_sample((torch.sqrt(a_s) * beta / (1.0 - a_t)).to(op), x_t.ndim)
    ct = _checks.per_sample((torch.sqrt(a_t / a_s) * (1.0 - a_s) / (1.0 - a_t)).to(op), x_t.ndim)
    mean = c0 * x0.to(op) + ct * x_t.to(op)
    if not _noise_needed(ss, noise, "this DDPM step is stochastic (s >= 0)"):
        return mean.to(dt)
    noise = _checks.data("noise", noise, sched)
    _checks.same_shape(x_t=x_t, noise=noise)
    std = torch.exp(0.5 * _checks.per_sample(logvar.to(op), x_t.ndim))
    if isinstance(ss, Tensor):  # no noise after the last step, per sample
        std = std * _checks.per_sample((ss >= 0).to(op), x_t.ndim)
    return (mean + std * noise.to(op)).to(dt)


def _ddim_sigma64(a_s: Tensor, a_t: Tensor, eta: float) -> Tensor:
    return eta * torch.sqrt((1.0 - a_s) / (1.0 - a_t)) * torch.sqrt(1.0 - a_t / a_s)


def ddim_sigma(sched: TorchSchedule, t: TimeArg, s: TimeArg, eta: float) -> Tensor:
    """Spec 7.4: sigma = eta * sqrt((1 - abar_s) / (1 - abar_t)) * sqrt(1 - abar_t / abar_s)."""
    tt = _checks.timesteps("t", t, sched, None, allow_minus_one=False)
    ss = _checks.timesteps("s", s, sched, None, allow_minus_one=True)
    a_t, a_s = sched.abar_ext64[tt + 1], sched.abar_ext64[ss + 1]
    return _ddim_sigma64(a_s, a_t, eta).to(sched.dtype)


def ddim_direction_variance(a_t: Tensor, a_s: Tensor, eta: float) -> Tensor:
    """Spec 7.4: the eps_hat coefficient squared, 1 - abar_s - sigma^2, without cancellation:
    (1 - abar_s) * ((1 - eta^2) + eta^2 * abar_t (1 - abar_s) / (abar_s (1 - abar_t))); exactly 0 where it
    should be (eta = 1 at abar_t = 0). Takes abar values (tensors), like the reference."""
    return (1.0 - a_s) * ((1.0 - eta**2) + eta**2 * a_t * (1.0 - a_s) / (a_s * (1.0 - a_t)))


def final_abar_one(s: TimeArg) -> TimeArg:
    """Spec 7.4 ``final_abar = "one"`` (default): the last step lands on abar_{-1} = 1 (1.2)."""
    return s


def final_abar_first(s: TimeArg) -> TimeArg:
    """Spec 7.4 ``final_abar = "abar_0"``: s = -1 reads as s = 0 in every formula of the step."""
    return s.clamp(min=0) if isinstance(s, Tensor) else max(s, 0)


FINAL_ABAR: dict[str, Callable[[TimeArg], TimeArg]] = {"one": final_abar_one, "abar_0": final_abar_first}


def clipped_eps_rederive(sched: TorchSchedule, x_t: Tensor, t: TimeArg, x0: Tensor, eps: Tensor) -> Tensor:
    """Spec 7.4 ``clipped_eps = "rederive"`` (default): eps_hat <- 4.2(x_t, processed x0_hat)."""
    return eps_from_x0(sched, x_t, t, x0)


def clipped_eps_keep(sched: TorchSchedule, x_t: Tensor, t: TimeArg, x0: Tensor, eps: Tensor) -> Tensor:
    """Spec 7.4 ``clipped_eps = "keep"``: eps_hat stays the one of 4.5, before processing."""
    return eps


CLIPPED_EPS: dict[str, Callable[..., Tensor]] = {"rederive": clipped_eps_rederive, "keep": clipped_eps_keep}


def _choice(name: str, value: str, table: dict) -> Callable:
    if value not in table:
        raise ValueError(f"argument '{name}': unknown value {value!r}; choose one of {tuple(table)}")
    return table[value]


def ddim_step(
    sched: TorchSchedule,
    x_t: Tensor,
    t: TimeArg,
    s: TimeArg,
    out: Tensor,
    noise: Tensor | None = None,
    *,
    prediction: str = "eps",
    eta: float = 0.0,
    clip: float | None = None,
    threshold: float | None = None,
    final_abar: str = "one",
    clipped_eps: str = "rederive",
) -> Tensor:
    """Spec 7.4: x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma noise.

    A clipped/thresholded x0_hat gets eps_hat re-derived (4.2) unless ``clipped_eps="keep"``;
    ``final_abar="abar_0"`` lands s = -1 on abar_0; variance channels are ignored; eta = 0 is
    deterministic and needs no noise."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"argument 'eta' must lie in [0, 1], got {eta}")
    land = _choice("final_abar", final_abar, FINAL_ABAR)
    eps_rule = _choice("clipped_eps", clipped_eps, CLIPPED_EPS)
    x_t = _checks.data("x_t", x_t, sched)
    b = _checks.batch_of("x_t", x_t)
    tt = _checks.timesteps("t", t, sched, b, allow_minus_one=False)
    ss = _checks.timesteps("s", s, sched, b, allow_minus_one=True)
    _, a_t, _ = abar_pair(sched, ss, tt, b)
    ss = land(ss)
    a_s = sched.abar_ext64[ss + 1]
    pred, _ = split_model_output(out, x_t.shape[1])
    x0, eps = predict_x0_eps(sched, x_t, tt, pred, prediction)
    if clip is not None or threshold is not None:
        x0 = process_x0(x0, clip, threshold)
        eps = eps_rule(sched, x_t, tt, x0, eps)
    dt, op = _checks.dtypes(x_t, pred)
    sigma = _ddim_sigma64(a_s, a_t, eta)
    c_eps = torch.sqrt(ddim_direction_variance(a_t, a_s, eta))  # float64 (B,) coefficients, cast below
    x_s = (_checks.per_sample(torch.sqrt(a_s).to(op), x_t.ndim) * x0.to(op)
           + _checks.per_sample(c_eps.to(op), x_t.ndim) * eps.to(op))
    if eta == 0.0 or not _noise_needed(ss, noise, "DDIM with eta > 0 is stochastic"):
        return x_s.to(dt)
    noise = _checks.data("noise", noise, sched)
    _checks.same_shape(x_t=x_t, noise=noise)
    return (x_s + _checks.per_sample(sigma.to(op), x_t.ndim) * noise.to(op)).to(dt)


def classifier_free_guidance(
    out_cond: Tensor, out_uncond: Tensor, scale: float, channels: int | None = None
) -> Tensor:
    """Spec 7.5: out = out_uncond + w (out_cond - out_uncond) on the first ``channels`` channels
    (all if None); further channels (learned variance) are taken from out_cond."""
    cond, uncond = _checks.data("out_cond", out_cond), _checks.data("out_uncond", out_uncond)
    _checks.same_shape(out_cond=cond, out_uncond=uncond)
    if cond.ndim < 2:
        raise ValueError(f"argument 'out_cond' must have a channel axis (B, C, ...), got shape {tuple(cond.shape)}")
    c = cond.shape[1] if channels is None else channels
    if not 0 < c <= cond.shape[1]:
        raise ValueError(f"argument 'channels' must lie in [1, {cond.shape[1]}], got {channels}")
    dt, op = _checks.dtypes(cond, uncond)
    u = uncond[:, :c].to(op)
    guided = (u + scale * (cond[:, :c].to(op) - u)).to(dt)
    return guided if c == cond.shape[1] else torch.cat([guided, cond[:, c:].to(dt)], dim=1)


def sampling_noise(
    noise: Tensor | torch.Generator,
    n_steps: int,
    shape: Sequence[int],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Spec 7.6: the loop's noise, shape (N + 1, *shape): entry 0 is x_T, entry i + 1 is step i's noise.
    A Generator draws ``torch.randn((N + 1, *shape))`` on its own device (dtype default float32)."""
    full = (n_steps + 1, *(int(d) for d in shape))
    return _checks.noise_block(noise, full, "(N + 1, *shape)", dtype=dtype, device=device)


@torch.no_grad()
def sample(
    model: Model,
    sched: TorchSchedule,
    timesteps: Tensor | Sequence[int],
    shape: Sequence[int],
    noise: Tensor | torch.Generator,
    *,
    sampler: str = "ddim",
    prediction: str = "eps",
    variance: str = "fixed_small",
    eta: float = 0.0,
    clip: float | None = None,
    threshold: float | None = None,
    final_abar: str = "one",
    clipped_eps: str = "rederive",
    progress: Callable[[int, int], None] | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Spec 7.6: start from x = noise[0] and apply one step per (t, s) pair of spec 6.4; returns x_{-1}.

    ``model(x_t, t)`` gets x_t (``dtype``, default the schedule's, ``shape``) and t (int64, (B,)) and
    returns the prediction (C or 2C channels). ``progress(done, total)`` is called after each step.
    Runs under ``torch.no_grad``.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"argument 'sampler': unknown sampler {sampler!r}; choose one of {tuple(SAMPLERS)}")
    pairs = step_pairs(timesteps)  # the loop's only host read of tensor values
    steps = [t for t, _ in pairs]
    if not steps or any(b >= a for a, b in zip(steps, steps[1:], strict=False)):
        raise ValueError("argument 'timesteps' must be a non-empty, strictly decreasing sequence (spec 6)")
    bad = sorted({t for t in steps if not 0 <= t <= sched.T - 1})
    if bad:
        raise ValueError(f"argument 'timesteps' must lie in [0, {sched.T - 1}] (schedule T={sched.T}), got {bad}")
    shape = tuple(int(d) for d in shape)
    dtype = dtype or sched.dtype
    z = sampling_noise(noise, len(steps), shape, dtype=dtype, device=sched.device)
    row = SAMPLERS[sampler]
    options = {"variance": variance, "eta": eta, "final_abar": final_abar, "clipped_eps": clipped_eps}
    extra = {k: v for k, v in options.items() if k in row.options}
    x = z[0]
    for i, (t, s) in enumerate(pairs):
        out = model(x, torch.full((shape[0],), t, dtype=torch.int64, device=sched.device))
        out = _checks.data("out", out).to(dtype)
        x = row.step(sched, x, t, s, out, z[i + 1], prediction=prediction, clip=clip, threshold=threshold, **extra)
        if progress is not None:
            progress(i + 1, len(pairs))
    return x



@dataclass(frozen=True)
class Sampler:
    """A row of the sampler table (spec 7.6), as in vdm_ref: the step and the loop options it takes."""

    step: Callable[..., Tensor]
    options: tuple[str, ...]


SAMPLERS: dict[str, Sampler] = {
    "ddpm": Sampler(ddpm_step, ("variance",)),  # spec 7.3
    "ddim": Sampler(ddim_step, ("eta", "final_abar", "clipped_eps")),  # spec 7.4
}

__all__ = [
    "SAMPLERS", "clip_x0", "dynamic_threshold", "process_x0", "ddpm_step", "ddim_sigma", "ddim_direction_variance",
    "ddim_step",
    "classifier_free_guidance", "sampling_noise", "sample",
]
