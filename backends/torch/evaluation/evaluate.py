"""Evaluation: sample a checkpoint and score the clips against real clips and pure noise.

What is scored depends on the checkpoint's data kind (:data:`EVAL_KINDS`):

- moving shapes: the structure metrics of ``shape_metrics.clip_metrics`` (object count
  consistency, constant velocity), against fresh clips of a held-out seed;
- real video (folder, UCF-101): natural-video statistics (``video_stats``: per-channel mean and
  within-frame contrast, mean absolute frame difference, lag-1 temporal correlation, and their
  mean gap to the real clips), against clips of files the run never trained on: the held-out
  files recorded in the checkpoint (folder) or the other official split (UCF-101).

Every metric only means something beside the same numbers on the real clips and on noise, so
the report always carries all three rows. Optionally a Frechet distance between feature
statistics (FVD when the features come from an I3D), with a feature network the user supplies as
TorchScript (``.pt``) or ONNX (``.onnx``) mapping videos (N, C, T, H, W) in [-1, 1] to (N, D).
Nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ...files import atomic_write_bytes, one_line
from ...sampling import SamplingOptions
from ..training.checkpoint import load_model
from .frechet import EvalError, feature_statistics, frechet_distance, load_feature_extractor
from .video_stats import statistics_gap, video_statistics

# Real reference clips come from this seed offset, far from any training seed's item range.
HELDOUT_SEED_OFFSET = 1_000_003
# Epochs of draw k of held-out video clips start at k * _MAX_PASSES (passes over the files per draw < this).
_MAX_PASSES = 1_000_000


# --------------------------------------------------------------------------- clip sources


def noise_clips(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Gaussian noise clipped to [-1, 1]: the 'no model at all' baseline."""
    return np.clip(np.random.default_rng([seed, 7]).standard_normal(shape), -1.0, 1.0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class RealReference:
    """Where the real clips come from, and how to draw them: ``draw(num, k)`` gives ``num``
    clips of the k-th independent draw (k = 0 for the real row, 1 for the noise floor of a
    Frechet distance)."""

    source: str  # for the report: which clips these are and why they are held out
    draw: Callable[[int, int], np.ndarray]


def _shapes_reference(data_meta: dict[str, Any], seed: int, cache_dir: str | None) -> RealReference:
    from ..data.moving_shapes import MovingShapes

    def draw(num: int, k: int) -> np.ndarray:
        ds = MovingShapes(num, moving_shapes_config(data_meta), base_seed=seed + k + HELDOUT_SEED_OFFSET)
        return ds.numpy_batch(range(num))[0]

    return RealReference(f"moving shapes of the held-out base seed {seed + HELDOUT_SEED_OFFSET}", draw)


def _clip_spec(data_meta: dict[str, Any]) -> Any:
    from ..data.video import ClipSpec

    opts = data_meta.get("options") or {}
    fps = opts.get("fps")
    return ClipSpec(frames=int(data_meta["frames"]), size=int(data_meta["size"]), channels=int(data_meta["channels"]),
                    frame_stride=int(opts.get("frame_stride", 1)), mode="random",
                    fps=float(fps) if fps is not None else None)


def _data_root(data_meta: dict[str, Any]) -> str:
    root = (data_meta.get("options") or {}).get("root")
    if not root or not Path(root).is_dir():
        raise EvalError(f"the checkpoint's {data_meta.get('kind')} data folder {root!r} is not available for real "
                        "reference clips")
    return str(root)


def _usable_cache(cache_dir: str | None) -> str | None:
    """The cache folder when it can be created; a read-only place just means decoding again."""
    if cache_dir is None:
        return None
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return cache_dir


def _video_reference(ds: Any, source: str, seed: int) -> RealReference:
    def draw(num: int, k: int) -> np.ndarray:
        # Draw k: its own file order; clip starts from the dataset's seeded epochs, one per draw and pass over the
        # files, so fewer files than clips still give different clips.
        order = np.random.default_rng([seed, HELDOUT_SEED_OFFSET, k]).permutation(len(ds))
        clips = []
        for i in range(num):
            ds.set_epoch(k * _MAX_PASSES + i // len(ds))
            clips.append(ds[int(order[i % len(ds)])][0].numpy())
        return np.stack(clips).astype(np.float32)

    return RealReference(source, draw)


def _folder_reference(data_meta: dict[str, Any], seed: int, cache_dir: str | None) -> RealReference:
    from ..data import video as video_data

    root = _data_root(data_meta)
    held = ((data_meta.get("options") or {}).get("heldout") or {}).get("files") or []
    clip, cache = _clip_spec(data_meta), _usable_cache(cache_dir)
    if held:
        ds = video_data.VideoClips([(Path(root) / rel, -1) for rel in held], clip, cache, seed + HELDOUT_SEED_OFFSET,
                                   source=f"{root} (held-out files)")
        source = f"{len(ds)} of the {len(held)} files of {root} that the run held out (listed in the checkpoint)"
    else:  # an older checkpoint, or a run with --heldout-fraction 0 or a single file
        ds = video_data.VideoFolder(root, clip, cache, seed + HELDOUT_SEED_OFFSET,
                                    exclude=(data_meta.get("options") or {}).get("exclude") or ())
        source = f"all files of {root}: the run held none out, so the real clips were seen in training"
    return _video_reference(ds, source, seed)


def _ucf101_reference(data_meta: dict[str, Any], seed: int, cache_dir: str | None) -> RealReference:
    from ..data import video as video_data

    opts = data_meta.get("options") or {}
    root, trained = _data_root(data_meta), opts.get("split", "train")
    split, fold = ("test" if trained == "train" else "train"), int(opts.get("fold", 1))
    ds = video_data.UCF101(root, opts["split_dir"], split=split, fold=fold, clip=_clip_spec(data_meta),
                           cache_dir=_usable_cache(cache_dir), seed=seed + HELDOUT_SEED_OFFSET)
    return _video_reference(ds, f"UCF-101 {split} split {fold} of {root} (the run trained on the {trained} split)",
                            seed)


def metrics_of(videos: np.ndarray, kind: str = "moving_shapes") -> dict[str, float]:
    """The metrics of ``videos`` that make sense for data ``kind`` (see :data:`EVAL_KINDS`)."""
    return {k: float(v) for k, v in _eval_kind(kind).metrics(videos).items()}


def _shape_metrics(videos: np.ndarray) -> dict[str, float]:
    from .shape_metrics import clip_metrics

    return clip_metrics(videos)


class EvalKind(NamedTuple):
    reference: Callable[[dict[str, Any], int, str | None], RealReference]  # (data meta, seed, cache dir)
    metrics: Callable[[np.ndarray], dict[str, float]]  # clips (N, C, T, H, W) -> {metric: value}
    gap: Callable[[dict[str, float], dict[str, float]], float] | None  # (row, real row) -> distance
    description: str


_NATURAL = "natural-video statistics (per-channel mean and contrast, frame difference, lag-1 correlation)"
# data kind -> what `vdm eval` compares and against which real clips
EVAL_KINDS: dict[str, EvalKind] = {
    "moving_shapes": EvalKind(_shapes_reference, _shape_metrics, None,
                              "moving-shapes structure metrics (object count, constant velocity)"),
    "folder": EvalKind(_folder_reference, video_statistics, statistics_gap, _NATURAL),
    "ucf101": EvalKind(_ucf101_reference, video_statistics, statistics_gap, _NATURAL),
}


def _eval_kind(kind: str) -> EvalKind:
    if kind not in EVAL_KINDS:
        raise EvalError(f"no evaluation for data kind {kind!r}; known: {', '.join(EVAL_KINDS)}")
    return EVAL_KINDS[kind]


def real_reference(data_meta: dict[str, Any], seed: int, cache_dir: str | None = None) -> RealReference:
    """The real clips of a checkpoint's ``data`` meta (frames, size, channels, options), drawn
    with ``seed``; video files are decoded through ``cache_dir`` when given."""
    return _eval_kind(data_meta.get("kind", "moving_shapes")).reference(data_meta, seed, cache_dir)


def real_clips(data_meta: dict[str, Any], num: int, seed: int, cache_dir: str | None = None) -> np.ndarray:
    """``num`` real clips shaped like a checkpoint's ``data`` meta: moving shapes of a held-out
    seed, or random clips of held-out video files (see :data:`EVAL_KINDS`); fewer files than
    ``num`` are cycled."""
    return real_reference(data_meta, seed, cache_dir).draw(num, 0)


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
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Score samples (drawn from ``ckpt``, or given as ``samples``) beside real held-out clips
    (see :func:`real_clips`) and clipped Gaussian noise of the same shape, with the metrics of the
    checkpoint's data kind (:data:`EVAL_KINDS`; moving shapes without a checkpoint). Returns the
    report dict: ``{"rows": {"samples"|"real"|"noise": {metric: value}}, "settings": {...}, ...}``
    (plus the clips under ``"videos"`` with ``keep_videos``). Real video files are decoded through
    ``cache_dir`` (default: the training run's cache if it exists here, else CKPT_FOLDER/cache;
    none with ``cache=False``)."""
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
    kind = data_meta.get("kind", "moving_shapes")
    family = _eval_kind(kind)
    if not cache:
        cache_dir = None
    elif cache_dir is None:
        recorded = data_meta.get("cache_dir")  # absent on another machine: then beside the checkpoint
        cache_dir = recorded if recorded and Path(recorded).is_dir() else (
            str(Path(ckpt).parent / "cache") if ckpt is not None else None)
    reference = family.reference(data_meta, seed, None if cache_dir is None else str(cache_dir))
    real = reference.draw(n, 0)
    noise = noise_clips(videos.shape, seed)
    rows = {"samples": family.metrics(videos), "real": family.metrics(real), "noise": family.metrics(noise)}
    real2: np.ndarray | None = None
    if family.gap is not None:
        # The real row's gap is to a second held-out draw: the floor set by sampling noise alone.
        real2 = reference.draw(n, 1)
        anchors = {"samples": rows["samples"], "real": family.metrics(real2), "noise": rows["noise"]}
        gaps = {name: family.gap(row, rows["real"]) for name, row in anchors.items()}
        for name, gap in gaps.items():
            rows[name]["stats_gap"] = gap
    rows = {name: {k: float(v) for k, v in row.items()} for name, row in rows.items()}
    report: dict[str, Any] = {
        "rows": rows,
        "settings": {"ckpt": str(ckpt) if ckpt is not None else None,
                     "samples": None if samples is None or isinstance(samples, np.ndarray) else str(samples),
                     "num": n, "shape": [c, t, h, w], "seed": seed, "ema": use_ema,
                     "sampling": dataclasses.asdict(options) if samples is None and options else None,
                     "real_seed": seed + HELDOUT_SEED_OFFSET, "data_kind": kind, "metrics": family.description,
                     "real_source": reference.source, "cache_dir": None if cache_dir is None else str(cache_dir)},
        "checkpoint_step": meta.get("step"),
        "sample_seconds": sample_seconds,
    }
    if features is not None:
        extract = load_feature_extractor(features, device=device, batch_size=feature_batch_size)
        stats = {name: feature_statistics(extract(v)) for name, v in
                 (("samples", videos), ("real", real), ("noise", noise))}
        # The distance to real clips of a second held-out draw anchors the scale (sampling noise floor).
        real2 = reference.draw(n, 1) if real2 is None else real2
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


__all__ = ["EVAL_KINDS", "EvalKind", "RealReference", "noise_clips", "real_clips", "real_reference", "metrics_of",
           "load_samples", "evaluate", "write_report"]
