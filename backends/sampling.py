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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import vdm_ref

from .files import one_line

BACKENDS = ("torch", "ort")
DEVICES = {"torch": ("cpu", "cuda"), "ort": ("cpu", "cuda", "tensorrt")}

Progress = Callable[[int, int], None]  # (steps done, steps in total) over all batches


class SamplingError(ValueError):
    """Bad input for sampling; the message is one line for the user."""


# Every sampler: the v1 DDPM/DDIM loops (spec 7, vp only) and the solvers on (alpha, sigma) (spec 17).
SAMPLER_NAMES: tuple[str, ...] = (*vdm_ref.SAMPLERS, *vdm_ref.SOLVERS)
# The sampler a command uses when none is given, per noise process: v1's DDIM on vp; on flow and edm the
# first-order solver (benchmarks/bench_process.py: heun at half the steps matches it, nothing beats it).
# Conditional sampling (spec 18) runs on the solvers, so it takes euler on vp too.
DEFAULT_SAMPLERS: dict[str, str] = {"vp": "ddim", "flow": "euler", "edm": "euler"}
CONDITIONAL_DEFAULT_SAMPLER = "euler"

# eta's default where a sampler reads it: DDIM deterministic (7.4), euler_ancestral fully ancestral (17.5).
DEFAULT_ETA: dict[str, float] = {"ddpm": 0.0, "ddim": 0.0, "euler_ancestral": 1.0}


@dataclass(frozen=True)
class SamplingOptions:
    sampler: str = "ddim"  # a row of vdm_ref.SAMPLERS (vp only) or vdm_ref.SOLVERS (every process)
    steps: int = 50  # solver steps (network calls, except heun: about 2 per step)
    spacing: str = "trailing"  # a row of vdm_ref.SPACINGS (spec 6): the timesteps of a vp model
    eta: float | None = None  # DDIM / euler_ancestral noise scale (spec 7.4, 17.5); None = DEFAULT_ETA
    shift: float | None = None  # flow models: the time shift of spec 15.2; None = 1 (no shift)
    karras: bool | None = None  # edm models: Karras rho = 7 levels (15.5, the default) or uniform sigmas (15.1)
    final: str = "zero"  # the solvers' final level (15.6): "zero" or "sigma_min"
    clip: float | None = 1.0  # static clipping of the x0 prediction (spec 7.1); None = off
    threshold: float | None = None  # dynamic thresholding quantile (spec 7.2); None = off
    guidance: float | None = None  # classifier-free guidance scale (spec 7.5); None or 1 = off
    klass: int | None = None  # class of every sample of a conditional model; None = cycle
    batch_size: int = 8  # samples per network batch (does not change the samples)
    frames: int | None = None  # None = the model's
    size: int | None = None  # height = width; None = the model's

    @property
    def eta_value(self) -> float:
        return self.eta if self.eta is not None else DEFAULT_ETA.get(self.sampler, 0.0)

    def check(self) -> None:
        if self.sampler not in SAMPLER_NAMES:
            raise SamplingError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLER_NAMES)}")
        if self.spacing not in vdm_ref.SPACINGS:
            raise SamplingError(f"unknown spacing {self.spacing!r}; choose one of {', '.join(vdm_ref.SPACINGS)}")
        if self.steps < 1 or self.batch_size < 1:
            raise SamplingError(f"steps and batch size must be >= 1, got {self.steps} and {self.batch_size}")
        if self.eta is not None and not 0.0 <= self.eta <= 1.0:
            raise SamplingError(f"eta must lie in [0, 1], got {self.eta}")
        if self.eta is not None and self.eta > 0 and self.sampler not in DEFAULT_ETA:
            raise SamplingError(f"eta applies to {', '.join(DEFAULT_ETA)}; the {self.sampler} solver is deterministic")
        if self.shift is not None and not (np.isfinite(self.shift) and self.shift > 0):
            raise SamplingError(f"shift must be a positive number, got {self.shift}")
        if self.final not in vdm_ref.sigmas.FINAL_LEVELS:
            raise SamplingError(f"unknown final level {self.final!r}; choose one of "
                                f"{', '.join(vdm_ref.sigmas.FINAL_LEVELS)}")
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
    timesteps: np.ndarray  # (N,) int64, strictly decreasing (the DDPM/DDIM loops of spec 7)
    levels: Levels | None = None  # the solvers' grid (spec 17.1); None for DDPM/DDIM

    @property
    def n_steps(self) -> int:
        return len(self.timesteps) if self.levels is None else self.levels.n_steps


