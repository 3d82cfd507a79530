"""Files syncd writes are the owner's alone, and a planted symlink is never written through."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from structlog.testing import capture_logs

from syncd.private_files import open_private_new, private_umask, warn_if_shared


def test_a_planted_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_bytes(b"precious")
    part = tmp_path / "batch.ndjson.gz.part"
    part.symlink_to(target)
    with open_private_new(part) as out:
        out.write(b"download")
    assert (target.read_bytes(), part.is_symlink(), part.read_bytes()) == (
        b"precious",
        False,
        b"download",
    )


def test_a_new_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        with open_private_new(tmp_path / "f") as out:
            out.write(b"x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o600


def test_the_private_umask_is_put_back(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        with private_umask():
            (tmp_path / "inside").mkdir()
        (tmp_path / "after").mkdir()
    finally:
        os.umask(previous)
    modes = [stat.S_IMODE((tmp_path / n).stat().st_mode) for n in ("inside", "after")]
    assert modes == [0o700, 0o755]


def test_a_folder_others_may_write_is_a_warning(tmp_path: Path) -> None:
    shared, private = tmp_path / "shared", tmp_path / "private"
    shared.mkdir()
    private.mkdir()
    shared.chmod(0o777)
    private.chmod(0o700)
    with capture_logs() as logs:
        warn_if_shared(shared, "StateDir")
        warn_if_shared(private, "SaveDir")
    assert [(e["log_level"], e["path"]) for e in logs] == [("warning", str(shared))]
