"""Deliberately broken backends: each is the NumPy adapter with exactly one known bug.

The kit's own tests assert that every one of them fails on ``BREAKS[cls]`` and passes every
other clause, so the checks are shown to catch the mistakes real backends make.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import vdm_ref

from .adapters import NumpyAdapter, TorchAdapter


class _OwnLoop(NumpyAdapter):
    """The sampling loop of spec 7.6 on this adapter's own steps, as a real backend's loop runs:
    a broken step then breaks sample() too."""

    def _previous(self, steps: list[int], i: int, T: int) -> int:
        return steps[i + 1] if i + 1 < len(steps) else -1

    def sample(self, model: Any, sched: vdm_ref.Schedule, timesteps: Any, shape: tuple[int, ...], noise: Any, *,
               sampler: str = "ddim", prediction: str = "eps", variance: str = "fixed_small", eta: float = 0.0,
               clip: float | None = None, threshold: float | None = None) -> np.ndarray:
        if sampler not in vdm_ref.SAMPLERS:  # spec 1.7, as every correct loop checks
            raise ValueError(f"argument 'sampler': unknown sampler {sampler!r}")
        steps = [int(t) for t in np.asarray(timesteps).tolist()]
        if not all(0 <= t < sched.T for t in steps):
            raise ValueError(f"argument 'timesteps' must lie in [0, {sched.T - 1}], got {steps}")
        z = vdm_ref.sampling_noise(noise, len(steps), tuple(shape))  # its shape and finite values (7.6, 1.7)
        x = z[0]
        for i, t in enumerate(steps):
            s = self._previous(steps, i, sched.T)
            out = model(x, np.full((shape[0],), t, dtype=np.int64))
            if sampler == "ddpm":
                x = self.ddpm_step(sched, x, t, s, out, z[i + 1], prediction=prediction, variance=variance,
                                   clip=clip, threshold=threshold)
            else:
                x = self.ddim_step(sched, x, t, s, out, z[i + 1], prediction=prediction, eta=eta, clip=clip,
                                   threshold=threshold)
        return x


class StrideDDIM(_OwnLoop):
    """The loop steps to ``t - T // N`` instead of the next inference timestep (spec 6.4): right
    only for leading spacing, and for trailing spacing when N divides T."""

    name = "broken-stride-ddim"

    def _previous(self, steps: list[int], i: int, T: int) -> int:
        return max(steps[i] - T // len(steps), -1)  # the bug


class BetaPosteriorVariance(NumpyAdapter):
    """The posterior variance is beta_{s,t} instead of beta_tilde_{s,t} (spec 5.3)."""

    name = "broken-posterior-variance"

    def posterior_variance(self, sched: vdm_ref.Schedule, s: Any, t: Any) -> np.ndarray:
        return vdm_ref.effective_beta(sched, s, t)


class PerFrameThreshold(NumpyAdapter):
    """Dynamic thresholding takes the quantile per frame instead of per sample (spec 7.2)."""

    name = "broken-per-frame-threshold"

    def dynamic_threshold(self, x0: Any, quantile: float = 0.995, floor: float = 1.0) -> np.ndarray:
        vdm_ref.dynamic_threshold(x0, quantile, floor)  # only for its argument checks (spec 1.7)
        x0 = np.asarray(x0, dtype=np.float64)
        b, c, f = x0.shape[:3]
        frames = np.moveaxis(np.abs(x0), 2, 1).reshape(b, f, -1)  # (B, F, C*H*W)
        s = np.maximum(np.quantile(frames, quantile, axis=2), floor)  # (B, F)
        s = s.reshape(b, 1, f, *([1] * (x0.ndim - 3)))
        return np.clip(x0, -s, s) / s


class UnclippedCosine(NumpyAdapter):
    """The cosine schedule without its max_beta clip (spec 2.3)."""

    name = "broken-unclipped-cosine"

    def make_schedule(self, name: str, T: int, *, zero_terminal_snr: bool = False, **params: float) -> Any:
        if name != "cosine":
            return super().make_schedule(name, T, zero_terminal_snr=zero_terminal_snr, **params)
        p = {**vdm_ref.DEFAULT_PARAMS["cosine"], **params}
        u = np.arange(T + 1, dtype=np.float64) / T
        f = np.cos((u + p["s"]) / (1.0 + p["s"]) * (math.pi / 2)) ** 2
        betas = 1.0 - f[1:] / f[:-1]  # the bug: no min(., max_beta)
        return _tables(betas, zero_terminal_snr)


class Float32Tables(NumpyAdapter):
    """Schedule tables computed in float32 and handed out as float64 (spec 1.6 / 2.6 demand float64)."""

    name = "broken-float32-tables"

    def make_schedule(self, name: str, T: int, *, zero_terminal_snr: bool = False, **params: float) -> Any:
        exact = vdm_ref.make_schedule(name, T, zero_terminal_snr=False, **params)
        betas = exact.betas.astype(np.float32)
        abar = np.cumprod(np.float32(1.0) - betas, dtype=np.float32)
        return _tables(betas.astype(np.float64), zero_terminal_snr, abar.astype(np.float64))


class NoiseAtLastStep(_OwnLoop):
    """DDPM adds noise on the final step to s = -1 too (spec 7.3: [s >= 0] noise)."""

    name = "broken-noise-at-last-step"

    def ddpm_step(self, sched: vdm_ref.Schedule, x_t: Any, t: Any, s: Any, out: Any, noise: Any, *,
                  prediction: str = "eps", variance: str = "fixed_small", clip: float | None = None,
                  threshold: float | None = None) -> np.ndarray:
        vdm_ref.ddpm_step(sched, x_t, t, s, out, noise, prediction=prediction, variance=variance, clip=clip,
                          threshold=threshold)  # only for its argument checks (spec 1.7)
        x_t = np.asarray(x_t, dtype=np.float64)
        b = x_t.shape[0]
        ss = np.broadcast_to(np.asarray(s, dtype=np.int64), (b,))
        tt = np.broadcast_to(np.asarray(t, dtype=np.int64), (b,))
        pred, var_values = vdm_ref.split_model_output(out, x_t.shape[1])
        x0, _ = vdm_ref.predict_x0_eps(sched, x_t, tt, pred, prediction)
        x0 = vdm_ref.process_x0(x0, clip, threshold)
        mean = vdm_ref.posterior_mean(sched, x0, x_t, ss, tt)
        logvar = vdm_ref.model_log_variance(sched, ss, tt, variance, var_values)
        std = np.exp(0.5 * (logvar if np.ndim(logvar) == x_t.ndim else logvar.reshape((b,) + (1,) * (x_t.ndim - 1))))
        return mean + std * np.asarray(noise, dtype=np.float64)  # the bug: also when s = -1


class SwappedGuidance(NumpyAdapter):
    """Classifier-free guidance with the conditional and unconditional outputs swapped (spec 7.5)."""

    name = "broken-swapped-cfg"

    def classifier_free_guidance(self, out_cond: Any, out_uncond: Any, scale: float,
                                 channels: int | None = None) -> np.ndarray:
        return vdm_ref.classifier_free_guidance(out_uncond, out_cond, scale, channels)


class CancellingDDIM(NumpyAdapter):
    """DDIM's eps coefficient as sqrt(max(1 - abar_s - sigma^2, 0)), the form spec 7.4 forbids: at
    eta = 1 and abar_t = 0 the subtraction leaves ~1e-8 instead of an exact 0."""

    name = "broken-cancelling-ddim"

    def ddim_step(self, sched: vdm_ref.Schedule, x_t: Any, t: Any, s: Any, out: Any, noise: Any = None, *,
                  prediction: str = "eps", eta: float = 0.0, clip: float | None = None,
                  threshold: float | None = None) -> np.ndarray:
        vdm_ref.ddim_step(sched, x_t, t, s, out, noise, prediction=prediction, eta=eta, clip=clip,
                          threshold=threshold)  # only for its argument checks (spec 1.7)
        x_t = np.asarray(x_t, dtype=np.float64)
        b = x_t.shape[0]
        ss = np.broadcast_to(np.asarray(s, dtype=np.int64), (b,))
        tt = np.broadcast_to(np.asarray(t, dtype=np.int64), (b,))
        pred, _ = vdm_ref.split_model_output(out, x_t.shape[1])
        x0, eps = vdm_ref.predict_x0_eps(sched, x_t, tt, pred, prediction)
        if clip is not None or threshold is not None:
            x0 = vdm_ref.process_x0(x0, clip, threshold)
            eps = vdm_ref.eps_from_x0(sched, x_t, tt, x0)
        col = (b,) + (1,) * (x_t.ndim - 1)
        a_s = sched.abar_at(ss).reshape(col)
        sigma = vdm_ref.ddim_sigma(sched, tt, ss, eta).reshape(col)
        x_s = np.sqrt(a_s) * x0 + np.sqrt(np.maximum(1.0 - a_s - sigma**2, 0.0)) * eps  # the bug
        return x_s if eta == 0.0 else x_s + sigma * np.asarray(noise, dtype=np.float64)


class SilentOnBadInput(NumpyAdapter):
    """q_sample computes whatever it is given: NaN or Inf in x0 or noise, a timestep past T - 1
    (read from the clipped table) and mismatched shapes pass without the error of spec 1.7."""

    name = "broken-silent-on-bad-input"

    def q_sample(self, sched: vdm_ref.Schedule, x0: Any, t: Any, noise: Any) -> np.ndarray:
        x0 = np.asarray(x0, dtype=np.float64)
        a = np.asarray(sched.abar_at(t))
        a = a.reshape(a.shape + (1,) * (x0.ndim - a.ndim))
        return np.sqrt(a) * x0 + np.sqrt(1.0 - a) * np.asarray(noise, dtype=np.float64)  # the bug: no checks


class TorchNoStopGradient(TorchAdapter):
    """The torch backend's hybrid loss with the VLB term seeing the prediction channels attached (no
    stop-gradient, spec 8.6): the same loss value, so only the gradient check can catch it."""

    name = "broken-no-stop-gradient"

    def hybrid_loss_grad(self, sched: vdm_ref.Schedule, x0: Any, t: Any, noise: Any, out: Any, prediction: str,
                         lam: float = 0.001, min_snr_gamma: float | None = None) -> np.ndarray:
        ops, s = self._ops, self._in(sched)
        x0_t, noise_t, tt = self._in(x0), self._in(noise), self._in(t)
        out_t = self._in(out).detach().requires_grad_(True)
        c = x0_t.shape[1]
        x_t = ops.q_sample(s, x0_t, tt, noise_t)
        loss = (ops.simple_loss(s, x0_t, tt, noise_t, out_t[:, :c], prediction, min_snr_gamma)
                + lam * s.T * ops.vlb_term(s, x0_t, x_t, tt, out_t, prediction, "learned_range"))  # the bug
        (grad,) = self._torch.autograd.grad(loss.sum(), out_t)
        return self._out(grad)


def _tables(betas: np.ndarray, zero_terminal_snr: bool, abar: np.ndarray | None = None) -> dict[str, np.ndarray]:
    abar = np.cumprod(1.0 - betas) if abar is None else abar
    if zero_terminal_snr:
        abar = vdm_ref.rescale_zero_terminal_snr(abar)
        betas = 1.0 - abar / np.concatenate(([1.0], abar[:-1]))
    with np.errstate(divide="ignore"):
        return {"betas": betas, "alphas": 1.0 - betas, "abar": abar, "snr": abar / (1.0 - abar),
                "log_snr": np.log(abar) - np.log1p(-abar), "sigma": np.sqrt((1.0 - abar) / abar)}


class _OwnSolve(NumpyAdapter):
    """The solve loop of spec 17.2 on this adapter's own step table, so one broken step breaks it."""

    def _steps(self) -> dict[str, Any]:
        return {name: row.step for name, row in vdm_ref.SOLVERS.items()}

    def _grid(self, alphas: Any, sigmas: Any) -> Any:
        return vdm_ref.solver_grid(alphas, sigmas)

    def solve(self, denoise: Any, x: Any, alphas: Any, sigmas: Any, solver: str = "euler", noise: Any = None,
              **options: float) -> np.ndarray:
        grid = self._grid(alphas, sigmas)
        step, state = self._steps()[solver], vdm_ref.SolverState()
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("argument 'x' contains NaN or Inf")
        z = vdm_ref.solvers.solver_noise(noise, grid.N, x.shape)
        for i in range(grid.N):
            x, state = step(denoise, grid, i, x, state, None if z is None else z[i], **options)
        return x


