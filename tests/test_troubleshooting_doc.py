"""docs/troubleshooting.md quotes what syncd really says: each case is provoked here (a
rejected API key, the DuckDB file held by another process, the metrics port taken, a full
spool disk) through the real CLI, and the message it prints must appear in the page."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from e2e_support import API_KEY, NOW, run_cli, write_config

from syncd.simulator import Simulator, SimulatorConfig
from syncd.timeutil import UTC

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "troubleshooting.md").read_text()
START = datetime(2026, 11, 2, 0, tzinfo=UTC)


def documented(said: str) -> None:
    """`said` (syncd's words) is quoted in the page, up to this run's batch ids, paths and
    numbers (PIDs, ports, attempts), which the page shows as examples."""
    variable = re.compile(r"(segment-\d{8}T\d{6}Z-\d{8}T\d{6}Z|/\S+\.duckdb|\d+)")
    parts = variable.split(" ".join(said.split()))
    pattern = "".join(
        re.escape(part) if i % 2 == 0 else (r"\d+" if part.isdigit() else r"\S+")
        for i, part in enumerate(parts)
    )
    assert re.search(pattern, " ".join(DOC.split())), f"docs/troubleshooting.md lacks: {said}"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=60)) as s:
        yield s


def last_line(err: str, prefix: str = "syncd: ") -> str:
    lines = [line for line in err.splitlines() if line.startswith(prefix)]
    assert lines, err
    return lines[-1]


def test_a_rejected_key_holds_the_batch_as_documented(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    files = write_config(tmp_path, sim, START, {"FsApiToken": "not-the-key"})
    assert run_cli(["once", "-c", str(files.config)], now=NOW) == 1
    said = last_line(capsys.readouterr().err)
    assert "HTTP 401" in said
    documented(said)


def test_a_duckdb_file_in_use_is_documented(tmp_path: Path, sim: Simulator) -> None:
    files = write_config(tmp_path, sim, START, {"duckdb.LockWait": "1s"})
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import duckdb, sys
                con = duckdb.connect({str(files.duckdb)!r})
                print("open", flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        result = subprocess.run(
            [sys.executable, "-m", "syncd", "once", "-c", str(files.config)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1, result.stderr
    said = last_line(result.stderr)
    assert f"(PID {holder.pid})" in said
    documented(said)


def test_a_taken_metrics_port_is_documented(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        files = write_config(tmp_path, sim, START, {"metrics.Address": f"127.0.0.1:{port}"})
        assert run_cli(["run", "-c", str(files.config)], now=NOW) == 2
    said = last_line(capsys.readouterr().err)
    documented(said.replace(str(port), "9108"))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of this test's own (tests run as root), unmounted afterwards."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert mounted.returncode == 0, f"cannot mount a tmpfs here: {mounted.stderr}"
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_spool_disk_is_documented(
    tmp_path: Path, sim: Simulator, small_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = write_config(
        tmp_path,
        sim,
        START,
        {
            "StateDir": small_disk / "state",
            "TmpDir": small_disk / "tmp",
            "local.SaveDir": small_disk / "staged",
            "MaxBatchAttempts": 1,
            "LogLevel": "error",
        },
    )
    (small_disk / "state").mkdir()
    stats = os.statvfs(small_disk)
    (small_disk / "filler").write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - 4096))
    assert run_cli(["once", "-c", str(files.config)], now=NOW) == 1
    said = last_line(capsys.readouterr().err)
    assert "No space left on device" in said
    documented(said)
