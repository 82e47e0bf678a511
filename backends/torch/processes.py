"""Spec section 14 on torch tensors: noise processes on (alpha, sigma), as in vdm_ref.processes.

Mirrors ``vdm_ref.processes`` name for name. ``alpha`` and ``sigma`` are Python numbers or
tensors, scalars or (B,) vectors. The coefficients of 14.3 are computed in float64 from them
(a (B,) vector: free) and cast once to the data's arithmetic dtype; data results take the
promoted dtype of the data arguments. Level-only results (14.1, 14.2, 14.5, 14.6) take the
floating dtype of the level tensor (float64 for Python numbers). Value checks on tensors follow
the validation policy of ``_checks`` (no device sync unless "full").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from . import _checks
from .schedules import TorchSchedule

F64 = torch.float64
# Defaults of spec 14.2 and 14.5, restated: the backend is checked against vdm_ref, never built on it.
SIGMA_DATA, SIGMA_MIN, SIGMA_MAX, FLOW_TIME_SCALE = 0.5, 0.002, 80.0, 1000.0


# --- argument handling -------------------------------------------------------------------------


def _num(name: str, v: Any, device: torch.device | None = None) -> tuple[Tensor, torch.dtype]:
    """``v`` as a float64 tensor (0-d or (B,)) and the dtype a level-only result takes."""
    if isinstance(v, Tensor):
        if not v.is_floating_point():
            raise TypeError(f"argument '{name}' must be a floating tensor or a number, got dtype {v.dtype}")
        out = v.dtype
    else:
        try:
            v = torch.as_tensor(v, dtype=F64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"argument '{name}' must be a number or a tensor: {exc}") from None
        out = F64
    if v.ndim > 1:
        raise ValueError(f"argument '{name}' must be a scalar or a (B,) vector, got shape {tuple(v.shape)}")
    v = v.to(device=device if device is not None else v.device, dtype=F64)
    if _checks.inspect(v) and not bool(torch.isfinite(v).all()):
        raise ValueError(f"argument '{name}' contains NaN or Inf; the spec requires finite values")
    return v, out


def _need(cond: Tensor, message: str) -> None:
    if _checks.inspect(cond) and not bool(cond.all()):
        raise ValueError(message)


def check_alpha_sigma(alpha: Any, sigma: Any, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Spec 14.1: float64 alpha and sigma, finite, >= 0, never both 0; scalars or (B,) vectors."""
    a, _ = _num("alpha", alpha, device)
    s, _ = _num("sigma", sigma, device)
    if a.ndim == s.ndim == 1 and a.shape != s.shape:
        raise ValueError(f"argument 'sigma' has shape {tuple(s.shape)} but 'alpha' has shape {tuple(a.shape)}; "
                         "they must match")
    for name, v in (("alpha", a), ("sigma", s)):
        _need(v >= 0, f"argument '{name}' must be >= 0")
    _need((a > 0) | (s > 0), "arguments 'alpha' and 'sigma' are both 0: no process has such a level")
    return a, s


def check_sigma_data(sigma_data: float) -> float:
    """Spec 14.5: sigma_data is a finite number > 0."""
    if not (isinstance(sigma_data, (int, float)) and math.isfinite(sigma_data) and sigma_data > 0):
        raise ValueError(f"argument 'sigma_data' must be a finite number > 0, got {sigma_data!r}")
    return float(sigma_data)


# --- 14.3 Prediction types -------------------------------------------------------------------------


class ToX0Eps(NamedTuple):
    """x0_hat = x0_x x + x0_out out, eps_hat = eps_x x + eps_out out (spec 14.3); float64."""

    x0_x: Tensor
    x0_out: Tensor
    eps_x: Tensor
    eps_out: Tensor


class Target(NamedTuple):
    """out = out_x0 x0 + out_eps eps (spec 14.3); float64."""

    out_x0: Tensor
    out_eps: Tensor


