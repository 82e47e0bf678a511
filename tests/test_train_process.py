"""vdm train --process vp|flow|edm (spec 16): each family's objective against the float64 reference,
its draws against the reference maps and closed forms, vp bitwise as in v1, the process in
checkpoints, a flow run that learns, and one-line errors for combinations no family has."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from helpers import MICRO_TRAIN_MODEL
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner
from vdm.backends.sampling import DEFAULT_SAMPLERS
from vdm.backends.torch import ops
from vdm.backends.torch.models import build_model
from vdm.backends.torch.training import TrainConfig, resolve_config, resolve_run_config, train
from vdm.backends.torch.training.checkpoint import CheckpointError, load_checkpoint, read_meta
from vdm.backends.torch.training.config import QUICKSTART_TRAIN, model_config
from vdm.backends.torch.training.objectives import OBJECTIVES

import vdm_ref

SHAPE = (6, 2, 3, 4, 4)  # (B, C, F, H, W)


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()  # runs below use threads=1, which the loop sets process-wide
    yield
    torch.set_num_threads(n)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(SHAPE, generator=g, dtype=torch.float64) * 2 - 1, torch.randn(SHAPE, generator=g,
                                                                                     dtype=torch.float64)


def _replayed_draws(seed: int, family: str, x0: torch.Tensor, T: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """The documented draw order, replayed: the level's draw (vp: randint t; flow, edm: float64 u), then eps."""
    torch.manual_seed(seed)
    b = x0.shape[0]
    first = torch.randint(0, T, (b,)) if family == "vp" else torch.rand(b, dtype=torch.float64)
    return first.numpy(), torch.randn_like(x0).numpy()


def test_the_tables_cover_every_family():
    assert set(OBJECTIVES) == set(vdm_ref.FAMILIES) == set(DEFAULT_SAMPLERS)


# --------------------------------------------------------------------------- the objectives in float64

CASES = [
    ("vp", "eps", {}, None), ("vp", "v", {}, 5.0), ("vp", "x0", {}, None),
    ("flow", "flow", {}, None), ("flow", "flow", {"flow_density": "logit_normal", "flow_shift": 3.0}, None),
    ("flow", "v", {"flow_density": "mode", "flow_density_params": {"scale": 0.5}}, 2.0),
    ("flow", "eps", {}, 5.0),
    ("edm", "edm", {}, None), ("edm", "edm", {"sigma_data": 1.0, "edm_p_mean": 0.5, "edm_p_std": 2.0}, None),
    ("edm", "v", {"sigma_data": 1.0}, None), ("edm", "v", {}, None), ("edm", "eps", {}, None),
    ("edm", "x0", {}, 5.0),
]


def _level_ref(cfg: TrainConfig, first: np.ndarray) -> np.ndarray:
    if cfg.process == "vp":
        return first
    if cfg.process == "flow":
        return vdm_ref.flow_level_from_uniform(first, cfg.flow_density, cfg.flow_shift, **cfg.flow_density_params)
    return vdm_ref.edm_sigma_from_uniform(first, cfg.edm_p_mean, cfg.edm_p_std)


