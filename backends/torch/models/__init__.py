"""Denoising networks: one table of architectures, each with its config class and presets.

A new architecture is one module here with a frozen config dataclass (``to_dict``/``from_dict``,
``in_channels``, ``out_channels``, ``num_classes``, ``size_divisor``, ``frames``, ``image_size``)
and an ``nn.Module`` built from it with the call ``net(x (B,C,T,H,W), t (B,), y (B,) | None)``;
then one row in :data:`ARCHITECTURES`. A network that can also take ``independent`` (B,) bool
(samples whose frames are unrelated images, each to be seen as a 1-frame video) says so in its
row, and joint image-video training (``--image-fraction``) becomes available for it. The
diffusion contract (noise process, prediction type, schedule) is not part of any architecture
config: checkpoints and exports carry it beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from . import unet


@dataclass(frozen=True)
class Architecture:
    config: type  # the frozen config dataclass
    network: type  # nn.Module subclass taking the config
    presets: Mapping[str, Mapping[str, Any]]  # named config field values
    independent_frames: bool = False  # the network takes ``independent`` (B,) bool: joint image-video training
    frame_conditions: bool = False  # the network takes t (B, T), one condition per frame: spec 18.8


ARCHITECTURES: dict[str, Architecture] = {
    "unet": Architecture(unet.UNetConfig, unet.VideoUNet, unet.PRESETS, independent_frames=True,
                         frame_conditions=True),
}
DEFAULT_ARCHITECTURE = "unet"


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def preset_names(arch: str = DEFAULT_ARCHITECTURE) -> tuple[str, ...]:
    return tuple(architecture(arch).presets)


def preset(name: str, arch: str = DEFAULT_ARCHITECTURE, **overrides: Any) -> Any:
    """The config of preset ``name`` of architecture ``arch``, with field overrides."""
    a = architecture(arch)
    if name not in a.presets:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(a.presets)}")
    return a.config.from_dict({**a.presets[name], **overrides})


def config_from_dict(d: Mapping[str, Any], arch: str = DEFAULT_ARCHITECTURE) -> Any:
    """A stored config (checkpoint, export metadata), upgraded from older field names if the
    architecture knows how."""
    config = architecture(arch).config
    upgrade = getattr(config, "upgrade", dict)
    return config.from_dict(upgrade(dict(d)))


def architecture_of(config: Any) -> str:
    """The table name of a config instance."""
    for name, a in ARCHITECTURES.items():
        if isinstance(config, a.config):
            return name
    raise TypeError(f"{type(config).__name__} is not the config of a registered architecture")


def build_model(config: Any) -> nn.Module:
    return ARCHITECTURES[architecture_of(config)].network(config)


__all__ = ["ARCHITECTURES", "DEFAULT_ARCHITECTURE", "Architecture", "architecture", "architecture_of",
           "build_model", "config_from_dict", "preset", "preset_names"]
