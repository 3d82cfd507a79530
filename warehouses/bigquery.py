"""Google BigQuery, loaded with load jobs from GCS (Provider "gcp").

Tables. The export table is partitioned by DAY on EventStart (a partition expires
`PartitionExpiration` after its day's start, when set: `capabilities.retention` tells the core,
which then loads, backfills and checks no older day) and clustered as configured; CustomVars is a JSON column.
An existing hauser table (ingestion-time partitioned, every column NULLABLE, CustomVars a
STRING) is continued as it is: its columns keep their types and order, missing export fields
are added with a schema update (which BigQuery applies in place). On such a table syncd's rows
land in the partition of their load day, as any DML insert into an ingestion-time table does.
The SyncTable and the rejects table are reconciled the same way (hauser's ID, Processed,
BundleEndTime first).

A commit, for batch B:
1. load jobs from gs:// with an explicit schema put the staged file (and its rejects) into the
   per-batch staging tables `<export>__syncd_<B>` (WRITE_TRUNCATE, so a re-run replaces them);
2. B's sync row is written, through query parameters, into a one-row staging table;
3. one multi-statement transaction deletes B's earlier rows, rejects and sync row (in a
   backfill also the old rows of B's window: `_REPLACE_WINDOW`), inserts from the staging
   tables and inserts the sync row (it reads every value from the staging tables, so the
   script itself needs no parameters);
4. the staging tables are dropped (a failure there is only logged: the commit stands).
A crash before 3 leaves nothing visible; 3 is atomic; after 3 only the staging tables remain.
Scratch tables (a batch's staging tables) expire a day after they are made
(`SCRATCH_EXPIRATION`: set at creation, or right after the load job that made them), and at
start-up (`ensure_tables`) this export table's scratch tables older than `SCRATCH_SWEEP_AGE`
are dropped: a crash leaves nothing for good, and a running peer's young ones are kept.

Load job ids are deterministic: they derive from the table, the batch key and a fingerprint of
the batch's content (export operation, bytes, rows). Before submitting, the job is looked up:
a running job is waited for, and a finished one whose staging table holds the batch's rows is
attached to instead of loading twice (this is what a restart after a crash finds). A 409 on
submission means the job exists: attach. A finished job that failed, or whose staging table is
gone, cannot be re-run under its id: the next id (`<id>_1`, `<id>_2`, ...) is used.

One writer: the lease is the one row of `<SyncTable>_lease`, created with its row by one
CREATE TABLE AS SELECT (of two creators, one gets 409), then taken, renewed and released by
single-statement conditional UPDATEs with parameters, which BigQuery serialises on a table (one
that fails on a concurrent update is followed by a read, which decides). Once this object holds
the lease, the commit transaction ends with a check of that row that raises ERROR() (rolling the
transaction back) when another holder has taken it over (`syncd.lease` tells the rules).

Partition filters. Every statement that reads or deletes export rows filters EventStart with
constant bounds, so BigQuery eliminates partitions (it bills every byte scanned, and a table
with `require_partition_filter`, which `RequirePartitionFilter` sets, refuses any other): a
commit deletes its batch's earlier rows within the batch's EventStart range (a segment's
window; a legacy bundle's range read from its staging table, as nothing else bounds a bundle),
the consistency check counts rows from its first day on, and a rollback deletes within its days
(extended to the end of their last window). With legacy batches the consistency check and a
rollback cannot be bounded and read the whole table (a `require_partition_filter` table
refuses them).

Location. Every job (load, query) is submitted, and every job lookup made, in the dataset's
location: `Location` when set (it must be the dataset's: a mismatch is refused plainly),
otherwise the location read from the dataset. BigQuery finds a job of a single-region dataset
only when asked with its location (jobs.get without one answers 404), so a lookup without it
would take a finished load job for a missing one, and its 409 on resubmission for a job that
"conflicts but cannot be found".

Errors: `map_bigquery_error` is the one place google-cloud-bigquery's exceptions become
LoadErrors. 429, 5xx and the reasons rateLimitExceeded, quotaExceeded, backendError,
internalError are transient (API calls are also retried with backoff inside the client, up to
`retry_deadline`); other errors are terminal and carry the job's error list.

Timeouts. Every HTTP request is bounded by `request_timeout` (the client's own default is
none: a request to an endpoint that accepts the connection and never answers, as behind a
dropped network path, would block syncd forever, whatever the retry deadline, since a retry
deadline is only checked between attempts). A timed-out request is a transient error, retried
like a refused connection. Waiting for a job is bounded by `job_timeout` in all, polled with
requests of at most `request_timeout` each.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import re
import string
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import replace as dataclass_replace
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

import syncd
from syncd.batch import BatchKey, StagedBatch, StagedFormat, SyncRecord
from syncd.errors import LoadError, TerminalLoadError, TransientLoadError
from syncd.fields import BATCH_ID, LOADED_AT, Column, FieldType
from syncd.lease import LeaseHolder, held_by_error, owner_is_gone
from syncd.timeutil import UTC, utcnow
from warehouses import sql
from warehouses.base import Capabilities, RollbackResult, quote_identifier, validate_identifier
from warehouses.plugin import lazy_import

if TYPE_CHECKING:
    from google.api_core import exceptions as api_exceptions
    from google.api_core.retry import Retry
    from google.auth import exceptions as auth_exceptions
    from google.cloud import bigquery
else:  # the gcp extra is imported when first used, not when the plugin is loaded
    api_exceptions = lazy_import("google.api_core.exceptions")
    auth_exceptions = lazy_import("google.auth.exceptions")

    def Retry(*args: Any, **kwargs: Any) -> Any:
        from google.api_core.retry import Retry

        return Retry(*args, **kwargs)


log = structlog.get_logger(__name__)

RETRY_DEADLINE = 600.0  # seconds a retried API call may take in all
REQUEST_TIMEOUT = 120.0  # seconds one HTTP request may take (connect, read)
JOB_TIMEOUT = 3600.0  # seconds to wait for one load or query job
MAX_JOB_ID_SUFFIX = 50  # reloads of one batch content before giving up
#: Scratch tables (a batch's staging tables) expire this long after they
#: are made: a crash cannot leave them forever.
SCRATCH_EXPIRATION = timedelta(days=1)
#: At start-up, scratch tables of this export table older than this are dropped: far longer
#: than a commit may take (`JOB_TIMEOUT` per job), so a running peer's are never touched.
SCRATCH_SWEEP_AGE = timedelta(hours=6)

_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_TRANSIENT_REASONS = frozenset(
    {
        "rateLimitExceeded",
        "quotaExceeded",
        "backendError",
        "internalError",
        "jobBackendError",
        "jobInternalError",
        "tableUnavailable",
    }
)
_CONCURRENT_UPDATE = re.compile(r"concurrent update|aborted due to concurrent", re.IGNORECASE)

#: BigQuery column types of the FieldTypes.
BQ_TYPES: dict[FieldType, str] = {
    FieldType.INT64: "INT64",
    FieldType.FLOAT: "FLOAT64",
    FieldType.STRING: "STRING",
    FieldType.TIMESTAMP: "TIMESTAMP",
    FieldType.JSON: "JSON",
}
_FIELD_TYPES: dict[str, FieldType] = {
    "INTEGER": FieldType.INT64,
    "INT64": FieldType.INT64,
    "FLOAT": FieldType.FLOAT,
    "FLOAT64": FieldType.FLOAT,
    "NUMERIC": FieldType.FLOAT,
    "BIGNUMERIC": FieldType.FLOAT,
    "TIMESTAMP": FieldType.TIMESTAMP,
    "DATETIME": FieldType.TIMESTAMP,
    "JSON": FieldType.JSON,
}
#: The staged formats BigQuery loads for syncd. Not CSV: a CSV load reads an empty field as
#: NULL (nullMarker defaults to the empty string), and a custom nullMarker makes empty fields
#: of other types errors while a quoted string equal to the marker is not documented either
#: way: NULL and "" could not be kept apart (docs/cloud-conformance.md).
_SOURCE_FORMATS: dict[StagedFormat, str] = {
    "parquet": "PARQUET",
    "ndjson": "NEWLINE_DELIMITED_JSON",
}
#: How each staged format carries a FieldType, where it differs from BQ_TYPES: Parquet holds
#: naive UTC timestamps (BigQuery's DATETIME) and JSON as text.
_STAGED_TYPES: dict[StagedFormat, dict[FieldType, str]] = {
    "parquet": {FieldType.TIMESTAMP: "DATETIME", FieldType.JSON: "STRING"},
    "ndjson": {},
}
#: Staged type -> target type: the SELECT expression that converts.
_CONVERSIONS: dict[tuple[str, str], str] = {
    ("DATETIME", "TIMESTAMP"): "TIMESTAMP({column})",
    ("STRING", "JSON"): "PARSE_JSON({column})",
    ("JSON", "STRING"): "TO_JSON_STRING({column})",
}
#: The rejects file: one object per rejected row (see `syncd.batch.TransformedBatch`).
_REJECTS_FILE = (
    ("batch_id", "STRING"),
    ("position", "INT64"),
    ("reason", "STRING"),
    ("raw", "STRING"),
)

# -- SQL: constant templates; `_render` quotes every other field as a column name -------------

_COMMIT = """BEGIN TRANSACTION;
DELETE FROM {export} WHERE {SyncdBatchId} IN (SELECT {SyncdBatchId} FROM {row}) AND {rows_in};
DELETE FROM {rejects} WHERE {SyncdBatchId} IN (SELECT {SyncdBatchId} FROM {row});
DELETE FROM {sync} WHERE {SyncdBatchId} IN (SELECT {SyncdBatchId} FROM {row});
{replace}INSERT INTO {export} ({targets}) SELECT {expressions} FROM {data} AS s CROSS JOIN {row} AS v;
{insert_rejects}INSERT INTO {sync} ({sync_columns}) SELECT {sync_columns} FROM {row};
{fence}COMMIT TRANSACTION;"""
# A backfill's commit (`replace`) of window [start, end) of day [lo, hi) also deletes the
# window's old rows (see `warehouses.sql.replace_window`, the same rule): the rejects and sync
# rows of the day's segment batches that end in the window, then the rows dated in it but
# those of batches of other days. Bounds are TIMESTAMP literals (`_timestamp`), as in the
# rollback.
_ENDING_IN_WINDOW = (
    "{SyncdSource} = 'segment' AND {BatchStart} >= {lo} AND {BatchStart} < {end} "
    "AND {BundleEndTime} > {start} AND {BundleEndTime} <= {end} AND {SyncdBatchId} IS NOT NULL"
)
# The day's segment batches that go on after the window (a coarser old layout): their
# RowsLoaded is lowered by their rows in the window, so the day stays consistent mid-way.
_GOING_ON = (
    "{SyncdSource} = 'segment' AND {BatchStart} >= {lo} AND {BatchStart} < {end} "
    "AND {BundleEndTime} > {end} AND {SyncdBatchId} IS NOT NULL"
)
_REPLACE_WINDOW = """DELETE FROM {rejects} WHERE {SyncdBatchId} IN (SELECT {SyncdBatchId} FROM {sync} WHERE {inside});
DELETE FROM {sync} WHERE {inside};
UPDATE {sync} AS s SET {RowsLoaded} = s.{RowsLoaded} - (SELECT COUNT(*) FROM {export} AS e WHERE e.{SyncdBatchId} = s.{SyncdBatchId} AND {rows_in}) WHERE {going_on};
DELETE FROM {export} WHERE {rows_in} AND ({SyncdBatchId} IS NULL OR {SyncdBatchId} NOT IN (SELECT {SyncdBatchId} FROM {sync} WHERE {SyncdBatchId} IS NOT NULL AND ({BatchStart} < {lo} OR {BatchStart} >= {hi})));
"""
_INSERT_REJECTS = (
    "INSERT INTO {rejects} ({SyncdBatchId}, {Position}, {Reason}, {Raw}, {RejectedAt}) "
    "SELECT v.{SyncdBatchId}, r.{position}, r.{reason}, r.{raw}, v.{Processed} "
    "FROM {rejects_data} AS r CROSS JOIN {row} AS v;\n"
)
_INSERT_ROW = "INSERT INTO {table} ({columns}) VALUES ({parameters})"
_SELECT_SYNC_ROWS = "SELECT {columns} FROM {sync}{where} ORDER BY {BundleEndTime}, {Processed}"
_AFTER = " WHERE {BundleEndTime} > @since"

# A day disagrees when it holds rows of a batch without a sync row (dated by EventStart), or
# a sync row whose RowsLoaded differs from its rows present (dated by BatchStart).
_INCONSISTENT_DAYS = (
    "SELECT DISTINCT x.day FROM ("
    "SELECT CAST(e.{EventStart} AS DATE) AS day FROM {export} AS e "
    "WHERE e.{SyncdBatchId} IS NOT NULL AND e.{EventStart} >= @lo "
    "AND NOT EXISTS (SELECT 1 FROM {sync} AS s WHERE s.{SyncdBatchId} = e.{SyncdBatchId}) "
    "UNION DISTINCT "
    "SELECT CAST(s.{BatchStart} AS DATE) AS day FROM {sync} AS s "
    "LEFT JOIN (SELECT {SyncdBatchId} AS batch_id, COUNT(*) AS n FROM {export} "
    "WHERE {SyncdBatchId} IN (SELECT {SyncdBatchId} FROM {sync} WHERE {BatchStart} >= @lo)"
    "{rows_after_lo} GROUP BY {SyncdBatchId}) AS c ON c.batch_id = s.{SyncdBatchId} "
    "WHERE s.{SyncdBatchId} IS NOT NULL AND s.{BatchStart} >= @lo "
    "AND COALESCE(c.n, 0) <> COALESCE(s.{RowsLoaded}, 0)"
    ") AS x ORDER BY x.day"
)

# Rollback of days [lo, hi). The bounds are TIMESTAMP literals made from datetimes
# (`_timestamp`): BigQuery eliminates partitions only on constant filters, and the emulator
# ignores parameters inside scripts. {rows_in} bounds the rows of the days' batches.
_BATCHES_IN_DAYS = "SELECT s.{SyncdBatchId} FROM {sync} AS s WHERE s.{BatchStart} >= {lo} AND s.{BatchStart} < {hi}{kept}"
_NOT_KEPT = " AND s.{SyncdBatchId} NOT IN ({kept})"
_NULL_OR_NOT_KEPT = " AND ({SyncdBatchId} IS NULL OR {SyncdBatchId} NOT IN ({kept}))"
_ROLLBACK_EXPORT_WHERE = (
    "{rows_in} AND ({SyncdBatchId} IN ({batches_in_days}) "
    "OR ({EventStart} >= {lo} AND {EventStart} < {hi} "
    "AND ({SyncdBatchId} IS NULL OR {SyncdBatchId} NOT IN "
    "(SELECT {SyncdBatchId} FROM {sync} WHERE {SyncdBatchId} IS NOT NULL))))"
)
_ROLLBACK_SYNC_WHERE = (
    "(({BatchStart} >= {lo} AND {BatchStart} < {hi}) "
    "OR ({BatchStart} IS NULL AND {BundleEndTime} > {lo} AND {BundleEndTime} <= {hi})){kept}"
)
_ROWS_IN = "{EventStart} >= {lo} AND {EventStart} < {hi}"
_STAGED_RANGE = "SELECT MIN({EventStart}), MAX({EventStart}) FROM {data}"
_ROLLBACK = """BEGIN TRANSACTION;
DELETE FROM {export} WHERE {export_where};
DELETE FROM {rejects} WHERE {SyncdBatchId} IN ({batches_in_days});
DELETE FROM {sync} WHERE {sync_where};
COMMIT TRANSACTION;"""
_COUNT_WHERE = "SELECT COUNT(*) FROM {table} WHERE {where}"

# The lease row. Its name and the holder id are checked plain words, so the script's fence can
# carry them as literals (scripts take no parameters on the emulator).
_NEVER = "TIMESTAMP '1970-01-01 00:00:00+00'"
_LEASE_CREATE = (
    "CREATE TABLE {lease} AS SELECT {name} AS {Name}, '' AS {HolderId}, '' AS {Holder}, "
    "'' AS {Host}, CAST(0 AS INT64) AS {Pid}, {never} AS {StartedAt}, {never} AS {AcquiredAt}, "
    "{never} AS {ExpiresAt}"
)
_LEASE_SET = (
    "UPDATE {lease} SET {HolderId} = @holder_id, {Holder} = @holder, {Host} = @host, "
    "{Pid} = @pid, {StartedAt} = @started_at, {AcquiredAt} = @now, {ExpiresAt} = @expires "
    "WHERE {Name} = @name "
)
_LEASE_TAKE = _LEASE_SET + "AND ({HolderId} = @holder_id OR {ExpiresAt} < @now)"
_LEASE_TAKE_FROM = _LEASE_SET + "AND {HolderId} = @previous"
_LEASE_RENEW = (
    "UPDATE {lease} SET {ExpiresAt} = @expires WHERE {Name} = @name AND {HolderId} = @holder_id"
)
_LEASE_RELEASE = (
    "UPDATE {lease} SET {HolderId} = '', {Holder} = '', {ExpiresAt} = {never} "
    "WHERE {Name} = @name AND {HolderId} = @holder_id"
)
_LEASE_READ = (
    "SELECT {HolderId}, {Holder}, {ExpiresAt}, {Host}, {Pid}, {StartedAt} FROM {lease} "
    "WHERE {Name} = @name"
)
_LEASE_LOST = "syncd writer lease lost"
_LEASE_FENCE = (
    "SELECT IF(EXISTS(SELECT 1 FROM {lease} WHERE {Name} = {name} AND {HolderId} = {holder_id}), "
    "1, ERROR({lost}));\n"
)
_HOLDER_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_PROBE = "SELECT 1"


def _render(template: str, **fragments: str) -> str:
    """Fill a constant template: named fragments as given, every other field a quoted column."""
    values: dict[str, str] = {}
    for _, name, _, _ in string.Formatter().parse(template):
        if name is None or name in values:
            continue
        values[name] = fragments[name] if name in fragments else quote_identifier(name, "`")
    return template.format_map(values)


def _columns(names: Iterable[str], alias: str = "") -> str:
    return ", ".join(f"{alias}{quote_identifier(n, '`')}" for n in names)


# -- errors -----------------------------------------------------------------------------------


def _reasons(exc: BaseException) -> set[str]:
    errors = getattr(exc, "errors", None) or []
    return {str(e.get("reason", "")) for e in errors if isinstance(e, Mapping)}


def is_transient(exc: BaseException) -> bool:
    """Rate and quota limits, server errors, dropped connections, timeouts."""
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        if exc.code in _TRANSIENT_STATUS or _reasons(exc) & _TRANSIENT_REASONS:
            return True
        return bool(_CONCURRENT_UPDATE.search(exc.message or ""))
    if isinstance(
        exc,
        (
            api_exceptions.RetryError,
            auth_exceptions.TransportError,
            concurrent.futures.TimeoutError,
            ConnectionError,
            TimeoutError,
        ),
    ):
        return True
    try:
        import requests
    except ImportError:  # pragma: no cover - the client depends on requests
        return False
    return isinstance(exc, (requests.ConnectionError, requests.Timeout))


def default_retry(deadline: float | None = None) -> Retry:
    """Backoff on transient API errors (not on failed jobs) for at most `deadline` seconds
    (default `RETRY_DEADLINE`)."""
    return Retry(
        predicate=is_transient,
        initial=1.0,
        maximum=32.0,
        multiplier=2.0,
        timeout=RETRY_DEADLINE if deadline is None else deadline,
    )


def map_bigquery_error(exc: Exception, action: str) -> LoadError:
    """The one place google-cloud-bigquery's exceptions become syncd's LoadError."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    details = [
        f"{e.get('reason', '')}: {e.get('message', '')}".strip(": ")
        + (f" (at {e['location']})" if e.get("location") else "")
        for e in (getattr(exc, "errors", None) or [])
        if isinstance(e, Mapping)
    ]
    details = [d for d in details if d and d not in message]
    text = f"{action}: {message}" + "".join(f"\n  - {d}" for d in details[:10])
    if is_transient(exc):
        return TransientLoadError(text)
    return TerminalLoadError(text)