@dataclass(frozen=True)
class Levels:
    """A solver's noise levels (spec 17.1) and what the network sees at each (14.2): the N + 1 levels
    in the family's own terms (t, s or sigma; the final level last), their (alpha, sigma), and for
    every level with sigma > 0 (all but a final level of zero; heun calls the network at level i + 1)
    its condition (t, 1000 s or ln(sigma)/4) and input scale."""

    levels: np.ndarray  # (N + 1,)
    alphas: np.ndarray  # (N + 1,) float64
    sigmas: np.ndarray  # (N + 1,) float64
    conditions: np.ndarray  # (N,) or (N + 1,) float64
    input_scales: np.ndarray  # like conditions
    process: vdm_ref.Process

    @property
    def n_steps(self) -> int:
        return len(self.levels) - 1

    def x0_coefficients(self) -> tuple[np.ndarray, np.ndarray]:
        """(a_i, b_i) at the called levels: x0_hat = a_i x + b_i out for the model's prediction type (spec 14.3)."""
        n = len(self.conditions)
        c = vdm_ref.processes.PREDICTION_TYPES[self.process.prediction].to_x0_eps(
            self.alphas[:n], self.sigmas[:n], self.process.sigma_data)
        return np.broadcast_to(c.x0_x, self.conditions.shape), np.broadcast_to(c.x0_out, self.conditions.shape)

    def initial_scale(self) -> float:
        """x at level 0 is sqrt(alpha_0^2 + sigma_0^2) z: exactly z for vp and for flow at s = 1, and
        sqrt(1 + sigma_max^2) z for edm (the spread of x_0 for data of unit variance)."""
        return float(np.hypot(self.alphas[0], self.sigmas[0]))


def _vp_levels(model: LoadedModel, o: SamplingOptions) -> np.ndarray:
    """vp: the timesteps of spec 6, then t = -1 (abar = 1, "zero") or timestep 0 ("sigma_min")."""
    t = vdm_ref.inference_timesteps(model.T, o.steps, o.spacing)
    if o.final == "sigma_min":
        return t if t[-1] == 0 else np.append(t, 0)  # 17.1: a repeated last level is dropped
    return np.append(t, -1)


def _flow_levels(model: LoadedModel, o: SamplingOptions) -> np.ndarray:
    """flow: uniform s from 1, the shift once (15.2), the final level (15.6)."""
    return vdm_ref.sigmas.flow_levels(o.steps, shift=1.0 if o.shift is None else o.shift, final=o.final)


def _edm_levels(model: LoadedModel, o: SamplingOptions) -> np.ndarray:
    """edm: Karras (15.5) or uniform (15.1) sigmas in [sigma_min, sigma_max], the final level (15.6)."""
    p = model.process
    sig = (vdm_ref.sigmas.karras_sigmas(o.steps, p.sigma_min, p.sigma_max) if o.karras is not False
           else vdm_ref.sigmas.uniform_levels(o.steps, p.sigma_max, p.sigma_min))
    levels = vdm_ref.sigmas.with_final_level(sig, o.final, p.sigma_min)
    # 17.1: a repeated last level is dropped (Karras' last level is sigma_min up to rounding of the rho power).
    return levels[:-1] if np.isclose(levels[-1], levels[-2], rtol=1e-9, atol=0.0) else levels


# family -> its N + 1 sampling levels (spec 15)
LEVELS: dict[str, Callable[[LoadedModel, SamplingOptions], np.ndarray]] = {
    "vp": _vp_levels, "flow": _flow_levels, "edm": _edm_levels,
}


