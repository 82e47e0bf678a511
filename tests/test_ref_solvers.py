"""Spec section 17: the solvers, checked against expectations derived independently of vdm_ref.solvers.

- Euler and DPM-Solver++(1) against the v1 DDIM step (7.4) and the flow Euler step; euler_ancestral
  against DDIM with eta and the same noise.
- Heun and DPM-Solver++(2M) against plain scalar loops written in EDM's variables (y = x / alpha,
  sig = sigma / alpha), the form of Karras et al. 2022 and Lu et al. 2022.
- The UniPC corrector against the exact integral for an x0 prediction quadratic in lambda.
- Every deterministic solver against the exact probability-flow solution for Gaussian data (its
  derivation is checked here too), with the empirical order of convergence.
- Mutants: wrong history entry, no lower-order final step, Heun's second call at the wrong level,
  duplicated Karras sigmas.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import vdm_ref
from vdm_ref import solvers as S

MU, VAR = 0.5, 0.25
EMPTY = S.SolverState()
DETERMINISTIC = [name for name, row in S.SOLVERS.items() if row.order > 0]


# --- grids -----------------------------------------------------------------------------------------


def lambda_grid(process: str, lambdas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Levels with the given log(alpha / sigma) for each process (section 14's families)."""
    lam = np.asarray(lambdas, dtype=np.float64)
    if process == "edm":  # alpha = 1, sigma = exp(-lambda)
        return np.ones_like(lam), np.exp(-lam)
    if process == "vp":  # alpha^2 + sigma^2 = 1
        a2 = 1.0 / (1.0 + np.exp(-2.0 * lam))
        return np.sqrt(a2), np.sqrt(1.0 - a2)
    s = 1.0 / (1.0 + np.exp(lam))  # flow: alpha = 1 - s, sigma = s, lambda = log((1 - s) / s)
    return 1.0 - s, s


