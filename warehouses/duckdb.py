"""DuckDB, the embedded default warehouse: one file, one writer process.

A commit is one DuckDB transaction: delete this batch's earlier rows, rejects and sync row (a
re-run after a crash; in a backfill also its window's old rows, `sql.replace_window`),
bulk-load the staged file with `INSERT INTO t (columns) SELECT ... FROM read_parquet /
read_csv / read_json(?)`, check the row count, load the rejects, insert the sync row, commit.
Any failure rolls all of it back.

Every value travels as a parameter, staged file paths included: DuckDB accepts `?` as the path
of its table functions and even as the `columns` map of `read_json`. Those functions treat the
path as a glob, so a path containing glob characters is refused. Columns are matched by name,
never by position: Parquet and NDJSON carry names, and CSV is read by its header row.

Staged-file contract (what the transform writes):
- Parquet: timestamps `timestamp('us')`, naive UTC; CustomVars a JSON string.
- CSV, gzip: a header row; NULL is an empty unquoted field, `""` is the empty string;
  timestamps RFC 3339 (an offset is honoured; none means UTC).
- NDJSON, gzip: one object per line, CustomVars a nested object, timestamps RFC 3339.
SyncdBatchId is always set from the batch key (whatever the file holds), so the delete that
opens a re-run always finds the earlier rows; SyncdLoadedAt comes from the file when it has the
column, else it is the record's commit time.

DuckDB stores TIMESTAMP without a zone: syncd stores UTC, and sets the session time zone to UTC
when the ICU extension is present (without it, DuckDB's time zone is UTC anyway).
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlparse

import duckdb
import structlog

import syncd
from syncd.batch import StagedBatch, StagedFormat, SyncRecord
from syncd.errors import LoadError, LockedError, TerminalLoadError, TransientLoadError
from syncd.fields import BATCH_ID, LOADED_AT, Column, FieldType
from syncd.transform.convert import batch_window
from warehouses import sql
from warehouses.base import Capabilities, RollbackResult, quote_identifier
from warehouses.sql import DUCKDB, Query, TableNames, render

log = structlog.get_logger(__name__)

MEMORY = ":memory:"

# Errors a later attempt may not meet: I/O (a missing or unreadable staged file, a full disk),
# lock and transaction conflicts, memory pressure, interruption.
_TRANSIENT_ERRORS: tuple[type[duckdb.Error], ...] = (
    duckdb.IOException,
    duckdb.TransactionException,
    duckdb.OutOfMemoryException,
    duckdb.InterruptException,
)
_LOCK_HELD = re.compile(r"Could not set lock|Conflicting lock", re.IGNORECASE)
_LOCK_PID = re.compile(r"\(PID (\d+)\)")
_GLOB_CHARACTERS = frozenset("*?[")

# How each format's columns are read: the source function and the SELECT expression per type.
_SOURCES: dict[StagedFormat, str] = {
    "parquet": "read_parquet({p})",
    "csv": (
        "read_csv({p}, header = true, delim = ',', quote = '\"', escape = '\"', "
        "all_varchar = true, allow_quoted_nulls = false, compression = {p})"
    ),
    "ndjson": "read_json({p}, format = 'newline_delimited', columns = {p}, compression = {p})",
}
# CSV is read as text and typed here; TIMESTAMPTZ first so that an offset is honoured.
_CSV_EXPRESSIONS = {
    FieldType.INT64: "CAST({column} AS BIGINT)",
    FieldType.FLOAT: "CAST({column} AS DOUBLE)",
    FieldType.STRING: "{column}",
    FieldType.TIMESTAMP: "CAST(CAST({column} AS TIMESTAMPTZ) AS TIMESTAMP)",
    FieldType.JSON: "CAST({column} AS JSON)",
}
# NDJSON is typed by read_json's `columns` map (names to types, matched by key).
_NDJSON_TYPES = {
    FieldType.INT64: "BIGINT",
    FieldType.FLOAT: "DOUBLE",
    FieldType.STRING: "VARCHAR",
    FieldType.TIMESTAMP: "TIMESTAMPTZ",
    FieldType.JSON: "JSON",
}
_NDJSON_EXPRESSIONS = {FieldType.TIMESTAMP: "CAST({column} AS TIMESTAMP)"}
_REJECT_KEYS = {"position": "BIGINT", "reason": "VARCHAR", "raw": "VARCHAR"}

_LOAD_ROWS = "INSERT INTO {export} ({targets}) SELECT {expressions} FROM {source}"
_LOAD_REJECTS = (
    "INSERT INTO {rejects} ({SyncdBatchId}, {Position}, {Reason}, {Raw}, {RejectedAt}) "
    "SELECT {p}, {position}, {reason}, {raw}, {p} FROM {source}"
)
_CAN_WRITE = "CREATE TABLE {probe} ({ok} INTEGER)"
_SET_UTC = "SET TimeZone = 'UTC'"


def map_duckdb_error(exc: duckdb.Error, action: str) -> LoadError:
    """The one place DuckDB's exceptions become syncd's: transient or terminal."""
    message = f"{action}: {_first_line(exc)}"
    if isinstance(exc, _TRANSIENT_ERRORS):
        return TransientLoadError(message)
    return TerminalLoadError(message)


def _first_line(exc: duckdb.Error) -> str:
    """DuckDB's headline; the rest repeats the query and, for CSV, whole rows of data."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _lock_error(exc: duckdb.Error, path: str) -> LockedError | None:
    """A LockedError naming the holder when `exc` says another process holds the file."""
    text = str(exc)
    if isinstance(exc, duckdb.IOException) and _LOCK_HELD.search(text):
        pid = _LOCK_PID.search(text)
        holder = f" (PID {pid.group(1)})" if pid else ""
        return LockedError(
            f"the DuckDB file {path} is in use by another process{holder}: DuckDB admits one "
            "writer process, and no reader while it writes"
        )
    if isinstance(exc, duckdb.ConnectionException) and "different configuration" in text:
        return LockedError(
            f"the DuckDB file {path} is already open in this process with other settings "
            "(read-only versus read-write)"
        )
    return None


