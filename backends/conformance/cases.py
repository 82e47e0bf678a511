"""Check cases: the golden vectors of spec/vectors and randomly generated ones.

A case follows the calling convention of the golden vectors (spec 10): the op is called as
``op(schedule, **inputs, **params)`` (``op(**inputs, **params)`` without a schedule,
``sample(model, schedule, ...)`` for the loop). Random cases are drawn through :class:`Draw`, so
the same generators run from a seeded NumPy generator (the CLI: fast and reproducible with
``--seed``) and from hypothesis (the pytest plugin: shrinking to a minimal failing case).
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar

import numpy as np

import vdm_ref

from .protocol import OUTPUT_NAMES, low_precision_abar_range

T_ = TypeVar("T_")


@dataclass
class Case:
    op: str
    id: str
    source: str  # "golden" or "random"
    schedule: dict[str, Any] | None
    inputs: dict[str, np.ndarray]
    params: dict[str, Any]
    outputs: tuple[str, ...] = ()
    # Stored outputs of a golden vector: the expected values of a float64 run.
    want: dict[str, np.ndarray] | None = field(default=None, repr=False)
    # An invalid case (spec 1.7, invalid.py): the backend must raise an error naming one of these.
    error_names: tuple[str, ...] = ()


# --- building the arguments ------------------------------------------------------------------


def build_schedule(spec: dict[str, Any]) -> vdm_ref.Schedule:
    """The reference schedule a case names (cached: cases share a few, and a Schedule is frozen)."""
    return _schedule(spec["name"], int(spec["T"]), bool(spec["zero_terminal_snr"]),
                     tuple(sorted(spec.get("params", {}).items())))


@functools.lru_cache(maxsize=256)
def _schedule(name: str, T: int, zero_terminal_snr: bool, params: tuple[tuple[str, Any], ...]) -> vdm_ref.Schedule:
    return vdm_ref.make_schedule(name, T, zero_terminal_snr=zero_terminal_snr, **dict(params))


def build_model(spec: dict[str, Any], sched: vdm_ref.Schedule, points: np.ndarray | None) -> Callable:
    """Spec 7.6.1: the closed-form ideal denoiser a sample case names (a NumPy callable)."""
    from vdm_ref import ideal

    if spec["kind"] == "gaussian_ideal":
        return ideal.gaussian_ideal_model(sched, spec["mu"], spec["var"], spec["prediction"])
    if spec["kind"] == "points_ideal":
        if points is None:
            raise ValueError("a points_ideal model needs the input array 'points'")
        return ideal.points_ideal_model(sched, points, spec["prediction"])
    raise ValueError(f"unknown model kind {spec['kind']!r}")


def _param(value: Any) -> Any:
    # JSON lists are shapes (tuples) or timestep lists (int arrays); everything else as is.
    if isinstance(value, list):
        return np.asarray(value, dtype=np.int64) if value and isinstance(value[0], int) else tuple(value)
    return value


def call_args(case: Case, inputs: dict[str, np.ndarray]) -> tuple[list[Any], dict[str, Any], dict | None]:
    """Positional and keyword arguments of the op, plus the sample model spec (None otherwise)."""
    kwargs = {k: v for k, v in inputs.items()}
    # A null parameter means "not given" (spec 10.1): the op's default applies.
    kwargs.update({k: _param(v) for k, v in case.params.items() if k != "model" and v is not None})
    if case.op == "sample" and "shape" in kwargs:
        kwargs["shape"] = tuple(int(s) for s in kwargs["shape"])
    args: list[Any] = []
    model_spec = case.params.get("model") if case.op == "sample" else None
    if case.schedule is not None:
        args.append(build_schedule(case.schedule))
    if model_spec is not None:
        kwargs.pop("points", None)  # an input of the model, not of sample()
    if case.op == "solve":  # spec 17.2: the denoiser is built on the case's own levels
        from .solver_checks import build_level_denoiser

        kwargs["denoise"] = build_level_denoiser(case.params["model"], kwargs["alphas"], kwargs["sigmas"],
                                                 kwargs.pop("points", None))
    return args, kwargs, model_spec


def as_outputs(op: str, result: Any) -> dict[str, Any]:
    """Name an op's return value the way the vectors do."""
    if op == "make_schedule":
        return schedule_tables(result)
    names = OUTPUT_NAMES.get(op, ("out",))
    if len(names) == 1:
        return {"out": result}
    if not isinstance(result, (tuple, list)) or len(result) != len(names):
        raise TypeError(f"{op} must return a tuple ({', '.join(names)}), got {type(result).__name__}")
    return dict(zip(names, result, strict=True))


