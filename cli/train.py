"""`vdm train`: train a video denoiser (single process, or DDP under torchrun).

Precedence: defaults (or --quickstart settings, or the resumed checkpoint's options) <- --config
file <- flags. Multi-process: ``torchrun --nproc_per_node N -m vdm.cli.main train ...``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

import vdm_ref

from .errors import CANNOT_WRITE, FAILED, fail, require_extras

# Help texts of the noise-process options, read from the reference's tables (spec 14.1, 16.1).
_PREDICTIONS_BY_PROCESS = "; ".join(f"{name}: {', '.join(f.predictions)}" for name, f in vdm_ref.FAMILIES.items())
_DENSITY_PARAMS = "; ".join(f"{d}: {', '.join(f'{k}={v:g}' for k, v in p.items()) or 'none'}"
                            for d, p in vdm_ref.FLOW_DENSITY_PARAMS.items())

_EPILOG = (
    "Outputs in OUT: config.json, metrics.csv, loss.png, last.safetensors, checkpoints/step_*.safetensors, "
    "previews/step_*.gif.  DDP: torchrun --nproc_per_node 2 -m vdm.cli.main train ... (or torchrun ... $(which vdm) "
    "train ...; gloo on CPU, NCCL on CUDA; --batch-size is per process; only rank 0 writes files)."
)




def _kv(items: list[str] | None, flag: str) -> dict[str, Any] | None:
    """KEY=VALUE pairs; VALUE parsed as JSON when possible (numbers, lists, true/false)."""
    if not items:
        return None
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def register(app: typer.Typer) -> None:
    @app.command("train", epilog=_EPILOG)
    def train(
        config: Annotated[Path | None, typer.Option(
            "--config", help="JSON or TOML file of options (keys named like the flags, with underscores).")] = None,
        quickstart: Annotated[bool, typer.Option(
            "--quickstart", help="Start from the measured CPU quickstart settings (tiny, 8x16x16, 400 steps).")]
            = False,
        print_config: Annotated[bool, typer.Option(
            "--print-config", help="Print the resolved options as JSON and exit.")] = False,
        # model
        architecture: Annotated[str | None, typer.Option(
            help="Model architecture, a row of vdm.backends.torch.models.ARCHITECTURES. (default: unet)")] = None,
        preset: Annotated[str | None, typer.Option(help="Model preset: tiny, small or base. (default: tiny)")] = None,
        model: Annotated[list[str] | None, typer.Option(
            "--model", metavar="KEY=VALUE",
            help="Override a field of the architecture config, e.g. --model base_channels=32 "
                 "--model channel_mult=[1,2]. "
                 "Repeatable.")] = None,
        # data
        data: Annotated[str | None, typer.Option(
            help="moving_shapes (procedural), folder:PATH (class sub-folders of videos) or ucf101:ROOT. "
                 "(default: moving_shapes)")] = None,
        frames: Annotated[int | None, typer.Option(help="Frames per clip. (default: 8)")] = None,
        size: Annotated[int | None, typer.Option(help="Clip height and width in pixels. (default: 32)")] = None,
        channels: Annotated[int | None, typer.Option(
            help="1 (grayscale) or 3 (RGB). Default 3 for video data (folder, ucf101), 1 for moving shapes.")] = None,
        num_objects: Annotated[int | None, typer.Option(help="Moving shapes: objects per clip. (default: 1)")] = None,
        num_clips: Annotated[int | None, typer.Option(
            help="Moving shapes: dataset length (clip i comes from seed (seed, i)). (default: 100000)")] = None,
        split_dir: Annotated[str | None, typer.Option(
            help="UCF-101: folder with classInd.txt and train/testlistNN.txt. (default: ROOT/ucfTrainTestlist)")]
            = None,
        split: Annotated[str | None, typer.Option(help="UCF-101: train or test. (default: train)")] = None,
        fold: Annotated[int | None, typer.Option(help="UCF-101: official split 1, 2 or 3. (default: 1)")] = None,
        frame_stride: Annotated[int | None, typer.Option(
            help="Video data: take every k-th source frame. (default: 1)")] = None,
        cache_dir: Annotated[str | None, typer.Option(
            help="Video data: cache decoded, resized frames here (.npy) so no file is decoded twice. "
                 "Default OUT/cache.")] = None,
        cache: Annotated[bool | None, typer.Option(
            "--cache/--no-cache", help="Video data: cache decoded frames; --no-cache decodes the whole file for "
                                       "every clip (several times slower). (default: on)")] = None,
        fps: Annotated[float | None, typer.Option(
            help="Video data: resample every video to this frame rate by frame timestamps (unset = each file's "
                 "own frames).")] = None,
        heldout_fraction: Annotated[float | None, typer.Option(
            help="Folder data: fraction of the files kept out of training, by a fixed hash of their names, for "
                 "vdm eval's real clips; 0 = train on all. (default: 0.1)")] = None,
        # diffusion
        schedule: Annotated[str | None, typer.Option(
            help=f"Noise schedule: {', '.join(vdm_ref.SCHEDULES)}. (default: cosine)")] = None,
        timesteps: Annotated[int | None, typer.Option(help="Diffusion steps T. (default: 1000)")] = None,
        schedule_param: Annotated[list[str] | None, typer.Option(
            "--schedule-param", metavar="KEY=VALUE",
            help="Schedule parameter, e.g. --schedule-param beta_end=0.02. Repeatable.")] = None,
        zero_terminal_snr: Annotated[bool | None, typer.Option(
            "--zero-terminal-snr/--no-zero-terminal-snr", help="Rescale the schedule to zero terminal SNR. "
            "(default: off)")] = None,
        process: Annotated[str | None, typer.Option(
            help=f"Noise process family (spec 14): {', '.join(vdm_ref.FAMILIES)}. (default: vp)")] = None,
        prediction: Annotated[str | None, typer.Option(
            help=f"Network target, one the --process trains with ({_PREDICTIONS_BY_PROCESS}); unset = the "
                 "first of its list.")] = None,
        learn_sigma: Annotated[bool | None, typer.Option(
            "--learn-sigma/--no-learn-sigma", help="Learn the variance (2C outputs) with the hybrid loss. "
            "(default: off)")] = None,
        hybrid_lambda: Annotated[float | None, typer.Option(
            help="Weight of the VLB term in the hybrid loss. (default: 0.001)")] = None,
        min_snr_gamma: Annotated[float | None, typer.Option(
            help="Min-SNR-gamma loss weighting (e.g. 5), any process (spec 16.4; replaces EDM's weight); unset = "
                 "uniform weights (EDM's own on edm).")] = None,
        flow_density: Annotated[str | None, typer.Option(
            help=f"Flow: density of the training noise levels s (spec 16.1): {', '.join(vdm_ref.FLOW_DENSITIES)}. "
                 "(default: uniform)")] = None,
        flow_density_param: Annotated[list[str] | None, typer.Option(
            "--flow-density-param", "--flow-density-params", metavar="KEY=VALUE",
            help=f"Flow: a parameter of the density, e.g. --flow-density-param m=0.5 (defaults: {_DENSITY_PARAMS}). "
                 "Repeatable.")] = None,
        flow_shift: Annotated[float | None, typer.Option(
            help="Flow: time shift of the training levels, shift s / (1 + (shift - 1) s), applied once; 1 = none. "
                 "(default: 1)")] = None,
        sigma_data: Annotated[float | None, typer.Option(
            help="EDM: the data standard deviation its preconditioning and loss weight assume. (default: 0.5)")]
            = None,
        edm_p_mean: Annotated[float | None, typer.Option(
            help="EDM: mean of ln(sigma) over training levels. (default: -1.2)")] = None,
        edm_p_std: Annotated[float | None, typer.Option(
            help="EDM: standard deviation of ln(sigma) over training levels. (default: 1.2)")] = None,
        conditional: Annotated[bool | None, typer.Option(
            "--conditional/--unconditional", help="Class-conditional training on the dataset's labels. "
            "(default: unconditional)")] = None,
        label_dropout: Annotated[float | None, typer.Option(
            help="Classifier-free guidance: probability of training with the null label. (default: 0.1)")] = None,
        image_fraction: Annotated[float | None, typer.Option(
            help="Joint image-video training: share of each batch given as sets of independent frames, which "
                 "the temporal layers see as 1-frame videos. (default: 0)")] = None,
        given_frames: Annotated[float | None, typer.Option(
            help="Conditional-frame training (spec 18.8): probability that a clip comes with given frames, shown "
                 "noise-free, so the model learns to extend and interpolate them (vdm sample --condition "
                 "frames). (default: 0)")] = None,
        # optimisation
        batch_size: Annotated[int | None, typer.Option(help="Clips per step per process. (default: 16)")] = None,
        steps: Annotated[int | None, typer.Option(
            help="Total optimizer steps (a resumed run continues up to this). (default: 1000)")] = None,
        lr: Annotated[float | None, typer.Option(help="AdamW learning rate. (default: 2e-4)")] = None,
        warmup_steps: Annotated[int | None, typer.Option(help="Linear LR warm-up steps. (default: 100)")] = None,
        lr_decay: Annotated[str | None, typer.Option(
            help="LR decay after warm-up, towards --lr-min at the last step: constant, linear or cosine "
                 "(training.optim.LR_DECAYS). (default: constant)")] = None,
        lr_min: Annotated[float | None, typer.Option(help="The LR a decay ends at. (default: 0)")] = None,
        weight_decay: Annotated[float | None, typer.Option(
            help="AdamW weight decay (kernels/matrices only). (default: 0)")] = None,
        grad_clip: Annotated[float | None, typer.Option(
            help="Max global gradient norm; 0 disables. (default: 1.0)")] = None,
        ema_decay: Annotated[float | None, typer.Option(help="EMA decay of the weights. (default: 0.999)")] = None,
        ema_warmup: Annotated[bool | None, typer.Option(
            "--ema-warmup/--no-ema-warmup", help="Warm the EMA decay up as min(decay, (1+s)/(10+s)). "
            "(default: on)")] = None,
        bf16: Annotated[bool | None, typer.Option(
            "--bf16/--no-bf16", help="bf16 autocast on CUDA (never on CPU). (default: on)")] = None,
        seed: Annotated[int | None, typer.Option(
            help="Seed of weights, data order and noise (all runs with one seed are identical). (default: 0)")]
            = None,
        # output / runtime
        out: Annotated[str | None, typer.Option(
            "--out", "--out-dir", help="Output directory. (default: runs/train)")] = None,
        checkpoint_every: Annotated[int | None, typer.Option(
            help="Checkpoint every N steps (and at the end); 0 = end only. (default: 500)")] = None,
        keep_checkpoints: Annotated[int | None, typer.Option(
            help="Keep only the newest N step checkpoints; 0 = all. (default: 0)")] = None,
        preview_every: Annotated[int | None, typer.Option(
            help="Write an EMA sample GIF every N steps; 0 = never. (default: 500)")] = None,
        preview_num: Annotated[int | None, typer.Option(help="Clips per preview GIF. (default: 4)")] = None,
        preview_steps: Annotated[int | None, typer.Option(help="DDIM steps per preview. (default: 10)")] = None,
        log_every: Annotated[int | None, typer.Option(help="metrics.csv row every N steps. (default: 10)")] = None,
        resume: Annotated[str | None, typer.Option(
            help="Resume exactly from a checkpoint PATH, or 'auto' = OUT/last.safetensors if present. The "
                 "checkpoint's options are the base; only runtime options (steps, out, intervals, device, "
                 "workers, threads) may differ.")] = None,
        overwrite: Annotated[bool | None, typer.Option(
            "--overwrite", help="Start afresh in an --out that already holds a run, deleting its checkpoints and "
                                "previews (without it, that is an error).")] = None,
        device: Annotated[str | None, typer.Option(
            help="auto, cpu, cuda or cuda:N (error if CUDA is missing). (default: auto)")] = None,
        num_workers: Annotated[int | None, typer.Option(help="DataLoader worker processes. (default: 0)")] = None,
        threads: Annotated[int | None, typer.Option(
            help="torch CPU threads per process; 0 = torch default, split among local DDP ranks. (default: 0)")]
            = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or messages.")] = False,
    ) -> None:
        """Train a video diffusion denoiser with AdamW, LR warm-up, gradient clipping and EMA weights.

        Exit status: 0 done, 1 training diverged (a NaN/Inf loss, gradient or weight; the last good checkpoint
        is kept), 2 bad input (options, config file, resume checkpoint), 3 an output in --out cannot be written
        (read-only, full disk, a file in the way, the file-size limit; the last complete checkpoint is kept).
        """
        require_extras("vdm train", "torch")
        from rich.console import Console
        from vdm.backends.files import WriteError
        from vdm.backends.torch.data.video import report_warnings
        from vdm.backends.torch.training import TrainingDiverged, resolve_run_config
        from vdm.backends.torch.training import train as run_train
        from vdm.backends.torch.training.checkpoint import CheckpointError

        try:
            overrides = {
                "architecture": architecture, "preset": preset, "model": _kv(model, "--model"), "data": data,
                "frames": frames, "size": size,
                "channels": channels, "num_objects": num_objects, "num_clips": num_clips, "split_dir": split_dir,
                "split": split, "fold": fold, "frame_stride": frame_stride, "cache_dir": cache_dir,
                "cache": cache, "fps": fps, "heldout_fraction": heldout_fraction,
                "schedule": schedule, "timesteps": timesteps,
                "schedule_params": _kv(schedule_param, "--schedule-param"),
                "zero_terminal_snr": zero_terminal_snr, "process": process, "prediction": prediction,
                "learn_sigma": learn_sigma, "flow_density": flow_density,
                "flow_density_params": _kv(flow_density_param, "--flow-density-param"), "flow_shift": flow_shift,
                "sigma_data": sigma_data, "edm_p_mean": edm_p_mean, "edm_p_std": edm_p_std,
                "hybrid_lambda": hybrid_lambda, "min_snr_gamma": min_snr_gamma, "conditional": conditional,
                "label_dropout": label_dropout, "image_fraction": image_fraction,
                "given_frames": given_frames,
                "batch_size": batch_size, "steps": steps, "lr": lr,
                "warmup_steps": warmup_steps, "lr_decay": lr_decay, "lr_min": lr_min,
                "weight_decay": weight_decay, "grad_clip": grad_clip,
                "ema_decay": ema_decay, "ema_warmup": ema_warmup, "bf16": bf16, "seed": seed, "out_dir": out,
                "checkpoint_every": checkpoint_every, "keep_checkpoints": keep_checkpoints,
                "preview_every": preview_every, "preview_num": preview_num, "preview_steps": preview_steps,
                "log_every": log_every, "resume": resume, "overwrite": overwrite, "device": device,
                "num_workers": num_workers, "threads": threads,
            }
            cfg = resolve_run_config(config, overrides, quickstart=quickstart)
        except (ValueError, CheckpointError) as exc:
            fail(str(exc))
            return
        if print_config:
            typer.echo(json.dumps(cfg.to_dict(), indent=2))
            return
        console = Console()
        main_rank = os.environ.get("RANK", "0") == "0"
        try:
            # Unusable video files: one 'warning: ...' line each on stderr (none with -q, none from other ranks).
            with report_warnings(None if quiet or not main_rank else (lambda m: typer.echo(m, err=True))):
                result = run_train(cfg, progress=not quiet and main_rank,
                                   log=None if quiet else (lambda m: console.print(m, highlight=False)))
        except TrainingDiverged as exc:
            fail(str(exc), FAILED)
            return
        except (ValueError, CheckpointError) as exc:
            fail(str(exc))
            return
        except WriteError as exc:
            fail(str(exc), CANNOT_WRITE)  # the last complete checkpoint stays in place (see the help)
            return
        if not quiet and main_rank:
            console.print(f"outputs in {result.out_dir}: last.safetensors, metrics.csv, loss.png, previews/",
                          highlight=False)