def eps_to_x0_eps(a: Tensor, s: Tensor, sd: float) -> ToX0Eps:
    """Spec 14.3 eps: x0 = (x - sigma out) / alpha, eps = out. Undefined at alpha = 0."""
    _need(a > 0, "prediction 'eps' cannot give x0 where alpha = 0 (zero terminal SNR): use v, x0, flow or edm")
    return ToX0Eps(1.0 / a, -s / a, torch.zeros_like(a), torch.ones_like(a))


def eps_target(a: Tensor, s: Tensor, sd: float) -> Target:
    """Spec 14.3 eps: the noise."""
    return Target(torch.zeros_like(a), torch.ones_like(a))


def x0_to_x0_eps(a: Tensor, s: Tensor, sd: float) -> ToX0Eps:
    """Spec 14.3 x0: x0 = out, eps = (x - alpha out) / sigma. Undefined at sigma = 0."""
    _need(s > 0, "prediction 'x0' cannot give eps where sigma = 0 (clean data): the network is never run there")
    return ToX0Eps(torch.zeros_like(a), torch.ones_like(a), 1.0 / s, -a / s)


def x0_target(a: Tensor, s: Tensor, sd: float) -> Target:
    """Spec 14.3 x0: the clean data."""
    return Target(torch.ones_like(a), torch.zeros_like(a))


def v_to_x0_eps(a: Tensor, s: Tensor, sd: float) -> ToX0Eps:
    """Spec 14.3 v: x0 = alpha x / r^2 - sigma out / r, eps = sigma x / r^2 + alpha out / r."""
    r2 = a * a + s * s
    r = torch.sqrt(r2)
    return ToX0Eps(a / r2, -s / r, s / r2, a / r)


def v_target(a: Tensor, s: Tensor, sd: float) -> Target:
    """Spec 14.3 v: (alpha eps - sigma x0) / r."""
    r = torch.sqrt(a * a + s * s)
    return Target(-s / r, a / r)


def flow_to_x0_eps(a: Tensor, s: Tensor, sd: float) -> ToX0Eps:
    """Spec 14.3 flow: x0 = (x - sigma out) / k, eps = (x + alpha out) / k, k = alpha + sigma."""
    k = a + s
    return ToX0Eps(1.0 / k, -s / k, 1.0 / k, a / k)


def flow_target(a: Tensor, s: Tensor, sd: float) -> Target:
    """Spec 14.3 flow: u = eps - x0."""
    return Target(-torch.ones_like(a), torch.ones_like(a))


def edm_to_x0_eps(a: Tensor, s: Tensor, sd: float) -> ToX0Eps:
    """Spec 14.3 edm: x0 = sd^2 alpha x / q^2 + sigma sd out / q, eps = sigma x / q^2 - alpha sd out / q."""
    q2 = s * s + sd * sd * a * a
    q = torch.sqrt(q2)
    return ToX0Eps(sd * sd * a / q2, s * sd / q, s / q2, -a * sd / q)


def edm_target(a: Tensor, s: Tensor, sd: float) -> Target:
    """Spec 14.3 edm: F = (sigma x0 / sd - sd alpha eps) / q."""
    q = torch.sqrt(s * s + sd * sd * a * a)
    return Target(s / (sd * q), -sd * a / q)


@dataclass(frozen=True)
class Prediction:
    """One prediction type: its two maps of spec 14.3."""

    to_x0_eps: Callable[[Tensor, Tensor, float], ToX0Eps]
    target: Callable[[Tensor, Tensor, float], Target]


PREDICTION_TYPES: dict[str, Prediction] = {
    "eps": Prediction(eps_to_x0_eps, eps_target),
    "x0": Prediction(x0_to_x0_eps, x0_target),
    "v": Prediction(v_to_x0_eps, v_target),
    "flow": Prediction(flow_to_x0_eps, flow_target),
    "edm": Prediction(edm_to_x0_eps, edm_target),
}


def _prediction(prediction: str) -> Prediction:
    if prediction not in PREDICTION_TYPES:
        raise ValueError(
            f"argument 'prediction': unknown prediction {prediction!r}; choose one of {tuple(PREDICTION_TYPES)}")
    return PREDICTION_TYPES[prediction]


