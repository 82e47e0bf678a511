"""Checks of one spec clause on one backend: golden vectors, random cases and end-to-end sampling.

Every check yields an error ratio, max |got - want| / (atol + rtol |want|) with the tolerance of
spec/tolerances.json, so a check passes at ratio <= 1 and the worst ratio of a clause says how
much headroom a backend has. ``want`` is vdm_ref evaluated on the inputs rounded to the dtype
under test (for a float64 run of a golden vector: the stored outputs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import vdm_ref

from . import cases as C
from . import invalid
from .protocol import GRADIENT_METHODS, REQUIRED_OPS, clause_of, gradient_tolerance, round_to_dtype, tolerance_for


class NotImplementedOp(Exception):
    """The backend has no such method, or its method raised NotImplementedError."""


@dataclass
class Outcome:
    case_id: str
    source: str
    ratio: float  # inf when the backend raised or returned the wrong shape
    message: str | None = None  # set when the check failed

    @property
    def failed(self) -> bool:
        return self.message is not None


@dataclass
class OpResult:
    """The verdict of one clause (one op) on one backend and dtype."""

    op: str
    clause: str
    status: str  # pass | fail | xfail | skip
    reason: str | None = None
    worst_ratio: float | None = None
    n_cases: int = 0
    n_failed: int = 0
    sources: dict[str, int] = field(default_factory=dict)
    # The first failing check: case id, message and (where a case is known) its full inputs;
    # the runner adds a one-line command that reproduces it.
    first_failure: dict[str, Any] | None = None
    tolerance: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        def num(x: float | None) -> float | str | None:
            return None if x is None else (x if math.isfinite(x) else "inf")

        return {
            "op": self.op, "clause": self.clause, "status": self.status, "reason": self.reason,
            "worst_ratio": num(self.worst_ratio), "n_cases": self.n_cases, "n_failed": self.n_failed,
            "cases_by_source": self.sources, "first_failure": self.first_failure,
            "tolerance": self.tolerance, "notes": self.notes, "seconds": round(self.seconds, 3),
        }


# --- comparison --------------------------------------------------------------------------------


def error_ratio(got: Any, want: Any, rtol: float, atol: float, carried: Any = None) -> tuple[float, str]:
    """max |got - want| / (atol + rtol |want| + carried) over elements (equal infinities match), and
    a description of the worst element or of a shape/type mismatch. ``carried`` is an optional
    per-element absolute allowance (the abar tolerance carried into a derived table, spec 9)."""
    want = np.asarray(want)
    try:
        g = np.asarray(got)
        if g.dtype.kind not in "fiub":
            g = g.astype(np.float64)
    except (TypeError, ValueError) as exc:
        return math.inf, f"returned {type(got).__name__}, not an array ({exc})"
    if g.shape != want.shape:
        return math.inf, f"has shape {g.shape}, expected {want.shape}"
    if g.size == 0:
        return 0.0, ""
    g64, w64 = g.astype(np.float64), want.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        same = (g64 == w64) | (np.isnan(g64) & np.isnan(w64))
        diff = np.where(same, 0.0, np.abs(g64 - w64))
        diff = np.where(np.isnan(diff), np.inf, diff)
        denom = atol + rtol * np.abs(w64) + (0.0 if carried is None else np.asarray(carried, dtype=np.float64))
        ratio = np.where(diff == 0.0, 0.0, np.where(np.isfinite(denom) & (denom > 0), diff / denom, np.inf))
    k = int(np.argmax(ratio))
    idx = ", ".join(map(str, np.unravel_index(k, ratio.shape))) if ratio.ndim else ""
    return float(ratio.flat[k]), f"[{idx}] = {g64.flat[k]:.17g}, want {w64.flat[k]:.17g}"


# --- schedule tables: the abar tolerance carried through each table's condition number (spec 9) ---
#
# Every table of 2.6 is a function of abar. A correct float64 implementation may differ from the
# reference in abar by a few ulp (another libm's cos/exp, another order of the cumulative
# product); the tables derived from abar magnify that by |d table / d abar|: log_snr near
# abar = 0.5 (where log_snr ~ 0, so no relative tolerance helps), snr and sigma near abar = 1,
# betas wherever abar_t / abar_{t-1} ~ 1. So a table passes when |got - want| <= atol +
# rtol |want| + sum_j |d table / d abar_j| (atol + rtol abar_j), with make_schedule's (rtol, atol).


def _prev(a: np.ndarray, first: float) -> np.ndarray:
    return np.concatenate(([first], a[:-1]))


def _carried_betas(a: np.ndarray, da: np.ndarray) -> np.ndarray:
    """beta_t = 1 - abar_t / abar_{t-1} (abar_{-1} = 1, exact): |d/d abar_t| = 1 / abar_{t-1},
    |d/d abar_{t-1}| = abar_t / abar_{t-1}^2. alpha_t = 1 - beta_t carries the same."""
    prev = _prev(a, 1.0)
    return (da + a / prev * _prev(da, 0.0)) / prev


TABLE_SENSITIVITY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "betas": _carried_betas,
    "alphas": _carried_betas,
    "abar": lambda a, da: np.zeros_like(a),
    "snr": lambda a, da: da / (1.0 - a) ** 2,  # SNR = abar / (1 - abar)
    "log_snr": lambda a, da: da / (a * (1.0 - a)),  # log(abar) - log1p(-abar)
    "sigma": lambda a, da: da / (2.0 * a**1.5 * np.sqrt(1.0 - a)),  # sqrt((1 - abar) / abar)
}


def carried_tolerance(table: str, abar: np.ndarray, tol: dict[str, float]) -> np.ndarray:
    """The part of ``table``'s tolerance carried from abar: |d table / d abar| (atol + rtol abar).

    Infinite only where the table itself is infinite (log_snr, sigma at abar = 0), which the
    metric matches by equality alone."""
    a = np.asarray(abar, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        carried = TABLE_SENSITIVITY[table](a, tol["atol"] + tol["rtol"] * a)
    return np.where(np.isnan(carried), np.inf, carried)


def _carried(op: str, name: str, want: dict[str, np.ndarray], tol: dict[str, float]) -> np.ndarray | None:
    return carried_tolerance(name, want["abar"], tol) if op == "make_schedule" and "abar" in want else None


def _stored_agrees(op: str, stored: dict[str, np.ndarray], want: dict[str, np.ndarray],
                   tol: dict[str, float]) -> bool:
    """Whether a golden vector's stored outputs match vdm_ref (size-1 outputs may be stored 1-d)."""
    for name, w in want.items():
        if name not in stored:
            return False
        v = stored[name]
        if v.shape != w.shape and v.size == w.size == 1:
            v = v.reshape(w.shape)
        if error_ratio(v, w, tol["rtol"], tol["atol"], _carried(op, name, want, tol))[0] > 1.0:
            return False
    return True