@pytest.mark.parametrize(("family", "prediction", "options", "gamma"), CASES)
def test_objective_is_the_reference_loss_on_the_same_draws(family, prediction, options, gamma):
    """On float64 data the objective's draws, network input and condition are spec 14.1/14.2/16.1 of vdm_ref
    at the replayed draws, and its loss is 16.2 (vdm_ref.process_simple_loss) with 16.4 when min-SNR is on;
    on edm without min-SNR it is EDM's own loss lambda(sigma) mean((D - x0)^2), D from vdm_ref.to_x0_eps."""
    cfg = TrainConfig(process=family, prediction=prediction, min_snr_gamma=gamma, **options)
    sched = ops.make_schedule(cfg.schedule, cfg.timesteps, dtype=torch.float64)
    ref_sched = vdm_ref.make_schedule(cfg.schedule, cfg.timesteps) if family == "vp" else None
    x0, _ = _batch()
    torch.manual_seed(11)
    noised = OBJECTIVES[family].draw(cfg, sched, x0)
    first, eps = _replayed_draws(11, family, x0)
    np.testing.assert_array_equal(noised.noise.numpy(), eps)
    level = _level_ref(cfg, first)
    np.testing.assert_allclose(noised.level.numpy(), level, rtol=1e-12, atol=0)
    alpha, sigma = vdm_ref.alpha_sigma(family, level, sched=ref_sched)
    np.testing.assert_allclose(noised.alpha.numpy(), alpha, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(noised.sigma.numpy(), sigma, rtol=1e-12, atol=1e-15)
    a5, s5 = alpha[:, None, None, None, None], sigma[:, None, None, None, None]
    x_t = a5 * x0.numpy() + s5 * eps
    scale = vdm_ref.input_scale(family, level, sigma_data=cfg.sigma_data)[:, None, None, None, None]
    np.testing.assert_allclose(noised.net_input.numpy(), scale * x_t, rtol=1e-12, atol=1e-14)
    cond = vdm_ref.network_condition(family, level, sigma_data=cfg.sigma_data)
    assert noised.condition.dtype == torch.float32
    np.testing.assert_allclose(noised.condition.numpy(), cond, rtol=1e-6, atol=1e-6)

    out = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = OBJECTIVES[family].loss(cfg, sched, noised, out).numpy()
    plain = vdm_ref.process_simple_loss(x0.numpy(), eps, alpha, sigma, out.numpy(), prediction,
                                        sigma_data=cfg.sigma_data)
    if gamma is not None:
        want = vdm_ref.process_simple_loss(x0.numpy(), eps, alpha, sigma, out.numpy(), prediction,
                                           sigma_data=cfg.sigma_data, min_snr_gamma=gamma)
        assert np.max(np.abs(want / plain - 1)) > 1e-3  # the weights matter on this batch
    elif family == "edm":
        d, _ = vdm_ref.to_x0_eps(x_t, alpha, sigma, out.numpy(), prediction, sigma_data=cfg.sigma_data)
        want = vdm_ref.edm_loss_weight(sigma, cfg.sigma_data) * ((d - x0.numpy()) ** 2).reshape(len(d), -1).mean(1)
        if prediction == "edm":  # 16.3: EDM's loss is 16.2 with prediction edm and w = 1
            np.testing.assert_allclose(want, plain, rtol=1e-12)
    else:
        want = plain
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=0)


def test_edm_draw_replaces_u_zero_by_the_smallest_normal(monkeypatch):
    """Spec 16.1: torch.rand may return u = 0, which has no log-normal level; the objective uses the
    smallest positive normal float64 there (a finite sigma > 0), as vdm_ref maps that u."""
    cfg = TrainConfig(process="edm")
    x0, _ = _batch()
    real = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.zeros_like(real(*a, **k)))
    noised = OBJECTIVES["edm"].draw(cfg, None, x0)
    tiny = np.finfo(np.float64).tiny
    want = vdm_ref.edm_sigma_from_uniform(np.full(SHAPE[0], tiny))
    assert np.all(np.isfinite(want)) and np.all(want > 0)
    np.testing.assert_allclose(noised.sigma.numpy(), want, rtol=1e-12)
    assert torch.isfinite(noised.condition).all() and torch.isfinite(noised.net_input).all()


# --------------------------------------------------------------------------- the flow draws


def _flow_levels(n: int, **options) -> tuple[np.ndarray, np.ndarray]:
    cfg = TrainConfig(process="flow", **options)
    x0 = torch.zeros(n, 1, 1, 1, 1, dtype=torch.float64)
    torch.manual_seed(5)
    s = OBJECTIVES["flow"].draw(cfg, None, x0).level.numpy()
    u, _ = _replayed_draws(5, "flow", x0)
    return u, s


def test_flow_shift_is_applied_once_in_closed_form():
    """uniform + shift k: s = k u / (1 + (k - 1) u), written out here; shift 1 leaves s = u; a double shift
    (the diffusers bug class) would give 9u / (1 + 8u) at k = 3, far from it."""
    u, s = _flow_levels(512, flow_shift=3.0)
    np.testing.assert_allclose(s, 3 * u / (1 + 2 * u), rtol=1e-14)
    assert np.max(np.abs(s - 9 * u / (1 + 8 * u))) > 0.1
    u1, s1 = _flow_levels(512)
    np.testing.assert_array_equal(s1, u1)


