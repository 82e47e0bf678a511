"""A complete, minimal third-party backend: copy this file to start your own.

It implements every operation of spec v1 in plain NumPy, written from the spec's formulas
(it does not call vdm_ref), and it *is* its own adapter: methods take and return NumPy arrays.
A backend on another array library keeps the same shape and converts at the method boundary
(see ``TorchAdapter`` in adapters.py). Check it with

    vdm conformance vdm.backends.conformance.example_backend:ExampleBackend [--dtype float32]

Design points worth copying:

* schedule tables are built once, in float64, from the schedule's name and parameters;
* coefficients (sqrt(abar_t), 1 - abar_t / abar_s, ...) are computed in float64 from those
  tables and cast to the compute dtype just before they meet the data, so low precision never
  computes 1 - abar by cancellation;
* data arithmetic runs in the compute dtype (float64, float32 or float16; NumPy has no bfloat16).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from .example_processes import ProcessOps
from .example_sigmas import SigmaOps

T_ = TypeVar("T_")
_DTYPES = {"float64": np.float64, "float32": np.float32, "float16": np.float16}
_DEFAULTS = {
    "linear": {"beta_start": 1e-4, "beta_end": 0.02},
    "scaled_linear": {"beta_start": 0.00085, "beta_end": 0.012},
    "cosine": {"s": 0.008, "max_beta": 0.999},
    "sigmoid": {"beta_start": 1e-4, "beta_end": 0.02, "sigmoid_range": 6.0},
}
_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def _choice(table: dict[str, T_], argument: str, value: Any) -> T_:
    """table[value], or the error of spec 1.7 naming the argument."""
    if value not in table:
        raise ValueError(f"argument '{argument}': unknown {argument} {value!r}; choose one of {tuple(table)}")
    return table[value]


# --- 2: schedules (one function per clause, i = 0 .. T-1, ramp = i / (T - 1)) --------------------


def _betas_linear(i: np.ndarray, T: int, p: dict[str, float]) -> np.ndarray:
    """Spec 2.1."""
    return p["beta_start"] + (p["beta_end"] - p["beta_start"]) * (i / (T - 1))


def _betas_scaled_linear(i: np.ndarray, T: int, p: dict[str, float]) -> np.ndarray:
    """Spec 2.2: linear in sqrt(beta)."""
    lo, hi = math.sqrt(p["beta_start"]), math.sqrt(p["beta_end"])
    return (lo + (hi - lo) * (i / (T - 1))) ** 2


def _betas_cosine(i: np.ndarray, T: int, p: dict[str, float]) -> np.ndarray:
    """Spec 2.3: 1 - f((i + 1) / T) / f(i / T), clipped at max_beta."""
    def f(u: np.ndarray) -> np.ndarray:
        return np.cos((u + p["s"]) / (1.0 + p["s"]) * math.pi / 2) ** 2

    return np.minimum(1.0 - f((i + 1) / T) / f(i / T), p["max_beta"])


def _betas_sigmoid(i: np.ndarray, T: int, p: dict[str, float]) -> np.ndarray:
    """Spec 2.4."""
    r = p["sigmoid_range"]
    return p["beta_start"] + (p["beta_end"] - p["beta_start"]) / (1.0 + np.exp(-(-r + 2.0 * r * (i / (T - 1)))))


_BETAS = {"linear": _betas_linear, "scaled_linear": _betas_scaled_linear, "cosine": _betas_cosine,
          "sigmoid": _betas_sigmoid}


def build_tables(name: str, T: int, zero_terminal_snr: bool, params: dict[str, float]) -> dict[str, np.ndarray]:
    """Spec 2.5 - 2.6: the float64 tables."""
    betas = _choice(_BETAS, "name", name)(np.arange(T, dtype=np.float64), T, {**_DEFAULTS[name], **params})
    abar = np.cumprod(1.0 - betas)
    if zero_terminal_snr:
        root = np.sqrt(abar)
        abar = abar[0] * ((root - root[-1]) / (root[0] - root[-1])) ** 2
        betas = 1.0 - abar / np.concatenate([[1.0], abar[:-1]])
    with np.errstate(divide="ignore"):
        return {
            "betas": betas, "alphas": 1.0 - betas, "abar": abar, "snr": abar / (1.0 - abar),
            "log_snr": np.log(abar) - np.log1p(-abar), "sigma": np.sqrt((1.0 - abar) / abar),
        }


# --- 6: inference timesteps (k = N-1 .. 0) ------------------------------------------------------


def _round_half_even(a: np.ndarray, b: int) -> np.ndarray:
    """Spec 6: a / b to the nearest integer, ties to even, in integers (no float quotient)."""
    q, r = np.divmod(a, b)
    return q + ((2 * r > b) | ((2 * r == b) & (q % 2 == 1)))


_SPACINGS: dict[str, Callable[[np.ndarray, int, int, int], np.ndarray]] = {
    "leading": lambda k, T, N, offset: k * (T // N) + offset,  # 6.1
    "trailing": lambda k, T, N, offset: _round_half_even((k + 1) * T, N) - 1,  # 6.2
    "linspace": lambda k, T, N, offset: (  # 6.3
        np.array([T - 1], dtype=np.int64) if N == 1 else _round_half_even((T - 1) * k, N - 1)),
}

# Spec 8.2 (eps written so that w = 1 at SNR = 0) and 5.4: tables by name, so a new name is one row.
_MIN_SNR: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "eps": lambda snr, g: np.where(snr > 0, np.minimum(1.0, g / np.where(snr > 0, snr, 1.0)), 1.0),
    "x0": lambda snr, g: np.minimum(snr, g),
    "v": lambda snr, g: np.minimum(snr, g) / (snr + 1.0),
}
_VARIANCES = ("fixed_small", "fixed_large", "learned_range")
# Spec 7.6: each sampler's step method and the one option of sample() it takes.
_SAMPLERS = {"ddpm": ("ddpm_step", "variance"), "ddim": ("ddim_step", "eta")}


class ExampleBackend(ProcessOps, SigmaOps):  # spec 14 / 16: example_processes.py; 15: example_sigmas.py
    """Spec v1 in NumPy at float64, float32 or float16."""

    name = "example-numpy"
    version = "1.0.0"

    def __init__(self, device: str = "cpu", dtype: str = "float64") -> None:
        if device != "cpu":
            raise ValueError(f"the example backend runs on cpu only, not {device!r}")
        if dtype not in _DTYPES:
            raise ValueError(f"the example backend supports {', '.join(_DTYPES)}, not {dtype!r}")
        self.device, self.dtype = device, dtype
        self._dt = _DTYPES[dtype]
        self._cache: dict[tuple, np.ndarray] = {}

    # --- helpers: conversion and the checks of spec 1.7 -------------------------------------------

    def _x(self, a: Any, name: str | None = None) -> np.ndarray:
        """Data in the compute dtype; a named argument must be finite (spec 1.7)."""
        arr = np.asarray(a)
        if name is not None and not np.all(np.isfinite(arr)):
            raise ValueError(f"argument '{name}' contains NaN or Inf; the spec requires finite values")
        return arr.astype(self._dt, copy=False)

    def _xs(self, **arrays: Any) -> list[np.ndarray]:
        """Several named data arguments that must share one shape (spec 1.1, 1.7)."""
        (first, ref), *rest = ((k, self._x(v, k)) for k, v in arrays.items())
        for name, arr in rest:
            if arr.shape != ref.shape:
                raise ValueError(f"argument '{name}' has shape {arr.shape} but '{first}' has shape {ref.shape}")
        return [ref, *(arr for _, arr in rest)]

    def _steps(self, sched: Any, name: str, t: Any, lo: int = 0) -> np.ndarray:
        """Integer timesteps in [lo, T-1] (lo = -1 where s = -1, clean data, is allowed)."""
        t = np.asarray(t, dtype=np.int64)
        if np.any(t < lo) or np.any(t > sched.T - 1):
            raise ValueError(f"argument '{name}' must lie in [{lo}, {sched.T - 1}], got {t.tolist()}")
        return t

    def _abar(self, sched: Any, t: Any, name: str = "t", lo: int = 0) -> np.ndarray:
        """float64 abar_t for integer t in [lo, T-1] (abar_{-1} = 1), from our own tables."""
        key = (sched.name, sched.T, sched.zero_terminal_snr, tuple(sorted(dict(sched.params).items())))
        if key not in self._cache:
            tables = build_tables(sched.name, sched.T, sched.zero_terminal_snr, dict(sched.params))
            self._cache[key] = np.concatenate([[1.0], tables["abar"]])
        return self._cache[key][self._steps(sched, name, t, lo) + 1]

    def _col(self, v: np.ndarray, ndim: int) -> np.ndarray:
        """A float64 per-sample coefficient as the compute dtype, broadcastable over rank ``ndim``."""
        v = np.asarray(v)
        return v.reshape(v.shape + (1,) * (ndim - v.ndim)).astype(self._dt) if v.ndim else v.astype(self._dt)

    # --- 2, 6: schedules and timesteps -----------------------------------------------------------

    def make_schedule(self, name: str, T: int, *, zero_terminal_snr: bool = False, **params: float) -> dict:
        return build_tables(name, int(T), zero_terminal_snr, params)

    def inference_timesteps(self, T: int, N: int, spacing: str = "trailing", offset: int = 0) -> np.ndarray:
        rule = _choice(_SPACINGS, "spacing", spacing)
        if not 1 <= N <= T:
            raise ValueError(f"argument 'N' must satisfy 1 <= N <= T = {T}, got N={N}")
        return rule(np.arange(N - 1, -1, -1, dtype=np.int64), T, N, offset)

    # --- 3, 4: forward process and parameterisations ----------------------------------------------

    def q_mean_variance(self, sched: Any, x0: Any, t: Any) -> tuple[np.ndarray, np.ndarray]:
        x0 = self._x(x0, "x0")
        a = self._abar(sched, t)
        return self._col(np.sqrt(a), x0.ndim) * x0, np.broadcast_to(self._col(1.0 - a, x0.ndim), x0.shape).copy()

    def q_sample(self, sched: Any, x0: Any, t: Any, noise: Any) -> np.ndarray:
        (x0, noise), a = self._xs(x0=x0, noise=noise), self._abar(sched, t)
        return self._col(np.sqrt(a), x0.ndim) * x0 + self._col(np.sqrt(1.0 - a), x0.ndim) * noise

    def velocity(self, sched: Any, x0: Any, t: Any, noise: Any) -> np.ndarray:
        (x0, noise), a = self._xs(x0=x0, noise=noise), self._abar(sched, t)
        return self._col(np.sqrt(a), x0.ndim) * noise - self._col(np.sqrt(1.0 - a), x0.ndim) * x0

    def v_from_x0_eps(self, sched: Any, t: Any, x0: Any, eps: Any) -> np.ndarray:
        (x0, eps), a = self._xs(x0=x0, eps=eps), self._abar(sched, t)
        return self._col(np.sqrt(a), x0.ndim) * eps - self._col(np.sqrt(1.0 - a), x0.ndim) * x0

    def x0_from_eps(self, sched: Any, x_t: Any, t: Any, eps: Any) -> np.ndarray:
        (x_t, eps), a = self._xs(x_t=x_t, eps=eps), self._abar(sched, t)
        return self._col(1.0 / np.sqrt(a), x_t.ndim) * x_t - self._col(np.sqrt((1.0 - a) / a), x_t.ndim) * eps

    def eps_from_x0(self, sched: Any, x_t: Any, t: Any, x0: Any) -> np.ndarray:
        (x_t, x0), a = self._xs(x_t=x_t, x0=x0), self._abar(sched, t)
        return self._col(1.0 / np.sqrt(1.0 - a), x_t.ndim) * x_t - self._col(np.sqrt(a / (1.0 - a)), x_t.ndim) * x0

    def x0_from_v(self, sched: Any, x_t: Any, t: Any, v: Any) -> np.ndarray:
        (x_t, v), a = self._xs(x_t=x_t, v=v), self._abar(sched, t)
        return self._col(np.sqrt(a), x_t.ndim) * x_t - self._col(np.sqrt(1.0 - a), x_t.ndim) * v

    def eps_from_v(self, sched: Any, x_t: Any, t: Any, v: Any) -> np.ndarray:
        (x_t, v), a = self._xs(x_t=x_t, v=v), self._abar(sched, t)
        return self._col(np.sqrt(1.0 - a), x_t.ndim) * x_t + self._col(np.sqrt(a), x_t.ndim) * v

    def predict_x0_eps(self, sched: Any, x_t: Any, t: Any, pred: Any, prediction: str) -> tuple[np.ndarray, ...]:
        x_t, pred = self._xs(x_t=x_t, pred=pred)
        return _choice(_PREDICT, "prediction", prediction)(self, sched, x_t, t, pred)

    # --- 5: posterior ---------------------------------------------------------------------------

    def _pair(self, sched: Any, s: Any, t: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """abar_s, abar_t and s, for s < t (spec 5)."""
        ss, tt = np.broadcast_arrays(self._steps(sched, "s", s, -1), self._steps(sched, "t", t))
        if np.any(ss >= tt):
            raise ValueError(f"argument 's' must be smaller than 't' (s={ss.tolist()}, t={tt.tolist()})")
        return self._abar(sched, ss, "s", -1), self._abar(sched, tt), ss

    def _var64(self, a_s: np.ndarray, a_t: np.ndarray) -> np.ndarray:
        return (1.0 - a_s) / (1.0 - a_t) * (1.0 - a_t / a_s)

    def _logvar64(self, sched: Any, s: Any, t: Any) -> np.ndarray:
        a_s, a_t, ss = self._pair(sched, s, t)
        floor = self._var64(self._abar(sched, 0), self._abar(sched, 1))
        return np.log(np.where(ss < 0, floor, self._var64(a_s, a_t)))

    def effective_beta(self, sched: Any, s: Any, t: Any) -> np.ndarray:
        a_s, a_t, _ = self._pair(sched, s, t)
        return (1.0 - a_t / a_s).astype(self._dt)

    def posterior_mean(self, sched: Any, x0: Any, x_t: Any, s: Any, t: Any) -> np.ndarray:
        x0, x_t = self._xs(x0=x0, x_t=x_t)
        a_s, a_t, _ = self._pair(sched, s, t)
        c0 = np.sqrt(a_s) * (1.0 - a_t / a_s) / (1.0 - a_t)
        ct = np.sqrt(a_t / a_s) * (1.0 - a_s) / (1.0 - a_t)
        return self._col(c0, x0.ndim) * x0 + self._col(ct, x0.ndim) * x_t

    def posterior_variance(self, sched: Any, s: Any, t: Any) -> np.ndarray:
        a_s, a_t, _ = self._pair(sched, s, t)
        return self._var64(a_s, a_t).astype(self._dt)

    def posterior_log_variance_clipped(self, sched: Any, s: Any, t: Any) -> np.ndarray:
        return self._logvar64(sched, s, t).astype(self._dt)

    def model_log_variance(self, sched: Any, s: Any, t: Any, variance: str, var_values: Any = None) -> np.ndarray:
        """Spec 5.4: fixed_small (the clipped posterior log-variance), fixed_large (log beta, the
        small one at s = -1) or learned_range (their interpolation by the variance channels)."""
        _choice(dict.fromkeys(_VARIANCES), "variance", variance)
        a_s, a_t, ss = self._pair(sched, s, t)
        small = self._logvar64(sched, s, t)
        large = np.where(ss < 0, small, np.log(1.0 - a_t / a_s))
        if variance != "learned_range":
            return (small if variance == "fixed_small" else large).astype(self._dt)
        v = self._x(var_values, "var_values")
        frac = (v + 1) / 2
        return frac * self._col(np.log(1.0 - a_t / a_s), v.ndim) + (1 - frac) * self._col(small, v.ndim)

    # --- 7: samplers ----------------------------------------------------------------------------

    def clip_x0(self, x0: Any, limit: float = 1.0) -> np.ndarray:
        return np.clip(self._x(x0, "x0"), -limit, limit)

    def dynamic_threshold(self, x0: Any, quantile: float = 0.995, floor: float = 1.0) -> np.ndarray:
        x0 = self._x(x0, "x0")
        flat = np.sort(np.abs(x0).reshape(x0.shape[0], -1), axis=1)  # one row per sample: all frames
        pos = quantile * (flat.shape[1] - 1)
        lo = int(math.floor(pos))
        hi = min(lo + 1, flat.shape[1] - 1)
        q = flat[:, lo] + (flat[:, hi] - flat[:, lo]) * self._dt(pos - lo)
        s = np.maximum(q, self._dt(floor)).reshape((-1,) + (1,) * (x0.ndim - 1))
        return np.clip(x0, -s, s) / s

    def _x0_hat(self, sched: Any, x_t: np.ndarray, t: Any, pred: np.ndarray, prediction: str,
                clip: float | None, threshold: float | None) -> tuple[np.ndarray, np.ndarray, bool]:
        x0, eps = self.predict_x0_eps(sched, x_t, t, pred, prediction)
        if threshold is not None:
            x0 = self.dynamic_threshold(x0, threshold)
        if clip is not None:
            x0 = self.clip_x0(x0, clip)
        return x0, eps, clip is not None or threshold is not None

    def _model_output(self, x_t: np.ndarray, out: Any) -> np.ndarray:
        """Spec 4.5: C prediction channels, or 2C with the variance values after them."""
        out = self._x(out, "out")
        if out.shape[:1] + out.shape[2:] != x_t.shape[:1] + x_t.shape[2:] or out.shape[1] not in (
                x_t.shape[1], 2 * x_t.shape[1]):
            raise ValueError(f"argument 'out' has shape {out.shape}; x_t has shape {x_t.shape} (C or 2C channels)")
        return out

    def ddpm_step(self, sched: Any, x_t: Any, t: Any, s: Any, out: Any, noise: Any, *, prediction: str = "eps",
                  variance: str = "fixed_small", clip: float | None = None,
                  threshold: float | None = None) -> np.ndarray:
        x_t = self._x(x_t, "x_t")
        out = self._model_output(x_t, out)
        c = x_t.shape[1]
        x0, _, _ = self._x0_hat(sched, x_t, t, out[:, :c], prediction, clip, threshold)
        mean = self.posterior_mean(sched, x0, x_t, s, t)
        var_values = out[:, c:] if out.shape[1] == 2 * c else None
        logvar = self.model_log_variance(sched, s, t, variance, var_values)
        ss = np.broadcast_to(np.asarray(s), (x_t.shape[0],))
        if np.all(ss < 0):
            return mean  # the last step adds no noise
        _, noise = self._xs(x_t=x_t, noise=noise)
        std = np.exp(logvar / 2) if logvar.ndim == x_t.ndim else self._col(np.exp(logvar / 2), x_t.ndim)
        return mean + self._col((ss >= 0).astype(np.float64), x_t.ndim) * std * noise

    def ddim_step(self, sched: Any, x_t: Any, t: Any, s: Any, out: Any, noise: Any = None, *,
                  prediction: str = "eps", eta: float = 0.0, clip: float | None = None,
                  threshold: float | None = None) -> np.ndarray:
        x_t = self._x(x_t, "x_t")
        out = self._model_output(x_t, out)
        a_s, a_t, _ = self._pair(sched, s, t)
        x0, eps, processed = self._x0_hat(sched, x_t, t, out[:, :x_t.shape[1]], prediction, clip, threshold)
        if processed:  # eps must agree with the processed x0 (spec 7.4)
            eps = self.eps_from_x0(sched, x_t, t, x0)
        sigma = eta * np.sqrt((1.0 - a_s) / (1.0 - a_t)) * np.sqrt(1.0 - a_t / a_s)
        # 1 - abar_s - sigma^2 in spec 7.4's form: no term cancels, so it is exactly 0 at eta = 1,
        # abar_t = 0 (the direct form leaves ~1e-8 there).
        d = (1.0 - a_s) * ((1.0 - eta**2) + eta**2 * a_t * (1.0 - a_s) / (a_s * (1.0 - a_t)))
        x_s = self._col(np.sqrt(a_s), x_t.ndim) * x0 + self._col(np.sqrt(d), x_t.ndim) * eps
        if eta == 0.0 or np.all(sigma == 0.0):
            return x_s
        _, noise = self._xs(x_t=x_t, noise=noise)
        return x_s + self._col(sigma, x_t.ndim) * noise

    def classifier_free_guidance(self, out_cond: Any, out_uncond: Any, scale: float,
                                 channels: int | None = None) -> np.ndarray:
        cond, uncond = self._xs(out_cond=out_cond, out_uncond=out_uncond)
        c = cond.shape[1] if channels is None else channels
        guided = cond.copy()
        guided[:, :c] = uncond[:, :c] + self._dt(scale) * (cond[:, :c] - uncond[:, :c])
        return guided

    def sample(self, model: Callable, sched: Any, timesteps: Any, shape: tuple[int, ...], noise: Any, *,
               sampler: str = "ddim", prediction: str = "eps", variance: str = "fixed_small", eta: float = 0.0,
               clip: float | None = None, threshold: float | None = None) -> np.ndarray:
        step_name, option = _choice(_SAMPLERS, "sampler", sampler)
        step = getattr(self, step_name)
        steps = [int(t) for t in self._steps(sched, "timesteps", timesteps).tolist()]
        z = self._x(noise, "noise")
        if z.shape != (len(steps) + 1, *shape):  # spec 7.6: one row for x_T and one per step
            raise ValueError(f"argument 'noise' must have shape {(len(steps) + 1, *shape)}, got {z.shape}")
        x = z[0]
        for i, t in enumerate(steps):
            s = steps[i + 1] if i + 1 < len(steps) else -1  # spec 6.4: never t - T // N
            out = self._x(model(x, np.full((shape[0],), t, dtype=np.int64)))
            x = step(sched, x, t, s, out, z[i + 1], prediction=prediction, clip=clip, threshold=threshold,
                     **{option: {"variance": variance, "eta": eta}[option]})
        return x

    # --- 8: training objectives -------------------------------------------------------------------

    def training_target(self, sched: Any, x0: Any, t: Any, noise: Any, prediction: str) -> np.ndarray:
        target = _choice(_TARGETS, "prediction", prediction)
        x0, noise = self._xs(x0=x0, noise=noise)
        return target(self, sched, x0, t, noise)

    def min_snr_weight(self, sched: Any, t: Any, prediction: str, gamma: float = 5.0) -> np.ndarray:
        a = self._abar(sched, t)
        return _choice(_MIN_SNR, "prediction", prediction)(a / (1.0 - a), gamma).astype(self._dt)

    def simple_loss(self, sched: Any, x0: Any, t: Any, noise: Any, pred: Any, prediction: str,
                    min_snr_gamma: float | None = None) -> np.ndarray:
        pred, x0 = self._xs(pred=pred, x0=x0)
        err = (pred - self.training_target(sched, x0, t, noise, prediction)) ** 2
        loss = err.reshape(err.shape[0], -1).mean(axis=1)
        if min_snr_gamma is not None:
            loss = loss * self.min_snr_weight(sched, t, prediction, min_snr_gamma)
        return loss

    def normal_kl(self, mean1: Any, logvar1: Any, mean2: Any, logvar2: Any) -> np.ndarray:
        m1, lv1, m2, lv2 = (self._x(a, n) for a, n in ((mean1, "mean1"), (logvar1, "logvar1"), (mean2, "mean2"),
                                                      (logvar2, "logvar2")))
        return (lv2 - lv1 + np.exp(lv1 - lv2) + (m1 - m2) ** 2 * np.exp(-lv2) - 1) / 2

    def discretized_gaussian_log_likelihood(self, x: Any, mean: Any, log_scale: Any) -> np.ndarray:
        # Tail probabilities need float64 and erfc (not 1 - erf) to survive; only the result is cast.
        x, mean, log_scale = (a.astype(np.float64) for a in self._xs(x=x, mean=mean, log_scale=log_scale))
        inv = np.exp(-log_scale)
        up, lo = inv * (x - mean + 1 / 255), inv * (x - mean - 1 / 255)

        def phi(u: np.ndarray) -> np.ndarray:  # standard normal CDF
            return 0.5 * _erfc(-u / math.sqrt(2.0))

        inner = np.where(lo > 0, phi(-lo) - phi(-up), phi(up) - phi(lo))  # subtract on the small side
        prob = np.where(x < -0.999, phi(up), np.where(x > 0.999, phi(-lo), inner))
        return np.log(np.maximum(prob, 1e-12)).astype(self._dt)

    def vlb_term(self, sched: Any, x0: Any, x_t: Any, t: Any, out: Any, prediction: str,
                 variance: str = "learned_range") -> np.ndarray:
        x0, x_t = self._xs(x0=x0, x_t=x_t)
        out = self._model_output(x_t, out)
        b, c = x0.shape[:2]
        tt = np.broadcast_to(self._steps(sched, "t", t), (b,))
        ss = tt - 1
        x0_hat, _ = self.predict_x0_eps(sched, x_t, tt, out[:, :c], prediction)
        mean = self.posterior_mean(sched, x0_hat, x_t, ss, tt)
        logvar = self.model_log_variance(sched, ss, tt, variance, out[:, c:] if out.shape[1] == 2 * c else None)
        logvar = np.broadcast_to(logvar if logvar.ndim == x0.ndim else self._col(logvar, x0.ndim), x0.shape)
        true_mean = self.posterior_mean(sched, x0, x_t, ss, tt)
        true_logvar = np.broadcast_to(self._col(self._logvar64(sched, ss, tt), x0.ndim), x0.shape)
        kl = self.normal_kl(true_mean, true_logvar, mean, logvar).reshape(b, -1).mean(axis=1) / math.log(2)
        nll = -self.discretized_gaussian_log_likelihood(x0, mean, logvar / 2).reshape(b, -1).mean(axis=1)
        return np.where(tt == 0, nll / math.log(2), kl).astype(self._dt)

    def hybrid_loss(self, sched: Any, x0: Any, t: Any, noise: Any, out: Any, prediction: str, lam: float = 0.001,
                    min_snr_gamma: float | None = None) -> np.ndarray:
        x0, noise = self._xs(x0=x0, noise=noise)
        out = self._model_output(x0, out)
        x_t = self.q_sample(sched, x0, t, noise)
        simple = self.simple_loss(sched, x0, t, noise, out[:, :x0.shape[1]], prediction, min_snr_gamma)
        return simple + self._dt(lam * sched.T) * self.vlb_term(sched, x0, x_t, t, out, prediction, "learned_range")

    # --- 17: solvers (example_solvers.py, written from the papers' forms) --------------------------

    def solve(self, denoise: Callable, x: Any, alphas: Any, sigmas: Any, solver: str = "euler", noise: Any = None,
              **options: float) -> np.ndarray:
        from .example_solvers import solve

        return solve(denoise, self._x(x, "x"), alphas, sigmas, solver, noise, self._dt, **options)


# Spec 4.5 and 8.1 by prediction (they call the backend's own clause methods).
_PREDICT: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "eps": lambda b, sched, x_t, t, pred: (b.x0_from_eps(sched, x_t, t, pred), pred),
    "x0": lambda b, sched, x_t, t, pred: (pred, b.eps_from_x0(sched, x_t, t, pred)),
    "v": lambda b, sched, x_t, t, pred: (b.x0_from_v(sched, x_t, t, pred), b.eps_from_v(sched, x_t, t, pred)),
}
_TARGETS: dict[str, Callable[..., np.ndarray]] = {
    "eps": lambda b, sched, x0, t, noise: noise,
    "x0": lambda b, sched, x0, t, noise: x0,
    "v": lambda b, sched, x0, t, noise: b.velocity(sched, x0, t, noise),
}