def schedule_tables(obj: Any) -> dict[str, Any]:
    """The tables of a make_schedule result: a mapping, an object with .tables(), or attributes."""
    from .protocol import TABLES

    if isinstance(obj, dict):
        return {k: obj[k] for k in TABLES if k in obj}
    if callable(getattr(obj, "tables", None)):
        return {k: v for k, v in dict(obj.tables()).items() if k in TABLES}
    return {k: getattr(obj, k) for k in TABLES if hasattr(obj, k)}


def _plain(value: Any) -> Any:
    """A JSON value: small integer arrays (timesteps) by value, other arrays by shape."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "iu" and value.size <= 16:
            return value.tolist()
        return {"shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def describe(case: Case, seed: int | None = None) -> dict[str, Any]:
    """A case's full inputs as JSON: schedule (name, T, parameters, zero terminal SNR), the op's
    parameters, every input array (timesteps by value, data by shape) and, for drawn cases, the
    seed of the run."""
    out: dict[str, Any] = {"case": case.id, "schedule": case.schedule, "params": _plain(case.params),
                           "inputs": {k: _plain(np.asarray(v)) for k, v in case.inputs.items()}}
    if case.source in ("random", "errors", "gradient"):
        out["seed"] = seed
    return out


def describe_line(d: dict[str, Any]) -> str:
    """:func:`describe` in one line, for the report's table."""
    parts = []
    if d.get("schedule"):
        s = d["schedule"]
        parts.append(f"schedule {s['name']} T={s['T']} zero_terminal_snr={s['zero_terminal_snr']} "
                     f"params={s.get('params', {})}")
    if d.get("params"):
        parts.append(" ".join(f"{k}={v}" for k, v in d["params"].items()))
    shapes = [f"{k}={v}" if isinstance(v, list) else f"{k}{tuple(v['shape'])}" for k, v in d["inputs"].items()]
    if shapes:
        parts.append(" ".join(shapes))
    if d.get("seed") is not None:
        parts.append(f"seed {d['seed']}")
    return " | ".join(parts)


# --- golden vectors --------------------------------------------------------------------------


def golden_cases(op: str) -> tuple[list[Case], str | None]:
    """The vectors of ``op`` shipped in vdm.spec/vectors, and a note when they are unusable."""
    base = resources.files("vdm.spec").joinpath("vectors")
    jfile, nfile = base.joinpath(f"{op}.json"), base.joinpath(f"{op}.npz")
    if not (jfile.is_file() and nfile.is_file()):
        return [], "no golden vectors installed"
    doc = json.loads(jfile.read_text())
    if doc.get("spec_version") != vdm_ref.SPEC_VERSION:
        return [], f"golden vectors are for spec {doc.get('spec_version')}, not {vdm_ref.SPEC_VERSION}"
    with nfile.open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    cases = []
    for case in doc["cases"]:
        k = case["id"].rsplit("/", 1)[-1]
        cases.append(Case(
            op=op, id=case["id"], source="golden", schedule=case["schedule"],
            inputs={name: arrays[f"{k}/{name}"] for name in case["inputs"]},
            params=dict(case["params"]), outputs=tuple(case["outputs"]),
            want={name: arrays[f"{k}/{name}"] for name in case["outputs"]},
        ))
    return cases, None


def in_low_precision_range(case: Case) -> bool:
    """Spec: for float32 and below, checks use timesteps with abar_t in the well-conditioned range."""
    if case.schedule is None:
        return True
    sched = build_schedule(case.schedule)
    lo, hi = low_precision_abar_range()
    for key in ("t", "s", "timesteps"):
        value = case.inputs.get(key, case.params.get(key))
        if value is None:
            continue
        steps = np.asarray(value, dtype=np.int64).ravel()
        a = sched.abar[steps[steps >= 0]]  # s = -1 (abar = 1) is exact in every dtype
        if np.any((a < lo) | (a > hi)):
            return False
    return True


