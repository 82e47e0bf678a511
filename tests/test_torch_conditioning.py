"""Spec section 18 on torch: the conditioning wrappers against vdm_ref.conditioning.

The model is the linear ideal denoiser of the AR(1) Gaussian-process videos written in torch, so
the reference gets its exact vector-Jacobian product while torch differentiates it by autograd.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vdm.backends.torch import conditioning as tcond
from vdm.backends.torch import ops

import vdm_ref
from vdm_ref import conditioning as cond

F, RHO = 8, 0.9
COV = cond.ar1_covariance(F, RHO)
EXTENSION, INTERPOLATION = cond.extension_frames(F, 2), cond.interpolation_frames(F, 3)


def torch_gp_denoiser(cov: np.ndarray) -> tcond.Denoiser:
    """E[x0 | z] = alpha Sigma (alpha^2 Sigma + sigma^2 I)^-1 z along frames, per-sample levels."""
    sigma_mat = torch.tensor(cov, dtype=torch.float64)

    def denoise(z: torch.Tensor, alpha: tcond.Level, sigma: tcond.Level) -> torch.Tensor:
        a = torch.as_tensor(alpha, dtype=torch.float64).reshape(-1, 1, 1)
        s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1, 1)
        k = a * torch.linalg.solve(a**2 * sigma_mat + s**2 * torch.eye(len(cov), dtype=torch.float64), sigma_mat)
        k = k.expand(z.shape[0], -1, -1).to(z.dtype)
        return torch.einsum("bij,bcj...->bci...", k, z)

    return denoise


def toy_pair(w: np.ndarray) -> tuple[tcond.Denoiser, cond.Denoiser, cond.Vjp]:
    """A nonlinear denoiser with a non-symmetric Jacobian: torch form, and the reference form with
    its hand-written vjp (autograd must match the transpose, not the Jacobian)."""
    wt = torch.tensor(w)

    def t_denoise(z: torch.Tensor, alpha: tcond.Level, sigma: tcond.Level) -> torch.Tensor:
        a = torch.as_tensor(alpha, dtype=z.dtype).reshape(-1, 1, 1)
        s = torch.as_tensor(sigma, dtype=z.dtype).reshape(-1, 1, 1)
        return torch.tanh(a * torch.einsum("ij,bcj->bci", wt.to(z.dtype), z)) + s * z

    def r_denoise(z: np.ndarray, alpha: object, sigma: object) -> np.ndarray:
        a, s = np.asarray(alpha).reshape(-1, 1, 1), np.asarray(sigma).reshape(-1, 1, 1)
        return np.tanh(a * np.einsum("ij,bcj->bci", w, z)) + s * z

    def r_vjp(z: np.ndarray, alpha: object, sigma: object, c: np.ndarray) -> np.ndarray:
        a, s = np.asarray(alpha).reshape(-1, 1, 1), np.asarray(sigma).reshape(-1, 1, 1)
        inner = 1.0 - np.tanh(a * np.einsum("ij,bcj->bci", w, z)) ** 2
        return a * np.einsum("ji,bcj->bci", w, inner * c) + s * c

    return t_denoise, r_denoise, r_vjp


def cosine_levels(n: int) -> tuple[np.ndarray, np.ndarray]:
    u = np.linspace(1.0, 0.0, n + 1)
    a, s = np.cos(0.5 * np.pi * u), np.sin(0.5 * np.pi * u)
    a[0], s[-1] = 0.0, 0.0
    return a, s


def ddim(denoise, alphas, sigmas, z):  # noqa: ANN001, ANN201 - one loop for arrays and tensors
    for i in range(len(alphas) - 1):
        x0 = denoise(z, float(alphas[i]), float(sigmas[i]))
        z = float(alphas[i + 1]) * x0 + float(sigmas[i + 1]) * (z - float(alphas[i]) * x0) / float(sigmas[i])
    return z


def t(x: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(x, dtype=dtype)


def test_masks_and_frame_sets_mirror_the_reference() -> None:
    for frames, given, factor in ((8, 2, 3), (9, 4, 4), (5, 1, 2)):
        assert tcond.extension_frames(frames, given) == cond.extension_frames(frames, given)
        assert tcond.interpolation_frames(frames, factor) == cond.interpolation_frames(frames, factor)
    for observed in ((0, 3), [(0,), (1, 3)], np.array([1, 2])):
        np.testing.assert_array_equal(tcond.frame_mask(4, observed, 4).numpy(), cond.frame_mask(4, observed, 4))
    with pytest.raises(ValueError, match="observed"):
        tcond.frame_mask(4, (4,))
    with pytest.raises(ValueError, match="mask"):
        tcond.keep_observed(torch.zeros(1, 1, 4), torch.zeros(1, 1, 4), 0.5 * torch.ones(1, 1, 4))


def test_replacement_matches_the_reference() -> None:
    rng = np.random.default_rng(0)
    z, x_obs = rng.standard_normal((2, 3, 1, F, 2, 2))
    noise = rng.standard_normal((2, 3, 1, F, 2, 2))
    mask = cond.frame_mask(F, [EXTENSION, INTERPOLATION, (7,)])
    alpha, sigma = np.array([0.2, 0.6, 0.9]), np.array([0.98, 0.8, 0.44])
    want = cond.replace_observed(z, x_obs, mask, alpha, sigma, noise[0])
    got = tcond.replace_observed(t(z), t(x_obs), t(mask), t(alpha), t(sigma), t(noise[0]))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-14, atol=1e-14)
    ref_den, _ = cond.gp_denoiser(COV)
    want = cond.with_replacement(ref_den, x_obs, mask, noise)
    got = tcond.with_replacement(torch_gp_denoiser(COV), t(x_obs), t(mask), t(noise))
    for _ in range(2):  # call k uses noise[k] in both
        np.testing.assert_allclose(got(t(z), t(alpha), t(sigma)).numpy(), want(z, alpha, sigma), atol=1e-12)
    with pytest.raises(ValueError, match="noise"):
        got(t(z), t(alpha), t(sigma))


def test_autograd_guidance_matches_the_reference_vjp_per_sample() -> None:
    """Batched autograd with a weight and a mask per sample equals the reference with the exact
    transpose Jacobian, also inside torch.no_grad (the 7.6 loop samples under it)."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 5))
    t_den, r_den, r_vjp = toy_pair(w)
    z, x_obs = rng.standard_normal((2, 3, 2, 5))
    mask = cond.frame_mask(5, [(0, 1), (2,), (0, 2, 4)], ndim=3)
    alpha, sigma, weight = np.array([0.3, 0.7, 0.9]), np.array([0.95, 0.7, 0.4]), np.array([0.0, 2.0, 9.0])
    want = cond.with_reconstruction_guidance(r_den, r_vjp, x_obs, mask, weight)(z, alpha, sigma)
    guided = tcond.with_reconstruction_guidance(t_den, t(x_obs), t(mask), t(weight))
    with torch.no_grad():
        got = guided(t(z), t(alpha), t(sigma))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
    assert not got.requires_grad
    # The same with an explicit vjp callable instead of autograd.
    explicit = tcond.with_reconstruction_guidance(
        t_den, t(x_obs), t(mask), t(weight),
        vjp=lambda zz, a, s, c: t(r_vjp(zz.numpy(), a.numpy(), s.numpy(), c.numpy())))
    np.testing.assert_allclose(explicit(t(z), t(alpha), t(sigma)).numpy(), want, rtol=1e-12, atol=1e-12)


