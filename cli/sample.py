"""`vdm sample`: sample videos from an exported ONNX model (ONNX Runtime) or a checkpoint (PyTorch).

Both backends follow spec 7.6 with the same explicit noise: for a given --seed, each batch of
samples starts from ``np.random.default_rng(seed)`` draws shaped (N + 1, B, C, T, H, W), so
``--backend ort`` and ``--backend torch`` give the same videos up to float32 rounding.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

OUT_SUFFIXES = (".gif", ".mp4", ".npy", ".png")


class SampleError(ValueError):
    """Bad input for sampling; the message is one line for the user."""


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@dataclass
class Plan:
    """What will be sampled, resolved from the options and the model."""

    num: int
    channels: int
    frames: int
    size: int
    labels: Any  # np.ndarray (num,) | None
    guidance: float | None
    timesteps: Any  # np.ndarray


def sheet_path(out: Path) -> Path:
    """The contact sheet written beside ``out`` (``out`` itself when it is a PNG)."""
    return out if out.suffix.lower() == ".png" else out.with_name(out.stem + "_sheet.png")


def _grid(videos: Any) -> Any:
    """(N, C, T, H, W) in [-1, 1] -> uint8 (T, gridH, gridW, C) with even sides (for yuv420p)."""
    import numpy as np

    u8 = np.clip(np.round((np.asarray(videos, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    u8 = u8.transpose(0, 2, 3, 4, 1)  # (N, T, H, W, C)
    n, t, h, w, c = u8.shape
    scale = max(1, 96 // max(h, w))
    u8 = u8.repeat(scale, axis=2).repeat(scale, axis=3)
    h, w, pad = h * scale, w * scale, 2
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    gh, gw = rows * (h + pad) + pad, cols * (w + pad) + pad
    grid = np.full((t, gh + gh % 2, gw + gw % 2, c), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, cols)
        grid[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = u8[i]
    return grid


def write_outputs(videos: Any, out: Path, *, fps: float = 8.0, also: tuple[str, ...] = ()) -> list[Path]:
    """Write ``videos`` (N, C, T, H, W) in [-1, 1] to ``out`` (.gif, .mp4, .npy or .png) plus the
    contact sheet beside it, and to ``out`` with each suffix of ``also``. Returns the paths."""
    import numpy as np
    from vdm.backends.torch.previews import save_contact_sheet, save_gif
    from vdm.backends.torch.video_data import write_video

    written = []
    for path in dict.fromkeys([out, *(out.with_suffix(s) for s in also)]):
        suffix = path.suffix.lower()
        if suffix == ".gif":
            save_gif(path, videos, fps=fps)
        elif suffix == ".mp4":
            write_video(path, _grid(videos), fps=fps)
        elif suffix == ".npy":
            tmp = path.with_name(f".{path.name}.tmp.npy")
            np.save(tmp, np.asarray(videos, np.float32))
            tmp.replace(path)
        elif suffix != ".png":
            raise SampleError(f"unsupported output {path.name}; use one of {', '.join(OUT_SUFFIXES)}")
        written.append(path)
    sheet = sheet_path(out)
    save_contact_sheet(sheet, videos)
    if sheet not in written:
        written.append(sheet)
    return written


def plan_sampling(*, num: int, channels: int, frames: int, size: int, num_classes: int, klass: int | None,
                  guidance: float | None, T: int, steps: int, spacing: str) -> Plan:
    """Validate the options against the model and resolve labels and timesteps."""
    import numpy as np

    import vdm_ref

    if klass is not None:
        if num_classes == 0:
            raise SampleError("--class given but the model is unconditional")
        if not 0 <= klass < num_classes:
            raise SampleError(f"--class must lie in [0, {num_classes - 1}] for this model, got {klass}")
    if guidance is not None and num_classes == 0:
        raise SampleError("--guidance needs a class-conditional model; this model is unconditional")
    if not 1 <= steps <= T:
        raise SampleError(f"--steps must lie in [1, {T}] (the schedule has T={T}), got {steps}")
    labels = None
    if num_classes:
        labels = np.full(num, klass, np.int64) if klass is not None else np.arange(num, dtype=np.int64) % num_classes
    timesteps = vdm_ref.inference_timesteps(T, steps, spacing)
    return Plan(num, channels, frames, size, labels, guidance, timesteps)


def batch_noise(seed: int, plan: Plan, batch_size: int) -> Any:
    """Yield (start, noise (N + 1, b, C, T, H, W) float32) per batch, from one seeded stream."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = len(plan.timesteps)
    for start in range(0, plan.num, batch_size):
        b = min(batch_size, plan.num - start)
        yield start, rng.standard_normal((n + 1, b, plan.channels, plan.frames, plan.size, plan.size)).astype(
            np.float32)