class DuckDBWarehouse:
    """Implements `warehouses.base.Warehouse` on a DuckDB file (or `:memory:`)."""

    capabilities = Capabilities(
        staging_formats=("parquet", "csv", "ndjson"),
        transactional=True,
        json_type=True,
        remote_stage=False,
    )

    def __init__(
        self,
        path: Path | str,
        export_table: str = "fsexport",
        sync_table: str = "fssync",
        rejects_table: str = "fsrejects",
        *,
        read_only: bool = False,
    ) -> None:
        self.tables = TableNames(export=export_table, sync=sync_table, rejects=rejects_table)
        self.path = str(path)
        self.read_only = read_only
        self._lock = threading.RLock()
        self._con = self._connect()

    @classmethod
    def open_read_only(
        cls,
        path: Path | str,
        export_table: str = "fsexport",
        sync_table: str = "fssync",
        rejects_table: str = "fsrejects",
    ) -> DuckDBWarehouse:
        """For the status command: read the tables; raises LockedError while the daemon writes."""
        return cls(path, export_table, sync_table, rejects_table, read_only=True)

    def __repr__(self) -> str:
        mode = ", read_only=True" if self.read_only else ""
        return f"DuckDBWarehouse(path={self.path!r}, tables={self.tables!r}{mode})"

    def __enter__(self) -> DuckDBWarehouse:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- Warehouse ---------------------------------------------------------------------------

    def ensure_tables(self, columns: Sequence[Column]) -> tuple[Column, ...]:
        """Create or reconcile the export, sync and rejects tables; return the export columns.

        An existing table keeps its columns and their order; missing columns are added at the
        end. The columns the sync SQL relies on (EventStart, SyncdBatchId, SyncdLoadedAt) are
        always present afterwards.
        """
        self._require_writable("ensure the tables")
        with self._lock, self._transaction("ensure the tables"):
            export = self._reconcile(self.tables.export, sql.with_required(columns))
            self._reconcile(self.tables.sync, sql.SYNC_COLUMNS)
            self._reconcile(self.tables.rejects, sql.REJECTS_COLUMNS)
        return export

    def commit_batch(
        self, staged: StagedBatch, record: SyncRecord, *, replace: bool = False
    ) -> None:
        """Replace this batch's rows, rejects and sync row in one transaction; with `replace`
        (a backfill), also the old rows of its window (`sql.replace_window`)."""
        self._require_writable("commit a batch")
        batch = staged.batch
        batch_id = batch.key.id
        if record.batch_id != batch_id:
            raise TerminalLoadError(
                f"sync record {record.batch_id!r} does not belong to batch {batch_id!r}"
            )
        if batch.format not in self.capabilities.staging_formats:
            raise TerminalLoadError(f"DuckDB cannot load staged format {batch.format!r}")
        data_path = _local_path(staged.uri, batch.path)
        rejects_path = (
            _local_path(staged.rejects_uri, batch.rejects_path)
            if staged.rejects_uri is not None or batch.rejects_path is not None
            else None
        )
        action = f"commit batch {batch_id}"
        with self._lock, self._transaction(action):
            window = batch_window(batch.key)
            for query in sql.delete_batch(DUCKDB, self.tables, batch_id, window):
                self._execute(query)
            if replace and window is not None:
                *others, rows_q = sql.replace_window(DUCKDB, self.tables, window)
                for query in others:
                    self._execute(query)
                going_on = sql.going_on_rows(DUCKDB, self.tables, window)
                for old_id, n in self._con.execute(going_on.sql, list(going_on.params)).fetchall():
                    self._execute(sql.lower_rows_loaded(DUCKDB, self.tables, old_id, int(n)))
                log.info("window's old rows deleted", batch=batch_id, rows=self._count(rows_q))
            loaded = self._load_rows(batch.format, data_path, batch.columns, batch_id, record)
            if loaded != batch.rows:
                raise TerminalLoadError(
                    f"{action}: the staged file holds {loaded} rows, the batch says {batch.rows}"
                )
            rejected = 0
            if rejects_path is not None:
                rejected = self._load_rejects(rejects_path, batch_id, record)
                if rejected != batch.rejected:
                    raise TerminalLoadError(
                        f"{action}: the rejects file holds {rejected} rows, "
                        f"the batch says {batch.rejected}"
                    )
            self._execute(
                sql.insert_sync_row(
                    DUCKDB, self.tables, record, loaded, rejected, syncd.__version__
                )
            )
        log.info("batch committed", batch=batch_id, rows=loaded, rejected=rejected)

    def sync_records(self, since: datetime | None = None) -> list[SyncRecord]:
        """Committed batches ending after `since`, oldest first; none before the first commit."""
        with self._lock:
            present = [name for name, _ in self._columns(self.tables.sync)]
            if not present:
                return []
            query = sql.select_sync_rows(DUCKDB, self.tables, since, present)
            rows = self._fetch(query, "read sync rows")
        return [sql.record_from_row(row) for row in rows]

    def inconsistent_days(self, since: date) -> list[date]:
        """Days from `since` whose rows and sync rows disagree (see `sql.inconsistent_days`)."""
        lo = sql.day_start(since)
        bounded = sql.only_segment_batches(self.sync_records(lo), lo)
        with self._lock:
            if not self._columns(self.tables.sync) or not self._columns(self.tables.export):
                return []
            rows = self._fetch(
                sql.inconsistent_days(DUCKDB, self.tables, since, bounded), "check day consistency"
            )
        return [row[0] for row in rows]

    def rollback_days(
        self, first: date, last: date, *, keep: Collection[str] = ()
    ) -> RollbackResult:
        """Delete the rows, rejects and sync rows of days first..last in one transaction, but
        the batches named in `keep`."""
        self._require_writable("roll back days")
        if last < first:
            raise TerminalLoadError(f"cannot roll back: last day {last} is before {first}")
        lo, hi = sql.day_start(first), sql.day_start(last + timedelta(1))
        rows_end = sql.segment_rows_end(self.sync_records(lo), lo, hi)
        export_q, rejects_q, sync_q = sql.rollback_days(
            DUCKDB, self.tables, first, last, rows_end, keep
        )
        with self._lock, self._transaction(f"roll back {first}..{last}"):
            rows_deleted = self._count(export_q)
            rejects_deleted = self._count(rejects_q)
            sync_rows_deleted = self._count(sync_q)
        return sql.rolled_back(
            first, last, rows_deleted, sync_rows_deleted, rejects_deleted, kept=len(keep)
        )

    def check(self) -> None:
        """The file is open; unless read-only, a table can be created (then rolled back)."""
        with self._lock:
            self._fetch(Query("SELECT 1"), "read the database")
            if self.read_only:
                return
            with self._transaction("write to the database"):
                probe = quote_identifier(f"syncd_write_probe_{secrets.token_hex(6)}")
                self._execute(Query(render(_CAN_WRITE, DUCKDB, probe=probe)))
                raise _RollbackProbe  # leave nothing behind

    def close(self) -> None:
        with self._lock:
            self._con.close()

    # --- internals ---------------------------------------------------------------------------

    def _connect(self) -> duckdb.DuckDBPyConnection:
        if self.path != MEMORY:
            file = Path(self.path)
            if self.read_only and not file.exists():
                raise TerminalLoadError(f"the DuckDB file {self.path} does not exist yet")
            if not self.read_only:
                try:
                    file.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise TerminalLoadError(
                        f"cannot create the folder of {self.path}: {exc.strerror}"
                    ) from exc
        try:
            con = duckdb.connect(self.path, read_only=self.read_only)
        except duckdb.Error as exc:
            locked = _lock_error(exc, self.path)
            if locked is not None:
                raise locked from exc
            # not a database file, no such folder, no permission: retrying will not help
            raise TerminalLoadError(f"cannot open {self.path}: {_first_line(exc)}") from exc
        try:
            con.execute(_SET_UTC)
        except duckdb.Error:
            log.debug("no ICU extension: DuckDB's time zone is UTC already")
        return con

    def _require_writable(self, action: str) -> None:
        if self.read_only:
            raise TerminalLoadError(f"cannot {action}: {self.path} is open read-only")

    @contextmanager
    def _transaction(self, action: str) -> Iterator[None]:
        """BEGIN ... COMMIT; any exception rolls back, DuckDB's mapped to LoadError."""
        try:
            self._con.begin()
        except duckdb.Error as exc:
            raise map_duckdb_error(exc, action) from exc
        try:
            yield
            self._con.commit()
        except _RollbackProbe:
            self._rollback()
        except duckdb.Error as exc:
            self._rollback()
            raise map_duckdb_error(exc, action) from exc
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        try:
            self._con.rollback()
        except duckdb.Error:
            log.debug("rollback: no transaction left to roll back")

    def _execute(self, query: Query) -> None:
        self._con.execute(query.sql, list(query.params))

    def _count(self, query: Query) -> int:
        """Run an INSERT or DELETE and return the rows it touched."""
        row = self._con.execute(query.sql, list(query.params)).fetchone()
        return int(row[0]) if row else 0

    def _fetch(self, query: Query, action: str) -> list[tuple[Any, ...]]:
        try:
            return list(self._con.execute(query.sql, list(query.params)).fetchall())
        except duckdb.Error as exc:
            raise map_duckdb_error(exc, action) from exc

    def _columns(self, table: str) -> list[tuple[str, str]]:
        query = sql.table_columns(DUCKDB, table, schema=None)
        return [(str(n), str(t)) for n, t in self._fetch(query, f"read the columns of {table}")]

    def _reconcile(self, table: str, wanted: Sequence[Column]) -> tuple[Column, ...]:
        """Create `table` with `wanted`, or add the columns it lacks; return its columns."""
        existing = self._columns(table)
        qualified = self.tables.qualified(table)
        if not existing:
            self._execute(sql.create_table(DUCKDB, qualified, wanted))
            return tuple(wanted)
        added = sql.missing_columns([n for n, _ in existing], wanted, DUCKDB.fold_case)
        for column in added:
            self._execute(sql.add_column(DUCKDB, qualified, column))
        if added:
            log.info("columns added", table=table, columns=[c.name for c in added])
        current = tuple(Column(name, sql.field_type_of(type_)) for name, type_ in existing)
        return (*current, *added)

    def _load_rows(
        self,
        fmt: StagedFormat,
        path: Path,
        columns: Sequence[Column],
        batch_id: str,
        record: SyncRecord,
    ) -> int:
        """INSERT ... SELECT the staged file by column name; return the rows inserted."""
        file_columns = [c for c in columns if c.name.lower() != BATCH_ID.name.lower()]
        has_loaded_at = any(c.name.lower() == LOADED_AT.name.lower() for c in file_columns)
        expressions = [_select_expression(fmt, c) for c in file_columns]
        targets = [c.name for c in file_columns]
        params: list[Any] = [batch_id]
        expressions.append("{p}")
        targets.append(BATCH_ID.name)
        if not has_loaded_at:
            expressions.append("{p}")
            targets.append(LOADED_AT.name)
            params.append(sql.to_db_timestamp(record.committed_at))
        source_params: list[Any] = [str(path)]
        if fmt == "csv":
            source_params.append(_compression_of(path))
        elif fmt == "ndjson":
            source_params += [{c.name: _NDJSON_TYPES[c.type] for c in file_columns}]
            source_params.append(_compression_of(path))
        statement = render(
            _LOAD_ROWS,
            DUCKDB,
            self.tables,
            targets=sql.column_list(targets),
            expressions=", ".join(e.replace("{p}", DUCKDB.param) for e in expressions),
            source=_SOURCES[fmt].replace("{p}", DUCKDB.param),
        )
        return self._count(Query(statement, (*params, *source_params)))

    def _load_rejects(self, path: Path, batch_id: str, record: SyncRecord) -> int:
        source = _SOURCES["ndjson"].replace("{p}", DUCKDB.param)
        statement = render(_LOAD_REJECTS, DUCKDB, self.tables, source=source)
        params = (
            batch_id,
            sql.to_db_timestamp(record.committed_at),
            str(path),
            _REJECT_KEYS,
            _compression_of(path),
        )
        return self._count(Query(statement, params))

    # --- the round trip (`syncd check --round-trip`) ---------------------------------------

    def read_rows(self, batch_id: str) -> list[dict[str, Any]]:
        """The export rows of one batch, typed as stored (see `Warehouse.read_rows`)."""
        with self._lock:
            columns = [
                Column(name, sql.field_type_of(type_))
                for name, type_ in self._columns(self.tables.export)
            ]
            statement = render(
                "SELECT {columns} FROM {export} WHERE {SyncdBatchId} = {p}",
                DUCKDB,
                self.tables,
                columns=sql.column_list(columns),
            )
            rows = self._fetch(Query(statement, (batch_id,)), f"read the rows of {batch_id}")
        return [
            {c.name: sql.stored_value(v, c.type) for c, v in zip(columns, row, strict=True)}
            for row in rows
        ]

    def drop_tables(self) -> None:
        """Drop the export, sync and rejects tables, if they exist, in one transaction."""
        self._require_writable("drop the tables")
        with self._lock, self._transaction("drop the tables"):
            for table in (self.tables.export, self.tables.sync, self.tables.rejects):
                qualified = self.tables.qualified(table)
                self._execute(
                    Query(render("DROP TABLE IF EXISTS {table}", DUCKDB, table=qualified))
                )


