"""Evaluation: sample a checkpoint and score the clips against real clips and pure noise.

Scores:

- the moving-shapes metrics (``moving_shapes.clip_metrics``): they only mean something beside
  the same numbers on real held-out clips and on noise, so the report always carries all three;
- optionally a Frechet distance between feature statistics (FVD when the features come from an
  I3D) with a feature network the user supplies as TorchScript (``.pt``) or ONNX (``.onnx``)
  mapping videos (N, C, T, H, W) in [-1, 1] to (N, D). Nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ...files import atomic_write_bytes, one_line
from ...sampling import SamplingOptions
from ..training.checkpoint import load_model
from .frechet import EvalError, feature_statistics, frechet_distance, load_feature_extractor

# Real reference clips come from this seed offset, far from any training seed's item range.
HELDOUT_SEED_OFFSET = 1_000_003




# --------------------------------------------------------------------------- clip sources


def noise_clips(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Gaussian noise clipped to [-1, 1]: the 'no model at all' baseline."""
    return np.clip(np.random.default_rng([seed, 7]).standard_normal(shape), -1.0, 1.0).astype(np.float32)


def real_clips(data_meta: dict[str, Any], num: int, seed: int) -> np.ndarray:
    """``num`` real clips shaped like a checkpoint's ``data`` meta (frames, size, channels, ...).

    Moving shapes: fresh clips from the held-out seed ``seed + HELDOUT_SEED_OFFSET``. Video data
    (folder / ucf101): centre clips of a seeded choice of videos, from the UCF-101 test split
    when the run trained on the train split (else the same files); fewer than ``num`` videos are
    cycled."""
    kind = data_meta.get("kind", "moving_shapes")
    if kind == "moving_shapes":
        from ..data.moving_shapes import MovingShapes

        ds = MovingShapes(num, moving_shapes_config(data_meta), base_seed=seed + HELDOUT_SEED_OFFSET)
        return ds.numpy_batch(range(num))[0]
    from ..data import video as video_data

    opts = data_meta.get("options") or {}
    clip = video_data.ClipSpec(frames=int(data_meta["frames"]), size=int(data_meta["size"]),
                               channels=int(data_meta["channels"]), frame_stride=int(opts.get("frame_stride", 1)),
                               mode="center")
    root = opts.get("root")
    if not root or not Path(root).is_dir():
        raise EvalError(f"the checkpoint's {kind} data folder {root!r} is not available for real reference clips")
    with warnings.catch_warnings():  # the training run already reported unusable files
        warnings.simplefilter("ignore")
        if kind == "ucf101":
            split = "test" if opts.get("split", "train") == "train" else "train"
            ds = video_data.UCF101(root, opts["split_dir"], split=split, fold=int(opts.get("fold", 1)), clip=clip)
        else:
            ds = video_data.VideoFolder(root, clip=clip)
    order = np.random.default_rng([seed, HELDOUT_SEED_OFFSET]).permutation(len(ds))
    return np.stack([ds[int(order[i % len(ds)])][0].numpy() for i in range(num)]).astype(np.float32)


def moving_shapes_config(data_meta: dict[str, Any]) -> Any:
    """MovingShapesConfig from a data meta dict, keeping only the fields the config knows."""
    import dataclasses

    from ..data.moving_shapes import MovingShapesConfig

    known = {f.name for f in dataclasses.fields(MovingShapesConfig)}
    opts = dict(data_meta.get("options") or {})
    if "num_objects" in opts:
        opts.setdefault("min_objects", opts["num_objects"])
        opts.setdefault("max_objects", opts["num_objects"])
    for key in ("frames", "size", "channels"):
        if key in data_meta:
            opts[key] = data_meta[key]
    return MovingShapesConfig(**{k: v for k, v in opts.items() if k in known})


# --------------------------------------------------------------------------- evaluation


def metrics_of(videos: np.ndarray) -> dict[str, float]:
    from .shape_metrics import clip_metrics

    return {k: float(v) for k, v in clip_metrics(videos).items()}


