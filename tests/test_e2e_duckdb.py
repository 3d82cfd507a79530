"""End to end on the embedded default: the syncd CLI against the simulator, into DuckDB.

Every test compares the tables with what the simulator served, turned into rows by the
independent rules in `e2e_support`. In-process runs freeze syncd's clock at `NOW`, so the five
1-hour windows from 21:00 to 02:00 (two UTC days) are ready whatever the wall clock says.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from e2e_support import (
    API_KEY,
    HOUR,
    LEGACY_DATA_START,
    NOW,
    SyncdFiles,
    assert_rows_equal,
    batch_counts,
    expected_legacy_rows,
    expected_segment_rows,
    export_rows,
    hour_windows,
    legacy_key,
    legacy_simulator,
    reject_rows,
    run_cli,
    sync_rows,
    window_key,
    write_config,
)

from syncd.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from syncd.simulator import BAD_MALFORMED, Endpoint, Fault, Simulator, SimulatorConfig
from syncd.timeutil import UTC, format_timestamp, utcnow
from syncd.transform.columnar import FAST_PATH_MIN_BYTES

START = datetime(2026, 11, 1, 21, tzinfo=UTC)
WINDOWS = hour_windows(START, datetime(2026, 11, 2, 2, tzinfo=UTC))
DAY1, DAY2 = date(2026, 11, 1), date(2026, 11, 2)
DAY1_WINDOWS = [w for w in WINDOWS if w[0].date() == DAY1]
DAY2_WINDOWS = [w for w in WINDOWS if w[0].date() == DAY2]
EVENTS_PER_HOUR = 200


def batch_ids(windows: list[tuple[datetime, datetime]]) -> list[str]:
    return [window_key(start, end).id for start, end in windows]


def committed_ids(files: SyncdFiles) -> list[str]:
    return [str(r["SyncdBatchId"]) for r in sync_rows(files.duckdb)]


def once(files: SyncdFiles, now: datetime | None = NOW) -> int:
    return run_cli(["once", "-c", str(files.config)], now=now)


def rollback(files: SyncdFiles, *days: str) -> int:
    span = ["--day", days[0]] if len(days) == 1 else ["--from", days[0], "--to", days[1]]
    return run_cli(["rollback", "-c", str(files.config), *span, "--yes"])


def syncd_subprocess(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,
    )


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=EVENTS_PER_HOUR)) as s:
        yield s


@pytest.fixture
def files(tmp_path: Path, sim: Simulator) -> SyncdFiles:
    return write_config(tmp_path, sim, START)


@pytest.fixture
def synced(files: SyncdFiles) -> SyncdFiles:
    """The five windows loaded by one `once`."""
    assert once(files) == EXIT_OK
    return files


# -- once ------------------------------------------------------------------------------------


def test_the_expectation_exercises_the_hard_values(sim: Simulator) -> None:
    rows = expected_segment_rows(sim, WINDOWS)
    values = [v for row in rows for v in row.values()]
    present = {
        "id above 2^53": any(isinstance(v, int) and v > 2**53 for v in values),
        "NULL": None in values,
        "empty string": "" in values,
        "non-ASCII text": any(isinstance(v, str) and not v.isascii() for v in values),
        "custom vars": any(row["CustomVars"] for row in rows),
    }
    assert [name for name, found in present.items() if not found] == []


def test_once_loads_every_window_row_for_row(sim: Simulator, synced: SyncdFiles) -> None:
    assert_rows_equal(export_rows(synced.duckdb), expected_segment_rows(sim, WINDOWS))


def test_once_writes_one_sync_row_per_window_with_its_counts(
    sim: Simulator, synced: SyncdFiles
) -> None:
    got = [
        (r["SyncdBatchId"], r["BatchStart"], r["BundleEndTime"], r["RowsLoaded"], r["RowsRejected"])
        for r in sync_rows(synced.duckdb)
    ]
    want = [
        (
            window_key(start, end).id,
            start.replace(tzinfo=None),
            end.replace(tzinfo=None),
            len(sim.expected_events(start, end)),
            0,
        )
        for start, end in WINDOWS
    ]
    assert got == want


def test_every_row_carries_the_batch_id_of_its_window(synced: SyncdFiles) -> None:
    def window_of(event_start: datetime) -> str:
        start = event_start.replace(minute=0, second=0, microsecond=0, tzinfo=UTC)
        return window_key(start, start + HOUR).id

    rows = export_rows(synced.duckdb)
    assert [r for r in rows if r["SyncdBatchId"] != window_of(r["EventStart"])] == []


def test_a_second_once_loads_nothing_new(sim: Simulator, synced: SyncdFiles) -> None:
    before = (sync_rows(synced.duckdb), len(export_rows(synced.duckdb)), sim.stats.exports_created)
    assert once(synced) == EXIT_OK
    after = (sync_rows(synced.duckdb), len(export_rows(synced.duckdb)), sim.stats.exports_created)
    assert after == before


def test_once_leaves_no_downloads_behind(synced: SyncdFiles) -> None:
    leftovers = sorted(p.name for p in (synced.state_dir / "spool").glob("*") if p.is_file())
    assert leftovers == []


def test_once_as_a_subprocess_exits_0_with_the_table_exact(tmp_path: Path, sim: Simulator) -> None:
    started = utcnow()
    start = started.replace(minute=0, second=0, microsecond=0) - 3 * HOUR
    files = write_config(tmp_path, sim, start)
    result = syncd_subprocess("once", "-c", str(files.config))
    assert result.returncode == EXIT_OK, result.stderr
    # The wall clock decides how many windows are ready: two, or three past an hour boundary.
    ready_end = sync_rows(files.duckdb)[-1]["BundleEndTime"].replace(tzinfo=UTC)
    windows = hour_windows(start, ready_end)
    assert (len(windows) >= 2, committed_ids(files)) == (True, batch_ids(windows))
    assert_rows_equal(export_rows(files.duckdb), expected_segment_rows(sim, windows))


def test_bodies_of_many_gzip_members_load_every_row(tmp_path: Path) -> None:
    """Bodies of about ten gzip members each, large enough for the fast transform: every
    member's rows land (the fast path once read only the first member and lost the rest)."""
    config = SimulatorConfig(api_key=API_KEY, events_per_hour=4000, gzip_member_bytes=256 << 10)
    windows = WINDOWS[:2]
    with Simulator(config) as members_sim:
        files = write_config(tmp_path, members_sim, START)
        assert once(files, now=windows[-1][1] + HOUR) == EXIT_OK
        synced = sync_rows(files.duckdb)
        assert [r["Bytes"] >= FAST_PATH_MIN_BYTES for r in synced] == [True, True]
        assert [r["RowsLoaded"] for r in synced] == [
            len(members_sim.expected_events(start, end)) for start, end in windows
        ]
        assert_rows_equal(export_rows(files.duckdb), expected_segment_rows(members_sim, windows))


