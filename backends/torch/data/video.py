"""Real-video datasets (a folder of videos, UCF-101) decoded with PyAV.

Every file is decoded once when the dataset is built: unreadable, truncated and too-short
files are found then and skipped with a :class:`VideoSkippedWarning` naming each one (plus one
summary warning), so an epoch never crashes half-way. A file that decodes only in part (a
truncated download, a damaged packet) is kept when it yields enough frames and reported with a
:class:`VideoPartlyDecodedWarning` that says how many. Every warning is one line.

With ``cache_dir`` the decoded, resized frames of each file are stored there as ``.npy``
(see :meth:`VideoClips.cache_path` for the key) and memory-mapped afterwards, so no file is
decoded twice, across epochs and across runs. Without a cache every item decodes its whole file
again. Cache entries are read with ``allow_pickle=False`` and checked; a damaged one is decoded
again and replaced.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from ...files import atomic_path, atomic_write_bytes, one_line
from ...media import frame_to_rgb, rgb_to_channels

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".gif", ".mkv", ".mov", ".m4v")
# Bump when the decoded content for the same key changes (resize filter, colour conversion...).
_CACHE_VERSION = "2"
# Errors that mean "this file is not a usable video"; anything else is a bug and propagates.
_DECODE_ERRORS = (av.FFmpegError, OSError, ValueError, IndexError, EOFError, RuntimeError)


class VideoDataWarning(UserWarning):
    """Something about a video file that the user should know; one line."""


class VideoSkippedWarning(VideoDataWarning):
    """A video file was left out of a dataset (unreadable or too short)."""


class VideoPartlyDecodedWarning(VideoDataWarning):
    """A video file stopped decoding early; the frames before the fault are used."""


@contextlib.contextmanager
def report_warnings(emit: Callable[[str], None] | None) -> Iterator[None]:
    """Inside the block, each :class:`VideoDataWarning` goes to ``emit`` as one line (every
    occurrence, not only the first), or nowhere when ``emit`` is None (a quiet run)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if emit is None else "always", VideoDataWarning)
        shown = warnings.showwarning

        def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            if emit is not None and issubclass(category, VideoDataWarning):
                emit(f"warning: {one_line(message, None)}")
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield


@dataclass(frozen=True)
class ClipSpec:
    """How clips are cut from a video and presented."""

    frames: int = 8
    frame_stride: int = 1  # take every k-th decoded (or resampled) frame
    mode: str = "random"  # "random" (seeded) or "center" start frame
    size: int = 32  # shorter side resized to this, then centre-cropped to size x size
    channels: int = 3  # 3 = RGB (natural video is in colour), 1 = grayscale (BT.601 luma)
    normalize: bool = True  # float32 in [-1, 1]; False returns the raw uint8 values
    fps: float | None = None  # resample every file to this frame rate by timestamps; None = the file's frames

    def __post_init__(self) -> None:
        if self.frames < 1 or self.frame_stride < 1 or self.size < 1:
            raise ValueError(f"frames, frame_stride and size must be >= 1: {self}")
        if self.mode not in ("random", "center"):
            raise ValueError(f"mode must be 'random' or 'center', got {self.mode!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.fps is not None and not (np.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be a positive number (or None), got {self.fps}")

    @property
    def span(self) -> int:
        """Number of consecutive decoded frames one clip covers."""
        return (self.frames - 1) * self.frame_stride + 1


# --------------------------------------------------------------------------- decoding


def resample_indices(times: Sequence[Fraction], fps: Fraction) -> list[int]:
    """Frames to show at a constant ``fps``: for each target time ``t0 + k / fps`` (k = 0, 1, ...
    while it does not pass the last frame's timestamp) the index of the frame on screen then,
    i.e. the last frame whose timestamp is <= the target. Exact rational arithmetic, so 30 fps
    to 10 fps takes every third frame. Indices refer to ``times`` as given (any order)."""
    if not times:
        return []
    order = sorted(range(len(times)), key=lambda i: times[i])  # presentation order, stable
    ts = [times[i] for i in order]
    step = 1 / Fraction(fps)
    picked, k = [], 0
    while (target := ts[0] + k * step) <= ts[-1]:
        picked.append(order[bisect.bisect_right(ts, target) - 1])
        k += 1
    return picked


def _fraction_fps(fps: float) -> Fraction:
    return Fraction(str(fps))  # 29.97 -> 2997/100, not the float's binary expansion


def _frame_time(frame: Any, index: int, rate: Fraction | None) -> Fraction | None:
    if frame.pts is not None and frame.time_base:
        return Fraction(frame.pts) * Fraction(frame.time_base)
    return Fraction(index) / rate if rate else None