_MAPPED = (concurrent.futures.TimeoutError, ConnectionError, TimeoutError)


def _requests_errors() -> tuple[type[Exception], ...]:
    """The drivers' errors (imported only once one is raised: the gcp extra is optional)."""
    google = (
        api_exceptions.GoogleAPICallError,
        api_exceptions.RetryError,
        auth_exceptions.GoogleAuthError,
    )
    try:
        import requests
    except ImportError:  # pragma: no cover
        return google
    return (*google, requests.RequestException)


# -- names ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StagingTables:
    """The per-batch staging tables of one batch: data, rejects and the sync row."""

    data: str
    rejects: str
    row: str


def staging_tables(export_table: str, batch_id: str) -> StagingTables:
    """Deterministic staging table names; long batch ids are shortened with a digest."""
    slug = re.sub(r"[^A-Za-z0-9_]", "_", batch_id)
    base = f"{export_table}__syncd_{slug}"
    if len(base) > 100:
        base = f"{export_table[:60]}__syncd_{hashlib.sha1(batch_id.encode()).hexdigest()[:24]}"
    names = StagingTables(data=f"{base}_data", rejects=f"{base}_rejects", row=f"{base}_row")
    for name in (names.data, names.rejects, names.row):
        validate_identifier(name, "staging table")
    return names