class StaleHistoryDPM(_OwnSolve):
    """DPM-Solver++(2M) keeps the FIRST x0 prediction as its history instead of the last (spec 17.7)."""

    name = "broken-stale-history-dpm"

    def _steps(self) -> dict[str, Any]:
        def step(denoise: Any, grid: Any, i: int, x: Any, state: Any, noise: Any = None) -> Any:
            out, new = vdm_ref.solvers.dpmpp_2m_step(denoise, grid, i, x, state, noise)
            return out, (state if state.x0 else new)  # the bug

        return {**super()._steps(), "dpmpp_2m": step}


class NoLowerOrderFinal(_OwnSolve):
    """dpmpp_2m and unipc take their final step at second order too (spec 17.7, 17.8): NaN into a zero
    final sigma, and unipc then shows order 3 on the Gaussian check."""

    name = "broken-no-lower-order-final"

    def _steps(self) -> dict[str, Any]:
        solvers = vdm_ref.solvers

        def second_order_final(base: Any) -> Any:
            def step(*args: Any, **kwargs: Any) -> Any:
                rule = solvers.multistep_order
                solvers.multistep_order = lambda grid, i: 1 if i == 0 else 2  # the bug
                try:
                    with np.errstate(all="ignore"):
                        return base(*args, **kwargs)
                finally:
                    solvers.multistep_order = rule

            return step

        return {**super()._steps(), "dpmpp_2m": second_order_final(solvers.dpmpp_2m_step),
                "unipc": second_order_final(solvers.unipc_step)}


