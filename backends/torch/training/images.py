"""Joint image-video training (Ho et al., Video Diffusion Models, 2022): part of every batch is
sets of unrelated images instead of clips, and the network sees them with ``independent`` set,
so its temporal layers treat each as a 1-frame video. The spatial layers then learn from many
more distinct frames per step, while the clips keep teaching motion."""

from __future__ import annotations

import torch
from torch import Tensor


def images_per_batch(fraction: float, batch: int) -> int:
    """How many of a batch's ``batch`` samples are image sets: ``round(fraction * batch)``."""
    return int(round(fraction * batch))


def mix_in_images(x0: Tensor, k: int) -> tuple[Tensor, Tensor | None]:
    """Replace the last ``k`` clips of ``x0`` (B, C, T, H, W) by ``k`` sets of T images, each frame
    drawn uniformly (global torch RNG, which the loop seeds per step) from all B*T frames of the batch.
    Returns the batch and the ``independent`` mask (B,) bool, or ``(x0, None)`` when ``k`` is 0
    (no random draw, so a run without images is unchanged)."""
    if k == 0:
        return x0, None
    b, c, t, h, w = x0.shape
    if not 0 < k <= b:
        raise ValueError(f"cannot make {k} image sets from a batch of {b}")
    pool = x0.transpose(1, 2).reshape(b * t, c, h, w)
    picks = torch.randint(0, b * t, (k * t,), device=x0.device)
    images = pool[picks].reshape(k, t, c, h, w).transpose(1, 2)
    independent = torch.arange(b, device=x0.device) >= b - k
    return torch.cat([x0[: b - k], images]), independent
