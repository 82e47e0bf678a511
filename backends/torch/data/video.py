"""Real-video datasets (a folder of videos, UCF-101) decoded with PyAV (vdm.backends.media).

Every file is decoded once when the dataset is built: unreadable, truncated and too-short
files are found then and skipped with a :class:`VideoSkippedWarning` naming each one (plus one
summary warning), so an epoch never crashes half-way. With ``cache_dir`` the decoded,
resized frames are stored as ``.npy`` (keyed by path, mtime, size and resize parameters) and
memory-mapped afterwards, so no file is decoded twice, across epochs and across runs.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from ...files import atomic_path
from ...media import decode_video

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".gif", ".mkv", ".mov", ".m4v")
_CACHE_VERSION = "1"
# Errors that mean "this file is not a usable video"; anything else is a bug and propagates.
_DECODE_ERRORS = (av.FFmpegError, OSError, ValueError, IndexError, EOFError, RuntimeError)


class VideoSkippedWarning(UserWarning):
    """A video file was left out of a dataset (unreadable or too short)."""


@dataclass(frozen=True)
class ClipSpec:
    """How clips are cut from a video and presented."""

    frames: int = 8
    frame_stride: int = 1  # take every k-th decoded frame
    mode: str = "random"  # "random" (seeded) or "center" start frame
    size: int = 32  # shorter side resized to this, then centre-cropped to size x size
    channels: int = 1  # 1 = grayscale (BT.601 luma), 3 = RGB
    normalize: bool = True  # float32 in [-1, 1]; False returns the raw uint8 values

    def __post_init__(self) -> None:
        if self.frames < 1 or self.frame_stride < 1 or self.size < 1:
            raise ValueError(f"frames, frame_stride and size must be >= 1: {self}")
        if self.mode not in ("random", "center"):
            raise ValueError(f"mode must be 'random' or 'center', got {self.mode!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")

    @property
    def span(self) -> int:
        """Number of consecutive decoded frames one clip covers."""
        return (self.frames - 1) * self.frame_stride + 1


def _to_channels(rgb: np.ndarray, channels: int) -> np.ndarray:
    if channels == 3:
        return rgb
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]


# --------------------------------------------------------------------------- datasets


class VideoClips:
    """Map-style dataset of fixed-length clips from a list of (video path, label).

    Items are ``(video (C, T, size, size) tensor, label int64 tensor)``; the video is float32
    in [-1, 1] (uint8 when ``clip.normalize`` is False). Random clip starts depend only on
    ``(seed, epoch, index)``; call :meth:`set_epoch` each epoch to vary them.
    """

    def __init__(self, samples: Sequence[tuple[str | os.PathLike[str], int]],
                 clip: ClipSpec | None = None, cache_dir: str | os.PathLike[str] | None = None,
                 seed: int = 0, classes: Sequence[str] = (), source: str = "dataset",
                 skipped: Sequence[tuple[Path, str]] = ()) -> None:
        self.clip = clip or ClipSpec()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self.epoch = 0
        self.classes = list(classes)
        self.decode_count = 0  # files decoded by this object (cache misses), for tests/logs
        self.samples: list[tuple[Path, int, int]] = []  # (path, label, decoded frame count)
        self.skipped: list[tuple[Path, str]] = list(skipped)
        self._scan([(Path(p), int(lab)) for p, lab in samples], source)

    # -- construction-time scan --------------------------------------------------------

    def _scan(self, candidates: list[tuple[Path, int]], source: str) -> None:
        for path, label in candidates:
            try:
                n = len(self._frames(path))
            except _DECODE_ERRORS as exc:
                self.skipped.append((path, f"unreadable ({type(exc).__name__}: {exc})"))
                continue
            if n < self.clip.span:
                self.skipped.append((path, f"too few frames ({n} < {self.clip.span} needed "
                                           f"for {self.clip.frames} frames at stride "
                                           f"{self.clip.frame_stride})"))
                continue
            self.samples.append((path, label, n))
        for path, reason in self.skipped:
            warnings.warn(f"skipping video {path}: {reason}", VideoSkippedWarning, stacklevel=3)
        if self.skipped:
            total = len(self.skipped) + len(self.samples)
            warnings.warn(f"{source}: skipped {len(self.skipped)} of {total} video files",
                          VideoSkippedWarning, stacklevel=3)
        if not self.samples:
            raise ValueError(f"no usable videos in {source} ({len(self.skipped)} skipped); "
                             f"need files with at least {self.clip.span} decodable frames")

    # -- decoding and cache ------------------------------------------------------------

    def cache_path(self, path: Path) -> Path | None:
        if self.cache_dir is None:
            return None
        st = path.stat()
        key = "|".join([_CACHE_VERSION, str(path.resolve()), str(st.st_mtime_ns), str(st.st_size),
                        str(self.clip.size), str(self.clip.channels)])
        digest = hashlib.sha1(key.encode()).hexdigest()[:20]
        return self.cache_dir / f"{path.stem}-{digest}.npy"

    def _frames(self, path: Path) -> np.ndarray:
        """Resized frames (T, size, size, C) uint8, from the cache when possible."""
        cached = self.cache_path(path)
        if cached is not None and cached.exists():
            try:
                return np.load(cached, mmap_mode="r")
            except (OSError, ValueError):
                pass  # damaged cache entry: decode again and overwrite it
        self.decode_count += 1
        frames = _to_channels(decode_video(path, self.clip.size), self.clip.channels)
        if cached is not None:
            with atomic_path(cached) as tmp, open(tmp, "wb") as f:
                np.save(f, frames)
        return frames

    # -- dataset protocol --------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def clip_indices(self, index: int) -> np.ndarray:
        """Frame indices of item ``index`` for the current epoch."""
        _, _, n = self.samples[index]
        spec = self.clip
        if spec.mode == "center":
            start = (n - spec.span) // 2
        else:
            rng = np.random.default_rng([self.seed, self.epoch, index % len(self)])
            start = int(rng.integers(0, n - spec.span + 1))
        return start + spec.frame_stride * np.arange(spec.frames)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        import torch

        path, label, _ = self.samples[index]
        frames = np.asarray(self._frames(path)[self.clip_indices(index)])  # (T, S, S, C)
        video = torch.from_numpy(np.ascontiguousarray(frames.transpose(3, 0, 1, 2)))
        if self.clip.normalize:
            video = video.float() / 127.5 - 1.0
        return video, torch.tensor(label, dtype=torch.int64)


def _is_video(p: Path, extensions: Sequence[str]) -> bool:
    return p.is_file() and p.suffix.lower() in extensions and not p.name.startswith(".")


class VideoFolder(VideoClips):
    """All videos under ``root`` (recursive). If every video sits inside a sub-folder of
    ``root``, the first-level folder names are the classes (sorted -> 0..K-1); otherwise the
    dataset is unlabelled and every label is -1."""

    def __init__(self, root: str | os.PathLike[str], clip: ClipSpec | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, seed: int = 0,
                 extensions: Sequence[str] = VIDEO_EXTENSIONS) -> None:
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"video folder {root} does not exist or is not a directory")
        exts = tuple(e.lower() for e in extensions)
        files = sorted(p for p in root.rglob("*") if _is_video(p, exts)
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        if cache_dir is not None:  # never treat cache files as inputs
            cache = Path(cache_dir).resolve()
            files = [p for p in files if cache not in p.resolve().parents]
        rels = [p.relative_to(root) for p in files]
        labelled = bool(rels) and all(len(r.parts) >= 2 for r in rels)
        classes = sorted({r.parts[0] for r in rels}) if labelled else []
        index = {name: i for i, name in enumerate(classes)}
        samples = [(p, index[r.parts[0]] if labelled else -1) for p, r in zip(files, rels,
                                                                             strict=True)]
        if not samples:
            raise ValueError(f"no video files ({', '.join(exts)}) found in {root}")
        super().__init__(samples, clip, cache_dir, seed, classes, source=str(root))


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise ValueError(f"UCF-101 split file {path} not found")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def read_ucf101_classes(split_dir: str | os.PathLike[str]) -> list[str]:
    """Class names from ``classInd.txt`` ("1 ApplyEyeMakeup" lines), index 0-based."""
    path = Path(split_dir) / "classInd.txt"
    entries = {}
    for ln in _read_lines(path):
        idx, name = ln.split(maxsplit=1)
        entries[int(idx)] = name.strip()
    if sorted(entries) != list(range(1, len(entries) + 1)):
        raise ValueError(f"{path}: class indices must be 1..N without gaps")
    return [entries[i] for i in range(1, len(entries) + 1)]


class UCF101(VideoClips):
    """UCF-101 with the official split files: ``root/<Class>/<video>.avi`` and
    ``split_dir/{classInd,trainlist0F,testlist0F}.txt``. Labels are 0-based from classInd;
    listed files that are missing are skipped with a warning like unreadable ones."""

    def __init__(self, root: str | os.PathLike[str], split_dir: str | os.PathLike[str],
                 split: str = "train", fold: int = 1, clip: ClipSpec | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, seed: int = 0) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if fold not in (1, 2, 3):
            raise ValueError(f"fold must be 1, 2 or 3, got {fold}")
        root, split_dir = Path(root), Path(split_dir)
        classes = read_ucf101_classes(split_dir)
        by_name = {name.lower(): i for i, name in enumerate(classes)}
        list_path = split_dir / f"{split}list0{fold}.txt"
        samples, missing = [], []
        for ln in _read_lines(list_path):
            parts = ln.split()
            rel = parts[0]
            folder = rel.replace("\\", "/").split("/")[0]
            if folder.lower() not in by_name:
                raise ValueError(f"{list_path}: class folder {folder!r} of {rel} is not in "
                                 f"classInd.txt")
            label = by_name[folder.lower()]
            if len(parts) > 1 and int(parts[1]) - 1 != label:
                raise ValueError(f"{list_path}: {rel} has label {parts[1]} but classInd says "
                                 f"{label + 1}")
            path = root / rel
            if path.is_file():
                samples.append((path, label))
            else:
                missing.append((path, "missing file"))
        if not samples and not missing:
            raise ValueError(f"{list_path} lists no videos")
        super().__init__(samples, clip, cache_dir, seed, classes,
                         source=f"{root} ({split} split {fold})", skipped=missing)
