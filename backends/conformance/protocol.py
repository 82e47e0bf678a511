"""The adapter protocol a backend implements to be checked, and the spec data the checks read.

A backend is checked through an *adapter*: an object with ``name``, ``version``, ``device`` and
``dtype`` attributes and one method per spec operation, named and called exactly like the
function of ``vdm_ref`` that defines the clause. Adapters take and return NumPy arrays; see
README.md next to this file for the full contract.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any, Protocol, runtime_checkable

import numpy as np

import vdm_ref

# Every operation of spec v1 that the kit checks, in spec order. All are required: a backend
# that lacks one is not conformant (``--allow-missing`` reports them as skipped instead).
OPS: tuple[str, ...] = (
    "make_schedule", "inference_timesteps",
    "q_mean_variance", "q_sample", "velocity",
    "x0_from_eps", "eps_from_x0", "x0_from_v", "eps_from_v", "v_from_x0_eps", "predict_x0_eps",
    "effective_beta", "posterior_mean", "posterior_variance", "posterior_log_variance_clipped",
    "model_log_variance",
    "clip_x0", "dynamic_threshold", "ddpm_step", "ddim_step", "classifier_free_guidance", "sample",
    "training_target", "simple_loss", "min_snr_weight", "normal_kl",
    "discretized_gaussian_log_likelihood", "vlb_term", "hybrid_loss",
    # spec 2.0.0, sections 14 and 16: noise processes and their training objectives
    "alpha_sigma", "network_condition", "to_x0_eps", "from_x0_eps", "edm_preconditioning",
    "alpha_sigma_from_edm_sigma",
    # section 15: noise-level schedules for sampling
    "flow_shift", "karras_sigmas", "with_final_level", "flow_levels", "vp_sigmas",
    "flow_level_from_uniform", "edm_sigma_from_uniform", "process_simple_loss", "edm_loss_weight",
    "process_min_snr_weight",
    "solve",
)
REQUIRED_OPS: frozenset[str] = frozenset(OPS)

# Ops without a schedule argument; every other op takes a vdm_ref.Schedule first (sample second).
NO_SCHEDULE: frozenset[str] = frozenset({
    "make_schedule", "inference_timesteps", "clip_x0", "dynamic_threshold", "classifier_free_guidance",
    "normal_kl", "discretized_gaussian_log_likelihood", "solve",
    # sections 14 and 16 work on (alpha, sigma), with no schedule table
    "alpha_sigma", "network_condition", "to_x0_eps", "from_x0_eps", "edm_preconditioning",
    "alpha_sigma_from_edm_sigma", "flow_level_from_uniform", "edm_sigma_from_uniform", "process_simple_loss",
    "edm_loss_weight", "process_min_snr_weight",
    # section 15: schedules of noise levels (float64 host data, like the tables of 2.6)
    "flow_shift", "karras_sigmas", "with_final_level", "flow_levels", "vp_sigmas",
})

# Names of the outputs of ops that return more than one array (everything else: "out").
TABLES: tuple[str, ...] = ("betas", "alphas", "abar", "snr", "log_snr", "sigma")
OUTPUT_NAMES: dict[str, tuple[str, ...]] = {
    "make_schedule": TABLES,
    "q_mean_variance": ("mean", "variance"),
    "predict_x0_eps": ("x0", "eps"),
    "to_x0_eps": ("x0", "eps"),
    "edm_preconditioning": ("c_skip", "c_out", "c_in", "c_noise"),
    "alpha_sigma": ("alpha", "sigma"),
    "alpha_sigma_from_edm_sigma": ("alpha", "sigma"),
}

DTYPES: tuple[str, ...] = ("float64", "float32", "bfloat16", "float16")


@runtime_checkable
class Backend(Protocol):
    """What the kit needs from an adapter (methods are looked up by op name, see README.md)."""

    name: str
    version: str
    device: str
    dtype: str


@functools.lru_cache(maxsize=1)
def tolerances() -> dict[str, Any]:
    """spec/tolerances.json, read once from the installed package data."""
    return json.loads(resources.files("vdm.spec").joinpath("tolerances.json").read_text())


def clause_of(op: str) -> str:
    return str(tolerances()["ops"][op]["clause"])


def tolerance_for(op: str, dtype: str) -> dict[str, float] | None:
    """(rtol, atol) for ``op`` at ``dtype``; None if the spec gives none (the op is then skipped).

    Schedule tables are always float64, so make_schedule uses its float64 tolerance at every
    dtype; inference_timesteps is exact (integers) at every dtype.
    """
    entry = tolerances()["ops"][op]
    if entry.get("exact"):
        return {"rtol": 0.0, "atol": 0.0}
    if entry.get("tables_always_float64"):
        return dict(entry["float64"])
    return dict(entry[dtype]) if dtype in entry else None


# Optional methods of differentiable backends: the op whose clause they check, and their name.
# A backend without them is checked on values only (the report notes what was not checked).
GRADIENT_METHODS: dict[str, str] = {"hybrid_loss": "hybrid_loss_grad"}


def gradient_tolerance(op: str, dtype: str) -> dict[str, float] | None:
    """(rtol, atol) of the gradient check of ``op`` at ``dtype``; None if the spec gives none."""
    entry = tolerances().get("gradients", {}).get(op, {})
    return dict(entry[dtype]) if dtype in entry else None


def low_precision_abar_range() -> tuple[float, float]:
    lo, hi = tolerances()["low_precision_abar_range"]
    return float(lo), float(hi)


def round_to_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    """Round float64 values to ``dtype`` (round to nearest even) and return them as float64.

    Integer arrays pass through: timesteps are never rounded. bfloat16 has no NumPy type, so it
    is emulated on the float32 bit pattern (its top 16 bits).
    """
    arr = np.asarray(x)
    if arr.dtype.kind != "f" or dtype == "float64":
        return arr
    if dtype == "float32":
        return arr.astype(np.float32).astype(np.float64)
    if dtype == "float16":
        return arr.astype(np.float16).astype(np.float64)
    if dtype == "bfloat16":
        f32 = np.ascontiguousarray(arr, dtype=np.float32)
        bits = f32.view(np.uint32).astype(np.uint64)
        finite = np.isfinite(f32)
        # Round half to even on the 16 dropped bits; non-finite values keep their pattern.
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        out = np.where(finite, rounded, bits & 0xFFFF0000).astype(np.uint32)
        return out.view(np.float32).astype(np.float64)
    raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


def spec_version() -> str:
    return vdm_ref.SPEC_VERSION
