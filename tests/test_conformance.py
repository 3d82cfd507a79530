"""What every warehouse adapter promises the core, run over each adapter and its stage.

A new adapter joins by adding one `pytest.param` to ADAPTERS: a function that takes a scratch
folder and returns the warehouse with the stage it reads from (skip inside it when the
adapter's service is not available here).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import aws_support
import gcp_support
import pytest
import snowflake_support

from syncd.batch import StagedBatch, StagedFormat, SyncRecord, TransformedBatch
from syncd.errors import TerminalLoadError
from syncd.fields import export_columns
from syncd.timeutil import UTC
from warehouses.base import Stage, Warehouse
from warehouses.duckdb import DuckDBWarehouse
from warehouses.local import LocalStage
from warehouses.sql import day_start
from warehouses.storage_only import StorageOnlyWarehouse

if TYPE_CHECKING:
    from conftest import StagedFiles


@dataclass
class Adapter:
    warehouse: Warehouse
    stage: Stage


def duckdb_over_local(folder: Path) -> Adapter:
    return Adapter(DuckDBWarehouse(folder / "syncd.duckdb"), LocalStage(folder / "stage"))


def storage_only_over_local(folder: Path) -> Adapter:
    stage = LocalStage(folder / "stage", prefix="hauser-uploads/")
    return Adapter(StorageOnlyWarehouse(stage), stage)


def postgres_over_local(folder: Path) -> Adapter:
    return Adapter(*aws_support.postgres_over_local(folder))


def storage_only_over_s3(folder: Path) -> Adapter:
    return Adapter(*aws_support.storage_only_over_s3(folder))


def bigquery_over_gcs(folder: Path) -> Adapter:
    return Adapter(*gcp_support.bigquery_over_gcs(folder))


def storage_only_over_gcs(folder: Path) -> Adapter:
    return Adapter(*gcp_support.storage_only_over_gcs(folder))


def redshift_over_s3(folder: Path) -> Adapter:
    return Adapter(*aws_support.redshift_over_s3(folder))


def snowflake_over_s3(folder: Path) -> Adapter:
    return Adapter(*snowflake_support.snowflake_over_s3(folder))


def snowflake_over_internal(folder: Path) -> Adapter:
    return Adapter(*snowflake_support.snowflake_over_internal(folder))


ADAPTERS = [
    pytest.param(duckdb_over_local, id="duckdb"),
    pytest.param(storage_only_over_local, id="storage-only"),
    pytest.param(postgres_over_local, id="postgres"),
    pytest.param(storage_only_over_s3, id="storage-only-s3"),
    pytest.param(redshift_over_s3, id="redshift"),
    pytest.param(snowflake_over_s3, id="snowflake"),
    pytest.param(snowflake_over_internal, id="snowflake-internal"),
    pytest.param(bigquery_over_gcs, id="bigquery"),
    pytest.param(storage_only_over_gcs, id="storage-only-gcs"),
]


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Adapter]:
    make: Callable[[Path], Adapter] = request.param
    made = make(tmp_path)
    made.warehouse.ensure_tables(export_columns())
    yield made
    made.warehouse.close()


@pytest.fixture
def commit(adapter: Adapter, staged_files: StagedFiles) -> Callable[..., TransformedBatch]:
    """Transform (fake), stage through the adapter's stage, and commit one batch."""

    def run(
        start: str,
        count: int = 3,
        fmt: StagedFormat | None = None,
        *,
        hours: int = 1,
        replace: bool = False,
        settle_delta: int | None = None,
    ) -> TransformedBatch:
        key = staged_files.key(start, hours)
        if settle_delta is not None:  # a settle (SettleAfter) of the window
            key = dataclasses.replace(key, settle=True)
        chosen = fmt or adapter.warehouse.capabilities.staging_formats[0]
        rejects = [{"position": count, "reason": "not an object", "raw": "42"}]
        batch = staged_files.write(
            key,
            staged_files.rows(key, count),
            chosen,
            rejects=rejects,
            csv_null=adapter.warehouse.capabilities.csv_null,
        )
        assert batch.rejects_path is not None
        staged = StagedBatch(
            batch=batch,
            uri=adapter.stage.put(batch.path, batch.path.name),
            rejects_uri=adapter.stage.put(batch.rejects_path, batch.rejects_path.name),
        )
        record = SyncRecord(
            batch_id=key.id,
            source=key.source,
            start=key.start,
            end=key.end,
            committed_at=key.end + timedelta(hours=1),
            rows_loaded=batch.rows,
            rows_rejected=batch.rejected,
            staged_uri=staged.uri,
            settled_at=None if settle_delta is None else key.end + timedelta(hours=24),
            settle_delta=settle_delta or 0,
        )
        adapter.warehouse.commit_batch(staged, record, replace=replace)
        return batch

    return run


