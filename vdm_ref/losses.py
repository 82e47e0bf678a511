"""Spec sections 8 and 16: training objectives.

Losses are per-sample vectors of shape (B,) unless stated; a training loop averages them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

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
from .processes import SIGMA_DATA, check_alpha_sigma, check_sigma_data, from_x0_eps
from .schedules import Schedule
from .sigmas import flow_shift

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
    """Spec 8.3: KL(N(m1, e^lv1) || N(m2, e^lv2)) = (lv2 - lv1 + e^(lv1 - lv2) + (m1 - m2)^2 e^-lv2 - 1) / 2.
    Every argument must be finite (spec 1.7)."""
    m1, lv1, m2, lv2 = (_checks.as_float64(name, a) for name, a in
                        (("mean1", mean1), ("logvar1", logvar1), ("mean2", mean2), ("logvar2", logvar2)))
    return 0.5 * (lv2 - lv1 + np.exp(lv1 - lv2) + (m1 - m2) ** 2 * np.exp(-lv2) - 1.0)


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


# --- Spec section 16: training objectives for every noise process ---------------------------------

EDM_P_MEAN = -1.2  # Karras et al. 2022, Table 1: ln(sigma) ~ N(P_mean, P_std^2) in training
EDM_P_STD = 1.2


def _bisect(f: Callable[[np.ndarray], np.ndarray], target: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The x in [lo, hi] with f(x) closest to ``target`` (f increasing), bisected to adjacent doubles."""
    lo_, hi_ = np.full(target.shape, lo), np.full(target.shape, hi)
    for _ in range(1100):  # a float64 bracket cannot be halved more often than this
        mid = 0.5 * (lo_ + hi_)
        done = (mid == lo_) | (mid == hi_)
        if np.all(done):
            break
        below = f(mid) < target
        lo_, hi_ = np.where(below & ~done, mid, lo_), np.where(~below & ~done, mid, hi_)
    return np.where(f(hi_) - target <= target - f(lo_), hi_, lo_)


_erf = np.frompyfunc(math.erf, 1, 1)


def _half_erf(x: np.ndarray) -> np.ndarray:
    return np.asarray(_erf(x / math.sqrt(2.0)), dtype=np.float64) / 2.0  # Phi(x) - 1/2, relatively exact


def normal_quantile(u: object) -> np.ndarray:
    """Spec 16.1: Phi^-1(u) for u in [0, 1) (-inf at 0), bisected to the last bit: on
    Phi(x) - 1/2 = erf(x / sqrt 2) / 2 against u - 1/2 where |u - 1/2| <= 1/4, and on Phi (8.4)
    in the tails, u > 3/4 by symmetry (Phi^-1(u) = -Phi^-1(1 - u)); every u - 1/2, 1 - u is exact."""
    u = _checks.as_float64("u", u)
    if np.any((u < 0) | (u >= 1)):
        raise ValueError("argument 'u' must lie in [0, 1) (uniform draws)")
    central = (np.abs(u - 0.5) <= 0.25) & (u != 0.5)  # Phi^-1(1/2) = 0 exactly, left as is
    x = np.zeros(u.shape)
    # Phi^-1(3/4) = 0.674..., and Phi(-40) is below every positive double.
    d = u[central] - 0.5
    x[central] = np.sign(d) * _bisect(_half_erf, np.abs(d), 0.0, 0.7)  # odd, so solved for |d|: exactly symmetric
    tail = (np.abs(u - 0.5) > 0.25) & (u > 0.0)
    p = np.where(u > 0.5, 1.0 - u, u)[tail]  # p <= 1/4: Phi^-1(p) < 0
    x[tail] = np.where(u[tail] > 0.5, -1.0, 1.0) * _bisect(std_normal_cdf, p, -40.0, 0.0)
    x[u == 0.0] = -np.inf
    return x


