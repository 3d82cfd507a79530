"""StorageOnlyWarehouse: the checkpoint is the sync point; files are the product."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from syncd.batch import StagedBatch, SyncRecord, TransformedBatch
from syncd.errors import TerminalLoadError, TransientLoadError, TransientStageError
from syncd.fields import export_columns
from syncd.timeutil import UTC
from warehouses.base import Warehouse
from warehouses.local import LocalStage
from warehouses.storage_only import (
    CHECKPOINT_NAME,
    StorageOnlyWarehouse,
    read_checkpoint,
    write_checkpoint,
)

if TYPE_CHECKING:
    from conftest import StagedFiles

DAY1 = date(2024, 3, 1)


@pytest.fixture
def stage(tmp_path: Path) -> LocalStage:
    return LocalStage(tmp_path / "stage", prefix="hauser-uploads/")


@pytest.fixture
def warehouse(stage: LocalStage) -> StorageOnlyWarehouse:
    return StorageOnlyWarehouse(stage)


def stage_batch(stage: LocalStage, staged_files: StagedFiles, start: str) -> StagedBatch:
    key = staged_files.key(start)
    batch = staged_files.write(key, staged_files.rows(key, 2))
    return StagedBatch(batch, stage.put(batch.path, f"{key.id}.parquet"), None)


def record_for(batch: TransformedBatch) -> SyncRecord:
    return SyncRecord(
        batch.key.id, batch.key.source, batch.key.start, batch.key.end, batch.key.end, rows_loaded=2
    )


@pytest.fixture
def committed(
    warehouse: StorageOnlyWarehouse, stage: LocalStage, staged_files: StagedFiles
) -> StagedBatch:
    staged = stage_batch(stage, staged_files, "2024-03-01T05:00:00Z")
    warehouse.commit_batch(staged, record_for(staged.batch))
    return staged


class FailingStage(LocalStage):
    """A stage whose writes of small objects (the checkpoint) fail as a full disk would."""

    def write_object(self, name: str, data: bytes) -> None:
        raise TransientStageError(f"cannot write {name}: No space left on device")


def test_storage_only_fills_the_warehouse_protocol(warehouse: StorageOnlyWarehouse) -> None:
    assert isinstance(warehouse, Warehouse)


def test_every_staging_format_is_accepted(warehouse: StorageOnlyWarehouse) -> None:
    assert warehouse.capabilities.staging_formats == ("parquet", "csv", "ndjson")


def test_ensure_tables_returns_the_columns_unchanged(warehouse: StorageOnlyWarehouse) -> None:
    assert warehouse.ensure_tables(export_columns()) == export_columns()


def test_commit_moves_the_checkpoint_to_the_batch_end(
    committed: StagedBatch, stage: LocalStage
) -> None:
    assert read_checkpoint(stage) == committed.batch.key.end


def test_commit_leaves_the_staged_file_in_place(committed: StagedBatch) -> None:
    assert Path(committed.uri).exists()


def test_sync_records_return_this_process_s_last_commit(
    committed: StagedBatch, warehouse: StorageOnlyWarehouse
) -> None:
    assert warehouse.sync_records() == [record_for(committed.batch)]


def test_after_a_restart_only_the_checkpoint_is_known(
    committed: StagedBatch, stage: LocalStage
) -> None:
    end = committed.batch.key.end
    assert StorageOnlyWarehouse(stage).sync_records() == [
        SyncRecord("checkpoint-20240301T060000Z", "checkpoint", None, end, end)
    ]


def test_a_hauser_checkpoint_is_continued(stage: LocalStage) -> None:
    stage.path_for(CHECKPOINT_NAME).parent.mkdir(parents=True)
    stage.path_for(CHECKPOINT_NAME).write_text("2024-02-29T00:00:00Z")
    records = StorageOnlyWarehouse(stage).sync_records()
    assert [r.end for r in records] == [datetime(2024, 2, 29, tzinfo=UTC)]


def test_no_checkpoint_means_no_records(warehouse: StorageOnlyWarehouse) -> None:
    assert warehouse.sync_records() == []


def test_sync_records_since_the_checkpoint_are_empty(
    committed: StagedBatch, warehouse: StorageOnlyWarehouse
) -> None:
    assert warehouse.sync_records(since=committed.batch.key.end) == []


def test_nothing_is_ever_inconsistent(
    committed: StagedBatch, warehouse: StorageOnlyWarehouse
) -> None:
    assert warehouse.inconsistent_days(DAY1) == []


def test_rollback_moves_the_checkpoint_to_the_first_day_s_start(
    committed: StagedBatch, warehouse: StorageOnlyWarehouse, stage: LocalStage
) -> None:
    warehouse.rollback_days(DAY1, DAY1)
    assert read_checkpoint(stage) == datetime(2024, 3, 1, tzinfo=UTC)


def test_rollback_says_what_it_did(committed: StagedBatch, warehouse: StorageOnlyWarehouse) -> None:
    result = warehouse.rollback_days(DAY1, date(2024, 3, 2))
    assert (result.days, result.rows_deleted, result.sync_rows_deleted) == (
        (DAY1, date(2024, 3, 2)),
        0,
        1,
    )


def test_rollback_keeps_the_staged_files(
    committed: StagedBatch, warehouse: StorageOnlyWarehouse
) -> None:
    warehouse.rollback_days(DAY1, DAY1)
    assert Path(committed.uri).exists()


def test_rollback_never_moves_the_checkpoint_forward(
    committed: StagedBatch, warehouse: StorageOnlyWarehouse, stage: LocalStage
) -> None:
    result = warehouse.rollback_days(date(2024, 3, 2), date(2024, 3, 2))
    assert (read_checkpoint(stage), result.sync_rows_deleted) == (committed.batch.key.end, 0)


def test_rollback_forgets_the_remembered_record(
    committed: StagedBatch, warehouse: StorageOnlyWarehouse
) -> None:
    warehouse.rollback_days(DAY1, DAY1)
    assert [r.source for r in warehouse.sync_records()] == ["checkpoint"]


def test_a_failed_checkpoint_write_stays_transient(
    tmp_path: Path, staged_files: StagedFiles
) -> None:
    stage = FailingStage(tmp_path / "stage")
    staged = stage_batch(stage, staged_files, "2024-03-01T05:00:00Z")
    with pytest.raises(TransientLoadError, match="No space left"):
        StorageOnlyWarehouse(stage).commit_batch(staged, record_for(staged.batch))


def test_check_passes_on_a_writable_folder(
    warehouse: StorageOnlyWarehouse, stage: LocalStage
) -> None:
    warehouse.check()
    assert stage.folder.is_dir()


def test_check_reports_an_unusable_folder_as_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("not a folder")
    with pytest.raises(TerminalLoadError, match="cannot be created"):
        StorageOnlyWarehouse(LocalStage(tmp_path / "blocker" / "stage")).check()


def test_use_start_time_ignores_a_checkpoint_from_an_earlier_run(tmp_path: Path) -> None:
    stage = LocalStage(tmp_path)
    write_checkpoint(stage, datetime(2026, 11, 1, tzinfo=UTC))
    assert StorageOnlyWarehouse(stage, use_start_time=True).sync_records() == []
