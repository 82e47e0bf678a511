"""`vdm eval`: sample a checkpoint (or take given samples) and score them beside real clips and noise."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from vdm.backends.files import WriteError, check_writable, remove_stale_temp_files_of
from vdm.backends.sampling import SamplingError, SamplingOptions

from . import options as opts
from .errors import CANNOT_WRITE, fail, require_extras

# Which direction is better, for the table's header.
_METRIC_HINTS = {
    "count_consistency": "higher is better",
    "velocity_residual": "lower is better",
    "coherent_fraction": "higher is better",
    "frechet_to_real": "lower is better",
    "stats_gap": "lower is better",
}
_REAL_VIDEO_HINT = "closer to real is better"  # natural-video statistics (means, contrast, frame_diff, lag1_corr)




def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_(
        ckpt: Annotated[Path | None, typer.Option(
            "--ckpt", help="Checkpoint (.safetensors) to sample from with its EMA weights.")] = None,
        samples: Annotated[Path | None, typer.Option(
            "--samples", help="Score these clips instead of sampling: .npy (or .npz) of shape (N, C, T, H, W) "
                              "in [-1, 1]. With --ckpt too, its data options shape the real clips.")] = None,
        num: Annotated[int, typer.Option("--num", min=2, help="Clips to sample (and real/noise clips).")] = 64,
        steps: Annotated[int, typer.Option("--steps", min=1, help="Sampler steps.")] = 20,
        sampler: opts.Sampler = None,
        spacing: opts.Spacing = "trailing",
        eta: opts.Eta = None,
        shift: opts.Shift = None,
        karras: opts.Karras = None,
        final_sigma: opts.FinalSigma = "zero",
        clip: opts.Clip = 1.0,
        threshold: opts.Threshold = None,
        guidance: opts.Guidance = None,
        seed: Annotated[int, typer.Option(help="Seed of the sampling noise, the real held-out clips and the noise "
                                               "baseline.")] = 0,
        batch_size: Annotated[int, typer.Option(min=1, help="Clips per sampling batch.")] = 16,
        device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
        threads: Annotated[int, typer.Option(
            min=0, help="torch CPU threads; 0 = torch default (1 is often fastest on a busy 2-core machine).")] = 0,
        raw: Annotated[bool, typer.Option("--raw", help="Use the raw weights instead of the EMA weights.")] = False,
        features: Annotated[Path | None, typer.Option(
            "--features", help="Your feature network for a Frechet distance (FVD with an I3D): TorchScript .pt or "
                               "ONNX .onnx mapping (N, C, T, H, W) in [-1, 1] to (N, D). Never downloaded.")] = None,
        num_objects: Annotated[int | None, typer.Option(
            help="Objects per real clip (default: from the checkpoint, else 1).")] = None,
        report: Annotated[Path | None, typer.Option(
            "--report", help="Write the JSON report here (atomically).")] = None,
        save_samples: Annotated[Path | None, typer.Option(
            "--save-samples", help="Also save the sampled clips: .npy array, or .gif grid preview.")] = None,
        cache: Annotated[bool, typer.Option(
            "--cache/--no-cache", help="Real-video checkpoints: cache the decoded held-out files.")] = True,
        cache_dir: Annotated[Path | None, typer.Option(
            "--cache-dir", help="Real-video checkpoints: cache folder (default: the training run's, else "
                                "CKPT_FOLDER/cache).")] = None,
    ) -> None:
        """Score samples beside real held-out clips and clipped Gaussian noise: moving-shapes structure metrics, or
        natural-video statistics for a checkpoint trained on real video (clips of files it never trained on).

        Exit status: 0 done, 2 bad input (missing/corrupt checkpoint, samples or feature file, a checkpoint
        with NaN or infinite weights), 3 --report or --save-samples cannot be written (checked before sampling;
        their folders are created if missing).
        """
        require_extras("vdm eval", "torch")
        if features is not None and features.suffix.lower() == ".onnx":
            require_extras("vdm eval --features FILE.onnx", "ort")
        from rich.console import Console
        from rich.table import Table
        from vdm.backends.torch.data.video import report_warnings
        from vdm.backends.torch.devices import resolve_device
        from vdm.backends.torch.evaluation import EvalError, evaluate, write_report
        from vdm.backends.torch.training.checkpoint import CheckpointError

        if ckpt is None and samples is None:
            fail("give --ckpt CKPT (to sample from it) or --samples FILE (to score given clips)")
        if sampler is None:
            sampler = _default_sampler(ckpt)
        options = SamplingOptions(sampler=sampler, steps=steps, spacing=spacing, eta=eta, shift=shift, karras=karras,
                                  final=final_sigma, clip=clip or None,
                                  threshold=threshold, guidance=guidance, batch_size=batch_size)
        try:
            options.check()
        except SamplingError as exc:
            fail(str(exc))
        outputs = [p for p in (report, save_samples) if p is not None]
        try:  # before sampling: a run of minutes must not end on an unwritable path
            for path in outputs:
                check_writable(path)
        except WriteError as exc:
            fail(str(exc), CANNOT_WRITE)
        err = Console(stderr=True)
        if threads:
            import torch

            torch.set_num_threads(threads)
        try:
            dev = resolve_device(device)
            real_video = {"cache": cache, "cache_dir": cache_dir}
            with report_warnings(lambda m: typer.echo(m, err=True)):  # unusable held-out files, one line each
                if samples is None:
                    with err.status(f"sampling {num} clips ({sampler}, {steps} steps) ..."):
                        rep = evaluate(ckpt=ckpt, num=num, options=options, seed=seed, device=str(dev),
                                       features=features, feature_batch_size=batch_size, num_objects=num_objects,
                                       use_ema=not raw, keep_videos=save_samples is not None, **real_video)
                else:
                    rep = evaluate(ckpt=ckpt, samples=samples, seed=seed, device=str(dev), features=features,
                                   feature_batch_size=batch_size, num_objects=num_objects,
                                   keep_videos=save_samples is not None, **real_video)
        except (CheckpointError, EvalError, ValueError) as exc:
            fail(str(exc))
            return
        videos = rep.pop("videos", None)
        rows = rep["rows"]
        metrics = list(rows["samples"])
        table = Table(title=f"vdm eval: {rep['settings']['num']} clips of shape {tuple(rep['settings']['shape'])}")
        table.add_column("metric")
        table.add_column("samples", justify="right")
        table.add_column("real (held-out)", justify="right")
        table.add_column("noise", justify="right")
        table.add_column("", style="dim")
        for m in metrics:
            hint = _METRIC_HINTS.get(m, "" if rep["settings"]["data_kind"] == "moving_shapes" else _REAL_VIDEO_HINT)
            table.add_row(m, *(f"{rows[k][m]:.4f}" for k in ("samples", "real", "noise")), hint)
        Console().print(table)
        Console().print(f"real clips: {rep['settings']['real_source']}", highlight=False)
        if rep.get("sample_seconds") is not None:
            Console().print(f"sampling took {rep['sample_seconds']:.1f} s", highlight=False)
        try:
            remove_stale_temp_files_of(*outputs)  # what a run killed while writing them left behind
            if save_samples is not None and videos is not None:
                from vdm.backends import media

                if save_samples.suffix.lower() == ".gif":
                    media.save_gif(save_samples, videos[:16])
                else:
                    media.save_npy(save_samples, videos)
            if report is not None:
                write_report(report, rep)
        except WriteError as exc:
            fail(str(exc), CANNOT_WRITE)
        if report is not None:
            Console().print(f"report written to {report}", highlight=False)


def _default_sampler(ckpt: Path | None) -> str:
    """The checkpoint's process's default sampler (sampling.DEFAULT_SAMPLERS); ddim when the checkpoint
    cannot be read here (loading it later reports why, in one line)."""
    from vdm.backends.sampling import DEFAULT_SAMPLERS

    if ckpt is None:
        return DEFAULT_SAMPLERS["vp"]
    try:
        from vdm.backends.sampling import process_of
        from vdm.backends.torch.training.checkpoint import read_meta

        return DEFAULT_SAMPLERS[process_of(read_meta(ckpt)).family]
    except Exception:  # a missing or corrupt file: the load that follows gives the one-line error
        return DEFAULT_SAMPLERS["vp"]

