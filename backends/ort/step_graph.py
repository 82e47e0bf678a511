"""The sampler update (spec 7.1 - 7.5) as small ONNX graphs, so it runs on the execution provider.

A step graph maps ``x`` (x_t), ``out`` (the model output) and ``noise`` to ``x_next`` (x_s). All
schedule arithmetic happens on the host in float64, once per step, and enters the graph as a
handful of per-sample float32 coefficients (input ``coef``, shaped (K, B, 1, ..., 1)): the
graph itself only does elementwise work in float32, never a table lookup.

With x0 = A x + B pred and eps = C x + D pred (A..D from the prediction type, spec 4.5):

- no clipping/thresholding: x_next = kx x + kp pred + noise term, where for DDIM
  kx = sqrt(abar_s) A + k C, kp = sqrt(abar_s) B + k D, k = sqrt(1 - abar_s - sigma^2) (spec 7.4's cancellation-free
form), and for
  DDPM kx = c0 A + ct, kp = c0 B (posterior mean, spec 5.2);
- with clipping/thresholding (spec 7.1/7.2): x0 = process(A x + B pred), then
  x_next = p0 x0 + px x + noise term (DDIM re-derives eps from the processed x0, spec 7.4).

The noise term is ``kn * noise`` (DDIM sigma, or the DDPM fixed std times [s >= 0]) or, for
learned_range variance, ``m * exp(h0 + h1 * v) * noise`` with v the variance channels (spec 5.4:
0.5 * (f log beta + (1 - f) log beta_tilde), f = (v + 1) / 2, is affine in v).

With classifier-free guidance (spec 7.5) the model ran on the batch [cond; uncond] and the
graph combines the halves itself; it then also emits ``x_model`` = [x_next; x_next], the next
model input, so the latent never leaves the device between steps.

The solvers of spec 17 share one more graph, :func:`build_solver_step` (x0 conversion, then linear
combinations of the latent, x0 and the solver's history with per-call coefficients); their programs
and coefficients are in solver_steps.py, their loops in solver_loop.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

import vdm_ref

OPSET = 17
FLOAT, INT64, BOOL, DOUBLE = 1, 7, 9, 11  # onnx.TensorProto element types
# The sampler runs float32 graphs; float64 ones serve the conformance kit at --dtype float64.
DTYPES = {"float32": (FLOAT, np.float32), "float64": (DOUBLE, np.float64)}


def _elem(dtype: str) -> int:
    if dtype not in DTYPES:
        raise ValueError(f"step graphs compute in {' or '.join(DTYPES)}, not {dtype!r}")
    return DTYPES[dtype][0]


@dataclass(frozen=True)
class StepSpec:
    """Which variant of the step graph to build."""

    sampler: str  # "ddim" | "ddpm"
    learned: bool = False  # DDPM learned_range: noise std from the variance channels
    clip: bool = False
    threshold: bool = False
    noise: bool = True  # stochastic step: a noise input
    guidance: bool = False  # out holds [cond; uncond]
    dtype: str = "float32"

    @property
    def process(self) -> bool:
        return self.clip or self.threshold

    @property
    def coef_names(self) -> tuple[str, ...]:
        head = ("a", "b", "p0", "px") if self.process else ("kx", "kp")
        if not self.noise:
            return head
        return head + (("m", "h0", "h1") if self.learned else ("kn",))


class _Builder:
    """Tiny helper over onnx.helper that names intermediate values."""

    def __init__(self) -> None:
        from onnx import helper

        self.h = helper
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def op(self, op_type: str, *inputs: str, **attrs: object) -> str:
        self.n += 1
        name = f"{op_type.lower()}_{self.n}"
        self.nodes.append(self.h.make_node(op_type, list(inputs), [name], name=name, **attrs))
        return name

    def op2(self, op_type: str, inputs: list[str], n_out: int, **attrs: object) -> list[str]:
        self.n += 1
        names = [f"{op_type.lower()}_{self.n}_{i}" for i in range(n_out)]
        self.nodes.append(self.h.make_node(op_type, inputs, names, name=f"{op_type.lower()}_{self.n}", **attrs))
        return names

    def const(self, values: object, dtype: object = np.int64) -> str:
        from onnx import numpy_helper

        self.n += 1
        name = f"const_{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name

    def rename(self, value: str, name: str) -> None:
        self.nodes.append(self.h.make_node("Identity", [value], [name], name=f"out_{name}"))

    def model(self, inputs: list, outputs: list, name: str) -> bytes:
        graph = self.h.make_graph(self.nodes, name, inputs, outputs, self.inits)
        proto = self.h.make_model(graph, opset_imports=[self.h.make_opsetid("", OPSET)], producer_name="vdm")
        proto.ir_version = min(proto.ir_version, 9)  # readable by every ORT >= 1.16
        # No onnx.checker here: it insists on ranked inputs, and these graphs are rank-generic
        # (ORT validates the graph when it loads it).
        return proto.SerializeToString()


def _tensor(h: object, name: str, elem: int, shape: list | None) -> object:
    return h.make_tensor_value_info(name, elem, shape)  # type: ignore[attr-defined]


def _threshold(g: _Builder, x0: str) -> str:
    """Spec 7.2 in-graph: per sample s = max(quantile(|x0|), floor) over all its elements,
    x0 <- clip(x0, -s, s) / s. The host passes k (how many largest values TopK keeps), the two
    positions of the order statistics inside that descending list, the interpolation weight and
    the floor, all computed exactly from the element count."""
    flat = g.op("Reshape", x0, g.const([0, -1]))
    top, _ = g.op2("TopK", [g.op("Abs", flat), "q_k"], 2, axis=1, largest=1, sorted=1)
    both = g.op("Gather", top, "q_idx", axis=1)  # (B, 2): [lower order statistic, upper one]
    lo = g.op("Slice", both, g.const([0]), g.const([1]), g.const([1]))
    hi = g.op("Slice", both, g.const([1]), g.const([2]), g.const([1]))
    q = g.op("Add", lo, g.op("Mul", g.op("Sub", hi, lo), "q_frac"))
    s = g.op("Max", q, "q_floor")
    clipped = g.op("Div", g.op("Min", g.op("Max", flat, g.op("Neg", s)), s), s)
    return g.op("Reshape", clipped, g.op("Shape", x0))


def _clip(g: _Builder, x0: str) -> str:
    return g.op("Clip", x0, g.op("Neg", "clip"), "clip")


def _prediction(g: _Builder, guidance: bool, channels: str, axis1: str) -> tuple[str, str]:
    """The network output's first C channels ("out"), after classifier-free guidance (spec 7.5) when
    ``guidance`` (rows [cond; uncond] stacked on the batch axis); and the rows holding the variance
    channels (the conditional ones)."""
    if not guidance:
        return g.op("Slice", "out", g.const([0]), channels, axis1), "out"
    batch = g.op("Shape", "x", start=0, end=1)
    axis0 = g.const([0])
    cond = g.op("Slice", "out", g.const([0]), batch, axis0)
    uncond = g.op("Slice", "out", batch, g.op("Mul", batch, g.const([2])), axis0)
    pc = g.op("Slice", cond, g.const([0]), channels, axis1)
    pu = g.op("Slice", uncond, g.const([0]), channels, axis1)
    return g.op("Add", pu, g.op("Mul", "w", g.op("Sub", pc, pu))), cond


def _option_inputs(h: object, fl: int, *, guidance: bool, clip: bool, threshold: bool) -> list[object]:
    """The graph inputs of the optional parts: the guidance scale w, the clip value and the dynamic
    threshold's quantile selection (spec 7.5, 7.1, 7.2)."""
    inputs = []
    if guidance:
        inputs.append(_tensor(h, "w", fl, []))
    if clip:
        inputs.append(_tensor(h, "clip", fl, []))
    if threshold:
        inputs += [_tensor(h, "q_k", INT64, [1]), _tensor(h, "q_idx", INT64, [2]),
                   _tensor(h, "q_frac", fl, []), _tensor(h, "q_floor", fl, [])]
    return inputs


