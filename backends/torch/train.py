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
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import vdm_ref

from .checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from .model import PREDICTIONS, UNetConfig, VideoUNet, preset, preset_names

DATA_KINDS = ("moving_shapes", "folder", "ucf101")
SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid")
CSV_FIELDS = ("step", "loss", "lr", "grad_norm", "steps_per_s", "elapsed")


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became NaN/Inf; nothing was written after the bad step."""


@dataclass(frozen=True)
class TrainConfig:
    """Every option of ``vdm train``. Loadable from JSON/TOML (flat keys, see :func:`load_config_file`)."""

    # --- model
    preset: str = "tiny"  # "tiny" | "small" | "base" (see model.preset)
    model: dict[str, Any] = field(default_factory=dict)  # UNetConfig field overrides, e.g. {"base_channels": 32}
    # --- data
    data: str = "moving_shapes"  # "moving_shapes" | "folder:PATH" | "ucf101:ROOT"
    frames: int = 8  # frames per clip
    size: int = 32  # clips are size x size
    channels: int = 1  # 1 = grayscale, 3 = RGB
    num_objects: int = 1  # moving shapes: objects per clip
    num_clips: int = 100_000  # moving shapes: dataset length (clip i is generated from seed (seed, i))
    split_dir: str | None = None  # ucf101: folder with classInd.txt / trainlist0N.txt (default ROOT/ucfTrainTestlist)
    split: str = "train"  # ucf101: "train" or "test"
    fold: int = 1  # ucf101: official split 1, 2 or 3
    frame_stride: int = 1  # folder/ucf101: take every k-th frame of the source video
    cache_dir: str | None = None  # folder/ucf101: cache of decoded, resized frames (.npy), reused across runs
    # --- diffusion
    schedule: str = "cosine"
    timesteps: int = 1000  # T
    schedule_params: dict[str, float] = field(default_factory=dict)  # e.g. {"beta_end": 0.02}
    zero_terminal_snr: bool = False
    prediction: str = "eps"  # "eps" | "x0" | "v"
    learn_sigma: bool = False  # learned variance: 2C outputs and the hybrid loss
    hybrid_lambda: float = 0.001  # weight of the VLB term of the hybrid loss
    min_snr_gamma: float | None = None  # min-SNR-gamma loss weighting (e.g. 5.0); None = off
    conditional: bool = False  # class-conditional (labels from the dataset)
    label_dropout: float = 0.1  # CFG: probability of replacing a label with the null class
    # --- optimisation
    batch_size: int = 16  # per process
    steps: int = 1000  # total optimizer steps (a resumed run continues up to this number)
    lr: float = 2e-4
    warmup_steps: int = 100  # linear LR warm-up from lr/warmup to lr
    weight_decay: float = 0.0  # AdamW decoupled weight decay (matrices/kernels only, not biases/norms)
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    ema_decay: float = 0.999
    ema_warmup: bool = True  # effective decay min(ema_decay, (1 + step) / (10 + step))
    bf16: bool = True  # bf16 autocast for the forward pass on CUDA (ignored on CPU)
    seed: int = 0
    # --- output and runtime
    out_dir: str = "runs/train"
    checkpoint_every: int = 500  # also at the last step; 0 = only at the end
    keep_checkpoints: int = 0  # keep only the newest N step files (0 = keep all); last.safetensors always kept
    preview_every: int = 500  # 0 = no previews
    preview_num: int = 4  # clips per preview GIF
    preview_steps: int = 10  # DDIM steps per preview
    log_every: int = 10  # metrics.csv row every N steps (mean loss over those steps)
    resume: str | None = None  # checkpoint path, or "auto" = OUT/last.safetensors if it exists
    overwrite: bool = False  # start afresh in an OUT that already holds a run (its checkpoints/previews are deleted)
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    num_workers: int = 0  # DataLoader worker processes
    threads: int = 0  # torch CPU threads per process; 0 = torch default (divided among local DDP ranks)

    def __post_init__(self) -> None:
        errs = []
        if self.preset not in preset_names():
            errs.append(f"preset must be one of {preset_names()}, got {self.preset!r}")
        kind = self.data.split(":", 1)[0]
        if kind not in DATA_KINDS:
            errs.append(f"data must be 'moving_shapes', 'folder:PATH' or 'ucf101:ROOT', got {self.data!r}")
        elif kind != "moving_shapes" and not self.data_path:
            errs.append(f"data {self.data!r} needs a path after the colon")
        if self.schedule not in SCHEDULES:
            errs.append(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.prediction not in PREDICTIONS:
            errs.append(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        for name in ("frames", "size", "num_objects", "num_clips", "batch_size", "steps", "fold", "frame_stride",
                     "preview_num", "preview_steps", "log_every"):
            if getattr(self, name) < 1:
                errs.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "checkpoint_every", "keep_checkpoints", "preview_every", "num_workers",
                     "threads"):
            if getattr(self, name) < 0:
                errs.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.channels not in (1, 3):
            errs.append(f"channels must be 1 or 3, got {self.channels}")
        if self.timesteps < 2:
            errs.append(f"timesteps must be >= 2, got {self.timesteps}")
        if self.preview_steps > self.timesteps:
            errs.append(f"preview_steps ({self.preview_steps}) cannot exceed timesteps ({self.timesteps})")
        if not self.lr > 0 or not math.isfinite(self.lr):
            errs.append(f"lr must be a positive number, got {self.lr}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            errs.append("weight_decay and grad_clip must be >= 0")
        if not 0.0 <= self.ema_decay < 1.0:
            errs.append(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.label_dropout < 1.0:
            errs.append(f"label_dropout must lie in [0, 1), got {self.label_dropout}")
        if self.min_snr_gamma is not None and not self.min_snr_gamma > 0:
            errs.append(f"min_snr_gamma must be > 0 (or unset), got {self.min_snr_gamma}")
        if self.split not in ("train", "test"):
            errs.append(f"split must be 'train' or 'test', got {self.split!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            errs.append(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if errs:
            raise ValueError("invalid training config: " + "; ".join(errs))

    # --- (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; valid options: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    # --- derived

    @property
    def data_kind(self) -> str:
        return self.data.split(":", 1)[0]

    @property
    def data_path(self) -> str | None:
        return self.data.split(":", 1)[1] if ":" in self.data else None


# Options a resumed run may change; everything else must match the checkpoint's run.
RUNTIME_OPTIONS = frozenset({
    "steps", "out_dir", "checkpoint_every", "keep_checkpoints", "preview_every", "preview_num", "preview_steps",
    "log_every", "resume", "overwrite", "device", "num_workers", "threads",
})

# The measured CPU quickstart: tiny U-Net (0.83 M params) on 8-frame 16x16 grayscale moving
# shapes, 400 steps of batch 16: about 2.5-3 min on a busy 2-core machine, after which 20-step DDIM
# samples score coherent_fraction ~0.7 in `vdm eval` (real clips 1.0, noise 0.0). v-prediction
# mattered most (eps: ~0.25 at the same cost). One thread: on 2 shared cores OpenMP's second thread
# mostly waits for a busy core (measured 12x slower when other jobs ran; idle, 2 threads gain <2x).
QUICKSTART_TRAIN = TrainConfig(
    preset="tiny", frames=8, size=16, channels=1, num_objects=1, schedule="cosine", timesteps=1000,
    prediction="v", batch_size=16, steps=400, lr=1e-3, warmup_steps=50, grad_clip=1.0, ema_decay=0.99,
    checkpoint_every=200, preview_every=200, preview_steps=10, log_every=10, threads=1,
    out_dir="out/quickstart/train",
)


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Options from a ``.json`` or ``.toml`` file (flat keys named like the TrainConfig fields;
    ``model`` and ``schedule_params`` are tables). Unknown keys are an error."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise ValueError(f"config file {path} must end in .json or .toml")
    except (json.JSONDecodeError, ValueError) as exc:
        raise ValueError(f"cannot parse config file {path}: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a table/object of options")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"config file {path}: unknown option(s) {unknown}; valid options: {sorted(known)}")
    return data


def resolve_config(file: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None,
                   base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default TrainConfig()) <- config file values <- explicit overrides (flags)."""
    merged = (base or TrainConfig()).to_dict()
    if file is not None:
        merged.update(load_config_file(file))
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return TrainConfig.from_dict(merged)


