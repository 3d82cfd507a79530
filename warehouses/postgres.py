"""PostgreSQL as the warehouse, loading staged files with COPY ... FROM STDIN (psycopg 3).

Also home of `DbApiWarehouse`, the part PostgreSQL and Redshift share: a PEP 249 connection,
one transaction per commit, table reconciliation, sync rows, consistency and rollback, all
through the SQL of `warehouses.sql`. A subclass supplies the dialect, the bulk load and the
one function that sorts its driver's exceptions into transient and terminal.

PostgreSQL specifics:
- TLS: sslmode defaults to verify-full, or prefer when the host is this machine (loopback
  or a Unix socket): see `default_sslmode`; a refused certificate is terminal;
- CustomVars is JSONB; strings TEXT (no length limit, so nothing is truncated);
- the local stage only: COPY reads the transform's file through the client connection:
  CSV (gzip) is streamed as it is (`HEADER MATCH` checks the header against the column list),
  Parquet is re-encoded as CSV one row group at a time, NDJSON is fed row by row to COPY
  (never as INSERTs); rejects (NDJSON) likewise.
"""

from __future__ import annotations

import gzip
import io
import re
import secrets
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import orjson
import structlog

import syncd
from syncd.batch import StagedBatch, SyncRecord
from syncd.errors import LoadError, SyncdError, TerminalLoadError, TransientLoadError
from syncd.fields import BATCH_ID, KNOWN_FIELDS, LOADED_AT, TRACE_COLUMNS, Column, FieldType
from syncd.lease import LeaseHolder, TableLease
from syncd.net import is_loopback_host
from syncd.timeutil import parse_timestamp, utcnow
from syncd.transform.convert import batch_window
from warehouses import sql
from warehouses.base import Capabilities, RollbackResult, quote_identifier, validate_identifier
from warehouses.sql import POSTGRES, Dialect, Query, TableNames, render

if TYPE_CHECKING:
    import psycopg

log = structlog.get_logger(__name__)

COPY_CHUNK = 1024 * 1024

# SQLSTATE classes and codes a later attempt may not meet: connection trouble, serialization
# failures and deadlocks, lock timeouts, resource exhaustion, cancellation and shutdown.
_TRANSIENT_CLASSES = ("08", "40", "53", "57")
_TRANSIENT_CODES = frozenset({"55P03", "55006", "58030", "XX001"})


def is_transient_sqlstate(code: str | None) -> bool:
    """True for SQLSTATEs worth retrying (shared by PostgreSQL and Redshift)."""
    if not code:
        return False
    return code.startswith(_TRANSIENT_CLASSES) or code in _TRANSIENT_CODES


def default_sslmode(host: str) -> str:
    """libpq sslmode when [postgres] SSLMode is not set: "verify-full" (the certificate must
    chain to a trusted CA and name the host; no password goes to a server refusing TLS), but
    "prefer" when every host is this machine: loopback (127.0.0.0/8, ::1, localhost) or a
    Unix socket (a path)."""
    hosts = [h.strip() for h in host.split(",")]
    return "prefer" if all(_is_local(h) for h in hosts) else "verify-full"


def _is_local(host: str) -> bool:
    """A Unix socket (a path, or an abstract "@name") or a loopback host."""
    return host.startswith(("/", "@")) or is_loopback_host(host)


#: libpq's words for a TLS connection it refused: a certificate that fails verification, or a
#: server that will not speak TLS when the sslmode requires it. Retrying cannot help.
_TLS_REFUSED = re.compile(
    r"certificate verify failed|server certificate for .* does not match|"
    r"does not match host name|server does not support SSL|SSL was required",
    re.IGNORECASE,
)


def map_postgres_error(exc: Exception, action: str) -> LoadError:
    """The one place psycopg's exceptions become syncd's: transient or terminal."""
    import psycopg

    if isinstance(exc, psycopg.Error):
        code = exc.sqlstate
        diag = exc.diag
        primary = diag.message_primary or str(exc).strip().splitlines()[0]
        detail = f" ({diag.context.strip().splitlines()[0]})" if diag.context else ""
        message = f"{action}: {primary}{detail}" + (f" [SQLSTATE {code}]" if code else "")
        if code is None and _TLS_REFUSED.search(str(exc)):
            return TerminalLoadError(f"{message} (see [postgres] SSLMode)")
        if is_transient_sqlstate(code) or (
            code is None and isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
        ):
            return TransientLoadError(message)
        return TerminalLoadError(message)
    if isinstance(exc, OSError):
        return TransientLoadError(f"{action}: {exc.strerror or exc}")
    return TerminalLoadError(f"{action}: {type(exc).__name__}: {exc}")


