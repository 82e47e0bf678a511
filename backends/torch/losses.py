"""Spec section 8 on torch tensors: training objectives.

Mirrors ``vdm_ref.losses``. Losses are per-sample (B,) vectors in the arithmetic dtype (float64 for
float64 data, float32 otherwise, so half-precision models still get a float32 loss); everything is
differentiable, and no loss reads tensor values on the host.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import _checks
from ._checks import TimeArg
from .diffusion import (
    abar_pair,
    check_prediction,
    forward_terms,
    model_logvar_batched,
    posterior_coefs64,
    posterior_logvar64,
    predict_x0_eps,
    q_sample,
    split_model_output,
)
from .schedules import TorchSchedule

_LOG2 = math.log(2.0)


def _target(sched: TorchSchedule, x0: Tensor, t: TimeArg, noise: Tensor, prediction: str) -> Tensor:
    """training_target in the arithmetic dtype (no rounding to a half type before the loss)."""
    check_prediction(prediction)
    if prediction == "eps":
        noise = _checks.data("noise", noise, sched)
        return noise.to(_checks.dtypes(noise)[1])
    if prediction == "x0":
        x0 = _checks.data("x0", x0, sched)
        return x0.to(_checks.dtypes(x0)[1])
    return forward_terms(sched, x0, t, noise, v=True)[0]


def training_target(sched: TorchSchedule, x0: Tensor, t: TimeArg, noise: Tensor, prediction: str) -> Tensor:
    """Spec 8.1: the regression target: eps (the noise), x0, or v (3.3). Differentiable."""
    target = _target(sched, x0, t, noise, prediction)
    dt = {"eps": lambda: noise.dtype, "x0": lambda: x0.dtype, "v": lambda: _checks.dtypes(x0, noise)[0]}[prediction]()
    return target.to(dt)


def _min_snr64(sched: TorchSchedule, tt: TimeArg, prediction: str, gamma: float) -> Tensor:
    snr = sched.abar64[tt] / (1.0 - sched.abar64[tt])
    if prediction == "eps":
        return torch.clamp(gamma / snr, max=1.0)  # gamma / 0 = inf -> 1 at zero SNR
    if prediction == "x0":
        return torch.clamp(snr, max=gamma)
    if prediction == "v":
        return torch.clamp(snr, max=gamma) / (snr + 1.0)
    raise ValueError(f"argument 'prediction': unknown prediction {prediction!r}; choose one of ('eps', 'x0', 'v')")


def min_snr_weight(sched: TorchSchedule, t: TimeArg, prediction: str, gamma: float = 5.0) -> Tensor:
    """Spec 8.2: min-SNR-gamma weights: min(1, gamma/SNR) for eps, min(SNR, gamma) for x0,
    min(SNR, gamma) / (SNR + 1) for v. Computed in float64, returned in the schedule's dtype."""
    if not gamma > 0:
        raise ValueError(f"argument 'gamma' must be > 0, got {gamma}")
    check_prediction(prediction)
    tt = _checks.timesteps("t", t, sched, None, allow_minus_one=False)
    return _min_snr64(sched, tt, prediction, gamma).to(sched.dtype)


