"""ONNX Runtime sessions: the exported denoiser (with its vdm metadata) and the step graphs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from vdm.backends.files import one_line
from vdm.backends.ort import metadata as md

from . import step_graph as sg
from .providers import ProviderChoice, ProviderUnavailable, choose_providers, create_session, session_options


class ModelFileError(ValueError):
    """A model file that is missing, unreadable or not an exported vdm denoiser."""


def read_model_info(path: str | os.PathLike[str]) -> md.OnnxModelInfo:
    """The vdm metadata of an ONNX file, read without loading its weights into a session."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelFileError(f"{path} is not a readable ONNX file (truncated or corrupt?): {one_line(exc)}") from None
    if not proto.graph.node:
        raise ModelFileError(f"{path} is not a readable ONNX file (empty graph; truncated or not ONNX?)")
    try:
        return md.read_props({p.key: p.value for p in proto.metadata_props})
    except md.MetadataError as exc:
        raise ModelFileError(f"{path}: {exc}") from None


def trt_profile(info: md.OnnxModelInfo, batch: tuple[int, int, int]) -> dict[str, tuple[str, str, str]]:
    """TensorRT min/opt/max shapes from the metadata for model batches ``batch`` (min, opt, max)."""
    c = info.in_channels
    f = info.frames
    s = info.size
    fr = (f.min, f.default, f.max if f.max is not None else f.default)
    sz = (s.min, s.default, s.max if s.max is not None else s.default)
    prof = {"x": tuple(f"{b}x{c}x{t}x{h}x{h}" for b, t, h in zip(batch, fr, sz, strict=True)),
            "t": tuple(str(b) for b in batch)}
    if info.conditional:
        prof["y"] = prof["t"]
    if info.given_frames:  # one condition per frame (spec 18.8)
        prof["t"] = tuple(f"{b}x{t}" for b, t in zip(batch, fr, strict=True))
    return prof  # type: ignore[return-value]