def torch_sampler(method: str, x_obs: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor,
                  weight: torch.Tensor) -> tcond.Denoiser:
    den = torch_gp_denoiser(COV)
    guided = tcond.with_reconstruction_guidance(den, x_obs, mask, weight)
    build = {"replacement": lambda: tcond.with_replacement(den, x_obs, mask, noise),
             "guidance": lambda: guided,
             "guidance+replacement": lambda: tcond.with_replacement(guided, x_obs, mask, noise)}
    return build[method]()


@pytest.mark.parametrize("method", ["replacement", "guidance", "guidance+replacement"])
def test_gp_samples_match_the_reference(method: str) -> None:
    """A whole DDIM run on the Gaussian-process videos: torch float64 equals the reference, and
    float32 stays within a float32 tolerance."""
    rng = np.random.default_rng(2)
    n = 25
    levels = cosine_levels(n)
    z_init, x_obs = rng.standard_normal((2, 2, 1, F, 3, 3))
    noise = rng.standard_normal((n, 2, 1, F, 3, 3))
    mask = cond.frame_mask(F, [EXTENSION, INTERPOLATION])
    weight = np.array([5.0, 2.0])
    ref_den, ref_vjp = cond.gp_denoiser(COV)
    ref_guided = cond.with_reconstruction_guidance(ref_den, ref_vjp, x_obs, mask, weight)
    ref = {"replacement": lambda: cond.with_replacement(ref_den, x_obs, mask, noise),
           "guidance": lambda: ref_guided,
           "guidance+replacement": lambda: cond.with_replacement(ref_guided, x_obs, mask, noise)}
    want = cond.keep_observed(ddim(ref[method](), *levels, z_init), x_obs, mask)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 2e-4)):
        x_obs_t, mask_t = t(x_obs, dtype), t(mask, dtype)
        sampler = torch_sampler(method, x_obs_t, mask_t, t(noise, dtype), t(weight, dtype))
        got = tcond.keep_observed(ddim(sampler, *levels, t(z_init, dtype)), x_obs_t, mask_t)
        assert got.dtype == dtype
        np.testing.assert_allclose(got.numpy(), want, rtol=tol, atol=tol)


