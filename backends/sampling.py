"""One path from a model plus sampler options plus a seed to videos.

``vdm sample`` (both backends), ``vdm eval``, the training previews, the quickstart and the
tests all sample through :func:`sample_videos`, so one seed and one set of options give the same
clips from every command: identical on one backend, and within float32 rounding between the
PyTorch and ONNX Runtime backends.

The contract (spec 7.6):

- noise: sample ``k`` of a run draws its whole noise array, shape (N + 1, C, T, H, W), from
  ``np.random.default_rng([seed, k])`` in float64, cast to float32. Sample ``k`` therefore
  does not depend on how many samples are asked for, nor on the batch size beyond the last-bit
  rounding of batched kernels (clips agree bit for bit at equal batch sizes);
- timesteps: ``vdm_ref.inference_timesteps(T, steps, spacing)``;
- labels of a class-conditional model: ``klass`` for every sample, else 0, 1, 2, ... cycling;
- the network runs in float32; the sampler update in float64 (torch) or in the float32 ONNX
  step graphs (ort); the result is clipped to [-1, 1].
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import vdm_ref

BACKENDS = ("torch", "ort")
DEVICES = {"torch": ("cpu", "cuda"), "ort": ("cpu", "cuda", "tensorrt")}

Progress = Callable[[int, int], None]  # (steps done, steps in total) over all batches


class SamplingError(ValueError):
    """Bad input for sampling; the message is one line for the user."""


@dataclass(frozen=True)
class SamplingOptions:
    sampler: str = "ddim"  # a row of vdm_ref.SAMPLERS
    steps: int = 50  # network calls per sample
    spacing: str = "trailing"  # a row of vdm_ref.SPACINGS (spec 6)
    eta: float = 0.0  # DDIM noise scale (spec 7.4)
    clip: float | None = 1.0  # static clipping of the x0 prediction (spec 7.1); None = off
    threshold: float | None = None  # dynamic thresholding quantile (spec 7.2); None = off
    guidance: float | None = None  # classifier-free guidance scale (spec 7.5); None or 1 = off
    klass: int | None = None  # class of every sample of a conditional model; None = cycle
    batch_size: int = 8  # samples per network batch (does not change the samples)
    frames: int | None = None  # None = the model's
    size: int | None = None  # height = width; None = the model's

    def check(self) -> None:
        if self.sampler not in vdm_ref.SAMPLERS:
            raise SamplingError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(vdm_ref.SAMPLERS)}")
        if self.spacing not in vdm_ref.SPACINGS:
            raise SamplingError(f"unknown spacing {self.spacing!r}; choose one of {', '.join(vdm_ref.SPACINGS)}")
        if self.steps < 1 or self.batch_size < 1:
            raise SamplingError(f"steps and batch size must be >= 1, got {self.steps} and {self.batch_size}")
        if not 0.0 <= self.eta <= 1.0:
            raise SamplingError(f"eta must lie in [0, 1], got {self.eta}")
        if self.clip is not None and not (self.clip > 0 and np.isfinite(self.clip)):
            raise SamplingError(f"clip must be a positive number, got {self.clip}")
        if self.threshold is not None and not 0.0 < self.threshold <= 1.0:
            raise SamplingError(f"threshold must lie in (0, 1], got {self.threshold}")
        if self.guidance is not None and not np.isfinite(self.guidance):
            raise SamplingError(f"guidance must be a finite number, got {self.guidance}")


@dataclass(frozen=True)
class Plan:
    """What one run samples, resolved against the model."""

    num: int
    shape: tuple[int, int, int, int]  # (C, T, H, W) of one sample
    labels: np.ndarray | None  # (num,) int64 for a conditional model
    timesteps: np.ndarray  # (N,) int64, strictly decreasing


BatchFn = Callable[[Plan, np.ndarray, "np.ndarray | None", SamplingOptions, "Progress | None"], np.ndarray]


@dataclass(frozen=True)
class LoadedModel:
    """A denoiser on one backend, ready to sample; build it with :func:`load_model` or :func:`torch_model`."""

    backend: str
    description: str  # for messages, e.g. "torch cpu (last.safetensors)"
    channels: int
    frames: int  # default frame count
    size: int  # default height = width
    num_classes: int  # 0 = unconditional
    T: int  # schedule length
    check_shape: Callable[[int, int, int], None]  # (batch, frames, size) -> raises ValueError
    run_batch: BatchFn  # (plan, noise (N + 1, b, C, T, H, W) float32, labels, options, progress) -> (b, C, T, H, W)


def plan_sampling(model: LoadedModel, num: int, options: SamplingOptions) -> Plan:
    """Validate ``options`` against ``model`` and resolve the shape, labels and timesteps."""
    options.check()
    if num < 1:
        raise SamplingError(f"the number of samples must be >= 1, got {num}")
    frames, size = options.frames or model.frames, options.size or model.size
    try:
        model.check_shape(min(options.batch_size, num), frames, size)
    except ValueError as exc:
        raise SamplingError(str(exc)) from None
    if options.klass is not None:
        if model.num_classes == 0:
            raise SamplingError("a class was given but the model is unconditional")
        if not 0 <= options.klass < model.num_classes:
            raise SamplingError(f"the class must lie in [0, {model.num_classes - 1}] for this model, "
                                f"got {options.klass}")
    if options.guidance is not None and model.num_classes == 0:
        raise SamplingError("guidance needs a class-conditional model; this model is unconditional")
    if not 1 <= options.steps <= model.T:
        raise SamplingError(f"steps must lie in [1, {model.T}] (the schedule has T={model.T}), got {options.steps}")
    labels = None
    if model.num_classes:
        labels = (np.full(num, options.klass, np.int64) if options.klass is not None
                  else np.arange(num, dtype=np.int64) % model.num_classes)
    timesteps = vdm_ref.inference_timesteps(model.T, options.steps, options.spacing)
    return Plan(num, (model.channels, frames, size, size), labels, timesteps)


def sample_noise(seed: int, index: int, n_steps: int, shape: tuple[int, ...]) -> np.ndarray:
    """The spec 7.6 noise array (N + 1, *shape) of sample ``index`` of a run seeded ``seed``."""
    return np.random.default_rng([int(seed), int(index)]).standard_normal((n_steps + 1, *shape)).astype(np.float32)


def batch_noise(seed: int, plan: Plan, start: int, stop: int) -> np.ndarray:
    """The noise of samples ``start..stop-1`` stacked on axis 1: (N + 1, b, C, T, H, W) float32."""
    n = len(plan.timesteps)
    return np.stack([sample_noise(seed, k, n, plan.shape) for k in range(start, stop)], axis=1)


def sample_videos(model: LoadedModel, num: int, seed: int = 0, options: SamplingOptions | None = None, *,
                  progress: Progress | None = None) -> np.ndarray:
    """``num`` clips (num, C, T, H, W) float32 in [-1, 1] from ``model`` (see the module docstring)."""
    options = options or SamplingOptions()
    plan = plan_sampling(model, num, options)
    n, b = len(plan.timesteps), options.batch_size
    total = n * num
    out = []
    for start in range(0, num, b):
        stop = min(start + b, num)
        labels = None if plan.labels is None else plan.labels[start:stop]

        def step_done(i: int, _n: int, before: int = start * n, width: int = stop - start) -> None:
            if progress is not None:
                progress(before + i * width, total)

        try:
            x = model.run_batch(plan, batch_noise(seed, plan, start, stop), labels, options, step_done)
        except ValueError as exc:
            raise SamplingError(" ".join(str(exc).split())) from None
        out.append(np.clip(np.asarray(x, np.float32), -1.0, 1.0))
    return np.concatenate(out)


# --------------------------------------------------------------------------- backends


def load_model(path: str | os.PathLike[str], backend: str = "torch", *, device: str = "cpu",
               allow_fallback: bool = False, raw: bool = False, max_batch: int = 16,
               warn: Callable[[str], None] | None = None) -> LoadedModel:
    """A checkpoint (``.safetensors``, torch) or an exported model (``.onnx``, ort) ready to sample.
    ``raw`` takes a checkpoint's raw weights instead of the EMA ones; ``max_batch`` sizes the
    TensorRT profiles (guidance runs [cond; uncond] in one call, so pass 2 x the batch size)."""
    if backend not in BACKENDS:
        raise SamplingError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if device not in DEVICES[backend]:
        raise SamplingError(f"device {device!r} is not available with backend {backend}; "
                            f"choose one of {', '.join(DEVICES[backend])}")
    path = Path(path)
    warn = warn or (lambda _line: None)
    return _LOADERS[backend](path, device, allow_fallback, raw, max_batch, warn)


def _load_torch(path: Path, device: str, allow_fallback: bool, raw: bool, _max_batch: int,
                warn: Callable[[str], None]) -> LoadedModel:
    import torch
    from vdm.backends.torch.training.checkpoint import CheckpointError
    from vdm.backends.torch.training.checkpoint import load_model as load_checkpoint_model

    if path.suffix.lower() == ".onnx":
        raise SamplingError(f"--backend torch needs a training checkpoint (.safetensors), got {path}; "
                            "use --backend ort for ONNX models")
    if device == "cuda" and not torch.cuda.is_available():
        if not allow_fallback:
            raise SamplingError("device 'cuda' unavailable: torch sees no CUDA GPU "
                                "(use --allow-fallback to run on CPU)")
        warn("warning: device 'cuda' unavailable (torch sees no CUDA GPU); falling back to CPU")
        device = "cpu"
    try:
        net, meta = load_checkpoint_model(path, ema=not raw, device=device)
    except CheckpointError as exc:
        raise SamplingError(str(exc)) from None
    return torch_model(net, meta, device, description=f"torch {device} ({path.name})")


def torch_model(net: Any, meta: dict[str, Any], device: Any = "cpu", *, description: str = "torch") -> LoadedModel:
    """An in-memory network (e.g. the EMA model during training) with its checkpoint meta."""
    import torch
    from vdm.backends.torch import ops

    cfg = net.config
    data = meta.get("data") or {}
    sm = meta["schedule"]
    dev = torch.device(device)
    sched = ops.make_schedule(sm["name"], int(sm["T"]), zero_terminal_snr=bool(sm.get("zero_terminal_snr", False)),
                              device=dev, dtype=torch.float64, **dict(sm.get("params") or {}))
    prediction, variance = meta["prediction"], meta.get("variance") or "fixed_small"
    net_dtype = next(net.parameters()).dtype

    def check_shape(_batch: int, _frames: int, size: int) -> None:
        if size % cfg.size_divisor:
            raise ValueError(f"this model takes sizes that are multiples of {cfg.size_divisor}, got {size}")

    def run_batch(plan: Plan, noise: np.ndarray, labels: np.ndarray | None, o: SamplingOptions,
                  progress: Progress | None) -> np.ndarray:
        y = None if labels is None else torch.as_tensor(labels, dtype=torch.long, device=dev)
        guided = y is not None and o.guidance is not None and o.guidance != 1.0

        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            tt, xm = t.to(dev).to(net_dtype), x.to(net_dtype)
            if not guided:
                return net(xm, tt, y).double()
            null = torch.full_like(y, cfg.num_classes)
            both = net(torch.cat([xm, xm]), torch.cat([tt, tt]), torch.cat([y, null])).double()
            cond, uncond = both.chunk(2)
            return ops.classifier_free_guidance(cond, uncond, o.guidance, cfg.in_channels)

        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                x = ops.sample(fn, sched, [int(v) for v in plan.timesteps], noise.shape[1:],
                               torch.from_numpy(noise).to(dev, torch.float64), sampler=o.sampler,
                               prediction=prediction, variance=variance, eta=o.eta, clip=o.clip,
                               threshold=o.threshold, progress=progress)
        finally:
            net.train(was_training)
        return x.float().cpu().numpy()

    return LoadedModel("torch", description, cfg.in_channels, int(data.get("frames") or cfg.frames),
                       int(data.get("size") or cfg.image_size), cfg.num_classes, int(sm["T"]), check_shape, run_batch)


def _load_ort(path: Path, device: str, allow_fallback: bool, _raw: bool, max_batch: int,
              warn: Callable[[str], None]) -> LoadedModel:
    from vdm.backends.ort.providers import ProviderUnavailable
    from vdm.backends.ort.sampler import OrtSampler
    from vdm.backends.ort.session import ModelFileError, OrtDenoiser

    if path.suffix.lower() == ".safetensors":
        raise SamplingError(f"--backend ort needs an exported ONNX model, got the checkpoint {path}; run "
                            f"`vdm export --ckpt {path} model.onnx` or use --backend torch")
    try:
        den = OrtDenoiser(path, device=device, allow_fallback=allow_fallback, warn=warn, max_batch=max_batch)
    except (ModelFileError, ProviderUnavailable) as exc:
        raise SamplingError(str(exc)) from None
    smp = OrtSampler(den)
    info = den.info

    def run_batch(plan: Plan, noise: np.ndarray, labels: np.ndarray | None, o: SamplingOptions,
                  progress: Progress | None) -> np.ndarray:
        return smp.sample(plan.timesteps, noise.shape[1:], noise, labels=labels, guidance=o.guidance,
                          sampler=o.sampler, eta=o.eta, clip=o.clip, threshold=o.threshold, progress=progress)

    return LoadedModel("ort", f"onnxruntime {den.choice.provider_name} ({path.name})", info.in_channels,
                       info.frames.default, info.size.default, info.num_classes, len(info.abar), den.check_shape,
                       run_batch)


_LOADERS = {"torch": _load_torch, "ort": _load_ort}

__all__ = ["BACKENDS", "DEVICES", "LoadedModel", "Plan", "SamplingError", "SamplingOptions", "batch_noise",
           "load_model", "plan_sampling", "sample_noise", "sample_videos", "torch_model"]