def resolve_run_config(file: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None, *,
                       quickstart: bool = False) -> TrainConfig:
    """The options of a ``vdm train`` run: defaults (or :data:`QUICKSTART_TRAIN`) <- file <- flags.

    When resuming, the checkpoint's own options replace the defaults, so ``--resume PATH`` alone
    continues the same run; file/flag values that change a non-runtime option are then rejected
    by :func:`train`."""
    cfg = resolve_config(file, overrides, QUICKSTART_TRAIN if quickstart else None)
    path = resume_path(cfg)
    if path is None:
        return cfg
    from .checkpoint import read_meta

    saved = read_meta(path).get("train") or {}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    base = TrainConfig.from_dict({k: v for k, v in saved.items() if k in known})
    return resolve_config(file, {**(overrides or {}), "resume": cfg.resume}, base)


# --------------------------------------------------------------------------- model / data


def model_config(cfg: TrainConfig, num_classes: int = 0) -> UNetConfig:
    """The UNetConfig of a run: preset + overrides + the data's channels/frames/size."""
    overrides = {**cfg.model, "in_channels": cfg.channels, "frames": cfg.frames, "image_size": cfg.size,
                 "learn_sigma": cfg.learn_sigma, "prediction": cfg.prediction,
                 "num_classes": num_classes if cfg.conditional else 0}
    mc = preset(cfg.preset, **overrides)
    if cfg.size % mc.size_divisor:
        raise ValueError(f"size {cfg.size} must be a multiple of {mc.size_divisor} for preset {cfg.preset!r} "
                         f"(channel_mult={mc.channel_mult})")
    return mc