#: hauser-era columns whose values the export API now sends under another name: when a batch
#: leaves them empty, they are filled from their successor after the load.
LEGACY_ALIASES: dict[str, str] = {
    "PageAgent": "PageUserAgent",
    "EventTargetSelectorTok": "EventTargetSelector",
}
_CANONICAL_NAMES = {n.lower(): n for n in (*KNOWN_FIELDS, *(c.name for c in TRACE_COLUMNS))}

_FILL_LEGACY = (
    "UPDATE {export} SET {legacy} = {source} WHERE {SyncdBatchId} = {p} AND {legacy} IS NULL"
)
_CAN_WRITE = "CREATE TABLE {probe} ({ok} INTEGER)"
_CREATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS {schema}"
_COPY_TEXT = "COPY {table} ({columns}) FROM STDIN"
_COPY_CSV = "COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv, HEADER {header})"
_COUNT_BATCH = "SELECT COUNT(*) FROM {export} WHERE {SyncdBatchId} = {p}"
_FILL_LOADED_AT = (
    "UPDATE {export} SET {SyncdLoadedAt} = {p} "
    "WHERE {SyncdBatchId} = {p} AND {SyncdLoadedAt} IS NULL"
)


class _RollbackProbe(Exception):
    """Ends the write probe of `check` by rolling its transaction back."""


