"""`syncd backfill`: past days re-exported and replaced, day by day, exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import pytest
from e2e_support import (
    API_KEY,
    NOW,
    SyncdFiles,
    assert_rows_equal,
    batch_counts,
    expected_segment_rows,
    export_rows,
    hour_windows,
    run_cli,
    sync_rows,
    write_config,
)

from syncd.backfill import check_range
from syncd.batch import SyncRecord
from syncd.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from syncd.errors import ConfigError
from syncd.simulator import Fault, Simulator, SimulatorConfig
from syncd.timeutil import UTC

START = datetime(2026, 11, 1, 21, tzinfo=UTC)
WINDOWS = hour_windows(START, datetime(2026, 11, 2, 2, tzinfo=UTC))
DAY2 = date(2026, 11, 2)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=120)) as s:
        yield s


@pytest.fixture
def synced(tmp_path: Path, sim: Simulator) -> SyncdFiles:
    files = write_config(tmp_path, sim, START)
    assert run_cli(["once", "-c", str(files.config)]) == EXIT_OK
    return files


def backfill(files: SyncdFiles, first: str, last: str | None = None) -> int:
    span = ["--from", first] + (["--to", last] if last else [])
    return run_cli(["backfill", "-c", str(files.config), *span])


def test_backfill_reexports_exactly_the_days_windows(sim: Simulator, synced: SyncdFiles) -> None:
    assert backfill(synced, "2026-11-02") == EXIT_OK
    exports = {start: n for (start, _), n in sim.stats.exports_by_window.items()}
    assert exports == {start: 2 if start.date() == DAY2 else 1 for start, _ in WINDOWS}


def test_backfill_leaves_the_table_exact(sim: Simulator, synced: SyncdFiles) -> None:
    backfill(synced, "2026-11-01", "2026-11-02")
    assert_rows_equal(export_rows(synced.duckdb), expected_segment_rows(sim, WINDOWS))


def test_backfill_writes_one_sync_row_per_window(synced: SyncdFiles) -> None:
    backfill(synced, "2026-11-01", "2026-11-02")
    rows = sync_rows(synced.duckdb)
    assert sorted(r["SyncdBatchId"] for r in rows) == sorted(
        batch_counts(export_rows(synced.duckdb))
    )


def test_backfill_reports_what_it_replaced(
    synced: SyncdFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    before = len(export_rows(synced.duckdb))
    capsys.readouterr()
    backfill(synced, "2026-11-01", "2026-11-02")
    assert capsys.readouterr().out == (
        f"backfill of 2026-11-01 to 2026-11-02: 2 days replaced, {len(WINDOWS)} batches, "
        f"{before} rows loaded (0 rejected), {before} old rows removed\n"
    )


def test_a_held_batch_stops_the_backfill_with_exit_1_and_the_next_run_fills_the_gap(
    sim: Simulator, synced: SyncdFiles
) -> None:
    sim.faults.add(Fault.FAILED_OPERATION, count=1000)
    code = backfill(synced, "2026-11-02")
    sim.faults.clear()
    assert run_cli(["once", "-c", str(synced.config)]) == EXIT_OK
    assert code == EXIT_FAILED
    assert_rows_equal(export_rows(synced.duckdb), expected_segment_rows(sim, WINDOWS))


def test_a_day_before_start_time_is_refused_with_exit_2(synced: SyncdFiles) -> None:
    assert backfill(synced, "2026-10-31") == EXIT_CONFIG


def test_the_first_day_without_start_time_is_refused() -> None:
    record = SyncRecord(batch_id="b", source="segment", start=START, end=START, committed_at=NOW)
    with pytest.raises(ConfigError) as caught:
        check_range(START.date(), START.date(), [record], None)
    assert "set StartTime" in str(caught.value)
