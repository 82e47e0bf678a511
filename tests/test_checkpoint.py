"""Checkpoint format: exact round trip, atomic writes, and one-line errors for bad files."""

from __future__ import annotations

import copy
import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from vdm.backends.torch.models import preset
from vdm.backends.torch.models.unet import VideoUNet
from vdm.backends.torch.training.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    load_checkpoint,
    load_model,
    read_meta,
    restore_rng_state,
    save_checkpoint,
)

import vdm_ref

CFG = preset("tiny", base_channels=8, channel_mult=(1, 2), attn_levels=(1,), temporal_attn_levels=(1,),
             norm_groups=4)


def _trained(steps: int = 2) -> tuple[VideoUNet, VideoUNet, torch.optim.AdamW]:
    torch.manual_seed(0)
    model = VideoUNet(CFG)
    ema = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(steps):
        x = torch.randn(2, 1, 3, 8, 8)
        model(x, torch.rand(2) * 999).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(0.5)
    return model, ema, opt


def _meta(step: int = 2) -> dict:
    return {"model_config": CFG.to_dict(), "step": step,
            "schedule": {"name": "linear", "T": 1000, "params": {}, "zero_terminal_snr": False},
            "prediction": "eps", "variance": "fixed_small", "num_classes": 0}


@pytest.fixture()
def saved(tmp_path):
    model, ema, opt = _trained()
    path = tmp_path / "ckpt" / "step_2.safetensors"
    save_checkpoint(path, model=model, ema=ema, optimizer=opt, meta=_meta(), last=tmp_path / "last.safetensors")
    return path, model, ema, opt


def test_round_trip_is_exact(saved, tmp_path):
    path, model, ema, opt = saved
    ck = load_checkpoint(path)
    assert ck.step == 2 and ck.config == CFG
    assert ck.meta["spec_version"] == vdm_ref.SPEC_VERSION and "created" in ck.meta
    for k, v in model.state_dict().items():
        assert torch.equal(ck.model_state[k], v)
    for k, v in ema.state_dict().items():
        assert torch.equal(ck.ema_state[k], v)
    # Optimizer state restores exactly, and the next step then matches step for step.
    model2 = VideoUNet(CFG)
    model2.load_state_dict(ck.model_state)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-3)
    opt2.load_state_dict(ck.optim_state)
    ref, got = opt.state_dict(), opt2.state_dict()
    assert ref["param_groups"] == got["param_groups"]
    for pid, st in ref["state"].items():
        for key, val in st.items():
            assert torch.equal(got["state"][pid][key], val)
    x = torch.randn(2, 1, 3, 8, 8)
    for m, o in ((model, opt), (model2, opt2)):
        m(x, torch.full((2,), 10.0)).pow(2).mean().backward()
        o.step()
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)
    # last.safetensors holds the same bytes.
    assert (tmp_path / "last.safetensors").read_bytes() == path.read_bytes()


def test_load_model_uses_ema_and_is_pickle_free(saved, monkeypatch):
    path, model, ema, _ = saved

    def no_torch_load(*a, **k):
        raise AssertionError("torch.load must never be used for checkpoints")

    monkeypatch.setattr(torch, "load", no_torch_load)
    net, meta = load_model(path)
    assert not net.training and meta["step"] == 2
    for a, b in zip(net.parameters(), ema.parameters(), strict=True):
        assert torch.equal(a, b)
    raw, _ = load_model(path, ema=False)
    for a, b in zip(raw.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_rng_states_round_trip(tmp_path):
    model, ema, opt = _trained(1)
    torch.manual_seed(5)
    np.random.seed(6)
    random.seed(7)
    np.random.standard_normal()  # leaves a cached gaussian in the legacy state
    path = tmp_path / "a.safetensors"
    save_checkpoint(path, model=model, ema=ema, optimizer=opt, meta=_meta())
    expect = (torch.rand(3), np.random.standard_normal(3), [random.random() for _ in range(3)])
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng_state(load_checkpoint(path))
    got = (torch.rand(3), np.random.standard_normal(3), [random.random() for _ in range(3)])
    assert torch.equal(expect[0], got[0]) and np.array_equal(expect[1], got[1]) and expect[2] == got[2]


def test_atomic_write_never_leaves_a_torn_file(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new" * 1000)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]  # temp file cleaned up


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("cut", [10, 100, 0.5, -1])
def test_truncated_or_corrupt(saved, tmp_path, cut):
    path = saved[0]
    data = path.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else (len(data) + cut if cut < 0 else cut)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as exc:
        load_checkpoint(bad)
    assert "\n" not in str(exc.value)


def test_garbage_file(tmp_path):
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(bad)


def test_not_a_vdm_checkpoint(tmp_path):
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a vdm checkpoint"):
        load_checkpoint(other)


def test_spec_major_mismatch(tmp_path):
    model, ema, opt = _trained(1)
    path = tmp_path / "future.safetensors"
    save_checkpoint(path, model=model, ema=ema, optimizer=opt, meta={**_meta(), "spec_version": "3.0.0"})
    with pytest.raises(CheckpointError, match="major versions differ"):
        read_meta(path)


@pytest.mark.parametrize("version", ["1.0.0", "2.0.0", "2.1.0"])
def test_spec_v1_and_v2_checkpoints_load(tmp_path, version):
    """Spec 2.0.0 only added to 1.0.0, so checkpoints written under either load."""
    model, ema, opt = _trained(1)
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, model=model, ema=ema, optimizer=opt, meta={**_meta(), "spec_version": version})
    assert read_meta(path)["spec_version"] == version


def test_state_config_mismatch(tmp_path):
    model, ema, opt = _trained(1)
    wrong = {**CFG.to_dict(), "base_channels": 16}
    path = tmp_path / "mismatch.safetensors"
    save_checkpoint(path, model=model, ema=ema, optimizer=opt, meta={**_meta(), "model_config": wrong})
    with pytest.raises(CheckpointError, match="do not match the stored model_config"):
        load_model(path)
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("conv_out")}
    path2 = tmp_path / "missing.safetensors"
    save_checkpoint(path2, model=sd, ema=None, optimizer=None, meta=_meta())
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path2)


def test_meta_layout(saved):
    from safetensors import safe_open

    with safe_open(str(saved[0]), framework="pt") as f:
        keys = list(f.keys())
        meta = json.loads(f.metadata()["vdm"])
    assert any(k.startswith("model.") for k in keys) and any(k.startswith("ema.") for k in keys)
    assert any(k.startswith("optim.state.") for k in keys) and "rng.torch" in keys
    assert meta["optimizer"]["class"] == "AdamW"
    assert meta["optimizer"]["param_groups"][0]["lr"] == 1e-3
    assert set(meta["rng"]) == {"numpy", "python"}
    for key in ("spec_version", "model_config", "schedule", "prediction", "variance", "step", "created"):
        assert key in meta