# -- bad rows --------------------------------------------------------------------------------


@pytest.fixture
def bad_sim() -> Iterator[Simulator]:
    config = SimulatorConfig(api_key=API_KEY, events_per_hour=EVENTS_PER_HOUR, bad_row_rate=0.05)
    with Simulator(config) as s:
        yield s


@pytest.fixture
def bad_synced(tmp_path: Path, bad_sim: Simulator) -> SyncdFiles:
    files = write_config(tmp_path, bad_sim, START)
    assert once(files) == EXIT_OK
    return files


def test_good_rows_load_exactly_when_bad_rows_are_served(
    bad_sim: Simulator, bad_synced: SyncdFiles
) -> None:
    assert_rows_equal(export_rows(bad_synced.duckdb), expected_segment_rows(bad_sim, WINDOWS))


def test_bad_rows_are_quarantined_with_their_position_reason_and_text(
    bad_sim: Simulator, bad_synced: SyncdFiles
) -> None:
    want = {}
    for start, end in WINDOWS:
        served = bad_sim.served_rows(start, end)
        for position, row in enumerate(served):
            if row.bad is not None:
                # "mistyped_int:IndvId": the reason must name the field; a cut row, say JSON.
                field = "JSON" if row.bad == BAD_MALFORMED else row.bad.split(":")[1]
                want[(window_key(start, end).id, position)] = (field, row.raw.decode())
    fields = Counter(field for field, _ in want.values())
    assert (fields["JSON"] > 0, len(fields) > 1) == (True, True), "too few bad rows served"
    rejects = reject_rows(bad_synced.duckdb)
    got = {(r["SyncdBatchId"], r["Position"]): (r["Reason"], r["Raw"]) for r in rejects}
    wrong = [
        key
        for key, (field, raw) in want.items()
        if key not in got or field not in got[key][0] or got[key][1] != raw
    ]
    assert (len(rejects), sorted(got), wrong) == (len(want), sorted(want), [])


