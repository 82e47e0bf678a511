"""`vdm sample`: outputs, ORT/torch agreement from the command line, and one-line errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import MICRO_UNET as MICRO
from PIL import Image
from typer.testing import CliRunner
from vdm.backends.ort.providers import device_problem
from vdm.backends.torch.models.unet import UNetConfig, VideoUNet
from vdm.backends.torch.training.checkpoint import save_checkpoint
from vdm.cli.main import app
from vdm.export.onnx_export import ExportOptions, export_checkpoint

import vdm_ref


def _checkpoint(path, num_classes):
    torch.manual_seed(0)
    cfg = UNetConfig(**MICRO, num_classes=num_classes)
    model = VideoUNet(cfg)
    for p in model.conv_out.parameters():
        torch.nn.init.normal_(p, std=0.1)
    meta = {"model_config": cfg.to_dict(), "schedule": vdm_ref.make_schedule("linear", 1000).to_dict(),
            "prediction": "eps", "variance": "fixed_small", "num_classes": num_classes,
            "data": {"kind": "moving_shapes", "frames": 4, "size": 8, "channels": 1}, "step": 1}
    save_checkpoint(path, model=model, ema=model, optimizer=None, meta=meta)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("sample")
    out = {}
    for name, nc in (("cond", 3), ("uncond", 0)):
        ckpt = _checkpoint(d / f"{name}.safetensors", nc)
        onnx_path = d / f"{name}.onnx"
        export_checkpoint(ckpt, onnx_path, ExportOptions())
        out[name] = (ckpt, onnx_path)
    return out


def run(*args):
    res = CliRunner().invoke(app, ["sample", *map(str, args)])
    return res.exit_code, res.stdout, res.stderr


def test_ort_sample_writes_outputs(models, tmp_path):
    _, onnx_path = models["cond"]
    code, out, err = run("--model", onnx_path, "--out", tmp_path / "s.gif", "--steps", 4, "--num", 3,
                         "--guidance", 2.0, "--class", 1)
    assert code == 0, err
    assert (tmp_path / "s.gif").is_file() and (tmp_path / "s_sheet.png").is_file()
    assert f"wrote {tmp_path / 's.gif'}" in out and f"wrote {tmp_path / 's_sheet.png'}" in out
    sheet = Image.open(tmp_path / "s_sheet.png")
    assert sheet.size[0] > sheet.size[1]  # one row per sample, one column per frame (4 frames, 3 samples)
    assert "sampling" in err and "CPUExecutionProvider" in err


@pytest.mark.parametrize("suffix", [".mp4", ".png"])
def test_other_formats(models, tmp_path, suffix):
    code, _, err = run("--model", models["uncond"][1], "--out", tmp_path / f"v{suffix}", "--steps", 2, "--num", 2)
    assert code == 0, err
    assert (tmp_path / f"v{suffix}").stat().st_size > 0
    assert (tmp_path / "v_sheet.png").is_file() == (suffix != ".png")


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_ort_and_torch_backends_agree(models, tmp_path, sampler):
    ckpt, onnx_path = models["cond"]
    common = ["--steps", 6, "--num", 3, "--batch-size", 2, "--seed", 5, "--sampler", sampler, "--guidance", 1.5,
              "--frames", 6]
    assert run("--model", onnx_path, "--out", tmp_path / "o.npy", *common)[0] == 0
    assert run("--backend", "torch", "--model", ckpt, "--out", tmp_path / "t.npy", *common)[0] == 0
    a, b = np.load(tmp_path / "o.npy"), np.load(tmp_path / "t.npy")
    assert a.shape == (3, 1, 6, 8, 8) and a.dtype == np.float32
    assert np.abs(a - b).max() <= 1e-3 and np.abs(a).max() > 0.1


def _bad(models, tmp_path, case):
    cond_ckpt, cond_onnx = models["cond"]
    unc_ckpt, unc_onnx = models["uncond"]
    out = ["--out", tmp_path / "x.gif", "--steps", 2]
    if case == "missing":
        return ["--model", tmp_path / "nope.onnx", *out]
    if case == "truncated":
        p = tmp_path / "t.onnx"
        p.write_bytes(cond_onnx.read_bytes()[:3000])
        return ["--model", p, *out]
    if case == "foreign":
        import onnx
        from onnx import helper

        io = [helper.make_tensor_value_info(n, 1, [2]) for n in "ab"]
        p = tmp_path / "f.onnx"
        onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["a"], ["b"])], "g", io[:1],
                                                      io[1:])), str(p))
        return ["--model", p, *out]
    if case == "corrupt_ckpt":
        p = tmp_path / "c.safetensors"
        p.write_bytes(b"\xff" * 64)
        return ["--backend", "torch", "--model", p, *out]
    if case == "foreign_ckpt":
        from safetensors.torch import save_file

        p = tmp_path / "w.safetensors"
        save_file({"w": torch.zeros(3)}, str(p))
        return ["--backend", "torch", "--model", p, *out]
    if case == "ckpt_to_ort":
        return ["--model", cond_ckpt, *out]
    if case == "class_range":
        return ["--model", cond_onnx, "--class", 3, *out]
    if case == "class_uncond":
        return ["--model", unc_onnx, "--class", 0, *out]
    if case == "frames":
        return ["--model", cond_onnx, "--frames", 99, *out]
    if case == "size":
        return ["--model", cond_onnx, "--size", 16, *out]
    if case == "size_torch":
        return ["--backend", "torch", "--model", unc_ckpt, "--size", 9, *out]
    if case == "guidance_uncond":
        return ["--model", unc_onnx, "--guidance", 3.0, *out]
    if case == "guidance_uncond_torch":
        return ["--backend", "torch", "--model", unc_ckpt, "--guidance", 3.0, *out]
    if case == "out_suffix":
        return ["--model", unc_onnx, "--out", tmp_path / "x.avi"]
    if case == "steps":
        return ["--model", unc_onnx, "--steps", 5000, "--out", tmp_path / "x.gif"]
    raise AssertionError(case)


BAD = ["missing", "truncated", "foreign", "corrupt_ckpt", "foreign_ckpt", "ckpt_to_ort", "class_range",
       "class_uncond", "frames", "size", "size_torch", "guidance_uncond", "guidance_uncond_torch", "out_suffix",
       "steps"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_one_line(models, tmp_path, case):
    code, out, err = run(*_bad(models, tmp_path, case))
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in out + err
    assert not (tmp_path / "x.gif").exists()


@pytest.mark.skipif(device_problem("cuda") is None, reason="a usable GPU is present")
@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_gpu_requested_without_gpu(models, tmp_path, device):
    code, _, err = run("--model", models["uncond"][1], "--device", device, "--out", tmp_path / "x.gif")
    assert code == 2 and err.strip().count("\n") == 0 and "--allow-fallback" in err
    code, out, err = run("--model", models["uncond"][1], "--device", device, "--allow-fallback", "--steps", 2,
                         "--out", tmp_path / "x.gif")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "falling back to CPU" in line]
    assert len(warnings) == 1 and "CPUExecutionProvider" in err
    code, _, err = run("--backend", "torch", "--model", models["uncond"][0], "--device", "cuda",
                       "--out", tmp_path / "y.gif")
    assert code == 2 and "--allow-fallback" in err
