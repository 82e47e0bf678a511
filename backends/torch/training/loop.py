"""Training loop for the video denoiser: AdamW, warm-up, clipping, EMA, checkpoints, DDP.

Output directory layout (only rank 0 writes)::

    OUT/
      config.json                  resolved TrainConfig + model config of this run
      metrics.csv                  step,loss,lr,grad_norm,steps_per_s,elapsed (appended as it runs)
      loss.png                     loss curve (rewritten at every checkpoint and at the end)
      last.safetensors             newest checkpoint (same bytes as the newest step file)
      checkpoints/step_0000500.safetensors
      previews/step_0000500.gif    EMA samples (a few DDIM steps) every ``preview_every`` steps

Determinism: the data order and every random draw of a step (timesteps, noise, label dropout,
dropout) are functions of (seed, step, rank): the global torch RNG is re-seeded from them at the
start of each step, and the clip indices of step s are positions [s*B_global, (s+1)*B_global) of
a per-epoch permutation seeded by (seed, epoch). Resuming therefore needs no iterator state, and
a resumed run reproduces the uninterrupted run's losses exactly (RNG states are still saved and
restored). Rank r of a DDP run takes the r-th block of B clips of each global batch.

Scale-out: ``torchrun --nproc_per_node N -m vdm.cli.main train ...`` (``torchrun --nproc_per_node N
$(which vdm) train ...`` works too): gloo on CPU, NCCL on CUDA, ``--batch-size`` per process,
``--threads`` defaults to cores / local ranks.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import vdm_ref

from ... import files
from ..conditioning import given_frame_inputs
from ..data import build_dataset
from ..devices import resolve_device
from ..models import build_model
from .batches import EpochIndexed, StepBatchSampler, step_seed
from .checkpoint import load_checkpoint, restore_rng_state, save_checkpoint
from .config import RUNTIME_OPTIONS, TrainConfig, model_config, resume_path, train_process
from .distributed import DistInfo, init_distributed
from .given_frames import draw_given_frames, generated_share, without_given_frames
from .images import images_per_batch, mix_in_images
from .objectives import OBJECTIVES
from .optim import ema_decay_at, ema_update, lr_at, param_groups

CSV_FIELDS = ("step", "loss", "lr", "grad_norm", "steps_per_s", "elapsed")


class TrainingDiverged(RuntimeError):
    """The loss, the gradient norm or the updated weights became NaN/Inf; nothing was written
    after the bad step, so the newest checkpoint on disk holds finite weights."""


# --------------------------------------------------------------------------- outputs


@dataclass
class TrainResult:
    out_dir: Path
    step: int  # steps completed in total
    losses: list[float]  # per-step mean loss over ranks, for the steps run by this call
    last_checkpoint: Path | None
    elapsed: float  # seconds, including time before a resume
    steps_per_s: float  # this call's throughput
    world_size: int = 1
    model: nn.Module | None = field(default=None, repr=False)  # the trained network (raw weights, unwrapped)
    ema: nn.Module | None = field(default=None, repr=False)  # its EMA copy (what checkpoints sample with)


class _Metrics:
    """metrics.csv, appended and flushed row by row (rank 0 only)."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        rows = []
        if resume_step is not None and path.is_file():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= resume_step]
        # Rewrite (atomically: a kill here must not lose the history) without the rows a crashed
        # run logged after the checkpoint we resume from.
        with files.atomic_path(path) as tmp, tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in CSV_FIELDS})
        with files.writing(path):
            self._f = path.open("a", newline="")
        self._w = csv.DictWriter(self._f, fieldnames=CSV_FIELDS)

    def write(self, row: dict[str, float]) -> None:
        with files.writing(self.path):
            self._w.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in CSV_FIELDS})
            self._f.flush()

    def close(self) -> None:
        try:
            self._f.close()
        except OSError:  # a full disk already reported by write(); the rows before it are on disk
            pass


def read_metrics(path: str | os.PathLike[str]) -> tuple[list[int], list[float]]:
    """(steps, losses) from a metrics.csv."""
    steps, losses = [], []
    with Path(path).open(newline="") as f:
        for r in csv.DictReader(f):
            try:
                steps.append(int(r["step"]))
                losses.append(float(r["loss"]))
            except (KeyError, ValueError):
                continue
    return steps, losses


def _plot_loss(out: Path) -> None:
    from ...media import save_loss_plot

    steps, losses = read_metrics(out / "metrics.csv")
    save_loss_plot(out / "loss.png", steps, losses, title=f"training loss ({out.name})")


# --------------------------------------------------------------------------- training


