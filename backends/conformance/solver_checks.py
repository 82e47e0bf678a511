"""The solver clause (spec 17) in the kit: its cases, its denoisers and its order-of-convergence check.

A ``solve`` case names its denoiser as a model spec (like ``sample``), built on the case's own
levels: ``{"kind": "gaussian_level", "mu", "var"}`` (14.8 (a)) or ``{"kind": "points_level"}``
(14.8 (b), points in the input ``points``), each returning x0_hat at level i as
``model(x, alpha_i, sigma_i)``. Besides agreeing with vdm_ref case by case, a backend's ``solve``
must show each solver's order of convergence on the exact Gaussian solution (17.9).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

import vdm_ref
from vdm_ref import solvers as S

ORDER_TOLERANCE = 0.2  # spec 17.9: |measured - expected order| <= 0.2
ORDER_NS = (16, 32, 64, 128)  # steps of the 17.9 grids
ORDER_LAMBDAS = (-3.0, 1.0)  # lambda of the first and the final level
ORDER_MU, ORDER_VAR = 0.5, 0.25


class LevelDenoiser:
    """``denoise(x, i)`` on a grid's levels from a model called as ``model(x, alpha, sigma)``; records
    the levels it is asked for, so a check can see where a backend evaluates the network."""

    def __init__(self, model: Callable[..., np.ndarray], alphas: np.ndarray, sigmas: np.ndarray) -> None:
        self.model, self.alphas, self.sigmas = model, np.asarray(alphas), np.asarray(sigmas)
        self.calls: list[int] = []

    def __call__(self, x: Any, i: Any) -> np.ndarray:
        i = int(i)
        self.calls.append(i)
        x = np.asarray(x, dtype=np.float64)
        return self.model(x, np.full(x.shape[0], self.alphas[i]), np.full(x.shape[0], self.sigmas[i]))


def build_level_denoiser(spec: dict[str, Any], alphas: np.ndarray, sigmas: np.ndarray,
                         points: np.ndarray | None) -> LevelDenoiser:
    """Spec 17.2 / 14.8: the x0 denoiser a solve case names."""
    if spec["kind"] == "gaussian_level":
        model = vdm_ref.process_gaussian_ideal_model(spec["mu"], spec["var"], "x0")
    elif spec["kind"] == "points_level":
        if points is None:
            raise ValueError("a points_level denoiser needs the input array 'points'")
        model = vdm_ref.process_points_ideal_model(points, "x0")
    else:
        raise ValueError(f"unknown denoiser kind {spec['kind']!r}")
    return LevelDenoiser(model, alphas, sigmas)


def draw_solve_case(d: Any, dtype: str) -> Any:
    """A random solve case: a family, 1-8 steps on random lambdas in [-3, 3] (at least 0.05 apart, so
    low-precision rounding never repeats a level), pure-noise and clean ends at random, every solver."""
    from .cases import Case

    family = d.choice(tuple(vdm_ref.FAMILIES))
    n = d.integer(1, 8)
    gaps = d.uniform_array((n,), 0.05, 6.0 / n)
    lam = -3.0 + np.concatenate(([0.0], np.cumsum(gaps)))
    alphas, sigmas = vdm_ref.alpha_sigma_from_edm_sigma(family, np.exp(-lam))
    alphas, sigmas = np.array(alphas, dtype=np.float64), np.array(sigmas, dtype=np.float64)
    if family != "edm" and d.choice((False, True)):
        alphas[0], sigmas[0] = 0.0, 1.0  # pure noise (14.4)
    if d.choice((False, True)):
        alphas[-1], sigmas[-1] = 1.0, 0.0  # clean data (15.6 "zero")
    shape = (d.integer(1, 2), d.integer(1, 2), d.integer(1, 2), d.integer(1, 3), d.integer(1, 3))
    solver = d.choice(tuple(vdm_ref.SOLVERS))
    inputs: dict[str, Any] = {"alphas": alphas, "sigmas": sigmas}
    if d.choice(("gaussian", "points")) == "gaussian":
        model: dict[str, Any] = {"kind": "gaussian_level", "mu": d.uniform(-0.5, 0.5), "var": d.uniform(0.05, 1.0)}
    else:
        model = {"kind": "points_level"}
        inputs["points"] = d.normal((d.integer(1, 3), *shape[1:]), 0.7)
    inputs["x"] = alphas[0] * d.normal(shape, 0.5) + sigmas[0] * d.normal(shape)
    inputs["noise"] = d.normal((n, *shape))
    params: dict[str, Any] = {"model": model, "solver": solver}
    if "eta" in vdm_ref.SOLVERS[solver].options:
        params["eta"] = d.choice((1.0, 0.5, 0.0))
    return Case(op="solve", id="", source="random", schedule=None, inputs=inputs, params=params)


# --- 17.9: the order of convergence --------------------------------------------------------------


def order_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Spec 17.9: N + 1 vp levels uniform in lambda from -3 to 1."""
    lam = np.linspace(*ORDER_LAMBDAS, n + 1)
    a, s = vdm_ref.alpha_sigma_from_edm_sigma("vp", np.exp(-lam))
    return np.asarray(a, dtype=np.float64), np.asarray(s, dtype=np.float64)