def mean_flat(x: Tensor) -> Tensor:
    """Spec 8.1: the per-sample mean, over every axis but the batch axis."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def simple_loss(
    sched: TorchSchedule,
    x0: Tensor,
    t: TimeArg,
    noise: Tensor,
    pred: Tensor,
    prediction: str,
    min_snr_gamma: float | None = None,
) -> Tensor:
    """Spec 8.1 / 8.2: L_simple = w_t * mean((pred - target)^2) per sample, w_t = 1 or min-SNR.
    Gradients flow to ``pred`` (and to x0/noise where the target depends on them)."""
    target = _target(sched, x0, t, noise, prediction)
    pred = _checks.data("pred", pred, sched)
    _checks.same_shape(target=target, pred=pred)
    op = torch.promote_types(target.dtype, _checks.dtypes(pred)[1])
    loss = mean_flat((pred.to(op) - target.to(op)) ** 2)
    if min_snr_gamma is not None:
        if not min_snr_gamma > 0:
            raise ValueError(f"argument 'min_snr_gamma' must be > 0, got {min_snr_gamma}")
        tt = _checks.timesteps("t", t, sched, loss.shape[0], allow_minus_one=False)
        loss = loss * _min_snr64(sched, tt, prediction, min_snr_gamma).to(op)
    return loss


def _tensor(x: Tensor | float, like: Tensor) -> Tensor:
    return x if isinstance(x, Tensor) else torch.as_tensor(x, dtype=like.dtype, device=like.device)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """Spec 8.3: KL(N(m1, e^lv1) || N(m2, e^lv2)) = (lv2 - lv1 + e^(lv1 - lv2) + (m1 - m2)^2 e^-lv2 - 1) / 2."""
    like = next(x for x in (mean1, logvar1, mean2, logvar2) if isinstance(x, Tensor))
    lv1, lv2 = _tensor(logvar1, like), _tensor(logvar2, like)
    return 0.5 * (lv2 - lv1 + torch.exp(lv1 - lv2) + (mean1 - mean2) ** 2 * torch.exp(-lv2) - 1.0)


_SQRT2 = math.sqrt(2.0)


def _phi(x: Tensor) -> Tensor:
    # Not torch.special.ndtr: in torch 2.13 it loses all accuracy below x = -5 and is off by
    # ~1e-10 relative on (-5, -0.7); erfc keeps full relative precision in the lower tail.
    return torch.special.erfc(-x / _SQRT2) / 2.0


def std_normal_cdf(x: Tensor) -> Tensor:
    """Spec 8.4: Phi(x) = erfc(-x / sqrt(2)) / 2, exact (no tanh approximation)."""
    x = _checks.data("x", x)
    dt, op = _checks.dtypes(x)
    return _phi(x.to(op)).to(dt)


def _dgll(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    inv_std = torch.exp(-log_scale)
    centred = x - mean
    upper = inv_std * (centred + 1.0 / 255.0)
    lower = inv_std * (centred - 1.0 / 255.0)
    cdf_upper = _phi(upper)
    sf_lower = _phi(-lower)  # 1 - Phi(lower), without cancellation
    # Phi(upper) - Phi(lower) on the side of the distribution where it does not cancel.
    delta = torch.where(lower > 0, sf_lower - _phi(-upper), cdf_upper - _phi(lower))
    prob = torch.where(x < -0.999, cdf_upper, torch.where(x > 0.999, sf_lower, delta))
    return torch.log(torch.clamp(prob, min=1e-12))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """Spec 8.4: log P(x) for 8-bit data in [-1, 1] (bins of width 2/255) under N(mean, e^(2 log_scale));
    the lowest bin (x < -0.999) integrates from -inf, the highest (x > 0.999) to +inf; P floored at 1e-12."""
    x, mean, log_scale = _checks.data("x", x), _checks.data("mean", mean), _checks.data("log_scale", log_scale)
    dt, op = _checks.dtypes(x, mean, log_scale)
    return _dgll(x.to(op), mean.to(op), log_scale.to(op)).to(dt)


def vlb_term(
    sched: TorchSchedule,
    x0: Tensor,
    x_t: Tensor,
    t: TimeArg,
    out: Tensor,
    prediction: str,
    variance: str = "learned_range",
) -> Tensor:
    """Spec 8.5: the per-sample VLB term in bits per dimension on the full schedule (s = t - 1):
    t > 0: mean KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) / log 2;
    t = 0: -mean log P(x_0 | x_1 = x_t) (8.4, log_scale = logvar / 2) / log 2.
    The model's mean is the posterior mean (5.2) at its own x0_hat (4.5), unclipped. Both branches
    are computed and selected per sample (no host branching)."""
    x0, x_t = _checks.data("x0", x0, sched), _checks.data("x_t", x_t, sched)
    _checks.same_shape(x0=x0, x_t=x_t)
    b = _checks.batch_of("x0", x0)
    tt = _checks.timesteps("t", t, sched, b, allow_minus_one=False)
    ss = tt - 1
    pred, var_values = split_model_output(out, x_t.shape[1])
    _, op = _checks.dtypes(x0, x_t, pred, *(() if var_values is None else (var_values,)))
    x0_hat, _ = predict_x0_eps(sched, x_t, tt, pred, prediction)
    a_s, a_t, _ = abar_pair(sched, ss, tt, b)
    c0, ct = (_checks.per_sample(c.to(op), x0.ndim) for c in posterior_coefs64(a_s, a_t))
    x0o, xto = x0.to(op), x_t.to(op)
    model_mean = c0 * x0_hat.to(op) + ct * xto
    true_mean = c0 * x0o + ct * xto
    model_logvar = _checks.per_sample(model_logvar_batched(sched, ss, tt, variance, var_values, b).to(op), x0.ndim)
    model_logvar = model_logvar.expand(x0.shape)
    true_logvar = _checks.per_sample(posterior_logvar64(sched, a_s, a_t, ss).to(op), x0.ndim)
    kl = mean_flat(normal_kl(true_mean, true_logvar, model_mean, model_logvar)) / _LOG2
    nll = -mean_flat(_dgll(x0o, model_mean, 0.5 * model_logvar)) / _LOG2
    if isinstance(tt, int):
        return nll if tt == 0 else kl
    return torch.where(tt == 0, nll, kl)


def hybrid_loss(
    sched: TorchSchedule,
    x0: Tensor,
    t: TimeArg,
    noise: Tensor,
    out: Tensor,
    prediction: str,
    lam: float = 0.001,
    min_snr_gamma: float | None = None,
) -> Tensor:
    """Spec 8.6: L_hybrid = L_simple + lam * T * L_t per sample; ``out`` has 2C channels. The VLB
    term sees the mean channels detached, so its gradient reaches only the variance channels."""
    x_t = q_sample(sched, x0, t, noise)
    pred, var_values = split_model_output(out, x0.shape[1])
    if var_values is None:
        raise ValueError("hybrid_loss needs a 2C-channel model output (learned variance) in argument 'out'")
    l_simple = simple_loss(sched, x0, t, noise, pred, prediction, min_snr_gamma)
    l_vlb = vlb_term(sched, x0, x_t, t, torch.cat([pred.detach(), var_values], dim=1), prediction, "learned_range")
    return l_simple + lam * sched.T * l_vlb.to(l_simple.dtype)


__all__ = [
    "training_target", "min_snr_weight", "mean_flat", "simple_loss", "normal_kl", "std_normal_cdf",
    "discretized_gaussian_log_likelihood", "vlb_term", "hybrid_loss",
]
