"""Single-file training checkpoints: safetensors tensors + a JSON ``"vdm"`` metadata entry.

File format (one ``*.safetensors`` file):

- tensors ``model.<name>`` (raw weights), ``ema.<name>`` (EMA weights), ``optim.<path>`` (every
  tensor of the optimizer's state dict, path = dotted position in that dict), ``rng.torch``
  (uint8 CPU RNG state) and ``rng.cuda.<i>`` (one per visible CUDA device, when present);
- safetensors metadata key ``"vdm"``: JSON with ``spec_version``, ``model_config``
  (the architecture config's ``to_dict()``), ``architecture`` (a row of models.ARCHITECTURES;
  absent = the U-Net), ``schedule`` ({name, T, params, zero_terminal_snr}), ``prediction``,
  ``variance``, ``process`` (``vdm_ref.Process.to_dict()``, spec 14.7; its prediction is
  ``prediction``; absent in files written before spec 2: the vp process), ``num_classes``,
  ``data``, ``train``, ``step``, ``optimizer`` (class, and the
  state-dict structure with tensors replaced by ``{"__tensor__": key}``), ``rng`` (NumPy and
  Python RNG states) and ``created``.

Loading never unpickles anything: it reads safetensors and JSON only. Every failure is a
one-line :class:`CheckpointError`.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import vdm_ref

from ...files import atomic_write_bytes, one_line
from ...sampling import process_of
from ..models import DEFAULT_ARCHITECTURE, build_model, config_from_dict

META_KEY = "vdm"



class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, foreign, from another spec major version or inconsistent."""


@dataclass
class Checkpoint:
    """A loaded checkpoint. ``optim_state`` is ready for ``optimizer.load_state_dict``."""

    meta: dict[str, Any]
    model_state: dict[str, Tensor]
    ema_state: dict[str, Tensor]
    optim_state: dict[str, Any] | None
    config: Any  # the architecture config
    rng_tensors: dict[str, Tensor] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))


# --------------------------------------------------------------------------- state encoding
#
# The optimizer state dict mixes tensors, ints used as dict keys, tuples and scalars. Tensors go
# to the safetensors payload; the rest becomes JSON that round-trips exactly (int keys, tuples).


