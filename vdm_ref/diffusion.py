"""Spec sections 3 - 5: forward process, parameterisations and the posterior.

Timesteps are integers: a scalar or one per sample, shape (B,). ``s < t`` is the timestep a
step lands on (``s = -1`` after the last step, where abar_{-1} = 1). Coefficients are
gathered from the float64 tables and broadcast over (C, T, H, W).
"""

from __future__ import annotations

import numpy as np

from . import _checks
from .schedules import Schedule

PREDICTIONS = ("eps", "x0", "v")
VARIANCES = ("fixed_small", "fixed_large", "learned_range")


def _abar(sched: Schedule, name: str, t: object, x: np.ndarray, *, allow_minus_one: bool = False):
    """abar at ``t`` shaped to broadcast against ``x``, and the validated integer t."""
    tt = _checks.timesteps(name, t, sched.T, _checks.batch_of("x", x), allow_minus_one=allow_minus_one)
    return _checks.per_sample(sched.abar_at(tt), x.ndim), tt


# --- 3. Forward process ---------------------------------------------------------------------


def q_mean_variance(sched: Schedule, x0: np.ndarray, t: object) -> tuple[np.ndarray, np.ndarray]:
    """Spec 3.1: q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)."""
    x0 = _checks.as_float64("x0", x0)
    a, _ = _abar(sched, "t", t, x0)
    return np.sqrt(a) * x0, np.broadcast_to(1.0 - a, x0.shape).copy()


def q_sample(sched: Schedule, x0: np.ndarray, t: object, noise: np.ndarray) -> np.ndarray:
    """Spec 3.2: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, eps given explicitly."""
    x0, noise = _checks.as_float64("x0", x0), _checks.as_float64("noise", noise)
    _checks.same_shape(x0=x0, noise=noise)
    a, _ = _abar(sched, "t", t, x0)
    return np.sqrt(a) * x0 + np.sqrt(1.0 - a) * noise


def velocity(sched: Schedule, x0: np.ndarray, t: object, noise: np.ndarray) -> np.ndarray:
    """Spec 3.3: v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0."""
    x0, noise = _checks.as_float64("x0", x0), _checks.as_float64("noise", noise)
    _checks.same_shape(x0=x0, noise=noise)
    a, _ = _abar(sched, "t", t, x0)
    return np.sqrt(a) * noise - np.sqrt(1.0 - a) * x0


# --- 4. Parameterisations ---------------------------------------------------------------------


def _pair(sched: Schedule, x_t, other, names: tuple[str, str], t):
    x_t, other = _checks.as_float64(names[0], x_t), _checks.as_float64(names[1], other)
    _checks.same_shape(**{names[0]: x_t, names[1]: other})
    a, _ = _abar(sched, "t", t, x_t)
    return x_t, other, a


def x0_from_eps(sched: Schedule, x_t: np.ndarray, t: object, eps: np.ndarray) -> np.ndarray:
    """Spec 4.1: x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t). Undefined where abar_t = 0."""
    x_t, eps, a = _pair(sched, x_t, eps, ("x_t", "eps"), t)
    if np.any(a == 0.0):
        raise ValueError("x0 from eps is undefined where abar_t = 0 (zero terminal SNR): use v or x0 prediction")
    return (x_t - np.sqrt(1.0 - a) * eps) / np.sqrt(a)


def eps_from_x0(sched: Schedule, x_t: np.ndarray, t: object, x0: np.ndarray) -> np.ndarray:
    """Spec 4.2: eps = (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t)."""
    x_t, x0, a = _pair(sched, x_t, x0, ("x_t", "x0"), t)
    return (x_t - np.sqrt(a) * x0) / np.sqrt(1.0 - a)


def x0_from_v(sched: Schedule, x_t: np.ndarray, t: object, v: np.ndarray) -> np.ndarray:
    """Spec 4.3: x_0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v."""
    x_t, v, a = _pair(sched, x_t, v, ("x_t", "v"), t)
    return np.sqrt(a) * x_t - np.sqrt(1.0 - a) * v


def eps_from_v(sched: Schedule, x_t: np.ndarray, t: object, v: np.ndarray) -> np.ndarray:
    """Spec 4.3: eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v."""
    x_t, v, a = _pair(sched, x_t, v, ("x_t", "v"), t)
    return np.sqrt(1.0 - a) * x_t + np.sqrt(a) * v


