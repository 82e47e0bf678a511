"""Spec section 17 on torch tensors: the solvers on an (alpha, sigma) grid, written in lambda.

Mirrors ``vdm_ref.solvers`` name for name. The grid is host data: its levels and every step
coefficient are Python floats (float64) computed before they touch a tensor, so a step never reads
a device value and never branches on one. Tensors are combined in their own dtype (half types in
float32, rounded once).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from . import _checks

Denoiser = Callable[[Tensor, int], Tensor]


# --- 17.1 the grid ---------------------------------------------------------------------------------


def _log(v: float) -> float:
    return -math.inf if v == 0.0 else math.log(v)


def solver_lambdas(alphas: Sequence[float], sigmas: Sequence[float]) -> tuple[float, ...]:
    """Spec 17.1 / 14.6: lambda_i = log(alpha_i / sigma_i); -inf at alpha = 0, +inf at sigma = 0."""
    return tuple(_log(a) - _log(s) for a, s in zip(alphas, sigmas, strict=True))


@dataclass(frozen=True)
class Grid:
    """Spec 17.1: the noise levels of a solve, noisiest first, as host floats; see :func:`solver_grid`."""

    alphas: tuple[float, ...]
    sigmas: tuple[float, ...]
    lambdas: tuple[float, ...]

    @property
    def N(self) -> int:  # noqa: N802 - the spec's name for the number of steps
        return len(self.alphas) - 1

    def h(self, i: int) -> float:
        """Spec 17.1: h_i = lambda_{i+1} - lambda_i."""
        return self.lambdas[i + 1] - self.lambdas[i]


def _host_levels(name: str, values: object) -> tuple[float, ...]:
    try:
        t = torch.as_tensor(values, dtype=torch.float64, device="cpu") if not isinstance(values, Tensor) \
            else values.detach().to(device="cpu", dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"argument '{name}' must be a sequence of numbers: {exc}") from None
    if t.ndim != 1:
        raise ValueError(f"argument '{name}' must be 1-D, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"argument '{name}' contains NaN or Inf; the spec requires finite values")
    return tuple(t.tolist())


def solver_grid(alphas: object, sigmas: object) -> Grid:
    """Spec 17.1: validate the levels (alpha_i, sigma_i), i = 0..N (same rules and messages as vdm_ref)."""
    a, s = _host_levels("alphas", alphas), _host_levels("sigmas", sigmas)
    if len(a) != len(s) or len(a) < 2:
        raise ValueError(
            f"arguments 'alphas' and 'sigmas' must be 1-D of one length N + 1 >= 2, got {len(a)} and {len(s)}"
        )
    if min(a) < 0 or min(s) < 0:
        raise ValueError("arguments 'alphas' and 'sigmas' must be >= 0 (spec 17.1)")
    if 0.0 in a[1:]:
        raise ValueError("argument 'alphas': only the first level may have alpha = 0 (spec 17.1)")
    if 0.0 in s[:-1]:
        raise ValueError("argument 'sigmas': only the final level may have sigma = 0 (spec 17.1)")
    lam = solver_lambdas(a, s)
    for i in range(len(lam) - 1):
        if not lam[i + 1] > lam[i]:
            raise ValueError(
                f"argument 'sigmas': the noise levels must strictly decrease (lambda = log(alpha / sigma) strictly "
                f"increasing), but levels {i} and {i + 1} have lambda {lam[i]!r} and {lam[i + 1]!r}; remove the "
                "repeated level (spec 17.1)"
            )
    return Grid(a, s, lam)


# --- 17.2 state and the shared pieces --------------------------------------------------------------


@dataclass(frozen=True)
class SolverState:
    """Spec 17.2: the explicit history a step reads and returns (empty before step 0)."""

    x0: tuple[Tensor, ...] = ()  # x0 predictions at levels i-1, i-2, ... (newest first)
    x: Tensor | None = None  # unipc: the corrected sample at level i-1, the corrector's base


def _combine(x: Tensor, cx: float, d: Tensor, cd: float) -> Tensor:
    """cx x + cd d in the inputs' arithmetic dtype, rounded once to their result dtype."""
    dt, op = _checks.dtypes(x, d)
    return (cx * x.to(op) + cd * d.to(op)).to(dt)


def eps_from_level(x: Tensor, x0: Tensor, alpha: float, sigma: float) -> Tensor:
    """Spec 17.2: eps_hat = (x - alpha x0_hat) / sigma at a level with sigma > 0."""
    return _combine(x, 1.0 / sigma, x0, -alpha / sigma)


