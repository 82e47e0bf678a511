"""Export a vdm denoiser to ONNX, validated against PyTorch before the file appears.

Steps: wrap the network so that the graph boundary is float32 ``x`` (B,C,T,H,W), float32
``t`` (B,) and, for class-conditional models, int64 ``y`` (B,) -> float32 ``out``; export with
the legacy TorchScript exporter (default) or the dynamo exporter at a pinned opset; embed the
sampling metadata (backends/ort/metadata.py); run ``onnx.checker`` with ``full_check``; refuse
GroupNormalization nodes (no ORT kernel for the opset-21 op); then run ONNX Runtime (CPU) and
PyTorch on random inputs at shapes other than the export example and at several timesteps.
Only if every case is within tolerance is the file moved into place (temp + ``os.replace``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from vdm.backends import files
from vdm.backends.ort import metadata as md

from .fp16 import float32_islands, to_fp16

DEFAULT_OPSET = 17
# 17..20: every op the network needs has ORT kernels; 21+ would emit GroupNormalization-21.
SUPPORTED_OPSETS = range(14, 21)
# Default legacy: its graphs run as fast as dynamo's and it exports much faster
# (benchmarks/bench_sampling.py; the figures are in the README's performance section).
EXPORTERS = ("legacy", "dynamo")
# Parity tolerances, graph vs the float32 PyTorch model: a case passes when
# max|ort - torch| <= atol + rtol * max|torch|.
TOLERANCES = {"fp32": (1e-4, 1e-4), "fp16": (2e-2, 2e-2)}


class ExportError(RuntimeError):
    """Export or its validation failed; no output file was written."""


@dataclass(frozen=True)
class ExportOptions:
    ema: bool = True
    opset: int = DEFAULT_OPSET
    fp16: bool = False
    dynamic_batch: bool = True
    dynamic_frames: bool = True
    dynamic_size: bool = False
    exporter: str = "legacy"
    batch: int = 1  # the batch of a --fixed-batch graph
    frames: int | None = None  # frames of a --fixed-frames graph (default: the training clip length)
    size: int | None = None  # H = W of the graph (default: the training size)
    seed: int = 0

    def check(self) -> None:
        if self.exporter not in EXPORTERS:
            raise ExportError(f"unknown exporter {self.exporter!r}; choose one of {', '.join(EXPORTERS)}")
        if self.opset not in SUPPORTED_OPSETS:
            raise ExportError(f"opset {self.opset} not supported; use {SUPPORTED_OPSETS.start}.."
                              f"{SUPPORTED_OPSETS.stop - 1} (opset 21 emits GroupNormalization-21, "
                              "which ONNX Runtime cannot run)")
        for name in ("batch", "frames", "size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ExportError(f"{name} must be >= 1, got {value}")


@dataclass
class ParityCase:
    batch: int
    frames: int
    size: int
    timesteps: list[int]
    max_abs: float = 0.0
    max_rel: float = 0.0
    ref_scale: float = 0.0
    ok: bool = False


@dataclass
class ExportReport:
    path: Path
    info: md.OnnxModelInfo
    export_seconds: float
    validate_seconds: float
    size_bytes: int
    nodes: int
    tolerance: tuple[float, float]
    cases: list[ParityCase] = field(default_factory=list)

    @property
    def max_abs(self) -> float:
        return max((c.max_abs for c in self.cases), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((c.max_rel for c in self.cases), default=0.0)


def _wrapper(model: Any, fp16: bool, conditional: bool) -> Any:
    """Graph boundary in float32 whatever the weights' dtype. The network casts x to its weight
    dtype itself and keeps the timestep embedding, GroupNorm and softmax in float32."""
    import torch

    class _Unconditional(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.net(x, t).float()

    class _Conditional(_Unconditional):
        def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return self.net(x, t, y).float()

    net = to_fp16(model) if fp16 else copy.deepcopy(model).eval()
    return (_Conditional(net) if conditional else _Unconditional(net)).eval()


def _meta_from_checkpoint(meta: dict[str, Any], config: Any, options: ExportOptions, weights: str,
                          shapes: dict[str, md.Dim], per_frame: bool = False) -> md.OnnxModelInfo:
    import vdm_ref

    sched_d = dict(meta.get("schedule") or {})
    if "name" not in sched_d:
        raise ExportError("checkpoint metadata has no schedule; cannot embed the sampling contract")
    sched = vdm_ref.make_schedule(sched_d["name"], int(sched_d.get("T", 1000)),
                                  zero_terminal_snr=bool(sched_d.get("zero_terminal_snr", False)),
                                  **dict(sched_d.get("params") or {}))
    prediction = meta["prediction"]
    variance = meta.get("variance") or ("learned_range" if config.learn_sigma else "fixed_small")
    import onnx
    import torch

    export = {**asdict(options), "torch": torch.__version__, "onnx": onnx.__version__,
              "frames": shapes["frames"].default, "size": shapes["size"].default}
    return md.OnnxModelInfo(
        spec_version=str(meta.get("spec_version", vdm_ref.SPEC_VERSION)),
        schedule=sched.to_dict(),
        abar=np.array(sched.abar, dtype=np.float64),
        prediction=prediction,
        variance=variance,
        process=dict(meta.get("process") or {}),
        in_channels=int(config.in_channels),
        out_channels=int(config.out_channels),
        batch=shapes["batch"],
        frames=shapes["frames"],
        size=shapes["size"],
        size_divisor=int(config.size_divisor),
        num_classes=int(config.num_classes),
        model_config=config.to_dict(),
        export=export,
        weights_sha256=weights,
        data=dict(meta.get("data") or {}),
        training={k: meta[k] for k in ("step", "created") if k in meta},
        given_frames=per_frame,
    )


def _parity_shapes(options: ExportOptions, frames: int, size: int, div: int) -> tuple[tuple[int, int, int],
                                                                                      list[tuple[int, int, int]]]:
    """Example shape for the tracer and the (B, T, S) cases checked afterwards: every dynamic
    dimension is checked at values other than the example's, to catch frozen Reshapes."""
    bf = options.batch
    ex_b = 1 if options.dynamic_batch else bf
    ex_t = 4 if options.dynamic_frames else frames
    if options.dynamic_frames and frames == 4:
        ex_t = 3
    b = (lambda n: n) if options.dynamic_batch else (lambda n: bf)
    tt = (lambda n: n) if options.dynamic_frames else (lambda n: frames)
    small = max(div, (size // 2) // div * div)
    ss = (lambda n: n) if options.dynamic_size else (lambda n: size)
    cases = [(b(3), tt(7), ss(size)), (b(2), tt(frames), ss(small)), (b(1), tt(1), ss(size)),
             (b(1), tt(2 * frames), ss(2 * size))]
    return (ex_b, ex_t, size), list(dict.fromkeys(cases))


def export_model(
    model: Any,
    meta: dict[str, Any],
    out: str | os.PathLike[str],
    options: ExportOptions | None = None,
    *,
    log: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export ``model`` (a VideoUNet in float32) with checkpoint metadata ``meta`` to ``out``."""
    import onnx

    options = options or ExportOptions()
    options.check()
    log = log or (lambda _msg: None)
    config = model.config
    conditional = config.num_classes > 0
    data = dict(meta.get("data") or {})
    frames = int(options.frames or data.get("frames") or config.frames)
    size = int(options.size or data.get("size") or config.image_size)
    div = int(config.size_divisor)
    if size % div:
        raise ExportError(f"size {size} is not a multiple of the model's spatial divisor {div}")
    example, cases = _parity_shapes(options, frames, size, div)
    dims = {
        "batch": md.Dim(1, None, 1) if options.dynamic_batch else md.Dim(options.batch, options.batch,
                                                                          options.batch),
        "frames": md.Dim(1, max(c[1] for c in cases), frames) if options.dynamic_frames else md.Dim(
            frames, frames, frames),
        "size": md.Dim(min(c[2] for c in cases), max(c[2] for c in cases), size) if options.dynamic_size else md.Dim(
            size, size, size),
    }
    model = model.float().eval()
    # A model trained with given frames (spec 18.8) takes t (B, T), one condition per frame.
    per_frame = float((meta.get("train") or {}).get("given_frames") or 0.0) > 0
    info = _meta_from_checkpoint(meta, config, options, md.weights_hash(model.state_dict()), dims, per_frame)

    out = Path(out)
    files.remove_stale_temp_files_of(out)  # what an export killed mid-way left beside out
    # The graph is written, checked and validated as a temporary file that replaces out only when
    # every check passed; any failure (a parity error, a full disk) removes it.
    with files.atomic_path(out) as tmp:
        t0 = time.perf_counter()
        _run_exporter(_wrapper(model, options.fp16, conditional), options, config, example, conditional, tmp,
                      per_frame)
        proto = onnx.load(str(tmp))
        _check_graph(proto, conditional)
        if options.fp16:
            halves = {op: n["float16"] for op, n in float32_islands(proto).items() if n["float16"]}
            if halves:
                raise ExportError(f"fp16 graph runs {halves} in float16; they must stay float32")
        md.write_props(proto, info)
        proto.producer_name, proto.doc_string = "vdm", "vdm video denoiser; see metadata_props['vdm']"
        try:
            onnx.checker.check_model(proto, full_check=True)
        except Exception as exc:  # onnx raises ValidationError / InferenceError
            raise ExportError(f"onnx.checker rejected the exported graph: {files.one_line(exc, 400)}") from None
        onnx.save(proto, str(tmp))
        export_s = time.perf_counter() - t0
        log(f"exported with the {options.exporter} exporter at opset {options.opset} in {export_s:.1f} s "
            f"({len(proto.graph.node)} nodes, {tmp.stat().st_size / 1e6:.2f} MB)")

        t1 = time.perf_counter()
        tol = TOLERANCES["fp16" if options.fp16 else "fp32"]
        checked = _parity(model, tmp, cases, conditional, config, tol, options.seed, log, per_frame)
        validate_s = time.perf_counter() - t1
        bad = [c for c in checked if not c.ok]
        if bad:
            c = bad[0]
            raise ExportError(
                f"parity check failed: ONNX Runtime vs PyTorch max abs error {c.max_abs:.3g} at "
                f"B={c.batch} T={c.frames} {c.size}x{c.size} exceeds {tol[0]:g} + {tol[1]:g} * {c.ref_scale:.3g}")
    return ExportReport(out, info, export_s, validate_s, out.stat().st_size, len(proto.graph.node), tol, checked)


def _run_exporter(wrapped: Any, options: ExportOptions, config: Any, example: tuple[int, int, int],
                  conditional: bool, path: Path, per_frame: bool = False) -> None:
    import torch

    b, t, s = example
    gen = torch.Generator().manual_seed(options.seed)
    args: tuple[Any, ...] = (torch.randn(b, config.in_channels, t, s, s, generator=gen),
                             torch.full((b, t) if per_frame else (b,), 500.0))
    names = ["x", "t"]
    if conditional:
        args = (*args, torch.zeros(b, dtype=torch.int64))
        names.append("y")
    buf = io.StringIO()
    # The exporters report progress and opset up-conversion on stdout, stderr and torch loggers;
    # only a failure is of interest, and it is raised with its message.
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), \
                torch.no_grad():
            warnings.simplefilter("ignore")
            if options.exporter == "legacy":
                axes: dict[int, str] = {}
                if options.dynamic_batch:
                    axes[0] = "batch"
                if options.dynamic_frames:
                    axes[2] = "frames"
                if options.dynamic_size:
                    axes.update({3: "height", 4: "width"})
                dynamic = {n: ({0: "batch"} if options.dynamic_batch else {}) for n in names[1:]}
                if per_frame and options.dynamic_frames:
                    dynamic["t"][1] = "frames"
                dynamic.update({"x": axes, md.OUTPUT: axes})
                torch.onnx.export(wrapped, args, str(path), dynamo=False, opset_version=options.opset,
                                  input_names=names, output_names=[md.OUTPUT],
                                  dynamic_axes={k: v for k, v in dynamic.items() if v}, do_constant_folding=True)
            else:
                from torch.export import Dim

                shapes: dict[str, dict[int, Any]] = {n: {} for n in names}
                if options.dynamic_batch:
                    batch = Dim("batch", min=1, max=4096)
                    for n in names:
                        shapes[n][0] = batch
                if options.dynamic_frames:
                    shapes["x"][2] = Dim("frames", min=1, max=4096)
                    if per_frame:
                        shapes["t"][1] = shapes["x"][2]
                if options.dynamic_size:
                    div = config.size_divisor
                    shapes["x"][3] = div * Dim("height_blocks", min=1, max=4096)
                    shapes["x"][4] = div * Dim("width_blocks", min=1, max=4096)
                torch.onnx.export(wrapped, args, str(path), dynamo=True, opset_version=options.opset,
                                  input_names=names, output_names=[md.OUTPUT], external_data=False,
                                  dynamic_shapes={n: (v or None) for n, v in shapes.items()}, verbose=False)
    except (ExportError, OSError):  # an OSError here is a failed write of the graph (full disk, size limit)
        raise
    except Exception as exc:
        raise ExportError(f"torch.onnx.export ({options.exporter}) failed: {type(exc).__name__}: "
                          f"{files.one_line(exc, 400)}") from None
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _check_graph(proto: Any, conditional: bool) -> None:
    ops = {n.op_type for n in proto.graph.node}
    if "GroupNormalization" in ops:
        raise ExportError("the graph contains GroupNormalization, which ONNX Runtime cannot run; "
                          f"use opset {DEFAULT_OPSET}")
    inputs = [i.name for i in proto.graph.input]
    want = ["x", "t", "y"] if conditional else ["x", "t"]
    if inputs != want:
        raise ExportError(f"graph inputs are {inputs}, expected {want} (the timestep must stay an input)")
    if [o.name for o in proto.graph.output] != [md.OUTPUT]:
        raise ExportError(f"graph outputs are {[o.name for o in proto.graph.output]}, expected ['{md.OUTPUT}']")


def _parity(model: Any, path: Path, cases: list[tuple[int, int, int]], conditional: bool, config: Any,
            tol: tuple[float, float], seed: int, log: Callable[[str], None],
            per_frame: bool = False) -> list[ParityCase]:
    import torch
    from vdm.backends.ort.providers import choose_providers, create_session, session_options

    sess = create_session(path, choose_providers("cpu"), options=session_options())
    rng = np.random.default_rng(seed + 1)
    T = 1000
    results = []
    for i, (b, f, s) in enumerate(cases):
        x = rng.standard_normal((b, config.in_channels, f, s, s)).astype(np.float32)
        # Spread timesteps over the schedule, a different one per sample and per case.
        t = ((np.arange(b) * 997 + i * 331) % T).astype(np.float32)
        if per_frame:  # one condition per frame, frame 0 at the given level 0 (spec 18.8)
            t = ((t[:, None] + np.arange(f)[None, :] * 113) % T).astype(np.float32)
            t[:, 0] = 0.0
        feeds = {"x": x, "t": t}
        args = [torch.from_numpy(x), torch.from_numpy(t)]
        if conditional:
            y = rng.integers(0, config.num_classes + 1, size=b).astype(np.int64)  # includes the null class
            feeds["y"] = y
            args.append(torch.from_numpy(y))
        with torch.no_grad():
            ref = model(*args).numpy()
        got = sess.run(None, feeds)[0]
        if got.shape != ref.shape:
            raise ExportError(f"ONNX output shape {got.shape} != PyTorch {ref.shape} at B={b} T={f} {s}x{s}")
        err = float(np.max(np.abs(got.astype(np.float64) - ref)))
        scale = float(np.max(np.abs(ref)))
        case = ParityCase(b, f, s, t.astype(int).tolist(), err, err / max(scale, 1e-12), scale,
                          bool(np.isfinite(err) and err <= tol[0] + tol[1] * scale))
        log(f"parity B={b} T={f} {s}x{s} t={case.timesteps}: max abs {err:.2e}, max rel {case.max_rel:.2e} "
            f"(max |out| {scale:.3g}) {'ok' if case.ok else 'FAIL'}")
        results.append(case)
    return results


def export_checkpoint(
    ckpt: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: ExportOptions | None = None,
    *,
    log: Callable[[str], None] | None = None,
) -> ExportReport:
    """Load a training checkpoint (EMA weights unless ``options.ema`` is False) and export it."""
    from vdm.backends.torch.training.checkpoint import load_model

    options = options or ExportOptions()
    model, meta = load_model(ckpt, ema=options.ema, device="cpu")
    return export_model(model, meta, out, options, log=log)
