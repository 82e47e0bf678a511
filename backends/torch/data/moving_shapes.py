"""Moving Shapes: a procedural video dataset with ground truth (its metrics: evaluation.shape_metrics).

Squares, discs and triangles move at constant velocity and bounce off the walls. Clips are a
pure function of a seed, so workers, epochs and DDP ranks all see identical data. The module
is NumPy-only at import time; torch is imported lazily by :class:`MovingShapes`.

Coordinates are (row, col) in pixel units with pixel (r, c) centred at (r, c).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SQUARE, DISC, TRIANGLE = 0, 1, 2
SHAPE_NAMES = ("square", "disc", "triangle")
_SQRT3 = float(np.sqrt(3.0))
# Triangle side relative to the object size s, so the three kinds cover similar areas
# (square s^2, disc 0.785 s^2, triangle 0.73 s^2).
_TRIANGLE_SIDE = 1.3


@dataclass(frozen=True)
class MovingShapesConfig:
    frames: int = 8
    size: int = 32  # frames are size x size
    channels: int = 1  # 1 = grayscale (objects at +1), 3 = a random colour per object
    min_objects: int = 1
    max_objects: int = 1
    # Object size (square side, disc diameter, ~triangle side) and speed, as fractions of size.
    size_range: tuple[float, float] = (0.2, 0.35)
    speed_range: tuple[float, float] = (0.03, 0.08)  # per frame
    kinds: tuple[int, ...] = (SQUARE, DISC, TRIANGLE)

    def __post_init__(self) -> None:
        for name in ("size_range", "speed_range", "kinds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.frames < 1 or self.size < 4:
            raise ValueError(f"need frames >= 1 and size >= 4, got {self.frames}, {self.size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError("need 1 <= min_objects <= max_objects")
        lo, hi = self.size_range
        if not 0 < lo <= hi < 0.9:
            raise ValueError(f"size_range must satisfy 0 < lo <= hi < 0.9, got {self.size_range}")
        if not 0 <= self.speed_range[0] <= self.speed_range[1]:
            raise ValueError(f"bad speed_range {self.speed_range}")
        if not self.kinds or any(k not in (SQUARE, DISC, TRIANGLE) for k in self.kinds):
            raise ValueError(f"kinds must be a non-empty subset of (0, 1, 2), got {self.kinds}")

    @property
    def num_classes(self) -> int:
        return 3


@dataclass(frozen=True)
class ClipTruth:
    """Ground truth of a clip: K objects over T frames."""

    label: int  # shape kind shared by all objects in the clip
    centers: np.ndarray  # (K, T, 2) float64 (row, col)
    sizes: np.ndarray  # (K,) object size in pixels (constant over time)
    velocities: np.ndarray  # (K, 2) initial velocity, pixels/frame
    colors: np.ndarray  # (K, C) values in [-1, 1]
    extents: np.ndarray = field(repr=False)  # (K, 2) half-extent per axis used for bouncing


def _half_extent(kind: int, s: float) -> tuple[float, float]:
    """(row, col) half-extent of the shape's bounding box around its centre."""
    if kind == TRIANGLE:
        side = _TRIANGLE_SIDE * s
        return side / _SQRT3, side / 2  # circumradius vertically (apex up), half side across
    return s / 2, s / 2


def _bounce(p0: np.ndarray, v: np.ndarray, lo: np.ndarray, hi: np.ndarray,
            t: np.ndarray) -> np.ndarray:
    """Closed-form position of a point bouncing elastically inside [lo, hi] (per axis):
    a triangle wave of the free motion p0 + v t. Shapes: p0, v, lo, hi (2,), t (T,) -> (T, 2)."""
    span = np.maximum(hi - lo, 1e-9)
    u = np.mod(p0 - lo + v * t[:, None], 2 * span)
    return lo + np.where(u <= span, u, 2 * span - u)


def _render_mask(kind: int, center: np.ndarray, s: float, rr: np.ndarray,
                 cc: np.ndarray) -> np.ndarray:
    dr, dc = rr - center[0], cc - center[1]
    if kind == SQUARE:
        return (np.abs(dr) <= s / 2) & (np.abs(dc) <= s / 2)
    if kind == DISC:
        return dr * dr + dc * dc <= (s / 2) ** 2
    # Equilateral triangle, apex up, centroid at `center`: three half-planes.
    side = _TRIANGLE_SIDE * s
    inr = side / (2 * _SQRT3)  # inradius = distance from the centroid to each edge
    below_top_edges = (_SQRT3 * dc - dr <= 2 * inr) & (-_SQRT3 * dc - dr <= 2 * inr)
    return below_top_edges & (dr <= inr)