# --- drawing random cases --------------------------------------------------------------------


class Draw:
    """The choices a generator makes. Subclasses decide where they come from."""

    def choice(self, options: Sequence[T_]) -> T_:
        raise NotImplementedError

    def integer(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi]."""
        raise NotImplementedError

    def uniform(self, lo: float, hi: float) -> float:
        raise NotImplementedError

    def rng(self) -> np.random.Generator:
        """A generator for array contents (hypothesis draws only its seed)."""
        raise NotImplementedError

    def normal(self, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
        return scale * self.rng().standard_normal(shape)

    def uniform_array(self, shape: tuple[int, ...], lo: float, hi: float) -> np.ndarray:
        return self.rng().uniform(lo, hi, shape)

    def pixels(self, shape: tuple[int, ...]) -> np.ndarray:
        """8-bit data in [-1, 1] (spec 8.4), the two edge bins included when there is room."""
        k = self.rng().integers(0, 256, shape)
        if k.size >= 2:
            k.flat[0], k.flat[-1] = 0, 255
        return k / 127.5 - 1.0


class RngDraw(Draw):
    """Choices from a seeded NumPy generator (the CLI's source of random cases)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def choice(self, options: Sequence[T_]) -> T_:
        return options[int(self._rng.integers(len(options)))]

    def integer(self, lo: int, hi: int) -> int:
        return int(self._rng.integers(lo, hi + 1))

    def uniform(self, lo: float, hi: float) -> float:
        return float(self._rng.uniform(lo, hi))

    def rng(self) -> np.random.Generator:
        return self._rng


class HypothesisDraw(Draw):
    """Choices from hypothesis' ``st.data()``: structural choices shrink, array contents come
    from a drawn seed (shrinking the numbers themselves would not make a case easier to read)."""

    def __init__(self, data: Any) -> None:
        self._data = data

    def choice(self, options: Sequence[T_]) -> T_:
        from hypothesis import strategies as st

        return self._data.draw(st.sampled_from(list(options)))

    def integer(self, lo: int, hi: int) -> int:
        from hypothesis import strategies as st

        return self._data.draw(st.integers(lo, hi))

    def uniform(self, lo: float, hi: float) -> float:
        from hypothesis import strategies as st

        return self._data.draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False))

    def rng(self) -> np.random.Generator:
        from hypothesis import strategies as st

        return np.random.default_rng(self._data.draw(st.integers(0, 2**32 - 1), label="array seed"))


def op_rng(seed: int, op: str) -> np.random.Generator:
    """One independent stream per op, so ``--only`` does not change the cases of an op."""
    return np.random.default_rng([seed, zlib.crc32(op.encode())])


# --- generator helpers ----------------------------------------------------------------------


_CUSTOM = {
    "linear": lambda d: {"beta_start": d.uniform(1e-5, 1e-3), "beta_end": d.uniform(5e-3, 5e-2)},
    "scaled_linear": lambda d: {"beta_start": d.uniform(1e-4, 2e-3), "beta_end": d.uniform(5e-3, 3e-2)},
    "cosine": lambda d: {"s": d.uniform(0.0, 0.02), "max_beta": d.choice((0.999, 0.9, 0.5))},
    "sigmoid": lambda d: {"beta_start": d.uniform(1e-5, 1e-3), "beta_end": d.uniform(5e-3, 5e-2),
                          "sigmoid_range": d.uniform(2.0, 8.0)},
}


@dataclass
class _Sched:
    spec: dict[str, Any]
    sched: vdm_ref.Schedule
    pool: list[int]  # timesteps a check may use (see _pool)


def _pool(sched: vdm_ref.Schedule, low: bool, positive_abar: bool) -> list[int]:
    a = sched.abar
    ok = np.ones(sched.T, dtype=bool)
    if positive_abar:  # x0 from eps is undefined at abar = 0 (zero terminal SNR)
        ok &= a > 0
    if low:
        lo, hi = low_precision_abar_range()
        ok &= (a >= lo) & (a <= hi)
    return [int(t) for t in np.flatnonzero(ok)]


