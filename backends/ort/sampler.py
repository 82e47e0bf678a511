"""Sampling loop (spec 7.6) with the network and the sampler update both in ONNX Runtime.

Per step the host does integer/float64 schedule arithmetic only: it picks (t, s) (spec 6.4),
computes a few float32 coefficients (step_graph.step_coefficients) and hands them with the
step's noise to the step graph. Two loops:

- ``host``: plain ``session.run`` with NumPy arrays (on CPU these are wrapped, not copied);
- ``bound``: IOBinding with OrtValues allocated on the session's device. The latent, the model
  output and the guided model input stay on the device for the whole loop; per step only t, the
  coefficients and the step's noise go host -> device, and the sample comes back once at the end.

CUDA/TensorRT use ``bound``; CPU uses ``host`` unless told otherwise (benchmarks compare both).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import vdm_ref

from . import step_graph as sg
from .session import OrtDenoiser, StepSessions

NoiseArg = Any  # np.ndarray (N + 1, *shape) | np.random.Generator | int seed


@dataclass(frozen=True)
class StepConfig:
    sampler: str = "ddim"
    prediction: str = "eps"
    variance: str = "fixed_small"
    eta: float = 0.0
    clip: float | None = None
    threshold: float | None = None
    threshold_floor: float = 1.0
    dtype: str = "float32"  # of the step graph (float64 only for the conformance kit)

    def check(self) -> None:
        if self.sampler not in STEP_VARIANTS:
            raise ValueError(f"argument 'sampler': unknown sampler {self.sampler!r}; "
                             f"choose one of {tuple(STEP_VARIANTS)}")
        if self.prediction not in vdm_ref.PREDICTIONS:
            raise ValueError(f"argument 'prediction': unknown prediction {self.prediction!r}")
        if self.variance not in vdm_ref.VARIANCES:
            raise ValueError(f"argument 'variance': unknown variance {self.variance!r}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"argument 'eta' must lie in [0, 1], got {self.eta}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"argument 'clip' must be > 0, got {self.clip}")
        if self.threshold is not None and not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"argument 'threshold' must lie in (0, 1], got {self.threshold}")

    def spec(self, s: np.ndarray, *, guidance: bool = False) -> sg.StepSpec:
        """Graph variant for a step landing on s (a (B,) vector)."""
        noise, learned = STEP_VARIANTS[self.sampler](self, np.asarray(s))
        return sg.StepSpec(self.sampler, learned=learned, clip=self.clip is not None,
                           threshold=self.threshold is not None, noise=noise, guidance=guidance,
                           dtype=self.dtype)

    def feeds(self, spec: sg.StepSpec, sched: vdm_ref.Schedule, t: np.ndarray, s: np.ndarray,
              shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        """Host-side inputs of one step: the coefficients and the processing scalars."""
        coefs = sg.step_coefficients(spec, sched, t, s, prediction=self.prediction, variance=self.variance,
                                     eta=self.eta)
        real = sg.DTYPES[self.dtype][1]
        feeds = {"coef": sg.coef_input(coefs, len(shape), self.dtype)}
        if spec.clip:
            feeds["clip"] = np.array(self.clip, real)
        if spec.threshold:
            feeds.update(sg.quantile_inputs(int(np.prod(shape[1:])), float(self.threshold), self.threshold_floor,
                                            self.dtype))
        return feeds


def _ddim_variant(cfg: StepConfig, ss: np.ndarray) -> tuple[bool, bool]:
    return cfg.eta > 0.0 and bool(np.any(ss >= 0)), False  # sigma = 0 when landing on s = -1


def _ddpm_variant(cfg: StepConfig, ss: np.ndarray) -> tuple[bool, bool]:
    return bool(np.any(ss >= 0)), cfg.variance == "learned_range"


# sampler -> (config, s) -> (whether the step adds noise, whether its std comes from the variance channels)
STEP_VARIANTS = {"ddim": _ddim_variant, "ddpm": _ddpm_variant}


def noise_source(noise: NoiseArg, n_steps: int, shape: tuple[int, ...],
                 dtype: type = np.float32) -> Callable[[int], np.ndarray]:
    """Entry i of the spec 7.6 noise array (N + 1, *shape) as ``dtype``. A Generator or an int
    seed draws float64 standard normals entry by entry, the same stream as one
    ``rng.standard_normal((N + 1, *shape))`` call, without holding all N + 1 entries."""
    if isinstance(noise, (int, np.integer)) and not isinstance(noise, bool):
        noise = np.random.default_rng(int(noise))
    if isinstance(noise, np.random.Generator):
        rng = noise
        drawn = [-1]

        def draw(i: int) -> np.ndarray:
            if i != drawn[0] + 1:
                raise RuntimeError("generator noise must be drawn in order")
            drawn[0] = i
            return rng.standard_normal(shape).astype(dtype)

        return draw
    arr = np.asarray(noise)
    if arr.shape != (n_steps + 1, *shape):
        raise ValueError(f"argument 'noise' must have shape (N + 1, *shape) = {(n_steps + 1, *shape)}, "
                         f"got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("argument 'noise' contains NaN or Inf")
    return lambda i: np.ascontiguousarray(arr[i], dtype=dtype)


def check_timesteps(timesteps: Any, T: int) -> list[tuple[int, int]]:
    steps = np.asarray(timesteps, dtype=np.int64)
    if steps.ndim != 1 or len(steps) == 0 or np.any(np.diff(steps) >= 0):
        raise ValueError("argument 'timesteps' must be a non-empty, strictly decreasing sequence (spec 6)")
    if steps[0] > T - 1 or steps[-1] < 0:
        raise ValueError(f"argument 'timesteps' must lie in [0, {T - 1}]")
    return vdm_ref.step_pairs(steps)


def sample_host(
    model: Callable[[np.ndarray, np.ndarray], np.ndarray],
    sched: vdm_ref.Schedule,
    timesteps: Any,
    shape: tuple[int, ...],
    noise: NoiseArg,
    cfg: StepConfig,
    steps: StepSessions,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Spec 7.6 with any host model ``model(x_t, t int64 (B,)) -> out``; each update runs in the
    ORT step graph (in ``cfg.dtype``). Returns x_{-1}."""
    cfg.check()
    pairs = check_timesteps(timesteps, sched.T)
    shape = tuple(int(d) for d in shape)
    real = sg.DTYPES[cfg.dtype][1]
    z = noise_source(noise, len(pairs), shape, real)
    x = z(0)
    for i, (t, s) in enumerate(pairs):
        tv, sv = np.full(shape[0], t, np.int64), np.full(shape[0], s, np.int64)
        out = np.asarray(model(x, tv), dtype=real)
        spec = cfg.spec(sv)
        feeds = {"x": x, "out": np.ascontiguousarray(out), **cfg.feeds(spec, sched, tv, sv, shape)}
        if spec.noise:
            feeds["noise"] = z(i + 1)
        x = steps.step(spec, feeds)[0]
        if progress is not None:
            progress(i + 1, len(pairs))
    return x


