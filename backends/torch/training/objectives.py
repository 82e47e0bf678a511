"""Training objectives for every noise process (spec 8 and 16): one per family, in OBJECTIVES.

A step of training is two calls, so that the network sits between them:

    noised = objective.draw(cfg, sched, x0)              # levels and noise, under the step's seed
    out = net(noised.net_input, noised.condition, labels)
    per = objective.loss(cfg, sched, noised, out)        # (B,) per-sample losses

``draw`` takes every random number of the objective from the global torch RNG, which the loop
re-seeds at the start of each step, so a resumed run stays bitwise exact. The flow and edm
objectives draw the uniforms u of spec 16.1 first (float64, one per sample) and then the noise;
vp keeps the v1 loop's draws (``torch.randint`` timesteps, then the noise), so runs and
checkpoints made before spec 16 continue and compare bitwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import ops
from ..schedules import TorchSchedule
from .config import TrainConfig

F64 = torch.float64


@dataclass(frozen=True)
class Noised:
    """One step's noised batch: what the network is shown and what its loss reads."""

    x0: Tensor  # the clean batch (B, C, F, H, W)
    noise: Tensor  # eps, same shape
    level: Tensor  # (B,) the family's noise level: int64 t (vp), s (flow) or sigma (edm), float64 otherwise
    alpha: Tensor  # (B,) float64, x_t = alpha x0 + sigma eps (spec 14.1)
    sigma: Tensor  # (B,) float64
    net_input: Tensor  # input_scale x_t (spec 14.2), in x0's dtype
    condition: Tensor  # (B,) float32: t, 1000 s or ln(sigma) / 4 (spec 14.2)


def _per_sample(c: Tensor, like: Tensor) -> Tensor:
    return c.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def _noised(cfg: TrainConfig, x0: Tensor, noise: Tensor, level: Tensor) -> Noised:
    """Spec 14.1 / 14.2 for the flow and edm families: x_t and what the network sees at ``level``."""
    alpha, sigma = ops.alpha_sigma(cfg.process, level)
    x_t = _per_sample(alpha, x0) * x0 + _per_sample(sigma, x0) * noise
    scale = ops.input_scale(cfg.process, level, sigma_data=cfg.sigma_data)
    cond = ops.network_condition(cfg.process, level, sigma_data=cfg.sigma_data)
    return Noised(x0, noise, level, alpha, sigma, _per_sample(scale, x0) * x_t, cond.float())


# --- draws (spec 16.1) ----------------------------------------------------------------------------


def draw_vp(cfg: TrainConfig, sched: TorchSchedule, x0: Tensor) -> Noised:
    """Spec 16.1 vp: t uniform on 0 .. T-1, drawn by ``torch.randint`` (the distribution of
    min(floor(u T), T - 1), and the v1 loop's exact draws), then the noise; x_t by 3.2."""
    t = torch.randint(0, cfg.timesteps, (x0.shape[0],), device=x0.device)
    noise = torch.randn_like(x0)
    abar = sched.abar64[t]
    return Noised(x0, noise, t, abar.sqrt(), (1.0 - abar).sqrt(), ops.q_sample(sched, x0, t, noise), t.float())


def draw_flow(cfg: TrainConfig, sched: TorchSchedule, x0: Tensor) -> Noised:
    """Spec 16.1 flow: s = density(u), then the time shift once; u in [0, 1), then the noise."""
    u = torch.rand(x0.shape[0], dtype=F64, device=x0.device)
    noise = torch.randn_like(x0)
    s = ops.flow_level_from_uniform(u, cfg.flow_density, cfg.flow_shift, **cfg.flow_density_params)
    return _noised(cfg, x0, noise, s)


def draw_edm(cfg: TrainConfig, sched: TorchSchedule, x0: Tensor) -> Noised:
    """Spec 16.1 edm: ln(sigma) = P_mean + P_std Phi^-1(u), then the noise. torch.rand may return
    u = 0, which 16.1 replaces by the smallest positive normal float64."""
    u = torch.rand(x0.shape[0], dtype=F64, device=x0.device)
    u = torch.where(u > 0, u, torch.finfo(F64).tiny)
    noise = torch.randn_like(x0)
    sigma = ops.edm_sigma_from_uniform(u, cfg.edm_p_mean, cfg.edm_p_std)
    return _noised(cfg, x0, noise, sigma)