def draw_schedule(d: Draw, low: bool, *, positive_abar: bool = False,
                  sizes: Sequence[int] = (10, 1000, 2, 7, 50)) -> _Sched:
    name = d.choice(vdm_ref.SCHEDULES)
    T = d.choice(sizes)
    zts = d.choice((False, True))
    custom = _CUSTOM.get(name)  # a schedule without a row here is checked at its default parameters
    params = custom(d) if custom is not None and d.choice((False, True)) else {}
    spec = {"name": name, "T": T, "params": params, "zero_terminal_snr": zts}
    try:
        sched = build_schedule(spec)
    except ValueError:  # a parameter draw the spec rejects: fall back to the defaults
        spec["params"] = {}
        sched = build_schedule(spec)
    pool = _pool(sched, low, positive_abar)
    if not pool:  # e.g. T = 2 with both abar outside the float32 range
        spec = {"name": "linear", "T": 1000, "params": {}, "zero_terminal_snr": False}
        sched = build_schedule(spec)
        pool = _pool(sched, low, positive_abar)
    return _Sched(spec, sched, pool)


# Every random case uses one of these sample shapes (B, C, F, H, W), so that a backend that compiles
# per shape (JAX's jit, torch.compile, CUDA graphs) compiles few: the golden vectors' two (a small
# video; batch 1 with one frame and odd sizes) and a batch of 3 with 3 channels, 2 frames, H = 1 and
# an odd W. Model outputs may have 2C channels (learned variance); (B,) timestep vectors follow B.
SHAPES: tuple[tuple[int, int, int, int, int], ...] = ((2, 1, 3, 4, 4), (1, 2, 1, 3, 3), (3, 3, 2, 1, 5))
BATCHES: tuple[int, ...] = tuple(sorted({s[0] for s in SHAPES}))
# N of the random sampling-loop cases (those <= T), so its noise arrays (N + 1, *shape) are few too.
SAMPLE_STEPS: tuple[int, ...] = (1, 2, 5, 10)


def draw_shape(d: Draw) -> tuple[int, int, int, int, int]:
    """One of SHAPES: batch 1, a single frame and odd sizes included."""
    return d.choice(SHAPES)


def _put(inputs: dict, params: dict, name: str, value: Any) -> None:
    # Scalars are JSON parameters and arrays are inputs, as in the golden vectors.
    (params if isinstance(value, int) else inputs)[name] = value


def draw_t(d: Draw, pool: list[int], batch: int) -> int | np.ndarray:
    if d.choice(("vector", "scalar")) == "scalar":
        return d.choice(pool)
    return np.array([d.choice(pool) for _ in range(batch)], dtype=np.int64)


def _below(d: Draw, pool: list[int], t: int) -> int:
    """A timestep s < t: -1 (the last step), the previous usable one, or any one (strided)."""
    lower = [p for p in pool if p < t]
    kind = d.choice(("strided", "minus_one", "previous"))
    if kind == "minus_one" or not lower:
        return -1
    return lower[-1] if kind == "previous" else d.choice(lower)


def draw_pair(d: Draw, pool: list[int], batch: int) -> tuple[int | np.ndarray, int | np.ndarray]:
    """(s, t) with s < t elementwise, each a scalar or a (B,) vector."""
    t = draw_t(d, pool, batch)
    if isinstance(t, int):
        if d.choice(("scalar", "vector")) == "scalar":
            return _below(d, pool, t), t
        return np.array([_below(d, pool, t) for _ in range(batch)], dtype=np.int64), t
    if d.choice(("vector", "scalar")) == "scalar":
        return _below(d, pool, int(t.min())), t
    return np.array([_below(d, pool, int(tb)) for tb in t], dtype=np.int64), t


def _case(op: str, s: _Sched | None, params: dict, inputs: dict) -> Case:
    return Case(op=op, id="", source="random", schedule=s.spec if s else None, inputs=inputs, params=params)


def _prediction(d: Draw, s: _Sched) -> str:
    # eps cannot be turned into x0 where abar = 0; such a schedule then uses x0 or v.
    return d.choice(("v", "x0")) if s.spec["zero_terminal_snr"] else d.choice(vdm_ref.PREDICTIONS)


def _with_t(d: Draw, dtype: str, first: str, second: str, op: str, positive_abar: bool = False) -> Case:
    s = draw_schedule(d, dtype != "float64", positive_abar=positive_abar)
    shape = draw_shape(d)
    inputs: dict = {first: d.normal(shape), second: d.normal(shape)}
    params: dict = {}
    _put(inputs, params, "t", draw_t(d, s.pool, shape[0]))
    return _case(op, s, params, inputs)


