"""Training loop: config resolution, data order, exact resume, NaN handling, outputs, CLI."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import torch

# A very small network so that each step takes milliseconds on one CPU thread.
from helpers import MICRO_TRAIN_MODEL
from typer.testing import CliRunner
from vdm.backends.torch import training as train_mod
from vdm.backends.torch.training import (
    QUICKSTART_TRAIN,
    TrainConfig,
    TrainingDiverged,
    resolve_config,
    resolve_run_config,
    train,
)
from vdm.backends.torch.training.batches import StepBatchSampler
from vdm.backends.torch.training.checkpoint import load_checkpoint
from vdm.backends.torch.training.config import load_config_file

SMALL_MODEL = MICRO_TRAIN_MODEL




def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(model=SMALL_MODEL, frames=4, size=8, batch_size=4, steps=6, lr=1e-3, warmup_steps=2,
                log_every=1, checkpoint_every=3, preview_every=0, out_dir=str(tmp_path / "run"), device="cpu",
                num_clips=64, ema_decay=0.9)
    base.update(kw)
    return TrainConfig(**base)


# --------------------------------------------------------------------------- config


def test_config_file_json_and_toml_and_flag_precedence(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"lr": 0.01, "steps": 7, "model": {"base_channels": 8}}))
    (tmp_path / "c.toml").write_text('lr = 0.02\nsteps = 9\nschedule = "linear"\n[model]\nbase_channels = 16\n')
    cfg = resolve_config(tmp_path / "c.json", {"steps": 11, "lr": None})
    assert (cfg.lr, cfg.steps, cfg.model) == (0.01, 11, {"base_channels": 8})
    cfg = resolve_config(tmp_path / "c.toml")
    assert (cfg.lr, cfg.steps, cfg.schedule, cfg.model) == (0.02, 9, "linear", {"base_channels": 16})
    assert resolve_run_config(None, {"steps": 5}, quickstart=True) == QUICKSTART_TRAIN.replace(steps=5)


def test_config_errors(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"lrr": 1}))
    with pytest.raises(ValueError, match="unknown key.*lrr"):
        load_config_file(tmp_path / "bad.json")
    (tmp_path / "broken.toml").write_text("lr = = 1")
    with pytest.raises(ValueError, match="cannot parse"):
        load_config_file(tmp_path / "broken.toml")
    with pytest.raises(ValueError, match="not found"):
        load_config_file(tmp_path / "none.json")
    with pytest.raises(ValueError, match="prediction must be one of"):
        TrainConfig(prediction="score")
    with pytest.raises(ValueError, match="needs a path"):
        TrainConfig(data="folder:")
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()


def test_data_order_is_a_function_of_seed_and_step_and_shards_by_rank():
    one = StepBatchSampler(n=10, batch=4, seed=3, start=0, end=5)
    again = StepBatchSampler(n=10, batch=4, seed=3, start=2, end=5)
    assert list(one)[2:] == list(again)  # starting mid-way needs no iterator state
    r0 = StepBatchSampler(n=10, batch=2, seed=3, start=0, end=5, rank=0, world=2)
    r1 = StepBatchSampler(n=10, batch=2, seed=3, start=0, end=5, rank=1, world=2)
    assert [a + b for a, b in zip(r0, r1, strict=True)] == list(one)
    # Every epoch is a permutation of the whole dataset.
    flat = [i for batch in StepBatchSampler(n=10, batch=5, seed=0, start=0, end=2) for _, i in batch]
    assert sorted(flat) == list(range(10))
    assert list(StepBatchSampler(n=10, batch=4, seed=4, start=0, end=3)) != list(one)[:3]


# --------------------------------------------------------------------------- training


def test_outputs_and_checkpoint_meta(tmp_path):
    cfg = _cfg(tmp_path, preview_every=3, preview_num=2, preview_steps=2, log_every=2)
    res = train(cfg)
    out = tmp_path / "run"
    assert res.step == 6 and len(res.losses) == 6
    for name in ("config.json", "metrics.csv", "loss.png", "last.safetensors", "checkpoints/step_0000003.safetensors",
                 "checkpoints/step_0000006.safetensors", "previews/step_0000003.gif", "previews/step_0000006.gif"):
        assert (out / name).is_file(), name
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    assert set(rows[0]) == {"step", "loss", "lr", "grad_norm", "steps_per_s", "elapsed"}
    ck = load_checkpoint(out / "last.safetensors")
    assert ck.step == 6 and ck.meta["train"]["steps"] == 6 and ck.meta["data"]["kind"] == "moving_shapes"
    assert ck.meta["schedule"]["name"] == "cosine" and ck.meta["variance"] == "fixed_small"
    assert ck.config.base_channels == 8 and ck.config.frames == 4 and ck.config.image_size == 8
    # EMA differs from the raw weights after training.
    assert any(not torch.equal(ck.ema_state[k], ck.model_state[k]) for k in ck.model_state)


def test_same_seed_same_losses_and_resume_is_exact(tmp_path):
    full = train(_cfg(tmp_path / "a"))
    again = train(_cfg(tmp_path / "b"))
    assert full.losses == again.losses  # deterministic for a seed
    first = train(_cfg(tmp_path / "c", steps=3))
    assert first.losses == full.losses[:3]
    resumed = train(_cfg(tmp_path / "c", steps=6, resume="auto"))
    assert resumed.losses == full.losses[3:]  # bit-exact continuation
    a = load_checkpoint(tmp_path / "a" / "run" / "last.safetensors")
    c = load_checkpoint(tmp_path / "c" / "run" / "last.safetensors")
    for k in a.model_state:
        assert torch.equal(a.model_state[k], c.model_state[k])
        assert torch.equal(a.ema_state[k], c.ema_state[k])
    # The CSV of the resumed run has each step exactly once.
    with (tmp_path / "c" / "run" / "metrics.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5, 6]


def test_resume_from_explicit_path_after_a_later_crash_drops_stale_rows(tmp_path):
    full = train(_cfg(tmp_path / "a", steps=5, checkpoint_every=2))
    run = _cfg(tmp_path / "b", steps=5, checkpoint_every=2)
    train(run)
    # Pretend the run crashed after step 5 but we resume from step 2's checkpoint.
    ckpt2 = tmp_path / "b" / "run" / "checkpoints" / "step_0000002.safetensors"
    resumed = train(run.replace(resume=str(ckpt2)))
    assert resumed.losses == full.losses[2:]
    with (tmp_path / "b" / "run" / "metrics.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5]


def test_resume_rejects_changed_model_options(tmp_path):
    train(_cfg(tmp_path, steps=2))
    with pytest.raises(ValueError, match="options differ.*lr"):
        train(_cfg(tmp_path, steps=4, lr=0.5, resume="auto"))
    # Tuples and lists are the same option (JSON has only lists).
    as_tuples = {k: tuple(v) if isinstance(v, list) else v for k, v in SMALL_MODEL.items()}
    assert train(_cfg(tmp_path, steps=3, resume="auto", model=as_tuples)).step == 3
    # The checkpoint's options are the base of a resumed run's config.
    cfg = resolve_run_config(None, {"resume": "auto", "out_dir": str(tmp_path / "run"), "steps": 5})
    assert cfg.model == SMALL_MODEL and cfg.steps == 5 and cfg.frames == 4


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    def poison(step, x0):
        return x0 * float("nan") if step == 4 else x0  # 0-based: the 5th step

    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 5.*step_0000003.*\(step 3\)"):
        train(_cfg(tmp_path, steps=8, checkpoint_every=3), batch_hook=poison)
    out = tmp_path / "run"
    assert load_checkpoint(out / "last.safetensors").step == 3
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000003.safetensors"]
    with (out / "metrics.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]


def test_variants_conditional_learned_sigma_min_snr(tmp_path):
    cfg = _cfg(tmp_path, steps=2, conditional=True, learn_sigma=True, min_snr_gamma=5.0, prediction="v",
               label_dropout=0.5, schedule="linear", zero_terminal_snr=True, weight_decay=0.01,
               preview_every=2, preview_num=2, preview_steps=2)
    res = train(cfg)
    ck = load_checkpoint(res.last_checkpoint)
    assert ck.config.num_classes == 3 and ck.config.learn_sigma and ck.meta["variance"] == "learned_range"
    assert ck.meta["schedule"]["zero_terminal_snr"] is True
    assert all(map(torch.isfinite, map(torch.tensor, res.losses)))


def test_cuda_requested_but_missing(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        train(_cfg(tmp_path, device="cuda"))


# --------------------------------------------------------------------------- CLI


def _app():
    import typer
    from vdm.cli import eval as eval_cli
    from vdm.cli import train as train_cli

    app = typer.Typer()
    train_cli.register(app)
    eval_cli.register(app)
    return app


SMALL_FLAGS = ["--model", "base_channels=8", "--model", "channel_mult=[1,2]", "--model", "attn_levels=[1]",
               "--model", "temporal_attn_levels=[1]", "--model", "norm_groups=4", "--frames", "4", "--size", "8",
               "--batch-size", "4", "--device", "cpu", "--preview-every", "0", "--log-every", "1", "--quiet"]


def test_cli_help_documents_every_option():
    res = CliRunner().invoke(_app(), ["train", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    flags = {f.name.replace("_", "-") for f in dataclasses.fields(TrainConfig)}
    renamed = {"out-dir": "out", "schedule-params": "schedule-param"}
    flags = {renamed.get(f, f) for f in flags}
    missing = [f for f in flags if f"--{f}" not in res.output]
    assert not missing, missing


def test_cli_train_resume_and_errors(tmp_path):
    app, out = _app(), str(tmp_path / "cli")
    runner = CliRunner()
    res = runner.invoke(app, ["train", *SMALL_FLAGS, "--steps", "2", "--out", out])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", "--resume", "auto", "--out", out, "--steps", "3", "--quiet"])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(tmp_path / "cli" / "last.safetensors").step == 3
    res = runner.invoke(app, ["train", "--prediction", "score"])
    assert res.exit_code == 2 and "prediction must be one of" in res.output
    res = runner.invoke(app, ["train", "--resume", str(tmp_path / "missing.safetensors")])
    assert res.exit_code == 2 and "not found" in res.output
    if not torch.cuda.is_available():
        res = runner.invoke(app, ["train", *SMALL_FLAGS, "--device", "cuda", "--out", out + "2"])
        assert res.exit_code == 2 and "CUDA is not available" in res.output


def test_cli_nan_exits_nonzero(tmp_path, monkeypatch):
    real = train_mod.train

    def with_poison(cfg, **kw):
        return real(cfg, **kw, batch_hook=lambda step, x0: x0 * float("inf") if step == 1 else x0)

    monkeypatch.setattr(train_mod, "train", with_poison)
    res = CliRunner().invoke(_app(), ["train", *SMALL_FLAGS, "--steps", "4", "--checkpoint-every", "1",
                                      "--out", str(tmp_path / "nan")])
    assert res.exit_code == 1
    assert "at step 2" in res.output and "Last good checkpoint" in res.output
    assert load_checkpoint(tmp_path / "nan" / "last.safetensors").step == 1


def test_existing_run_is_not_clobbered(tmp_path):
    train(_cfg(tmp_path, steps=4, checkpoint_every=2))
    with pytest.raises(ValueError, match="already holds a training run.*--resume auto.*--overwrite"):
        train(_cfg(tmp_path, steps=1))
    res = train(_cfg(tmp_path, steps=1, overwrite=True, num_workers=1))
    assert res.step == 1
    out = tmp_path / "run"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000001.safetensors"]
    assert load_checkpoint(out / "last.safetensors").step == 1


def test_cli_help_defaults_match_train_config():
    """The flags default to None (so that explicit flags can be told apart); their help texts
    state the defaults, which must stay equal to TrainConfig's."""
    import re

    import typer.main

    cmd = typer.main.get_command(_app()).commands["train"]
    defaults = TrainConfig().to_dict()
    checked = 0
    for param in cmd.params:
        m = re.search(r"\(default: ([^)]*)\)", getattr(param, "help", "") or "")
        if not m or param.name == "split_dir":  # split_dir's default is derived from the data root
            continue
        text, value = m.group(1), defaults[{"out": "out_dir"}.get(param.name, param.name)]
        if isinstance(value, bool):
            assert (text in ("on",)) == value or (text == "unconditional" and not value), (param.name, text)
        elif isinstance(value, (int, float)):
            assert float(text) == value, (param.name, text, value)
        else:
            assert text == value, (param.name, text, value)
        checked += 1
    assert checked >= 35