def test_fills_both_protocols(adapter: Adapter) -> None:
    assert isinstance(adapter.warehouse, Warehouse) and isinstance(adapter.stage, Stage)


def test_ensure_tables_keeps_every_requested_column_in_order(adapter: Adapter) -> None:
    names = [c.name for c in adapter.warehouse.ensure_tables(export_columns())]
    assert [n for n in names if n in {c.name for c in export_columns()}] == [
        c.name for c in export_columns()
    ]


def test_a_fresh_warehouse_has_no_sync_point(adapter: Adapter) -> None:
    assert adapter.warehouse.sync_records() == []


def test_check_passes(adapter: Adapter) -> None:
    adapter.warehouse.check()
    adapter.stage.check()


@pytest.mark.parametrize("fmt", ["parquet", "csv", "ndjson"])
def test_a_commit_sets_the_resume_point(
    adapter: Adapter, commit: Callable[..., TransformedBatch], fmt: StagedFormat
) -> None:
    if fmt not in adapter.warehouse.capabilities.staging_formats:
        pytest.skip(f"{fmt} is not a staging format of this adapter")
    batch = commit("2024-03-01T00:00:00Z", fmt=fmt)
    assert adapter.warehouse.sync_records()[-1].end == batch.key.end


def test_the_resume_point_is_the_latest_commit(
    adapter: Adapter, commit: Callable[..., TransformedBatch]
) -> None:
    commit("2024-03-01T00:00:00Z")
    second = commit("2024-03-01T01:00:00Z")
    assert adapter.warehouse.sync_records()[-1].end == second.key.end


def test_a_recommit_does_not_duplicate(
    adapter: Adapter, commit: Callable[..., TransformedBatch]
) -> None:
    commit("2024-03-01T00:00:00Z")
    batch = commit("2024-03-01T00:00:00Z")
    assert [r.end for r in adapter.warehouse.sync_records()] == [batch.key.end]


def test_committed_days_are_consistent(
    adapter: Adapter, commit: Callable[..., TransformedBatch]
) -> None:
    batch = commit("2024-03-01T00:00:00Z")
    assert adapter.warehouse.inconsistent_days(batch.key.day) == []


def test_rollback_moves_the_resume_point_before_the_day(
    adapter: Adapter, commit: Callable[..., TransformedBatch]
) -> None:
    commit("2024-03-01T00:00:00Z")
    batch = commit("2024-03-01T01:00:00Z")
    adapter.warehouse.rollback_days(batch.key.day, batch.key.day)
    assert adapter.warehouse.sync_records(since=day_start(batch.key.day)) == []


def test_rollback_keeps_earlier_days(
    adapter: Adapter, commit: Callable[..., TransformedBatch]
) -> None:
    earlier = commit("2024-02-29T23:00:00Z")
    later = commit("2024-03-01T00:00:00Z")
    adapter.warehouse.rollback_days(later.key.day, later.key.day)
    assert [r.end for r in adapter.warehouse.sync_records()] == [earlier.key.end]


def test_rollback_reports_the_days(
    adapter: Adapter, commit: Callable[..., TransformedBatch]
) -> None:
    batch = commit("2024-03-01T00:00:00Z")
    result = adapter.warehouse.rollback_days(batch.key.day, batch.key.day)
    assert result.days == (batch.key.day,)


def test_sync_records_are_utc(adapter: Adapter, commit: Callable[..., TransformedBatch]) -> None:
    commit("2024-03-01T00:00:00Z")
    assert {r.end.tzinfo for r in adapter.warehouse.sync_records()} == {UTC}


# --- a backfill: commits that replace their window, then the day's leftovers ------------------


def ids(adapter: Adapter) -> list[str]:
    return [r.batch_id for r in adapter.warehouse.sync_records()]


def rows_of(adapter: Adapter, batch: TransformedBatch) -> list[datetime]:
    return sorted(r["EventStart"] for r in adapter.warehouse.read_rows(batch.key.id))