def test_torch_sampling_loop_matches_the_reference_loop() -> None:
    """denoiser_as_vp_model: guidance inside ops.sample (DDIM, x0 prediction, under no_grad) equals vdm_ref.sample."""
    steps = 15
    rng = np.random.default_rng(3)
    shape = (2, 1, F, 2, 2)
    zs = rng.standard_normal((steps + 1, *shape))
    x_obs = rng.standard_normal(shape)
    mask = cond.frame_mask(F, [EXTENSION, INTERPOLATION])
    weight = np.array([3.0, 8.0])
    ref_sched = vdm_ref.make_schedule("cosine", 1000)
    ref_den, ref_vjp = cond.gp_denoiser(COV)
    ref_guided = cond.with_reconstruction_guidance(ref_den, ref_vjp, x_obs, mask, weight)
    ref_model = cond.denoiser_as_vp_model(ref_guided, ref_sched)
    want = vdm_ref.sample(ref_model, ref_sched, vdm_ref.inference_timesteps(1000, steps, "trailing"), shape, zs,
                          sampler="ddim", prediction="x0")
    sched = ops.make_schedule("cosine", 1000, dtype=torch.float64)
    guided = tcond.with_reconstruction_guidance(torch_gp_denoiser(COV), t(x_obs), t(mask), t(weight))
    model = tcond.denoiser_as_vp_model(guided, sched)
    got = ops.sample(model, sched, ops.inference_timesteps(1000, steps, "trailing"), shape, t(zs),
                     sampler="ddim", prediction="x0")
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-9)


