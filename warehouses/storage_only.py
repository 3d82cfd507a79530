"""StorageOnly mode (hauser's `StorageOnly`, `S3Only`, `GCSOnly`): files, no database.

The staged files are the product; the "warehouse" only keeps the sync point, as hauser did:
the checkpoint object `<FilePrefix>.sync.hauser` next to the files, holding the end of the
last committed batch as RFC 3339 text. This module reads and writes it (`read_checkpoint`,
`write_checkpoint`) through the stage's plain small-object calls, so every stage keeps it alike. Files are named by the batch key, so a re-run overwrites rather than
duplicates, and a commit is one atomic checkpoint write after the files are staged.

What is and is not known in this mode:
- known: the resume point (the checkpoint), and everything about batches this process
  committed since it started;
- not known after a restart: start, row counts, bytes and URIs of earlier batches (there is
  no manifest: `Stage` has no way to read one back, and the checkpoint format stays hauser's).
  `sync_records` then returns one synthesized record whose `end` is the checkpoint and whose
  `committed_at` is unknown and reported as that same end;
- nothing to compare rows against, so `inconsistent_days` is always empty, and a rollback
  moves the checkpoint back without deleting files (the re-export overwrites them);
- a backfill replaces files in place: its commits (`replace`) overwrite a window's files and
  never move the checkpoint back, and its leftover step (`rollback_days` with `keep`) has
  nothing to delete.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import date, datetime
from typing import Any

import structlog

from syncd.batch import StagedBatch, SyncRecord
from syncd.errors import (
    LoadError,
    StageError,
    TerminalLoadError,
    TerminalStageError,
    TransientLoadError,
)
from syncd.fields import Column
from syncd.timeutil import format_timestamp, parse_timestamp
from warehouses.base import Capabilities, RollbackResult, Stage
from warehouses.sql import day_start, days_between

log = structlog.get_logger(__name__)

#: `SyncRecord.source` of a record known only from the checkpoint.
CHECKPOINT_SOURCE = "checkpoint"

#: hauser's checkpoint object name, after the FilePrefix.
CHECKPOINT_NAME = ".sync.hauser"


def read_checkpoint(stage: Stage) -> datetime | None:
    """The StorageOnly resume point in `stage`, or None when there is no checkpoint yet."""
    data = stage.read_object(CHECKPOINT_NAME)
    if data is None:
        return None
    text = data.decode("utf-8", errors="replace")
    try:
        return parse_timestamp(text)
    except ValueError as exc:
        raise TerminalStageError(
            f"checkpoint {stage.uri_for(CHECKPOINT_NAME)} does not hold an RFC 3339 time "
            f"(found {text.strip()[:40]!r}); fix or remove it"
        ) from exc


def write_checkpoint(stage: Stage, end: datetime) -> None:
    """Atomically replace the checkpoint in `stage` with `end`, as hauser wrote it."""
    stage.write_object(CHECKPOINT_NAME, format_timestamp(end).encode())


def _load_error(exc: StageError, action: str) -> LoadError:
    """The Warehouse protocol speaks LoadError; keep the stage's verdict on retrying."""
    kind = TransientLoadError if exc.transient else TerminalLoadError
    return kind(f"{action}: {exc}")


