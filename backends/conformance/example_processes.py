"""The example backend's noise-process ops (spec 14, 16), in plain NumPy, written from the papers'
forms rather than the spec's coefficient tables: eps and x0 by the process equation, v through
the variance-preserving rescale x / r, the flow velocity as d x / d s, EDM's F through Karras'
D = c_skip (x / alpha) + c_out F, and the normal quantile from the standard library
(statistics.NormalDist). Coefficients are float64; data arithmetic runs in the compute dtype.

``ProcessOps`` is a mixin: the host class supplies ``_dt`` (the compute dtype) and ``_x`` (data
in that dtype, checked finite when named).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np

_PREDICTIONS = ("eps", "x0", "v", "flow", "edm")
_FAMILIES = ("vp", "flow", "edm")
_DENSITY_DEFAULTS = {"uniform": {}, "logit_normal": {"m": 0.0, "s": 1.0}, "mode": {"scale": 1.29}}
_PHI_INV = np.vectorize(statistics.NormalDist().inv_cdf, otypes=[np.float64])


def _finite(name: str, v: Any, *, allow_inf: bool = False) -> np.ndarray:
    arr = np.asarray(v, dtype=np.float64)
    bad = np.isnan(arr) if allow_inf else ~np.isfinite(arr)
    if np.any(bad):
        raise ValueError(f"argument '{name}' contains NaN{'' if allow_inf else ' or Inf'}")
    return arr


def _pick(value: str, options: tuple[str, ...], argument: str) -> str:
    if value not in options:
        raise ValueError(f"argument '{argument}': unknown {argument} {value!r}; choose one of {options}")
    return value


def _levels(alpha: Any, sigma: Any) -> tuple[np.ndarray, np.ndarray]:
    a, s = _finite("alpha", alpha), _finite("sigma", sigma)
    if a.ndim == s.ndim == 1 and a.shape != s.shape:
        raise ValueError(f"argument 'sigma' has shape {s.shape} but 'alpha' has shape {a.shape}")
    if np.any(a < 0) or np.any(s < 0) or np.any((a == 0) & (s == 0)):
        raise ValueError("arguments 'alpha' and 'sigma' must be >= 0 and not both 0")
    return np.broadcast_arrays(a, s)


def _sd(sigma_data: float) -> float:
    if not (math.isfinite(sigma_data) and sigma_data > 0):
        raise ValueError(f"argument 'sigma_data' must be finite and > 0, got {sigma_data}")
    return float(sigma_data)


def _uniform(u: Any, *, open_left: bool = False) -> np.ndarray:
    u = _finite("u", u)
    if np.any(u >= 1) or np.any(u <= 0 if open_left else u < 0):
        raise ValueError("argument 'u' is outside the range of uniform draws")
    return u


def _quantile(u: np.ndarray) -> np.ndarray:
    safe = np.where(u > 0, u, 0.5)
    return np.where(u > 0, _PHI_INV(safe), -np.inf)


class ProcessOps:
    """Spec 14 and 16 for the example backend."""

    _dt: Any

    def _x(self, a: Any, name: str | None = None) -> np.ndarray:  # supplied by the host class
        raise NotImplementedError

    def _pair_data(self, first: tuple[str, Any], second: tuple[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        p, q = self._x(first[1], first[0]), self._x(second[1], second[0])
        if p.shape != q.shape:
            raise ValueError(f"argument '{second[0]}' has shape {q.shape} but '{first[0]}' has shape {p.shape}")
        return p, q

    def _per_sample(self, v: np.ndarray, like: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        if v.ndim == 1 and v.shape[0] != like.shape[0]:
            raise ValueError(f"arguments 'alpha' / 'sigma' have {v.shape[0]} entries, the batch {like.shape[0]}")
        return v.reshape(v.shape + (1,) * (like.ndim - v.ndim)).astype(self._dt)

    # --- 14.1, 14.2, 14.6 -----------------------------------------------------------------------

    def alpha_sigma(self, family: str, level: Any, *, sched: Any = None) -> tuple[np.ndarray, np.ndarray]:
        family = _pick(family, _FAMILIES, "family")
        if family == "vp":  # the table's square roots, t = -1 the clean level
            abar = self._abar(sched, level, "level", -1)  # type: ignore[attr-defined]
            return np.sqrt(abar), np.sqrt(1.0 - abar)
        lv = _finite("level", level)
        if np.any(lv < 0) or (family == "flow" and np.any(lv > 1)):
            raise ValueError("argument 'level' is outside the family's range")
        if family == "flow":
            return 1.0 - lv, lv
        return np.ones_like(lv), lv

    def network_condition(self, family: str, level: Any, *, sigma_data: float = 0.5) -> np.ndarray:
        family = _pick(family, _FAMILIES, "family")
        if family == "vp":
            return np.asarray(level).astype(np.int64)
        lv = _finite("level", level)
        if family == "flow":
            return 1000.0 * lv
        if np.any(lv <= 0):
            raise ValueError("argument 'level' must be > 0 for edm (ln sigma)")
        return np.log(lv) / 4.0

    def alpha_sigma_from_edm_sigma(self, family: str, sigma_edm: Any) -> tuple[np.ndarray, np.ndarray]:
        family = _pick(family, _FAMILIES, "family")
        S = _finite("sigma_edm", sigma_edm, allow_inf=True)
        if np.any(S < 0) or (family == "edm" and np.any(np.isinf(S))):
            raise ValueError("argument 'sigma_edm' is outside the family's range")
        if family == "edm":
            return np.ones_like(S), S
        # Same SNR 1 / S^2: the vp pair lies on the unit circle, the flow pair on alpha + sigma = 1.
        if family == "vp":  # the angle phi = arctan S: (cos phi, sin phi), arctan(inf) = pi / 2
            phi = np.arctan(S)
            return np.where(np.isinf(S), 0.0, np.cos(phi)), np.sin(phi)
        with np.errstate(invalid="ignore"):
            k = 1.0 + S
            return np.where(np.isinf(S), 0.0, 1.0 / k), np.where(np.isinf(S), 1.0, S / k)

    # --- 14.3, 14.5 -------------------------------------------------------------------------------

    def to_x0_eps(self, x: Any, alpha: Any, sigma: Any, out: Any, prediction: str, *,
                  sigma_data: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        x, out = self._pair_data(("x", x), ("out", out))
        prediction = _pick(prediction, _PREDICTIONS, "prediction")
        a64, s64 = _levels(alpha, sigma)
        sd = _sd(sigma_data)
        if prediction == "eps" and np.any(a64 == 0):
            raise ValueError("prediction 'eps' has no x0 at alpha = 0")
        if prediction == "x0" and np.any(s64 == 0):
            raise ValueError("prediction 'x0' has no eps at sigma = 0")
        a, s = self._per_sample(a64, x), self._per_sample(s64, x)
        if prediction == "eps":
            return (x - s * out) / a, out
        if prediction == "x0":
            return out, (x - a * out) / s
        if prediction == "v":  # x / r = cos(phi) x0 + sin(phi) eps, v = cos(phi) eps - sin(phi) x0
            r = self._per_sample(np.hypot(a64, s64), x)
            c, sn, xv = a / r, s / r, x / r
            return c * xv - sn * out, sn * xv + c * out
        if prediction == "flow":  # x = x0 + s' u with s' = sigma / (alpha + sigma) after dividing by alpha + sigma
            k = self._per_sample(a64 + s64, x)
            return (x - s * out) / k, (x + a * out) / k
        # edm: D = c_skip x_e + c_out F on x_e = x / alpha, S = sigma / alpha; alpha = 0 is the limit D = sd F.
        with np.errstate(divide="ignore", invalid="ignore"):
            S = np.where(a64 > 0, s64 / np.where(a64 > 0, a64, 1.0), 0.0)
            c_skip_over_a = np.where(a64 > 0, sd * sd / (S * S + sd * sd) / np.where(a64 > 0, a64, 1.0), 0.0)
            c_out = np.where(a64 > 0, S * sd / np.sqrt(S * S + sd * sd), sd)
        x0 = self._per_sample(c_skip_over_a, x) * x + self._per_sample(c_out, x) * out
        with np.errstate(divide="ignore", invalid="ignore"):
            eps_x = np.where(s64 > 0, (1.0 - a64 * c_skip_over_a) / np.where(s64 > 0, s64, 1.0), 0.0)
            eps_out = np.where(s64 > 0, -a64 * c_out / np.where(s64 > 0, s64, 1.0), -1.0)
        # At sigma = 0 (S = 0) eps is read off F alone: F = -eps there.
        return x0, self._per_sample(eps_x, x) * x + self._per_sample(eps_out, x) * out

    def from_x0_eps(self, x0: Any, eps: Any, alpha: Any, sigma: Any, prediction: str, *,
                    sigma_data: float = 0.5) -> np.ndarray:
        x0, eps = self._pair_data(("x0", x0), ("eps", eps))
        prediction = _pick(prediction, _PREDICTIONS, "prediction")
        a64, s64 = _levels(alpha, sigma)
        sd = _sd(sigma_data)
        if prediction == "eps":
            return eps
        if prediction == "x0":
            return x0
        if prediction == "flow":
            return eps - x0
        if prediction == "v":
            r = np.hypot(a64, s64)
            return self._per_sample(a64 / r, x0) * eps - self._per_sample(s64 / r, x0) * x0
        # edm: F = (x0 - c_skip x_e) / c_out, i.e. -v of the data scaled by 1 / sd: (x0 / sd, eps) at (alpha sd, sigma)
        r = np.hypot(a64 * sd, s64)
        return self._per_sample(s64 / (sd * r), x0) * x0 - self._per_sample(a64 * sd / r, x0) * eps

    def edm_preconditioning(self, sigma: Any, sigma_data: float = 0.5, prediction: str = "edm"
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        s = _finite("sigma", sigma)
        if np.any(s <= 0):
            raise ValueError("argument 'sigma' must be > 0")
        sd = _sd(sigma_data)
        prediction = _pick(prediction, _PREDICTIONS, "prediction")
        # Karras et al. 2022, Table 1 for the x0 target; the other targets rewrite D = x0_hat.
        skip_out = {
            "edm": (sd * sd / (s * s + sd * sd), s * sd / np.sqrt(s * s + sd * sd)),
            "v": (1.0 / (s * s + 1.0), -s / np.sqrt(s * s + 1.0)),
            "eps": (np.ones_like(s), -s),
            "x0": (np.zeros_like(s), np.ones_like(s)),
            "flow": (1.0 / (1.0 + s), -s / (1.0 + s)),
        }[prediction]
        return (*skip_out, 1.0 / np.sqrt(s * s + sd * sd), np.log(s) / 4.0)

    # --- 16 -----------------------------------------------------------------------------------------

    def flow_level_from_uniform(self, u: Any, density: str = "uniform", shift: float = 1.0,
                                **params: float) -> np.ndarray:
        density = _pick(density, tuple(_DENSITY_DEFAULTS), "density")
        if set(params) - set(_DENSITY_DEFAULTS[density]):
            raise ValueError(f"unknown parameter(s) for density {density!r}")
        p = {**_DENSITY_DEFAULTS[density], **params}
        u = _uniform(u)
        if density == "uniform":
            s = u
        elif density == "logit_normal":
            s = 1.0 / (1.0 + np.exp(-(p["m"] + p["s"] * _quantile(u))))
        else:
            s = 1.0 - u - p["scale"] * (np.cos(math.pi * u / 2.0) ** 2 - 1.0 + u)
        s = np.clip(s, 0.0, 1.0)
        return shift * s / (1.0 + (shift - 1.0) * s)

    def edm_sigma_from_uniform(self, u: Any, p_mean: float = -1.2, p_std: float = 1.2) -> np.ndarray:
        return np.exp(p_mean + p_std * _quantile(_uniform(u, open_left=True)))

    def edm_loss_weight(self, sigma: Any, sigma_data: float = 0.5) -> np.ndarray:
        s = _finite("sigma", sigma)
        if np.any(s <= 0):
            raise ValueError("argument 'sigma' must be > 0")
        sd = _sd(sigma_data)
        return 1.0 / (sd * sd) + 1.0 / (s * s)

    def process_min_snr_weight(self, alpha: Any, sigma: Any, prediction: str, gamma: float = 5.0, *,
                               sigma_data: float = 0.5) -> np.ndarray:
        prediction = _pick(prediction, _PREDICTIONS, "prediction")
        a, s = _levels(alpha, sigma)
        sd = _sd(sigma_data)
        if prediction == "eps":  # min(SNR, g) / SNR
            return np.where(a == 0, 1.0, np.minimum(1.0, gamma * s * s / np.where(a == 0, 1.0, a * a)))
        if prediction == "x0":
            return np.where(s == 0, gamma, np.minimum(a * a / np.where(s == 0, 1.0, s * s), gamma))
        # min(SNR, g) c^2 with c = sigma / r (v), sigma / (alpha + sigma) (flow), sigma sd / q (edm)
        c_over_s2 = {"v": 1.0 / (a * a + s * s), "flow": 1.0 / (a + s) ** 2,
                     "edm": sd * sd / (s * s + sd * sd * a * a)}[prediction]
        return np.minimum(a * a, gamma * s * s) * c_over_s2

    def process_simple_loss(self, x0: Any, noise: Any, alpha: Any, sigma: Any, pred: Any, prediction: str, *,
                            sigma_data: float = 0.5, min_snr_gamma: float | None = None) -> np.ndarray:
        target = self.from_x0_eps(x0, noise, alpha, sigma, prediction, sigma_data=sigma_data)
        pred = self._x(pred, "pred")
        if pred.shape != target.shape:
            raise ValueError(f"argument 'pred' has shape {pred.shape} but 'x0' has shape {target.shape}")
        loss = ((pred - target) ** 2).reshape(pred.shape[0], -1).mean(axis=1)
        if min_snr_gamma is not None:
            loss = loss * self.process_min_snr_weight(alpha, sigma, prediction, min_snr_gamma,
                                                      sigma_data=sigma_data).astype(self._dt)
        return loss
