"""LocalStage: atomic puts under the prefix, deletes, and hauser's checkpoint file."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest

from syncd.errors import StageError, TerminalStageError, TransientStageError
from syncd.timeutil import UTC
from warehouses.base import Stage
from warehouses.local import LocalStage, stage_error
from warehouses.storage_only import CHECKPOINT_NAME, read_checkpoint, write_checkpoint

END = datetime(2024, 3, 1, 6, 0, tzinfo=UTC)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "spool" / "batch.parquet"
    path.parent.mkdir()
    path.write_bytes(b"PAR1 staged bytes PAR1")
    return path


@pytest.fixture
def stage(tmp_path: Path) -> LocalStage:
    return LocalStage(tmp_path / "stage", prefix="hauser-uploads/")


def test_local_stage_fills_the_stage_protocol(stage: LocalStage) -> None:
    assert isinstance(stage, Stage)


def test_put_returns_the_absolute_path_under_the_prefix(stage: LocalStage, source: Path) -> None:
    uri = stage.put(source, "segment-1.parquet")
    assert uri == str(stage.root / "hauser-uploads" / "segment-1.parquet")


def test_put_stores_the_same_bytes(stage: LocalStage, source: Path) -> None:
    uri = stage.put(source, "segment-1.parquet")
    assert Path(uri).read_bytes() == source.read_bytes()


def test_put_keeps_the_source(stage: LocalStage, source: Path) -> None:
    stage.put(source, "segment-1.parquet")
    assert source.exists()


def test_put_with_a_file_name_prefix(tmp_path: Path, source: Path) -> None:
    uri = LocalStage(tmp_path / "stage", prefix="fs-").put(source, "a.parquet")
    assert uri == str(tmp_path / "stage" / "fs-a.parquet")


def test_put_replaces_an_earlier_object_whole(stage: LocalStage, source: Path) -> None:
    stage.put(source, "segment-1.parquet")
    source.unlink()
    source.write_bytes(b"second version")
    uri = stage.put(source, "segment-1.parquet")
    assert Path(uri).read_bytes() == b"second version"


def test_put_leaves_no_temporary_files(stage: LocalStage, source: Path) -> None:
    stage.put(source, "segment-1.parquet")
    stage.put(source, "segment-1.parquet")
    assert sorted(p.name for p in (stage.root / "hauser-uploads").iterdir()) == [
        "segment-1.parquet"
    ]


def test_put_of_a_file_onto_itself_is_a_no_op(tmp_path: Path, source: Path) -> None:
    stage = LocalStage(source.parent)
    uri = stage.put(source, source.name)
    assert Path(uri).read_bytes() == b"PAR1 staged bytes PAR1"


def test_put_copies_when_hard_links_are_impossible(
    stage: LocalStage, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cross_device(src: object, dst: object) -> None:
        raise OSError(18, "Invalid cross-device link")  # EXDEV

    monkeypatch.setattr(os, "link", cross_device)
    uri = stage.put(source, "segment-1.parquet")
    assert not os.path.samefile(uri, source) and Path(uri).read_bytes() == source.read_bytes()


def test_put_of_a_missing_file_is_terminal(stage: LocalStage, tmp_path: Path) -> None:
    with pytest.raises(TerminalStageError, match="cannot stage"):
        stage.put(tmp_path / "nope.parquet", "x.parquet")


@pytest.mark.parametrize("name", ["../escape.parquet", "/etc/passwd", "", "a/../../b"])
def test_put_refuses_names_that_leave_the_stage(stage: LocalStage, source: Path, name: str) -> None:
    with pytest.raises(TerminalStageError, match="inside the stage"):
        stage.put(source, name)


def test_delete_removes_the_object(stage: LocalStage, source: Path) -> None:
    uri = stage.put(source, "segment-1.parquet")
    stage.delete(uri)
    assert not Path(uri).exists()


def test_delete_of_a_missing_object_is_fine(stage: LocalStage) -> None:
    stage.delete(str(stage.path_for("never-staged.parquet")))
    assert not stage.path_for("never-staged.parquet").exists()


def test_delete_refuses_paths_outside_the_stage(stage: LocalStage, source: Path) -> None:
    with pytest.raises(TerminalStageError, match="not inside"):
        stage.delete(str(source))


def test_no_checkpoint_reads_as_none(stage: LocalStage) -> None:
    assert read_checkpoint(stage) is None


def test_checkpoint_round_trips(stage: LocalStage) -> None:
    write_checkpoint(stage, END)
    assert read_checkpoint(stage) == END


def test_checkpoint_is_hauser_s_file_and_format(stage: LocalStage) -> None:
    write_checkpoint(stage, END)
    assert (stage.root / "hauser-uploads" / ".sync.hauser").read_text() == "2024-03-01T06:00:00Z"


def test_checkpoint_without_prefix_sits_in_the_root(tmp_path: Path) -> None:
    write_checkpoint(LocalStage(tmp_path), END)
    assert (tmp_path / ".sync.hauser").exists()


def test_checkpoint_written_by_hauser_is_read(stage: LocalStage) -> None:
    stage.path_for(CHECKPOINT_NAME).parent.mkdir(parents=True)
    stage.path_for(CHECKPOINT_NAME).write_text("2024-03-01T07:00:00+01:00\n")
    assert read_checkpoint(stage) == END


def test_checkpoint_rewrite_replaces_the_old_one(stage: LocalStage) -> None:
    write_checkpoint(stage, datetime(2024, 1, 1, tzinfo=UTC))
    write_checkpoint(stage, END)
    assert read_checkpoint(stage) == END


def test_corrupt_checkpoint_is_a_terminal_error_naming_the_file(stage: LocalStage) -> None:
    stage.path_for(CHECKPOINT_NAME).parent.mkdir(parents=True)
    stage.path_for(CHECKPOINT_NAME).write_text("yesterday")
    with pytest.raises(TerminalStageError, match=r"\.sync\.hauser"):
        read_checkpoint(stage)


def test_check_creates_the_folder(stage: LocalStage) -> None:
    stage.check()
    assert (stage.root / "hauser-uploads").is_dir()


def test_check_fails_when_the_folder_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where the folder should be")
    with pytest.raises(StageError, match="cannot be created"):
        LocalStage(tmp_path / "blocker" / "stage").check()


def test_disk_full_is_transient() -> None:
    assert isinstance(
        stage_error(OSError(28, "No space left on device"), "put"), TransientStageError
    )


def test_permission_denied_is_terminal() -> None:
    assert isinstance(
        stage_error(PermissionError(13, "Permission denied"), "put"), TerminalStageError
    )


def test_repr_shows_where_files_go(stage: LocalStage) -> None:
    assert repr(stage) == f"LocalStage(root={str(stage.root)!r}, prefix='hauser-uploads/')"
