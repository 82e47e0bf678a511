"""Execution-provider selection: explicit, checked before the session, never a silent CPU fallback."""

from __future__ import annotations

import pytest
from vdm.backends.ort import providers as P

NO_GPU = P.device_problem("cuda") is not None


def test_cpu_is_always_available():
    choice = P.choose_providers("cpu")
    assert choice.device == "cpu" and choice.providers == ["CPUExecutionProvider"] and choice.fallback_reason is None
    sess = P.create_session(_tiny_graph(), choice)
    assert sess.get_providers()[0] == "CPUExecutionProvider"


def test_unknown_device():
    with pytest.raises(P.ProviderUnavailable, match="unknown device"):
        P.choose_providers("tpu")


@pytest.mark.skipif(not NO_GPU, reason="a usable GPU is present")
@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_missing_gpu_fails_without_fallback(device):
    with pytest.raises(P.ProviderUnavailable) as exc:
        P.choose_providers(device)
    msg = str(exc.value)
    assert "\n" not in msg and device in msg and "--allow-fallback" in msg


@pytest.mark.skipif(not NO_GPU, reason="a usable GPU is present")
def test_fallback_warns_once():
    lines: list[str] = []
    choice = P.choose_providers("cuda", allow_fallback=True, warn=lines.append)
    assert choice.device == "cpu" and choice.requested == "cuda" and choice.fallback_reason
    assert len(lines) == 1 and "falling back to CPU" in lines[0]


def test_gpu_check_happens_before_any_session(monkeypatch):
    # The check must not rely on onnxruntime's provider list, which names CUDA on any machine.
    monkeypatch.setattr(P, "device_problem", lambda d: None if d == "cpu" else "no GPU (simulated)")
    with pytest.raises(P.ProviderUnavailable, match="simulated"):
        P.choose_providers("cuda")


def test_session_without_requested_provider_is_refused():
    # A choice that asks for CUDA but hands ORT only the CPU provider: what a silent fallback looks like.
    choice = P.ProviderChoice("cuda", "cuda", ["CPUExecutionProvider"])
    with pytest.raises(P.ProviderUnavailable, match="refusing to run silently on CPU"):
        P.create_session(_tiny_graph(), choice)


def test_provider_options(tmp_path):
    assert P.cuda_options()["cudnn_conv_algo_search"] == "HEURISTIC"
    prof = {"x": ("1x1x1x16x16", "2x1x8x16x16", "16x1x16x16x16"), "t": ("1", "2", "16")}
    opts = P.tensorrt_options(tmp_path / "cache", prof)
    assert opts["trt_engine_cache_enable"] == "1" and opts["trt_timing_cache_enable"] == "1"
    assert opts["trt_engine_cache_path"] == str(tmp_path / "cache") and (tmp_path / "cache").is_dir()
    assert opts["trt_profile_min_shapes"] == "x:1x1x1x16x16,t:1"
    assert opts["trt_profile_max_shapes"] == "x:16x1x16x16x16,t:16"


def test_session_options():
    so = P.session_options(threads=1)
    import onnxruntime as ort

    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.intra_op_num_threads == 1 and so.log_severity_level >= 3 and so.enable_mem_pattern
    assert 1 <= P.physical_cores()


def _tiny_graph() -> bytes:
    from onnx import helper

    node = helper.make_node("Relu", ["a"], ["b"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", 1, [2])],
                              [helper.make_tensor_value_info("b", 1, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9).SerializeToString()


def test_every_device_has_its_provider():
    from vdm.backends import sampling
    from vdm.backends.ort import providers

    assert tuple(providers.PROVIDER_NAMES) == providers.DEVICES == sampling.DEVICES["ort"]
