"""The solver loop (spec 17.2) in ONNX Runtime: the network, then one generic step graph per call.

The program (solver_steps.solver_program) and every call's float coefficients are computed before
the loop, so per call the host only binds buffers and runs two sessions. Two loops, as in sampler.py:

- ``plain``: ``session.run`` with NumPy arrays (on CPU these are wrapped, not copied);
- ``bound``: IOBinding with OrtValues on the session's device. The latent, the model input and
  output and every history register (x0 predictions, unipc's corrected sample, heun's start of
  step) stay on the device for the whole solve; per call only the condition t, the coefficient
  vector and (euler_ancestral) the step's noise go host -> device, and x comes back once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import solver_steps as ss
from . import step_graph as sg
from .session import StepSessions

Network = Callable[[np.ndarray, int], np.ndarray]  # (model input, level) -> model output
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SolveConfig:
    """What the step graphs do besides the solver: x0 processing (7.1 / 7.2) and guidance (7.5)."""

    clip: float | None = None
    threshold: float | None = None
    threshold_floor: float = 1.0
    guidance: float | None = None  # the network ran on [cond; uncond]; None = unguided
    dtype: str = "float32"


@dataclass(frozen=True)
class Levels:
    """Per grid level: x0 = a x + b out (14.3) and the network's input scale (14.2)."""

    a: np.ndarray
    b: np.ndarray
    input_scales: np.ndarray


@dataclass(frozen=True)
class Prepared:
    call: ss.Call
    spec: sg.SolverStepSpec
    coef: np.ndarray  # (n_coef,) in the graph's dtype


def prepare(program: list[ss.Call], levels: Levels, cfg: SolveConfig) -> list[Prepared]:
    """Every call's graph variant and coefficient vector, computed in float64 and cast once."""
    real = sg.DTYPES[cfg.dtype][1]
    out = []
    for k, call in enumerate(program):
        nxt = float(levels.input_scales[program[k + 1].level]) if k + 1 < len(program) else 1.0
        spec = sg.SolverStepSpec(len(call.terms), len(call.outputs), cfg.guidance is not None,
                                 cfg.clip is not None, cfg.threshold is not None, cfg.dtype)
        coef = ss.call_coefficients(call, (float(levels.a[call.level]), float(levels.b[call.level])), nxt)
        out.append(Prepared(call, spec, coef.astype(real)))
    return out


