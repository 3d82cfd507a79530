"""Querying the DuckDB file while `syncd run` is up (issue 14): a reader beside the daemon.

The daemon (a child process) has the file open only while it writes, so a reader in this
process opening it read-only, as `duckdb -readonly` or `duckdb.connect(path, read_only=True)`
would, fails only while a commit runs; and a daemon that finds a reader holding the file waits
for it, says so in its log and its status, and carries on when the reader leaves.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest
from e2e_support import (
    API_KEY,
    HOUR,
    SyncdFiles,
    assert_rows_equal,
    expected_segment_rows,
    export_rows,
    hour_windows,
    run_cli,
    sync_rows,
    write_config,
)
from test_pipeline import NOW as PIPELINE_NOW
from test_pipeline import FakeSource

from syncd.cli import EXIT_OK
from syncd.fields import export_columns
from syncd.pipeline import Pipeline, PipelineOptions
from syncd.simulator import Simulator, SimulatorConfig
from syncd.state import StatusFile
from syncd.timeutil import utcnow
from warehouses.duckdb import DuckDBWarehouse
from warehouses.local import LocalStage

#: How often the reader queries: faster than once a second.
READ_EVERY = 0.25


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the daemon")
        time.sleep(0.05)


def daemon_status(files: SyncdFiles) -> dict[str, Any]:
    path = files.state_dir / "status.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet
        return {}
    return data


def log_events(path: Path) -> list[dict[str, Any]]:
    """The daemon's JSON log lines."""
    events = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


@dataclass
class Daemon:
    """`syncd run` as a child process, logging JSON to a file."""

    files: SyncdFiles
    log: Path
    proc: subprocess.Popen[bytes] = field(init=False)

    def start(self) -> Daemon:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", "run", "-c", str(self.files.config)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        return self

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def daemon_for(tmp_path: Path) -> Iterator[Callable[[Simulator, Any], Daemon]]:
    started: list[Daemon] = []

    def start(sim: Simulator, start_at: Any) -> Daemon:
        files = write_config(
            tmp_path,
            sim,
            start_at,
            {
                "LogLevel": "debug",
                "LogFormat": "json",
                "duckdb.LockWait": "2m",
                "duckdb.ReaderWindow": "1s",  # the default
            },
        )
        started.append(Daemon(files, tmp_path / "daemon.log").start())
        return started[-1]

    yield start
    for daemon in started:
        daemon.stop()


@dataclass
class Read:
    at: float  # monotonic seconds
    ok: bool
    rows: int = 0
    batches: int = 0
    error: str = ""


def query_loop(db: Path, stop: threading.Event, reads: list[Read]) -> None:
    """Open read-only, count, close; every READ_EVERY seconds until `stop`."""
    while not stop.is_set():
        at = time.monotonic()
        try:
            with duckdb.connect(str(db), read_only=True) as con:
                rows = con.execute("SELECT count(*) FROM fsexport").fetchone()
                batches = con.execute("SELECT count(*) FROM fssync").fetchone()
            assert rows is not None and batches is not None
            reads.append(Read(at, True, int(rows[0]), int(batches[0])))
        except duckdb.Error as exc:
            reads.append(Read(at, False, error=str(exc).splitlines()[0]))
        stop.wait(READ_EVERY)


def failure_spells(reads: list[Read]) -> list[float]:
    """How long each unbroken run of failed reads lasted: from its first failure to the next
    successful read."""
    spells, first = [], None
    for read in reads:
        if not read.ok and first is None:
            first = read.at
        elif read.ok and first is not None:
            spells.append(read.at - first)
            first = None
    assert first is None, "the reader's last reads failed"
    return spells


