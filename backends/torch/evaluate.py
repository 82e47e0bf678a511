"""Evaluation: sample a checkpoint and score the clips against real clips and pure noise.

Scores:

- the moving-shapes metrics (``moving_shapes.clip_metrics``): they only mean something beside
  the same numbers on real held-out clips and on noise, so the report always carries all three;
- optionally a Frechet distance between feature statistics (FVD when the features come from an
  I3D) with a feature network the user supplies as TorchScript (``.pt``) or ONNX (``.onnx``)
  mapping videos (N, C, T, H, W) in [-1, 1] to (N, D). Nothing is ever downloaded.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import CheckpointError, atomic_write_bytes, load_model

# Real reference clips come from this seed offset, far from any training seed's item range.
HELDOUT_SEED_OFFSET = 1_000_003


class EvalError(ValueError):
    """A one-line, user-facing evaluation error (bad feature file, bad samples file, ...)."""


# --------------------------------------------------------------------------- Frechet distance


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition; tiny
    negative eigenvalues from rounding are clipped to 0."""
    w, v = np.linalg.eigh((a + a.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr(sqrt(sigma1 sigma2)) for covariance matrices.

    sigma1 sigma2 is not symmetric, but it is similar to S = sqrt(sigma1) sigma2 sqrt(sigma1),
    which is symmetric PSD; so its eigenvalues are S's and the trace of its principal square
    root is sum(sqrt(eig(S))). This needs only ``eigh`` (no scipy.linalg.sqrtm)."""
    s1 = _sqrtm_psd(np.asarray(sigma1, dtype=np.float64))
    inner = s1 @ np.asarray(sigma2, dtype=np.float64) @ s1
    w = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared 2-Wasserstein (Frechet) distance between N(mu1, sigma1) and N(mu2, sigma2):
    ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrt(sigma1 sigma2)), in float64."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"frechet_distance needs mu (D,) and sigma (D, D) for both sides; got mu1 {mu1.shape}, "
                         f"sigma1 {sigma1.shape}, mu2 {mu2.shape}, sigma2 {sigma2.shape}")
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2))
    return max(value, 0.0)  # rounding can leave -1e-12 for identical statistics


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), N >= 2."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise EvalError(f"features must be (N, D) with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


# --------------------------------------------------------------------------- feature networks

FeatureFn = Callable[[np.ndarray], np.ndarray]


def load_feature_extractor(path: str | os.PathLike[str], *, device: str = "cpu",
                           batch_size: int = 16) -> FeatureFn:
    """Load a user-supplied feature network: TorchScript (``.pt``/``.pth``/``.ts``, via
    ``torch.jit.load``) or ONNX (``.onnx``, via onnxruntime on CPU). Returns a function
    mapping float32 videos (N, C, T, H, W) in [-1, 1] to float64 features (N, D)."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"feature network not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        try:
            import onnxruntime as ort

            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise EvalError(f"cannot load ONNX feature network {path}: {_one_line(exc)}") from None
        input_name = session.get_inputs()[0].name

        def run(batch: np.ndarray) -> np.ndarray:
            return np.asarray(session.run(None, {input_name: batch.astype(np.float32)})[0])
    elif suffix in (".pt", ".pth", ".ts", ".jit", ".torchscript"):
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated upstream but is the format asked for
                warnings.simplefilter("ignore", DeprecationWarning)
                net = torch.jit.load(str(path), map_location=device).eval()
        except Exception as exc:
            raise EvalError(f"cannot load TorchScript feature network {path}: {_one_line(exc)}") from None

        def run(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                out = net(torch.from_numpy(batch.astype(np.float32)).to(device))
            return out.float().cpu().numpy()
    else:
        raise EvalError(f"feature network {path}: unknown format {suffix!r}; use TorchScript (.pt) or ONNX (.onnx)")

    def extract(videos: np.ndarray) -> np.ndarray:
        chunks = []
        for i in range(0, len(videos), batch_size):
            try:
                out = run(np.ascontiguousarray(videos[i:i + batch_size]))
            except Exception as exc:
                raise EvalError(f"feature network {path} failed on input {videos[i:i + batch_size].shape}: "
                                f"{_one_line(exc)}") from None
            chunks.append(np.asarray(out, dtype=np.float64).reshape(out.shape[0], -1))
        feats = np.concatenate(chunks)
        if not np.all(np.isfinite(feats)):
            raise EvalError(f"feature network {path} returned NaN or Inf")
        return feats

    return extract


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) < 200 else text[:197] + "..."


# --------------------------------------------------------------------------- clip sources


def noise_clips(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Gaussian noise clipped to [-1, 1]: the 'no model at all' baseline."""
    return np.clip(np.random.default_rng([seed, 7]).standard_normal(shape), -1.0, 1.0).astype(np.float32)


def real_clips(data_meta: dict[str, Any], num: int, seed: int) -> np.ndarray:
    """``num`` real clips shaped like a checkpoint's ``data`` meta (frames, size, channels, ...).

    Moving shapes: fresh clips from the held-out seed ``seed + HELDOUT_SEED_OFFSET``. Video data
    (folder / ucf101): centre clips of a seeded choice of videos, from the UCF-101 test split
    when the run trained on the train split (else the same files); fewer than ``num`` videos are
    cycled."""
    kind = data_meta.get("kind", "moving_shapes")
    if kind == "moving_shapes":
        from .moving_shapes import MovingShapes

        ds = MovingShapes(num, moving_shapes_config(data_meta), base_seed=seed + HELDOUT_SEED_OFFSET)
        return ds.numpy_batch(range(num))[0]
    from . import video_data

    opts = data_meta.get("options") or {}
    clip = video_data.ClipSpec(frames=int(data_meta["frames"]), size=int(data_meta["size"]),
                               channels=int(data_meta["channels"]), frame_stride=int(opts.get("frame_stride", 1)),
                               mode="center")
    root = opts.get("root")
    if not root or not Path(root).is_dir():
        raise EvalError(f"the checkpoint's {kind} data folder {root!r} is not available for real reference clips")
    with warnings.catch_warnings():  # the training run already reported unusable files
        warnings.simplefilter("ignore")
        if kind == "ucf101":
            split = "test" if opts.get("split", "train") == "train" else "train"
            ds = video_data.UCF101(root, opts["split_dir"], split=split, fold=int(opts.get("fold", 1)), clip=clip)
        else:
            ds = video_data.VideoFolder(root, clip=clip)
    order = np.random.default_rng([seed, HELDOUT_SEED_OFFSET]).permutation(len(ds))
    return np.stack([ds[int(order[i % len(ds)])][0].numpy() for i in range(num)]).astype(np.float32)


def moving_shapes_config(data_meta: dict[str, Any]) -> Any:
    """MovingShapesConfig from a data meta dict, keeping only the fields the config knows."""
    import dataclasses

    from .moving_shapes import MovingShapesConfig

    known = {f.name for f in dataclasses.fields(MovingShapesConfig)}
    opts = dict(data_meta.get("options") or {})
    if "num_objects" in opts:
        opts.setdefault("min_objects", opts["num_objects"])
        opts.setdefault("max_objects", opts["num_objects"])
    for key in ("frames", "size", "channels"):
        if key in data_meta:
            opts[key] = data_meta[key]
    return MovingShapesConfig(**{k: v for k, v in opts.items() if k in known})


# --------------------------------------------------------------------------- sampling


def sample_videos(
    model: torch.nn.Module,
    meta: dict[str, Any],
    num: int,
    *,
    steps: int = 50,
    sampler: str = "ddim",
    eta: float = 0.0,
    seed: int = 0,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    frames: int | None = None,
    size: int | None = None,
    labels: np.ndarray | None = None,
    guidance: float = 1.0,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """``num`` clips (N, C, T, H, W) in [-1, 1] from a checkpoint's model with the torch sampler.

    Sampling noise comes from a private generator seeded with ``seed`` (the global RNG is left
    alone). Conditional models get ``labels`` (default: 0, 1, 2, ... cycling) with classifier-free
    guidance ``guidance`` (1 = plain conditional)."""
    from . import ops

    cfg = model.config
    data = meta.get("data", {})
    frames = int(frames or data.get("frames", cfg.frames))
    size = int(size or data.get("size", cfg.image_size))
    sched_meta = meta["schedule"]
    sched = ops.make_schedule(sched_meta["name"], int(sched_meta["T"]),
                              zero_terminal_snr=bool(sched_meta.get("zero_terminal_snr", False)),
                              device=torch.device(device), dtype=torch.float32, **sched_meta.get("params", {}))
    timesteps = ops.inference_timesteps(int(sched_meta["T"]), int(steps))
    prediction = meta.get("prediction", cfg.prediction)
    variance = meta.get("variance", "learned_range" if cfg.learn_sigma else "fixed_small")
    if sampler == "ddim" and variance == "learned_range":
        variance = "fixed_small"  # DDIM ignores the variance channels
    gen = torch.Generator().manual_seed(int(seed))
    if cfg.num_classes and labels is None:
        labels = np.arange(num) % cfg.num_classes
    out = []
    done = 0
    for start in range(0, num, batch_size):
        b = min(batch_size, num - start)
        shape = (b, cfg.in_channels, frames, size, size)
        noise = torch.randn((len(timesteps) + 1, *shape), generator=gen).to(device)
        y = None if labels is None else torch.as_tensor(labels[start:start + b], dtype=torch.long, device=device)
        fn = _model_fn(model, y, guidance, cfg.num_classes, cfg.in_channels)
        with torch.no_grad():
            x = ops.sample(fn, sched, timesteps, shape, noise, sampler=sampler, prediction=prediction,
                           variance=variance, eta=eta, clip=1.0)
        out.append(x.float().clamp(-1, 1).cpu().numpy())
        done += b
        if progress is not None:
            progress(done)
    return np.concatenate(out).astype(np.float32)


def _model_fn(model: torch.nn.Module, y: torch.Tensor | None, guidance: float, num_classes: int,
              channels: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Wrap the network as ``fn(x_t, t)`` for the sampler, with optional classifier-free guidance."""
    from . import ops

    dtype = next(model.parameters()).dtype

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.to(x.device).float()
        if y is None or guidance == 1.0:
            return model(x.to(dtype), tt, y).to(x.dtype)
        null = torch.full_like(y, num_classes)
        both = model(torch.cat([x, x]).to(dtype), torch.cat([tt, tt]), torch.cat([y, null])).to(x.dtype)
        cond, uncond = both.chunk(2)
        return ops.classifier_free_guidance(cond, uncond, guidance, channels)

    return fn


# --------------------------------------------------------------------------- evaluation


def metrics_of(videos: np.ndarray) -> dict[str, float]:
    from .moving_shapes import clip_metrics

    return {k: float(v) for k, v in clip_metrics(videos).items()}


def load_samples(path: str | os.PathLike[str]) -> np.ndarray:
    """A ``.npy`` (or ``.npz`` with one array / an array named 'samples') of videos (N, C, T, H, W)."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"samples file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
        if isinstance(arr, np.lib.npyio.NpzFile):
            arr = arr["samples"] if "samples" in arr.files else arr[arr.files[0]]
    except Exception as exc:
        raise EvalError(f"cannot read samples {path}: {_one_line(exc)}") from None
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 5 or arr.shape[0] < 1:
        raise EvalError(f"samples {path} must be (N, C, T, H, W), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise EvalError(f"samples {path} contain NaN or Inf")
    return arr


def evaluate(
    *,
    ckpt: str | os.PathLike[str] | None = None,
    samples: str | os.PathLike[str] | np.ndarray | None = None,
    num: int = 64,
    steps: int = 50,
    sampler: str = "ddim",
    eta: float = 0.0,
    seed: int = 0,
    batch_size: int = 16,
    device: str = "cpu",
    guidance: float = 1.0,
    features: str | os.PathLike[str] | None = None,
    num_objects: int | None = None,
    use_ema: bool = True,
    keep_videos: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Score samples (drawn from ``ckpt``, or given as ``samples``) beside real held-out clips
    (see :func:`real_clips`) and clipped Gaussian noise of the same shape. Returns the report dict:
    ``{"rows": {"samples"|"real"|"noise": {metric: value}}, "settings": {...}, ...}`` (plus the
    clips under ``"videos"`` with ``keep_videos``)."""
    if ckpt is None and samples is None:
        raise EvalError("give --ckpt (to sample) or --samples (to score given clips)")
    meta: dict[str, Any] = {}
    t0 = time.perf_counter()
    sample_seconds = None
    if samples is not None:
        videos = samples.astype(np.float32) if isinstance(samples, np.ndarray) else load_samples(samples)
        if ckpt is not None:
            from .checkpoint import read_meta

            meta = read_meta(ckpt)
    else:
        model, meta = load_model(ckpt, ema=use_ema, device=device)
        videos = sample_videos(model, meta, num, steps=steps, sampler=sampler, eta=eta, seed=seed,
                               batch_size=batch_size, device=device, guidance=guidance, progress=progress)
        sample_seconds = time.perf_counter() - t0
    n, c, t, h, w = videos.shape
    data_meta = dict(meta.get("data") or {})
    data_meta.update(frames=t, size=h, channels=c)
    if num_objects is not None:
        data_meta["options"] = {**(data_meta.get("options") or {}), "num_objects": num_objects,
                                "min_objects": num_objects, "max_objects": num_objects}
    real = real_clips(data_meta, n, seed)
    noise = noise_clips(videos.shape, seed)
    rows = {"samples": metrics_of(videos), "real": metrics_of(real), "noise": metrics_of(noise)}
    report: dict[str, Any] = {
        "rows": rows,
        "settings": {"ckpt": str(ckpt) if ckpt is not None else None,
                     "samples": None if samples is None or isinstance(samples, np.ndarray) else str(samples),
                     "num": n, "shape": [c, t, h, w], "steps": steps if samples is None else None,
                     "sampler": sampler if samples is None else None, "eta": eta, "seed": seed,
                     "guidance": guidance, "ema": use_ema, "real_seed": seed + HELDOUT_SEED_OFFSET},
        "checkpoint_step": meta.get("step"),
        "sample_seconds": sample_seconds,
    }
    if features is not None:
        extract = load_feature_extractor(features, device=device, batch_size=batch_size)
        stats = {name: feature_statistics(extract(v)) for name, v in
                 (("samples", videos), ("real", real), ("noise", noise))}
        # The distance to real clips of a second held-out draw anchors the scale (sampling noise floor).
        real2 = real_clips(data_meta, n, seed + 1)
        stats_real2 = feature_statistics(extract(real2))
        report["frechet"] = {
            "features": str(features),
            "samples_vs_real": frechet_distance(*stats["samples"], *stats["real"]),
            "real2_vs_real": frechet_distance(*stats_real2, *stats["real"]),
            "noise_vs_real": frechet_distance(*stats["noise"], *stats["real"]),
        }
        rows["samples"]["frechet_to_real"] = report["frechet"]["samples_vs_real"]
        rows["real"]["frechet_to_real"] = report["frechet"]["real2_vs_real"]
        rows["noise"]["frechet_to_real"] = report["frechet"]["noise_vs_real"]
    report["seconds"] = time.perf_counter() - t0
    if keep_videos:
        report["videos"] = videos
    return report


def write_report(path: str | os.PathLike[str], report: dict[str, Any]) -> Path:
    """Write the report as JSON atomically (NaN/Inf become null so any JSON parser reads it)."""
    def clean(o: Any) -> Any:
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    atomic_write_bytes(path, (json.dumps(clean(report), indent=2) + "\n").encode())
    return Path(path)


__all__ = [
    "CheckpointError", "EvalError", "frechet_distance", "trace_sqrt_product", "feature_statistics",
    "load_feature_extractor", "noise_clips", "real_clips", "sample_videos", "metrics_of", "load_samples",
    "evaluate", "write_report",
]