class HeunWrongLevel(_OwnSolve):
    """Heun's second network call is made at level i instead of i + 1 (spec 17.6)."""

    name = "broken-heun-wrong-level"

    def _steps(self) -> dict[str, Any]:
        def step(denoise: Any, grid: Any, i: int, x: Any, state: Any, noise: Any = None) -> Any:
            return vdm_ref.solvers.heun_step(lambda y, k: denoise(y, i), grid, i, x, state, noise)  # the bug

        return {**super()._steps(), "heun": step}


class RepeatedLevelAccepted(_OwnSolve):
    """The grid check lets a repeated level through (duplicated Karras sigmas, spec 17.1): the
    solve runs a zero-length step instead of refusing the grid."""

    name = "broken-repeated-level"

    def _grid(self, alphas: Any, sigmas: Any) -> Any:
        try:
            return vdm_ref.solver_grid(alphas, sigmas)
        except ValueError as exc:
            if "strictly decrease" not in str(exc):
                raise
        a, s = np.asarray(alphas, dtype=np.float64), np.asarray(sigmas, dtype=np.float64)
        return vdm_ref.solvers.Grid(a, s, vdm_ref.half_log_snr(a, s))  # the bug: a repeat goes through


class FlippedFlowVelocity(NumpyAdapter):
    """The flow velocity read as x0 - eps (data minus noise, the other codebases' sign) instead of
    u = eps - x0 (spec 14.1, 14.3): in the conversions and so in the training target."""

    name = "broken-flipped-flow-velocity"

    def to_x0_eps(self, x: Any, alpha: Any, sigma: Any, out: Any, prediction: str, **kw: Any) -> Any:
        if prediction == "flow":
            out = -np.asarray(out, dtype=np.float64)  # the bug
        return vdm_ref.to_x0_eps(x, alpha, sigma, out, prediction, **kw)

    def from_x0_eps(self, x0: Any, eps: Any, alpha: Any, sigma: Any, prediction: str, **kw: Any) -> np.ndarray:
        value = vdm_ref.from_x0_eps(x0, eps, alpha, sigma, prediction, **kw)
        return -value if prediction == "flow" else value  # the bug

    def process_simple_loss(self, x0: Any, noise: Any, alpha: Any, sigma: Any, pred: Any, prediction: str, *,
                            sigma_data: float = vdm_ref.SIGMA_DATA, min_snr_gamma: float | None = None) -> np.ndarray:
        target = self.from_x0_eps(x0, noise, alpha, sigma, prediction, sigma_data=sigma_data)
        loss = vdm_ref.mean_flat((np.asarray(pred, dtype=np.float64) - target) ** 2)
        if min_snr_gamma is not None:
            loss = loss * vdm_ref.process_min_snr_weight(alpha, sigma, prediction, min_snr_gamma, sigma_data=sigma_data)
        return loss


