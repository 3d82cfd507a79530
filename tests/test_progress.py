"""The progress display: on a terminal only, batches done of the total, rows, rate and ETA."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import structlog
from e2e_support import API_KEY, HOUR, NOW, run_cli, sync_rows, write_config

from syncd.batch import BatchKey, SyncRecord
from syncd.observability.logging import configure_logging, keep_below_logs
from syncd.observability.progress import ProgressDisplay, progress_for
from syncd.simulator import Simulator, SimulatorConfig
from syncd.timeutil import UTC, utcnow

KEY = BatchKey(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 1, 1, tzinfo=UTC))
RECORD = SyncRecord(
    batch_id=KEY.id,
    source="segment",
    start=KEY.start,
    end=KEY.end,
    committed_at=KEY.end,
    rows_loaded=1200,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_line_shows_done_of_total_rows_rate_and_eta() -> None:
    clock = Clock()
    display = ProgressDisplay(io.StringIO(), total=4, clock=clock)
    clock.now = 10.0
    display.after_commit(KEY, RECORD)
    assert display.line() == "batches 1/4  rows 1,200  120 rows/s  ETA 30s"


def test_a_held_batch_is_shown() -> None:
    display = ProgressDisplay(io.StringIO(), total=4, clock=Clock())
    display.on_failure(KEY, RuntimeError("x"), 5, held=True)
    assert display.line() == "batches 0/4  rows 0  HELD 2026-11-01 00:00"


def test_off_a_terminal_there_is_no_display() -> None:
    assert progress_for(io.StringIO()) is None


class FakeTerminal(io.StringIO):
    """What a terminal is sent; `isatty` says yes."""

    def isatty(self) -> bool:
        return True

    def screen(self) -> list[str]:
        """The lines the terminal shows: `\r` returns to the line's start and overwrites."""
        lines, column = [""], 0
        for char in self.getvalue():
            if char == "\n":
                lines.append("")
                column = 0
            elif char == "\r":
                column = 0
            else:
                line = lines[-1].ljust(column)
                lines[-1] = line[:column] + char + line[column + 1 :]
                column += 1
        return [line.rstrip() for line in lines]


def test_log_lines_go_above_the_progress_line_which_stays_at_the_bottom() -> None:
    terminal = FakeTerminal()
    saved = structlog.get_config()
    try:
        configure_logging("json", "info", stream=terminal)
        clock = Clock()
        display = progress_for(terminal, total=4, clock=clock)
        assert display is not None
        display.before_batch(KEY)
        structlog.get_logger("test").warning("retrying a download after a timeout")
        clock.now = 10.0
        display.after_commit(KEY, RECORD)
        structlog.get_logger("test").info("ok")
        screen = terminal.screen()
        display.finish()
    finally:
        keep_below_logs(None)
        structlog.configure(**saved)
    progress = "batches 1/4  rows 1,200  120 rows/s  ETA 30s"
    assert (
        len(screen),
        '"event": "retrying a download after a timeout"' in screen[0],
        '"event": "ok"' in screen[1],
        screen[-1],
    ) == (3, True, True, progress)
    assert terminal.screen()[-2:] == [progress, ""]


def run_in_pty(argv: list[str]) -> str:
    """Run `argv` with stderr on a pseudo-terminal; what the terminal showed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=follower, close_fds=True)
    os.close(follower)
    out = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=30)
    os.close(leader)
    return out.decode(errors="replace")


def test_once_on_a_terminal_shows_progress_and_off_one_does_not(tmp_path: Path) -> None:
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=60)) as sim:
        start = utcnow().replace(minute=0, second=0, microsecond=0) - 4 * HOUR
        files = write_config(tmp_path / "tty", sim, start)
        shown = run_in_pty([sys.executable, "-m", "syncd", "once", "-c", str(files.config)])
        plain = write_config(tmp_path / "plain", sim, start)
        logged = subprocess.run(
            [sys.executable, "-m", "syncd", "once", "-c", str(plain.config), "--log-level", "info"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finals = re.findall(r"batches (\d+)/(\d+)  rows [\d,]+", shown)
    done, total = finals[-1]
    assert (done == total, int(total) >= 2, "batches " in logged.stderr) == (True, True, False)


def test_batch_committed_is_logged_once_per_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=60)) as sim:
        files = write_config(tmp_path, sim, NOW - 4 * HOUR)
        code = run_cli(["once", "-c", str(files.config), "--log-level", "info"])
    events = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
    committed = sync_rows(files.duckdb)
    assert (code, events.count("batch committed"), len(committed) >= 2) == (
        0,
        len(committed),
        True,
    )
