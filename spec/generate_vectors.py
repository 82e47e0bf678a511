"""Generate the golden vectors of spec section 10 from the float64 reference (vdm_ref).

    python spec/generate_vectors.py           # (re)write spec/vectors/
    python spec/generate_vectors.py --check   # compare only; exit 1 listing differing files
    python spec/generate_vectors.py --out DIR # write into another directory

Output is byte-identical across runs: fixed seeds, JSON with a fixed layout, .npz archives
written by hand with fixed zip metadata (np.savez stamps entries with the current time), and
NumPy's CPU-specific SIMD kernels switched off (see _pin_numpy_kernels).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from vdm.backends.conformance.protocol import OUTPUT_NAMES as RETURN_NAMES
from vdm.backends.files import atomic_write_bytes

import vdm_ref

SPEC_DIR = Path(__file__).resolve().parent
VECTOR_DIR = SPEC_DIR / "vectors"
GENERATOR = "spec/generate_vectors.py"
SEED = 20240601
# Any fixed date works; 1980-01-01 is the earliest a zip header can hold.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_PINNED_ENV = "VDM_VECTORS_PINNED"

# Output names (spec 10.3): the kit's names of multi-output ops, plus "result" where an input is
# already called "out" (the model output), since inputs and outputs share the "<k>/<name>" key space.
OUTPUT_NAMES: dict[str, tuple[str, ...]] = RETURN_NAMES | {
    op: ("result",) for op in ("ddpm_step", "ddim_step", "vlb_term", "hybrid_loss")}

# Shapes (B, C, F, H, W): the usual small video, and batch 1 with a single frame.
X = (2, 1, 3, 4, 4)
X1 = (1, 2, 1, 3, 3)


# --- calling convention (spec 10) --------------------------------------------------------------


def build_schedule(spec: dict[str, Any]) -> vdm_ref.Schedule:
    return vdm_ref.make_schedule(spec["name"], spec["T"], zero_terminal_snr=spec["zero_terminal_snr"],
                                 **spec["params"])


def build_model(spec: dict[str, Any], sched: vdm_ref.Schedule, arrays: dict[str, np.ndarray]) -> vdm_ref.ideal.Model:
    """Spec 7.6.1: a case's "model" parameter names one of the closed-form ideal denoisers."""
    if spec["kind"] == "gaussian_ideal":
        return vdm_ref.gaussian_ideal_model(sched, spec["mu"], spec["var"], spec["prediction"])
    if spec["kind"] == "points_ideal":
        return vdm_ref.points_ideal_model(sched, arrays["points"], spec["prediction"])
    raise ValueError(f"unknown model kind {spec['kind']!r}")


def build_level_denoiser(spec: dict[str, Any], alphas: np.ndarray, sigmas: np.ndarray,
                         points: np.ndarray | None) -> Any:
    """Spec 10.3 / 17.2: a solve case's "model" names the 14.8 x0 model m; denoise(x, i) = m(x, alpha_i, sigma_i)."""
    if spec["kind"] == "gaussian_level":
        m = vdm_ref.process_gaussian_ideal_model(spec["mu"], spec["var"], "x0")
    elif spec["kind"] == "points_level":
        m = vdm_ref.process_points_ideal_model(points, "x0")
    else:
        raise ValueError(f"unknown denoiser kind {spec['kind']!r}")
    return lambda x, i: m(x, np.full(x.shape[0], alphas[i]), np.full(x.shape[0], sigmas[i]))


