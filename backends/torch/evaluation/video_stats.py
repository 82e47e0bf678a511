"""Statistics of natural video clips, for `vdm eval` on real-video checkpoints.

Moving-shapes metrics assume a few bright objects at constant velocity; natural video has
neither, so a real-video model is scored by what any video has: per-frame statistics (the mean
and the within-frame contrast of each channel) and temporal statistics (how much consecutive
frames differ, and how strongly they correlate). Like the moving-shapes metrics they mean
something only beside the same numbers on held-out real clips and on noise. Clips are float
arrays (N, C, T, H, W) in [-1, 1]. NumPy only.
"""

from __future__ import annotations

import math

import numpy as np

# Column suffixes per channel count: grayscale has one unnamed channel.
CHANNEL_NAMES = {1: ("",), 3: ("_r", "_g", "_b")}


def _check(videos: np.ndarray) -> np.ndarray:
    videos = np.asarray(videos, dtype=np.float64)
    if videos.ndim != 5:
        raise ValueError(f"videos must be (N, C, T, H, W), got shape {videos.shape}")
    return videos


def channel_means(videos: np.ndarray) -> np.ndarray:
    """(C,) mean value of each channel over all clips, frames and pixels."""
    return _check(videos).mean(axis=(0, 2, 3, 4))


def frame_contrast(videos: np.ndarray) -> np.ndarray:
    """(C,) within-frame contrast: the standard deviation (ddof 0) over the pixels of one frame
    and channel, averaged over clips and frames. Unlike a pooled std it ignores brightness
    changes from frame to frame."""
    return _check(videos).std(axis=(3, 4)).mean(axis=(0, 2))


def mean_abs_frame_difference(videos: np.ndarray) -> float:
    """Mean |x[t+1] - x[t]| over clips, channels, pixels and the T-1 frame pairs (NaN if T = 1)."""
    v = _check(videos)
    return float(np.abs(np.diff(v, axis=2)).mean()) if v.shape[2] > 1 else math.nan


def lag1_correlation(videos: np.ndarray) -> float:
    """Pearson correlation between each value and the same pixel in the next frame, pooled over
    clips, channels, pixels and frame pairs: near 1 for smooth video, near 0 for noise, -1 for
    sign-flipping frames. NaN when it is undefined (T = 1, or constant frames)."""
    v = _check(videos)
    if v.shape[2] < 2:
        return math.nan
    a, b = v[:, :, :-1].ravel(), v[:, :, 1:].ravel()
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / denom if denom > 0 else math.nan


def video_statistics(videos: np.ndarray) -> dict[str, float]:
    """The natural-video row of `vdm eval`: mean{ch} and contrast{ch} per channel, frame_diff and
    lag1_corr."""
    v = _check(videos)
    names = CHANNEL_NAMES.get(v.shape[1]) or tuple(f"_{i}" for i in range(v.shape[1]))
    out = {f"mean{n}": float(m) for n, m in zip(names, channel_means(v), strict=True)}
    out.update({f"contrast{n}": float(s) for n, s in zip(names, frame_contrast(v), strict=True)})
    out["frame_diff"] = mean_abs_frame_difference(v)
    out["lag1_corr"] = lag1_correlation(v)
    return out


def statistics_gap(row: dict[str, float], reference: dict[str, float]) -> float:
    """Mean absolute difference of the statistics two rows share (NaN entries left out): one
    number for how far a set of clips is from the held-out real clips (0 = same statistics)."""
    diffs = [abs(row[k] - reference[k]) for k in reference
             if k in row and math.isfinite(row[k]) and math.isfinite(reference[k])]
    return float(np.mean(diffs)) if diffs else math.nan


__all__ = ["CHANNEL_NAMES", "channel_means", "frame_contrast", "mean_abs_frame_difference", "lag1_correlation",
           "video_statistics", "statistics_gap"]