def flow_level_uniform(u: np.ndarray) -> np.ndarray:
    """Spec 16.1 uniform: s = u."""
    return u.copy()


def flow_level_logit_normal(u: np.ndarray, m: float, s: float) -> np.ndarray:
    """Spec 16.1 logit_normal(m, s): s = sigmoid(m + s Phi^-1(u)) (Esser et al. 2024)."""
    if not (math.isfinite(m) and math.isfinite(s) and s > 0):
        raise ValueError(f"logit_normal needs a finite 'm' and 's' > 0, got m={m}, s={s}")
    n = m + s * normal_quantile(u)
    return 1.0 / (1.0 + np.exp(-n))


def flow_level_mode(u: np.ndarray, scale: float) -> np.ndarray:
    """Spec 16.1 mode(scale): s = 1 - u - scale (cos^2(pi u / 2) - 1 + u), -1 <= scale <= 2 / (pi - 2)."""
    if not -1.0 <= scale <= 2.0 / (math.pi - 2.0):
        raise ValueError(f"mode needs -1 <= 'scale' <= 2 / (pi - 2) (monotone), got {scale}")
    return 1.0 - u - scale * (np.cos(0.5 * math.pi * u) ** 2 - 1.0 + u)


FLOW_DENSITIES: dict[str, Callable[..., np.ndarray]] = {
    "uniform": flow_level_uniform,
    "logit_normal": flow_level_logit_normal,
    "mode": flow_level_mode,
}
# Default parameters per density (spec 16.1), read like DEFAULT_PARAMS of the schedules.
FLOW_DENSITY_PARAMS: dict[str, dict[str, float]] = {
    "uniform": {}, "logit_normal": {"m": 0.0, "s": 1.0}, "mode": {"scale": 1.29},
}


def flow_level_from_uniform(u: object, density: str = "uniform", shift: float = 1.0, **params: float) -> np.ndarray:
    """Spec 16.1: flow training levels s in [0, 1] from uniform draws u in [0, 1): the density's map,
    then the time shift of 15.2 (once; shift = 1 leaves s unchanged)."""
    if density not in FLOW_DENSITIES:
        raise ValueError(f"argument 'density': unknown density {density!r}; choose one of {tuple(FLOW_DENSITIES)}")
    unknown = set(params) - set(FLOW_DENSITY_PARAMS[density])
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for density {density!r}; "
                         f"it takes {sorted(FLOW_DENSITY_PARAMS[density])}")
    u = _checks.as_float64("u", u)
    if np.any((u < 0) | (u >= 1)):
        raise ValueError("argument 'u' must lie in [0, 1) (uniform draws)")
    s = FLOW_DENSITIES[density](u, **{**FLOW_DENSITY_PARAMS[density], **{k: float(v) for k, v in params.items()}})
    s = np.clip(s, 0.0, 1.0)  # mode() is in [0, 1] in exact arithmetic; keep rounding inside
    return s if shift == 1.0 else flow_shift(s, shift)


def edm_sigma_from_uniform(u: object, p_mean: float = EDM_P_MEAN, p_std: float = EDM_P_STD) -> np.ndarray:
    """Spec 16.1: EDM training levels, ln(sigma) = P_mean + P_std Phi^-1(u), u in (0, 1)."""
    u = _checks.as_float64("u", u)
    if np.any((u <= 0) | (u >= 1)):
        raise ValueError("argument 'u' must lie in (0, 1): u = 0 would give sigma = 0")
    if not (math.isfinite(p_mean) and math.isfinite(p_std) and p_std > 0):
        raise ValueError(f"arguments 'p_mean' (finite) and 'p_std' (> 0) required, got {p_mean}, {p_std}")
    return np.exp(p_mean + p_std * normal_quantile(u))