class OrtDenoiser:
    """An exported vdm denoiser in an ONNX Runtime session on an explicitly chosen device."""

    def __init__(self, path: str | os.PathLike[str], *, device: str = "cpu", allow_fallback: bool = False,
                 threads: int | None = None, max_batch: int = 16, warn: Any = None,
                 trt_cache_root: str | os.PathLike[str] | None = None, profile_prefix: str | None = None) -> None:
        self.path = Path(path)
        self.info = read_model_info(self.path)
        b = self.info.batch
        batch = (b.min, b.default, b.max if b.max is not None else max(max_batch, b.default))
        cache = Path(trt_cache_root or Path.home() / ".cache" / "vdm" / "tensorrt") / self.info.model_hash
        self.choice: ProviderChoice = choose_providers(
            device, allow_fallback=allow_fallback, trt_cache_dir=cache,
            trt_profile=trt_profile(self.info, batch), warn=warn)
        self.threads = threads
        self.options = session_options(threads=threads, profile_prefix=profile_prefix)
        try:
            self.session = create_session(self.path, self.choice, options=self.options)
        except ProviderUnavailable:
            raise
        except Exception as exc:  # onnxruntime's own load errors (invalid graph, unsupported ops)
            raise ModelFileError(f"onnxruntime cannot load {self.path}: {one_line(exc)}") from None
        self.input_names = [i.name for i in self.session.get_inputs()]

    @property
    def device(self) -> str:
        return self.choice.device

    def check_shape(self, batch: int, frames: int, size: int) -> None:
        """Raise ValueError (one line) if the graph cannot take (batch, C, frames, size, size); any
        batch works (a fixed-batch graph runs in padded chunks)."""
        info = self.info
        if not info.frames.accepts(frames):
            raise ValueError(f"this model takes {info.frames.describe()} frames (exported range), got {frames}")
        if not info.size.accepts(size) or size % info.size_divisor:
            raise ValueError(f"this model takes size {info.size.describe()} (multiple of {info.size_divisor}), "
                             f"got {size}")

    def conditions(self, t: np.ndarray, frames: int) -> np.ndarray:
        """``t`` as the graph takes it: (B,), or (B, T) for a model with one condition per frame (spec
        18.8), where a (B,) ``t`` is repeated over the frames."""
        t = np.ascontiguousarray(t, np.float32)
        if self.info.given_frames and t.ndim == 1:
            t = np.ascontiguousarray(np.repeat(t[:, None], frames, axis=1))
        return t

    def feeds(self, x: np.ndarray, t: np.ndarray, y: np.ndarray | None) -> dict[str, np.ndarray]:
        feeds = {"x": np.ascontiguousarray(x, np.float32), "t": self.conditions(t, x.shape[2])}
        if "y" in self.input_names:
            if y is None:  # unconditional call of a conditional model: the null class
                y = np.full(x.shape[0], self.info.null_class, np.int64)
            feeds["y"] = np.ascontiguousarray(y, np.int64)
        return feeds

    def __call__(self, x: np.ndarray, t: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Model output for x (B, C, T, H, W), t (B,) and labels y (B,); a fixed-batch graph is run
        in chunks of its batch (the last chunk padded)."""
        n = x.shape[0]
        fixed = self.info.batch.min if self.info.batch.fixed else None
        if fixed is None or n == fixed:
            return self.session.run(None, self.feeds(x, t, y))[0]
        outs = []
        for start in range(0, n, fixed):
            sl = slice(start, start + fixed)
            xb, tb = x[sl], np.asarray(t)[sl]
            yb = None if y is None else np.asarray(y)[sl]
            pad = fixed - xb.shape[0]
            if pad:
                xb = np.concatenate([xb, np.repeat(xb[-1:], pad, 0)])
                tb = np.concatenate([tb, np.repeat(tb[-1:], pad, 0)])
                yb = None if yb is None else np.concatenate([yb, np.repeat(yb[-1:], pad, 0)])
            outs.append(self.session.run(None, self.feeds(xb, tb, yb))[0][: fixed - pad])
        return np.concatenate(outs)


class StepSessions:
    """ORT sessions of the step/process/guidance graphs on one device, created once per variant.

    One thread and no spinning by default: the graphs are a few elementwise ops, and a spinning
    intra-op pool left behind after each step steals the cores from the next network call
    (benchmarks/bench_sampling.py measures the sampler's share of a step)."""

    def __init__(self, choice: ProviderChoice | None = None, *, threads: int | None = 1) -> None:
        # TensorRT gains nothing on a few elementwise ops and would build an engine per shape.
        if choice is not None and choice.device == "tensorrt":
            choice = choose_providers("cuda")
        self.choice = choice or choose_providers("cpu")
        self.threads = threads
        self._cache: dict[Any, Any] = {}

    def get(self, key: Any) -> Any:
        sess = self._cache.get(key)
        if sess is None:
            if isinstance(key, sg.StepSpec):
                graph = sg.build_step(key)
            elif isinstance(key, sg.SolverStepSpec):
                graph = sg.build_solver_step(key)
            elif key[0] == "process":
                graph = sg.build_process(*key[1:])
            else:
                graph = sg.build_guidance(key[1])
            sess = create_session(graph, self.choice, options=session_options(threads=self.threads, spinning=False))
            self._cache[key] = sess
        return sess

    def step(self, spec: sg.StepSpec, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.get(spec).run(None, feeds)

    def process(self, x0: np.ndarray, *, clip: float | None, threshold: float | None,
                floor: float = 1.0, dtype: str = "float32") -> np.ndarray:
        real = sg.DTYPES[dtype][1]
        feeds: dict[str, np.ndarray] = {"x0": np.ascontiguousarray(x0, real)}
        if threshold is not None:
            feeds.update(sg.quantile_inputs(int(np.prod(x0.shape[1:])), threshold, floor, dtype))
        if clip is not None:
            feeds["clip"] = np.array(clip, real)
        return self.get(("process", clip is not None, threshold is not None, dtype)).run(None, feeds)[0]

    def guidance(self, cond: np.ndarray, uncond: np.ndarray, scale: float, channels: int | None,
                 dtype: str = "float32") -> np.ndarray:
        real = sg.DTYPES[dtype][1]
        mask = np.zeros((1, cond.shape[1]) + (1,) * (cond.ndim - 2), dtype=bool)
        mask[:, : cond.shape[1] if channels is None else channels] = True
        feeds = {"out_cond": np.ascontiguousarray(cond, real), "out_uncond": np.ascontiguousarray(uncond, real),
                 "w": np.array(scale, real), "mask": mask}
        return self.get(("guidance", dtype)).run(None, feeds)[0]
