"""The sampling contract embedded in an exported ONNX file (``metadata_props``).

Everything ``vdm sample --model model.onnx`` needs travels inside the file: spec version,
schedule (name, parameters and the exact float64 abar table), prediction and variance types,
shapes the graph accepts, class conditioning, the network config, export options and a hash of
the weights. It is stored as one JSON document under the key ``vdm``; the abar table is
base64 of little-endian float64 so it round-trips bit for bit.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import vdm_ref

META_KEY = "vdm"
FORMAT = "vdm-onnx/1"
INPUT_X, INPUT_T, INPUT_Y, OUTPUT = "x", "t", "y", "out"


class MetadataError(ValueError):
    """The ONNX file carries no (or unusable) vdm metadata."""


def encode_table(values: np.ndarray) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f8").tobytes()).decode("ascii")


def decode_table(text: str) -> np.ndarray:
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) % 8:
        raise ValueError("table length is not a multiple of 8 bytes")
    return np.frombuffer(raw, dtype="<f8").astype(np.float64)


def weights_hash(state: Mapping[str, Any]) -> str:
    """sha256 over names, dtypes, shapes and bytes of a state dict (sorted by name)."""
    h = hashlib.sha256()
    for name in sorted(state):
        arr = state[name].detach().cpu().contiguous().numpy() if hasattr(state[name], "detach") else np.asarray(
            state[name])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Dim:
    """One input dimension: fixed (``min == max``) or dynamic over the range parity-tested at
    export (``max`` None = no tested upper bound)."""

    min: int
    max: int | None
    default: int

    @property
    def fixed(self) -> bool:
        return self.max == self.min

    def accepts(self, n: int) -> bool:
        return n >= self.min and (self.max is None or n <= self.max)

    def describe(self) -> str:
        if self.fixed:
            return f"exactly {self.min}"
        return f"{self.min}..{self.max}" if self.max is not None else f">= {self.min}"


@dataclass(frozen=True)
class OnnxModelInfo:
    """Decoded ``vdm`` metadata of an exported denoiser."""

    spec_version: str
    schedule: dict[str, Any]  # name, T, params, zero_terminal_snr
    abar: np.ndarray = field(repr=False, compare=False)
    prediction: str = "eps"
    variance: str = "fixed_small"
    in_channels: int = 1
    out_channels: int = 1
    batch: Dim = Dim(1, None, 1)
    frames: Dim = Dim(1, None, 8)
    size: Dim = Dim(32, 32, 32)
    size_divisor: int = 1
    num_classes: int = 0
    model_config: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    process: dict[str, Any] = field(default_factory=dict)  # vdm_ref.Process.to_dict(); empty = vp (spec 14.7)
    given_frames: bool = False  # trained with given frames: input t is (B, T), one condition per frame (18.8)

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def null_class(self) -> int | None:
        """Label of the learned unconditional class used for classifier-free guidance."""
        return self.num_classes if self.num_classes > 0 else None

    @property
    def guidance(self) -> bool:
        return self.conditional

    @property
    def model_hash(self) -> str:
        """Identity of the exported graph: weights + export options (keys engine caches)."""
        blob = json.dumps({"w": self.weights_sha256, "e": self.export}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def make_schedule(self) -> vdm_ref.Schedule:
        """The spec schedule rebuilt from the embedded float64 abar table (used as is)."""
        abar = self.abar.copy()
        betas = vdm_ref.schedules.betas_from_abar(abar)
        for arr in (abar, betas):
            arr.setflags(write=False)
        params = tuple(sorted((k, float(v)) for k, v in self.schedule.get("params", {}).items()))
        return vdm_ref.Schedule(self.schedule["name"], len(abar), params,
                                bool(self.schedule.get("zero_terminal_snr", False)), betas, abar)

    def to_json(self) -> str:
        d = asdict(self)
        d["abar"] = encode_table(self.abar)
        d["format"] = FORMAT
        d["null_class"] = self.null_class
        d["guidance"] = self.guidance
        d["model_hash"] = self.model_hash
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> OnnxModelInfo:
        try:
            d = json.loads(text)
            if d.pop("format", None) != FORMAT:
                raise MetadataError(f"unsupported vdm metadata format (expected {FORMAT})")
            for key in ("null_class", "guidance", "model_hash"):
                d.pop(key, None)
            d["abar"] = decode_table(d["abar"])
            for key in ("batch", "frames", "size"):
                d[key] = Dim(**d[key])
            info = cls(**d)
        except MetadataError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise MetadataError(f"vdm metadata is malformed: {exc}") from None
        info.validate()
        return info

    def validate(self) -> None:
        major = str(self.spec_version).split(".")[0]
        if major not in vdm_ref.READABLE_SPEC_MAJORS:
            raise MetadataError(f"model follows spec {self.spec_version}; this vdm implements spec "
                                f"{vdm_ref.SPEC_VERSION}")
        a = self.abar
        if a.ndim != 1 or len(a) != int(self.schedule.get("T", -1)) or not (
                np.all(np.isfinite(a)) and np.all(np.diff(a) < 0) and 0 <= a[-1] and a[0] < 1):
            raise MetadataError("vdm metadata abar table is not a strictly decreasing table of length T")
        try:
            process = (vdm_ref.Process.from_dict(self.process) if self.process
                       else vdm_ref.Process("vp", self.prediction))
        except (TypeError, ValueError) as exc:
            raise MetadataError(f"vdm metadata process is invalid: {exc}") from None
        if process.prediction != self.prediction or self.variance not in vdm_ref.VARIANCES:
            raise MetadataError(f"unknown prediction/variance {self.prediction!r}/{self.variance!r}")
        if self.out_channels not in (self.in_channels, 2 * self.in_channels):
            raise MetadataError("out_channels must be C or 2C")
        if self.variance == "learned_range" and self.out_channels != 2 * self.in_channels:
            raise MetadataError("learned_range variance needs a 2C-channel model output")


def read_props(props: Mapping[str, str]) -> OnnxModelInfo:
    """Decode the metadata map of a model (``onnx.ModelProto.metadata_props`` as a dict, or
    ``session.get_modelmeta().custom_metadata_map``)."""
    if META_KEY not in props:
        raise MetadataError("not a vdm model: the ONNX file has no 'vdm' metadata (export one with `vdm export`)")
    return OnnxModelInfo.from_json(props[META_KEY])


def write_props(model_proto: Any, info: OnnxModelInfo) -> None:
    """Set the ``vdm`` metadata entry on an ``onnx.ModelProto`` (replacing an old one)."""
    keep = [p for p in model_proto.metadata_props if p.key != META_KEY]
    del model_proto.metadata_props[:]
    model_proto.metadata_props.extend(keep)
    entry = model_proto.metadata_props.add()
    entry.key, entry.value = META_KEY, info.to_json()
