"""Spec sections 3 - 5 on torch tensors: forward process, parameterisations, posterior.

Mirrors ``vdm_ref.diffusion`` name for name. Timesteps are Python ints or integer tensors (B,)
on the schedule's device. Results take the (promoted) dtype of the data arguments; half types
compute in float32 and round once. One-timestep coefficients are gathered from the schedule's
cast tables; two-timestep (s, t) coefficients are computed from the float64 tables on the (B,)
vectors and then cast, because 1 - abar_t / abar_s cancels badly in float32 for adjacent steps.
Nothing here reads tensor values on the host except under the validation policy of ``schedule``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import _checks
from ._checks import TimeArg
from .schedules import TorchSchedule

PREDICTIONS = ("eps", "x0", "v")
VARIANCES = ("fixed_small", "fixed_large", "learned_range")


def _t(sched: TorchSchedule, name: str, t: Any, x: Tensor, *, allow_minus_one: bool = False) -> TimeArg:
    return _checks.timesteps(name, t, sched, _checks.batch_of("x", x), allow_minus_one=allow_minus_one)


def _coef(table: Tensor, t: TimeArg, ndim: int, dtype: torch.dtype) -> Tensor:
    """``table[t]`` (one of the schedule's cast tables), shaped to broadcast over rank ``ndim``."""
    return _checks.per_sample(table[t].to(dtype), ndim)


def check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"argument 'prediction': unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


# --- 3. Forward process ---------------------------------------------------------------------


def q_mean_variance(sched: TorchSchedule, x0: Tensor, t: TimeArg) -> tuple[Tensor, Tensor]:
    """Spec 3.1: q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)."""
    x0 = _checks.data("x0", x0, sched)
    tt = _t(sched, "t", t, x0)
    out, op = _checks.dtypes(x0)
    mean = _coef(sched.sqrt_abar, tt, x0.ndim, op) * x0.to(op)
    var = _coef(sched.one_minus_abar, tt, x0.ndim, op).expand(x0.shape).clone(memory_format=torch.contiguous_format)
    return mean.to(out), var.to(out)


def forward_terms(
    sched: TorchSchedule, x0: Tensor, t: TimeArg, noise: Tensor, *, v: bool
) -> tuple[Tensor, torch.dtype]:
    """q_sample (v=False) or velocity (v=True) in the arithmetic dtype, plus the result dtype."""
    x0, noise = _checks.data("x0", x0, sched), _checks.data("noise", noise, sched)
    _checks.same_shape(x0=x0, noise=noise)
    tt = _t(sched, "t", t, x0)
    out, op = _checks.dtypes(x0, noise)
    a = _coef(sched.sqrt_abar, tt, x0.ndim, op)
    b = _coef(sched.sqrt_one_minus_abar, tt, x0.ndim, op)
    if v:
        return a * noise.to(op) - b * x0.to(op), out
    return a * x0.to(op) + b * noise.to(op), out


def q_sample(sched: TorchSchedule, x0: Tensor, t: TimeArg, noise: Tensor) -> Tensor:
    """Spec 3.2: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, eps given explicitly. Differentiable."""
    x, out = forward_terms(sched, x0, t, noise, v=False)
    return x.to(out)


def velocity(sched: TorchSchedule, x0: Tensor, t: TimeArg, noise: Tensor) -> Tensor:
    """Spec 3.3: v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0. Differentiable."""
    v, out = forward_terms(sched, x0, t, noise, v=True)
    return v.to(out)


# --- 4. Parameterisations ---------------------------------------------------------------------


def _pair(sched: TorchSchedule, x_t: Tensor, other: Tensor, names: tuple[str, str], t: Any):
    x_t, other = _checks.data(names[0], x_t, sched), _checks.data(names[1], other, sched)
    _checks.same_shape(**{names[0]: x_t, names[1]: other})
    tt = _t(sched, "t", t, x_t)
    out, op = _checks.dtypes(x_t, other)
    return x_t.to(op), other.to(op), tt, out, op


def _zero_abar(sched: TorchSchedule, tt: TimeArg) -> bool:
    """Whether some abar_t is 0 (only t = T-1 under zero terminal SNR), per the validation policy."""
    return sched.zero_terminal_snr and _checks.host_any(tt == sched.T - 1)


def x0_from_eps(sched: TorchSchedule, x_t: Tensor, t: TimeArg, eps: Tensor) -> Tensor:
    """Spec 4.1: x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t). Undefined where abar_t = 0."""
    x_t, eps, tt, out, op = _pair(sched, x_t, eps, ("x_t", "eps"), t)
    if _zero_abar(sched, tt):
        raise ValueError("x0 from eps is undefined where abar_t = 0 (zero terminal SNR): use v or x0 prediction")
    n = x_t.ndim
    return ((x_t - _coef(sched.sqrt_one_minus_abar, tt, n, op) * eps) / _coef(sched.sqrt_abar, tt, n, op)).to(out)


def eps_from_x0(sched: TorchSchedule, x_t: Tensor, t: TimeArg, x0: Tensor) -> Tensor:
    """Spec 4.2: eps = (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t)."""
    x_t, x0, tt, out, op = _pair(sched, x_t, x0, ("x_t", "x0"), t)
    n = x_t.ndim
    return ((x_t - _coef(sched.sqrt_abar, tt, n, op) * x0) / _coef(sched.sqrt_one_minus_abar, tt, n, op)).to(out)


def x0_from_v(sched: TorchSchedule, x_t: Tensor, t: TimeArg, v: Tensor) -> Tensor:
    """Spec 4.3: x_0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v."""
    x_t, v, tt, out, op = _pair(sched, x_t, v, ("x_t", "v"), t)
    n = x_t.ndim
    return (_coef(sched.sqrt_abar, tt, n, op) * x_t - _coef(sched.sqrt_one_minus_abar, tt, n, op) * v).to(out)


def eps_from_v(sched: TorchSchedule, x_t: Tensor, t: TimeArg, v: Tensor) -> Tensor:
    """Spec 4.3: eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v."""
    x_t, v, tt, out, op = _pair(sched, x_t, v, ("x_t", "v"), t)
    n = x_t.ndim
    return (_coef(sched.sqrt_one_minus_abar, tt, n, op) * x_t + _coef(sched.sqrt_abar, tt, n, op) * v).to(out)


def v_from_x0_eps(sched: TorchSchedule, t: TimeArg, x0: Tensor, eps: Tensor) -> Tensor:
    """Spec 4.4: v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (the same formula as 3.3)."""
    return velocity(sched, x0, t, eps)


def split_model_output(out: Tensor, channels: int) -> tuple[Tensor, Tensor | None]:
    """Spec 4.5: C channels are the prediction; 2C channels are (prediction, variance values of 5.4)."""
    out = _checks.data("out", out)
    if out.ndim < 2 or out.shape[1] not in (channels, 2 * channels):
        raise ValueError(
            f"argument 'out' must have {channels} or {2 * channels} channels on axis 1 "
            f"(x_t has {channels}), got shape {tuple(out.shape)}"
        )
    if out.shape[1] == channels:
        return out, None
    return out[:, :channels], out[:, channels:]


def predict_x0_eps(
    sched: TorchSchedule, x_t: Tensor, t: TimeArg, pred: Tensor, prediction: str
) -> tuple[Tensor, Tensor]:
    """Spec 4.5: turn a model's eps, x0 or v prediction into the pair (x0_hat, eps_hat)."""
    check_prediction(prediction)
    if prediction == "eps":
        return x0_from_eps(sched, x_t, t, pred), _checks.data("pred", pred, sched)
    if prediction == "x0":
        return _checks.data("pred", pred, sched), eps_from_x0(sched, x_t, t, pred)
    return x0_from_v(sched, x_t, t, pred), eps_from_v(sched, x_t, t, pred)


# --- 5. Posterior q(x_s | x_t, x_0) for s < t --------------------------------------------------


def abar_pair(sched: TorchSchedule, s: Any, t: Any, batch: int | None) -> tuple[Tensor, Tensor, TimeArg]:
    """float64 (abar_s, abar_t) for validated s < t, and the validated s."""
    tt = _checks.timesteps("t", t, sched, batch, allow_minus_one=False)
    ss = _checks.timesteps("s", s, sched, batch, allow_minus_one=True)
    if _checks.host_any(ss >= tt):
        show = [x.tolist() if isinstance(x, Tensor) else x for x in (ss, tt)]
        raise ValueError(f"argument 's' must be smaller than 't' (s={show[0]}, t={show[1]})")
    return sched.abar_ext64[ss + 1], sched.abar_ext64[tt + 1], ss


def _where_neg(ss: TimeArg, if_neg: Tensor, otherwise: Tensor) -> Tensor:
    """Select per sample on s = -1; an int s is decided on the host (no device tensor for a bool)."""
    if isinstance(ss, Tensor):
        return torch.where(ss < 0, if_neg, otherwise)
    return if_neg.expand_as(otherwise) if ss < 0 else otherwise


def _floor_var(sched: TorchSchedule) -> Tensor:
    """beta_tilde_{0,1}, the clipping value of spec 5.3 (float64)."""
    a0, a1 = sched.abar64[0], sched.abar64[1]
    return (1.0 - a0) / (1.0 - a1) * (1.0 - a1 / a0)


def effective_beta(sched: TorchSchedule, s: TimeArg, t: TimeArg) -> Tensor:
    """Spec 5.1: the beta of the strided pair, beta_{s,t} = 1 - abar_t / abar_s."""
    a_s, a_t, _ = abar_pair(sched, s, t, None)
    return (1.0 - a_t / a_s).to(sched.dtype)


def posterior_coefs64(a_s: Tensor, a_t: Tensor) -> tuple[Tensor, Tensor]:
    beta = 1.0 - a_t / a_s
    return torch.sqrt(a_s) * beta / (1.0 - a_t), torch.sqrt(a_t / a_s) * (1.0 - a_s) / (1.0 - a_t)


def posterior_mean_coefs(sched: TorchSchedule, s: TimeArg, t: TimeArg) -> tuple[Tensor, Tensor]:
    """Spec 5.2: mu = c0 x_0 + ct x_t, c0 = sqrt(abar_s) beta_{s,t} / (1 - abar_t),
    ct = sqrt(abar_t / abar_s) (1 - abar_s) / (1 - abar_t)."""
    a_s, a_t, _ = abar_pair(sched, s, t, None)
    c0, ct = posterior_coefs64(a_s, a_t)
    return c0.to(sched.dtype), ct.to(sched.dtype)


def posterior_mean(sched: TorchSchedule, x0: Tensor, x_t: Tensor, s: TimeArg, t: TimeArg) -> Tensor:
    """Spec 5.2: the mean of q(x_s | x_t, x_0)."""
    x0, x_t = _checks.data("x0", x0, sched), _checks.data("x_t", x_t, sched)
    _checks.same_shape(x0=x0, x_t=x_t)
    a_s, a_t, _ = abar_pair(sched, s, t, _checks.batch_of("x0", x0))
    out, op = _checks.dtypes(x0, x_t)
    c0, ct = (_checks.per_sample(c.to(op), x0.ndim) for c in posterior_coefs64(a_s, a_t))
    return (c0 * x0.to(op) + ct * x_t.to(op)).to(out)


def _posterior_variance64(a_s: Tensor, a_t: Tensor) -> Tensor:
    return (1.0 - a_s) / (1.0 - a_t) * (1.0 - a_t / a_s)


def posterior_variance(sched: TorchSchedule, s: TimeArg, t: TimeArg) -> Tensor:
    """Spec 5.3: beta_tilde_{s,t} = (1 - abar_s) / (1 - abar_t) * beta_{s,t}; 0 when s = -1."""
    a_s, a_t, _ = abar_pair(sched, s, t, None)
    return _posterior_variance64(a_s, a_t).to(sched.dtype)


def posterior_logvar64(sched: TorchSchedule, a_s: Tensor, a_t: Tensor, ss: TimeArg) -> Tensor:
    var = _posterior_variance64(a_s, a_t)
    return torch.log(_where_neg(ss, _floor_var(sched), var))


def posterior_log_variance_clipped(sched: TorchSchedule, s: TimeArg, t: TimeArg) -> Tensor:
    """Spec 5.3: log beta_tilde_{s,t}, with the zero at s = -1 replaced by beta_tilde_{0,1}."""
    a_s, a_t, ss = abar_pair(sched, s, t, None)
    return posterior_logvar64(sched, a_s, a_t, ss).to(sched.dtype)


def model_logvar_batched(
    sched: TorchSchedule, s: Any, t: Any, variance: str, var_values: Tensor | None, batch: int | None
) -> Tensor:
    """Spec 5.4 as a float64 (B,) vector (fixed) or a var_values-shaped tensor in its arithmetic dtype."""
    if variance not in VARIANCES:
        raise ValueError(f"argument 'variance': unknown variance {variance!r}; choose one of {VARIANCES}")
    a_s, a_t, ss = abar_pair(sched, s, t, batch)
    min_log = posterior_logvar64(sched, a_s, a_t, ss)
    if variance == "fixed_small":
        return min_log
    max_log = torch.log(1.0 - a_t / a_s)
    if variance == "fixed_large":
        return _where_neg(ss, min_log, max_log)
    if var_values is None:
        raise ValueError("variance 'learned_range' needs the model's variance channels ('var_values')")
    v = _checks.data("var_values", var_values, sched)
    _, op = _checks.dtypes(v)
    frac = (v.to(op) + 1.0) / 2.0
    return frac * _checks.per_sample(max_log.to(op), v.ndim) + (1.0 - frac) * _checks.per_sample(min_log.to(op), v.ndim)


def model_log_variance(
    sched: TorchSchedule, s: TimeArg, t: TimeArg, variance: str, var_values: Tensor | None = None
) -> Tensor:
    """Spec 5.4: the log-variance of p(x_s | x_t): fixed_small = log beta_tilde (clipped), fixed_large =
    log beta_{s,t} (log beta_tilde_{0,1} at s = -1), learned_range = f log beta + (1 - f) log beta_tilde
    (clipped), f = (v + 1) / 2 with log beta NOT replaced at s = -1. (B,) for fixed variances, else
    shaped like ``var_values``."""
    lv = model_logvar_batched(sched, s, t, variance, var_values, None)
    return lv.to(sched.dtype) if var_values is None or variance != "learned_range" else lv.to(var_values.dtype)


__all__ = [
    "PREDICTIONS", "VARIANCES",
    "q_mean_variance", "q_sample", "velocity",
    "x0_from_eps", "eps_from_x0", "x0_from_v", "eps_from_v", "v_from_x0_eps",
    "split_model_output", "predict_x0_eps",
    "effective_beta", "posterior_mean_coefs", "posterior_mean", "posterior_variance",
    "posterior_log_variance_clipped", "model_log_variance",
]
