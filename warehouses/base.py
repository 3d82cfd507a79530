"""The two small interfaces every stage and warehouse fills, and their shared vocabulary.

The core (`syncd.pipeline`) only talks to these protocols and branches on `Capabilities`,
never on a warehouse's name. A conformance test runs over every adapter.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import structlog

from syncd.batch import StagedBatch, StagedFormat, SyncRecord
from syncd.errors import ConfigError, TerminalLoadError
from syncd.fields import Column
from syncd.timeutil import UTC

log = structlog.get_logger(__name__)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,126}$")


def validate_identifier(name: str, what: str = "identifier") -> str:
    """Return `name` if it is a plain SQL identifier (letters, digits, underscore), else raise.

    syncd never executes a table, schema or dataset name it has not validated here.
    """
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ConfigError(
            [
                f"{what}: {name!r} is not a valid name: use letters, digits and underscores, "
                "starting with a letter or underscore (at most 127 characters)"
            ]
        )
    return name


def quote_identifier(name: str, quote: str = '"', *, any_text: bool = False) -> str:
    """The one identifier-quoting function: validate, then quote (`"x"` or `` `x` ``).

    With `any_text`, `name` is data rather than a name syncd chose (a JSON key the columnar
    transform reads as a struct field): any text, the quote character doubled."""
    if any_text:
        return f"{quote}{name.replace(quote, quote * 2)}{quote}"
    validate_identifier(name)
    return f"{quote}{name}{quote}"


@dataclass(frozen=True)
class Capabilities:
    """What a warehouse can do; the core decides on these, not on names."""

    staging_formats: tuple[StagedFormat, ...]  # first is preferred
    #: Longest string value a column keeps, in UTF-8 bytes (None: no limit). The transform cuts
    #: longer strings at a character boundary, whatever the staged format, so no load fails on
    #: them; the round-trip check counts such a cut as a documented change.
    max_string_bytes: int | None = None
    #: Longest CustomVars JSON text the column keeps, in UTF-8 bytes (None: no limit). Cut JSON
    #: is not JSON: the transform quarantines a row whose CustomVars is longer.
    max_json_bytes: int | None = None
    #: The text of NULL in staged CSV (written unquoted; strings are always quoted). "" (an
    #: empty field) is NULL to PostgreSQL and DuckDB; a warehouse that reads an empty field as
    #: the empty string (Redshift) names a text no string of syncd's can be.
    csv_null: str = ""
    #: How long the warehouse keeps a UTC day's rows, counted from the day's start (None:
    #: forever). BigQuery drops a partition's rows once its date plus the partition expiration
    #: is past, so a day older than that vanishes as soon as it is loaded: the core plans no
    #: such day, refuses to backfill one and leaves it out of the consistency check.
    retention: timedelta | None = None
    #: The setting that gives `retention`, for messages (e.g. "[bigquery] PartitionExpiration").
    retention_setting: str = ""
    #: The load runs inside syncd's own process (an embedded database such as DuckDB), so its
    #: memory adds to the daemon's: the core never runs it beside a transform, and the daemon's
    #: peak is the larger of the two, not their sum.
    loads_in_process: bool = False


def first_kept_day(capabilities: Capabilities, now: datetime) -> date | None:
    """The first UTC day whose rows the warehouse keeps at `now` (None: it keeps every day).

    Day D is dropped once D's midnight plus the retention is at or before now, so the first
    day kept is the day after the date of (now - retention)."""
    if capabilities.retention is None:
        return None
    return (now.astimezone(UTC) - capabilities.retention).date() + timedelta(days=1)


def check_commit(
    staged: StagedBatch, record: SyncRecord, capabilities: Capabilities, warehouse: str
) -> None:
    """What every `Warehouse.commit_batch` checks first: the sync record is the batch's, and
    the warehouse loads the batch's staged format. Raises TerminalLoadError."""
    batch_id = staged.batch.key.id
    if record.batch_id != batch_id:
        raise TerminalLoadError(
            f"sync record {record.batch_id!r} does not belong to batch {batch_id!r}"
        )
    if staged.batch.format not in capabilities.staging_formats:
        raise TerminalLoadError(f"{warehouse} cannot load staged format {staged.batch.format!r}")


def close_quietly(resource: Any, what: str) -> None:
    """Close a connection or cursor that is being thrown away (broken, or done with): a
    failure to close it is logged, never raised."""
    if resource is None:
        return
    try:
        resource.close()
    except Exception as exc:  # a broken connection's close is not news
        log.debug(f"closing {what} failed", error=str(exc))


@dataclass(frozen=True)
class RollbackResult:
    days: tuple[date, ...]
    rows_deleted: int
    sync_rows_deleted: int


