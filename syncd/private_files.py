"""Files syncd writes hold exported data and state: only the owner may read them.

`syncd` runs with umask 077 (`private_umask`), so every file it or a library creates (spool,
work and staged files, the DuckDB file, state files) is 0600 and every folder 0700. A download
is written through `open_private_new`, which never follows a symlink planted at its path.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import structlog

log = structlog.get_logger(__name__)

#: Group and others get nothing.
PRIVATE_UMASK = 0o077


@contextmanager
def private_umask() -> Iterator[None]:
    """Run the block with umask 077, then put the previous umask back."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def open_private_new(path: Path) -> BinaryIO:
    """Open `path` for writing as a new 0600 file. Whatever was there (a leftover of a crash,
    or a symlink someone planted) is removed first, never written through; should another
    entry appear in between, the open fails instead of following it."""
    path.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    return os.fdopen(fd, "wb")


def warn_if_shared(folder: Path, what: str) -> None:
    """Log a warning when `folder` exists and others than its owner may write into it (they
    could plant files or symlinks in it)."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IWGRP | stat.S_IWOTH) and not mode & stat.S_ISVTX:
        log.warning(
            f"{what} is writable by others than its owner; make it 0700",
            path=str(folder),
            mode=oct(stat.S_IMODE(mode)),
        )