def first_order_update(x: Tensor, x0: Tensor, sigma_from: float, sigma_to: float, alpha_to: float, h: float) -> Tensor:
    """Spec 17.3: E = (sigma_to / sigma_from) x - alpha_to expm1(-h) x0_hat."""
    return _combine(x, sigma_to / sigma_from, x0, -(alpha_to * math.expm1(-h)))


def _denoise(denoise: Denoiser, x: Tensor, i: int) -> Tensor:
    out = _checks.data("denoise output", denoise(x, i))
    _checks.same_shape(x=x, **{"denoise output": out})
    return out


def _check_step(grid: Grid, i: int, x: Tensor, state: SolverState, depth: int) -> Tensor:
    if not 0 <= i < grid.N:
        raise ValueError(f"argument 'i' must lie in [0, {grid.N - 1}] for a grid of N={grid.N} steps, got {i}")
    want = min(i, depth)
    if len(state.x0) != want:
        raise ValueError(
            f"argument 'state': step {i} needs the x0 predictions of the {want} previous level(s), got "
            f"{len(state.x0)}; pass the state the previous step returned (spec 17.2)"
        )
    return _checks.data("x", x)


# --- 17.4 euler ------------------------------------------------------------------------------------


def euler_step(
    denoise: Denoiser, grid: Grid, i: int, x: Tensor, state: SolverState = SolverState(),
    noise: Tensor | None = None,
) -> tuple[Tensor, SolverState]:
    """Spec 17.4: x_{i+1} = E(x_i, D(x_i, i); i -> i+1). One call; ``noise`` is unused."""
    x = _check_step(grid, i, x, state, 0)
    x0 = _denoise(denoise, x, i)
    return first_order_update(x, x0, grid.sigmas[i], grid.sigmas[i + 1], grid.alphas[i + 1], grid.h(i)), state


# --- 17.5 euler_ancestral --------------------------------------------------------------------------


def ancestral_levels(sigma_next: float, h: float, eta: float) -> tuple[float, float, float]:
    """Spec 17.5: (sigma_up, sigma_down, h_down) for the step i -> i+1."""
    e = math.expm1(-2.0 * h)
    arg = eta**2 * e
    h_down = math.inf if arg == -1.0 else h - 0.5 * math.log1p(arg)  # eta = 1 at h = +inf: log1p(-1) = -inf
    return eta * sigma_next * math.sqrt(-e), sigma_next * math.sqrt(max(1.0 + arg, 0.0)), h_down


def euler_ancestral_step(
    denoise: Denoiser, grid: Grid, i: int, x: Tensor, state: SolverState = SolverState(),
    noise: Tensor | None = None, *, eta: float = 1.0,
) -> tuple[Tensor, SolverState]:
    """Spec 17.5: x_{i+1} = E(x_i, x0_hat; i -> down) + sigma_up z. One call."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"argument 'eta' must lie in [0, 1], got {eta}")
    x = _check_step(grid, i, x, state, 0)
    x0 = _denoise(denoise, x, i)
    sigma_up, sigma_down, h_down = ancestral_levels(grid.sigmas[i + 1], grid.h(i), eta)
    out = first_order_update(x, x0, grid.sigmas[i], sigma_down, grid.alphas[i + 1], h_down)
    if sigma_up == 0.0:
        return out, state
    if noise is None:
        raise ValueError("argument 'noise' is required: euler_ancestral with eta > 0 is stochastic (spec 1.5)")
    noise = _checks.data("noise", noise)
    _checks.same_shape(x=x, noise=noise)
    return _combine(out, 1.0, noise, sigma_up), state


# --- 17.6 heun -------------------------------------------------------------------------------------


def heun_correction(x_euler: Tensor, eps_a: Tensor, eps_b: Tensor, sigma_next: float, h: float) -> Tensor:
    """Spec 17.6: x_{i+1} = x' - (sigma_{i+1} expm1(h) / 2) (eps_b - eps_a)."""
    w = 0.5 * sigma_next * math.expm1(h)
    dt, op = _checks.dtypes(x_euler, eps_a, eps_b)
    return (x_euler.to(op) - w * (eps_b.to(op) - eps_a.to(op))).to(dt)


def heun_is_euler(grid: Grid, i: int) -> bool:
    """Spec 17.6: a single Euler step where alpha_i = 0 or sigma_{i+1} = 0."""
    return grid.alphas[i] == 0.0 or grid.sigmas[i + 1] == 0.0