def _per_sample(x: Tensor, coefs: tuple[Tensor, ...], op: torch.dtype) -> list[Tensor]:
    b = _checks.batch_of("x", x)
    out = []
    for c in coefs:
        if c.ndim == 1 and c.shape[0] != b:
            raise ValueError(f"arguments 'alpha' / 'sigma' have {c.shape[0]} entries but the batch has {b}")
        out.append(_checks.per_sample(c.to(op), x.ndim))
    return out


def to_x0_eps(x: Tensor, alpha: Any, sigma: Any, out: Tensor, prediction: str, *,
              sigma_data: float = SIGMA_DATA) -> tuple[Tensor, Tensor]:
    """Spec 14.3: (x0_hat, eps_hat) from a model output of type ``prediction``. Differentiable in x, out."""
    x, out = _checks.data("x", x), _checks.data("out", out)
    _checks.same_shape(x=x, out=out)
    res, op = _checks.dtypes(x, out)
    a, s = check_alpha_sigma(alpha, sigma, x.device)
    c = _prediction(prediction).to_x0_eps(a, s, check_sigma_data(sigma_data))
    x0_x, x0_out, eps_x, eps_out = _per_sample(x, c, op)
    xo, oo = x.to(op), out.to(op)
    return (x0_x * xo + x0_out * oo).to(res), (eps_x * xo + eps_out * oo).to(res)


def from_x0_eps(x0: Tensor, eps: Tensor, alpha: Any, sigma: Any, prediction: str, *,
                sigma_data: float = SIGMA_DATA) -> Tensor:
    """Spec 14.3: the value of ``prediction`` at (x0, eps); the training target of 16.2. Differentiable."""
    x0, eps = _checks.data("x0", x0), _checks.data("eps", eps)
    _checks.same_shape(x0=x0, eps=eps)
    res, op = _checks.dtypes(x0, eps)
    a, s = check_alpha_sigma(alpha, sigma, x0.device)
    c_x0, c_eps = _per_sample(x0, _prediction(prediction).target(a, s, check_sigma_data(sigma_data)), op)
    return (c_x0 * x0.to(op) + c_eps * eps.to(op)).to(res)


def convert_prediction(x: Tensor, alpha: Any, sigma: Any, out: Tensor, source: str, target: str, *,
                       sigma_data: float = SIGMA_DATA) -> Tensor:
    """Spec 14.3: a model output of type ``source`` rewritten as type ``target``."""
    x0, eps = to_x0_eps(x, alpha, sigma, out, source, sigma_data=sigma_data)
    return from_x0_eps(x0, eps, alpha, sigma, target, sigma_data=sigma_data)


# --- 14.5 EDM preconditioning ----------------------------------------------------------------------