@runtime_checkable
class Stage(Protocol):
    """Where staged files live (local folder, S3, GCS), and small objects such as the
    StorageOnly checkpoint (`warehouses.storage_only` reads and writes it)."""

    def put(self, local_path: Path, name: str) -> str:
        """Store `local_path` as object `name` (FilePrefix applied inside); return its URI."""
        ...

    def delete(self, uri: str) -> None:
        """Remove a staged object; a missing object is not an error."""
        ...

    def uri_for(self, name: str) -> str:
        """Where object `name` is (FilePrefix applied), as `put` returns it: for messages."""
        ...

    def read_object(self, name: str) -> bytes | None:
        """The whole of small object `name` (FilePrefix applied), or None when there is none."""
        ...

    def write_object(self, name: str, data: bytes) -> None:
        """Atomically replace small object `name`: a reader sees the old or the new, whole."""
        ...

    def check(self) -> None:
        """Raise a StageError saying plainly what is wrong (missing bucket, no permission)."""
        ...


@runtime_checkable
class Warehouse(Protocol):
    """A database that holds the export table, the SyncTable and the rejects table."""

    capabilities: Capabilities

    def ensure_tables(self, columns: Sequence[Column]) -> tuple[Column, ...]:
        """Create the tables, or reconcile an existing export table: keep its columns and their
        order, add the missing ones. Return the export table's columns as they now are."""
        ...

    def commit_batch(
        self, staged: StagedBatch, record: SyncRecord, *, replace: bool = False
    ) -> None:
        """Atomically: delete earlier rows of this batch, load it and its rejects, insert the
        sync row. Either all of it happens or none of it.

        With `replace` (a backfill replacing the batch's day), the same transaction also
        deletes the old rows of a segment batch's window: every row with EventStart in the
        window but rows of batches of other days, and the sync rows and rejects of the day's
        segment batches that end in the window (`warehouses.sql.replace_window`; the day's
        windows are replaced in order from its start). So a day is replaced window by window
        and no window is ever left with neither its old nor its new rows. A legacy batch has
        no window: `replace` adds nothing to its commit."""
        ...

    def sync_records(self, since: datetime | None = None) -> list[SyncRecord]:
        """Committed batches (ending after `since`, if given), oldest first."""
        ...

    def inconsistent_days(self, since: date) -> list[date]:
        """UTC days from `since` on whose rows and sync rows disagree."""
        ...

    def rollback_days(
        self, first: date, last: date, *, keep: Collection[str] = ()
    ) -> RollbackResult:
        """Delete the rows and sync rows of days first..last (inclusive) in one transaction.

        The batches named in `keep` stay with their rows and rejects: after a backfill replaced
        a day batch by batch, this removes what its new batches did not replace (the rows and
        sync rows of old batches of another layout, hauser's rows and sync rows of the day)."""
        ...

    def check(self) -> None:
        """Raise a LoadError saying plainly what is wrong (cannot connect, no permission)."""
        ...

    def read_rows(self, batch_id: str) -> list[dict[str, Any]]:
        """The export rows of one batch as stored, for `syncd check --round-trip`: one dict per
        row keyed by column (catalog spelling), values as the warehouse returns them typed:
        int, float, str, aware UTC datetime, JSON columns as JSON text; NULL as None. No
        value passes through a float unless its column is FLOAT."""
        ...

    def drop_tables(self) -> None:
        """Drop the export, sync and rejects tables (and any helper table of theirs) if they
        exist: only ever called on the round trip's scratch tables. Raises a LoadError naming
        what could not be dropped."""
        ...

    def close(self) -> None: ...


class WaitListener(Protocol):
    """Told when a warehouse waits for another process to let go of it, and when it stops."""

    def warehouse_waiting(self, reason: str) -> None:
        """Waiting began: `reason` says for whom and for how long at most, for the status."""
        ...

    def warehouse_free(self, waited_seconds: float) -> None:
        """The wait is over (the warehouse was free, or the wait gave up)."""
        ...


@runtime_checkable
class ReportsWaits(Protocol):
    """Optional: a warehouse that may wait for another process (DuckDB, whose file a reader
    can hold) reports each wait to a listener, and ends it early when `stop` is set."""

    def report_waits(self, listener: WaitListener, stop: threading.Event) -> None: ...


@runtime_checkable
class MakesViews(Protocol):
    """Optional: a SQL warehouse creates or replaces the analysis views over its export table
    (`warehouses.views`: fs_sessions, fs_pageviews, ...) in its own SQL, in one transaction
    where it has them."""

    def create_views(self, people_table: str | None = None) -> None:
        """`people_table`: the people table `fs_users` reads identities from (ExportIndividuals)."""
        ...
