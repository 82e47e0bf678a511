"""Spec section 14: noise processes, x = alpha x0 + sigma eps, in three families.

Everything here works on the pair (alpha, sigma), scalars or one value per sample (B,), so a
solver written once on (alpha, sigma) serves every family. A family only says how its noise
level maps to (alpha, sigma) (14.1) and what the network is shown (14.2). Each prediction type
is two small linear maps (14.3): from a model output to (x0_hat, eps_hat), and from (x0, eps)
to the regression target.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from . import _checks
from .schedules import Schedule

SIGMA_DATA = 0.5  # EDM's assumed data standard deviation (Karras et al. 2022, section 5)
SIGMA_MIN = 0.002  # EDM's smallest and largest sampling noise levels (Table 1)
SIGMA_MAX = 80.0
FLOW_TIME_SCALE = 1000.0  # a flow network sees 1000 s (spec 14.2)


# --- 14.3 Prediction types: the two linear maps of each ----------------------------------------


class ToX0Eps(NamedTuple):
    """x0_hat = x0_x x + x0_out out and eps_hat = eps_x x + eps_out out (spec 14.3)."""

    x0_x: np.ndarray
    x0_out: np.ndarray
    eps_x: np.ndarray
    eps_out: np.ndarray


class Target(NamedTuple):
    """The prediction's value at (x0, eps): out = out_x0 x0 + out_eps eps (spec 14.3)."""

    out_x0: np.ndarray
    out_eps: np.ndarray


def _need(cond: np.ndarray, message: str) -> None:
    if not np.all(cond):
        raise ValueError(message)


def eps_to_x0_eps(alpha: np.ndarray, sigma: np.ndarray, sigma_data: float) -> ToX0Eps:
    """Spec 14.3 eps: x0 = (x - sigma out) / alpha, eps = out. Undefined at alpha = 0 (14.4)."""
    _need(alpha > 0, "prediction 'eps' cannot give x0 where alpha = 0 (zero terminal SNR): use v, x0, flow or edm")
    one, zero = np.ones_like(alpha), np.zeros_like(alpha)
    return ToX0Eps(1.0 / alpha, -sigma / alpha, zero, one)


def eps_target(alpha: np.ndarray, sigma: np.ndarray, sigma_data: float) -> Target:
    """Spec 14.3 eps: the target is the noise eps."""
    return Target(np.zeros_like(alpha), np.ones_like(alpha))


def x0_to_x0_eps(alpha: np.ndarray, sigma: np.ndarray, sigma_data: float) -> ToX0Eps:
    """Spec 14.3 x0: x0 = out, eps = (x - alpha out) / sigma. Undefined at sigma = 0 (14.4)."""
    _need(sigma > 0, "prediction 'x0' cannot give eps where sigma = 0 (clean data): the network is never run there")
    one, zero = np.ones_like(alpha), np.zeros_like(alpha)
    return ToX0Eps(zero, one, 1.0 / sigma, -alpha / sigma)


def x0_target(alpha: np.ndarray, sigma: np.ndarray, sigma_data: float) -> Target:
    """Spec 14.3 x0: the target is the clean data x0."""
    return Target(np.ones_like(alpha), np.zeros_like(alpha))


def v_to_x0_eps(alpha: np.ndarray, sigma: np.ndarray, sigma_data: float) -> ToX0Eps:
    """Spec 14.3 v, with r = sqrt(alpha^2 + sigma^2):
    x0 = alpha x / r^2 - sigma out / r,  eps = sigma x / r^2 + alpha out / r."""
    r2 = alpha * alpha + sigma * sigma
    r = np.sqrt(r2)
    return ToX0Eps(alpha / r2, -sigma / r, sigma / r2, alpha / r)


def v_target(alpha: np.ndarray, sigma: np.ndarray, sigma_data: float) -> Target:
    """Spec 14.3 v: v = (alpha eps - sigma x0) / r, r = sqrt(alpha^2 + sigma^2) (3.3 when r = 1)."""
    r = np.sqrt(alpha * alpha + sigma * sigma)
    return Target(-sigma / r, alpha / r)