class DbApiWarehouse(ABC):
    """The SQL warehouse over a PEP 249 connection; subclasses load the staged file.

    Subclasses set `dialect`, `capabilities`, `name`, and implement `_connect`, `_map_error`
    and `_load`; they may override `_create_export_table` (e.g. for a sort key).

    One writer: the lease (`syncd.lease.TableLease`) is a row of `<SyncTable>_lease`, kept on
    a connection of its own. Once this object has acquired it, every commit reads that row
    inside its transaction (`fence_lock` appended) and refuses to commit when another holder
    has taken it over. With `lock_lease_table` (Redshift) the commit transaction starts with
    LOCK of the lease table, as does every lease transaction, so the fence reads the lease as
    it is (a snapshot taken after the lock) and no takeover can pass it until the commit ends.
    """

    dialect: Dialect = POSTGRES
    name = "SQL"
    capabilities = Capabilities(staging_formats=("csv",))
    #: The driver's placeholder, for the lease's statements.
    param_style = "%s"
    #: Appended to the commit's fence read: a row lock that makes a takeover wait for it.
    fence_lock = ""
    #: LOCK the lease table first in every lease and commit transaction (see the class doc).
    lock_lease_table = False

    def __init__(self, tables: TableNames, *, lease_clock: Callable[[], datetime] = utcnow) -> None:
        self.tables = tables
        self._lock = threading.RLock()
        self._con: Any = None
        self._lease_clock = lease_clock
        self._lease: TableLease | None = None
        self._lease_holder: LeaseHolder | None = None

    # --- to override -------------------------------------------------------------------------

    @abstractmethod
    def _connect(self) -> Any:
        """A new DB-API connection with autocommit off."""

    @abstractmethod
    def _map_error(self, exc: Exception, action: str) -> LoadError:
        """The driver's exception as a transient or terminal LoadError."""

    @abstractmethod
    def _load(self, cursor: Any, staged: StagedBatch, record: SyncRecord) -> int:
        """Bulk-load the staged rows into the export table; return the rows loaded."""

    @abstractmethod
    def _load_rejects(self, cursor: Any, staged: StagedBatch, record: SyncRecord) -> int:
        """Load the rejects file, if any, into the rejects table; return its rows."""

    def _create_export_table(self, qualified: str, columns: Sequence[Column]) -> Query:
        return sql.create_table(self.dialect, qualified, columns)

    def _add_column(self, qualified: str, column: Column, *, export: bool) -> Query:
        return sql.add_column(self.dialect, qualified, column)

    def _describe_failure(self, exc: Exception, staged: StagedBatch) -> str:
        """Extra words for a failed load (Redshift reads its load-error log here)."""
        return ""

    # --- Warehouse ---------------------------------------------------------------------------

    def ensure_tables(self, columns: Sequence[Column]) -> tuple[Column, ...]:
        """Create or reconcile the export, sync and rejects tables; return the export columns.

        An existing table keeps its columns and their order; missing columns are added with
        ALTER TABLE ADD COLUMN. EventStart, SyncdBatchId and SyncdLoadedAt are always present.
        """
        with self._lock, self._transaction("ensure the tables") as cursor:
            self._create_schema(cursor)
            export = self._reconcile(
                cursor, self.tables.export, sql.with_required(columns), export=True
            )
            self._reconcile(cursor, self.tables.sync, sql.SYNC_COLUMNS)
            self._reconcile(cursor, self.tables.rejects, sql.REJECTS_COLUMNS)
        return export

    def commit_batch(
        self, staged: StagedBatch, record: SyncRecord, *, replace: bool = False
    ) -> None:
        """Replace this batch's rows, rejects and sync row in one transaction; with `replace`
        (a backfill), also the old rows of its window (`sql.replace_window`)."""
        batch = staged.batch
        batch_id = batch.key.id
        action = f"commit batch {batch_id}"
        if record.batch_id != batch_id:
            raise TerminalLoadError(
                f"sync record {record.batch_id!r} does not belong to batch {batch_id!r}"
            )
        if batch.format not in self.capabilities.staging_formats:
            raise TerminalLoadError(f"{self.name} cannot load staged format {batch.format!r}")
        if BATCH_ID.name not in {c.name for c in batch.columns}:
            raise TerminalLoadError(f"{action}: the staged file has no {BATCH_ID.name} column")
        with self._lock:
            try:
                with self._transaction(action) as cursor:
                    self._lock_lease(cursor)
                    window = batch_window(batch.key)
                    for query in sql.delete_batch(self.dialect, self.tables, batch_id, window):
                        self._execute(cursor, query)
                    if replace and window is not None:
                        *others, rows_q = sql.replace_window(self.dialect, self.tables, window)
                        for query in others:
                            self._execute(cursor, query)
                        going_on = sql.going_on_rows(self.dialect, self.tables, window)
                        for old_id, n in self._fetch(cursor, going_on):
                            lower = sql.lower_rows_loaded(self.dialect, self.tables, old_id, int(n))
                            self._execute(cursor, lower)
                        deleted = self._execute(cursor, rows_q)
                        log.info("window's old rows deleted", batch=batch_id, rows=deleted)
                    loaded = self._load(cursor, staged, record)
                    self._check_loaded(cursor, action, batch_id, loaded, batch.rows)
                    if LOADED_AT.name not in {c.name for c in batch.columns}:
                        fill = render(_FILL_LOADED_AT, self.dialect, self.tables)
                        at = sql.to_db_timestamp(record.committed_at)
                        self._execute(cursor, Query(fill, (at, batch_id)))
                    self._fill_legacy_columns(cursor, batch.columns, batch_id)
                    rejected = self._load_rejects(cursor, staged, record)
                    if rejected != batch.rejected:
                        raise TerminalLoadError(
                            f"{action}: the rejects file holds {rejected} rows, "
                            f"the batch says {batch.rejected}"
                        )
                    self._execute(
                        cursor,
                        sql.insert_sync_row(
                            self.dialect, self.tables, record, loaded, rejected, syncd.__version__
                        ),
                    )
                    self._fence(cursor, action)
            except LoadError as exc:
                extra = self._describe_failure(exc, staged)
                if extra:
                    raise type(exc)(f"{exc}; {extra}") from exc
                raise

    def sync_records(self, since: datetime | None = None) -> list[SyncRecord]:
        """Committed batches ending after `since`, oldest first; none before the first commit."""
        with self._lock, self._transaction("read sync rows") as cursor:
            present = [name for name, _ in self._columns(cursor, self.tables.sync)]
            if not present:
                return []
            query = sql.select_sync_rows(self.dialect, self.tables, since, present)
            rows = self._fetch(cursor, query)
        return [sql.record_from_row(row) for row in rows]

    def inconsistent_days(self, since: date) -> list[date]:
        """Days from `since` whose rows and sync rows disagree (see `sql.inconsistent_days`)."""
        lo = sql.day_start(since)
        bounded = sql.only_segment_batches(self.sync_records(lo), lo)
        with self._lock, self._transaction("check day consistency") as cursor:
            if not self._columns(cursor, self.tables.sync) or not self._columns(
                cursor, self.tables.export
            ):
                return []
            query = sql.inconsistent_days(self.dialect, self.tables, since, bounded)
            rows = self._fetch(cursor, query)
        return [_as_date(row[0]) for row in rows]

    def rollback_days(
        self, first: date, last: date, *, keep: Collection[str] = ()
    ) -> RollbackResult:
        """Delete the rows, rejects and sync rows of days first..last in one transaction, but
        the batches named in `keep`."""
        if last < first:
            raise TerminalLoadError(f"cannot roll back: last day {last} is before {first}")
        lo, hi = sql.day_start(first), sql.day_start(last + timedelta(1))
        rows_end = sql.segment_rows_end(self.sync_records(lo), lo, hi)
        export_q, rejects_q, sync_q = sql.rollback_days(
            self.dialect, self.tables, first, last, rows_end, keep
        )
        with self._lock, self._transaction(f"roll back {first}..{last}") as cursor:
            rows_deleted = self._execute(cursor, export_q)
            rejects_deleted = self._execute(cursor, rejects_q)
            sync_rows_deleted = self._execute(cursor, sync_q)
        return sql.rolled_back(
            first, last, rows_deleted, sync_rows_deleted, rejects_deleted, kept=len(keep)
        )

    def create_views(self) -> None:
        """`warehouses.base.MakesViews`: create or replace the views in one transaction."""
        from warehouses.views import view_statements

        with self._lock, self._transaction("create the views") as cursor:
            columns = [name for name, _ in self._columns(cursor, self.tables.export)]
            for statement in view_statements(
                self.dialect.name, self.tables.export, self.tables.schema, columns
            ):
                self._execute(cursor, Query(statement))

    def check(self) -> None:
        """Connect, read, and create a table in the schema (rolled back, nothing left)."""
        with self._lock:
            with self._transaction("read the database") as cursor:
                self._fetch(cursor, Query("SELECT 1"))
            with self._transaction("create a table") as cursor:
                if self.tables.schema is not None:
                    schema = quote_identifier(self.tables.schema)
                    create = render(_CREATE_SCHEMA, self.dialect, schema=schema)
                    self._execute(cursor, Query(create))
                probe = self.tables.qualified(f"syncd_write_probe_{secrets.token_hex(6)}")
                self._execute(cursor, Query(render(_CAN_WRITE, self.dialect, probe=probe)))
                raise _RollbackProbe

    # --- LeasedWarehouse ----------------------------------------------------------------------

    def acquire_lease(self, holder: LeaseHolder, ttl: timedelta) -> None:
        """Take the writer lease of this SyncTable (or a stale one); LockedError names the
        live holder. From now on every commit checks that the lease is still `holder`'s."""
        with self._lock, self._transaction("create the schema") as cursor:
            self._create_schema(cursor)  # the lease table lives there, made before the others
        lease = self._table_lease()
        self._lease_call(lambda: lease.acquire_lease(holder, ttl), "acquire the writer lease")
        self._lease_holder = holder

    def renew_lease(self, holder: LeaseHolder, ttl: timedelta) -> None:
        lease = self._table_lease()
        self._lease_call(lambda: lease.renew_lease(holder, ttl), "renew the writer lease")

    def release_lease(self, holder: LeaseHolder) -> None:
        lease = self._table_lease()
        self._lease_call(lambda: lease.release_lease(holder), "release the writer lease")

    def lease_holder(self) -> str | None:
        """Who holds the writer lease now, or None."""
        lease = self._table_lease()
        result: str | None = self._lease_call(lease.holder, "read the writer lease")
        return result

    def close(self) -> None:
        if self._lease is not None:
            self._lease.close()
        with self._lock:
            if self._con is not None:
                try:
                    self._con.close()
                except Exception as exc:  # closing a broken connection is not news
                    log.debug("close failed", error=str(exc))
                self._con = None

    # --- internals ---------------------------------------------------------------------------

    def _create_schema(self, cursor: Any) -> None:
        if self.tables.schema is not None:
            schema = quote_identifier(self.tables.schema)
            self._execute(cursor, Query(render(_CREATE_SCHEMA, self.dialect, schema=schema)))

    def _table_lease(self) -> TableLease:
        if self._lease is None:
            table = validate_identifier(f"{self.tables.sync}_lease", "lease table")
            self._lease = TableLease(
                self._lease_connection,
                table,
                self.tables.sync,
                schema=self.tables.schema,
                param=self.param_style,
                clock=self._lease_clock,
                lock_table=self.lock_lease_table,
            )
        return self._lease

    def _lease_connection(self) -> Any:
        """A connection of the lease's own, in autocommit mode."""
        con = self._connect()
        con.autocommit = True
        return con

    def _lease_call(self, call: Callable[[], Any], action: str) -> Any:
        try:
            return call()
        except SyncdError:
            raise
        except Exception as exc:
            raise self._map_error(exc, action) from exc

    def _lock_lease(self, cursor: Any) -> None:
        """First statement of a commit (Redshift): LOCK the lease table, when this object
        took the lease."""
        if self.lock_lease_table and self._lease_holder is not None and self._lease is not None:
            self._execute(cursor, Query(self._lease.lock_query()))

    def _fence(self, cursor: Any, action: str) -> None:
        """Refuse the commit when this object took the lease and it has been taken over."""
        holder, lease = self._lease_holder, self._lease
        if holder is None or lease is None:
            return
        text, params = lease.fence_query(self.fence_lock)
        rows = self._fetch(cursor, Query(text, params))
        if rows and rows[0][0] == holder.id:
            return
        # named from this transaction's read: the lease's own connection would wait for the
        # LOCK this transaction holds (Redshift)
        current = str(rows[0][1]) if rows else "nobody"
        raise TerminalLoadError(
            f"{action}: refused: {holder.describe()} no longer holds the writer lease of "
            f"{lease.name} (now held by {current}); another syncd took over"
        )

    def _connection(self) -> Any:
        if self._con is None:
            self._con = self._connect()
        return self._con

    @contextmanager
    def _transaction(self, action: str) -> Iterator[Any]:
        """One transaction on a cursor; commit at the end, roll back on any exception.

        A driver exception is mapped to LoadError; a lost connection is dropped, so the next
        call reconnects.
        """
        try:
            con = self._connection()
            cursor = con.cursor()
        except SyncdError:
            raise
        except Exception as exc:
            self._drop_connection()
            raise self._map_error(exc, action) from exc
        try:
            yield cursor
            con.commit()
        except _RollbackProbe:
            self._rollback(con)
        except SyncdError:
            self._rollback(con)
            raise
        except Exception as exc:
            self._rollback(con)
            mapped = self._map_error(exc, action)
            if mapped.transient:
                self._drop_connection()
            raise mapped from exc
        except BaseException:
            self._rollback(con)
            raise
        finally:
            try:
                cursor.close()
            except Exception as exc:  # a cursor of a dead connection
                log.debug("cursor close failed", error=str(exc))

    def _rollback(self, con: Any) -> None:
        try:
            con.rollback()
        except Exception as exc:
            log.debug("rollback failed; dropping the connection", error=str(exc))
            self._drop_connection()

    def _drop_connection(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            try:
                con.close()
            except Exception as exc:
                log.debug("close of a broken connection failed", error=str(exc))

    def _execute(self, cursor: Any, query: Query) -> int:
        """Run one statement; return the rows it touched (-1 when not known)."""
        cursor.execute(query.sql, query.params or None)
        return int(cursor.rowcount if cursor.rowcount is not None else -1)

    def _fetch(self, cursor: Any, query: Query) -> list[tuple[Any, ...]]:
        cursor.execute(query.sql, query.params or None)
        return [tuple(row) for row in cursor.fetchall()]

    def _columns(self, cursor: Any, table: str) -> list[tuple[str, str]]:
        query = sql.table_columns(self.dialect, table, schema=self.tables.schema)
        return [(str(n), str(t)) for n, t in self._fetch(cursor, query)]

    def _reconcile(
        self, cursor: Any, table: str, wanted: Sequence[Column], *, export: bool = False
    ) -> tuple[Column, ...]:
        """Create `table` with `wanted`, or add the columns it lacks; return its columns."""
        existing = self._columns(cursor, table)
        qualified = self.tables.qualified(table)
        if not existing:
            create = (
                self._create_export_table(qualified, wanted)
                if export
                else sql.create_table(self.dialect, qualified, wanted)
            )
            self._execute(cursor, create)
            log.info("table created", table=table)
            return tuple(wanted)
        added = sql.missing_columns([n for n, _ in existing], wanted, self.dialect.fold_case)
        for column in added:
            self._execute(cursor, self._add_column(qualified, column, export=export))
        if added:
            log.info("columns added", table=table, columns=[c.name for c in added])
        current = tuple(
            Column(self._canonical(name, wanted), sql.field_type_of(type_))
            for name, type_ in existing
        )
        return (*current, *added)

    def _canonical(self, name: str, wanted: Sequence[Column]) -> str:
        """A catalog name under syncd's spelling where the warehouse folds case (Redshift
        shows `indvid` for `IndvId`); the transform matches fields by exact name."""
        if not self.dialect.fold_case:
            return name
        spelled = {c.name.lower(): c.name for c in wanted}
        return spelled.get(name.lower(), _CANONICAL_NAMES.get(name.lower(), name))

    def _fill_legacy_columns(self, cursor: Any, columns: Sequence[Column], batch_id: str) -> None:
        names = {c.name for c in columns}
        for legacy, source in LEGACY_ALIASES.items():
            if legacy in names and source in names:
                statement = render(
                    _FILL_LEGACY,
                    self.dialect,
                    self.tables,
                    legacy=quote_identifier(legacy),
                    source=quote_identifier(source),
                )
                self._execute(cursor, Query(statement, (batch_id,)))

    def _check_loaded(
        self, cursor: Any, action: str, batch_id: str, loaded: int, expected: int
    ) -> None:
        """The load put exactly the batch's rows in, each tagged with the batch id."""
        tagged = self._fetch(
            cursor, Query(render(_COUNT_BATCH, self.dialect, self.tables), (batch_id,))
        )[0][0]
        if loaded != expected or int(tagged) != expected:
            raise TerminalLoadError(
                f"{action}: the staged file holds {loaded} rows ({tagged} of this batch), "
                f"the batch says {expected}"
            )

    # --- the round trip (`syncd check --round-trip`) ---------------------------------------

    def read_rows(self, batch_id: str) -> list[dict[str, Any]]:
        """The export rows of one batch, typed as stored (see `Warehouse.read_rows`); columns
        under syncd's spelling where the warehouse folds case."""
        with self._lock, self._transaction(f"read the rows of {batch_id}") as cursor:
            existing = self._columns(cursor, self.tables.export)
            statement = render(
                "SELECT {columns} FROM {export} WHERE {SyncdBatchId} = {p}",
                self.dialect,
                self.tables,
                columns=sql.column_list([name for name, _ in existing]),
            )
            rows = self._fetch(cursor, Query(statement, (batch_id,)))
        columns = [Column(self._canonical(n, ()), sql.field_type_of(t)) for n, t in existing]
        return [
            {c.name: sql.stored_value(v, c.type) for c, v in zip(columns, row, strict=True)}
            for row in rows
        ]

    def drop_tables(self) -> None:
        """Drop the export, sync, rejects and lease tables, if they exist, in one transaction."""
        lease = validate_identifier(f"{self.tables.sync}_lease", "lease table")
        with self._lock, self._transaction("drop the tables") as cursor:
            for table in (self.tables.export, self.tables.sync, self.tables.rejects, lease):
                qualified = self.tables.qualified(table)
                self._execute(
                    cursor,
                    Query(render("DROP TABLE IF EXISTS {table}", self.dialect, table=qualified)),
                )


class PostgresWarehouse(DbApiWarehouse):
    """Implements `warehouses.base.Warehouse` on PostgreSQL, loading from the local stage."""

    dialect = POSTGRES
    name = "PostgreSQL"
    fence_lock = " FOR SHARE"
    capabilities = Capabilities(
        staging_formats=("csv", "parquet", "ndjson"),
        transactional=True,
        json_type=True,
        remote_stage=False,
    )

    def __init__(
        self,
        conninfo: str = "",
        *,
        host: str = "",
        port: int = 5432,
        user: str = "",
        password: str = "",
        dbname: str = "",
        sslmode: str | None = None,
        schema: str | None = "public",
        export_table: str = "fsexport",
        sync_table: str = "fssync",
        rejects_table: str = "fsrejects",
        connect_timeout: int = 30,
        lease_clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(
            TableNames(export=export_table, sync=sync_table, rejects=rejects_table, schema=schema),
            lease_clock=lease_clock,
        )
        self._conninfo = conninfo
        self._params: dict[str, Any] = {
            k: v
            for k, v in {
                "host": host,
                "port": port if host else None,
                "user": user,
                "password": password,
                "dbname": dbname,
                "sslmode": (sslmode or default_sslmode(host)) if host else None,
                "connect_timeout": connect_timeout,
                "application_name": f"syncd/{syncd.__version__}",
            }.items()
            if v
        }
        self._where = f"{host}:{port}/{dbname}" if host else "(conninfo)"

    def __repr__(self) -> str:
        return f"PostgresWarehouse(server={self._where!r}, tables={self.tables!r})"

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        try:
            con = psycopg.connect(self._conninfo, autocommit=False, **self._params)
        except psycopg.Error as exc:
            raise self._map_error(exc, f"cannot connect to PostgreSQL at {self._where}") from exc
        con.execute("SET TIME ZONE 'UTC'")
        con.commit()
        return con

    def _map_error(self, exc: Exception, action: str) -> LoadError:
        return map_postgres_error(exc, action)

    def _load(self, cursor: Any, staged: StagedBatch, record: SyncRecord) -> int:
        batch = staged.batch
        path = _local_file(staged.uri, batch.path)
        names = sql.column_list(batch.columns)
        table = self.tables.qualified(self.tables.export)
        if batch.format == "ndjson":
            statement = render(_COPY_TEXT, self.dialect, table=table, columns=names)
            return _copy_rows(cursor, statement, _ndjson_rows(path, batch.columns))
        header = "MATCH" if batch.format == "csv" and _server_version(cursor) >= 150000 else "true"
        statement = render(_COPY_CSV, self.dialect, table=table, columns=names, header=header)
        if batch.format == "csv":
            return _copy_chunks(cursor, statement, _gunzipped_chunks(path))
        return _copy_chunks(cursor, statement, parquet_csv_chunks(path, batch.columns))

    def _load_rejects(self, cursor: Any, staged: StagedBatch, record: SyncRecord) -> int:
        path = rejects_file(staged)
        if path is None:
            return 0
        statement = render(
            _COPY_TEXT,
            self.dialect,
            table=self.tables.qualified(self.tables.rejects),
            columns=sql.column_list(sql.REJECTS_COLUMNS),
        )
        rows = reject_rows(path, staged.batch.key.id, record.committed_at)
        return _copy_rows(cursor, statement, rows)


# --- staged files as COPY input (also used by the Redshift stand-in) -------------------------


def parquet_csv_chunks(
    source: Path | IO[bytes], columns: Sequence[Column] | None = None
) -> Iterator[bytes]:
    """A Parquet file as CSV with a header, one row group at a time.

    Strings are always quoted and NULL is an empty unquoted field, so COPY keeps "" and NULL
    apart; timestamps are written naive (UTC), as stored.
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(source)
    names = [c.name for c in columns] if columns is not None else None
    first = True
    for index in range(parquet.num_row_groups):
        table = parquet.read_row_group(index, columns=names)
        buffer = io.BytesIO()
        options = pacsv.WriteOptions(include_header=first, quoting_style="needed")
        pacsv.write_csv(table, buffer, options)
        first = False
        yield buffer.getvalue()
    if first:  # no row groups: the header alone
        header = ",".join(f'"{n}"' for n in (names or parquet.schema_arrow.names))
        yield (header + "\n").encode()


def _gunzipped_chunks(path: Path) -> Iterator[bytes]:
    with _open_maybe_gzip(path) as handle:
        while chunk := handle.read(COPY_CHUNK):
            yield chunk


def _open_maybe_gzip(path: Path) -> IO[bytes]:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def _ndjson_rows(path: Path, columns: Sequence[Column]) -> Iterator[tuple[Any, ...]]:
    """Rows of a gzip NDJSON file in column order: timestamps naive UTC, JSON as text."""
    with _open_maybe_gzip(path) as handle:
        for line in handle:
            if not line.strip():
                continue
            obj = orjson.loads(line)
            yield tuple(_ndjson_value(obj.get(c.name), c.type) for c in columns)


def _ndjson_value(value: Any, type_: FieldType) -> Any:
    if value is None:
        return None
    if type_ is FieldType.TIMESTAMP:
        return sql.to_db_timestamp(parse_timestamp(str(value)))
    if type_ is FieldType.JSON:
        return value if isinstance(value, str) else orjson.dumps(value).decode()
    return value


def reject_rows(path: Path, batch_id: str, rejected_at: datetime) -> Iterator[tuple[Any, ...]]:
    """Rows for the rejects table (REJECTS_COLUMNS order) from the rejects NDJSON file."""
    at = sql.to_db_timestamp(rejected_at)
    with _open_maybe_gzip(path) as handle:
        for line in handle:
            if line.strip():
                obj = orjson.loads(line)
                yield (batch_id, obj.get("position"), obj.get("reason"), obj.get("raw"), at)


def rejects_file(staged: StagedBatch) -> Path | None:
    """The local rejects file of a staged batch, when it has one."""
    batch = staged.batch
    if staged.rejects_uri is None and batch.rejects_path is None:
        return None
    return _local_file(staged.rejects_uri, batch.rejects_path)


def _local_file(uri: str | None, fallback: Path | None) -> Path:
    """The local file to COPY from: the staged path, or the transform's file otherwise."""
    if uri is not None and "://" not in uri:
        return Path(uri)
    if uri is not None and uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(uri).path))
    if fallback is None:
        raise TerminalLoadError(f"no local file to load for {uri!r}")
    return fallback