def test_flow_logit_normal_levels_have_the_configured_logit_moments():
    """logit_normal(m, s): logit(level) ~ N(m, s^2); mean and std of 20000 draws within 5 standard errors,
    and the defaults N(0, 1) told apart from N(0.7, 0.5^2)."""
    n, m, sd = 20000, 0.7, 0.5
    _, lv = _flow_levels(n, flow_density="logit_normal", flow_density_params={"m": m, "s": sd})
    z = np.log(lv) - np.log1p(-lv)
    assert abs(z.mean() - m) < 5 * sd / math.sqrt(n)
    assert abs(z.std() - sd) < 5 * sd / math.sqrt(2 * n)
    _, lv0 = _flow_levels(n, flow_density="logit_normal")
    z0 = np.log(lv0) - np.log1p(-lv0)
    assert abs(z0.mean()) < 5 / math.sqrt(n) and abs(z0.std() - 1) < 5 / math.sqrt(2 * n)


def test_flow_mode_levels_follow_the_reference_map_and_the_scale_matters():
    u, s = _flow_levels(256, flow_density="mode", flow_density_params={"scale": 1.0})
    np.testing.assert_allclose(s, 1 - u - (np.cos(np.pi * u / 2) ** 2 - 1 + u), rtol=1e-12, atol=1e-15)
    _, s0 = _flow_levels(256, flow_density="mode", flow_density_params={"scale": 0.0})
    np.testing.assert_allclose(s0, 1 - u, rtol=1e-15)


# --------------------------------------------------------------------------- vp is v1, bitwise


@pytest.mark.parametrize("kw", [dict(prediction="eps"), dict(prediction="v", min_snr_gamma=5.0),
                                dict(prediction="eps", learn_sigma=True)])
def test_vp_objective_is_bitwise_the_v1_loss(kw):
    """The v1 loop's block, written out here (randint t, randn noise, q_sample, net(x_t, t.float()), simple
    or hybrid loss), and the vp objective give identical bits in float32 under the same seed."""
    cfg = TrainConfig(model=MICRO_TRAIN_MODEL, frames=4, size=8, schedule="linear", **kw)
    torch.manual_seed(0)
    net = build_model(model_config(cfg))
    sched = ops.make_schedule(cfg.schedule, cfg.timesteps, dtype=torch.float32)
    x0 = torch.rand(4, 1, 4, 8, 8) * 2 - 1

    torch.manual_seed(123)
    t = torch.randint(0, cfg.timesteps, (4,))
    noise = torch.randn_like(x0)
    after_v1 = torch.get_rng_state()
    x_t = ops.q_sample(sched, x0, t, noise)
    out = net(x_t, t.float(), None).float()
    if cfg.learn_sigma:
        v1 = ops.hybrid_loss(sched, x0, t, noise, out, cfg.prediction, lam=cfg.hybrid_lambda,
                             min_snr_gamma=cfg.min_snr_gamma)
    else:
        v1 = ops.simple_loss(sched, x0, t, noise, out, cfg.prediction, min_snr_gamma=cfg.min_snr_gamma)

    torch.manual_seed(123)
    noised = OBJECTIVES["vp"].draw(cfg, sched, x0)
    assert torch.equal(torch.get_rng_state(), after_v1)  # the same draws: label dropout etc. see the same RNG
    assert torch.equal(noised.level, t) and torch.equal(noised.net_input, x_t)
    assert torch.equal(noised.condition, t.float())
    now = OBJECTIVES["vp"].loss(cfg, sched, noised, net(noised.net_input, noised.condition, None).float())
    assert torch.equal(now, v1)


# --------------------------------------------------------------------------- checkpoints


