"""The torch mirror of spec sections 14 and 16 against vdm_ref, in float64 and float32."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from vdm.backends.torch import ops as O

import vdm_ref as R

TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=2e-5, atol=2e-5)}
LEVELS = {  # (alpha, sigma) per sample: ends included where every prediction is defined
    "flow": (np.array([1.0, 0.7, 0.2, 0.0]), np.array([0.0, 0.3, 0.8, 1.0])),
    "edm": (np.ones(4), np.array([0.002, 0.5, 3.0, 80.0])),
    "vp": (np.sqrt([0.999, 0.6, 0.05, 0.001]), np.sqrt(1 - np.array([0.999, 0.6, 0.05, 0.001]))),
}


def _t(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(a, dtype=dtype)


def _rounded(a: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    return _t(a, dtype).double().numpy()


def _close(got: torch.Tensor, want: np.ndarray, dtype: torch.dtype, scale: float = 1.0) -> None:
    assert got.dtype == dtype
    tol = TOL[dtype]
    np.testing.assert_allclose(got.double().numpy(), want, rtol=tol["rtol"], atol=tol["atol"] * scale)


def test_tables_mirror_the_reference():
    assert list(O.FAMILIES) == list(R.FAMILIES) and list(O.PREDICTION_TYPES) == list(R.PREDICTION_TYPES)
    assert {k: f.predictions for k, f in O.FAMILIES.items()} == {k: f.predictions for k, f in R.FAMILIES.items()}
    assert O.FLOW_DENSITY_PARAMS == R.FLOW_DENSITY_PARAMS and list(O.FLOW_DENSITIES) == list(R.FLOW_DENSITIES)
    assert (O.SIGMA_DATA, O.SIGMA_MIN, O.SIGMA_MAX, O.FLOW_TIME_SCALE, O.EDM_P_MEAN, O.EDM_P_STD) == (
        R.SIGMA_DATA, R.SIGMA_MIN, R.SIGMA_MAX, R.FLOW_TIME_SCALE, R.EDM_P_MEAN, R.EDM_P_STD)
    fields = [(f.name, f.default) for f in dataclasses.fields(O.Process)]
    assert fields == [(f.name, f.default) for f in dataclasses.fields(R.Process)]
    for fam in R.FAMILIES:
        assert O.Process(fam).to_dict() == R.Process(fam).to_dict()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("family", list(LEVELS))
def test_conversions_match_the_reference(family, dtype):
    rng = np.random.default_rng(0)
    a, s = (_rounded(v, dtype) for v in LEVELS[family])
    x, out, x0, eps = (_rounded(rng.standard_normal((4, 2, 3)), dtype) for _ in range(4))
    for p in R.PREDICTION_TYPES:
        want = R.from_x0_eps(x0, eps, a, s, p)
        _close(O.from_x0_eps(_t(x0, dtype), _t(eps, dtype), _t(a, dtype), _t(s, dtype), p), want, dtype)
        ok = slice(None)
        if p == "eps":
            ok = a > 0
        elif p == "x0":
            ok = s > 0
        args = (x[ok], a[ok], s[ok], out[ok], p)
        w0, w1 = R.to_x0_eps(*args)
        g0, g1 = O.to_x0_eps(*(_t(v, dtype) if isinstance(v, np.ndarray) else v for v in args))
        scale = 1.0 + float(np.abs(np.concatenate([w0.ravel(), w1.ravel()])).max())
        _close(g0, w0, dtype, scale)
        _close(g1, w1, dtype, scale)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_level_functions_match_the_reference(dtype):
    sched = R.make_schedule("cosine", 50, zero_terminal_snr=True)
    tsched = O.make_schedule("cosine", 50, zero_terminal_snr=True)
    t = np.array([-1, 0, 25, 49])
    for got, want in zip(O.alpha_sigma("vp", torch.as_tensor(t), sched=tsched), R.alpha_sigma("vp", t, sched=sched),
                         strict=True):
        _close(got, want, torch.float64)
    s = _rounded(np.array([0.0, 0.25, 1.0]), dtype)
    for got, want in zip(O.alpha_sigma("flow", _t(s, dtype)), R.alpha_sigma("flow", s), strict=True):
        _close(got, want, dtype)
    sig = _rounded(np.array([0.002, 1.0, 80.0]), dtype)
    for p in R.PREDICTION_TYPES:
        for got, want in zip(O.edm_preconditioning(_t(sig, dtype), 0.5, p), R.edm_preconditioning(sig, 0.5, p),
                             strict=True):
            _close(got, want, dtype)
    _close(O.network_condition("flow", _t(s, dtype)), R.network_condition("flow", s), dtype, 1000.0)
    _close(O.network_condition("edm", _t(sig, dtype)), R.network_condition("edm", sig), dtype)
    assert O.network_condition("vp", torch.as_tensor(t)).tolist() == t.tolist()
    _close(O.input_scale("edm", _t(sig, dtype)), R.input_scale("edm", sig), dtype)
    S = np.array([0.0, 0.5, 4.0, np.inf])
    for fam in ("vp", "flow"):
        for got, want in zip(O.alpha_sigma_from_edm_sigma(fam, _t(S, dtype)), R.alpha_sigma_from_edm_sigma(fam, S),
                             strict=True):
            _close(got, want, dtype)
    a, sg = (_rounded(v, dtype) for v in LEVELS["flow"])
    _close(O.half_log_snr(_t(a, dtype), _t(sg, dtype)), R.half_log_snr(a, sg), dtype)
    _close(O.edm_sigma(_t(a, dtype), _t(sg, dtype)), R.edm_sigma(a, sg), dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_training_objectives_match_the_reference(dtype):
    rng = np.random.default_rng(1)
    u = _rounded(np.concatenate([[0.0, 0.5], rng.uniform(size=30)]), dtype)
    _close(O.normal_quantile(_t(u[1:], dtype)), R.normal_quantile(u[1:]), dtype)
    assert O.normal_quantile(_t(u[:1], dtype)).item() == -np.inf
    for density, params in (("uniform", {}), ("logit_normal", {"m": 0.3, "s": 0.8}), ("mode", {"scale": 1.29})):
        for shift in (1.0, 3.0):
            _close(O.flow_level_from_uniform(_t(u, dtype), density, shift, **params),
                   R.flow_level_from_uniform(u, density, shift, **params), dtype)
    _close(O.edm_sigma_from_uniform(_t(u[1:], dtype)), R.edm_sigma_from_uniform(u[1:]), dtype)
    assert O.vp_timestep_from_uniform(_t(u, dtype), 1000).tolist() == R.vp_timestep_from_uniform(u, 1000).tolist()
    sig = _rounded(np.array([0.01, 1.0, 50.0]), dtype)
    _close(O.edm_loss_weight(_t(sig, dtype), 0.5), R.edm_loss_weight(sig, 0.5), dtype)
    for fam, (a, s) in LEVELS.items():
        a, s = _rounded(a, dtype), _rounded(s, dtype)
        x0, noise, pred = (_rounded(rng.standard_normal((4, 3)), dtype) for _ in range(3))
        for p in R.FAMILIES[fam].predictions:
            _close(O.process_min_snr_weight(_t(a, dtype), _t(s, dtype), p, 5.0),
                   R.process_min_snr_weight(a, s, p, 5.0), dtype)
            for gamma in (None, 5.0):
                got = O.process_simple_loss(_t(x0, dtype), _t(noise, dtype), _t(a, dtype), _t(s, dtype),
                                            _t(pred, dtype), p, min_snr_gamma=gamma)
                _close(got, R.process_simple_loss(x0, noise, a, s, pred, p, min_snr_gamma=gamma), dtype)


def test_loss_is_differentiable_in_the_prediction():
    pred = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    x0, noise = torch.ones(2, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64)
    O.process_simple_loss(x0, noise, torch.tensor([0.5, 0.9]), torch.tensor([0.5, 0.1]), pred, "flow").sum().backward()
    # d/dpred mean((pred - u)^2) = 2 (pred - u) / 3 with u = eps - x0 = -1
    torch.testing.assert_close(pred.grad, torch.full((2, 3), 2 / 3, dtype=torch.float64))


def test_errors_as_the_reference():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="'eps' cannot give x0 where alpha = 0"):
        O.to_x0_eps(x, 0.0, 1.0, x, "eps")
    with pytest.raises(ValueError, match="argument 'prediction'"):
        O.from_x0_eps(x, x, 1.0, 0.5, "u")
    with pytest.raises(ValueError, match="argument 'family'"):
        O.alpha_sigma("ve", 0.5)
    with pytest.raises(ValueError, match="argument 'u'"):
        O.edm_sigma_from_uniform(torch.tensor([0.0]))
    with pytest.raises(ValueError, match="argument 'prediction'"):
        O.Process("flow", "edm")
