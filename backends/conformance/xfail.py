"""Expected-failure lists: known deviations a backend declares, each with a reason.

A JSON file::

    {"xfail": [{"op": "vlb_term", "dtype": "float32", "reason": "tracked in #12"},
               {"clause": "8.4", "reason": "erfc tails not exact yet"}]}

(a bare top-level list works too), or a TOML file (``.toml``)::

    [[xfail]]
    op = "vlb_term"
    dtype = "float32"        # optional: only at this dtype
    device = "cuda"          # optional: only on this device type
    reason = "tracked in #12"

Each entry names exactly one of ``op`` (an op name) or ``clause`` (a clause number such as
"5.3", matching every op of that clause). A failing clause an entry matches is reported as
xfail; an entry that applies to the run but matches no failing clause is reported as unmatched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checks import OpResult
from .protocol import DTYPES, OPS, clause_of


class XfailError(Exception):
    """An unreadable or malformed expected-failure list (one-line message)."""


@dataclass(frozen=True)
class XfailEntry:
    reason: str
    op: str | None = None
    clause: str | None = None
    dtype: str | None = None
    device: str | None = None

    @property
    def target(self) -> str:
        where = self.op if self.op else f"clause {self.clause}"
        extra = ", ".join(f"{k}={v}" for k, v in (("dtype", self.dtype), ("device", self.device)) if v)
        return f"{where} ({extra})" if extra else where

    def applies(self, dtype: str, device: str, ops: list[str]) -> bool:
        """Whether this entry concerns a run at ``dtype`` on ``device`` checking ``ops``."""
        if self.dtype and self.dtype != dtype:
            return False
        if self.device and self.device.split(":")[0] != device.split(":")[0]:
            return False
        return any(self.covers(op) for op in ops)

    def covers(self, op: str) -> bool:
        return op == self.op if self.op else clause_of(op) == self.clause

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in (("op", self.op), ("clause", self.clause), ("dtype", self.dtype),
                                  ("device", self.device), ("reason", self.reason)) if v}


def load_xfail(path: str | Path) -> list[XfailEntry]:
    """Read an expected-failure list (JSON, or TOML for a .toml file)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise XfailError(f"cannot read xfail file '{p}': {getattr(exc, 'strerror', None) or exc}") from None
    try:
        if p.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                raise XfailError(f"xfail file '{p}': TOML needs Python 3.11+; use JSON") from None
            doc: Any = tomllib.loads(text)
        else:
            doc = json.loads(text)
    except XfailError:
        raise
    except ValueError as exc:
        raise XfailError(f"xfail file '{p}' is not valid {'TOML' if p.suffix == '.toml' else 'JSON'}: {exc}") from None
    items = doc.get("xfail") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise XfailError(f"xfail file '{p}' must hold a list of entries under the key 'xfail'")
    return [_entry(p, i, item) for i, item in enumerate(items)]


def _entry(p: Path, i: int, item: Any) -> XfailEntry:
    def bad(msg: str) -> XfailError:
        return XfailError(f"xfail file '{p}', entry {i}: {msg}")

    if not isinstance(item, dict):
        raise bad("must be an object with 'op' or 'clause' and 'reason'")
    unknown = set(item) - {"op", "clause", "dtype", "device", "reason"}
    if unknown:
        raise bad(f"unknown key(s) {sorted(unknown)}")
    reason = item.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise bad("needs a non-empty 'reason'")
    op, clause = item.get("op"), item.get("clause")
    if (op is None) == (clause is None):
        raise bad("needs exactly one of 'op' and 'clause'")
    if op is not None and op not in OPS:
        raise bad(f"unknown op {op!r}")
    if clause is not None:
        clause = str(clause)
        if clause not in {clause_of(o) for o in OPS}:
            raise bad(f"unknown clause {clause!r}")
    dtype = item.get("dtype")
    if dtype is not None and dtype not in DTYPES:
        raise bad(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    device = item.get("device")
    if device is not None and not isinstance(device, str):
        raise bad("'device' must be a string")
    return XfailEntry(reason=reason.strip(), op=op, clause=clause, dtype=dtype, device=device)


def apply_xfail(results: list[OpResult], entries: list[XfailEntry], dtype: str, device: str) -> list[XfailEntry]:
    """Turn matched failures into xfail (in place); return the applicable entries that matched none."""
    ops = [r.op for r in results]
    applicable = [e for e in entries if e.applies(dtype, device, ops)]
    used: set[XfailEntry] = set()
    for r in results:
        if r.status != "fail":
            continue
        for e in applicable:
            if e.covers(r.op):
                r.status, r.reason = "xfail", e.reason
                used.add(e)
                break
    return [e for e in applicable if e not in used]
