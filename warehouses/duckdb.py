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

Queries beside a running daemon. DuckDB admits one process per file: while one process has it
open read-write, no other can open it, not even read-only; readers (`duckdb -readonly`,
`duckdb.connect(path, read_only=True)`, `syncd status`) exclude a writer the same way. So the
file is open only for one operation at a time (`_session`): a commit, ensuring tables, a
repair, a rollback, reading the sync rows; it is closed after, which also checkpoints the WAL
into the file (about 60 ms more per commit than a file held open: scripts/bench_duckdb_commit.py).
Between operations anyone may query it, and the next operation waits until the file has been
closed for `reader_window` seconds (`[duckdb] ReaderWindow`), so that commits that follow one
another (a backfill) leave readers room: a reader then fails only while one commit runs. A
write that finds the file held waits for it, retrying with backoff up to `lock_wait` seconds,
and says so (a log line, and the daemon's status through `warehouses.base.ReportsWaits`); then
the attempt fails as a TransientLoadError, and the pipeline's retry and hold apply. A read-only
instance never waits: `status` falls back to the daemon's status file instead.

One writer: with the file closed between commits, DuckDB's own lock no longer keeps a second
syncd out, so a writable instance holds an OS lock (`flock`) on `<path>.lock` for its whole life,
with its PID written inside. A second syncd's constructor raises LockedError naming that PID.
The kernel drops the lock with the process: a killed daemon leaves no stale lock.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
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
from syncd.errors import (
    LoadError,
    LockedError,
    NotCreatedError,
    TerminalLoadError,
    TransientLoadError,
)
from syncd.fields import BATCH_ID, LOADED_AT, Column, FieldType
from syncd.transform.convert import batch_window
from warehouses import sql
from warehouses.base import Capabilities, RollbackResult, WaitListener, quote_identifier
from warehouses.sql import DUCKDB, Query, TableNames, render

log = structlog.get_logger(__name__)

MEMORY = ":memory:"
#: How long a write waits for a file another process holds, unless told otherwise.
DEFAULT_LOCK_WAIT = 300.0
#: The first pause between attempts to open a held file, and the longest.
_RETRY_FIRST = 0.02
_RETRY_MAX = 0.5

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


class FileHeldError(LockedError):
    """Another process (or connection) has the file open; `holder` says who, for the status."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


def _in_use(path: str, pid: str | None) -> FileHeldError:
    holder = f"another process (PID {pid})" if pid else "another process"
    return FileHeldError(
        f"the DuckDB file {path} is in use by {holder}: DuckDB admits one writer process, and "
        "no reader while it writes",
        holder,
    )


def _lock_error(exc: duckdb.Error, path: str) -> FileHeldError | None:
    """A FileHeldError naming the holder when `exc` says another process holds the file."""
    text = str(exc)
    if isinstance(exc, duckdb.IOException) and _LOCK_HELD.search(text):
        pid = _LOCK_PID.search(text)
        return _in_use(path, pid.group(1) if pid else None)
    if isinstance(exc, duckdb.ConnectionException) and "different configuration" in text:
        return FileHeldError(
            f"the DuckDB file {path} is already open in this process with other settings "
            "(read-only versus read-write)",
            "another connection of this process",
        )
    return None


class WriterLock:
    """An exclusive `flock` on `<database>.lock` for the life of a writer: one syncd per file.

    The holder's PID is written inside, for the message a second writer gets. The file itself
    stays (removing it would let a newcomer lock a fresh file beside a holder of the old one).
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self.path = Path(f"{database}.lock")
        self._fd: int | None = None

    def acquire(self) -> WriterLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise TerminalLoadError(
                f"cannot create the lock file {self.path}: {exc.strerror}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            raise _in_use(self.database, holder if holder.isdigit() else None) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


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
        lock_wait: float = DEFAULT_LOCK_WAIT,
        reader_window: float = 0.0,
        memory_limit: str | None = None,
        threads: int = 0,
        monotonic: Callable[[], float] = time.monotonic,
        pause: Callable[[float], bool] | None = None,
    ) -> None:
        """`lock_wait`: seconds a write waits for a file another process holds;
        `reader_window`: seconds the file stays closed at least between two sessions (the
        configuration's default is 1 s; none here, for tests and tools). `monotonic`
        and `pause` (sleep up to n seconds; True when stopped) stand in for the clock in tests;
        by default the pause is a wait on the stop event given to `report_waits`."""
        self.tables = TableNames(export=export_table, sync=sync_table, rejects=rejects_table)
        self.path = str(path)
        self.read_only = read_only
        self.lock_wait = lock_wait
        self.reader_window = reader_window
        # DuckDB's memory_limit and threads for every connection (None / 0: DuckDB's defaults)
        self._config: dict[str, str | bool | int | float | list[str]] = {}
        if memory_limit:
            self._config["memory_limit"] = memory_limit
        if threads > 0:
            self._config["threads"] = threads
        self._closed_at: float | None = None
        self._monotonic = monotonic
        self._pause = pause
        self._stop = threading.Event()
        self._listener: WaitListener | None = None
        self._lock = threading.RLock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._writer: WriterLock | None = None
        self._closed = False
        if self.path == MEMORY:
            self._con = self._connect()  # the database lives as long as this connection
        elif read_only:
            if not Path(self.path).exists():
                raise NotCreatedError(f"the DuckDB file {self.path} does not exist yet")
        else:
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise TerminalLoadError(
                    f"cannot create the folder of {self.path}: {exc.strerror}"
                ) from exc
            self._writer = WriterLock(self.path).acquire()

    @classmethod
    def open_read_only(
        cls,
        path: Path | str,
        export_table: str = "fsexport",
        sync_table: str = "fssync",
        rejects_table: str = "fsrejects",
    ) -> DuckDBWarehouse:
        """For the status command: read the tables; its reads raise LockedError while another
        process writes (a daemon's commit), without waiting."""
        return cls(path, export_table, sync_table, rejects_table, read_only=True)

    def __repr__(self) -> str:
        mode = ", read_only=True" if self.read_only else ""
        return f"DuckDBWarehouse(path={self.path!r}, tables={self.tables!r}{mode})"

    def __enter__(self) -> DuckDBWarehouse:
        return self

    def report_waits(self, listener: WaitListener, stop: threading.Event) -> None:
        """`warehouses.base.ReportsWaits`: tell `listener` about waits; end them on `stop`."""
        self._listener = listener
        self._stop = stop

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
                for old_id, n in self._connection.execute(
                    going_on.sql, list(going_on.params)
                ).fetchall():
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

    def sync_records(self, since: datetime | None = None) -> list[SyncRecord]:
        """Committed batches ending after `since`, oldest first; none before the first commit."""
        with self._lock, self._session("read sync rows"):
            present = [name for name, _ in self._columns(self.tables.sync)]
            if not present:
                return []
            query = sql.select_sync_rows(DUCKDB, self.tables, since, present)
            rows = self._fetch(query, "read sync rows")
        return [sql.record_from_row(row) for row in rows]

    def inconsistent_days(self, since: date) -> list[date]:
        """Days from `since` whose rows and sync rows disagree (see `sql.inconsistent_days`)."""
        lo = sql.day_start(since)
        with self._lock, self._session("check day consistency"):
            bounded = sql.only_segment_batches(self.sync_records(lo), lo)
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
        action = f"roll back {first}..{last}"
        with self._lock, self._session(action):
            rows_end = sql.segment_rows_end(self.sync_records(lo), lo, hi)
            queries = sql.rollback_days(DUCKDB, self.tables, first, last, rows_end, keep)
            export_q, rejects_q, sync_q = queries
            with self._transaction(action):
                rows_deleted = self._count(export_q)
                rejects_deleted = self._count(rejects_q)
                sync_rows_deleted = self._count(sync_q)
        return sql.rolled_back(
            first, last, rows_deleted, sync_rows_deleted, rejects_deleted, kept=len(keep)
        )

    def check(self) -> None:
        """The file opens; unless read-only, a table can be created (then rolled back)."""
        with self._lock, self._session("read the database"):
            self._fetch(Query("SELECT 1"), "read the database")
            if self.read_only:
                return
            with self._transaction("write to the database"):
                probe = quote_identifier(f"syncd_write_probe_{secrets.token_hex(6)}")
                self._execute(Query(render(_CAN_WRITE, DUCKDB, probe=probe)))
                raise _RollbackProbe  # leave nothing behind

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._con is not None:
                self._con.close()
                self._con = None
            if self._writer is not None:
                self._writer.release()
                self._writer = None

    # --- internals ---------------------------------------------------------------------------

    @contextmanager
    def _session(self, action: str) -> Iterator[None]:
        """The file open for one operation, closed after it, so that others can read it in
        between. Re-entrant: an operation inside another uses the outer one's connection.
        Callers hold `self._lock`."""
        if self._closed:
            raise TerminalLoadError(f"cannot {action}: this warehouse of {self.path} is closed")
        if self._con is not None:
            yield
            return
        self._leave_room()
        self._con = self._open(action)
        opened_at = self._monotonic()
        try:
            yield
        finally:
            con, self._con = self._con, None
            try:
                con.close()  # the last connection: DuckDB checkpoints and lets the file go
            except duckdb.Error as exc:  # what was committed is in the WAL already
                log.warning("closing the DuckDB file failed", error=_first_line(exc))
            self._closed_at = self._monotonic()
            held = self._closed_at - opened_at
            log.debug("the DuckDB file was open", action=action, held_s=round(held, 4))

    def _leave_room(self) -> None:
        """Keep the file closed for `reader_window` after the last session: commits that follow
        one another would otherwise leave a reader only a moment to get in."""
        if self._closed_at is None or self.read_only:
            return
        left = self._closed_at + self.reader_window - self._monotonic()
        if left > 0:
            self._sleep(left)  # when stopping, the caller decides at its next step

    def _open(self, action: str) -> duckdb.DuckDBPyConnection:
        """Connect; while another process holds the file, wait for it (a writer only), with
        backoff, up to `lock_wait` seconds, reported to the log and the listener."""
        started = self._monotonic()
        delay = _RETRY_FIRST
        held: FileHeldError | None = None
        opened = False
        try:
            while True:
                try:
                    con = self._connect()
                    opened = True
                    return con
                except FileHeldError as exc:
                    if self.read_only:
                        raise
                    waited = self._monotonic() - started
                    if waited >= self.lock_wait:
                        raise TransientLoadError(
                            f"{action}: {exc}; gave up after waiting {waited:.1f} s "
                            "([duckdb] LockWait)"
                        ) from exc
                    if held is None:
                        self._waiting(exc)
                    held = exc
                    if self._sleep(min(delay, self.lock_wait - waited)):
                        raise TransientLoadError(
                            f"{action}: stopped while waiting for the DuckDB file: {exc}"
                        ) from exc
                    delay = min(delay * 2, _RETRY_MAX)
        finally:
            if held is not None:
                self._free(self._monotonic() - started, opened)

    def _sleep(self, seconds: float) -> bool:
        return self._pause(seconds) if self._pause is not None else self._stop.wait(seconds)

    def _waiting(self, held: FileHeldError) -> None:
        reason = (
            f"{held.holder} has the DuckDB file {self.path} open; syncd writes to it once it "
            f"is closed (waiting up to {self.lock_wait:g} s, [duckdb] LockWait)"
        )
        log.warning(
            "waiting for the DuckDB file: another process has it open",
            holder=held.holder,
            path=self.path,
            lock_wait_s=self.lock_wait,
        )
        if self._listener is not None:
            try:
                self._listener.warehouse_waiting(reason)
            except Exception as exc:  # a listener must never break a commit
                log.warning("wait listener failed", error=str(exc))

    def _free(self, seconds: float, opened: bool) -> None:
        if opened:
            log.info("the DuckDB file is free again; carrying on", waited_s=round(seconds, 3))
        else:
            log.warning("stopped waiting for the DuckDB file", waited_s=round(seconds, 3))
        if self._listener is not None:
            try:
                self._listener.warehouse_free(seconds)
            except Exception as exc:  # a listener must never break a commit
                log.warning("wait listener failed", error=str(exc))

    def _connect(self) -> duckdb.DuckDBPyConnection:
        try:
            con = duckdb.connect(self.path, read_only=self.read_only, config=self._config)
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

    @property
    def _connection(self) -> duckdb.DuckDBPyConnection:
        """The open session's connection (callers are inside `_session`)."""
        if self._con is None:
            raise TerminalLoadError(f"{self.path} is not open: no session")  # a bug, not I/O
        return self._con

    @contextmanager
    def _transaction(self, action: str) -> Iterator[None]:
        """BEGIN ... COMMIT in a session; any exception rolls back, DuckDB's mapped to
        LoadError."""
        with self._session(action):
            con = self._connection
            try:
                con.begin()
            except duckdb.Error as exc:
                raise map_duckdb_error(exc, action) from exc
            try:
                yield
                con.commit()
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
            self._connection.rollback()
        except duckdb.Error:
            log.debug("rollback: no transaction left to roll back")

    def _execute(self, query: Query) -> None:
        self._connection.execute(query.sql, list(query.params))

    def _count(self, query: Query) -> int:
        """Run an INSERT or DELETE and return the rows it touched."""
        row = self._connection.execute(query.sql, list(query.params)).fetchone()
        return int(row[0]) if row else 0

    def _fetch(self, query: Query, action: str) -> list[tuple[Any, ...]]:
        try:
            return list(self._connection.execute(query.sql, list(query.params)).fetchall())
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
        with self._lock, self._session(f"read the rows of {batch_id}"):
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
