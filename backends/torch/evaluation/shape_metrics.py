"""Structure metrics of moving-shapes clips: object detection, count consistency, constant velocity.

They score what the moving-shapes data guarantees (a fixed number of objects moving at constant
velocity), so they mean something only beside the same numbers on real clips and on noise.
NumPy only.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class Detections(NamedTuple):
    centroids: np.ndarray  # (K, 2) float64 (row, col), largest object first
    areas: np.ndarray  # (K,) int64 pixel counts


def _label_components(mask: np.ndarray) -> np.ndarray:
    """8-connected component labels for a stack of masks (N, H, W).

    Vectorised min-label propagation with pointer jumping: each foreground pixel starts with
    its own flat index, repeatedly takes the minimum over its 3x3 neighbourhood and then
    follows the label as a pointer (label[label]), which converges in a few dozen sweeps.
    Returns int64 labels (the smallest flat index in the component), -1 for background.
    """
    n, h, w = mask.shape
    big = n * h * w
    dtype = np.int32 if big < 2**31 - 1 else np.int64  # int32 halves memory traffic
    lab = np.where(mask, np.arange(big, dtype=dtype).reshape(n, h, w), dtype(big))
    padded = np.full((n, h + 2, w + 2), big, dtype=dtype)
    while True:
        padded[:, 1:-1, 1:-1] = lab
        new = lab.copy()
        for dr in (0, 1, 2):
            for dc in (0, 1, 2):
                np.minimum(new, padded[:, dr : dr + h, dc : dc + w], out=new)
        new = np.where(mask, new, dtype(big))
        flat = new.reshape(-1)
        fg = flat < big
        # Pointer jumping: a label is a pixel of the same component with a label <= itself.
        for _ in range(2):
            flat[fg] = flat[flat[fg]]
        if np.array_equal(new, lab):
            return np.where(mask, lab, -1).astype(np.int64)
        lab = new


def _foreground(frames: np.ndarray, threshold: float) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W) mask: brightest channel above threshold (background is -1)."""
    return frames.max(axis=1) > threshold