def solver_levels(model: LoadedModel, options: SamplingOptions) -> Levels:
    """The grid a solver runs on for ``model`` (spec 15, 17.1), validated by vdm_ref.solver_grid."""
    p = model.process
    if options.karras is not None and p.family != "edm":
        raise SamplingError(f"--karras/--no-karras choose edm sigmas; this is a {p.family} model "
                            "(vp: its network sees integer timesteps, choose them with --spacing; flow: use --shift)")
    if options.shift is not None and p.family != "flow":
        raise SamplingError(f"--shift applies to flow models (spec 15.2); this is a {p.family} model")
    levels = LEVELS[p.family](model, options)
    sched = model.schedule if p.family == "vp" else None
    alphas, sigmas = vdm_ref.processes.alpha_sigma(p.family, levels, sched=sched)
    vdm_ref.solver_grid(alphas, sigmas)
    called = levels[sigmas > 0]  # 17.1: only the final level can have sigma = 0
    cond = vdm_ref.processes.network_condition(p.family, called, sigma_data=p.sigma_data).astype(np.float64)
    scale = vdm_ref.processes.input_scale(p.family, called, sigma_data=p.sigma_data)
    out = Levels(levels, alphas, sigmas, cond, scale, p)
    try:
        out.x0_coefficients()
    except ValueError as exc:
        raise SamplingError(f"{exc}; this grid starts at a level the model's prediction cannot use") from None
    return out


CONDITION_METHODS = ("replacement", "reconstruction", "frames")  # spec 18.2, 18.3, 18.8


@dataclass(frozen=True)
class Conditioning:
    """Given frames for conditional sampling (spec 18): ``observed`` (num, C, F, H, W) in [-1, 1]
    holds them at the frames where ``mask`` (num, F) is 1 (other entries are ignored); ``method``
    replacement (18.2; its noise is each sample's initial noise, one forward path), reconstruction
    guidance (18.3) with weight ``weight``, or frames: the network itself sees the given frames, for a
    model trained with them (18.8). The result keeps the given frames (18.6)."""

    observed: np.ndarray
    mask: np.ndarray
    method: str = "reconstruction"
    weight: float = 5.0

    def check(self, plan: Plan) -> None:
        if not (np.isfinite(self.weight) and self.weight >= 0):
            raise SamplingError(f"the guidance weight must be a finite number >= 0, got {self.weight}")
        want = (plan.num, *plan.shape)
        if self.observed.shape != want:
            raise SamplingError(f"the given frames have shape {self.observed.shape}, the samples {want}")
        if self.mask.shape != (plan.num, plan.shape[1]) or not np.isin(self.mask, (0, 1)).all():
            raise SamplingError(f"the frame mask must be 0/1 of shape {(plan.num, plan.shape[1])}")
        if not np.isfinite(self.observed).all():
            raise SamplingError("the given frames contain NaN or infinite values")

    def batch(self, start: int, stop: int) -> Conditioning:
        return Conditioning(self.observed[start:stop], self.mask[start:stop], self.method, self.weight)


BatchFn = Callable[[Plan, np.ndarray, "np.ndarray | None", SamplingOptions, "Progress | None",
                    "Conditioning | None"], np.ndarray]


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
    run_batch: BatchFn  # (plan, noise (N + 1, b, C, T, H, W) float32, labels, options, progress, conditioning)
    #                      -> (b, C, T, H, W)
    process: vdm_ref.Process = vdm_ref.Process()  # the noise process it was trained on (spec 14.7)
    schedule: vdm_ref.Schedule | None = None  # vp: the abar table (spec 2)
    given_frames: bool = False  # trained with given frames: conditioning "frames" (spec 18.8) applies


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
    family = model.process.family
    if options.sampler in vdm_ref.SAMPLERS and family != "vp":
        raise SamplingError(f"the {options.sampler} sampler is defined on vp models (spec 7); this is a {family} "
                            f"model: choose one of {', '.join(vdm_ref.SOLVERS)}")
    if family == "vp" and not 1 <= options.steps <= model.T:
        raise SamplingError(f"steps must lie in [1, {model.T}] (the schedule has T={model.T}), got {options.steps}")
    labels = None
    if model.num_classes:
        labels = (np.full(num, options.klass, np.int64) if options.klass is not None
                  else np.arange(num, dtype=np.int64) % model.num_classes)
    if options.sampler in vdm_ref.SAMPLERS:
        timesteps = vdm_ref.inference_timesteps(model.T, options.steps, options.spacing)
        return Plan(num, (model.channels, frames, size, size), labels, timesteps)
    try:
        levels = solver_levels(model, options)
    except ValueError as exc:
        raise SamplingError(one_line(exc, None)) from None
    return Plan(num, (model.channels, frames, size, size), labels, np.zeros(0, np.int64), levels)


