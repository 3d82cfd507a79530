"""glibc's malloc arenas, capped for the daemon's process.

glibc gives each thread that allocates an arena of its own, up to eight per core, and keeps
what a thread freed in that thread's arena for it to reuse. syncd's threads take turns at
large, short-lived allocations (a transform's DuckDB query on a look-ahead thread, then a
commit's on the main thread), so with an arena each the freed memory of one is not there for
the next and the process's peak grows: `syncd once` into DuckDB peaked at 529-545 MB with
glibc's default and 467-475 MB with two arenas, in the same time (docs/benchmark.md). The
cap is what `MALLOC_ARENA_MAX=2` in the environment does; a `MALLOC_ARENA_MAX` set there
wins. Other C libraries (musl, macOS) have no such arenas: nothing is done there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ARENAS = 2
_M_ARENA_MAX = -8  # malloc.h


def cap_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's arenas at `arenas` unless `MALLOC_ARENA_MAX` is set; True when capped.
    Call it before the process starts threads: arenas already made are kept."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas))


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
    except (OSError, AttributeError):
        return None
    return libc