def load_samples(path: str | os.PathLike[str]) -> np.ndarray:
    """A ``.npy`` (or ``.npz`` with one array / an array named 'samples') of videos (N, C, T, H, W)."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"samples file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
        if isinstance(arr, np.lib.npyio.NpzFile):
            arr = arr["samples"] if "samples" in arr.files else arr[arr.files[0]]
    except Exception as exc:
        raise EvalError(f"cannot read samples {path}: {one_line(exc)}") from None
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 5 or arr.shape[0] < 1:
        raise EvalError(f"samples {path} must be (N, C, T, H, W), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise EvalError(f"samples {path} contain NaN or Inf")
    return arr


def evaluate(
    *,
    ckpt: str | os.PathLike[str] | None = None,
    samples: str | os.PathLike[str] | np.ndarray | None = None,
    num: int = 64,
    options: SamplingOptions | None = None,
    seed: int = 0,
    device: str = "cpu",
    features: str | os.PathLike[str] | None = None,
    feature_batch_size: int = 16,
    num_objects: int | None = None,
    use_ema: bool = True,
    keep_videos: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Score samples (drawn from ``ckpt``, or given as ``samples``) beside real held-out clips
    (see :func:`real_clips`) and clipped Gaussian noise of the same shape. Returns the report dict:
    ``{"rows": {"samples"|"real"|"noise": {metric: value}}, "settings": {...}, ...}`` (plus the
    clips under ``"videos"`` with ``keep_videos``)."""
    if ckpt is None and samples is None:
        raise EvalError("give --ckpt (to sample) or --samples (to score given clips)")
    meta: dict[str, Any] = {}
    t0 = time.perf_counter()
    sample_seconds = None
    if samples is not None:
        videos = samples.astype(np.float32) if isinstance(samples, np.ndarray) else load_samples(samples)
        if ckpt is not None:
            from ..training.checkpoint import read_meta

            meta = read_meta(ckpt)
    else:
        from ...sampling import SamplingError, sample_videos, torch_model

        net, meta = load_model(ckpt, ema=use_ema, device=device)
        options = options or SamplingOptions()
        try:
            videos = sample_videos(torch_model(net, meta, device), num, seed, options, progress=progress)
        except SamplingError as exc:
            raise EvalError(str(exc)) from None
        sample_seconds = time.perf_counter() - t0
    n, c, t, h, w = videos.shape
    data_meta = dict(meta.get("data") or {})
    data_meta.update(frames=t, size=h, channels=c)
    if num_objects is not None:
        data_meta["options"] = {**(data_meta.get("options") or {}), "num_objects": num_objects,
                                "min_objects": num_objects, "max_objects": num_objects}
    real = real_clips(data_meta, n, seed)
    noise = noise_clips(videos.shape, seed)
    rows = {"samples": metrics_of(videos), "real": metrics_of(real), "noise": metrics_of(noise)}
    report: dict[str, Any] = {
        "rows": rows,
        "settings": {"ckpt": str(ckpt) if ckpt is not None else None,
                     "samples": None if samples is None or isinstance(samples, np.ndarray) else str(samples),
                     "num": n, "shape": [c, t, h, w], "seed": seed, "ema": use_ema,
                     "sampling": dataclasses.asdict(options) if samples is None and options else None,
                     "real_seed": seed + HELDOUT_SEED_OFFSET},
        "checkpoint_step": meta.get("step"),
        "sample_seconds": sample_seconds,
    }
    if features is not None:
        extract = load_feature_extractor(features, device=device, batch_size=feature_batch_size)
        stats = {name: feature_statistics(extract(v)) for name, v in
                 (("samples", videos), ("real", real), ("noise", noise))}
        # The distance to real clips of a second held-out draw anchors the scale (sampling noise floor).
        real2 = real_clips(data_meta, n, seed + 1)
        stats_real2 = feature_statistics(extract(real2))
        report["frechet"] = {
            "features": str(features),
            "samples_vs_real": frechet_distance(*stats["samples"], *stats["real"]),
            "real2_vs_real": frechet_distance(*stats_real2, *stats["real"]),
            "noise_vs_real": frechet_distance(*stats["noise"], *stats["real"]),
        }
        rows["samples"]["frechet_to_real"] = report["frechet"]["samples_vs_real"]
        rows["real"]["frechet_to_real"] = report["frechet"]["real2_vs_real"]
        rows["noise"]["frechet_to_real"] = report["frechet"]["noise_vs_real"]
    report["seconds"] = time.perf_counter() - t0
    if keep_videos:
        report["videos"] = videos
    return report


def write_report(path: str | os.PathLike[str], report: dict[str, Any]) -> Path:
    """Write the report as JSON atomically (NaN/Inf become null so any JSON parser reads it)."""
    def clean(o: Any) -> Any:
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    atomic_write_bytes(path, (json.dumps(clean(report), indent=2) + "\n").encode())
    return Path(path)


__all__ = ["noise_clips", "real_clips", "metrics_of", "load_samples", "evaluate", "write_report"]
