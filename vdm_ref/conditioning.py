"""Spec section 18: conditional sampling, given frames x^b at frame indices b, generate frames a.

Both methods are wrappers, so they work with every noise process (section 14) and every sampler
or solver that is driven by an x0-denoiser ``denoise(z, alpha, sigma)``:

- replacement (18.2) wraps the latent the denoiser sees: its observed frames become a
  forward-process sample alpha x^b + sigma eps of the given frames;
- reconstruction guidance (18.3) wraps the denoiser's x0 prediction: the generated frames are
  corrected by the gradient of ||x^b - x0_hat^b(z)||^2 through the denoiser, which the reference
  receives as a vector-Jacobian callable ``vjp(z, alpha, sigma, cotangent)`` (pure NumPy).

Section 18.8 says what a network trained with given frames (conditional-frame training) sees.
Section 18.7 holds the closed forms of the exact check: a stationary Gaussian process over frames,
its linear ideal denoiser and Jacobian, the exact conditional law and the 2-Wasserstein distance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from . import _checks
from .processes import Process, input_scale, network_condition
from .schedules import Schedule

Denoiser = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``denoise(z, alpha, sigma) -> x0_hat``: alpha, sigma are scalars or (B,) vectors (spec 18.4)."""

Vjp = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``vjp(z, alpha, sigma, c) -> c^T d x0_hat / d z``, shaped like z (spec 18.3)."""


# ----------------------------------------------------------------------------------- 18.1 masks


def extension_frames(frames: int, given: int) -> tuple[int, ...]:
    """Spec 18.1: extension observes the first ``given`` frames, b = (0, .., given - 1)."""
    if not 0 < given < frames:
        raise ValueError(f"argument 'given' must lie in [1, frames - 1] = [1, {frames - 1}], got {given}")
    return tuple(range(given))


def interpolation_frames(frames: int, factor: int) -> tuple[int, ...]:
    """Spec 18.1: interpolation by ``factor`` observes every factor-th frame, b = (0, k, 2k, ..)."""
    if not 2 <= factor < frames:
        raise ValueError(f"argument 'factor' must lie in [2, frames - 1] = [2, {frames - 1}], got {factor}")
    return tuple(range(0, frames, factor))


def frame_mask(frames: int, observed: Sequence[int] | Sequence[Sequence[int]], ndim: int = 5) -> np.ndarray:
    """Spec 18.1: m = 1 on observed frames, 0 on generated ones, shaped (B, 1, F, 1, ..) for a
    (B, C, F, ...) latent of rank ``ndim``. ``observed`` is one index list (B = 1, broadcast over
    the batch) or one list per sample."""
    rows = [observed] if all(isinstance(i, (int, np.integer)) for i in observed) else list(observed)
    mask = np.zeros((len(rows), 1, frames) + (1,) * (ndim - 3))
    for row, idx in enumerate(rows):
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= frames):
            raise ValueError(f"argument 'observed' must hold frame indices in [0, {frames - 1}], got {idx.tolist()}")
        mask[row, 0, idx] = 1.0
    return mask


def _mask(mask: object, x: np.ndarray) -> np.ndarray:
    m = _checks.as_float64("mask", mask)
    if not np.all((m == 0.0) | (m == 1.0)):
        raise ValueError("argument 'mask' must hold only 0 (generated) and 1 (observed)")
    try:
        np.broadcast_shapes(m.shape, x.shape)
    except ValueError:
        raise ValueError(f"argument 'mask' of shape {m.shape} does not broadcast against {x.shape}") from None
    return m


def _level(name: str, v: object, ndim: int) -> np.ndarray:
    """A noise level or weight: a scalar, or a (B,) vector reshaped to broadcast per sample."""
    arr = _checks.as_float64(name, v)
    return arr if arr.ndim == 0 else _checks.per_sample(arr, ndim)


# ----------------------------------------------------------------------------- 18.2 replacement


def replace_observed(
    z: np.ndarray, x_obs: np.ndarray, mask: np.ndarray, alpha: object, sigma: object, noise: np.ndarray
) -> np.ndarray:
    """Spec 18.2: z' = (1 - m) z + m (alpha x^b + sigma eps), a forward-process sample of the given
    frames (spec 14) in the observed frames and z unchanged elsewhere."""
    z = _checks.as_float64("z", z)
    x_obs, noise = _checks.as_float64("x_obs", x_obs), _checks.as_float64("noise", noise)
    _checks.same_shape(z=z, x_obs=x_obs, noise=noise)
    m = _mask(mask, z)
    forward = _level("alpha", alpha, z.ndim) * x_obs + _level("sigma", sigma, z.ndim) * noise
    return (1.0 - m) * z + m * forward


def with_replacement(denoise: Denoiser, x_obs: np.ndarray, mask: np.ndarray, noise: np.ndarray) -> Denoiser:
    """Spec 18.2 as a denoiser wrapper: call k sees replace_observed(z, .., noise[k]).

    ``noise`` has shape (K, *z.shape): K = 1 gives every call the same eps (one forward path of
    x^b); otherwise call k uses entry k (fresh noise per call, spec 1.5) and call K is an error.
    """
    noise = _checks.as_float64("noise", noise)
    calls = [0]

    def replaced(z: np.ndarray, alpha: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        k = 0 if noise.shape[0] == 1 else calls[0]
        if k >= noise.shape[0]:
            raise ValueError(f"argument 'noise' holds {noise.shape[0]} replacement draws; call {k + 1} needs one more")
        calls[0] += 1
        return denoise(replace_observed(z, x_obs, mask, alpha, sigma, noise[k]), alpha, sigma)

    return replaced


# ------------------------------------------------------------------- 18.3 reconstruction guidance


def reconstruction_residual(x_obs: np.ndarray, x0_hat: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Spec 18.3: r = m (x^b - x0_hat); -2 J^T r is the gradient of ||x^b - x0_hat^b(z)||^2 in z."""
    x_obs, x0_hat = _checks.as_float64("x_obs", x_obs), _checks.as_float64("x0_hat", x0_hat)
    _checks.same_shape(x_obs=x_obs, x0_hat=x0_hat)
    return _mask(mask, x0_hat) * (x_obs - x0_hat)