def sample_noise(seed: int, index: int, n_steps: int, shape: tuple[int, ...]) -> np.ndarray:
    """The spec 7.6 noise array (N + 1, *shape) of sample ``index`` of a run seeded ``seed``."""
    return np.random.default_rng([int(seed), int(index)]).standard_normal((n_steps + 1, *shape)).astype(np.float32)


def batch_noise(seed: int, plan: Plan, start: int, stop: int) -> np.ndarray:
    """The noise of samples ``start..stop-1`` stacked on axis 1: (N + 1, b, C, T, H, W) float32."""
    n = plan.n_steps
    return np.stack([sample_noise(seed, k, n, plan.shape) for k in range(start, stop)], axis=1)


def default_conditioning(model: LoadedModel) -> str:
    """The conditioning method for a model: frames if it was trained with given frames (spec 18.8),
    else reconstruction guidance on torch and replacement where there is no gradient (ONNX)."""
    if model.given_frames:
        return "frames"
    return "reconstruction" if model.backend == "torch" else "replacement"


def check_conditioning(model: LoadedModel, method: str) -> None:
    """A one-line SamplingError when ``method`` cannot run on ``model``."""
    if method not in CONDITION_METHODS:
        raise SamplingError(f"unknown conditioning {method!r}; choose one of {', '.join(CONDITION_METHODS)}")
    if method == "reconstruction" and model.backend != "torch":
        raise SamplingError("reconstruction guidance needs the gradient through the network, which the ONNX model "
                            "does not provide: use --condition replacement, or --backend torch with the checkpoint")
    if method == "frames" and not model.given_frames:
        raise SamplingError("conditioning 'frames' needs a model trained with given frames (vdm train "
                            "--given-frames); this one was not: use replacement or reconstruction")


def sample_videos(model: LoadedModel, num: int, seed: int = 0, options: SamplingOptions | None = None, *,
                  progress: Progress | None = None, condition: Conditioning | None = None) -> np.ndarray:
    """``num`` clips (num, C, T, H, W) float32 in [-1, 1] from ``model`` (see the module docstring);
    with ``condition``, clips that keep its given frames (spec 18, solvers of spec 17 only)."""
    options = options or SamplingOptions()
    plan = plan_sampling(model, num, options)
    if condition is not None:
        if plan.levels is None:
            raise SamplingError(f"conditional sampling runs on the solvers ({', '.join(vdm_ref.SOLVERS)}), not "
                                f"{options.sampler}; euler is DDIM with eta 0 (spec 17.3)")
        check_conditioning(model, condition.method)  # the method first: it also names unknown ones
        condition.check(plan)
    n, b = plan.n_steps, options.batch_size
    total = n * num
    out = []
    for start in range(0, num, b):
        stop = min(start + b, num)
        labels = None if plan.labels is None else plan.labels[start:stop]

        def step_done(i: int, _n: int, before: int = start * n, width: int = stop - start) -> None:
            if progress is not None:
                progress(before + i * width, total)

        try:
            x = model.run_batch(plan, batch_noise(seed, plan, start, stop), labels, options, step_done,
                                None if condition is None else condition.batch(start, stop))
        except ValueError as exc:
            raise SamplingError(one_line(exc, None)) from None
        x = np.asarray(x, np.float32)
        if not np.isfinite(x).all():  # clipping would hide it, and media files would show black frames
            raise SamplingError(f"samples {start}..{stop - 1} hold NaN or infinite values: the model's weights or "
                                "the options (e.g. an extreme --guidance) overflow; nothing was written")
        out.append(np.clip(x, -1.0, 1.0))
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
    process = process_from_meta(meta)
    net_dtype = next(net.parameters()).dtype

    def check_shape(_batch: int, _frames: int, size: int) -> None:
        if size % cfg.size_divisor:
            raise ValueError(f"this model takes sizes that are multiples of {cfg.size_divisor}, got {size}")

    def run_batch(plan: Plan, noise: np.ndarray, labels: np.ndarray | None, o: SamplingOptions,
                  progress: Progress | None, cond: Conditioning | None = None) -> np.ndarray:
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

        z = torch.from_numpy(noise).to(dev, torch.float64)
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                if plan.levels is not None:
                    x = _torch_solve(fn, plan.levels, z, o, cfg.in_channels, progress, cond, process)
                else:
                    x = ops.sample(fn, sched, [int(v) for v in plan.timesteps], noise.shape[1:], z,
                                   sampler=o.sampler, prediction=prediction, variance=variance, eta=o.eta_value,
                                   clip=o.clip, threshold=o.threshold, progress=progress)
        finally:
            net.train(was_training)
        return x.float().cpu().numpy()

    ref_sched = vdm_ref.make_schedule(sm["name"], int(sm["T"]), zero_terminal_snr=bool(sm.get("zero_terminal_snr")),
                                      **dict(sm.get("params") or {}))
    given_frames = float((meta.get("train") or {}).get("given_frames") or 0.0) > 0
    return LoadedModel("torch", description, cfg.in_channels, int(data.get("frames") or cfg.frames),
                       int(data.get("size") or cfg.image_size), cfg.num_classes, int(sm["T"]), check_shape, run_batch,
                       process, ref_sched, given_frames)


