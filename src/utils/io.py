"""Crash-safe file writes: temporary file in the same directory, fsync, rename, fsync dir.

Every file a resume depends on goes through here, so a kill or a full disk leaves either
the old file or the new one in place, never a torn one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from ..layout import pid_alive

PathLike = Union[str, os.PathLike]

TEMP_MARKER = ".tmp-"


def temp_path_for(path: Path) -> Path:
    """Name of a temporary sibling of ``path``; recognisable so leftovers can be cleaned."""
    return path.with_name(f".{path.name}{TEMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def is_temp_file(path: Path) -> bool:
    return path.name.startswith(".") and TEMP_MARKER in path.name


def fsync_directory(directory: PathLike) -> None:
    """Make a rename inside ``directory`` durable (no-op where directories can't be opened)."""
    try:
        fd = os.open(str(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write_bytes(path: PathLike, data: bytes, before_replace: Optional[Callable[[], None]] = None) -> None:
    """Write ``data`` to ``path`` atomically and durably.

    Args:
        before_replace: called after the data is durable in the temporary file and
            before it is renamed into place (a checkpoint's manifest is updated there).

    Raises:
        OSError: from the write (for example ``ENOSPC``); the previous file at ``path``
            is untouched and the temporary file is removed.
    """
    path = Path(path)
    tmp = temp_path_for(path)
    fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_directory(path.parent)


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temporaries(parent: Path, names: Sequence[str]) -> None:
    """Delete ``.<name>.tmp-<pid>-...`` files and staging folders in ``parent`` that a
    process killed mid-write left (its pid is no longer running): a download, an
    extraction, a new experiment's staging directory."""
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        for name in names:
            prefix = f".{name}{TEMP_MARKER}"
            pid = entry.name[len(prefix) :].split("-")[0] if entry.name.startswith(prefix) else ""
            if pid.isdigit() and not pid_alive(int(pid)):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    try:
                        os.unlink(entry.path)
                    except OSError:
                        pass
