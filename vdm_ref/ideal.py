"""Spec 7.6.1 and 14.8: closed-form ideal denoisers, used as models in the sampling-loop vectors.

Both return the exact posterior expectation E[target | x_t] for a known data distribution, so
a sampler driven by them has a known answer and any backend can rebuild the same model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import _checks
from .diffusion import PREDICTIONS
from .processes import PREDICTION_TYPES, SIGMA_DATA, check_alpha_sigma, from_x0_eps
from .schedules import Schedule

Model = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"argument 'prediction': unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def _from_x0_hat(x_t: np.ndarray, a: np.ndarray, x0_hat: np.ndarray, prediction: str) -> np.ndarray:
    """Spec 7.6.1 (c): eps_hat and v_hat follow from x0_hat by linearity of E[. | x_t]."""
    if prediction == "x0":
        return x0_hat
    # 1 - abar_t > 0 for every t in [0, T-1], so this division is always defined.
    eps_hat = (x_t - np.sqrt(a) * x0_hat) / np.sqrt(1.0 - a)
    if prediction == "eps":
        return eps_hat
    return np.sqrt(a) * eps_hat - np.sqrt(1.0 - a) * x0_hat


def gaussian_ideal_model(sched: Schedule, mu: float, var: float, prediction: str) -> Model:
    """Spec 7.6.1 (a): the exact denoiser for x0 ~ N(mu, var I) (every element independent).

    E[x0 | x_t] = mu + sqrt(abar_t) var / (abar_t var + 1 - abar_t) * (x_t - sqrt(abar_t) mu).
    """
    _check_prediction(prediction)
    if not (np.isfinite(mu) and np.isfinite(var) and var >= 0.0):
        raise ValueError(f"arguments 'mu' and 'var' must be finite with var >= 0, got mu={mu}, var={var}")
    mu, var = float(mu), float(var)

    def model(x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        x_t = _checks.as_float64("x_t", x_t)
        tt = _checks.timesteps("t", t, sched.T, _checks.batch_of("x_t", x_t), allow_minus_one=False)
        a = _checks.per_sample(sched.abar_at(tt), x_t.ndim)
        x0_hat = mu + np.sqrt(a) * var / (a * var + 1.0 - a) * (x_t - np.sqrt(a) * mu)
        return _from_x0_hat(x_t, a, x0_hat, prediction)

    return model


def points_ideal_model(sched: Schedule, points: np.ndarray, prediction: str) -> Model:
    """Spec 7.6.1 (b): the exact denoiser for data uniform on K points, ``points`` of shape (K, *x.shape[1:]).

    Per sample b: l_k = -||x_t,b - sqrt(abar_t) p_k||^2 / (2 (1 - abar_t)), w = softmax(l) (taken
    after subtracting max_k l_k), E[x0 | x_t] = sum_k w_k p_k.
    """
    _check_prediction(prediction)
    pts = _checks.as_float64("points", points)
    if pts.ndim < 2 or pts.shape[0] < 1:
        raise ValueError(f"argument 'points' must have shape (K, C, ...) with K >= 1, got {pts.shape}")
    flat_pts = pts.reshape(pts.shape[0], -1)

    def model(x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        x_t = _checks.as_float64("x_t", x_t)
        if x_t.shape[1:] != pts.shape[1:]:
            raise ValueError(f"argument 'x_t' has sample shape {x_t.shape[1:]} but 'points' has {pts.shape[1:]}")
        b = _checks.batch_of("x_t", x_t)
        tt = _checks.timesteps("t", t, sched.T, b, allow_minus_one=False)
        a = sched.abar_at(tt)[:, None, None]  # (B, 1, 1) against (B, K, D)
        diff = x_t.reshape(b, 1, -1) - np.sqrt(a) * flat_pts[None]
        logits = -np.sum(diff**2, axis=2) / (2.0 * (1.0 - a[:, :, 0]))
        # Log-sum-exp shift: far from the data every raw weight underflows to 0 otherwise.
        w = np.exp(logits - logits.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        x0_hat = (w @ flat_pts).reshape(x_t.shape)
        return _from_x0_hat(x_t, _checks.per_sample(sched.abar_at(tt), x_t.ndim), x0_hat, prediction)

    return model


# --- spec 14.8: the same denoisers on (alpha, sigma), for every family ------------------------

Denoiser = Callable[[np.ndarray, object, object], np.ndarray]


def _alpha_sigma_of(x: np.ndarray, alpha: object, sigma: object) -> tuple[np.ndarray, np.ndarray]:
    a, s = check_alpha_sigma(alpha, sigma)
    if np.any(s == 0):
        raise ValueError("argument 'sigma': the ideal denoisers are run at sigma > 0 only (spec 14.4)")
    b = _checks.batch_of("x", x)
    for name, arr in (("alpha", a), ("sigma", s)):
        if arr.ndim == 1 and arr.shape[0] != b:
            raise ValueError(f"argument '{name}' has {arr.shape[0]} entries but the batch has {b}")
    return np.broadcast_to(a, (b,)), np.broadcast_to(s, (b,))


def _as_prediction(x: np.ndarray, a: np.ndarray, s: np.ndarray, x0_hat: np.ndarray, prediction: str,
                   sigma_data: float) -> np.ndarray:
    """Spec 14.8 (c): eps_hat from x0_hat, then the prediction's value at (x0_hat, eps_hat)."""
    eps_hat = (x - _checks.per_sample(a, x.ndim) * x0_hat) / _checks.per_sample(s, x.ndim)
    return from_x0_eps(x0_hat, eps_hat, a, s, prediction, sigma_data=sigma_data)