def karras_sigmas(n: int, sigma_max: float = 80.0, sigma_min: float = 0.002, rho: float = 7.0) -> np.ndarray:
    """Karras et al. 2022 eq. (5), n levels, written out here (not section 15's function)."""
    r = np.arange(n) / (n - 1)
    return (sigma_max ** (1 / rho) + r * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def run(step, alphas, sigmas, x, denoise=None, noise=None, **opts) -> np.ndarray:
    """The loop of 17.2 written out, so that mutant steps run through the same path."""
    grid = S.solver_grid(alphas, sigmas)
    denoise = denoise or S.gaussian_level_denoiser(MU, VAR, grid)
    state = S.SolverState()
    for i in range(grid.N):
        x, state = step(denoise, grid, i, x, state, None if noise is None else noise[i], **opts)
    return x


def affine_error(step, alphas, sigmas) -> float:
    """The solve on Gaussian data is affine in x: x_N = A x_0 + c. Returns |A - A_exact| (its error
    for the start x_0 - alpha_0 mu = 1), which unlike a pointwise error never crosses zero by chance."""
    x = np.array([[alphas[0] * MU, alphas[0] * MU + 1.0]])
    got = run(step, alphas, sigmas, x)
    want = S.gaussian_flow(x, MU, VAR, (alphas[0], sigmas[0]), (alphas[-1], sigmas[-1]))
    return float(abs((got[0, 1] - got[0, 0]) - (want[0, 1] - want[0, 0])))


def measured_order(step, process: str = "vp", ns=(16, 32, 64, 128)) -> float:
    """Slope of -log(error) against log(N) on uniform-lambda grids from lambda = -3 to 1."""
    errs = [affine_error(step, *lambda_grid(process, np.linspace(-3.0, 1.0, n + 1))) for n in ns]
    return float(-np.polyfit(np.log(ns), np.log(errs), 1)[0])


# --- 17.1 the grid ---------------------------------------------------------------------------------


def test_grid_lambdas_and_infinite_ends() -> None:
    g = S.solver_grid([0.0, 0.6, 1.0], [1.0, 0.8, 0.0])
    assert g.N == 2
    assert g.lambdas[0] == -math.inf and g.lambdas[2] == math.inf
    assert g.lambdas[1] == pytest.approx(math.log(0.6 / 0.8), rel=1e-15)
    assert g.h(0) == math.inf and g.h(1) == math.inf


@pytest.mark.parametrize(
    ("alphas", "sigmas", "match"),
    [
        ([1.0, 1.0, 1.0], [2.0, 1.0, 1.0], "levels 1 and 2"),  # repeated level
        ([1.0, 1.0, 1.0], [1.0, 2.0, 0.5], "levels 0 and 1"),  # noise goes up
        ([1.0, 0.0, 1.0], [1.0, 0.5, 0.0], "only the first level may have alpha = 0"),
        ([1.0, 1.0, 1.0], [1.0, 0.0, 0.0], "only the final level may have sigma = 0"),
        ([1.0], [1.0], "length N \\+ 1 >= 2"),
        ([1.0, 1.0], [1.0, np.nan], "NaN"),
        ([1.0, -1.0], [1.0, 0.5], ">= 0"),
    ],
)
def test_grid_errors(alphas, sigmas, match) -> None:
    with pytest.raises(ValueError, match=match):
        S.solver_grid(alphas, sigmas)


def test_mutant_karras_sigmas_with_a_duplicated_entry_are_refused() -> None:
    """The classic: Karras sigmas snapped to a discrete cosine table repeat a level near the ends.
    Snapping is the mutant; the grid check refuses it before any step runs."""
    sched = vdm_ref.make_schedule("cosine", 1000)
    table = np.sqrt((1.0 - sched.abar) / sched.abar)  # EDM sigma of each timestep
    snapped = np.array([table[np.argmin(np.abs(table - s))] for s in karras_sigmas(40, table[-1], table[0])])
    assert len(np.unique(snapped)) < len(snapped)  # the mutant really repeats a level
    sigmas = np.append(snapped, 0.0)
    with pytest.raises(ValueError, match="strictly decrease"):
        S.solve(lambda x, i: x, np.zeros((1, 1)), np.ones_like(sigmas), sigmas, "dpmpp_2m")
    S.solver_grid(np.ones(41), np.append(karras_sigmas(40, table[-1], table[0]), 0.0))  # unsnapped: fine


# --- 17.9 the exact solution -----------------------------------------------------------------------


def test_gaussian_flow_solves_the_probability_flow_ode() -> None:
    """y = x / alpha, sig = sigma / alpha obeys dy/dsig = (y - D(y)) / sig with the ideal denoiser
    D = mu + var / (var + sig^2) (y - mu) (EDM's ODE). The claimed solution
    y(sig) = mu + sqrt(var + sig^2) / sqrt(var + sig0^2) (y0 - mu) is checked by central differences."""
    y0, sig0 = 1.7, 3.0

    def y(sig: float) -> float:
        return float(S.gaussian_flow(np.array(y0), MU, VAR, (1.0, sig0), (1.0, sig)))

    for sig in (0.05, 0.4, 1.0, 2.5):
        d = 1e-5 * sig
        lhs = (y(sig + d) - y(sig - d)) / (2 * d)
        denoised = MU + VAR / (VAR + sig**2) * (y(sig) - MU)
        assert lhs == pytest.approx((y(sig) - denoised) / sig, rel=1e-7)
    assert y(sig0) == pytest.approx(y0, rel=1e-15)


def test_gaussian_flow_transports_the_marginals_and_composes() -> None:
    """It maps N(alpha mu, alpha^2 var + sigma^2) onto the marginal of the target level, and
    i -> j -> k equals i -> k (in every process: the map is written on (alpha, sigma))."""
    a, s, a1, s1, a2, s2 = 0.3, 0.95, 0.9, 0.4, 1.0, 0.0
    m, v = a * MU, a * a * VAR + s * s
    lo, hi = S.gaussian_flow(np.array([m, m + math.sqrt(v)]), MU, VAR, (a, s), (a2, s2))
    assert lo == pytest.approx(a2 * MU, rel=1e-15)
    assert (hi - lo) ** 2 == pytest.approx(a2 * a2 * VAR + s2 * s2, rel=1e-14)
    x = np.array([-1.0, 0.2, 2.0])
    two = S.gaussian_flow(S.gaussian_flow(x, MU, VAR, (a, s), (a1, s1)), MU, VAR, (a1, s1), (a2, s2))
    np.testing.assert_allclose(two, S.gaussian_flow(x, MU, VAR, (a, s), (a2, s2)), rtol=1e-14)


# --- 17.3 / 17.4 / 17.5 against DDIM and the flow Euler step ----------------------------------------


def _vp_setup(sched, steps: int, seed: int = 0):
    ts = vdm_ref.inference_timesteps(sched.T, steps, "trailing")
    abar = np.append(sched.abar_at(ts), 1.0)  # abar_{-1} = 1: the final level (1, 0)
    model = vdm_ref.gaussian_ideal_model(sched, MU, VAR, "x0")
    shape = (2, 1, 2, 3, 3)
    z = np.random.default_rng(seed).standard_normal((steps + 1, *shape))

    def denoise(x: np.ndarray, i: int) -> np.ndarray:
        return model(x, np.full((x.shape[0],), ts[i], dtype=np.int64))

    return ts, np.sqrt(abar), np.sqrt(1.0 - abar), model, shape, z, denoise


@pytest.mark.parametrize("solver", ["euler", "dpmpp_2m"])
def test_first_order_solvers_equal_ddim_on_vp(solver) -> None:
    """Euler every step, and DPM-Solver++ on one step (N = 1: first order), equal v1 DDIM, eta = 0."""
    sched = vdm_ref.make_schedule("cosine", 1000)
    for steps in ((12, 1) if solver == "euler" else (1,)):
        ts, a, s, model, shape, z, denoise = _vp_setup(sched, steps)
        want = vdm_ref.sample(model, sched, ts, shape, z, sampler="ddim", prediction="x0")
        got = S.solve(denoise, z[0], a, s, solver)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("eta", [0.0, 0.35, 1.0])
def test_euler_ancestral_equals_ddim_with_eta_and_the_same_noise(eta) -> None:
    sched = vdm_ref.make_schedule("cosine", 1000)
    ts, a, s, model, shape, z, denoise = _vp_setup(sched, 9, seed=1)
    want = vdm_ref.sample(model, sched, ts, shape, z, sampler="ddim", prediction="x0", eta=eta)
    got = S.solve(denoise, z[0], a, s, "euler_ancestral", noise=z[1:], eta=eta)
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


def test_euler_ancestral_noise_rules() -> None:
    a, s = lambda_grid("vp", np.linspace(-2.0, 2.0, 4))
    a, s = np.append(a, 1.0), np.append(s, 0.0)
    denoise = S.gaussian_level_denoiser(MU, VAR, S.solver_grid(a, s))
    x = np.ones((1, 3))
    with pytest.raises(ValueError, match="'noise' is required"):
        S.solve(denoise, x, a, s, "euler_ancestral")
    # eta = 0 needs none and is euler; the final step to sigma = 0 adds none.
    np.testing.assert_array_equal(S.solve(denoise, x, a, s, "euler_ancestral", eta=0.0), S.solve(denoise, x, a, s))
    z = np.random.default_rng(2).standard_normal((4, 1, 3))
    z2 = z.copy()
    z2[-1] += 5.0
    np.testing.assert_array_equal(
        S.solve(denoise, x, a, s, "euler_ancestral", noise=z), S.solve(denoise, x, a, s, "euler_ancestral", noise=z2)
    )
    with pytest.raises(ValueError, match="'eta'"):
        S.solve(denoise, x, a, s, "euler_ancestral", noise=z, eta=1.5)
    with pytest.raises(ValueError, match="takes the options"):
        S.solve(denoise, x, a, s, "euler", eta=0.5)
    with pytest.raises(ValueError, match="shape"):
        S.solve(denoise, x, a, s, "euler_ancestral", noise=z[1:])


def test_euler_is_the_flow_velocity_step() -> None:
    """Flow: x <- x + (s_next - s) u with u = eps_hat - x0_hat = (x - x0_hat) / s."""
    s = np.array([1.0, 0.8, 0.55, 0.3, 0.1, 0.0])
    a = 1.0 - s
    grid = S.solver_grid(a, s)
    denoise = S.gaussian_level_denoiser(MU, VAR, grid)
    x = np.random.default_rng(3).standard_normal((2, 5))
    want = x.copy()
    for i in range(5):
        u = (want - denoise(want, i)) / s[i]
        want = want + (s[i + 1] - s[i]) * u
    np.testing.assert_allclose(S.solve(denoise, x, a, s, "euler"), want, rtol=1e-13, atol=1e-13)


# --- 17.6 / 17.7 against plain loops in EDM variables ------------------------------------------------


def plain_heun(d_y, sig: list[float], y: np.ndarray) -> np.ndarray:
    """Karras et al. 2022 Algorithm 1 without churn, on y over sig; Euler into sig = 0."""
    for i in range(len(sig) - 1):
        d = (y - d_y(y, i)) / sig[i]
        y_next = y + (sig[i + 1] - sig[i]) * d
        if sig[i + 1] != 0.0:
            d2 = (y_next - d_y(y_next, i + 1)) / sig[i + 1]
            y_next = y + (sig[i + 1] - sig[i]) * (0.5 * d + 0.5 * d2)
        y = y_next
    return y


def plain_dpmpp_2m(d_y, sig: list[float], y: np.ndarray) -> np.ndarray:
    """DPM-Solver++(2M) on y with t = -log(sig); first order at the first and the final step."""
    t = [math.inf if v == 0.0 else -math.log(v) for v in sig]
    old = None
    n = len(sig) - 1
    for i in range(n):
        den = d_y(y, i)
        h = t[i + 1] - t[i]
        if old is None or i == n - 1:
            mix = den
        else:
            r = (t[i] - t[i - 1]) / h
            mix = (1 + 1 / (2 * r)) * den - (1 / (2 * r)) * old
        y = (sig[i + 1] / sig[i]) * y - math.expm1(-h) * mix
        old = den
    return y


@pytest.mark.parametrize("process", ["edm", "vp", "flow"])
@pytest.mark.parametrize(("solver", "plain"), [("heun", plain_heun), ("dpmpp_2m", plain_dpmpp_2m)])
def test_second_order_solvers_match_plain_loops(process, solver, plain) -> None:
    lam = np.log(1.0 / karras_sigmas(8, 30.0, 0.01))
    a, s = lambda_grid(process, lam)
    a, s = np.append(a, 1.0), np.append(s, 0.0)  # the final level (1, 0)
    grid = S.solver_grid(a, s)
    denoise = S.gaussian_level_denoiser(MU, VAR, grid)
    x = np.random.default_rng(4).standard_normal((3, 4)) * s[0] + a[0] * MU
    want = a[-1] * plain(lambda y, i: denoise(a[i] * y, i), list(s / a), x / a[0])
    got = S.solve(denoise, x, a, s, solver)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


def test_heun_counts_and_its_euler_steps() -> None:
    """Two calls per step, one into sigma = 0 and one out of alpha = 0 (17.6)."""
    s = np.array([1.0, 0.7, 0.4, 0.1, 0.0])
    a = 1.0 - s
    grid = S.solver_grid(a, s)
    calls: list[int] = []
    ideal = S.gaussian_level_denoiser(MU, VAR, grid)

    def denoise(x, i):
        calls.append(i)
        return ideal(x, i)

    out = S.solve(denoise, np.ones((1, 2)), a, s, "heun")
    assert calls == [0, 1, 2, 2, 3, 3] and S.network_calls("heun", grid) == 6
    x1 = S.first_order_update(np.ones((1, 2)), ideal(np.ones((1, 2)), 0), 1.0, 0.7, 0.3, grid.h(0))
    np.testing.assert_allclose(S.heun_step(ideal, grid, 0, np.ones((1, 2)))[0], x1, rtol=1e-15)
    assert np.all(np.isfinite(out))
    assert S.network_calls("dpmpp_2m", grid) == 4 == S.network_calls("unipc", grid)


# --- 17.8 UniPC ------------------------------------------------------------------------------------


def test_unipc_order2_corrector_is_exact_for_quadratic_x0() -> None:
    """With x0_hat(lambda) = P(lambda) quadratic, the data-prediction ODE d(x / sigma)/dlambda =
    e^lambda P(lambda) integrates exactly: x_i / sigma_i = x_{i-1} / sigma_{i-1} + [e^l (P - P' + P'')].
    The order-2 bh2 corrector must reproduce it from m_{i-2}, m_{i-1}, m_i; order 1 must not."""
    c0, c1, c2 = 0.3, -0.8, 0.45

    def p(l):
        return c0 + c1 * l + c2 * l * l

    def antideriv(l):
        return math.exp(l) * (p(l) - (c1 + 2 * c2 * l) + 2 * c2)

    a, s = lambda_grid("vp", np.array([-1.3, -0.4, 0.35, 1.6]))
    grid = S.solver_grid(a, s)
    lam = grid.lambdas
    x_prev = np.array([0.7])
    want = s[2] * (x_prev / s[1] + antideriv(lam[2]) - antideriv(lam[1]))
    h = grid.h(1)
    r = (lam[0] - lam[1]) / h
    c = S.unic_x0(np.array([p(lam[1])]), np.array([p(lam[0])]), np.array([p(lam[2])]), 2, h, r)
    got = S.first_order_update(x_prev, c, s[1], s[2], a[2], h)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    c1_only = S.unic_x0(np.array([p(lam[1])]), None, np.array([p(lam[2])]), 1, h, r)
    assert abs(S.first_order_update(x_prev, c1_only, s[1], s[2], a[2], h)[0] - want[0]) > 1e-4
    # The same through unipc_step at i = 2: the returned state holds the corrected x_2.
    state = S.SolverState(x0=(np.array([p(lam[1])]), np.array([p(lam[0])])), x=x_prev)
    _, new = S.unipc_step(lambda x, i: np.array([p(lam[i])]), grid, 2, np.array([123.0]), state)
    np.testing.assert_allclose(new.x, want, rtol=1e-12)
    assert new.x0[1][0] == p(lam[1])


def test_unipc_predictor_is_dpmpp_2m_and_step0_is_ddim() -> None:
    """Without correction (the x0 prediction independent of x and at the first step) UniPC's
    prediction is the DPM-Solver++(2M) update from the same history."""
    a, s = lambda_grid("edm", np.linspace(-2.0, 2.0, 6))
    grid = S.solver_grid(a, s)
    rng = np.random.default_rng(5)
    m = [rng.standard_normal((1, 3)) for _ in range(6)]
    x = rng.standard_normal((1, 3))
    xu, xd = x, x
    su, sd = S.SolverState(), S.SolverState()
    for i in range(5):
        xu, su = S.unipc_step(lambda _x, k: m[k], grid, i, xu, su)
        xd, sd = S.dpmpp_2m_step(lambda _x, k: m[k], grid, i, su.x, sd)
        np.testing.assert_allclose(xu, xd, rtol=1e-14, atol=1e-14)


# --- invariance, zero ends and the order of convergence ---------------------------------------------


@pytest.mark.parametrize("solver", DETERMINISTIC)
def test_one_lambda_grid_gives_one_answer_in_every_process(solver) -> None:
    """Written in lambda, a solve depends on the process only through y = x / alpha."""
    lam = np.linspace(-2.5, 2.0, 7)
    y0 = np.random.default_rng(6).standard_normal((2, 3)) + MU
    results = []
    for process in ("vp", "flow", "edm"):
        a, s = lambda_grid(process, lam)
        results.append(run(S.SOLVERS[solver].step, a, s, a[0] * y0) / a[-1])
    np.testing.assert_allclose(results[1], results[0], rtol=1e-11)
    np.testing.assert_allclose(results[2], results[0], rtol=1e-11)


@pytest.mark.parametrize("solver", list(S.SOLVERS))
def test_zero_ends_are_finite_and_the_last_step_is_the_denoised_level(solver) -> None:
    """alpha_0 = 0 (pure noise) and sigma_N = 0: no NaN anywhere, and the last step of every solver
    returns alpha_N x0_hat of its last evaluation at level N-1 (17.3 at h = +inf)."""
    s = np.array([1.0, 0.75, 0.45, 0.2, 0.0])
    a = 1.0 - s
    grid = S.solver_grid(a, s)
    ideal = S.gaussian_level_denoiser(MU, VAR, grid)
    seen: list[tuple[int, np.ndarray]] = []

    def denoise(x, i):
        seen.append((i, x))
        return ideal(x, i)

    z = np.random.default_rng(7).standard_normal((4, 2, 3))
    out = S.solve(denoise, z[0], a, s, solver, noise=z if solver == "euler_ancestral" else None)
    assert np.all(np.isfinite(out))
    last_i, last_x = seen[-1]
    assert last_i == 3
    np.testing.assert_allclose(out, ideal(last_x, 3), rtol=1e-14)


EXPECTED_ORDER = {name: row.order for name, row in S.SOLVERS.items() if row.order > 0}
ORDER_TOLERANCE = 0.2  # measured: euler 0.99, heun 2.03, dpmpp_2m 2.08, unipc 2.04


@pytest.mark.parametrize("process", ["vp", "flow", "edm"])
@pytest.mark.parametrize("solver", DETERMINISTIC)
def test_empirical_order_of_convergence(solver, process) -> None:
    order = measured_order(S.SOLVERS[solver].step, process)
    assert abs(order - EXPECTED_ORDER[solver]) <= ORDER_TOLERANCE, f"{solver} on {process}: order {order:.3f}"


def test_the_solves_converge_to_the_exact_answer_with_the_zero_final_level() -> None:
    """On a Karras grid ending at sigma = 0 the error of every ODE solver falls with N."""
    for solver in DETERMINISTIC:
        errs = []
        for n in (10, 40):
            sig = np.append(karras_sigmas(n, 20.0, 0.002), 0.0)
            errs.append(affine_error(S.SOLVERS[solver].step, np.ones_like(sig), sig))
        assert errs[1] < errs[0] / 3, (solver, errs)


# --- mutants ---------------------------------------------------------------------------------------


def mutant_dpmpp_stale_history(denoise, grid, i, x, state=EMPTY, noise=None):
    """Keeps the FIRST x0 prediction as 'previous' forever instead of the last one."""
    out, new = S.dpmpp_2m_step(denoise, grid, i, x, state, noise)
    return out, (state if state.x0 else new)


def mutant_unipc_wrong_history(denoise, grid, i, x, state=EMPTY, noise=None):
    """The corrector reads m_{i-1} where it needs m_{i-2}."""
    if len(state.x0) == 2:
        state = S.SolverState(x0=(state.x0[0], state.x0[0]), x=state.x)
    return S.unipc_step(denoise, grid, i, x, state, noise)


def _second_order_everywhere(grid: S.Grid, i: int) -> int:
    return 1 if i == 0 else 2


def mutant_no_lower_order_final(base):
    def step(denoise, grid, i, x, state=EMPTY, noise=None):
        original = S.multistep_order
        S.multistep_order = _second_order_everywhere  # the final step keeps order 2
        try:
            return base(denoise, grid, i, x, state, noise)
        finally:
            S.multistep_order = original

    return step


def mutant_heun_wrong_level(denoise, grid, i, x, state=EMPTY, noise=None):
    """Heun whose second call is made at level i instead of i + 1."""
    return S.heun_step(lambda y, k: denoise(y, i), grid, i, x, state, noise)


@pytest.mark.parametrize(
    ("mutant", "solver"),
    [
        (mutant_dpmpp_stale_history, "dpmpp_2m"),
        (mutant_unipc_wrong_history, "unipc"),
        (mutant_no_lower_order_final(S.unipc_step), "unipc"),
        (mutant_heun_wrong_level, "heun"),
    ],
)
def test_mutants_fail_the_order_check(mutant, solver) -> None:
    order = measured_order(mutant)
    assert abs(order - EXPECTED_ORDER[solver]) > ORDER_TOLERANCE, f"mutant order {order:.3f} passes"


@pytest.mark.parametrize("base", [S.dpmpp_2m_step, S.unipc_step])
def test_mutant_without_lower_order_final_step_breaks_at_sigma_zero(base) -> None:
    sig = np.append(karras_sigmas(6, 20.0, 0.01), 0.0)
    a = np.ones_like(sig)
    x = np.linspace(-20.0, 20.0, 5)[None]
    good = run(base, a, sig, x)
    with np.errstate(all="ignore"):
        bad = run(mutant_no_lower_order_final(base), a, sig, x)
    assert np.all(np.isfinite(good)) and not np.all(np.isfinite(bad))


def test_the_mutant_patch_is_real() -> None:
    """Guards the mutant above: the patched rule does change a solve on a sigma_min grid."""
    a, s = lambda_grid("vp", np.linspace(-2.0, 1.0, 6))
    x = np.array([[0.1, 1.3]])
    assert not np.allclose(run(S.dpmpp_2m_step, a, s, x), run(mutant_no_lower_order_final(S.dpmpp_2m_step), a, s, x))


# --- state and argument errors ---------------------------------------------------------------------


def test_state_must_match_the_step() -> None:
    a, s = lambda_grid("edm", np.linspace(-2.0, 2.0, 5))
    grid = S.solver_grid(a, s)
    d = S.gaussian_level_denoiser(MU, VAR, grid)
    x = np.ones((1, 2))
    with pytest.raises(ValueError, match="'state'"):
        S.dpmpp_2m_step(d, grid, 2, x, S.SolverState())
    with pytest.raises(ValueError, match="'state'"):
        S.unipc_step(d, grid, 1, x, S.SolverState(x0=(x,)))
    with pytest.raises(ValueError, match="'i'"):
        S.euler_step(d, grid, 4, x)
    with pytest.raises(ValueError, match="unknown solver"):
        S.solve(d, x, a, s, "rk4")
    with pytest.raises(ValueError, match="denoise output"):
        S.solve(lambda y, i: y[:, :1], x, a, s)


def test_solver_table_rows() -> None:
    assert set(S.SOLVERS) == {"euler", "euler_ancestral", "heun", "dpmpp_2m", "unipc"}
    assert S.SOLVERS["heun"].calls == 2 and S.SOLVERS["euler_ancestral"].options == ("eta",)
    assert vdm_ref.SOLVERS is S.SOLVERS and vdm_ref.solve is S.solve


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_x0_denoiser_converts_other_predictions(prediction) -> None:
    """A vp model predicting eps or v, converted by 14.3, solves exactly as the x0 model does."""
    sched = vdm_ref.make_schedule("cosine", 1000)
    ts, a, s, model_x0, shape, z, _ = _vp_setup(sched, 6)
    grid = S.solver_grid(a, s)
    other = vdm_ref.gaussian_ideal_model(sched, MU, VAR, prediction)

    def by_index(model):
        return lambda x, i: model(x, np.full((x.shape[0],), ts[i], dtype=np.int64))

    want = S.solve(by_index(model_x0), z[0], a, s, "dpmpp_2m")
    got = S.solve(S.x0_denoiser(by_index(other), grid, prediction), z[0], a, s, "dpmpp_2m")
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("process", "prediction"), [("flow", "flow"), ("flow", "v"), ("edm", "edm"), ("edm", "eps")])
def test_x0_denoiser_on_flow_and_edm_predictions(process, prediction) -> None:
    """A 14.8 model predicting the flow velocity, v, EDM's F or eps becomes the same x0 denoiser."""
    a, s = lambda_grid(process, np.linspace(-2.0, 2.5, 6))
    grid = S.solver_grid(a, s)
    model = vdm_ref.process_gaussian_ideal_model(MU, VAR, prediction)
    denoise = S.x0_denoiser(lambda x, i: model(x, a[i], s[i]), grid, prediction)
    x = np.random.default_rng(9).standard_normal((2, 3))
    want = S.gaussian_level_denoiser(MU, VAR, grid)
    for i in range(grid.N):
        np.testing.assert_allclose(denoise(x, i), want(x, i), rtol=1e-12, atol=1e-12)
