"""Writing files so that nothing is lost: every output of vdm goes through here.

A reader (or a crash) sees the old file or the complete new one, never a torn one: data goes
to a temporary file in the same folder (same filesystem), is flushed and fsynced, and is then
renamed over the target with ``os.replace``. Temporary files are named ``.<name>.<random>.tmp``,
so a run that is killed mid-write leaves only such names, which :func:`remove_stale_temp_files`
deletes on the next start.

A write that fails (no space left, a read-only or missing folder that cannot be created, a file
where a folder should be, the file-size limit) raises :class:`WriteError`: an ``OSError`` whose
message is one line naming the file and the cause. :func:`check_writable` finds most of these
before a long computation starts.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# mkstemp creates 0600 files; give written files the usual 0666 & ~umask instead.
_UMASK = os.umask(0)
os.umask(_UMASK)

TEMP_GLOB = ".*.tmp"

# What a failed write means, in words a user can act on; other errors keep the system's text.
_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EFBIG: "file too large (the file-size limit was reached)",
    errno.EISDIR: "it is a folder",
    errno.ENAMETOOLONG: "the name is too long",
}


class WriteError(OSError):
    """An output could not be written; ``str()`` is one line naming the file and the cause."""

    def __init__(self, path: str | os.PathLike[str], exc: OSError) -> None:
        super().__init__(exc.errno, _cause(Path(path), exc))
        self.path = Path(path)

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.strerror}"


def _blocking_file(path: Path) -> Path | None:
    """The first ancestor of ``path`` that exists but is not a folder (it blocks the way)."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def _cause(path: Path, exc: OSError) -> str:
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):  # mkdir or open through a regular file
        blocker = _blocking_file(path)
        if blocker is not None:
            return f"{blocker} is a file, not a folder"
    return _CAUSES.get(exc.errno) or one_line(exc.strerror if exc.errno and exc.strerror else exc)


@contextlib.contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an ``OSError`` raised in the block into a :class:`WriteError` naming ``path``."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        raise WriteError(path, exc) from None


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise :class:`WriteError` unless ``path`` could be written now: it is not a folder, its folder
    exists or can be created (no file in the way) and a byte can be written there. Missing folders
    are not created. Run before a long computation whose result goes to ``path``; the disk may
    still fill up later, which the write itself reports."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(path, OSError(errno.EISDIR, os.strerror(errno.EISDIR)))
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise WriteError(path, OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)))
    with writing(path):
        # Named like a temp file of path, so a kill right here leaves what the next write removes.
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.check-", suffix=".tmp", dir=folder)
        try:
            os.write(fd, b"\0")
        finally:
            os.close(fd)
            os.unlink(name)


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
    with writing(path):
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
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, WriteError):
            raise
        raise WriteError(path, exc) from None  # the block only writes tmp: its errors are write errors
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> None:
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


def remove_stale_temp_files_of(*paths: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that killed writers of these exact ``paths`` left beside them
    (``.<name>.<random>.tmp``): for outputs that live in a user's folder, where other temporary
    files are none of our business. Returns them."""
    removed = []
    for path in map(Path, paths):
        if not path.parent.is_dir():
            continue
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def one_line(exc: BaseException | str, limit: int | None = 200) -> str:
    """An exception's message on one line, cut to ``limit`` characters (native libraries
    write multi-line messages; the user gets one line); ``limit=None`` keeps it whole."""
    text = " ".join(str(exc).split())
    return text if limit is None or len(text) < limit else text[: limit - 3] + "..."
