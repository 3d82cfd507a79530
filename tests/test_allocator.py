"""The CLI caps glibc's malloc arenas (syncd/allocator.py): counted with glibc's malloc_info
in a child process whose threads all allocate at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from syncd.allocator import _glibc

ROOT = Path(__file__).resolve().parent.parent

# Eight threads malloc at the same time (a barrier), then glibc describes its arenas: one
# <heap nr="..."> element per arena.
_COUNT_ARENAS = """
import ctypes, ctypes.util, sys, tempfile, threading
{setup}
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
barrier = threading.Barrier(8)
def allocate():
    barrier.wait()
    for _ in range(50):
        libc.malloc(4096)
    barrier.wait()
threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
with tempfile.NamedTemporaryFile(suffix=".xml") as out:
    fp = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    print(open(out.name).read().count("<heap nr="))
"""

pytestmark = pytest.mark.skipif(_glibc() is None, reason="arenas are glibc's (not musl, macOS)")


def arenas_after(setup: str, **env: str) -> int:
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    environment.update(env, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", _COUNT_ARENAS.format(setup=setup)],
        capture_output=True,
        text=True,
        env=environment,
        check=True,
        timeout=60,
    )
    return int(done.stdout.split()[-1])  # after what the setup printed


def test_threads_get_arenas_of_their_own_without_the_cap() -> None:
    """The control: what the cap is for (glibc makes up to 8 per core)."""
    assert arenas_after("") > 2


def test_the_cli_caps_arenas_before_its_threads_start() -> None:
    setup = (
        "from syncd.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass"
    )
    assert arenas_after(setup) <= 2


def test_malloc_arena_max_in_the_environment_wins() -> None:
    setup = "from syncd.allocator import cap_arenas\nassert not cap_arenas()"
    assert arenas_after(setup, MALLOC_ARENA_MAX="4") == 4