class PositiveVOut(NumpyAdapter):
    """EDM preconditioning of a v-prediction network with c_out = +sigma / sqrt(sigma^2 + 1), the
    sign of the x0-target c_out, instead of the negative one (spec 14.5)."""

    name = "broken-positive-v-c-out"

    def edm_preconditioning(self, sigma: Any, sigma_data: float = vdm_ref.SIGMA_DATA, prediction: str = "edm"
                            ) -> tuple[np.ndarray, ...]:
        c_skip, c_out, c_in, c_noise = vdm_ref.edm_preconditioning(sigma, sigma_data, prediction)
        return c_skip, (np.abs(c_out) if prediction == "v" else c_out), c_in, c_noise  # the bug


class DoubleFlowShift(NumpyAdapter):
    """Flow sampling levels with the shift applied twice (spec 15.2, 15.7): the endpoints s_max and
    s_min are shifted, the levels spaced uniformly between them, and then shifted again, so levels
    near s_min carry the shift k^2 (the static shift and the resolution-dependent one alike)."""

    name = "broken-double-flow-shift"

    def flow_levels(self, N: int, *, shift: float = 1.0, mu: float | None = None, time_shift: str = "exponential",
                    terminal: float | None = None, s_min: float = 1e-3, s_max: float = 1.0,
                    final: str = "zero") -> np.ndarray:
        vdm_ref.flow_levels(N, shift=shift, mu=mu, time_shift=time_shift, terminal=terminal, s_min=s_min,
                            s_max=s_max, final=final)  # only for its argument checks (spec 1.7)

        def once(s: Any) -> np.ndarray:
            return vdm_ref.flow_shift(s, shift) if mu is None else vdm_ref.TIME_SHIFTS[time_shift](s, mu)

        ends = once(np.array([s_max, s_min]))
        s = once(vdm_ref.uniform_levels(N, float(ends[0]), float(ends[1])))  # the bug: shifted ends, shifted again
        if terminal is not None:
            s = vdm_ref.stretch_to_terminal(s, terminal)
        return vdm_ref.with_final_level(s, final)