def _declared_frames(container: Any, stream: Any, rate: Fraction | None) -> tuple[int | None, int]:
    """(frame count the file announces, slack): the stream's own count when it has one
    (exact), else duration x frame rate (rounded, so one frame of slack)."""
    if stream.frames:
        return int(stream.frames), 0
    if container.duration and rate:
        return round(Fraction(container.duration, 1_000_000) * rate), 1
    return None, 0


@dataclass(frozen=True)
class Decoded:
    """The usable frames of one file and, when it stopped early, a note saying how far it got."""

    frames: np.ndarray  # (T, size, size, C) uint8, resampled and colour-converted
    note: str | None = None  # e.g. "yielded 13 of 30 frames (InvalidDataError: ...)"; None = complete


def decode_file(path: Path, size: int, channels: int = 3, fps: float | None = None) -> Decoded:
    """Decode ``path`` to (T, size, size, channels) uint8 frames, resampled to ``fps`` by frame
    timestamps when given (see :func:`resample_indices`). A decode error after the first frame
    keeps the frames before it; that, or fewer frames than the container announces, is noted."""
    frames: list[np.ndarray] = []
    times: list[Fraction | None] = []
    error = None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]  # IndexError when there is no video stream
        stream.thread_type = "AUTO"
        rate = stream.guessed_rate or stream.average_rate
        rate = Fraction(rate) if rate else None
        expected, slack = _declared_frames(container, stream, rate)
        try:
            for frame in container.decode(stream):
                frames.append(frame_to_rgb(frame, size))
                times.append(_frame_time(frame, len(times), rate))
        except _DECODE_ERRORS as exc:
            if not frames:
                raise
            error = f"{type(exc).__name__}: {one_line(exc)}"
    if not frames:
        raise ValueError("no decodable video frames")
    note = None
    if error is not None or (expected is not None and len(frames) < expected - slack):
        of = f" of {expected}" if expected is not None else ""
        note = f"yielded {len(frames)}{of} frames" + (f" ({error})" if error else "")
    rgb = np.stack(frames)
    if fps is not None:
        if any(t is None for t in times):
            raise ValueError("frames without timestamps and no frame rate: cannot resample to fps")
        rgb = rgb[resample_indices(times, _fraction_fps(fps))]  # type: ignore[arg-type]
    return Decoded(rgb_to_channels(rgb, channels), note)


# --------------------------------------------------------------------------- held-out split

HELDOUT_RULE = ("a file is held out when the first 8 bytes of sha1(its path relative to the root, '/'-separated), "
                "read as a big-endian integer / 2**64, are < the fraction; with 2+ files at least one is held out "
                "(the smallest hash) and at least one is kept (the largest hash)")


def _split_hash(rel: str) -> int:
    return int.from_bytes(hashlib.sha1(rel.encode()).digest()[:8], "big")


