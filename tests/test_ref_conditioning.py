"""Spec section 18: conditional sampling (replacement, reconstruction guidance), checked exactly.

Videos whose pixels follow a stationary AR(1) Gaussian process over frames have a linear ideal
denoiser, so a deterministic sampler driven by it, with either conditioning wrapper, is a linear
map of (initial noise, given frames, replacement noise). Running the code under test on the basis
vectors of those inputs gives that map exactly; the law of the generated frames given the observed
ones is then N(G x^b, H H^T), compared with the exact conditional N(A x^b, C) (Schur complement)
by the expected 2-Wasserstein distance. A Monte Carlo run cross-checks the propagation, and an
oracle (the exact conditional denoiser, derived here independently) shows the measure goes to 0.

``python tests/test_ref_conditioning.py`` prints the table of docs/CONDITIONING.md.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import vdm_ref
from vdm_ref import conditioning as cond
from vdm_ref.processes import alpha_sigma_from_edm_sigma

F, RHO = 8, 0.9
COV = cond.ar1_covariance(F, RHO)
EXTENSION = cond.extension_frames(F, 2)  # (0, 1): continue a clip from its first two frames
INTERPOLATION = cond.interpolation_frames(F, 3)  # (0, 3, 6): fill in two frames between given ones
CASES = {"extension": EXTENSION, "interpolation": INTERPOLATION}
WEIGHTS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0)


def cosine_levels(n: int) -> tuple[np.ndarray, np.ndarray]:
    """vp levels alpha = cos(pi u / 2), sigma = sin(pi u / 2), u from 1 (pure noise) to 0 (data)."""
    u = np.linspace(1.0, 0.0, n + 1)
    a, s = np.cos(0.5 * np.pi * u), np.sin(0.5 * np.pi * u)
    a[0], s[-1] = 0.0, 0.0  # exact ends: cos(pi / 2) rounds to 6e-17
    return a, s


def ddim(denoise: cond.Denoiser, alphas: np.ndarray, sigmas: np.ndarray, z: np.ndarray) -> np.ndarray:
    """A plain deterministic DDIM on (alpha, sigma): z' = alpha' x0 + sigma' (z - alpha x0) / sigma."""
    for i in range(len(alphas) - 1):
        x0 = denoise(z, alphas[i], sigmas[i])
        z = alphas[i + 1] * x0 + sigmas[i + 1] * (z - alphas[i] * x0) / sigmas[i]
    return z


def generated(observed: tuple[int, ...]) -> np.ndarray:
    return np.setdiff1d(np.arange(F), observed)