def flow_to_x0_eps(alpha: np.ndarray, sigma: np.ndarray, sigma_data: float) -> ToX0Eps:
    """Spec 14.3 flow, with k = alpha + sigma (1 in the flow family):
    x0 = (x - sigma out) / k,  eps = (x + alpha out) / k."""
    k = alpha + sigma
    return ToX0Eps(1.0 / k, -sigma / k, 1.0 / k, alpha / k)


def flow_target(alpha: np.ndarray, sigma: np.ndarray, sigma_data: float) -> Target:
    """Spec 14.3 flow: the velocity u = eps - x0 (noise minus data; dx/ds in the flow family)."""
    return Target(-np.ones_like(alpha), np.ones_like(alpha))


def edm_to_x0_eps(alpha: np.ndarray, sigma: np.ndarray, sigma_data: float) -> ToX0Eps:
    """Spec 14.3 edm (the raw output F of Karras preconditioning), with q = sqrt(sigma^2 + sd^2 alpha^2):
    x0 = sd^2 alpha x / q^2 + sigma sd out / q,  eps = sigma x / q^2 - alpha sd out / q."""
    sd = float(sigma_data)
    q2 = sigma * sigma + sd * sd * alpha * alpha
    q = np.sqrt(q2)
    return ToX0Eps(sd * sd * alpha / q2, sigma * sd / q, sigma / q2, -alpha * sd / q)


def edm_target(alpha: np.ndarray, sigma: np.ndarray, sigma_data: float) -> Target:
    """Spec 14.3 edm: F = (sigma x0 / sd - sd alpha eps) / q, q = sqrt(sigma^2 + sd^2 alpha^2)."""
    sd = float(sigma_data)
    q = np.sqrt(sigma * sigma + sd * sd * alpha * alpha)
    return Target(sigma / (sd * q), -sd * alpha / q)


@dataclass(frozen=True)
class Prediction:
    """One prediction type: its two maps of spec 14.3."""

    to_x0_eps: Callable[[np.ndarray, np.ndarray, float], ToX0Eps]
    target: Callable[[np.ndarray, np.ndarray, float], Target]


PREDICTION_TYPES: dict[str, Prediction] = {
    "eps": Prediction(eps_to_x0_eps, eps_target),
    "x0": Prediction(x0_to_x0_eps, x0_target),
    "v": Prediction(v_to_x0_eps, v_target),
    "flow": Prediction(flow_to_x0_eps, flow_target),
    "edm": Prediction(edm_to_x0_eps, edm_target),
}


# --- argument handling -------------------------------------------------------------------------


def _prediction(prediction: str) -> Prediction:
    if prediction not in PREDICTION_TYPES:
        raise ValueError(
            f"argument 'prediction': unknown prediction {prediction!r}; choose one of {tuple(PREDICTION_TYPES)}")
    return PREDICTION_TYPES[prediction]


def check_sigma_data(sigma_data: float) -> float:
    """Spec 14.5: sigma_data is a finite number > 0."""
    if not (isinstance(sigma_data, (int, float)) and math.isfinite(sigma_data) and sigma_data > 0):
        raise ValueError(f"argument 'sigma_data' must be a finite number > 0, got {sigma_data!r}")
    return float(sigma_data)


def check_alpha_sigma(alpha: object, sigma: object) -> tuple[np.ndarray, np.ndarray]:
    """Spec 14.1: alpha and sigma are finite, >= 0 and never both 0; scalars or (B,) vectors."""
    a, s = _checks.as_float64("alpha", alpha), _checks.as_float64("sigma", sigma)
    for name, arr in (("alpha", a), ("sigma", s)):
        if arr.ndim > 1:
            raise ValueError(f"argument '{name}' must be a scalar or a (B,) vector, got shape {arr.shape}")
        if np.any(arr < 0):
            raise ValueError(f"argument '{name}' must be >= 0, got {arr.min()}")
    if a.ndim == s.ndim == 1 and a.shape != s.shape:
        raise ValueError(f"argument 'sigma' has shape {s.shape} but 'alpha' has shape {a.shape}; they must match")
    if np.any((a == 0) & (s == 0)):
        raise ValueError("arguments 'alpha' and 'sigma' are both 0: no process has such a level")
    return a, s


