"""A diffusers scheduler config, read as a vdm sampling plan (``vdm schedule --from-diffusers``).

:func:`plan_from_diffusers` takes the dict of a ``scheduler_config.json`` and a step count and
returns what the scheduler would run: the family (spec 14), the timesteps the network sees
(diffusers' ``scheduler.timesteps``), the noise levels including the final one
(``scheduler.sigmas``, where the scheduler has them), the vdm sampler and its options, and
notes. The plan follows the spec: where diffusers' code departs from what its documentation
says (float rounding of the published spacings, the DDIM previous-timestep rule, the doubled
flow shift, float32 tables), the plan keeps the spec's value and a note says what diffusers does
instead. Only NumPy and vdm_ref are used; diffusers is never imported.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import vdm_ref
from vdm_ref import sigmas as levels

from .plan import SchedulePlan

# Keys of a saved config that describe the file, not the scheduler.
META_KEYS = ("_class_name", "_diffusers_version", "_name_or_path", "_use_default_values")

_VP = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
       "trained_betas": None, "prediction_type": "epsilon", "timestep_spacing": "leading", "steps_offset": 0,
       "rescale_betas_zero_snr": False}
_CLIP = {"clip_sample": True, "clip_sample_range": 1.0, "sample_max_value": 1.0}
_THRESHOLD = {"thresholding": False, "dynamic_thresholding_ratio": 0.995}
_EXTRA_SIGMAS = {"use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False}
_MULTISTEP = {"solver_order": 2, "thresholding": False, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0,
              "lower_order_final": True, "use_flow_sigmas": False, "flow_shift": 1.0, "final_sigmas_type": "zero",
              "timestep_spacing": "linspace", "use_dynamic_shifting": False, "time_shift_type": "exponential"}

# The constructor arguments of each scheduler class in diffusers 0.42 and their defaults: the keys
# a config may hold. (A test compares this table with the installed diffusers' signatures.)
DEFAULTS: dict[str, dict[str, Any]] = {
    "DDPMScheduler": {**_VP, **_CLIP, **_THRESHOLD, "variance_type": "fixed_small"},
    "DDIMScheduler": {**_VP, **_CLIP, **_THRESHOLD, "set_alpha_to_one": True},
    "CogVideoXDDIMScheduler": {**_VP, **_CLIP, "beta_start": 0.00085, "beta_end": 0.012,
                               "beta_schedule": "scaled_linear", "set_alpha_to_one": True, "snr_shift_scale": 3.0},
    "EulerDiscreteScheduler": {**_VP, **_EXTRA_SIGMAS, "interpolation_type": "linear", "sigma_min": None,
                               "sigma_max": None, "timestep_spacing": "linspace", "timestep_type": "discrete",
                               "final_sigmas_type": "zero"},
    "EulerAncestralDiscreteScheduler": {**_VP, "timestep_spacing": "linspace"},
    "HeunDiscreteScheduler": {**{k: v for k, v in _VP.items() if k != "rescale_betas_zero_snr"}, **_EXTRA_SIGMAS,
                              "beta_start": 0.00085, "beta_end": 0.012, "clip_sample": False,
                              "clip_sample_range": 1.0, "timestep_spacing": "linspace"},
    "DPMSolverMultistepScheduler": {**_VP, **_EXTRA_SIGMAS, **_MULTISTEP, "algorithm_type": "dpmsolver++",
                                    "solver_type": "midpoint", "euler_at_final": False, "use_lu_lambdas": False,
                                    "lambda_min_clipped": -math.inf, "variance_type": None},
    "UniPCMultistepScheduler": {**_VP, **_EXTRA_SIGMAS, **_MULTISTEP, "predict_x0": True, "solver_type": "bh2",
                                "disable_corrector": [], "solver_p": None, "sigma_min": None, "sigma_max": None,
                                "shift_terminal": None},
    "FlowMatchEulerDiscreteScheduler": {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False,
                                        "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256,
                                        "max_image_seq_len": 4096, "invert_sigmas": False, "shift_terminal": None,
                                        **_EXTRA_SIGMAS, "time_shift_type": "exponential",
                                        "stochastic_sampling": False},
    "EDMEulerScheduler": {"sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5, "sigma_schedule": "karras",
                          "num_train_timesteps": 1000, "prediction_type": "epsilon", "rho": 7.0,
                          "final_sigmas_type": "zero"},
}

# Keys of other diffusers schedulers that configs carry along (SDXL's Euler config has DDIM's and
# PNDM's): diffusers ignores them, and so does the plan, with a note. Any other key is an error.
FOREIGN_KEYS = frozenset().union(*DEFAULTS.values(), {"skip_prk_steps"})

# Config values this reader does not model yet: key -> the only value accepted (the default).
UNSUPPORTED = {"trained_betas": None, "use_exponential_sigmas": False, "use_beta_sigmas": False,
               "use_lu_lambdas": False, "invert_sigmas": False,
               "timestep_type": "discrete", "interpolation_type": "linear", "lambda_min_clipped": -math.inf,
               "sigma_min": None, "sigma_max": None, "shift_terminal": None}
# ...except where the family defines them (EDM's sigma range, the flow shift's terminal value).
_OWN_KEYS = {"EDMEulerScheduler": {"sigma_min", "sigma_max"}, "FlowMatchEulerDiscreteScheduler": {"shift_terminal"},
             "EulerDiscreteScheduler": {"sigma_min", "sigma_max", "timestep_type"}}
TIMESTEP_TYPES = ("discrete", "continuous")  # EulerDiscrete: t, or c_noise = ln(sigma) / 4 with v_prediction (SVD)

# diffusers' beta_schedule -> (vdm schedule, the config keys that are its parameters) (spec 2).
BETA_SCHEDULES = {"linear": ("linear", ("beta_start", "beta_end")),
                  "scaled_linear": ("scaled_linear", ("beta_start", "beta_end")),
                  "squaredcos_cap_v2": ("cosine", ()),
                  "sigmoid": ("sigmoid", ("beta_start", "beta_end"))}
PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v", "flow_prediction": "flow"}
VARIANCES = {"fixed_small": "fixed_small", "fixed_large": "fixed_large", "learned_range": "learned_range"}
ZERO_SNR_ABAR = 2.0**-24  # what diffusers' sigma-based schedulers put in place of abar_{T-1} = 0


@dataclass
class _Read:
    """One config being read: the merged values, the step count and the notes gathered so far."""

    name: str
    cfg: dict
    steps: int
    mu: float | None
    notes: list[str] = field(default_factory=list)


# --- the vp table and its discrete timesteps ------------------------------------------------------------


def vp_abar(cfg: dict) -> tuple[np.ndarray, dict]:
    """The float64 abar table a vp config describes (spec 2), and the vdm schedule that gives it."""
    kind = cfg["beta_schedule"]
    if kind not in BETA_SCHEDULES:
        raise ValueError(f"config key 'beta_schedule': unknown value {kind!r}; vdm reads {tuple(BETA_SCHEDULES)}")
    name, keys = BETA_SCHEDULES[kind]
    params = {k: float(cfg[k]) for k in keys}
    zero = bool(cfg.get("rescale_betas_zero_snr", False))
    T = _int_key(cfg, "num_train_timesteps", 2)
    sched = vdm_ref.make_schedule(name, T, zero_terminal_snr=zero and "snr_shift_scale" not in cfg, **params)
    abar = sched.abar
    spec = {"name": name, "T": T, "params": params, "zero_terminal_snr": zero}
    if "snr_shift_scale" in cfg:  # CogVideoX: SNR divided by k, then (optionally) the zero-SNR rescale
        k = float(cfg["snr_shift_scale"])
        abar = abar / (k + (1.0 - k) * abar)
        abar = vdm_ref.rescale_zero_terminal_snr(abar) if zero else abar
        spec["snr_shift_scale"] = k
    return abar, spec


def _int_key(cfg: dict, key: str, low: int) -> int:
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"config key {key!r} must be an integer >= {low}, got {v!r}")
    return v


def _spacing_notes(r: _Read, T: int, N: int, spacing: str) -> None:
    """Spec 6.5: where a float64 evaluation of the published expression (as diffusers does it) may differ."""
    if spacing == "trailing":
        i = np.arange(N)
        ties = np.flatnonzero(2 * (((N - i) * T) % N) == N)
        count = len(np.arange(T, 0, -T / N))  # the float64 expression's length, which the spec rules out
        if count != N:
            r.notes.append(f"float64 arange(T, 0, -T/N) has {count} entries here, the last giving timestep -1 "
                           "(diffusers' trailing spacing does this); vdm gives exactly N (spec 6.5)")
    elif spacing == "linspace" and N >= 2:
        k = np.arange(N - 1, -1, -1)
        ties = np.flatnonzero(2 * (((T - 1) * k) % (N - 1)) == N - 1)
    else:
        ties = np.array([], dtype=np.int64)
    if len(ties):
        r.notes.append(f"exact ties at step(s) {ties.tolist()} round to even (spec 6.5); a float64 evaluation "
                       f"(diffusers) may round some of them the other way")


def discrete_timesteps(r: _Read, spacing_steps: int | None = None) -> np.ndarray:
    """Spec 6 for the config's timestep_spacing and steps_offset (leading only)."""
    cfg, N = r.cfg, r.steps
    T = _int_key(cfg, "num_train_timesteps", 2)
    spacing = cfg["timestep_spacing"]
    if spacing not in vdm_ref.SPACINGS:
        raise ValueError(f"config key 'timestep_spacing': unknown value {spacing!r}; choose one of {vdm_ref.SPACINGS}")
    offset = _int_key(cfg, "steps_offset", 0) if spacing == "leading" else 0
    n = N if spacing_steps is None else spacing_steps
    if n > T:
        raise ValueError(f"steps = {N} is impossible here: this scheduler needs N <= {T - (n - N)} (T = {T})")
    _spacing_notes(r, T, n, spacing)
    if spacing == "linspace" and n == 1:
        r.notes.append("linspace with one step: the published linspace(0, T - 1, 1) is [0]; vdm starts at T - 1 "
                       "(spec 6.5)")
    return vdm_ref.inference_timesteps(T, n, spacing, offset)


