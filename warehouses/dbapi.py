"""The one SQL warehouse core over a PEP 249 (DB-API) connection: DuckDB, PostgreSQL, Redshift.

`DbApiCore` is the single implementation of what every SQL warehouse does the same way: table
reconciliation, the batch commit (delete the batch's earlier rows, in a backfill its window's
old rows, load, check the rows, fill what the file lacks, load the rejects, insert the sync
row), the day-consistency check, the rollback of days, the round trip's reads and the drop of
scratch tables, all through the SQL of `warehouses.sql` rendered by the adapter's `Dialect`.
`DbApiWarehouse` adds the writer lease in a table (`warehouses.lease_sql.TableLease`) and its
fence in every commit; PostgreSQL and Redshift derive from it. DuckDB derives from the core:
its one writer is an OS lock on the file (`warehouses.duckdb.WriterLock`).

What differs is a hook a subclass overrides:
- `_connect` (a new connection, autocommit off, session set up), `_map_error` (the driver's
  exceptions as transient or terminal LoadError), `_load` (bulk-load the staged rows),
  `_load_rejects` (load the rejects file): required;
- `_create_export_table`, `_add_column` (e.g. a sort key, wider columns), `_describe_failure`
  (extra words for a failed load, e.g. Redshift's load-error log);
- the connection's lifecycle: `_session` (around each operation; DuckDB opens its file there
  and closes it after), `_connection`, `_drop_connection` (a broken connection is dropped so
  the next call reconnects), `_cursor` / `_close_cursor` (DuckDB's connection is its cursor);
- the transaction's statements: `_begin` (DuckDB's explicit BEGIN), `_begin_commit` (the
  commit's first statements: Redshift's LOCK of the lease table), `_fence` (the commit's last
  check: is the lease still ours);
- `_extra_tables` (helper tables `drop_tables` drops too: the lease table).
"""

from __future__ import annotations

import secrets
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

import syncd
from syncd.batch import StagedBatch, SyncRecord
from syncd.errors import LoadError, SyncdError, TerminalLoadError
from syncd.fields import KNOWN_FIELDS, LOADED_AT, TRACE_COLUMNS, Column
from syncd.lease import LeaseHolder
from syncd.timeutil import utcnow
from syncd.transform.convert import batch_window
from warehouses import sql
from warehouses.base import (
    Capabilities,
    RollbackResult,
    check_commit,
    close_quietly,
    quote_identifier,
    validate_identifier,
)
from warehouses.lease_sql import TableLease
from warehouses.sql import POSTGRES, Dialect, Query, TableNames, render

if TYPE_CHECKING:
    from syncd.people import PeopleBatch

log = structlog.get_logger(__name__)

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
_COUNT_BATCH = "SELECT COUNT(*) FROM {export} WHERE {SyncdBatchId} = {p}"
_FILL_LOADED_AT = (
    "UPDATE {export} SET {SyncdLoadedAt} = {p} "
    "WHERE {SyncdBatchId} = {p} AND {SyncdLoadedAt} IS NULL"
)
_READ_ROWS = "SELECT {columns} FROM {export} WHERE {SyncdBatchId} = {p}"
_DROP_TABLE = "DROP TABLE IF EXISTS {table}"
_PROBE = "SELECT 1"


class _RollbackProbe(Exception):
    """Ends the write probe of `check` by rolling its transaction back."""