# --- running one case ---------------------------------------------------------------------------


class _RecordingModel:
    """Wraps the NumPy model handed to a backend's sample(): records the t it is called with."""

    def __init__(self, model: Callable) -> None:
        self.model = model
        self.calls: list[np.ndarray] = []

    def __call__(self, x_t: Any, t: Any) -> np.ndarray:
        self.calls.append(np.array(t, copy=True))
        return self.model(np.asarray(x_t, dtype=np.float64), t)


def _method(adapter: Any, op: str) -> Callable:
    fn = getattr(adapter, op, None)
    if not callable(fn):
        raise NotImplementedOp(f"{type(adapter).__name__} has no method {op!r}")
    return fn


def reference(case: C.Case, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """vdm_ref's outputs for the (already rounded) inputs of ``case``."""
    args, kwargs, model_spec = C.call_args(case, inputs)
    if model_spec is not None:
        args = [C.build_model(model_spec, args[0], inputs.get("points")), *args]
    result = getattr(vdm_ref, case.op)(*args, **kwargs)
    return {k: np.asarray(v) for k, v in C.as_outputs(case.op, result).items()}


def run_case(adapter: Any, case: C.Case, dtype: str, tol: dict[str, float]) -> Outcome | str:
    """Check one case. A string instead of an Outcome says why the case does not apply: the
    reference rejects its inputs at this dtype, or a golden vector disagrees with vdm_ref."""
    fn = _method(adapter, case.op)
    inputs = {k: round_to_dtype(v, dtype) for k, v in case.inputs.items()}
    try:
        want = reference(case, inputs)
    except (ValueError, TypeError, FloatingPointError) as exc:
        return f"vdm_ref rejects the case ({type(exc).__name__}: {exc})"
    if case.want is not None and dtype == "float64":
        f64 = tolerance_for(case.op, "float64") or tol
        # A vector's output names are its own (e.g. "result" where an input is called "out");
        # their order is the op's return order.
        stored = dict(zip(want, (case.want[n] for n in case.outputs), strict=False))
        if len(case.outputs) != len(want) or not _stored_agrees(case.op, stored, want, f64):
            return "stored outputs disagree with vdm_ref (stale or malformed golden vector)"
    args, kwargs, model_spec = C.call_args(case, {k: v.copy() for k, v in inputs.items()})
    recorder = None
    if model_spec is not None:
        recorder = _RecordingModel(C.build_model(model_spec, args[0], inputs.get("points")))
        args = [recorder, *args]
    try:
        got = C.as_outputs(case.op, fn(*args, **kwargs))
    except NotImplementedError as exc:
        raise NotImplementedOp(f"{case.op} raised NotImplementedError: {exc}") from None
    except Exception as exc:  # the backend's failure is the check's result, not the kit's crash
        return Outcome(case.id, case.source, math.inf, f"raised {type(exc).__name__}: {exc}")
    worst, message = 0.0, ""
    for name, w in want.items():
        if name not in got:
            return Outcome(case.id, case.source, math.inf, f"output {name!r} missing")
        r, where = error_ratio(got[name], w, tol["rtol"], tol["atol"], _carried(case.op, name, want, tol))
        if r >= worst:
            worst, message = r, f"{name}{where}" if where.startswith("[") else f"{name} {where}"
    if recorder is not None:
        # The kit's own copy: an adapter may have modified the arrays it was given.
        steps = np.asarray(inputs["timesteps"] if "timesteps" in inputs else case.params["timesteps"])
        msg = _check_model_calls(recorder, steps, int(case.params["shape"][0]))
        if msg:
            return Outcome(case.id, case.source, math.inf, msg)
    if worst > 1.0:
        return Outcome(case.id, case.source, worst, f"{message} (error/tolerance {worst:.3g})")
    return Outcome(case.id, case.source, worst)


# --- invalid inputs (spec 1.7) -----------------------------------------------------------------


def invalid_cases(op: str, seed: int, dtype: str) -> list[C.Case]:
    """The invalid variants of one valid case of ``op`` that vdm_ref rejects with an error naming an
    argument: the reference decides what is invalid (see invalid.py)."""
    picked = []
    for case in invalid.mutations(invalid.base_case(op, seed, dtype)):
        inputs = {k: round_to_dtype(v, dtype) for k, v in case.inputs.items()}
        try:
            with np.errstate(all="ignore"):
                reference(case, inputs)
        except (ValueError, TypeError) as exc:
            if invalid.names_argument(str(exc), case.error_names):
                picked.append(case)
    return picked


def run_invalid_case(adapter: Any, case: C.Case, dtype: str) -> Outcome:
    """Spec 1.7: the backend raises, and its message names the argument."""
    fn = _method(adapter, case.op)
    inputs = {k: round_to_dtype(v, dtype) for k, v in case.inputs.items()}
    args, kwargs, model_spec = C.call_args(case, inputs)
    if model_spec is not None:
        args = [C.build_model(model_spec, args[0], inputs.get("points")), *args]
    names = " or ".join(f"'{n}'" for n in case.error_names)
    try:
        with np.errstate(all="ignore"):
            fn(*args, **kwargs)
    except NotImplementedError as exc:
        raise NotImplementedOp(f"{case.op} raised NotImplementedError: {exc}") from None
    except Exception as exc:
        if invalid.names_argument(str(exc), case.error_names):
            return Outcome(case.id, case.source, 0.0)
        return Outcome(case.id, case.source, math.inf, f"raised {type(exc).__name__}: {exc!s:.200}, whose message "
                       f"does not name the argument ({names}; spec 1.7)")
    return Outcome(case.id, case.source, math.inf, f"returned a result instead of raising an error naming {names} "
                   "(spec 1.7)")


# --- gradients (spec 8.6): optional, for differentiable backends ----------------------------------
#
# The value of the hybrid loss cannot show its stop-gradient: L_simple + lam T L_vlb is the same
# number whether or not the VLB term sees the prediction channels detached. A backend that can
# differentiate offers hybrid_loss_grad(same arguments) -> d(sum_b L_b)/d out, checked here.

GRADIENT_CASES = 3  # per run, drawn like hybrid_loss's random cases from their own stream
_FD_STEP = 1e-5
_FD_ELEMENTS = 4  # variance-channel positions per sample checked by central differences


def hybrid_loss_grad_reference(sched: vdm_ref.Schedule, x0: np.ndarray, t: Any, noise: np.ndarray, out: np.ndarray,
                               prediction: str, lam: float = 0.001,
                               min_snr_gamma: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """d(sum_b L_hybrid_b)/d out under spec 8.6's stop-gradient, and where it is known.

    Prediction channels, every element: only L_simple reaches them, w_b * mean((pred - target)^2),
    whose gradient is 2 w_b (pred - target) / n in closed form. Variance channels, at a few
    positions: the model mean does not depend on them, so the gradient is that of the value: central
    differences of vdm_ref's hybrid_loss, one position of every sample at a time (sample b's loss
    sees only its own). Returns (gradient, mask of the elements it holds).
    """
    b, c = x0.shape[:2]
    target = vdm_ref.training_target(sched, x0, t, noise, prediction)
    w = np.ones(b) if min_snr_gamma is None else np.broadcast_to(
        vdm_ref.min_snr_weight(sched, t, prediction, min_snr_gamma), (b,))
    grad, known = np.zeros_like(out), np.zeros(out.shape, dtype=bool)
    grad[:, :c] = w.reshape((b,) + (1,) * (x0.ndim - 1)) * 2.0 * (out[:, :c] - target) / x0[0].size
    known[:, :c] = True
    positions = list(np.ndindex((c, *out.shape[2:])))
    for j in np.unique(np.linspace(0, len(positions) - 1, _FD_ELEMENTS).round().astype(int)):
        idx = positions[j]
        key = (slice(None), c + idx[0], *idx[1:])
        known[key] = True
        up, down = out.copy(), out.copy()
        up[key] += _FD_STEP
        down[key] -= _FD_STEP
        grad[key] = (vdm_ref.hybrid_loss(sched, x0, t, noise, up, prediction, lam, min_snr_gamma)
                     - vdm_ref.hybrid_loss(sched, x0, t, noise, down, prediction, lam, min_snr_gamma)) / (2 * _FD_STEP)
    return grad, known


_GRADIENT_REFERENCES: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "hybrid_loss": hybrid_loss_grad_reference}


def gradient_cases(op: str, seed: int, dtype: str) -> list[C.Case]:
    draw = C.RngDraw(C.op_rng(seed, f"gradient/{op}"))
    out = []
    for k in range(GRADIENT_CASES):
        case = C.random_case(op, draw, dtype, k)
        case.id, case.source = f"gradient/{op}/{k}", "gradient"
        out.append(case)
    return out


def run_gradient_case(adapter: Any, case: C.Case, dtype: str, tol: dict[str, float]) -> Outcome:
    """The backend's gradient method against the reference gradient (see hybrid_loss_grad_reference)."""
    method = GRADIENT_METHODS[case.op]
    inputs = {k: round_to_dtype(v, dtype) for k, v in case.inputs.items()}
    args, kwargs, _ = C.call_args(case, inputs)
    want, known = _GRADIENT_REFERENCES[case.op](*args, **kwargs)  # reads its inputs only
    try:
        got = np.asarray(getattr(adapter, method)(*args, **kwargs))
    except NotImplementedError as exc:
        raise NotImplementedOp(f"{method} raised NotImplementedError: {exc}") from None
    except Exception as exc:
        return Outcome(case.id, case.source, math.inf, f"{method} raised {type(exc).__name__}: {exc}")
    if got.shape == want.shape:  # compare where the reference is known
        got = np.where(known, got, want)
    ratio, where = error_ratio(got, want, tol["rtol"], tol["atol"])
    if ratio > 1.0:
        channels = "a prediction channel" if where.startswith("[") and _channel(where) < case.inputs["x0"].shape[1] \
            else "a variance channel"
        return Outcome(case.id, case.source, ratio, f"d(sum L)/d out{where}, {channels} (error/tolerance {ratio:.3g}; "
                       "spec 8.6: the VLB term sees the prediction channels detached)")
    return Outcome(case.id, case.source, ratio)


def _channel(where: str) -> int:
    """The channel index of an error_ratio location "[b, c, ...] = ..."."""
    return int(where[1:].split(",")[1]) if "," in where.split("]")[0] else 0


def _check_model_calls(rec: _RecordingModel, steps: np.ndarray, batch: int) -> str | None:
    """Spec 7.6: the model is called once per timestep, in order, with t an int (B,) vector."""
    seen = [int(np.asarray(t).reshape(-1)[0]) if np.asarray(t).size else None for t in rec.calls]
    if seen != steps.tolist():
        return f"model called at t = {seen}, expected {steps.tolist()}"
    for t in rec.calls:
        if t.dtype.kind not in "iu" or t.shape != (batch,):
            return f"model called with t of dtype {t.dtype} and shape {t.shape}, expected an integer ({batch},) array"
    return None


# --- end-to-end sampling with the ideal denoisers ----------------------------------------------

# Data N(MU, VAR) per element, and 5 standard errors of slack for the Monte Carlo estimates.
MU, VAR, Z = 0.3, 0.25, 5.0


def _closed_form_moments(sched: vdm_ref.Schedule, steps: np.ndarray, sampler: str, prediction: str,
                         variance: str) -> tuple[float, float]:
    """Exact mean and variance of a sampler's output under the Gaussian ideal denoiser.

    Every step is then affine in x_t (plus independent noise for DDPM), so pushing x = 0 and
    x = 1 through the reference step gives its coefficients, and the moments propagate exactly
    from x_T ~ N(0, 1). As N -> T they tend to the data's (MU, VAR).
    """
    from vdm_ref import ideal

    model = ideal.gaussian_ideal_model(sched, MU, VAR, prediction)
    m, v = 0.0, 1.0
    for t, s in vdm_ref.step_pairs(steps):
        x = np.array([0.0, 1.0]).reshape(2, 1, 1, 1, 1)
        out = model(x, np.full(2, t))
        if sampler == "ddim":
            y, noise_var = vdm_ref.ddim_step(sched, x, t, s, out, prediction=prediction, eta=0.0), 0.0
        else:
            y = vdm_ref.ddpm_step(sched, x, t, s, out, np.zeros_like(x), prediction=prediction, variance=variance)
            noise_var = 0.0 if s < 0 else float(np.exp(vdm_ref.model_log_variance(sched, s, t, variance)))
        b = float(y[0].ravel()[0])
        a = float(y[1].ravel()[0]) - b
        m, v = a * m + b, a * a * v + noise_var
    return m, v


@dataclass(frozen=True)
class E2E:
    id: str
    schedule: str
    N: int
    spacing: str
    sampler: str
    prediction: str
    kind: str  # "gaussian" or "points"
    shape: tuple[int, ...]


E2E_CHECKS: tuple[E2E, ...] = (
    E2E("e2e/ddim-gaussian", "cosine", 100, "trailing", "ddim", "eps", "gaussian", (128, 1, 4, 4, 4)),
    E2E("e2e/ddpm-gaussian", "linear", 100, "trailing", "ddpm", "v", "gaussian", (128, 1, 4, 4, 4)),
    E2E("e2e/ddpm-points", "linear", 50, "linspace", "ddpm", "eps", "points", (64, 1, 2, 2, 2)),
)


def _points_data(shape: tuple[int, ...]) -> np.ndarray:
    """Four well-separated points (every pair differs by 2 in at least one coordinate)."""
    d = int(np.prod(shape[1:]))
    signs = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=np.float64)
    pts = np.repeat(signs, (d + 1) // 2, axis=1)[:, :d] * 0.8
    return pts.reshape((4, *shape[1:]))


def run_e2e(adapter: Any, check: E2E, dtype: str, tol: dict[str, float], seed: int = 0) -> Outcome:
    """Sample with the backend and compare with what the ideal denoiser guarantees."""
    from vdm_ref import ideal

    fn = _method(adapter, "sample")
    sched = vdm_ref.make_schedule(check.schedule, 1000)
    steps = vdm_ref.inference_timesteps(1000, check.N, check.spacing)
    noise = round_to_dtype(np.random.default_rng([seed, 7]).standard_normal((len(steps) + 1, *check.shape)), dtype)
    points = _points_data(check.shape) if check.kind == "points" else None
    if points is not None:
        model = ideal.points_ideal_model(sched, points, check.prediction)
    else:
        model = ideal.gaussian_ideal_model(sched, MU, VAR, check.prediction)
    kwargs: dict[str, Any] = {"sampler": check.sampler, "prediction": check.prediction}
    kwargs.update({"eta": 0.0} if check.sampler == "ddim" else {"variance": "fixed_small"})
    try:
        x = np.asarray(fn(_RecordingModel(model), sched, steps.copy(), check.shape, noise, **kwargs), dtype=np.float64)
    except NotImplementedError as exc:
        raise NotImplementedOp(f"sample raised NotImplementedError: {exc}") from None
    except Exception as exc:
        return Outcome(check.id, "e2e", math.inf, f"raised {type(exc).__name__}: {exc}")
    if x.shape != check.shape:
        return Outcome(check.id, "e2e", math.inf, f"shape {x.shape}, expected {check.shape}")
    if not np.all(np.isfinite(x)):
        return Outcome(check.id, "e2e", math.inf, "non-finite samples")
    if points is not None:
        return _landing(check, x, points, tol)
    m, v = _closed_form_moments(sched, steps, check.sampler, check.prediction, "fixed_small")
    n = x.size
    band_m = Z * math.sqrt(v / n) + tol["atol"] + tol["rtol"] * abs(m)
    band_v = Z * v * math.sqrt(2.0 / (n - 1)) + tol["atol"] + tol["rtol"] * v
    em, ev = float(x.mean()), float(x.var(ddof=1))
    ratio = max(abs(em - m) / band_m, abs(ev - v) / band_v)
    if ratio > 1.0:
        return Outcome(check.id, "e2e", ratio,
                       f"sample mean {em:.5f} / variance {ev:.5f}; the ideal denoiser of N({MU}, {VAR}) data gives "
                       f"{m:.5f} / {v:.5f} in closed form for this sampler (error/band {ratio:.3g})")
    return Outcome(check.id, "e2e", ratio)


def _landing(check: E2E, x: np.ndarray, points: np.ndarray, tol: dict[str, float]) -> Outcome:
    """DDPM driven by the finite-point ideal denoiser ends exactly on the data points."""
    flat_x = x.reshape(x.shape[0], 1, -1)
    flat_p = points.reshape(1, points.shape[0], -1)
    dist = np.max(np.abs(flat_x - flat_p) / (tol["atol"] + tol["rtol"] * np.abs(flat_p)), axis=2)  # (B, K)
    nearest = dist.argmin(axis=1)
    per_sample = dist.min(axis=1)
    ratio = float(per_sample.max())
    if ratio > 1.0:
        b = int(per_sample.argmax())
        return Outcome(check.id, "e2e", ratio,
                       f"sample {b} ends {ratio:.3g} tolerances away from the nearest data point")
    hit = len(set(nearest.tolist()))
    if hit < points.shape[0]:
        return Outcome(check.id, "e2e", ratio,
                       f"all {x.shape[0]} samples landed on only {hit} of the {points.shape[0]} data points")
    return Outcome(check.id, "e2e", ratio)


# --- aggregating a clause -----------------------------------------------------------------------


class Tracker:
    """Collects the outcomes of one op into an :class:`OpResult`."""

    def __init__(self, op: str, tol: dict[str, float] | None, seed: int | None = None) -> None:
        self.result = OpResult(op=op, clause=clause_of(op), status="pass", tolerance=tol)
        self._left_out: dict[str, list[str]] = {}
        self._seed = seed

    def add(self, outcome: Outcome | str, case_id: str = "", case: C.Case | None = None) -> None:
        if isinstance(outcome, str):
            self._left_out.setdefault(outcome, []).append(case_id)
            return
        r = self.result
        r.n_cases += 1
        r.sources[outcome.source] = r.sources.get(outcome.source, 0) + 1
        r.worst_ratio = outcome.ratio if r.worst_ratio is None else max(r.worst_ratio, outcome.ratio)
        if outcome.failed:
            r.n_failed += 1
            r.status = "fail"
            if r.first_failure is None:
                r.first_failure = {"case": outcome.case_id, "message": outcome.message or ""}
                if case is not None:
                    r.first_failure["inputs"] = C.describe(case, self._seed)

    def finish(self) -> OpResult:
        for reason, ids in self._left_out.items():
            self.result.notes.append(f"{len(ids)} case(s) left out, e.g. {ids[0]}: {reason}")
        if self.result.status == "pass" and self.result.n_cases == 0:
            self.result.status, self.result.reason = "skip", "no applicable cases"
        return self.result


def skipped(op: str, reason: str, *, missing: bool = False, allow_missing: bool = True) -> OpResult:
    """A clause that was not checked: a failure if it is a required op the backend lacks."""
    if missing and op in REQUIRED_OPS and not allow_missing:
        return OpResult(op=op, clause=clause_of(op), status="fail", reason=f"{reason} (required)",
                        first_failure={"case": "-", "message": f"{reason} (required)"})
    return OpResult(op=op, clause=clause_of(op), status="skip", reason=reason)


def select_cases(
    op: str, dtype: str, n_random: int, seed: int, *, golden: bool = True
) -> tuple[list[C.Case], list[str]]:
    """The golden vectors usable at ``dtype`` and ``n_random`` seeded random cases."""
    notes: list[str] = []
    picked: list[C.Case] = []
    if golden:
        gold, note = C.golden_cases(op)
        if note:
            notes.append(note)
        if dtype != "float64":
            kept = [c for c in gold if C.in_low_precision_range(c)]
            if len(kept) < len(gold):
                notes.append(f"{len(gold) - len(kept)} golden case(s) outside the {dtype} abar range left out")
            gold = kept
        picked.extend(gold)
    draw = C.RngDraw(C.op_rng(seed, op))
    picked.extend(C.random_case(op, draw, dtype, k) for k in range(n_random))
    return picked, notes


def _check_gradients(adapter: Any, op: str, dtype: str, seed: int, tracker: Tracker,
                     wanted: Callable[[str], bool]) -> None:
    method, tol = GRADIENT_METHODS[op], gradient_tolerance(op, dtype)
    if not callable(getattr(adapter, method, None)):
        tracker.result.notes.append(f"no {method} method: the gradient property of clause {clause_of(op)} is not "
                                    "checked (optional, for differentiable backends)")
        return
    if tol is None:
        tracker.result.notes.append(f"spec gives no {dtype} tolerance for the gradient check of {op}")
        return
    for case in gradient_cases(op, seed, dtype):
        if wanted(case.id):
            tracker.add(run_gradient_case(adapter, case, dtype, tol), case.id, case)


def check_op(adapter: Any, op: str, dtype: str, *, n_random: int = 20, seed: int = 0, golden: bool = True,
             e2e: bool = True, errors: bool = True, gradients: bool = True, allow_missing: bool = False,
             extra: Iterable[C.Case] = (), only: str | None = None) -> OpResult:
    """Run every check of one clause on ``adapter`` at ``dtype``: golden vectors, random cases,
    end-to-end sampling, (``errors``) the invalid inputs of spec 1.7 and (``gradients``, where the
    backend offers the optional method) gradients. ``only``: run just the check with this case id
    (what a failure's reproduce command asks for)."""
    if not callable(getattr(adapter, op, None)):
        return skipped(op, "not implemented", missing=True, allow_missing=allow_missing)
    tol = tolerance_for(op, dtype)
    if tol is None:
        return skipped(op, f"spec gives no {dtype} tolerance")
    cases, notes = select_cases(op, dtype, n_random, seed, golden=golden)
    tracker = Tracker(op, tol, seed)
    tracker.result.notes.extend(notes)

    def wanted(case_id: str) -> bool:
        return only is None or case_id == only

    try:
        for case in [*cases, *extra]:
            if wanted(case.id):
                tracker.add(run_case(adapter, case, dtype, tol), case.id, case)
        if e2e and op == "sample":
            for check in E2E_CHECKS:
                if wanted(check.id):
                    tracker.add(run_e2e(adapter, check, dtype, tol, seed))
        if op == "solve":  # spec 17.1 (with errors): a repeated level is refused; 17.9 (with e2e): the orders
            from .solver_checks import solve_outcomes

            for outcome in solve_outcomes(adapter, dtype, order=e2e, repeated_level=errors):
                if wanted(outcome.case_id):
                    tracker.add(outcome, outcome.case_id)
        if errors:
            for case in invalid_cases(op, seed, dtype):
                if wanted(case.id):
                    tracker.add(run_invalid_case(adapter, case, dtype), case.id, case)
        if gradients and op in GRADIENT_METHODS:
            _check_gradients(adapter, op, dtype, seed, tracker, wanted)
    except NotImplementedOp as exc:
        return skipped(op, f"not implemented ({exc})", missing=True, allow_missing=allow_missing)
    return tracker.finish()