def test_a_replacing_commit_takes_the_place_of_finer_batches_inside_its_window(
    adapter: Adapter, commit: Callable[..., TransformedBatch]
) -> None:
    old = [commit("2024-03-01T00:00:00Z"), commit("2024-03-01T01:00:00Z")]
    new = commit("2024-03-01T00:00:00Z", count=2, hours=2, replace=True)
    if isinstance(adapter.warehouse, StorageOnlyWarehouse):
        assert [r.end for r in adapter.warehouse.sync_records()] == [new.key.end]
        return
    assert ids(adapter) == [new.key.id]
    assert [rows_of(adapter, b) for b in old] == [[], []]
    assert len(rows_of(adapter, new)) == 2


def test_a_replacing_commit_deletes_a_coarser_batchs_rows_in_its_window_only(
    adapter: Adapter, commit: Callable[..., TransformedBatch]
) -> None:
    """The old batch's rows after the window stay until the day's leftovers go."""
    old = commit("2024-03-01T00:00:00Z", count=62, hours=2)  # rows at 00:00 .. 01:01
    new = commit("2024-03-01T00:00:00Z", count=2, replace=True)
    if isinstance(adapter.warehouse, StorageOnlyWarehouse):
        assert [r.end for r in adapter.warehouse.sync_records()] == [old.key.end]
        return
    assert sorted(ids(adapter)) == sorted([old.key.id, new.key.id])
    hour = old.key.start + timedelta(hours=1)
    assert rows_of(adapter, old) == [hour, hour + timedelta(minutes=1)]
    assert len(rows_of(adapter, new)) == 2
    # its sync row counts the rows it still holds: the day is consistent mid-way
    assert [
        r.rows_loaded for r in adapter.warehouse.sync_records() if r.batch_id == old.key.id
    ] == [2]
    assert adapter.warehouse.inconsistent_days(old.key.day) == []


def test_the_replacing_commit_of_a_coarser_batchs_last_window_takes_its_sync_row(
    adapter: Adapter, commit: Callable[..., TransformedBatch]
) -> None:
    """Windows replaced in order: the old batch's rows went window by window, and its sync row
    with the last of them, so the day is consistent at every commit."""
    old = commit("2024-03-01T00:00:00Z", count=62, hours=2)
    first = commit("2024-03-01T00:00:00Z", count=2, replace=True)
    second = commit("2024-03-01T01:00:00Z", count=1, replace=True)
    if isinstance(adapter.warehouse, StorageOnlyWarehouse):
        assert [r.end for r in adapter.warehouse.sync_records()] == [old.key.end]
        return
    assert sorted(ids(adapter)) == sorted([first.key.id, second.key.id])
    assert rows_of(adapter, old) == []
    assert adapter.warehouse.inconsistent_days(old.key.day) == []


def test_a_replacing_commit_keeps_other_windows_and_never_moves_the_sync_point_back(
    adapter: Adapter, commit: Callable[..., TransformedBatch]
) -> None:
    before = commit("2024-02-29T23:00:00Z")
    commit("2024-03-01T00:00:00Z")
    after = commit("2024-03-01T01:00:00Z")
    new = commit("2024-03-01T00:00:00Z", count=2, replace=True)
    assert max(r.end for r in adapter.warehouse.sync_records()) == after.key.end
    if isinstance(adapter.warehouse, StorageOnlyWarehouse):
        return
    assert sorted(ids(adapter)) == sorted([before.key.id, new.key.id, after.key.id])
    assert [len(rows_of(adapter, b)) for b in (before, new, after)] == [3, 2, 3]


def test_rollback_keeping_the_new_batches_removes_only_the_leftovers(
    adapter: Adapter, commit: Callable[..., TransformedBatch]
) -> None:
    old = commit("2024-03-01T00:00:00Z", count=62, hours=2)
    new = [
        commit("2024-03-01T00:00:00Z", count=2, replace=True),
        commit("2024-03-01T01:00:00Z", count=1, replace=True),
    ]
    result = adapter.warehouse.rollback_days(
        new[0].key.day, new[0].key.day, keep=[b.key.id for b in new]
    )
    if isinstance(adapter.warehouse, StorageOnlyWarehouse):
        assert (result.rows_deleted, result.sync_rows_deleted) == (0, 0)
        assert [r.end for r in adapter.warehouse.sync_records()] == [old.key.end]
        return
    assert sorted(ids(adapter)) == sorted(b.key.id for b in new)
    assert rows_of(adapter, old) == []
    assert [len(rows_of(adapter, b)) for b in new] == [2, 1]
    assert adapter.warehouse.inconsistent_days(old.key.day) == []


