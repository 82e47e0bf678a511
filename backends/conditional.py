"""Videos longer than the model's window, and frames in between given ones: spec 18 in a loop.

`vdm sample --extend CLIP --frames N` continues a clip autoregressively: each window of the model's
F frames observes the last ``overlap`` frames already made (given or generated) and generates the
next ``F - overlap``, until the video has N frames. `vdm sample --interpolate CLIP --factor k`
places the clip's frames k apart and generates the k - 1 frames between each pair: each window
observes the given frames that fall in it and keeps what lies between its first and last one
(the frames past its last given frame are extrapolations, made again by the next window with
given frames on both sides).

Every window samples through :func:`vdm.backends.sampling.sample_videos` with a
:class:`~vdm.backends.sampling.Conditioning`, so every method (replacement, reconstruction guidance,
frames) runs on every solver and backend that sampling allows. Window ``w`` of a run seeded
``seed`` draws its noise from the seed ``SeedSequence([seed, w])``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import one_line
from .sampling import Conditioning, LoadedModel, SamplingError, SamplingOptions, sample_videos

Progress = Callable[[int, int], None]  # (windows done, windows in total)


@dataclass(frozen=True)
class Window:
    """One call of the model: output frames ``start .. start + F - 1``; ``keep`` are the window's frame
    indices whose generated values go into the video."""

    start: int
    keep: tuple[int, ...]


@dataclass(frozen=True)
class LongVideo:
    videos: np.ndarray  # (num, C, L, H, W) float32 in [-1, 1]
    given: tuple[int, ...]  # the output frames that are the clip's own


# --------------------------------------------------------------------------- reading the clip


def read_clip(path: str | Path, channels: int, size: int) -> np.ndarray:
    """The clip at ``path`` as (C, T, size, size) float32 in [-1, 1]: a ``.npy`` of shape (C, T, H, W) or
    (1, C, T, H, W) in [-1, 1] (as `vdm sample` writes them) taken as it is, or any video file PyAV
    decodes, resized and centre-cropped to ``size`` and converted to ``channels`` as training does."""
    path = Path(path)
    if not path.is_file():
        raise SamplingError(f"cannot read the clip {path}: no such file")
    if path.suffix.lower() == ".npy":
        return _npy_clip(path, channels, size)
    from . import media

    try:
        rgb = media.decode_video(path, size)
    except Exception as exc:  # PyAV raises many types for a file that is not a video
        raise SamplingError(f"cannot read the clip {path}: {one_line(exc, None) or type(exc).__name__} "
                            "(give a video file PyAV can decode, or a .npy of shape (C, T, H, W))") from None
    u8 = media.rgb_to_channels(rgb, channels)
    return (u8.astype(np.float32) / 127.5 - 1.0).transpose(3, 0, 1, 2)


def _npy_clip(path: Path, channels: int, size: int) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise SamplingError(f"cannot read the clip {path}: {one_line(exc, None)}") from None
    if arr.ndim == 5 and arr.shape[0] != 1:
        raise SamplingError(f"the clip {path} holds {arr.shape[0]} clips (shape {arr.shape}); give one clip of "
                            "shape (C, T, H, W), e.g. np.save('clip.npy', samples[0])")
    if arr.ndim == 5:
        arr = arr[0]
    if arr.ndim != 4 or arr.dtype.kind != "f":
        raise SamplingError(f"the clip {path} must be a float array of shape (C, T, H, W) in [-1, 1], "
                            f"got {arr.dtype} {arr.shape}")
    if arr.shape[0] != channels or arr.shape[2:] != (size, size):
        raise SamplingError(f"the clip {path} has {arr.shape[0]} channel(s) of {arr.shape[2]}x{arr.shape[3]}; "
                            f"the model takes {channels} of {size}x{size}")
    if not np.isfinite(arr).all() or np.abs(arr).max() > 1.0 + 1e-6:
        raise SamplingError(f"the clip {path} must hold finite values in [-1, 1]")
    return arr.astype(np.float32)


# --------------------------------------------------------------------------- window plans


def extension_windows(given: int, total: int, window: int, overlap: int) -> list[Window]:
    """Windows that grow a video of ``given`` frames to ``total``: each observes the last ``overlap``
    frames made so far and keeps the ``window - overlap`` after them (the last one only up to ``total``)."""
    if not 1 <= overlap <= window - 1:
        raise SamplingError(f"--overlap must lie in [1, {window - 1}] for this model's {window}-frame window, "
                            f"got {overlap}")
    if given < overlap:
        raise SamplingError(f"the clip has {given} frame(s); extending with --overlap {overlap} needs at least "
                            f"{overlap}")
    if total <= given:
        raise SamplingError(f"--frames ({total}) must exceed the clip's {given} frames to extend it")
    out, made = [], given
    while made < total:
        start = made - overlap
        keep = tuple(range(overlap, min(window, total - start)))
        out.append(Window(start, keep))
        made = start + keep[-1] + 1
    return out


def interpolation_windows(n_in: int, factor: int, window: int) -> list[Window]:
    """Windows over a video whose given frames sit at 0, k, 2k, .., (n_in - 1) k: each starts at a
    given frame and keeps the generated frames up to its last given frame."""
    if not 2 <= factor <= window - 1:
        raise SamplingError(f"--factor must lie in [2, {window - 1}] for this model's {window}-frame window "
                            f"(two given frames must fit in one window), got {factor}")
    if n_in < 2:
        raise SamplingError(f"the clip has {n_in} frame(s); interpolating needs at least 2")
    last = (n_in - 1) * factor
    span = (window - 1) // factor * factor  # the last given frame a window reaches
    out, start = [], 0
    while start < last:
        end = min(start + span, last)
        out.append(Window(start, tuple(j for j in range(1, end - start) if j % factor)))
        start = end
    return out


# --------------------------------------------------------------------------- running them


def _window_seed(seed: int, w: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(w)]).generate_state(1)[0])


def _run(model: LoadedModel, canvas: np.ndarray, known: np.ndarray, windows: list[Window], options: SamplingOptions,
         seed: int, method: str, weight: float, progress: Progress | None) -> np.ndarray:
    num, c, length, h, w = canvas.shape
    f = options.frames or model.frames
    for k, win in enumerate(windows):
        frames = np.arange(win.start, win.start + f)
        inside = frames < length
        observed = np.zeros((num, c, f, h, w), np.float32)
        observed[:, :, inside] = canvas[:, :, frames[inside]]
        mask = np.zeros(f, np.float32)
        mask[inside] = known[frames[inside]]
        cond = Conditioning(observed, np.repeat(mask[None], num, axis=0), method, weight)
        out = sample_videos(model, num, _window_seed(seed, k), options, condition=cond)
        keep = list(win.keep)
        canvas[:, :, win.start + np.array(keep)] = out[:, :, keep]
        known[win.start + np.array(keep)] = 1
        if progress is not None:
            progress(k + 1, len(windows))
    return canvas


def extend(model: LoadedModel, clip: np.ndarray, total: int, *, num: int = 1, overlap: int | None = None,
           options: SamplingOptions | None = None, seed: int = 0, method: str = "reconstruction",
           weight: float = 5.0, progress: Progress | None = None) -> LongVideo:
    """``num`` continuations of ``clip`` (C, T, H, W) to ``total`` frames (the clip's own frames first)."""
    options = options or SamplingOptions(sampler="euler")
    f = options.frames or model.frames
    overlap = f // 2 if overlap is None else overlap
    given = clip.shape[1]
    windows = extension_windows(given, total, f, overlap)
    canvas = np.zeros((num, clip.shape[0], total, *clip.shape[2:]), np.float32)
    canvas[:, :, :given] = clip[None]
    known = np.zeros(total, np.float32)
    known[:given] = 1
    videos = _run(model, canvas, known, windows, options, seed, method, weight, progress)
    return LongVideo(videos, tuple(range(given)))


def interpolate(model: LoadedModel, clip: np.ndarray, factor: int, *, num: int = 1,
                options: SamplingOptions | None = None, seed: int = 0, method: str = "reconstruction",
                weight: float = 5.0, progress: Progress | None = None) -> LongVideo:
    """``num`` videos with ``factor - 1`` generated frames between consecutive frames of ``clip``."""
    options = options or SamplingOptions(sampler="euler")
    f = options.frames or model.frames
    n_in = clip.shape[1]
    windows = interpolation_windows(n_in, factor, f)
    length = (n_in - 1) * factor + 1
    given = tuple(range(0, length, factor))
    canvas = np.zeros((num, clip.shape[0], length, *clip.shape[2:]), np.float32)
    canvas[:, :, list(given)] = clip[None]
    known = np.zeros(length, np.float32)
    known[list(given)] = 1
    videos = _run(model, canvas, known, windows, options, seed, method, weight, progress)
    return LongVideo(videos, given)


__all__ = ["LongVideo", "Window", "extend", "extension_windows", "interpolate", "interpolation_windows", "read_clip"]
