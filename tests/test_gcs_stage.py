"""GCSStage over the GCS stand-in: objects named by prefix, resumable uploads, the checkpoint,
deletes confined to the stage, and the mapping of Google's errors."""

# ruff: noqa: F811 - fixtures are imported by name from gcp_support

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from gcp_support import gcs_bucket, gcs_emulator, make_stage, object_names  # noqa: F401

from syncd.errors import TerminalStageError
from syncd.timeutil import UTC
from warehouses.base import Stage
from warehouses.gcs import GCSStage
from warehouses.storage_only import CHECKPOINT_NAME, read_checkpoint, write_checkpoint

END = datetime(2024, 3, 1, 1, tzinfo=UTC)


@pytest.fixture
def stage(gcs_bucket: str) -> GCSStage:
    return make_stage(gcs_bucket, "sub/path/hauser-")


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "batch.parquet"
    path.write_bytes(bytes(range(256)) * 4096 * 3)  # 3 MiB: twelve 256 KiB chunks
    return path


def test_fills_the_stage_protocol(stage: GCSStage) -> None:
    assert isinstance(stage, Stage)


def test_put_returns_the_gs_uri_with_the_prefix(stage: GCSStage, big_file: Path) -> None:
    assert stage.put(big_file, "b.parquet") == f"gs://{stage.bucket_name}/sub/path/hauser-b.parquet"


def test_a_chunked_upload_arrives_whole(
    stage: GCSStage, big_file: Path, gcs_emulator: object
) -> None:
    stage.put(big_file, "b.parquet")
    stored = stage._bucket.blob("sub/path/hauser-b.parquet").download_as_bytes()
    assert stored == big_file.read_bytes()


def test_delete_removes_the_object(stage: GCSStage, big_file: Path) -> None:
    stage.delete(stage.put(big_file, "b.parquet"))
    assert object_names(stage.bucket_name) == []


def test_deleting_a_missing_object_is_fine(stage: GCSStage) -> None:
    stage.delete(stage.uri_for("never-staged.parquet"))


def test_delete_refuses_objects_outside_the_stage(stage: GCSStage) -> None:
    with pytest.raises(TerminalStageError, match="not a staged object"):
        stage.delete(f"gs://{stage.bucket_name}/elsewhere/x.parquet")


def test_there_is_no_checkpoint_at_first(stage: GCSStage) -> None:
    assert read_checkpoint(stage) is None


def test_the_checkpoint_reads_back(stage: GCSStage) -> None:
    write_checkpoint(stage, END)
    assert read_checkpoint(stage) == END


def test_the_checkpoint_is_hausers_object(stage: GCSStage) -> None:
    write_checkpoint(stage, END)
    assert object_names(stage.bucket_name) == ["sub/path/hauser-.sync.hauser"]


def test_a_checkpoint_that_is_not_a_time_is_named(stage: GCSStage) -> None:
    stage._bucket.blob(stage.prefix + CHECKPOINT_NAME).upload_from_string(b"yesterday")
    with pytest.raises(TerminalStageError, match="does not hold an RFC 3339 time"):
        read_checkpoint(stage)


def test_check_passes_and_leaves_nothing(stage: GCSStage) -> None:
    stage.check()
    assert object_names(stage.bucket_name) == []


def test_check_names_a_missing_bucket(gcs_emulator: object) -> None:
    with pytest.raises(TerminalStageError, match="'no-such-bucket' does not exist"):
        make_stage("no-such-bucket").check()


def test_a_missing_local_file_is_terminal(stage: GCSStage, tmp_path: Path) -> None:
    with pytest.raises(TerminalStageError, match="cannot upload"):
        stage.put(tmp_path / "gone.parquet", "gone.parquet")
