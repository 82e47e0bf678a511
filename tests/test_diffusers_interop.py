"""vdm schedule --from-diffusers against the real diffusers package (installed by the dev extra).

Schedulers are built straight from configs (no models, nothing downloaded). Every N <= T = 1000 is
compared for every spacing; where diffusers departs from the spec, the test shows how, counts it
(the counts are the ones spec 6.5 and docs/DIFFUSERS.md state) and checks that the plan's notes
say so.
"""

from __future__ import annotations

import inspect
import math
import warnings
from fractions import Fraction
from functools import cache

import diffusers
import numpy as np
import pytest
import torch
from vdm.backends.interop import diffusers as interop
from vdm.backends.interop.diffusers import plan_from_diffusers

import vdm_ref
from vdm_ref import sigmas as S

T = 1000
SPACINGS = ("leading", "trailing", "linspace")
DISCRETE = ("DDPMScheduler", "DDIMScheduler", "CogVideoXDDIMScheduler")
SIGMA_VP = ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler")
MULTISTEP = ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler")
SIGMA_RTOL = 2e-4  # diffusers' float32 betas and alphas_cumprod (a deviation: test_float32_tables)
# diffusers 0.42 calls np.array(tensor ** 0.5) in set_timesteps, which NumPy 2 warns about on every call.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@cache
def _scheduler(cls: str, items: tuple = ()) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(diffusers, cls)(**dict(items))


def theirs(cls: str, N: int, **cfg: object) -> tuple[np.ndarray, np.ndarray | None]:
    kwargs = {"mu": cfg.pop("_mu")} if "_mu" in cfg else {}
    s = _scheduler(cls, tuple(sorted(cfg.items())))
    s.set_timesteps(N, **kwargs)
    sig = getattr(s, "sigmas", None)
    return s.timesteps.numpy(), None if sig is None else sig.numpy().astype(np.float64)