def _writes_at(cfg: TrainConfig, step: int) -> bool:
    """Whether step ``step`` (counted from 1) ends with a checkpoint or a preview."""
    final = step == cfg.steps
    return bool((cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or final
                or (cfg.preview_every and step % cfg.preview_every == 0))


@torch.no_grad()
def _non_finite_weights(*modules: nn.Module) -> Tensor:
    """1 (int32, on the weights' device) if any parameter of ``modules`` holds a NaN or infinity, else 0:
    one reduction per tensor and a single host sync for the caller."""
    flags = [torch.isfinite(p).all() for m in modules for p in m.parameters()]
    return (~torch.stack(flags).all()).to(torch.int32)


def _check_resume_compatible(cfg: TrainConfig, saved: dict[str, Any], path: Path) -> None:
    now = json.loads(json.dumps(cfg.to_dict()))  # compare as stored: tuples became lists
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {v!r}" for k, v in now.items()
             if k not in RUNTIME_OPTIONS and k in saved and saved[k] != v]
    if diffs:
        raise ValueError(f"cannot resume from {path}: options differ from the checkpoint's run ({'; '.join(diffs)}); "
                         "only these may change on resume: " + ", ".join(sorted(RUNTIME_OPTIONS)))


def train(
    cfg: TrainConfig,
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    batch_hook: Callable[[int, Tensor], Tensor] | None = None,
) -> TrainResult:
    """Train per ``cfg``; see the module docstring for outputs and determinism.

    ``progress`` shows a rich progress bar (rank 0). ``log`` receives one-line messages (rank 0).
    ``batch_hook(step, x0) -> x0`` is an internal test hook (e.g. to inject a NaN batch).
    Raises :class:`TrainingDiverged` on a NaN/Inf loss or gradient, after writing nothing for
    that step (the last good checkpoint stays in place).
    """
    dist_info = init_distributed("cuda" if cfg.device.startswith("cuda") or
                                  (cfg.device == "auto" and torch.cuda.is_available()) else "cpu")
    try:
        return _train(cfg, dist_info, progress=progress, log=log, batch_hook=batch_hook)
    finally:
        if dist_info.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(cfg: TrainConfig, dd: DistInfo, *, progress: bool, log: Callable[[str], None] | None,
           batch_hook: Callable[[int, Tensor], Tensor] | None) -> TrainResult:
    import torch.distributed as dist

    say = (log or (lambda _m: None)) if dd.main else (lambda _m: None)
    device = resolve_device(cfg.device, dd.local_rank)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif dd.enabled and device.type == "cpu":
        # N local ranks on C cores: C/N threads each, or OpenMP oversubscription stalls every op.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", dd.world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(local, 1)))
    if device.type == "cuda":
        torch.cuda.set_device(device)

    from .. import ops

    ckpt_path = resume_path(cfg)
    ckpt = load_checkpoint(ckpt_path) if ckpt_path is not None else None
    if ckpt is not None:
        _check_resume_compatible(cfg, ckpt.meta.get("train", {}), ckpt_path)
    out = Path(cfg.out_dir)
    if ckpt is None and (out / "last.safetensors").is_file():
        # Never clobber a run by accident: continuing it or replacing it must be asked for.
        if not cfg.overwrite:
            raise ValueError(f"{out} already holds a training run ({out / 'last.safetensors'}); pass --resume auto "
                             "to continue it, --overwrite to replace it, or choose another --out")
        if dd.main:
            for old in [out / "last.safetensors", *(out / "checkpoints").glob("step_*.safetensors"),
                        *(out / "previews").glob("step_*.gif")]:
                with files.writing(old):
                    old.unlink(missing_ok=True)
    if dd.main:  # before the data and the model are built: an unwritable --out fails in a second
        files.check_writable(out / "config.json")

    dataset, num_classes, data_meta = build_dataset(cfg)
    if data_meta.get("skipped"):
        say(f"skipped {len(data_meta['skipped'])} unusable video(s): {', '.join(data_meta['skipped'])}")
    if cfg.conditional and num_classes < 1:
        raise ValueError(f"conditional training needs class labels, but data {cfg.data!r} has none")
    mcfg = model_config(cfg, num_classes)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = build_model(mcfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    start = 0
    elapsed0 = 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt.model_state)
        ema.load_state_dict(ckpt.ema_state or ckpt.model_state)
        if ckpt.optim_state is not None:
            optimizer.load_state_dict(ckpt.optim_state)
        start = ckpt.step
        elapsed0 = float(ckpt.meta.get("train_state", {}).get("elapsed", 0.0))
        restore_rng_state(ckpt)
        say(f"resumed from {ckpt_path} at step {start}")

    sched = ops.make_schedule(cfg.schedule, cfg.timesteps, zero_terminal_snr=cfg.zero_terminal_snr,
                              device=device, dtype=torch.float32, **cfg.schedule_params)
    variance = "learned_range" if cfg.learn_sigma else "fixed_small"
    objective = OBJECTIVES[cfg.process]
    process = train_process(cfg)
    meta_base = {
        "model_config": mcfg.to_dict(), "architecture": cfg.architecture, "schedule": sched.to_dict(),
        "prediction": cfg.prediction, "process": process.to_dict(),
        "variance": variance, "num_classes": mcfg.num_classes, "data": data_meta, "train": cfg.to_dict(),
        "spec_version": vdm_ref.SPEC_VERSION,
    }

    net: nn.Module = model
    if dd.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    metrics = None
    if dd.main:
        with files.writing(out / "checkpoints"):
            (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        files.remove_stale_temp_files(out, out / "checkpoints", out / "previews")  # a killed run's writes
        files.atomic_write_bytes(out / "config.json", (json.dumps(
            {"train": cfg.to_dict(), "model_config": mcfg.to_dict(), "data": data_meta, "world_size": dd.world},
            indent=2) + "\n").encode())
        metrics = _Metrics(out / "metrics.csv", start if ckpt is not None else None)

    sampler = StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, start, cfg.steps, dd.rank, dd.world)
    loader = torch.utils.data.DataLoader(EpochIndexed(dataset), batch_sampler=sampler, num_workers=cfg.num_workers,
                                         pin_memory=device.type == "cuda")
    use_bf16 = cfg.bf16 and device.type == "cuda"
    losses: list[float] = []
    last_ckpt: Path | None = ckpt_path
    last_ckpt_step = start
    window: list[tuple[float, float]] = []
    t_start = time.perf_counter()
    t_window = t_start
    step = start

    bar = None
    if progress and dd.main:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[sps]:.2f} step/s"),
                       TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        task = bar.add_task("train", total=cfg.steps, completed=start, loss=float("nan"), sps=0.0)
        bar.start()

    def checkpoint(step_done: int, last_loss: float) -> Path:
        meta = {**meta_base, "step": step_done,
                "train_state": {"elapsed": elapsed0 + time.perf_counter() - t_start, "world_size": dd.world,
                                "loss": last_loss}}
        path = out / "checkpoints" / f"step_{step_done:07d}.safetensors"
        save_checkpoint(path, model=model, ema=ema, optimizer=optimizer, meta=meta, last=out / "last.safetensors")
        if cfg.keep_checkpoints:
            old = sorted((out / "checkpoints").glob("step_*.safetensors"))[:-cfg.keep_checkpoints]
            for p in old:
                p.unlink(missing_ok=True)
        _plot_loss(out)
        return path

    try:
        net.train()
        for x0, y in loader:
            torch.manual_seed(step_seed(cfg.seed, step, dd.rank))
            x0 = x0.to(device, non_blocking=True).float()
            if batch_hook is not None:
                x0 = batch_hook(step, x0)
            b = x0.shape[0]
            x0, independent = mix_in_images(x0, images_per_batch(cfg.image_fraction, b))
            noised = objective.draw(cfg, sched, x0)  # noise level and noise first: v1's draw order on vp
            labels = None
            if mcfg.num_classes:
                labels = y.to(device).long()
                drop = torch.rand(b, device=device) < cfg.label_dropout
                if independent is not None:  # image sets mix clips of several classes: no label
                    drop = drop | independent
                labels = torch.where(drop, torch.full_like(labels, mcfg.num_classes), labels)
            frames = {} if independent is None else {"independent": independent}
            net_input, condition, given = noised.net_input, noised.condition, None
            if cfg.given_frames > 0:  # spec 18.8: given frames noise-free at the given level, one condition per frame
                given = draw_given_frames(b, x0.shape[2], cfg.given_frames, device)
                if independent is not None:
                    given &= ~independent[:, None]
                net_input, per_frame = given_frame_inputs(process, net_input, noised.condition, x0,
                                                          given[:, None, :, None, None].to(x0.dtype))
                condition = per_frame.float()
            lr = lr_at(step, lr=cfg.lr, warmup_steps=cfg.warmup_steps, steps=cfg.steps, decay=cfg.lr_decay,
                       lr_min=cfg.lr_min)
            for g in optimizer.param_groups:
                g["lr"] = lr
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                out_t = net(net_input, condition, labels, **frames)
            out_t = out_t.float()
            if given is not None:  # the loss is the mean over the generated frames
                out_t = without_given_frames(out_t, objective.target(cfg, sched, noised), given)
            per = objective.loss(cfg, sched, noised, out_t)
            if given is not None:
                per = per * generated_share(given).to(per.dtype)
            loss = per.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # DDP averages gradients here, so grad_norm below agrees on every rank
            gn = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            stats = torch.stack([loss.detach().float(), gn.detach().float()])
            if dd.enabled:
                dist.all_reduce(stats)
                stats /= dd.world
            loss_v, gn_v = (float(v) for v in stats.cpu())
            if not (math.isfinite(loss_v) and math.isfinite(gn_v)):
                what = "loss" if not math.isfinite(loss_v) else "gradient norm"
                where = f"{last_ckpt} (step {last_ckpt_step})" if last_ckpt else "none written yet"
                raise TrainingDiverged(f"{what} is {loss_v if what == 'loss' else gn_v} at step {step + 1}; "
                                       f"training stopped. Last good checkpoint: {where}. Try a lower --lr, "
                                       f"--grad-clip or --warmup-steps.")
            optimizer.step()
            ema_update(ema, model, ema_decay_at(step, cfg.ema_decay, cfg.ema_warmup))
            # A finite loss and gradient can still give non-finite weights (an overflowing update).
            # Such weights are never checkpointed or previewed, so the last checkpoint is the last good
            # one. Checked where they would be written: between writes, non-finite weights make the
            # next step's loss non-finite, which the check above catches (a check every step would
            # cost about an optimizer step).
            if _writes_at(cfg, step + 1):
                bad_weights = _non_finite_weights(model, ema)
                if dd.enabled:
                    dist.all_reduce(bad_weights, op=dist.ReduceOp.MAX)
                if bad_weights.item():
                    where = f"{last_ckpt} (step {last_ckpt_step})" if last_ckpt else "none written yet"
                    raise TrainingDiverged(f"the weights are not finite after the update of step {step + 1}; "
                                           f"training stopped. Last good checkpoint: {where}. Try a lower --lr or "
                                           "--weight-decay.")
            step += 1
            losses.append(loss_v)
            window.append((loss_v, gn_v))
            now = time.perf_counter()
            final = step == cfg.steps
            if dd.main:
                if step % cfg.log_every == 0 or final:
                    sps = len(window) / max(now - t_window, 1e-9)
                    metrics.write({"step": step, "loss": float(np.mean([w[0] for w in window])), "lr": lr,
                                   "grad_norm": float(np.mean([w[1] for w in window])), "steps_per_s": sps,
                                   "elapsed": elapsed0 + now - t_start})
                    window.clear()
                    t_window = now
                if bar is not None:
                    bar.update(task, completed=step, loss=loss_v, sps=(step - start) / max(now - t_start, 1e-9))
                if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or final:
                    last_ckpt, last_ckpt_step = checkpoint(step, loss_v), step
                if (cfg.preview_every and step % cfg.preview_every == 0) or (final and cfg.preview_every):
                    _preview(ema, meta_base, cfg, step, out, device)
            elif final or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                last_ckpt, last_ckpt_step = out / "checkpoints" / f"step_{step:07d}.safetensors", step
    finally:
        if bar is not None:
            bar.stop()
        if metrics is not None:
            metrics.close()
    total = time.perf_counter() - t_start
    if dd.main and step > start:
        say(f"done: step {step}, last loss {losses[-1]:.4f}, {(step - start) / total:.2f} steps/s; "
            f"checkpoint {out / 'last.safetensors'}")
    return TrainResult(out_dir=out, step=step, losses=losses, last_checkpoint=last_ckpt, elapsed=elapsed0 + total,
                       steps_per_s=(step - start) / max(total, 1e-9), world_size=dd.world, model=model, ema=ema)


def _preview(ema: nn.Module, meta: dict[str, Any], cfg: TrainConfig, step: int, out: Path,
             device: torch.device) -> None:
    from ...media import save_gif
    from ...sampling import DEFAULT_SAMPLERS, SamplingOptions, sample_videos, torch_model

    # Fixed seed: previews are comparable across steps, and the training RNG is left alone. The
    # process's default sampler, as `vdm sample` and `vdm eval` use.
    options = SamplingOptions(sampler=DEFAULT_SAMPLERS[cfg.process], steps=cfg.preview_steps,
                              batch_size=cfg.preview_num)
    videos = sample_videos(torch_model(ema, meta, device), cfg.preview_num, cfg.seed, options)
    save_gif(out / "previews" / f"step_{step:07d}.gif", videos)