def process_of(meta: Mapping[str, Any]) -> vdm_ref.Process:
    """The noise process a checkpoint's or exported model's meta records (spec 14.7). Meta without a
    ``process`` (written before spec 2) is the vp process with its ``prediction``. Raises ValueError
    when the record is invalid or disagrees with ``prediction``."""
    record = meta.get("process")
    if not record:
        return vdm_ref.Process("vp", meta.get("prediction") or "")
    if not isinstance(record, Mapping):
        raise ValueError(f"'process' must be a table of {sorted(vdm_ref.Process.__dataclass_fields__)}, got {record!r}")
    process = vdm_ref.Process.from_dict(dict(record))
    if meta.get("prediction") and meta["prediction"] != process.prediction:
        raise ValueError(f"'prediction' {meta['prediction']!r} disagrees with the process's {process.prediction!r}")
    return process


def process_from_meta(meta: Mapping[str, Any]) -> vdm_ref.Process:
    """:func:`process_of` for sampling: an invalid record is a one-line :class:`SamplingError`."""
    try:
        return process_of(meta)
    except (TypeError, ValueError) as exc:
        raise SamplingError(f"the model's recorded noise process is invalid: {one_line(exc, None)}") from None


def _level_index(lv: Levels) -> dict[tuple[float, float], int]:
    """The called levels by their (alpha, sigma): a spec-18 wrapper hands the level back as that pair."""
    return {(float(lv.alphas[i]), float(lv.sigmas[i])): i for i in range(len(lv.conditions))}