def _check_process_prediction(prediction: str) -> None:
    if prediction not in PREDICTION_TYPES:
        raise ValueError(
            f"argument 'prediction': unknown prediction {prediction!r}; choose one of {tuple(PREDICTION_TYPES)}")


def process_gaussian_ideal_model(mu: float, var: float, prediction: str, *,
                                 sigma_data: float = SIGMA_DATA) -> Denoiser:
    """Spec 14.8 (a): the exact denoiser for x0 ~ N(mu, var I), called as model(x, alpha, sigma).

    x0_hat = mu + alpha var / (alpha^2 var + sigma^2) (x - alpha mu); returns ``prediction`` (14.3).
    """
    _check_process_prediction(prediction)
    if not (np.isfinite(mu) and np.isfinite(var) and var >= 0.0):
        raise ValueError(f"arguments 'mu' and 'var' must be finite with var >= 0, got mu={mu}, var={var}")
    mu, var = float(mu), float(var)

    def model(x: np.ndarray, alpha: object, sigma: object) -> np.ndarray:
        x = _checks.as_float64("x", x)
        a, s = _alpha_sigma_of(x, alpha, sigma)
        ax, sx = _checks.per_sample(a, x.ndim), _checks.per_sample(s, x.ndim)
        x0_hat = mu + ax * var / (ax * ax * var + sx * sx) * (x - ax * mu)
        return _as_prediction(x, a, s, x0_hat, prediction, sigma_data)

    return model


def process_points_ideal_model(points: np.ndarray, prediction: str, *, sigma_data: float = SIGMA_DATA) -> Denoiser:
    """Spec 14.8 (b): the exact denoiser for data uniform on K points (shape (K, *x.shape[1:])),
    called as model(x, alpha, sigma): l_k = -||x - alpha p_k||^2 / (2 sigma^2), x0_hat = softmax(l) . p."""
    _check_process_prediction(prediction)
    pts = _checks.as_float64("points", points)
    if pts.ndim < 2 or pts.shape[0] < 1:
        raise ValueError(f"argument 'points' must have shape (K, C, ...) with K >= 1, got {pts.shape}")
    flat_pts = pts.reshape(pts.shape[0], -1)

    def model(x: np.ndarray, alpha: object, sigma: object) -> np.ndarray:
        x = _checks.as_float64("x", x)
        if x.shape[1:] != pts.shape[1:]:
            raise ValueError(f"argument 'x' has sample shape {x.shape[1:]} but 'points' has {pts.shape[1:]}")
        a, s = _alpha_sigma_of(x, alpha, sigma)
        diff = x.reshape(x.shape[0], 1, -1) - a[:, None, None] * flat_pts[None]
        logits = -np.sum(diff**2, axis=2) / (2.0 * s[:, None] ** 2)
        w = np.exp(logits - logits.max(axis=1, keepdims=True))  # log-sum-exp shift, as 7.6.1
        w /= w.sum(axis=1, keepdims=True)
        x0_hat = (w @ flat_pts).reshape(x.shape)
        return _as_prediction(x, a, s, x0_hat, prediction, sigma_data)

    return model