def test_rows_served_equal_rows_loaded_plus_rows_rejected_per_batch(
    bad_sim: Simulator, bad_synced: SyncdFiles
) -> None:
    loaded = batch_counts(export_rows(bad_synced.duckdb))
    rejected = batch_counts(reject_rows(bad_synced.duckdb))
    got = {
        r["SyncdBatchId"]: (
            r["RowsLoaded"],
            r["RowsRejected"],
            loaded.get(r["SyncdBatchId"], 0),
            rejected.get(r["SyncdBatchId"], 0),
        )
        for r in sync_rows(bad_synced.duckdb)
    }
    want = {}
    for start, end in WINDOWS:
        served = bad_sim.served_rows(start, end)
        bad = sum(1 for row in served if row.bad is not None)
        good = len(served) - bad
        want[window_key(start, end).id] = (good, bad, good, bad)
    assert got == want


def test_a_reloaded_day_does_not_duplicate_its_rejects(
    bad_sim: Simulator, bad_synced: SyncdFiles
) -> None:
    rollback(bad_synced, "2026-11-02")
    once(bad_synced)
    want = {
        window_key(start, end).id: sum(1 for row in bad_sim.served_rows(start, end) if row.bad)
        for start, end in WINDOWS
    }
    assert batch_counts(reject_rows(bad_synced.duckdb)) == want


# -- rollback --------------------------------------------------------------------------------


def test_rollback_of_a_day_deletes_exactly_that_day(sim: Simulator, synced: SyncdFiles) -> None:
    assert rollback(synced, "2026-11-02") == EXIT_OK
    assert (committed_ids(synced), len(reject_rows(synced.duckdb))) == (batch_ids(DAY1_WINDOWS), 0)
    assert_rows_equal(export_rows(synced.duckdb), expected_segment_rows(sim, DAY1_WINDOWS))


def test_once_after_a_rollback_reloads_exactly_that_day(sim: Simulator, synced: SyncdFiles) -> None:
    rollback(synced, "2026-11-02")
    assert once(synced) == EXIT_OK
    exports = {start: n for (start, _), n in sim.stats.exports_by_window.items()}
    assert exports == {start: 1 if start.date() == DAY1 else 2 for start, _ in WINDOWS}
    assert_rows_equal(export_rows(synced.duckdb), expected_segment_rows(sim, WINDOWS))


def test_once_after_a_rollback_of_the_first_day_reloads_it(
    sim: Simulator, synced: SyncdFiles
) -> None:
    rollback(synced, "2026-11-01")
    assert once(synced) == EXIT_OK
    assert_rows_equal(export_rows(synced.duckdb), expected_segment_rows(sim, WINDOWS))


@pytest.fixture
def three_days(tmp_path: Path) -> Iterator[tuple[Simulator, SyncdFiles, datetime]]:
    """6-hour windows over three UTC days (Oct 31 18:00 to Nov 2 06:00), loaded."""
    now = datetime(2026, 11, 2, 8, tzinfo=UTC)
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=40)) as s:
        files = write_config(
            tmp_path, s, datetime(2026, 10, 31, 18, tzinfo=UTC), {"ExportDuration": "6h"}
        )
        assert once(files, now) == EXIT_OK
        yield s, files, now