def test_a_reader_queries_while_the_daemon_loads_a_backfill(
    daemon_for: Callable[[Simulator, Any], Daemon],
) -> None:
    config = SimulatorConfig(api_key=API_KEY, events_per_hour=3000, operation_latency=0.05)
    with Simulator(config) as sim:
        start = utcnow().replace(minute=0, second=0, microsecond=0) - 12 * HOUR
        daemon = daemon_for(sim, start)
        db = daemon.files.duckdb
        wait_for(lambda: bool(daemon_status(daemon.files).get("recent")))
        stop, reads = threading.Event(), []
        reader = threading.Thread(target=query_loop, args=(db, stop, reads))
        reader.start()
        try:
            wait_for(lambda: daemon_status(daemon.files).get("state") == "idle", timeout=120)
            stop.wait(3 * READ_EVERY)  # a few reads of the final state
        finally:
            stop.set()
            reader.join()
            code = daemon.stop()
        windows = hour_windows(start, start + 11 * HOUR)
        assert code == EXIT_OK
        assert_rows_equal(export_rows(db), expected_segment_rows(sim, windows))
    events = log_events(daemon.log)
    commits = [  # how long each commit had the file open
        e["held_s"]
        for e in events
        if e["event"] == "the DuckDB file was open" and e["action"].startswith("commit batch")
    ]
    good = [r for r in reads if r.ok]
    seen_batches = sorted({r.batches for r in good})
    spells = failure_spells(reads)
    print(
        f"\nreader: {len(reads)} reads, {len(reads) - len(good)} failed, longest failure "
        f"{max(spells, default=0):.3f} s; commits: {len(commits)}, longest {max(commits):.3f} s"
        f" with the file open"
    )
    # both made progress: the reader saw the batches arrive, one commit after another
    assert (len(seen_batches) > 3, seen_batches[-1], good[-1].rows) == (
        True,
        len(windows),
        len(export_rows(db)),
    )
    # the reader never failed for longer than one commit had the file, plus the time between
    # two of its attempts (its pause and its own query, on this busy machine)
    period = max(b.at - a.at for a, b in zip(reads, reads[1:], strict=False))
    assert max(spells, default=0) <= max(commits) + period, (spells, commits, period)
    assert {r.error.split(":")[0] for r in reads if not r.ok} <= {"IO Error"}


def test_a_daemon_waits_for_a_reader_says_so_and_carries_on(
    daemon_for: Callable[[Simulator, Any], Daemon], capsys: pytest.CaptureFixture[str]
) -> None:
    config = SimulatorConfig(api_key=API_KEY, events_per_hour=300, operation_latency=0.3)
    with Simulator(config) as sim:
        start = utcnow().replace(minute=0, second=0, microsecond=0) - 6 * HOUR
        daemon = daemon_for(sim, start)
        files = daemon.files
        wait_for(lambda: bool(daemon_status(files).get("recent")))
        reader = open_read_only(files.duckdb)  # and keep it open, as a DuckDB shell would
        try:
            wait_for(lambda: daemon_status(files).get("state") == "waiting")
            capsys.readouterr()
            assert run_cli(["status", "-c", str(files.config), "--json"], now=None) == EXIT_OK
            shown = json.loads(capsys.readouterr().out)
            committed = reader.execute("SELECT count(*) FROM fssync").fetchone()
        finally:
            reader.close()
        wait_for(lambda: daemon_status(files).get("state") == "idle")
        code = daemon.stop()
        windows = hour_windows(start, start + 5 * HOUR)
        assert code == EXIT_OK
        assert_rows_equal(export_rows(files.duckdb), expected_segment_rows(sim, windows))
    # `status` read the file (the reader's own process may), and shows the daemon waiting
    held_by = f"another process (PID {os.getpid()}) has the DuckDB file {files.duckdb} open"
    assert (shown["source"], shown["batches_committed"], shown["daemon"]["state"]) == (
        "warehouse",
        committed[0] if committed else None,
        "waiting",
    )
    assert held_by in shown["daemon"]["detail"]
    assert "waiting up to 120 s, [duckdb] LockWait" in shown["daemon"]["detail"]
    said = [
        e["event"]
        for e in log_events(daemon.log)
        if "DuckDB file" in e["event"] and e["level"] != "debug"
    ]
    assert said == [
        "waiting for the DuckDB file: another process has it open",
        "the DuckDB file is free again; carrying on",
    ]
    assert len(sync_rows(files.duckdb)) == len(windows)


