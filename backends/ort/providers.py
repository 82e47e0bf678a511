"""Execution-provider selection for ONNX Runtime: explicit, checked, never silently downgraded.

onnxruntime-gpu lists CUDA and TensorRT among ``get_available_providers()`` on any machine,
GPU or not, and when a session is then created it logs native errors and quietly runs on CPU.
So usability is checked *before* a session exists (driver, GPU count, CUDA runtime, cuDNN,
cuBLAS, TensorRT libraries), and the providers a session really got are asserted after.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from ..sampling import DEVICES as SAMPLING_DEVICES

DEVICES = SAMPLING_DEVICES["ort"]  # one table: vdm sample --device reads the same
PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
# ORT severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal. Errors we care about are raised
# as Python exceptions, so native logging stays at fatal to keep the terminal clean.
QUIET_SEVERITY = 4


class ProviderUnavailable(RuntimeError):
    """The requested execution provider cannot run here (and no fallback was allowed)."""


def _ort() -> Any:
    import onnxruntime as ort

    ort.set_default_logger_severity(QUIET_SEVERITY)
    return ort


def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads share a core's FMA units, so ORT's
    intra-op pool is fastest at one thread per physical core)."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        allowed = set(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    try:
        phys = core = ""
        cpu = -1
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "processor":
                cpu = int(value)
            elif key == "physical id":
                phys = value
            elif key == "core id":
                core = value
            elif not key and cpu in allowed:
                cores.add((phys, core or str(cpu)))
                phys = core = ""
        if cpu in allowed and (phys or core):
            cores.add((phys, core or str(cpu)))
    except (OSError, ValueError):
        cores = set()
    return max(1, min(len(cores) or len(allowed), len(allowed)))


def _cuda_major() -> int:
    try:
        from onnxruntime.capi import build_and_package_info as info

        return int(str(getattr(info, "cuda_version", "") or "0").split(".")[0])
    except (ImportError, ValueError):
        return 0


def _try_load(*names: str) -> str | None:
    """Load the first loadable shared library of ``names``; return None on success, else the
    name that failed (for the error message)."""
    for name in names:
        try:
            ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
            return None
        except OSError:
            continue
    return names[0]


@cache
def device_problem(device: str) -> str | None:
    """Why ``device`` cannot run ONNX Runtime sessions here, or None if it can."""
    if device not in DEVICES:
        return f"unknown device {device!r}; choose one of {', '.join(DEVICES)}"
    if device == "cpu":
        return None
    ort = _ort()
    want = PROVIDER_NAMES[device]
    if want not in ort.get_available_providers():
        return f"this onnxruntime build ({ort.__version__}) has no {want}; install onnxruntime-gpu"
    # The driver library exists only where an NVIDIA driver is installed.
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver (libcuda.so.1 not found): no usable GPU on this machine"
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return "the NVIDIA driver reports no usable GPU"
    # Let onnxruntime find CUDA/cuDNN from the nvidia-* pip wheels if present; it prints on stdout.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
        ort.preload_dlls(directory="")
    major = _cuda_major() or 12
    for libs in ((f"libcudart.so.{major}",), (f"libcublas.so.{major}",), ("libcudnn.so.9",)):
        missing = _try_load(*libs)
        if missing:
            return f"{missing} cannot be loaded (CUDA {major} runtime / cuDNN 9 libraries missing)"
    if device == "tensorrt":
        missing = _try_load("libnvinfer.so.10", "libnvinfer.so")
        if missing:
            return f"{missing} cannot be loaded (TensorRT libraries missing)"
    return None


@dataclass
class ProviderChoice:
    """What a session will be created with."""

    requested: str
    device: str  # the device actually used (differs from requested only after a fallback)
    providers: list[Any] = field(default_factory=list)
    fallback_reason: str | None = None

    @property
    def provider_name(self) -> str:
        return PROVIDER_NAMES[self.device]


def cuda_options(device_id: int = 0) -> dict[str, str]:
    # DEFAULT conv-algo search tries one algorithm without benchmarking and can be very slow.
    return {"device_id": str(device_id), "cudnn_conv_algo_search": "HEURISTIC",
            "do_copy_in_default_stream": "1"}


def tensorrt_options(cache_dir: str | os.PathLike[str], profile: dict[str, tuple[str, str, str]] | None,
                     *, fp16: bool = False, device_id: int = 0) -> dict[str, str]:
    """TensorRT EP options: engine + timing caches under ``cache_dir`` and explicit shape
    profiles ``{input: (min, opt, max)}`` with shapes written like ``1x1x8x32x32``."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    opts = {
        "device_id": str(device_id),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": str(cache_dir),
        "trt_fp16_enable": "1" if fp16 else "0",
    }
    if profile:
        for i, key in enumerate(("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")):
            opts[key] = ",".join(f"{name}:{shapes[i]}" for name, shapes in profile.items())
    return opts


def choose_providers(
    device: str,
    *,
    allow_fallback: bool = False,
    trt_cache_dir: str | os.PathLike[str] | None = None,
    trt_profile: dict[str, tuple[str, str, str]] | None = None,
    warn: Any = None,
) -> ProviderChoice:
    """Pick the providers for ``device``. If it cannot run here: raise ProviderUnavailable, or,
    with ``allow_fallback``, call ``warn`` with one line and choose CPU."""
    if device not in DEVICES:
        raise ProviderUnavailable(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    problem = device_problem(device)
    if problem:
        if not allow_fallback:
            raise ProviderUnavailable(f"device {device!r} unavailable: {problem} (use --allow-fallback to run on CPU)")
        line = f"warning: device {device!r} unavailable ({problem}); falling back to CPU"
        (warn or print)(line)
        return ProviderChoice(device, "cpu", ["CPUExecutionProvider"], fallback_reason=problem)
    if device == "cpu":
        return ProviderChoice(device, "cpu", ["CPUExecutionProvider"])
    if device == "cuda":
        return ProviderChoice(device, "cuda", [("CUDAExecutionProvider", cuda_options()), "CPUExecutionProvider"])
    cache = trt_cache_dir or Path.home() / ".cache" / "vdm" / "tensorrt"
    return ProviderChoice(device, "tensorrt", [
        ("TensorrtExecutionProvider", tensorrt_options(cache, trt_profile)),
        ("CUDAExecutionProvider", cuda_options()),
        "CPUExecutionProvider",
    ])


def session_options(*, threads: int | None = None, profile_prefix: str | None = None, spinning: bool = True) -> Any:
    """Session options used everywhere: all graph optimisations, one intra-op thread per
    physical core, memory-pattern planning, native logging silenced. ``spinning=False`` stops
    idle pool threads from busy-waiting (for small sessions that run between big ones)."""
    ort = _ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or physical_cores()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_mem_pattern = True
    so.log_severity_level = QUIET_SEVERITY
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


def create_session(model: str | os.PathLike[str] | bytes, choice: ProviderChoice, *,
                   options: Any = None) -> Any:
    """InferenceSession on ``choice``; raises ProviderUnavailable if ORT dropped the provider."""
    ort = _ort()
    src = model if isinstance(model, bytes) else str(model)
    sess = ort.InferenceSession(src, sess_options=options or session_options(), providers=choice.providers)
    got = sess.get_providers()
    if choice.provider_name not in got:
        raise ProviderUnavailable(
            f"onnxruntime did not enable {choice.provider_name} (session has {got}); refusing to run silently on CPU")
    return sess