@lru_cache(maxsize=64)
def build_step(spec: StepSpec) -> bytes:
    """Serialized ONNX step graph for ``spec`` (see the module docstring)."""
    g = _Builder()
    h = g.h
    fl = _elem(spec.dtype)
    inputs = [_tensor(h, "x", fl, None), _tensor(h, "out", fl, None),
              _tensor(h, "coef", fl, None)]
    if spec.noise:
        inputs.append(_tensor(h, "noise", fl, None))
    inputs += _option_inputs(h, fl, guidance=spec.guidance, clip=spec.clip, threshold=spec.threshold)

    coefs = {}
    for i, name in enumerate(spec.coef_names):
        coefs[name] = g.op("Gather", "coef", g.const(i), axis=0)

    channels = g.op("Shape", "x", start=1, end=2)
    axis1 = g.const([1])
    pred, var_src = _prediction(g, spec.guidance, channels, axis1)

    if spec.process:
        x0 = g.op("Add", g.op("Mul", coefs["a"], "x"), g.op("Mul", coefs["b"], pred))
        if spec.threshold:
            x0 = _threshold(g, x0)
        if spec.clip:
            x0 = _clip(g, x0)
        x_next = g.op("Add", g.op("Mul", coefs["p0"], x0), g.op("Mul", coefs["px"], "x"))
    else:
        x_next = g.op("Add", g.op("Mul", coefs["kx"], "x"), g.op("Mul", coefs["kp"], pred))

    if spec.noise:
        if spec.learned:
            v = g.op("Slice", var_src, channels, g.op("Mul", channels, g.const([2])), axis1)
            std = g.op("Exp", g.op("Add", coefs["h0"], g.op("Mul", coefs["h1"], v)))
            x_next = g.op("Add", x_next, g.op("Mul", g.op("Mul", coefs["m"], std), "noise"))
        else:
            x_next = g.op("Add", x_next, g.op("Mul", coefs["kn"], "noise"))

    g.rename(x_next, "x_next")
    outputs = [_tensor(h, "x_next", fl, None)]
    if spec.guidance:
        g.rename(g.op("Concat", x_next, x_next, axis=0), "x_model")
        outputs.append(_tensor(h, "x_model", fl, None))
    return g.model(inputs, outputs, f"vdm_{spec.sampler}_step")