def _per_sample(x: np.ndarray, *coefs: np.ndarray) -> list[np.ndarray]:
    b = _checks.batch_of("x", x)
    out = []
    for c in coefs:
        if c.ndim == 1 and c.shape[0] != b:
            raise ValueError(f"arguments 'alpha' / 'sigma' have {c.shape[0]} entries but the batch has {b}")
        out.append(_checks.per_sample(c, x.ndim))
    return out


# --- 14.3 Conversions --------------------------------------------------------------------------


def to_x0_eps(x: np.ndarray, alpha: object, sigma: object, out: np.ndarray, prediction: str, *,
              sigma_data: float = SIGMA_DATA) -> tuple[np.ndarray, np.ndarray]:
    """Spec 14.3: the pair (x0_hat, eps_hat) from a model output ``out`` of type ``prediction`` at
    x = alpha x0 + sigma eps. ``sigma_data`` is read by the edm prediction only."""
    x, out = _checks.as_float64("x", x), _checks.as_float64("out", out)
    _checks.same_shape(x=x, out=out)
    a, s = check_alpha_sigma(alpha, sigma)
    c = _prediction(prediction).to_x0_eps(a, s, check_sigma_data(sigma_data))
    x0_x, x0_out, eps_x, eps_out = _per_sample(x, *c)
    return x0_x * x + x0_out * out, eps_x * x + eps_out * out


def from_x0_eps(x0: np.ndarray, eps: np.ndarray, alpha: object, sigma: object, prediction: str, *,
                sigma_data: float = SIGMA_DATA) -> np.ndarray:
    """Spec 14.3: the value of ``prediction`` at (x0, eps); defined for every alpha, sigma (16.2's target)."""
    x0, eps = _checks.as_float64("x0", x0), _checks.as_float64("eps", eps)
    _checks.same_shape(x0=x0, eps=eps)
    a, s = check_alpha_sigma(alpha, sigma)
    c_x0, c_eps = _per_sample(x0, *_prediction(prediction).target(a, s, check_sigma_data(sigma_data)))
    return c_x0 * x0 + c_eps * eps


def convert_prediction(x: np.ndarray, alpha: object, sigma: object, out: np.ndarray, source: str, target: str, *,
                       sigma_data: float = SIGMA_DATA) -> np.ndarray:
    """Spec 14.3: a model output of type ``source`` rewritten as type ``target`` (via (x0_hat, eps_hat))."""
    x0, eps = to_x0_eps(x, alpha, sigma, out, source, sigma_data=sigma_data)
    return from_x0_eps(x0, eps, alpha, sigma, target, sigma_data=sigma_data)


# --- 14.5 EDM preconditioning ----------------------------------------------------------------