def sample_torch(model: Any, meta: dict[str, Any], plan: Plan, noise: Any, labels: Any, *, sampler: str, eta: float,
                 clip: float | None, threshold: float | None, device: str = "cpu",
                 progress: Callable[[int, int], None] | None = None) -> Any:
    """One batch with the PyTorch backend: float32 network, sampler arithmetic in float64."""
    import numpy as np
    import torch
    from vdm.backends.torch import ops

    sm = meta["schedule"]
    dev = torch.device(device)
    sched = ops.make_schedule(sm["name"], int(sm["T"]), zero_terminal_snr=bool(sm.get("zero_terminal_snr", False)),
                              device=dev, dtype=torch.float64, **dict(sm.get("params") or {}))
    cfg = model.config
    prediction = meta.get("prediction", cfg.prediction)
    variance = meta.get("variance") or ("learned_range" if cfg.learn_sigma else "fixed_small")
    y = None if labels is None else torch.as_tensor(labels, dtype=torch.long, device=dev)
    w = plan.guidance

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.to(dev).float()
        xf = x.float()
        if y is None or w is None or w == 1.0:
            return model(xf, tt, y).double()
        null = torch.full_like(y, cfg.num_classes)
        cond, uncond = model(torch.cat([xf, xf]), torch.cat([tt, tt]), torch.cat([y, null])).double().chunk(2)
        return ops.classifier_free_guidance(cond, uncond, w, cfg.in_channels)

    with torch.no_grad():
        x = ops.sample(fn, sched, [int(v) for v in plan.timesteps], noise.shape[1:],
                       torch.from_numpy(np.asarray(noise)).to(dev, torch.float64), sampler=sampler,
                       prediction=prediction, variance=variance, eta=eta, clip=clip, threshold=threshold,
                       progress=progress)
    return x.float().cpu().numpy()


def register(app: typer.Typer) -> None:
    @app.command("sample")
    def sample(
        model: Annotated[Path, typer.Option("--model", help="Exported model.onnx (--backend ort) or a training "
                                                            "checkpoint .safetensors (--backend torch).")],
        out: Annotated[Path, typer.Option("--out", help="samples.gif, .mp4, .npy or .png; a contact sheet PNG "
                                                        "with every frame is always written beside it.")
                       ] = Path("samples.gif"),
        backend: Annotated[str, typer.Option(help="ort (ONNX Runtime) or torch.")] = "ort",
        sampler: Annotated[str, typer.Option(help="ddim or ddpm.")] = "ddim",
        steps: Annotated[int, typer.Option(min=1, help="Sampling steps.")] = 50,
        eta: Annotated[float, typer.Option(min=0.0, max=1.0, help="DDIM eta (0 = deterministic).")] = 0.0,
        spacing: Annotated[str, typer.Option(help="Timestep spacing: trailing, leading or linspace.")] = "trailing",
        guidance: Annotated[float | None, typer.Option(
            help="Classifier-free guidance scale w (conditional models; 1 = plain conditional).")] = None,
        klass: Annotated[int | None, typer.Option("--class", help="Class of every sample (conditional models; "
                                                                  "default: cycle through the classes).")] = None,
        num: Annotated[int, typer.Option(min=1, help="Number of samples.")] = 4,
        seed: Annotated[int, typer.Option(help="Seed of the sampling noise.")] = 0,
        device: Annotated[str, typer.Option(help="cpu, cuda or tensorrt (ort only).")] = "cpu",
        allow_fallback: Annotated[bool, typer.Option("--allow-fallback",
                                                     help="Run on CPU if the device is unavailable (with a "
                                                          "warning) instead of failing.")] = False,
        frames: Annotated[int | None, typer.Option(min=1, help="Frames per sample (default: the model's).")] = None,
        size: Annotated[int | None, typer.Option(min=1, help="Height = width (default: the model's).")] = None,
        batch_size: Annotated[int, typer.Option(min=1, help="Samples per batch.")] = 8,
        clip: Annotated[float, typer.Option(min=0.0, help="Clip predicted x0 to [-clip, clip] (0 = off).")] = 1.0,
        threshold: Annotated[float | None, typer.Option(
            help="Dynamic thresholding quantile of predicted x0 (e.g. 0.995; off by default).")] = None,
        raw: Annotated[bool, typer.Option("--raw", help="torch: use the raw weights, not the EMA ones.")] = False,
        fps: Annotated[float, typer.Option(min=0.1, help="Frame rate of .gif/.mp4 output.")] = 8.0,
    ) -> None:
        """Sample videos with DDIM or DDPM; the network and the sampler update run on the chosen backend.

        Exit status: 0 done, 2 bad input (missing/corrupt/foreign model, impossible class, frame count or
        size, guidance on an unconditional model, unavailable device without --allow-fallback).
        """
        try:
            _run(model=model, out=out, backend=backend, sampler=sampler, steps=steps, eta=eta, spacing=spacing,
                 guidance=guidance, klass=klass, num=num, seed=seed, device=device, allow_fallback=allow_fallback,
                 frames=frames, size=size, batch_size=batch_size, clip=clip or None, threshold=threshold, raw=raw,
                 fps=fps)
        except SampleError as exc:
            _fail(str(exc))


