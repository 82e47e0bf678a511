"""Training data: one table of datasets, each a builder from the run's options.

A dataset is map-style and yields ``(video (C, T, H, W) float32 in [-1, 1], label int64)``; a
builder returns ``(dataset, num_classes, meta)`` where ``meta`` (JSON) is stored in checkpoints
so evaluation can draw held-out real clips of the same kind. A new dataset is one module here
and one row in :data:`DATASETS`; ``vdm train --data KIND[:PATH]`` then accepts it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

Built = tuple[Any, int, dict[str, Any]]


def data_channels(cfg: Any) -> int:
    """The run's channels: ``cfg.channels`` when given, else the dataset kind's default."""
    return cfg.channels if cfg.channels is not None else DATASETS[cfg.data_kind].channels


def _clip_meta(cfg: Any, kind: str, options: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "frames": cfg.frames, "size": cfg.size, "channels": data_channels(cfg), "options": options}


def build_moving_shapes(cfg: Any) -> Built:
    from .moving_shapes import MovingShapes, MovingShapesConfig

    ms = MovingShapesConfig(frames=cfg.frames, size=cfg.size, channels=data_channels(cfg),
                            min_objects=cfg.num_objects, max_objects=cfg.num_objects)
    ds = MovingShapes(cfg.num_clips, ms, base_seed=cfg.seed)
    meta = _clip_meta(cfg, "moving_shapes", {"num_objects": cfg.num_objects, "min_objects": cfg.num_objects,
                                             "max_objects": cfg.num_objects, "num_clips": cfg.num_clips,
                                             "base_seed": cfg.seed})
    return ds, ds.num_classes, meta


def _video_clip_spec(cfg: Any) -> Any:
    from .video import ClipSpec

    # Random clip starts are seeded by (seed, epoch, index): see training.batches.EpochIndexed.
    return ClipSpec(frames=cfg.frames, size=cfg.size, channels=data_channels(cfg), frame_stride=cfg.frame_stride,
                    mode="random", fps=cfg.fps)


def video_cache_dir(cfg: Any) -> str | None:
    """Where decoded frames are cached: ``cfg.cache_dir``, by default OUT/cache; None with
    ``cache=False`` (then every clip decodes its whole file). Absolute, so ``vdm eval`` run from
    another folder finds it in the checkpoint's data meta."""
    if not cfg.cache:
        return None
    return str(Path(cfg.cache_dir or Path(cfg.out_dir) / "cache").resolve())


def _video_root(cfg: Any) -> str:
    root = cfg.data_path
    if not Path(root).is_dir():
        raise ValueError(f"data folder not found: {root}")
    return root


def _video_meta(cfg: Any, kind: str, ds: Any, options: dict[str, Any]) -> Built:
    num_classes = int(ds.num_classes)
    options = {**options, "frame_stride": cfg.frame_stride, "fps": cfg.fps}
    meta = {**_clip_meta(cfg, kind, options), "num_classes": num_classes, "num_videos": len(ds),
            "skipped": [str(p) for p, _ in ds.skipped], "partly_decoded": [str(p) for p, _ in ds.partial],
            "cache_dir": video_cache_dir(cfg)}
    return ds, num_classes, meta


def build_video_folder(cfg: Any) -> Built:
    from .video import HELDOUT_RULE, VideoFolder

    root = str(Path(_video_root(cfg)).resolve())
    # The held-out files never reach training; `vdm eval` draws its real clips from them.
    exclude = [str(Path(cfg.out_dir).resolve())]  # the run's own outputs, if OUT lies inside the folder
    ds = VideoFolder(root, clip=_video_clip_spec(cfg), cache_dir=video_cache_dir(cfg), seed=cfg.seed,
                     heldout_fraction=cfg.heldout_fraction, subset="train", exclude=exclude)
    heldout = {"fraction": cfg.heldout_fraction, "rule": HELDOUT_RULE, "files": ds.heldout_files}
    return _video_meta(cfg, "folder", ds, {"root": root, "heldout": heldout, "exclude": exclude})


def build_ucf101(cfg: Any) -> Built:
    from .video import UCF101

    root = str(Path(_video_root(cfg)).resolve())
    split_dir = str(Path(cfg.split_dir or Path(root) / "ucfTrainTestlist").resolve())
    ds = UCF101(root, split_dir, split=cfg.split, fold=cfg.fold, clip=_video_clip_spec(cfg),
                cache_dir=video_cache_dir(cfg), seed=cfg.seed)
    return _video_meta(cfg, "ucf101", ds, {"root": root, "split_dir": split_dir, "split": cfg.split,
                                           "fold": cfg.fold})


class DatasetKind(NamedTuple):
    build: Callable[[Any], Built]  # run options -> (dataset, num_classes, meta)
    needs_path: bool  # whether `--data KIND:PATH` needs a path
    channels: int  # channels when the run does not set them: natural video is in colour


DATASETS: dict[str, DatasetKind] = {
    "moving_shapes": DatasetKind(build_moving_shapes, False, 1),
    "folder": DatasetKind(build_video_folder, True, 3),
    "ucf101": DatasetKind(build_ucf101, True, 3),
}


def build_dataset(cfg: Any) -> Built:
    """(dataset, num_classes, data meta) for the run options ``cfg`` (its ``data_kind`` names the row)."""
    return DATASETS[cfg.data_kind].build(cfg)


__all__ = ["DATASETS", "DatasetKind", "build_dataset", "build_moving_shapes", "build_video_folder", "build_ucf101",
           "data_channels", "video_cache_dir"]
