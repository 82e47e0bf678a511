"""Random cases for the noise-process clauses (spec sections 14 and 16), beside the v1 ones of cases.py.

Levels come from all three families, the zero ends (sigma = 0, alpha = 0) included wherever
the clause is defined there. For float32 and below, a conversion that divides by alpha (eps) or
by sigma (x0) draws that quantity >= LOW_PRECISION_MIN, the counterpart of the abar range of
spec 9: closer to the singular end no fixed tolerance is attainable.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

import vdm_ref

from .cases import Case, Draw, draw_shape

LOW_PRECISION_MIN = 0.03  # about sqrt(0.001), the low end of the abar range of spec 9


def _case(op: str, params: dict, inputs: dict) -> Case:
    return Case(op=op, id="", source="random", schedule=None, inputs=inputs, params=params)


def draw_levels(d: Draw, dtype: str, batch: int, *, need_alpha: bool = False, need_sigma: bool = False,
                families: tuple[str, ...] = tuple(vdm_ref.FAMILIES)) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, sigma), one per sample, from one family; an end level in the first sample at times."""
    m = LOW_PRECISION_MIN if dtype != "float64" else 0.0
    lo, hi = (max(m, 1e-3) if need_sigma else 0.0), (1.0 - max(m, 1e-3) if need_alpha else 1.0)
    family = d.choice(families)
    if family == "edm":
        sigma = np.exp(d.uniform_array((batch,), math.log(0.002), math.log(80.0)))
        if not need_sigma and d.choice((False, True)):
            sigma[0] = 0.0
        return np.ones(batch), sigma
    level = d.uniform_array((batch,), lo, hi)
    if d.choice((False, True)):
        level[0] = d.choice((lo, hi))  # 0 or 1 where the clause allows it
    if family == "flow":  # level = s
        return 1.0 - level, level
    return np.sqrt(1.0 - level), np.sqrt(level)  # vp, level = 1 - abar


def _put_levels(d: Draw, params: dict, inputs: dict, alpha: np.ndarray, sigma: np.ndarray) -> None:
    """Per-sample vectors as inputs, or (at times) the first sample's level as scalar parameters."""
    if d.choice(("vector", "scalar")) == "scalar":
        params["alpha"], params["sigma"] = float(alpha[0]), float(sigma[0])
    else:
        inputs["alpha"], inputs["sigma"] = alpha, sigma


def _sigma_data(d: Draw, params: dict) -> None:
    sd = d.choice((None, 1.0, 0.3))
    if sd is not None:
        params["sigma_data"] = sd


def gen_alpha_sigma(d: Draw, dtype: str) -> Case:
    # vp levels read a schedule table: its (alpha, sigma) are the square roots of 2.6's abar.
    family = d.choice(("flow", "edm"))
    n = d.integer(1, 6)
    level = d.uniform_array((n,), 0.0, 1.0) if family == "flow" else d.uniform_array((n,), 0.0, 80.0)
    if d.choice((False, True)):
        level[0] = d.choice((0.0, 1.0))
    return _case("alpha_sigma", {"family": family}, {"level": level})


def gen_network_condition(d: Draw, dtype: str) -> Case:
    family = d.choice(tuple(vdm_ref.FAMILIES))
    n = d.integer(1, 6)
    if family == "vp":
        return _case("network_condition", {"family": family}, {"level": d.rng().integers(0, 1000, n)})
    level = d.uniform_array((n,), 0.0, 1.0) if family == "flow" else np.exp(d.uniform_array((n,), -6.2, 4.4))
    params: dict = {"family": family}
    _sigma_data(d, params)
    return _case("network_condition", params, {"level": level})


def gen_to_x0_eps(d: Draw, dtype: str) -> Case:
    prediction = d.choice(tuple(vdm_ref.PREDICTION_TYPES))
    shape = draw_shape(d)
    alpha, sigma = draw_levels(d, dtype, shape[0], need_alpha=prediction == "eps", need_sigma=prediction == "x0")
    params: dict = {"prediction": prediction}
    inputs: dict = {"x": d.normal(shape), "out": d.normal(shape)}
    _put_levels(d, params, inputs, alpha, sigma)
    _sigma_data(d, params)
    return _case("to_x0_eps", params, inputs)


def gen_from_x0_eps(d: Draw, dtype: str) -> Case:
    prediction = d.choice(tuple(vdm_ref.PREDICTION_TYPES))
    shape = draw_shape(d)
    alpha, sigma = draw_levels(d, dtype, shape[0])
    params: dict = {"prediction": prediction}
    inputs: dict = {"x0": d.normal(shape), "eps": d.normal(shape)}
    _put_levels(d, params, inputs, alpha, sigma)
    _sigma_data(d, params)
    return _case("from_x0_eps", params, inputs)