def _run(*, model: Path, out: Path, backend: str, sampler: str, steps: int, eta: float, spacing: str,
         guidance: float | None, klass: int | None, num: int, seed: int, device: str, allow_fallback: bool,
         frames: int | None, size: int | None, batch_size: int, clip: float | None, threshold: float | None,
         raw: bool, fps: float) -> list[Path]:
    import numpy as np
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    import vdm_ref

    if backend not in ("ort", "torch"):
        raise SampleError(f"--backend must be ort or torch, got {backend!r}")
    if sampler not in vdm_ref.SAMPLERS:
        raise SampleError(f"--sampler must be ddim or ddpm, got {sampler!r}")
    if spacing not in vdm_ref.SPACINGS:
        raise SampleError(f"--spacing must be one of {', '.join(vdm_ref.SPACINGS)}, got {spacing!r}")
    if device not in ("cpu", "cuda", "tensorrt"):
        raise SampleError(f"--device must be cpu, cuda or tensorrt, got {device!r}")
    if out.suffix.lower() not in OUT_SUFFIXES:
        raise SampleError(f"--out must end in {', '.join(OUT_SUFFIXES)}, got {out.name}")
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise SampleError(f"--threshold must lie in (0, 1], got {threshold}")
    err = Console(stderr=True, soft_wrap=True)  # one message, one line (also when piped)

    def warn(line: str) -> None:
        err.print(line, style="yellow", highlight=False)

    t_load = time.perf_counter()
    if backend == "ort":
        run_batch, desc, dims = _load_ort(model, device, allow_fallback, warn, batch_size)
    else:
        run_batch, desc, dims = _load_torch(model, device, allow_fallback, raw, warn)
    load_s = time.perf_counter() - t_load
    ch, fr_default, size_default, check_shape, num_classes, T = dims
    fr = frames or fr_default
    sz = size or size_default
    try:
        check_shape(min(batch_size, num), fr, sz)
    except ValueError as exc:
        raise SampleError(str(exc)) from None
    plan = plan_sampling(num=num, channels=ch, frames=fr, size=sz, num_classes=num_classes, klass=klass,
                         guidance=guidance, T=T, steps=steps, spacing=spacing)
    err.print(f"{desc}: {num} x ({ch}, {fr}, {sz}, {sz}), {sampler} {steps} steps ({spacing}), seed {seed}"
              + (f", guidance {guidance}" if guidance is not None else ""), highlight=False)
    videos = []
    t0 = time.perf_counter()
    n_batches = math.ceil(num / batch_size)
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False) as bar:
        task = bar.add_task("sampling", total=n_batches * len(plan.timesteps))
        for k, (start, noise) in enumerate(batch_noise(seed, plan, batch_size)):
            labels = None if plan.labels is None else plan.labels[start:start + noise.shape[1]]
            done = k * len(plan.timesteps)

            def progress(i: int, _n: int, done: int = done) -> None:
                bar.update(task, completed=done + i)

            try:
                x = run_batch(plan, noise, labels, sampler=sampler, eta=eta, clip=clip, threshold=threshold,
                              progress=progress)
            except ValueError as exc:
                raise SampleError(str(exc)) from None
            videos.append(np.clip(x, -1.0, 1.0))
    sample_s = time.perf_counter() - t0
    result = np.concatenate(videos).astype(np.float32)
    try:
        written = write_outputs(result, out, fps=fps)
    except OSError as exc:
        raise SampleError(f"cannot write {out}: {exc.strerror or exc}") from None
    err.print(f"sampled in {sample_s:.1f} s ({sample_s / (n_batches * len(plan.timesteps)) * 1e3:.0f} ms/step, "
              f"model load {load_s:.1f} s)", highlight=False)
    for path in written:
        typer.echo(f"wrote {path}")
    return written