@lru_cache(maxsize=8)
def build_process(clip: bool, threshold: bool, dtype: str = "float32") -> bytes:
    """x0 -> processed x0 (spec 7.1 / 7.2), the ops clip_x0 and dynamic_threshold on their own."""
    g = _Builder()
    h = g.h
    fl = _elem(dtype)
    inputs = [_tensor(h, "x0", fl, None), *_option_inputs(h, fl, guidance=False, clip=clip, threshold=threshold)]
    x0 = "x0"
    if threshold:
        x0 = _threshold(g, x0)
    if clip:
        x0 = _clip(g, x0)
    g.rename(x0, "x0_out")
    return g.model(inputs, [_tensor(h, "x0_out", fl, None)], "vdm_process_x0")


@lru_cache(maxsize=2)
def build_guidance(dtype: str = "float32") -> bytes:
    """Spec 7.5: where(mask, uncond + w (cond - uncond), cond); mask selects the guided channels."""
    g = _Builder()
    h = g.h
    fl = _elem(dtype)
    inputs = [_tensor(h, "out_cond", fl, None), _tensor(h, "out_uncond", fl, None),
              _tensor(h, "w", fl, []), _tensor(h, "mask", BOOL, None)]
    guided = g.op("Add", "out_uncond", g.op("Mul", "w", g.op("Sub", "out_cond", "out_uncond")))
    g.rename(g.op("Where", "mask", guided, "out_cond"), "guided")
    return g.model(inputs, [_tensor(h, "guided", fl, None)], "vdm_guidance")


# --------------------------------------------------------------------------- host-side coefficients