def _cfg(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(model=MICRO_TRAIN_MODEL, frames=4, size=8, batch_size=4, steps=2, lr=1e-3, warmup_steps=0,
                log_every=1, checkpoint_every=0, preview_every=0, out_dir=str(tmp_path / name), device="cpu",
                num_clips=64, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_checkpoint_records_the_process_and_resumes(tmp_path):
    cfg = _cfg(tmp_path, process="edm", prediction="v", sigma_data=1.0)
    train(cfg)
    meta = load_checkpoint(tmp_path / "run" / "last.safetensors").meta
    assert meta["process"] == vdm_ref.Process("edm", "v", sigma_data=1.0).to_dict()
    assert meta["prediction"] == "v" and meta["train"]["process"] == "edm"
    again = resolve_run_config(None, {"resume": str(tmp_path / "run" / "last.safetensors"), "steps": 3})
    assert (again.process, again.prediction, again.sigma_data) == ("edm", "v", 1.0)
    assert train(again).step == 3


@pytest.mark.parametrize("family", ["flow", "edm"])
def test_resume_reproduces_the_losses_of_an_uninterrupted_run(tmp_path, family):
    """The levels' uniforms are drawn under the loop's per-step seed, so 2 + 2 steps give the bits of 4."""
    whole = train(_cfg(tmp_path, "whole", process=family, steps=4))
    train(_cfg(tmp_path, "split", process=family, steps=2))
    rest = train(_cfg(tmp_path, "split", process=family, steps=4, resume="auto"))
    assert rest.losses == whole.losses[2:] and len(set(whole.losses)) == 4


def _strip_process(src, dst) -> None:
    """A checkpoint as written before spec 2: no 'process' in the meta or in its training options."""
    with safe_open(str(src), framework="pt") as f:
        meta = json.loads(f.metadata()["vdm"])
    del meta["process"]
    for key in ("process", "flow_density", "flow_density_params", "flow_shift", "sigma_data", "edm_p_mean",
                "edm_p_std"):
        del meta["train"][key]
    save_file(load_file(str(src)), str(dst), metadata={"vdm": json.dumps(meta)})


def test_a_checkpoint_without_process_is_vp_and_resumes_as_vp(tmp_path):
    train(_cfg(tmp_path, prediction="v", schedule="linear"))
    old = tmp_path / "old.safetensors"
    _strip_process(tmp_path / "run" / "last.safetensors", old)
    meta = read_meta(old)
    assert meta["process"] == vdm_ref.Process("vp", "v").to_dict()
    cfg = resolve_run_config(None, {"resume": str(old), "steps": 3, "out_dir": str(tmp_path / "resumed")})
    assert (cfg.process, cfg.prediction) == ("vp", "v")
    assert train(cfg).step == 3


def test_an_invalid_process_record_is_one_line(tmp_path):
    train(_cfg(tmp_path, process="flow"))
    src = tmp_path / "run" / "last.safetensors"
    for change, match in (({"process": {"family": "flow", "prediction": "edm"}}, "invalid noise process"),
                          ({"prediction": "v"}, "disagrees")):
        with safe_open(str(src), framework="pt") as f:
            meta = {**json.loads(f.metadata()["vdm"]), **change}
        bad = tmp_path / "bad.safetensors"
        save_file(load_file(str(src)), str(bad), metadata={"vdm": json.dumps(meta)})
        with pytest.raises(CheckpointError, match=match) as info:
            read_meta(bad)
        assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- config and CLI


def test_a_process_alone_takes_its_own_default_prediction():
    assert TrainConfig().prediction == "eps"
    assert [TrainConfig(process=p).prediction for p in vdm_ref.FAMILIES] == \
        [f.predictions[0] for f in vdm_ref.FAMILIES.values()]
    vp_v = TrainConfig(prediction="v")
    assert resolve_config(None, {"process": "flow"}, vp_v).prediction == "flow"  # not the base's v
    assert resolve_config(None, {"process": "vp"}, vp_v).prediction == "v"  # same process: kept
    assert resolve_config(None, {"process": "flow", "prediction": "v"}, vp_v).prediction == "v"


def test_a_new_process_drops_the_base_process_options():
    """The quickstart base is flow with logit-normal levels: --process vp or edm must not inherit the
    flow density (an error for them), while --process flow keeps it."""
    assert QUICKSTART_TRAIN.process == "flow" and QUICKSTART_TRAIN.flow_density == "logit_normal"
    vp = resolve_config(None, {"process": "vp"}, QUICKSTART_TRAIN)
    assert (vp.process, vp.prediction, vp.flow_density) == ("vp", "eps", "uniform")
    edm = resolve_config(None, {"process": "edm", "sigma_data": 0.7}, QUICKSTART_TRAIN)
    assert (edm.flow_density, edm.sigma_data) == ("uniform", 0.7)
    assert resolve_config(None, {"steps": 3}, QUICKSTART_TRAIN).flow_density == "logit_normal"
    with pytest.raises(ValueError, match="does not use flow_density"):
        resolve_config(None, {"process": "vp", "flow_density": "mode"}, QUICKSTART_TRAIN)


def _app():
    import typer
    from vdm.cli import train as train_cli

    app = typer.Typer()
    train_cli.register(app)
    app.command("noop", hidden=True)(lambda: None)  # keeps `train` a sub-command
    return app


@pytest.mark.parametrize(("flags", "match"), [
    (["--process", "flow", "--learn-sigma"], "process 'flow' does not use learn_sigma"),
    (["--process", "edm", "--prediction", "flow"], "prediction must be one of ('edm', 'eps', 'x0', 'v')"),
    (["--process", "vp", "--prediction", "edm"], "prediction must be one of ('eps', 'x0', 'v')"),
    (["--flow-shift", "3"], "process 'vp' does not use flow_shift"),
    (["--process", "flow", "--sigma-data", "1"], "does not use sigma_data"),
    (["--process", "flow", "--flow-density", "cosine"], "flow_density must be one of"),
    (["--process", "flow", "--flow-density", "logit_normal", "--flow-density-param", "scale=1"],
     "unknown parameter"),
    (["--process", "diffusion"], "process must be one of ('vp', 'flow', 'edm')"),
])
def test_impossible_combinations_are_one_line_with_exit_2(tmp_path, flags, match):
    res = CliRunner().invoke(_app(), ["train", *flags, "--out", str(tmp_path / "x"), "--print-config"])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], res.output


def test_cli_process_flags_reach_the_config():
    res = CliRunner().invoke(_app(), ["train", "--process", "flow", "--flow-density", "logit_normal",
                                      "--flow-density-param", "m=0.5", "--flow-shift", "2", "--print-config"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert (got["process"], got["prediction"], got["flow_density"], got["flow_density_params"], got["flow_shift"]) \
        == ("flow", "flow", "logit_normal", {"m": 0.5}, 2.0)
    res = CliRunner().invoke(_app(), ["train", "--process", "edm", "--sigma-data", "1", "--edm-p-mean", "-1",
                                      "--edm-p-std", "1.5", "--print-config"])
    got = json.loads(res.output)
    assert (got["prediction"], got["sigma_data"], got["edm_p_mean"], got["edm_p_std"]) == ("edm", 1.0, -1.0, 1.5)


def test_cli_flow_training_on_moving_shapes_learns(tmp_path):
    """vdm train --process flow, tiny preset on 4-frame 16x16 moving shapes: 30 steps run, the checkpoint
    records the flow process, and the loss of the last 8 steps is well below that of the first 8."""
    out = tmp_path / "flow"
    res = CliRunner().invoke(_app(), [
        "train", "--process", "flow", "--preset", "tiny", "--size", "16", "--frames", "4", "--batch-size", "8",
        "--steps", "30", "--lr", "2e-3", "--warmup-steps", "5", "--threads", "1", "--device", "cpu",
        "--preview-every", "0", "--checkpoint-every", "0", "--log-every", "1", "--quiet", "--out", str(out)])
    assert res.exit_code == 0, res.output
    with (out / "metrics.csv").open() as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert len(losses) == 30 and all(math.isfinite(v) for v in losses)
    first, last = np.mean(losses[:8]), np.mean(losses[-8:])
    assert last < 0.7 * first, (first, last)
    assert load_checkpoint(out / "last.safetensors").meta["process"]["family"] == "flow"