def _sampler_options(r: _Read) -> dict:
    """Spec 7.1 / 7.2: x0 clipping or thresholding as configured."""
    cfg, opts = r.cfg, {}
    if cfg.get("thresholding"):
        opts["threshold"] = float(cfg["dynamic_thresholding_ratio"])
        if float(cfg.get("sample_max_value", 1.0)) != 1.0:
            r.notes.append("sample_max_value caps diffusers' dynamic threshold; spec 7.2 has no cap (floor 1 only)")
    elif cfg.get("clip_sample"):
        opts["clip"] = float(cfg.get("clip_sample_range", 1.0))
    return opts


def _prediction(r: _Read) -> str:
    p = r.cfg["prediction_type"]
    if p not in PREDICTIONS:
        raise ValueError(f"config key 'prediction_type': unknown value {p!r}; choose one of {tuple(PREDICTIONS)}")
    return PREDICTIONS[p]


def _float32_note(r: _Read) -> None:
    r.notes.append("diffusers builds betas and alphas_cumprod in float32 (spec 1.6 asks for float64): its sigmas "
                   "and abar differ from these in the 4th-7th significant digit, most at low noise")


def _vp_alpha_sigma(abar_levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.sqrt(abar_levels), np.sqrt(1.0 - abar_levels)


# --- discrete samplers: DDPM, DDIM, CogVideoX DDIM ---------------------------------------------------------


def read_ddpm(r: _Read) -> SchedulePlan:
    """DDPMScheduler: spec 7.3 on the spec 6 timesteps; its previous timestep is the next entry (6.4)."""
    abar, spec = vp_abar(r.cfg)
    ts = discrete_timesteps(r)
    variance = r.cfg["variance_type"]
    if variance not in VARIANCES:
        raise ValueError(f"config key 'variance_type': {variance!r} has no vdm variance; vdm reads {tuple(VARIANCES)}")
    _float32_note(r)
    lv = np.append(abar[ts], 1.0)
    return _plan(r, "vp", ts, None, "ddpm", spec, {"variance": variance, **_sampler_options(r)}, lv)


def read_ddim(r: _Read) -> SchedulePlan:
    """DDIMScheduler / CogVideoXDDIMScheduler: spec 7.4 with final_abar and clipped_eps as configured."""
    abar, spec = vp_abar(r.cfg)
    ts = discrete_timesteps(r)
    T, N = spec["T"], r.steps
    final = "one" if r.cfg["set_alpha_to_one"] else "abar_0"
    opts = {"eta": 0.0, "final_abar": final, **_sampler_options(r)}
    if "clip" in opts or "threshold" in opts:
        opts["clipped_eps"] = "keep"
        r.notes.append("diffusers keeps the model's eps after clipping unless step(use_clipped_model_output=True): "
                       "clipped_eps='keep' (spec 7.4; vdm's default re-derives it)")
    naive = ts - T // N
    spec_prev = np.append(ts[1:], -1)
    differ = int(np.sum((naive != spec_prev) & ~((naive < 0) & (spec_prev < 0))))
    if differ:
        r.notes.append(f"diffusers' DDIM step goes from t to t - T // N = t - {T // N}, not to the next timestep "
                       f"(spec 6.4): {differ} of {N} steps land elsewhere; the plan follows 6.4")
    if "snr_shift_scale" in spec:
        r.notes.append(f"CogVideoX divides the SNR of the table by snr_shift_scale = {spec['snr_shift_scale']}: "
                       "abar' = abar / (k + (1 - k) abar); vdm has no schedule clause for it yet")
    _float32_note(r)
    lv = np.append(abar[ts], 1.0 if final == "one" else abar[0])
    return _plan(r, "vp", ts, None, "ddim", spec, opts, lv)


# --- sigma-based samplers on a vp table: Euler, Euler ancestral, Heun, DPM-Solver, UniPC -----------------


def timestep_from_sigma(sigma: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The fractional timestep whose sigma is ``sigma``: log(sigma) interpolated linearly between the
    table's entries (clamped to [0, T-1]), the inverse diffusers and k-diffusion use."""
    log_table = np.log(table)
    with np.errstate(divide="ignore"):
        return np.interp(np.log(sigma), log_table, np.arange(len(table), dtype=np.float64))


def _sigma_table(r: _Read) -> tuple[np.ndarray, np.ndarray, dict]:
    abar, spec = vp_abar(r.cfg)
    if abar[-1] == 0.0:
        abar = abar.copy()
        abar[-1] = ZERO_SNR_ABAR
        r.notes.append("zero terminal SNR: abar_{T-1} = 0 is replaced by 2^-24 so that sigma_max is finite "
                       "(as diffusers does); the first step then sees sigma = 4096 instead of inf")
    _float32_note(r)
    return abar, levels.vp_sigmas(abar), spec


def _final_sigma(r: _Read) -> str:
    final = r.cfg.get("final_sigmas_type", "zero")
    if final not in levels.FINAL_LEVELS:
        raise ValueError(f"config key 'final_sigmas_type': unknown value {final!r}; "
                         f"choose one of {tuple(levels.FINAL_LEVELS)}")
    return final


def _alpha_sigma_from_sigmas(sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spec 14.6 vp: alpha = 1 / sqrt(1 + S^2), sigma = S / sqrt(1 + S^2)."""
    k = np.sqrt(1.0 + sig**2)
    return 1.0 / k, sig / k


def read_euler(r: _Read, sampler: str = "euler") -> SchedulePlan:
    """EulerDiscrete / EulerAncestralDiscrete / HeunDiscrete: sigmas of the vp table at the timesteps
    (linear interpolation for fractional ones), optionally Karras (15.5), then the final level (15.6)."""
    abar, table, spec = _sigma_table(r)
    T, N = spec["T"], r.steps
    if r.cfg["timestep_spacing"] == "linspace":
        if N > T:
            raise ValueError(f"steps = {N} is impossible here: this scheduler needs N <= {T} (T = {T})")
        ts = np.linspace(T - 1, 0, N) if N > 1 else np.array([float(T - 1)])
        r.notes.append("Euler-type schedulers keep linspace timesteps unrounded: the network sees fractional t "
                       "and sigma is interpolated linearly in t (spec 6.3 rounds them for the discrete samplers)")
        if N == 1:
            r.notes.append("one step: diffusers' linspace(0, T - 1, 1) starts at t = 0; the plan starts at T - 1 "
                           "(spec 6.5)")
    else:
        ts = discrete_timesteps(r).astype(np.float64)
    sig = np.interp(ts, np.arange(T, dtype=np.float64), table)
    if r.cfg.get("use_karras_sigmas"):  # config sigma_min / sigma_max replace the table's ends (SVD: 0.002, 700)
        lo = float(sig[-1]) if r.cfg.get("sigma_min") is None else float(r.cfg["sigma_min"])
        hi = float(sig[0]) if r.cfg.get("sigma_max") is None else float(r.cfg["sigma_max"])
        sig = levels.karras_sigmas(N, lo, hi) if N > 1 else np.array([hi])
        ts = timestep_from_sigma(sig, table)
    sig = levels.with_final_level(sig, _final_sigma(r), sigma_min=float(table[0]))
    kind = r.cfg.get("timestep_type", "discrete")
    if kind not in TIMESTEP_TYPES:
        raise ValueError(f"config key 'timestep_type': unknown value {kind!r}; choose one of {TIMESTEP_TYPES}")
    if kind == "continuous" and r.cfg["prediction_type"] == "v_prediction":
        ts = 0.25 * np.log(sig[:-1])  # the network sees EDM's c_noise (spec 14.2), as Stable Video Diffusion does
        r.notes.append("continuous timesteps: the network sees c_noise = ln(sigma) / 4 (spec 14.2)")
    if sampler == "heun":  # two network calls per step but the last: each inner level repeats (spec 17.6)
        ts = np.concatenate([ts[:1], np.repeat(ts[1:], 2)])
        sig = np.concatenate([sig[:1], np.repeat(sig[1:-1], 2), sig[-1:]])
    alpha, sigma = _alpha_sigma_from_sigmas(sig)
    return _plan(r, "vp", ts, sig, sampler, spec, {}, None, alpha, sigma)


def read_euler_ancestral(r: _Read) -> SchedulePlan:
    return read_euler(r, "euler_ancestral")


def read_heun(r: _Read) -> SchedulePlan:
    return read_euler(r, "heun")


MULTISTEP_SAMPLERS = {("dpmsolver++", 2): "dpmpp_2m", ("bh2", 2): "unipc", ("bh1", 2): "unipc"}


def read_multistep_flow(r: _Read) -> SchedulePlan:
    """DPMSolverMultistep / UniPCMultistep with use_flow_sigmas (Wan): N + 1 uniform flow levels, the
    last dropped, shifted once (15.2, or 15.3 with mu); the network sees the integer part of T s."""
    cfg, N = r.cfg, r.steps
    T = _int_key(cfg, "num_train_timesteps", 2)
    dpm = r.name == "DPMSolverMultistepScheduler"
    if cfg["use_karras_sigmas"]:
        raise ValueError("config key 'use_karras_sigmas' = True with use_flow_sigmas is not supported by vdm "
                         "schedule yet")
    if dpm:  # built on alpha = 1 - s and flipped: the grid runs from 1 - 1/T, not from 1
        s = levels.uniform_levels(N + 1, 1.0 - 1.0 / T, 0.0)[:-1]
        r.notes.append("DPM-Solver's flow levels start at 1 - 1/T (a uniform grid on alpha, flipped), not at 1")
    else:
        s = levels.uniform_levels(N + 1, 1.0, 1.0 / T)[:-1]
    if cfg["use_dynamic_shifting"]:
        if r.mu is None:
            raise ValueError("this config uses dynamic shifting: give mu (--mu)")
        s = levels.TIME_SHIFTS["exponential" if dpm else cfg["time_shift_type"]](s, r.mu)
    else:
        s = levels.flow_shift(s, float(cfg["flow_shift"]))
    if not dpm and cfg["shift_terminal"]:
        s = levels.stretch_to_terminal(s, float(cfg["shift_terminal"]))
    if not dpm and abs(s[0] - 1.0) < 1e-6:  # diffusers keeps UniPC's first log(alpha) finite
        s[0] -= 1e-6
        r.notes.append("UniPC starts at s = 1 - 1e-6 instead of 1 (diffusers avoids log(alpha) = -inf there)")
    final = _final_sigma(r)
    if dpm and final != "zero":
        raise ValueError("config key 'final_sigmas_type' = 'sigma_min' with DPM-Solver flow sigmas reads the vp "
                         "table in diffusers; vdm schedule supports 'zero' there")
    sig = levels.with_final_level(s, final)
    r.notes.append("the network sees the integer part of T s (diffusers casts these timesteps to int64; where T s is "
                   "an exact integer its float value may fall just below it, and diffusers then gives one less)")
    r.notes.append(f"multistep schedulers space N + 1 flow levels and drop the last; {r.name} computes them in "
                   "float64 and returns float32 sigmas")
    sampler = "dpmpp_2m" if dpm else "unipc"
    # floor with a 1e-9 margin: T s within 1e-9 below an integer is that integer in exact arithmetic
    ts = np.floor(T * s + 1e-9).astype(np.int64)
    return _plan(r, "flow", ts, sig, sampler, None, {}, None, 1.0 - sig, sig.copy())


def read_multistep(r: _Read) -> SchedulePlan:
    """DPMSolverMultistep / UniPCMultistep: integer timesteps (linspace and leading take N + 1 and drop
    the last, so t = 0 is never visited), sigmas of the vp table, optionally Karras, final level."""
    if r.cfg["use_flow_sigmas"]:
        return read_multistep_flow(r)
    abar, table, spec = _sigma_table(r)
    N = r.steps
    spacing = r.cfg["timestep_spacing"]
    if spacing in ("linspace", "leading"):
        ts = discrete_timesteps(r, N + 1)[:-1]
        r.notes.append(f"multistep schedulers space N + 1 timesteps and drop the last ({spacing}), so t = 0 is never "
                       "visited; the plan does the same")
    else:
        ts = discrete_timesteps(r)
    sig = table[ts]
    if r.cfg.get("use_karras_sigmas"):
        sig = levels.karras_sigmas(N, float(table[0]), float(table[-1])) if N > 1 else table[-1:]
        ts = timestep_from_sigma(sig, table)
        if not (spec["name"] == "cosine" and r.name == "DPMSolverMultistepScheduler"):
            ts = np.round(ts)  # diffusers rounds these (but not for DPM-Solver on squaredcos_cap_v2)
        r.notes.append("Karras levels: timesteps are the log-sigma interpolation of the table (15.5)")
    sig = levels.with_final_level(sig, _final_sigma(r), sigma_min=float(table[0]))
    key = (r.cfg.get("algorithm_type", r.cfg.get("solver_type")), int(r.cfg["solver_order"]))
    sampler = MULTISTEP_SAMPLERS.get(key)
    if sampler is None:
        sampler = "dpmpp_2m" if r.name == "DPMSolverMultistepScheduler" else "unipc"
        r.notes.append(f"{key[0]} of order {key[1]} is not a vdm solver; the nearest is {sampler} (spec 17)")
    if r.cfg.get("lower_order_final"):
        r.notes.append("lower_order_final: diffusers drops to first order on the last steps when N < 15")
    alpha, sigma = _alpha_sigma_from_sigmas(sig)
    ts = ts.astype(np.int64) if ts.dtype.kind == "f" and np.all(ts == np.round(ts)) else ts
    return _plan(r, "vp", ts, sig, sampler, spec, _sampler_options(r) if r.cfg.get("thresholding") else {},
                 None, alpha, sigma)


# --- flow matching and EDM ------------------------------------------------------------------------------------


def read_flow(r: _Read) -> SchedulePlan:
    """FlowMatchEulerDiscrete: spec 15.7 (uniform, one shift, terminal stretch, final 0); the network sees T s."""
    cfg, N = r.cfg, r.steps
    T = _int_key(cfg, "num_train_timesteps", 2)
    for key in ("use_karras_sigmas",):
        if cfg[key]:
            raise ValueError(f"config key {key!r} = {cfg[key]!r} is not supported by vdm schedule yet")
    terminal = cfg["shift_terminal"]
    shift = float(cfg["shift"])
    if cfg["use_dynamic_shifting"]:
        if r.mu is None:
            raise ValueError("this config uses dynamic shifting: give mu (--mu) or the token count (--seq-len)")
        s = levels.flow_levels(N, mu=r.mu, time_shift=cfg["time_shift_type"], terminal=terminal, s_min=1.0 / T)
        r.notes.append(f"resolution-dependent shift mu = {r.mu:.6g} (spec 15.3), applied once")
    else:
        s = levels.flow_levels(N, shift=shift, terminal=terminal, s_min=1.0 / T)
        if shift != 1.0 and N > 1:  # with one step both start (and end) at s = 1
            twice = float(levels.flow_shift(levels.flow_shift(1.0 / T, shift), shift))
            r.notes.append(f"diffusers shifts sigma_min = 1/T when it is built and again in set_timesteps, so its "
                           f"levels are shift(linspace(1, shift(1/T), N)): the last level is {twice:.6g} there and "
                           f"{float(s[-2]) if N > 1 else float(s[0]):.6g} here (spec 15.7: the shift applied once)")
    if cfg["stochastic_sampling"]:
        r.notes.append("stochastic_sampling: diffusers re-noises after each step; vdm's plan is the Euler ODE solve")
    r.notes.append("diffusers computes flow sigmas in float32; these are float64")
    return _plan(r, "flow", T * s[:-1], s, "euler", None, {}, None, 1.0 - s, s.copy(), prediction="flow")


EDM_SCHEDULES = ("karras", "exponential")


def read_edm(r: _Read) -> SchedulePlan:
    """EDMEuler: Karras (15.5) or log-uniform levels from sigma_max to sigma_min, the final level, and
    the network's c_noise = ln(sigma) / 4 (spec 14.2)."""
    cfg, N = r.cfg, r.steps
    lo, hi, rho = float(cfg["sigma_min"]), float(cfg["sigma_max"]), float(cfg["rho"])
    kind = cfg["sigma_schedule"]
    if kind not in EDM_SCHEDULES:
        raise ValueError(f"config key 'sigma_schedule': unknown value {kind!r}; choose one of {EDM_SCHEDULES}")
    if kind == "karras":
        sig = levels.karras_sigmas(N, lo, hi, rho)
    else:
        sig = np.exp(levels.uniform_levels(N, math.log(hi), math.log(lo)))
        if N == 1:
            r.notes.append("one exponential step: diffusers' exp(linspace(log sigma_min, log sigma_max, 1)) starts at "
                           "sigma_min; the plan starts at sigma_max (spec 15.1: N = 1 gives the highest level)")
    sig = levels.with_final_level(sig, _final_sigma(r))
    pred = {"epsilon": "edm", "v_prediction": "edm"}.get(cfg["prediction_type"])
    if pred is None:
        raise ValueError(f"config key 'prediction_type': {cfg['prediction_type']!r}; EDMEuler takes epsilon or "
                         "v_prediction")
    if cfg["prediction_type"] == "v_prediction":
        r.notes.append("EDMEuler's 'v_prediction' is the EDM F target with c_out negated (spec 14.5)")
    else:
        r.notes.append("EDMEuler's 'epsilon' is the EDM F target of spec 14.5, not an eps prediction")
    r.notes.append("diffusers returns timesteps and sigmas in float32; these are float64")
    return _plan(r, "edm", 0.25 * np.log(sig[:-1]), sig, "euler", None, {"sigma_data": float(cfg["sigma_data"])},
                 None, np.ones_like(sig), sig.copy(), prediction=pred)


READERS: dict[str, Callable[[_Read], SchedulePlan]] = {
    "DDPMScheduler": read_ddpm,
    "DDIMScheduler": read_ddim,
    "CogVideoXDDIMScheduler": read_ddim,
    "EulerDiscreteScheduler": read_euler,
    "EulerAncestralDiscreteScheduler": read_euler_ancestral,
    "HeunDiscreteScheduler": read_heun,
    "DPMSolverMultistepScheduler": read_multistep,
    "UniPCMultistepScheduler": read_multistep,
    "FlowMatchEulerDiscreteScheduler": read_flow,
    "EDMEulerScheduler": read_edm,
}


def _plan(r: _Read, family: str, ts: np.ndarray, sig: np.ndarray | None, sampler: str, schedule: dict | None,
          options: dict, abar_levels: np.ndarray | None, alpha: np.ndarray | None = None,
          sigma: np.ndarray | None = None, prediction: str | None = None) -> SchedulePlan:
    if abar_levels is not None:
        alpha, sigma = _vp_alpha_sigma(abar_levels)
    return SchedulePlan(r.name, family, ts, sig, sampler, prediction or _prediction(r), options, schedule,
                        tuple(r.notes), alpha, sigma)


def plan_from_diffusers(config: dict, steps: int, *, mu: float | None = None,
                        seq_len: int | None = None) -> SchedulePlan:
    """Read a diffusers scheduler config (the dict of ``scheduler_config.json``, ``_class_name`` naming
    the class) as the vdm plan for ``steps`` sampling steps.

    ``mu`` (or ``seq_len``, the transformer's token count, turned into mu by spec 15.3 with the
    config's base/max values) is needed by flow configs with ``use_dynamic_shifting``.
    Raises ValueError naming the problem: an unknown class or key, a value vdm does not model, an
    impossible step count.
    """
    if not isinstance(config, dict):
        raise TypeError(f"argument 'config' must be a dict (a parsed scheduler_config.json), got {type(config)}")
    name = config.get("_class_name")
    if name not in READERS:
        raise ValueError(f"unknown scheduler class {name!r} (config key '_class_name'); vdm reads {tuple(READERS)}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"argument 'steps' must be an integer >= 1, got {steps!r}")
    known = DEFAULTS[name]
    extra = set(config) - set(known) - set(META_KEYS)
    unknown = sorted(extra - FOREIGN_KEYS)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} for {name}; it takes {sorted(known)}")
    cfg = {**known, **{k: v for k, v in config.items() if k in known}}
    for key, only in UNSUPPORTED.items():
        if key in known and key not in _OWN_KEYS.get(name, ()) and cfg[key] != only and cfg[key] is not only:
            raise ValueError(f"config key {key!r} = {cfg[key]!r} is not supported by vdm schedule yet "
                             f"(only {only!r})")
    if seq_len is not None and mu is None and cfg.get("use_dynamic_shifting"):
        mu = levels.dynamic_shift_mu(seq_len, cfg["base_image_seq_len"], cfg["max_image_seq_len"],
                                     cfg["base_shift"], cfg["max_shift"])
    read = _Read(name, cfg, int(steps), mu)
    if extra:
        read.notes.append(f"ignored {sorted(extra)}: keys of other diffusers schedulers, which {name} ignores too")
    return READERS[name](read)