def test_distances_from_torch_equal_the_reference_table() -> None:
    """The exact measure of spec 18.7 on the linear map that the torch run implements (basis
    vectors through torch autograd guidance) equals the reference's."""
    n, weight = 20, 5.0
    dim = 2 * F
    u = np.eye(dim)
    shape = (dim, 1, F, 1, 1)
    mask = cond.frame_mask(F, INTERPOLATION)
    levels = cosine_levels(n)
    ref_den, ref_vjp = cond.gp_denoiser(COV)
    want = ddim(cond.with_reconstruction_guidance(ref_den, ref_vjp, u[:, F:].reshape(shape), mask, weight),
                *levels, u[:, :F].reshape(shape))
    got = ddim(tcond.with_reconstruction_guidance(torch_gp_denoiser(COV), t(u[:, F:].reshape(shape)), t(mask), weight),
               *levels, t(u[:, :F].reshape(shape)))
    maps = [np.asarray(x)[:, 0, :, 0, 0].T for x in (want, got.numpy())]
    a, b = np.setdiff1d(np.arange(F), INTERPOLATION), np.asarray(INTERPOLATION)
    exact_gain, exact_cov = cond.gp_conditional(COV, INTERPOLATION)
    dists = []
    for m in maps:
        h = m[a][:, :F]
        dists.append(cond.conditional_w2(m[a][:, F + b], h @ h.T, exact_gain, exact_cov, COV[np.ix_(b, b)])[0])
    assert dists[1] == pytest.approx(dists[0], rel=1e-9)
    assert dists[0] < 0.3  # guidance at w_r = 5 (the reference test pins the full ordering)