def heldout_split(rel_paths: Sequence[str], fraction: float) -> set[str]:
    """The files held out of training (see :data:`HELDOUT_RULE`): a file's membership depends
    on its own name only, so adding files never moves a trained-on file into the held-out set
    (except through the at-least-one guards of very small folders)."""
    if fraction <= 0 or len(rel_paths) < 2:
        return set()
    held = {r for r in rel_paths if _split_hash(r) < fraction * 2**64}
    by_hash = sorted(rel_paths, key=_split_hash)
    if not held:
        held = {by_hash[0]}
    if len(held) == len(rel_paths):
        held.discard(by_hash[-1])
    return held


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
            try:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ValueError(f"cannot create the video cache folder {self.cache_dir}: {one_line(exc)}; choose "
                                 "another cache folder or turn the cache off") from None
        self.seed = seed
        self.epoch = 0
        self.classes = list(classes)
        self.decode_count = 0  # files decoded by this object (cache misses), for tests/logs
        self.rebuilt: list[Path] = []  # damaged cache entries that were decoded again
        self.samples: list[tuple[Path, int, int]] = []  # (path, label, usable frame count)
        self.skipped: list[tuple[Path, str]] = list(skipped)
        self.partial: list[tuple[Path, str]] = []  # kept files that decoded only in part
        self._scan([(Path(p), int(lab)) for p, lab in samples], source)

    # -- construction-time scan --------------------------------------------------------

    def _scan(self, candidates: list[tuple[Path, int]], source: str) -> None:
        for path, label in candidates:
            try:
                decoded = self._decoded(path)
            except _DECODE_ERRORS as exc:
                self.skipped.append((path, f"unreadable ({type(exc).__name__}: {one_line(exc)})"))
                continue
            n = len(decoded.frames)
            if n < self.clip.span:
                partly = f"; it {decoded.note}" if decoded.note else ""
                self.skipped.append((path, f"too few frames ({n} < {self.clip.span} needed for "
                                           f"{self.clip.frames} frames at stride {self.clip.frame_stride}{partly})"))
                continue
            if decoded.note:
                self.partial.append((path, decoded.note))
            self.samples.append((path, label, n))
        for path, note in self.partial:
            warnings.warn(f"partly decodable video {path}: {note}; using those frames", VideoPartlyDecodedWarning,
                          stacklevel=3)
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
        """The cache entry of ``path``: keyed by the resolved path, its size and mtime, and
        every setting that changes the decoded frames (size, channels, fps, cache version).
        Frames per clip and stride are cut from the cached frames, so they share entries."""
        if self.cache_dir is None:
            return None
        st = path.stat()
        key = "|".join([_CACHE_VERSION, str(path.resolve()), str(st.st_mtime_ns), str(st.st_size),
                        str(self.clip.size), str(self.clip.channels), repr(self.clip.fps)])
        digest = hashlib.sha1(key.encode()).hexdigest()[:20]
        return self.cache_dir / f"{path.stem}-{digest}.npy"

    def _load_cached(self, entry: Path) -> Decoded | None:
        """The cached frames, or None when the entry is missing or damaged (then rebuilt)."""
        if not entry.exists():
            return None
        note_file = entry.with_suffix(".note.txt")
        try:
            frames = np.load(entry, mmap_mode="r", allow_pickle=False)
            note = note_file.read_text(encoding="utf-8").strip() if note_file.exists() else None
        except (OSError, ValueError, UnicodeDecodeError):
            frames = None
        if isinstance(frames, np.lib.npyio.NpzFile):  # a zip under an .npy name: not ours
            frames.close()
            frames = None
        spec = self.clip
        if (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4
                and frames.shape[0] >= 1 and frames.shape[1:] == (spec.size, spec.size, spec.channels)):
            return Decoded(frames, note or None)
        self.rebuilt.append(entry)
        return None

    def _decoded(self, path: Path) -> Decoded:
        """Resized frames (T, size, size, C) uint8 of ``path``, from the cache when possible."""
        entry = self.cache_path(path)
        if entry is not None and (cached := self._load_cached(entry)) is not None:
            return cached
        self.decode_count += 1
        spec = self.clip
        decoded = decode_file(path, spec.size, spec.channels, spec.fps)
        if entry is not None:
            try:
                self._store(entry, decoded)
            except OSError as exc:  # a full disk costs speed, not the run: stop caching and say so once
                warnings.warn(f"cannot write the video cache entry {entry} ({one_line(exc)}); decoding without "
                              "a cache from now on", VideoDataWarning, stacklevel=2)
                self.cache_dir = None
        return decoded

    @staticmethod
    def _store(entry: Path, decoded: Decoded) -> None:
        note_file = entry.with_suffix(".note.txt")
        if decoded.note:  # written first: an entry never exists without its note
            atomic_write_bytes(note_file, decoded.note.encode())
        else:
            note_file.unlink(missing_ok=True)
        with atomic_path(entry) as tmp, open(tmp, "wb") as f:
            np.save(f, decoded.frames, allow_pickle=False)

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
        frames = np.asarray(self._decoded(path).frames[self.clip_indices(index)])  # (T, S, S, C)
        video = torch.from_numpy(np.ascontiguousarray(frames.transpose(3, 0, 1, 2)))
        if self.clip.normalize:
            video = video.float() / 127.5 - 1.0
        return video, torch.tensor(label, dtype=torch.int64)


def _is_video(p: Path, extensions: Sequence[str]) -> bool:
    return p.is_file() and p.suffix.lower() in extensions and not p.name.startswith(".")


SUBSETS = ("all", "train", "heldout")