# --- the round trip's two methods: read a batch back, drop the tables --------------------------


def test_a_settle_replaces_its_window_and_its_sync_row_says_so(
    adapter: Adapter, commit: Callable[..., TransformedBatch]
) -> None:
    first = commit("2024-03-01T00:00:00Z", count=3)
    settle = commit("2024-03-01T00:00:00Z", count=5, replace=True, settle_delta=2)
    if isinstance(adapter.warehouse, StorageOnlyWarehouse):
        return  # no SyncTable: settling needs a warehouse (SettleAfter refuses StorageOnly)
    (record,) = adapter.warehouse.sync_records()
    assert record.batch_id == settle.key.id == first.key.id + "-settle"
    assert (record.settled_at, record.settle_delta) == (
        settle.key.end + timedelta(hours=24),
        2,
    )
    assert record.settled_at is not None and record.settled_at.tzinfo == UTC
    assert rows_of(adapter, first) == [] and len(rows_of(adapter, settle)) == 5
    assert adapter.warehouse.inconsistent_days(date(2024, 3, 1)) == []


def test_a_first_load_is_not_settled(
    adapter: Adapter, commit: Callable[..., TransformedBatch]
) -> None:
    commit("2024-03-01T00:00:00Z")
    if isinstance(adapter.warehouse, StorageOnlyWarehouse):
        return
    assert [(r.settled_at, r.settle_delta) for r in adapter.warehouse.sync_records()] == [(None, 0)]


def test_read_rows_gives_a_batchs_rows_typed(
    adapter: Adapter, commit: Callable[..., TransformedBatch]
) -> None:
    if isinstance(adapter.warehouse, StorageOnlyWarehouse):
        pytest.skip("StorageOnly loads no rows (see the test below)")
    batch = commit("2024-03-01T00:00:00Z", count=2)
    commit("2024-03-01T01:00:00Z", count=1)  # another batch's row is not read
    rows = sorted(adapter.warehouse.read_rows(batch.key.id), key=lambda r: r["IndvId"])
    assert [
        (
            r["IndvId"],
            r["EventStart"],
            r["EventType"],
            r["EventCumulativeLayoutShift"],
            json.loads(r["CustomVars"]),
            r["SyncdBatchId"],
            r["UserEmail"],
        )
        for r in rows
    ] == [
        (
            5_000_000_000_000_000 + n,
            batch.key.start + timedelta(minutes=n),
            "click",
            0.25,
            {"user_plan_str": "pro", "evt_total_real": 9.5},
            batch.key.id,
            None,
        )
        for n in range(2)
    ]


def test_read_rows_keeps_types_exactly(
    adapter: Adapter, commit: Callable[..., TransformedBatch]
) -> None:
    if isinstance(adapter.warehouse, StorageOnlyWarehouse):
        pytest.skip("StorageOnly loads no rows")
    batch = commit("2024-03-01T00:00:00Z", count=1)
    (row,) = adapter.warehouse.read_rows(batch.key.id)
    assert (
        type(row["IndvId"]),
        type(row["EventCumulativeLayoutShift"]),
        type(row["CustomVars"]),
        row["EventStart"].tzinfo,
    ) == (int, float, str, UTC)


def test_drop_tables_leaves_no_sync_point_and_can_run_twice(
    adapter: Adapter, commit: Callable[..., TransformedBatch]
) -> None:
    if isinstance(adapter.warehouse, StorageOnlyWarehouse):
        pytest.skip("StorageOnly creates no tables")
    commit("2024-03-01T00:00:00Z")
    adapter.warehouse.drop_tables()
    adapter.warehouse.drop_tables()
    assert adapter.warehouse.sync_records() == []


def test_storage_only_has_no_rows_to_read_and_no_tables_to_drop(adapter: Adapter) -> None:
    if not isinstance(adapter.warehouse, StorageOnlyWarehouse):
        pytest.skip("for StorageOnly")
    adapter.warehouse.drop_tables()
    with pytest.raises(TerminalLoadError, match="StorageOnly mode loads no rows"):
        adapter.warehouse.read_rows("segment-20240301T000000Z-20240301T010000Z")