# --- losses (spec 8, 16.2 - 16.4) ------------------------------------------------------------------


def loss_vp(cfg: TrainConfig, sched: TorchSchedule, n: Noised, out: Tensor) -> Tensor:
    """Spec 8.1 / 8.2 (= 16.2 on vp), or the hybrid loss of 8.6 with a learned variance."""
    if cfg.learn_sigma:
        return ops.hybrid_loss(sched, n.x0, n.level, n.noise, out, cfg.prediction, lam=cfg.hybrid_lambda,
                               min_snr_gamma=cfg.min_snr_gamma)
    return ops.simple_loss(sched, n.x0, n.level, n.noise, out, cfg.prediction, min_snr_gamma=cfg.min_snr_gamma)


def loss_flow(cfg: TrainConfig, sched: TorchSchedule, n: Noised, out: Tensor) -> Tensor:
    """Spec 16.2: mean((out - target)^2) per sample, weighted by 16.4 when min-SNR is on."""
    return ops.process_simple_loss(n.x0, n.noise, n.alpha, n.sigma, out, cfg.prediction, sigma_data=cfg.sigma_data,
                                   min_snr_gamma=cfg.min_snr_gamma)


def edm_weight(alpha: Tensor, sigma: Tensor, prediction: str, sigma_data: float) -> Tensor:
    """Spec 16.3: EDM's weight on a prediction's MSE, lambda(sigma) c^2, c = the coefficient of
    ``out`` in x0_hat (14.3); 1 in exact arithmetic for the edm prediction."""
    c = ops.PREDICTION_TYPES[prediction].to_x0_eps(alpha, sigma, sigma_data).x0_out
    return ops.edm_loss_weight(sigma, sigma_data) * c * c


def loss_edm(cfg: TrainConfig, sched: TorchSchedule, n: Noised, out: Tensor) -> Tensor:
    """Spec 16.3: EDM's loss lambda(sigma) mean((D - x0)^2), as 16.2 times :func:`edm_weight`; with
    min-SNR (16.4) that weight replaces EDM's."""
    per = ops.process_simple_loss(n.x0, n.noise, n.alpha, n.sigma, out, cfg.prediction, sigma_data=cfg.sigma_data,
                                  min_snr_gamma=cfg.min_snr_gamma)
    if cfg.min_snr_gamma is not None:
        return per
    return per * edm_weight(n.alpha, n.sigma, cfg.prediction, cfg.sigma_data).to(per.dtype)


# --- targets (spec 8.1, 14.3): what the loss compares the output with ---------------------------------


def target_vp(cfg: TrainConfig, sched: TorchSchedule, n: Noised) -> Tensor:
    """Spec 8.1: eps, x0 or v at timestep t, as the vp loss computes it."""
    return ops.training_target(sched, n.x0, n.level, n.noise, cfg.prediction)


def target_process(cfg: TrainConfig, sched: TorchSchedule, n: Noised) -> Tensor:
    """Spec 14.3 / 16.2: the output that gives (x0, eps) at (alpha, sigma), as the flow and edm losses compute it."""
    return ops.from_x0_eps(n.x0, n.noise, n.alpha, n.sigma, cfg.prediction, sigma_data=cfg.sigma_data)


@dataclass(frozen=True)
class Objective:
    """The training objective of one noise-process family."""

    draw: Callable[[TrainConfig, TorchSchedule, Tensor], Noised]  # levels + noise -> what the network sees
    loss: Callable[[TrainConfig, TorchSchedule, Noised, Tensor], Tensor]  # network output -> (B,) losses
    target: Callable[[TrainConfig, TorchSchedule, Noised], Tensor]  # the output with zero loss


# One row per family of vdm_ref.FAMILIES (a test pins the names).
OBJECTIVES: dict[str, Objective] = {
    "vp": Objective(draw_vp, loss_vp, target_vp),
    "flow": Objective(draw_flow, loss_flow, target_process),
    "edm": Objective(draw_edm, loss_edm, target_process),
}
