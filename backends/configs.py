"""Config dataclasses from dicts (JSON, TOML, checkpoint metadata): the one unknown-key check."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


def check_keys(cls: type, d: Mapping[str, Any], what: str) -> None:
    """Raise one line naming the keys of ``d`` that are not fields of dataclass ``cls``."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {unknown}; valid keys: {sorted(known)}")


def from_dict(cls: type, d: Mapping[str, Any], what: str) -> Any:
    """``cls(**d)`` after :func:`check_keys`."""
    check_keys(cls, d, what)
    return cls(**d)