def load_job_id(dataset: str, export_table: str, record: SyncRecord, part: str, rows: int) -> str:
    """`syncd_<dataset>_<table>_<batch>_<part>_<fingerprint>`: the same for the same content."""
    content = f"{record.operation_id}|{record.bytes}|{rows}|{record.bundle_ids}"
    fingerprint = hashlib.sha1(content.encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9_-]", "_", record.batch_id)
    return f"syncd_{dataset}_{export_table}_{slug}_{part}_{fingerprint}"[:1000]


# -- the warehouse ----------------------------------------------------------------------------


class BigQueryWarehouse:
    """Implements `warehouses.base.Warehouse` on a BigQuery dataset, loading from GCS."""

    capabilities = Capabilities(
        staging_formats=("parquet", "ndjson"),  # not CSV: see _SOURCE_FORMATS
        transactional=True,
        json_type=True,
        remote_stage=True,
    )

    def __init__(
        self,
        project: str,
        dataset: str,
        export_table: str = "fsexport",
        sync_table: str = "fssync",
        rejects_table: str = "fsrejects",
        *,
        client: bigquery.Client | None = None,
        location: str = "",
        partition_expiration: timedelta = timedelta(0),
        clustering: Sequence[str] = (),
        require_partition_filter: bool = False,
        endpoint_url: str = "",
        retry: Retry | None = None,
        job_timeout: float = JOB_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
        lease_clock: Callable[[], datetime] = utcnow,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.project = project
        self.dataset = validate_identifier(dataset, "[bigquery] Dataset")
        self.tables = sql.TableNames(export=export_table, sync=sync_table, rejects=rejects_table)
        self.location = location or None
        self._job_location: str | None = None
        self.partition_expiration = partition_expiration
        self.capabilities = self._with_retention(partition_expiration)
        self.clustering = tuple(validate_identifier(c, "[bigquery] Clustering") for c in clustering)
        self.require_partition_filter = require_partition_filter
        self.retry = retry or default_retry()
        self.job_timeout = job_timeout
        self.request_timeout = request_timeout
        self._client = client or _make_client(project, endpoint_url, self.location)
        self._export_types: dict[str, FieldType] = {}
        self.lease_table = validate_identifier(f"{sync_table}_lease", "lease table")
        self._lease_clock = lease_clock
        self._clock = clock
        self._lease_holder: LeaseHolder | None = None

    def __repr__(self) -> str:
        return (
            f"BigQueryWarehouse(project={self.project!r}, dataset={self.dataset!r}, "
            f"tables={self.tables!r})"
        )

    # --- Warehouse ---------------------------------------------------------------------------

    def ensure_tables(self, columns: Sequence[Column]) -> tuple[Column, ...]:
        """Create the tables, or add the columns an existing table lacks; the export columns."""
        self._check_dataset()
        export = self._reconcile(self.tables.export, sql.with_required(columns), export=True)
        self._reconcile(self.tables.sync, sql.SYNC_COLUMNS)
        self._reconcile(self.tables.rejects, sql.REJECTS_COLUMNS)
        self._export_types = {c.name.lower(): c.type for c in export}
        self.capabilities = self._with_retention(self._export_retention())
        self._sweep_scratch()
        return export

    def commit_batch(
        self, staged: StagedBatch, record: SyncRecord, *, replace: bool = False
    ) -> None:
        """Load into staging tables, then one transaction replaces the batch (with `replace`,
        also the old rows of its window: `_REPLACE_WINDOW`); drop staging."""
        batch = staged.batch
        batch_id = batch.key.id
        if record.batch_id != batch_id:
            raise TerminalLoadError(
                f"sync record {record.batch_id!r} does not belong to batch {batch_id!r}"
            )
        if batch.format not in self.capabilities.staging_formats:
            raise TerminalLoadError(f"BigQuery cannot load staged format {batch.format!r}")
        _require_gcs(staged.uri)
        if not self._export_types:
            self._export_types = {
                c.name.lower(): c.type for c in self._table_columns(self.tables.export)
            }
        names = staging_tables(self.tables.export, batch_id)
        action = f"commit batch {batch_id}"
        data_schema = [(c.name, _staged_type(batch.format, c.type)) for c in batch.columns]
        self._load(
            staged.uri,
            names.data,
            data_schema,
            batch.format,
            load_job_id(self.dataset, self.tables.export, record, "data", batch.rows),
            batch.rows,
        )
        has_rejects = staged.rejects_uri is not None
        if staged.rejects_uri is not None:
            _require_gcs(staged.rejects_uri)
            self._load(
                staged.rejects_uri,
                names.rejects,
                list(_REJECTS_FILE),
                "ndjson",
                load_job_id(self.dataset, self.tables.export, record, "rejects", batch.rejected),
                batch.rejected,
            )
        values = sql.insert_sync_row(
            sql.DUCKDB, self.tables, record, batch.rows, batch.rejected, syncd.__version__
        ).params
        self._write_row(names.row, sql.SYNC_COLUMNS, values)
        rows_in = self._batch_rows_in(batch.key, names.data, action)
        script = self._commit_script(
            batch.columns,
            data_schema,
            names,
            has_rejects,
            rows_in,
            self._replace_window(batch.key) if replace else "",
        )
        try:
            self._query(script, (), action)
        except LoadError as exc:
            if self._lease_holder is not None and _LEASE_LOST in str(exc):
                self._drop(names.data, names.rejects, names.row)
                raise self._lease_refusal(action, self._lease_holder) from exc
            raise
        self._drop(names.data, names.rejects, names.row)

    def sync_records(self, since: datetime | None = None) -> list[SyncRecord]:
        """Committed batches ending after `since`, oldest first; none before the first commit."""
        present = [c.name for c in self._table_columns(self.tables.sync)]
        if not present:
            return []
        have = {n.lower() for n in present}
        selected = ", ".join(
            quote_identifier(c.name, "`")
            if c.name.lower() in have
            else f"CAST(NULL AS {BQ_TYPES[c.type]}) AS {quote_identifier(c.name, '`')}"
            for c in sql.SYNC_COLUMNS
        )
        where = _render(_AFTER) if since is not None else ""
        text = _render(
            _SELECT_SYNC_ROWS, columns=selected, sync=self._q(self.tables.sync), where=where
        )
        params = [("since", "TIMESTAMP", since)] if since is not None else []
        rows = self._query(text, params, "read sync rows")
        return [sql.record_from_row(row) for row in rows]

    def inconsistent_days(self, since: date) -> list[date]:
        """Days from `since` whose rows and sync rows disagree.

        The rows counted per batch are bounded by EventStart >= `since` (a filter BigQuery can
        eliminate partitions with) when every batch since then is a segment export, whose rows
        lie in its window; a legacy bundle holds whatever was processed in its time, so with
        legacy batches the count reads the whole table."""
        if not self._table_columns(self.tables.sync) or not self._table_columns(self.tables.export):
            return []
        lo = sql.day_start(since)
        bounded = sql.only_segment_batches(self.sync_records(since=lo), lo)
        text = _render(
            _INCONSISTENT_DAYS,
            export=self._q(self.tables.export),
            sync=self._q(self.tables.sync),
            rows_after_lo=_render(" AND {EventStart} >= @lo") if bounded else "",
        )
        rows = self._query(text, [("lo", "TIMESTAMP", lo)], "check days")
        return [row[0] for row in rows]

    def rollback_days(
        self, first: date, last: date, *, keep: Collection[str] = ()
    ) -> RollbackResult:
        """Delete the rows, rejects and sync rows of days first..last in one transaction, but
        the batches named in `keep` (each a checked plain word, written as a literal).

        Every statement over the export table is bounded by EventStart: from the first day's
        start to the end of the last day or of the days' last window, whichever is later (a
        window may close after midnight); unbounded only when the days hold legacy batches."""
        if last < first:
            raise TerminalLoadError(f"cannot roll back: last day {last} is before {first}")
        lo, hi = sql.day_start(first), sql.day_start(last + timedelta(1))
        rows_end = sql.segment_rows_end(self.sync_records(since=lo), lo, hi)
        rows_in = "TRUE" if rows_end is None else _rows_in(lo, rows_end)
        names = {
            "export": self._q(self.tables.export),
            "sync": self._q(self.tables.sync),
            "rejects": self._q(self.tables.rejects),
            "lo": _timestamp(lo),
            "hi": _timestamp(hi),
        }
        kept = ", ".join(_literal(k) for k in keep)
        batches = _render(
            _BATCHES_IN_DAYS, kept=_render(_NOT_KEPT, kept=kept) if kept else "", **names
        )
        export_where = _render(
            _ROLLBACK_EXPORT_WHERE, batches_in_days=batches, rows_in=rows_in, **names
        )
        sync_where = _render(
            _ROLLBACK_SYNC_WHERE,
            kept=_render(_NULL_OR_NOT_KEPT, kept=kept) if kept else "",
            **names,
        )
        action = f"roll back {first}..{last}"
        # counted first: one writer, so nothing changes between the count and the delete
        rows_deleted = self._count(names["export"], export_where, action)
        sync_rows_deleted = self._count(names["sync"], sync_where, action)
        script = _render(
            _ROLLBACK,
            export_where=export_where,
            sync_where=sync_where,
            batches_in_days=batches,
            **names,
        )
        self._query(script, (), action)
        return sql.rolled_back(first, last, rows_deleted, sync_rows_deleted, kept=len(keep))

    def check(self) -> None:
        """The dataset exists and a query job can run."""
        self._check_dataset()
        self._query(_PROBE, (), "run a query")

    # --- LeasedWarehouse ----------------------------------------------------------------------

    def acquire_lease(self, holder: LeaseHolder, ttl: timedelta) -> None:
        """Take the writer lease of this SyncTable (or a stale one); LockedError names the
        live holder. From now on every commit checks that the lease is still `holder`'s."""
        if not _HOLDER_ID.fullmatch(holder.id):
            raise TerminalLoadError(f"lease holder id {holder.id!r} is not a plain word")
        self._create_lease_table()
        now = self._lease_clock()
        params = self._holder_params(holder, now, ttl)
        self._lease_update(_LEASE_TAKE, params, "take the writer lease")
        owner = self._lease_owner()
        if owner is not None and owner[0] != holder.id and owner_is_gone(owner):
            log.warning("taking over the lease of a dead syncd on this host", holder=owner[1])
            previous = ("previous", "STRING", owner[0])
            self._lease_update(_LEASE_TAKE_FROM, [*params, previous], "take the writer lease")
            owner = self._lease_owner()
        if owner is None or owner[0] != holder.id:
            raise held_by_error(self.tables.sync, owner, "cannot start")
        self._lease_holder = holder

    def renew_lease(self, holder: LeaseHolder, ttl: timedelta) -> None:
        params = [
            ("expires", "TIMESTAMP", self._lease_clock() + ttl),
            ("name", "STRING", self.tables.sync),
            ("holder_id", "STRING", holder.id),
        ]
        self._lease_update(_LEASE_RENEW, params, "renew the writer lease")
        owner = self._lease_owner()
        if owner is None or owner[0] != holder.id:
            raise held_by_error(self.tables.sync, owner, "lease lost")

    def release_lease(self, holder: LeaseHolder) -> None:
        params = [("name", "STRING", self.tables.sync), ("holder_id", "STRING", holder.id)]
        self._query(
            _render(_LEASE_RELEASE, lease=self._q(self.lease_table), never=_NEVER),
            params,
            "release the writer lease",
        )

    def lease_holder(self) -> str | None:
        """Who holds the writer lease now, or None."""
        owner = self._lease_owner() if self._get_table(self.lease_table) is not None else None
        return None if owner is None else str(owner[1])

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    # --- the lease ---------------------------------------------------------------------------

    def _create_lease_table(self) -> None:
        """The lease table with its one (free) row, made atomically: one creator wins."""
        self._check_dataset()
        if self._get_table(self.lease_table) is not None:
            return
        text = _render(
            _LEASE_CREATE,
            lease=self._q(self.lease_table),
            name=_literal(self.tables.sync),
            never=_NEVER,
        )
        try:
            self._query(text, (), "create the lease table")
        except LoadError:
            if self._get_table(self.lease_table) is None:
                raise
            log.debug("the lease table was created by another syncd")

    def _holder_params(
        self, holder: LeaseHolder, now: datetime, ttl: timedelta
    ) -> list[tuple[str, str, Any]]:
        return [
            ("holder_id", "STRING", holder.id),
            ("holder", "STRING", holder.describe()),
            ("host", "STRING", holder.host),
            ("pid", "INT64", holder.pid),
            ("started_at", "TIMESTAMP", holder.started_at),
            ("now", "TIMESTAMP", now),
            ("expires", "TIMESTAMP", now + ttl),
            ("name", "STRING", self.tables.sync),
        ]

    def _lease_update(
        self, template: str, params: Sequence[tuple[str, str, Any]], action: str
    ) -> None:
        """One conditional UPDATE; losing a concurrent update is left to the read after it."""
        try:
            self._query(_render(template, lease=self._q(self.lease_table)), params, action)
        except TransientLoadError as exc:
            log.debug("lease update lost a race", error=str(exc))

    def _lease_owner(self) -> tuple[Any, ...] | None:
        """(HolderId, Holder, ExpiresAt, Host, Pid, StartedAt), or None when free."""
        rows = self._query(
            _render(_LEASE_READ, lease=self._q(self.lease_table)),
            [("name", "STRING", self.tables.sync)],
            "read the writer lease",
        )
        return rows[0] if rows and rows[0][0] else None

    def _lease_fence(self) -> str:
        """The commit script's check that this object still holds the lease ("" without one)."""
        if self._lease_holder is None:
            return ""
        return _render(
            _LEASE_FENCE,
            lease=self._q(self.lease_table),
            name=_literal(self.tables.sync),
            holder_id=_literal(self._lease_holder.id),
            lost=_literal(_LEASE_LOST),
        )

    def _lease_refusal(self, action: str, holder: LeaseHolder) -> TerminalLoadError:
        try:
            owner = self._lease_owner()
            current = "nobody" if owner is None else str(owner[1])
        except LoadError as exc:  # the refusal stands either way
            current = f"unknown ({exc})"
        return TerminalLoadError(
            f"{action}: refused: {holder.describe()} no longer holds the writer lease of "
            f"{self.tables.sync} (now held by {current}); another syncd took over"
        )

    # --- tables ------------------------------------------------------------------------------

    def _check_dataset(self) -> str:
        """The dataset exists (TerminalLoadError naming it when not); its location."""
        dataset = self._call(
            lambda: self._client.get_dataset(
                self._dataset_ref(), retry=self.retry, timeout=self.request_timeout
            ),
            "",
        )
        found = str(dataset.location or "US")
        if self.location is not None and self.location.lower() != found.lower():
            raise TerminalLoadError(
                f"[bigquery] Location is {self.location!r}, but dataset {self.project}:"
                f"{self.dataset} is in {found!r}: jobs run where their dataset is; set Location "
                f"to {found!r} or leave it empty"
            )
        self._job_location = found
        return found

    def _location(self) -> str:
        """The location of every job (load, query, lookup): the dataset's. BigQuery finds a job
        of a single-region dataset only when asked with its location (a lookup without one
        answers 404), so it is read from the dataset when `Location` is empty."""
        return self._job_location or self._check_dataset()

    def _dataset_ref(self) -> bigquery.DatasetReference:
        from google.cloud import bigquery

        return bigquery.DatasetReference(self.project, self.dataset)

    def _ref(self, table: str) -> bigquery.TableReference:
        return self._dataset_ref().table(table)

    def _q(self, table: str) -> str:
        """`dataset`.`table`, quoted; queries run in the dataset's project."""
        return f"{quote_identifier(self.dataset, '`')}.{quote_identifier(table, '`')}"

    def _get_table(self, table: str) -> bigquery.Table | None:
        try:
            return self._client.get_table(
                self._ref(table), retry=self.retry, timeout=self.request_timeout
            )
        except api_exceptions.NotFound:
            return None
        except _MAPPED + _requests_errors() as exc:
            raise map_bigquery_error(exc, f"read table {table}") from exc

    def _table_columns(self, table: str) -> tuple[Column, ...]:
        found = self._get_table(table)
        if found is None:
            return ()
        return tuple(Column(f.name, _field_type_of(f.field_type)) for f in found.schema)

    def _reconcile(
        self, table: str, wanted: Sequence[Column], *, export: bool = False
    ) -> tuple[Column, ...]:
        """Create `table` with `wanted`, or append the columns it lacks; its columns."""
        from google.cloud import bigquery

        existing = self._get_table(table)
        if existing is None:
            created = bigquery.Table(self._ref(table), schema=_schema(wanted))
            if export:
                self._partition(created, wanted)
            self._call(
                lambda: self._client.create_table(
                    created, exists_ok=True, retry=self.retry, timeout=self.request_timeout
                ),
                f"create table {table}",
            )
            log.info("table created", table=table)
            return tuple(wanted)
        current = tuple(Column(f.name, _field_type_of(f.field_type)) for f in existing.schema)
        added = sql.missing_columns([c.name for c in current], wanted, fold_case=True)
        fields = ["schema"] if added else []
        if added:
            existing.schema = [*existing.schema, *_schema(added)]
        if export and self.require_partition_filter and not existing.require_partition_filter:
            existing.require_partition_filter = True
            fields.append("require_partition_filter")
        if export and self._expiration_differs(existing):
            partitioning = existing.time_partitioning
            partitioning.expiration_ms = self._expiration_ms()
            existing.time_partitioning = partitioning
            fields.append("time_partitioning")
        if fields:
            self._call(
                lambda: self._client.update_table(
                    existing, fields, retry=self.retry, timeout=self.request_timeout
                ),
                f"update table {table}",
            )
        if added:
            log.info("columns added", table=table, columns=[c.name for c in added])
        return (*current, *added)

    def _partition(self, table: bigquery.Table, columns: Sequence[Column]) -> None:
        from google.cloud import bigquery

        table.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY,
            field=sql.EVENT_START.name,
            expiration_ms=self._expiration_ms(),
        )
        names = {c.name.lower() for c in columns}
        unknown = [c for c in self.clustering if c.lower() not in names]
        if unknown:
            raise TerminalLoadError(f"[bigquery] Clustering: {unknown} are not export columns")
        if self.clustering:
            table.clustering_fields = list(self.clustering)
        if self.require_partition_filter:
            table.require_partition_filter = True

    def _with_retention(self, expiration: timedelta | None) -> Capabilities:
        kept = expiration if expiration is not None and expiration > timedelta(0) else None
        return dataclass_replace(
            BigQueryWarehouse.capabilities,
            retention=kept,
            retention_setting="[bigquery] PartitionExpiration" if kept is not None else "",
        )

    def _export_retention(self) -> timedelta | None:
        """How long the export table keeps a day's rows: its partition expiration when it is
        partitioned by EventStart (each day's partition expires that long after the day's
        start); None otherwise (an ingestion-time table, as hauser's, counts from the load)."""
        table = self._get_table(self.tables.export)
        partitioning = None if table is None else table.time_partitioning
        if partitioning is None or not partitioning.expiration_ms:
            return None
        if (partitioning.field or "").lower() != sql.EVENT_START.name.lower():
            return None
        return timedelta(milliseconds=int(partitioning.expiration_ms))

    def _expiration_ms(self) -> int | None:
        ms = int(self.partition_expiration.total_seconds() * 1000)
        return ms if ms > 0 else None

    def _expiration_differs(self, table: bigquery.Table) -> bool:
        partitioning = table.time_partitioning
        if partitioning is None:
            return False
        return (partitioning.expiration_ms or None) != self._expiration_ms()

    def _expire_scratch(self, table: str) -> None:
        """Give a scratch table made by a load job its expiration (a load job cannot)."""
        from google.cloud import bigquery

        expiring = bigquery.Table(self._ref(table))
        expiring.expires = self._clock() + SCRATCH_EXPIRATION
        self._call(
            lambda: self._client.update_table(
                expiring, ["expires"], retry=self.retry, timeout=self.request_timeout
            ),
            f"set the expiration of staging table {table}",
        )

    def _scratch_prefixes(self) -> tuple[str, ...]:
        """How this export table's scratch tables are named (see `staging_tables`)."""
        export = self.tables.export
        return (f"{export}__syncd_", f"{export[:60]}__syncd_")

    def _sweep_scratch(self) -> None:
        """Drop this export table's scratch tables older than `SCRATCH_SWEEP_AGE`: what a crash
        left (those of older syncd versions had no expiration). Younger ones may be a running
        peer's and are kept; they expire by themselves."""
        listed = self._call(
            lambda: list(
                self._client.list_tables(
                    self._dataset_ref(), retry=self.retry, timeout=self.request_timeout
                )
            ),
            f"list the tables of {self.dataset}",
        )
        cutoff = self._clock() - SCRATCH_SWEEP_AGE
        prefixes = self._scratch_prefixes()
        old = [
            t.table_id
            for t in listed
            if t.table_id.startswith(prefixes) and t.created is not None and t.created < cutoff
        ]
        if old:
            log.info("dropping scratch tables left behind", tables=old)
            self._drop(*old)

    def _drop(self, *tables: str) -> None:
        """Drop staging tables; a failure is logged, never raised (cleanup only)."""
        for table in tables:
            try:
                self._client.delete_table(
                    self._ref(table),
                    not_found_ok=True,
                    retry=self.retry,
                    timeout=self.request_timeout,
                )
            except _MAPPED + _requests_errors() as exc:
                log.warning("could not drop a staging table", table=table, error=str(exc))

    # --- jobs --------------------------------------------------------------------------------

    def _load(
        self,
        uri: str,
        table: str,
        schema: Sequence[tuple[str, str]],
        fmt: StagedFormat,
        job_id: str,
        rows: int,
    ) -> None:
        """Load `uri` into staging `table` (attaching to an earlier job when it did this)."""
        action = f"load {uri} into {table}"
        for n in range(MAX_JOB_ID_SUFFIX):
            current = job_id if n == 0 else f"{job_id}_{n}"
            job = self._existing_job(current, action)
            if job is not None and job.state != "DONE":
                log.info("attaching to a running load job", job_id=current)
            elif job is not None:
                if job.error_result is None and self._staged_rows(table) == rows:
                    log.info("attached to a finished load job", job_id=current)
                    self._expire_scratch(table)
                    return
                continue  # failed, or its table is gone: it cannot run again under this id
            else:
                job = self._submit_load(uri, table, schema, fmt, current, action)
            try:
                self._wait(job)
            except _MAPPED + _requests_errors() as exc:
                raise map_bigquery_error(exc, f"{action} (job {current})") from exc
            staged = self._staged_rows(table)
            if staged != rows:
                raise TerminalLoadError(
                    f"{action}: the staging table holds {staged} rows, the batch says {rows}"
                )
            self._expire_scratch(table)
            return
        raise TerminalLoadError(f"{action}: {MAX_JOB_ID_SUFFIX} earlier load jobs; giving up")

    def _existing_job(self, job_id: str, action: str) -> bigquery.LoadJob | None:
        try:
            job = self._client.get_job(
                job_id, location=self._location(), retry=self.retry, timeout=self.request_timeout
            )
        except api_exceptions.NotFound:
            return None
        except _MAPPED + _requests_errors() as exc:
            raise map_bigquery_error(exc, f"{action}: look up job {job_id}") from exc
        from google.cloud import bigquery

        if not isinstance(job, bigquery.LoadJob):
            raise TerminalLoadError(f"{action}: job id {job_id} belongs to another kind of job")
        return job

    def _submit_load(
        self,
        uri: str,
        table: str,
        schema: Sequence[tuple[str, str]],
        fmt: StagedFormat,
        job_id: str,
        action: str,
    ) -> bigquery.LoadJob:
        from google.cloud import bigquery

        config = bigquery.LoadJobConfig(
            schema=[bigquery.SchemaField(name, type_) for name, type_ in schema],
            source_format=_SOURCE_FORMATS[fmt],
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        )
        try:
            return self._client.load_table_from_uri(
                uri,
                self._ref(table),
                job_id=job_id,
                location=self._location(),
                job_config=config,
                retry=self.retry,
                timeout=self.request_timeout,
            )
        except api_exceptions.Conflict:
            log.info("load job already submitted; attaching", job_id=job_id)
            job = self._existing_job(job_id, action)
            if job is None:
                raise TransientLoadError(
                    f"{action}: job {job_id} conflicts but cannot be found"
                ) from None
            return job
        except _MAPPED + _requests_errors() as exc:
            raise map_bigquery_error(exc, f"{action} (job {job_id})") from exc

    def _staged_rows(self, table: str) -> int | None:
        found = self._get_table(table)
        return None if found is None else int(found.num_rows or 0)

    def _write_row(self, table: str, columns: Sequence[Column], values: Sequence[Any]) -> None:
        """Replace `table` by a one-row table holding `values` (through query parameters)."""
        from google.cloud import bigquery

        self._drop(table)
        created = bigquery.Table(self._ref(table), schema=_schema(columns))
        created.expires = self._clock() + SCRATCH_EXPIRATION
        self._call(
            lambda: self._client.create_table(
                created, exists_ok=False, retry=self.retry, timeout=self.request_timeout
            ),
            f"create staging table {table}",
        )
        names = [f"v{i}" for i in range(len(columns))]
        text = _render(
            _INSERT_ROW,
            table=self._q(table),
            columns=_columns(c.name for c in columns),
            parameters=", ".join(f"@{n}" for n in names),
        )
        params = [
            (name, BQ_TYPES[c.type], value)
            for name, c, value in zip(names, columns, values, strict=True)
        ]
        self._query(text, params, f"write staging table {table}")

    def _commit_script(
        self,
        columns: Sequence[Column],
        data_schema: Sequence[tuple[str, str]],
        names: StagingTables,
        has_rejects: bool,
        rows_in: str,
        replace: str = "",
    ) -> str:
        staged_types = dict(data_schema)
        targets: list[str] = []
        expressions: list[str] = []
        for column in columns:
            if column.name.lower() == BATCH_ID.name.lower():
                continue
            target_type = BQ_TYPES[self._export_types.get(column.name.lower(), column.type)]
            source = f"s.{quote_identifier(column.name, '`')}"
            conversion = _CONVERSIONS.get((staged_types[column.name], target_type), "{column}")
            targets.append(column.name)
            expressions.append(conversion.replace("{column}", source))
        targets.append(BATCH_ID.name)
        expressions.append(f"v.{quote_identifier(BATCH_ID.name, '`')}")
        if not any(c.name.lower() == LOADED_AT.name.lower() for c in columns):
            targets.append(LOADED_AT.name)
            expressions.append("v.`Processed`")
        tables = {
            "export": self._q(self.tables.export),
            "rejects": self._q(self.tables.rejects),
            "sync": self._q(self.tables.sync),
            "data": self._q(names.data),
            "row": self._q(names.row),
            "rejects_data": self._q(names.rejects),
        }
        insert_rejects = _render(_INSERT_REJECTS, **tables) if has_rejects else ""
        return _render(
            _COMMIT,
            fence=self._lease_fence(),
            targets=_columns(targets),
            expressions=", ".join(expressions),
            insert_rejects=insert_rejects,
            replace=replace,
            rows_in=rows_in,
            sync_columns=_columns(c.name for c in sql.SYNC_COLUMNS),
            **tables,
        )

    def _replace_window(self, key: BatchKey) -> str:
        """The statements that delete the old rows of a segment batch's window (none for a
        legacy bundle, which has no window)."""
        if key.source != sql.SEGMENT_SOURCE:
            return ""
        lo = sql.day_start(key.start.astimezone(UTC).date())
        inside = _render(
            _ENDING_IN_WINDOW,
            lo=_timestamp(lo),
            start=_timestamp(key.start),
            end=_timestamp(key.end),
        )
        return _render(
            _REPLACE_WINDOW,
            export=self._q(self.tables.export),
            sync=self._q(self.tables.sync),
            rejects=self._q(self.tables.rejects),
            inside=inside,
            going_on=_render(_GOING_ON, lo=_timestamp(lo), end=_timestamp(key.end)),
            rows_in=_rows_in(key.start, key.end),
            lo=_timestamp(lo),
            hi=_timestamp(lo + timedelta(days=1)),
        )

    def _batch_rows_in(self, key: BatchKey, data: str, action: str) -> str:
        """The EventStart range a batch's rows lie in, as a filter BigQuery can eliminate
        partitions with (the commit deletes the batch's earlier rows by it).

        A segment batch's rows lie in its window: the transform quarantines the others. A
        legacy bundle holds whatever was processed in its time, so its range is read from its
        staging table (a bundle's content does not change, so its earlier rows had the same)."""
        if key.source == "segment":
            return _rows_in(key.start, key.end)
        text = _render(_STAGED_RANGE, data=self._q(data))
        low, high = (self._query(text, (), action) or [(None, None)])[0]
        if low is None or high is None:
            return _rows_in(key.start, key.start)  # no rows: nothing to delete
        return _rows_in(low, high + timedelta(microseconds=1))

    def _count(self, table: str, where: str, action: str) -> int:
        rows = self._query(_render(_COUNT_WHERE, table=table, where=where), (), action)
        return int(rows[0][0]) if rows else 0

    def _query(
        self, text: str, params: Iterable[tuple[str, str, Any]], action: str
    ) -> list[tuple[Any, ...]]:
        """Run one query job (named parameters) to the end; its rows."""
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter(name, type_, _parameter_value(type_, value))
                for name, type_, value in params
            ],
            use_legacy_sql=False,
        )
        try:
            job = self._client.query(
                text,
                job_config=config,
                location=self._location(),
                retry=self.retry,
                job_retry=None,  # a failed job surfaces; the pipeline retries the batch
                job_id_prefix="syncd_",
                timeout=self.request_timeout,
            )
            return [tuple(row.values()) for row in self._wait(job)]
        except _MAPPED + _requests_errors() as exc:
            raise map_bigquery_error(exc, action) from exc

    def _wait(self, job: Any) -> Any:
        """`job.result()` within `job_timeout` in all, each request within `request_timeout`.

        The client applies the timeout given to `result` to each request of the wait as well
        (a query job's poll would otherwise be one request allowed the whole `job_timeout`), so
        the wait is made of slices of at most `request_timeout`; a slice that ends with the job
        still running starts the next one.
        """
        deadline = time.monotonic() + self.job_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise concurrent.futures.TimeoutError(
                    f"job {job.job_id} did not finish within {self.job_timeout:.0f}s"
                )
            try:
                return job.result(retry=self.retry, timeout=min(self.request_timeout, remaining))
            except concurrent.futures.TimeoutError:
                if job.state == "DONE":
                    raise  # the job finished: a request for its results timed out

    def _call(self, fn: Any, action: str) -> Any:
        """Run one API call, mapping its errors; a missing dataset is named plainly."""
        try:
            return fn()
        except api_exceptions.NotFound as exc:
            if "dataset" in (exc.message or "").lower() or not action:
                raise TerminalLoadError(
                    f"BigQuery dataset {self.project}:{self.dataset} does not exist or is not "
                    "visible to these credentials; create it (syncd does not pick its location)"
                ) from exc
            raise map_bigquery_error(exc, action) from exc
        except _MAPPED + _requests_errors() as exc:
            raise map_bigquery_error(exc, action or "reach BigQuery") from exc

    # --- the round trip (`syncd check --round-trip`) ---------------------------------------

    def read_rows(self, batch_id: str) -> list[dict[str, Any]]:
        """The export rows of one batch, typed as stored (see `Warehouse.read_rows`): the
        client reads INT64 from its decimal text, never through a float."""
        columns = self._table_columns(self.tables.export)
        text = _render(
            "SELECT {columns} FROM {export} WHERE {SyncdBatchId} = @batch_id",
            columns=_columns(c.name for c in columns),
            export=self._q(self.tables.export),
        )
        rows = self._query(text, [("batch_id", "STRING", batch_id)], f"read rows of {batch_id}")
        return [
            {c.name: sql.stored_value(v, c.type) for c, v in zip(columns, row, strict=True)}
            for row in rows
        ]

    def drop_tables(self) -> None:
        """Drop the export, sync, rejects and lease tables and the export table's staging
        tables (`<export>__syncd_*`, left by a failed commit), those that exist; raise a
        LoadError naming every table that could not be dropped."""
        prefix = f"{self.tables.export}__syncd_"
        listed = self._call(
            lambda: list(
                self._client.list_tables(
                    self._dataset_ref(), retry=self.retry, timeout=self.request_timeout
                )
            ),
            "list the tables",
        )
        staging = sorted(t.table_id for t in listed if str(t.table_id).startswith(prefix))
        own = (self.tables.export, self.tables.sync, self.tables.rejects, self.lease_table)
        failed: list[str] = []
        for table in (*staging, *own):
            try:
                self._call(
                    functools.partial(
                        self._client.delete_table,
                        self._ref(table),
                        not_found_ok=True,
                        retry=self.retry,
                        timeout=self.request_timeout,
                    ),
                    f"drop table {table}",
                )
            except LoadError as exc:
                failed.append(str(exc))
        if failed:
            raise TerminalLoadError("; ".join(failed))


