"""DuckDB, the embedded default warehouse: one file, one writer process.

A commit is one DuckDB transaction, `warehouses.dbapi.DbApiCore`'s as for PostgreSQL and
Redshift: delete this batch's earlier rows, rejects and sync row (a re-run after a crash; in a
backfill also its window's old rows, `sql.replace_window`), bulk-load the staged file with
`INSERT INTO t (columns) SELECT ... FROM read_parquet / read_csv / read_json(?)` (this
module's `_load`), check the row count, load the rejects, insert the sync row, commit. Any
failure rolls all of it back.

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
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlparse

import duckdb
import structlog

from syncd.batch import StagedBatch, StagedFormat, SyncRecord
from syncd.errors import (
    LoadError,
    LockedError,
    NotCreatedError,
    TerminalLoadError,
    TransientLoadError,
)
from syncd.fields import BATCH_ID, Column, FieldType
from warehouses import sql
from warehouses.base import Capabilities, WaitListener, quote_identifier
from warehouses.dbapi import DbApiCore
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


class DuckDBWarehouse(DbApiCore):
    """Implements `warehouses.base.Warehouse` on a DuckDB file (or `:memory:`): the commit,
    consistency and rollback of `DbApiCore`, with the file open for one operation at a time."""

    dialect = DUCKDB
    name = "DuckDB"
    capabilities = Capabilities(staging_formats=("parquet", "csv", "ndjson"), loads_in_process=True)

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
        super().__init__(TableNames(export=export_table, sync=sync_table, rejects=rejects_table))
        self.path = str(path)
        self.read_only = read_only
        self.lock_wait = lock_wait
        self.reader_window = reader_window
        # DuckDB's memory_limit and threads, SET on every connection (None / 0: DuckDB's
        # defaults). Not passed as connect() config: DuckDB refuses a second connection to a
        # file this process has open with another config (a reader's, `status` beside it).
        self._settings: list[str] = []
        if memory_limit:
            if not _MEMORY.fullmatch(memory_limit):
                raise TerminalLoadError(f"DuckDB memory limit {memory_limit!r} is not a size")
            self._settings.append(f"SET memory_limit = '{memory_limit.strip()}'")
        if threads > 0:
            self._settings.append(f"SET threads = {int(threads)}")
        self._closed_at: float | None = None
        self._monotonic = monotonic
        self._pause = pause
        self._stop = threading.Event()
        self._listener: WaitListener | None = None
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

    def close(self) -> None:
        with self._lock:
            self._closed = True
            super().close()
            if self._writer is not None:
                self._writer.release()
                self._writer = None

    # --- hooks of DbApiCore: the file open for one operation at a time ---------------------

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
            con = duckdb.connect(self.path, read_only=self.read_only)
        except duckdb.Error as exc:
            locked = _lock_error(exc, self.path)
            if locked is not None:
                raise locked from exc
            # not a database file, no such folder, no permission: retrying will not help
            raise TerminalLoadError(f"cannot open {self.path}: {_first_line(exc)}") from exc
        try:
            for setting in self._settings:
                con.execute(setting)
        except duckdb.Error as exc:
            con.close()
            raise TerminalLoadError(f"cannot configure {self.path}: {_first_line(exc)}") from exc
        try:
            con.execute(_SET_UTC)
        except duckdb.Error:
            log.debug("no ICU extension: DuckDB's time zone is UTC already")
        return con

    def _connection(self) -> duckdb.DuckDBPyConnection:
        """The open session's connection (callers are inside `_session`)."""
        if self._con is None:
            raise TerminalLoadError(f"{self.path} is not open: no session")  # a bug, not I/O
        con: duckdb.DuckDBPyConnection = self._con
        return con

    def _drop_connection(self) -> None:
        """Nothing to drop: the session closes the file after each operation, and an in-memory
        database lives as long as its one connection."""
        return

    def _cursor(self, con: Any) -> Any:
        """The connection itself: a DuckDB cursor is another connection, in another
        transaction."""
        return con

    def _close_cursor(self, cursor: Any) -> None:
        return

    def _begin(self, cursor: Any) -> None:
        cursor.begin()

    def _map_error(self, exc: Exception, action: str) -> LoadError:
        if isinstance(exc, duckdb.Error):
            return map_duckdb_error(exc, action)
        if isinstance(exc, OSError):
            return TransientLoadError(f"{action}: {exc.strerror or exc}")
        return TerminalLoadError(f"{action}: {type(exc).__name__}: {exc}")

    def _load(self, cursor: Any, staged: StagedBatch, record: SyncRecord) -> int:
        """INSERT ... SELECT the staged file by column name; return the rows inserted.
        SyncdBatchId is set from the batch key, whatever the file holds."""
        batch = staged.batch
        fmt, path = batch.format, _local_path(staged.uri, batch.path)
        file_columns = [c for c in batch.columns if c.name.lower() != BATCH_ID.name.lower()]
        expressions = [*(_select_expression(fmt, c) for c in file_columns), DUCKDB.placeholder()]
        targets = [*(c.name for c in file_columns), BATCH_ID.name]
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
            targets=sql.column_list(targets, DUCKDB),
            expressions=", ".join(expressions),
            source=render(_SOURCES[fmt], DUCKDB),
        )
        return self._execute(cursor, Query(statement, (batch.key.id, *source_params)))

    def _load_rejects(self, cursor: Any, staged: StagedBatch, record: SyncRecord) -> int:
        batch = staged.batch
        if staged.rejects_uri is None and batch.rejects_path is None:
            return 0
        path = _local_path(staged.rejects_uri, batch.rejects_path)
        source = render(_SOURCES["ndjson"], DUCKDB)
        statement = render(_LOAD_REJECTS, DUCKDB, self.tables, source=source)
        params = (
            batch.key.id,
            sql.to_db_timestamp(record.committed_at),
            str(path),
            _REJECT_KEYS,
            _compression_of(path),
        )
        return self._execute(cursor, Query(statement, params))


