"""Batch keys and the records that travel with a batch through the pipeline.

A batch key is deterministic: the same window (or the same legacy bundles) always gives the
same key, which names the staged objects, warehouse job ids and the sync row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Literal

from syncd.fields import Column

SourceKind = Literal["segment", "legacy"]
StagedFormat = Literal["parquet", "csv", "ndjson"]

#: Ends the id of a settle's batch (`BatchKey.settle`).
SETTLE_SUFFIX = "-settle"


def _stamp(dt: datetime) -> str:
    return dt.strftime("%Y%m%dT%H%M%SZ")


@dataclass(frozen=True)
class Bundle:
    """A legacy export bundle: events with EventStart in [start, stop). Ids exceed 2^53."""

    id: int
    start: datetime
    stop: datetime


@dataclass(frozen=True, order=True)
class BatchKey:
    """One unit of loading: the window [start, end) of a source, or a group of legacy bundles."""

    start: datetime
    end: datetime
    source: SourceKind = "segment"
    bundle_ids: tuple[int, ...] = ()
    #: A committed window exported again once SettleAfter old (`syncd.planner.plan_settles`):
    #: its own id (a fresh export, fresh staged names and BigQuery job ids), and its commit
    #: replaces the window's earlier rows.
    settle: bool = False

    @property
    def id(self) -> str:
        """Stable text id, safe as an object name, a BigQuery job id and a SQL value."""
        base = f"{self.source}-{_stamp(self.start)}-{_stamp(self.end)}"
        if self.bundle_ids:
            digest = hashlib.sha1(",".join(map(str, self.bundle_ids)).encode()).hexdigest()
            base += f"-{digest[:12]}"
        if self.settle:
            base += SETTLE_SUFFIX
        return base

    @property
    def day(self) -> date:
        """The UTC day this batch belongs to: the unit of rollback."""
        return self.start.date()

    def __str__(self) -> str:
        return self.id


@dataclass(frozen=True)
class TransformedBatch:
    """What the transform made of one downloaded batch, on local disk."""

    key: BatchKey
    path: Path  # the staged-format file
    format: StagedFormat
    columns: tuple[Column, ...]  # the file's columns, in order
    rows: int  # rows written to `path`
    rejected: int  # rows quarantined in `rejects_path`
    rejects_path: Path | None  # NDJSON: {"batch_id", "position", "reason", "raw"} per line
    source_bytes: int  # bytes of the downloaded (compressed) export


@dataclass(frozen=True)
class StagedBatch:
    """A transformed batch after staging: where the warehouse reads it from."""

    batch: TransformedBatch
    uri: str  # file path, s3://..., gs://...
    rejects_uri: str | None


@dataclass(frozen=True)
class SyncRecord:
    """One row of the SyncTable: a committed batch.

    Rows continued from a hauser SyncTable have only `end` (BundleEndTime) and `committed_at`.
    """

    batch_id: str
    source: str
    start: datetime | None
    end: datetime
    committed_at: datetime
    bundle_ids: tuple[int, ...] = ()
    operation_id: str = ""
    rows_loaded: int = 0
    rows_rejected: int = 0
    bytes: int = 0
    staged_uri: str = ""
    syncd_version: str = ""
    #: When a settle (`BatchKey.settle`) replaced the window; None for a first load.
    settled_at: datetime | None = None
    #: Rows the settle added (negative: removed) against the load it replaced.
    settle_delta: int = 0
    extra: dict[str, str] = field(default_factory=dict)
