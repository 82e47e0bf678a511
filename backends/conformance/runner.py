"""Load a backend from a command-line spec, run every clause on it, and collect a report."""

from __future__ import annotations

import datetime as _dt
import importlib
import inspect
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write_bytes
from .adapters import BackendError
from .checks import OpResult, check_op, skipped
from .protocol import DTYPES, OPS, clause_of, spec_version
from .xfail import XfailEntry, apply_xfail

CUDA_MISSING = "CUDA is not available on this machine; run on a GPU machine or use --device cpu"
BUILTIN = ("numpy", "torch", "torch:cpu", "torch:cuda", "ort")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_backend(spec: str, device: str | None = None, dtype: str | None = None) -> Any:
    """The adapter named by ``spec``: numpy, torch, torch:cuda, ort, or package.module:attr, where attr
    is an adapter instance, an adapter class, or a factory; the last two are called with
    ``device=`` and ``dtype=``. Raises BackendError with a one-line message."""
    if dtype is not None and dtype not in DTYPES:
        raise BackendError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if spec in ("torch:cuda", "torch:cpu"):
        wanted = spec.split(":")[1]
        if device is not None and device.split(":")[0] != wanted:
            raise BackendError(f"backend {spec!r} conflicts with --device {device}")
        device = device or wanted
    if device is not None and device.split(":")[0] == "cuda" and not _cuda_available():
        raise BackendError(CUDA_MISSING)
    if device is not None and device.split(":")[0] not in ("cpu", "cuda"):
        raise BackendError(f"unknown device {device!r}; use cpu or cuda")
    if spec == "numpy":
        from .adapters import NumpyAdapter

        return _check_adapter(NumpyAdapter(device=device or "cpu", dtype=dtype or "float64"), spec)
    if spec in ("torch", "torch:cpu", "torch:cuda"):
        from .adapters import TorchAdapter

        try:
            adapter = TorchAdapter(device=device or "cpu", dtype=dtype or "float64")
        except ImportError as exc:  # torch, or the backend's modules, missing
            raise BackendError(f"the torch backend cannot be imported: {exc}") from None
        return _check_adapter(adapter, spec)
    if spec == "ort":
        # The sampler and guidance clauses as ONNX graphs; float32 by default, as `vdm sample` runs them.
        return _check_adapter(_load_object("vdm.backends.ort.conformance:OrtStepBackend", device, dtype or "float32"),
                              spec)
    if ":" not in spec:
        raise BackendError(f"unknown backend {spec!r}: use numpy, torch, torch:cuda, ort or package.module:attr")
    return _check_adapter(_load_object(spec, device, dtype), spec)


def _load_object(spec: str, device: str | None, dtype: str | None) -> Any:
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise BackendError(f"backend {spec!r}: expected package.module:attr")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise BackendError(f"cannot import backend module {mod_name!r}: {exc}") from None
    except Exception as exc:  # a module that crashes on import
        raise BackendError(f"importing backend module {mod_name!r} failed: {type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise BackendError(f"module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if inspect.isclass(obj) or inspect.isroutine(obj) or type(obj).__name__ == "partial":
        try:
            return obj(device=device or "cpu", dtype=dtype or "float64")
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"creating backend {spec} (device={device or 'cpu'}, dtype={dtype or 'float64'}) "
                               f"failed: {type(exc).__name__}: {exc}") from None
    # An instance is fixed to its own device and dtype.
    for opt, want in (("dtype", dtype), ("device", device)):
        have = getattr(obj, opt, None)
        if want is not None and have is not None and str(have) != want:
            raise BackendError(f"backend instance {spec} uses {opt} {have}, not {want}; "
                               "export a class or factory to choose it")
    return obj


def _check_adapter(adapter: Any, spec: str) -> Any:
    missing = [a for a in ("name", "version", "device", "dtype") if not isinstance(getattr(adapter, a, None), str)]
    if missing:
        raise BackendError(f"backend {spec} lacks the string attribute(s) {', '.join(missing)} of the adapter protocol")
    if adapter.dtype not in DTYPES:
        raise BackendError(f"backend {spec} reports dtype {adapter.dtype!r}; the spec knows {', '.join(DTYPES)}")
    return adapter


def case_target(case_id: str) -> tuple[str, dict[str, Any]]:
    """The op a case id belongs to, and the check_op arguments that run that case alone.

    Ids: ``random/<op>/<k>`` (random case k of the run's seed), ``errors/<op>/<kind>`` (spec 1.7),
    ``gradient/<op>/<k>`` (the optional gradient check), ``e2e/<name>`` (end-to-end sampling) and
    ``<op>/<k>`` (golden vector k)."""
    source, _, rest = case_id.partition("/")
    if source == "random":
        op, _, k = rest.partition("/")
        if op in OPS and k.isdigit():
            return op, {"n_random": int(k) + 1, "golden": False, "e2e": False, "errors": False}
    elif source == "errors":
        op = rest.partition("/")[0]
        if op in OPS:
            return op, {"n_random": 0, "golden": False, "e2e": False, "errors": True}
    elif source == "gradient":
        op = rest.partition("/")[0]
        if op in OPS:
            return op, {"n_random": 0, "golden": False, "e2e": False, "errors": False}
    elif source == "e2e":
        op = rest.partition("/")[0]
        return (op if op in OPS else "sample"), {"n_random": 0, "golden": False, "e2e": True, "errors": False}
    elif source in OPS and rest.isdigit():
        return source, {"n_random": 0, "golden": True, "e2e": False, "errors": False}
    raise BackendError(f"--case: {case_id!r} is not a case id (random/<op>/<k>, errors/<op>/<kind>, "
                       "gradient/<op>/<k>, e2e/<name> or <op>/<k>)")


