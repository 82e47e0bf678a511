"""Random cases for the noise-level schedules of spec section 15, beside the v1 ones of cases.py.

Levels are float64 host data whatever the compute dtype (spec 15, like the tables of 1.6), so the
only float input, ``levels`` of ``with_final_level``, is what a dtype changes. The draws favour
what the clauses are about: a shift other than 1 (applied once, 15.2 / 15.3), a terminal stretch
(15.4), both final levels with and without an explicit ``sigma_min`` (15.6), and N = 1.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import vdm_ref

from .cases import Case, Draw


def _case(op: str, params: dict, inputs: dict | None = None) -> Case:
    return Case(op=op, id="", source="random", schedule=None, inputs=inputs or {}, params=params)


def _steps(d: Draw) -> int:
    return d.choice((1, 2, 3, 5, 10, 28, 50, d.integer(1, 100)))


def gen_karras_sigmas(d: Draw, dtype: str) -> Case:
    params: dict = {"N": _steps(d)}
    # sigma_max / sigma_min at most the default's 4e4 and rho >= 1: the rounding of sigma_max^(1/rho) is
    # carried to sigma_min magnified by (sigma_max / sigma_min)^(1/rho), which the tolerance of 15.5 bounds.
    if d.choice((False, True)):
        lo = d.choice((0.002, 0.03, d.uniform(2e-3, 0.5)))
        params.update(sigma_min=lo, sigma_max=d.choice((80.0, 14.6, 1.0, lo * d.uniform(2.0, 1e4))))
    if d.choice((False, True)):
        params["rho"] = d.choice((7.0, 1.0, 3.0, d.uniform(1.0, 12.0)))
    return _case("karras_sigmas", params)


def _decreasing_levels(d: Draw) -> np.ndarray:
    """N >= 1 strictly decreasing positive levels: Karras sigmas, flow levels or a random sorted set."""
    n = d.integer(1, 12)
    kind = d.choice(("karras", "flow", "random"))
    if kind == "karras":
        return vdm_ref.karras_sigmas(n)
    if kind == "flow":
        return vdm_ref.uniform_levels(n, 1.0, 1e-3) if n > 1 else np.array([1.0])
    return np.sort(d.uniform_array((n,), 0.01, 20.0))[::-1].copy()


def gen_with_final_level(d: Draw, dtype: str) -> Case:
    levels = _decreasing_levels(d)
    params: dict = {"final": d.choice(tuple(vdm_ref.FINAL_LEVELS))}
    if d.choice((False, True)):
        # Below the last level with room to spare, so rounding the levels to a low dtype keeps it valid.
        params["sigma_min"] = float(levels[-1]) * d.choice((0.0, 0.5, d.uniform(0.0, 0.9)))
    return _case("with_final_level", params, {"levels": levels})


def gen_flow_levels(d: Draw, dtype: str) -> Case:
    N = _steps(d)
    params: dict = {"N": N, "time_shift": d.choice(tuple(vdm_ref.TIME_SHIFTS))}
    how = d.choice(("shift", "shift", "mu", "none"))
    if how == "shift":
        params["shift"] = d.choice((3.0, 5.0, 0.5, 7.0, d.uniform(0.2, 12.0)))
    elif how == "mu":  # the linear time shift needs mu > 0 (15.3)
        lo = 0.05 if params["time_shift"] == "linear" else -1.0
        params["mu"] = d.choice((vdm_ref.dynamic_shift_mu(d.choice((256, 1560, 4096, 32760))), d.uniform(lo, 3.0)))
        params["mu"] = max(params["mu"], lo)
    if N >= 2 and d.choice((False, True)):  # 15.4 needs a last level below 1
        params["terminal"] = d.choice((0.0, 0.02, 0.1, d.uniform(0.0, 0.5)))
    if d.choice((False, True, False)):
        params["s_min"] = d.choice((1e-3, 0.02, d.uniform(1e-4, 0.2)))
    if d.choice((False, False, True)):
        params["s_max"] = d.choice((1.0, 0.95, d.uniform(0.5, 1.0)))
    params["final"] = d.choice(("zero", "zero", "sigma_min"))
    return _case("flow_levels", params)


SIGMA_GENERATORS: dict[str, Callable[[Draw, str], Case]] = {
    "karras_sigmas": gen_karras_sigmas,
    "with_final_level": gen_with_final_level,
    "flow_levels": gen_flow_levels,
}


def gen_flow_shift(d: Draw, dtype: str) -> Case:
    s = d.uniform_array((d.integer(1, 8),), 0.0, 1.0)
    if d.choice((False, True)):
        s[0] = d.choice((0.0, 1.0, 1e-3))  # the fixed ends, and where a shift moves a level most
    return _case("flow_shift", {"shift": d.choice((1.0, 3.0, 5.0, 0.5, 7.0, d.uniform(0.1, 20.0)))}, {"s": s})


def gen_vp_sigmas(d: Draw, dtype: str) -> Case:
    abar = d.uniform_array((d.integer(1, 8),), 1e-4, 1.0)
    if d.choice((False, True)):
        abar[0] = d.choice((0.0, 1.0))  # zero terminal SNR (sigma = inf) and clean data (sigma = 0)
    return _case("vp_sigmas", {}, {"abar": abar})


SIGMA_GENERATORS.update({"flow_shift": gen_flow_shift, "vp_sigmas": gen_vp_sigmas})
