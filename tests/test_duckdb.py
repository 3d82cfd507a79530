"""DuckDBWarehouse: tables, atomic commits, rollback, consistency, locking; and warehouses.sql."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pytest
import structlog

from syncd.batch import BatchKey, StagedBatch, StagedFormat, SyncRecord, TransformedBatch
from syncd.errors import ConfigError, LockedError, TerminalLoadError, TransientLoadError
from syncd.fields import Column, FieldType, export_columns
from syncd.timeutil import UTC
from warehouses import sql
from warehouses.base import Warehouse
from warehouses.duckdb import DuckDBWarehouse, map_duckdb_error

if TYPE_CHECKING:
    from conftest import StagedFiles

Peek = Callable[..., list[tuple[Any, ...]]]
FORMATS: tuple[StagedFormat, ...] = ("parquet", "csv", "ndjson")
COMMITTED_AT = datetime(2024, 3, 5, 12, 0, tzinfo=UTC)


def record_for(batch: TransformedBatch) -> SyncRecord:
    return SyncRecord(
        batch_id=batch.key.id,
        source=batch.key.source,
        start=batch.key.start,
        end=batch.key.end,
        committed_at=COMMITTED_AT,
        operation_id="op-1",
        rows_loaded=batch.rows,
        rows_rejected=batch.rejected,
        bytes=batch.source_bytes,
        staged_uri=str(batch.path),
        syncd_version="0.1.0",
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "syncd.duckdb"


@pytest.fixture
def warehouse(db_path: Path) -> Iterator[DuckDBWarehouse]:
    with DuckDBWarehouse(db_path) as wh:
        wh.ensure_tables(export_columns())
        yield wh


@pytest.fixture
def peek(warehouse: DuckDBWarehouse, db_path: Path) -> Iterator[Peek]:
    """A second connection, as any other client of the file would look at it."""
    con = duckdb.connect(str(db_path))
    yield lambda query, *params: con.execute(query, list(params)).fetchall()
    con.close()


@pytest.fixture
def commit(
    warehouse: DuckDBWarehouse, staged_files: StagedFiles
) -> Callable[..., TransformedBatch]:
    """Write `count` rows for the window opening at `start` and commit them."""

    def run(start: str, count: int = 3, fmt: StagedFormat = "parquet") -> TransformedBatch:
        key = staged_files.key(start)
        batch = staged_files.write(key, staged_files.rows(key, count), fmt)
        warehouse.commit_batch(staged_files.in_place(batch), record_for(batch))
        return batch

    return run


# --- tables ----------------------------------------------------------------------------------


def test_duckdb_fills_the_warehouse_protocol(warehouse: DuckDBWarehouse) -> None:
    assert isinstance(warehouse, Warehouse)


def test_memory_limit_and_threads_reach_every_connection(db_path: Path) -> None:
    settings = "SELECT current_setting('memory_limit'), current_setting('threads')"
    with DuckDBWarehouse(db_path, memory_limit="256MiB", threads=1) as wh:
        wh.ensure_tables(export_columns())  # a session: the file is open only inside one
        with wh._lock, wh._session("read its settings"):
            assert wh._connection().execute(settings).fetchall() == [("256.0 MiB", 1)]


def test_ensure_tables_on_a_fresh_file_returns_the_requested_columns(db_path: Path) -> None:
    with DuckDBWarehouse(db_path) as wh:
        assert wh.ensure_tables(export_columns()) == export_columns()


def test_ensure_tables_adds_the_columns_the_sync_sql_needs() -> None:
    with DuckDBWarehouse(":memory:") as wh:
        columns = wh.ensure_tables([Column("IndvId", FieldType.INT64)])
    assert [c.name for c in columns] == ["IndvId", "EventStart", "SyncdBatchId", "SyncdLoadedAt"]


def test_ensure_tables_twice_changes_nothing(warehouse: DuckDBWarehouse) -> None:
    assert warehouse.ensure_tables(export_columns()) == export_columns()


def test_sync_table_has_hauser_s_columns_first(warehouse: DuckDBWarehouse, peek: Peek) -> None:
    names = [
        r[0]
        for r in peek("SELECT column_name FROM duckdb_columns() WHERE table_name = ?", "fssync")
    ]
    assert names == [c.name for c in sql.SYNC_COLUMNS]


def test_rejects_table_is_created(warehouse: DuckDBWarehouse, peek: Peek) -> None:
    names = [
        r[0]
        for r in peek("SELECT column_name FROM duckdb_columns() WHERE table_name = ?", "fsrejects")
    ]
    assert names == ["SyncdBatchId", "Position", "Reason", "Raw", "RejectedAt"]


def test_export_types_follow_the_field_types(warehouse: DuckDBWarehouse, peek: Peek) -> None:
    names = ("IndvId", "EventCumulativeLayoutShift", "PageUrl", "EventStart", "CustomVars")
    types: dict[str, str] = dict(
        peek("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ?", "fsexport")
    )
    assert [types[n] for n in names] == ["BIGINT", "DOUBLE", "VARCHAR", "TIMESTAMP", "JSON"]


def read_file(path: Path, query: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(query).fetchall()


def test_custom_table_names_are_used(db_path: Path) -> None:
    with DuckDBWarehouse(db_path, "events", "events_sync", "events_rejects") as wh:
        wh.ensure_tables(export_columns())
    tables = read_file(db_path, "SELECT table_name FROM duckdb_tables() ORDER BY 1")
    assert tables == [("events",), ("events_rejects",), ("events_sync",)]


@pytest.mark.parametrize(
    "name",
    ['fsexport"; DROP TABLE fssync; --', "fs export", "1table", "", "ta-ble", "x" * 128],
)
def test_hostile_table_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="not a valid name"):
        DuckDBWarehouse(":memory:", export_table=name)


# --- reconciling hauser's tables -------------------------------------------------------------

HAUSER_END = datetime(2024, 2, 29, 0, 0, tzinfo=UTC)


@pytest.fixture
def hauser_db(db_path: Path) -> Path:
    """A file as a hauser user might bring it: hauser's export table and SyncTable."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(db_path))
    con.execute(
        'CREATE TABLE fsexport ("IndvId" BIGINT, "EventStart" TIMESTAMP, "PageAgent" VARCHAR, '
        '"CustomVars" VARCHAR, "Odd" BLOB)'
    )
    con.execute("INSERT INTO fsexport VALUES (7, '2024-02-28 23:00:00', 'Mozilla', '{}', NULL)")
    con.execute(
        'CREATE TABLE fssync ("ID" BIGINT, "Processed" TIMESTAMP, "BundleEndTime" TIMESTAMP)'
    )
    con.execute("INSERT INTO fssync VALUES (-1, '2024-02-29 01:00:00', '2024-02-29 00:00:00')")
    con.execute("INSERT INTO fssync VALUES (4242, '2024-02-28 01:00:00', '2024-02-28 00:00:00')")
    con.close()
    return db_path