class _OwnFinalLevel(NumpyAdapter):
    """Flow sampling levels (15.7) that end through this adapter's own final level (15.6), as a real
    backend composes them: a broken final level then breaks both clauses."""

    def flow_levels(self, N: int, *, final: str = "zero", **kwargs: Any) -> np.ndarray:
        levels = vdm_ref.flow_levels(N, final=final, **kwargs)[:-1]  # 15.1 - 15.4, and the argument checks
        return self.with_final_level(levels, final)


class DroppedFinalLevel(_OwnFinalLevel):
    """The final level is left off (spec 15.6): N levels instead of N + 1, so the last step of a
    sampler never reaches clean data."""

    name = "broken-dropped-final-level"

    def with_final_level(self, levels: Any, final: str = "zero", sigma_min: float | None = None) -> np.ndarray:
        return vdm_ref.with_final_level(levels, final, sigma_min)[:-1]  # the bug


class SigmaMinForZero(_OwnFinalLevel):
    """The final level is sigma_min (the last level unless given) where zero was asked (spec 15.6):
    the last step has length zero, or stops at sigma_min, instead of returning clean data."""

    name = "broken-sigma-min-for-zero"

    def with_final_level(self, levels: Any, final: str = "zero", sigma_min: float | None = None) -> np.ndarray:
        vdm_ref.with_final_level(levels, final, sigma_min)  # only for its argument checks (spec 1.7)
        return vdm_ref.with_final_level(levels, "sigma_min", sigma_min)  # the bug: "zero" is read as "sigma_min"


# Each broken backend and the clauses (ops) it must fail; every other clause must pass.
BREAKS: dict[type, frozenset[str]] = {
    StrideDDIM: frozenset({"sample"}),
    BetaPosteriorVariance: frozenset({"posterior_variance"}),
    PerFrameThreshold: frozenset({"dynamic_threshold"}),
    UnclippedCosine: frozenset({"make_schedule"}),
    Float32Tables: frozenset({"make_schedule"}),
    NoiseAtLastStep: frozenset({"ddpm_step", "sample"}),  # the loop runs the broken step
    SwappedGuidance: frozenset({"classifier_free_guidance"}),
    CancellingDDIM: frozenset({"ddim_step"}),
    StaleHistoryDPM: frozenset({"solve"}),
    NoLowerOrderFinal: frozenset({"solve"}),
    HeunWrongLevel: frozenset({"solve"}),
    RepeatedLevelAccepted: frozenset({"solve"}),
    SilentOnBadInput: frozenset({"q_sample"}),
    TorchNoStopGradient: frozenset({"hybrid_loss"}),  # needs torch
    FlippedFlowVelocity: frozenset({"to_x0_eps", "from_x0_eps", "process_simple_loss"}),
    PositiveVOut: frozenset({"edm_preconditioning"}),
    DoubleFlowShift: frozenset({"flow_levels"}),
    # 15.7 ends with the final level of 15.6, so a broken final level fails both.
    DroppedFinalLevel: frozenset({"with_final_level", "flow_levels"}),
    SigmaMinForZero: frozenset({"with_final_level", "flow_levels"}),
}
