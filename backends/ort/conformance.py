"""Conformance adapter for the ONNX Runtime step graphs (backends/conformance/README.md).

``vdm conformance vdm.backends.ort.conformance:OrtStepBackend --allow-missing [--dtype float32]``
checks the sampler and guidance clauses (7.1 - 7.6) and the solvers (17) as they run in ONNX Runtime
during ``vdm sample``: every call builds (once) and runs the same step graph the sampler uses, NumPy in
and out. ``vdm sample`` runs the float32 graphs; float64 builds the same graphs in double. Schedules,
timesteps and the forward-process/loss clauses are not part of the ORT backend (the network's
timestep tables are computed on the host from the exported float64 abar): those methods raise
NotImplementedError, which the kit reports as not implemented.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import vdm_ref

from .sampler import StepConfig, sample_host
from .session import StepSessions
from .solver_loop import solve_denoiser
from .step_graph import DTYPES

IMPLEMENTED = ("clip_x0", "dynamic_threshold", "ddpm_step", "ddim_step", "classifier_free_guidance", "sample", "solve")


def _real(name: str, x: Any, dtype: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"argument '{name}' contains NaN or Inf; the spec requires finite values")
    return np.ascontiguousarray(arr, dtype=DTYPES[dtype][1])


def _timesteps(name: str, t: Any, T: int, batch: int, *, allow_minus_one: bool) -> np.ndarray:
    return vdm_ref._checks.timesteps(name, t, T, batch, allow_minus_one=allow_minus_one)


class OrtStepBackend:
    """The sampler-update clauses of spec v1 run as ONNX graphs in ONNX Runtime (float32 as in
    ``vdm sample``, or float64)."""

    name = "ort"
    # The clauses these graphs implement (spec 7, 17); the kit skips every other op as out of scope.
    scope = IMPLEMENTED

    def __init__(self, device: str = "cpu", dtype: str = "float32") -> None:
        from .providers import ProviderUnavailable, choose_providers

        if dtype not in DTYPES:
            raise _backend_error(f"the ort step graphs compute in {' or '.join(DTYPES)}, not {dtype!r}")
        if device not in ("cpu", "cuda"):
            raise _backend_error(f"unknown device {device!r} for the ort backend; choose cpu or cuda")
        try:
            choice = choose_providers(device)
        except ProviderUnavailable as exc:
            raise _backend_error(str(exc)) from None
        import onnxruntime

        self.device, self.dtype = device, dtype
        self.version = f"onnxruntime {onnxruntime.__version__} ({choice.provider_name})"
        self._steps = StepSessions(choice, threads=1)

    # --- 7.1 / 7.2 ---------------------------------------------------------------------------

    def clip_x0(self, x0: np.ndarray, limit: float = 1.0) -> np.ndarray:
        if not limit > 0:
            raise ValueError(f"argument 'limit' must be > 0, got {limit}")
        return self._steps.process(_real("x0", x0, self.dtype), clip=float(limit), threshold=None, dtype=self.dtype)

    def dynamic_threshold(self, x0: np.ndarray, quantile: float = 0.995, floor: float = 1.0) -> np.ndarray:
        x = _real("x0", x0, self.dtype)
        if x.ndim < 1:
            raise ValueError("argument 'x0' must have a leading batch axis")
        return self._steps.process(x, clip=None, threshold=float(quantile), floor=float(floor), dtype=self.dtype)

    # --- 7.3 / 7.4 ---------------------------------------------------------------------------

    def _step(self, sampler: str, sched: vdm_ref.Schedule, x_t: Any, t: Any, s: Any, out: Any, noise: Any,
              cfg: StepConfig) -> np.ndarray:
        cfg.check()
        x = _real("x_t", x_t, self.dtype)
        b = x.shape[0]
        tt = _timesteps("t", t, sched.T, b, allow_minus_one=False)
        ss = _timesteps("s", s, sched.T, b, allow_minus_one=True)
        if np.any(ss >= tt):
            raise ValueError(f"argument 's' must be smaller than 't' (s={ss.tolist()}, t={tt.tolist()})")
        o = _real("out", out, self.dtype)
        if o.ndim != x.ndim or o.shape[0] != b or o.shape[1] not in (x.shape[1], 2 * x.shape[1]) \
                or o.shape[2:] != x.shape[2:]:
            raise ValueError(f"argument 'out' must have {x.shape[1]} or {2 * x.shape[1]} channels on axis 1 "
                             f"(x_t has shape {x.shape}), got shape {o.shape}")
        if sampler == "ddpm" and cfg.variance == "learned_range" and o.shape[1] != 2 * x.shape[1]:
            raise ValueError("variance 'learned_range' needs a model output with 2C channels")
        spec = cfg.spec(ss)
        feeds = {"x": x, "out": o, **cfg.feeds(spec, sched, tt, ss, x.shape)}
        if spec.noise:
            if noise is None:
                raise ValueError("argument 'noise' is required: this step is stochastic")
            n = _real("noise", noise, self.dtype)
            if n.shape != x.shape:
                raise ValueError(f"argument 'noise' has shape {n.shape} but 'x_t' has shape {x.shape}")
            feeds["noise"] = n
        return self._steps.step(spec, feeds)[0]

    def ddpm_step(self, sched: vdm_ref.Schedule, x_t: np.ndarray, t: Any, s: Any, out: np.ndarray,
                  noise: np.ndarray | None, *, prediction: str = "eps", variance: str = "fixed_small",
                  clip: float | None = None, threshold: float | None = None) -> np.ndarray:
        cfg = StepConfig("ddpm", prediction, variance, 0.0, clip, threshold, dtype=self.dtype)
        return self._step("ddpm", sched, x_t, t, s, out, noise, cfg)

    def ddim_step(self, sched: vdm_ref.Schedule, x_t: np.ndarray, t: Any, s: Any, out: np.ndarray,
                  noise: np.ndarray | None = None, *, prediction: str = "eps", eta: float = 0.0,
                  clip: float | None = None, threshold: float | None = None) -> np.ndarray:
        cfg = StepConfig("ddim", prediction, "fixed_small", float(eta), clip, threshold, dtype=self.dtype)
        return self._step("ddim", sched, x_t, t, s, out, noise, cfg)

    # --- 7.5 / 7.6 ---------------------------------------------------------------------------

    def classifier_free_guidance(self, out_cond: np.ndarray, out_uncond: np.ndarray, scale: float,
                                 channels: int | None = None) -> np.ndarray:
        cond, uncond = _real("out_cond", out_cond, self.dtype), _real("out_uncond", out_uncond, self.dtype)
        if cond.shape != uncond.shape:
            raise ValueError(f"argument 'out_uncond' has shape {uncond.shape} but 'out_cond' has shape {cond.shape}")
        return self._steps.guidance(cond, uncond, float(scale), channels, dtype=self.dtype)

    def sample(self, model: Any, sched: vdm_ref.Schedule, timesteps: Any, shape: tuple[int, ...], noise: Any, *,
               sampler: str = "ddim", prediction: str = "eps", variance: str = "fixed_small", eta: float = 0.0,
               clip: float | None = None, threshold: float | None = None) -> np.ndarray:
        cfg = StepConfig(sampler, prediction, variance, float(eta), clip, threshold, dtype=self.dtype)

        def host_model(x: np.ndarray, t: np.ndarray) -> np.ndarray:
            return np.asarray(model(x.astype(np.float64), t), dtype=DTYPES[self.dtype][1])

        return sample_host(host_model, sched, timesteps, tuple(shape), noise, cfg, self._steps)

    # --- 17 -----------------------------------------------------------------------------------

    def solve(self, denoise: Any, x: Any, alphas: Any, sigmas: Any, solver: str = "euler", noise: Any = None,
              **options: float) -> np.ndarray:
        """Spec 17.2 with every update in the solver step graphs ``vdm sample`` runs (solver_steps.py);
        ``denoise(x, i)`` is the kit's host callable returning x0_hat."""
        return solve_denoiser(denoise, x, alphas, sigmas, solver, noise, self._steps, dtype=self.dtype, **options)

    def __getattr__(self, op: str) -> Any:
        # Every other spec op: present, so the kit can report it, but not implemented here.
        if op.startswith("_") or op not in _other_ops():
            raise AttributeError(op)

        def not_implemented(*_args: Any, **_kwargs: Any) -> Any:
            raise NotImplementedError("not part of the ONNX Runtime step-graph backend (spec 7 and 17 only)")

        return not_implemented


def _other_ops() -> frozenset[str]:
    try:
        from vdm.backends.conformance.protocol import OPS
    except ImportError:
        OPS = ()
    return frozenset(OPS) - frozenset(IMPLEMENTED)


def _backend_error(message: str) -> Exception:
    try:
        from vdm.backends.conformance.adapters import BackendError

        return BackendError(message)
    except ImportError:  # the kit is optional for this module
        return RuntimeError(message)
