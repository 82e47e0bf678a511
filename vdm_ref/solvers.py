"""Spec section 17: ODE solvers on a grid of noise levels (alpha_i, sigma_i), written once in
lambda = log(alpha / sigma) so that one formula serves every noise process (vp, flow, edm).

Every step is a pure function: the network is the ``denoise(x, i) -> x0_hat`` callable, randomness
is an explicit ``noise`` array (1.5), and a multistep solver's history is the explicit
:class:`SolverState` that a step takes and returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import _checks
from .processes import SIGMA_DATA, half_log_snr, to_x0_eps

Denoiser = Callable[[np.ndarray, int], np.ndarray]


# --- 17.1 the grid ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """Spec 17.1: the noise levels of a solve, noisiest first; build it with :func:`solver_grid`."""

    alphas: np.ndarray  # (N + 1,) float64, alpha_i >= 0
    sigmas: np.ndarray  # (N + 1,) float64, sigma_i >= 0
    lambdas: np.ndarray  # (N + 1,) log(alpha / sigma), strictly increasing

    @property
    def N(self) -> int:  # noqa: N802 - the spec's name for the number of steps
        return len(self.alphas) - 1

    def h(self, i: int) -> float:
        """Spec 17.1: h_i = lambda_{i+1} - lambda_i (+inf at a zero alpha_0 or a zero final sigma)."""
        return float(self.lambdas[i + 1] - self.lambdas[i])


def solver_grid(alphas: object, sigmas: object) -> Grid:
    """Spec 17.1: validate the levels (alpha_i, sigma_i), i = 0..N, and attach lambda.

    Errors: not 1-D of one length >= 2, non-finite or negative entries, alpha = 0 anywhere but the
    first level, sigma = 0 anywhere but the final level, and any lambda that does not strictly
    increase (a repeated noise level, e.g. a duplicated Karras sigma).
    """
    a = _checks.as_float64("alphas", alphas)
    s = _checks.as_float64("sigmas", sigmas)
    if a.ndim != 1 or s.ndim != 1 or len(a) != len(s) or len(a) < 2:
        raise ValueError(
            f"arguments 'alphas' and 'sigmas' must be 1-D of one length N + 1 >= 2, got shapes {a.shape} and {s.shape}"
        )
    if np.any(a < 0) or np.any(s < 0):
        raise ValueError("arguments 'alphas' and 'sigmas' must be >= 0 (spec 17.1)")
    if np.any(a[1:] == 0):
        raise ValueError("argument 'alphas': only the first level may have alpha = 0 (spec 17.1)")
    if np.any(s[:-1] == 0):
        raise ValueError("argument 'sigmas': only the final level may have sigma = 0 (spec 17.1)")
    lam = half_log_snr(a, s)  # spec 14.6
    bad = np.flatnonzero(~(np.diff(lam) > 0))
    if len(bad):
        i = int(bad[0])
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

    x0: tuple[np.ndarray, ...] = ()  # x0 predictions at levels i-1, i-2, ... (newest first)
    x: np.ndarray | None = None  # unipc: the corrected sample at level i-1, the corrector's base


def x0_denoiser(model: Callable[[np.ndarray, int], np.ndarray], grid: Grid, prediction: str, *,
                sigma_data: float = SIGMA_DATA) -> Denoiser:
    """Spec 17.2: the denoiser of a model whose output at level i is of type ``prediction`` (eps, x0,
    v, flow, edm), converted to x0_hat by spec 14.3 at (alpha_i, sigma_i)."""

    def denoise(x: np.ndarray, i: int) -> np.ndarray:
        return to_x0_eps(x, grid.alphas[i], grid.sigmas[i], model(x, i), prediction, sigma_data=sigma_data)[0]

    return denoise


def eps_from_level(x: np.ndarray, x0: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
    """Spec 17.2: eps_hat = (x - alpha x0_hat) / sigma at a level with sigma > 0."""
    return (x - alpha * x0) / sigma


def first_order_update(
    x: np.ndarray, x0: np.ndarray, sigma_from: float, sigma_to: float, alpha_to: float, h: float
) -> np.ndarray:
    """Spec 17.3: E = (sigma_to / sigma_from) x - alpha_to expm1(-h) x0_hat, h = lambda_to - lambda_from.

    DPM-Solver++(1); equal to DDIM (7.4, eta = 0), to the flow Euler step and to EDM's Euler step.
    At sigma_to = 0 (h = +inf) it is alpha_to x0_hat.
    """
    return (sigma_to / sigma_from) * x - (alpha_to * np.expm1(-h)) * x0


def _denoise(denoise: Denoiser, x: np.ndarray, i: int) -> np.ndarray:
    out = _checks.as_float64("denoise output", denoise(x, i))
    _checks.same_shape(x=x, **{"denoise output": out})
    return out


def _check_step(grid: Grid, i: int, x: object, state: SolverState, depth: int) -> np.ndarray:
    if not 0 <= i < grid.N:
        raise ValueError(f"argument 'i' must lie in [0, {grid.N - 1}] for a grid of N={grid.N} steps, got {i}")
    want = min(i, depth)
    if len(state.x0) != want:
        raise ValueError(
            f"argument 'state': step {i} needs the x0 predictions of the {want} previous level(s), got "
            f"{len(state.x0)}; pass the state the previous step returned (spec 17.2)"
        )
    return _checks.as_float64("x", x)


# --- 17.4 euler ------------------------------------------------------------------------------------


def euler_step(
    denoise: Denoiser, grid: Grid, i: int, x: np.ndarray, state: SolverState = SolverState(),
    noise: np.ndarray | None = None,
) -> tuple[np.ndarray, SolverState]:
    """Spec 17.4: x_{i+1} = E(x_i, D(x_i, i); i -> i+1). One call; ``noise`` is unused."""
    x = _check_step(grid, i, x, state, 0)
    x0 = _denoise(denoise, x, i)
    out = first_order_update(x, x0, grid.sigmas[i], grid.sigmas[i + 1], grid.alphas[i + 1], grid.h(i))
    return out, state


# --- 17.5 euler_ancestral --------------------------------------------------------------------------


def ancestral_levels(sigma_next: float, h: float, eta: float) -> tuple[float, float, float]:
    """Spec 17.5: (sigma_up, sigma_down, h_down) for the step i -> i+1.

    sigma_up = eta sigma_{i+1} sqrt(-expm1(-2h)), sigma_down = sigma_{i+1} sqrt(1 + eta^2 expm1(-2h))
    (so sigma_up^2 + sigma_down^2 = sigma_{i+1}^2, no cancelling subtraction) and
    h_down = h - log1p(eta^2 expm1(-2h)) / 2, the lambda step to the level (alpha_{i+1}, sigma_down).
    """
    e = np.expm1(-2.0 * h)
    with np.errstate(divide="ignore"):  # eta = 1 at h = +inf: log1p(-1) = -inf, h_down = +inf
        h_down = h - 0.5 * np.log1p(eta**2 * e)
    sigma_up = eta * sigma_next * np.sqrt(-e)
    sigma_down = sigma_next * np.sqrt(max(1.0 + eta**2 * e, 0.0))
    return float(sigma_up), float(sigma_down), float(h_down)


def euler_ancestral_step(
    denoise: Denoiser, grid: Grid, i: int, x: np.ndarray, state: SolverState = SolverState(),
    noise: np.ndarray | None = None, *, eta: float = 1.0,
) -> tuple[np.ndarray, SolverState]:
    """Spec 17.5: x_{i+1} = E(x_i, x0_hat; i -> down) + sigma_up z. One call.

    eta = 0 is euler; on vp it equals DDIM (7.4) with the same eta and noise.
    """
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
    noise = _checks.as_float64("noise", noise)
    _checks.same_shape(x=x, noise=noise)
    return out + sigma_up * noise, state


# --- 17.6 heun -------------------------------------------------------------------------------------


def heun_correction(
    x_euler: np.ndarray, eps_a: np.ndarray, eps_b: np.ndarray, sigma_next: float, h: float
) -> np.ndarray:
    """Spec 17.6: x_{i+1} = x' - (sigma_{i+1} expm1(h) / 2) (eps_b - eps_a): the trapezoid rule in
    y = x / alpha over sig = sigma / alpha = exp(-lambda), rewritten on x."""
    return x_euler - (0.5 * sigma_next * np.expm1(h)) * (eps_b - eps_a)


def heun_is_euler(grid: Grid, i: int) -> bool:
    """Spec 17.6: the step is a single Euler step where the trapezoid weight expm1(h) is unbounded:
    alpha_i = 0 (lambda_i = -inf) or sigma_{i+1} = 0 (lambda_{i+1} = +inf)."""
    return bool(grid.alphas[i] == 0.0 or grid.sigmas[i + 1] == 0.0)


def heun_step(
    denoise: Denoiser, grid: Grid, i: int, x: np.ndarray, state: SolverState = SolverState(),
    noise: np.ndarray | None = None,
) -> tuple[np.ndarray, SolverState]:
    """Spec 17.6: Euler to level i+1, a second call there, then the trapezoid correction. Two calls
    (one where :func:`heun_is_euler`)."""
    x = _check_step(grid, i, x, state, 0)
    a, s, a1, s1, h = grid.alphas[i], grid.sigmas[i], grid.alphas[i + 1], grid.sigmas[i + 1], grid.h(i)
    x0_a = _denoise(denoise, x, i)
    x_euler = first_order_update(x, x0_a, s, s1, a1, h)
    if heun_is_euler(grid, i):
        return x_euler, state
    x0_b = _denoise(denoise, x_euler, i + 1)
    eps_a = eps_from_level(x, x0_a, a, s)
    eps_b = eps_from_level(x_euler, x0_b, a1, s1)
    return heun_correction(x_euler, eps_a, eps_b, s1, h), state


# --- 17.7 dpmpp_2m ---------------------------------------------------------------------------------


def multistep_ratio(h: float, h_prev: float) -> float:
    """Spec 17.7: rho = h_i / h_{i-1}; 0 when h_{i-1} = +inf (a first level with alpha_0 = 0)."""
    return h / h_prev


def dpmpp_2m_x0(x0: np.ndarray, x0_prev: np.ndarray, rho: float) -> np.ndarray:
    """Spec 17.7: the second-order data estimate D = x0_i + (rho / 2) (x0_i - x0_{i-1})."""
    return x0 + (0.5 * rho) * (x0 - x0_prev)


def multistep_order(grid: Grid, i: int) -> int:
    """Spec 17.7 / 17.8: 1 at the first step (no history) and at the final step, else 2."""
    return 1 if i == 0 or i == grid.N - 1 else 2


def _multistep_predict(grid: Grid, i: int, x: np.ndarray, x0: np.ndarray, x0_prev: np.ndarray | None) -> np.ndarray:
    """Spec 17.7: the DPM-Solver++(2M) update from level i (also UniPC's bh2 predictor, 17.8)."""
    d = x0
    if multistep_order(grid, i) == 2:
        d = dpmpp_2m_x0(x0, x0_prev, multistep_ratio(grid.h(i), grid.h(i - 1)))
    return first_order_update(x, d, grid.sigmas[i], grid.sigmas[i + 1], grid.alphas[i + 1], grid.h(i))


def dpmpp_2m_step(
    denoise: Denoiser, grid: Grid, i: int, x: np.ndarray, state: SolverState = SolverState(),
    noise: np.ndarray | None = None,
) -> tuple[np.ndarray, SolverState]:
    """Spec 17.7: DPM-Solver++(2M) on the x0 prediction. One call; state (x0_{i-1},) -> (x0_i,)."""
    x = _check_step(grid, i, x, state, 1)
    x0 = _denoise(denoise, x, i)
    out = _multistep_predict(grid, i, x, x0, state.x0[0] if state.x0 else None)
    return out, SolverState(x0=(x0,))


# --- 17.8 unipc ------------------------------------------------------------------------------------


def unic_coefficients(h: float, r: float) -> tuple[float, float]:
    """Spec 17.8: (rho_a, rho_b) of the order-2 bh2 corrector, the solution of

        rho_a + rho_b = b1,   r rho_a + rho_b = b2,
        b1 = g1 / B,  b2 = 2 g2 / B,  B = expm1(-h),  g1 = B / (-h) - 1,  g2 = g1 / (-h) - 1/2,

    with r = (lambda_{i-2} - lambda_{i-1}) / h < 0 (-inf when alpha_0 = 0 and i = 2: rho_a = 0).
    """
    hh = -h
    big_b = np.expm1(hh)
    g1 = big_b / hh - 1.0
    g2 = g1 / hh - 0.5
    b1, b2 = g1 / big_b, 2.0 * g2 / big_b
    rho_a = (b2 - b1) / (r - 1.0)
    return float(rho_a), float(b1 - rho_a)


def unic_x0(
    x0_prev: np.ndarray, x0_prev2: np.ndarray | None, x0_new: np.ndarray, order: int, h: float, r: float
) -> np.ndarray:
    """Spec 17.8: the corrector's data estimate C for the step i-1 -> i.

    order 1: C = m_{i-1} + (m_i - m_{i-1}) / 2
    order 2: C = m_{i-1} + rho_a (m_{i-2} - m_{i-1}) / r + rho_b (m_i - m_{i-1})
    """
    if order == 1:
        return x0_prev + 0.5 * (x0_new - x0_prev)
    rho_a, rho_b = unic_coefficients(h, r)
    return x0_prev + (rho_a / r) * (x0_prev2 - x0_prev) + rho_b * (x0_new - x0_prev)


def unipc_step(
    denoise: Denoiser, grid: Grid, i: int, x: np.ndarray, state: SolverState = SolverState(),
    noise: np.ndarray | None = None,
) -> tuple[np.ndarray, SolverState]:
    """Spec 17.8: UniPC (bh2, order 2). One call at level i on the predicted x_i; for i >= 1 the
    corrector replaces x_i using that call; then the predictor (17.7's update) goes to level i+1.

    State in: (x0 = (m_{i-1}, m_{i-2}), x = x_{i-1}); out: ((m_i, m_{i-1}), corrected x_i).
    """
    x = _check_step(grid, i, x, state, 2)
    if i > 0 and state.x is None:
        raise ValueError("argument 'state': unipc needs the previous sample (state.x) after step 0 (spec 17.8)")
    m = _denoise(denoise, x, i)
    if i > 0:
        h = grid.h(i - 1)
        order = multistep_order(grid, i - 1)  # the order of the step being corrected
        r = (grid.lambdas[i - 2] - grid.lambdas[i - 1]) / h if order == 2 else 0.0
        c = unic_x0(state.x0[0], state.x0[1] if order == 2 else None, m, order, h, float(r))
        x = first_order_update(state.x, c, grid.sigmas[i - 1], grid.sigmas[i], grid.alphas[i], h)
    out = _multistep_predict(grid, i, x, m, state.x0[0] if state.x0 else None)
    return out, SolverState(x0=(m, *state.x0[:1]), x=x)


# --- 17.2 the table and the loop -------------------------------------------------------------------


@dataclass(frozen=True)
class Solver:
    """A row of the solver table (spec 17.2)."""

    step: Callable[..., tuple[np.ndarray, SolverState]]
    calls: int  # network calls of a full step; heun's Euler steps (17.6) take one
    options: tuple[str, ...]  # keyword options of the step besides the common arguments
    order: int  # order of convergence of the probability-flow ODE solve (17.9); 0: stochastic


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
    if row.step is heun_step:  # the one solver whose calls depend on the grid (17.6)
        return sum(1 if heun_is_euler(grid, i) else 2 for i in range(grid.N))
    return row.calls * grid.N


def solver_noise(
    noise: np.ndarray | np.random.Generator | None, n_steps: int, shape: tuple[int, ...]
) -> np.ndarray | None:
    """Spec 17.2: the loop's noise, shape (N, *shape), entry i for step i; a Generator draws
    ``rng.standard_normal((N, *shape))`` in one call."""
    if noise is None:
        return None
    return _checks.noise_block(noise, (n_steps, *shape), "(N, *x.shape)")


def solve(
    denoise: Denoiser,
    x: np.ndarray,
    alphas: object,
    sigmas: object,
    solver: str = "euler",
    noise: np.ndarray | np.random.Generator | None = None,
    **options: float,
) -> np.ndarray:
    """Spec 17.2: S = empty; for i = 0..N-1: (x, S) = step(denoise, grid, i, x, S, Z[i]); return x_N.

    ``x`` is the sample at level 0; ``denoise(x, i)`` returns x0_hat at level i.
    """
    row = _solver(solver)
    unknown = set(options) - set(row.options)
    if unknown:
        raise ValueError(f"solver {solver!r} takes the options {row.options}, not {sorted(unknown)}")
    grid = solver_grid(alphas, sigmas)
    x = _checks.as_float64("x", x)
    z = solver_noise(noise, grid.N, x.shape)
    state = SolverState()
    for i in range(grid.N):
        x, state = row.step(denoise, grid, i, x, state, None if z is None else z[i], **options)
    return x


# --- 17.9 the Gaussian check -----------------------------------------------------------------------


def gaussian_level_denoiser(mu: float, var: float, grid: Grid) -> Denoiser:
    """Spec 17.9: the ideal x0 denoiser for data x0 ~ N(mu, var) per element, at the levels of ``grid``:
    D(x, i) = mu + alpha_i var / (alpha_i^2 var + sigma_i^2) (x - alpha_i mu)."""
    if not (np.isfinite(mu) and np.isfinite(var) and var > 0.0):
        raise ValueError(f"arguments 'mu' and 'var' must be finite with var > 0, got mu={mu}, var={var}")

    def denoise(x: np.ndarray, i: int) -> np.ndarray:
        a, s = grid.alphas[i], grid.sigmas[i]
        return mu + a * var / (a * a * var + s * s) * (x - a * mu)

    return denoise


def gaussian_flow(x: np.ndarray, mu: float, var: float, level_from: tuple[float, float],
                  level_to: tuple[float, float]) -> np.ndarray:
    """Spec 17.9: the exact probability-flow ODE map for x0 ~ N(mu, var) from level (alpha, sigma) to
    level (alpha', sigma'):

        x' - alpha' mu = sqrt(alpha'^2 var + sigma'^2) / sqrt(alpha^2 var + sigma^2) (x - alpha mu).
    """
    (a, s), (a1, s1) = level_from, level_to
    scale = np.sqrt(a1 * a1 * var + s1 * s1) / np.sqrt(a * a * var + s * s)
    return a1 * mu + scale * (_checks.as_float64("x", x) - a * mu)