def _literal(word: str) -> str:
    """A string literal of a checked plain word (identifier, holder id, fixed text)."""
    if not re.fullmatch(r"[A-Za-z0-9_.: -]+", word):
        raise TerminalLoadError(f"{word!r} cannot be a literal in a script")
    return f"'{word}'"


def _timestamp(value: datetime) -> str:
    """A TIMESTAMP literal of a datetime (naive is UTC), formatted from its fields: never text
    from elsewhere. Filters on the partitioning column must be constant for BigQuery to
    eliminate partitions by them, and scripts take no parameters on the emulator."""
    if not isinstance(value, datetime):
        raise TypeError(f"not a datetime: {value!r}")
    utc = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return f"TIMESTAMP '{utc:%Y-%m-%d %H:%M:%S.%f}+00'"


def _rows_in(lo: datetime, hi: datetime) -> str:
    """EventStart in [lo, hi), constant bounds."""
    return _render(_ROWS_IN, lo=_timestamp(lo), hi=_timestamp(hi))


def _schema(columns: Iterable[Column]) -> list[bigquery.SchemaField]:
    from google.cloud import bigquery

    return [bigquery.SchemaField(c.name, BQ_TYPES[c.type], mode="NULLABLE") for c in columns]


def _field_type_of(bq_type: str) -> FieldType:
    """The FieldType of a BigQuery column type; unknown types read as STRING."""
    return _FIELD_TYPES.get(bq_type.upper(), FieldType.STRING)