def oracle_denoiser(x_obs: np.ndarray, observed: tuple[int, ...]) -> cond.Denoiser:
    """The exact conditional x0-denoiser E[x^a | z^a, x^b] (Gaussian conditioning on the pair),
    with the given frames as its observed frames; written without the module's closed forms."""
    b, a = np.asarray(observed), generated(observed)
    s_aa, s_ab, s_bb = COV[np.ix_(a, a)], COV[np.ix_(a, b)], COV[np.ix_(b, b)]

    def denoise(z: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
        cov_y = np.block([[alpha**2 * s_aa + sigma**2 * np.eye(len(a)), alpha * s_ab], [alpha * s_ab.T, s_bb]])
        gain = np.linalg.solve(cov_y, np.concatenate([alpha * s_aa, s_ab], axis=1).T).T
        y = np.concatenate([z[:, :, a], x_obs[:, :, b]], axis=2)
        out = x_obs.copy()
        out[:, :, a] = np.einsum("ij,bcj...->bci...", gain, y)
        return out

    return denoise


def conditional_sampler(method: str, observed: tuple[int, ...], x_obs: np.ndarray, noise: np.ndarray,
                        weight: float) -> cond.Denoiser:
    denoise, vjp = cond.gp_denoiser(COV)
    mask = cond.frame_mask(F, observed)
    guided = cond.with_reconstruction_guidance(denoise, vjp, x_obs, mask, weight)
    build = {
        "unconditional": lambda: denoise,
        "replacement": lambda: cond.with_replacement(denoise, x_obs, mask, noise),
        "guidance": lambda: guided,
        "guidance+replacement": lambda: cond.with_replacement(guided, x_obs, mask, noise),
        "oracle": lambda: oracle_denoiser(x_obs, observed),
    }
    return build[method]()


def run(method: str, observed: tuple[int, ...], z_init: np.ndarray, x_obs: np.ndarray, noise: np.ndarray,
        levels: tuple[np.ndarray, np.ndarray], weight: float = 0.0, solver: str = "") -> np.ndarray:
    """Sample with the plain DDIM above, or with a solver of vdm_ref.SOLVERS (section 17)."""
    sampler = conditional_sampler(method, observed, x_obs, noise, weight)
    if solver:
        x = vdm_ref.solve(cond.denoiser_on_grid(sampler, *levels), z_init, *levels, solver=solver)
    else:
        x = ddim(sampler, *levels, z_init)
    return cond.keep_observed(x, x_obs, cond.frame_mask(F, observed))


def response(method: str, observed: tuple[int, ...], n: int = 50, weight: float = 0.0,
             fresh: bool = True, solver: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(G, P = H H^T) of the generated frames, from runs on the basis vectors of
    u = (z_init (F), x_obs (F), one replacement noise (F) per network call or one for all)."""
    levels = cosine_levels(n)
    calls = vdm_ref.network_calls(solver, vdm_ref.solver_grid(*levels)) if solver else n
    draws = calls if fresh else 1
    dim = F * (2 + draws)
    u = np.eye(dim)
    shape = (dim, 1, F, 1, 1)
    noise = u[:, 2 * F:].reshape(dim, draws, F).transpose(1, 0, 2).reshape(draws, *shape)
    out = run(method, observed, u[:, :F].reshape(shape), u[:, F:2 * F].reshape(shape), noise,
              levels, weight, solver)[:, 0, :, 0, 0].T
    a, b = generated(observed), np.asarray(observed)
    rows = out[a]
    # Values of x_obs at generated frames must not matter at all (spec 18.1).
    assert np.all(rows[:, F + a] == 0.0)
    h = np.concatenate([rows[:, :F], rows[:, 2 * F:]], axis=1)
    return rows[:, F + b], h @ h.T


def distance(method: str, observed: tuple[int, ...], n: int = 50, weight: float = 0.0,
             fresh: bool = True, solver: str = "") -> float:
    gain, cov = response(method, observed, n, weight, fresh, solver)
    exact_gain, exact_cov = cond.gp_conditional(COV, observed)
    b = np.asarray(observed)
    return cond.conditional_w2(gain, cov, exact_gain, exact_cov, COV[np.ix_(b, b)])[0]


def toy_nonlinear(w: np.ndarray) -> tuple[cond.Denoiser, cond.Vjp]:
    """D(z) = tanh(alpha W z) + sigma z along frames, W not symmetric, and its exact vjp."""

    def denoise(z: np.ndarray, alpha: object, sigma: object) -> np.ndarray:
        a, s = np.asarray(alpha).reshape(-1, 1, 1), np.asarray(sigma).reshape(-1, 1, 1)
        return np.tanh(a * np.einsum("ij,bcj->bci", w, z)) + s * z

    def vjp(z: np.ndarray, alpha: object, sigma: object, c: np.ndarray) -> np.ndarray:
        a, s = np.asarray(alpha).reshape(-1, 1, 1), np.asarray(sigma).reshape(-1, 1, 1)
        inner = 1.0 - np.tanh(a * np.einsum("ij,bcj->bci", w, z)) ** 2
        return a * np.einsum("ji,bcj->bci", w, inner * c) + s * c

    return denoise, vjp


# --- 18.1 masks ------------------------------------------------------------------------------------


def test_frame_sets_and_masks() -> None:
    assert cond.extension_frames(8, 3) == (0, 1, 2)
    assert cond.interpolation_frames(9, 4) == (0, 4, 8)
    assert cond.interpolation_frames(8, 3) == (0, 3, 6)
    m = cond.frame_mask(5, (0, 3))
    assert m.shape == (1, 1, 5, 1, 1)
    np.testing.assert_array_equal(m.ravel(), [1, 0, 0, 1, 0])
    per_sample = cond.frame_mask(4, [(0,), (1, 3)], ndim=4)
    assert per_sample.shape == (2, 1, 4, 1)
    np.testing.assert_array_equal(per_sample[:, 0, :, 0], [[1, 0, 0, 0], [0, 1, 0, 1]])
    for bad in (lambda: cond.extension_frames(4, 4), lambda: cond.interpolation_frames(4, 1),
                lambda: cond.frame_mask(4, (0, 4))):
        with pytest.raises(ValueError):
            bad()


# --- 18.2 replacement ------------------------------------------------------------------------------


def test_replace_observed_elementwise() -> None:
    rng = np.random.default_rng(0)
    z, x_obs, eps = (rng.standard_normal((2, 1, 3, 1, 1)) for _ in range(3))
    mask = cond.frame_mask(3, [(1,), (0, 2)])
    alpha, sigma = np.array([0.6, 0.8]), np.array([0.8, 0.6])
    out = cond.replace_observed(z, x_obs, mask, alpha, sigma, eps)
    for bi in range(2):
        for f in range(3):
            want = alpha[bi] * x_obs[bi, 0, f] + sigma[bi] * eps[bi, 0, f] if mask[bi, 0, f, 0, 0] else z[bi, 0, f]
            assert out[bi, 0, f, 0, 0] == pytest.approx(want[0, 0], abs=1e-15)
    with pytest.raises(ValueError, match="mask"):
        cond.replace_observed(z, x_obs, 0.5 * mask, alpha, sigma, eps)


def test_with_replacement_noise_entries() -> None:
    seen = []

    def record(z: np.ndarray, alpha: object, sigma: object) -> np.ndarray:
        seen.append(z[0, 0, 0, 0, 0])
        return z

    z = np.zeros((1, 1, 2, 1, 1))
    x_obs = np.zeros_like(z)
    mask = cond.frame_mask(2, (0,))
    noise = np.arange(3.0).reshape(3, 1, 1, 1, 1, 1) * np.ones((3, *z.shape))
    fresh = cond.with_replacement(record, x_obs, mask, noise)
    for _ in range(3):
        fresh(z, 0.0, 1.0)
    assert seen == [0.0, 1.0, 2.0]  # call k, entry k
    with pytest.raises(ValueError, match="noise"):
        fresh(z, 0.0, 1.0)
    seen.clear()
    one_path = cond.with_replacement(record, x_obs, mask, noise[2:])
    for _ in range(4):
        one_path(z, 0.0, 1.0)
    assert seen == [2.0] * 4


# --- 18.3 reconstruction guidance ------------------------------------------------------------------


def test_guided_x0_is_minus_half_the_gradient() -> None:
    """x0~^a = x0_hat^a - (w alpha / 2) grad_{z^a} ||x^b - x0_hat^b||^2 (finite differences of a
    nonlinear denoiser whose Jacobian is not symmetric, so J c in place of J^T c would fail)."""
    rng = np.random.default_rng(1)
    w_mat = rng.standard_normal((4, 4))
    denoise, vjp = toy_nonlinear(w_mat)
    z, x_obs = rng.standard_normal((2, 1, 4)), rng.standard_normal((2, 1, 4))
    mask = cond.frame_mask(4, [(0, 2), (3,)], ndim=3)
    alpha, sigma, weight = np.array([0.7, 0.4]), np.array([0.5, 0.9]), np.array([3.0, 0.5])
    got = cond.with_reconstruction_guidance(denoise, vjp, x_obs, mask, weight)(z, alpha, sigma)

    def loss(zz: np.ndarray, bi: int) -> float:
        r = mask[bi] * (x_obs[bi] - denoise(zz[None], alpha[bi], sigma[bi])[0])
        return float(np.sum(r**2))

    x0 = denoise(z, alpha, sigma)
    for bi in range(2):
        for f in range(4):
            if mask[bi, 0, f]:
                assert got[bi, 0, f] == x_obs[bi, 0, f]
                continue
            e = np.zeros((1, 4))
            e[0, f] = 1e-6
            grad = (loss(z[bi] + e, bi) - loss(z[bi] - e, bi)) / 2e-6
            assert got[bi, 0, f] == pytest.approx(x0[bi, 0, f] - weight[bi] * alpha[bi] / 2 * grad, abs=1e-7)


def test_gp_denoiser_is_the_posterior_mean_and_vjp_its_transpose() -> None:
    denoise, vjp = cond.gp_denoiser(COV)
    rng = np.random.default_rng(2)
    z, c = rng.standard_normal((2, 1, F, 3)), rng.standard_normal((2, 1, F, 3))
    alpha, sigma = np.array([0.3, 0.9]), np.array([0.95, 0.2])
    got = denoise(z, alpha, sigma)
    prec = np.linalg.inv(COV)
    for bi in range(2):
        a, s = alpha[bi], sigma[bi]
        # precision form: E[x | z] = (Sigma^-1 + a^2/s^2 I)^-1 (a / s^2) z
        k = np.linalg.solve(prec + a**2 / s**2 * np.eye(F), a / s**2 * np.eye(F))
        np.testing.assert_allclose(got[bi, 0], k @ z[bi, 0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(vjp(z, alpha, sigma, c)[bi, 0], k.T @ c[bi, 0], rtol=1e-12, atol=1e-12)


def test_gp_conditional_precision_form() -> None:
    prec = np.linalg.inv(COV)
    for observed in CASES.values():
        a, b = generated(observed), np.asarray(observed)
        gain, cov = cond.gp_conditional(COV, observed)
        cov_want = np.linalg.inv(prec[np.ix_(a, a)])
        np.testing.assert_allclose(cov, cov_want, atol=1e-12)
        np.testing.assert_allclose(gain, -cov_want @ prec[np.ix_(a, b)], atol=1e-12)


def test_conditional_w2_closed_forms() -> None:
    # one dimension: W2^2 = (g - a)^2 var_b + (sqrt p - sqrt c)^2
    d, mean_part, cov_part = cond.conditional_w2(
        np.array([[0.5]]), np.array([[4.0]]), np.array([[0.2]]), np.array([[1.0]]), np.array([[2.0]]))
    assert mean_part == pytest.approx(0.09 * 2.0, rel=1e-12)
    assert cov_part == pytest.approx(1.0, rel=1e-12)
    assert d == pytest.approx(math.sqrt(1.18), rel=1e-12)
    gain, cov = cond.gp_conditional(COV, EXTENSION)
    assert cond.conditional_w2(gain, cov, gain, cov, COV[:2, :2])[0] < 1e-6  # sqrt of a rounding-level Bures term


# --- 18.7 the exact Gaussian-process check ---------------------------------------------------------


@pytest.mark.parametrize("method,weight", [("replacement", 0.0), ("guidance", 2.0)])
def test_exact_propagation_matches_monte_carlo(method: str, weight: float) -> None:
    """Sample many independent pixels: the generated frames regress on the given ones with gain G
    and residual covariance P = H H^T, as the basis-vector propagation says."""
    n, pixels = 20, 4096
    gain, cov = response(method, INTERPOLATION, n, weight)
    rng = np.random.default_rng(3)
    x = (np.linalg.cholesky(COV) @ rng.standard_normal((F, pixels))).reshape(1, 1, F, 64, 64)
    z_init = rng.standard_normal(x.shape)
    noise = rng.standard_normal((n, *x.shape))
    out = run(method, INTERPOLATION, z_init, x, noise, cosine_levels(n), weight)[0, 0].reshape(F, -1)
    a, b = generated(INTERPOLATION), np.asarray(INTERPOLATION)
    resid = out[a] - gain @ x[0, 0].reshape(F, -1)[b]
    # 4096 samples: entries of an empirical covariance of O(1) values have std about 0.02-0.03.
    np.testing.assert_allclose(resid @ resid.T / pixels, cov, atol=0.12)
    np.testing.assert_allclose(resid @ x[0, 0].reshape(F, -1)[b].T / pixels, 0.0, atol=0.12)


def test_oracle_converges_at_first_order() -> None:
    """The exact conditional denoiser under DDIM: the measure goes to 0 like 1/N (DDIM is first
    order), so the distances below measure the methods, not the yardstick."""
    for observed in CASES.values():
        d25, d50, d200 = (distance("oracle", observed, n) for n in (25, 50, 200))
        assert 1.7 < d25 / d50 < 2.3 and 3.4 < d50 / d200 < 4.6
        assert d200 < 0.015


def test_guidance_with_the_exact_precision_is_the_exact_conditional_denoiser() -> None:
    """Spec 18.5: with Cov(x^b | z)^-1 in place of w_r (alpha / sigma)^2 I, the guidance correction
    (sigma^2 / alpha) J_ba^T Cov(x^b | z)^-1 (x^b - x0_hat^b) gives E[x^a | z^a, x^b] exactly (the
    score of q(x^b | z) is exact for Gaussian data), which the oracle computes another way."""
    rng = np.random.default_rng(8)
    for observed in CASES.values():
        a, b = generated(observed), np.asarray(observed)
        z, x_obs = rng.standard_normal((2, 1, 1, F))
        for alpha, sigma in ((0.3, 0.95), (0.9, 0.4), (0.995, 0.1)):
            k = cond.gp_denoiser_matrix(COV, alpha, sigma)
            post_cov = sigma**2 * np.linalg.solve(alpha**2 * COV + sigma**2 * np.eye(F), COV)  # Cov(x | z)
            x0 = k @ z[0, 0]
            correction = sigma**2 / alpha * k[np.ix_(b, a)].T @ np.linalg.solve(post_cov[np.ix_(b, b)],
                                                                                x_obs[0, 0, b] - x0[b])
            want = oracle_denoiser(x_obs, observed)(z, alpha, sigma)[0, 0, a]
            np.testing.assert_allclose(x0[a] + correction, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", CASES)
def test_guidance_approaches_the_conditional_and_replacement_does_not(case: str) -> None:
    observed = CASES[case]
    unconditional = distance("unconditional", observed)
    replacement = distance("replacement", observed)
    guided = [distance("guidance", observed, weight=w) for w in WEIGHTS]
    # Replacement helps (it sees noisy given frames) but keeps a bias that more steps do not remove.
    assert replacement < 0.75 * unconditional
    assert replacement > 1.0 and distance("replacement", observed, n=200) > 0.95 * replacement
    # Guidance improves steadily up to w_r = 5 and is then at most a third of replacement's distance.
    assert replacement > guided[0] > guided[1] > guided[2]
    assert guided[2] < 0.35 * replacement
    # A constant w_r cannot be exact at every noise level (docs/CONDITIONING.md): past its best
    # value, guidance overshoots and at w_r = 50 is worse than at w_r = 5 again.
    assert guided[-1] > 2.0 * min(guided)


def test_guidance_at_zero_weight_is_one_path_replacement() -> None:
    """With w_r = 0 the guided prediction only pins the observed frames to x^b, which keeps the
    observed latent on the forward path alpha x^b + sigma eps of its initial noise (alpha_0 = 0):
    the same samples as replacement with that one eps."""
    rng = np.random.default_rng(4)
    z_init, x_obs = rng.standard_normal((2, 3, 1, F, 2, 2))
    levels = cosine_levels(30)
    pinned = run("guidance", EXTENSION, z_init, x_obs, z_init[None], levels, 0.0)
    replaced = run("replacement", EXTENSION, z_init, x_obs, z_init[None], levels)
    np.testing.assert_allclose(pinned, replaced, rtol=0, atol=1e-12)
    assert np.abs(run("guidance", EXTENSION, z_init, x_obs, z_init[None], levels, 5.0) - pinned).max() > 0.1


@pytest.mark.parametrize("family", ["flow", "edm"])
def test_same_samples_on_every_noise_process(family: str) -> None:
    """Spec 18.5: on levels of the same lambda, vp, flow and edm give the same samples for both
    methods and the same w_r (the latents differ by the factor alpha / alpha_vp)."""
    n = 20
    u = np.linspace(0.97, 0.0, n + 1)  # starts below pure noise: edm cannot represent alpha = 0
    sigma_edm = np.tan(0.5 * np.pi * u)
    vp = alpha_sigma_from_edm_sigma("vp", sigma_edm)
    other = alpha_sigma_from_edm_sigma(family, sigma_edm)
    rng = np.random.default_rng(5)
    z_vp, x_obs = rng.standard_normal((2, 2, 1, F, 2, 1))
    noise = rng.standard_normal((n, 2, 1, F, 2, 1))
    z_other = z_vp * other[0][0] / vp[0][0]
    for method, weight in (("guidance", 5.0), ("replacement", 0.0), ("guidance+replacement", 2.0)):
        want = run(method, INTERPOLATION, z_vp, x_obs, noise, vp, weight)
        got = run(method, INTERPOLATION, z_other, x_obs, noise, other, weight)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("solver", [name for name, row in vdm_ref.SOLVERS.items() if row.order > 0])
def test_every_solver(solver: str) -> None:
    """Spec 18.4: the wrappers drive every deterministic solver of section 17 through denoiser_on_grid; the
    ordering of the methods holds for each, and the oracle shows the solver's own accuracy."""
    for observed in CASES.values():
        replacement = distance("replacement", observed, 20, solver=solver)
        guided = distance("guidance", observed, 20, 5.0, solver=solver)
        oracle = distance("oracle", observed, 20, solver=solver)
        # 20 steps: the oracle's distance is the solver's discretisation error (first vs second order).
        assert oracle < (0.15 if vdm_ref.SOLVERS[solver].order == 1 else 0.03)
        assert oracle < guided < 0.4 * replacement


def test_composes_with_the_sampling_loop_of_7_6() -> None:
    """denoiser_as_vp_model turns a wrapped denoiser into the x0-prediction model of vdm_ref.sample (DDIM)."""
    sched = vdm_ref.make_schedule("cosine", 1000)
    steps = vdm_ref.inference_timesteps(1000, 20, "trailing")
    rng = np.random.default_rng(6)
    shape = (2, 1, F, 2, 2)
    zs = rng.standard_normal((len(steps) + 1, *shape))
    x_obs = rng.standard_normal(shape)
    denoise, vjp = cond.gp_denoiser(COV)
    mask = cond.frame_mask(F, EXTENSION)
    guided = cond.with_reconstruction_guidance(denoise, vjp, x_obs, mask, np.array([0.0, 5.0]))
    got = vdm_ref.sample(cond.denoiser_as_vp_model(guided, sched), sched, steps, shape, zs,
                         sampler="ddim", prediction="x0")
    abar = np.append(sched.abar_at(steps), 1.0)
    want = ddim(guided, np.sqrt(abar), np.sqrt(1.0 - abar), zs[0])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(cond.keep_observed(got, x_obs, mask)[:, :, :2], x_obs[:, :, :2])


def test_per_sample_weights_and_masks() -> None:
    """One batch with its own w_r and observed frames per sample equals the separate runs."""
    rng = np.random.default_rng(7)
    z_init, x_obs = rng.standard_normal((2, 2, 1, F, 1, 1))
    denoise, vjp = cond.gp_denoiser(COV)
    levels = cosine_levels(15)
    mask = cond.frame_mask(F, [EXTENSION, INTERPOLATION])
    batch = ddim(cond.with_reconstruction_guidance(denoise, vjp, x_obs, mask, np.array([1.0, 7.0])), *levels, z_init)
    for bi, (observed, weight) in enumerate(((EXTENSION, 1.0), (INTERPOLATION, 7.0))):
        one = cond.with_reconstruction_guidance(denoise, vjp, x_obs[bi:bi + 1], cond.frame_mask(F, observed), weight)
        np.testing.assert_allclose(batch[bi:bi + 1], ddim(one, *levels, z_init[bi:bi + 1]), rtol=1e-12, atol=1e-12)


def table(n: int = 50) -> str:
    """The table of docs/CONDITIONING.md: sqrt(E W2^2) to the exact conditional (mean^2 + cov^2 parts)."""
    rows = [("unconditional", "unconditional", 0.0, True),
            ("replacement (fresh eps per call)", "replacement", 0.0, True),
            ("replacement (one eps path) = guidance w_r = 0", "replacement", 0.0, False)]
    rows += [(f"reconstruction guidance w_r = {w:g}", "guidance", w, True) for w in WEIGHTS + (100.0,)]
    rows += [(f"guidance w_r = {w:g} + replacement", "guidance+replacement", w, True) for w in (1.0, 5.0, 10.0)]
    rows += [("exact conditional denoiser (oracle)", "oracle", 0.0, True)]
    lines = ["| method | extension: W2 (mean^2, cov^2) | interpolation: W2 (mean^2, cov^2) |", "|---|---|---|"]
    for label, method, weight, fresh in rows:
        cells = []
        for observed in CASES.values():
            gain, cov = response(method, observed, n, weight, fresh)
            exact_gain, exact_cov = cond.gp_conditional(COV, observed)
            b = np.asarray(observed)
            d, mp, cp = cond.conditional_w2(gain, cov, exact_gain, exact_cov, COV[np.ix_(b, b)])
            cells.append(f"{d:.3f} ({mp:.3f}, {cp:.3f})")
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def solver_table(n: int = 20) -> str:
    """W2 per deterministic solver of vdm_ref.SOLVERS (extension / interpolation)."""
    methods = (("unconditional", 0.0), ("replacement", 0.0), ("guidance", 1.0), ("guidance", 5.0),
               ("guidance", 10.0), ("oracle", 0.0))
    head = ["unconditional", "replacement", "w_r = 1", "w_r = 5", "w_r = 10", "oracle"]
    lines = ["| solver | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for solver, row in vdm_ref.SOLVERS.items():
        if row.order == 0:
            continue
        cells = [" / ".join(f"{distance(m, obs, n, w, solver=solver):.3f}" for obs in CASES.values())
                 for m, w in methods]
        lines.append(f"| {solver} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    for steps in (50, 200):
        print(f"\nDDIM, {steps} steps, F = {F}, rho = {RHO}, extension b = {EXTENSION}, "
              f"interpolation b = {INTERPOLATION}")
        print(table(steps))
    print("\nEvery deterministic solver, 20 steps, extension / interpolation")
    print(solver_table(20))


# --------------------------------------------------------------------------- 18.8 conditional-frame models


def test_given_levels_cover_every_family_and_are_the_cleanest_finite_ones():
    assert set(vdm_ref.conditioning.GIVEN_LEVELS) == set(vdm_ref.FAMILIES)
    assert vdm_ref.given_level(vdm_ref.Process("vp")) == 0.0
    assert vdm_ref.given_level(vdm_ref.Process("flow")) == 0.0
    assert vdm_ref.given_level(vdm_ref.Process("edm", sigma_min=0.01)) == 0.01


@pytest.mark.parametrize("family", ["vp", "flow", "edm"])
def test_given_frame_inputs_show_the_given_frames_noise_free(family):
    process = vdm_ref.Process(family, sigma_min=0.01, sigma_data=0.7)
    rng = np.random.default_rng(0)
    x_in, x_obs = rng.standard_normal((2, 3, 4, 2, 2)), rng.standard_normal((2, 3, 4, 2, 2))
    mask = vdm_ref.frame_mask(4, [[0, 1], [2]])
    got_x, got_c = vdm_ref.given_frame_inputs(process, x_in, np.array([5.0, 7.0]), x_obs, mask)
    # Closed forms of 14.2 at the given level: vp t = 0 -> 0, flow 1000 s = 0, edm ln(sigma_min) / 4 with
    # c_in = 1 / sqrt(sigma_min^2 + sigma_data^2).
    scale = {"vp": 1.0, "flow": 1.0, "edm": 1.0 / np.sqrt(0.01**2 + 0.7**2)}[family]
    cond = {"vp": 0.0, "flow": 0.0, "edm": np.log(0.01) / 4}[family]
    observed = [(0, 0), (0, 1), (1, 2)]
    for b in range(2):
        for f in range(4):
            if (b, f) in observed:
                np.testing.assert_allclose(got_x[b, :, f], scale * x_obs[b, :, f], rtol=1e-15)
                assert got_c[b, f] == pytest.approx(cond, rel=1e-15)
            else:
                np.testing.assert_array_equal(got_x[b, :, f], x_in[b, :, f])
                assert got_c[b, f] == [5.0, 7.0][b]
    assert got_c.shape == (2, 4)