def heun_step(
    denoise: Denoiser, grid: Grid, i: int, x: Tensor, state: SolverState = SolverState(),
    noise: Tensor | None = None,
) -> tuple[Tensor, SolverState]:
    """Spec 17.6: Euler to level i+1, a second call there, then the trapezoid correction."""
    x = _check_step(grid, i, x, state, 0)
    a, s, a1, s1, h = grid.alphas[i], grid.sigmas[i], grid.alphas[i + 1], grid.sigmas[i + 1], grid.h(i)
    x0_a = _denoise(denoise, x, i)
    x_euler = first_order_update(x, x0_a, s, s1, a1, h)
    if heun_is_euler(grid, i):
        return x_euler, state
    x0_b = _denoise(denoise, x_euler, i + 1)
    return heun_correction(x_euler, eps_from_level(x, x0_a, a, s), eps_from_level(x_euler, x0_b, a1, s1), s1, h), state


# --- 17.7 dpmpp_2m ---------------------------------------------------------------------------------


def multistep_ratio(h: float, h_prev: float) -> float:
    """Spec 17.7: rho = h_i / h_{i-1}; 0 when h_{i-1} = +inf."""
    return h / h_prev


def dpmpp_2m_x0(x0: Tensor, x0_prev: Tensor, rho: float) -> Tensor:
    """Spec 17.7: D = x0_i + (rho / 2) (x0_i - x0_{i-1})."""
    return _combine(x0, 1.0 + 0.5 * rho, x0_prev, -0.5 * rho)


def multistep_order(grid: Grid, i: int) -> int:
    """Spec 17.7 / 17.8: 1 at the first and at the final step, else 2."""
    return 1 if i == 0 or i == grid.N - 1 else 2


def _multistep_predict(grid: Grid, i: int, x: Tensor, x0: Tensor, x0_prev: Tensor | None) -> Tensor:
    """Spec 17.7: the DPM-Solver++(2M) update from level i (also UniPC's predictor, 17.8)."""
    d = x0
    if multistep_order(grid, i) == 2:
        d = dpmpp_2m_x0(x0, x0_prev, multistep_ratio(grid.h(i), grid.h(i - 1)))
    return first_order_update(x, d, grid.sigmas[i], grid.sigmas[i + 1], grid.alphas[i + 1], grid.h(i))


def dpmpp_2m_step(
    denoise: Denoiser, grid: Grid, i: int, x: Tensor, state: SolverState = SolverState(),
    noise: Tensor | None = None,
) -> tuple[Tensor, SolverState]:
    """Spec 17.7: DPM-Solver++(2M). One call; state (x0_{i-1},) -> (x0_i,)."""
    x = _check_step(grid, i, x, state, 1)
    x0 = _denoise(denoise, x, i)
    return _multistep_predict(grid, i, x, x0, state.x0[0] if state.x0 else None), SolverState(x0=(x0,))


# --- 17.8 unipc ------------------------------------------------------------------------------------


def unic_coefficients(h: float, r: float) -> tuple[float, float]:
    """Spec 17.8: (rho_a, rho_b) of the order-2 bh2 corrector, in float64 on the host."""
    hh = -h
    big_b = math.expm1(hh)
    g1 = big_b / hh - 1.0
    g2 = g1 / hh - 0.5
    b1, b2 = g1 / big_b, 2.0 * g2 / big_b
    rho_a = (b2 - b1) / (r - 1.0)
    return rho_a, b1 - rho_a


def unic_x0(x0_prev: Tensor, x0_prev2: Tensor | None, x0_new: Tensor, order: int, h: float, r: float) -> Tensor:
    """Spec 17.8: the corrector's data estimate C (order 1: weight 1/2; order 2: UniC's weights)."""
    if order == 1:
        return _combine(x0_prev, 0.5, x0_new, 0.5)
    rho_a, rho_b = unic_coefficients(h, r)
    dt, op = _checks.dtypes(x0_prev, x0_prev2, x0_new)
    p, p2, n = x0_prev.to(op), x0_prev2.to(op), x0_new.to(op)
    return (p + (rho_a / r) * (p2 - p) + rho_b * (n - p)).to(dt)


def unipc_step(
    denoise: Denoiser, grid: Grid, i: int, x: Tensor, state: SolverState = SolverState(),
    noise: Tensor | None = None,
) -> tuple[Tensor, SolverState]:
    """Spec 17.8: UniPC (bh2, order 2): the call at level i, the corrector (i >= 1), the predictor."""
    x = _check_step(grid, i, x, state, 2)
    if i > 0 and state.x is None:
        raise ValueError("argument 'state': unipc needs the previous sample (state.x) after step 0 (spec 17.8)")
    m = _denoise(denoise, x, i)
    if i > 0:
        h = grid.h(i - 1)
        order = multistep_order(grid, i - 1)
        r = (grid.lambdas[i - 2] - grid.lambdas[i - 1]) / h if order == 2 else 0.0
        c = unic_x0(state.x0[0], state.x0[1] if order == 2 else None, m, order, h, r)
        x = first_order_update(state.x, c, grid.sigmas[i - 1], grid.sigmas[i], grid.alphas[i], h)
    out = _multistep_predict(grid, i, x, m, state.x0[0] if state.x0 else None)
    return out, SolverState(x0=(m, *state.x0[:1]), x=x)


