"""Crash-safe file writes: a reader (or a restarted process) sees the old file or the new one,
never half of one.

Every write goes to a unique temporary file in the target's directory, is fsynced, renamed over
the target and the directory is fsynced (POSIX). A crash can leave a ``.tmp-*`` file behind, never
a partial target. Used for store blobs, the trainer's round state, the owner's validation data,
deployment records and the compile cache.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["AtomicOutput", "atomic_output", "atomic_write", "fsync_directory"]


@dataclass
class AtomicOutput:
    """The open temporary file, and where it goes: set `target` before the block ends."""

    file: BinaryIO
    target: Path | None = None


@contextmanager
def atomic_output(directory: str | os.PathLike[str], *, mode: int = 0o644) -> Iterator[AtomicOutput]:
    """Write to ``out.file``, then set ``out.target`` (a path in `directory`) to publish it.

    For content-addressed files whose name is known only after the bytes are written; a block
    that raises, or never sets a target, leaves nothing behind.
    """
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as file:
            out = AtomicOutput(file)
            yield out
            file.flush()
            os.fsync(file.fileno())
        if out.target is None:
            raise RuntimeError("atomic_output: the block ended without setting a target")
        temp.chmod(mode)  # mkstemp creates files 0600
        os.replace(temp, out.target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_directory(Path(out.target).parent)


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> Path:
    """Replace `path` with `data` atomically (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path.parent, mode=mode) as out:
        out.file.write(data)
        out.target = path
    return path


def fsync_directory(directory: Path) -> None:
    """Makes a rename in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