def test_hauser_export_table_keeps_its_columns_first(hauser_db: Path) -> None:
    with DuckDBWarehouse(hauser_db) as wh:
        columns = wh.ensure_tables(export_columns())
    assert columns[:5] == (
        Column("IndvId", FieldType.INT64),
        Column("EventStart", FieldType.TIMESTAMP),
        Column("PageAgent", FieldType.STRING),
        Column("CustomVars", FieldType.STRING),
        Column("Odd", FieldType.STRING),
    )


def test_hauser_export_table_gains_the_missing_columns(hauser_db: Path) -> None:
    with DuckDBWarehouse(hauser_db) as wh:
        names = {c.name for c in wh.ensure_tables(export_columns())}
    assert names >= {c.name for c in export_columns()}


def test_hauser_export_rows_are_kept(hauser_db: Path) -> None:
    with DuckDBWarehouse(hauser_db) as wh:
        wh.ensure_tables(export_columns())
    assert read_file(hauser_db, 'SELECT "IndvId", "PageAgent" FROM fsexport') == [(7, "Mozilla")]


def test_hauser_sync_rows_read_back(hauser_db: Path) -> None:
    with DuckDBWarehouse(hauser_db) as wh:
        wh.ensure_tables(export_columns())
        records = wh.sync_records()
    assert records[-1] == SyncRecord(
        batch_id="hauser-20240229T000000Z",
        source="hauser",
        start=None,
        end=HAUSER_END,
        committed_at=HAUSER_END + timedelta(hours=1),
        extra={"hauser_id": "-1"},
    )


def test_hauser_sync_row_of_a_bundle_keeps_its_bundle_id(hauser_db: Path) -> None:
    with DuckDBWarehouse(hauser_db) as wh:
        wh.ensure_tables(export_columns())
        assert wh.sync_records()[0].bundle_ids == (4242,)


def test_hauser_sync_table_reads_before_it_is_reconciled(hauser_db: Path) -> None:
    with DuckDBWarehouse.open_read_only(hauser_db) as wh:
        assert [r.end for r in wh.sync_records()] == [HAUSER_END - timedelta(days=1), HAUSER_END]


def test_commit_continues_a_hauser_table(hauser_db: Path, staged_files: StagedFiles) -> None:
    key = staged_files.key("2024-02-29T00:00:00Z")
    batch = staged_files.write(key, staged_files.rows(key, 2))
    with DuckDBWarehouse(hauser_db) as wh:
        wh.ensure_tables(export_columns())
        wh.commit_batch(staged_files.in_place(batch), record_for(batch))
        assert wh.sync_records()[-1].end == key.end


# --- commits ---------------------------------------------------------------------------------


def test_commit_loads_the_rows(commit: Callable[..., TransformedBatch], peek: Peek) -> None:
    batch = commit("2024-03-01T00:00:00Z", 3)
    assert peek('SELECT count(*) FROM fsexport WHERE "SyncdBatchId" = ?', batch.key.id) == [(3,)]