def _close(got: np.ndarray, want: np.ndarray, rtol: float, atol: float, where: object) -> None:
    """assert_allclose without its per-call cost (these loops make thousands of comparisons)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    ok = got.shape == want.shape and bool(np.all(np.abs(got - want) <= atol + rtol * np.abs(want)))
    if not ok:
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=str(where))


def ours(cls: str, N: int, **cfg: object) -> interop.SchedulePlan:
    return plan_from_diffusers({"_class_name": cls, **cfg}, N)


def _exact(spacing: str, n: int, i: int) -> Fraction:
    """The published expression at entry i, as an exact rational (0-based timesteps)."""
    if spacing == "trailing":
        return Fraction((n - i) * T, n) - 1
    return Fraction((T - 1) * (n - 1 - i), n - 1)


def _compare_integer_timesteps(cls: str, spacing: str, n_of: int = 0, top: int = T) -> dict[str, int]:
    """Every N: equal, or different only where spec 6.5 says a float64 evaluation may differ."""
    counts = {"count": 0, "tie_entries": 0, "tie_n": 0, "n1": 0}
    for N in range(1, top + 1):
        got = ours(cls, N, timestep_spacing=spacing)
        want, _ = theirs(cls, N, timestep_spacing=spacing)
        n = N + n_of  # multistep schedulers space N + 1 points
        if len(want) != N:  # float64 arange gave an extra entry: the last is -1
            assert spacing == "trailing" and len(want) == N + 1 and want[-1] == -1
            assert any("entries here" in note for note in got.notes)
            counts["count"] += 1
            want = want[:N]
        diff = np.flatnonzero(want != got.timesteps)
        if spacing == "linspace" and n == 1:
            assert want.tolist() == [0] and got.timesteps.tolist() == [T - 1]
            counts["n1"] += 1
            continue
        for i in diff:  # each difference is an exact tie that float64 rounded to the odd neighbour
            q = _exact(spacing, n, int(i))
            assert q.denominator == 2, (cls, spacing, N, i)
            rounded = int(got.timesteps[i]) + (1 if spacing == "trailing" else 0)  # the value round() returned
            assert abs(int(want[i]) - int(got.timesteps[i])) == 1 and rounded % 2 == 0
        if len(diff):
            assert any("ties" in note for note in got.notes)
            counts["tie_entries"] += len(diff)
            counts["tie_n"] += 1
    return counts


# Spec 6.5 and docs/DIFFUSERS.md state these numbers (T = 1000, N = 1 .. 1000).
SPACING_DEVIATIONS = {
    "leading": {"count": 0, "tie_entries": 0, "tie_n": 0, "n1": 0},
    "trailing": {"count": 62, "tie_entries": 296, "tie_n": 50, "n1": 0},
    "linspace": {"count": 0, "tie_entries": 146, "tie_n": 92, "n1": 1},
}


@pytest.mark.parametrize("spacing", SPACINGS)
def test_ddim_timesteps_every_n(spacing: str) -> None:
    assert _compare_integer_timesteps("DDIMScheduler", spacing) == SPACING_DEVIATIONS[spacing]


@pytest.mark.parametrize("cls", ["DDPMScheduler", "CogVideoXDDIMScheduler"])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_other_discrete_timesteps_share_the_spacing(cls: str, spacing: str) -> None:
    assert _compare_integer_timesteps(cls, spacing, top=300) == _compare_integer_timesteps(
        "DDIMScheduler", spacing, top=300)


@pytest.mark.parametrize("cls", MULTISTEP)
@pytest.mark.parametrize("spacing", SPACINGS)
def test_multistep_every_n(cls: str, spacing: str) -> None:
    """N + 1 points with the last dropped (linspace, leading); sigmas of the table plus the final 0."""
    n_of = 0 if spacing == "trailing" else 1
    counts = _compare_integer_timesteps(cls, spacing, n_of=n_of, top=T - n_of)
    assert counts["count"] == SPACING_DEVIATIONS[spacing]["count"] and counts["n1"] == 0
    for N in (1, 2, 7, 50, 333, 999):
        got = ours(cls, N, timestep_spacing=spacing)
        want_t, want_s = theirs(cls, N, timestep_spacing=spacing)
        if len(want_t) == N and np.array_equal(want_t, got.timesteps):
            np.testing.assert_allclose(got.sigmas, want_s, rtol=SIGMA_RTOL, atol=0)
            assert got.sigmas[-1] == 0.0 and len(got.sigmas) == N + 1
    with pytest.raises(ValueError, match="impossible"):
        ours(cls, T, timestep_spacing="linspace")


@pytest.mark.parametrize("cls", SIGMA_VP)
@pytest.mark.parametrize("spacing", SPACINGS)
def test_euler_family_every_n(cls: str, spacing: str) -> None:
    """Fractional linspace timesteps and interpolated sigmas; Heun repeats each inner level. Every N for
    Euler; the two schedulers that share its code path every 7th N."""
    for N in range(1, T + 1, 1 if cls == "EulerDiscreteScheduler" else 7):
        got = ours(cls, N, timestep_spacing=spacing)
        want_t, want_s = theirs(cls, N, timestep_spacing=spacing)
        if spacing == "linspace" and N == 1:
            assert want_t.tolist() == [0.0] and got.timesteps.tolist() == [T - 1.0]
            continue
        if spacing == "trailing" and len(want_t) != len(got.timesteps):
            continue  # the float count of spec 6.5, counted in test_ddim_timesteps_every_n
        if spacing == "trailing" and not np.array_equal(want_t, got.timesteps):
            continue  # float-moved ties (spec 6.5)
        _close(got.timesteps, want_t, 0, 1.2e-4, (N, "timesteps"))  # float32 linspace
        _close(got.sigmas, want_s, SIGMA_RTOL, 0, (N, "sigmas"))


@pytest.mark.parametrize("cls", ["EulerDiscreteScheduler", "HeunDiscreteScheduler", *MULTISTEP])
def test_karras_sigmas_grid(cls: str) -> None:
    for spacing in SPACINGS:
        for N in (2, 3, 5, 10, 25, 50, 100, 250):
            got = ours(cls, N, timestep_spacing=spacing, use_karras_sigmas=True)
            want_t, want_s = theirs(cls, N, timestep_spacing=spacing, use_karras_sigmas=True)
            np.testing.assert_allclose(got.sigmas, want_s, rtol=SIGMA_RTOL, atol=0)
            atol = 1.0 if cls in MULTISTEP else 0.05  # multistep rounds t: a float32 table may flip a half
            np.testing.assert_allclose(got.timesteps.astype(np.float64), want_t, rtol=0, atol=atol)


SHIFTS = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0, 12.0)


@pytest.mark.parametrize("shift", SHIFTS)
def test_flow_match_grid_of_shifts(shift: str) -> None:
    """diffusers = shift(linspace(1, shift(1/T), N)): the shift applied twice at sigma_min. vdm shifts once."""
    cls = "FlowMatchEulerDiscreteScheduler"
    deviating = 0
    for N in [*range(1, 101), 250, 500, 1000]:
        got = ours(cls, N, shift=shift)
        want_t, want_s = theirs(cls, N, shift=shift)
        u = np.linspace(1.0, float(S.flow_shift(1 / T, shift)), N) if N > 1 else np.ones(1)
        twice = np.append(S.flow_shift(u, shift), 0.0)
        _close(want_s, twice, 2e-6, 1e-7, N)  # what diffusers does
        _close(got.timesteps, T * got.sigmas[:-1], 0, 0, N)
        _close(want_t, T * want_s[:-1], 2e-6, 0, N)
        if shift == 1.0 or N == 1:
            _close(got.sigmas, want_s, 2e-6, 1e-7, N)
            assert not any("again" in note for note in got.notes)
        else:
            assert abs(got.sigmas[-2] - want_s[-2]) > 1e-5
            assert any("again in set_timesteps" in note for note in got.notes)
            deviating += 1
    assert deviating == (0 if shift == 1.0 else 102)


@pytest.mark.parametrize("mu", [0.5, 0.85, 1.15, 2.0])
@pytest.mark.parametrize("time_shift", ["exponential", "linear"])
def test_flow_match_dynamic_shift_agrees(mu: float, time_shift: str) -> None:
    cls = "FlowMatchEulerDiscreteScheduler"
    cfg = {"use_dynamic_shifting": True, "time_shift_type": time_shift}
    for N in (1, 2, 10, 28, 50, 200):
        got = plan_from_diffusers({"_class_name": cls, **cfg}, N, mu=mu)
        _, want_s = theirs(cls, N, **cfg, _mu=mu)
        np.testing.assert_allclose(got.sigmas, want_s, rtol=2e-6, atol=1e-7)
    seq = plan_from_diffusers({"_class_name": cls, **cfg}, 10, seq_len=4096)
    np.testing.assert_allclose(seq.sigmas, plan_from_diffusers({"_class_name": cls, **cfg}, 10, mu=1.15).sigmas,
                               rtol=1e-14)


@pytest.mark.parametrize("terminal", [0.02, 0.1])
def test_flow_match_terminal_stretch_agrees(terminal: float) -> None:
    cls = "FlowMatchEulerDiscreteScheduler"
    for N in (2, 8, 40):
        cfg = {"shift_terminal": terminal, "use_dynamic_shifting": True}
        got = plan_from_diffusers({"_class_name": cls, **cfg}, N, mu=1.0)
        _, want_s = theirs(cls, N, **cfg, _mu=1.0)
        np.testing.assert_allclose(got.sigmas, want_s, rtol=2e-6, atol=1e-7)
        assert got.sigmas[-2] == pytest.approx(terminal, rel=1e-12)


@pytest.mark.parametrize("schedule", ["karras", "exponential"])
@pytest.mark.parametrize("final", ["zero", "sigma_min"])
def test_edm_euler_agrees(schedule: str, final: str) -> None:
    cls = "EDMEulerScheduler"
    for N in [*range(1, 60), 200, 1000]:
        got = ours(cls, N, sigma_schedule=schedule, final_sigmas_type=final)
        want_t, want_s = theirs(cls, N, sigma_schedule=schedule, final_sigmas_type=final)
        if schedule == "exponential" and N == 1:  # diffusers starts one step at sigma_min, the plan at sigma_max
            assert want_s[0] == pytest.approx(0.002, rel=1e-6) and got.sigmas[0] == pytest.approx(80.0, rel=1e-14)
            assert any("one exponential step" in note for note in got.notes)
            continue
        _close(got.sigmas, want_s, 2e-6, 0, N)
        _close(got.timesteps, want_t, 0, 2e-6, N)
        assert got.sigmas[-1] == (0.0 if final == "zero" else got.sigmas[-2])


def test_ddim_previous_timestep_is_t_minus_stride() -> None:
    """diffusers' DDIM step from t lands on t - T // N; the spec (6.4) and the plan use the next timestep."""
    sched = _scheduler("DDIMScheduler", (("clip_sample", False), ("timestep_spacing", "trailing")))
    sched.set_timesteps(13)
    plan = ours("DDIMScheduler", 13, timestep_spacing="trailing", clip_sample=False)
    t, nxt = int(plan.timesteps[1]), int(plan.timesteps[2])
    assert (t, nxt) == (922, 845) and t - T // 13 == 846
    rng = np.random.default_rng(0)
    x, eps = rng.standard_normal((1, 2, 1, 3, 3)), rng.standard_normal((1, 2, 1, 3, 3))
    got = sched.step(torch.from_numpy(eps).float(), t, torch.from_numpy(x).float()).prev_sample.double().numpy()
    table = vdm_ref.make_schedule("linear", T)
    at_stride = vdm_ref.ddim_step(table, x, t, 846, eps)
    at_next = vdm_ref.ddim_step(table, x, t, 845, eps)
    np.testing.assert_allclose(got, at_stride, rtol=1e-4, atol=1e-4)
    assert np.abs(got - at_next).max() > 10 * np.abs(got - at_stride).max()
    assert any("t - T // N = t - 76" in note and "of 13 steps" in note for note in plan.notes)