def _staged_type(fmt: StagedFormat, type_: FieldType) -> str:
    return _STAGED_TYPES[fmt].get(type_, BQ_TYPES[type_])


def _parameter_value(type_: str, value: Any) -> Any:
    """TIMESTAMP parameters as aware UTC (the sync SQL keeps naive UTC)."""
    if type_ == "TIMESTAMP" and isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _require_gcs(uri: str) -> None:
    if not uri.startswith("gs://"):
        raise TerminalLoadError(
            f"BigQuery loads from GCS, but {uri!r} is not a gs:// URI: stage to GCS "
            '(Provider "gcp" with [gcs] Bucket)'
        )


def _make_client(project: str, endpoint_url: str, location: str | None) -> bigquery.Client:
    """A client: Application Default Credentials, or anonymous for an emulator endpoint."""
    from google.cloud import bigquery

    kwargs: dict[str, Any] = {}
    if endpoint_url:
        from google.auth.credentials import AnonymousCredentials

        kwargs["client_options"] = {"api_endpoint": endpoint_url}
        kwargs["credentials"] = AnonymousCredentials()  # type: ignore[no-untyped-call]
    try:
        return bigquery.Client(project=project, location=location, **kwargs)
    except auth_exceptions.DefaultCredentialsError as exc:
        raise TerminalLoadError(
            "no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS or run where "
            "Application Default Credentials exist"
        ) from exc


