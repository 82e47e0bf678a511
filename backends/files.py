"""Writing files so that nothing is lost: every output of vdm goes through here.

A reader (or a crash) sees the old file or the complete new one, never a torn one: data goes
to a temporary file in the same folder (same filesystem), is flushed and fsynced, and is then
renamed over the target with ``os.replace``. Temporary files are named ``.<name>.<random>.tmp``,
so a run that is killed mid-write leaves only such names, which :func:`remove_stale_temp_files`
deletes on the next start.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# mkstemp creates 0600 files; give written files the usual 0666 & ~umask instead.
_UMASK = os.umask(0)
os.umask(_UMASK)

TEMP_GLOB = ".*.tmp"


def _fsync_dir(folder: Path) -> None:
    """Persist a rename; not possible on every platform or filesystem, so failures are ignored."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path``,
    when it raises the temporary file is removed. Writers must name their format explicitly
    (the temporary name ends in ``.tmp``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def remove_stale_temp_files(*folders: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folders``; returns them."""
    removed = []
    for folder in folders:
        for stale in Path(folder).glob(TEMP_GLOB):
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message on one line, cut to ``limit`` characters (native libraries
    write multi-line messages; the user gets one line)."""
    text = " ".join(str(exc).split())
    return text if len(text) < limit else text[: limit - 3] + "..."