def _as_rng(rng: np.random.Generator | int | tuple[int, ...] | list[int]) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def generate_clip(
    rng: np.random.Generator | int | tuple[int, ...] | list[int],
    cfg: MovingShapesConfig | None = None,
) -> tuple[np.ndarray, int, ClipTruth]:
    """One clip: (video float32 (C, T, H, W) in [-1, 1], label, truth).

    ``rng`` is a Generator or anything ``np.random.default_rng`` accepts (an int or a tuple of
    ints such as ``(base_seed, index)``).
    """
    cfg = cfg or MovingShapesConfig()
    rng = _as_rng(rng)
    n, t_len, c = cfg.size, cfg.frames, cfg.channels
    kind = int(cfg.kinds[rng.integers(len(cfg.kinds))])
    k = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    t = np.arange(t_len, dtype=np.float64)

    sizes = rng.uniform(*cfg.size_range, size=k) * n
    speeds = rng.uniform(*cfg.speed_range, size=k) * n
    angles = rng.uniform(0, 2 * np.pi, size=k)
    velocities = np.stack([speeds * np.sin(angles), speeds * np.cos(angles)], axis=1)
    extents = np.array([_half_extent(kind, s) for s in sizes])
    # Centres may range so the whole shape stays inside the frame (pixel centres 0..n-1).
    lo, hi = extents - 0.5, (n - 0.5) - extents
    starts = rng.uniform(lo, hi)
    centers = np.stack([_bounce(starts[i], velocities[i], lo[i], hi[i], t) for i in range(k)])
    if c == 1:
        colors = np.ones((k, 1))
    else:
        # A random colour with at least one bright channel, so the object stands out from the
        # -1 background in detect_objects (which thresholds the brightest channel).
        colors = rng.uniform(-1, 1, size=(k, 3))
        colors[np.arange(k), rng.integers(3, size=k)] = rng.uniform(0.6, 1.0, size=k)

    video = np.full((c, t_len, n, n), -1.0, dtype=np.float32)
    rr, cc = np.meshgrid(np.arange(n, dtype=np.float64), np.arange(n, dtype=np.float64),
                         indexing="ij")
    for f in range(t_len):
        for i in range(k):  # later objects are drawn on top of earlier ones
            mask = _render_mask(kind, centers[i, f], sizes[i], rr, cc)
            video[:, f][:, mask] = colors[i][:, None]
    truth = ClipTruth(label=kind, centers=centers, sizes=sizes, velocities=velocities,
                      colors=colors, extents=extents)
    return video, kind, truth


class MovingShapes:
    """Fixed-length map-style dataset; item ``i`` is generated from seed ``(base_seed, i)``.

    Items are ``(video float32 tensor (C, T, H, W), label int64 tensor)``. It follows the
    ``torch.utils.data.Dataset`` protocol (``__len__``/``__getitem__``), so DataLoader,
    DistributedSampler and worker processes work, without importing torch at module import.
    """

    def __init__(self, length: int, cfg: MovingShapesConfig | None = None,
                 base_seed: int = 0) -> None:
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.length = length
        self.cfg = cfg or MovingShapesConfig()
        self.base_seed = base_seed

    def __len__(self) -> int:
        return self.length

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    def clip(self, index: int) -> tuple[np.ndarray, int, ClipTruth]:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for length {self.length}")
        return generate_clip((self.base_seed, index % self.length), self.cfg)

    def numpy_batch(self, indices: Any) -> tuple[np.ndarray, np.ndarray]:
        """(videos (N, C, T, H, W) float32, labels (N,) int64) for the given indices."""
        clips = [self.clip(int(i)) for i in indices]
        return (np.stack([v for v, _, _ in clips]),
                np.array([lab for _, lab, _ in clips], dtype=np.int64))

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        import torch

        video, label, _ = self.clip(int(index))
        return torch.from_numpy(video), torch.tensor(label, dtype=torch.int64)