# --- the plugin declarations (warehouses.plugin): the [bigquery] section and Provider "gcp" -----

from syncd.config.keys import Key, Kind  # noqa: E402
from syncd.fields import KNOWN_FIELDS  # noqa: E402
from warehouses.plugin import (  # noqa: E402
    ConfigSection,
    SettleContext,
    WarehousePlugin,
    check_names,
    table_keys,
)

if TYPE_CHECKING:
    from syncd.config.model import Settings
    from warehouses.base import Stage

MAX_CLUSTERING_COLUMNS = 4  # BigQuery's limit
CLUSTERABLE_COLUMNS = (*KNOWN_FIELDS, BATCH_ID.name, LOADED_AT.name)


@dataclass(frozen=True)
class BigQuerySettings:
    project: str
    dataset: str
    export_table: str
    sync_table: str
    rejects_table: str
    partition_expiration: timedelta  # 0 = partitions never expire
    location: str
    clustering: tuple[str, ...]
    require_partition_filter: bool
    endpoint_url: str


def _validate(ctx: SettleContext, provider: str) -> None:
    from syncd.config.loader import suggest

    check_names(ctx, "bigquery", "Dataset")
    label = "[bigquery] Clustering"
    if not ctx.ok(label):
        return
    columns = ctx.get(label)
    if len(columns) > MAX_CLUSTERING_COLUMNS:
        ctx.problem(label, f"has {len(columns)} columns; BigQuery allows at most 4")
    for column in columns:
        if column not in CLUSTERABLE_COLUMNS:
            hint = suggest(column, list(CLUSTERABLE_COLUMNS))
            ctx.problem(label, f"{column!r} is not a column of the export table{hint}")


