"""Replacing a file atomically: readers see the old file or the new one, never half of one.

The one way syncd replaces a file it writes whole (state, checkpoints, staged files): write a
temporary file in the target's folder (the same filesystem, so the rename is atomic), fsync it,
rename it over the target, fsync the folder so that the rename survives a crash. A failure
anywhere leaves the target as it was and no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_write(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write; when the block ends without an exception it replaces `path`
    (made durable: file and folder fsynced). The folder is created if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` (see `atomic_write`)."""
    with atomic_write(path) as handle:
        handle.write(data)


def fsync_file(path: Path) -> None:
    """Make a file's written bytes durable."""
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
