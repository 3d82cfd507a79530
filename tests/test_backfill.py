"""`syncd backfill`: past days re-exported and replaced window by window, exactly once.

A backfill deletes nothing up front: each batch's commit replaces its window's old rows, and a
day's leftovers go once all its batches committed. So a stop or a held batch mid-day leaves
new rows in the windows replaced and old rows in the others, never a window with neither.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from e2e_support import (
    API_KEY,
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
    run_cli,
    sync_rows,
    write_config,
)

import syncd.app
from syncd.backfill import check_range, check_ready
from syncd.batch import BatchKey, SyncRecord
from syncd.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from syncd.errors import ConfigError
from syncd.pipeline import PipelineHooks
from syncd.simulator import Fault, Simulator, SimulatorConfig
from syncd.timeutil import UTC

START = datetime(2026, 11, 1, 21, tzinfo=UTC)
DAY1, DAY2 = date(2026, 11, 1), date(2026, 11, 2)
#: With ExportDelay 1h, every window up to 2026-11-03 00:00 is ready, and no later one.
SYNCED_AT = datetime(2026, 11, 3, 1, 30, tzinfo=UTC)
#: The backfill runs later, so its rows carry another SyncdLoadedAt than the first load's.
LATER = SYNCED_AT + timedelta(hours=1)
WINDOWS = hour_windows(START, datetime(2026, 11, 3, tzinfo=UTC))
DAY2_WINDOWS = [w for w in WINDOWS if w[0].date() == DAY2]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=60)) as s:
        yield s


def synced_files(
    tmp_path: Path, sim: Simulator, overrides: dict[str, object] | None = None
) -> SyncdFiles:
    files = write_config(tmp_path, sim, START, overrides)
    assert run_cli(["once", "-c", str(files.config)], now=SYNCED_AT) == EXIT_OK
    return files


@pytest.fixture
def synced(tmp_path: Path, sim: Simulator) -> SyncdFiles:
    return synced_files(tmp_path, sim)


def backfill(
    files: SyncdFiles,
    first: str,
    last: str | None = None,
    *,
    yes: bool = True,
    now: datetime = LATER,
) -> int:
    span = ["--from", first] + (["--to", last] if last else [])
    return run_cli(
        ["backfill", "-c", str(files.config), *span, *(["--yes"] if yes else [])], now=now
    )


class _OnCommit(PipelineHooks):
    def __init__(self, after: int, action: Callable[[], None]) -> None:
        self.after = after
        self.action = action
        self.count = 0

    def after_commit(self, key: BatchKey, record: SyncRecord) -> None:
        self.count += 1
        if self.count == self.after:
            self.action()


@pytest.fixture
def on_commit(monkeypatch: pytest.MonkeyPatch) -> Callable[[int, Callable[[], None]], None]:
    """Run `action` in the CLI's pipeline right after its n-th commit (the hooks' own path)."""

    def arrange(after: int, action: Callable[[], None]) -> None:
        original = syncd.app.build_app

        def build_app(settings: Any, *, stop: Any, hooks: Sequence[Any] = (), **kw: Any) -> Any:
            return original(settings, stop=stop, hooks=[*hooks, _OnCommit(after, action)], **kw)

        monkeypatch.setattr(syncd.app, "build_app", build_app)

    return arrange


@dataclass
class Target:
    """A warehouse the CLI loads: its settings, and how to read its export table back."""

    overrides: dict[str, object]
    rows: Callable[[SyncdFiles], list[dict[str, Any]]]


@pytest.fixture(params=["duckdb", "postgres"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "duckdb":
        yield Target({}, lambda files: export_rows(files.duckdb))
        return
    from aws_support import (
        AwsEnv,
        drop_schema,
        new_schema,
        postgres_overrides,
        shared_postgres,
        warehouse_rows,
    )

    pg = shared_postgres()
    schema = new_schema()
    env = AwsEnv(None, pg, "", schema)  # type: ignore[arg-type] # reads need no S3
    overrides: dict[str, object] = postgres_overrides(pg, schema)
    try:
        yield Target(overrides, lambda files: warehouse_rows(env))
    finally:
        drop_schema(schema)


def rows_by_window(rows: list[dict[str, Any]]) -> dict[datetime, Counter[tuple[str, datetime]]]:
    """Per 1-hour window: how many rows of each (batch id, SyncdLoadedAt)."""
    out: dict[datetime, Counter[tuple[str, datetime]]] = {}
    for row in rows:
        start = row["EventStart"].replace(minute=0, second=0, microsecond=0, tzinfo=UTC)
        out.setdefault(start, Counter())[(row["SyncdBatchId"], row["SyncdLoadedAt"])] += 1
    return out


def loaded_at(rows: list[dict[str, Any]]) -> dict[datetime, set[datetime]]:
    """Per 1-hour window, the SyncdLoadedAt values of its rows (aware UTC)."""
    return {
        w: {at.replace(tzinfo=UTC) for _, at in counts}
        for w, counts in rows_by_window(rows).items()
    }


# -- replacing whole days ----------------------------------------------------------------------


def test_backfill_reexports_exactly_the_days_windows(sim: Simulator, synced: SyncdFiles) -> None:
    assert backfill(synced, "2026-11-02") == EXIT_OK
    exports = {start: n for (start, _), n in sim.stats.exports_by_window.items()}
    assert exports == {start: 2 if start.date() == DAY2 else 1 for start, _ in WINDOWS}


def test_backfill_leaves_the_table_exact(sim: Simulator, synced: SyncdFiles) -> None:
    backfill(synced, "2026-11-01", "2026-11-02")
    assert_rows_equal(export_rows(synced.duckdb), expected_segment_rows(sim, WINDOWS))


def test_backfill_replaces_every_row_of_the_day(synced: SyncdFiles) -> None:
    backfill(synced, "2026-11-02")
    at = loaded_at(export_rows(synced.duckdb))
    assert {w: at[w] for w, _ in DAY2_WINDOWS} == {w: {LATER} for w, _ in DAY2_WINDOWS}
    assert {w: at[w] for w, _ in WINDOWS if w.date() == DAY1} == {
        w: {SYNCED_AT} for w, _ in WINDOWS if w.date() == DAY1
    }


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
        f"backfill of 2026-11-01 to 2026-11-02: 2 days replaced, {len(WINDOWS)} of "
        f"{len(WINDOWS)} batches replaced, {before} rows loaded (0 rejected)\n"
    )


def hauser_rows(files: SyncdFiles, day: date) -> None:
    """Make the day's rows look like hauser's: no batch id, no syncd sync row."""
    lo = datetime.combine(day, datetime.min.time())
    with duckdb.connect(str(files.duckdb)) as con:
        con.execute(
            "UPDATE fsexport SET SyncdBatchId = NULL WHERE EventStart >= ? AND EventStart < ?",
            [lo, lo + timedelta(days=1)],
        )
        con.execute("DELETE FROM fssync WHERE BatchStart >= ?", [lo])


def test_rows_without_a_batch_id_are_replaced(sim: Simulator, synced: SyncdFiles) -> None:
    hauser_rows(synced, DAY2)
    assert backfill(synced, "2026-11-02") == EXIT_OK
    assert_rows_equal(export_rows(synced.duckdb), expected_segment_rows(sim, WINDOWS))


def test_rows_without_a_batch_id_are_replaced_window_by_window(
    sim: Simulator, tmp_path: Path, on_commit: Callable[[int, Callable[[], None]], None]
) -> None:
    """Held mid-day: the windows replaced hold only new rows, the others only hauser's."""
    files = synced_files(tmp_path, sim, {"Lookahead": 0, "MaxBatchAttempts": 2})
    hauser_rows(files, DAY2)
    on_commit(10, lambda: sim.faults.add(Fault.FAILED_OPERATION, count=1000))
    assert backfill(files, "2026-11-02") == EXIT_FAILED
    counts = rows_by_window(export_rows(files.duckdb))
    assert [{b for b, _ in counts[w]} for w, _ in DAY2_WINDOWS] == [
        {BatchKey(s, e).id} for s, e in DAY2_WINDOWS[:10]
    ] + [{None}] * 14
    expected = {s: len(expected_segment_rows(sim, [(s, e)])) for s, e in DAY2_WINDOWS}
    assert {w: sum(counts[w].values()) for w in expected} == expected