def build_dataset(cfg: TrainConfig) -> tuple[Any, int, dict[str, Any]]:
    """(map-style dataset yielding (video (C,T,H,W) in [-1,1], label), num_classes, data meta)."""
    if cfg.data_kind == "moving_shapes":
        from .moving_shapes import MovingShapes, MovingShapesConfig

        ms = MovingShapesConfig(frames=cfg.frames, size=cfg.size, channels=cfg.channels,
                                min_objects=cfg.num_objects, max_objects=cfg.num_objects)
        ds = MovingShapes(cfg.num_clips, ms, base_seed=cfg.seed)
        meta = {"kind": "moving_shapes", "frames": cfg.frames, "size": cfg.size, "channels": cfg.channels,
                "options": {"num_objects": cfg.num_objects, "min_objects": cfg.num_objects,
                            "max_objects": cfg.num_objects, "num_clips": cfg.num_clips, "base_seed": cfg.seed}}
        return ds, ds.num_classes, meta
    from . import video_data

    # Random clip starts are seeded by (seed, epoch, index): see _EpochIndexed.
    clip = video_data.ClipSpec(frames=cfg.frames, size=cfg.size, channels=cfg.channels,
                               frame_stride=cfg.frame_stride, mode="random")
    root = cfg.data_path
    if not Path(root).is_dir():
        raise ValueError(f"data folder not found: {root}")
    if cfg.data_kind == "folder":
        ds = video_data.VideoFolder(root, clip=clip, cache_dir=cfg.cache_dir, seed=cfg.seed)
        options: dict[str, Any] = {"root": root, "frame_stride": cfg.frame_stride}
    else:
        split_dir = cfg.split_dir or str(Path(root) / "ucfTrainTestlist")
        ds = video_data.UCF101(root, split_dir, split=cfg.split, fold=cfg.fold, clip=clip, cache_dir=cfg.cache_dir,
                               seed=cfg.seed)
        options = {"root": root, "split_dir": split_dir, "split": cfg.split, "fold": cfg.fold,
                   "frame_stride": cfg.frame_stride}
    num_classes = int(ds.num_classes)
    meta = {"kind": cfg.data_kind, "frames": cfg.frames, "size": cfg.size, "channels": cfg.channels,
            "options": options, "num_classes": num_classes, "num_videos": len(ds),
            "skipped": [str(p) for p, _ in getattr(ds, "skipped", [])]}
    return ds, num_classes, meta