class OrtSampler:
    """Samples an exported denoiser: network and sampler update in ONNX Runtime on one device."""

    def __init__(self, denoiser: OrtDenoiser, *, io_binding: bool | None = None) -> None:
        self.denoiser = denoiser
        self.info = denoiser.info
        self.sched = denoiser.info.make_schedule()
        self.steps = StepSessions(denoiser.choice)
        self.io_binding = (denoiser.device != "cpu") if io_binding is None else io_binding

    def config(self, *, sampler: str = "ddim", eta: float = 0.0, clip: float | None = 1.0,
               threshold: float | None = None) -> StepConfig:
        variance = self.info.variance
        cfg = StepConfig(sampler, self.info.prediction, variance, eta, clip, threshold)
        cfg.check()
        return cfg

    def sample(
        self,
        timesteps: Any,
        shape: tuple[int, ...],
        noise: NoiseArg,
        *,
        sampler: str = "ddim",
        eta: float = 0.0,
        clip: float | None = 1.0,
        threshold: float | None = None,
        labels: np.ndarray | None = None,
        guidance: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Samples (B, C, T, H, W) float32. ``labels`` (B,) for a conditional model (default: the
        null class); ``guidance`` w enables classifier-free guidance (spec 7.5)."""
        info = self.info
        cfg = self.config(sampler=sampler, eta=eta, clip=clip, threshold=threshold)
        shape = tuple(int(d) for d in shape)
        b, c, f, h, w_ = shape
        if c != info.in_channels or h != w_:
            raise ValueError(f"shape {shape} must be (B, {info.in_channels}, T, S, S)")
        self.denoiser.check_shape(b, f, h)
        y = None
        if labels is not None or info.conditional:
            if not info.conditional:
                raise ValueError("class labels given but the model is unconditional")
            y = np.full(b, info.null_class, np.int64) if labels is None else np.asarray(labels, np.int64)
            if y.shape != (b,) or y.min() < 0 or y.max() > info.num_classes:
                raise ValueError(f"labels must be {b} integers in [0, {info.num_classes - 1}] "
                                 f"(or {info.null_class}, the null class)")
        if guidance is not None and not info.guidance:
            raise ValueError("guidance needs a class-conditional model; this model is unconditional")
        guided = guidance is not None and guidance != 1.0
        pairs = check_timesteps(timesteps, self.sched.T)
        z = noise_source(noise, len(pairs), shape)
        if self.io_binding and self._bindable(2 * b if guided else b):
            return self._sample_bound(pairs, shape, z, cfg, y, guidance if guided else None, progress)
        return self._sample_plain(pairs, shape, z, cfg, y, guidance if guided else None, progress)

    def _bindable(self, model_batch: int) -> bool:
        bd = self.info.batch
        return not bd.fixed or model_batch == bd.min

    def _model_inputs(self, b: int, y: np.ndarray | None, w: float | None) -> np.ndarray | None:
        if y is None:
            return None
        return np.concatenate([y, np.full(b, self.info.null_class, np.int64)]) if w is not None else y

    def _sample_plain(self, pairs: list[tuple[int, int]], shape: tuple[int, ...], z: Callable[[int], np.ndarray],
                      cfg: StepConfig, y: np.ndarray | None, w: float | None,
                      progress: Callable[[int, int], None] | None) -> np.ndarray:
        b = shape[0]
        ym = self._model_inputs(b, y, w)
        x = z(0)
        xm = np.concatenate([x, x]) if w is not None else x
        for i, (t, s) in enumerate(pairs):
            out = self.denoiser(xm, np.full(xm.shape[0], t, np.float32), ym)
            sv = np.full(b, s, np.int64)
            spec = cfg.spec(sv, guidance=w is not None)
            feeds = {"x": x, "out": out, **cfg.feeds(spec, self.sched, np.full(b, t, np.int64), sv, shape)}
            if spec.noise:
                feeds["noise"] = z(i + 1)
            if w is not None:
                feeds["w"] = np.array(w, np.float32)
            res = self.steps.step(spec, feeds)
            x = res[0]
            xm = res[1] if w is not None else x
            if progress is not None:
                progress(i + 1, len(pairs))
        return x

    def _sample_bound(self, pairs: list[tuple[int, int]], shape: tuple[int, ...], z: Callable[[int], np.ndarray],
                      cfg: StepConfig, y: np.ndarray | None, w: float | None,
                      progress: Callable[[int, int], None] | None) -> np.ndarray:
        from onnxruntime import OrtValue

        dev = "cpu" if self.denoiser.device == "cpu" else "cuda"
        b = shape[0]
        bm = 2 * b if w is not None else b
        out_shape = (bm, self.info.out_channels, *shape[2:])
        # Every buffer is allocated by ORT on the device and filled by copy: an OrtValue made with
        # ortvalue_from_numpy on CPU would alias (and the loop overwrite) the caller's array.
        def alloc(shape_: tuple[int, ...], dtype: type = np.float32) -> Any:
            return OrtValue.ortvalue_from_shape_and_type(list(shape_), dtype, dev, 0)

        x0 = z(0)
        xa, xb = alloc(shape), alloc(shape)
        xa.update_inplace(np.ascontiguousarray(x0))
        xm = None
        if w is not None:
            xm = alloc((bm, *shape[1:]))
            xm.update_inplace(np.concatenate([x0, x0]))
        outv = alloc(out_shape)
        noisev = alloc(shape)
        ym = self._model_inputs(b, y, w)
        yv = None
        if ym is not None:
            yv = alloc(ym.shape, np.int64)
            yv.update_inplace(np.ascontiguousarray(ym, np.int64))
        msess = self.denoiser.session
        mbind = msess.io_binding()
        mbind.bind_ortvalue_output("out", outv)
        if yv is not None:
            mbind.bind_ortvalue_input("y", yv)
        for i, (t, s) in enumerate(pairs):
            # bind_cpu_input does not own its array: keep every host array alive until run returns.
            host = {"t": self.denoiser.conditions(np.full(bm, t, np.float32), shape[2])}
            mbind.bind_ortvalue_input("x", xm if xm is not None else xa)
            mbind.bind_cpu_input("t", host["t"])
            msess.run_with_iobinding(mbind)
            sv = np.full(b, s, np.int64)
            spec = cfg.spec(sv, guidance=w is not None)
            ssess = self.steps.get(spec)
            sbind = ssess.io_binding()
            sbind.bind_ortvalue_input("x", xa)
            sbind.bind_ortvalue_input("out", outv)
            host.update(cfg.feeds(spec, self.sched, np.full(b, t, np.int64), sv, shape))
            if w is not None:
                host["w"] = np.array(w, np.float32)
                sbind.bind_ortvalue_output("x_model", xm)
            for name, value in host.items():
                if name != "t":
                    sbind.bind_cpu_input(name, value)
            if spec.noise:
                noisev.update_inplace(z(i + 1))
                sbind.bind_ortvalue_input("noise", noisev)
            sbind.bind_ortvalue_output("x_next", xb)
            ssess.run_with_iobinding(sbind)
            xa, xb = xb, xa
            if progress is not None:
                progress(i + 1, len(pairs))
        return xa.numpy()
