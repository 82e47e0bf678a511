"""Spec section 7: x0 processing, DDPM and DDIM steps, guidance and the sampling loop.

Each step maps x_t to x_s for one (t, s) pair of spec 6.4. Randomness is an explicit input:
``noise`` is a standard normal array shaped like x_t.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import _checks
from .diffusion import (
    eps_from_x0,
    model_log_variance,
    posterior_mean,
    predict_x0_eps,
    split_model_output,
)
from .schedules import Schedule
from .timesteps import step_pairs

Model = Callable[[np.ndarray, np.ndarray], np.ndarray]


def clip_x0(x0: np.ndarray, limit: float = 1.0) -> np.ndarray:
    """Spec 7.1: static clipping, x0 <- clip(x0, -limit, limit)."""
    if not limit > 0:
        raise ValueError(f"argument 'limit' must be > 0, got {limit}")
    return np.clip(_checks.as_float64("x0", x0), -limit, limit)


def dynamic_threshold(x0: np.ndarray, quantile: float = 0.995, floor: float = 1.0) -> np.ndarray:
    """Spec 7.2: per sample b, s_b = max(quantile_p(|x0_b|), floor) over ALL of its channels and
    frames (linear interpolation between order statistics); x0_b <- clip(x0_b, -s_b, s_b) / s_b."""
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"argument 'quantile' must lie in (0, 1], got {quantile}")
    x0 = _checks.as_float64("x0", x0)
    flat = np.abs(x0).reshape(_checks.batch_of("x0", x0), -1)
    s = np.maximum(np.quantile(flat, quantile, axis=1, method="linear"), floor)
    s = _checks.per_sample(s, x0.ndim)
    return np.clip(x0, -s, s) / s


def process_x0(x0: np.ndarray, clip: float | None = None, threshold: float | None = None) -> np.ndarray:
    """Spec 7.1 / 7.2: dynamic thresholding (if ``threshold`` is a quantile), then clipping (if
    ``clip`` is a limit). Neither set: x0 unchanged."""
    if threshold is not None:
        x0 = dynamic_threshold(x0, threshold)
    if clip is not None:
        x0 = clip_x0(x0, clip)
    return x0


def ddpm_step(
    sched: Schedule,
    x_t: np.ndarray,
    t: object,
    s: object,
    out: np.ndarray,
    noise: np.ndarray | None,
    *,
    prediction: str = "eps",
    variance: str = "fixed_small",
    clip: float | None = None,
    threshold: float | None = None,
) -> np.ndarray:
    """Spec 7.3: ancestral step x_s = mu(x0_hat, x_t) + [s >= 0] exp(logvar / 2) noise."""
    x_t = _checks.as_float64("x_t", x_t)
    b = _checks.batch_of("x_t", x_t)
    tt = _checks.timesteps("t", t, sched.T, b, allow_minus_one=False)
    ss = _checks.timesteps("s", s, sched.T, b, allow_minus_one=True)
    pred, var_values = split_model_output(out, x_t.shape[1])
    if variance == "learned_range" and var_values is None:
        raise ValueError("variance 'learned_range' needs a model output with 2C channels")
    x0, _ = predict_x0_eps(sched, x_t, tt, pred, prediction)
    x0 = process_x0(x0, clip, threshold)
    mean = posterior_mean(sched, x0, x_t, ss, tt)
    logvar = model_log_variance(sched, ss, tt, variance, var_values)
    if np.all(ss < 0):
        return mean
    if noise is None:
        raise ValueError("argument 'noise' is required: this DDPM step is stochastic (s >= 0)")
    noise = _checks.as_float64("noise", noise)
    _checks.same_shape(x_t=x_t, noise=noise)
    std = np.exp(0.5 * _checks.per_sample(logvar, x_t.ndim))
    return mean + _checks.per_sample((ss >= 0).astype(np.float64), x_t.ndim) * std * noise


def ddim_sigma(sched: Schedule, t: np.ndarray, s: np.ndarray, eta: float) -> np.ndarray:
    """Spec 7.4: sigma = eta * sqrt((1 - abar_s) / (1 - abar_t)) * sqrt(1 - abar_t / abar_s)."""
    a_t, a_s = sched.abar_at(t), sched.abar_at(s)
    return eta * np.sqrt((1.0 - a_s) / (1.0 - a_t)) * np.sqrt(1.0 - a_t / a_s)


def ddim_direction_variance(a_t: np.ndarray, a_s: np.ndarray, eta: float) -> np.ndarray:
    """Spec 7.4: the eps_hat coefficient squared, 1 - abar_s - sigma^2, written without cancellation:

    (1 - abar_s) * ((1 - eta^2) + eta^2 * abar_t (1 - abar_s) / (abar_s (1 - abar_t))).
    Every term is non-negative, so it is exactly 0 where it should be (eta = 1 at abar_t = 0).
    """
    return (1.0 - a_s) * ((1.0 - eta**2) + eta**2 * a_t * (1.0 - a_s) / (a_s * (1.0 - a_t)))


def final_abar_one(s: np.ndarray) -> np.ndarray:
    """Spec 7.4 ``final_abar = "one"`` (default): the last step lands on abar_{-1} = 1 (1.2)."""
    return s


def final_abar_first(s: np.ndarray) -> np.ndarray:
    """Spec 7.4 ``final_abar = "abar_0"``: the last step lands on abar_0, i.e. s = -1 reads as s = 0
    in every formula of the step (diffusers' ``set_alpha_to_one=False``)."""
    return np.maximum(s, 0)


FINAL_ABAR: dict[str, Callable[[np.ndarray], np.ndarray]] = {"one": final_abar_one, "abar_0": final_abar_first}


def clipped_eps_rederive(
    sched: Schedule, x_t: np.ndarray, t: np.ndarray, x0: np.ndarray, eps: np.ndarray
) -> np.ndarray:
    """Spec 7.4 ``clipped_eps = "rederive"`` (default): eps_hat <- 4.2(x_t, processed x0_hat)."""
    return eps_from_x0(sched, x_t, t, x0)


def clipped_eps_keep(
    sched: Schedule, x_t: np.ndarray, t: np.ndarray, x0: np.ndarray, eps: np.ndarray
) -> np.ndarray:
    """Spec 7.4 ``clipped_eps = "keep"``: eps_hat stays the one of 4.5, before processing (diffusers'
    ``use_clipped_model_output=False``)."""
    return eps


CLIPPED_EPS: dict[str, Callable[..., np.ndarray]] = {"rederive": clipped_eps_rederive, "keep": clipped_eps_keep}


def _choice(name: str, value: str, table: dict) -> Callable:
    if value not in table:
        raise ValueError(f"argument '{name}': unknown value {value!r}; choose one of {tuple(table)}")
    return table[value]


def ddim_step(
    sched: Schedule,
    x_t: np.ndarray,
    t: object,
    s: object,
    out: np.ndarray,
    noise: np.ndarray | None = None,
    *,
    prediction: str = "eps",
    eta: float = 0.0,
    clip: float | None = None,
    threshold: float | None = None,
    final_abar: str = "one",
    clipped_eps: str = "rederive",
) -> np.ndarray:
    """Spec 7.4: x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma noise.

    If x0_hat was clipped or thresholded, eps_hat is re-derived from it (4.2) unless
    ``clipped_eps="keep"``. ``final_abar="abar_0"`` makes s = -1 land on abar_0 instead of 1.
    Variance channels of a 2C-channel output are ignored. eta = 0 is deterministic and needs no noise.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"argument 'eta' must lie in [0, 1], got {eta}")
    land = _choice("final_abar", final_abar, FINAL_ABAR)
    eps_rule = _choice("clipped_eps", clipped_eps, CLIPPED_EPS)
    x_t = _checks.as_float64("x_t", x_t)
    b = _checks.batch_of("x_t", x_t)
    tt = _checks.timesteps("t", t, sched.T, b, allow_minus_one=False)
    ss = _checks.timesteps("s", s, sched.T, b, allow_minus_one=True)
    if np.any(ss >= tt):
        raise ValueError(f"argument 's' must be smaller than 't' (s={ss.tolist()}, t={tt.tolist()})")
    pred, _ = split_model_output(out, x_t.shape[1])
    x0, eps = predict_x0_eps(sched, x_t, tt, pred, prediction)
    if clip is not None or threshold is not None:
        x0 = process_x0(x0, clip, threshold)
        eps = eps_rule(sched, x_t, tt, x0, eps)
    ss = land(ss)
    a_s = _checks.per_sample(sched.abar_at(ss), x_t.ndim)
    sigma = _checks.per_sample(ddim_sigma(sched, tt, ss, eta), x_t.ndim)
    a_t = _checks.per_sample(sched.abar_at(tt), x_t.ndim)
    x_s = np.sqrt(a_s) * x0 + np.sqrt(ddim_direction_variance(a_t, a_s, eta)) * eps
    if eta == 0.0 or np.all(sigma == 0.0):
        return x_s
    if noise is None:
        raise ValueError("argument 'noise' is required: DDIM with eta > 0 is stochastic")
    noise = _checks.as_float64("noise", noise)
    _checks.same_shape(x_t=x_t, noise=noise)
    return x_s + sigma * noise


def classifier_free_guidance(
    out_cond: np.ndarray, out_uncond: np.ndarray, scale: float, channels: int | None = None
) -> np.ndarray:
    """Spec 7.5: out = out_uncond + w (out_cond - out_uncond) on the first ``channels`` channels
    (all if None); further channels (learned variance) are taken from out_cond."""
    cond = _checks.as_float64("out_cond", out_cond)
    uncond = _checks.as_float64("out_uncond", out_uncond)
    _checks.same_shape(out_cond=cond, out_uncond=uncond)
    c = cond.shape[1] if channels is None else channels
    guided = cond.copy()
    guided[:, :c] = uncond[:, :c] + scale * (cond[:, :c] - uncond[:, :c])
    return guided


def sampling_noise(
    noise: np.ndarray | np.random.Generator, n_steps: int, shape: tuple[int, ...]
) -> np.ndarray:
    """Spec 7.6: the loop's noise array, shape (N + 1, *shape): entry 0 is x_T, entry i + 1 is
    step i's noise. A Generator gives ``rng.standard_normal((N + 1, *shape))``."""
    return _checks.noise_block(noise, (n_steps + 1, *shape), "(N + 1, *shape)")


def sample(
    model: Model,
    sched: Schedule,
    timesteps: np.ndarray,
    shape: tuple[int, ...],
    noise: np.ndarray | np.random.Generator,
    *,
    sampler: str = "ddim",
    prediction: str = "eps",
    variance: str = "fixed_small",
    eta: float = 0.0,
    clip: float | None = None,
    threshold: float | None = None,
    final_abar: str = "one",
    clipped_eps: str = "rederive",
) -> np.ndarray:
    """Spec 7.6: start from x = noise[0] and apply one step per (t, s) pair of spec 6.4.

    ``model(x_t, t)`` receives x_t (float64, ``shape``) and t (int64, (B,)) and returns the
    prediction (C or 2C channels). Returns x_{-1}, the sample.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"argument 'sampler': unknown sampler {sampler!r}; choose one of {tuple(SAMPLERS)}")
    steps = np.asarray(timesteps, dtype=np.int64)
    if steps.ndim != 1 or len(steps) == 0 or np.any(np.diff(steps) >= 0):
        raise ValueError("argument 'timesteps' must be a non-empty, strictly decreasing sequence (spec 6)")
    _checks.timesteps("timesteps", steps, sched.T, None, allow_minus_one=False)
    shape = tuple(int(d) for d in shape)
    z = sampling_noise(noise, len(steps), shape)
    x = z[0]
    row = SAMPLERS[sampler]
    options = {"variance": variance, "eta": eta, "final_abar": final_abar, "clipped_eps": clipped_eps}
    extra = {k: v for k, v in options.items() if k in row.options}
    for i, (t, s) in enumerate(step_pairs(steps)):
        tvec = np.full((shape[0],), t, dtype=np.int64)
        out = model(x, tvec)
        x = row.step(sched, x, t, s, out, z[i + 1], prediction=prediction, clip=clip, threshold=threshold, **extra)
    return x


@dataclass(frozen=True)
class Sampler:
    """A row of the sampler table (spec 7.6): the step function and the options of :func:`sample`
    it takes besides ``prediction``, ``clip`` and ``threshold``."""

    step: Callable[..., np.ndarray]
    options: tuple[str, ...]


SAMPLERS: dict[str, Sampler] = {
    "ddpm": Sampler(ddpm_step, ("variance",)),  # spec 7.3
    "ddim": Sampler(ddim_step, ("eta", "final_abar", "clipped_eps")),  # spec 7.4
}