def six_hour_windows(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    return [
        (start + n * 6 * HOUR, start + (n + 1) * 6 * HOUR)
        for n in range((end - start) // (6 * HOUR))
    ]


def test_rollback_of_a_range_then_once_reloads_exactly_the_range(
    three_days: tuple[Simulator, SyncdFiles, datetime],
) -> None:
    sim, files, now = three_days
    windows = six_hour_windows(
        datetime(2026, 10, 31, 18, tzinfo=UTC), datetime(2026, 11, 2, 6, tzinfo=UTC)
    )
    assert rollback(files, "2026-11-01", "2026-11-02") == EXIT_OK
    left_after_rollback = committed_ids(files)
    assert once(files, now) == EXIT_OK
    exports = sorted(sim.stats.exports_by_window.values())
    assert (left_after_rollback, exports) == (
        [window_key(*windows[0]).id],
        [1] + [2] * (len(windows) - 1),
    )
    assert_rows_equal(export_rows(files.duckdb), expected_segment_rows(sim, windows))


def test_rollback_without_yes_off_a_terminal_exits_2_and_deletes_nothing(
    synced: SyncdFiles,
) -> None:
    before = len(export_rows(synced.duckdb))
    result = syncd_subprocess(
        "rollback", "-c", str(synced.config), "--day", "2026-11-02", stdin=subprocess.DEVNULL
    )
    assert (result.returncode, "--yes" in result.stderr, len(export_rows(synced.duckdb))) == (
        EXIT_CONFIG,
        True,
        before,
    )


# -- start-up repair -------------------------------------------------------------------------


def tamper(files: SyncdFiles, statement: str, *params: object) -> None:
    """Change the DuckDB file behind syncd's back (it is closed between runs)."""
    with duckdb.connect(str(files.duckdb)) as con:
        con.execute(statement, list(params))


def lose_rows(files: SyncdFiles, window: tuple[datetime, datetime], count: int = 3) -> None:
    tamper(
        files,
        "DELETE FROM fsexport WHERE rowid IN "
        "(SELECT rowid FROM fsexport WHERE SyncdBatchId = ? LIMIT ?)",
        window_key(*window).id,
        count,
    )


def test_startup_repairs_a_day_whose_batch_lost_rows(sim: Simulator, synced: SyncdFiles) -> None:
    lose_rows(synced, DAY2_WINDOWS[0])
    assert once(synced) == EXIT_OK
    assert_rows_equal(export_rows(synced.duckdb), expected_segment_rows(sim, WINDOWS))


def test_startup_repair_reloads_only_the_damaged_day(sim: Simulator, synced: SyncdFiles) -> None:
    lose_rows(synced, DAY2_WINDOWS[0])
    once(synced)
    exports = {start: n for (start, _), n in sim.stats.exports_by_window.items()}
    assert exports == {start: 1 if start.date() == DAY1 else 2 for start, _ in WINDOWS}


def test_startup_repairs_rows_whose_batch_has_no_sync_row(
    sim: Simulator, synced: SyncdFiles
) -> None:
    tamper(
        synced,
        "INSERT INTO fsexport SELECT * REPLACE ('segment-ghost' AS SyncdBatchId) FROM fsexport "
        "WHERE SyncdBatchId = ? LIMIT 2",
        window_key(*DAY2_WINDOWS[1]).id,
    )
    assert once(synced) == EXIT_OK
    assert_rows_equal(export_rows(synced.duckdb), expected_segment_rows(sim, WINDOWS))


def test_startup_repairs_the_first_day_too(sim: Simulator, synced: SyncdFiles) -> None:
    lose_rows(synced, DAY1_WINDOWS[0])
    assert once(synced) == EXIT_OK
    assert_rows_equal(export_rows(synced.duckdb), expected_segment_rows(sim, WINDOWS))


# -- held batches ----------------------------------------------------------------------------

#: A frozen clock at which only the first two windows are ready.
EARLY = NOW - 3 * HOUR


@pytest.fixture
def held(files: SyncdFiles, sim: Simulator, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Two windows loaded; then every export fails (each a transient failure, retried with a new
    export until MaxBatchAttempts), and `once` over five windows holds the third. The exit
    code and stderr of that `once`."""
    assert once(files, EARLY) == EXIT_OK
    sim.faults.add(Fault.FAILED_OPERATION, count=1000)
    capsys.readouterr()
    code = once(files)
    return code, capsys.readouterr().err


def test_once_exits_1_naming_the_held_batch_and_its_error(held: tuple[int, str]) -> None:
    code, stderr = held
    line = f"syncd: batch {window_key(*WINDOWS[2]).id} is held: TransientSourceError: "
    held_lines = [x for x in stderr.splitlines() if x.startswith(line)]
    assert (code, len(held_lines), "simulated export failure" in "".join(held_lines)) == (
        EXIT_FAILED,
        1,
        True,
    )


def test_status_json_shows_the_held_batch_and_its_error(
    held: tuple[int, str], files: SyncdFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli(["status", "-c", str(files.config), "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert (code, shown["held"]["batch"], "simulated export failure" in shown["held"]["error"]) == (
        EXIT_FAILED,
        window_key(*WINDOWS[2]).id,
        True,
    )


def test_no_window_after_a_held_one_is_committed(held: tuple[int, str], files: SyncdFiles) -> None:
    assert committed_ids(files) == batch_ids(WINDOWS[:2])


def test_once_completes_exactly_after_the_fault_clears(
    held: tuple[int, str], files: SyncdFiles, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.faults.clear()
    assert once(files) == EXIT_OK
    assert run_cli(["status", "-c", str(files.config), "--json"]) == EXIT_OK
    assert "held" not in json.loads(capsys.readouterr().out)
    assert_rows_equal(export_rows(files.duckdb), expected_segment_rows(sim, WINDOWS))


def test_transient_failures_are_held_after_max_batch_attempts(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    files = write_config(tmp_path, sim, START, {"MaxBatchAttempts": 2, "BackoffStepsMax": 1})
    sim.faults.add(Fault.SERVER_ERROR, count=1000)
    code = once(files)
    run_cli(["status", "-c", str(files.config), "--json"])
    shown = json.loads(capsys.readouterr().out)["held"]
    assert (code, shown["batch"], shown["attempts"], "HTTP 50" in shown["error"]) == (
        EXIT_FAILED,
        window_key(*WINDOWS[0]).id,
        2,
        True,
    )


# -- transient faults ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "count", "options"),
    [
        (Fault.RATE_LIMIT, 1, {"retry_after": 1}),
        (Fault.SERVER_ERROR, 3, {}),
        (Fault.DROP_CONNECTION, 2, {}),
        (Fault.TRUNCATED_GZIP, 2, {}),
        (Fault.EXPIRED_URL, 2, {}),
    ],
    ids=lambda v: v.value if isinstance(v, Fault) else None,
)
def test_transient_faults_recover_and_the_table_is_exact(
    sim: Simulator, files: SyncdFiles, fault: Fault, count: int, options: dict[str, Any]
) -> None:
    sim.faults.add(fault, count=count, **options)
    assert (once(files), sim.stats.faults_fired[fault]) == (EXIT_OK, count)
    assert_rows_equal(export_rows(files.duckdb), expected_segment_rows(sim, WINDOWS))


def test_retry_after_is_honoured(sim: Simulator, files: SyncdFiles) -> None:
    sim.faults.add(Fault.RATE_LIMIT, count=1, retry_after=1)
    started = time.monotonic()
    once(files)
    assert time.monotonic() - started >= 1.0


def test_every_file_syncd_writes_is_the_owners_alone(tmp_path: Path, sim: Simulator) -> None:
    files = write_config(tmp_path / "run", sim, START, {"KeepStagedFiles": True})
    assert once(files) == EXIT_OK
    made = [files.state_dir, files.save_dir, files.duckdb, tmp_path / "run" / "tmp"]
    made = [top for top in made if top.exists()]  # TmpDir only when a transform needed it
    paths = [p for top in made for p in (top, *(top.rglob("*") if top.is_dir() else ()))]
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in paths}
    wrong = {
        p: oct(m)
        for p, m in modes.items()
        if m != (0o700 if Path(tmp_path / p).is_dir() else 0o600)
    }
    assert (wrong, any(p.endswith(".parquet") for p in modes)) == ({}, True)


# -- legacy bundles --------------------------------------------------------------------------


@pytest.fixture
def legacy_sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    with legacy_simulator(monkeypatch) as sim:
        yield sim


@pytest.mark.parametrize("by_day", [True, False], ids=["by-day", "per-bundle"])
def test_legacy_bundles_load_exactly(tmp_path: Path, legacy_sim: Simulator, by_day: bool) -> None:
    files = write_config(
        tmp_path,
        legacy_sim,
        LEGACY_DATA_START,
        {"Source": "legacy", "GroupFilesByDay": by_day},
    )
    bundles = legacy_sim.bundles(LEGACY_DATA_START, LEGACY_DATA_START + timedelta(days=2))
    batches = [bundles[:4], bundles[4:]] if by_day else [[b] for b in bundles]
    assert (once(files), len(bundles)) == (EXIT_OK, 8)
    assert committed_ids(files) == [legacy_key(b).id for b in batches]
    assert_rows_equal(export_rows(files.duckdb), expected_legacy_rows(legacy_sim, batches))


def test_legacy_rollback_of_the_first_day_reloads_it(tmp_path: Path, legacy_sim: Simulator) -> None:
    files = write_config(
        tmp_path, legacy_sim, LEGACY_DATA_START, {"Source": "legacy", "GroupFilesByDay": True}
    )
    bundles = legacy_sim.bundles(LEGACY_DATA_START, LEGACY_DATA_START + timedelta(days=2))
    once(files)
    rollback(files, LEGACY_DATA_START.date().isoformat())
    once(files)
    assert_rows_equal(
        export_rows(files.duckdb), expected_legacy_rows(legacy_sim, [bundles[:4], bundles[4:]])
    )


def test_legacy_rows_fill_the_legacy_columns(tmp_path: Path, legacy_sim: Simulator) -> None:
    files = write_config(tmp_path, legacy_sim, LEGACY_DATA_START, {"Source": "legacy"})
    once(files)
    rows = export_rows(files.duckdb)
    filled = {
        "PageAgent": sum(1 for r in rows if r["PageAgent"]),
        "PageUserAgent": sum(1 for r in rows if r["PageUserAgent"] is not None),
    }
    assert (filled["PageAgent"] > 0, filled["PageUserAgent"]) == (True, 0)


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": Fault.SERVER_ERROR, "status": 500},
        {"kind": Fault.FORBIDDEN},
    ],
    ids=["list-500", "list-403"],
)
def test_a_failing_bundle_list_holds_and_the_next_run_loads(
    tmp_path: Path,
    legacy_sim: Simulator,
    capsys: pytest.CaptureFixture[str],
    fault: dict[str, Any],
) -> None:
    files = write_config(
        tmp_path,
        legacy_sim,
        LEGACY_DATA_START,
        {"Source": "legacy", "MaxBatchAttempts": 2, "BackoffStepsMax": 2},
    )
    kind = fault.pop("kind")
    legacy_sim.faults.add(kind, 1000, endpoint=Endpoint.LEGACY_LIST, **fault)
    assert once(files) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "is held" in err and "Traceback" not in err
    legacy_sim.faults.clear()
    bundles = legacy_sim.bundles(LEGACY_DATA_START, LEGACY_DATA_START + timedelta(days=2))
    assert once(files) == EXIT_OK
    assert_rows_equal(
        export_rows(files.duckdb), expected_legacy_rows(legacy_sim, [[b] for b in bundles])
    )


# -- StorageOnly -----------------------------------------------------------------------------


@pytest.fixture
def storage_only(tmp_path: Path, sim: Simulator) -> SyncdFiles:
    """Provider "local": four windows staged (the clock an hour before NOW)."""
    files = write_config(tmp_path, sim, START, {"Provider": "local"})
    assert once(files, NOW - HOUR) == EXIT_OK
    return files


def test_storage_only_writes_files_and_the_checkpoint(
    sim: Simulator, storage_only: SyncdFiles
) -> None:
    names = sorted(p.name for p in storage_only.save_dir.iterdir())
    checkpoint = (storage_only.save_dir / ".sync.hauser").read_text()
    want = sorted([f"{key}.parquet" for key in batch_ids(WINDOWS[:4])] + [".sync.hauser"])
    assert (names, checkpoint) == (want, format_timestamp(WINDOWS[3][1]))


def test_storage_only_files_hold_the_rows_exactly(sim: Simulator, storage_only: SyncdFiles) -> None:
    rows = [
        row
        for path in sorted(storage_only.save_dir.glob("*.parquet"))
        for row in pq.read_table(path).to_pylist()
    ]
    assert_rows_equal(rows, expected_segment_rows(sim, WINDOWS[:4]))


def test_storage_only_resumes_from_the_checkpoint(sim: Simulator, storage_only: SyncdFiles) -> None:
    assert once(storage_only) == EXIT_OK
    assert dict(sim.stats.exports_by_window) == {w: 1 for w in WINDOWS}


# -- the daemon ------------------------------------------------------------------------------


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the daemon")
        time.sleep(0.05)


def test_sigterm_stops_the_daemon_with_exit_0_and_nothing_half_committed(
    tmp_path: Path,
) -> None:
    config = SimulatorConfig(api_key=API_KEY, events_per_hour=100, operation_latency=0.3)
    with Simulator(config) as sim:
        start = utcnow().replace(minute=0, second=0, microsecond=0) - 8 * HOUR
        files = write_config(tmp_path, sim, start)
        status = files.state_dir / "status.json"
        daemon = subprocess.Popen(
            [sys.executable, "-m", "syncd", "run", "-c", str(files.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(lambda: status.exists() and json.loads(status.read_text())["recent"])
            daemon.send_signal(signal.SIGTERM)
            _, stderr = daemon.communicate(timeout=30)
        finally:
            if daemon.poll() is None:
                os.kill(daemon.pid, signal.SIGKILL)
                daemon.wait()
        records = sync_rows(files.duckdb)
        windows = [
            (r["BatchStart"].replace(tzinfo=UTC), r["BundleEndTime"].replace(tzinfo=UTC))
            for r in records
        ]
        assert (daemon.returncode, windows == hour_windows(start, windows[-1][1])) == (
            EXIT_OK,
            True,
        ), stderr
        assert_rows_equal(export_rows(files.duckdb), expected_segment_rows(sim, windows))