def _load_ort(model: Path, device: str, allow_fallback: bool, warn: Callable[[str], None], batch_size: int) -> tuple:
    from vdm.backends.ort.providers import ProviderUnavailable
    from vdm.backends.ort.sampler import OrtSampler
    from vdm.backends.ort.session import ModelFileError, OrtDenoiser

    if model.suffix.lower() == ".safetensors":
        raise SampleError(f"--backend ort needs an exported ONNX model, got the checkpoint {model}; run "
                          f"`vdm export --ckpt {model} model.onnx` or use --backend torch")
    try:
        # TensorRT profiles cover up to 2 x batch (guidance runs [cond; uncond] in one call).
        den = OrtDenoiser(model, device=device, allow_fallback=allow_fallback, warn=warn, max_batch=2 * batch_size)
    except (ModelFileError, ProviderUnavailable) as exc:
        raise SampleError(str(exc)) from None
    smp = OrtSampler(den)
    info = den.info

    def run_batch(plan: Plan, noise: Any, labels: Any, **kw: Any) -> Any:
        return smp.sample(plan.timesteps, noise.shape[1:], noise, labels=labels, guidance=plan.guidance, **kw)

    dims = (info.in_channels, info.frames.default, info.size.default, den.check_shape, info.num_classes,
            len(info.abar))
    return run_batch, f"onnxruntime {den.choice.provider_name} ({model.name})", dims


def _load_torch(model: Path, device: str, allow_fallback: bool, raw: bool, warn: Callable[[str], None]) -> tuple:
    import torch
    from vdm.backends.torch.checkpoint import CheckpointError, load_model

    if model.suffix.lower() == ".onnx":
        raise SampleError(f"--backend torch needs a training checkpoint (.safetensors), got {model}; "
                          "use --backend ort for ONNX models")
    if device == "tensorrt":
        raise SampleError("--device tensorrt is for --backend ort")
    if device == "cuda" and not torch.cuda.is_available():
        if not allow_fallback:
            raise SampleError("device 'cuda' unavailable: torch sees no CUDA GPU (use --allow-fallback to run on CPU)")
        warn("warning: device 'cuda' unavailable (torch sees no CUDA GPU); falling back to CPU")
        device = "cpu"
    try:
        net, meta = load_model(model, ema=not raw, device=device)
    except CheckpointError as exc:
        raise SampleError(str(exc)) from None
    cfg = net.config
    data = meta.get("data") or {}
    div = cfg.size_divisor

    def check_shape(_batch: int, frames: int, size: int) -> None:
        if size % div:
            raise ValueError(f"this model takes sizes that are multiples of {div}, got {size}")

    def run_batch(plan: Plan, noise: Any, labels: Any, **kw: Any) -> Any:
        return sample_torch(net, meta, plan, noise, labels, device=device, **kw)

    dims = (cfg.in_channels, int(data.get("frames") or cfg.frames), int(data.get("size") or cfg.image_size),
            check_shape, cfg.num_classes, int(meta["schedule"]["T"]))
    return run_batch, f"torch {device} ({model.name})", dims