def test_commit_writes_the_sync_row(
    commit: Callable[..., TransformedBatch], warehouse: DuckDBWarehouse
) -> None:
    batch = commit("2024-03-01T00:00:00Z", 3)
    assert warehouse.sync_records() == [record_for(batch)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_loads_every_column(
    warehouse: DuckDBWarehouse, staged_files: StagedFiles, peek: Peek, fmt: StagedFormat
) -> None:
    key = staged_files.key("2024-03-01T00:00:00Z")
    batch = staged_files.write(key, staged_files.rows(key, 1), fmt)
    warehouse.commit_batch(staged_files.in_place(batch), record_for(batch))
    assert peek(
        'SELECT "IndvId", "SessionId", "EventStart", "EventType", "PageUrl", '
        '"EventCumulativeLayoutShift", "CustomVars"::VARCHAR, "SyncdBatchId", "SyncdLoadedAt" '
        "FROM fsexport"
    ) == [
        (
            5_000_000_000_000_000,
            1000,
            datetime(2024, 3, 1, 0, 0),
            "click",
            "https://shop.example/p/0",
            0.25,
            '{"user_plan_str":"pro","evt_total_real":9.5}',
            key.id,
            datetime(2024, 6, 1, 0, 0),
        )
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_string_and_null_stay_apart(
    warehouse: DuckDBWarehouse, staged_files: StagedFiles, peek: Peek, fmt: StagedFormat
) -> None:
    key = staged_files.key("2024-03-01T00:00:00Z")
    rows = staged_files.rows(key, 4)
    for row, url in zip(rows, ["", None, 'say "hi", then\nleave', "plain"], strict=True):
        row["PageUrl"] = url
    batch = staged_files.write(key, rows, fmt)
    warehouse.commit_batch(staged_files.in_place(batch), record_for(batch))
    assert peek('SELECT "PageUrl" FROM fsexport ORDER BY "SessionId"') == [
        ("",),
        (None,),
        ('say "hi", then\nleave',),
        ("plain",),
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_null_custom_vars_and_numbers_stay_null(
    warehouse: DuckDBWarehouse, staged_files: StagedFiles, peek: Peek, fmt: StagedFormat
) -> None:
    key = staged_files.key("2024-03-01T00:00:00Z")
    rows = staged_files.rows(
        key, 1, CustomVars=None, SessionId=None, EventCumulativeLayoutShift=None
    )
    batch = staged_files.write(key, rows, fmt)
    warehouse.commit_batch(staged_files.in_place(batch), record_for(batch))
    assert peek('SELECT "CustomVars", "SessionId", "EventCumulativeLayoutShift" FROM fsexport') == [
        (None, None, None)
    ]


def test_csv_timestamps_with_an_offset_are_stored_in_utc(
    warehouse: DuckDBWarehouse, staged_files: StagedFiles, peek: Peek
) -> None:
    key = staged_files.key("2024-03-01T00:00:00Z")
    path = staged_files.folder / "offset.csv"
    staged_files.folder.mkdir(parents=True, exist_ok=True)
    path.write_text("IndvId,EventStart\n1,2024-03-01T02:30:00.250+02:00\n")
    batch = TransformedBatch(
        key=key,
        path=path,
        format="csv",
        columns=(Column("IndvId", FieldType.INT64), Column("EventStart", FieldType.TIMESTAMP)),
        rows=1,
        rejected=0,
        rejects_path=None,
        source_bytes=1,
    )
    warehouse.commit_batch(staged_files.in_place(batch), record_for(batch))
    assert peek('SELECT "EventStart" FROM fsexport') == [(datetime(2024, 3, 1, 0, 30, 0, 250000),)]


def test_csv_columns_are_matched_by_header_name(
    warehouse: DuckDBWarehouse, staged_files: StagedFiles, peek: Peek
) -> None:
    key = staged_files.key("2024-03-01T00:00:00Z")
    path = staged_files.folder / "reordered.csv"
    staged_files.folder.mkdir(parents=True, exist_ok=True)
    path.write_text("EventType,IndvId\nclick,1\n")
    batch = TransformedBatch(
        key=key,
        path=path,
        format="csv",
        columns=(Column("IndvId", FieldType.INT64), Column("EventType", FieldType.STRING)),
        rows=1,
        rejected=0,
        rejects_path=None,
        source_bytes=1,
    )
    warehouse.commit_batch(staged_files.in_place(batch), record_for(batch))
    assert peek('SELECT "IndvId", "EventType" FROM fsexport') == [(1, "click")]


def test_batch_id_comes_from_the_key_not_the_file(
    warehouse: DuckDBWarehouse, staged_files: StagedFiles, peek: Peek
) -> None:
    key = staged_files.key("2024-03-01T00:00:00Z")
    batch = staged_files.write(key, staged_files.rows(key, 2, SyncdBatchId="forged"))
    warehouse.commit_batch(staged_files.in_place(batch), record_for(batch))
    assert peek('SELECT DISTINCT "SyncdBatchId" FROM fsexport') == [(key.id,)]


def test_recommit_replaces_instead_of_duplicating(
    commit: Callable[..., TransformedBatch], peek: Peek
) -> None:
    commit("2024-03-01T00:00:00Z", 3)
    commit("2024-03-01T00:00:00Z", 3)
    assert peek("SELECT count(*) FROM fsexport") == [(3,)]


def test_recommit_keeps_one_sync_row(
    commit: Callable[..., TransformedBatch], warehouse: DuckDBWarehouse
) -> None:
    commit("2024-03-01T00:00:00Z", 3)
    commit("2024-03-01T00:00:00Z", 3)
    assert len(warehouse.sync_records()) == 1


def test_rejects_are_loaded(
    warehouse: DuckDBWarehouse, staged_files: StagedFiles, peek: Peek
) -> None:
    key = staged_files.key("2024-03-01T00:00:00Z")
    rejects = [
        {
            "position": 7,
            "reason": "EventStart: is not an RFC 3339 timestamp",
            "raw": '{"EventStart": 3}',
        },
        {"position": 9, "reason": "not an object", "raw": "[1, 2]"},
    ]
    batch = staged_files.write(key, staged_files.rows(key, 2), rejects=rejects)
    warehouse.commit_batch(staged_files.in_place(batch), record_for(batch))
    assert peek('SELECT "SyncdBatchId", "Position", "Reason", "Raw" FROM fsrejects ORDER BY 2') == [
        (key.id, 7, "EventStart: is not an RFC 3339 timestamp", '{"EventStart": 3}'),
        (key.id, 9, "not an object", "[1, 2]"),
    ]


def test_rejected_count_lands_in_the_sync_row(
    warehouse: DuckDBWarehouse, staged_files: StagedFiles
) -> None:
    key = staged_files.key("2024-03-01T00:00:00Z")
    rejects = [{"position": 1, "reason": "bad", "raw": "x"}]
    batch = staged_files.write(key, staged_files.rows(key, 2), rejects=rejects)
    warehouse.commit_batch(staged_files.in_place(batch), record_for(batch))
    assert warehouse.sync_records()[0].rows_rejected == 1


def test_an_empty_batch_commits_its_sync_row(
    commit: Callable[..., TransformedBatch], warehouse: DuckDBWarehouse
) -> None:
    commit("2024-03-01T00:00:00Z", 0, "csv")
    assert [r.rows_loaded for r in warehouse.sync_records()] == [0]


def test_a_remote_stage_loads_the_local_copy(
    warehouse: DuckDBWarehouse, staged_files: StagedFiles, peek: Peek
) -> None:
    key = staged_files.key("2024-03-01T00:00:00Z")
    batch = staged_files.write(key, staged_files.rows(key, 2))
    staged = StagedBatch(batch=batch, uri=f"s3://bucket/{key.id}.parquet", rejects_uri=None)
    warehouse.commit_batch(staged, record_for(batch))
    assert peek("SELECT count(*) FROM fsexport") == [(2,)]


# --- atomicity -------------------------------------------------------------------------------


def snapshot(peek: Peek) -> list[Any]:
    return [
        peek('SELECT * FROM fsexport ORDER BY "SyncdBatchId", "SessionId"'),
        peek('SELECT * FROM fssync ORDER BY "BundleEndTime"'),
        peek('SELECT * FROM fsrejects ORDER BY "SyncdBatchId", "Position"'),
    ]


def test_row_count_mismatch_changes_nothing(
    commit: Callable[..., TransformedBatch],
    warehouse: DuckDBWarehouse,
    staged_files: StagedFiles,
    peek: Peek,
) -> None:
    first = commit("2024-03-01T00:00:00Z", 3)
    before = snapshot(peek)
    liar = staged_files.write(first.key, staged_files.rows(first.key, 2), claimed_rows=3)
    with pytest.raises(TerminalLoadError, match="holds 2 rows, the batch says 3"):
        warehouse.commit_batch(staged_files.in_place(liar), record_for(liar))
    assert snapshot(peek) == before


def test_corrupt_file_changes_nothing(
    commit: Callable[..., TransformedBatch],
    warehouse: DuckDBWarehouse,
    staged_files: StagedFiles,
    peek: Peek,
) -> None:
    first = commit("2024-03-01T00:00:00Z", 3)
    before = snapshot(peek)
    first.path.write_bytes(b"PAR1 this is no parquet file PAR1")
    with pytest.raises(TerminalLoadError):
        warehouse.commit_batch(staged_files.in_place(first), record_for(first))
    assert snapshot(peek) == before


def test_bad_rejects_file_changes_nothing(
    commit: Callable[..., TransformedBatch],
    warehouse: DuckDBWarehouse,
    staged_files: StagedFiles,
    peek: Peek,
) -> None:
    first = commit("2024-03-01T00:00:00Z", 3)
    before = snapshot(peek)
    batch = staged_files.write(
        first.key,
        staged_files.rows(first.key, 3),
        rejects=[{"position": "x", "reason": "r", "raw": "r"}],
    )
    with pytest.raises(TerminalLoadError):
        warehouse.commit_batch(staged_files.in_place(batch), record_for(batch))
    assert snapshot(peek) == before


def test_a_column_the_table_lacks_is_terminal(
    warehouse: DuckDBWarehouse, staged_files: StagedFiles
) -> None:
    key = staged_files.key("2024-03-01T00:00:00Z")
    staged_files.columns = (*staged_files.columns, Column("NotInTable", FieldType.STRING))
    batch = staged_files.write(key, staged_files.rows(key, 1))
    with pytest.raises(TerminalLoadError, match="NotInTable"):
        warehouse.commit_batch(staged_files.in_place(batch), record_for(batch))


def test_a_missing_staged_file_is_transient(
    warehouse: DuckDBWarehouse, staged_files: StagedFiles
) -> None:
    key = staged_files.key("2024-03-01T00:00:00Z")
    batch = staged_files.write(key, staged_files.rows(key, 1))
    batch.path.unlink()
    with pytest.raises(TransientLoadError):
        warehouse.commit_batch(staged_files.in_place(batch), record_for(batch))


def test_a_glob_pattern_as_staged_path_is_refused(
    warehouse: DuckDBWarehouse, staged_files: StagedFiles
) -> None:
    key = staged_files.key("2024-03-01T00:00:00Z")
    batch = staged_files.write(key, staged_files.rows(key, 1))
    staged = StagedBatch(batch=batch, uri=str(batch.path.parent / "*.parquet"), rejects_uri=None)
    with pytest.raises(TerminalLoadError, match="glob"):
        warehouse.commit_batch(staged, record_for(batch))


def test_a_record_of_another_batch_is_refused(
    warehouse: DuckDBWarehouse, staged_files: StagedFiles
) -> None:
    key = staged_files.key("2024-03-01T00:00:00Z")
    batch = staged_files.write(key, staged_files.rows(key, 1))
    with pytest.raises(TerminalLoadError, match="does not belong"):
        warehouse.commit_batch(
            staged_files.in_place(batch), replace(record_for(batch), batch_id="x")
        )


# --- reading the sync table ------------------------------------------------------------------


def test_sync_records_are_oldest_first(
    commit: Callable[..., TransformedBatch], warehouse: DuckDBWarehouse
) -> None:
    commit("2024-03-01T01:00:00Z")
    commit("2024-03-01T00:00:00Z")
    assert [r.start.hour for r in warehouse.sync_records() if r.start] == [0, 1]


def test_sync_records_since_skips_earlier_batches(
    commit: Callable[..., TransformedBatch], warehouse: DuckDBWarehouse
) -> None:
    commit("2024-03-01T00:00:00Z")
    later = commit("2024-03-01T01:00:00Z")
    assert [r.batch_id for r in warehouse.sync_records(since=later.key.start)] == [later.key.id]


def test_sync_records_of_a_fresh_file_are_empty(db_path: Path) -> None:
    with DuckDBWarehouse(db_path) as wh:
        assert wh.sync_records() == []


def test_legacy_bundle_ids_round_trip(
    warehouse: DuckDBWarehouse, staged_files: StagedFiles
) -> None:
    base = staged_files.key("2024-03-01T00:00:00Z", hours=24)
    key = BatchKey(base.start, base.end, "legacy", (11, 12))
    batch = staged_files.write(key, staged_files.rows(key, 1))
    warehouse.commit_batch(
        staged_files.in_place(batch), replace(record_for(batch), bundle_ids=(11, 12))
    )
    assert warehouse.sync_records()[0].bundle_ids == (11, 12)


# --- rollback and consistency ----------------------------------------------------------------

DAY1, DAY2 = date(2024, 3, 1), date(2024, 3, 2)


@pytest.fixture
def two_days(commit: Callable[..., TransformedBatch]) -> list[TransformedBatch]:
    return [
        commit("2024-03-01T00:00:00Z", 3),
        commit("2024-03-01T23:00:00Z", 2),
        commit("2024-03-02T00:00:00Z", 4),
    ]


def test_rollback_deletes_exactly_that_day(
    two_days: list[TransformedBatch], warehouse: DuckDBWarehouse, peek: Peek
) -> None:
    warehouse.rollback_days(DAY1, DAY1)
    assert peek('SELECT DISTINCT "SyncdBatchId" FROM fsexport') == [(two_days[2].key.id,)]


def test_rollback_deletes_that_day_s_sync_rows(
    two_days: list[TransformedBatch], warehouse: DuckDBWarehouse
) -> None:
    warehouse.rollback_days(DAY1, DAY1)
    assert [r.batch_id for r in warehouse.sync_records()] == [two_days[2].key.id]


def test_rollback_reports_what_it_deleted(
    two_days: list[TransformedBatch], warehouse: DuckDBWarehouse
) -> None:
    result = warehouse.rollback_days(DAY1, DAY2)
    assert (result.days, result.rows_deleted, result.sync_rows_deleted) == ((DAY1, DAY2), 9, 3)


def test_rollback_deletes_that_day_s_rejects(
    warehouse: DuckDBWarehouse, staged_files: StagedFiles, peek: Peek
) -> None:
    key = staged_files.key("2024-03-01T00:00:00Z")
    batch = staged_files.write(
        key, staged_files.rows(key, 1), rejects=[{"position": 1, "reason": "r", "raw": "x"}]
    )
    warehouse.commit_batch(staged_files.in_place(batch), record_for(batch))
    warehouse.rollback_days(DAY1, DAY1)
    assert peek("SELECT count(*) FROM fsrejects") == [(0,)]


def test_rollback_keeps_late_events_of_another_day_s_batch(
    warehouse: DuckDBWarehouse, staged_files: StagedFiles, peek: Peek
) -> None:
    key = staged_files.key("2024-03-02T00:00:00Z")
    late = staged_files.rows(key, 2, EventStart=datetime(2024, 3, 1, 23, 59, tzinfo=UTC))
    batch = staged_files.write(key, late)
    warehouse.commit_batch(staged_files.in_place(batch), record_for(batch))
    warehouse.rollback_days(DAY1, DAY1)
    assert peek("SELECT count(*) FROM fsexport") == [(2,)]


def test_rollback_deletes_hauser_rows_of_that_day(hauser_db: Path) -> None:
    with DuckDBWarehouse(hauser_db) as wh:
        wh.ensure_tables(export_columns())
        result = wh.rollback_days(date(2024, 2, 28), date(2024, 2, 28))
    assert (result.rows_deleted, result.sync_rows_deleted) == (1, 1)


def test_rollback_of_an_inverted_range_is_refused(warehouse: DuckDBWarehouse) -> None:
    with pytest.raises(TerminalLoadError, match="before"):
        warehouse.rollback_days(DAY2, DAY1)


def test_consistent_days_report_nothing(
    two_days: list[TransformedBatch], warehouse: DuckDBWarehouse
) -> None:
    assert warehouse.inconsistent_days(DAY1) == []


def test_a_deleted_row_marks_its_day(
    two_days: list[TransformedBatch], warehouse: DuckDBWarehouse, peek: Peek
) -> None:
    peek('DELETE FROM fsexport WHERE "SyncdBatchId" = ? AND "SessionId" = 1000', two_days[1].key.id)
    assert warehouse.inconsistent_days(DAY1) == [DAY1]


def test_a_missing_sync_row_marks_the_rows_day(
    two_days: list[TransformedBatch], warehouse: DuckDBWarehouse, peek: Peek
) -> None:
    peek('DELETE FROM fssync WHERE "SyncdBatchId" = ?', two_days[2].key.id)
    assert warehouse.inconsistent_days(DAY1) == [DAY2]


def test_a_sync_row_without_rows_marks_its_day(
    two_days: list[TransformedBatch], warehouse: DuckDBWarehouse, peek: Peek
) -> None:
    peek('DELETE FROM fsexport WHERE "SyncdBatchId" = ?', two_days[0].key.id)
    assert warehouse.inconsistent_days(DAY1) == [DAY1]


def test_inconsistent_days_before_since_are_ignored(
    two_days: list[TransformedBatch], warehouse: DuckDBWarehouse, peek: Peek
) -> None:
    peek('DELETE FROM fsexport WHERE "SyncdBatchId" = ?', two_days[0].key.id)
    assert warehouse.inconsistent_days(DAY2) == []


def test_rollback_repairs_an_inconsistent_day(
    two_days: list[TransformedBatch], warehouse: DuckDBWarehouse, peek: Peek
) -> None:
    peek('DELETE FROM fssync WHERE "SyncdBatchId" = ?', two_days[0].key.id)
    warehouse.rollback_days(DAY1, DAY1)
    assert warehouse.inconsistent_days(DAY1) == []


# --- opening, locking, read-only -------------------------------------------------------------

#: Holds the file open in another process until its stdin closes: "rw" and "ro" as DuckDB
#: clients do, "syncd" as a syncd writer (the lock file only, between operations).
HOLDER = (
    "import sys, duckdb\n"
    "from warehouses.duckdb import DuckDBWarehouse\n"
    "mode = sys.argv[2]\n"
    "if mode == 'syncd':\n"
    "    held = DuckDBWarehouse(sys.argv[1])\n"
    "else:\n"
    "    held = duckdb.connect(sys.argv[1], read_only=mode == 'ro')\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)


class Holder:
    """Another process holding the file (see HOLDER) until `release()`."""

    def __init__(self, path: Path, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"
        self.pid = self.proc.pid

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=20)
            self.proc.stdout.close()


@pytest.fixture
def holder(db_path: Path) -> Iterator[Callable[[str], Holder]]:
    """Start a holder of `db_path` (made first, with the tables) in the given mode."""
    started: list[Holder] = []

    def start(mode: str) -> Holder:
        if not db_path.exists():
            with DuckDBWarehouse(db_path) as wh:
                wh.ensure_tables(export_columns())
        started.append(Holder(db_path, mode))
        return started[-1]

    yield start
    for h in started:
        h.release()


class FakeTime:
    """The clock and the pause of a waiting writer: a pause moves the clock, nothing sleeps."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.now = 100.0
        self.pauses: list[float] = []
        self.stop_after = stop_after

    def monotonic(self) -> float:
        return self.now

    def pause(self, seconds: float) -> bool:
        self.pauses.append(seconds)
        self.now += seconds
        return self.stop_after is not None and len(self.pauses) >= self.stop_after


class Listener:
    """Records what a warehouse reports about its waits; `waiting` is set when one begins."""

    def __init__(self, on_wait: Callable[[], None] = lambda: None) -> None:
        self.events: list[tuple[str, Any]] = []
        self.waiting = threading.Event()
        self.on_wait = on_wait

    def warehouse_waiting(self, reason: str) -> None:
        self.events.append(("waiting", reason))
        self.waiting.set()
        self.on_wait()

    def warehouse_free(self, waited_seconds: float) -> None:
        self.events.append(("free", waited_seconds))


def read_in_another_process(path: Path, query: str) -> str:
    """What a reader beside syncd runs: a read-only connection in a process of its own."""
    script = (
        "import sys, duckdb\n"
        "print(duckdb.connect(sys.argv[1], read_only=True).execute(sys.argv[2]).fetchall())"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path), query],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


def test_the_file_is_free_between_operations(
    warehouse: DuckDBWarehouse, commit: Callable[..., TransformedBatch], db_path: Path
) -> None:
    commit("2024-03-01T00:00:00Z", 3)
    assert read_in_another_process(db_path, "SELECT count(*) FROM fsexport") == "[(3,)]"


def test_a_second_syncd_on_the_file_is_locked_out(
    holder: Callable[[str], Holder], db_path: Path
) -> None:
    other = holder("syncd")
    with pytest.raises(LockedError) as caught:
        DuckDBWarehouse(db_path)
    assert str(caught.value) == (
        f"the DuckDB file {db_path} is in use by another process (PID {other.pid}): DuckDB "
        "admits one writer process, and no reader while it writes"
    )


def test_a_second_writer_in_this_process_is_locked_out_too(warehouse: DuckDBWarehouse) -> None:
    with pytest.raises(LockedError, match=rf"\(PID {os.getpid()}\)"):
        DuckDBWarehouse(warehouse.path)


def test_the_writer_lock_goes_with_close(db_path: Path) -> None:
    DuckDBWarehouse(db_path).close()
    with DuckDBWarehouse(db_path) as again:
        again.ensure_tables(export_columns())
    assert Path(f"{db_path}.lock").read_text() == f"{os.getpid()}\n"


def test_the_writer_lock_goes_with_a_killed_process(
    holder: Callable[[str], Holder], db_path: Path
) -> None:
    other = holder("syncd")
    other.proc.kill()
    other.proc.wait(timeout=20)
    with DuckDBWarehouse(db_path) as wh:
        assert wh.sync_records() == []


@pytest.mark.parametrize("mode", ["ro", "rw"])
def test_a_write_waits_for_the_process_holding_the_file(
    holder: Callable[[str], Holder],
    db_path: Path,
    staged_files: StagedFiles,
    mode: str,
) -> None:
    """The holder lets go once the wait was reported; the commit then goes through."""
    other = holder(mode)
    listener = Listener(on_wait=other.release)
    key = staged_files.key("2024-03-01T00:00:00Z")
    batch = staged_files.write(key, staged_files.rows(key, 2))
    with structlog.testing.capture_logs() as logs, DuckDBWarehouse(db_path) as wh:
        wh.report_waits(listener, threading.Event())
        wh.commit_batch(staged_files.in_place(batch), record_for(batch))
        assert wh.sync_records() == [record_for(batch)]
    assert [e for e, _ in listener.events] == ["waiting", "free"]
    assert listener.events[0][1] == (
        f"another process (PID {other.pid}) has the DuckDB file {db_path} open; syncd writes "
        "to it once it is closed (waiting up to 300 s, [duckdb] LockWait)"
    )
    said = [(e["log_level"], e["event"]) for e in logs if "DuckDB file" in e["event"]]
    said = [(level, event) for level, event in said if level != "debug"]
    assert said == [
        ("warning", "waiting for the DuckDB file: another process has it open"),
        ("info", "the DuckDB file is free again; carrying on"),
    ]


def test_a_write_gives_up_after_lock_wait_as_a_transient_failure(
    holder: Callable[[str], Holder], db_path: Path
) -> None:
    holder("ro")
    fake = FakeTime()
    listener = Listener()
    with DuckDBWarehouse(db_path, lock_wait=2.0, monotonic=fake.monotonic, pause=fake.pause) as wh:
        wh.report_waits(listener, threading.Event())
        with pytest.raises(TransientLoadError, match=r"gave up after waiting 2\.0 s"):
            wh.rollback_days(DAY1, DAY1)
    assert fake.pauses == pytest.approx([0.02, 0.04, 0.08, 0.16, 0.32, 0.5, 0.5, 0.38])
    assert [e for e, _ in listener.events] == ["waiting", "free"]


def test_lock_wait_zero_does_not_wait(holder: Callable[[str], Holder], db_path: Path) -> None:
    holder("ro")
    fake = FakeTime()
    with (
        DuckDBWarehouse(db_path, lock_wait=0, monotonic=fake.monotonic, pause=fake.pause) as wh,
        pytest.raises(TransientLoadError, match="in use by another process"),
    ):
        wh.ensure_tables(export_columns())
    assert fake.pauses == []


def test_a_stop_ends_the_wait(holder: Callable[[str], Holder], db_path: Path) -> None:
    holder("ro")
    fake = FakeTime(stop_after=3)
    with (
        DuckDBWarehouse(db_path, monotonic=fake.monotonic, pause=fake.pause) as wh,
        pytest.raises(TransientLoadError, match="stopped while waiting for the DuckDB file"),
    ):
        wh.sync_records()
    assert len(fake.pauses) == 3


def test_a_reader_never_waits(holder: Callable[[str], Holder], db_path: Path) -> None:
    other = holder("rw")
    fake = FakeTime()
    reader = DuckDBWarehouse(db_path, read_only=True, monotonic=fake.monotonic, pause=fake.pause)
    with pytest.raises(LockedError, match=rf"in use by another process \(PID {other.pid}\)"):
        reader.sync_records()
    assert fake.pauses == []


def test_read_only_sees_committed_batches(db_path: Path, staged_files: StagedFiles) -> None:
    key = staged_files.key("2024-03-01T00:00:00Z")
    batch = staged_files.write(key, staged_files.rows(key, 2))
    with DuckDBWarehouse(db_path) as wh:
        wh.ensure_tables(export_columns())
        wh.commit_batch(staged_files.in_place(batch), record_for(batch))
        with DuckDBWarehouse.open_read_only(db_path) as reader:  # beside the writer
            assert reader.sync_records() == [record_for(batch)]


def test_read_only_refuses_to_write(db_path: Path) -> None:
    DuckDBWarehouse(db_path).ensure_tables(export_columns())
    with (
        DuckDBWarehouse.open_read_only(db_path) as reader,
        pytest.raises(TerminalLoadError, match="read-only"),
    ):
        reader.rollback_days(DAY1, DAY1)


def test_read_only_of_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(TerminalLoadError, match="does not exist"):
        DuckDBWarehouse.open_read_only(tmp_path / "none.duckdb")


def test_a_file_that_is_no_database_is_terminal(tmp_path: Path) -> None:
    (tmp_path / "notes.duckdb").write_text("not a database")
    with (
        DuckDBWarehouse(tmp_path / "notes.duckdb") as wh,
        pytest.raises(TerminalLoadError, match="not a valid DuckDB database file"),
    ):
        wh.ensure_tables(export_columns())


def test_check_passes_on_a_writable_file(warehouse: DuckDBWarehouse, peek: Peek) -> None:
    warehouse.check()
    assert peek(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE 'syncd_write_probe%'"
    ) == [(0,)]


def test_check_on_a_closed_warehouse_fails(db_path: Path) -> None:
    wh = DuckDBWarehouse(db_path)
    wh.close()
    with pytest.raises(TerminalLoadError):
        wh.check()


def test_repr_names_the_file_and_tables(db_path: Path) -> None:
    with DuckDBWarehouse(db_path) as wh:
        assert repr(wh) == (
            f"DuckDBWarehouse(path={str(db_path)!r}, tables=TableNames(export='fsexport', "
            "sync='fssync', rejects='fsrejects', schema=None))"
        )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (duckdb.IOException("IO Error: disk full"), TransientLoadError),
        (duckdb.TransactionException("Conflict on update"), TransientLoadError),
        (duckdb.OutOfMemoryException("out of memory"), TransientLoadError),
        (duckdb.ConversionException("Could not convert"), TerminalLoadError),
        (duckdb.CatalogException("Table does not exist"), TerminalLoadError),
        (duckdb.InvalidInputException("Malformed JSON"), TerminalLoadError),
        (duckdb.Error("Footer length error"), TerminalLoadError),
    ],
)
def test_duckdb_errors_map_to_transient_or_terminal(error: duckdb.Error, expected: type) -> None:
    assert type(map_duckdb_error(error, "load")) is expected


# --- warehouses.sql --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql_type", "field_type"),
    [
        ("BIGINT", FieldType.INT64),
        ("INTEGER", FieldType.INT64),
        ("DOUBLE", FieldType.FLOAT),
        ("double precision", FieldType.FLOAT),
        ("DECIMAL(18,3)", FieldType.FLOAT),
        ("TIMESTAMP", FieldType.TIMESTAMP),
        ("TIMESTAMP WITH TIME ZONE", FieldType.TIMESTAMP),
        ("timestamp without time zone", FieldType.TIMESTAMP),
        ("JSON", FieldType.JSON),
        ("jsonb", FieldType.JSON),
        ("VARCHAR", FieldType.STRING),
        ("character varying(65535)", FieldType.STRING),
        ("BLOB", FieldType.STRING),
        ("INTERVAL", FieldType.STRING),
    ],
)
def test_catalog_types_map_back_to_field_types(sql_type: str, field_type: FieldType) -> None:
    assert sql.field_type_of(sql_type) is field_type


@pytest.mark.parametrize("dialect", [sql.DUCKDB, sql.POSTGRES, sql.REDSHIFT], ids=lambda d: d.name)
def test_every_dialect_maps_its_own_types_back(dialect: sql.Dialect) -> None:
    back = {t: sql.field_type_of(dialect.column_type(t)) for t in FieldType}
    expected = {t: t for t in FieldType}
    if dialect.column_type(FieldType.JSON) == dialect.column_type(FieldType.STRING):
        expected[FieldType.JSON] = FieldType.STRING  # JSON kept as text, as hauser did
    assert back == expected


def test_render_quotes_column_fields_and_fills_placeholders() -> None:
    tables = sql.TableNames(schema="analytics")
    text = sql.render("DELETE FROM {export} WHERE {SyncdBatchId} = {p}", sql.POSTGRES, tables)
    assert text == 'DELETE FROM "analytics"."fsexport" WHERE "SyncdBatchId" = %s'


def test_render_refuses_a_field_that_is_no_identifier() -> None:
    with pytest.raises(ConfigError):
        sql.render("SELECT {bad name}", sql.DUCKDB)


def test_sync_row_values_travel_as_parameters() -> None:
    key = BatchKey(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 1, 1, tzinfo=UTC))
    record = SyncRecord(key.id, "segment", key.start, key.end, COMMITTED_AT, operation_id="'; --")
    query = sql.insert_sync_row(sql.POSTGRES, sql.TableNames(), record, 1, 0, "0.1.0")
    assert "'; --" not in query.sql and "'; --" in query.params


def test_a_commit_deletes_earlier_rows_of_its_batch_within_its_window(
    warehouse: DuckDBWarehouse,
    staged_files: StagedFiles,
    peek: Peek,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A segment batch's rows lie in its window (the transform quarantines the others), so the
    delete of its earlier rows is bounded by EventStart, which sort keys and partitions on
    EventStart can prune by (the same shared statement serves PostgreSQL and Redshift)."""
    deletes: list[sql.Query] = []
    original = sql.delete_batch

    def spy(*args: Any, **kwargs: Any) -> list[sql.Query]:
        queries = original(*args, **kwargs)
        deletes.append(queries[0])
        return queries

    monkeypatch.setattr(sql, "delete_batch", spy)
    key = staged_files.key("2024-03-01T00:00:00Z")
    batch = staged_files.write(key, staged_files.rows(key, 3))
    warehouse.commit_batch(staged_files.in_place(batch), record_for(batch))
    warehouse.commit_batch(staged_files.in_place(batch), record_for(batch))
    window = (key.start.replace(tzinfo=None), key.end.replace(tzinfo=None))
    assert [q.params[1:] for q in deletes] == [window, window]
    assert '"EventStart" >= ? AND "EventStart" < ?' in deletes[0].sql
    assert peek("SELECT count(*) FROM fsexport") == [(3,)]


def spy_on(monkeypatch: pytest.MonkeyPatch, name: str) -> list[Any]:
    """The results of `sql.<name>` as the warehouse builds them."""
    built: list[Any] = []
    original = getattr(sql, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        built.append(result)
        return result

    monkeypatch.setattr(sql, name, spy)
    return built


def test_the_consistency_check_and_rollback_bound_segment_rows_by_event_start(
    warehouse: DuckDBWarehouse,
    staged_files: StagedFiles,
    peek: Peek,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Segment rows lie in their windows: the count starts at the first day checked, and a
    rollback deletes up to the end of its days' last window (one closes after midnight)."""
    key = staged_files.key("2024-03-01T23:00:00Z", hours=2)
    batch = staged_files.write(key, staged_files.rows(key, 3))
    warehouse.commit_batch(staged_files.in_place(batch), record_for(batch))
    checks = spy_on(monkeypatch, "inconsistent_days")
    rollbacks = spy_on(monkeypatch, "rollback_days")
    assert warehouse.inconsistent_days(key.day) == []
    assert warehouse.rollback_days(key.day, key.day).rows_deleted == 3
    export_delete = rollbacks[0][0]
    assert checks[0].sql.count('"EventStart" >= ?') == 2 and len(checks[0].params) == 4
    assert export_delete.params[:2] == (datetime(2024, 3, 1), datetime(2024, 3, 2, 1))
    assert peek("SELECT count(*) FROM fsexport") == [(0,)]


def test_a_legacy_batch_is_rolled_back_whole_whatever_its_rows_event_start(
    warehouse: DuckDBWarehouse, staged_files: StagedFiles, peek: Peek
) -> None:
    """A bundle holds whatever was processed in its time (late events too): nothing bounds
    its rows, so its rollback and count are not bounded by EventStart."""
    window = staged_files.key("2024-03-02T00:00:00Z")
    key = BatchKey(window.start, window.end, "legacy", (7,))
    late = staged_files.rows(staged_files.key("2024-02-28T22:00:00Z"), 2)
    batch = staged_files.write(key, [*late, *staged_files.rows(key, 1)])
    warehouse.commit_batch(staged_files.in_place(batch), record_for(batch))
    assert warehouse.inconsistent_days(key.day) == []
    assert warehouse.rollback_days(key.day, key.day).rows_deleted == 3
    assert peek("SELECT count(*) FROM fsexport") == [(0,)]


def test_the_commit_benchmark_runs(tmp_path: Path) -> None:
    """scripts/bench_duckdb_commit.py, which the README quotes, at its smallest."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "bench_duckdb_commit.py"
    out = tmp_path / "result.json"
    argv = ["--windows", "2", "--events", "300", "--rounds", "1", "--work", str(tmp_path / "w")]
    done = subprocess.run(
        [sys.executable, str(script), *argv, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert (result["windows"], sorted(result["ways"])) == (2, ["held open", "open per commit"])
    assert "cost of opening per commit" in done.stdout