def _copy_chunks(cursor: Any, statement: str, chunks: Iterator[bytes]) -> int:
    with cursor.copy(statement) as copy:
        for chunk in chunks:
            copy.write(chunk)
    return int(cursor.rowcount)


def _copy_rows(cursor: Any, statement: str, rows: Iterator[tuple[Any, ...]]) -> int:
    with cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
    return int(cursor.rowcount)


def _server_version(cursor: Any) -> int:
    return int(cursor.connection.info.server_version)


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


__all__ = [
    "DbApiWarehouse",
    "PostgresWarehouse",
    "default_sslmode",
    "is_transient_sqlstate",
    "map_postgres_error",
    "parquet_csv_chunks",
    "reject_rows",
    "rejects_file",
]


# --- the plugin declarations (warehouses.plugin): the [postgres] section and Provider "postgres" -

from dataclasses import dataclass as _dataclass  # noqa: E402

from syncd.config.keys import Key, Kind  # noqa: E402
from syncd.config.secret import Secret  # noqa: E402
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


@_dataclass(frozen=True)
class PostgresSettings:
    host: str
    port: int
    user: str
    password: Secret
    db: str
    database_schema: str
    export_table: str
    sync_table: str
    rejects_table: str
    ssl_mode: str | None  # None: the adapter decides from the host (default_sslmode)