class _RollbackProbe(Exception):
    """Ends the write probe of `check` by rolling its transaction back."""


def _select_expression(fmt: StagedFormat, column: Column) -> str:
    """How one staged column is read, by name."""
    quoted = quote_identifier(column.name)
    if fmt == "csv":
        return _CSV_EXPRESSIONS[column.type].replace("{column}", quoted)
    if fmt == "ndjson":
        return _NDJSON_EXPRESSIONS.get(column.type, "{column}").replace("{column}", quoted)
    return quoted


def _local_path(uri: str | None, fallback: Path | None) -> Path:
    """The local file to load: the staged path, or the transform's file for a remote stage."""
    if uri is not None and uri.startswith("file://"):
        path: Path | None = Path(unquote(urlparse(uri).path))
    elif uri is not None and "://" not in uri:
        path = Path(uri)
    else:
        path = fallback  # s3://, gs://: DuckDB reads the local copy the transform wrote
    if path is None:
        raise TerminalLoadError(f"no local file to load for {uri!r}")
    if _GLOB_CHARACTERS & set(str(path)):
        raise TerminalLoadError(
            f"refusing to load {str(path)!r}: DuckDB would read it as a glob pattern"
        )
    return path


def _compression_of(path: Path) -> str:
    """'gzip' when the file starts with the gzip magic bytes, else 'none'."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(2)
    except OSError as exc:
        raise TransientLoadError(f"cannot read staged file {path}: {exc.strerror}") from exc
    return "gzip" if magic == b"\x1f\x8b" else "none"