def _select_expression(fmt: StagedFormat, column: Column) -> str:
    """How one staged column is read, by name."""
    if fmt == "csv":
        template = _CSV_EXPRESSIONS[column.type]
    elif fmt == "ndjson":
        template = _NDJSON_EXPRESSIONS.get(column.type, "{column}")
    else:
        template = "{column}"
    return render(template, DUCKDB, column=quote_identifier(column.name, DUCKDB.quote))


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


# --- the plugin declarations (warehouses.plugin): the [duckdb] section and Provider "duckdb" -----

from dataclasses import dataclass as _dataclass  # noqa: E402
from datetime import timedelta  # noqa: E402
from typing import TYPE_CHECKING as _TYPE_CHECKING  # noqa: E402

from syncd.config.keys import Key, Kind  # noqa: E402
from warehouses.plugin import (  # noqa: E402
    ConfigSection,
    SettleContext,
    WarehousePlugin,
    check_names,
    table_keys,
)

if _TYPE_CHECKING:
    from syncd.config.model import Settings
    from warehouses.base import Stage


@_dataclass(frozen=True)
class DuckDBSettings:
    path: Path
    lock_wait: timedelta
    reader_window: timedelta
    memory_limit: str
    threads: int
    export_table: str
    sync_table: str
    rejects_table: str


_MEMORY = re.compile(r"\s*[0-9]+(\.[0-9]+)?\s*(B|[KMGT]i?B)\s*", re.IGNORECASE)


def _check(ctx: SettleContext) -> None:
    threads = ctx.get("[duckdb] Threads")
    if ctx.ok("[duckdb] Threads") and threads < 0:
        ctx.problem("[duckdb] Threads", f"{threads} is too small; the minimum is 0")
    memory_limit = ctx.get("[duckdb] MemoryLimit")
    if ctx.ok("[duckdb] MemoryLimit") and not _MEMORY.fullmatch(memory_limit):
        ctx.problem(
            "[duckdb] MemoryLimit",
            f"{memory_limit!r} must be a size such as '256MB' or '2GB' (KB, MB, GB, TB)",
        )


def _validate(ctx: SettleContext, provider: str) -> None:
    check_names(ctx, "duckdb")