def _validate(ctx: SettleContext, provider: str) -> None:
    check_names(ctx, "postgres", "DatabaseSchema")


SECTION = ConfigSection(
    "postgres",
    'PostgreSQL, loaded with COPY FROM STDIN (Provider = "postgres").',
    (
        Key("postgres", "Host", Kind.STRING, "127.0.0.1", "Server host name or address."),
        Key("postgres", "Port", Kind.PORT, 5432, "Server port."),
        Key("postgres", "User", Kind.STRING, "", 'User name; required with Provider "postgres".'),
        Key("postgres", "Password", Kind.SECRET, "", "Password."),
        Key("postgres", "DB", Kind.STRING, "", 'Database name; required with Provider "postgres".'),
        Key("postgres", "DatabaseSchema", Kind.STRING, "public", "Schema of the tables."),
        *table_keys("postgres", hauser=False),
        Key(
            "postgres",
            "SSLMode",
            Kind.CHOICE,
            None,
            'libpq sslmode. Unset, it is "verify-full" (TLS, the server\'s certificate must '
            "chain to a trusted CA, libpq's root.crt or PGSSLROOTCERT, and name the host; no "
            "password goes to a server that refuses TLS), except when Host is this machine: "
            "loopback (127.0.0.0/8, ::1, localhost) or a Unix socket (a path), where it is "
            '"prefer". "prefer", "allow" and "require" let a man in the middle '
            "read the password.",
            choices=("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
            default_doc='"verify-full"; "prefer" for a loopback host or a Unix socket',
            example='"verify-full"',
        ),
    ),
    PostgresSettings,
    required=("User", "DB"),
    validate=_validate,
)


def _build(settings: Settings, stage: Stage, read_only: bool) -> PostgresWarehouse:
    pg: PostgresSettings = settings.section("postgres")
    return PostgresWarehouse(
        host=pg.host,
        port=pg.port,
        user=pg.user,
        password=pg.password.reveal(),
        dbname=pg.db,
        sslmode=pg.ssl_mode,
        schema=pg.database_schema,
        export_table=pg.export_table,
        sync_table=pg.sync_table,
        rejects_table=pg.rejects_table,
    )


def _destination(settings: Settings) -> str:
    pg: PostgresSettings = settings.section("postgres")
    return f"PostgreSQL database {pg.db} on {pg.host}:{pg.port}"


PLUGIN = WarehousePlugin(
    "postgres",
    "local folder + PostgreSQL",
    stage="local",
    section=SECTION,
    build=_build,
    destination=_destination,
    extra="postgres",
    drivers=("psycopg",),
)