def call_case(op: str, case: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Evaluate one case with vdm_ref; ``arrays`` maps input names to arrays."""
    kwargs: dict[str, Any] = {**{k: arrays[k] for k in case["inputs"]}, **case["params"]}
    if case["schedule"] is not None:
        kwargs["sched"] = build_schedule(case["schedule"])
    if op == "sample":
        kwargs["model"] = build_model(kwargs["model"], kwargs["sched"], arrays)
        kwargs.pop("points", None)  # an input of the model, not of sample()
    if op == "solve":
        kwargs["denoise"] = build_level_denoiser(kwargs.pop("model"), kwargs["alphas"], kwargs["sigmas"],
                                                 kwargs.pop("points", None))
    result = getattr(vdm_ref, op)(**kwargs)
    if op == "make_schedule":
        return dict(result.tables())
    names = OUTPUT_NAMES.get(op, ("out",))
    values = result if len(names) > 1 else (result,)
    return dict(zip(names, values, strict=True))


# --- case construction -------------------------------------------------------------------------


def sched_spec(name: str, T: int, zero_terminal_snr: bool = False, **params: float) -> dict[str, Any]:
    return {"name": name, "T": T, "params": dict(params), "zero_terminal_snr": zero_terminal_snr}


LIN10 = sched_spec("linear", 10)
LIN10_Z = sched_spec("linear", 10, True)
COS10_Z = sched_spec("cosine", 10, True)
SCL1000 = sched_spec("scaled_linear", 1000)
SIG20 = sched_spec("sigmoid", 20, beta_start=0.001, beta_end=0.05, sigmoid_range=4.0)
COS50_CLIP = sched_spec("cosine", 50, max_beta=0.5)


class Op:
    """Cases of one op: each add() records the schedule, parameters and named input arrays."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rng = np.random.default_rng([SEED, zlib.crc32(name.encode())])
        self.cases: list[tuple[dict | None, dict, dict[str, np.ndarray]]] = []

    def add(self, schedule: dict | None, params: dict | None = None, **inputs: Any) -> None:
        self.cases.append((schedule, params or {}, {k: _canonical(v) for k, v in inputs.items()}))

    def normal(self, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
        return scale * self.rng.standard_normal(shape)

    def uniform(self, shape: tuple[int, ...], lo: float, hi: float) -> np.ndarray:
        return self.rng.uniform(lo, hi, shape)

    def pixels(self, shape: tuple[int, ...]) -> np.ndarray:
        """8-bit data mapped to [-1, 1] (spec 8.4), with both edge bins always present."""
        k = self.rng.integers(0, 256, shape)
        k.flat[0], k.flat[-1] = 0, 255
        return k / 127.5 - 1.0


def _canonical(a: Any) -> np.ndarray:
    """Little-endian float64 / int64, C order: the only dtypes a vector file holds."""
    arr = np.asarray(a)
    dtype = "<i8" if arr.dtype.kind in "iub" else "<f8"
    return np.array(arr, dtype=dtype, order="C")  # not ascontiguousarray: that turns 0-d into 1-d


def ts(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def cases_make_schedule(o: Op) -> None:
    for name in vdm_ref.SCHEDULES:
        o.add(None, {"name": name, "T": 1000, "zero_terminal_snr": False})
    o.add(None, {"name": "linear", "T": 1000, "zero_terminal_snr": True})
    o.add(None, {"name": "scaled_linear", "T": 1000, "zero_terminal_snr": True})
    o.add(None, {"name": "cosine", "T": 10, "zero_terminal_snr": True})
    o.add(None, {"name": "sigmoid", "T": 10, "zero_terminal_snr": True})
    o.add(None, {"name": "linear", "T": 10, "zero_terminal_snr": False, "beta_start": 0.001, "beta_end": 0.05})
    o.add(None, {"name": "cosine", "T": 50, "zero_terminal_snr": False, "s": 0.02, "max_beta": 0.5})
    o.add(None, {"name": "sigmoid", "T": 10, "zero_terminal_snr": False, "sigmoid_range": 3.0})
    o.add(None, {"name": "scaled_linear", "T": 2, "zero_terminal_snr": False})


def cases_inference_timesteps(o: Op) -> None:
    for T, N, spacing, offset in [
        (1000, 50, "leading", 0), (1000, 50, "leading", 1), (1000, 13, "leading", 10), (10, 3, "leading", 3),
        (10, 1, "leading", 0), (10, 1, "leading", 9), (10, 10, "leading", 0),
        (1000, 13, "trailing", 0), (1000, 50, "trailing", 0), (10, 10, "trailing", 0), (10, 1, "trailing", 0),
        (7, 3, "trailing", 0), (1000, 48, "trailing", 0), (1000, 61, "trailing", 0),  # 6.5: a float tie, a float count
        (1000, 13, "linspace", 0), (1000, 50, "linspace", 0), (1000, 1, "linspace", 0), (10, 10, "linspace", 0),
        (7, 4, "linspace", 0), (2, 2, "linspace", 0),
        (1000, 7, "linspace", 0), (10, 3, "linspace", 0),  # 6.5: exact ties go to even
    ]:
        o.add(None, {"T": T, "N": N, "spacing": spacing, "offset": offset})


def cases_forward(o: Op, first: str, second: str) -> None:
    """Ops f(sched, first, t, second): q_sample, velocity and the 4.x conversions."""
    eps_like = o.name == "x0_from_eps"  # undefined at abar = 0, so no zero-SNR terminal step
    o.add(LIN10, **{first: o.normal(X), "t": ts(0, 9), second: o.normal(X)})
    o.add(SIG20, **{first: o.normal(X), "t": ts(19, 7), second: o.normal(X)})
    o.add(SCL1000, {"t": 999}, **{first: o.normal(X1), second: o.normal(X1)})
    o.add(COS10_Z, **{first: o.normal(X), "t": ts(8, 0) if eps_like else ts(9, 4), second: o.normal(X)})
    o.add(LIN10_Z, {"t": 5}, **{first: o.normal(X1), second: o.normal(X1)})


def cases_q_mean_variance(o: Op) -> None:
    o.add(LIN10, x0=o.normal(X), t=ts(0, 9))
    o.add(COS10_Z, x0=o.normal(X), t=ts(9, 3))
    o.add(SCL1000, {"t": 500}, x0=o.normal(X1))


def cases_v_from_x0_eps(o: Op) -> None:
    o.add(LIN10, t=ts(0, 9), x0=o.normal(X), eps=o.normal(X))
    o.add(COS10_Z, t=ts(9, 2), x0=o.normal(X), eps=o.normal(X))
    o.add(SCL1000, {"t": 250}, x0=o.normal(X1), eps=o.normal(X1))


def cases_predict_x0_eps(o: Op) -> None:
    for prediction in vdm_ref.PREDICTIONS:
        o.add(LIN10, {"prediction": prediction}, x_t=o.normal(X), t=ts(0, 9), pred=o.normal(X))
        o.add(SCL1000, {"prediction": prediction, "t": 999}, x_t=o.normal(X1), pred=o.normal(X1))
    for prediction in ("x0", "v"):  # abar = 0 at t = T-1: defined for x0 and v only
        o.add(COS10_Z, {"prediction": prediction}, x_t=o.normal(X), t=ts(9, 1), pred=o.normal(X))


# (s, t) pairs: s = -1 (last step), s = t - 1 (full schedule), strided, and mixed in one batch.
PAIRS_10 = (ts(-1, -1, 0, 3, 8, -1), ts(0, 9, 1, 9, 9, 4))


def cases_pair_tables(o: Op) -> None:
    """Ops f(sched, s, t): effective_beta, posterior_variance, posterior_log_variance_clipped."""
    for sched in (LIN10, COS10_Z, LIN10_Z):
        o.add(sched, s=PAIRS_10[0], t=PAIRS_10[1])
    o.add(SCL1000, s=ts(-1, 899, 979, 0), t=ts(0, 999, 999, 76))
    o.add(SIG20, {"s": -1, "t": 0})
    o.add(COS50_CLIP, {"s": 46, "t": 49})


def cases_posterior_mean(o: Op) -> None:
    o.add(LIN10, x0=o.normal(X), x_t=o.normal(X), s=ts(-1, 3), t=ts(0, 9))
    o.add(COS10_Z, x0=o.normal(X), x_t=o.normal(X), s=ts(8, 5), t=ts(9, 6))
    o.add(SCL1000, {"s": 922, "t": 999}, x0=o.normal(X1), x_t=o.normal(X1))
    o.add(SIG20, {"s": -1, "t": 4}, x0=o.normal(X1), x_t=o.normal(X1))


def cases_model_log_variance(o: Op) -> None:
    s, t = PAIRS_10
    for sched in (LIN10, COS10_Z):
        o.add(sched, {"variance": "fixed_small"}, s=s, t=t)
        o.add(sched, {"variance": "fixed_large"}, s=s, t=t)
    # Values outside [-1, 1] too: the spec does not clamp them.
    shape = (len(s), 1, 2, 2, 2)
    o.add(LIN10, {"variance": "learned_range"}, s=s, t=t, var_values=o.uniform(shape, -1.5, 1.5))
    o.add(COS10_Z, {"variance": "learned_range"}, s=s, t=t, var_values=o.uniform(shape, -1.0, 1.0))
    o.add(SCL1000, {"variance": "learned_range", "s": -1, "t": 0}, var_values=o.uniform(X1, -1.0, 1.0))


def cases_clip_x0(o: Op) -> None:
    o.add(None, {"limit": 1.0}, x0=o.normal(X, 2.0))
    o.add(None, {"limit": 0.5}, x0=o.normal(X1))


def _frames_of_different_range(o: Op) -> np.ndarray:
    """Frame f of each sample is scaled by (f + 1): a per-frame quantile gives another answer."""
    x = o.normal(X)
    return x * np.arange(1, X[2] + 1).reshape(1, 1, -1, 1, 1)


def cases_dynamic_threshold(o: Op) -> None:
    o.add(None, {"quantile": 0.995, "floor": 1.0}, x0=o.normal(X, 2.0))
    o.add(None, {"quantile": 0.9, "floor": 1.0}, x0=_frames_of_different_range(o))
    o.add(None, {"quantile": 0.995, "floor": 1.0}, x0=o.uniform(X, -0.9, 0.9))  # floor 1: unchanged
    o.add(None, {"quantile": 0.8, "floor": 1.5}, x0=o.normal(X1, 3.0))
    o.add(None, {"quantile": 1.0, "floor": 1.0}, x0=o.normal(X1, 3.0))


def _add_step_case(o: Op, sched: dict, params: dict, shape: tuple[int, ...], t: Any, s: Any,
                   out_channels: int, var_values_uniform: bool) -> None:
    """One sampler-step case: x_t, noise and a C- or 2C-channel model output; scalar t/s become
    params, per-sample ones inputs. DDPM draws the variance channels in [-1, 1] (learned_range)."""
    inputs: dict[str, Any] = {"x_t": o.normal(shape), "noise": o.normal(shape)}
    out_shape = (shape[0], shape[1] * out_channels, *shape[2:])
    if out_channels == 2 and var_values_uniform:
        inputs["out"] = np.concatenate([o.normal(shape), o.uniform(shape, -1.0, 1.0)], axis=1)
    else:
        inputs["out"] = o.normal(out_shape)
    params = dict(params)
    for key, value in (("t", t), ("s", s)):
        if isinstance(value, int):
            params[key] = value
        else:
            inputs[key] = value
    o.add(sched, params, **inputs)


def cases_ddpm_step(o: Op) -> None:
    def add(sched: dict, params: dict, shape: tuple[int, ...], t: Any, s: Any, out_channels: int = 1) -> None:
        _add_step_case(o, sched, params, shape, t, s, out_channels, var_values_uniform=True)

    for prediction in vdm_ref.PREDICTIONS:
        for variance in ("fixed_small", "fixed_large"):
            add(LIN10, {"prediction": prediction, "variance": variance}, X, ts(9, 5), ts(8, 2))
        add(LIN10, {"prediction": prediction, "variance": "learned_range"}, X, ts(9, 5), ts(8, 2), 2)
    for variance in vdm_ref.VARIANCES:  # s = -1 everywhere: no noise is added
        add(LIN10, {"prediction": "eps", "variance": variance}, X, ts(0, 3), ts(-1, -1), 2)
    add(LIN10, {"prediction": "eps", "variance": "fixed_small"}, X, ts(1, 6), ts(-1, 2))  # mixed batch
    add(SCL1000, {"prediction": "eps", "variance": "fixed_large"}, X1, 999, 922)  # strided, scalar t
    add(COS10_Z, {"prediction": "v", "variance": "fixed_small"}, X, ts(9, 9), ts(5, 8))  # abar_t = 0
    add(COS10_Z, {"prediction": "x0", "variance": "learned_range"}, X, ts(9, 2), ts(0, -1), 2)
    add(LIN10, {"prediction": "x0", "variance": "fixed_small", "clip": 1.0}, X, ts(9, 4), ts(6, 1))
    add(LIN10, {"prediction": "eps", "variance": "fixed_small", "threshold": 0.995}, X, ts(9, 4), ts(6, 1))
    add(SIG20, {"prediction": "v", "variance": "fixed_large", "clip": 0.8, "threshold": 0.9}, X1, 15, 3)


def cases_ddim_step(o: Op) -> None:
    def add(sched: dict, params: dict, shape: tuple[int, ...], t: Any, s: Any, out_channels: int = 1) -> None:
        _add_step_case(o, sched, params, shape, t, s, out_channels, var_values_uniform=False)

    for prediction in vdm_ref.PREDICTIONS:
        for eta in (0.0, 0.5, 1.0):
            add(LIN10, {"prediction": prediction, "eta": eta}, X, ts(9, 5), ts(3, -1))
    add(LIN10, {"prediction": "eps", "eta": 0.0}, X, ts(9, 5), ts(3, 4), 2)  # variance channels ignored
    add(SCL1000, {"prediction": "eps", "eta": 0.0}, X1, 999, 922)
    add(SCL1000, {"prediction": "v", "eta": 1.0}, X1, 76, -1)
    add(COS10_Z, {"prediction": "v", "eta": 0.0}, X, ts(9, 9), ts(6, -1))  # abar_t = 0
    add(COS10_Z, {"prediction": "x0", "eta": 1.0}, X, ts(9, 3), ts(4, 2))
    # Clipped / thresholded x0: eps is re-derived from it (spec 7.4).
    add(LIN10, {"prediction": "eps", "eta": 0.0, "clip": 1.0}, X, ts(9, 4), ts(6, 1))
    add(LIN10, {"prediction": "v", "eta": 0.5, "threshold": 0.995}, X, ts(9, 4), ts(6, 1))
    add(SIG20, {"prediction": "eps", "eta": 0.0, "clip": 0.8, "threshold": 0.9}, X1, 15, 3)
    # eta = 1 at abar_t = 0: the eps coefficient is exactly 0 in 7.4's form; evaluated as
    # 1 - abar_s - sigma^2 (sigma squared after its square roots) it is ~1e-8 at s = 6 (forbidden).
    add(COS10_Z, {"prediction": "v", "eta": 1.0}, X, ts(9, 9), ts(6, 7))


def cases_classifier_free_guidance(o: Op) -> None:
    for scale in (7.5, 1.0, 0.0, -0.5):
        o.add(None, {"scale": scale}, out_cond=o.normal(X), out_uncond=o.normal(X))
    wide = (2, 4, 2, 3, 3)  # 2C channels with C = 2: the variance half comes from out_cond
    o.add(None, {"scale": 3.0, "channels": 2}, out_cond=o.normal(wide), out_uncond=o.normal(wide))
    o.add(None, {"scale": 5.0, "channels": 1}, out_cond=o.normal(X1), out_uncond=o.normal(X1))


def cases_sample(o: Op) -> None:
    shape = (2, 1, 2, 3, 3)
    points = np.stack([np.full(shape[1:], -0.6), np.full(shape[1:], 0.5),
                       np.linspace(-1.0, 1.0, int(np.prod(shape[1:]))).reshape(shape[1:])])

    def add(sched: dict, steps: tuple[int, int, str, int], model: dict, **params: Any) -> None:
        T, N, spacing, offset = steps
        timesteps = vdm_ref.inference_timesteps(T, N, spacing, offset)
        inputs: dict[str, Any] = {"timesteps": timesteps, "noise": o.normal((N + 1, *shape))}
        if model["kind"] == "points_ideal":
            inputs["points"] = points
        # sample() reads the model's output as the model's own parameterisation.
        params = {"model": model, "shape": list(shape), "prediction": model["prediction"], **params}
        o.add(sched, params, **inputs)

    def gauss(prediction: str) -> dict:
        return {"kind": "gaussian_ideal", "mu": 0.3, "var": 0.25, "prediction": prediction}

    def pts(prediction: str) -> dict:
        return {"kind": "points_ideal", "prediction": prediction}

    add(LIN10, (10, 5, "trailing", 0), gauss("eps"), sampler="ddim", eta=0.0)
    add(COS10_Z, (10, 10, "trailing", 0), gauss("v"), sampler="ddpm", variance="fixed_small")
    add(SCL1000, (1000, 13, "trailing", 0), gauss("x0"), sampler="ddim", eta=1.0, clip=1.0)
    add(SCL1000, (1000, 1, "trailing", 0), gauss("eps"), sampler="ddim", eta=0.0)
    add(LIN10, (10, 4, "linspace", 0), pts("eps"), sampler="ddpm", variance="fixed_large", threshold=0.995)
    add(SIG20, (20, 5, "leading", 1), pts("v"), sampler="ddim", eta=0.0)
    add(COS10_Z, (10, 6, "linspace", 0), pts("x0"), sampler="ddpm", variance="fixed_small")
    add(SCL1000, (1000, 8, "leading", 0), pts("eps"), sampler="ddim", eta=0.5)
    # Zero terminal SNR, eta = 1: the first step 9 -> 6 starts at abar_t = 0 (see ddim_step).
    add(COS10_Z, (10, 3, "trailing", 0), gauss("v"), sampler="ddim", eta=1.0)


def cases_training_target(o: Op) -> None:
    for prediction in vdm_ref.PREDICTIONS:
        o.add(LIN10, {"prediction": prediction}, x0=o.normal(X), t=ts(0, 9), noise=o.normal(X))
    o.add(COS10_Z, {"prediction": "v"}, x0=o.normal(X), t=ts(9, 4), noise=o.normal(X))
    o.add(SCL1000, {"prediction": "v", "t": 600}, x0=o.normal(X1), noise=o.normal(X1))


def cases_simple_loss(o: Op) -> None:
    for prediction in vdm_ref.PREDICTIONS:
        for gamma in (None, 5.0):
            o.add(LIN10, {"prediction": prediction, "min_snr_gamma": gamma},
                  x0=o.normal(X), t=ts(0, 9), noise=o.normal(X), pred=o.normal(X))
    # Zero terminal SNR: SNR = 0 at t = 9, where the eps weight min(1, gamma/SNR) is 1.
    for prediction in vdm_ref.PREDICTIONS:
        o.add(COS10_Z, {"prediction": prediction, "min_snr_gamma": 1.0},
              x0=o.normal(X), t=ts(9, 1), noise=o.normal(X), pred=o.normal(X))
    o.add(SCL1000, {"prediction": "v", "min_snr_gamma": 5.0, "t": 10}, x0=o.normal(X1), noise=o.normal(X1),
          pred=o.normal(X1))


def cases_min_snr_weight(o: Op) -> None:
    for prediction in vdm_ref.PREDICTIONS:
        o.add(LIN10, {"prediction": prediction, "gamma": 5.0}, t=np.arange(10))
        o.add(COS10_Z, {"prediction": prediction, "gamma": 1.0}, t=np.arange(10))
    o.add(SCL1000, {"prediction": "v", "gamma": 5.0, "t": 10})


def cases_normal_kl(o: Op) -> None:
    m, lv = o.normal(X), o.normal(X)
    o.add(None, mean1=m, logvar1=lv, mean2=m, logvar2=lv)  # KL of equal Gaussians: 0
    o.add(None, mean1=o.normal(X), logvar1=o.normal(X), mean2=o.normal(X), logvar2=o.normal(X))
    o.add(None, mean1=o.normal(X1, 3.0), logvar1=o.uniform(X1, -8.0, 0.0), mean2=o.normal(X1),
          logvar2=o.uniform(X1, -8.0, 0.0))


def cases_discretized_gaussian_log_likelihood(o: Op) -> None:
    x = o.pixels(X)
    o.add(None, x=x, mean=x + o.normal(X, 0.05), log_scale=o.uniform(X, -5.0, -1.0))
    x = o.pixels(X)
    o.add(None, x=x, mean=o.uniform(X, -1.2, 1.2), log_scale=o.uniform(X, -3.0, 1.0))
    # Tiny scales far from the mean: every probability hits the 1e-12 floor.
    x = o.pixels(X1)
    o.add(None, x=x, mean=np.where(x > 0, -1.0, 1.0), log_scale=np.full(X1, -6.0))
    # Every bin of the 8-bit range once, against one mean and scale.
    grid = (np.arange(256) / 127.5 - 1.0).reshape(2, 2, 4, 4, 4)
    o.add(None, x=grid, mean=np.full(grid.shape, 0.1), log_scale=np.full(grid.shape, -1.5))


def _pixels_and_out(o: Op, shape: tuple[int, ...], wide: bool) -> dict[str, np.ndarray]:
    out_shape = (shape[0], shape[1] * (2 if wide else 1), *shape[2:])
    out = o.normal(out_shape)
    if wide:
        out[:, shape[1]:] = o.uniform(shape, -1.0, 1.0)
    return {"x0": o.pixels(shape), "out": out}


def cases_vlb_term(o: Op) -> None:
    for prediction in vdm_ref.PREDICTIONS:
        d = _pixels_and_out(o, X, True)
        o.add(LIN10, {"prediction": prediction, "variance": "learned_range"}, x_t=o.normal(X), t=ts(0, 6), **d)
    d = _pixels_and_out(o, X, False)
    o.add(LIN10, {"prediction": "eps", "variance": "fixed_small"}, x_t=o.normal(X), t=ts(3, 0), **d)
    d = _pixels_and_out(o, X, False)
    o.add(COS10_Z, {"prediction": "v", "variance": "fixed_large"}, x_t=o.normal(X), t=ts(9, 0), **d)
    d = _pixels_and_out(o, X1, True)
    o.add(SCL1000, {"prediction": "eps", "variance": "learned_range", "t": 0}, x_t=o.normal(X1), **d)
    d = _pixels_and_out(o, X1, True)
    o.add(SCL1000, {"prediction": "eps", "variance": "learned_range", "t": 500}, x_t=o.normal(X1), **d)


def cases_hybrid_loss(o: Op) -> None:
    for prediction in vdm_ref.PREDICTIONS:
        d = _pixels_and_out(o, X, True)
        o.add(LIN10, {"prediction": prediction}, t=ts(0, 7), noise=o.normal(X), **d)
    d = _pixels_and_out(o, X, True)
    o.add(COS10_Z, {"prediction": "v", "lam": 0.01, "min_snr_gamma": 5.0}, t=ts(9, 2), noise=o.normal(X), **d)
    d = _pixels_and_out(o, X1, True)
    o.add(SCL1000, {"prediction": "eps", "t": 321}, noise=o.normal(X1), **d)


# Spec 14 / 16 levels, one (alpha, sigma) per sample of a batch of 4: interior levels of each
# family, and the two ends (sigma = 0, alpha = 0) where the op is defined there.
_ZTS = vdm_ref.make_schedule("cosine", 1000, zero_terminal_snr=True)
_S_ENDS, _S_IN = np.array([1.0, 0.75, 0.3, 0.0]), np.array([0.9, 0.5, 0.1, 0.02])
_EDM4 = np.array([80.0, 5.0, 0.5, 0.002])
LEVELS_IN = {
    "flow": (1.0 - _S_IN, _S_IN),
    "edm": (np.ones(4), _EDM4),
    "vp": tuple(np.asarray(v) for v in vdm_ref.alpha_sigma("vp", ts(900, 600, 300, 0), sched=_ZTS)),
}
LEVELS_ENDS = {
    "flow": (1.0 - _S_ENDS, _S_ENDS),  # s = 1 (alpha = 0) and s = 0 (sigma = 0)
    "vp": tuple(np.asarray(v) for v in vdm_ref.alpha_sigma("vp", ts(999, 500, 0, -1), sched=_ZTS)),
}
X4 = (4, 1, 2, 3, 3)


def _ends_defined(prediction: str) -> bool:
    return prediction not in ("eps", "x0")  # 14.4: eps needs alpha > 0, x0 needs sigma > 0


def cases_to_x0_eps(o: Op) -> None:
    for prediction in vdm_ref.PREDICTION_TYPES:
        sets = [*LEVELS_IN.values(), *(LEVELS_ENDS.values() if _ends_defined(prediction) else ())]
        for alpha, sigma in sets:
            o.add(None, {"prediction": prediction}, x=o.normal(X4), alpha=alpha, sigma=sigma, out=o.normal(X4))
        o.add(None, {"prediction": prediction, "alpha": 0.6, "sigma": 0.8}, x=o.normal(X1), out=o.normal(X1))
    alpha, sigma = LEVELS_IN["edm"]
    o.add(None, {"prediction": "edm", "sigma_data": 1.0}, x=o.normal(X4), alpha=alpha, sigma=sigma, out=o.normal(X4))


def cases_from_x0_eps(o: Op) -> None:
    for prediction in vdm_ref.PREDICTION_TYPES:
        for alpha, sigma in (*LEVELS_IN.values(), *LEVELS_ENDS.values()):
            o.add(None, {"prediction": prediction}, x0=o.normal(X4), eps=o.normal(X4), alpha=alpha, sigma=sigma)
        o.add(None, {"prediction": prediction, "alpha": 1.0, "sigma": 2.5}, x0=o.normal(X1), eps=o.normal(X1))
    alpha, sigma = LEVELS_IN["vp"]
    o.add(None, {"prediction": "edm", "sigma_data": 0.25}, x0=o.normal(X4), eps=o.normal(X4), alpha=alpha,
          sigma=sigma)


def cases_edm_preconditioning(o: Op) -> None:
    for prediction in vdm_ref.PREDICTION_TYPES:
        for sd in (0.5, 1.0):
            o.add(None, {"prediction": prediction, "sigma_data": sd}, sigma=np.array([0.002, 0.5, 1.0, 80.0]))
    o.add(None, {"sigma": 0.7})


def cases_alpha_sigma(o: Op) -> None:
    o.add(None, {"family": "flow"}, level=np.array([0.0, 0.25, 0.6, 1.0]))
    o.add(None, {"family": "flow", "level": 0.5})
    o.add(None, {"family": "edm"}, level=np.array([0.0, 0.002, 1.0, 80.0]))


def cases_network_condition(o: Op) -> None:
    o.add(None, {"family": "vp"}, level=ts(0, 5, 999))
    o.add(None, {"family": "flow"}, level=np.array([0.0, 0.25, 0.6, 1.0]))
    o.add(None, {"family": "edm"}, level=np.array([0.002, 0.5, 1.0, 80.0]))
    o.add(None, {"family": "edm", "level": 3.0, "sigma_data": 1.0})


def cases_alpha_sigma_from_edm_sigma(o: Op) -> None:
    for family in ("vp", "flow"):
        o.add(None, {"family": family}, sigma_edm=np.array([0.0, 0.5, 1.0, 80.0, np.inf]))
    o.add(None, {"family": "edm"}, sigma_edm=np.array([0.0, 0.5, 80.0]))


def cases_flow_shift(o: Op) -> None:
    """Spec 15.2: the identity, shifts above and below 1, both fixed ends and levels near s_min."""
    s = np.array([0.0, 1e-3, 0.02, 0.25, 0.5, 0.9, 0.999, 1.0])
    for shift in (1.0, 3.0, 0.5, 7.0, 9.0):
        o.add(None, {"shift": shift}, s=s)
    o.add(None, {"shift": 2.5}, s=o.uniform((6,), 0.0, 1.0))


def cases_vp_sigmas(o: Op) -> None:
    """Spec 15.8: a cosine table at trailing timesteps, a zero-terminal-SNR table (inf) and abar = 1."""
    cos, zts = vdm_ref.make_schedule("cosine", 1000), vdm_ref.make_schedule("linear", 1000, zero_terminal_snr=True)
    steps = vdm_ref.inference_timesteps(1000, 10, "trailing")
    o.add(None, {}, abar=cos.abar_at(steps))
    o.add(None, {}, abar=zts.abar_at(steps))
    o.add(None, {}, abar=np.array([1.0, 0.5, 1e-4]))


def cases_karras_sigmas(o: Op) -> None:
    """Spec 15.5: defaults (80 .. 0.002, rho 7), N = 1 and 2, another range, rho = 1 (uniform in sigma)."""
    for n in (1, 2, 10, 40):
        o.add(None, {"N": n})
    o.add(None, {"N": 25, "sigma_min": 0.0292, "sigma_max": 14.6146})
    o.add(None, {"N": 7, "sigma_min": 0.5, "sigma_max": 20.0, "rho": 1.0})
    o.add(None, {"N": 12, "sigma_min": 0.1, "sigma_max": 10.0, "rho": 3.0})


def cases_with_final_level(o: Op) -> None:
    """Spec 15.6: both finals, with the default sigma_min (the last level), an explicit one and zero."""
    karras, flow = vdm_ref.karras_sigmas(10), vdm_ref.uniform_levels(6, 1.0, 1e-3)
    for final in vdm_ref.FINAL_LEVELS:
        o.add(None, {"final": final}, levels=karras)
        o.add(None, {"final": final}, levels=np.array([1.0]))
    o.add(None, {"final": "sigma_min", "sigma_min": 0.002}, levels=vdm_ref.karras_sigmas(5, sigma_min=0.03))
    o.add(None, {"final": "sigma_min", "sigma_min": 0.0}, levels=flow)
    o.add(None, {"final": "zero", "sigma_min": 5e-4}, levels=flow)
    o.add(None, {"final": "zero"}, levels=np.sort(o.uniform((7,), 0.05, 3.0))[::-1].copy())


def cases_flow_levels(o: Op) -> None:
    """Spec 15.7: uniform; one static shift (where a second one shows most: many steps, near s_min);
    the resolution-dependent shift of both kinds; the terminal stretch with and without a shift;
    N = 1 and 2; other endpoints; the final level sigma_min."""
    for params in (
        {"N": 1}, {"N": 2}, {"N": 28}, {"N": 1, "shift": 3.0}, {"N": 50, "shift": 3.0}, {"N": 30, "shift": 5.0},
        {"N": 10, "shift": 0.5},
        {"N": 20, "mu": vdm_ref.dynamic_shift_mu(4096)}, {"N": 20, "mu": vdm_ref.dynamic_shift_mu(32760)},
        {"N": 12, "mu": -0.4}, {"N": 15, "mu": 1.5, "time_shift": "linear"},
        {"N": 28, "shift": 3.0, "terminal": 0.1}, {"N": 8, "mu": 0.8, "terminal": 0.02}, {"N": 2, "terminal": 0.0},
        {"N": 10, "shift": 7.0, "s_min": 0.02}, {"N": 9, "s_min": 0.05, "s_max": 0.9},
        {"N": 10, "shift": 3.0, "final": "sigma_min"},
    ):
        o.add(None, params)


_U = np.array([0.0, 0.001, 0.3, 0.5, 0.9, 0.999])


def cases_flow_level_from_uniform(o: Op) -> None:
    o.add(None, {"density": "uniform"}, u=_U)
    o.add(None, {"density": "uniform", "shift": 3.0}, u=_U)
    o.add(None, {"density": "logit_normal"}, u=_U)
    o.add(None, {"density": "logit_normal", "m": 0.5, "s": 0.6, "shift": 1.5}, u=_U)
    o.add(None, {"density": "mode"}, u=_U)
    o.add(None, {"density": "mode", "scale": -0.5, "shift": 0.5}, u=o.uniform((8,), 0.0, 1.0))


def cases_edm_sigma_from_uniform(o: Op) -> None:
    o.add(None, {}, u=np.array([1e-6, 0.1, 0.5, 0.9, 0.999999]))
    o.add(None, {"p_mean": -0.4, "p_std": 1.0}, u=o.uniform((8,), 0.001, 0.999))


def cases_process_simple_loss(o: Op) -> None:
    for family, (alpha, sigma) in LEVELS_IN.items():
        for prediction in vdm_ref.FAMILIES[family].predictions:
            for gamma in (None, 5.0):
                o.add(None, {"prediction": prediction, "min_snr_gamma": gamma}, x0=o.normal(X4), noise=o.normal(X4),
                      alpha=alpha, sigma=sigma, pred=o.normal(X4))
    alpha, sigma = LEVELS_ENDS["flow"]
    o.add(None, {"prediction": "flow", "min_snr_gamma": 1.0}, x0=o.normal(X4), noise=o.normal(X4), alpha=alpha,
          sigma=sigma, pred=o.normal(X4))


def cases_edm_loss_weight(o: Op) -> None:
    o.add(None, {}, sigma=np.array([0.002, 0.5, 1.0, 80.0]))
    o.add(None, {"sigma_data": 1.0}, sigma=o.uniform((6,), 0.01, 10.0))


def cases_process_min_snr_weight(o: Op) -> None:
    for prediction in vdm_ref.PREDICTION_TYPES:
        for alpha, sigma in (*LEVELS_IN.values(), *LEVELS_ENDS.values()):
            o.add(None, {"prediction": prediction, "gamma": 5.0}, alpha=alpha, sigma=sigma)
        o.add(None, {"prediction": prediction, "gamma": 1.0, "sigma_data": 1.0, "alpha": 0.8, "sigma": 0.6})


def cases_solve(o: Op) -> None:
    """Spec 17: every solver on the levels of each family, both zero ends, a one-step solve and a
    final level above zero, with the Gaussian and the point-set x0 denoisers of 14.8."""
    shape = (2, 1, 2, 3, 3)
    points = np.stack([np.full(shape[1:], -0.6), np.linspace(-1.0, 1.0, int(np.prod(shape[1:]))).reshape(shape[1:])])
    cos = vdm_ref.make_schedule("cosine", 1000)

    def vp(n: int) -> tuple[np.ndarray, np.ndarray]:  # trailing timesteps, then abar_{-1} = 1
        abar = np.append(cos.abar_at(vdm_ref.inference_timesteps(1000, n, "trailing")), 1.0)
        return np.sqrt(abar), np.sqrt(1.0 - abar)

    def flow(n: int, shift: float = 3.0) -> tuple[np.ndarray, np.ndarray]:  # from s = 1 (alpha = 0) to s = 0
        u = np.linspace(1.0, 0.0, n + 1)
        s = shift * u / (1.0 + (shift - 1.0) * u)
        return 1.0 - s, s

    def edm(n: int) -> tuple[np.ndarray, np.ndarray]:  # Karras sigmas 80 .. 0.002 (rho 7), then 0
        r = np.arange(n) / (n - 1)
        sig = (80.0 ** (1 / 7) + r * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
        return np.ones(n + 1), np.append(sig, 0.0)

    def above_zero(n: int) -> tuple[np.ndarray, np.ndarray]:  # vp, uniform in lambda, final sigma > 0
        a2 = 1.0 / (1.0 + np.exp(-2.0 * np.linspace(-2.5, 2.0, n + 1)))
        return np.sqrt(a2), np.sqrt(1.0 - a2)

    gauss = {"kind": "gaussian_level", "mu": 0.3, "var": 0.25}
    grids = [(vp(5), gauss), (flow(6), {"kind": "points_level"}), (edm(4), gauss), (vp(1), gauss),
             (above_zero(5), {"kind": "points_level"})]
    for solver, row in vdm_ref.SOLVERS.items():
        for (alphas, sigmas), model in grids:
            n = len(alphas) - 1
            inputs: dict[str, Any] = {"x": alphas[0] * o.normal(shape, 0.5) + sigmas[0] * o.normal(shape),
                                      "alphas": alphas, "sigmas": sigmas, "noise": o.normal((n, *shape))}
            if model["kind"] == "points_level":
                inputs["points"] = points
            params: dict[str, Any] = {"model": model, "solver": solver}
            if "eta" in row.options:
                params["eta"] = 0.5 if n == 6 else 1.0
            o.add(None, params, **inputs)


CASES: dict[str, Callable[[Op], None]] = {
    "make_schedule": cases_make_schedule,
    "inference_timesteps": cases_inference_timesteps,
    "q_mean_variance": cases_q_mean_variance,
    "q_sample": lambda o: cases_forward(o, "x0", "noise"),
    "velocity": lambda o: cases_forward(o, "x0", "noise"),
    "x0_from_eps": lambda o: cases_forward(o, "x_t", "eps"),
    "eps_from_x0": lambda o: cases_forward(o, "x_t", "x0"),
    "x0_from_v": lambda o: cases_forward(o, "x_t", "v"),
    "eps_from_v": lambda o: cases_forward(o, "x_t", "v"),
    "v_from_x0_eps": cases_v_from_x0_eps,
    "predict_x0_eps": cases_predict_x0_eps,
    "effective_beta": cases_pair_tables,
    "posterior_mean": cases_posterior_mean,
    "posterior_variance": cases_pair_tables,
    "posterior_log_variance_clipped": cases_pair_tables,
    "model_log_variance": cases_model_log_variance,
    "clip_x0": cases_clip_x0,
    "dynamic_threshold": cases_dynamic_threshold,
    "ddpm_step": cases_ddpm_step,
    "ddim_step": cases_ddim_step,
    "classifier_free_guidance": cases_classifier_free_guidance,
    "sample": cases_sample,
    "training_target": cases_training_target,
    "simple_loss": cases_simple_loss,
    "min_snr_weight": cases_min_snr_weight,
    "normal_kl": cases_normal_kl,
    "discretized_gaussian_log_likelihood": cases_discretized_gaussian_log_likelihood,
    "vlb_term": cases_vlb_term,
    "hybrid_loss": cases_hybrid_loss,
    "alpha_sigma": cases_alpha_sigma,
    "network_condition": cases_network_condition,
    "to_x0_eps": cases_to_x0_eps,
    "from_x0_eps": cases_from_x0_eps,
    "edm_preconditioning": cases_edm_preconditioning,
    "alpha_sigma_from_edm_sigma": cases_alpha_sigma_from_edm_sigma,
    "flow_shift": cases_flow_shift,
    "karras_sigmas": cases_karras_sigmas,
    "with_final_level": cases_with_final_level,
    "flow_levels": cases_flow_levels,
    "vp_sigmas": cases_vp_sigmas,
    "flow_level_from_uniform": cases_flow_level_from_uniform,
    "edm_sigma_from_uniform": cases_edm_sigma_from_uniform,
    "process_simple_loss": cases_process_simple_loss,
    "edm_loss_weight": cases_edm_loss_weight,
    "process_min_snr_weight": cases_process_min_snr_weight,
    "solve": cases_solve,
}


# --- serialisation ------------------------------------------------------------------------------


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed .npz (what np.savez writes) with fixed zip metadata, so bytes never vary."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_DATE)
            info.create_system = 3  # "Unix"; the default depends on the OS writing the file
            info.external_attr = 0o644 << 16
            member = io.BytesIO()
            np.lib.format.write_array(member, arr, version=(1, 0), allow_pickle=False)
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, allow_nan=False) + "\n").encode()


def build_op(op: str, tolerances: dict[str, Any]) -> tuple[bytes, bytes]:
    o = Op(op)
    CASES[op](o)
    cases, arrays = [], {}
    for k, (schedule, params, inputs) in enumerate(o.cases):
        case = {"id": f"{op}/{k}", "schedule": schedule, "params": params, "inputs": list(inputs), "outputs": []}
        outputs = call_case(op, case, inputs)
        case["outputs"] = list(outputs)
        if set(inputs) & set(outputs):
            raise AssertionError(f"{case['id']}: an output shares a name with an input")
        cases.append(case)
        for name, value in {**inputs, **outputs}.items():
            arrays[f"{k}/{name}"] = _canonical(value)
    doc = {
        "spec_version": vdm_ref.SPEC_VERSION,
        "op": op,
        "clause": tolerances["ops"][op]["clause"],
        "tolerance": tolerances["ops"][op],
        "cases": cases,
    }
    return json_bytes(doc), npz_bytes(arrays)


def build_all() -> dict[str, bytes]:
    """Every file of spec/vectors, by name, as bytes."""
    tolerances = json.loads((SPEC_DIR / "tolerances.json").read_text())
    files: dict[str, bytes] = {}
    for op in CASES:
        files[f"{op}.json"], files[f"{op}.npz"] = build_op(op, tolerances)
    manifest = {
        "spec_version": vdm_ref.SPEC_VERSION,
        "generator": GENERATOR,
        "files": {n: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)} for n, d in sorted(files.items())},
    }
    files["manifest.json"] = json_bytes(manifest)
    return files


