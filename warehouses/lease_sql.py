"""The writer lease of a SQL warehouse: one row of `<SyncTable>_lease`, over a DB-API driver.

`syncd.lease` holds what every warehouse shares (the holder, the keeper that renews it, the
rules for a stale or dead holder); this module holds the lease's SQL for the DB-API warehouses
(`warehouses.dbapi.DbApiWarehouse`: PostgreSQL, Redshift). Its statements are constant
templates filled by `warehouses.sql.render`, like every other statement of those warehouses.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog

from syncd.lease import LeaseHolder, held_by_error, holder_values, naive_utc, owner_is_gone
from syncd.timeutil import utcnow
from warehouses.base import close_quietly, quote_identifier
from warehouses.sql import POSTGRES, render

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

_CREATE = (
    "CREATE TABLE IF NOT EXISTS {lease} ("
    "{Name} VARCHAR(128) NOT NULL PRIMARY KEY, {HolderId} VARCHAR(64) NOT NULL, "
    "{Holder} VARCHAR(512) NOT NULL, {Host} VARCHAR(255) NOT NULL, {Pid} BIGINT NOT NULL, "
    "{StartedAt} TIMESTAMP NOT NULL, {AcquiredAt} TIMESTAMP NOT NULL, "
    "{ExpiresAt} TIMESTAMP NOT NULL)"
)
_LOCK = "LOCK {lease}"
_INSERT = (
    "INSERT INTO {lease} ({Name}, {HolderId}, {Holder}, {Host}, {Pid}, {StartedAt}, {AcquiredAt}, "
    "{ExpiresAt}) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})"
)
_CLEAR = "DELETE FROM {lease} WHERE {Name} = {p}"
_RENEW = "UPDATE {lease} SET {ExpiresAt} = {p} WHERE {Name} = {p} AND {HolderId} = {p}"
#: Every row of the lease, the holder first: the latest acquired (ties by id), so that every
#: reader names the same holder even if an older syncd left two rows (Redshift does not
#: enforce the key, and returns unordered rows in any order).
_READ = (
    "SELECT {HolderId}, {Holder}, {ExpiresAt}, {Host}, {Pid}, {StartedAt} FROM {lease} "
    "WHERE {Name} = {p} ORDER BY {AcquiredAt} DESC, {HolderId}"
)
_FENCE = "SELECT {HolderId}, {Holder} FROM {lease} WHERE {Name} = {p} ORDER BY {AcquiredAt} DESC, {HolderId}"
_RELEASE = "DELETE FROM {lease} WHERE {Name} = {p} AND {HolderId} = {p}"


class _LeaseMoved(Exception):
    """Another syncd changed the lease between this transaction's read and its write."""