def open_read_only(db: Path) -> duckdb.DuckDBPyConnection:
    """A reader's connection: retried while a commit has the file (what a reader sees then)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return duckdb.connect(str(db), read_only=True)
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def test_status_reads_the_warehouse_while_the_daemon_is_idle(
    daemon_for: Callable[[Simulator, Any], Daemon], capsys: pytest.CaptureFixture[str]
) -> None:
    config = SimulatorConfig(api_key=API_KEY, events_per_hour=100)
    with Simulator(config) as sim:
        start = utcnow().replace(minute=0, second=0, microsecond=0) - 3 * HOUR
        daemon = daemon_for(sim, start)
        wait_for(lambda: daemon_status(daemon.files).get("state") == "idle")
        capsys.readouterr()
        assert run_cli(["status", "-c", str(daemon.files.config), "--json"], now=None) == EXIT_OK
        shown = json.loads(capsys.readouterr().out)
        assert daemon.proc.poll() is None
    assert (shown["source"], shown["batches_committed"], shown["daemon"]["state"]) == (
        "warehouse",
        2,
        "idle",
    )


def test_status_falls_back_to_the_status_file_while_the_file_is_written(
    daemon_for: Callable[[Simulator, Any], Daemon], capsys: pytest.CaptureFixture[str]
) -> None:
    """A process holding the file read-write stands for a commit in progress."""
    config = SimulatorConfig(api_key=API_KEY, events_per_hour=100)
    with Simulator(config) as sim:
        start = utcnow().replace(minute=0, second=0, microsecond=0) - 3 * HOUR
        daemon = daemon_for(sim, start)
        wait_for(lambda: daemon_status(daemon.files).get("state") == "idle")
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, duckdb; c = duckdb.connect(sys.argv[1]); print('ready', flush=True);"
                " sys.stdin.read()",
                str(daemon.files.duckdb),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
            capsys.readouterr()
            assert run_cli(["status", "-c", str(daemon.files.config), "--json"], now=None) == 0
            shown = json.loads(capsys.readouterr().out)
        finally:
            assert holder.stdin is not None and holder.stdout is not None
            holder.stdin.close()
            holder.wait(timeout=20)
            holder.stdout.close()
    assert (shown["source"], shown["batches_committed"]) == (
        "status file (the daemon holds the warehouse)",
        2,
    )


# -- the README's commands -------------------------------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "**Querying DuckDB while the daemon runs.**"


def readme_blocks() -> tuple[list[str], str]:
    """The section's shell commands, and the error it says a reader sees during a commit."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    blocks = section.split("```")
    commands = [line for line in blocks[1].removeprefix("sh\n").splitlines() if line]
    return commands, blocks[3].strip()


def as_run_here(command: str, files: SyncdFiles) -> list[str]:
    """A README command, pointed at this test's files instead of demo-data/."""
    argv = shlex.split(command.replace("demo-data/", f"{files.duckdb.parent}/"))
    if argv[0] == ".venv/bin/python":
        return [sys.executable, *argv[1:]]
    if argv[0] == ".venv/bin/syncd":
        return [sys.executable, "-m", "syncd", *argv[1:]]
    if argv[0] == "duckdb" and shutil.which("duckdb") is None:
        # no DuckDB shell on this machine: the same query, read-only, through the package
        assert argv[1] == "-readonly", command
        script = "import sys, duckdb; print(duckdb.connect(sys.argv[1], read_only=True).sql(sys.argv[2]))"
        return [sys.executable, "-c", script, *argv[2:]]
    return argv