def gen_edm_preconditioning(d: Draw, dtype: str) -> Case:
    params: dict = {"prediction": d.choice(tuple(vdm_ref.PREDICTION_TYPES))}
    _sigma_data(d, params)
    sigma = np.exp(d.uniform_array((d.integer(1, 6),), math.log(0.002), math.log(80.0)))
    return _case("edm_preconditioning", params, {"sigma": sigma})


def gen_alpha_sigma_from_edm_sigma(d: Draw, dtype: str) -> Case:
    family = d.choice(tuple(vdm_ref.FAMILIES))
    sig = np.exp(d.uniform_array((d.integer(2, 6),), math.log(0.002), math.log(80.0)))
    sig[0] = d.choice((0.0, sig[0]))
    if family != "edm" and d.choice((False, True)):
        sig[-1] = np.inf  # zero SNR: (0, 1)
    return _case("alpha_sigma_from_edm_sigma", {"family": family}, {"sigma_edm": sig})


def gen_flow_level_from_uniform(d: Draw, dtype: str) -> Case:
    density = d.choice(tuple(vdm_ref.FLOW_DENSITIES))
    params: dict = {"density": density, "shift": d.choice((1.0, 3.0, 0.5, 5.0))}
    if density == "logit_normal" and d.choice((False, True)):
        params.update(m=d.uniform(-1.0, 1.0), s=d.uniform(0.3, 2.0))
    if density == "mode" and d.choice((False, True)):
        params["scale"] = d.uniform(-1.0, 1.7)
    u = d.uniform_array((d.integer(1, 8),), 0.0, 0.999)
    u[0] = d.choice((0.0, u[0]))
    return _case("flow_level_from_uniform", params, {"u": u})


def gen_edm_sigma_from_uniform(d: Draw, dtype: str) -> Case:
    params: dict = {}
    if d.choice((False, True)):
        params.update(p_mean=d.uniform(-2.0, 1.0), p_std=d.uniform(0.5, 2.0))
    return _case("edm_sigma_from_uniform", params, {"u": d.uniform_array((d.integer(1, 8),), 1e-4, 0.999)})


def gen_process_simple_loss(d: Draw, dtype: str) -> Case:
    family = d.choice(tuple(vdm_ref.FAMILIES))
    prediction = d.choice(vdm_ref.FAMILIES[family].predictions)
    shape = draw_shape(d)
    alpha, sigma = draw_levels(d, dtype, shape[0], families=(family,))
    params: dict = {"prediction": prediction}
    inputs: dict = {"x0": d.normal(shape), "noise": d.normal(shape), "pred": d.normal(shape)}
    _put_levels(d, params, inputs, alpha, sigma)
    gamma = d.choice((None, 5.0, 1.0))
    if gamma is not None:
        params["min_snr_gamma"] = gamma
    _sigma_data(d, params)
    return _case("process_simple_loss", params, inputs)


def gen_edm_loss_weight(d: Draw, dtype: str) -> Case:
    params: dict = {}
    _sigma_data(d, params)
    return _case("edm_loss_weight", params,
                 {"sigma": np.exp(d.uniform_array((d.integer(1, 6),), math.log(0.002), math.log(80.0)))})


def gen_process_min_snr_weight(d: Draw, dtype: str) -> Case:
    params: dict = {"prediction": d.choice(tuple(vdm_ref.PREDICTION_TYPES)), "gamma": d.choice((5.0, 1.0, 0.5))}
    alpha, sigma = draw_levels(d, dtype, d.integer(1, 6))
    inputs: dict = {"alpha": alpha, "sigma": sigma}  # the weight is per sample: always vectors
    _sigma_data(d, params)
    return _case("process_min_snr_weight", params, inputs)


PROCESS_GENERATORS: dict[str, Callable[[Draw, str], Case]] = {
    "alpha_sigma": gen_alpha_sigma,
    "network_condition": gen_network_condition,
    "to_x0_eps": gen_to_x0_eps,
    "from_x0_eps": gen_from_x0_eps,
    "edm_preconditioning": gen_edm_preconditioning,
    "alpha_sigma_from_edm_sigma": gen_alpha_sigma_from_edm_sigma,
    "flow_level_from_uniform": gen_flow_level_from_uniform,
    "edm_sigma_from_uniform": gen_edm_sigma_from_uniform,
    "process_simple_loss": gen_process_simple_loss,
    "edm_loss_weight": gen_edm_loss_weight,
    "process_min_snr_weight": gen_process_min_snr_weight,
}
