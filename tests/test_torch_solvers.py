"""Spec section 17 on torch: backends/torch/solvers.py against the float64 reference vdm_ref.solvers,
in float64 and float32 (section 9: the reference is evaluated on the inputs rounded to the dtype under
test), plus the order of convergence measured on the torch steps themselves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vdm.backends.torch import solvers as T

import vdm_ref
from vdm_ref import solvers as R

MU, VAR = 0.5, 0.25
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-4, 1e-4)}


def lambda_grid(process: str, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if process == "edm":
        return np.ones_like(lam), np.exp(-lam)
    if process == "vp":
        a2 = 1.0 / (1.0 + np.exp(-2.0 * lam))
        return np.sqrt(a2), np.sqrt(1.0 - a2)
    s = 1.0 / (1.0 + np.exp(lam))
    return 1.0 - s, s


def levels(process: str, n: int, zero_ends: bool) -> tuple[np.ndarray, np.ndarray]:
    a, s = lambda_grid(process, np.linspace(-2.5, 2.5, n + 1))
    if zero_ends and process != "edm":  # start at pure noise (alpha = 0) and end on clean data
        a[0], s[0] = 0.0, 1.0
    if zero_ends:
        a[-1], s[-1] = 1.0, 0.0
    return a, s


def nonlinear_denoiser(grid, lib):
    """A denoiser that is not affine in x (so a solver's use of x is tested), defined alike for
    NumPy (the reference) and torch (the backend) from the grid's levels."""

    def denoise(x, i):
        a, s = grid.alphas[i], grid.sigmas[i]
        return 0.8 * lib.tanh(a * x / (a * a + s * s)) + 0.1 * s

    return denoise


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("zero_ends", [False, True])
@pytest.mark.parametrize("process", list(vdm_ref.FAMILIES))
@pytest.mark.parametrize("solver", list(R.SOLVERS))
def test_solve_matches_the_reference(solver, process, zero_ends, dtype) -> None:
    a, s = levels(process, 7, zero_ends)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((2, 3, 2, 4))).to(dtype)
    z = torch.from_numpy(rng.standard_normal((7, 2, 3, 2, 4))).to(dtype)
    opts = {"eta": 0.7} if solver == "euler_ancestral" else {}
    noise = z if solver == "euler_ancestral" else None
    rg, tg = R.solver_grid(a, s), T.solver_grid(a, s)
    got = T.solve(nonlinear_denoiser(tg, torch), x, a, s, solver, noise=noise, **opts)
    want = R.solve(nonlinear_denoiser(rg, np), x.double().numpy(), a, s, solver,
                   noise=None if noise is None else z.double().numpy(), **opts)
    assert got.dtype == dtype and got.shape == x.shape
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(got.double().numpy(), want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("solver", list(R.SOLVERS))
def test_gaussian_denoiser_and_exact_flow_match_the_reference(solver) -> None:
    a, s = levels("vp", 5, True)
    rg, tg = R.solver_grid(a, s), T.solver_grid(a, s)
    x = np.linspace(-2.0, 2.0, 6).reshape(2, 3)
    z = np.random.default_rng(1).standard_normal((5, 2, 3))
    noise = z if solver == "euler_ancestral" else None
    got = T.solve(T.gaussian_level_denoiser(MU, VAR, tg), torch.from_numpy(x), a, s, solver,
                  noise=None if noise is None else torch.from_numpy(noise))
    want = R.solve(R.gaussian_level_denoiser(MU, VAR, rg), x, a, s, solver, noise=noise)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        T.gaussian_flow(torch.from_numpy(x), MU, VAR, (0.3, 0.9), (1.0, 0.0)).numpy(),
        R.gaussian_flow(x, MU, VAR, (0.3, 0.9), (1.0, 0.0)), rtol=1e-14)


def test_tables_agree() -> None:
    assert list(T.SOLVERS) == list(R.SOLVERS)
    for name, row in R.SOLVERS.items():
        t = T.SOLVERS[name]
        assert (t.calls, t.options, t.order) == (row.calls, row.options, row.order), name
    for a, s in (levels("flow", 4, True), levels("edm", 6, False)):
        rg, tg = R.solver_grid(a, s), T.solver_grid(a, s)
        np.testing.assert_allclose(tg.lambdas, rg.lambdas, rtol=1e-15)
        for name in R.SOLVERS:
            assert T.network_calls(name, tg) == R.network_calls(name, rg)


@pytest.mark.parametrize(
    ("alphas", "sigmas"),
    [
        ([1.0, 1.0, 1.0], [2.0, 1.0, 1.0]),
        ([1.0, 0.0, 1.0], [1.0, 0.5, 0.0]),
        ([1.0, 1.0, 1.0], [1.0, 0.0, 0.0]),
        ([1.0], [1.0]),
        ([1.0, 1.0], [1.0, float("nan")]),
    ],
)
def test_grid_errors_match_the_reference(alphas, sigmas) -> None:
    with pytest.raises(ValueError) as ref:
        R.solver_grid(alphas, sigmas)
    with pytest.raises(ValueError) as got:
        T.solver_grid(alphas, sigmas)
    key = str(ref.value).split(",")[0].split(":")[0]
    assert key in str(got.value)


def test_argument_errors() -> None:
    a, s = levels("edm", 4, False)
    grid = T.solver_grid(a, s)
    d = T.gaussian_level_denoiser(MU, VAR, grid)
    x = torch.ones(1, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="'noise' is required"):
        T.solve(d, x, a, s, "euler_ancestral")
    with pytest.raises(ValueError, match="'state'"):
        T.dpmpp_2m_step(d, grid, 2, x)
    with pytest.raises(ValueError, match="unknown solver"):
        T.solve(d, x, a, s, "rk4")
    with pytest.raises(ValueError, match="takes the options"):
        T.solve(d, x, a, s, "heun", eta=0.3)
    with pytest.raises(ValueError, match="shape"):
        T.solve(d, x, a, s, "euler_ancestral", noise=torch.zeros(3, 1, 2))


def test_generator_noise_is_one_draw() -> None:
    """A Generator gives torch.randn((N, *shape)) in one call, so the same seed gives the same solve."""
    a, s = levels("vp", 4, True)
    grid = T.solver_grid(a, s)
    d = T.gaussian_level_denoiser(MU, VAR, grid)
    x = torch.zeros(2, 3)
    got = T.solve(d, x, a, s, "euler_ancestral", noise=torch.Generator().manual_seed(3))
    z = torch.randn((4, 2, 3), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, T.solve(d, x, a, s, "euler_ancestral", noise=z))


@pytest.mark.parametrize("solver", [n for n, r in T.SOLVERS.items() if r.order > 0])
def test_torch_order_of_convergence(solver) -> None:
    """The 17.9 check run on the torch steps in float64."""
    ns = (16, 32, 64, 128)
    errs = []
    for n in ns:
        a, s = lambda_grid("vp", np.linspace(-3.0, 1.0, n + 1))
        x = torch.tensor([[a[0] * MU, a[0] * MU + 1.0]], dtype=torch.float64)
        out = T.solve(T.gaussian_level_denoiser(MU, VAR, T.solver_grid(a, s)), x, a, s, solver)
        exact = R.gaussian_flow(x.numpy(), MU, VAR, (a[0], s[0]), (a[-1], s[-1]))
        errs.append(abs(float(out[0, 1] - out[0, 0]) - (exact[0, 1] - exact[0, 0])))
    order = -np.polyfit(np.log(ns), np.log(errs), 1)[0]
    assert abs(order - T.SOLVERS[solver].order) <= 0.2, order