def _torch_solve(fn: Callable[[Any, Any], Any], lv: Levels, z: Any, o: SamplingOptions, channels: int,
                 progress: Progress | None, cond: Conditioning | None = None,
                 process: vdm_ref.Process | None = None) -> Any:
    """A solver of spec 17 (torch, float64 update) driven by the network ``fn(x_in, condition) -> out``;
    with ``cond``, its denoiser wrapped by spec 18 (reconstruction guidance differentiates through it),
    or, for conditioning "frames", the network shown the given frames (18.8; ``process`` says how)."""
    import torch
    from vdm.backends.torch import conditioning as tc
    from vdm.backends.torch import ops

    a, b = lv.x0_coefficients()
    n = lv.n_steps
    index = _level_index(lv)

    def call(x: torch.Tensor, alpha: float, sigma: float) -> tuple[int, torch.Tensor, torch.Tensor]:
        i = index[(float(alpha), float(sigma))]
        if progress is not None:
            progress(min(i, n), n)
        c = torch.full((x.shape[0],), float(lv.conditions[i]), dtype=torch.float64, device=x.device)
        return i, x * float(lv.input_scales[i]), c

    def x0_of(i: int, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return ops.process_x0(float(a[i]) * x + float(b[i]) * out[:, :channels], o.clip, o.threshold)

    def denoise(x: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
        i, x_in, c = call(x, alpha, sigma)
        return x0_of(i, x, fn(x_in, c))  # a learned variance is not used here

    def denoise_frames(x: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
        i, x_in, c = call(x, alpha, sigma)
        x_in, c_frames = tc.given_frame_inputs(process, x_in, c, x_obs, mask)
        return torch.where(mask > 0, x_obs, x0_of(i, x, fn(x_in, c_frames)))

    x_start = z[0] * lv.initial_scale()
    wrapped, x_obs, mask = denoise, None, None
    if cond is not None:
        x_obs = torch.as_tensor(cond.observed, dtype=z.dtype, device=z.device)
        mask = torch.as_tensor(cond.mask, dtype=z.dtype, device=z.device)[:, None, :, None, None]
        wrapped = {"replacement": lambda: tc.with_replacement(denoise, x_obs, mask, z[0][None]),
                   "reconstruction": lambda: tc.with_reconstruction_guidance(denoise, x_obs, mask, float(cond.weight)),
                   "frames": lambda: denoise_frames}[cond.method]()
    opts = {"eta": o.eta_value} if "eta" in vdm_ref.SOLVERS[o.sampler].options else {}
    x = ops.solve(tc.denoiser_on_grid(wrapped, lv.alphas, lv.sigmas), x_start, lv.alphas, lv.sigmas, o.sampler,
                  z[1:], **opts)
    if progress is not None:
        progress(n, n)
    return x if cond is None else tc.keep_observed(x, x_obs, mask)


def _ort_solve(den: Any, lv: Levels, z: np.ndarray, labels: np.ndarray | None, o: SamplingOptions,
               channels: int, null_class: int | None, progress: Progress | None,
               cond: Conditioning | None = None, *, steps: Any = None, io_binding: bool | None = None) -> np.ndarray:
    """A solver of spec 17 with the network and every update in ONNX Runtime: the solver's step graphs
    (backends/ort/solver_steps.py), the latent and the multistep history kept on the device with
    IOBinding (default on CUDA). With ``cond``, replacement (18.2) runs the float64 reference loop on the
    host. Reconstruction guidance needs the network's gradient, which an ONNX model does not give:
    refused in one line. ``steps``: the StepSessions to reuse (one per loaded model)."""
    if cond is not None:
        return _ort_solve_host(den, lv, z, labels, o, channels, null_class, progress, cond)
    from vdm.backends.ort import solver_loop as sl
    from vdm.backends.ort import solver_steps as ss
    from vdm.backends.ort.session import StepSessions

    steps = steps if steps is not None else StepSessions(den.choice)
    program = ss.solver_program(o.sampler, vdm_ref.solver_grid(lv.alphas, lv.sigmas), eta=o.eta_value)
    a, b = lv.x0_coefficients()
    levels = sl.Levels(np.asarray(a), np.asarray(b), lv.input_scales)
    guided = labels is not None and o.guidance is not None and o.guidance != 1.0
    cfg = sl.SolveConfig(o.clip, o.threshold, guidance=o.guidance if guided else None)
    prepared = sl.prepare(program, levels, cfg)
    ym = np.concatenate([labels, np.full_like(labels, null_class)]) if guided else labels
    if ym is None and "y" in getattr(den, "input_names", ()):  # a conditional model called unconditionally
        ym = np.full(z.shape[1], null_class, np.int64)
    x = (z[0].astype(np.float64) * lv.initial_scale()).astype(np.float32)

    def draw(i: int) -> np.ndarray:  # step i's noise is entry i + 1 of the sample's noise (spec 7.6 / 17.2)
        return z[i + 1]

    n = lv.n_steps
    bind = (den.device != "cpu") if io_binding is None else io_binding
    if bind and (not den.info.batch.fixed or den.info.batch.min == (2 if guided else 1) * x.shape[0]):
        out = sl.run_bound(den.session, prepared, x, draw, steps, cfg, levels, lv.conditions, ym,
                           den.info.out_channels, "cpu" if den.device == "cpu" else "cuda", progress, n,
                           per_frame=den.info.given_frames)
    else:
        def net(xm: np.ndarray, i: int) -> np.ndarray:
            return den(xm, np.full(xm.shape[0], lv.conditions[i], np.float32), ym)

        out = sl.run_plain(net, prepared, x, draw, steps, cfg, levels, progress, n)
    if progress is not None:
        progress(n, n)
    return out


def _ort_solve_host(den: Any, lv: Levels, z: np.ndarray, labels: np.ndarray | None, o: SamplingOptions,
                    channels: int, null_class: int | None, progress: Progress | None,
                    cond: Conditioning | None = None) -> np.ndarray:
    """The float64 reference loop of spec 17 on the host, the network in ONNX Runtime; with ``cond``,
    replacement (18.2) wraps the denoiser, or the network is shown the given frames (18.8)."""
    from vdm_ref import conditioning as rc

    a, b = lv.x0_coefficients()
    n = lv.n_steps
    guided = labels is not None and o.guidance is not None and o.guidance != 1.0
    index = _level_index(lv)

    def denoise(x: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
        i = index[(float(alpha), float(sigma))]
        if progress is not None:
            progress(min(i, n), n)
        xin, t = x * lv.input_scales[i], np.full(x.shape[0], lv.conditions[i])
        if frames:  # spec 18.8: the given frames noise-free at the given level, one condition per frame
            xin, t = vdm_ref.given_frame_inputs(process, xin, t, x_obs, mask)
        xin, t = xin.astype(np.float32), t.astype(np.float32)
        if guided:
            null = np.full_like(labels, null_class)
            both = den(np.concatenate([xin, xin]), np.concatenate([t, t]), np.concatenate([labels, null]))
            cond, uncond = np.split(both.astype(np.float64), 2)
            out = vdm_ref.classifier_free_guidance(cond, uncond, o.guidance, channels)
        else:
            out = den(xin, t, labels).astype(np.float64)
        x0 = vdm_ref.process_x0(a[i] * x + b[i] * out[:, :channels], o.clip, o.threshold)
        return np.where(mask > 0, x_obs, x0) if frames else x0

    opts = {"eta": o.eta_value} if "eta" in vdm_ref.SOLVERS[o.sampler].options else {}
    zz = z.astype(np.float64)
    wrapped, frames = denoise, cond is not None and cond.method == "frames"
    process = process_from_meta({"process": den.info.process, "prediction": den.info.prediction}) if frames else None
    if cond is not None:
        x_obs = cond.observed.astype(np.float64)
        mask = cond.mask.astype(np.float64)[:, None, :, None, None]
        if not frames:
            wrapped = rc.with_replacement(denoise, x_obs, mask, zz[0][None])
    x = vdm_ref.solve(rc.denoiser_on_grid(wrapped, lv.alphas, lv.sigmas), zz[0] * lv.initial_scale(), lv.alphas,
                      lv.sigmas, o.sampler, zz[1:], **opts)
    if progress is not None:
        progress(n, n)
    if cond is not None:
        x = rc.keep_observed(x, x_obs, mask)
    return x.astype(np.float32)


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
                  progress: Progress | None, cond: Conditioning | None = None) -> np.ndarray:
        if plan.levels is not None:
            return _ort_solve(den, plan.levels, noise, labels, o, info.in_channels, info.null_class, progress, cond,
                              steps=smp.steps, io_binding=smp.io_binding)
        return smp.sample(plan.timesteps, noise.shape[1:], noise, labels=labels, guidance=o.guidance,
                          sampler=o.sampler, eta=o.eta_value, clip=o.clip, threshold=o.threshold, progress=progress)

    return LoadedModel("ort", f"onnxruntime {den.choice.provider_name} ({path.name})", info.in_channels,
                       info.frames.default, info.size.default, info.num_classes, len(info.abar), den.check_shape,
                       run_batch, process_from_meta({"process": info.process, "prediction": info.prediction}),
                       smp.sched, info.given_frames)


_LOADERS = {"torch": _load_torch, "ort": _load_ort}

__all__ = ["BACKENDS", "CONDITIONAL_DEFAULT_SAMPLER", "CONDITION_METHODS", "Conditioning", "DEFAULT_ETA",
           "check_conditioning", "default_conditioning",
           "DEFAULT_SAMPLERS", "DEVICES", "LEVELS", "Levels",
           "LoadedModel", "Plan", "SAMPLER_NAMES", "SamplingError", "SamplingOptions", "batch_noise", "load_model",
           "plan_sampling", "process_from_meta", "process_of", "sample_noise", "sample_videos", "solver_levels",
           "torch_model"]
