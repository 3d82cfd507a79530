"""A local folder as the stage, and the StorageOnly checkpoint as hauser kept it.

Layout under `root`: every object at `root/<prefix><name>` (a prefix such as
`hauser-uploads/` makes a sub-folder, `hauser-` a file-name prefix), and the checkpoint at
`root/<prefix>.sync.hauser` holding the RFC 3339 end time, as hauser wrote it.

`put` is atomic: the object appears whole under its name or not at all. On the same
filesystem it hard-links the source (no copy of multi-GB files); elsewhere it copies to a
temporary name, fsyncs and renames. A hard link shares the source's bytes, so the caller must
never rewrite a staged source file in place (the transform always writes a new file). The
source is never moved: it stays where the caller left it until the caller cleans it up.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import tempfile
from datetime import datetime
from pathlib import Path, PurePosixPath

import structlog

from syncd.atomic import atomic_write, fsync_dir, fsync_file, write_atomic
from syncd.errors import StageError, TerminalStageError, TransientStageError
from syncd.timeutil import format_timestamp, parse_timestamp

log = structlog.get_logger(__name__)

#: hauser's checkpoint object name, after the FilePrefix.
CHECKPOINT_NAME = ".sync.hauser"

# OS errors that a later attempt may not meet again (a full disk gets space, a busy device frees).
_TRANSIENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT}
)


def stage_error(exc: OSError, action: str) -> StageError:
    """Translate an OSError into the StageError the core decides on."""
    reason = exc.strerror or str(exc)
    message = f"{action}: {reason}"
    if exc.errno in _TRANSIENT_ERRNOS:
        return TransientStageError(message)
    return TerminalStageError(message)


class LocalStage:
    """Stage files in a local folder; implements `warehouses.base.Stage`."""

    def __init__(self, root: Path | str, prefix: str = "") -> None:
        self.root = Path(root).expanduser().absolute()
        self.prefix = prefix
        self.checkpoint_path = self._path_for(CHECKPOINT_NAME)

    def __repr__(self) -> str:
        return f"LocalStage(root={str(self.root)!r}, prefix={self.prefix!r})"

    def path_for(self, name: str) -> Path:
        """Where object `name` lives: `root/<prefix><name>`."""
        return self._path_for(name)

    def put(self, local_path: Path, name: str) -> str:
        """Store `local_path` as `<prefix><name>` atomically; return its absolute path."""
        target = self._path_for(name)
        source = Path(local_path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists() and os.path.samefile(source, target):
                return str(target)
            fsync_file(source)
            if self._link(source, target):
                fsync_dir(target.parent)
            else:
                with atomic_write(target) as handle, source.open("rb") as src:
                    shutil.copyfileobj(src, handle, length=1024 * 1024)
        except OSError as exc:
            raise stage_error(exc, f"cannot stage {source} as {target}") from exc
        log.debug("staged", uri=str(target))
        return str(target)

    def delete(self, uri: str) -> None:
        """Remove a staged file; a missing file is fine, a path outside the stage is refused."""
        path = Path(uri)
        if not path.is_absolute() or not _is_within(path, self.root):
            raise TerminalStageError(f"refusing to delete {uri!r}: it is not inside {self.root}")
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise stage_error(exc, f"cannot delete {path}") from exc

    def read_checkpoint(self) -> datetime | None:
        """The StorageOnly resume point, or None when no checkpoint exists yet."""
        try:
            text = self.checkpoint_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise stage_error(exc, f"cannot read checkpoint {self.checkpoint_path}") from exc
        try:
            return parse_timestamp(text)
        except ValueError as exc:
            raise TerminalStageError(
                f"checkpoint {self.checkpoint_path} does not hold an RFC 3339 time "
                f"(found {text.strip()[:40]!r}); fix or remove it"
            ) from exc

    def write_checkpoint(self, end: datetime) -> None:
        """Replace the checkpoint atomically (temporary file, fsync, rename, fsync folder)."""
        target = self.checkpoint_path
        try:
            write_atomic(target, format_timestamp(end).encode())
        except OSError as exc:
            raise stage_error(exc, f"cannot write checkpoint {target}") from exc

    def check(self) -> None:
        """The stage folder (and the prefix's sub-folder) exists or can be made, and is writable."""
        folder = self.checkpoint_path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise stage_error(exc, f"stage folder {folder} cannot be created") from exc
        try:
            with tempfile.TemporaryFile(dir=folder) as probe:
                probe.write(b"syncd")
        except OSError as exc:
            raise stage_error(exc, f"stage folder {folder} is not writable") from exc

    def _path_for(self, name: str) -> Path:
        relative = PurePosixPath(self.prefix + name)
        if (
            not name
            or name.startswith("/")
            or relative.is_absolute()
            or ".." in relative.parts
            or "\\" in str(relative)
            or "\x00" in str(relative)
        ):
            raise TerminalStageError(
                f"object name {self.prefix + name!r} must be a relative path inside the stage"
            )
        return self.root.joinpath(*relative.parts)

    @staticmethod
    def _link(source: Path, target: Path) -> bool:
        """Hard-link `source` to `target` atomically; False when linking is not possible here."""
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.link")
        try:
            os.link(source, tmp)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                return False
            raise
        try:
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return True


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.absolute().relative_to(root)
    except ValueError:
        return False
    return ".." not in path.parts