def test_a_day_loaded_in_another_layout_is_replaced_whole(sim: Simulator, tmp_path: Path) -> None:
    """2-hour batches replaced by 1-hour ones: no old row and no old sync row is left."""
    files = synced_files(
        tmp_path, sim, {"ExportDuration": "2h", "StartTime": START - timedelta(hours=1)}
    )
    write_config(tmp_path, sim, START - timedelta(hours=1))
    assert backfill(files, "2026-11-02") == EXIT_OK
    windows = hour_windows(START - timedelta(hours=1), datetime(2026, 11, 3, tzinfo=UTC))
    day1 = [w for w in windows if w[0].date() == DAY1]
    two_hours = [(s, s + timedelta(hours=2)) for s, _ in day1[::2]]
    assert_rows_equal(
        export_rows(files.duckdb),
        expected_segment_rows(sim, two_hours) + expected_segment_rows(sim, DAY2_WINDOWS),
    )
    assert [r["SyncdBatchId"] for r in sync_rows(files.duckdb)] == [
        BatchKey(s, e).id for s, e in two_hours + DAY2_WINDOWS
    ]


# -- stopping in the middle of a day -----------------------------------------------------------


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


def _custom_vars_sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """PostgreSQL's JSONB keeps no key order: compare CustomVars with keys sorted."""
    out = []
    for row in rows:
        value = row.get("CustomVars")
        if isinstance(value, str):
            value = json.loads(value)
        out.append({**row, "CustomVars": _sorted_keys(value)})
    return out


