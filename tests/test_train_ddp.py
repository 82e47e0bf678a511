"""DDP on CPU: two gloo processes under torchrun train a tiny model; rank 0 alone writes files and
the ranks end with identical weights."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import pytest
from helpers import MICRO_TRAIN_MODEL
from safetensors.torch import load_file
from vdm.backends.torch.training.checkpoint import load_checkpoint

SMALL_MODEL = MICRO_TRAIN_MODEL

pytestmark = pytest.mark.slow


def _torchrun(args: list[str], cwd, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_ddp_ranks_stay_identical(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent("""
        import json, os, sys
        from safetensors.torch import save_file
        from vdm.backends.torch.training import TrainConfig, train

        res = train(TrainConfig(**json.loads(sys.argv[1])))
        state = {f"model.{k}": v.contiguous() for k, v in res.model.state_dict().items()}
        state.update({f"ema.{k}": v.contiguous() for k, v in res.ema.state_dict().items()})
        save_file(state, os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.safetensors"))
        print("world", res.world_size, "losses", json.dumps(res.losses))
    """))
    cfg = {"model": SMALL_MODEL, "frames": 4, "size": 8, "batch_size": 2, "steps": 4, "lr": 1e-3,
           "warmup_steps": 1, "checkpoint_every": 2, "preview_every": 4, "preview_num": 2, "preview_steps": 2,
           "log_every": 1, "device": "cpu", "out_dir": str(tmp_path / "out"), "num_clips": 32}
    proc = _torchrun([str(script), json.dumps(cfg), str(tmp_path)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("world 2") == 2
    r0, r1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert r0.keys() == r1.keys()
    for k in r0:
        assert (r0[k] == r1[k]).all(), f"rank weights differ at {k}"
    # Rank 0 wrote the checkpoint, and it holds those same weights.
    ck = load_checkpoint(tmp_path / "out" / "last.safetensors")
    assert ck.step == 4 and ck.meta["train_state"]["world_size"] == 2
    for k, v in ck.model_state.items():
        assert (v == r0[f"model.{k}"]).all()
    with (tmp_path / "out" / "metrics.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]  # one writer: no duplicate rows
    assert (tmp_path / "out" / "previews" / "step_0000004.gif").is_file()


def test_torchrun_cli(tmp_path):
    """The CLI under torchrun, with the options that hand the network per-sample and per-frame inputs
    (image sets marked independent, given frames with one condition per frame)."""
    out = tmp_path / "cli"
    flags = ["--model", "base_channels=8", "--model", "channel_mult=[1,2]", "--model", "attn_levels=[1]",
             "--model", "temporal_attn_levels=[1]", "--model", "norm_groups=4", "--frames", "4", "--size", "8",
             "--batch-size", "2", "--steps", "3", "--device", "cpu", "--preview-every", "0", "--quiet",
             "--process", "flow", "--image-fraction", "0.5", "--given-frames", "0.5", "--lr-decay", "cosine",
             "--out", str(out)]
    proc = _torchrun(["-m", "vdm.cli.main", "train", *flags], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ck = load_checkpoint(out / "last.safetensors")
    assert ck.step == 3 and ck.meta["train_state"]["world_size"] == 2
    assert (ck.meta["train"]["image_fraction"], ck.meta["train"]["given_frames"]) == (0.5, 0.5)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000003.safetensors"]