def _encode(obj: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, Tensor):
        tensors[prefix] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
        if not all(isinstance(k, (int, str)) for k in obj):
            raise TypeError(f"cannot store dict keys of types {sorted({type(k).__name__ for k in obj})}")
        return {"__items__": [[k, _encode(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint (at {prefix})")


def _decode(obj: Any, tensors: Mapping[str, Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {k: _decode(v, tensors) for k, v in obj["__items__"]}
        if set(obj) == {"__tuple__"}:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        return {k: _decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def _state_of(module_or_state: nn.Module | Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    if isinstance(module_or_state, nn.Module):
        # DistributedDataParallel / torch.compile wrappers keep the real model in .module / ._orig_mod.
        inner = getattr(module_or_state, "module", None) or getattr(module_or_state, "_orig_mod", None)
        return (inner if isinstance(inner, nn.Module) else module_or_state).state_dict()
    return module_or_state


def capture_rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, JSON) holding the torch CPU/CUDA, NumPy global and Python ``random`` states."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    json_state = {
        "numpy": [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss_next],
    }
    return tensors, json_state


def restore_rng_state(ckpt: Checkpoint) -> None:
    """Restore every RNG state saved by :func:`save_checkpoint` (CUDA states only where the
    device exists)."""
    if "rng.torch" in ckpt.rng_tensors:
        torch.set_rng_state(ckpt.rng_tensors["rng.torch"].to("cpu", torch.uint8))
    cuda = sorted((k for k in ckpt.rng_tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        for key in cuda[: torch.cuda.device_count()]:
            torch.cuda.set_rng_state(ckpt.rng_tensors[key].to("cpu", torch.uint8), int(key.rsplit(".", 1)[1]))
    rng = ckpt.meta.get("rng", {})
    if "numpy" in rng:
        name, keys, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "python" in rng:
        version, internal, gauss_next = rng["python"]
        random.setstate((version, tuple(internal), gauss_next))


# --------------------------------------------------------------------------- save


def checkpoint_bytes(
    *,
    model: nn.Module | Mapping[str, Tensor],
    ema: nn.Module | Mapping[str, Tensor] | None,
    optimizer: torch.optim.Optimizer | Mapping[str, Any] | None,
    meta: Mapping[str, Any],
    rng: bool = True,
) -> bytes:
    """Serialize a checkpoint to bytes (see the module docstring for the layout)."""
    from safetensors.torch import save

    if "model_config" not in meta:
        raise ValueError("checkpoint meta needs 'model_config' (the architecture config's to_dict())")
    tensors: dict[str, Tensor] = {}
    for prefix, source in (("model", model), ("ema", ema)):
        if source is None:
            continue
        for name, value in _state_of(source).items():
            tensors[f"{prefix}.{name}"] = value.detach().to("cpu").contiguous().clone()
    full_meta = {"spec_version": vdm_ref.SPEC_VERSION, **meta}
    try:
        full_meta["process"] = process_of(full_meta).to_dict()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint meta: {one_line(exc)}") from None
    full_meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    if optimizer is not None:
        state = optimizer.state_dict() if isinstance(optimizer, torch.optim.Optimizer) else optimizer
        optim_tensors: dict[str, Tensor] = {}
        encoded = _encode(dict(state), "optim", optim_tensors)
        tensors.update(optim_tensors)
        full_meta["optimizer"] = {
            "class": type(optimizer).__name__ if isinstance(optimizer, torch.optim.Optimizer) else None,
            "param_groups": encoded.get("param_groups", []),
            "structure": {k: v for k, v in encoded.items() if k != "param_groups"},
        }
    if rng:
        rng_tensors, rng_json = capture_rng_state()
        tensors.update(rng_tensors)
        full_meta["rng"] = rng_json
    return save(tensors, metadata={META_KEY: json.dumps(full_meta)})


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: nn.Module | Mapping[str, Tensor],
    ema: nn.Module | Mapping[str, Tensor] | None,
    optimizer: torch.optim.Optimizer | Mapping[str, Any] | None,
    meta: Mapping[str, Any],
    last: str | os.PathLike[str] | None = None,
    rng: bool = True,
) -> Path:
    """Atomically write a checkpoint to ``path`` (and the same bytes to ``last`` if given).

    A process killed at any moment leaves each file either fully old or fully new.
    """
    data = checkpoint_bytes(model=model, ema=ema, optimizer=optimizer, meta=meta, rng=rng)
    atomic_write_bytes(path, data)
    if last is not None and Path(last).resolve() != Path(path).resolve():
        atomic_write_bytes(last, data)
    return Path(path)


# --------------------------------------------------------------------------- load


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``"vdm"`` metadata of a checkpoint, validated (file, format, spec major version)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except Exception as exc:  # safetensors raises its own error types for torn/corrupt headers
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt or truncated safetensors file "
                              f"({one_line(exc)})") from None
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file but not a vdm checkpoint (no '{META_KEY}' metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: the '{META_KEY}' metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or "model_config" not in meta:
        raise CheckpointError(f"{path}: the '{META_KEY}' metadata has no model_config; not a vdm checkpoint")
    _check_spec_version(path, meta.get("spec_version"))
    try:
        meta["process"] = process_of(meta).to_dict()  # older files: the vp process, so readers need no fallback
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid noise process ({one_line(exc)})") from None
    return meta


def _check_spec_version(path: Path, version: Any) -> None:
    theirs = str(version).split(".")[0] if version is not None else None
    if theirs not in vdm_ref.READABLE_SPEC_MAJORS:
        raise CheckpointError(f"{path} was written for spec {version}, this vdm implements spec "
                              f"{vdm_ref.SPEC_VERSION} (major versions differ)")


def _expected_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = build_model(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_state(path: str | os.PathLike[str], name: str, state: Mapping[str, Tensor],
                expected: Mapping[str, tuple[int, ...]]) -> None:
    """Raise CheckpointError unless ``state`` has exactly the keys and shapes of ``expected``."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != expected[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with wrong shape (e.g. {k}: {tuple(state[k].shape)} vs {expected[k]})")
        raise CheckpointError(f"{path}: {name} weights do not match the stored model_config: " + "; ".join(parts))


def check_finite(path: str | os.PathLike[str], name: str, state: Mapping[str, Tensor]) -> None:
    """Raise CheckpointError if a floating-point tensor of ``state`` holds a NaN or infinity: such
    weights only sample NaN videos (and training never checkpoints them)."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} {name} weight tensor(s) hold NaN or infinite values "
                              f"(e.g. {bad[0]}); it would sample NaN videos, use an earlier checkpoint")


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu", *,
                    allow_non_finite: bool = False) -> Checkpoint:
    """Read and validate a checkpoint written by :func:`save_checkpoint` (no pickle involved).
    Weights with NaN or infinite values are refused unless ``allow_non_finite`` (for inspection)."""
    from safetensors import safe_open

    path = Path(path)
    meta = read_meta(path)
    try:
        config = config_from_dict(meta["model_config"], meta.get("architecture", DEFAULT_ARCHITECTURE))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid model_config ({one_line(exc)})") from None
    groups: dict[str, dict[str, Tensor]] = {"model": {}, "ema": {}, "optim": {}, "rng": {}}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():
                prefix, _, name = key.partition(".")
                if prefix not in groups:
                    raise CheckpointError(f"{path}: unknown tensor group in key {key!r}")
                groups[prefix][name if prefix in ("model", "ema") else key] = f.get_tensor(key)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt or truncated tensor data "
                              f"({one_line(exc)})") from None
    expected = _expected_shapes(config)
    check_state(path, "model", groups["model"], expected)
    if groups["ema"]:
        check_state(path, "EMA", groups["ema"], expected)
    if not allow_non_finite:
        check_finite(path, "raw", groups["model"])
        check_finite(path, "EMA", groups["ema"])
    optim_state = None
    if "optimizer" in meta:
        opt = meta["optimizer"]
        try:
            optim_state = _decode({**opt.get("structure", {}), "param_groups": opt.get("param_groups", [])},
                                  groups["optim"])
        except KeyError as exc:
            raise CheckpointError(f"{path}: optimizer tensor {exc} listed in the metadata is missing") from None
    dev = torch.device(device)
    move = (lambda d: {k: v.to(dev) for k, v in d.items()}) if dev.type != "cpu" else (lambda d: d)
    return Checkpoint(meta=meta, model_state=move(groups["model"]), ema_state=move(groups["ema"]),
                      optim_state=optim_state, config=config, rng_tensors=groups["rng"])


def load_model(path: str | os.PathLike[str], *, ema: bool = True,
               device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Build the network of a checkpoint with its EMA weights (or the raw ones with
    ``ema=False``, also used when the file has no EMA), in eval mode on ``device``."""
    ckpt = load_checkpoint(path, device="cpu")
    state = ckpt.ema_state if ema and ckpt.ema_state else ckpt.model_state
    model = build_model(ckpt.config)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), ckpt.meta