class StorageOnlyWarehouse:
    """Implements `warehouses.base.Warehouse` over a `Stage`, with a checkpoint as sync point."""

    capabilities = Capabilities(
        staging_formats=("parquet", "csv", "ndjson"),
    )

    def __init__(self, stage: Stage, *, use_start_time: bool = False) -> None:
        self.stage = stage
        # hauser's [local] UseStartTime: ignore a checkpoint this process did not write, so
        # every start begins at StartTime.
        self.use_start_time = use_start_time
        self._last: SyncRecord | None = None  # the last batch committed by this process

    def __repr__(self) -> str:
        return f"StorageOnlyWarehouse(stage={self.stage!r})"

    def ensure_tables(self, columns: Sequence[Column]) -> tuple[Column, ...]:
        """No tables: the files carry exactly the columns they were written with."""
        return tuple(columns)

    def commit_batch(
        self, staged: StagedBatch, record: SyncRecord, *, replace: bool = False
    ) -> None:
        """The files are already staged: move the checkpoint to the batch's end. With `replace`
        (a backfill of a past day) the files replaced the window's old ones (same names) and
        the checkpoint only ever moves forward."""
        if replace:
            current = self._checkpoint()
            if current is not None and current >= record.end:
                log.info(
                    "batch replaced",
                    batch=record.batch_id,
                    staged_uri=staged.uri,
                    rows=staged.batch.rows,
                )
                return
        try:
            write_checkpoint(self.stage, record.end)
        except StageError as exc:
            raise _load_error(exc, f"cannot commit batch {record.batch_id}") from exc
        self._last = record
        log.debug(  # the pipeline logs "batch committed" (once per batch)
            "checkpoint written",
            batch=record.batch_id,
            checkpoint=format_timestamp(record.end),
            staged_uri=staged.uri,
            rows=staged.batch.rows,
        )

    def sync_records(self, since: datetime | None = None) -> list[SyncRecord]:
        """At most one record: the checkpoint (see the module notes for what it holds)."""
        end = self._last.end if self.use_start_time and self._last else None
        if not self.use_start_time:
            end = self._checkpoint()
        if end is None or (since is not None and end <= since):
            return []
        if self._last is not None and self._last.end == end:
            return [self._last]
        return [
            SyncRecord(
                batch_id=f"{CHECKPOINT_SOURCE}-{end.strftime('%Y%m%dT%H%M%SZ')}",
                source=CHECKPOINT_SOURCE,
                start=None,
                end=end,
                committed_at=end,
            )
        ]

    def inconsistent_days(self, since: date) -> list[date]:
        """Files alone cannot disagree with a sync table: always empty."""
        return []

    def rollback_days(
        self, first: date, last: date, *, keep: Collection[str] = ()
    ) -> RollbackResult:
        """Move the checkpoint back to the start of `first` when it is later; files stay.

        With `keep` (a backfill replaced the days in place) there is nothing to remove: the
        new files overwrote the old ones, and the checkpoint stays."""
        days = days_between(first, last)
        if keep:
            return RollbackResult(days=days, rows_deleted=0, sync_rows_deleted=0)
        target = day_start(first)
        end = self._checkpoint()
        if end is None or end <= target:
            log.info("rollback: checkpoint already before the first day", first=str(first))
            return RollbackResult(days=days, rows_deleted=0, sync_rows_deleted=0)
        try:
            write_checkpoint(self.stage, target)
        except StageError as exc:
            raise _load_error(exc, f"cannot roll back to {first}") from exc
        self._last = None
        log.warning(
            "rollback: checkpoint moved back; staged files are kept and the re-export "
            "overwrites them, from the first day through the old checkpoint",
            old_checkpoint=format_timestamp(end),
            new_checkpoint=format_timestamp(target),
            first=str(first),
            last=str(last),
        )
        return RollbackResult(days=days, rows_deleted=0, sync_rows_deleted=1)

    def check(self) -> None:
        try:
            self.stage.check()
        except StageError as exc:
            raise _load_error(exc, "stage check failed") from exc

    def close(self) -> None:
        """Nothing to release: the stage holds no open handles."""

    def _checkpoint(self) -> datetime | None:
        try:
            return read_checkpoint(self.stage)
        except StageError as exc:
            raise _load_error(exc, "cannot read the checkpoint") from exc

    # --- the round trip (`syncd check --round-trip`) ---------------------------------------

    def read_rows(self, batch_id: str) -> list[dict[str, Any]]:
        """Nothing is loaded in this mode, so there are no rows to read back."""
        raise TerminalLoadError(
            "StorageOnly mode loads no rows into a warehouse: there are none to read back"
        )

    def drop_tables(self) -> None:
        """Nothing to drop: this mode creates no tables."""
