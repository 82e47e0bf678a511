"""Spec 7.4 / 7.6: the two named DDIM options, final_abar and clipped_eps, each tested by what it changes.

Expectations are written from the clause's closed form, not from the step under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vdm.backends.torch import ops as O

import vdm_ref as R

SCHED = R.make_schedule("linear", 100)
RNG = np.random.default_rng(7)
X_T = RNG.standard_normal((2, 3, 2, 4, 4)) * 2.0
OUT = RNG.standard_normal((2, 3, 2, 4, 4)) * 3.0  # large, so clipping bites
NOISE = RNG.standard_normal((2, 3, 2, 4, 4))


def _x0_eps(t: int) -> tuple[np.ndarray, np.ndarray]:
    a = SCHED.abar[t]
    return (X_T - np.sqrt(1 - a) * OUT) / np.sqrt(a), OUT  # 4.1 for an eps prediction


def test_final_abar_lands_on_one_or_on_abar_0() -> None:
    t = 9
    x0, eps = _x0_eps(t)
    one = R.ddim_step(SCHED, X_T, t, -1, OUT)
    first = R.ddim_step(SCHED, X_T, t, -1, OUT, final_abar="abar_0")
    a0 = SCHED.abar[0]
    np.testing.assert_allclose(one, x0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(first, np.sqrt(a0) * x0 + np.sqrt(1 - a0) * eps, rtol=1e-12, atol=1e-12)
    assert np.abs(one - first).max() > 1e-3


def test_final_abar_with_eta_adds_noise_only_under_abar_0() -> None:
    t, eta = 9, 1.0
    x0, eps = _x0_eps(t)
    a0, at = SCHED.abar[0], SCHED.abar[t]
    sigma = eta * np.sqrt((1 - a0) / (1 - at)) * np.sqrt(1 - at / a0)
    got = R.ddim_step(SCHED, X_T, t, -1, OUT, NOISE, eta=eta, final_abar="abar_0")
    want = np.sqrt(a0) * x0 + np.sqrt(1 - a0 - sigma**2) * eps + sigma * NOISE
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(R.ddim_step(SCHED, X_T, t, -1, OUT, NOISE, eta=eta), x0)


def test_final_abar_changes_nothing_before_the_last_step() -> None:
    for kw in ({}, {"eta": 0.5}, {"eta": 0.5, "clip": 1.0}):
        np.testing.assert_array_equal(
            R.ddim_step(SCHED, X_T, 50, 20, OUT, NOISE, **kw),
            R.ddim_step(SCHED, X_T, 50, 20, OUT, NOISE, final_abar="abar_0", **kw),
        )


def test_clipped_eps_keep_uses_the_model_eps() -> None:
    t, s = 50, 20
    x0, eps = _x0_eps(t)
    a_s, a_t = SCHED.abar[s], SCHED.abar[t]
    x0c = np.clip(x0, -1, 1)
    keep = R.ddim_step(SCHED, X_T, t, s, OUT, clip=1.0, clipped_eps="keep")
    rederive = R.ddim_step(SCHED, X_T, t, s, OUT, clip=1.0)
    np.testing.assert_allclose(keep, np.sqrt(a_s) * x0c + np.sqrt(1 - a_s) * eps, rtol=1e-12, atol=1e-12)
    eps_c = (X_T - np.sqrt(a_t) * x0c) / np.sqrt(1 - a_t)  # 4.2
    np.testing.assert_allclose(rederive, np.sqrt(a_s) * x0c + np.sqrt(1 - a_s) * eps_c, rtol=1e-12, atol=1e-12)
    assert np.abs(keep - rederive).max() > 1e-3


def test_clipped_eps_changes_nothing_without_processing() -> None:
    np.testing.assert_array_equal(
        R.ddim_step(SCHED, X_T, 50, 20, OUT), R.ddim_step(SCHED, X_T, 50, 20, OUT, clipped_eps="keep")
    )


def test_sample_passes_the_options_to_every_step() -> None:
    steps = R.inference_timesteps(100, 5, "trailing")
    z = RNG.standard_normal((6, 1, 2, 1, 2, 2))

    def model(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.tanh(x) * 2.5 + 0.01 * t[:, None, None, None, None]

    for opts in ({"final_abar": "abar_0"}, {"clipped_eps": "keep", "clip": 1.0}):
        x = z[0]
        for i, (t, s) in enumerate(R.step_pairs(steps)):
            x = R.ddim_step(SCHED, x, t, s, model(x, np.full(1, t)), z[i + 1], eta=0.3, **opts)
        got = R.sample(model, SCHED, steps, (1, 2, 1, 2, 2), z, sampler="ddim", eta=0.3, **opts)
        np.testing.assert_array_equal(got, x)
        assert np.abs(got - R.sample(model, SCHED, steps, (1, 2, 1, 2, 2), z, eta=0.3,
                                     clip=opts.get("clip"))).max() > 1e-6


@pytest.mark.parametrize("final_abar", ["one", "abar_0"])
@pytest.mark.parametrize("clipped_eps", ["rederive", "keep"])
@pytest.mark.parametrize("s", [-1, 3])
def test_torch_mirror_float64(final_abar: str, clipped_eps: str, s: int) -> None:
    ts = O.make_schedule("linear", 100, dtype=torch.float64)
    kw = {"eta": 0.7, "clip": 1.0, "final_abar": final_abar, "clipped_eps": clipped_eps}
    want = R.ddim_step(SCHED, X_T, 9, s, OUT, NOISE, **kw)
    got = O.ddim_step(ts, torch.from_numpy(X_T), 9, s, torch.from_numpy(OUT), torch.from_numpy(NOISE), **kw)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


def test_tables_name_the_options_and_bad_values_are_one_line_errors() -> None:
    assert {"final_abar", "clipped_eps"} <= set(R.SAMPLERS["ddim"].options)
    assert O.SAMPLERS["ddim"].options == R.SAMPLERS["ddim"].options
    with pytest.raises(ValueError, match="'final_abar'"):
        R.ddim_step(SCHED, X_T, 9, -1, OUT, final_abar="zero")
    with pytest.raises(ValueError, match="'clipped_eps'"):
        O.ddim_step(O.make_schedule("linear", 100), torch.zeros(1, 1, 1, 1, 1), 9, -1, torch.zeros(1, 1, 1, 1, 1),
                    clipped_eps="maybe")
