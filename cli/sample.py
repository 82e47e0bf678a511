"""`vdm sample`: sample videos from an exported ONNX model (ONNX Runtime) or a checkpoint (PyTorch).

The sampling itself is vdm.backends.sampling, shared with `vdm eval`, the training previews and
the quickstart: one seed and one set of options give the same clips from every command.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from vdm.backends.files import WriteError
from vdm.backends.sampling import BACKENDS, CONDITION_METHODS, DEVICES, SamplingError, SamplingOptions

import vdm_ref

from . import options as opts
from .errors import CANNOT_WRITE, fail, require_extras


def register(app: typer.Typer) -> None:
    @app.command("sample")
    def sample(
        model: Annotated[Path, typer.Option("--model", help="Exported model.onnx (--backend ort) or a training "
                                                            "checkpoint .safetensors (--backend torch).")],
        out: Annotated[Path, typer.Option("--out", help="samples.gif, .mp4, .npy or .png; a contact sheet PNG "
                                                        "with every frame is always written beside it.")
                       ] = Path("samples.gif"),
        backend: Annotated[str, typer.Option(help=f"One of {', '.join(BACKENDS)} (ort = ONNX Runtime).")] = "ort",
        sampler: opts.Sampler = None,
        steps: Annotated[int, typer.Option(min=1, help="Sampling steps.")] = 50,
        eta: opts.Eta = None,
        shift: opts.Shift = None,
        karras: opts.Karras = None,
        final_sigma: opts.FinalSigma = "zero",
        spacing: opts.Spacing = "trailing",
        guidance: opts.Guidance = None,
        klass: Annotated[int | None, typer.Option("--class", help="Class of every sample (conditional models; "
                                                                  "default: cycle through the classes).")] = None,
        num: Annotated[int, typer.Option(min=1, help="Number of samples.")] = 4,
        seed: Annotated[int, typer.Option(help="Seed of the sampling noise.")] = 0,
        device: Annotated[str, typer.Option(help=f"{', '.join(DEVICES['ort'])}; torch: {', '.join(DEVICES['torch'])}."
                                            )] = "cpu",
        allow_fallback: Annotated[bool, typer.Option("--allow-fallback",
                                                     help="Run on CPU if the device is unavailable (with a "
                                                          "warning) instead of failing.")] = False,
        frames: Annotated[int | None, typer.Option(min=1, help="Frames per sample (default: the model's).")] = None,
        size: Annotated[int | None, typer.Option(min=1, help="Height = width (default: the model's).")] = None,
        batch_size: Annotated[int, typer.Option(min=1, help="Samples per batch.")] = 8,
        clip: opts.Clip = 1.0,
        threshold: opts.Threshold = None,
        raw: Annotated[bool, typer.Option("--raw", help="torch: use the raw weights, not the EMA ones.")] = False,
        fps: Annotated[float, typer.Option(min=0.1, help="Frame rate of .gif/.mp4 output.")] = 8.0,
        extend: Annotated[Path | None, typer.Option(
            "--extend", help="Continue this clip (.mp4/.gif/... or .npy (C, T, H, W) in [-1, 1]) to --frames frames, "
                             "window by window (spec 18).")] = None,
        interpolate: Annotated[Path | None, typer.Option(
            "--interpolate", help="Generate --factor - 1 frames between consecutive frames of this clip.")] = None,
        factor: Annotated[int, typer.Option(min=2, help="--interpolate: temporal upsampling factor.")] = 2,
        overlap: Annotated[int | None, typer.Option(
            min=1, help="--extend: frames each window observes (default: half the model's window).")] = None,
        condition: Annotated[str | None, typer.Option(
            help=f"--extend/--interpolate: {', '.join(CONDITION_METHODS)} (spec 18.2, 18.3, 18.8; default: frames for "
                 "a model trained with --given-frames, else reconstruction on torch, replacement on ort).")] = None,
        guidance_weight: Annotated[float, typer.Option(
            min=0.0, help="Reconstruction guidance weight w_r (spec 18.3).")] = 5.0,
    ) -> None:
        """Sample videos; the network and the sampler update run on the chosen backend.

        Exit status: 0 done, 2 bad input (missing/corrupt/foreign model, a checkpoint with NaN or infinite
        weights, impossible class, frame count or size, guidance on an unconditional model, unavailable device
        without --allow-fallback), 3 --out cannot be written (checked before sampling; its folder is created
        if missing).
        """
        if backend in BACKENDS:  # each backend's name is the name of its extra; an unknown one fails in _run
            require_extras(f"vdm sample --backend {backend}", backend)
        try:
            _run(model=model, out=out, backend=backend, sampler=sampler, steps=steps, eta=eta, spacing=spacing,
                 shift=shift, karras=karras, final_sigma=final_sigma,
                 guidance=guidance, klass=klass, num=num, seed=seed, device=device, allow_fallback=allow_fallback,
                 frames=frames, size=size, batch_size=batch_size, clip=clip or None, threshold=threshold, raw=raw,
                 fps=fps, task=_Task(extend, interpolate, factor, overlap, condition, guidance_weight))
        except SamplingError as exc:
            fail(str(exc))
        except WriteError as exc:
            fail(str(exc), CANNOT_WRITE)


@dataclass(frozen=True)
class _Task:
    """--extend / --interpolate and their options (backends/conditional.py)."""

    extend: Path | None = None
    interpolate: Path | None = None
    factor: int = 2
    overlap: int | None = None
    condition: str | None = None
    weight: float = 5.0

    @property
    def clip(self) -> Path | None:
        return self.extend or self.interpolate

    def check(self) -> None:
        if self.extend and self.interpolate:
            raise SamplingError("give --extend or --interpolate, not both")
        if self.condition is not None and self.clip is None:
            raise SamplingError("--condition applies to --extend and --interpolate")
        if self.condition is not None and self.condition not in CONDITION_METHODS:
            raise SamplingError(f"unknown --condition {self.condition!r}; choose one of {', '.join(CONDITION_METHODS)}")


def _run(*, model: Path, out: Path, backend: str, sampler: str | None, steps: int, eta: float | None, spacing: str,
         shift: float | None, karras: bool | None, final_sigma: str,
         guidance: float | None, klass: int | None, num: int, seed: int, device: str, allow_fallback: bool,
         frames: int | None, size: int | None, batch_size: int, clip: float | None, threshold: float | None,
         raw: bool, fps: float, task: _Task | None = None) -> list[Path]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from vdm.backends import media, sampling
    from vdm.backends.files import check_writable, remove_stale_temp_files_of

    if out.suffix.lower() not in media.VIDEO_OUTPUTS:
        raise SamplingError(f"--out must end in {', '.join(media.VIDEO_OUTPUTS)}, got {out.name}")
    task = task or _Task()
    task.check()
    long_video = task.clip is not None
    if long_video and sampler in vdm_ref.SAMPLERS:
        raise SamplingError(f"--extend/--interpolate runs on the solvers ({', '.join(vdm_ref.SOLVERS)}), not "
                            f"{sampler}; euler is DDIM with eta 0 (spec 17.3)")
    # --frames is the window of each call with --extend/--interpolate, the model's own; the video's length otherwise.
    # Until the model is loaded, an unset sampler checks as a solver; the process's default replaces it below.
    options = SamplingOptions(sampler=sampler or sampling.CONDITIONAL_DEFAULT_SAMPLER, steps=steps, spacing=spacing,
                              eta=eta, shift=shift, karras=karras, final=final_sigma, clip=clip, threshold=threshold,
                              guidance=guidance, klass=klass, batch_size=batch_size,
                              frames=None if long_video else frames, size=size)
    options.check()
    outputs = (out, media.sheet_path(out))
    for path in outputs:  # before the model loads and samples: an unwritable --out fails at once
        check_writable(path)
    err = Console(stderr=True, soft_wrap=True)  # one message, one line (also when piped)

    def warn(line: str) -> None:
        err.print(line, style="yellow", highlight=False)

    t_load = time.perf_counter()
    loaded = sampling.load_model(model, backend, device=device, allow_fallback=allow_fallback, raw=raw,
                                 max_batch=2 * batch_size, warn=warn)
    load_s = time.perf_counter() - t_load
    if sampler is None:  # the default per process (sampling.DEFAULT_SAMPLERS); a solver for long videos
        sampler = (sampling.CONDITIONAL_DEFAULT_SAMPLER if long_video
                   else sampling.DEFAULT_SAMPLERS[loaded.process.family])
        options = dataclasses.replace(options, sampler=sampler)
    if long_video:
        return _run_long(loaded, task, options, out, outputs, num=num, seed=seed, frames=frames, fps=fps,
                         backend=backend, err=err, load_s=load_s)
    plan = sampling.plan_sampling(loaded, num, options)
    c, t, h, w = plan.shape
    err.print(f"{loaded.description}: {num} x ({c}, {t}, {h}, {w}), {sampler} {steps} steps ({spacing}), seed {seed}"
              + (f", guidance {guidance}" if guidance is not None else ""), highlight=False)
    t0 = time.perf_counter()
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False) as bar:
        task = bar.add_task("sampling", total=num * plan.n_steps)
        videos = sampling.sample_videos(loaded, num, seed, options,
                                        progress=lambda done, _total: bar.update(task, completed=done))
    sample_s = time.perf_counter() - t0
    remove_stale_temp_files_of(*outputs)  # what a run killed while writing them left behind
    written = media.write_videos(videos, out, fps=fps)
    n_batches = -(-num // batch_size)
    err.print(f"sampled in {sample_s:.1f} s ({sample_s / (n_batches * steps) * 1e3:.0f} ms/step, "
              f"model load {load_s:.1f} s)", highlight=False)
    for path in written:
        typer.echo(f"wrote {path}")
    return written


def _run_long(loaded: Any, task: _Task, options: SamplingOptions, out: Path, outputs: tuple[Path, ...], *, num: int,
              seed: int, frames: int | None, fps: float, backend: str, err: Any, load_s: float) -> list[Path]:
    """--extend / --interpolate: read the clip as training decodes it, then sample window by window."""
    from vdm.backends import conditional, media, sampling
    from vdm.backends.files import remove_stale_temp_files_of

    method = task.condition or sampling.default_conditioning(loaded)
    sampling.check_conditioning(loaded, method)  # before the clip is read or anything printed
    clip = conditional.read_clip(task.clip, loaded.channels, options.size or loaded.size)
    t0 = time.perf_counter()
    what = f"{method}" + (f" w_r {task.weight}" if method == "reconstruction" else "")
    window = loaded.frames
    if task.extend is not None:  # impossible plans fail here, before anything is printed
        total = frames or clip.shape[1] + loaded.frames
        overlap = window // 2 if task.overlap is None else task.overlap
        conditional.extension_windows(clip.shape[1], total, window, overlap)
    else:
        conditional.interpolation_windows(clip.shape[1], task.factor, window)
    if task.extend is not None:
        err.print(f"{loaded.description}: extending {task.clip.name} ({clip.shape[1]} frames) to {total} frames, "
                  f"{num} sample(s), {options.sampler} {options.steps} steps, {what}, seed {seed}", highlight=False)
        result = conditional.extend(loaded, clip, total, num=num, overlap=task.overlap, options=options, seed=seed,
                                    method=method, weight=task.weight)
    else:
        err.print(f"{loaded.description}: interpolating {task.clip.name} ({clip.shape[1]} frames) by {task.factor}, "
                  f"{num} sample(s), {options.sampler} {options.steps} steps, {what}, seed {seed}", highlight=False)
        result = conditional.interpolate(loaded, clip, task.factor, num=num, options=options, seed=seed,
                                         method=method, weight=task.weight)
    remove_stale_temp_files_of(*outputs)
    written = media.write_videos(result.videos, out, fps=fps, marked=result.given)
    err.print(f"sampled {result.videos.shape[2]} frames in {time.perf_counter() - t0:.1f} s "
              f"(model load {load_s:.1f} s); the given frames are outlined on the contact sheet", highlight=False)
    for path in written:
        typer.echo(f"wrote {path}")
    return written