def vp_timestep_from_uniform(u: object, T: int) -> np.ndarray:
    """Spec 16.1: vp training timesteps t = min(floor(u T), T - 1), uniform on 0 .. T-1."""
    u = _checks.as_float64("u", u)
    if np.any((u < 0) | (u >= 1)):
        raise ValueError("argument 'u' must lie in [0, 1) (uniform draws)")
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 2:
        raise ValueError(f"argument 'T' must be an integer >= 2, got {T!r}")
    return np.minimum(np.floor(u * T), T - 1).astype(np.int64)


def edm_loss_weight(sigma: object, sigma_data: float = SIGMA_DATA) -> np.ndarray:
    """Spec 16.3: lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2, the EDM weight on the x0 (D) error."""
    s = _checks.as_float64("sigma", sigma)
    if np.any(s <= 0):
        raise ValueError("argument 'sigma' must be > 0")
    sd = check_sigma_data(sigma_data)
    return (s * s + sd * sd) / (s * sd) ** 2


def _msnr_eps(a: np.ndarray, s: np.ndarray, g: float, sd: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.minimum(1.0, g * s * s / (a * a))  # 1 at alpha = 0 (SNR = 0)


def _msnr_x0(a: np.ndarray, s: np.ndarray, g: float, sd: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.minimum(a * a / (s * s), g)  # gamma at sigma = 0


def _msnr_v(a: np.ndarray, s: np.ndarray, g: float, sd: float) -> np.ndarray:
    return np.minimum(a * a, g * s * s) / (a * a + s * s)


def _msnr_flow(a: np.ndarray, s: np.ndarray, g: float, sd: float) -> np.ndarray:
    return np.minimum(a * a, g * s * s) / (a + s) ** 2


def _msnr_edm(a: np.ndarray, s: np.ndarray, g: float, sd: float) -> np.ndarray:
    return sd * sd * np.minimum(a * a, g * s * s) / (s * s + sd * sd * a * a)


# min(SNR, gamma) c^2, with c the coefficient of the output in x0_hat (14.3), in closed form per prediction.
_MIN_SNR = {"eps": _msnr_eps, "x0": _msnr_x0, "v": _msnr_v, "flow": _msnr_flow, "edm": _msnr_edm}


def process_min_snr_weight(alpha: object, sigma: object, prediction: str, gamma: float = 5.0, *,
                           sigma_data: float = SIGMA_DATA) -> np.ndarray:
    """Spec 16.4: min-SNR-gamma on any process, SNR = alpha^2 / sigma^2: the weight on the MSE of
    ``prediction`` that makes it min(SNR, gamma) times the x0 MSE (8.2 on vp)."""
    if not gamma > 0:
        raise ValueError(f"argument 'gamma' must be > 0, got {gamma}")
    if prediction not in _MIN_SNR:
        raise ValueError(f"argument 'prediction': unknown prediction {prediction!r}; choose one of {tuple(_MIN_SNR)}")
    a, s = check_alpha_sigma(alpha, sigma)
    sd = check_sigma_data(sigma_data)
    return _MIN_SNR[prediction](a, s, float(gamma), sd)


def process_simple_loss(x0: np.ndarray, noise: np.ndarray, alpha: object, sigma: object, pred: np.ndarray,
                        prediction: str, *, sigma_data: float = SIGMA_DATA,
                        min_snr_gamma: float | None = None) -> np.ndarray:
    """Spec 16.2: w * mean((pred - target)^2) per sample, target = the prediction's value at
    (x0, noise) (14.3), w = 1 or 16.4. With prediction edm and w = 1 this is EDM's loss (16.3)."""
    target = from_x0_eps(x0, noise, alpha, sigma, prediction, sigma_data=sigma_data)
    pred = _checks.as_float64("pred", pred)
    _checks.same_shape(target=target, pred=pred)
    loss = mean_flat((pred - target) ** 2)
    if min_snr_gamma is not None:
        w = process_min_snr_weight(alpha, sigma, prediction, min_snr_gamma, sigma_data=sigma_data)
        loss = loss * np.broadcast_to(w, loss.shape)
    return loss