class DbApiCore(ABC):
    """`warehouses.base.Warehouse` over a PEP 249 connection; the hooks are listed in the
    module's doc. Subclasses set `dialect`, `capabilities` and `name`."""

    dialect: Dialect = POSTGRES
    name = "SQL"
    capabilities = Capabilities(staging_formats=("csv",))
    #: A read-only instance refuses every write (DuckDB's `open_read_only`).
    read_only = False

    def __init__(self, tables: TableNames) -> None:
        self.tables = tables
        self._lock = threading.RLock()
        self._con: Any = None

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

    @contextmanager
    def _session(self, action: str) -> Iterator[None]:
        """Around each operation (re-entrant; callers hold `self._lock`): the connection stays
        open between operations here; DuckDB opens its file and closes it after."""
        yield

    def _connection(self) -> Any:
        """The open connection, made on first use and after a broken one was dropped."""
        if self._con is None:
            self._con = self._connect()
        return self._con

    def _drop_connection(self) -> None:
        """Forget a broken connection, so that the next call reconnects."""
        con, self._con = self._con, None
        close_quietly(con, "a broken connection")

    def _cursor(self, con: Any) -> Any:
        return con.cursor()

    def _close_cursor(self, cursor: Any) -> None:
        close_quietly(cursor, "a cursor")

    def _begin(self, cursor: Any) -> None:
        """Open the transaction (the drivers here open one with the first statement)."""
        return

    def _begin_commit(self, cursor: Any) -> None:
        """The first statements of a commit transaction (Redshift: LOCK the lease table)."""
        return

    def _fence(self, cursor: Any, action: str) -> None:
        """The last check of a commit transaction: raise to roll it back (a lost lease)."""
        return

    def _extra_tables(self) -> tuple[str, ...]:
        """Helper tables of this warehouse that `drop_tables` drops too."""
        return ()

    # --- Warehouse ---------------------------------------------------------------------------

    def ensure_tables(self, columns: Sequence[Column]) -> tuple[Column, ...]:
        """Create or reconcile the export, sync and rejects tables; return the export columns.

        An existing table keeps its columns and their order; missing columns are added with
        ALTER TABLE ADD COLUMN. EventStart, SyncdBatchId and SyncdLoadedAt are always present.
        """
        self._require_writable("ensure the tables")
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
        self._require_writable("commit a batch")
        batch = staged.batch
        batch_id = batch.key.id
        action = f"commit batch {batch_id}"
        check_commit(staged, record, self.capabilities, self.name)
        d, t = self.dialect, self.tables
        with self._lock, self._session(action):
            try:
                with self._transaction(action) as cursor:
                    self._begin_commit(cursor)
                    window = batch_window(batch.key)
                    for query in sql.delete_batch(d, t, batch_id, window):
                        self._execute(cursor, query)
                    if replace and window is not None:
                        self._delete_window(cursor, batch_id, window)
                    loaded = self._load(cursor, staged, record)
                    self._check_loaded(cursor, action, batch_id, loaded, batch.rows)
                    if LOADED_AT.name not in {c.name for c in batch.columns}:
                        at = sql.to_db_timestamp(record.committed_at)
                        self._execute(cursor, Query(render(_FILL_LOADED_AT, d, t), (at, batch_id)))
                    self._fill_legacy_columns(cursor, batch.columns, batch_id)
                    rejected = self._load_rejects(cursor, staged, record)
                    if rejected != batch.rejected:
                        raise TerminalLoadError(
                            f"{action}: the rejects file holds {rejected} rows, "
                            f"the batch says {batch.rejected}"
                        )
                    version = syncd.__version__
                    self._execute(
                        cursor, sql.insert_sync_row(d, t, record, loaded, rejected, version)
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
        action = "check day consistency"
        with self._lock, self._session(action):
            bounded = sql.only_segment_batches(self.sync_records(lo), lo)
            with self._transaction(action) as cursor:
                if not self._columns(cursor, self.tables.sync) or not self._columns(
                    cursor, self.tables.export
                ):
                    return []
                query = sql.inconsistent_days(self.dialect, self.tables, since, bounded)
                rows = self._fetch(cursor, query)
        return [sql.as_date(row[0]) for row in rows]

    def rollback_days(
        self, first: date, last: date, *, keep: Collection[str] = ()
    ) -> RollbackResult:
        """Delete the rows, rejects and sync rows of days first..last in one transaction, but
        the batches named in `keep`."""
        self._require_writable("roll back days")
        if last < first:
            raise TerminalLoadError(f"cannot roll back: last day {last} is before {first}")
        lo, hi = sql.day_start(first), sql.day_start(last + timedelta(1))
        action = f"roll back {first}..{last}"
        with self._lock, self._session(action):
            rows_end = sql.segment_rows_end(self.sync_records(lo), lo, hi)
            export_q, rejects_q, sync_q = sql.rollback_days(
                self.dialect, self.tables, first, last, rows_end, keep
            )
            with self._transaction(action) as cursor:
                rows_deleted = self._execute(cursor, export_q)
                rejects_deleted = self._execute(cursor, rejects_q)
                sync_rows_deleted = self._execute(cursor, sync_q)
        return sql.rolled_back(
            first, last, rows_deleted, sync_rows_deleted, rejects_deleted, kept=len(keep)
        )

    def create_views(self, people_table: str | None = None) -> None:
        """`warehouses.base.MakesViews`: create or replace the analysis views over the export
        table (`warehouses.views`, in this dialect; `fs_users` over `people_table` too, when
        given) in one transaction."""
        from warehouses.views import view_statements

        self._require_writable("create the views")
        with self._lock, self._session("create the views"):
            with self._transaction("create the views") as cursor:
                columns = [name for name, _ in self._columns(cursor, self.tables.export)]
                for statement in view_statements(
                    self.dialect, self.tables.export, self.tables.schema, columns, people_table
                ):
                    self._execute(cursor, Query(statement))

    # --- the people table (`syncd.people`) ----------------------------------------------------

    #: People batches commit from their rows (parameters), not from a staged file.
    people_from_stage = False

    def ensure_people_tables(self, table: str) -> None:
        """`syncd.people.PeopleWarehouse`: create or reconcile the people table and its sync
        table (`sql.PEOPLE_COLUMNS`, `sql.PEOPLE_SYNC_COLUMNS`)."""
        self._require_writable("ensure the people tables")
        sync_table = sql.people_sync_table(table)
        with self._lock, self._transaction("ensure the people tables") as cursor:
            self._create_schema(cursor)
            self._reconcile(cursor, table, sql.PEOPLE_COLUMNS)
            self._reconcile(cursor, sync_table, sql.PEOPLE_SYNC_COLUMNS)

    def people_batch_ids(self, table: str) -> set[str]:
        """`syncd.people.PeopleWarehouse`: the committed people batches."""
        sync_table = sql.people_sync_table(table)
        with self._lock, self._transaction("read the people sync rows") as cursor:
            if not self._columns(cursor, sync_table):
                return set()
            rows = self._fetch(
                cursor, sql.people_batches(self.dialect, self.tables.qualified(sync_table))
            )
        return {str(row[0]) for row in rows}

    def commit_people(self, table: str, batch: PeopleBatch) -> bool:
        """`syncd.people.PeopleWarehouse`: in one transaction, unless the batch's sync row is
        there already: delete the stored rows of its individuals that no newer export wrote,
        insert its rows for them, insert its sync row (`sql.people_upsert`)."""
        self._require_writable("commit a people batch")
        action = f"commit people batch {batch.batch_id}"
        d = self.dialect
        people = self.tables.qualified(table, d.quote)
        sync_table = self.tables.qualified(sql.people_sync_table(table), d.quote)
        with self._lock, self._session(action), self._transaction(action) as cursor:
            self._begin_commit(cursor)
            done = self._fetch(cursor, sql.people_committed(d, people, sync_table, batch.batch_id))
            if int(done[0][0]):
                return False
            ids = [int(r[0]) for r in batch.rows]
            newer = {
                int(row[0])
                for query in sql.people_newer(d, people, batch.end, ids)
                for row in self._fetch(cursor, query)
            }
            rows = [r for r in batch.rows if r[0] not in newer]
            for query in sql.people_upsert(d, people, sync_table, rows, batch.sync_row()):
                self._execute(cursor, query)
            self._fence(cursor, action)
        return True

    def check(self) -> None:
        """Connect and read; unless read-only, create a table in the schema (rolled back,
        nothing left)."""
        with self._lock, self._session("read the database"):
            with self._transaction("read the database") as cursor:
                self._fetch(cursor, Query(_PROBE))
            if self.read_only:
                return
            with self._transaction("create a table") as cursor:
                self._create_schema(cursor)
                probe = self.tables.qualified(f"syncd_write_probe_{secrets.token_hex(6)}")
                self._execute(cursor, Query(render(_CAN_WRITE, self.dialect, probe=probe)))
                raise _RollbackProbe  # leave nothing behind

    def close(self) -> None:
        with self._lock:
            con, self._con = self._con, None
            close_quietly(con, "the connection")

    # --- the round trip (`syncd check --round-trip`) ---------------------------------------

    def read_rows(self, batch_id: str) -> list[dict[str, Any]]:
        """The export rows of one batch, typed as stored (see `Warehouse.read_rows`); columns
        under syncd's spelling where the warehouse folds case."""
        with self._lock, self._transaction(f"read the rows of {batch_id}") as cursor:
            existing = self._columns(cursor, self.tables.export)
            statement = render(
                _READ_ROWS,
                self.dialect,
                self.tables,
                columns=sql.column_list([name for name, _ in existing], self.dialect),
            )
            rows = self._fetch(cursor, Query(statement, (batch_id,)))
        columns = [Column(self._canonical(n, ()), sql.field_type_of(t)) for n, t in existing]
        return [
            {c.name: sql.stored_value(v, c.type) for c, v in zip(columns, row, strict=True)}
            for row in rows
        ]

    def drop_tables(self) -> None:
        """Drop the export, sync and rejects tables and the helper tables, if they exist, in
        one transaction."""
        self._require_writable("drop the tables")
        t = self.tables
        with self._lock, self._transaction("drop the tables") as cursor:
            for table in (t.export, t.sync, t.rejects, *self._extra_tables()):
                statement = render(_DROP_TABLE, self.dialect, table=t.qualified(table))
                self._execute(cursor, Query(statement))

    # --- internals ---------------------------------------------------------------------------

    def _require_writable(self, action: str) -> None:
        if self.read_only:
            raise TerminalLoadError(f"cannot {action}: {self!r} is open read-only")

    def _create_schema(self, cursor: Any) -> None:
        if self.tables.schema is not None:
            schema = quote_identifier(self.tables.schema, self.dialect.quote)
            self._execute(cursor, Query(render(_CREATE_SCHEMA, self.dialect, schema=schema)))

    def _delete_window(self, cursor: Any, batch_id: str, window: tuple[datetime, datetime]) -> None:
        """A backfill's commit: the old rows of the batch's window (`sql.replace_window`); the
        day's batches that go on after the window keep a RowsLoaded of the rows they still
        hold (`sql.going_on_rows`)."""
        d, t = self.dialect, self.tables
        *others, rows_q = sql.replace_window(d, t, window)
        for query in others:
            self._execute(cursor, query)
        for old_id, n in self._fetch(cursor, sql.going_on_rows(d, t, window)):
            self._execute(cursor, sql.lower_rows_loaded(d, t, old_id, int(n)))
        deleted = self._execute(cursor, rows_q)
        log.info("window's old rows deleted", batch=batch_id, rows=deleted)

    @contextmanager
    def _transaction(self, action: str) -> Iterator[Any]:
        """One transaction on a cursor, in a session; commit at the end, roll back on any
        exception.

        A driver exception is mapped to LoadError; a lost connection is dropped, so the next
        call reconnects.
        """
        with self._session(action):
            try:
                con = self._connection()
                cursor = self._cursor(con)
            except SyncdError:
                raise
            except Exception as exc:
                self._drop_connection()
                raise self._map_error(exc, action) from exc
            try:
                self._begin(cursor)
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
                self._close_cursor(cursor)

    def _rollback(self, con: Any) -> None:
        try:
            con.rollback()
        except Exception as exc:
            log.debug("rollback failed; dropping the connection", error=str(exc))
            self._drop_connection()

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
                    legacy=quote_identifier(legacy, self.dialect.quote),
                    source=quote_identifier(source, self.dialect.quote),
                )
                self._execute(cursor, Query(statement, (batch_id,)))

    def _check_loaded(
        self, cursor: Any, action: str, batch_id: str, loaded: int, expected: int
    ) -> None:
        """The load put exactly the batch's rows in, each tagged with the batch id (a file
        without the SyncdBatchId column loads none of this batch)."""
        tagged = self._fetch(
            cursor, Query(render(_COUNT_BATCH, self.dialect, self.tables), (batch_id,))
        )[0][0]
        if loaded != expected or int(tagged) != expected:
            of_batch = f" ({tagged} of this batch)" if int(tagged) != loaded else ""
            raise TerminalLoadError(
                f"{action}: the staged file holds {loaded} rows{of_batch}, "
                f"the batch says {expected}"
            )