class _EpochIndexed:
    """Dataset adapter taking ``(epoch, index)`` items: sets the wrapped dataset's epoch (random
    clip starts of video data depend on it) before reading, so a clip is a function of (seed,
    epoch, index) in any worker process, with no state carried between steps."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        epoch, index = item
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, 0x5EED, epoch]).permutation(n)


class StepBatchSampler:
    """Batch sampler yielding the clip indices of steps ``start..end-1`` for one rank.

    Global batch of step s = positions [s*B*W, (s+1)*B*W) of the stream made by concatenating
    per-epoch permutations seeded by (seed, epoch); rank r takes the r-th block of B. So the data
    order is a function of (seed, step) alone, and W ranks with batch B see exactly the clips one
    process with batch B*W would.
    """

    def __init__(self, n: int, batch: int, seed: int, start: int, end: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch, self.seed = n, batch, seed
        self.start, self.end, self.rank, self.world = start, end, rank, world
        self._cache: dict[int, np.ndarray] = {}

    def indices(self, step: int) -> list[tuple[int, int]]:
        """(epoch, clip index) pairs of this rank's share of step ``step``."""
        first = step * self.batch * self.world + self.rank * self.batch
        out = []
        for p in range(first, first + self.batch):
            epoch, i = divmod(p, self.n)
            if epoch not in self._cache:
                if len(self._cache) > 2:
                    self._cache.pop(min(self._cache))
                self._cache[epoch] = _permutation(self.seed, epoch, self.n)
            out.append((epoch, int(self._cache[epoch][i])))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.end):
            yield self.indices(step)

    def __len__(self) -> int:
        return max(0, self.end - self.start)


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of the global torch RNG for (seed, step, rank)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] >> 1)


# --------------------------------------------------------------------------- distributed


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_kind: str) -> _Dist:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), True)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" -> CUDA if available else CPU; a clear error when CUDA is asked for but missing."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name} requested but CUDA is not available "
                             f"(torch {torch.__version__}, cuda build: {torch.version.cuda or 'none'})")
        if name == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        index = int(name.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {name} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device(name)
    return torch.device("cpu")


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
        # Rewrite: drops rows a crashed run logged after the checkpoint we resume from.
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in CSV_FIELDS})
        self._f = path.open("a", newline="")
        self._w = csv.DictWriter(self._f, fieldnames=CSV_FIELDS)

    def write(self, row: dict[str, float]) -> None:
        self._w.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in CSV_FIELDS})
        self._f.flush()

    def close(self) -> None:
        self._f.close()


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
    from .previews import save_loss_plot

    steps, losses = read_metrics(out / "metrics.csv")
    save_loss_plot(out / "loss.png", steps, losses, title=f"training loss ({out.name})")


# --------------------------------------------------------------------------- training


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Weight decay on kernels/matrices only; biases, norm scales and 1-D tables stay undecayed.
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_at(cfg: TrainConfig, step: int) -> float:
    """LR of the optimizer step that takes the model from ``step`` to ``step + 1``."""
    if cfg.warmup_steps <= 0:
        return cfg.lr
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def _check_resume_compatible(cfg: TrainConfig, saved: dict[str, Any], path: Path) -> None:
    now = json.loads(json.dumps(cfg.to_dict()))  # compare as stored: tuples became lists
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {v!r}" for k, v in now.items()
             if k not in RUNTIME_OPTIONS and k in saved and saved[k] != v]
    if diffs:
        raise ValueError(f"cannot resume from {path}: options differ from the checkpoint's run ({'; '.join(diffs)}); "
                         "only these may change on resume: " + ", ".join(sorted(RUNTIME_OPTIONS)))


