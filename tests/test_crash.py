"""Crash tests: syncd SIGKILLed at each step of a batch (and of a people batch, with
ExportIndividuals), then restarted, loses and duplicates nothing, and does not export a window
twice.

`tests/crash_runner.py` runs the CLI in a subprocess with one crash point installed; the
simulator runs here (a thread) and survives the kill. The restart runs in process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from e2e_support import (
    API_KEY,
    NOW,
    NOW_ENV,
    SyncdFiles,
    assert_rows_equal,
    expected_segment_rows,
    export_rows,
    hour_windows,
    read_table,
    run_cli,
    sync_rows,
    window_key,
    write_config,
)
from people_support import assert_people_equal, expected_people, stored_people

from syncd.cli import EXIT_OK
from syncd.people import people_batch_id
from syncd.simulator import Simulator, SimulatorConfig
from syncd.timeutil import UTC, format_timestamp

START = datetime(2026, 11, 1, 21, tzinfo=UTC)
WINDOWS = hour_windows(START, datetime(2026, 11, 2, 2, tzinfo=UTC))
RUNNER = Path(__file__).with_name("crash_runner.py")

#: Every step of a batch, in pipeline order; each crash hits the second batch, so the first is
#: committed and the second is caught half-way.
POINTS = (
    "download",
    "before_transform",
    "transform",
    "staged",
    "loaded",
    "before_commit",
    "committed",
)


def crash(files: SyncdFiles, point: str, now: datetime = NOW) -> subprocess.CompletedProcess[str]:
    """`syncd once` in a subprocess that kills itself at `point`."""
    return subprocess.run(
        [sys.executable, str(RUNNER), point, "once", "-c", str(files.config)],
        env={**os.environ, NOW_ENV: format_timestamp(now)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass(frozen=True)
class Recovery:
    """A syncd killed at one point of the second batch, then restarted."""

    sim: Simulator
    files: SyncdFiles
    crashed: subprocess.CompletedProcess[str]
    restart_code: int
    lookahead: int


#: Every point one batch at a time, and the commit-side points with batches prepared ahead
#: on worker threads (killed at whatever moment those threads are in).
CASES = [(point, 0) for point in POINTS] + [
    (point, 3) for point in ("staged", "loaded", "before_commit", "committed")
]


@pytest.fixture(scope="module", params=CASES, ids=[f"{p}-lookahead{n}" for p, n in CASES])
def recovery(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Recovery]:
    point, lookahead = request.param
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=200)) as sim:
        files = write_config(
            tmp_path_factory.mktemp(f"{point}-{lookahead}"), sim, START, {"Lookahead": lookahead}
        )
        crashed = crash(files, f"{point}@2")
        restart = run_cli(["once", "-c", str(files.config)])
        yield Recovery(sim, files, crashed, restart, lookahead)


def test_the_crash_runner_dies_by_sigkill(recovery: Recovery) -> None:
    assert recovery.crashed.returncode == -signal.SIGKILL, recovery.crashed.stderr


def test_after_a_crash_the_next_once_makes_the_table_exact(recovery: Recovery) -> None:
    assert recovery.restart_code == EXIT_OK
    assert_rows_equal(
        export_rows(recovery.files.duckdb), expected_segment_rows(recovery.sim, WINDOWS)
    )


def test_after_a_crash_the_sync_table_has_one_row_per_window(recovery: Recovery) -> None:
    got = [(r["SyncdBatchId"], r["RowsLoaded"] > 0) for r in sync_rows(recovery.files.duckdb)]
    assert got == [(window_key(*w).id, True) for w in WINDOWS]


def test_after_a_crash_no_window_is_exported_twice(recovery: Recovery) -> None:
    exports = dict(recovery.sim.stats.exports_by_window)
    if recovery.lookahead == 0:
        assert exports == {w: 1 for w in WINDOWS}
    else:
        # A kill in the milliseconds between an export's creation (on a worker thread) and the
        # persisting of its operation id costs one extra export of that window: never a row.
        assert set(exports) == set(WINDOWS) and max(exports.values()) <= 2


def test_a_kill_while_the_export_is_pending_resumes_that_export(tmp_path: Path) -> None:
    config = SimulatorConfig(api_key=API_KEY, events_per_hour=200, operation_latency=1.0)
    windows = WINDOWS[:1]
    now = windows[0][1] + timedelta(hours=1, minutes=30)  # only the first window is ready
    with Simulator(config) as sim:
        files = write_config(tmp_path, sim, START)
        crashed = crash(files, "polling", now)
        pending_when_killed = dict(sim.stats.exports_by_window)
        assert (crashed.returncode, pending_when_killed) == (-signal.SIGKILL, {windows[0]: 1})
        assert run_cli(["once", "-c", str(files.config)], now=now) == EXIT_OK
        assert dict(sim.stats.exports_by_window) == {windows[0]: 1}
        assert_rows_equal(export_rows(files.duckdb), expected_segment_rows(sim, windows))


# -- the people batch (ExportIndividuals) ------------------------------------------------------

#: The steps of a people batch; each crash hits the second one, so the first is committed.
PEOPLE_POINTS = ("people_fetched", "people_loaded", "people_committed")


@pytest.fixture(scope="module", params=PEOPLE_POINTS)
def people_recovery(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Recovery]:
    point = request.param
    config = SimulatorConfig(api_key=API_KEY, events_per_hour=120, returning_individuals=30)
    with Simulator(config) as sim:
        files = write_config(
            tmp_path_factory.mktemp(point), sim, START, {"ExportIndividuals": True}
        )
        crashed = crash(files, f"{point}@2")
        restart = run_cli(["once", "-c", str(files.config)])
        yield Recovery(sim, files, crashed, restart, 0)


def test_a_people_crash_runner_dies_by_sigkill(people_recovery: Recovery) -> None:
    assert people_recovery.crashed.returncode == -signal.SIGKILL, people_recovery.crashed.stderr


def test_after_a_people_crash_the_people_table_is_exact(people_recovery: Recovery) -> None:
    assert people_recovery.restart_code == EXIT_OK
    stored = stored_people(read_table(people_recovery.files.duckdb, "fsindividuals"))
    assert_people_equal(stored, expected_people(people_recovery.sim, WINDOWS))


def test_after_a_people_crash_each_window_has_one_people_sync_row(
    people_recovery: Recovery,
) -> None:
    rows = read_table(people_recovery.files.duckdb, "fsindividuals_sync", order_by="WindowStart")
    assert [(r["SyncdBatchId"], r["RowsLoaded"]) for r in rows] == [
        (people_batch_id(*w), len(people_recovery.sim.expected_individuals(*w))) for w in WINDOWS
    ]


def test_after_a_people_crash_the_events_are_exact_and_nothing_is_exported_twice(
    people_recovery: Recovery,
) -> None:
    assert_rows_equal(
        export_rows(people_recovery.files.duckdb),
        expected_segment_rows(people_recovery.sim, WINDOWS),
    )
    # one event export and one individuals export per window: the crashed people batch's
    # export was resumed (or its commit found done), never created again
    assert dict(people_recovery.sim.stats.exports_by_window) == {w: 2 for w in WINDOWS}
