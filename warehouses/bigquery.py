"""Google BigQuery, loaded with load jobs from GCS (Provider "gcp").

The warehouse (this module): tables, commit, rollback, consistency. Its jobs (load and query
submission, job ids, location, attaching) are `warehouses.bigquery_jobs`, its writer lease
`warehouses.bigquery_lease`, all its SQL text `warehouses.bigquery_sql`, and the client, the
transient-error predicate and the retry it shares with the GCS stage `warehouses.google_cloud`.

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
   backfill also the old rows of B's window: `bigquery_sql.replace_window`), inserts from the
   staging tables and inserts the sync row (it reads every value from the staging tables, so
   the script itself needs no parameters); once this object holds the writer lease, the
   transaction ends with the lease's fence, which rolls it back when another syncd took over;
4. the staging tables are dropped (a failure there is only logged: the commit stands).
A crash before 3 leaves nothing visible; 3 is atomic; after 3 only the staging tables remain.
Scratch tables (a batch's staging tables) expire a day after they are made
(`SCRATCH_EXPIRATION`: set at creation, or right after the load job that made them), and at
start-up (`ensure_tables`) this export table's scratch tables older than `SCRATCH_SWEEP_AGE`
are dropped: a crash leaves nothing for good, and a running peer's young ones are kept.

Partition filters. Every statement that reads or deletes export rows filters EventStart with
constant bounds, so BigQuery eliminates partitions (it bills every byte scanned, and a table
with `require_partition_filter`, which `RequirePartitionFilter` sets, refuses any other): a
commit deletes its batch's earlier rows within the batch's EventStart range (a segment's
window; a legacy bundle's range read from its staging table, as nothing else bounds a bundle),
the consistency check counts rows from its first day on, and a rollback deletes within its days
(extended to the end of their last window). With legacy batches the consistency check and a
rollback cannot be bounded and read the whole table (a `require_partition_filter` table
refuses them).

Location. Every job runs in the dataset's location: `Location` when set (it must be the
dataset's: a mismatch is refused plainly), otherwise the location read from the dataset
(`warehouses.bigquery_jobs` tells why).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import replace as dataclass_replace
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

import syncd
from syncd.batch import BatchKey, StagedBatch, StagedFormat, SyncRecord
from syncd.errors import LoadError, TerminalLoadError
from syncd.fields import Column, FieldType
from syncd.lease import LeaseHolder
from syncd.timeutil import utcnow
from warehouses import bigquery_sql, google_cloud, sql
from warehouses.base import Capabilities, RollbackResult, check_commit, validate_identifier
from warehouses.bigquery_jobs import JOB_TIMEOUT, Jobs, load_job_id, map_bigquery_error
from warehouses.bigquery_lease import Lease
from warehouses.bigquery_sql import StagingTables
from warehouses.plugin import lazy_import

if TYPE_CHECKING:
    from google.api_core import exceptions as api_exceptions
    from google.api_core.retry import Retry
    from google.cloud import bigquery

    from syncd.people import PeopleBatch
else:  # the gcp extra is imported when first used, not when the plugin is loaded
    api_exceptions = lazy_import("google.api_core.exceptions")

log = structlog.get_logger(__name__)

#: Scratch tables (a batch's staging tables) expire this long after they
#: are made: a crash cannot leave them forever.
SCRATCH_EXPIRATION = timedelta(days=1)
#: At start-up, scratch tables of this export table older than this are dropped: far longer
#: than a commit may take (`JOB_TIMEOUT` per job), so a running peer's are never touched.
SCRATCH_SWEEP_AGE = timedelta(hours=6)

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
#: How each staged format carries a FieldType, where it differs from its BigQuery column type
#: (`sql.BIGQUERY.column_type`): Parquet holds naive UTC timestamps (BigQuery's DATETIME) and
#: JSON as text.
_STAGED_TYPES: dict[StagedFormat, dict[FieldType, str]] = {
    "parquet": {FieldType.TIMESTAMP: "DATETIME", FieldType.JSON: "STRING"},
    "ndjson": {},
}
#: The rejects file: one object per rejected row (see `syncd.batch.TransformedBatch`).
_REJECTS_FILE = (
    ("batch_id", "STRING"),
    ("position", "INT64"),
    ("reason", "STRING"),
    ("raw", "STRING"),
)


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


# -- the warehouse ----------------------------------------------------------------------------


class BigQueryWarehouse:
    """Implements `warehouses.base.Warehouse` on a BigQuery dataset, loading from GCS."""

    capabilities = Capabilities(
        staging_formats=("parquet", "ndjson"),  # not CSV: see bigquery_jobs.SOURCE_FORMATS
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
        request_timeout: float = google_cloud.REQUEST_TIMEOUT,
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
        self.retry = retry or google_cloud.default_retry()
        self.request_timeout = request_timeout
        if client is None:
            from google.cloud import bigquery

            client = google_cloud.make_client(
                bigquery.Client,
                project=project,
                endpoint_url=endpoint_url,
                no_credentials=TerminalLoadError,
                location=self.location,
            )
        self._client = client
        self._export_types: dict[str, FieldType] = {}
        self._clock = clock
        self._sql = bigquery_sql.Tables(self.dataset, self.tables)
        self._jobs = Jobs(
            client,
            location=self._location,
            retry=self.retry,
            request_timeout=request_timeout,
            job_timeout=job_timeout,
        )
        self.lease_table = validate_identifier(f"{sync_table}_lease", "lease table")
        self._lease = Lease(
            self._jobs,
            name=sync_table,
            lease=self._sql.q(self.lease_table),
            exists=lambda: self._get_table(self.lease_table) is not None,
            clock=lease_clock,
        )

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
        also the old rows of its window: `bigquery_sql.replace_window`); drop staging."""
        batch = staged.batch
        batch_id = batch.key.id
        check_commit(staged, record, self.capabilities, "BigQuery")
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
        script = bigquery_sql.commit_script(
            self._sql,
            names,
            batch.columns,
            dict(data_schema),
            self._export_types,
            has_rejects,
            self._batch_rows_in(batch.key, names.data, action),
            bigquery_sql.replace_window(self._sql, batch.key) if replace else "",
            self._lease.fence(),
        )
        try:
            self._query(script, (), action)
        except LoadError as exc:
            if self._lease.lost(exc):
                self._drop(names.data, names.rejects, names.row)
                raise self._lease.refusal(action) from exc
            raise
        self._drop(names.data, names.rejects, names.row)

    def sync_records(self, since: datetime | None = None) -> list[SyncRecord]:
        """Committed batches ending after `since`, oldest first; none before the first commit."""
        present = {c.name.lower() for c in self._table_columns(self.tables.sync)}
        if not present:
            return []
        query = sql.select_sync_rows(sql.BIGQUERY, self._sql.in_dataset, since, present)
        params = [("since", "TIMESTAMP", since)] if since is not None else []
        rows = self._query(query.sql, params, "read sync rows")
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
        query = sql.inconsistent_days(sql.BIGQUERY, self._sql.in_dataset, since, bounded)
        rows = self._query(query.sql, [("lo", "TIMESTAMP", lo)], "check days")
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
        statements = bigquery_sql.rollback(self._sql, lo, hi, rows_end, keep)
        action = f"roll back {first}..{last}"
        # counted first: one writer, so nothing changes between the count and the delete
        rows_deleted = self._count(statements.count_rows, action)
        sync_rows_deleted = self._count(statements.count_sync_rows, action)
        self._query(statements.script, (), action)
        return sql.rolled_back(first, last, rows_deleted, sync_rows_deleted, kept=len(keep))

    def create_views(self, people_table: str | None = None) -> None:
        """`warehouses.base.MakesViews`: create or replace the views, one DDL job each
        (`fs_users` over `people_table` too, when given)."""
        from warehouses.views import view_statements

        columns = [c.name for c in self._table_columns(self.tables.export)]
        statements = view_statements(
            sql.BIGQUERY, self.tables.export, self.dataset, columns, people_table
        )
        for statement in statements:
            self._query(statement, (), "create the views")

    # --- the people table (`syncd.people`) ----------------------------------------------------

    #: People batches load from their staged NDJSON (a load job), like the events.
    people_from_stage = True

    def ensure_people_tables(self, table: str) -> None:
        """`syncd.people.PeopleWarehouse`: create or reconcile the people table and its sync
        table."""
        self._check_dataset()
        self._reconcile(table, sql.PEOPLE_COLUMNS)
        self._reconcile(sql.people_sync_table(table), sql.PEOPLE_SYNC_COLUMNS)

    def people_batch_ids(self, table: str) -> set[str]:
        """`syncd.people.PeopleWarehouse`: the committed people batches."""
        sync_table = sql.people_sync_table(table)
        if not self._table_columns(sync_table):
            return set()
        text = bigquery_sql.people_batches(self._sql.q(sync_table))
        return {str(row[0]) for row in self._query(text, (), "read the people sync rows")}

    def commit_people(self, table: str, batch: PeopleBatch) -> bool:
        """`syncd.people.PeopleWarehouse`: load the staged NDJSON into a staging table, write
        the sync row into another, then one transaction upserts and records the batch
        (`bigquery_sql.people_commit`: a replay changes nothing); the staging tables go."""
        _require_gcs(batch.uri)
        action = f"commit people batch {batch.batch_id}"
        sync_table = sql.people_sync_table(table)
        names = staging_tables(table, batch.batch_id)
        schema = [(c.name, bigquery_sql.people_staged_type(c.type)) for c in sql.PEOPLE_COLUMNS]
        record = SyncRecord(
            batch_id=batch.batch_id,
            source="individuals",
            start=batch.start,
            end=batch.end,
            committed_at=batch.committed_at,
            operation_id=batch.operation_id,
        )
        rows = len(batch.rows)
        job_id = load_job_id(self.dataset, table, record, "data", rows)
        self._load(batch.uri, names.data, schema, "ndjson", job_id, rows)
        self._write_row(names.row, sql.PEOPLE_SYNC_COLUMNS, batch.sync_row())
        committed = bigquery_sql.people_committed(self._sql.q(sync_table))
        done = self._query(committed, [("batch_id", "STRING", batch.batch_id)], action)
        script = bigquery_sql.people_commit(
            self._sql.q(table),
            self._sql.q(sync_table),
            self._sql.q(names.data),
            self._sql.q(names.row),
            batch.end,
            self._lease.fence(),
        )
        try:
            self._query(script, (), action)
        except LoadError as exc:
            if self._lease.lost(exc):
                self._drop(names.data, names.row)
                raise self._lease.refusal(action) from exc
            raise
        self._drop(names.data, names.row)
        return not (done and int(done[0][0]))

    def check(self) -> None:
        """The dataset exists and a query job can run."""
        self._check_dataset()
        self._query(bigquery_sql.PROBE, (), "run a query")

    # --- LeasedWarehouse ----------------------------------------------------------------------

    def acquire_lease(self, holder: LeaseHolder, ttl: timedelta) -> None:
        """Take the writer lease of this SyncTable (or a stale one); LockedError names the
        live holder. From now on every commit checks that the lease is still `holder`'s."""
        self._check_dataset()
        self._lease.acquire(holder, ttl)

    def renew_lease(self, holder: LeaseHolder, ttl: timedelta) -> None:
        self._lease.renew(holder, ttl)

    def release_lease(self, holder: LeaseHolder) -> None:
        self._lease.release(holder)

    def lease_holder(self) -> str | None:
        """Who holds the writer lease now, or None."""
        return self._lease.current_holder()

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

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

    def _get_table(self, table: str) -> bigquery.Table | None:
        try:
            return self._client.get_table(
                self._ref(table), retry=self.retry, timeout=self.request_timeout
            )
        except api_exceptions.NotFound:
            return None
        except google_cloud.api_errors() as exc:
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

    def _scratch_tables(self, action: str) -> list[bigquery.table.TableListItem]:
        """This export table's scratch tables (named as `staging_tables` names them)."""
        listed = self._call(
            lambda: list(
                self._client.list_tables(
                    self._dataset_ref(), retry=self.retry, timeout=self.request_timeout
                )
            ),
            action,
        )
        export = self.tables.export
        prefixes = (f"{export}__syncd_", f"{export[:60]}__syncd_")
        return [t for t in listed if str(t.table_id).startswith(prefixes)]

    def _sweep_scratch(self) -> None:
        """Drop this export table's scratch tables older than `SCRATCH_SWEEP_AGE`: what a crash
        left (those of older syncd versions had no expiration). Younger ones may be a running
        peer's and are kept; they expire by themselves."""
        cutoff = self._clock() - SCRATCH_SWEEP_AGE
        listed = self._scratch_tables(f"list the tables of {self.dataset}")
        old = [t.table_id for t in listed if t.created is not None and t.created < cutoff]
        if old:
            log.info("dropping scratch tables left behind", tables=old)
            self._drop(*old)

    def _drop(self, *tables: str) -> None:
        """Drop staging tables; a failure is logged, never raised (cleanup only)."""
        for table in tables:
            try:
                self._delete_table(table)
            except google_cloud.api_errors() as exc:
                log.warning("could not drop a staging table", table=table, error=str(exc))

    def _delete_table(self, table: str) -> None:
        self._client.delete_table(
            self._ref(table), not_found_ok=True, retry=self.retry, timeout=self.request_timeout
        )

    # --- jobs ---------------------------------------------------------------------------------

    def _load(
        self,
        uri: str,
        table: str,
        schema: Sequence[tuple[str, str]],
        fmt: StagedFormat,
        job_id: str,
        rows: int,
    ) -> None:
        """Load `uri` into staging `table` (attaching to an earlier job when it did this), and
        give the table its expiration."""
        self._jobs.load(
            uri, self._ref(table), schema, fmt, job_id, rows, lambda: self._staged_rows(table)
        )
        self._expire_scratch(table)

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
        text = bigquery_sql.insert_row(self._sql.q(table), [c.name for c in columns], names)
        params = [
            (name, sql.BIGQUERY.column_type(c.type), value)
            for name, c, value in zip(names, columns, values, strict=True)
        ]
        self._query(text, params, f"write staging table {table}")

    def _batch_rows_in(self, key: BatchKey, data: str, action: str) -> str:
        """The EventStart range a batch's rows lie in, as a filter BigQuery can eliminate
        partitions with (the commit deletes the batch's earlier rows by it).

        A segment batch's rows lie in its window: the transform quarantines the others. A
        legacy bundle holds whatever was processed in its time, so its range is read from its
        staging table (a bundle's content does not change, so its earlier rows had the same)."""
        if key.source == sql.SEGMENT_SOURCE:
            return bigquery_sql.rows_in(key.start, key.end)
        text = bigquery_sql.staged_range(self._sql.q(data))
        low, high = (self._query(text, (), action) or [(None, None)])[0]
        if low is None or high is None:
            return bigquery_sql.rows_in(key.start, key.start)  # no rows: nothing to delete
        return bigquery_sql.rows_in(low, high + timedelta(microseconds=1))

    def _count(self, text: str, action: str) -> int:
        rows = self._query(text, (), action)
        return int(rows[0][0]) if rows else 0

    def _query(
        self, text: str, params: Iterable[tuple[str, str, Any]], action: str
    ) -> list[tuple[Any, ...]]:
        """Run one query job to the end; its rows (see `Jobs.query`)."""
        return self._jobs.query(text, params, action)

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
        except google_cloud.api_errors() as exc:
            raise map_bigquery_error(exc, action or "reach BigQuery") from exc

    # --- the round trip (`syncd check --round-trip`) ---------------------------------------

    def read_rows(self, batch_id: str) -> list[dict[str, Any]]:
        """The export rows of one batch, typed as stored (see `Warehouse.read_rows`): the
        client reads INT64 from its decimal text, never through a float."""
        columns = self._table_columns(self.tables.export)
        text = bigquery_sql.read_rows(self._sql, [c.name for c in columns])
        rows = self._query(text, [("batch_id", "STRING", batch_id)], f"read rows of {batch_id}")
        return [
            {c.name: sql.stored_value(v, c.type) for c, v in zip(columns, row, strict=True)}
            for row in rows
        ]

    def drop_tables(self) -> None:
        """Drop the export, sync, rejects and lease tables and the export table's staging
        tables (`<export>__syncd_*`, left by a failed commit), those that exist; raise a
        LoadError naming every table that could not be dropped."""
        staging = sorted(t.table_id for t in self._scratch_tables("list the tables"))
        own = (self.tables.export, self.tables.sync, self.tables.rejects, self.lease_table)
        failed: list[str] = []
        for table in (*staging, *own):
            try:
                self._call(functools.partial(self._delete_table, table), f"drop table {table}")
            except LoadError as exc:
                failed.append(str(exc))
        if failed:
            raise TerminalLoadError("; ".join(failed))


def _schema(columns: Iterable[Column]) -> list[bigquery.SchemaField]:
    from google.cloud import bigquery

    return [
        bigquery.SchemaField(c.name, sql.BIGQUERY.column_type(c.type), mode="NULLABLE")
        for c in columns
    ]


def _field_type_of(bq_type: str) -> FieldType:
    """The FieldType of a BigQuery column type; unknown types read as STRING."""
    return _FIELD_TYPES.get(bq_type.upper(), FieldType.STRING)


def _staged_type(fmt: StagedFormat, type_: FieldType) -> str:
    return _STAGED_TYPES[fmt].get(type_, sql.BIGQUERY.column_type(type_))


def _require_gcs(uri: str) -> None:
    if not uri.startswith("gs://"):
        raise TerminalLoadError(
            f"BigQuery loads from GCS, but {uri!r} is not a gs:// URI: stage to GCS "
            '(Provider "gcp" with [gcs] Bucket)'
        )


# --- the plugin declarations (warehouses.plugin): the [bigquery] section and Provider "gcp" -----

from dataclasses import dataclass  # noqa: E402

from syncd.config.keys import Key, Kind  # noqa: E402
from syncd.fields import BATCH_ID, KNOWN_FIELDS, LOADED_AT  # noqa: E402
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