def _detect_many(frames: np.ndarray, threshold: float, min_area: int,
                 max_area_fraction: float) -> list[Detections]:
    n, _, h, w = frames.shape
    labels = _label_components(_foreground(frames, threshold)).reshape(-1)
    fg = labels >= 0
    ids, inv, areas = np.unique(labels[fg], return_inverse=True, return_counts=True)
    flat_idx = np.flatnonzero(fg)
    rows = (flat_idx // w) % h
    cols = flat_idx % w
    cr = np.bincount(inv, weights=rows, minlength=len(ids)) / np.maximum(areas, 1)
    cc = np.bincount(inv, weights=cols, minlength=len(ids)) / np.maximum(areas, 1)
    frame_of = ids // (h * w)  # the label is a pixel index of the component's own frame
    # Components covering most of the frame are background/noise, not objects.
    keep = (areas >= min_area) & (areas <= max_area_fraction * h * w)
    out = []
    for f in range(n):
        sel = np.flatnonzero(keep & (frame_of == f))
        sel = sel[np.argsort(-areas[sel], kind="stable")]
        out.append(Detections(np.stack([cr[sel], cc[sel]], axis=1).reshape(-1, 2),
                              areas[sel].astype(np.int64)))
    return out


def detect_objects(frame: np.ndarray, threshold: float = 0.5, min_area: int = 3,
                   max_area_fraction: float = 0.5) -> Detections:
    """Objects in one frame ((H, W) or (C, H, W), values in [-1, 1]).

    Foreground = brightest channel > ``threshold``; objects are 8-connected components with
    ``min_area <= area <= max_area_fraction * H * W``. Returns centroids and areas.
    """
    frame = np.asarray(frame, dtype=np.float32)
    if frame.ndim == 2:
        frame = frame[None]
    if frame.ndim != 3:
        raise ValueError(f"frame must be (H, W) or (C, H, W), got shape {frame.shape}")
    return _detect_many(frame[None], threshold, min_area, max_area_fraction)[0]


def _clip_detections(video: np.ndarray, **kw: Any) -> list[Detections]:
    video = np.asarray(video, dtype=np.float32)
    if video.ndim != 4:
        raise ValueError(f"video must be (C, T, H, W), got shape {video.shape}")
    return _detect_many(video.transpose(1, 0, 2, 3), **_detect_kw(kw))


_DETECT_DEFAULTS = {"threshold": 0.5, "min_area": 3, "max_area_fraction": 0.5}


def _detect_kw(kw: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(kw) - set(_DETECT_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown detection options {unknown}; valid: {sorted(_DETECT_DEFAULTS)}")
    return {**_DETECT_DEFAULTS, **kw}


def _modal_count(dets: list[Detections]) -> tuple[int, float]:
    counts = np.array([len(d.areas) for d in dets])
    mode = int(np.bincount(counts).argmax())
    return mode, float(np.mean(counts == mode))


def object_count_consistency(video: np.ndarray, **detect_kw: Any) -> float:
    """Fraction of frames whose detected object count equals the clip's modal count.
    A clip whose modal count is 0 (nothing detected) scores 0."""
    mode, frac = _modal_count(_clip_detections(video, **detect_kw))
    return frac if mode > 0 else 0.0


def _tracks(dets: list[Detections], k: int) -> list[np.ndarray]:
    """Runs of consecutive frames with exactly k objects, linked by nearest centroid.
    Returns arrays (run_len, k, 2) with object order kept consistent along each run."""
    runs: list[list[np.ndarray]] = []
    current: list[np.ndarray] = []
    for d in dets:
        if len(d.areas) != k:
            if current:
                runs.append(current)
            current = []
            continue
        pts = d.centroids
        if current:  # greedy nearest-centroid matching to the previous frame
            prev = current[-1]
            dist = np.linalg.norm(prev[:, None] - pts[None], axis=-1)
            order = np.full(k, -1)
            for _ in range(k):
                i, j = np.unravel_index(np.argmin(dist), dist.shape)
                order[i] = j
                dist[i, :] = np.inf
                dist[:, j] = np.inf
            pts = pts[order]
        current.append(pts)
    if current:
        runs.append(current)
    return [np.stack(r) for r in runs]


def _second_differences(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Second differences of a 1-D trajectory and a mask of those no wall bounce can touch.

    A bounce inside frame interval m flips the sign of the displacement between intervals
    m-1/m or m/m+1, so every second difference involving an interval next to a sign flip is
    masked out.
    """
    d = np.diff(pos)
    a = np.diff(d)  # a[j] = d[j+1] - d[j]
    keep = np.ones(len(a), dtype=bool)
    for m in np.flatnonzero(np.sign(d[1:]) != np.sign(d[:-1])):  # flip between d[m], d[m+1]
        keep[max(m - 1, 0) : m + 2] = False
    return a, keep


def _velocity_residual(dets: list[Detections], k: int, size: int) -> float:
    if len(dets) < 3:
        return 0.0  # no acceleration is observable in fewer than 3 frames
    if k == 0:
        return 1.0
    parts = [_second_differences(run[:, i, ax]) for run in _tracks(dets, k) if len(run) >= 3
             for i in range(k) for ax in (0, 1)]
    if not parts:
        return 1.0  # the objects could not be followed over any 3 consecutive frames
    a = np.concatenate([p[0] for p in parts])
    keep = np.concatenate([p[1] for p in parts])
    # If bounces mask everything (very short clips), judge on all of them: conservative.
    a = a[keep] if keep.any() else a
    return min(float(np.sqrt(np.mean(a**2))) / size, 1.0)


def constant_velocity_residual(video: np.ndarray, **detect_kw: Any) -> float:
    """RMS deviation from constant-velocity motion, in units of the image size (0 = perfect,
    capped at 1). Objects are tracked by nearest centroid over frames with the modal count;
    second differences next to wall bounces are ignored."""
    dets = _clip_detections(video, **detect_kw)
    k, _ = _modal_count(dets)
    video = np.asarray(video)
    return _velocity_residual(dets, k, max(video.shape[-2:]))


def _clip_scores(video: np.ndarray, **detect_kw: Any) -> tuple[float, float]:
    dets = _clip_detections(video, **detect_kw)
    k, frac = _modal_count(dets)
    return (frac if k > 0 else 0.0), _velocity_residual(dets, k, max(video.shape[-2:]))


def is_temporally_coherent(video: np.ndarray, min_count_consistency: float = 0.85,
                           max_velocity_residual: float = 0.06, **detect_kw: Any) -> bool:
    """True if the clip shows a stable number (>= 1) of objects moving at constant velocity."""
    consistency, residual = _clip_scores(video, **detect_kw)
    return consistency >= min_count_consistency and residual <= max_velocity_residual


def clip_metrics(videos: np.ndarray, min_count_consistency: float = 0.85,
                 max_velocity_residual: float = 0.06, **detect_kw: Any) -> dict[str, float]:
    """Means over clips (N, C, T, H, W): count_consistency, velocity_residual and
    coherent_fraction (fraction passing :func:`is_temporally_coherent`'s thresholds)."""
    videos = np.asarray(videos, dtype=np.float32)
    if videos.ndim != 5:
        raise ValueError(f"videos must be (N, C, T, H, W), got shape {videos.shape}")
    n, c, t, h, w = videos.shape
    # Detect on all frames of all clips in one vectorised pass, then split per clip.
    frames = videos.transpose(0, 2, 1, 3, 4).reshape(n * t, c, h, w)
    dets = _detect_many(frames, **_detect_kw(detect_kw))
    cons, resid = [], []
    for i in range(n):
        clip = dets[i * t : (i + 1) * t]
        k, frac = _modal_count(clip)
        cons.append(frac if k > 0 else 0.0)
        resid.append(_velocity_residual(clip, k, max(h, w)))
    cons_a, resid_a = np.array(cons), np.array(resid)
    coherent = (cons_a >= min_count_consistency) & (resid_a <= max_velocity_residual)
    return {"count_consistency": float(cons_a.mean()),
            "velocity_residual": float(resid_a.mean()),
            "coherent_fraction": float(coherent.mean())}