class VideoFolder(VideoClips):
    """All videos under ``root`` (recursive). If every video sits inside a sub-folder of
    ``root``, the first-level folder names are the classes (sorted -> 0..K-1); otherwise the
    dataset is unlabelled and every label is -1.

    ``heldout_fraction`` splits the files by :func:`heldout_split` (the list is
    :attr:`heldout_files`); ``subset`` picks "all" files, the "train" files or the "heldout" ones.
    Files under ``exclude`` (folders) or ``cache_dir`` are never part of the dataset."""

    def __init__(self, root: str | os.PathLike[str], clip: ClipSpec | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, seed: int = 0,
                 extensions: Sequence[str] = VIDEO_EXTENSIONS, heldout_fraction: float = 0.0,
                 subset: str = "all", exclude: Sequence[str | os.PathLike[str]] = ()) -> None:
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"video folder {root} does not exist or is not a directory")
        if subset not in SUBSETS:
            raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
        if not 0.0 <= heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must lie in [0, 1), got {heldout_fraction}")
        exts = tuple(e.lower() for e in extensions)
        files = sorted(p for p in root.rglob("*") if _is_video(p, exts)
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        # Never treat the cache or other excluded folders (a training run's OUT, with its preview GIFs,
        # when it lies inside the data folder) as inputs: a resumed run would see other files.
        skip = [Path(d).resolve() for d in (*exclude, *(() if cache_dir is None else (cache_dir,)))]
        files = [p for p in files if not any(d in p.resolve().parents for d in skip)]
        rels = [p.relative_to(root) for p in files]
        labelled = bool(rels) and all(len(r.parts) >= 2 for r in rels)
        classes = sorted({r.parts[0] for r in rels}) if labelled else []
        index = {name: i for i, name in enumerate(classes)}
        if not files:
            raise ValueError(f"no video files ({', '.join(exts)}) found in {root}")
        self.root = root
        self.heldout_files = sorted(heldout_split([r.as_posix() for r in rels], heldout_fraction))
        held = set(self.heldout_files)
        keep = {"all": lambda r: True, "train": lambda r: r not in held, "heldout": lambda r: r in held}[subset]
        samples = [(p, index[r.parts[0]] if labelled else -1) for p, r in zip(files, rels, strict=True)
                   if keep(r.as_posix())]
        if not samples:
            raise ValueError(f"no {subset} video files in {root} (held-out fraction {heldout_fraction})")
        source = str(root) if subset == "all" else f"{root} ({subset} files)"
        super().__init__(samples, clip, cache_dir, seed, classes, source=source)


# --------------------------------------------------------------------------- UCF-101


def _numbered_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of the non-blank lines of a split file."""
    if not path.is_file():
        raise ValueError(f"UCF-101 split file {path} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read UCF-101 split file {path}: {one_line(exc)}") from None
    return [(i, ln.strip()) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]


def read_ucf101_classes(split_dir: str | os.PathLike[str]) -> list[str]:
    """Class names from ``classInd.txt`` ("1 ApplyEyeMakeup" lines; names may hold spaces),
    index 0-based. A bad line is an error that names the file and the line."""
    path = Path(split_dir) / "classInd.txt"
    entries: dict[int, str] = {}
    for lineno, ln in _numbered_lines(path):
        m = re.fullmatch(r"(\d+)\s+(.+)", ln)
        if m is None or int(m[1]) in entries:
            why = "a repeated index" if m is not None else "expected 'INDEX CLASSNAME'"
            raise ValueError(f"{path} line {lineno}: {why}, got {ln!r}")
        entries[int(m[1])] = m[2].strip()
    if sorted(entries) != list(range(1, len(entries) + 1)):
        raise ValueError(f"{path}: class indices must be 1..N without gaps")
    return [entries[i] for i in range(1, len(entries) + 1)]


def parse_split_line(line: str) -> tuple[str, int | None]:
    """``"CLASS/FILE.avi [LABEL]"`` -> (relative path, 1-based label or None). The path may
    contain spaces: the label is the last field only when it is a whole number and something
    precedes it."""
    m = re.fullmatch(r"(.*?\S)\s+(\d+)", line.strip())
    if m is not None:
        return m[1], int(m[2])
    return line.strip(), None


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
        for lineno, ln in _numbered_lines(list_path):
            where = f"{list_path} line {lineno}"
            rel, given = parse_split_line(ln)
            rel = rel.replace("\\", "/")
            parts = rel.split("/")
            if len(parts) < 2 or Path(rel).suffix.lower() not in VIDEO_EXTENSIONS:
                raise ValueError(f"{where}: expected 'CLASS/FILE.avi [LABEL]', got {ln!r}")
            if parts[0].lower() not in by_name:
                raise ValueError(f"{where}: class folder {parts[0]!r} of {rel} is not in classInd.txt")
            label = by_name[parts[0].lower()]
            if given is not None and given - 1 != label:
                raise ValueError(f"{where}: {rel} has label {given} but classInd says {label + 1}")
            path = root / rel
            if path.is_file():
                samples.append((path, label))
            else:
                missing.append((path, "missing file"))
        if not samples and not missing:
            raise ValueError(f"{list_path} lists no videos")
        super().__init__(samples, clip, cache_dir, seed, classes,
                         source=f"{root} ({split} split {fold})", skipped=missing)
