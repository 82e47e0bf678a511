"""Spec sections 8 and 16 on torch tensors: training objectives.

Mirrors ``vdm_ref.losses``. Losses are per-sample (B,) vectors in the arithmetic dtype (float64 for
float64 data, float32 otherwise, so half-precision models still get a float32 loss); everything is
differentiable, and no loss reads tensor values on the host.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

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
from .processes import SIGMA_DATA, check_alpha_sigma, check_sigma_data, from_x0_eps
from .schedules import TorchSchedule
from .sigmas import flow_shift

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
    for name, a in (("mean1", mean1), ("logvar1", logvar1), ("mean2", mean2), ("logvar2", logvar2)):
        if isinstance(a, Tensor):
            _checks.data(name, a)  # finiteness under the "full" validation policy (spec 1.7)
        elif _checks.full() and not math.isfinite(float(a)):
            raise ValueError(f"argument '{name}' contains NaN or Inf; the spec requires finite values")
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


# --- Spec section 16: training objectives for every noise process --------------------------------

EDM_P_MEAN, EDM_P_STD = -1.2, 1.2  # Karras et al. 2022, Table 1 (restated, as vdm_ref)


def _uniform(u: Any, *, open_left: bool = False) -> tuple[Tensor, torch.dtype]:
    """Uniform draws as float64 and the dtype results take (u's floating dtype; float64 for numbers)."""
    res = u.dtype if isinstance(u, Tensor) and u.is_floating_point() else torch.float64
    u64 = torch.as_tensor(u).to(torch.float64)
    bad = (u64 <= 0) if open_left else (u64 < 0)
    if _checks.inspect(u64) and bool((bad | (u64 >= 1) | torch.isnan(u64)).any()):
        raise ValueError("argument 'u' must lie in (0, 1): u = 0 would give sigma = 0" if open_left
                         else "argument 'u' must lie in [0, 1) (uniform draws)")
    return u64, res


def normal_quantile(u: Any) -> Tensor:
    """Spec 16.1: Phi^-1(u) for u in [0, 1) (-inf at 0), in float64 (torch.special.ndtri)."""
    u64, res = _uniform(u)
    return torch.special.ndtri(u64).to(res)


def flow_level_uniform(u: Tensor) -> Tensor:
    """Spec 16.1 uniform: s = u."""
    return u.clone()


def flow_level_logit_normal(u: Tensor, m: float, s: float) -> Tensor:
    """Spec 16.1 logit_normal(m, s): s = sigmoid(m + s Phi^-1(u))."""
    if not (math.isfinite(m) and math.isfinite(s) and s > 0):
        raise ValueError(f"logit_normal needs a finite 'm' and 's' > 0, got m={m}, s={s}")
    return torch.sigmoid(m + s * torch.special.ndtri(u))


def flow_level_mode(u: Tensor, scale: float) -> Tensor:
    """Spec 16.1 mode(scale): s = 1 - u - scale (cos^2(pi u / 2) - 1 + u)."""
    if not -1.0 <= scale <= 2.0 / (math.pi - 2.0):
        raise ValueError(f"mode needs -1 <= 'scale' <= 2 / (pi - 2) (monotone), got {scale}")
    return 1.0 - u - scale * (torch.cos(0.5 * math.pi * u) ** 2 - 1.0 + u)


FLOW_DENSITIES: dict[str, Callable[..., Tensor]] = {
    "uniform": flow_level_uniform,
    "logit_normal": flow_level_logit_normal,
    "mode": flow_level_mode,
}
FLOW_DENSITY_PARAMS: dict[str, dict[str, float]] = {
    "uniform": {}, "logit_normal": {"m": 0.0, "s": 1.0}, "mode": {"scale": 1.29},
}


def flow_level_from_uniform(u: Any, density: str = "uniform", shift: float = 1.0, **params: float) -> Tensor:
    """Spec 16.1: flow training levels from uniform draws: the density's map, then the 15.2 shift once."""
    if density not in FLOW_DENSITIES:
        raise ValueError(f"argument 'density': unknown density {density!r}; choose one of {tuple(FLOW_DENSITIES)}")
    unknown = set(params) - set(FLOW_DENSITY_PARAMS[density])
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for density {density!r}; "
                         f"it takes {sorted(FLOW_DENSITY_PARAMS[density])}")
    u64, res = _uniform(u)
    s = FLOW_DENSITIES[density](u64, **{**FLOW_DENSITY_PARAMS[density], **{k: float(v) for k, v in params.items()}})
    s = s.clamp(0.0, 1.0)
    return (s if shift == 1.0 else flow_shift(s, shift)).to(res)