def quantile_inputs(n: int, quantile: float, floor: float, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Inputs of the threshold subgraph for samples of ``n`` elements: NumPy's 'linear' quantile
    interpolates the order statistics floor(q (n - 1)) and the next one (ascending); TopK keeps
    only the k largest values, in descending order, which is all the interpolation needs."""
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"argument 'quantile' must lie in (0, 1], got {quantile}")
    pos = quantile * (n - 1)
    lo = min(int(np.floor(pos)), n - 1)
    hi = min(lo + 1, n - 1)
    k = n - lo
    return {"q_k": np.array([k], np.int64), "q_idx": np.array([k - 1, k - 1 - (hi - lo)], np.int64),
            "q_frac": np.array(pos - lo, DTYPES[dtype][1]), "q_floor": np.array(floor, DTYPES[dtype][1])}


def _eps_coefs(a: np.ndarray) -> tuple[np.ndarray, ...]:
    if np.any(a == 0.0):
        raise ValueError("x0 from eps is undefined where abar_t = 0 (zero terminal SNR): use v or x0 prediction")
    return 1.0 / np.sqrt(a), -np.sqrt(1.0 - a) / np.sqrt(a), np.zeros_like(a), np.ones_like(a)


def _x0_coefs(a: np.ndarray) -> tuple[np.ndarray, ...]:
    return np.zeros_like(a), np.ones_like(a), 1.0 / np.sqrt(1.0 - a), -np.sqrt(a) / np.sqrt(1.0 - a)


def _v_coefs(a: np.ndarray) -> tuple[np.ndarray, ...]:
    return np.sqrt(a), -np.sqrt(1.0 - a), np.sqrt(1.0 - a), np.sqrt(a)


# prediction -> (A, B, C, D) with x0 = A x + B pred and eps = C x + D pred (spec 4.1 - 4.3)
PREDICTION_COEFS = {"eps": _eps_coefs, "x0": _x0_coefs, "v": _v_coefs}


def _ddim_coefficients(spec: StepSpec, sched: vdm_ref.Schedule, tt: np.ndarray, ss: np.ndarray,
                       abcd: tuple[np.ndarray, ...], variance: str, eta: float) -> dict[str, np.ndarray]:
    """Spec 7.4 folded into the graph's coefficients."""
    A, B, C, D = abcd
    a_t, a_s = sched.abar_at(tt), sched.abar_at(ss)
    k = np.sqrt(vdm_ref.ddim_direction_variance(a_t, a_s, eta))  # 1 - abar_s - sigma^2, cancellation-free
    if spec.process:
        c = {"a": A, "b": B, "p0": np.sqrt(a_s) - k * np.sqrt(a_t) / np.sqrt(1.0 - a_t), "px": k / np.sqrt(1.0 - a_t)}
    else:
        c = {"kx": np.sqrt(a_s) * A + k * C, "kp": np.sqrt(a_s) * B + k * D}
    c["kn"] = vdm_ref.ddim_sigma(sched, tt, ss, eta)
    return c


def _ddpm_coefficients(spec: StepSpec, sched: vdm_ref.Schedule, tt: np.ndarray, ss: np.ndarray,
                       abcd: tuple[np.ndarray, ...], variance: str, eta: float) -> dict[str, np.ndarray]:
    """Spec 7.3 (posterior mean 5.2, variance 5.4) folded into the graph's coefficients."""
    A, B, _, _ = abcd
    c0, ct = vdm_ref.posterior_mean_coefs(sched, ss, tt)
    c = {"a": A, "b": B, "p0": c0, "px": ct} if spec.process else {"kx": c0 * A + ct, "kp": c0 * B}
    mask = (ss >= 0).astype(np.float64)
    if spec.learned:
        max_log = np.log(vdm_ref.effective_beta(sched, ss, tt))
        min_log = vdm_ref.posterior_log_variance_clipped(sched, ss, tt)
        c.update(m=mask, h0=0.25 * (max_log + min_log), h1=0.25 * (max_log - min_log))
    else:
        c["kn"] = mask * np.exp(0.5 * vdm_ref.model_log_variance(sched, ss, tt, variance))
    return c


STEP_COEFFICIENTS = {"ddim": _ddim_coefficients, "ddpm": _ddpm_coefficients}


def step_coefficients(
    spec: StepSpec,
    sched: vdm_ref.Schedule,
    t: np.ndarray,
    s: np.ndarray,
    *,
    prediction: str,
    variance: str = "fixed_small",
    eta: float = 0.0,
) -> np.ndarray:
    """The float64 coefficients of ``spec.coef_names`` for integer timesteps t, s (each (B,)),
    shape (K, B)."""
    if prediction not in PREDICTION_COEFS:
        raise ValueError(f"argument 'prediction': unknown prediction {prediction!r}; choose one of "
                         f"{tuple(PREDICTION_COEFS)}")
    tt, ss = np.asarray(t, np.int64), np.asarray(s, np.int64)
    abcd = PREDICTION_COEFS[prediction](sched.abar_at(tt))
    c = STEP_COEFFICIENTS[spec.sampler](spec, sched, tt, ss, abcd, variance, eta)
    batch = np.broadcast_shapes(tt.shape, ss.shape)
    return np.stack([np.broadcast_to(np.asarray(c[name], np.float64), batch) for name in spec.coef_names])


def coef_input(coefs: np.ndarray, ndim: int, dtype: str = "float32") -> np.ndarray:
    """(K, B) float64 -> the ``coef`` input (K, B, 1, ..., 1) for x of rank ``ndim``."""
    return np.ascontiguousarray(coefs.reshape(coefs.shape + (1,) * (ndim - 1)), dtype=DTYPES[dtype][1])


# --------------------------------------------------------------------------- solver step graphs (spec 17)


@dataclass(frozen=True)
class SolverStepSpec:
    """The generic solver step graph (backends/ort/solver_steps.py): x0 = process(a x + b pred),
    ``rows`` outputs y_r = c_r0 x + c_r1 x0 + sum_k c_r(k+2) t_k over ``terms`` extra tensors, and
    x_model = s y_0 (doubled along the batch when guided). One graph per arity serves every solver."""

    terms: int = 0
    rows: int = 1
    guidance: bool = False  # out holds [cond; uncond] (spec 7.5 on the first C channels)
    clip: bool = False
    threshold: bool = False
    dtype: str = "float32"

    @property
    def n_coef(self) -> int:
        return 2 + self.rows * (2 + self.terms) + 1


@lru_cache(maxsize=64)
def build_solver_step(spec: SolverStepSpec) -> bytes:
    """Serialized ONNX graph of ``spec``: inputs x, out, t0..t{k-1}, coef (n_coef,), [w], [clip],
    [q_*]; outputs x0, y0..y{R-1}, x_model. Coefficients are scalars fed per call (they depend on the
    grid only), so the graph is elementwise work in ``spec.dtype``."""
    g = _Builder()
    h = g.h
    fl = _elem(spec.dtype)
    terms = [f"t{k}" for k in range(spec.terms)]
    inputs = [_tensor(h, "x", fl, None), _tensor(h, "out", fl, None)]
    inputs += [_tensor(h, t, fl, None) for t in terms]
    inputs.append(_tensor(h, "coef", fl, [spec.n_coef]))
    inputs += _option_inputs(h, fl, guidance=spec.guidance, clip=spec.clip, threshold=spec.threshold)

    def coef(j: int) -> str:
        return g.op("Gather", "coef", g.const(j), axis=0)  # a scalar: broadcasts over any tensor

    channels = g.op("Shape", "x", start=1, end=2)
    pred, _ = _prediction(g, spec.guidance, channels, g.const([1]))  # a learned variance is not used (17.2)
    x0 = g.op("Add", g.op("Mul", coef(0), "x"), g.op("Mul", coef(1), pred))
    if spec.threshold:
        x0 = _threshold(g, x0)
    if spec.clip:
        x0 = _clip(g, x0)
    g.rename(x0, "x0")
    outputs = [_tensor(h, "x0", fl, None)]
    basis = ["x", x0, *terms]
    width = 2 + spec.terms
    ys = []
    for r in range(spec.rows):
        y = g.op("Mul", coef(2 + r * width), basis[0])
        for j in range(1, width):
            y = g.op("Add", y, g.op("Mul", coef(2 + r * width + j), basis[j]))
        g.rename(y, f"y{r}")
        outputs.append(_tensor(h, f"y{r}", fl, None))
        ys.append(y)
    xm = g.op("Mul", coef(spec.n_coef - 1), ys[0])
    if spec.guidance:
        xm = g.op("Concat", xm, xm, axis=0)
    g.rename(xm, "x_model")
    outputs.append(_tensor(h, "x_model", fl, None))
    return g.model(inputs, outputs, "vdm_solver_step")
