"""The sampling path for every noise process (spec 14, 15, 17), end to end through
vdm.backends.sampling with a network that is the exact Gaussian denoiser of its family.

For data x0 ~ N(mu, v) per element the probability-flow ODE has a closed-form solution (derived
here, independently of vdm_ref.solvers): with y = x / alpha and r = sigma / alpha,
y(r) = mu + sqrt(v + r^2) / sqrt(v + r0^2) (y0 - mu). At the final level r = 0 of a solve that
starts at (alpha_0, sigma_0) from x_0 = sqrt(alpha_0^2 + sigma_0^2) z:
    x_final = mu + sqrt(v) (x_0 - alpha_0 mu) / sqrt(alpha_0^2 v + sigma_0^2),
which is mu + sqrt(v) z where alpha_0 = 0 (flow, s = 1). A second-order solver must land there
sample by sample, so the test checks the levels, the conditions the network sees, the input
scale, the prediction conversion and the initial scale all at once."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from vdm.backends import sampling

import vdm_ref

MU, VAR = 0.3, 0.25
SHAPE = (1, 2, 4, 4)


class GaussianNet(torch.nn.Module):
    """The ideal network of a family for x0 ~ N(MU, VAR): reads the level back from the condition it
    is given (14.2: t, 1000 s or ln(sigma)/4) and undoes the input scale (edm's c_in)."""

    def __init__(self, family: str, prediction: str, sched: vdm_ref.Schedule | None, sigma_data: float = 0.5):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))  # sampling reads the parameters' dtype
        self.family, self.prediction, self.sched, self.sd = family, prediction, sched, sigma_data
        self.config = SimpleNamespace(in_channels=SHAPE[0], size_divisor=1, num_classes=0, frames=SHAPE[1],
                                      image_size=SHAPE[2])

    def level(self, cond: float) -> tuple[float, float]:
        if self.family == "vp":
            t = int(round(cond))
            a = float(self.sched.abar[t])
            return math.sqrt(a), math.sqrt(1 - a)
        if self.family == "flow":
            s = cond / 1000.0
            return 1 - s, s
        return 1.0, math.exp(4 * cond)

    def forward(self, x_in: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
        outs = []
        for xi, ti in zip(x_in.double(), t.double().tolist(), strict=True):
            a, s = self.level(ti)
            x = xi * (math.sqrt(s * s + self.sd**2) if self.family == "edm" else 1.0)
            x0 = MU + a * VAR / (a * a * VAR + s * s) * (x - a * MU)
            eps = (x - a * x0) / s
            v = (a * eps - s * x0) / math.hypot(a, s)  # 14.3: v normalised by r = sqrt(alpha^2 + sigma^2)
            out = {"eps": eps, "x0": x0, "v": v, "flow": eps - x0}.get(self.prediction)
            if out is None:  # edm: D = c_skip x + c_out F with c_skip = sd^2/(s^2+sd^2), c_out = s sd/sqrt(s^2+sd^2)
                q = math.sqrt(s * s + self.sd**2)
                out = (x0 - self.sd**2 / q**2 * x) / (s * self.sd / q)
            outs.append(out)
        return torch.stack(outs).float()


def _model(family: str, prediction: str) -> sampling.LoadedModel:
    sched = vdm_ref.make_schedule("cosine", 1000) if family == "vp" else None
    meta = {"schedule": vdm_ref.make_schedule("cosine", 1000).to_dict(), "prediction": prediction,
            "process": vdm_ref.Process(family, prediction).to_dict()}
    return sampling.torch_model(GaussianNet(family, prediction, sched), meta)


def _exact(model: sampling.LoadedModel, options: sampling.SamplingOptions, num: int, seed: int) -> np.ndarray:
    lv = sampling.plan_sampling(model, num, options).levels
    a0, s0 = float(lv.alphas[0]), float(lv.sigmas[0])
    z = np.stack([sampling.sample_noise(seed, k, lv.n_steps, SHAPE)[0] for k in range(num)]).astype(np.float64)
    x_start = math.hypot(a0, s0) * z
    return MU + math.sqrt(VAR) * (x_start - a0 * MU) / math.sqrt(a0 * a0 * VAR + s0 * s0)


# (family, prediction, shift, solver, bound) at 40 steps. The bounds are about 3x the discretisation
# error measured on these grids (the first step from sigma_0 dominates; vp's cosine table starts at
# sigma / alpha ~ 2e4, where heun's trapezoid is poor, so heun is checked on flow and edm); a wiring
# mistake (condition, input scale, conversion, initial scale) errs by O(1).
CASES = [
    ("vp", "v", None, "dpmpp_2m", 6e-3), ("vp", "eps", None, "unipc", 2e-3), ("vp", "v", None, "euler", 0.12),
    ("flow", "flow", None, "heun", 6e-3), ("flow", "flow", 3.0, "heun", 1.6e-2), ("flow", "flow", None, "unipc", 5e-2),
    ("flow", "v", None, "dpmpp_2m", 6e-2),
    ("edm", "edm", None, "heun", 3e-2), ("edm", "edm", None, "dpmpp_2m", 3.3e-2), ("edm", "edm", None, "unipc", 1.2e-2),
]


@pytest.mark.parametrize("family,prediction,shift,solver,bound", CASES)
def test_every_family_lands_on_the_exact_flow(family, prediction, shift, solver, bound):
    options = sampling.SamplingOptions(sampler=solver, steps=40, clip=None, shift=shift)
    model = _model(family, prediction)
    got = sampling.sample_videos(model, 2, 4, options)
    want = np.clip(_exact(model, options, 2, 4), -1, 1)  # sample_videos returns clips in [-1, 1]
    assert np.abs(want).max() > 0.5
    assert np.abs(got - want).max() <= bound, (family, solver, np.abs(got - want).max())


def test_more_steps_get_closer_and_euler_is_first_order():
    """Euler's error halves when the steps double (order 1, spec 17.9) on a flow model."""
    model = _model("flow", "flow")
    errs = []
    for steps in (8, 16, 32):
        options = sampling.SamplingOptions(sampler="euler", steps=steps, clip=None)
        want = np.clip(_exact(model, options, 2, 0), -1, 1)
        errs.append(np.abs(sampling.sample_videos(model, 2, 0, options) - want).max())
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert all(1.6 < r < 2.5 for r in ratios), (errs, ratios)


def test_the_shift_and_the_final_level_change_the_grid():
    model = _model("flow", "flow")
    plain = sampling.plan_sampling(model, 1, sampling.SamplingOptions(sampler="euler", steps=4)).levels
    shifted = sampling.plan_sampling(model, 1, sampling.SamplingOptions(sampler="euler", steps=4, shift=3.0)).levels
    # 15.7: N uniform levels from 1 to s_min = 1/1000, then the final 0; 15.2 once: s' = 3 s / (1 + 2 s).
    np.testing.assert_allclose(plain.levels, [1, 1 - 0.999 / 3, 1 - 2 * 0.999 / 3, 0.001, 0], rtol=1e-12)
    np.testing.assert_allclose(shifted.levels[1:4], [3 * s / (1 + 2 * s) for s in plain.levels[1:4]], rtol=1e-12)
    np.testing.assert_allclose(shifted.conditions, 1000 * shifted.levels[:4])
    edm = _model("edm", "edm")
    zero = sampling.plan_sampling(edm, 1, sampling.SamplingOptions(sampler="euler", steps=5)).levels
    smin = sampling.plan_sampling(edm, 1, sampling.SamplingOptions(sampler="euler", steps=5,
                                                                   final="sigma_min")).levels
    assert zero.levels[-1] == 0 and len(zero.conditions) == 5
    # Karras' N levels end at sigma_min already, so the repeated final level is dropped (17.1).
    assert smin.levels[-1] == pytest.approx(0.002) and len(smin.levels) == 5 and len(smin.conditions) == 5
    np.testing.assert_allclose(zero.conditions, np.log(zero.levels[:5]) / 4)
    np.testing.assert_allclose(zero.input_scales, 1 / np.sqrt(zero.levels[:5] ** 2 + 0.25))
    uniform = sampling.plan_sampling(edm, 1, sampling.SamplingOptions(sampler="euler", steps=5, karras=False)).levels
    np.testing.assert_allclose(np.diff(uniform.levels[:5]), (0.002 - 80) / 4)


def test_v1_samplers_refuse_other_families():
    with pytest.raises(sampling.SamplingError, match="defined on vp models") as info:
        sampling.sample_videos(_model("flow", "flow"), 1, 0, sampling.SamplingOptions(sampler="ddim"))
    assert "\n" not in str(info.value)