# Built-in backends by adapter name: the short spec that loads them.
_BUILTIN_NAMES = {"numpy": "numpy", "torch": "torch", "ort": "ort"}


def backend_spec_of(adapter: Any) -> str:
    """The BACKEND argument of `vdm conformance` that loads ``adapter`` again."""
    cls = type(adapter)
    if cls.__module__.startswith("vdm.backends.") and getattr(adapter, "name", None) in _BUILTIN_NAMES:
        return _BUILTIN_NAMES[adapter.name]
    return f"{cls.__module__}:{cls.__qualname__}"


def reproduce_command(spec: str, device: str, dtype: str, seed: int, case_id: str) -> str:
    """One line that re-runs exactly one case."""
    words = ["vdm", "conformance", spec]
    if device != "cpu":
        words += ["--device", device]
    words += ["--dtype", dtype]
    if case_id.startswith(("random/", "errors/", "gradient/", "e2e/")):  # drawn from the seed
        words += ["--seed", str(seed)]
    return " ".join([*words, "--case", case_id])


def select_ops(only: str | None) -> list[str]:
    """Ops matching a comma-separated list of op names, clauses ("5.3") or sections ("5")."""
    if not only:
        return list(OPS)
    chosen: set[str] = set()
    for token in (t.strip() for t in only.split(",")):
        if not token:
            continue
        hit = {op for op in OPS if token in (op, clause_of(op)) or clause_of(op).split(".")[0] == token}
        if not hit:
            raise BackendError(f"--only: {token!r} matches no op or clause")
        chosen |= hit
    return [op for op in OPS if op in chosen]


@dataclass
class Report:
    spec_version: str
    backend: dict[str, str]
    platform: dict[str, str]
    timestamp: str
    settings: dict[str, Any]
    results: list[OpResult] = field(default_factory=list)
    unmatched_xfail: list[XfailEntry] = field(default_factory=list)
    duration_s: float = 0.0
    strict_xfail: bool = False

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def ok(self) -> bool:
        """No failure (and, with strict xfail, no unmatched xfail entry)."""
        return self.count("fail") == 0 and not (self.strict_xfail and self.unmatched_xfail)

    def to_json(self) -> dict[str, Any]:
        return {
            "spec_version": self.spec_version,
            "backend": self.backend,
            "platform": self.platform,
            "timestamp": self.timestamp,
            "settings": self.settings,
            "summary": {s: self.count(s) for s in ("pass", "fail", "xfail", "skip")} | {"ok": self.ok},
            "results": [r.to_json() for r in self.results],
            "unmatched_xfail": [e.to_json() for e in self.unmatched_xfail],
            "duration_s": round(self.duration_s, 3),
        }

    def write(self, path: str | Path) -> None:
        """Write the JSON report atomically (``files.atomic_write_bytes``); a failed write is a ``WriteError``."""
        atomic_write_bytes(path, (json.dumps(self.to_json(), indent=2) + "\n").encode("utf-8"))


def platform_info(adapter: Any) -> dict[str, str]:
    info = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "numpy": np.__version__,
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        if str(getattr(adapter, "device", "")).startswith("cuda") and torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name()
            info["cuda"] = str(torch.version.cuda)
    return info


def run(
    adapter: Any,
    *,
    ops: list[str] | None = None,
    n_cases: int = 20,
    seed: int = 0,
    xfail: list[XfailEntry] | None = None,
    allow_missing: bool = False,
    strict_xfail: bool = False,
    progress: Callable[[str], None] | None = None,
    backend_spec: str | None = None,
    case: str | None = None,
) -> Report:
    """Check ``ops`` (default: all) on ``adapter`` at its own dtype and collect a :class:`Report`.

    ``case``: run only the check with this id (and only its op). ``backend_spec``: how the
    reproduce command of a failure names the backend (default: derived from the adapter)."""
    only: dict[str, Any] = {}
    if case is not None:
        op_of_case, only = case_target(case)
        ops = [op_of_case]
    ops = list(OPS) if ops is None else ops
    spec = backend_spec or backend_spec_of(adapter)
    dtype, device = adapter.dtype, adapter.device
    start = time.perf_counter()
    results = []
    # A partial backend (e.g. ONNX Runtime's sampler step graphs) declares the ops it claims in
    # ``scope``; the rest of the spec is outside its claim, so it is skipped rather than failed.
    scope = getattr(adapter, "scope", None)
    for op in ops:
        if progress is not None:
            progress(op)
        t0 = time.perf_counter()
        if scope is not None and op not in scope:
            result = skipped(op, f"outside the backend's declared scope ({adapter.name})")
        else:
            kwargs: dict[str, Any] = {"n_random": n_cases, **only}
            result = check_op(adapter, op, dtype, seed=seed, allow_missing=allow_missing, only=case, **kwargs)
        if result.first_failure and result.first_failure.get("case", "-") != "-":
            result.first_failure["reproduce"] = reproduce_command(spec, device, dtype, seed,
                                                                  result.first_failure["case"])
        result.seconds = time.perf_counter() - t0
        results.append(result)
    unmatched = apply_xfail(results, xfail or [], dtype, device)
    return Report(
        spec_version=spec_version(),
        backend={"name": adapter.name, "version": adapter.version, "device": device, "dtype": dtype},
        platform=platform_info(adapter),
        timestamp=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        settings={"cases": n_cases, "seed": seed, "ops": ops if len(ops) < len(OPS) else "all",
                  "allow_missing": allow_missing, "strict_xfail": strict_xfail, "backend_spec": spec,
                  "case": case},
        results=results,
        unmatched_xfail=unmatched,
        duration_s=time.perf_counter() - start,
        strict_xfail=strict_xfail,
    )