def assert_part_replaced(rows: list[dict[str, Any]], sim: Simulator, replaced: int) -> None:
    """The first `replaced` windows of day 2 hold only new rows, the others only old ones, and
    every window holds exactly its rows: never a window with neither, nor with both."""
    at = loaded_at(rows)
    assert [at.get(w, set()) for w, _ in DAY2_WINDOWS] == [{LATER}] * replaced + [{SYNCED_AT}] * (
        len(DAY2_WINDOWS) - replaced
    )
    assert_rows_equal(
        _custom_vars_sorted(rows), _custom_vars_sorted(expected_segment_rows(sim, WINDOWS))
    )


def test_a_held_batch_mid_day_leaves_old_rows_for_the_windows_not_replaced(
    sim: Simulator,
    tmp_path: Path,
    on_commit: Callable[[int, Callable[[], None]], None],
    target: Target,
) -> None:
    quick = {"Lookahead": 0, "MaxBatchAttempts": 2}
    files = synced_files(tmp_path, sim, {**target.overrides, **quick})
    on_commit(10, lambda: sim.faults.add(Fault.FAILED_OPERATION, count=1000))
    assert backfill(files, "2026-11-02") == EXIT_FAILED
    assert_part_replaced(target.rows(files), sim, 10)


def test_a_held_batch_is_reported_honestly(
    sim: Simulator,
    tmp_path: Path,
    on_commit: Callable[[int, Callable[[], None]], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = synced_files(tmp_path, sim, {"Lookahead": 0, "MaxBatchAttempts": 2})
    on_commit(10, lambda: sim.faults.add(Fault.FAILED_OPERATION, count=1000))
    capsys.readouterr()
    backfill(files, "2026-11-02")
    err = capsys.readouterr().err
    assert (
        "backfill stopped at a held batch: 10 of 24 batches replaced; run it again to finish" in err
    )
    assert (
        "2026-11-02 is part replaced: its windows before 2026-11-02T10:00:00Z hold the new rows"
        in err
    )


def test_sigterm_mid_day_stops_with_exit_1_and_the_next_backfill_finishes(
    sim: Simulator,
    tmp_path: Path,
    on_commit: Callable[[int, Callable[[], None]], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = synced_files(tmp_path, sim, {"Lookahead": 0})
    signalled: list[int] = []

    def terminate_once() -> None:  # the second backfill's 10th commit goes on
        if not signalled:
            signalled.append(signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)

    on_commit(10, terminate_once)
    capsys.readouterr()
    code = backfill(files, "2026-11-02")
    err = capsys.readouterr().err
    assert code == EXIT_FAILED
    assert "backfill stopped: 10 of 24 batches replaced; run it again to finish" in err
    assert_part_replaced(export_rows(files.duckdb), sim, 10)
    assert backfill(files, "2026-11-02") == EXIT_OK
    assert_part_replaced(export_rows(files.duckdb), sim, 24)


def test_a_held_batch_mid_day_in_another_layout_leaves_no_window_empty(
    sim: Simulator,
    tmp_path: Path,
    on_commit: Callable[[int, Callable[[], None]], None],
    target: Target,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Old 2-hour batches, new 1-hour ones: held after the first hour of a 2-hour batch, its
    second hour keeps its old rows, and the old batch's sync row counts only those."""
    quick: dict[str, object] = {**target.overrides, "Lookahead": 0, "MaxBatchAttempts": 2}
    files = synced_files(
        tmp_path, sim, {**quick, "ExportDuration": "2h", "StartTime": START - timedelta(hours=1)}
    )
    write_config(tmp_path, sim, START - timedelta(hours=1), quick)
    held: list[int] = []

    def hold_once() -> None:
        if not held:
            held.append(1)
            sim.faults.add(Fault.FAILED_OPERATION, count=1000)

    on_commit(3, hold_once)
    assert backfill(files, "2026-11-02") == EXIT_FAILED
    counts = rows_by_window(target.rows(files))
    expected = {s: len(expected_segment_rows(sim, [(s, e)])) for s, e in DAY2_WINDOWS}
    assert {w: sum(counts[w].values()) for w in expected} == expected

    def hour(n: int) -> datetime:
        return datetime(2026, 11, 2, n, tzinfo=UTC)

    assert [{b for b, _ in counts[w]} for w, _ in DAY2_WINDOWS[:5]] == [
        {BatchKey(hour(0), hour(1)).id},
        {BatchKey(hour(1), hour(2)).id},
        {BatchKey(hour(2), hour(3)).id},
        {BatchKey(hour(2), hour(4)).id},  # the old batch's hour not replaced yet
        {BatchKey(hour(4), hour(6)).id},
    ]
    # the day is consistent as it stands: the next start-up does not roll it back
    sim.faults.clear()
    capsys.readouterr()
    assert backfill(files, "2026-11-02") == EXIT_OK
    assert "rolled back an inconsistent day" not in capsys.readouterr().err


# -- legacy bundles ----------------------------------------------------------------------------


@pytest.fixture
def legacy_sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    with legacy_simulator(monkeypatch) as sim:
        yield sim


@pytest.mark.parametrize("by_day", [True, False], ids=["by-day", "per-bundle"])
def test_a_legacy_day_is_replaced_exactly(
    tmp_path: Path, legacy_sim: Simulator, by_day: bool
) -> None:
    overrides = {"Source": "legacy", "GroupFilesByDay": by_day}
    files = write_config(tmp_path, legacy_sim, LEGACY_DATA_START, overrides)
    assert run_cli(["once", "-c", str(files.config)]) == EXIT_OK
    before = sync_rows(files.duckdb)
    assert backfill(files, "2026-10-30", now=NOW + timedelta(hours=1)) == EXIT_OK
    bundles = legacy_sim.bundles(LEGACY_DATA_START, LEGACY_DATA_START + timedelta(days=2))
    batches = [bundles[:4], bundles[4:]] if by_day else [[b] for b in bundles]
    assert_rows_equal(export_rows(files.duckdb), expected_legacy_rows(legacy_sim, batches))
    after = sync_rows(files.duckdb)
    assert [r["SyncdBatchId"] for r in after] == [legacy_key(b).id for b in batches]
    assert [r["Processed"] == b["Processed"] for r, b in zip(after, before, strict=True)] == [
        False
    ] * (len(batches) // 2) + [True] * (len(batches) // 2)


# -- refusals: nothing is deleted --------------------------------------------------------------


def test_a_failing_api_check_exits_1_naming_it_and_deletes_nothing(
    sim: Simulator, synced: SyncdFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    before = export_rows(synced.duckdb)
    sim.faults.add(Fault.FORBIDDEN, count=1)
    capsys.readouterr()
    assert backfill(synced, "2026-11-02") == EXIT_FAILED
    err = capsys.readouterr().err
    assert "export API: FAILED" in err and "the export API check failed" in err
    assert export_rows(synced.duckdb) == before
    assert sum(sim.stats.exports_by_window.values()) == len(WINDOWS)


def test_without_yes_off_a_terminal_it_exits_2_and_deletes_nothing(
    sim: Simulator, synced: SyncdFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    before = export_rows(synced.duckdb)
    capsys.readouterr()
    assert backfill(synced, "2026-11-02", yes=False) == EXIT_CONFIG
    assert "confirm with --yes" in capsys.readouterr().err
    assert export_rows(synced.duckdb) == before


class _Terminal(io.StringIO):
    """A terminal's stdin with the operator's answer typed in."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("answer", ["n\n", "y\n"])
def test_on_a_terminal_it_asks_first(
    synced: SyncdFiles,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    answer: str,
) -> None:
    before = export_rows(synced.duckdb)
    monkeypatch.setattr(sys, "stdin", _Terminal(answer))
    capsys.readouterr()
    assert backfill(synced, "2026-11-02", yes=False) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("Re-export 2026-11-02 and replace its rows, window by window? [y/N] ")
    if answer.startswith("n"):
        assert "nothing replaced" in out and export_rows(synced.duckdb) == before
    else:
        assert "1 days replaced, 24 of 24 batches replaced" in out
        assert loaded_at(export_rows(synced.duckdb))[DAY2_WINDOWS[0][0]] == {LATER}


@pytest.mark.parametrize(
    ("day", "now", "message"),
    [
        ("2026-11-04", LATER, "2026-11-04 is in the future (today is 2026-11-03 UTC)"),
        ("2026-11-03", LATER, "2026-11-03 is not over yet"),
        ("2026-11-02", datetime(2026, 11, 3, 0, 30, tzinfo=UTC), "ready at 2026-11-03T01:00:00Z"),
    ],
)
def test_a_day_not_ready_is_refused_with_exit_2(
    synced: SyncdFiles,
    capsys: pytest.CaptureFixture[str],
    day: str,
    now: datetime,
    message: str,
) -> None:
    before = export_rows(synced.duckdb)
    capsys.readouterr()
    assert backfill(synced, day, now=now) == EXIT_CONFIG
    assert message in capsys.readouterr().err
    assert export_rows(synced.duckdb) == before


def test_check_ready_takes_export_delay_into_account() -> None:
    check_ready(DAY2, DAY2, datetime(2026, 11, 3, 6, tzinfo=UTC), timedelta(hours=6))
    with pytest.raises(ConfigError):
        check_ready(DAY2, DAY2, datetime(2026, 11, 3, 5, 59, tzinfo=UTC), timedelta(hours=6))


def test_a_day_before_start_time_is_refused_with_exit_2(synced: SyncdFiles) -> None:
    assert backfill(synced, "2026-10-31") == EXIT_CONFIG


def test_the_first_day_without_start_time_is_refused() -> None:
    record = SyncRecord(batch_id="b", source="segment", start=START, end=START, committed_at=NOW)
    with pytest.raises(ConfigError) as caught:
        check_range(START.date(), START.date(), [record], None)
    assert "set StartTime" in str(caught.value)


# -- the README shows commands that run --------------------------------------------------------


def test_the_readme_backfill_commands_parse() -> None:
    """The README's backfill row and paragraph show options the parser takes."""
    import re

    from syncd.cli import build_parser

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    shown = re.findall(r"`(syncd backfill [^`]*)`", readme.replace("\n", " "))
    assert len(shown) >= 2
    for command in shown:
        argv = command.replace("[", "").replace("]", "").split()[1:]
        argv = ["2026-11-01" if a == "D" else "syncd.toml" if a == "FILE" else a for a in argv]
        args = build_parser().parse_args(argv)
        assert (args.command, args.from_day) == ("backfill", "2026-11-01")
