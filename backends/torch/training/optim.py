"""The optimizer's side of training: AdamW's parameter groups, the learning rate of every step
(linear warm-up, then a decay chosen from ``LR_DECAYS``) and the EMA of the weights.

Every value here is a pure function of the step and the config, never of state carried between
steps, so a resumed run applies exactly the values the uninterrupted run would have.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on kernels and matrices only; biases, norm scales and 1-D tables stay undecayed."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def constant_decay(progress: float) -> float:
    return 1.0


def linear_decay(progress: float) -> float:
    return 1.0 - progress


def cosine_decay(progress: float) -> float:
    """Half a cosine from 1 to 0 (Loshchilov & Hutter's SGDR without restarts)."""
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# name -> the fraction of (lr - lr_min) kept at progress p in [0, 1) of the steps after warm-up
LR_DECAYS: dict[str, Callable[[float], float]] = {
    "constant": constant_decay,
    "linear": linear_decay,
    "cosine": cosine_decay,
}


def lr_at(step: int, *, lr: float, warmup_steps: int, steps: int, decay: str = "constant",
          lr_min: float = 0.0) -> float:
    """LR of the optimizer step that takes the model from ``step`` to ``step + 1`` (0-based).

    Warm-up: ``lr * (step + 1) / warmup_steps`` for the first ``warmup_steps`` steps. Then
    ``lr_min + (lr - lr_min) * f(p)`` with ``p = (step - warmup_steps) / (steps - warmup_steps)``,
    so the first step after warm-up runs at ``lr`` and the last one just above ``lr_min``.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return lr_min + (lr - lr_min) * LR_DECAYS[decay](min(progress, 1.0))


def ema_decay_at(step: int, decay: float, warmup: bool) -> float:
    """The EMA decay after optimizer step ``step``: ``min(decay, (1 + step) / (10 + step))`` with warm-up."""
    return min(decay, (1 + step) / (10 + step)) if warmup else decay


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for the parameters; buffers are copied."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)
