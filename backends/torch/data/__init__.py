"""Training data: one table of datasets, each a builder from the run's options.

A dataset is map-style and yields ``(video (C, T, H, W) float32 in [-1, 1], label int64)``; a
builder returns ``(dataset, num_classes, meta)`` where ``meta`` (JSON) is stored in checkpoints
so evaluation can draw held-out real clips of the same kind. A new dataset is one module here
and one row in :data:`DATASETS`; ``vdm train --data KIND[:PATH]`` then accepts it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

Built = tuple[Any, int, dict[str, Any]]


def _clip_meta(cfg: Any, kind: str, options: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "frames": cfg.frames, "size": cfg.size, "channels": cfg.channels, "options": options}


def build_moving_shapes(cfg: Any) -> Built:
    from .moving_shapes import MovingShapes, MovingShapesConfig

    ms = MovingShapesConfig(frames=cfg.frames, size=cfg.size, channels=cfg.channels,
                            min_objects=cfg.num_objects, max_objects=cfg.num_objects)
    ds = MovingShapes(cfg.num_clips, ms, base_seed=cfg.seed)
    meta = _clip_meta(cfg, "moving_shapes", {"num_objects": cfg.num_objects, "min_objects": cfg.num_objects,
                                             "max_objects": cfg.num_objects, "num_clips": cfg.num_clips,
                                             "base_seed": cfg.seed})
    return ds, ds.num_classes, meta


def _video_clip_spec(cfg: Any) -> Any:
    from .video import ClipSpec

    # Random clip starts are seeded by (seed, epoch, index): see training.batches.EpochIndexed.
    return ClipSpec(frames=cfg.frames, size=cfg.size, channels=cfg.channels, frame_stride=cfg.frame_stride,
                    mode="random")


def _video_root(cfg: Any) -> str:
    root = cfg.data_path
    if not Path(root).is_dir():
        raise ValueError(f"data folder not found: {root}")
    return root


def _video_meta(cfg: Any, kind: str, ds: Any, options: dict[str, Any]) -> Built:
    num_classes = int(ds.num_classes)
    meta = {**_clip_meta(cfg, kind, options), "num_classes": num_classes, "num_videos": len(ds),
            "skipped": [str(p) for p, _ in getattr(ds, "skipped", [])]}
    return ds, num_classes, meta


def build_video_folder(cfg: Any) -> Built:
    from .video import VideoFolder

    root = _video_root(cfg)
    ds = VideoFolder(root, clip=_video_clip_spec(cfg), cache_dir=cfg.cache_dir, seed=cfg.seed)
    return _video_meta(cfg, "folder", ds, {"root": root, "frame_stride": cfg.frame_stride})


def build_ucf101(cfg: Any) -> Built:
    from .video import UCF101

    root = _video_root(cfg)
    split_dir = cfg.split_dir or str(Path(root) / "ucfTrainTestlist")
    ds = UCF101(root, split_dir, split=cfg.split, fold=cfg.fold, clip=_video_clip_spec(cfg),
                cache_dir=cfg.cache_dir, seed=cfg.seed)
    return _video_meta(cfg, "ucf101", ds, {"root": root, "split_dir": split_dir, "split": cfg.split,
                                           "fold": cfg.fold, "frame_stride": cfg.frame_stride})


# kind -> (builder, whether `--data KIND:PATH` needs a path)
DATASETS: dict[str, tuple[Callable[[Any], Built], bool]] = {
    "moving_shapes": (build_moving_shapes, False),
    "folder": (build_video_folder, True),
    "ucf101": (build_ucf101, True),
}


def build_dataset(cfg: Any) -> Built:
    """(dataset, num_classes, data meta) for the run options ``cfg`` (its ``data_kind`` names the row)."""
    builder, _ = DATASETS[cfg.data_kind]
    return builder(cfg)


__all__ = ["DATASETS", "build_dataset", "build_moving_shapes", "build_video_folder", "build_ucf101"]