def static_feeds(cfg: SolveConfig, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The inputs that are the same for every call: guidance scale and processing scalars."""
    real = sg.DTYPES[cfg.dtype][1]
    feeds: dict[str, np.ndarray] = {}
    if cfg.guidance is not None:
        feeds["w"] = np.array(cfg.guidance, real)
    if cfg.clip is not None:
        feeds["clip"] = np.array(cfg.clip, real)
    if cfg.threshold is not None:
        feeds.update(sg.quantile_inputs(int(np.prod(shape[1:])), float(cfg.threshold), cfg.threshold_floor,
                                        cfg.dtype))
    return feeds


def _model_input(x: np.ndarray, scale: float, guided: bool) -> np.ndarray:
    xm = x * np.asarray(scale, x.dtype)
    return np.concatenate([xm, xm]) if guided else xm


def run_plain(net: Network, prepared: list[Prepared], x: np.ndarray, noise: Callable[[int], np.ndarray] | None,
              steps: StepSessions, cfg: SolveConfig, levels: Levels, progress: Progress | None = None,
              n_steps: int | None = None) -> np.ndarray:
    """The solve with NumPy buffers; ``net(x_model, level)`` is any host callable."""
    real = sg.DTYPES[cfg.dtype][1]
    regs: dict[str, np.ndarray] = {"x": np.ascontiguousarray(x, real)}
    fixed = static_feeds(cfg, x.shape)
    xm = _model_input(regs["x"], float(levels.input_scales[prepared[0].call.level]), cfg.guidance is not None)
    for p in prepared:
        c = p.call
        if progress is not None and n_steps is not None:
            progress(min(c.level, n_steps), n_steps)
        out = np.ascontiguousarray(net(xm, c.level), real)
        feeds = {"x": regs["x"], "out": out, "coef": p.coef, **fixed}
        for j, name in enumerate(c.terms):
            feeds[f"t{j}"] = noise(c.noise) if name == ss.NOISE else regs[name]
        res = steps.get(p.spec).run(None, feeds)
        regs.update({dst: regs[src] for dst, src in c.keep})
        if c.x0_to is not None:
            regs[c.x0_to] = res[0]
        regs.update(zip(c.outputs, res[1:-1], strict=True))
        xm = res[-1]
    return regs["x"]


class _Pool:
    """Device buffers of the latent's shape, handed out by register (a solve needs at most 7)."""

    def __init__(self, alloc: Callable[[], Any]) -> None:
        self.alloc, self.buffers = alloc, []

    def free(self, busy: set[int], n: int) -> list[int]:
        got = [i for i in range(len(self.buffers)) if i not in busy][:n]
        while len(got) < n:
            self.buffers.append(self.alloc())
            got.append(len(self.buffers) - 1)
        return got


def run_bound(session: Any, prepared: list[Prepared], x: np.ndarray, noise: Callable[[int], np.ndarray] | None,
              steps: StepSessions, cfg: SolveConfig, levels: Levels, conditions: np.ndarray,
              labels: np.ndarray | None, out_channels: int, device: str, progress: Progress | None = None,
              n_steps: int | None = None, per_frame: bool = False) -> np.ndarray:
    """The solve with IOBinding: ``session`` is the exported denoiser's (inputs x, t[, y]; output out);
    ``per_frame``: its t is (B, T), one condition per frame (spec 18.8)."""
    from onnxruntime import OrtValue

    real = sg.DTYPES[cfg.dtype][1]
    shape = tuple(x.shape)
    guided = cfg.guidance is not None
    bm = 2 * shape[0] if guided else shape[0]

    # Buffers are allocated by ORT and filled by copy: ortvalue_from_numpy on CPU would alias the caller's array.
    def alloc(shape_: tuple[int, ...] = shape, dtype: type = real) -> Any:
        return OrtValue.ortvalue_from_shape_and_type(list(shape_), dtype, device, 0)

    pool = _Pool(alloc)
    regs = {"x": pool.free(set(), 1)[0]}
    pool.buffers[regs["x"]].update_inplace(np.ascontiguousarray(x, real))
    xm = alloc((bm, *shape[1:]))
    xm.update_inplace(_model_input(np.ascontiguousarray(x, real),
                                   float(levels.input_scales[prepared[0].call.level]), guided))
    outv = alloc((bm, out_channels, *shape[2:]))
    noisev = alloc() if any(ss.NOISE in p.call.terms for p in prepared) else None
    mbind = session.io_binding()
    mbind.bind_ortvalue_input("x", xm)
    mbind.bind_ortvalue_output("out", outv)
    if labels is not None:
        yv = alloc(labels.shape, np.int64)
        yv.update_inplace(np.ascontiguousarray(labels, np.int64))
        mbind.bind_ortvalue_input("y", yv)
    # Host arrays bound with bind_cpu_input are not owned by the binding: these lists keep them alive.
    t_shape = (bm, shape[2]) if per_frame else (bm,)
    ts = [np.full(t_shape, conditions[p.call.level], np.float32) for p in prepared]
    fixed = static_feeds(cfg, shape)
    binds: dict[sg.SolverStepSpec, Any] = {}
    for k, p in enumerate(prepared):
        c = p.call
        if progress is not None and n_steps is not None:
            progress(min(c.level, n_steps), n_steps)
        mbind.bind_cpu_input("t", ts[k])
        session.run_with_iobinding(mbind)
        sess = steps.get(p.spec)
        if p.spec not in binds:
            binds[p.spec] = sess.io_binding()
            for name, value in fixed.items():
                binds[p.spec].bind_cpu_input(name, value)
        sb = binds[p.spec]
        sb.bind_ortvalue_input("x", pool.buffers[regs["x"]])
        sb.bind_ortvalue_input("out", outv)
        sb.bind_cpu_input("coef", p.coef)
        for j, name in enumerate(c.terms):
            if name == ss.NOISE:
                noisev.update_inplace(noise(c.noise))
                sb.bind_ortvalue_input(f"t{j}", noisev)
            else:
                sb.bind_ortvalue_input(f"t{j}", pool.buffers[regs[name]])
        # Outputs go to buffers no register holds now: the graph reads the old values.
        new = pool.free(set(regs.values()), 1 + len(c.outputs))
        sb.bind_ortvalue_output("x0", pool.buffers[new[0]])
        for r, buf in enumerate(new[1:]):
            sb.bind_ortvalue_output(f"y{r}", pool.buffers[buf])
        sb.bind_ortvalue_output("x_model", xm)
        sess.run_with_iobinding(sb)
        regs.update({dst: regs[src] for dst, src in c.keep})
        if c.x0_to is not None:
            regs[c.x0_to] = new[0]
        regs.update(zip(c.outputs, new[1:], strict=True))
    return pool.buffers[regs["x"]].numpy()


def solve_denoiser(denoise: Callable[[np.ndarray, int], Any], x: Any, alphas: Any, sigmas: Any, solver: str,
                   noise: Any, steps: StepSessions, *, dtype: str = "float32", **options: float) -> np.ndarray:
    """vdm_ref.solve's contract (spec 17.2) with the updates in the step graphs: ``denoise(x, i)`` is a
    host callable returning x0_hat (so a = 0, b = 1 and no input scaling); the kit's ``solve``."""
    grid, xx, z = ss.check_solve_inputs(solver, alphas, sigmas, x, noise, options)
    program = ss.solver_program(solver, grid, eta=float(options.get("eta", 1.0)))
    if z is None and any(ss.NOISE in c.terms for c in program):
        raise ValueError("argument 'noise' is required: euler_ancestral with eta > 0 is stochastic (spec 1.5)")
    real = sg.DTYPES[dtype][1]
    n = grid.N + 1
    levels = Levels(np.zeros(n), np.ones(n), np.ones(n))

    def net(xm: np.ndarray, i: int) -> np.ndarray:
        out = np.asarray(denoise(xm.astype(np.float64), i), dtype=np.float64)
        if out.shape != xm.shape:
            raise ValueError(f"argument 'denoise output' must have the shape of x {xm.shape}, got {out.shape}")
        return out.astype(real)

    def draw(i: int) -> np.ndarray:
        return np.ascontiguousarray(z[i], real)

    return run_plain(net, prepare(program, levels, SolveConfig(dtype=dtype)), xx.astype(real), draw, steps,
                     SolveConfig(dtype=dtype), levels)