# --- one generator per op ------------------------------------------------------------------


def gen_make_schedule(d: Draw, dtype: str) -> Case:
    name = d.choice(vdm_ref.SCHEDULES)
    params = {"name": name, "T": d.choice((1000, 10, 2, 7, 50, 4000)), "zero_terminal_snr": d.choice((False, True))}
    if d.choice((False, True)):
        params.update(_CUSTOM[name](d))
    return Case(op="make_schedule", id="", source="random", schedule=None, inputs={}, params=params)


def gen_inference_timesteps(d: Draw, dtype: str) -> Case:
    T = d.choice((1000, 10, 7, 1, 2, 50, 13))
    N = d.integer(1, min(T, 60))
    spacing = d.choice(vdm_ref.SPACINGS)
    offset = 0
    if spacing == "leading":
        offset = d.integer(0, T - 1 - (N - 1) * (T // N))
    return Case(op="inference_timesteps", id="", source="random", schedule=None, inputs={},
                params={"T": T, "N": N, "spacing": spacing, "offset": offset})


def gen_q_mean_variance(d: Draw, dtype: str) -> Case:
    s = draw_schedule(d, dtype != "float64")
    shape = draw_shape(d)
    inputs: dict = {"x0": d.normal(shape)}
    params: dict = {}
    _put(inputs, params, "t", draw_t(d, s.pool, shape[0]))
    return _case("q_mean_variance", s, params, inputs)


def gen_v_from_x0_eps(d: Draw, dtype: str) -> Case:
    return _with_t(d, dtype, "x0", "eps", "v_from_x0_eps")


def gen_predict_x0_eps(d: Draw, dtype: str) -> Case:
    s = draw_schedule(d, dtype != "float64")
    prediction = _prediction(d, s)
    shape = draw_shape(d)
    inputs: dict = {"x_t": d.normal(shape), "pred": d.normal(shape)}
    params: dict = {"prediction": prediction}
    _put(inputs, params, "t", draw_t(d, s.pool, shape[0]))
    return _case("predict_x0_eps", s, params, inputs)


def _gen_pair_table(op: str) -> Callable[[Draw, str], Case]:
    def gen(d: Draw, dtype: str) -> Case:
        s = draw_schedule(d, dtype != "float64")
        sv, tv = draw_pair(d, s.pool, d.choice(BATCHES))
        inputs: dict = {}
        params: dict = {}
        _put(inputs, params, "s", sv)
        _put(inputs, params, "t", tv)
        return _case(op, s, params, inputs)

    return gen


def gen_posterior_mean(d: Draw, dtype: str) -> Case:
    s = draw_schedule(d, dtype != "float64")
    shape = draw_shape(d)
    sv, tv = draw_pair(d, s.pool, shape[0])
    inputs: dict = {"x0": d.normal(shape), "x_t": d.normal(shape)}
    params: dict = {}
    _put(inputs, params, "s", sv)
    _put(inputs, params, "t", tv)
    return _case("posterior_mean", s, params, inputs)


def gen_model_log_variance(d: Draw, dtype: str) -> Case:
    s = draw_schedule(d, dtype != "float64")
    variance = d.choice(vdm_ref.VARIANCES)
    shape = draw_shape(d)
    sv, tv = draw_pair(d, s.pool, shape[0])
    inputs: dict = {}
    params: dict = {"variance": variance}
    if variance == "learned_range":
        inputs["var_values"] = d.normal(shape)  # any real value: the spec does not clamp
    _put(inputs, params, "s", sv)
    _put(inputs, params, "t", tv)
    return _case("model_log_variance", s, params, inputs)


def gen_clip_x0(d: Draw, dtype: str) -> Case:
    # Limits exactly representable in every dtype: the clause's tolerance is exact.
    return _case("clip_x0", None, {"limit": d.choice((1.0, 0.5, 1.5, 2.0, 0.75))},
                 {"x0": d.normal(draw_shape(d), d.choice((2.0, 1.0, 0.3)))})


def gen_dynamic_threshold(d: Draw, dtype: str) -> Case:
    shape = draw_shape(d)
    x0 = d.normal(shape, d.choice((2.0, 1.0, 4.0)))
    # Frames of different range: a per-frame (instead of per-sample) quantile gives another answer.
    x0 = x0 * (1.0 + np.arange(shape[2]).reshape(1, 1, -1, 1, 1))
    params = {"quantile": d.choice((0.995, 0.9, 1.0, 0.5, 0.75)), "floor": d.choice((1.0, 0.5, 1.5))}
    return _case("dynamic_threshold", None, params, {"x0": x0})


def _step_common(d: Draw, dtype: str, op: str) -> tuple[_Sched, tuple[int, ...], dict, dict, str]:
    s = draw_schedule(d, dtype != "float64")
    prediction = _prediction(d, s)
    shape = draw_shape(d)
    sv, tv = draw_pair(d, s.pool, shape[0])
    inputs: dict = {"x_t": d.normal(shape), "noise": d.normal(shape)}
    params: dict = {"prediction": prediction}
    _put(inputs, params, "t", tv)
    _put(inputs, params, "s", sv)
    clip = d.choice((None, 1.0, 1.5))
    threshold = d.choice((None, 0.995, 0.9))
    if clip is not None:
        params["clip"] = clip
    if threshold is not None:
        params["threshold"] = threshold
    return s, shape, inputs, params, prediction


def gen_ddpm_step(d: Draw, dtype: str) -> Case:
    s, shape, inputs, params, _ = _step_common(d, dtype, "ddpm_step")
    variance = d.choice(vdm_ref.VARIANCES)
    params["variance"] = variance
    wide = variance == "learned_range" or d.choice((False, True))
    out = d.normal(shape, 2.0)
    if wide:
        out = np.concatenate([out, d.uniform_array(shape, -1.0, 1.0)], axis=1)
    inputs["out"] = out
    return _case("ddpm_step", s, params, inputs)


def gen_ddim_step(d: Draw, dtype: str) -> Case:
    eta = d.choice((0.0, 1.0, 0.5))
    # eta > 0 at abar_t = 0 (zero terminal SNR) is drawn on purpose: spec 7.4's form of the eps
    # coefficient is exactly 0 there, where 1 - abar_s - sigma^2 leaves ~1e-8 (forbidden).
    s, shape, inputs, params, _ = _step_common(d, dtype, "ddim_step")
    params["eta"] = eta
    last = s.sched.T - 1
    if eta > 0 and last in s.pool and s.sched.abar[last] == 0.0 and d.choice((False, True)):
        # Step from the terminal timestep itself (s < t still holds): the case 7.4 is written for.
        t = params.get("t", inputs.get("t"))
        _put(inputs, params, "t", last if isinstance(t, int) else np.full_like(t, last))
    out = d.normal(shape, 2.0)
    if d.choice((False, True)):  # variance channels are ignored
        out = np.concatenate([out, d.normal(shape)], axis=1)
    inputs["out"] = out
    return _case("ddim_step", s, params, inputs)


def gen_classifier_free_guidance(d: Draw, dtype: str) -> Case:
    shape = draw_shape(d)
    params: dict = {"scale": d.choice((7.5, 1.0, 0.0, -0.5, 3.0))}
    if d.choice((False, True)):  # a learned-variance half taken from out_cond
        params["channels"] = shape[1]
        shape = (shape[0], 2 * shape[1], *shape[2:])
    return _case("classifier_free_guidance", None, params,
                 {"out_cond": d.normal(shape), "out_uncond": d.normal(shape)})


def gen_sample(d: Draw, dtype: str) -> Case:
    low = dtype != "float64"
    s = draw_schedule(d, low, sizes=(10, 50, 1000, 7, 2))
    prediction = _prediction(d, s)
    T = s.sched.T
    N = d.choice([n for n in SAMPLE_STEPS if n <= T])
    spacing = d.choice(tuple(vdm_ref.SPACINGS))
    offset = d.integer(0, min(T - 1 - (N - 1) * (T // N), 3)) if spacing == "leading" else 0
    steps = vdm_ref.inference_timesteps(T, N, spacing, offset)
    if low:  # keep the well-conditioned steps only (still strictly decreasing)
        steps = np.array([t for t in steps.tolist() if t in set(s.pool)] or [max(s.pool)], dtype=np.int64)
    shape = draw_shape(d)
    inputs: dict = {"timesteps": steps, "noise": d.normal((len(steps) + 1, *shape))}
    sampler = d.choice(tuple(vdm_ref.SAMPLERS))
    if d.choice(("gaussian", "points")) == "gaussian":
        model: dict = {"kind": "gaussian_ideal", "mu": d.uniform(-0.5, 0.5), "var": d.uniform(0.05, 1.0),
                       "prediction": prediction}
    else:
        model = {"kind": "points_ideal", "prediction": prediction}
        inputs["points"] = d.normal((d.integer(1, 3), *shape[1:]), 0.7)
    params: dict = {"model": model, "shape": list(shape), "sampler": sampler, "prediction": prediction}
    if sampler == "ddim":
        params["eta"] = d.choice((0.0, 1.0, 0.5))
    else:
        params["variance"] = d.choice(("fixed_small", "fixed_large"))
    clip, threshold = d.choice((None, 1.0)), d.choice((None, 0.995))
    if clip is not None:
        params["clip"] = clip
    if threshold is not None:
        params["threshold"] = threshold
    return _case("sample", s, params, inputs)


def gen_training_target(d: Draw, dtype: str) -> Case:
    c = _with_t(d, dtype, "x0", "noise", "training_target")
    c.params["prediction"] = d.choice(vdm_ref.PREDICTIONS)
    return c


def gen_simple_loss(d: Draw, dtype: str) -> Case:
    c = _with_t(d, dtype, "x0", "noise", "simple_loss")
    c.inputs["pred"] = d.normal(c.inputs["x0"].shape)
    c.params["prediction"] = d.choice(vdm_ref.PREDICTIONS)
    gamma = d.choice((None, 5.0, 1.0))
    if gamma is not None:
        c.params["min_snr_gamma"] = gamma
    return c


def gen_min_snr_weight(d: Draw, dtype: str) -> Case:
    s = draw_schedule(d, dtype != "float64")
    inputs: dict = {}
    params: dict = {"prediction": d.choice(vdm_ref.PREDICTIONS), "gamma": d.choice((5.0, 1.0, 0.5, 20.0))}
    _put(inputs, params, "t", draw_t(d, s.pool, d.choice(BATCHES)))
    return _case("min_snr_weight", s, params, inputs)


def gen_normal_kl(d: Draw, dtype: str) -> Case:
    shape = draw_shape(d)
    return _case("normal_kl", None, {}, {
        "mean1": d.normal(shape), "logvar1": d.uniform_array(shape, -4.0, 1.0),
        "mean2": d.normal(shape), "logvar2": d.uniform_array(shape, -4.0, 1.0),
    })


def gen_discretized_gaussian_log_likelihood(d: Draw, dtype: str) -> Case:
    shape = draw_shape(d)
    x = d.pixels(shape)
    return _case("discretized_gaussian_log_likelihood", None, {}, {
        "x": x, "mean": x + d.normal(shape, d.choice((0.05, 0.3))),
        "log_scale": d.uniform_array(shape, -4.0, 0.5),
    })


def _vlb_inputs(d: Draw, dtype: str, op: str, *, wide: bool | None) -> tuple[_Sched, dict, dict]:
    s = draw_schedule(d, dtype != "float64")
    prediction = _prediction(d, s)
    shape = draw_shape(d)
    wide = d.choice((True, False)) if wide is None else wide
    out = d.normal(shape)
    if wide:
        out = np.concatenate([out, d.uniform_array(shape, -1.0, 1.0)], axis=1)
    inputs: dict = {"x0": d.pixels(shape), "out": out}
    params: dict = {"prediction": prediction}
    # t = 0 is the decoder term of 8.5: give it a fair share of the cases.
    t = draw_t(d, s.pool, shape[0])
    if s.pool[0] == 0 and d.choice((False, True)):
        t = 0 if isinstance(t, int) else np.where(np.arange(len(t)) % 2 == 0, 0, t)
    _put(inputs, params, "t", t)
    return s, inputs, params


def gen_vlb_term(d: Draw, dtype: str) -> Case:
    s, inputs, params = _vlb_inputs(d, dtype, "vlb_term", wide=None)
    inputs["x_t"] = d.normal(inputs["x0"].shape)
    wide = inputs["out"].shape[1] == 2 * inputs["x0"].shape[1]
    params["variance"] = "learned_range" if wide else d.choice(("fixed_small", "fixed_large"))
    return _case("vlb_term", s, params, inputs)


def gen_hybrid_loss(d: Draw, dtype: str) -> Case:
    s, inputs, params = _vlb_inputs(d, dtype, "hybrid_loss", wide=True)
    inputs["noise"] = d.normal(inputs["x0"].shape)
    params["lam"] = d.choice((0.001, 0.1))
    gamma = d.choice((None, 5.0))
    if gamma is not None:
        params["min_snr_gamma"] = gamma
    return _case("hybrid_loss", s, params, inputs)


def gen_solve(d: Draw, dtype: str) -> Case:
    from .solver_checks import draw_solve_case  # spec 17: the solver cases live beside their checks

    return draw_solve_case(d, dtype)


GENERATORS: dict[str, Callable[[Draw, str], Case]] = {
    "make_schedule": gen_make_schedule,
    "inference_timesteps": gen_inference_timesteps,
    "q_mean_variance": gen_q_mean_variance,
    "q_sample": lambda d, dt: _with_t(d, dt, "x0", "noise", "q_sample"),
    "velocity": lambda d, dt: _with_t(d, dt, "x0", "noise", "velocity"),
    "x0_from_eps": lambda d, dt: _with_t(d, dt, "x_t", "eps", "x0_from_eps", positive_abar=True),
    "eps_from_x0": lambda d, dt: _with_t(d, dt, "x_t", "x0", "eps_from_x0"),
    "x0_from_v": lambda d, dt: _with_t(d, dt, "x_t", "v", "x0_from_v"),
    "eps_from_v": lambda d, dt: _with_t(d, dt, "x_t", "v", "eps_from_v"),
    "v_from_x0_eps": gen_v_from_x0_eps,
    "predict_x0_eps": gen_predict_x0_eps,
    "effective_beta": _gen_pair_table("effective_beta"),
    "posterior_mean": gen_posterior_mean,
    "posterior_variance": _gen_pair_table("posterior_variance"),
    "posterior_log_variance_clipped": _gen_pair_table("posterior_log_variance_clipped"),
    "model_log_variance": gen_model_log_variance,
    "clip_x0": gen_clip_x0,
    "dynamic_threshold": gen_dynamic_threshold,
    "ddpm_step": gen_ddpm_step,
    "ddim_step": gen_ddim_step,
    "classifier_free_guidance": gen_classifier_free_guidance,
    "sample": gen_sample,
    "training_target": gen_training_target,
    "simple_loss": gen_simple_loss,
    "min_snr_weight": gen_min_snr_weight,
    "normal_kl": gen_normal_kl,
    "discretized_gaussian_log_likelihood": gen_discretized_gaussian_log_likelihood,
    "vlb_term": gen_vlb_term,
    "hybrid_loss": gen_hybrid_loss,
    "solve": gen_solve,
}


def _process_generator(op: str) -> Callable[[Draw, str], Case]:
    def gen(d: Draw, dtype: str) -> Case:
        from .process_cases import PROCESS_GENERATORS  # spec 14 / 16: those cases live in their own module

        return PROCESS_GENERATORS[op](d, dtype)

    return gen


GENERATORS.update({op: _process_generator(op) for op in (
    "alpha_sigma", "network_condition", "to_x0_eps", "from_x0_eps", "edm_preconditioning",
    "alpha_sigma_from_edm_sigma", "flow_level_from_uniform", "edm_sigma_from_uniform", "process_simple_loss",
    "edm_loss_weight", "process_min_snr_weight",
)})


def _sigma_generator(op: str) -> Callable[[Draw, str], Case]:
    def gen(d: Draw, dtype: str) -> Case:
        from .sigma_cases import SIGMA_GENERATORS  # spec 15: those cases live in their own module

        return SIGMA_GENERATORS[op](d, dtype)

    return gen


GENERATORS.update({op: _sigma_generator(op) for op in (
    "flow_shift", "karras_sigmas", "with_final_level", "flow_levels", "vp_sigmas")})


def random_case(op: str, d: Draw, dtype: str, k: int) -> Case:
    case = GENERATORS[op](d, dtype)
    case.id = f"random/{op}/{k}"
    case.outputs = OUTPUT_NAMES.get(op, ("out",))
    return case
