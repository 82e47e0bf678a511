"""Media files: animated GIF grids, contact sheets and the loss curve (Pillow), video files (PyAV).

Videos are float arrays in [-1, 1] shaped (N, C, T, H, W) (a single (C, T, H, W) clip is
accepted too) with C = 1 (grayscale) or C = 3 (RGB). NumPy arrays and torch tensors both work.
Every file is written atomically (temp file + rename), so a viewer never sees half a file.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .files import atomic_path, atomic_write_bytes


def to_uint8(videos: Any) -> np.ndarray:
    """[-1, 1] float video(s) -> uint8 (N, T, H, W, C), clipping out-of-range values."""
    arr = np.asarray(videos.detach().float().cpu() if hasattr(videos, "detach") else videos, dtype=np.float32)
    if arr.ndim == 4:
        arr = arr[None]
    if arr.ndim != 5:
        raise ValueError(f"videos must be (N, C, T, H, W) or (C, T, H, W), got shape {arr.shape}")
    if arr.shape[1] not in (1, 3):
        raise ValueError(f"videos need 1 (grayscale) or 3 (RGB) channels, got C={arr.shape[1]} (shape {arr.shape})")
    arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=-1.0)
    u8 = np.round((np.clip(arr, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    return u8.transpose(0, 2, 3, 4, 1)


def auto_scale(size: int, target: int = 96) -> int:
    # Tiny clips (16x16) are unreadable at 1:1; upscale (nearest) to roughly `target` pixels.
    return max(1, target // max(size, 1))


def grid_frames(u8: np.ndarray, ncols: int | None, scale: int, pad: int) -> np.ndarray:
    """(N, T, H, W, C) -> (T, gridH, gridW, C): clips tiled row-major with ``pad`` pixel gaps."""
    n, t, h, w, c = u8.shape
    if scale > 1:
        u8 = u8.repeat(scale, axis=2).repeat(scale, axis=3)
        h, w = h * scale, w * scale
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    grid = np.full((t, nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, y:y + h, x:x + w] = u8[i]
    return grid


def _image(frame: np.ndarray) -> Image.Image:
    return Image.fromarray(frame[..., 0], "L") if frame.shape[-1] == 1 else Image.fromarray(frame, "RGB")


def save_gif(
    path: str | os.PathLike[str],
    videos: Any,
    *,
    fps: float = 8.0,
    ncols: int | None = None,
    scale: int | None = None,
    pad: int = 2,
    loop: int = 0,
) -> Path:
    """Animated GIF of ``videos`` tiled in a grid (``ncols`` columns, default ~sqrt(N)), upscaled
    by ``scale`` (default: to about 96 pixels per clip); ``loop=0`` loops forever."""
    u8 = to_uint8(videos)
    frames = grid_frames(u8, ncols, scale or auto_scale(u8.shape[2]), pad)
    images = [_image(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(20, int(round(1000.0 / fps))), loop=loop, optimize=False)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


MARK_RGB = (220, 40, 40)  # the border of a given (observed) frame on a contact sheet


def save_contact_sheet(
    path: str | os.PathLike[str],
    videos: Any,
    *,
    scale: int | None = None,
    pad: int = 2,
    max_videos: int | None = None,
    marked: Sequence[int] = (),
) -> Path:
    """PNG contact sheet: one row per clip, one column per frame (format from the suffix). The frames
    at the indices ``marked`` (the given frames of a conditional sample) get a red border."""
    u8 = to_uint8(videos)
    if max_videos is not None:
        u8 = u8[:max_videos]
    n, t = u8.shape[:2]
    scale = scale or auto_scale(u8.shape[2])
    if marked and u8.shape[-1] == 1:
        u8 = np.repeat(u8, 3, axis=-1)  # a coloured mark needs an RGB sheet
    # Rows are clips and columns are frames: the grid of (N*T) single frames with T columns.
    frames = u8.reshape(n * t, 1, *u8.shape[2:])
    sheet = grid_frames(frames, t, scale, pad)[0]
    h, w = u8.shape[2] * scale, u8.shape[3] * scale
    for row in range(n):
        for col in marked:  # the pad-wide border around each marked frame, inside the gaps
            y, x = pad + row * (h + pad), pad + int(col) * (w + pad)
            sheet[y - pad:y + h + pad, x - pad:x, :] = MARK_RGB
            sheet[y - pad:y + h + pad, x + w:x + w + pad, :] = MARK_RGB
            sheet[y - pad:y, x - pad:x + w + pad, :] = MARK_RGB
            sheet[y + h:y + h + pad, x - pad:x + w + pad, :] = MARK_RGB
    buf = io.BytesIO()
    fmt = "JPEG" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "PNG"
    _image(sheet).save(buf, format=fmt)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def save_loss_plot(
    path: str | os.PathLike[str],
    steps: Sequence[float],
    losses: Sequence[float],
    *,
    title: str = "training loss",
    size: tuple[int, int] = (720, 420),
    log_y: bool | None = None,
    smooth: float | None = None,
) -> Path:
    """Loss curve as a PNG drawn with Pillow: raw values (light) and a bias-corrected exponential
    moving average (dark, weight ``smooth``; default: a window of ~1/25 of the points). The y axis
    is logarithmic when the (positive) losses span more than a factor of 20, unless ``log_y`` says
    otherwise. Non-finite points are skipped."""
    pts = [(float(s), float(v)) for s, v in zip(steps, losses, strict=True) if math.isfinite(float(v))]
    width, height = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    left, right, top, bottom = 64, 16, 28, 36
    draw.text((left, 8), title, fill="black", font=font)
    box = (left, top, width - right, height - bottom)
    draw.rectangle(box, outline="black")
    if not pts:
        draw.text((left + 10, top + 10), "no data", fill="gray", font=font)
    else:
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        positive = min(ys) > 0
        if log_y is None:
            log_y = positive and max(ys) / min(ys) > 20
        log_y = bool(log_y and positive)
        fy = (lambda v: math.log10(v)) if log_y else (lambda v: v)
        y_lo, y_hi = fy(min(ys)), fy(max(ys))
        if y_hi - y_lo < 1e-12:
            y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
        x_lo, x_hi = min(xs), max(xs)
        if x_hi <= x_lo:
            x_lo, x_hi = x_lo - 1, x_hi + 1

        def px(x: float, y: float) -> tuple[float, float]:
            return (box[0] + (x - x_lo) / (x_hi - x_lo) * (box[2] - box[0]),
                    box[3] - (fy(y) - y_lo) / (y_hi - y_lo) * (box[3] - box[1]))

        for tx in _nice_ticks(x_lo, x_hi):
            x = px(tx, ys[0])[0]
            draw.line([(x, box[3]), (x, box[3] + 4)], fill="black")
            draw.text((x - 10, box[3] + 8), f"{tx:g}", fill="black", font=font)
        if log_y:  # decades, plus 2x and 5x marks when the range spans few decades
            mults = (1, 2, 5) if y_hi - y_lo < 2.5 else (1,)
            y_ticks = [m * 10 ** e for e in range(math.floor(y_lo), math.ceil(y_hi) + 1) for m in mults]
        else:
            y_ticks = _nice_ticks(y_lo, y_hi)
        for ty in y_ticks:
            if not y_lo - 1e-9 <= fy(ty) <= y_hi + 1e-9:
                continue
            y = px(x_lo, ty)[1]
            draw.line([(box[0], y), (box[2], y)], fill=(230, 230, 230))
            draw.text((4, y - 6), _fmt(ty), fill="black", font=font)
        draw.text((width // 2 - 12, height - 16), "step", fill="black", font=font)
        if len(pts) == 1:
            x, y = px(*pts[0])
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(31, 119, 180))
        else:
            draw.line([px(x, y) for x, y in pts], fill=(170, 200, 230), width=1)
            beta = smooth if smooth is not None else 1.0 - 1.0 / max(1.0, len(ys) / 25)
            ema, smoothed = 0.0, []
            for k, y in enumerate(ys, 1):
                ema = beta * ema + (1 - beta) * y
                smoothed.append(ema / (1 - beta**k) if beta > 0 else ema)  # debiased: no lag at the start
            draw.line([px(x, y) for x, y in zip(xs, smoothed, strict=True)], fill=(31, 119, 180), width=2)
        draw.text((box[2] - 150, top + 4), f"last {_fmt(ys[-1])}" + ("  (log y)" if log_y else ""),
                  fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


_PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207),
            (140, 86, 75), (227, 119, 194)]


def save_line_plots(
    path: str | os.PathLike[str],
    panels: Sequence[tuple[str, Sequence[tuple[str, Sequence[float], Sequence[float]]]]],
    *,
    x_label: str = "step",
    size: tuple[int, int] = (760, 300),
    log_y: Sequence[bool | None] = (),
) -> Path:
    """Panels stacked vertically, each ``(title, [(label, xs, ys), ...])``, as a PNG drawn with Pillow
    (``size`` is one panel's). Series share a colour by position and a legend in the first panel (a panel
    with other series names gets its own); non-finite
    points are skipped. ``log_y[p]`` sets panel p's y axis: True logarithmic (points <= 0 dropped), False
    linear, None (default) logarithmic when its positive points span more than a factor of 100
    (``vdm schedule --plot``: log-SNR and sigma of several schedules)."""
    width, height = size
    img = Image.new("RGB", (width, height * max(1, len(panels))), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    left, right, top, bottom = 64, 16, 28, 36
    for p, (title, series) in enumerate(panels):
        y0 = p * height
        box = (left, y0 + top, width - right, y0 + height - bottom)
        draw.text((left, y0 + 8), title, fill="black", font=font)
        draw.rectangle(box, outline="black")
        pts = [[(float(x), float(y)) for x, y in zip(xs, ys, strict=True) if math.isfinite(float(y))]
               for _, xs, ys in series]
        flat = [q for line in pts for q in line]
        if not flat:
            draw.text((left + 10, y0 + top + 10), "no data", fill="gray", font=font)
            continue
        positive = [q[1] for q in flat if q[1] > 0]
        want_log = log_y[p] if p < len(log_y) else None
        use_log = bool(positive) and (max(positive) / min(positive) > 100 if want_log is None else want_log)
        if use_log:
            pts = [[q for q in line if q[1] > 0] for line in pts]
            flat = [q for line in pts for q in line]
        ys_all = [q[1] for q in flat]
        fy = math.log10 if use_log else (lambda v: v)
        x_lo, x_hi = min(q[0] for q in flat), max(q[0] for q in flat)
        y_lo, y_hi = fy(min(ys_all)), fy(max(ys_all))
        x_hi, y_hi = (x_hi if x_hi > x_lo else x_lo + 1), (y_hi if y_hi - y_lo > 1e-12 else y_lo + 1)

        def px(x: float, y: float, box: tuple = box, x_lo: float = x_lo, x_hi: float = x_hi,
               y_lo: float = y_lo, y_hi: float = y_hi, fy: Any = fy) -> tuple[float, float]:
            return (box[0] + (x - x_lo) / (x_hi - x_lo) * (box[2] - box[0]),
                    box[3] - (fy(y) - y_lo) / (y_hi - y_lo) * (box[3] - box[1]))

        for tx in _nice_ticks(x_lo, x_hi):
            x = px(tx, 10**y_lo if use_log else y_lo)[0]
            draw.line([(x, box[3]), (x, box[3] + 4)], fill="black")
            draw.text((x - 10, box[3] + 8), f"{tx:g}", fill="black", font=font)
        ticks = [10.0**e for e in range(math.floor(y_lo), math.ceil(y_hi) + 1)] if use_log else _nice_ticks(y_lo, y_hi)
        for ty in ticks:
            if y_lo - 1e-9 <= fy(ty) <= y_hi + 1e-9:
                y = px(x_lo, ty)[1]
                draw.line([(box[0], y), (box[2], y)], fill=(230, 230, 230))
                draw.text((4, y - 6), _fmt(ty), fill="black", font=font)
        for k, line in enumerate(pts):
            colour = _PALETTE[k % len(_PALETTE)]
            xy = [px(x, y) for x, y in line]
            if len(xy) > 1:
                draw.line(xy, fill=colour, width=2)
            for x, y in xy:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
            if p == 0 or [s_[0] for s_ in series] != [s_[0] for s_ in panels[0][1]]:  # its own legend if it differs
                draw.text((box[0] + 8, box[1] + 6 + 12 * k), series[k][0][:48], fill=colour, font=font)
        draw.text((width // 2 - 12, y0 + height - 16), x_label + ("   (log y)" if use_log else ""), fill="black",
                  font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


# --------------------------------------------------------------------------- video files (PyAV)


_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska",
               ".avi": "avi", ".webm": "webm"}


def _pick_codec(suffix: str) -> str:
    import av

    if suffix == ".webm":
        prefs = ("libvpx-vp9", "libvpx")
    elif suffix == ".avi":
        prefs = ("mpeg4", "libx264")
    else:
        prefs = ("libx264", "mpeg4")
    for name in prefs:
        if name in av.codecs_available:
            return name
    raise RuntimeError(f"this PyAV build has none of the encoders {prefs} for {suffix}")


def write_video(path: str | os.PathLike[str], frames: np.ndarray, fps: float = 8) -> Path:
    """Write uint8 frames (T, H, W, C) with C in {1, 3} (or (T, H, W)) atomically.

    ``.gif`` is written with Pillow (note: Pillow merges identical consecutive frames into
    one longer frame). Other suffixes (.mp4, .avi, .webm, .mkv, .mov) are encoded with PyAV
    as yuv420p, which needs even H and W.
    """
    import av

    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"frames must be uint8 (T, H, W, C) with C in (1, 3), got "
                         f"{frames.dtype} {frames.shape}")
    if frames.shape[0] < 1 or fps <= 0:
        raise ValueError(f"need at least one frame and fps > 0, got {frames.shape[0]}, {fps}")
    suffix = path.suffix.lower()
    if suffix != ".gif" and suffix not in _CONTAINERS:
        raise ValueError(f"unsupported video suffix {suffix!r}; use .gif or one of "
                         f"{sorted(_CONTAINERS)}")
    _, h, w, c = frames.shape
    if suffix != ".gif" and (h % 2 or w % 2):
        raise ValueError(f"{path.name}: yuv420p video needs even height and width, got {h}x{w}")
    with atomic_path(path) as tmp:
        if suffix == ".gif":
            from PIL import Image

            mode = "L" if c == 1 else "RGB"
            images = [Image.fromarray(f[..., 0] if c == 1 else f, mode) for f in frames]
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                           duration=max(int(round(1000 / fps)), 10), loop=0)
        else:
            rgb = np.repeat(frames, 3, axis=-1) if c == 1 else frames
            codec = _pick_codec(suffix)
            with av.open(str(tmp), mode="w", format=_CONTAINERS[suffix]) as container:
                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                if codec == "libx264":
                    stream.options = {"crf": "12", "preset": "veryfast"}
                else:  # high bit rate: small test clips must survive the round trip
                    stream.bit_rate = max(int(8 * h * w * fps), 200_000)
                for f in rgb:
                    container.mux(stream.encode(av.VideoFrame.from_ndarray(
                        np.ascontiguousarray(f), format="rgb24")))
                container.mux(stream.encode(None))
    return path


def frame_to_rgb(frame: Any, size: int | None = None) -> np.ndarray:
    """One decoded PyAV frame as RGB uint8 (H, W, 3); with ``size``, the shorter side is resized
    to ``size`` (area filter) and the centre cropped to (size, size)."""
    if size is None:
        return frame.to_ndarray(format="rgb24")
    fh, fw = frame.height, frame.width
    scale = size / min(fh, fw)
    nh, nw = max(size, round(fh * scale)), max(size, round(fw * scale))
    img = frame.reformat(width=nw, height=nh, format="rgb24", interpolation="AREA").to_ndarray()
    top, left = (nh - size) // 2, (nw - size) // 2
    return img[top : top + size, left : left + size]


def decode_video(path: Path, size: int | None = None) -> np.ndarray:
    """Decode all frames as RGB uint8 (T, H, W, 3); with ``size``, resized and cropped by
    :func:`frame_to_rgb`."""
    import av

    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]  # IndexError when there is no video stream
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frames.append(frame_to_rgb(frame, size))
    if not frames:
        raise ValueError("no decodable video frames")
    return np.stack(frames)


def rgb_to_channels(rgb: np.ndarray, channels: int) -> np.ndarray:
    """(..., 3) RGB uint8 as ``channels`` = 3 (unchanged) or 1 (BT.601 luma, rounded), as training decodes."""
    if channels == 3:
        return rgb
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]


def read_video(path: str | os.PathLike[str]) -> np.ndarray:
    """All frames of a video file as uint8 (T, H, W, 3) RGB."""
    return decode_video(Path(path))


# --------------------------------------------------------------------------- sample outputs

VIDEO_OUTPUTS = (".gif", ".mp4", ".npy", ".png")


def save_npy(path: str | os.PathLike[str], array: Any) -> Path:
    """``np.save`` atomically: a failed write leaves nothing behind, neither ``path`` nor a
    temporary file, and raises :class:`~vdm.backends.files.WriteError`. The array is serialised
    in memory first: NumPy's direct file writer reports a short write (full disk, file-size limit)
    without its cause."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array))
    atomic_write_bytes(path, buf.getbuffer())
    return Path(path)