def measured_order(solve: Callable[..., Any], solver: str) -> tuple[float, list[float]]:
    """The least-squares slope of -log |A - A_exact| against log N, where x_N = A x_0 + c is the
    solve on Gaussian data (17.9); ``solve`` is called like vdm_ref.solve."""
    errors = []
    model = vdm_ref.process_gaussian_ideal_model(ORDER_MU, ORDER_VAR, "x0")
    for n in ORDER_NS:
        a, s = order_grid(n)
        x = np.array([[a[0] * ORDER_MU], [a[0] * ORDER_MU + 1.0]])
        denoise = LevelDenoiser(model, a, s)
        out = np.asarray(solve(denoise, x.copy(), a.copy(), s.copy(), solver, np.zeros((n, *x.shape))),
                         dtype=np.float64).reshape(2)
        exact = S.gaussian_flow(x.reshape(2), ORDER_MU, ORDER_VAR, (a[0], s[0]), (a[-1], s[-1]))
        errors.append(abs((out[1] - out[0]) - (exact[1] - exact[0])))
    if not all(math.isfinite(e) and e > 0 for e in errors):
        return math.nan, errors
    return float(-np.polyfit(np.log(ORDER_NS), np.log(errors), 1)[0]), errors


def repeated_level_outcome(adapter: Any) -> Any:
    """Spec 17.1: a grid that repeats a level (duplicated Karras sigmas) is refused with an error
    naming 'sigmas' or 'alphas', not solved with a zero-length step."""
    from .checks import NotImplementedOp, Outcome

    sig = np.array([20.0, 3.0, 0.8, 0.8, 0.1, 0.0])  # levels 2 and 3 repeat
    x = np.full((1, 1, 1, 2, 2), 4.0)
    denoise = LevelDenoiser(vdm_ref.process_gaussian_ideal_model(0.3, 0.25, "x0"), np.ones(6), sig)
    try:
        adapter.solve(denoise, x, np.ones(6), sig, "dpmpp_2m", np.zeros((5, *x.shape)))
    except NotImplementedError as exc:
        raise NotImplementedOp(f"solve raised NotImplementedError: {exc}") from None
    except (ValueError, TypeError) as exc:
        if re.search(r"(?<![A-Za-z0-9_])(sigmas|alphas)(?![A-Za-z0-9_])", str(exc)):
            return Outcome("errors/solve/repeated-level", "errors", 0.0)
        return Outcome("errors/solve/repeated-level", "errors", math.inf,
                       f"raised {type(exc).__name__}: {exc}, whose message names neither 'sigmas' nor 'alphas' "
                       "(spec 17.1)")
    except Exception as exc:
        return Outcome("errors/solve/repeated-level", "errors", math.inf, f"raised {type(exc).__name__}: {exc}")
    return Outcome("errors/solve/repeated-level", "errors", math.inf,
                   "solved a grid whose levels 2 and 3 are equal instead of refusing it (spec 17.1)")


