"""The options of a training run (``vdm train``): one frozen dataclass, loadable from JSON/TOML.

The quickstart's measured settings are :data:`QUICKSTART_TRAIN`; their timings are in the README
and benchmarks/bench_train.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import vdm_ref

from ... import configs
from ...files import one_line
from ..data import DATASETS, data_channels
from ..models import ARCHITECTURES, preset
from .images import images_per_batch
from .optim import LR_DECAYS


@dataclass(frozen=True)
class TrainConfig:
    """Every option of ``vdm train``. Loadable from JSON/TOML (flat keys, see :func:`load_config_file`)."""

    # --- model
    architecture: str = "unet"  # a row of models.ARCHITECTURES
    preset: str = "tiny"  # a preset of that architecture: "tiny" | "small" | "base" for the U-Net
    model: dict[str, Any] = field(default_factory=dict)  # UNetConfig field overrides, e.g. {"base_channels": 32}
    # --- data
    data: str = "moving_shapes"  # a row of data.DATASETS: "moving_shapes" | "folder:PATH" | "ucf101:ROOT"
    frames: int = 8  # frames per clip
    size: int = 32  # clips are size x size
    channels: int | None = None  # 1 = grayscale, 3 = RGB; None = the dataset's default (video 3, moving shapes 1)
    num_objects: int = 1  # moving shapes: objects per clip
    num_clips: int = 100_000  # moving shapes: dataset length (clip i is generated from seed (seed, i))
    split_dir: str | None = None  # ucf101: folder with classInd.txt / trainlist0N.txt (default ROOT/ucfTrainTestlist)
    split: str = "train"  # ucf101: "train" or "test"
    fold: int = 1  # ucf101: official split 1, 2 or 3
    frame_stride: int = 1  # folder/ucf101: take every k-th frame of the source video
    cache_dir: str | None = None  # folder/ucf101: cache of decoded, resized frames (.npy); None = OUT/cache
    cache: bool = True  # folder/ucf101: cache decoded frames (False: every clip decodes its whole file again)
    fps: float | None = None  # folder/ucf101: resample every video to this frame rate; None = the files' own frames
    heldout_fraction: float = 0.1  # folder: fraction of files kept out of training for `vdm eval` (0 = none)
    # --- diffusion
    schedule: str = "cosine"
    timesteps: int = 1000  # T
    schedule_params: dict[str, float] = field(default_factory=dict)  # e.g. {"beta_end": 0.02}
    zero_terminal_snr: bool = False
    process: str = "vp"  # noise process family, a row of vdm_ref.FAMILIES: "vp" | "flow" | "edm" (spec 14.1)
    prediction: str = ""  # network target, one its family trains with (spec 14.3); "" = the family's default
    learn_sigma: bool = False  # learned variance (vp only): 2C outputs and the hybrid loss
    hybrid_lambda: float = 0.001  # weight of the VLB term of the hybrid loss
    min_snr_gamma: float | None = None  # min-SNR-gamma loss weighting (e.g. 5.0; spec 8.2, 16.4); None = off
    flow_density: str = "uniform"  # flow: training-level density, a row of vdm_ref.FLOW_DENSITIES (spec 16.1)
    flow_density_params: dict[str, float] = field(default_factory=dict)  # e.g. {"m": 0.0, "s": 1.0}; {} = defaults
    flow_shift: float = 1.0  # flow: time shift of the training levels (spec 15.2, applied once); 1 = none
    sigma_data: float = vdm_ref.SIGMA_DATA  # edm: the data std its preconditioning and loss weight assume (14.5)
    edm_p_mean: float = vdm_ref.EDM_P_MEAN  # edm: training levels ln(sigma) ~ N(p_mean, p_std^2) (spec 16.1)
    edm_p_std: float = vdm_ref.EDM_P_STD
    conditional: bool = False  # class-conditional (labels from the dataset)
    label_dropout: float = 0.1  # CFG: probability of replacing a label with the null class
    image_fraction: float = 0.0  # joint image-video training: share of each batch given as independent images
    given_frames: float = 0.0  # conditional-frame training (spec 18.8): probability that a sample has given frames
    # --- optimisation
    batch_size: int = 16  # per process
    steps: int = 1000  # total optimizer steps (a resumed run continues up to this number)
    lr: float = 2e-4
    warmup_steps: int = 100  # linear LR warm-up from lr/warmup to lr
    lr_decay: str = "constant"  # after warm-up, a row of optim.LR_DECAYS: "constant" | "linear" | "cosine"
    lr_min: float = 0.0  # the LR a decay approaches at the last step
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
        errs = type_errors(dataclasses.asdict(self))
        if errs:  # the range checks below assume the types are right
            raise ValueError("invalid training config: " + "; ".join(errs))
        if self.architecture not in ARCHITECTURES:
            errs.append(f"architecture must be one of {tuple(ARCHITECTURES)}, got {self.architecture!r}")
        elif self.preset not in ARCHITECTURES[self.architecture].presets:
            errs.append(f"preset must be one of {tuple(ARCHITECTURES[self.architecture].presets)}, "
                        f"got {self.preset!r}")
        kind = self.data.split(":", 1)[0]
        if kind not in DATASETS:
            kinds = ", ".join(f"'{k}:PATH'" if DATASETS[k][1] else f"'{k}'" for k in DATASETS)
            errs.append(f"data must be one of {kinds}, got {self.data!r}")
        elif DATASETS[kind][1] and not self.data_path:
            errs.append(f"data {self.data!r} needs a path after the colon")
        if self.schedule not in vdm_ref.SCHEDULES:
            errs.append(f"schedule must be one of {vdm_ref.SCHEDULES}, got {self.schedule!r}")
        errs += _process_errors(self)
        for name in ("frames", "size", "num_objects", "num_clips", "batch_size", "steps", "fold", "frame_stride",
                     "preview_num", "preview_steps", "log_every"):
            if getattr(self, name) < 1:
                errs.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "checkpoint_every", "keep_checkpoints", "preview_every", "num_workers",
                     "threads"):
            if getattr(self, name) < 0:
                errs.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.channels not in (None, 1, 3):
            errs.append(f"channels must be 1 or 3, got {self.channels}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            errs.append(f"fps must be a positive number, got {self.fps}")
        if not 0.0 <= self.heldout_fraction < 1.0:  # also rejects NaN
            errs.append(f"heldout_fraction must lie in [0, 1), got {self.heldout_fraction}")
        if self.timesteps < 2:
            errs.append(f"timesteps must be >= 2, got {self.timesteps}")
        if self.preview_steps > self.timesteps:
            errs.append(f"preview_steps ({self.preview_steps}) cannot exceed timesteps ({self.timesteps})")
        if not self.lr > 0 or not math.isfinite(self.lr):
            errs.append(f"lr must be a positive number, got {self.lr}")
        if self.lr_decay not in LR_DECAYS:
            errs.append(f"lr_decay must be one of {tuple(LR_DECAYS)}, got {self.lr_decay!r}")
        if not 0.0 <= self.lr_min <= self.lr:  # also rejects NaN
            errs.append(f"lr_min must lie in [0, lr = {self.lr}], got {self.lr_min}")
        for name in ("weight_decay", "grad_clip", "hybrid_lambda"):
            if getattr(self, name) < 0:
                errs.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            errs.append(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.image_fraction < 1.0:  # also rejects NaN
            errs.append(f"image_fraction must lie in [0, 1), got {self.image_fraction}")
        elif self.image_fraction > 0 and self.architecture in ARCHITECTURES:
            if not ARCHITECTURES[self.architecture].independent_frames:
                errs.append(f"image_fraction needs an architecture that takes independent frames; "
                            f"{self.architecture!r} does not")
            elif images_per_batch(self.image_fraction, self.batch_size) == 0:
                errs.append(f"image_fraction {self.image_fraction} of a batch of {self.batch_size} is no image "
                            "sample; raise it or --batch-size")
        if not 0.0 <= self.given_frames < 1.0:  # also rejects NaN
            errs.append(f"given_frames must lie in [0, 1), got {self.given_frames}")
        elif self.given_frames > 0:
            if self.learn_sigma:
                errs.append("given_frames needs an elementwise loss; the hybrid loss of learn_sigma is not one")
            if self.frames < 2:
                errs.append(f"given_frames needs clips of 2 or more frames, got frames = {self.frames}")
            if self.architecture in ARCHITECTURES and not ARCHITECTURES[self.architecture].frame_conditions:
                errs.append(f"given_frames needs an architecture with one condition per frame; "
                            f"{self.architecture!r} has one per sample")
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
        return configs.from_dict(cls, d, "training options")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    # --- derived

    @property
    def data_kind(self) -> str:
        return self.data.split(":", 1)[0]

    @property
    def data_path(self) -> str | None:
        return self.data.split(":", 1)[1] if ":" in self.data else None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _first_non_finite(v: Any, where: str) -> tuple[str, float] | None:
    """(position ``where.key[i]``, value) of the first NaN or infinity in a nested table or list."""
    if isinstance(v, float) and not math.isfinite(v):
        return where, v
    items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, (list, tuple)) else ()
    for k, x in items:
        found = _first_non_finite(x, f"{where}.{k}" if isinstance(v, dict) else f"{where}[{k}]")
        if found is not None:
            return found
    return None


# What each annotation of a TrainConfig field admits, and how to say it. Flags, JSON and TOML
# files all pass through here, so `steps = "ten"` in a file reads like `--steps ten`.
_TYPE_CHECKS: dict[str, tuple[Any, str]] = {
    "int": (_is_int, "an integer"),
    "int | None": (lambda v: v is None or _is_int(v), "an integer (or unset)"),
    "float": (_is_finite_number, "a finite number"),
    "float | None": (lambda v: v is None or _is_finite_number(v), "a finite number (or unset)"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "str | None": (lambda v: v is None or isinstance(v, str), "a string (or unset)"),
    "dict[str, Any]": (lambda v: isinstance(v, dict), "a table"),
    "dict[str, float]": (lambda v: isinstance(v, dict) and all(map(_is_finite_number, v.values())),
                         "a table of numbers"),
}


def type_errors(values: dict[str, Any]) -> list[str]:
    """One message per value of ``values`` whose type does not fit its TrainConfig field; NaN and
    infinity fit nowhere, also inside tables (``schedule_params``, ``model``). Keys that are not
    fields, and annotations outside the table, are left to other checks."""
    fields = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    errs = []
    for key, value in values.items():
        check = _TYPE_CHECKS.get(str(fields.get(key)))
        if check is None:
            continue
        bad = _first_non_finite(value, key)
        if bad is not None:
            errs.append(f"{bad[0]} must be a finite number, got {bad[1]}")
        elif not check[0](value):
            errs.append(f"{key} must be {check[1]}, got {value!r}")
    return errs


def _process_errors(cfg: TrainConfig) -> list[str]:
    """The noise-process options (spec 14, 16): a known family, a prediction it trains with ("" is
    replaced by its default here), and only the options that family reads."""
    if cfg.process not in vdm_ref.FAMILIES:
        return [f"process must be one of {tuple(vdm_ref.FAMILIES)}, got {cfg.process!r}"]
    allowed = vdm_ref.FAMILIES[cfg.process].predictions
    if not cfg.prediction:
        object.__setattr__(cfg, "prediction", allowed[0])  # frozen: set once, before anyone reads it
    errs = []
    if cfg.prediction not in allowed:
        errs.append(f"prediction must be one of {allowed} for process {cfg.process!r}, got {cfg.prediction!r}")
    for family, names in _FAMILY_OPTIONS.items():
        changed = [n for n in names if getattr(cfg, n) != _default(n)]
        if cfg.process != family and changed:
            errs.append(f"process {cfg.process!r} does not use {', '.join(changed)} (only process {family!r} does)")
    if cfg.process == "flow":
        if cfg.flow_density not in vdm_ref.FLOW_DENSITIES:
            errs.append(f"flow_density must be one of {tuple(vdm_ref.FLOW_DENSITIES)}, got {cfg.flow_density!r}")
        else:
            try:  # the reference checks parameter names and ranges and the shift
                vdm_ref.flow_level_from_uniform(0.5, cfg.flow_density, cfg.flow_shift, **cfg.flow_density_params)
            except (ValueError, TypeError) as exc:
                errs.append(f"flow options: {exc}")
    if not cfg.sigma_data > 0:
        errs.append(f"sigma_data must be > 0, got {cfg.sigma_data}")
    if not cfg.edm_p_std > 0:
        errs.append(f"edm_p_std must be > 0, got {cfg.edm_p_std}")
    return errs


def _default(name: str) -> Any:
    f = TrainConfig.__dataclass_fields__[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


# The options only one family reads (spec 16.1; vp's are its schedule's and learn_sigma).
_FAMILY_OPTIONS: dict[str, tuple[str, ...]] = {
    "vp": ("learn_sigma", "zero_terminal_snr", "schedule_params"),
    "flow": ("flow_density", "flow_density_params", "flow_shift"),
    "edm": ("sigma_data", "edm_p_mean", "edm_p_std"),
}


def train_process(cfg: TrainConfig) -> vdm_ref.Process:
    """The noise process a run trains (spec 14.7), as checkpoints record it."""
    return vdm_ref.Process(family=cfg.process, prediction=cfg.prediction, sigma_data=cfg.sigma_data)


# Options a resumed run may change; everything else must match the checkpoint's run.
RUNTIME_OPTIONS = frozenset({
    "steps", "out_dir", "checkpoint_every", "keep_checkpoints", "preview_every", "preview_num", "preview_steps",
    "log_every", "resume", "overwrite", "device", "num_workers", "threads", "cache", "cache_dir",
})

# The CPU quickstart: tiny U-Net (0.83 M params) on 8-frame 16x16 grayscale moving shapes, 400
# steps of batch 16, after which 20-step samples score coherent_fraction ~0.7-0.9 in `vdm eval`
# (real clips 1.0, noise 0.0). On vp, v-prediction mattered most (eps: ~0.25 at the same cost).
# One thread: on a small shared machine OpenMP's second thread mostly waits for a busy core, and
# on an idle one two threads gain little (benchmarks/bench_train.py measures the throughput).
# Rectified flow with logit-normal levels: on this budget it scored coherent 0.88 against vp-v's 0.78
# (benchmarks/bench_process.py, README). QUICKSTART_PROCESS_OPTIONS holds each family's measured options.
QUICKSTART_TRAIN = TrainConfig(
    preset="tiny", frames=8, size=16, channels=1, num_objects=1, schedule="cosine", timesteps=1000,
    process="flow", prediction="", flow_density="logit_normal",
    batch_size=16, steps=400, lr=1e-3, warmup_steps=50, grad_clip=1.0, ema_decay=0.99,
    checkpoint_every=200, preview_every=200, preview_steps=10, log_every=10, threads=1,
    out_dir="out/quickstart/train",
)
QUICKSTART_PROCESS_OPTIONS: dict[str, dict[str, Any]] = {
    "flow": {"flow_density": "logit_normal"}, "vp": {"prediction": "v"}, "edm": {},
}


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
        raise ValueError(f"cannot parse config file {path}: {one_line(exc, None)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a table/object of options")
    configs.check_keys(TrainConfig, data, f"config file {path}")
    errs = type_errors(data)
    if errs:
        raise ValueError(f"config file {path}: " + "; ".join(errs))
    return data


def resolve_config(file: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None,
                   base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default TrainConfig()) <- config file values <- explicit overrides (flags)."""
    merged = (base or TrainConfig()).to_dict()
    given = load_config_file(file) if file is not None else {}
    given.update({k: v for k, v in (overrides or {}).items() if v is not None})
    process = given.get("process", merged["process"])
    if process != merged["process"]:  # a new process starts from its own defaults, not the base's options
        if "prediction" not in given:
            merged["prediction"] = ""
        for family, names in _FAMILY_OPTIONS.items():
            for name in names:
                if family != process and name not in given:
                    merged[name] = _default(name)
    merged.update(given)
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
        from .checkpoint import CheckpointError

        raise CheckpointError(f"--resume checkpoint not found: {p}")
    return p


# --------------------------------------------------------------------------- model


def model_config(cfg: TrainConfig, num_classes: int = 0) -> Any:
    """The architecture config of a run: preset + overrides + the data's channels/frames/size."""
    overrides = {**cfg.model, "in_channels": data_channels(cfg), "frames": cfg.frames, "image_size": cfg.size,
                 "learn_sigma": cfg.learn_sigma, "num_classes": num_classes if cfg.conditional else 0}
    mc = preset(cfg.preset, cfg.architecture, **overrides)
    if cfg.size % mc.size_divisor:
        raise ValueError(f"size {cfg.size} must be a multiple of {mc.size_divisor} for preset {cfg.preset!r} "
                         f"(channel_mult={mc.channel_mult})")
    return mc
