"""A local folder as the stage.

Layout under `root`: every object at `root/<prefix><name>` (a prefix such as
`hauser-uploads/` makes a sub-folder, `hauser-` a file-name prefix); the StorageOnly checkpoint
is the small object `.sync.hauser` (`warehouses.storage_only`), as hauser kept it.

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
from pathlib import Path, PurePosixPath

import structlog

from syncd.atomic import atomic_write, fsync_dir, fsync_file, write_atomic
from syncd.errors import StageError, TerminalStageError, TransientStageError

log = structlog.get_logger(__name__)

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
        self.folder = self._path_for("object").parent  # root, or the prefix's sub-folder

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

    def uri_for(self, name: str) -> str:
        """The absolute path of object `name`, as `put` returns it."""
        return str(self._path_for(name))

    def read_object(self, name: str) -> bytes | None:
        """The bytes of `<prefix><name>`, or None when there is no such file."""
        path = self._path_for(name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise stage_error(exc, f"cannot read {path}") from exc

    def write_object(self, name: str, data: bytes) -> None:
        """Replace `<prefix><name>` atomically (temporary file, fsync, rename, fsync folder)."""
        target = self._path_for(name)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, data)
        except OSError as exc:
            raise stage_error(exc, f"cannot write {target}") from exc

    def check(self) -> None:
        """The stage folder (and the prefix's sub-folder) exists or can be made, and is writable."""
        folder = self.folder
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


# --- the plugin declarations (warehouses.plugin): the [local] section, the stage and the
# --- "local" provider (files only) -------------------------------------------------------------

from dataclasses import dataclass as _dataclass  # noqa: E402
from typing import TYPE_CHECKING as _TYPE_CHECKING  # noqa: E402

from syncd.config.keys import Key, Kind  # noqa: E402
from warehouses.plugin import (  # noqa: E402
    ConfigSection,
    SettleContext,
    StagePlugin,
    WarehousePlugin,
)

if _TYPE_CHECKING:
    from syncd.config.model import Settings


@_dataclass(frozen=True)
class LocalSettings:
    save_dir: Path
    use_start_time: bool


def _local_deprecated(ctx: SettleContext) -> None:
    if ctx.explicit("[local] StartTime"):
        ctx.warn(
            "[local] StartTime is deprecated and ignored (as in hauser); use the top-level "
            "StartTime, with [local] UseStartTime = true to force it"
        )


SECTION = ConfigSection(
    "local",
    'The local staging folder (Provider "local", "duckdb" and "postgres").',
    (
        Key(
            "local",
            "SaveDir",
            Kind.PATH,
            "syncd-data/files",
            'Folder of staged files for Provider "local" (where they stay), "duckdb" and '
            '"postgres".',
            hauser=True,
            new_meaning="hauser had no default and needed the folder to exist",
        ),
        Key(
            "local",
            "UseStartTime",
            Kind.BOOL,
            False,
            "Start from StartTime even when a StorageOnly checkpoint exists (as hauser did for "
            'Provider "local").',
            hauser=True,
        ),
        Key(
            "local",
            "StartTime",
            Kind.TIMESTAMP,
            None,
            "Unused since hauser v1.",
            deprecated="ignored; use the top-level StartTime",
            hauser=True,
        ),
    ),
    LocalSettings,
    derive=_local_deprecated,
)


def _build_stage(settings: Settings) -> LocalStage:
    return LocalStage(settings.section("local").save_dir, settings.file_prefix)


def _describe(settings: Settings) -> str:
    return f"files in {settings.section('local').save_dir.resolve()}"


STAGE = StagePlugin("local", SECTION, _build_stage, folder_keys=("SaveDir",), describe=_describe)

PLUGIN = WarehousePlugin(
    "local",
    "files in [local] SaveDir only",
    stage="local",
    aliases=("local",),
    storage_only=True,
)