def _existing(directory: Path) -> set[str]:
    return {p.name for p in directory.glob("*") if p.suffix in (".json", ".npz")}


def _pin_numpy_kernels(argv: list[str]) -> int | None:
    """Re-run this script with NumPy's CPU-dispatched kernels off; return its exit code.

    Why: NumPy's AVX-512 exp/log/cos kernels round differently in the last bits from the
    baseline ones, so without this the vectors' bytes would depend on the CPU that wrote them.
    NumPy reads NPY_DISABLE_CPU_FEATURES only at import, hence the fresh process. Returns None
    when this process is already pinned (or nothing needs pinning).
    """
    if os.environ.get(_PINNED_ENV):
        return None
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # NumPy 1.x
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    active = [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]
    if not active:
        return None
    env = {**os.environ, _PINNED_ENV: "1", "NPY_DISABLE_CPU_FEATURES": " ".join(active)}
    return subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], env=env).returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    pinned = _pin_numpy_kernels(argv)
    if pinned is not None:
        return pinned
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the files on disk; write nothing")
    parser.add_argument("--out", type=Path, default=VECTOR_DIR, help="target directory (default: spec/vectors)")
    args = parser.parse_args(argv)
    files = build_all()
    out: Path = args.out
    if args.check:
        stale = sorted(_existing(out) - set(files)) if out.is_dir() else []
        differing = [n for n, d in sorted(files.items()) if not (out / n).is_file() or (out / n).read_bytes() != d]
        for name in differing + stale:
            print(f"differs: {name}")
        if differing or stale:
            print(f"{len(differing) + len(stale)} file(s) differ; run: python {GENERATOR}", file=sys.stderr)
            return 1
        print(f"{len(files)} files up to date")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for name in sorted(_existing(out) - set(files)):
        (out / name).unlink()  # a vector of an op that no longer exists would mislead the kit
    for name, data in sorted(files.items()):
        atomic_write_bytes(out / name, data)
    print(f"wrote {len(files)} files ({sum(map(len, files.values()))} bytes) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
