"""Spec section 8: training objectives.

Losses are per-sample vectors of shape (B,) unless stated; a training loop averages them.
"""

from __future__ import annotations

import math

import numpy as np

from . import _checks
from .diffusion import (
    PREDICTIONS,
    model_log_variance,
    posterior_mean,
    predict_x0_eps,
    split_model_output,
)
from .diffusion import posterior_log_variance_clipped as _post_logvar
from .diffusion import velocity as _velocity
from .schedules import Schedule

_erfc = np.frompyfunc(math.erfc, 1, 1)


def training_target(sched: Schedule, x0: np.ndarray, t: object, noise: np.ndarray, prediction: str) -> np.ndarray:
    """Spec 8.1: the regression target: eps (the noise), x0, or v (3.3)."""
    if prediction == "eps":
        return _checks.as_float64("noise", noise)
    if prediction == "x0":
        return _checks.as_float64("x0", x0)
    if prediction == "v":
        return _velocity(sched, x0, t, noise)
    raise ValueError(f"argument 'prediction': unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def min_snr_weight(sched: Schedule, t: object, prediction: str, gamma: float = 5.0) -> np.ndarray:
    """Spec 8.2: min-SNR-gamma weights, w = min(SNR, gamma) / SNR for eps (written min(1, gamma/SNR),
    which is 1 at SNR = 0), min(SNR, gamma) for x0, and min(SNR, gamma) / (SNR + 1) for v."""
    if not gamma > 0:
        raise ValueError(f"argument 'gamma' must be > 0, got {gamma}")
    tt = _checks.timesteps("t", t, sched.T, None, allow_minus_one=False)
    snr = sched.snr[tt]
    if prediction == "eps":
        with np.errstate(divide="ignore"):
            return np.minimum(1.0, gamma / snr)
    if prediction == "x0":
        return np.minimum(snr, gamma)
    if prediction == "v":
        return np.minimum(snr, gamma) / (snr + 1.0)
    raise ValueError(f"argument 'prediction': unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def mean_flat(x: np.ndarray) -> np.ndarray:
    """Spec 8.1: the per-sample mean, over every axis but the batch axis."""
    return x.reshape(x.shape[0], -1).mean(axis=1)


def simple_loss(
    sched: Schedule,
    x0: np.ndarray,
    t: object,
    noise: np.ndarray,
    pred: np.ndarray,
    prediction: str,
    min_snr_gamma: float | None = None,
) -> np.ndarray:
    """Spec 8.1 / 8.2: L_simple = w_t * mean((pred - target)^2) per sample, w_t = 1 or min-SNR."""
    target = training_target(sched, x0, t, noise, prediction)
    pred = _checks.as_float64("pred", pred)
    _checks.same_shape(target=target, pred=pred)
    loss = mean_flat((pred - target) ** 2)
    if min_snr_gamma is not None:
        loss = loss * min_snr_weight(sched, _checks.timesteps("t", t, sched.T, len(loss), allow_minus_one=False),
                                     prediction, min_snr_gamma)
    return loss


def normal_kl(mean1: np.ndarray, logvar1: np.ndarray, mean2: np.ndarray, logvar2: np.ndarray) -> np.ndarray:
    """Spec 8.3: KL(N(m1, e^lv1) || N(m2, e^lv2)) = (lv2 - lv1 + e^(lv1 - lv2) + (m1 - m2)^2 e^-lv2 - 1) / 2."""
    return 0.5 * (logvar2 - logvar1 + np.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * np.exp(-logvar2) - 1.0)


def std_normal_cdf(x: np.ndarray) -> np.ndarray:
    """Spec 8.4: Phi(x) = erfc(-x / sqrt(2)) / 2, exact (no tanh approximation)."""
    # np.asarray: frompyfunc returns a bare Python float (no .astype) for 0-d input.
    return np.asarray(_erfc(-np.asarray(x, dtype=np.float64) / math.sqrt(2.0)), dtype=np.float64) / 2.0


def discretized_gaussian_log_likelihood(x: np.ndarray, mean: np.ndarray, log_scale: np.ndarray) -> np.ndarray:
    """Spec 8.4: log P(x) for 8-bit data in [-1, 1] (bins of width 2/255) under N(mean, e^(2 log_scale)).

    Interior bins: log(Phi(u+) - Phi(u-)), u+- = (x - mean +- 1/255) e^-log_scale; the lowest bin
    (x < -0.999) integrates from -inf and the highest (x > 0.999) to +inf. Probabilities are
    floored at 1e-12 before the log.
    """
    x = _checks.as_float64("x", x)
    inv_std = np.exp(-_checks.as_float64("log_scale", log_scale))
    centred = x - _checks.as_float64("mean", mean)
    upper = inv_std * (centred + 1.0 / 255.0)
    lower = inv_std * (centred - 1.0 / 255.0)
    cdf_upper = std_normal_cdf(upper)
    sf_lower = std_normal_cdf(-lower)  # 1 - Phi(lower), without cancellation
    # Phi(upper) - Phi(lower), computed on the side of the distribution where it does not cancel.
    delta = np.where(lower > 0, sf_lower - std_normal_cdf(-upper), cdf_upper - std_normal_cdf(lower))
    prob = np.where(x < -0.999, cdf_upper, np.where(x > 0.999, sf_lower, delta))
    return np.log(np.maximum(prob, 1e-12))


def vlb_term(
    sched: Schedule,
    x0: np.ndarray,
    x_t: np.ndarray,
    t: object,
    out: np.ndarray,
    prediction: str,
    variance: str = "learned_range",
) -> np.ndarray:
    """Spec 8.5: the per-sample VLB term in bits per dimension, on the full schedule (s = t - 1):

    t > 0: L_t = mean KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) / log 2
    t = 0: L_0 = -mean log P(x_0 | x_1 = x_t) (8.4, log_scale = logvar / 2) / log 2
    The model's mean is the posterior mean (5.2) at its own x0_hat (4.5), unclipped.
    """
    x0, x_t = _checks.as_float64("x0", x0), _checks.as_float64("x_t", x_t)
    _checks.same_shape(x0=x0, x_t=x_t)
    b = _checks.batch_of("x0", x0)
    tt = _checks.timesteps("t", t, sched.T, b, allow_minus_one=False)
    ss = tt - 1
    pred, var_values = split_model_output(out, x_t.shape[1])
    x0_hat, _ = predict_x0_eps(sched, x_t, tt, pred, prediction)
    model_mean = posterior_mean(sched, x0_hat, x_t, ss, tt)
    model_logvar = model_log_variance(sched, ss, tt, variance, var_values)
    model_logvar = np.broadcast_to(_checks.per_sample(model_logvar, x0.ndim), x0.shape)
    true_mean = posterior_mean(sched, x0, x_t, ss, tt)
    true_logvar = _checks.per_sample(_post_logvar(sched, ss, tt), x0.ndim)
    kl = mean_flat(normal_kl(true_mean, true_logvar, model_mean, model_logvar)) / math.log(2.0)
    nll = -mean_flat(discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar)) / math.log(2.0)
    return np.where(tt == 0, nll, kl)


def hybrid_loss(
    sched: Schedule,
    x0: np.ndarray,
    t: object,
    noise: np.ndarray,
    out: np.ndarray,
    prediction: str,
    lam: float = 0.001,
    min_snr_gamma: float | None = None,
) -> np.ndarray:
    """Spec 8.6: L_hybrid = L_simple + lam * T * L_t, per sample (T * L_t estimates L_vlb).

    x_t = q_sample(x0, t, noise); the model output has 2C channels. In a differentiable backend
    the VLB term sees the mean channels detached, so it trains only the variance channels.
    """
    from .diffusion import q_sample  # local import keeps the module's dependency list short

    x_t = q_sample(sched, x0, t, noise)
    x0 = _checks.as_float64("x0", x0)
    pred, var_values = split_model_output(out, x0.shape[1])
    if var_values is None:
        raise ValueError("hybrid_loss needs a 2C-channel model output (learned variance)")
    l_simple = simple_loss(sched, x0, t, noise, pred, prediction, min_snr_gamma)
    l_vlb = vlb_term(sched, x0, x_t, t, out, prediction, "learned_range")
    return l_simple + lam * sched.T * l_vlb
