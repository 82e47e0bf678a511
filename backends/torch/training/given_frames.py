"""Conditional-frame training (spec 18.8): some samples of a batch carry given frames, which the
network sees noise-free at the family's given level, and the loss is the mean over the other frames.

Patterns, half and half: a prefix of k ~ U{1 .. T-1} frames (what extension gives the network), or
each frame given with probability 1/2, at least one given and one generated (covers interpolation).
"""

from __future__ import annotations

import torch
from torch import Tensor


def draw_given_frames(batch: int, frames: int, probability: float, device: torch.device | str) -> Tensor:
    """(B, T) bool: the given frames of each sample; a sample has any with ``probability``. Draws from the
    global torch RNG (seeded per step by the loop)."""
    has = torch.rand(batch, device=device) < probability
    use_prefix = torch.rand(batch, device=device) < 0.5
    k = torch.randint(1, frames, (batch,), device=device)
    prefix = torch.arange(frames, device=device)[None, :] < k[:, None]
    scattered = torch.rand(batch, frames, device=device) < 0.5
    proper = scattered.any(dim=1) & ~scattered.all(dim=1)  # else the prefix pattern
    mask = torch.where((use_prefix | ~proper)[:, None], prefix, scattered)
    return mask & has[:, None]


def without_given_frames(out: Tensor, target: Tensor, given: Tensor) -> Tensor:
    """The network output with its given frames replaced by the target: they add no error and no
    gradient to an elementwise loss (given (B, T) bool, out and target (B, C, T, H, W))."""
    return torch.where(given[:, None, :, None, None], target.to(out.dtype), out)


def generated_share(given: Tensor) -> Tensor:
    """(B,) T / (number of generated frames): turns a mean over all frames (with the given frames'
    error zero) into the mean over the generated frames of spec 18.8."""
    frames = given.shape[1]
    return frames / (frames - given.sum(dim=1)).to(torch.float32)