def test_autograd_is_per_sample_through_a_network() -> None:
    """A batched call through a small conv net gives every sample the gradient it gets alone."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv3d(4, 2, 3, padding=1))
    net = net.double()

    def denoise(z: torch.Tensor, alpha: tcond.Level, sigma: tcond.Level) -> torch.Tensor:
        return net(z) * torch.as_tensor(alpha, dtype=z.dtype).reshape(-1, 1, 1, 1, 1)

    z, x_obs = torch.randn(2, 3, 2, 6, 4, 4, dtype=torch.float64)
    mask = tcond.frame_mask(6, [(0, 1), (0, 2, 4), (5,)], dtype=torch.float64)
    alpha, sigma, weight = torch.tensor([0.5, 0.7, 0.9]), torch.tensor([0.8, 0.7, 0.4]), torch.tensor([1.0, 4.0, 2.0])
    batch = tcond.with_reconstruction_guidance(denoise, x_obs, mask, weight)(z, alpha, sigma)
    for i in range(3):
        one = tcond.with_reconstruction_guidance(denoise, x_obs[i:i + 1], mask[i:i + 1], float(weight[i]))
        alone = one(z[i:i + 1], alpha[i:i + 1], sigma[i:i + 1])
        torch.testing.assert_close(batch[i:i + 1], alone, rtol=1e-10, atol=1e-10)
    assert all(p.grad is None for p in net.parameters())  # guidance never touches parameter gradients


@pytest.mark.parametrize("solver", list(ops.SOLVERS))
def test_guidance_and_replacement_in_every_torch_solver(solver: str) -> None:
    """Spec 18.4: autograd guidance (w_r per sample) and fresh-noise replacement inside each torch
    solver (which runs under no_grad) equal the reference solver with the exact vjp."""
    n = 12
    levels = cosine_levels(n)
    grid = vdm_ref.solver_grid(*levels)
    calls = vdm_ref.network_calls(solver, grid)
    rng = np.random.default_rng(4)
    shape = (2, 1, F, 2, 1)
    z_init, x_obs = rng.standard_normal((2, *shape))
    replace_noise = rng.standard_normal((calls, *shape))
    step_noise = rng.standard_normal((n, *shape))  # euler_ancestral's own noise
    mask = cond.frame_mask(F, [EXTENSION, INTERPOLATION])
    weight = np.array([5.0, 2.0])
    ref_den, ref_vjp = cond.gp_denoiser(COV)
    ref = cond.with_replacement(cond.with_reconstruction_guidance(ref_den, ref_vjp, x_obs, mask, weight),
                                x_obs, mask, replace_noise)
    want = vdm_ref.solve(cond.denoiser_on_grid(ref, *levels), z_init, *levels, solver=solver, noise=step_noise)
    guided = tcond.with_reconstruction_guidance(torch_gp_denoiser(COV), t(x_obs), t(mask), t(weight))
    sampler = tcond.with_replacement(guided, t(x_obs), t(mask), t(replace_noise))
    got = ops.solve(tcond.denoiser_on_grid(sampler, *levels), t(z_init), *levels, solver=solver, noise=t(step_noise))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-9)


def test_autograd_guidance_through_the_video_unet() -> None:
    """Through vdm's own network (eps prediction converted to x0 on vp): the guided correction is
    w_r alpha J^T r, checked per sample by the dot-product identity <J^T r, v> = <r, J v> with J v
    from central differences; parameters never receive gradients."""
    from helpers import MICRO_UNET
    from vdm.backends.torch.models.unet import UNetConfig, VideoUNet

    torch.manual_seed(0)
    net = VideoUNet(UNetConfig(**MICRO_UNET)).double().eval()
    for p in net.conv_out.parameters():  # zero-initialised: J would be I / alpha, frames unmixed
        torch.nn.init.normal_(p, std=0.1)
    frames = MICRO_UNET["frames"]
    t_step = torch.full((2,), 400)

    def denoise(z: torch.Tensor, alpha: tcond.Level, sigma: tcond.Level) -> torch.Tensor:
        a = torch.as_tensor(alpha, dtype=z.dtype).reshape(-1, 1, 1, 1, 1)
        s = torch.as_tensor(sigma, dtype=z.dtype).reshape(-1, 1, 1, 1, 1)
        return (z - s * net(z, t_step)) / a  # spec 4.1

    z, x_obs, v = torch.randn(3, 2, 1, frames, 8, 8, dtype=torch.float64)
    mask = tcond.frame_mask(frames, [(0,), (1, 3)], dtype=torch.float64)
    alpha, sigma, weight = torch.tensor([0.6, 0.8]), torch.tensor([0.8, 0.6]), torch.tensor([3.0, 0.5])
    v = v * (1.0 - mask)  # the correction lives on the generated frames: probe J there only
    with torch.no_grad():
        guided = tcond.with_reconstruction_guidance(denoise, x_obs, mask, weight)(z, alpha, sigma)
        x0 = denoise(z, alpha, sigma)
        r = tcond.reconstruction_residual(x_obs, x0, mask)
        jtr = (guided - x0) / (weight * alpha).double().reshape(-1, 1, 1, 1, 1)
        # The network keeps some float32 pieces (embeddings), so a smaller step drowns in rounding.
        h = 1e-3
        jv = (denoise(z + h * v, alpha, sigma) - denoise(z - h * v, alpha, sigma)) / (2 * h)
    for i in range(2):
        assert float((jtr[i] * v[i]).sum()) == pytest.approx(float((r[i] * jv[i]).sum()), rel=1e-3)
    assert torch.equal(guided * mask, x_obs * mask)
    assert float((jtr * v).abs().sum()) > 1e-3 and all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("family", ["vp", "flow", "edm"])
def test_given_frame_inputs_match_the_reference(family):
    process = vdm_ref.Process(family, sigma_min=0.01, sigma_data=0.7)
    rng = np.random.default_rng(1)
    x_in, x_obs = rng.standard_normal((3, 2, 5, 2, 2)), rng.standard_normal((3, 2, 5, 2, 2))
    mask = vdm_ref.frame_mask(5, [[0], [1, 3], [0, 1, 2, 3]])
    condition = np.array([3.0, -1.0, 0.25])
    want_x, want_c = vdm_ref.given_frame_inputs(process, x_in, condition, x_obs, mask)
    got_x, got_c = tcond.given_frame_inputs(process, torch.from_numpy(x_in), torch.from_numpy(condition),
                                            torch.from_numpy(x_obs), torch.from_numpy(mask))
    np.testing.assert_allclose(got_x.numpy(), want_x, rtol=1e-15, atol=0)
    np.testing.assert_array_equal(got_c.numpy(), want_c)