def test_the_readme_query_commands_run_beside_the_daemon(
    daemon_for: Callable[[Simulator, Any], Daemon],
) -> None:
    commands, error = readme_blocks()
    config = SimulatorConfig(api_key=API_KEY, events_per_hour=100)
    with Simulator(config) as sim:
        start = utcnow().replace(minute=0, second=0, microsecond=0) - 3 * HOUR
        daemon = daemon_for(sim, start)
        files = daemon.files
        shutil.copy(files.config, files.duckdb.parent / "demo.toml")
        wait_for(lambda: daemon_status(files).get("state") == "idle")
        done = [
            subprocess.run(as_run_here(c, files), capture_output=True, text=True, timeout=60)
            for c in commands
        ]
        # and while a commit runs (a process holding the file read-write stands for it)
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, duckdb; c = duckdb.connect(sys.argv[1]); print('ready', flush=True);"
                " sys.stdin.read()",
                str(files.duckdb),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
            during = subprocess.run(
                as_run_here(commands[0], files), capture_output=True, text=True, timeout=60
            )
        finally:
            assert holder.stdin is not None and holder.stdout is not None
            holder.stdin.close()
            holder.wait(timeout=20)
            holder.stdout.close()
        assert daemon.proc.poll() is None
    assert [(d.returncode, "Error" in d.stderr) for d in done] == [(0, False)] * len(commands)
    assert "EventType" in done[0].stdout and "click" in done[0].stdout
    assert "read from warehouse" in done[1].stdout
    shown = re.sub(r"\(PID \d+\)", "(PID N)", error).replace(
        '"demo-data/syncd.duckdb"', f'"{files.duckdb}"'
    )
    seen = re.sub(r"held in \S+ \(PID \d+\)", "held in PROGRAM (PID N)", during.stderr)
    expected = re.sub(r"held in \S+ \(PID N\)", "held in PROGRAM (PID N)", shown)
    assert expected in seen, (expected, during.stderr)


# -- the pipeline's status while it waits ----------------------------------------------------


class Tee:
    """Passes a warehouse's wait reports to the pipeline and notes the status file after each;
    the reader leaves once the wait shows."""

    def __init__(self, pipeline: Pipeline, status: StatusFile, leave: Callable[[], None]) -> None:
        self.pipeline, self.status, self.leave = pipeline, status, leave
        self.shown: list[tuple[str, str]] = []

    def note(self) -> None:
        current = self.status.read()
        assert current is not None
        self.shown.append((current.state, current.detail))

    def warehouse_waiting(self, reason: str) -> None:
        self.pipeline.warehouse_waiting(reason)
        self.note()
        self.leave()

    def warehouse_free(self, waited_seconds: float) -> None:
        self.pipeline.warehouse_free(waited_seconds)
        self.note()


def test_the_status_shows_the_wait_and_then_what_it_showed_before(tmp_path: Path) -> None:
    db = tmp_path / "syncd.duckdb"
    status = StatusFile(tmp_path / "status.json")
    warehouse = DuckDBWarehouse(db)
    pipeline = Pipeline(
        FakeSource(tmp_path / "spool"),
        LocalStage(tmp_path / "staged"),
        warehouse,
        export_columns(),
        PipelineOptions(work_dir=tmp_path / "work", staged_format="parquet"),
        status=status,
        clock=lambda: PIPELINE_NOW,
    )
    pipeline.start()
    reader = duckdb.connect(str(db), read_only=True)  # this process is the reader
    tee = Tee(pipeline, status, reader.close)
    warehouse.report_waits(tee, pipeline.stop)
    try:
        key = FakeSource(tmp_path / "spool").plan([], PIPELINE_NOW, 1)[0]
        record = pipeline.process(key)
    finally:
        reader.close()
        warehouse.close()
    assert record.batch_id == key.id
    assert tee.shown == [
        (
            "waiting",
            "another connection of this process has the DuckDB file "
            f"{db} open; syncd writes to it once it is closed (waiting up to 300 s, "
            "[duckdb] LockWait)",
        ),
        ("loading", f"batch {key.id}"),
    ]