def save_mp4_grid(path: str | os.PathLike[str], videos: Any, *, fps: float = 8.0) -> Path:
    """The clips tiled as in :func:`save_gif`, encoded as a video (even sides for yuv420p)."""
    u8 = to_uint8(videos)
    grid = grid_frames(u8, None, auto_scale(u8.shape[2]), 2)
    t, h, w, c = grid.shape
    even = np.full((t, h + h % 2, w + w % 2, c), 255, np.uint8)
    even[:, :h, :w] = grid
    return write_video(path, even, fps=fps)


def sheet_path(out: Path) -> Path:
    """The contact sheet written beside ``out`` (``out`` itself when it is a PNG)."""
    return out if out.suffix.lower() == ".png" else out.with_name(out.stem + "_sheet.png")


_VIDEO_WRITERS = {
    ".gif": lambda path, videos, fps: save_gif(path, videos, fps=fps),
    ".mp4": lambda path, videos, fps: save_mp4_grid(path, videos, fps=fps),
    ".npy": lambda path, videos, fps: save_npy(path, np.asarray(videos, np.float32)),
    ".png": lambda path, videos, fps: save_contact_sheet(path, videos),
}


def write_videos(videos: Any, out: Path, *, fps: float = 8.0, also: Sequence[str] = (),
                 marked: Sequence[int] = ()) -> list[Path]:
    """Write ``videos`` (N, C, T, H, W) in [-1, 1] to ``out`` (a suffix of :data:`VIDEO_OUTPUTS`),
    to ``out`` with each suffix of ``also``, and the contact sheet beside ``out`` (the frames
    ``marked`` outlined: the given frames of a conditional sample). Returns the paths."""
    written = []
    for path in dict.fromkeys([out, *(out.with_suffix(s) for s in also)]):
        suffix = path.suffix.lower()
        if suffix not in _VIDEO_WRITERS:
            raise ValueError(f"unsupported output {path.name}; use one of {', '.join(VIDEO_OUTPUTS)}")
        if suffix == ".png":
            save_contact_sheet(path, videos, marked=marked)
        else:
            _VIDEO_WRITERS[suffix](path, videos, fps)
        written.append(path)
    sheet = sheet_path(out)
    if sheet not in written:
        save_contact_sheet(sheet, videos, marked=marked)
        written.append(sheet)
    return written