class TableLease:
    """`LeasedWarehouse` over one row of a lease table, for SQL warehouses (DB-API drivers).

    `connect` returns a new connection in autocommit mode (psycopg `autocommit=True`,
    redshift_connector `autocommit = True`); transactions are opened with BEGIN here. `param`
    is the driver's placeholder (`%s`, or `?` for DuckDB). `name` tells apart several syncs in
    one schema (use the SyncTable's name). Times are naive UTC, as syncd stores them.

    Taking the lease is one transaction that reads the row, decides, and writes: it deletes
    the rows it read and inserts its own. With `lock_table` (Redshift) every lease transaction
    starts with `LOCK` of the table, so they run one at a time: Redshift enforces no key and
    its snapshot isolation lets two transactions that each read "no row" both insert one.
    Without it (PostgreSQL) the enforced key and the row locks of DELETE decide: the loser's
    DELETE finds fewer rows than it read, or its INSERT breaks the key, and it rolls back.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        table: str,
        name: str,
        *,
        schema: str | None = None,
        param: str = "%s",
        clock: Callable[[], datetime] = utcnow,
        lock_table: bool = False,
    ) -> None:
        qualified = quote_identifier(table)
        self.table = f"{quote_identifier(schema)}.{qualified}" if schema else qualified
        self.name = name
        self.lock_table = lock_table
        self._dialect = dataclasses.replace(POSTGRES, param=param)
        self._connect = connect
        self._clock = clock
        self._con: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TableLease(table={self.table!r}, name={self.name!r})"

    def acquire_lease(self, holder: LeaseHolder, ttl: timedelta) -> None:
        now = self._clock()
        values = holder_values(holder, now, ttl)
        with self._lock:
            self._create()
            try:
                owner = self._run(lambda cursor: self._take(cursor, holder, values, now))
            except Exception as exc:  # another syncd moved the lease under us: who has it now?
                owner = self._read()
                if owner is None or owner[0] == holder.id:
                    raise
                log.debug("lease taken by another syncd meanwhile", error=str(exc))
        if owner is not None:
            raise held_by_error(self.name, owner, "cannot start")

    def renew_lease(self, holder: LeaseHolder, ttl: timedelta) -> None:
        expires = naive_utc(self._clock() + ttl)

        def renew(cursor: Any) -> tuple[Any, ...] | None:
            cursor.execute(self._sql(_RENEW), (expires, self.name, holder.id))
            return self._first(cursor)

        with self._lock:
            owner = self._run(renew)
        if owner is None or owner[0] != holder.id:
            raise held_by_error(self.name, owner, "lease lost")

    def release_lease(self, holder: LeaseHolder) -> None:
        with self._lock:
            self._run(lambda cursor: cursor.execute(self._sql(_RELEASE), (self.name, holder.id)))
            self._drop()

    def close(self) -> None:
        """Close the lease's connection (the row stays until it expires or is released)."""
        with self._lock:
            self._drop()

    def lock_query(self) -> str:
        """`LOCK` of the lease table, for the start of a commit transaction (Redshift)."""
        return self._sql(_LOCK)

    def fence_query(self, lock: str = "") -> tuple[str, tuple[Any, ...]]:
        """SQL (and parameters) that reads the lease's (HolderId, Holder) rows, the holder first:
        a commit transaction whose first row is not its own must roll back. `lock` is appended (e.g.
        " FOR SHARE", so that a takeover waits for the commit)."""
        return self._sql(_FENCE) + lock, (self.name,)

    def holder(self) -> str | None:
        """Who holds the lease now (for `status`), or None."""
        with self._lock:
            owner = self._read()
        return None if owner is None else str(owner[1])

    # -- internals ---------------------------------------------------------------------------

    def _take(
        self, cursor: Any, holder: LeaseHolder, values: tuple[Any, ...], now: datetime
    ) -> tuple[Any, ...] | None:
        """Inside the lease transaction: take the lease if it is free, ours, stale or held by
        a dead process on this host; else return its owner."""
        cursor.execute(self._sql(_READ), (self.name,))
        rows = [tuple(row) for row in cursor.fetchall()]
        owner = rows[0] if rows else None
        if owner is not None and owner[0] != holder.id:
            expires = owner[2]
            stale = isinstance(expires, datetime) and naive_utc(expires) < naive_utc(now)
            if not stale and not owner_is_gone(owner):
                return owner
            log.warning(
                "taking over the lease", holder=owner[1], reason="stale" if stale else "dead"
            )
        cursor.execute(self._sql(_CLEAR), (self.name,))
        if cursor.rowcount is not None and 0 <= cursor.rowcount != len(rows):
            raise _LeaseMoved(f"read {len(rows)} lease rows, deleted {cursor.rowcount}")
        cursor.execute(self._sql(_INSERT), (self.name, *values))
        return None

    def _create(self) -> None:
        """CREATE TABLE IF NOT EXISTS, once more if a daemon starting alongside made it first
        (two concurrent creates can collide in the catalog)."""
        try:
            self._run(lambda cursor: cursor.execute(self._sql(_CREATE)), lock=False)
        except Exception as exc:
            log.debug("creating the lease table collided; again", error=str(exc))
            self._run(lambda cursor: cursor.execute(self._sql(_CREATE)), lock=False)

    def _sql(self, template: str) -> str:
        return render(template, self._dialect, lease=self.table)

    def _connection(self) -> Any:
        if self._con is None:
            self._con = self._connect()
        return self._con

    def _run(self, body: Callable[[Any], _T], *, lock: bool = True) -> _T:
        """`body(cursor)` in one transaction, which starts with LOCK of the table when
        `lock_table` (and `lock`) say so."""
        con = self._connection()
        cursor = con.cursor()
        try:
            cursor.execute("BEGIN")
            if lock and self.lock_table:
                cursor.execute(self._sql(_LOCK))
            result = body(cursor)
            cursor.execute("COMMIT")
            return result
        except BaseException:
            try:
                cursor.execute("ROLLBACK")
            except Exception:  # the connection may be gone; the next call reconnects
                self._drop()
            raise
        finally:
            close_quietly(cursor, "a lease cursor")

    def _first(self, cursor: Any) -> tuple[Any, ...] | None:
        cursor.execute(self._sql(_READ), (self.name,))
        rows = cursor.fetchall()
        return tuple(rows[0]) if rows else None

    def _read(self) -> tuple[Any, ...] | None:
        cursor = self._connection().cursor()
        try:
            return self._first(cursor)
        finally:
            close_quietly(cursor, "a lease cursor")

    def _drop(self) -> None:
        con, self._con = self._con, None
        close_quietly(con, "the lease connection")