def edm_preconditioning(sigma: object, sigma_data: float = SIGMA_DATA, prediction: str = "edm"
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Spec 14.5: (c_skip, c_out, c_in, c_noise) at EDM noise level sigma > 0, with
    D = c_skip x + c_out F (the x0 map of 14.3 at alpha = 1 for ``prediction``),
    c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = ln(sigma) / 4."""
    s = _checks.as_float64("sigma", sigma)
    _need(s > 0, f"argument 'sigma' must be > 0 for EDM preconditioning (ln sigma), got {s.min()}")
    sd = check_sigma_data(sigma_data)
    c = _prediction(prediction).to_x0_eps(np.ones_like(s), s, sd)
    return c.x0_x, c.x0_out, 1.0 / np.sqrt(s * s + sd * sd), np.log(s) / 4.0


# --- 14.1 / 14.2 Families -------------------------------------------------------------------------


def vp_alpha_sigma(level: object, sched: Schedule | None) -> tuple[np.ndarray, np.ndarray]:
    """Spec 14.1 vp: level = integer timestep t in [-1, T-1]; alpha = sqrt(abar_t), sigma = sqrt(1 - abar_t)."""
    if sched is None:
        raise ValueError("the vp family needs its schedule ('sched'): its levels are timesteps of the abar table")
    t = _checks.timesteps("level", level, sched.T, None, allow_minus_one=True)
    a = sched.abar_at(t)
    return np.sqrt(a), np.sqrt(1.0 - a)


def flow_alpha_sigma(level: object, sched: Schedule | None) -> tuple[np.ndarray, np.ndarray]:
    """Spec 14.1 flow: level = s in [0, 1]; alpha = 1 - s, sigma = s."""
    s = _checks.as_float64("level", level)
    _need((s >= 0) & (s <= 1), "argument 'level': a flow noise level s must lie in [0, 1]")
    return 1.0 - s, s.copy()


def edm_alpha_sigma(level: object, sched: Schedule | None) -> tuple[np.ndarray, np.ndarray]:
    """Spec 14.1 edm: level = sigma >= 0 (finite); alpha = 1."""
    s = _checks.as_float64("level", level)
    _need(s >= 0, "argument 'level': an EDM noise level sigma must be >= 0")
    return np.ones_like(s), s.copy()


def vp_condition(level: object, sigma_data: float) -> np.ndarray:
    """Spec 14.2 vp: the network sees the integer timestep t itself (as in v1)."""
    arr = np.asarray(level)
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
        raise ValueError(f"argument 'level' must hold integer timesteps for the vp family, got {arr!r}")
    return arr.astype(np.int64)


def flow_condition(level: object, sigma_data: float) -> np.ndarray:
    """Spec 14.2 flow: the network sees 1000 s."""
    return FLOW_TIME_SCALE * _checks.as_float64("level", level)


def edm_condition(level: object, sigma_data: float) -> np.ndarray:
    """Spec 14.2 edm: the network sees c_noise = ln(sigma) / 4 (sigma > 0), and c_in x (14.5)."""
    return edm_preconditioning(level, sigma_data)[3]


def unit_input_scale(level: object, sigma_data: float) -> np.ndarray:
    """Spec 14.2 vp, flow: the network sees x unscaled."""
    return np.ones(np.shape(level), dtype=np.float64)


def edm_input_scale(level: object, sigma_data: float) -> np.ndarray:
    """Spec 14.2 edm: the network sees c_in x, c_in = 1 / sqrt(sigma^2 + sd^2)."""
    return edm_preconditioning(level, sigma_data)[2]


@dataclass(frozen=True)
class Family:
    """One noise-process family (spec 14.1, 14.2)."""

    alpha_sigma: Callable[[Any, Schedule | None], tuple[np.ndarray, np.ndarray]]  # level -> (alpha, sigma)
    condition: Callable[[Any, float], np.ndarray]  # level -> what the network is conditioned on
    input_scale: Callable[[Any, float], np.ndarray]  # level -> the factor on x at the network's input
    predictions: tuple[str, ...]  # prediction types this family trains with, the default first


FAMILIES: dict[str, Family] = {
    "vp": Family(vp_alpha_sigma, vp_condition, unit_input_scale, ("eps", "x0", "v")),
    "flow": Family(flow_alpha_sigma, flow_condition, unit_input_scale, ("flow", "eps", "x0", "v")),
    "edm": Family(edm_alpha_sigma, edm_condition, edm_input_scale, ("edm", "eps", "x0", "v")),
}


def _family(family: str) -> Family:
    if family not in FAMILIES:
        raise ValueError(f"argument 'family': unknown family {family!r}; choose one of {tuple(FAMILIES)}")
    return FAMILIES[family]


def alpha_sigma(family: str, level: object, *, sched: Schedule | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Spec 14.1: (alpha, sigma) at a noise level of ``family`` (vp: timestep t with ``sched``; flow: s; edm: sigma)."""
    if family != "vp" and sched is not None:
        raise ValueError(f"argument 'sched': the {family} family has no schedule table (only vp does)")
    return _family(family).alpha_sigma(level, sched)


def network_condition(family: str, level: object, *, sigma_data: float = SIGMA_DATA) -> np.ndarray:
    """Spec 14.2: what the network is conditioned on at ``level``: t (vp), 1000 s (flow), ln(sigma)/4 (edm)."""
    return _family(family).condition(level, check_sigma_data(sigma_data))


def input_scale(family: str, level: object, *, sigma_data: float = SIGMA_DATA) -> np.ndarray:
    """Spec 14.2: the factor applied to x before the network: 1 (vp, flow) or c_in (edm)."""
    return _family(family).input_scale(level, check_sigma_data(sigma_data))


# --- 14.6 The link between families ----------------------------------------------------------


def half_log_snr(alpha: object, sigma: object) -> np.ndarray:
    """Spec 14.6: lambda = log(alpha / sigma) = log SNR / 2; +inf at sigma = 0, -inf at alpha = 0."""
    a, s = check_alpha_sigma(alpha, sigma)
    with np.errstate(divide="ignore"):
        return np.log(a) - np.log(s)


def edm_sigma(alpha: object, sigma: object) -> np.ndarray:
    """Spec 14.6: the EDM noise level of any (alpha, sigma): sigma / alpha (+inf at alpha = 0)."""
    a, s = check_alpha_sigma(alpha, sigma)
    with np.errstate(divide="ignore"):
        return s / a


def vp_from_edm_sigma(sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spec 14.6 vp: alpha = 1 / sqrt(1 + S^2), sigma = S / sqrt(1 + S^2); (0, 1) at S = inf."""
    inf = np.isinf(sig)
    r = np.sqrt(1.0 + np.where(inf, 0.0, sig) ** 2)
    return np.where(inf, 0.0, 1.0 / r), np.where(inf, 1.0, sig / r)


def flow_from_edm_sigma(sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spec 14.6 flow: s = S / (1 + S), alpha = 1 / (1 + S); (0, 1) at S = inf."""
    inf = np.isinf(sig)
    k = 1.0 + np.where(inf, 0.0, sig)
    return np.where(inf, 0.0, 1.0 / k), np.where(inf, 1.0, sig / k)


def edm_from_edm_sigma(sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spec 14.6 edm: (1, S); S must be finite (the edm family has no zero-SNR level)."""
    _need(np.isfinite(sig), "the edm family cannot represent sigma = inf (zero SNR): use vp or flow")
    return np.ones_like(sig), sig.copy()


_FROM_EDM_SIGMA = {"vp": vp_from_edm_sigma, "flow": flow_from_edm_sigma, "edm": edm_from_edm_sigma}


def alpha_sigma_from_edm_sigma(family: str, sigma_edm: object) -> tuple[np.ndarray, np.ndarray]:
    """Spec 14.6: the (alpha, sigma) of ``family`` with the same SNR as EDM level ``sigma_edm`` (>= 0, inf allowed)."""
    _family(family)
    sig = _checks.as_float64("sigma_edm", sigma_edm, finite=False)
    _need(~np.isnan(sig) & (sig >= 0), "argument 'sigma_edm' must be >= 0 (inf allowed), never NaN")
    return _FROM_EDM_SIGMA[family](sig)


# --- 14.7 The process configuration -----------------------------------------------------------


@dataclass(frozen=True)
class Process:
    """Spec 14.7: a noise process as checkpoints and exported models record it."""

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
                             f"got {self.sigma_min}, {self.sigma_max}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Process:
        known = sorted(cls.__dataclass_fields__)
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"unknown process key(s) {sorted(unknown)}; a process has {known}")
        return cls(**d)