SECTION = ConfigSection(
    "bigquery",
    'Google BigQuery, loaded with load jobs from GCS (Provider = "gcp").',
    (
        Key(
            "bigquery",
            "Project",
            Kind.STRING,
            "",
            'Project of the dataset; required with Provider "gcp".',
            hauser=True,
        ),
        Key(
            "bigquery",
            "Dataset",
            Kind.STRING,
            "",
            'Dataset of the tables; required with Provider "gcp".',
            hauser=True,
        ),
        *table_keys("bigquery", hauser=True),
        Key(
            "bigquery",
            "PartitionExpiration",
            Kind.DURATION,
            "0",
            'Drop a day partition this long after the day\'s start; "0" keeps them forever. Days '
            "older than this are not loaded (their rows would vanish at once): StartTime is not "
            "reached before them and `backfill` refuses them.",
            hauser=True,
        ),
        Key(
            "bigquery",
            "Location",
            Kind.STRING,
            "",
            'Location of jobs, e.g. "EU"; empty = the dataset\'s.',
        ),
        Key(
            "bigquery",
            "Clustering",
            Kind.NAMES,
            (),
            "Columns the export table is clustered by when syncd creates it (at most 4).",
        ),
        Key(
            "bigquery",
            "RequirePartitionFilter",
            Kind.BOOL,
            False,
            "Make BigQuery refuse any query over the export table without an EventStart filter "
            "that prunes partitions (a guard against full scans; syncd's own statements all have "
            "one). Turned on for an existing table too, never turned off by syncd.",
        ),
        Key(
            "bigquery",
            "EndpointURL",
            Kind.URL,
            "",
            "Custom BigQuery endpoint (an emulator); empty = Google.",
        ),
    ),
    BigQuerySettings,
    required=("Project", "Dataset"),
    validate=_validate,
)


def _build(settings: Settings, stage: Stage, read_only: bool) -> BigQueryWarehouse:
    bq: BigQuerySettings = settings.section("bigquery")
    return BigQueryWarehouse(
        bq.project,
        bq.dataset,
        export_table=bq.export_table,
        sync_table=bq.sync_table,
        rejects_table=bq.rejects_table,
        location=bq.location,
        partition_expiration=bq.partition_expiration,
        clustering=bq.clustering,
        require_partition_filter=bq.require_partition_filter,
        endpoint_url=bq.endpoint_url,
    )


def _destination(settings: Settings) -> str:
    bq: BigQuerySettings = settings.section("bigquery")
    return f"BigQuery dataset {bq.dataset}, staged in gs://{settings.section('gcs').bucket}"


PLUGIN = WarehousePlugin(
    "gcp",
    "GCS + BigQuery",
    stage="gcs",
    section=SECTION,
    build=_build,
    destination=_destination,
    aliases=("bigquery",),
    extra="gcp",
    drivers=("google.cloud.storage", "google.cloud.bigquery"),
)