# --- 17.2 the table and the loop -------------------------------------------------------------------


@dataclass(frozen=True)
class Solver:
    """A row of the solver table (spec 17.2), as in vdm_ref."""

    step: Callable[..., tuple[Tensor, SolverState]]
    calls: int
    options: tuple[str, ...]
    order: int


SOLVERS: dict[str, Solver] = {
    "euler": Solver(euler_step, 1, (), 1),  # spec 17.4
    "euler_ancestral": Solver(euler_ancestral_step, 1, ("eta",), 0),  # spec 17.5
    "heun": Solver(heun_step, 2, (), 2),  # spec 17.6
    "dpmpp_2m": Solver(dpmpp_2m_step, 1, (), 2),  # spec 17.7
    "unipc": Solver(unipc_step, 1, (), 2),  # spec 17.8
}


def _solver(name: str) -> Solver:
    if name not in SOLVERS:
        raise ValueError(f"argument 'solver': unknown solver {name!r}; choose one of {tuple(SOLVERS)}")
    return SOLVERS[name]


def network_calls(solver: str, grid: Grid) -> int:
    """Spec 17.2: the number of denoiser calls of a whole solve on ``grid``."""
    row = _solver(solver)
    if row.step is heun_step:
        return sum(1 if heun_is_euler(grid, i) else 2 for i in range(grid.N))
    return row.calls * grid.N


def solver_noise(
    noise: Tensor | torch.Generator | None, n_steps: int, shape: Sequence[int], *,
    dtype: torch.dtype | None = None, device: torch.device | str | None = None,
) -> Tensor | None:
    """Spec 17.2: the loop's noise, shape (N, *shape); a Generator draws ``torch.randn((N, *shape))``
    on its own device (dtype default float32)."""
    if noise is None:
        return None
    full = (n_steps, *(int(d) for d in shape))
    return _checks.noise_block(noise, full, "(N, *x.shape)", dtype=dtype, device=device)


@torch.no_grad()
def solve(
    denoise: Denoiser,
    x: Tensor,
    alphas: object,
    sigmas: object,
    solver: str = "euler",
    noise: Tensor | torch.Generator | None = None,
    **options: float,
) -> Tensor:
    """Spec 17.2: S = empty; for i = 0..N-1: (x, S) = step(denoise, grid, i, x, S, Z[i]); return x_N.

    Runs under ``torch.no_grad``; the levels are read on the host once, before the first step.
    """
    row = _solver(solver)
    unknown = set(options) - set(row.options)
    if unknown:
        raise ValueError(f"solver {solver!r} takes the options {row.options}, not {sorted(unknown)}")
    grid = solver_grid(alphas, sigmas)
    x = _checks.data("x", x)
    z = solver_noise(noise, grid.N, x.shape, dtype=x.dtype, device=x.device)
    state = SolverState()
    for i in range(grid.N):
        x, state = row.step(denoise, grid, i, x, state, None if z is None else z[i], **options)
    return x


# --- 17.9 the Gaussian check -----------------------------------------------------------------------


def gaussian_level_denoiser(mu: float, var: float, grid: Grid) -> Denoiser:
    """Spec 17.9 / 14.8 (a): D(x, i) = mu + alpha_i var / (alpha_i^2 var + sigma_i^2) (x - alpha_i mu)."""
    if not (math.isfinite(mu) and math.isfinite(var) and var > 0.0):
        raise ValueError(f"arguments 'mu' and 'var' must be finite with var > 0, got mu={mu}, var={var}")

    def denoise(x: Tensor, i: int) -> Tensor:
        a, s = grid.alphas[i], grid.sigmas[i]
        k = a * var / (a * a * var + s * s)
        return (k * x.to(_checks.opmath(x.dtype)) + (mu - k * a * mu)).to(x.dtype)

    return denoise


def gaussian_flow(x: Tensor, mu: float, var: float, level_from: tuple[float, float],
                  level_to: tuple[float, float]) -> Tensor:
    """Spec 17.9: the exact probability-flow map for x0 ~ N(mu, var) between two levels."""
    (a, s), (a1, s1) = level_from, level_to
    scale = math.sqrt(a1 * a1 * var + s1 * s1) / math.sqrt(a * a * var + s * s)
    return (a1 * mu + scale * (x.to(_checks.opmath(x.dtype)) - a * mu)).to(x.dtype)