class DbApiWarehouse(DbApiCore):
    """`DbApiCore` with the writer lease in a table (PostgreSQL, Redshift).

    One writer: the lease (`warehouses.lease_sql.TableLease`) is a row of `<SyncTable>_lease`,
    kept on a connection of its own. Once this object has acquired it, every commit reads that
    row inside its transaction (`fence_lock` appended) and refuses to commit when another
    holder has taken it over. With `lock_lease_table` (Redshift) the commit transaction starts
    with LOCK of the lease table, as does every lease transaction, so the fence reads the lease
    as it is (a snapshot taken after the lock) and no takeover can pass it until the commit
    ends.
    """

    #: Appended to the commit's fence read: a row lock that makes a takeover wait for it.
    fence_lock = ""
    #: LOCK the lease table first in every lease and commit transaction (see the class doc).
    lock_lease_table = False

    def __init__(self, tables: TableNames, *, lease_clock: Callable[[], datetime] = utcnow) -> None:
        super().__init__(tables)
        self._lease_clock = lease_clock
        self._lease: TableLease | None = None
        self._lease_holder: LeaseHolder | None = None

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
        super().close()

    # --- hooks of DbApiCore ---------------------------------------------------------------------

    def _begin_commit(self, cursor: Any) -> None:
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

    def _extra_tables(self) -> tuple[str, ...]:
        return (self._lease_table_name(),)

    # --- internals ---------------------------------------------------------------------------

    def _lease_table_name(self) -> str:
        return validate_identifier(f"{self.tables.sync}_lease", "lease table")

    def _table_lease(self) -> TableLease:
        if self._lease is None:
            self._lease = TableLease(
                self._lease_connection,
                self._lease_table_name(),
                self.tables.sync,
                schema=self.tables.schema,
                param=self.dialect.param,
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


__all__ = ["LEGACY_ALIASES", "DbApiCore", "DbApiWarehouse"]