def edm_preconditioning(sigma: Any, sigma_data: float = SIGMA_DATA, prediction: str = "edm"
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Spec 14.5: (c_skip, c_out, c_in, c_noise) at sigma > 0 for a network trained on ``prediction``."""
    s, res = _num("sigma", sigma)
    _need(s > 0, "argument 'sigma' must be > 0 for EDM preconditioning (ln sigma)")
    sd = check_sigma_data(sigma_data)
    c = _prediction(prediction).to_x0_eps(torch.ones_like(s), s, sd)
    return tuple(v.to(res) for v in (c.x0_x, c.x0_out, 1.0 / torch.sqrt(s * s + sd * sd), torch.log(s) / 4.0))


# --- 14.1 / 14.2 Families --------------------------------------------------------------------------


def vp_alpha_sigma(level: Any, sched: TorchSchedule | None) -> tuple[Tensor, Tensor]:
    """Spec 14.1 vp: integer t in [-1, T-1]; alpha = sqrt(abar_t), sigma = sqrt(1 - abar_t) (float64)."""
    if sched is None:
        raise ValueError("the vp family needs its schedule ('sched'): its levels are timesteps of the abar table")
    t = _checks.timesteps("level", level, sched, None, allow_minus_one=True)
    a = sched.abar_ext64[t + 1]  # abar_{-1} = 1 at index 0
    return torch.sqrt(a), torch.sqrt(1.0 - a)


def flow_alpha_sigma(level: Any, sched: TorchSchedule | None) -> tuple[Tensor, Tensor]:
    """Spec 14.1 flow: s in [0, 1]; alpha = 1 - s, sigma = s."""
    s, res = _num("level", level)
    _need((s >= 0) & (s <= 1), "argument 'level': a flow noise level s must lie in [0, 1]")
    return (1.0 - s).to(res), s.to(res)


def edm_alpha_sigma(level: Any, sched: TorchSchedule | None) -> tuple[Tensor, Tensor]:
    """Spec 14.1 edm: sigma >= 0; alpha = 1."""
    s, res = _num("level", level)
    _need(s >= 0, "argument 'level': an EDM noise level sigma must be >= 0")
    return torch.ones_like(s).to(res), s.to(res)


def vp_condition(level: Any, sigma_data: float) -> Tensor:
    """Spec 14.2 vp: the integer timestep t itself (int64)."""
    t = torch.as_tensor(level)
    if t.is_floating_point():
        if _checks.inspect(t) and not bool((t == t.round()).all()):
            raise ValueError(f"argument 'level' must hold integer timesteps for the vp family, got {t!r}")
    return t.to(torch.int64)


def flow_condition(level: Any, sigma_data: float) -> Tensor:
    """Spec 14.2 flow: 1000 s."""
    s, res = _num("level", level)
    return (FLOW_TIME_SCALE * s).to(res)


def edm_condition(level: Any, sigma_data: float) -> Tensor:
    """Spec 14.2 edm: c_noise = ln(sigma) / 4."""
    return edm_preconditioning(level, sigma_data)[3]


def unit_input_scale(level: Any, sigma_data: float) -> Tensor:
    """Spec 14.2 vp, flow: x is not scaled."""
    lv = torch.as_tensor(level)
    return torch.ones(lv.shape, dtype=lv.dtype if lv.is_floating_point() else F64, device=lv.device)


def edm_input_scale(level: Any, sigma_data: float) -> Tensor:
    """Spec 14.2 edm: c_in = 1 / sqrt(sigma^2 + sd^2)."""
    return edm_preconditioning(level, sigma_data)[2]


@dataclass(frozen=True)
class Family:
    """One noise-process family (spec 14.1, 14.2), as in vdm_ref."""

    alpha_sigma: Callable[[Any, TorchSchedule | None], tuple[Tensor, Tensor]]
    condition: Callable[[Any, float], Tensor]
    input_scale: Callable[[Any, float], Tensor]
    predictions: tuple[str, ...]  # the default first


FAMILIES: dict[str, Family] = {
    "vp": Family(vp_alpha_sigma, vp_condition, unit_input_scale, ("eps", "x0", "v")),
    "flow": Family(flow_alpha_sigma, flow_condition, unit_input_scale, ("flow", "eps", "x0", "v")),
    "edm": Family(edm_alpha_sigma, edm_condition, edm_input_scale, ("edm", "eps", "x0", "v")),
}


def _family(family: str) -> Family:
    if family not in FAMILIES:
        raise ValueError(f"argument 'family': unknown family {family!r}; choose one of {tuple(FAMILIES)}")
    return FAMILIES[family]


def alpha_sigma(family: str, level: Any, *, sched: TorchSchedule | None = None) -> tuple[Tensor, Tensor]:
    """Spec 14.1: (alpha, sigma) at a level of ``family`` (vp: t with ``sched``; flow: s; edm: sigma)."""
    if family != "vp" and sched is not None:
        raise ValueError(f"argument 'sched': the {family} family has no schedule table (only vp does)")
    return _family(family).alpha_sigma(level, sched)


def network_condition(family: str, level: Any, *, sigma_data: float = SIGMA_DATA) -> Tensor:
    """Spec 14.2: t (vp), 1000 s (flow) or ln(sigma) / 4 (edm)."""
    return _family(family).condition(level, check_sigma_data(sigma_data))


def input_scale(family: str, level: Any, *, sigma_data: float = SIGMA_DATA) -> Tensor:
    """Spec 14.2: 1 (vp, flow) or c_in (edm)."""
    return _family(family).input_scale(level, check_sigma_data(sigma_data))


# --- 14.6 The link ----------------------------------------------------------------------------------


def half_log_snr(alpha: Any, sigma: Any) -> Tensor:
    """Spec 14.6: lambda = log(alpha / sigma); +inf at sigma = 0, -inf at alpha = 0."""
    _, res = _num("alpha", alpha)
    a, s = check_alpha_sigma(alpha, sigma)
    return (torch.log(a) - torch.log(s)).to(res)


def edm_sigma(alpha: Any, sigma: Any) -> Tensor:
    """Spec 14.6: sigma / alpha (+inf at alpha = 0)."""
    _, res = _num("alpha", alpha)
    a, s = check_alpha_sigma(alpha, sigma)
    return (s / a).to(res)


def vp_from_edm_sigma(sig: Tensor) -> tuple[Tensor, Tensor]:
    """Spec 14.6 vp: (1, S) / sqrt(1 + S^2); (0, 1) at S = inf."""
    inf = torch.isinf(sig)
    r = torch.sqrt(1.0 + torch.where(inf, 0.0, sig) ** 2)
    return torch.where(inf, 0.0, 1.0 / r), torch.where(inf, 1.0, sig / r)


def flow_from_edm_sigma(sig: Tensor) -> tuple[Tensor, Tensor]:
    """Spec 14.6 flow: (1, S) / (1 + S); (0, 1) at S = inf."""
    inf = torch.isinf(sig)
    k = 1.0 + torch.where(inf, 0.0, sig)
    return torch.where(inf, 0.0, 1.0 / k), torch.where(inf, 1.0, sig / k)


def edm_from_edm_sigma(sig: Tensor) -> tuple[Tensor, Tensor]:
    """Spec 14.6 edm: (1, S), S finite."""
    _need(torch.isfinite(sig), "the edm family cannot represent sigma = inf (zero SNR): use vp or flow")
    return torch.ones_like(sig), sig.clone()


_FROM_EDM_SIGMA = {"vp": vp_from_edm_sigma, "flow": flow_from_edm_sigma, "edm": edm_from_edm_sigma}


def alpha_sigma_from_edm_sigma(family: str, sigma_edm: Any) -> tuple[Tensor, Tensor]:
    """Spec 14.6: the (alpha, sigma) of ``family`` at EDM level ``sigma_edm`` (>= 0, inf allowed)."""
    _family(family)
    res = sigma_edm.dtype if isinstance(sigma_edm, Tensor) and sigma_edm.is_floating_point() else F64
    sig = torch.as_tensor(sigma_edm).to(F64)
    _need(~torch.isnan(sig) & (sig >= 0), "argument 'sigma_edm' must be >= 0 (inf allowed), never NaN")
    return tuple(v.to(res) for v in _FROM_EDM_SIGMA[family](sig))


# --- 14.7 The process configuration -------------------------------------------------------------


@dataclass(frozen=True)
class Process:
    """Spec 14.7: a noise process as checkpoints and exported models record it (as vdm_ref.Process)."""

    family: str = "vp"  # "vp", "flow" or "edm" (14.1)
    prediction: str = ""  # what the network outputs (14.3); "" means the family's default
    sigma_data: float = SIGMA_DATA  # EDM: the data standard deviation the preconditioning assumes (14.5)
    sigma_min: float = SIGMA_MIN  # EDM: the smallest noise level sampled or trained on
    sigma_max: float = SIGMA_MAX  # EDM: the largest

    def __post_init__(self) -> None:
        fam = _family(self.family)
        if not self.prediction:
            object.__setattr__(self, "prediction", fam.predictions[0])
        if self.prediction not in fam.predictions:
            raise ValueError(f"argument 'prediction': the {self.family} family trains with {fam.predictions}, "
                             f"not {self.prediction!r}")
        check_sigma_data(self.sigma_data)
        lo, hi = self.sigma_min, self.sigma_max
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
            raise ValueError(f"arguments 'sigma_min' and 'sigma_max' need 0 < sigma_min < sigma_max (finite), "
                             f"got {lo}, {hi}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Process:
        known = sorted(cls.__dataclass_fields__)
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"unknown process key(s) {sorted(unknown)}; a process has {known}")
        return cls(**d)