def test_ddim_options_match_diffusers_flags() -> None:
    """set_alpha_to_one=False is final_abar='abar_0'; clipping keeps eps unless use_clipped_model_output."""
    rng = np.random.default_rng(1)
    x, out = rng.standard_normal((1, 2, 1, 3, 3)) * 2, rng.standard_normal((1, 2, 1, 3, 3)) * 3
    xt, ot = torch.from_numpy(x).float(), torch.from_numpy(out).float()
    table = vdm_ref.make_schedule("linear", T)
    s = _scheduler("DDIMScheduler", (("clip_sample", False), ("set_alpha_to_one", False)))
    s.set_timesteps(10)
    last = int(s.timesteps[-1])
    got = s.step(ot, last, xt).prev_sample.double().numpy()
    np.testing.assert_allclose(got, vdm_ref.ddim_step(table, x, last, -1, out, final_abar="abar_0"), rtol=1e-4,
                               atol=1e-4)
    assert ours("DDIMScheduler", 10, set_alpha_to_one=False).options["final_abar"] == "abar_0"
    c = _scheduler("DDIMScheduler", (("clip_sample", True),))
    c.set_timesteps(10)
    t = int(c.timesteps[3])
    s_next = t - T // 10
    keep = c.step(ot, t, xt).prev_sample.double().numpy()
    redo = c.step(ot, t, xt, use_clipped_model_output=True).prev_sample.double().numpy()
    np.testing.assert_allclose(keep, vdm_ref.ddim_step(table, x, t, s_next, out, clip=1.0, clipped_eps="keep"),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(redo, vdm_ref.ddim_step(table, x, t, s_next, out, clip=1.0), rtol=1e-4, atol=1e-4)
    assert np.abs(keep - redo).max() > 1e-2
    assert ours("DDIMScheduler", 10).options["clipped_eps"] == "keep"


def test_float32_tables() -> None:
    """diffusers keeps alphas_cumprod in float32; the plan's table is float64 (spec 1.6)."""
    s = _scheduler("DDIMScheduler")
    theirs_abar = s.alphas_cumprod.double().numpy()
    mine = vdm_ref.make_schedule("linear", T).abar
    rel = np.abs(theirs_abar - mine) / mine
    assert 1e-8 < rel.max() < 1e-4
    assert s.alphas_cumprod.dtype == torch.float32


def test_cogvideox_table_and_zero_snr() -> None:
    cfg = {"rescale_betas_zero_snr": True, "snr_shift_scale": 1.0}
    got = ours("CogVideoXDDIMScheduler", 50, **cfg)
    abar, _ = interop.vp_abar(interop.DEFAULTS["CogVideoXDDIMScheduler"] | cfg)
    want = _scheduler("CogVideoXDDIMScheduler", tuple(sorted(cfg.items()))).alphas_cumprod.double().numpy()
    np.testing.assert_allclose(abar, want, rtol=1e-4, atol=1e-7)
    assert abar[-1] == 0.0 and got.prediction == "eps"
    k3, _ = interop.vp_abar(interop.DEFAULTS["CogVideoXDDIMScheduler"])
    base = vdm_ref.make_schedule("scaled_linear", T, beta_start=0.00085, beta_end=0.012).abar
    np.testing.assert_allclose(k3 / (1 - k3), base / (1 - base) / 3.0, rtol=1e-12)  # SNR divided by k


@pytest.mark.parametrize("cls", sorted(interop.DEFAULTS))
def test_defaults_table_matches_the_installed_signatures(cls: str) -> None:
    sig = inspect.signature(getattr(diffusers, cls).__init__)
    theirs_defaults = {k: v.default for k, v in sig.parameters.items() if k != "self"}
    assert set(theirs_defaults) == set(interop.DEFAULTS[cls])
    for k, v in theirs_defaults.items():
        mine = interop.DEFAULTS[cls][k]
        assert mine == v or (isinstance(v, float) and math.isinf(v) and mine == v), (cls, k)


@pytest.mark.parametrize(
    ("config", "steps", "match"),
    [
        ({"_class_name": "PNDMScheduler"}, 10, "unknown scheduler class"),
        ({}, 10, "unknown scheduler class"),
        ({"_class_name": "DDIMScheduler", "beta_shedule": "linear"}, 10, r"unknown config key\(s\) \['beta_shedule'\]"),
        ({"_class_name": "DDIMScheduler"}, 1001, "impossible"),
        ({"_class_name": "DDIMScheduler"}, 0, "'steps'"),
        ({"_class_name": "EulerDiscreteScheduler", "use_beta_sigmas": True}, 10, "'use_beta_sigmas'"),
        ({"_class_name": "DDIMScheduler", "beta_schedule": "quadratic"}, 10, "'beta_schedule'"),
        ({"_class_name": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": True}, 10, "mu"),
        ({"_class_name": "DDIMScheduler", "timestep_spacing": "middle"}, 10, "'timestep_spacing'"),
    ],
)
def test_bad_configs_are_one_line_errors(config: dict, steps: int, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        plan_from_diffusers(config, steps)
    assert "\n" not in str(info.value)


def test_plan_json_keys_and_meta_keys_ignored() -> None:
    plan = plan_from_diffusers({"_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.42.1",
                                "timestep_spacing": "trailing"}, 4)
    d = plan.to_dict()
    assert {"family", "timesteps", "sigmas", "sampler", "notes"} <= set(d)
    assert d["family"] == "vp" and d["sampler"] == "euler" and len(d["sigmas"]) == 5
    assert plan.log_snr()[-1] == math.inf and np.all(np.diff(plan.log_snr()) > 0)


def test_trailing_extra_step_reads_the_noisiest_abar() -> None:
    """At N = 61 diffusers' trailing DDIM has a 62nd step at t = -1, and alphas_cumprod[-1] wraps round
    to abar_{T-1}: the last step divides by sqrt(abar_{T-1}). The plan has 61 steps ending at t = 15."""
    s = _scheduler("DDIMScheduler", (("clip_sample", False), ("timestep_spacing", "trailing")))
    s.set_timesteps(61)
    assert len(s.timesteps) == 62 and s.timesteps[-1] == -1
    plan = ours("DDIMScheduler", 61, timestep_spacing="trailing", clip_sample=False)
    assert len(plan.timesteps) == 61 and plan.timesteps[-1] == 15
    rng = np.random.default_rng(2)
    x, eps = rng.standard_normal((1, 1, 1, 2, 2)), rng.standard_normal((1, 1, 1, 2, 2))
    got = s.step(torch.from_numpy(eps).float(), -1, torch.from_numpy(x).float()).prev_sample.double().numpy()
    a = float(s.alphas_cumprod[-1])  # abar_{T-1}, the noisiest entry
    np.testing.assert_allclose(got, (x - math.sqrt(1 - a) * eps) / math.sqrt(a), rtol=1e-4)


def test_sdxl_style_config_with_other_schedulers_keys() -> None:
    """SDXL ships an Euler config carrying DDIM's and PNDM's keys; diffusers ignores them, and so does the plan."""
    config = {"_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.19.0.dev0", "beta_end": 0.012,
              "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
              "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
              "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
              "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False}
    got = plan_from_diffusers(config, 30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = diffusers.EulerDiscreteScheduler.from_config(config)
    s.set_timesteps(30)
    np.testing.assert_array_equal(got.timesteps, s.timesteps.numpy())
    np.testing.assert_allclose(got.sigmas, s.sigmas.numpy(), rtol=SIGMA_RTOL)
    assert any("ignored ['clip_sample', 'sample_max_value', 'set_alpha_to_one', 'skip_prk_steps']" in n
               for n in got.notes)


@pytest.mark.parametrize("cls", MULTISTEP)
@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
def test_multistep_flow_sigmas_wan_style(cls: str, shift: float) -> None:
    """use_flow_sigmas (Wan): sigmas agree to float32; integer timesteps floor(T s) agree except where T s is an
    exact integer that diffusers' float computation puts just below it (then one less)."""
    cfg = {"use_flow_sigmas": True, "flow_shift": shift, "prediction_type": "flow_prediction"}
    below = 0
    for N in [*range(1, 60), 100, 500, 999]:
        got = ours(cls, N, **cfg)
        want_t, want_s = theirs(cls, N, **cfg)
        assert got.family == "flow" and got.prediction == "flow" and got.sigmas[-1] == 0.0
        _close(got.sigmas, want_s, 2e-7, 1e-9, N)
        for i in np.flatnonzero(want_t != got.timesteps):
            # the unshifted level: UniPC 1 + (1/T - 1) i / N, DPM-Solver (1 - 1/T)(1 - i / N); then T shift(u)
            u = 1 + (Fraction(1, T) - 1) * Fraction(i, N) if cls.startswith("UniPC") else \
                (1 - Fraction(1, T)) * (1 - Fraction(i, N))
            k = Fraction(shift)
            exact = T * k * u / (1 + (k - 1) * u)
            assert exact.denominator == 1 and want_t[i] == got.timesteps[i] - 1 == exact - 1, (N, i)
            below += 1
    assert below > 0 or shift != 1.0
    dyn = {"use_flow_sigmas": True, "use_dynamic_shifting": True, "prediction_type": "flow_prediction"}
    for N in (1, 5, 30):
        got = plan_from_diffusers({"_class_name": cls, **dyn}, N, mu=1.2)
        _, want_s = theirs(cls, N, **dyn, _mu=1.2)
        _close(got.sigmas, want_s, 2e-7, 1e-9, N)


def test_stable_video_diffusion_style_euler() -> None:
    """SVD's Euler config: Karras levels between the config's sigma_min 0.002 and sigma_max 700, continuous
    timesteps c_noise = ln(sigma) / 4 with v prediction; agrees with diffusers to float32."""
    config = {"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
              "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear",
              "num_train_timesteps": 1000, "prediction_type": "v_prediction", "set_alpha_to_one": False,
              "sigma_max": 700.0, "sigma_min": 0.002, "skip_prk_steps": True, "steps_offset": 1,
              "timestep_spacing": "leading", "timestep_type": "continuous", "trained_betas": None,
              "use_karras_sigmas": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = diffusers.EulerDiscreteScheduler.from_config(config)
    for N in (1, 2, 14, 25, 50):
        got = plan_from_diffusers(config, N)
        s.set_timesteps(N)
        _close(got.sigmas, s.sigmas.numpy(), 2e-7, 0, N)
        _close(got.timesteps, s.timesteps.numpy(), 0, 2e-6, N)
        assert got.sigmas[0] == pytest.approx(700.0, rel=1e-14) and got.prediction == "v"
        np.testing.assert_allclose(got.timesteps, 0.25 * np.log(got.sigmas[:-1]), rtol=1e-15)


@pytest.mark.parametrize("cls", ["EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", *MULTISTEP])
def test_zero_terminal_snr_sigma_table(cls: str) -> None:
    """rescale_betas_zero_snr on a sigma-based scheduler: abar_{T-1} = 0 becomes 2^-24, so sigma_max = 4096."""
    cfg = {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction",
           "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
    for N in (2, 10, 25, 50):
        got = ours(cls, N, **cfg)
        want_t, want_s = theirs(cls, N, **cfg)
        np.testing.assert_array_equal(got.timesteps, want_t)
        _close(got.sigmas, want_s, 1e-5, 0, N)
        assert got.sigmas[0] == pytest.approx(math.sqrt((1 - 2.0**-24) / 2.0**-24), rel=1e-12)
    assert any("2^-24" in note for note in got.notes)