def edm_sigma_from_uniform(u: Any, p_mean: float = EDM_P_MEAN, p_std: float = EDM_P_STD) -> Tensor:
    """Spec 16.1: ln(sigma) = P_mean + P_std Phi^-1(u), u in (0, 1)."""
    u64, res = _uniform(u, open_left=True)
    if not (math.isfinite(p_mean) and math.isfinite(p_std) and p_std > 0):
        raise ValueError(f"arguments 'p_mean' (finite) and 'p_std' (> 0) required, got {p_mean}, {p_std}")
    return torch.exp(p_mean + p_std * torch.special.ndtri(u64)).to(res)


def vp_timestep_from_uniform(u: Any, T: int) -> Tensor:
    """Spec 16.1: t = min(floor(u T), T - 1) (int64)."""
    u64, _ = _uniform(u)
    if isinstance(T, bool) or not isinstance(T, int) or T < 2:
        raise ValueError(f"argument 'T' must be an integer >= 2, got {T!r}")
    return torch.clamp(torch.floor(u64 * T), max=T - 1).to(torch.int64)


def edm_loss_weight(sigma: Any, sigma_data: float = SIGMA_DATA) -> Tensor:
    """Spec 16.3: lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2."""
    res = sigma.dtype if isinstance(sigma, Tensor) and sigma.is_floating_point() else torch.float64
    s = torch.as_tensor(sigma).to(torch.float64)
    if _checks.inspect(s) and not bool((torch.isfinite(s) & (s > 0)).all()):
        raise ValueError("argument 'sigma' must be finite and > 0")
    sd = check_sigma_data(sigma_data)
    return ((s * s + sd * sd) / (s * sd) ** 2).to(res)


def _msnr_eps(a: Tensor, s: Tensor, g: float, sd: float) -> Tensor:
    return torch.clamp(g * s * s / (a * a), max=1.0)  # 1 at alpha = 0


def _msnr_x0(a: Tensor, s: Tensor, g: float, sd: float) -> Tensor:
    return torch.clamp(a * a / (s * s), max=g)  # gamma at sigma = 0


def _msnr_v(a: Tensor, s: Tensor, g: float, sd: float) -> Tensor:
    return torch.minimum(a * a, g * s * s) / (a * a + s * s)


def _msnr_flow(a: Tensor, s: Tensor, g: float, sd: float) -> Tensor:
    return torch.minimum(a * a, g * s * s) / (a + s) ** 2


def _msnr_edm(a: Tensor, s: Tensor, g: float, sd: float) -> Tensor:
    return sd * sd * torch.minimum(a * a, g * s * s) / (s * s + sd * sd * a * a)


_MIN_SNR = {"eps": _msnr_eps, "x0": _msnr_x0, "v": _msnr_v, "flow": _msnr_flow, "edm": _msnr_edm}


def process_min_snr_weight(alpha: Any, sigma: Any, prediction: str, gamma: float = 5.0, *,
                           sigma_data: float = SIGMA_DATA) -> Tensor:
    """Spec 16.4: min(SNR, gamma) c^2 on the MSE of ``prediction`` (SNR = alpha^2 / sigma^2), float64
    computed, returned in alpha's floating dtype (float64 for numbers)."""
    if not gamma > 0:
        raise ValueError(f"argument 'gamma' must be > 0, got {gamma}")
    if prediction not in _MIN_SNR:
        raise ValueError(f"argument 'prediction': unknown prediction {prediction!r}; choose one of {tuple(_MIN_SNR)}")
    res = alpha.dtype if isinstance(alpha, Tensor) and alpha.is_floating_point() else torch.float64
    a, s = check_alpha_sigma(alpha, sigma)
    return _MIN_SNR[prediction](a, s, float(gamma), check_sigma_data(sigma_data)).to(res)


def process_simple_loss(x0: Tensor, noise: Tensor, alpha: Any, sigma: Any, pred: Tensor, prediction: str, *,
                        sigma_data: float = SIGMA_DATA, min_snr_gamma: float | None = None) -> Tensor:
    """Spec 16.2: w * mean((pred - target)^2) per sample, target of 14.3, w = 1 or 16.4. Differentiable."""
    target = from_x0_eps(x0, noise, alpha, sigma, prediction, sigma_data=sigma_data)
    pred = _checks.data("pred", pred)
    _checks.same_shape(target=target, pred=pred)
    op = torch.promote_types(_checks.dtypes(target)[1], _checks.dtypes(pred)[1])
    loss = mean_flat((pred.to(op) - target.to(op)) ** 2)
    if min_snr_gamma is not None:
        a, s = check_alpha_sigma(alpha, sigma, loss.device)
        w = process_min_snr_weight(a, s, prediction, min_snr_gamma, sigma_data=sigma_data)
        loss = loss * w.to(op)
    return loss
