"""The training options change what they should: label dropout, min-SNR, the hybrid loss's stop-gradient,
EMA, LR warm-up and decay, weight-decay groups and joint image-video batches, observed in the real loop and
checked against closed forms."""

from __future__ import annotations

import csv
import math
from collections import Counter

import numpy as np
import pytest
import torch
from helpers import MICRO_TRAIN_MODEL
from vdm.backends.torch import ops
from vdm.backends.torch.training import TrainConfig, load_checkpoint, train
from vdm.backends.torch.training import loop as loop_mod


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()  # the configs below use threads=1, which the loop sets process-wide
    yield
    torch.set_num_threads(n)


def _cfg(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(model=MICRO_TRAIN_MODEL, frames=4, size=8, batch_size=4, steps=2, lr=1e-3, warmup_steps=0,
                log_every=1, checkpoint_every=0, preview_every=0, out_dir=str(tmp_path / name), device="cpu",
                num_clips=64, ema_decay=0.9, threads=1, schedule="linear")
    base.update(kw)
    return TrainConfig(**base)


class _Spy:
    """What the loop's network receives and sees: labels, parameter snapshots and output gradients per forward."""

    def __init__(self) -> None:
        self.model = None
        self.num_classes = None
        self.labels: list[torch.Tensor | None] = []
        self.independent: list[torch.Tensor | None] = []  # the `independent` mask of each forward
        self.inputs: list[tuple[torch.Tensor, torch.Tensor]] = []  # (x, t) of each forward
        self.params: list[dict[str, torch.Tensor]] = []  # parameters at the start of each forward
        self.out_grads: list[torch.Tensor] = []  # d loss / d network output, from the loop's own backward


@pytest.fixture
def spy(monkeypatch) -> _Spy:
    s = _Spy()
    real_build = loop_mod.build_model

    def pre(mod, args, kwargs):
        if mod is s.model:  # the EMA deep copy carries this hook too
            s.labels.append(kwargs.get("y", args[2] if len(args) > 2 else None))
            s.independent.append(kwargs.get("independent", args[3] if len(args) > 3 else None))
            s.inputs.append((args[0].detach().clone(), args[1].detach().clone()))
            s.params.append({n: p.detach().clone() for n, p in mod.named_parameters()})

    def post(mod, args, kwargs, out):
        if mod is s.model and out.requires_grad:
            out.register_hook(lambda g: s.out_grads.append(g.detach().clone()))

    def build(mcfg):
        model = real_build(mcfg)
        s.model, s.num_classes = model, mcfg.num_classes
        model.register_forward_pre_hook(pre, with_kwargs=True)
        model.register_forward_hook(post, with_kwargs=True)
        return model

    monkeypatch.setattr(loop_mod, "build_model", build)
    return s


def _record(monkeypatch, name: str) -> list[dict]:
    """Wrap ``ops.<name>`` (looked up by the loop at call time); record its arguments and result per call."""
    calls: list[dict] = []
    real = getattr(ops, name)
    names = ("sched", "x0", "t", "noise", "out", "prediction")

    def wrapper(*args, **kwargs):
        res = real(*args, **kwargs)
        got = {**dict(zip(names, args, strict=False)), **kwargs, "result": res}
        calls.append({k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in got.items()})
        return res

    monkeypatch.setattr(ops, name, wrapper)
    return calls


class _RecordingAdamW(torch.optim.AdamW):
    """AdamW that records the LR of every param group when ``step`` runs (the LR actually applied)."""

    last: _RecordingAdamW | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.step_lrs: list[list[float]] = []
        self.register_step_pre_hook(lambda opt, a, k: opt.step_lrs.append([g["lr"] for g in opt.param_groups]))
        _RecordingAdamW.last = self


@pytest.fixture
def adamw(monkeypatch) -> type[_RecordingAdamW]:
    _RecordingAdamW.last = None
    monkeypatch.setattr(torch.optim, "AdamW", _RecordingAdamW)
    return _RecordingAdamW


def _linear_abar(T: int, zero_terminal_snr: bool, b0: float = 1e-4, b1: float = 0.02) -> np.ndarray:
    """abar of the linear schedule written out here (Ho et al.), optionally rescaled to zero terminal SNR."""
    betas = np.array([b0 + (b1 - b0) * i / (T - 1) for i in range(T)])
    abar = np.cumprod(1.0 - betas)
    if zero_terminal_snr:  # Lin et al. 2024: shift/scale sqrt(abar) so abar_0 is kept and abar_{T-1} = 0
        r = np.sqrt(abar)
        abar = abar[0] * ((r - r[-1]) / (r[0] - r[-1])) ** 2
    return abar


def _binomial_plausible(k: int, n: int, p: float, z: float = 4.5) -> bool:
    """k successes in n draws is within z standard deviations of Binomial(n, p) (exact 0/n when p is 0/1)."""
    sd = math.sqrt(n * p * (1 - p))
    return abs(k - n * p) <= z * sd


# --------------------------------------------------------------------------- 1. label dropout


def test_label_dropout_replaces_labels_by_the_null_class_at_the_configured_rate(tmp_path, spy):
    """The network receives the null class (= num_classes) for a Binomial(n, label_dropout) share of the labels,
    the true label otherwise; 0.1 is told apart from 0.0 and 0.5 by a 4.5-sigma bound on n = 320 draws."""
    n_batch, n_steps = 64, 5
    n = n_batch * n_steps
    seen = {}
    for rate in (0.0, 0.1, 0.5):
        spy.labels.clear()
        train(_cfg(tmp_path, f"p{rate}", conditional=True, label_dropout=rate, batch_size=n_batch, steps=n_steps,
                   num_clips=512))
        assert len(spy.labels) == n_steps and all(y is not None and y.shape == (n_batch,) for y in spy.labels)
        seen[rate] = torch.cat(spy.labels)
    null = spy.num_classes
    assert null == 3
    true = seen[0.0]  # same seed: same clips and labels in every run, only the dropout rate differs
    assert not (true == null).any() and true.min() >= 0 and len(true.unique()) == null
    for rate, got in seen.items():
        dropped = got == null
        assert torch.equal(got[~dropped], true[~dropped])  # kept labels are the data's labels
        k = int(dropped.sum())
        assert _binomial_plausible(k, n, rate), (rate, k)
        others = [p for p in (0.0, 0.1, 0.5) if p != rate]
        assert not any(_binomial_plausible(k, n, p) for p in others), (rate, k)  # the test separates the rates


def test_image_fraction_sends_image_sets_marked_independent_with_no_label(tmp_path, spy):
    """Joint image-video training: round(f * B) samples per batch reach the network marked independent and
    with the null class; without it the network never gets the mask, and the runs' losses differ."""
    n_batch, n_steps = 8, 3
    base = train(_cfg(tmp_path, "videos", conditional=True, label_dropout=0.0, batch_size=n_batch, steps=n_steps))
    assert spy.independent == [None] * n_steps
    true_labels = list(spy.labels)
    spy.labels.clear()
    spy.independent.clear()
    mixed = train(_cfg(tmp_path, "joint", conditional=True, label_dropout=0.0, batch_size=n_batch, steps=n_steps,
                       image_fraction=0.25))
    want = torch.tensor([False] * 6 + [True] * 2)  # round(0.25 * 8) = 2, the last two of the batch
    assert len(spy.independent) == n_steps and all(torch.equal(m, want) for m in spy.independent)
    for got, true in zip(spy.labels, true_labels, strict=True):
        assert torch.equal(got[:6], true[:6]) and (got[6:] == spy.num_classes).all()
    assert mixed.losses != base.losses


def test_image_fraction_that_gives_no_image_is_refused():
    with pytest.raises(ValueError, match="is no image sample"):
        TrainConfig(image_fraction=0.05, batch_size=4)
    with pytest.raises(ValueError, match=r"image_fraction must lie in \[0, 1\)"):
        TrainConfig(image_fraction=1.0)


def test_given_frames_reach_the_network_noise_free_and_add_no_gradient(tmp_path, spy):
    """Spec 18.8 on a flow run: a sample with given frames shows them as the clean clip (moving shapes: the
    background is exactly -1) with condition 0 (s = 0), its other frames noised at the sample's one condition;
    d loss / d out is exactly 0 on the given frames and not on the others."""
    train(_cfg(tmp_path, "given", process="flow", prediction="", given_frames=0.6, batch_size=8, steps=3))
    seen = 0
    for (x, t), g in zip(spy.inputs, spy.out_grads, strict=True):
        assert t.shape == x.shape[:1] + x.shape[2:3]  # (B, T): one condition per frame
        for i in range(x.shape[0]):
            given = t[i] == 0.0
            if not given.any():
                assert len(set(t[i].tolist())) == 1  # one level for the whole clip
                continue
            seen += 1
            assert not given.all() and len(set(t[i][~given].tolist())) == 1
            clean, noised = x[i][:, given], x[i][:, ~given]
            assert clean.abs().max() <= 1.0 and (clean == -1.0).float().mean() > 0.5
            assert (noised == -1.0).float().mean() < 0.01
            assert float(g[i][:, given].abs().max()) == 0.0 and float(g[i][:, ~given].abs().max()) > 0
    assert seen >= 3


def test_given_frames_and_image_sets_resume_exactly(tmp_path):
    """The given-frame masks and the image sets are drawn from the step's seed: resuming from the step-2
    checkpoint reproduces the uninterrupted run's losses and weights."""
    cfg = _cfg(tmp_path, process="flow", prediction="", given_frames=0.5, image_fraction=0.25, batch_size=8,
               steps=4, checkpoint_every=2)
    full = train(cfg)
    final = {k: v.clone() for k, v in load_checkpoint(full.out_dir / "last.safetensors").model_state.items()}
    resumed = train(cfg.replace(resume=str(full.out_dir / "checkpoints" / "step_0000002.safetensors")))
    assert resumed.losses == full.losses[2:]
    again = load_checkpoint(resumed.out_dir / "last.safetensors").model_state
    assert all(torch.equal(final[k], again[k]) for k in final)


def test_the_given_frames_loss_is_the_mean_over_the_generated_frames():
    """without_given_frames + generated_share on the flow loss equal the plain mean over the generated frames."""
    from vdm.backends.torch.training import given_frames as gf

    torch.manual_seed(0)
    x0, noise, out = torch.randn(3, 2, 5, 4, 4), torch.randn(3, 2, 5, 4, 4), torch.randn(3, 2, 5, 4, 4)
    s = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    alpha, sigma = 1 - s, s
    given = torch.tensor([[True, True, False, False, False], [False] * 5, [True, False, True, False, True]])
    target = (noise - x0).to(torch.float64)  # the flow prediction's target, u = eps - x0 (spec 14.3)
    got = ops.process_simple_loss(x0, noise, alpha, sigma, gf.without_given_frames(out, target, given), "flow")
    got = got * gf.generated_share(given).to(got.dtype)
    for i in range(3):
        err = (out[i][:, ~given[i]].double() - target[i][:, ~given[i]]) ** 2
        assert float(got[i]) == pytest.approx(float(err.mean()), rel=1e-6)


def test_draw_given_frames_patterns():
    from vdm.backends.torch.training.given_frames import draw_given_frames

    torch.manual_seed(1)
    m = draw_given_frames(4000, 6, 0.3, "cpu")
    has = m.any(dim=1)
    assert _binomial_plausible(int(has.sum()), 4000, 0.3)
    assert not m[has].all(dim=1).any()  # at least one generated frame
    rows = m[has].int()
    is_prefix = (rows.diff(dim=1) <= 0).all(dim=1) & (rows[:, 0] == 1)
    # Half are prefixes; of the scattered half (2^6 draws), the 5 proper prefixes and the 2 improper draws
    # (all given, none given: replaced by a prefix) are prefixes too: 1/2 + 1/2 * 7/64.
    assert float(is_prefix.float().mean()) == pytest.approx(0.5 + 0.5 * 7 / 64, abs=0.05)
    assert torch.equal(draw_given_frames(5, 6, 0.0, "cpu"), torch.zeros(5, 6, dtype=torch.bool))


def test_given_frames_refusals():
    with pytest.raises(ValueError, match="hybrid loss"):
        TrainConfig(given_frames=0.5, learn_sigma=True)
    with pytest.raises(ValueError, match="2 or more frames"):
        TrainConfig(given_frames=0.5, frames=1)


# --------------------------------------------------------------------------- 2. min-SNR


@pytest.mark.parametrize(("prediction", "zero_snr"), [("eps", False), ("v", False), ("v", True)])
def test_min_snr_weights_reach_the_loss(tmp_path, monkeypatch, prediction, zero_snr):
    """With min_snr_gamma the per-sample loss is w_t * mean((pred - target)^2), with w_t = min(SNR, gamma)/SNR
    (eps) or min(SNR, gamma)/(SNR + 1) (v) from an independently written abar table; without it w_t = 1, so the
    first step's loss (same weights, same batch) changes by exactly these weights."""
    gamma = 0.5
    calls = _record(monkeypatch, "simple_loss")
    kw = dict(prediction=prediction, zero_terminal_snr=zero_snr, batch_size=16, steps=1)
    off = train(_cfg(tmp_path, "off", **kw))
    on = train(_cfg(tmp_path, "on", min_snr_gamma=gamma, **kw))
    assert len(calls) == 2 and calls[0].get("min_snr_gamma") is None and calls[1]["min_snr_gamma"] == gamma

    c = calls[1]
    abar_all = _linear_abar(1000, zero_snr)
    np.testing.assert_allclose(c["sched"].abar64.numpy(), abar_all, rtol=1e-12, atol=1e-15)
    assert (abar_all[-1] == 0.0) == zero_snr
    t = c["t"].numpy()
    abar = abar_all[t]
    snr = abar / (1.0 - abar)
    w = np.minimum(snr, gamma) / (snr if prediction == "eps" else snr + 1.0)
    assert (np.abs(w - 1.0) > 0.05).any()  # the batch has timesteps where the weighting matters

    x0, noise, pred = (c[k].double() for k in ("x0", "noise", "out"))
    a = torch.from_numpy(abar).view(-1, 1, 1, 1, 1)
    target = noise if prediction == "eps" else a.sqrt() * noise - (1 - a).sqrt() * x0
    mse = ((pred - target) ** 2).flatten(1).mean(1).numpy()
    for call in calls:  # both runs saw the same batch and weights at step 0
        assert torch.equal(call["t"], c["t"]) and torch.equal(call["noise"], c["noise"])
        assert torch.equal(call["out"], c["out"])
    np.testing.assert_allclose(calls[0]["result"].numpy(), mse, rtol=1e-5)
    np.testing.assert_allclose(calls[1]["result"].numpy(), w * mse, rtol=1e-5)
    np.testing.assert_allclose(off.losses[0], mse.mean(), rtol=1e-5)
    np.testing.assert_allclose(on.losses[0], (w * mse).mean(), rtol=1e-5)
    assert abs(on.losses[0] - off.losses[0]) > 1e-3 * off.losses[0]


# --------------------------------------------------------------------------- 3. hybrid loss stop-gradient


def test_hybrid_vlb_term_trains_only_the_variance_channels(tmp_path, monkeypatch, spy):
    """In the loop's own backward, d loss / d (mean channels) is exactly the simple loss's 2 (pred - eps) / (B n),
    so the VLB term adds nothing there, while the variance channels get a non-zero gradient scaled by
    hybrid_lambda. Without the stop-gradient the VLB term would move the mean channels (checked too)."""
    calls = _record(monkeypatch, "hybrid_loss")
    cfg = _cfg(tmp_path, "lam1", learn_sigma=True, prediction="eps", steps=2)
    res = train(cfg)
    assert len(calls) == 2 and len(spy.out_grads) == 2
    assert all(c["lam"] == cfg.hybrid_lambda for c in calls)
    c, g = calls[1], spy.out_grads[1]  # step 1: outputs are no longer the zero-initialised ones
    b, ch = c["x0"].shape[:2]
    assert c["out"].shape[1] == 2 * ch and g.shape == c["out"].shape
    np.testing.assert_allclose(res.losses[1], float(c["result"].mean()), rtol=1e-6)

    pred = c["out"][:, :ch]
    n = pred[0].numel()
    simple_grad = 2.0 * (pred - c["noise"]) / (b * n)  # d/d pred of mean_b mean((pred - eps)^2)
    torch.testing.assert_close(g[:, :ch], simple_grad, rtol=1e-4, atol=1e-9)
    var_grad = g[:, ch:]
    assert var_grad.abs().max() > 1e-6 and (var_grad.flatten(1).abs().sum(1) > 0).all()

    # The check above can fail: the VLB term's own gradient w.r.t. the mean channels is far from zero.
    out = c["out"].clone().requires_grad_(True)
    x_t = ops.q_sample(c["sched"], c["x0"], c["t"], c["noise"])
    vlb = ops.vlb_term(c["sched"], c["x0"], x_t, c["t"], out, "eps").mean() * cfg.hybrid_lambda * c["sched"].T
    (vlb_grad,) = torch.autograd.grad(vlb, out)
    assert vlb_grad[:, :ch].abs().max() > 100 * (1e-4 * simple_grad.abs().max() + 1e-9)
    torch.testing.assert_close(vlb_grad[:, ch:], var_grad, rtol=1e-4, atol=1e-9)  # all of it from the VLB

    # hybrid_lambda scales the variance-channel gradient and leaves the mean channels alone (step 0, same batch).
    g_step0 = spy.out_grads[0]
    spy.out_grads.clear()
    train(_cfg(tmp_path, "lam3", learn_sigma=True, prediction="eps", steps=1, hybrid_lambda=3 * cfg.hybrid_lambda))
    assert calls[-1]["lam"] == 3 * cfg.hybrid_lambda and torch.equal(calls[-1]["out"], calls[0]["out"])
    torch.testing.assert_close(spy.out_grads[0][:, :ch], g_step0[:, :ch], rtol=0, atol=0)
    torch.testing.assert_close(spy.out_grads[0][:, ch:], 3 * g_step0[:, ch:], rtol=1e-4,
                               atol=1e-3 * float(g_step0[:, ch:].abs().max()))
    assert g_step0[:, ch:].abs().max() > 1e-8


# --------------------------------------------------------------------------- 4. EMA


def _ema_expected(traj, decay_at):
    e = dict(traj[0])
    for s in range(len(traj) - 1):
        d = decay_at(s)
        e = {k: d * e[k] + (1 - d) * traj[s + 1][k] for k in e}
    return e


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_ema_follows_the_warmed_up_decay(tmp_path, spy):
    """After optimizer step s (0-based) ema = d * ema + (1 - d) * param with d = min(ema_decay, (1+s)/(10+s)),
    starting from the initial weights; with ema_warmup off d = ema_decay. Replayed on the loop's own parameter
    trajectory; the neighbouring conventions (s+1, no warm-up) are shown to give different results."""
    steps = 3

    def run(name, **kw):
        spy.params.clear()
        res = train(_cfg(tmp_path, name, steps=steps, lr=1e-2, **kw))
        traj = [*spy.params, {n: p.detach().clone() for n, p in res.model.named_parameters()}]
        return traj, {n: p.detach().clone() for n, p in res.ema.named_parameters()}

    decay = 0.2  # the cap is reached at s = 2 ((1+2)/(10+2) = 0.25 > 0.2)
    traj, ema = run("warm", ema_decay=decay, ema_warmup=True)
    assert len(traj) == steps + 1 and _max_diff(traj[0], traj[-1]) > 1e-3
    warm = _ema_expected(traj, lambda s: min(decay, (1 + s) / (10 + s)))
    assert _max_diff(ema, warm) < 1e-6
    assert _max_diff(ema, _ema_expected(traj, lambda s: min(decay, (2 + s) / (11 + s)))) > 1e-5
    assert _max_diff(ema, _ema_expected(traj, lambda s: decay)) > 1e-5
    assert _max_diff(ema, traj[-1]) > 1e-5

    traj_off, ema_off = run("flat", ema_decay=0.5, ema_warmup=False)
    assert _max_diff(traj_off[-1], traj[-1]) == 0.0  # the EMA does not feed back into training
    assert _max_diff(ema_off, _ema_expected(traj, lambda s: 0.5)) < 1e-6
    assert _max_diff(ema_off, _ema_expected(traj, lambda s: min(0.5, (1 + s) / (10 + s)))) > 1e-5


# --------------------------------------------------------------------------- 5. LR warm-up


def test_lr_warmup_is_the_lr_adamw_applies(tmp_path, spy, adamw):
    """Step s uses lr * min(1, (s+1)/warmup) in every param group (then stays at lr: no decay), metrics.csv logs
    it, and Adam's first update moves each weight by at most (and mostly exactly) that LR; warmup 0 = flat lr."""
    lr, warmup, steps = 1e-3, 4, 6
    res = train(_cfg(tmp_path, "warm", lr=lr, warmup_steps=warmup, steps=steps))
    expected = [lr * min(1.0, (s + 1) / warmup) for s in range(steps)]
    got = adamw.last.step_lrs
    assert len(got) == steps and all(len(set(lrs)) == 1 for lrs in got)
    np.testing.assert_allclose([lrs[0] for lrs in got], expected, rtol=1e-12)
    with (res.out_dir / "metrics.csv").open() as f:
        np.testing.assert_allclose([float(r["lr"]) for r in csv.DictReader(f)], expected, rtol=1e-5)

    # Adam's first step is lr * g / (|g| + eps): |delta| = lr where the gradient is non-zero, else 0.
    delta = torch.cat([(spy.params[1][k] - spy.params[0][k]).abs().flatten() for k in spy.params[0]])
    moved = delta[delta > 0]
    assert moved.numel() > 0 and float(delta.max()) <= expected[0] * 1.01
    assert abs(float(moved.median()) - expected[0]) < 0.02 * expected[0]

    train(_cfg(tmp_path, "flat", lr=lr, warmup_steps=0, steps=2))
    assert [lrs[0] for lrs in adamw.last.step_lrs] == [lr, lr] != expected[:2]


@pytest.mark.parametrize("decay", ["linear", "cosine"])
def test_lr_decay_after_warmup_is_the_lr_adamw_applies(tmp_path, adamw, decay):
    """After warm-up the LR falls from lr towards lr_min: step s >= warmup at progress p = (s - w) / (n - w) runs at
    lr_min + (lr - lr_min) (1 - p) (linear) or ... (1 + cos(pi p)) / 2 (cosine); the last step is the lowest."""
    lr, lr_min, warmup, steps = 1e-3, 1e-4, 2, 7
    shape = {"linear": lambda p: 1 - p, "cosine": lambda p: (1 + math.cos(math.pi * p)) / 2}[decay]
    expected = [lr * (s + 1) / warmup if s < warmup else lr_min + (lr - lr_min) * shape((s - warmup) / (steps - warmup))
                for s in range(steps)]
    res = train(_cfg(tmp_path, decay, lr=lr, warmup_steps=warmup, steps=steps, lr_decay=decay, lr_min=lr_min))
    got = [lrs[0] for lrs in adamw.last.step_lrs]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got[warmup] == lr and lr_min < got[-1] == min(got[warmup:]) < 0.5 * lr
    with (res.out_dir / "metrics.csv").open() as f:
        np.testing.assert_allclose([float(r["lr"]) for r in csv.DictReader(f)], expected, rtol=1e-5)


def test_lr_decay_resumes_exactly(tmp_path, adamw):
    """The LR is a function of the step: resuming a cosine run from its step-2 checkpoint (as after a crash)
    applies the uninterrupted run's LRs and reproduces its losses and weights."""
    cfg = _cfg(tmp_path, warmup_steps=1, steps=5, lr_decay="cosine", checkpoint_every=2)
    full = train(cfg)
    full_lrs = [lrs[0] for lrs in adamw.last.step_lrs]
    final = {k: v.clone() for k, v in load_checkpoint(full.out_dir / "last.safetensors").model_state.items()}
    resumed = train(cfg.replace(resume=str(full.out_dir / "checkpoints" / "step_0000002.safetensors")))
    assert [lrs[0] for lrs in adamw.last.step_lrs] == full_lrs[2:]
    assert resumed.losses == full.losses[2:]
    again = load_checkpoint(resumed.out_dir / "last.safetensors").model_state
    assert all(torch.equal(final[k], again[k]) for k in final)


# --------------------------------------------------------------------------- 6. weight-decay groups


def test_weight_decay_applies_to_matrices_only(tmp_path, spy, adamw):
    """Every parameter is in exactly one AdamW group; ndim >= 2 ones decay with the configured value, 1-D ones
    (biases, norm scales) with 0. Against a weight_decay=0 run on the same batch, step 0 moves each matrix by
    exactly -lr * wd * p0 more and leaves every 1-D parameter bit-identical."""
    wd, lr = 0.5, 1e-3
    res = train(_cfg(tmp_path, "wd", weight_decay=wd, lr=lr, steps=1, conditional=True))
    groups = adamw.last.param_groups
    named = dict(res.model.named_parameters())
    count = Counter(id(p) for g in groups for p in g["params"])
    assert set(count) == {id(p) for p in named.values()} and set(count.values()) == {1}
    group_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    for name, p in named.items():
        assert group_of[id(p)] == (wd if p.ndim >= 2 else 0.0), name
    one_d = [n for n, p in named.items() if p.ndim < 2]
    assert any(n.endswith("bias") for n in one_d) and any("norm" in n and n.endswith("weight") for n in one_d)
    assert any(p.ndim >= 2 for p in named.values())

    p0 = spy.params[0]
    spy.params.clear()
    plain = train(_cfg(tmp_path, "nowd", weight_decay=0.0, lr=lr, steps=1, conditional=True))
    assert _max_diff(spy.params[0], p0) == 0.0  # same initial weights
    plain_p = dict(plain.model.named_parameters())
    for name, p in named.items():
        diff = (p - plain_p[name]).detach()
        if p.ndim >= 2:
            torch.testing.assert_close(diff, -lr * wd * p0[name], rtol=1e-3, atol=1e-8)
        else:
            assert torch.equal(diff, torch.zeros_like(diff)), name
    assert max(float((lr * wd * p0[n]).abs().max()) for n in named if named[n].ndim >= 2) > 1e-5
