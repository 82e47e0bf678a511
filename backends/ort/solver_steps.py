"""The solvers of spec 17 as programs of ONNX step-graph calls, their coefficients computed on the host.

Every solver step of spec 17 is linear in the tensors it touches: the latent x at the level the
network was called at, that call's x0 prediction, the stored history (x0 predictions of earlier
levels; unipc's corrected previous sample; heun's start of step) and euler_ancestral's noise draw.
The coefficients depend only on the grid (17.1). So each network call is followed by ONE run of the
generic step graph (step_graph.build_solver_step):

    x0      = process(a x + b out)                       (14.3, then 7.1 / 7.2)
    y_r     = c_r0 x + c_r1 x0 + sum_k c_r(k+2) t_k       for each output row r
    x_model = s y_0                                       (the next call's input scale, 14.2)

whose float coefficients are fed per call. The program of a solve (:func:`solver_program`) is
computed once, in float64, before the loop: the loop only binds buffers and runs sessions.

Tensors live in named registers; a call reads its terms from registers, writes its rows (and x0)
to registers, and may first copy a register's old value to another name (``keep``), which is how a
multistep history shifts without copying data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import vdm_ref
from vdm_ref import solvers as S

NOISE = "z"  # the register that holds the step's noise draw (filled from the host per call)


@dataclass(frozen=True)
class Call:
    """One network call and the step-graph run after it."""

    level: int  # grid level the network is called at (condition, input scale, x0 coefficients)
    terms: tuple[str, ...]  # registers t_1..t_k the rows read besides x and x0
    rows: np.ndarray  # (R, 2 + k) float64: coefficients over [x, x0, t_1..t_k]
    outputs: tuple[str, ...]  # (R,) registers written by the rows; outputs[0] is the next latent
    x0_to: str | None = None  # register that keeps this call's x0 (history), or None
    keep: tuple[tuple[str, str], ...] = ()  # (dst, src): dst <- src's value before the call
    noise: int | None = None  # index of the step's noise draw (step i reads entry i of the loop noise)


def _first_order(grid: S.Grid, i: int, j: int, sigma_to: float | None = None, h: float | None = None
                 ) -> tuple[float, float]:
    """Spec 17.3: E(x, d; i -> j) = ex x + ed d with ex = sigma_to / sigma_i, ed = -alpha_j expm1(-h)."""
    sigma_to = grid.sigmas[j] if sigma_to is None else sigma_to
    h = float(grid.lambdas[j] - grid.lambdas[i]) if h is None else h
    return float(sigma_to / grid.sigmas[i]), float(-grid.alphas[j] * np.expm1(-h))


def _predict(grid: S.Grid, i: int) -> tuple[float, float, float]:
    """Spec 17.7 (and 17.8's predictor) from level i: out = ex x + dx x0_i + dp x0_{i-1}."""
    ex, ed = _first_order(grid, i, i + 1)
    if S.multistep_order(grid, i) == 1:
        return ex, ed, 0.0
    rho = S.multistep_ratio(grid.h(i), grid.h(i - 1))
    return ex, ed * (1.0 + 0.5 * rho), -ed * 0.5 * rho


def euler_calls(grid: S.Grid, i: int, *, eta: float = 0.0) -> list[Call]:
    """Spec 17.4: x_{i+1} = E(x_i, x0_i; i -> i+1)."""
    ex, ed = _first_order(grid, i, i + 1)
    return [Call(i, (), np.array([[ex, ed]]), ("x",))]


def euler_ancestral_calls(grid: S.Grid, i: int, *, eta: float = 1.0) -> list[Call]:
    """Spec 17.5: x_{i+1} = E(x_i, x0_i; i -> down) + sigma_up z_i (no noise term where sigma_up = 0)."""
    sigma_up, sigma_down, h_down = S.ancestral_levels(grid.sigmas[i + 1], grid.h(i), eta)
    ex, ed = _first_order(grid, i, i + 1, sigma_to=sigma_down, h=h_down)
    if sigma_up == 0.0:
        return [Call(i, (), np.array([[ex, ed]]), ("x",))]
    return [Call(i, (NOISE,), np.array([[ex, ed, sigma_up]]), ("x",), noise=i)]


def heun_calls(grid: S.Grid, i: int, *, eta: float = 0.0) -> list[Call]:
    """Spec 17.6: the Euler step to i+1 (keeping x_i and x0_i), then at the second call the correction

        x_{i+1} = x' - k (eps_b - eps_a),  k = sigma_{i+1} expm1(h) / 2,
        eps_a = (x_i - alpha_i x0_a) / sigma_i,  eps_b = (x' - alpha_{i+1} x0_b) / sigma_{i+1},

    expanded over [x', x0_b, x_i, x0_a]. A single Euler step where :func:`vdm_ref.solvers.heun_is_euler`."""
    first = euler_calls(grid, i)[0]
    if S.heun_is_euler(grid, i):
        return [first]
    a, s, a1, s1 = grid.alphas[i], grid.sigmas[i], grid.alphas[i + 1], grid.sigmas[i + 1]
    k = 0.5 * s1 * np.expm1(grid.h(i))
    second = np.array([[1.0 - k / s1, k * a1 / s1, k / s, -k * a / s]])
    return [Call(i, (), first.rows, ("x",), x0_to="m1", keep=(("xs", "x"),)),
            Call(i + 1, ("xs", "m1"), second, ("x",))]


def dpmpp_2m_calls(grid: S.Grid, i: int, *, eta: float = 0.0) -> list[Call]:
    """Spec 17.7: x_{i+1} = E(x_i, D; i -> i+1), D = (1 + rho/2) x0_i - (rho/2) x0_{i-1} at order 2."""
    ex, dx, dp = _predict(grid, i)
    if S.multistep_order(grid, i) == 1:
        return [Call(i, (), np.array([[ex, dx]]), ("x",), x0_to="m1")]
    return [Call(i, ("m1",), np.array([[ex, dx, dp]]), ("x",), x0_to="m1")]


def unipc_calls(grid: S.Grid, i: int, *, eta: float = 0.0) -> list[Call]:
    """Spec 17.8: for i >= 1 the corrector x_i^c = E(x_{i-1}^c, C; i-1 -> i) with C linear in
    (m_i, m_{i-1}, m_{i-2}), then the predictor E(x_i^c, D; i -> i+1). Rows over
    [x, m_i, x_{i-1}^c, m_{i-1}(, m_{i-2})]: the next latent, then the corrected sample (state x)."""
    ex, dx, dp = _predict(grid, i)
    if i == 0:
        return [Call(0, (), np.array([[ex, dx]]), ("x",), x0_to="m1", keep=(("xp", "x"),))]
    h = grid.h(i - 1)
    px, pc = _first_order(grid, i - 1, i)
    if S.multistep_order(grid, i - 1) == 1:
        cm, c1, c2 = 0.5, 0.5, None  # C = m_{i-1} + (m_i - m_{i-1}) / 2
    else:
        r = float((grid.lambdas[i - 2] - grid.lambdas[i - 1]) / h)
        rho_a, rho_b = S.unic_coefficients(h, r)
        c2 = rho_a / r  # -0.0 where r = -inf (alpha_0 = 0): the history term drops out
        cm, c1 = rho_b, 1.0 - c2 - rho_b
    corrected = [0.0, pc * cm, px, pc * c1] + ([] if c2 is None else [pc * c2])
    nxt = [ex * v for v in corrected]
    nxt[1] += dx
    nxt[3] += dp
    terms = ("xp", "m1") if c2 is None else ("xp", "m1", "m2")
    return [Call(i, terms, np.array([nxt, corrected]), ("x", "xp"), x0_to="m1", keep=(("m2", "m1"),))]


# solver -> (grid, step i, eta) -> the calls of step i (spec 17.4 - 17.8)
SOLVER_CALLS: dict[str, Callable[..., list[Call]]] = {
    "euler": euler_calls,
    "euler_ancestral": euler_ancestral_calls,
    "heun": heun_calls,
    "dpmpp_2m": dpmpp_2m_calls,
    "unipc": unipc_calls,
}


def solver_program(solver: str, grid: S.Grid, *, eta: float = 1.0) -> list[Call]:
    """Spec 17.2: the calls of a whole solve of ``solver`` on ``grid``, in order."""
    if solver not in SOLVER_CALLS:
        raise ValueError(f"argument 'solver': unknown solver {solver!r}; choose one of {tuple(SOLVER_CALLS)}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"argument 'eta' must lie in [0, 1], got {eta}")
    return [c for i in range(grid.N) for c in SOLVER_CALLS[solver](grid, i, eta=eta)]


def call_coefficients(call: Call, x0_coef: tuple[float, float], next_scale: float) -> np.ndarray:
    """The flat ``coef`` input of the step graph: [a, b, rows (row-major), s] (see the module docstring)."""
    return np.concatenate([np.asarray(x0_coef, np.float64), call.rows.ravel(), [next_scale]])


def check_solve_inputs(solver: str, alphas: object, sigmas: object, x: object, noise: object,
                       options: dict[str, float]) -> tuple[S.Grid, np.ndarray, np.ndarray | None]:
    """vdm_ref.solve's argument checks (spec 1.7, 17.1, 17.2), shared so both loops refuse alike."""
    if solver not in S.SOLVERS:
        raise ValueError(f"argument 'solver': unknown solver {solver!r}; choose one of {tuple(S.SOLVERS)}")
    row = S.SOLVERS[solver]
    unknown = set(options) - set(row.options)
    if unknown:
        raise ValueError(f"solver {solver!r} takes the options {row.options}, not {sorted(unknown)}")
    grid = S.solver_grid(alphas, sigmas)
    xx = vdm_ref._checks.as_float64("x", x)
    z = S.solver_noise(noise, grid.N, xx.shape)
    return grid, xx, z


__all__ = ["Call", "NOISE", "SOLVER_CALLS", "call_coefficients", "check_solve_inputs", "dpmpp_2m_calls",
           "euler_ancestral_calls", "euler_calls", "heun_calls", "solver_program", "unipc_calls"]