def call_pattern_outcomes(adapter: Any) -> list[Any]:
    """Spec 17.2 / 17.6: each solver calls the denoiser at the levels its clause names, in order, and no
    more often (heun: twice per step, once out of alpha = 0 and once into sigma = 0; never at the
    final level). Checked on a flow grid with both zero ends; vdm_ref's own calls are the expectation."""
    from .checks import NotImplementedOp, Outcome

    s = np.array([1.0, 0.8, 0.55, 0.3, 0.1, 0.0])
    a = 1.0 - s
    model = vdm_ref.process_gaussian_ideal_model(0.3, 0.25, "x0")
    x = np.full((1, 1, 1, 2, 2), 0.7)
    z = np.zeros((5, *x.shape))
    outcomes = []
    for solver in vdm_ref.SOLVERS:
        want, got = LevelDenoiser(model, a, s), LevelDenoiser(model, a, s)
        vdm_ref.solve(want, x.copy(), a, s, solver, z)
        case_id = f"calls/{solver}"
        try:
            adapter.solve(got, x.copy(), a.copy(), s.copy(), solver, z.copy())
        except NotImplementedError as exc:
            raise NotImplementedOp(f"solve raised NotImplementedError: {exc}") from None
        except Exception as exc:
            outcomes.append(Outcome(case_id, "calls", math.inf, f"raised {type(exc).__name__}: {exc}"))
            continue
        if got.calls != want.calls:
            outcomes.append(Outcome(case_id, "calls", math.inf,
                                    f"{solver} called the denoiser at levels {got.calls}, the spec at {want.calls}"))
        else:
            outcomes.append(Outcome(case_id, "calls", 0.0))
    return outcomes


def solve_outcomes(adapter: Any, dtype: str, *, order: bool = True, repeated_level: bool = True) -> list[Any]:
    """The checks of the solver clause beyond its cases: the repeated-level refusal (17.1); with
    ``order``, the levels each solver calls the denoiser at (17.2) and, per deterministic solver, its
    measured order against the table of 17.2 (17.9). The order is measured in float64 only: below
    it, rounding sets a floor under the error before N = 128."""
    from .checks import NotImplementedOp, Outcome

    outcomes = [repeated_level_outcome(adapter)] if repeated_level else []
    if not order:
        return outcomes
    outcomes += call_pattern_outcomes(adapter)
    if dtype != "float64":
        return outcomes
    fn = adapter.solve
    for solver, row in vdm_ref.SOLVERS.items():
        if row.order == 0:  # stochastic: no order of the ODE solve to measure
            continue
        case_id = f"order/{solver}"
        try:
            order, errors = measured_order(fn, solver)
        except NotImplementedError as exc:
            raise NotImplementedOp(f"solve raised NotImplementedError: {exc}") from None
        except Exception as exc:
            outcomes.append(Outcome(case_id, "order", math.inf, f"raised {type(exc).__name__}: {exc}"))
            continue
        ratio = abs(order - row.order) / ORDER_TOLERANCE if math.isfinite(order) else math.inf
        if ratio > 1.0:
            outcomes.append(Outcome(case_id, "order", ratio, (
                f"{solver}: measured order {order:.3f} on the Gaussian check of spec 17.9 (errors "
                f"{', '.join(f'{e:.3g}' for e in errors)} at N = {list(ORDER_NS)}), expected {row.order} "
                f"+- {ORDER_TOLERANCE}")))
        else:
            outcomes.append(Outcome(case_id, "order", ratio))
    return outcomes