def v_from_x0_eps(sched: Schedule, t: object, x0: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Spec 4.4: v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (the same formula as 3.3)."""
    return velocity(sched, x0, t, eps)


def split_model_output(out: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Spec 4.5: a model output of C channels is the prediction; of 2C channels, the first C are
    the prediction and the last C the variance values of 5.4 (learned_range)."""
    out = _checks.as_float64("out", out)
    if out.ndim < 2 or out.shape[1] not in (channels, 2 * channels):
        raise ValueError(
            f"argument 'out' must have {channels} or {2 * channels} channels on axis 1 "
            f"(x_t has {channels}), got shape {out.shape}"
        )
    if out.shape[1] == channels:
        return out, None
    return out[:, :channels], out[:, channels:]


def predict_x0_eps(
    sched: Schedule, x_t: np.ndarray, t: object, pred: np.ndarray, prediction: str
) -> tuple[np.ndarray, np.ndarray]:
    """Spec 4.5: turn a model's eps, x0 or v prediction into the pair (x0_hat, eps_hat)."""
    if prediction == "eps":
        return x0_from_eps(sched, x_t, t, pred), _checks.as_float64("pred", pred)
    if prediction == "x0":
        return _checks.as_float64("pred", pred), eps_from_x0(sched, x_t, t, pred)
    if prediction == "v":
        return x0_from_v(sched, x_t, t, pred), eps_from_v(sched, x_t, t, pred)
    raise ValueError(f"argument 'prediction': unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


# --- 5. Posterior q(x_s | x_t, x_0) for s < t --------------------------------------------------


def _pair_abar(sched: Schedule, s: object, t: object, batch: int | None):
    tt = _checks.timesteps("t", t, sched.T, batch, allow_minus_one=False)
    ss = _checks.timesteps("s", s, sched.T, batch, allow_minus_one=True)
    ss = np.broadcast_to(ss, np.broadcast_shapes(ss.shape, tt.shape))
    if np.any(ss >= tt):
        raise ValueError(f"argument 's' must be smaller than 't' (s={ss.tolist()}, t={np.asarray(tt).tolist()})")
    return sched.abar_at(ss), sched.abar_at(tt), ss


def effective_beta(sched: Schedule, s: object, t: object) -> np.ndarray:
    """Spec 5.1: the beta of the strided pair, beta_{s,t} = 1 - abar_t / abar_s."""
    a_s, a_t, _ = _pair_abar(sched, s, t, None)
    return 1.0 - a_t / a_s


def posterior_mean_coefs(sched: Schedule, s: object, t: object) -> tuple[np.ndarray, np.ndarray]:
    """Spec 5.2: mu = c0 x_0 + ct x_t, with
    c0 = sqrt(abar_s) beta_{s,t} / (1 - abar_t),  ct = sqrt(abar_t / abar_s) (1 - abar_s) / (1 - abar_t)."""
    a_s, a_t, _ = _pair_abar(sched, s, t, None)
    beta = 1.0 - a_t / a_s
    return np.sqrt(a_s) * beta / (1.0 - a_t), np.sqrt(a_t / a_s) * (1.0 - a_s) / (1.0 - a_t)


def posterior_mean(sched: Schedule, x0: np.ndarray, x_t: np.ndarray, s: object, t: object) -> np.ndarray:
    """Spec 5.2: the mean of q(x_s | x_t, x_0)."""
    x0, x_t = _checks.as_float64("x0", x0), _checks.as_float64("x_t", x_t)
    _checks.same_shape(x0=x0, x_t=x_t)
    b = _checks.batch_of("x0", x0)
    tt = _checks.timesteps("t", t, sched.T, b, allow_minus_one=False)
    ss = _checks.timesteps("s", s, sched.T, b, allow_minus_one=True)
    c0, ct = posterior_mean_coefs(sched, ss, tt)
    return _checks.per_sample(c0, x0.ndim) * x0 + _checks.per_sample(ct, x0.ndim) * x_t


def posterior_variance(sched: Schedule, s: object, t: object) -> np.ndarray:
    """Spec 5.3: beta_tilde_{s,t} = (1 - abar_s) / (1 - abar_t) * beta_{s,t}; 0 when s = -1."""
    a_s, a_t, _ = _pair_abar(sched, s, t, None)
    return (1.0 - a_s) / (1.0 - a_t) * (1.0 - a_t / a_s)


def posterior_log_variance_clipped(sched: Schedule, s: object, t: object) -> np.ndarray:
    """Spec 5.3: log beta_tilde_{s,t}, with the zero at s = -1 replaced by beta_tilde_{0,1}."""
    _, _, ss = _pair_abar(sched, s, t, None)
    var = posterior_variance(sched, s, t)
    floor = posterior_variance(sched, 0, 1)
    return np.log(np.where(ss < 0, floor, var))


def model_log_variance(
    sched: Schedule, s: object, t: object, variance: str, var_values: np.ndarray | None = None
) -> np.ndarray:
    """Spec 5.4: the log-variance of p(x_s | x_t).

    fixed_small:   log beta_tilde_{s,t} (clipped as in 5.3)
    fixed_large:   log beta_{s,t}, except at s = -1 where it is log beta_tilde_{0,1}
    learned_range: f log beta_{s,t} + (1 - f) log beta_tilde_{s,t} (clipped), f = (v + 1) / 2,
                   where log beta_{s,t} is NOT replaced at s = -1
                   v the model's variance channels (any real value; not clamped)
    Returns a (B,) vector for fixed variances and an array shaped like ``var_values`` otherwise.
    """
    if variance not in VARIANCES:
        raise ValueError(f"argument 'variance': unknown variance {variance!r}; choose one of {VARIANCES}")
    _, _, ss = _pair_abar(sched, s, t, None)
    min_log = posterior_log_variance_clipped(sched, s, t)
    if variance == "fixed_small":
        return min_log
    max_log = np.log(effective_beta(sched, s, t))
    if variance == "fixed_large":
        return np.where(ss < 0, min_log, max_log)
    if var_values is None:
        raise ValueError("variance 'learned_range' needs the model's variance channels ('var_values')")
    v = _checks.as_float64("var_values", var_values)
    frac = (v + 1.0) / 2.0
    return frac * _checks.per_sample(max_log, v.ndim) + (1.0 - frac) * _checks.per_sample(min_log, v.ndim)