@pytest.mark.slow
def test_sigkill_mid_run_leaves_a_loadable_checkpoint(tmp_path):
    """Kill -9 a run that checkpoints every step; last.safetensors must load and resume."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg = _cfg(tmp_path, steps=100_000, checkpoint_every=1, log_every=1)
    code = ("import json, sys, torch; torch.set_num_threads(1)\n"
            "from vdm.backends.torch.training import TrainConfig, train\n"
            "train(TrainConfig(**json.loads(sys.argv[1])))\n")
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(cfg.to_dict())],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    last = tmp_path / "run" / "last.safetensors"
    try:
        deadline = time.monotonic() + 60
        while not last.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        time.sleep(1.0)  # let it write a few more checkpoints, then kill at an arbitrary point
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ck = load_checkpoint(last)
    assert ck.step >= 1
    res = train(cfg.replace(steps=ck.step + 1, resume="auto"))
    assert res.step == ck.step + 1
    assert not list((tmp_path / "run").rglob("*.tmp"))  # leftovers of the killed writes are cleaned up


def test_train_help_names_every_row_of_the_torch_tables():
    """`vdm train --help` must not import torch, so it names presets, datasets and LR decays in words; this keeps
    those words in step with the tables (ARCHITECTURES, DATASETS, LR_DECAYS)."""
    from typer.testing import CliRunner
    from vdm.backends.torch.data import DATASETS
    from vdm.backends.torch.models import ARCHITECTURES
    from vdm.backends.torch.training.optim import LR_DECAYS
    from vdm.cli.main import app

    res = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "400"})
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    names = [*ARCHITECTURES, *(p for a in ARCHITECTURES.values() for p in a.presets), *DATASETS, *LR_DECAYS]
    assert [n for n in names if n not in text] == []