SECTION = ConfigSection(
    "duckdb",
    'The embedded DuckDB warehouse (Provider = "duckdb", the default).',
    (
        Key(
            "duckdb",
            "Path",
            Kind.PATH,
            "syncd-data/syncd.duckdb",
            "The DuckDB database file. syncd opens it only for a commit (or to create tables, "
            "repair, roll back, read its sync rows) and closes it after, so other processes can "
            "query it read-only in between; a second syncd is kept out by the lock file beside "
            "it (`<Path>.lock`).",
        ),
        Key(
            "duckdb",
            "LockWait",
            Kind.DURATION,
            "5m",
            "How long a write waits for the file while another process (a reader such as "
            "`duckdb -readonly`) has it open, retrying with backoff and saying so in the log and "
            "the status; then the batch's attempt fails and is retried (or held) like any "
            "other transient failure. 0s: do not wait.",
        ),
        Key(
            "duckdb",
            "ReaderWindow",
            Kind.DURATION,
            "1s",
            "The least time the file stays closed between two of syncd's uses of it, so that a "
            "reader retrying every second gets in even while batches commit back to back (a "
            "backfill). Costs up to this much per commit while catching up; 0s: no pause.",
        ),
        Key(
            "duckdb",
            "MemoryLimit",
            Kind.STRING,
            "128MB",
            "DuckDB's memory limit for syncd's connection to the file (its `memory_limit`, such as "
            '"128MB" or "2GB"); a commit that needs more spills to `<Path>.tmp`. DuckDB fills its '
            "cache up to the limit while a commit checkpoints: 128MB keeps a commit's peak near "
            "the transform's, at a few per cent of commit time (docs/benchmark.md); DuckDB's own "
            "default, 80 % of the machine's memory, would let the daemon grow far past what it "
            "needs (docs/sizing.md).",
        ),
        Key(
            "duckdb",
            "Threads",
            Kind.INT,
            0,
            "Threads of syncd's DuckDB connection to the file (DuckDB's `threads`); each holds "
            "its own buffers. 0: one per core, DuckDB's default.",
        ),
        *table_keys("duckdb", hauser=False),
    ),
    DuckDBSettings,
    check=_check,
    validate=_validate,
)


def _build(settings: Settings, stage: Stage, read_only: bool) -> DuckDBWarehouse:
    db: DuckDBSettings = settings.section("duckdb")
    return DuckDBWarehouse(
        db.path,
        export_table=db.export_table,
        sync_table=db.sync_table,
        rejects_table=db.rejects_table,
        read_only=read_only,
        lock_wait=db.lock_wait.total_seconds(),
        reader_window=db.reader_window.total_seconds(),
        memory_limit=db.memory_limit,
        threads=db.threads,
    )


def _destination(settings: Settings) -> str:
    path = settings.section("duckdb").path
    return "an in-memory DuckDB" if str(path) == ":memory:" else f"the DuckDB file {path.resolve()}"


def _demo_config(directory: Path) -> str:
    return f"""[duckdb]
Path = "{directory / "syncd.duckdb"}"
# The demo loads days back to back with nobody querying yet: no pause between commits (the
# default, 1s, keeps room for readers beside a daemon that is catching up).
ReaderWindow = "0s"
"""


def _demo_summary(settings: Settings) -> tuple[str, str]:
    db: DuckDBSettings = settings.section("duckdb")
    # Shown to the user, never executed here; the table name is a validated identifier.
    query = (
        "SELECT EventType, count(*) AS n FROM "  # noqa: S608
        f"{quote_identifier(db.export_table)} GROUP BY 1 ORDER BY n DESC"
    ).replace('"', '\\"')
    return (
        f"DuckDB file        {db.path}",
        "Try a query:\n"
        f"""  .venv/bin/python -c "import duckdb; print(duckdb.connect('{db.path}', read_only=True).sql('{query}'))\"""",
    )


PLUGIN = WarehousePlugin(
    "duckdb",
    "local folder + embedded DuckDB",
    stage="local",
    section=SECTION,
    build=_build,
    destination=_destination,
    loads_json=True,
    demo_config=_demo_config,
    demo_summary=_demo_summary,
)