def reconstruction_guided_x0(
    x0_hat: np.ndarray, jtr: np.ndarray, x_obs: np.ndarray, mask: np.ndarray, alpha: object, weight: object
) -> np.ndarray:
    """Spec 18.3: x0~ = m x^b + (1 - m) (x0_hat + w_r alpha J^T r).

    w_r alpha J^T r equals -(w_r alpha / 2) grad_{z^a} ||x^b - x0_hat^b(z)||^2 on the generated
    frames; the observed frames of the prediction are the given frames. ``weight`` is a scalar or
    one w_r per sample.
    """
    x0_hat, jtr = _checks.as_float64("x0_hat", x0_hat), _checks.as_float64("jtr", jtr)
    _checks.same_shape(x0_hat=x0_hat, jtr=jtr)
    m = _mask(mask, x0_hat)
    step = _level("weight", weight, x0_hat.ndim) * _level("alpha", alpha, x0_hat.ndim)
    return m * _checks.as_float64("x_obs", x_obs) + (1.0 - m) * (x0_hat + step * jtr)


def with_reconstruction_guidance(
    denoise: Denoiser, vjp: Vjp, x_obs: np.ndarray, mask: np.ndarray, weight: object
) -> Denoiser:
    """Spec 18.3 as a denoiser wrapper: the guided prediction x0~ for whichever solver runs."""

    def guided(z: np.ndarray, alpha: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        x0_hat = _checks.as_float64("x0_hat", denoise(z, alpha, sigma))
        jtr = vjp(z, alpha, sigma, reconstruction_residual(x_obs, x0_hat, mask))
        return reconstruction_guided_x0(x0_hat, jtr, x_obs, mask, alpha, weight)

    return guided


# ---------------------------------------------------------------------- 18.4 / 18.6 the loop ends


def denoiser_as_vp_model(denoise: Denoiser, sched: Schedule) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Spec 18.4: a (wrapped) denoiser as the x0-prediction model of the 7.6 loop on a vp schedule,
    alpha = sqrt(abar_t), sigma = sqrt(1 - abar_t); run ``sample(.., prediction="x0")``."""

    def model(x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        a = sched.abar_at(np.asarray(t, dtype=np.int64))
        return denoise(x_t, np.sqrt(a), np.sqrt(1.0 - a))

    return model


def denoiser_on_grid(denoise: Denoiser, alphas: object, sigmas: object) -> Callable[[np.ndarray, int], np.ndarray]:
    """Spec 18.4: a (wrapped) denoiser as the level-indexed ``denoise(x, i)`` of the solvers
    (section 17), evaluated at (alphas[i], sigmas[i]) of the solver's grid."""
    a, s = _checks.as_float64("alphas", alphas), _checks.as_float64("sigmas", sigmas)

    def at_level(x: np.ndarray, i: int) -> np.ndarray:
        return denoise(x, a[i], s[i])

    return at_level


def keep_observed(x: np.ndarray, x_obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Spec 18.6: the output's observed frames are the given frames, x = (1 - m) x + m x^b."""
    x, x_obs = _checks.as_float64("x", x), _checks.as_float64("x_obs", x_obs)
    _checks.same_shape(x=x, x_obs=x_obs)
    m = _mask(mask, x)
    return (1.0 - m) * x + m * x_obs


# ------------------------------------------------------------------ 18.8 conditional-frame models


def given_level(process: Process) -> float:
    """Spec 18.8: the noise level at which a conditional-frame network sees its given frames: the
    family's cleanest level with a finite condition, t = 0 (vp), s = 0 (flow), sigma_min (edm)."""
    return GIVEN_LEVELS[process.family](process)


# family -> its given level (a test pins the keys to FAMILIES)
GIVEN_LEVELS: dict[str, Callable[[Process], float]] = {
    "vp": lambda p: 0.0,
    "flow": lambda p: 0.0,
    "edm": lambda p: p.sigma_min,
}


def given_frame_inputs(process: Process, x_in: np.ndarray, condition: object, x_obs: np.ndarray,
                       mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spec 18.8: what a conditional-frame network sees. Observed frames: the given frames noise-free,
    ``input_scale(l_g) x^b``, with the condition of the given level ``l_g``; generated frames: ``x_in``
    (the latent already scaled for the network) with the call's ``condition`` (scalar or (B,)).
    Returns (network input, per-frame condition (B, F))."""
    x_in, x_obs = _checks.as_float64("x_in", x_in), _checks.as_float64("x_obs", x_obs)
    _checks.same_shape(x_in=x_in, x_obs=x_obs)
    m = _mask(mask, x_in)
    level = given_level(process)
    scale = float(input_scale(process.family, level, sigma_data=process.sigma_data))
    c_given = float(network_condition(process.family, level, sigma_data=process.sigma_data))
    c = np.broadcast_to(_checks.as_float64("condition", condition), (x_in.shape[0],))
    frame_m = np.broadcast_to(m.reshape(m.shape[0], m.shape[2]), (x_in.shape[0], x_in.shape[2]))
    return (1.0 - m) * x_in + m * (scale * x_obs), np.where(frame_m > 0, c_given, c[:, None])


# ------------------------------------------------------------------- 18.7 the Gaussian-process check


def ar1_covariance(frames: int, rho: float) -> np.ndarray:
    """Spec 18.7: the stationary AR(1) covariance over frames, Sigma_ij = rho^|i - j|."""
    if not (-1.0 < rho < 1.0 and frames >= 2):
        raise ValueError(f"arguments need |rho| < 1 and frames >= 2, got rho={rho}, frames={frames}")
    idx = np.arange(frames)
    return float(rho) ** np.abs(idx[:, None] - idx[None, :]).astype(np.float64)


def gp_denoiser_matrix(cov: np.ndarray, alpha: object, sigma: object) -> np.ndarray:
    """Spec 18.7: K = alpha Sigma (alpha^2 Sigma + sigma^2 I)^-1, so E[x0 | z] = K z along frames.
    K is symmetric (Sigma and (alpha^2 Sigma + sigma^2 I)^-1 commute): it is also the Jacobian's
    transpose, so vjp(c) = K c. Scalar levels give one (F, F) matrix, (B,) levels a (B, F, F) stack."""
    cov = _checks.as_float64("cov", cov)
    a, s = _checks.as_float64("alpha", alpha), _checks.as_float64("sigma", sigma)
    a, s = np.broadcast_arrays(a, s)
    a3, s3 = a[..., None, None], s[..., None, None]
    system = a3**2 * cov + s3**2 * np.eye(cov.shape[0])
    return a3 * np.linalg.solve(system, np.broadcast_to(cov, system.shape))  # S^-1 Sigma = Sigma S^-1


def _frame_map(mats: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Apply one (F, F) matrix, or one per sample ((B, F, F)), along the frame axis 2 of z."""
    return np.einsum("ij,bcj...->bci..." if mats.ndim == 2 else "bij,bcj...->bci...", mats, z)


def gp_denoiser(cov: np.ndarray) -> tuple[Denoiser, Vjp]:
    """Spec 18.7: the ideal x0-denoiser of videos whose pixels are independent zero-mean Gaussian
    processes over frames with covariance ``cov``, and its vector-Jacobian product."""
    cov = _checks.as_float64("cov", cov)

    def denoise(z: np.ndarray, alpha: object, sigma: object) -> np.ndarray:
        return _frame_map(gp_denoiser_matrix(cov, alpha, sigma), _checks.as_float64("z", z))

    def vjp(z: np.ndarray, alpha: object, sigma: object, c: np.ndarray) -> np.ndarray:
        return _frame_map(np.swapaxes(gp_denoiser_matrix(cov, alpha, sigma), -1, -2), _checks.as_float64("c", c))

    return denoise, vjp


def gp_conditional(cov: np.ndarray, observed: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Spec 18.7: x^a | x^b ~ N(A x^b, C) with A = Sigma_ab Sigma_bb^-1 and the Schur complement
    C = Sigma_aa - Sigma_ab Sigma_bb^-1 Sigma_ba (a = the frames not in b, ascending)."""
    cov = _checks.as_float64("cov", cov)
    b = np.asarray(observed, dtype=np.int64)
    a = np.setdiff1d(np.arange(cov.shape[0]), b)
    gain = np.linalg.solve(cov[np.ix_(b, b)], cov[np.ix_(b, a)]).T
    return gain, cov[np.ix_(a, a)] - gain @ cov[np.ix_(b, a)]


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(0.5 * (m + m.T))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def conditional_w2(
    gain: np.ndarray, cov: np.ndarray, exact_gain: np.ndarray, exact_cov: np.ndarray, cov_bb: np.ndarray
) -> tuple[float, float, float]:
    """Spec 18.7: sqrt(E_{x^b} W2^2) between N(G x^b, P) and N(A x^b, C), x^b ~ N(0, Sigma_bb),
    with its two squared parts: the mean part tr((G - A) Sigma_bb (G - A)^T) and the Bures part
    tr(P + C - 2 (C^1/2 P C^1/2)^1/2). Returns (distance, mean part, covariance part)."""
    d = gain - exact_gain
    mean_part = float(np.trace(d @ cov_bb @ d.T))
    root = _psd_sqrt(exact_cov)
    cov_part = float(np.trace(cov + exact_cov - 2.0 * _psd_sqrt(root @ cov @ root)))
    cov_part = max(cov_part, 0.0)  # rounding can leave -1e-16 when P = C
    return float(np.sqrt(mean_part + cov_part)), mean_part, cov_part