def resume_path(cfg: TrainConfig) -> Path | None:
    """The checkpoint to resume from: None (fresh), an explicit path, or OUT/last.safetensors for
    ``resume="auto"`` when it exists."""
    if not cfg.resume:
        return None
    if cfg.resume == "auto":
        p = Path(cfg.out_dir) / "last.safetensors"
        return p if p.is_file() else None
    p = Path(cfg.resume)
    if not p.is_file():
        raise CheckpointError(f"--resume checkpoint not found: {p}")
    return p


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
    dist_info = _init_distributed("cuda" if cfg.device.startswith("cuda") or
                                  (cfg.device == "auto" and torch.cuda.is_available()) else "cpu")
    try:
        return _train(cfg, dist_info, progress=progress, log=log, batch_hook=batch_hook)
    finally:
        if dist_info.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(cfg: TrainConfig, dd: _Dist, *, progress: bool, log: Callable[[str], None] | None,
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

    from . import ops

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
                old.unlink(missing_ok=True)

    dataset, num_classes, data_meta = build_dataset(cfg)
    if data_meta.get("skipped"):
        say(f"skipped {len(data_meta['skipped'])} unusable video(s): {', '.join(data_meta['skipped'])}")
    if cfg.conditional and num_classes < 1:
        raise ValueError(f"conditional training needs class labels, but data {cfg.data!r} has none")
    mcfg = model_config(cfg, num_classes)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = VideoUNet(mcfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
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
    meta_base = {
        "model_config": mcfg.to_dict(), "schedule": sched.to_dict(), "prediction": cfg.prediction,
        "variance": variance, "num_classes": mcfg.num_classes, "data": data_meta, "train": cfg.to_dict(),
        "spec_version": vdm_ref.SPEC_VERSION,
    }

    net: nn.Module = model
    if dd.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    metrics = None
    if dd.main:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        for stale in [*out.glob(".*.tmp"), *(out / "checkpoints").glob(".*.tmp")]:
            stale.unlink(missing_ok=True)  # temp files of a killed run's interrupted atomic writes
        atomic_write_bytes(out / "config.json", (json.dumps(
            {"train": cfg.to_dict(), "model_config": mcfg.to_dict(), "data": data_meta, "world_size": dd.world},
            indent=2) + "\n").encode())
        metrics = _Metrics(out / "metrics.csv", start if ckpt is not None else None)

    sampler = StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, start, cfg.steps, dd.rank, dd.world)
    loader = torch.utils.data.DataLoader(_EpochIndexed(dataset), batch_sampler=sampler, num_workers=cfg.num_workers,
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
            t = torch.randint(0, cfg.timesteps, (b,), device=device)
            noise = torch.randn_like(x0)
            x_t = ops.q_sample(sched, x0, t, noise)
            labels = None
            if mcfg.num_classes:
                labels = y.to(device).long()
                drop = torch.rand(b, device=device) < cfg.label_dropout
                labels = torch.where(drop, torch.full_like(labels, mcfg.num_classes), labels)
            lr = _lr_at(cfg, step)
            for g in optimizer.param_groups:
                g["lr"] = lr
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                out_t = net(x_t, t.float(), labels)
            out_t = out_t.float()
            if cfg.learn_sigma:
                per = ops.hybrid_loss(sched, x0, t, noise, out_t, cfg.prediction, lam=cfg.hybrid_lambda,
                                      min_snr_gamma=cfg.min_snr_gamma)
            else:
                per = ops.simple_loss(sched, x0, t, noise, out_t, cfg.prediction, min_snr_gamma=cfg.min_snr_gamma)
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
            decay = min(cfg.ema_decay, (1 + step) / (10 + step)) if cfg.ema_warmup else cfg.ema_decay
            _ema_update(ema, model, decay)
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
    from .evaluate import sample_videos
    from .previews import save_gif

    # A private generator (fixed seed): previews are comparable across steps and leave training RNG alone.
    videos = sample_videos(ema, meta, cfg.preview_num, steps=cfg.preview_steps, seed=cfg.seed,
                           batch_size=cfg.preview_num, device=device)
    save_gif(out / "previews" / f"step_{step:07d}.gif", videos)
