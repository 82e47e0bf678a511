"""ONNX export: metadata, parity at shapes other than the export example, the known pitfalls
(GroupNorm opset, attention with another frame count, frozen reshapes), fp16, failure modes, CLI."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

# Every layer kind of the real network (GroupNorm, spatial + temporal attention at every level,
# up/down sampling, class embedding, learned variance) at a size that exports in about a second.
from helpers import MICRO_UNET as MICRO
from typer.testing import CliRunner
from vdm.backends.ort import metadata as md
from vdm.backends.torch.models.unet import UNetConfig, VideoUNet
from vdm.backends.torch.training.checkpoint import save_checkpoint
from vdm.cli.main import app
from vdm.export import onnx_export as ox
from vdm.export.fp16 import boundary_types, float32_islands

import vdm_ref


def micro_model(num_classes: int = 3, learn_sigma: bool = True, seed: int = 0) -> VideoUNet:
    torch.manual_seed(seed)
    model = VideoUNet(UNetConfig(**MICRO, num_classes=num_classes, learn_sigma=learn_sigma)).eval()
    for p in model.conv_out.parameters():  # zero-initialised: make the outputs non-trivial
        torch.nn.init.normal_(p, std=0.1)
    return model


def meta_for(model: VideoUNet, schedule: str = "cosine") -> dict:
    cfg = model.config
    return {"spec_version": vdm_ref.SPEC_VERSION, "model_config": cfg.to_dict(),
            "schedule": vdm_ref.make_schedule(schedule, 1000).to_dict(), "prediction": "eps",
            "variance": "learned_range" if cfg.learn_sigma else "fixed_small", "num_classes": cfg.num_classes,
            "data": {"kind": "moving_shapes", "frames": cfg.frames, "size": cfg.image_size, "channels": 1},
            "step": 7}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = micro_model()
    path = tmp_path_factory.mktemp("export") / "micro.onnx"
    report = ox.export_model(model, meta_for(model), path)
    return model, path, report


def _ort(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _compare(model, path, b, f, s, seed=0, y=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, 1, f, s, s)).astype(np.float32)
    t = rng.integers(0, 1000, b).astype(np.float32)
    feeds = {"x": x, "t": t}
    args = [torch.from_numpy(x), torch.from_numpy(t)]
    if y:
        feeds["y"] = rng.integers(0, model.config.num_classes + 1, b).astype(np.int64)
        args.append(torch.from_numpy(feeds["y"]))
    with torch.no_grad():
        ref = model(*args).numpy()
    got = _ort(path).run(None, feeds)[0]
    return float(np.abs(got - ref).max()), float(np.abs(ref).max())


def test_export_report_and_parity_cases(exported):
    _, path, report = exported
    assert path.is_file() and report.path == path
    shapes = {(c.batch, c.frames) for c in report.cases}
    assert (3, 7) in shapes and (1, 1) in shapes  # other than the (1, 4) export example
    assert all(c.ok for c in report.cases)
    assert report.max_abs <= 1e-4 and report.tolerance == ox.TOLERANCES["fp32"]
    assert min(c.ref_scale for c in report.cases) > 0.05  # non-trivial outputs were compared
    assert not list(path.parent.glob(".*.tmp"))  # the temp file was renamed, not left behind


def test_metadata_is_self_contained(exported):
    model, path, report = exported
    proto = onnx.load(str(path))
    info = md.read_props({p.key: p.value for p in proto.metadata_props})
    sched = vdm_ref.make_schedule("cosine", 1000)
    assert info.abar.dtype == np.float64 and np.array_equal(info.abar, sched.abar)  # bit for bit
    assert np.array_equal(info.make_schedule().abar, sched.abar)
    assert info.schedule == sched.to_dict()
    assert (info.prediction, info.variance) == ("eps", "learned_range")
    assert (info.in_channels, info.out_channels, info.num_classes, info.null_class) == (1, 2, 3, 3)
    assert info.guidance and info.spec_version == vdm_ref.SPEC_VERSION
    assert info.size == md.Dim(8, 8, 8) and info.size_divisor == 2
    assert info.frames.min == 1 and info.frames.max >= 7 and info.frames.default == 4
    assert info.batch.max is None and not info.batch.fixed
    assert info.model_config == model.config.to_dict()
    assert info.weights_sha256 == md.weights_hash(model.state_dict())
    assert info.export["opset"] == 17 and info.export["exporter"] == "legacy"
    assert info.training["step"] == 7
    assert info.to_json() == report.info.to_json()


def test_graph_inputs_and_opset(exported):
    _, path, _ = exported
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["x", "t", "y"]
    assert [o.name for o in proto.graph.output] == ["out"]
    types = boundary_types(proto)
    assert types == {"x": onnx.TensorProto.FLOAT, "t": onnx.TensorProto.FLOAT, "y": onnx.TensorProto.INT64,
                     "out": onnx.TensorProto.FLOAT}
    x_dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert x_dims == ["batch", 1, "frames", 8, 8]
    assert {o.domain or "": o.version for o in proto.opset_import}[""] == 17
    ops = {n.op_type for n in proto.graph.node}
    assert "GroupNormalization" not in ops and "InstanceNormalization" in ops  # GroupNorm pitfall
    onnx.checker.check_model(proto, full_check=True)


def test_timestep_is_not_baked_in(exported):
    model, path, _ = exported
    sess = _ort(path)
    x = np.random.default_rng(1).standard_normal((2, 1, 4, 8, 8)).astype(np.float32)
    y = np.array([0, 1])
    a = sess.run(None, {"x": x, "t": np.array([10.0, 10.0], np.float32), "y": y})[0]
    b = sess.run(None, {"x": x, "t": np.array([900.0, 10.0], np.float32), "y": y})[0]
    assert np.abs(a[0] - b[0]).max() > 1e-3 and np.abs(a[1] - b[1]).max() < 1e-5


@pytest.mark.parametrize(("batch", "frames"), [(3, 7), (2, 9), (5, 1)])
def test_reshapes_and_attention_follow_dynamic_dims(exported, batch, frames):
    # Exported at B=1, T=4: a tracer that froze a Reshape or the temporal attention length fails here.
    model, path, _ = exported
    err, scale = _compare(model, path, batch, frames, 8, seed=batch * 10 + frames)
    assert err <= 1e-4 + 1e-4 * scale


def test_fixed_batch_and_frames(tmp_path):
    model = micro_model(num_classes=0, learn_sigma=False)
    path = tmp_path / "fixed.onnx"
    opts = ox.ExportOptions(dynamic_batch=False, dynamic_frames=False, batch=2, frames=5)
    report = ox.export_model(model, meta_for(model), path, opts)
    info = report.info
    assert info.batch == md.Dim(2, 2, 2) and info.frames == md.Dim(5, 5, 5)
    assert {(c.batch, c.frames) for c in report.cases} == {(2, 5)}
    proto = onnx.load(str(path))
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [2, 1, 5, 8, 8]
    assert [i.name for i in proto.graph.input] == ["x", "t"]  # unconditional: no y
    from vdm.backends.ort.session import OrtDenoiser

    den = OrtDenoiser(path)
    x = np.random.default_rng(0).standard_normal((3, 1, 5, 8, 8)).astype(np.float32)
    t = np.array([5.0, 500.0, 999.0], np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x), torch.from_numpy(t)).numpy()
    assert np.abs(den(x, t) - ref).max() < 1e-4  # a batch of 3 runs as padded chunks of 2
    with pytest.raises(ValueError, match="frames"):
        den.check_shape(2, 4, 8)


def test_dynamic_size(tmp_path):
    model = micro_model(num_classes=0, learn_sigma=False)
    report = ox.export_model(model, meta_for(model), tmp_path / "s.onnx", ox.ExportOptions(dynamic_size=True))
    assert {c.size for c in report.cases} >= {4, 8, 16}
    assert report.info.size == md.Dim(4, 16, 8)


def test_fp16_keeps_float32_islands(tmp_path, exported):
    model = exported[0]
    path = tmp_path / "h.onnx"
    report = ox.export_model(model, meta_for(model), path, ox.ExportOptions(fp16=True))
    proto = onnx.load(str(path))
    islands = float32_islands(proto)
    for op in ("Softmax", "InstanceNormalization", "Cos", "Sin"):
        assert islands[op]["float32"] > 0 and islands[op]["float16"] == 0, (op, islands[op])
    assert set(boundary_types(proto).values()) <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}
    conv_w = [i for i in proto.graph.initializer if i.dims and len(i.dims) == 4]
    assert conv_w and all(i.data_type == onnx.TensorProto.FLOAT16 for i in conv_w)
    assert report.tolerance == ox.TOLERANCES["fp16"]
    err, scale = _compare(model, path, 3, 7, 8)
    assert err <= 2e-2 + 2e-2 * scale and err > 1e-6  # really half precision, still close to fp32
    assert report.info.export["fp16"] is True


@pytest.mark.slow
def test_dynamo_exporter(tmp_path):
    model = micro_model(num_classes=0, learn_sigma=False)
    path = tmp_path / "d.onnx"
    report = ox.export_model(model, meta_for(model), path, ox.ExportOptions(exporter="dynamo"))
    assert report.max_abs <= 1e-4 and {(c.batch, c.frames) for c in report.cases} >= {(3, 7), (1, 1)}
    proto = onnx.load(str(path))
    assert "GroupNormalization" not in {n.op_type for n in proto.graph.node}
    assert {o.domain or "": o.version for o in proto.opset_import}[""] == 17
    assert [i.name for i in proto.graph.input] == ["x", "t"]


def test_bad_options_rejected():
    with pytest.raises(ox.ExportError, match="GroupNormalization-21"):
        ox.ExportOptions(opset=21).check()
    with pytest.raises(ox.ExportError, match="exporter"):
        ox.ExportOptions(exporter="jit").check()


def test_group_normalization_node_refused():
    node = onnx.helper.make_node("GroupNormalization", ["x", "s", "b"], ["out"], num_groups=2)
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", 1, None)],
                                   [onnx.helper.make_tensor_value_info("out", 1, None)])
    with pytest.raises(ox.ExportError, match="GroupNormalization"):
        ox._check_graph(onnx.helper.make_model(graph), conditional=False)


def test_failed_parity_writes_nothing(tmp_path, monkeypatch):
    model = micro_model(num_classes=0, learn_sigma=False)
    monkeypatch.setitem(ox.TOLERANCES, "fp32", (0.0, 0.0))
    out = tmp_path / "never.onnx"
    with pytest.raises(ox.ExportError, match="parity check failed"):
        ox.export_model(model, meta_for(model), out)
    assert list(tmp_path.iterdir()) == []  # neither the model nor a temp file


def test_metadata_errors():
    with pytest.raises(md.MetadataError, match="not a vdm model"):
        md.read_props({})
    with pytest.raises(md.MetadataError, match="malformed"):
        md.read_props({"vdm": "{not json"})
    with pytest.raises(md.MetadataError, match="format"):
        md.read_props({"vdm": '{"format": "other"}'})


# --------------------------------------------------------------------------- CLI


def _save(path, model, meta):
    save_checkpoint(path, model=model, ema=model, optimizer=None, meta=meta)
    return path


def test_export_cli(tmp_path):
    model = micro_model(num_classes=0, learn_sigma=False)
    ckpt = _save(tmp_path / "m.safetensors", model, meta_for(model))
    res = CliRunner().invoke(app, ["export", "--ckpt", str(ckpt), str(tmp_path / "m.onnx"), "--fixed-frames"])
    assert res.exit_code == 0, res.output
    assert "parity vs PyTorch: max abs error" in res.stdout and "wrote" in res.stdout
    assert "parity B=3 T=4" in res.stdout
    info = md.read_props({p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props})
    assert info.frames.fixed and info.data["kind"] == "moving_shapes"


@pytest.mark.parametrize("case", ["missing", "corrupt", "foreign", "suffix", "opset"])
def test_export_cli_bad_input(tmp_path, case):
    from safetensors.torch import save_file

    ckpt = tmp_path / "bad.safetensors"
    out = tmp_path / "m.onnx"
    if case == "corrupt":
        ckpt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    elif case == "foreign":
        save_file({"w": torch.zeros(2)}, str(ckpt))
    elif case in ("suffix", "opset"):
        model = micro_model(num_classes=0, learn_sigma=False)
        _save(ckpt, model, meta_for(model))
        if case == "suffix":
            out = tmp_path / "m.pt"
    args = ["export", "--ckpt", str(ckpt), str(out)] + (["--opset", "21"] if case == "opset" else [])
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output and not out.exists()
