"""Hostile export bodies (small when compressed) and a child-process runner that measures
peak RSS, for tests/test_hostile_inputs.py and `scripts/hostile.py`.

Each case writes its body to a file; `measure` runs a transform of it in a fresh Python
process, polls that process's RSS, kills it past `kill_mb` (so a regression cannot take the
machine down) and returns the peak and the outcome the child printed.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
MB = 1 << 20
#: The bound the issue sets for `syncd once` on every hostile case.
RSS_LIMIT_MB = 512
EVENT_START = "2026-11-01T00:10:00.000Z"


def row(index: int, **extra: object) -> bytes:
    """One ordinary export row inside the test batch's window."""
    return json.dumps(
        {
            "IndvId": index,
            "SessionId": index,
            "EventStart": EVENT_START,
            "EventType": "click",
            **extra,
        }
    ).encode()


def gzip_stream(pieces: Iterator[bytes]) -> bytes:
    """gzip of the concatenated pieces, compressed as they come (never joined uncompressed)."""
    out = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [out.compress(piece) for piece in pieces]
    parts.append(out.flush())
    return b"".join(parts)


def repeated(unit: bytes, total: int) -> Iterator[bytes]:
    """`unit` repeated to `total` bytes, in 1 MiB pieces."""
    block = unit * max(1, MB // len(unit))
    left = total
    while left > 0:
        yield block[:left]
        left -= len(block)


@dataclass(frozen=True)
class Case:
    name: str
    what: str  # the hostile input, in a few words
    body: Callable[[], bytes]  # the file as downloaded (gzip)
    path: str = "transform"  # "transform" (chosen path) or "columnar" (the fast path forced)


def _deep_array() -> bytes:
    depth = 200_000
    return gzip_stream(iter([b"[", b"[" * depth, b"]" * depth, b"]"]))


def _deep_array_between_rows() -> bytes:
    depth = 200_000
    return gzip_stream(
        iter([b"[", row(1), b",\n", b"[" * depth, b"]" * depth, b",\n", row(2), b"]\n"])
    )


def _deep_custom_var() -> bytes:
    depth = 990
    deep = b'{"IndvId":3,"EventStart":"' + EVENT_START.encode() + b'","user_deep":'
    deep += b'{"a":' * depth + b"1" + b"}" * depth + b"}"
    return gzip.compress(b"\n".join([row(1), deep, row(2)]) + b"\n")


def _inflating_array_line() -> bytes:
    # an array whose one "line" is 2 GB of spaces: 1 MB rewriter reads inflated it whole
    return gzip_stream(iter([b"[", row(1), b",", *repeated(b" ", 2048 * MB), row(2), b"]"]))


def _huge_array_element() -> bytes:
    # one element holding a 256 MB string
    head = b'[{"IndvId":1,"EventStart":"' + EVENT_START.encode() + b'","PageUrl":"'
    return gzip_stream(iter([head, *repeated(b"x", 256 * MB), b'"},\n', row(2), b"]\n"]))


def _megabyte_rows() -> bytes:
    # 1,500 rows of about 1 MB each (1.5 GB inflated): blocks sized in rows held them all
    def rows() -> Iterator[bytes]:
        for index in range(1500):
            yield row(index, PageUrl="u" * MB) + b"\n"

    return gzip_stream(rows())


def _many_custom_keys() -> bytes:
    # one row with 100,000 distinct custom keys among ordinary rows (the fast path's query
    # typed every key it sampled)
    keys = ",".join(f'"user_k{i}_str":"v"' for i in range(100_000))
    wide = b'{"IndvId":0,"EventStart":"' + EVENT_START.encode() + b'",' + keys.encode() + b"}"

    def rows() -> Iterator[bytes]:
        yield wide + b"\n"
        for index in range(1, 60_000):
            yield row(index, PageUrl=f"https://example.com/{index * 7919 % 100003}") + b"\n"

    return gzip_stream(rows())


CASES: tuple[Case, ...] = (
    Case("deep-array", "a JSON array holding one element nested 200,000 deep", _deep_array),
    Case(
        "deep-array-element",
        "the same element between two ordinary rows",
        _deep_array_between_rows,
    ),
    Case("deep-custom-var", "a custom var nested 990 deep", _deep_custom_var),
    Case("inflating-array", "an array line of 2 GB of spaces", _inflating_array_line),
    Case("huge-element", "one array element of 256 MB", _huge_array_element),
    Case("megabyte-rows", "1,500 NDJSON rows of 1 MB", _megabyte_rows),
    Case(
        "many-custom-keys",
        "100,000 distinct custom keys in one row",
        _many_custom_keys,
    ),
)

_CHILD = """
import json, sys
from datetime import datetime, timezone
from pathlib import Path
from syncd.batch import BatchKey
from syncd.errors import TransformError
from syncd.fields import export_columns
from syncd.transform.columnar import transform, transform_columnar

source, out, path = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
key = BatchKey(datetime(2026, 11, 1, tzinfo=timezone.utc), datetime(2026, 11, 1, 1, tzinfo=timezone.utc))
run = transform_columnar if path == "columnar" else transform
try:
    batch = run(key, source, out, export_columns(), "parquet", datetime.now(timezone.utc))
except TransformError as exc:
    print(json.dumps({"held": str(exc)}))
else:
    print(json.dumps({"rows": batch.rows, "rejected": batch.rejected}))
"""


@dataclass(frozen=True)
class Measured:
    peak_mb: float
    seconds: float
    outcome: dict[str, object]  # {"rows", "rejected"} or {"held": reason} or {"killed": why}


def _read_all(file: IO[bytes]) -> str:
    with file:
        file.seek(0)
        return file.read().decode(errors="replace")


def _peak_rss_mb(pid: int) -> float:
    """The process's peak RSS so far (VmHWM: the high-water mark of its own memory since exec).

    Not wait4's ru_maxrss: on Linux that also counts the image before exec, i.e. the test
    process's own size at fork (a gigabyte late in a full run)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measure(
    case: Case, folder: Path, *, kill_mb: float = 3072, timeout: float = 600, root: Path = ROOT
) -> Measured:
    """Run the transform of `case`'s body in a child process of the code at `root`."""
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / f"{case.name}.json.gz"
    if not source.exists():
        source.write_bytes(case.body())
    argv = [sys.executable, "-c", _CHILD, str(source), str(folder / "out"), case.path]
    return measure_command(argv, root=root, kill_mb=kill_mb, timeout=timeout)


def measure_command(
    argv: list[str],
    *,
    root: Path = ROOT,
    kill_mb: float = 3072,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> Measured:
    """Run `argv` with the code at `root` importable; its peak RSS and outcome: the JSON it
    printed last on stdout, else its exit code (`{"exit": n}`)."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(root)}
    started = time.monotonic()
    # files, not pipes: a child that logs a lot must never block on a full pipe
    stdout, stderr = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    child = subprocess.Popen(argv, stdout=stdout, stderr=stderr, cwd=root, env=env)
    peak, killed = 0.0, ""
    while True:
        # VmHWM keeps the peak while the child lives; polled every 20 ms (an exited child has
        # no figures left), so only a peak in its last 20 ms could be missed
        peak = max(peak, _peak_rss_mb(child.pid))
        pid, status, _ = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if not killed and peak > kill_mb:
            killed = f"killed past {kill_mb:.0f} MB"
        elif not killed and time.monotonic() - started > timeout:
            killed = f"killed after {timeout:.0f} s"
        if killed:
            child.kill()
        time.sleep(0.02)
    code = os.waitstatus_to_exitcode(status)
    child.returncode = code
    seconds = time.monotonic() - started
    out, err = (_read_all(f) for f in (stdout, stderr))
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if killed:
        outcome: dict[str, object] = {"killed": killed}
    elif code == 0 and lines:
        outcome = json.loads(lines[-1])
    else:
        outcome = {"exit": code, "stderr": err.strip().splitlines()[-1:]}
    return Measured(peak, seconds, outcome)
