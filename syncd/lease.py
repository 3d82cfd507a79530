"""One writer per SyncTable: a lease held in the warehouse, taken over when it goes stale.

Two daemons on the same SyncTable would plan and load the same batches. The guard lives in the
warehouse, the one thing both daemons share:

- An adapter that can hold a lease implements `LeasedWarehouse` (three optional methods of the
  `Warehouse` protocol): `acquire_lease(holder, ttl)` raises `LockedError` naming the current
  holder; `renew_lease` extends it (and raises `LockedError` when it was lost);
  `release_lease` gives it up. `LeaseKeeper` acquires at start-up, renews every `ttl / 3`
  from a thread, releases at exit; when a renewal fails it sets the stop event, so the daemon
  stops after the current step.
- DuckDB: the file lock is the lease. DuckDB admits one read-write process per file, the lock
  goes with the process (a dead daemon leaves no stale lock), and opening a locked file raises
  `LockedError` naming the holder's PID. `DuckDBWarehouse` needs no lease methods.
- PostgreSQL and Redshift: `TableLease` below, one row in `<SyncTable>_lease` on a connection of
  its own (autocommit, so lease statements never mix with a batch's transaction). A row whose
  `ExpiresAt` has passed belongs to a dead or hung daemon and is taken over by a conditional
  UPDATE, which the database serialises: of two daemons taking over at once exactly one wins.
  For fencing, the adapter's commit transaction may also run `TableLease.fence_query()` and
  refuse to commit when the row no longer names this holder.
- BigQuery: the same row in a `<SyncTable>_lease` table, written by DML (conditional UPDATE /
  INSERT); BigQuery aborts one of two conflicting DML statements, which gives the same
  exactly-one-winner rule.

Lease times are written from this process's clock: keep hosts' clocks within a small fraction of
the TTL (NTP), and the TTL well above the longest pause (default five minutes).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import structlog

from syncd.errors import LockedError
from syncd.timeutil import UTC, format_timestamp, utcnow
from warehouses.base import quote_identifier

log = structlog.get_logger(__name__)

#: How long a lease lasts without renewal; it is renewed every third of it.
DEFAULT_LEASE_TTL = timedelta(minutes=5)


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds the lease: enough for an operator to find the process."""

    host: str
    pid: int
    started_at: datetime
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def current(cls, clock: Callable[[], datetime] = utcnow) -> LeaseHolder:
        return cls(host=socket.gethostname(), pid=os.getpid(), started_at=clock())

    def describe(self) -> str:
        return f"syncd pid {self.pid} on {self.host} (since {format_timestamp(self.started_at)})"


@runtime_checkable
class LeasedWarehouse(Protocol):
    """The optional lease methods of a `Warehouse`."""

    def acquire_lease(self, holder: LeaseHolder, ttl: timedelta) -> None:
        """Take the lease (or a stale one); raise LockedError naming the live holder."""
        ...

    def renew_lease(self, holder: LeaseHolder, ttl: timedelta) -> None:
        """Extend the lease; raise LockedError when another holder has taken it."""
        ...

    def release_lease(self, holder: LeaseHolder) -> None:
        """Give the lease up (nothing happens when it is no longer ours)."""
        ...


class LeaseKeeper:
    """Holds a warehouse's lease for the life of a daemon (a no-op without lease methods)."""

    def __init__(
        self,
        warehouse: object,
        holder: LeaseHolder,
        stop: threading.Event,
        ttl: timedelta = DEFAULT_LEASE_TTL,
    ) -> None:
        self.lease = warehouse if isinstance(warehouse, LeasedWarehouse) else None
        self.holder = holder
        self.stop = stop
        self.ttl = ttl
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        """Acquire, renew in the background, release on the way out."""
        if self.lease is None:
            yield
            return
        self.lease.acquire_lease(self.holder, self.ttl)
        log.info("lease acquired", holder=self.holder.describe(), ttl_s=self.ttl.total_seconds())
        self._thread = threading.Thread(target=self._renew, name="syncd-lease", daemon=True)
        self._thread.start()
        try:
            yield
        finally:
            self._done.set()
            self._thread.join(timeout=10)
            try:
                self.lease.release_lease(self.holder)
            except Exception as exc:  # the lease expires by itself; never mask the real outcome
                log.warning("could not release the lease; it expires by itself", error=str(exc))

    def _renew(self) -> None:
        assert self.lease is not None
        interval = self.ttl.total_seconds() / 3
        while not self._done.wait(interval):
            try:
                self.lease.renew_lease(self.holder, self.ttl)
            except LockedError as exc:
                log.error("lease lost: stopping after the current step", error=str(exc))
                self.stop.set()
                return
            except Exception as exc:  # a blip: the next renewal may succeed within the TTL
                log.warning("lease renewal failed; retrying", error=str(exc))


_CREATE = (
    "CREATE TABLE IF NOT EXISTS {t} ("
    '"Name" VARCHAR(128) NOT NULL PRIMARY KEY, "HolderId" VARCHAR(64) NOT NULL, '
    '"Holder" VARCHAR(512) NOT NULL, "AcquiredAt" TIMESTAMP NOT NULL, '
    '"ExpiresAt" TIMESTAMP NOT NULL)'
)
_INSERT = (
    'INSERT INTO {t} ("Name", "HolderId", "Holder", "AcquiredAt", "ExpiresAt") '
    'SELECT {p}, {p}, {p}, {p}, {p} WHERE NOT EXISTS (SELECT 1 FROM {t} WHERE "Name" = {p})'
)
_TAKE = (
    'UPDATE {t} SET "HolderId" = {p}, "Holder" = {p}, "AcquiredAt" = {p}, "ExpiresAt" = {p} '
    'WHERE "Name" = {p} AND ("HolderId" = {p} OR "ExpiresAt" < {p})'
)
_RENEW = 'UPDATE {t} SET "ExpiresAt" = {p} WHERE "Name" = {p} AND "HolderId" = {p}'
_READ = 'SELECT "HolderId", "Holder", "ExpiresAt" FROM {t} WHERE "Name" = {p}'
_FENCE = 'SELECT count(*) FROM {t} WHERE "Name" = {p} AND "HolderId" = {p}'
_RELEASE = 'DELETE FROM {t} WHERE "Name" = {p} AND "HolderId" = {p}'


class TableLease:
    """`LeasedWarehouse` over one row of a lease table, for SQL warehouses (DB-API drivers).

    `connect` returns a new connection in autocommit mode (psycopg `autocommit=True`,
    redshift_connector `autocommit = True`); transactions are opened with BEGIN here. `param`
    is the driver's placeholder (`%s`, or `?` for DuckDB). `name` tells apart several syncs in
    one schema (use the SyncTable's name). Times are naive UTC, as syncd stores them.
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
    ) -> None:
        qualified = quote_identifier(table)
        self.table = f"{quote_identifier(schema)}.{qualified}" if schema else qualified
        self.name = name
        self._param = param
        self._connect = connect
        self._clock = clock
        self._con: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TableLease(table={self.table!r}, name={self.name!r})"

    def acquire_lease(self, holder: LeaseHolder, ttl: timedelta) -> None:
        now = self._clock()
        values = (holder.id, holder.describe(), _naive(now), _naive(now + ttl))
        with self._lock:
            self._run([(_CREATE, ())])
            try:
                self._run([(_INSERT, (self.name, *values, self.name))])
            except Exception as exc:  # two inserts at once: the key decides, the loser reads
                log.debug("lease insert lost a race", error=str(exc))
            self._run([(_TAKE, (*values, self.name, holder.id, _naive(now)))])
            owner = self._read()
        if owner is None or owner[0] != holder.id:
            raise self._held_by(owner, "cannot start")

    def renew_lease(self, holder: LeaseHolder, ttl: timedelta) -> None:
        expires = _naive(self._clock() + ttl)
        with self._lock:
            self._run([(_RENEW, (expires, self.name, holder.id))])
            owner = self._read()
        if owner is None or owner[0] != holder.id:
            raise self._held_by(owner, "lease lost")

    def release_lease(self, holder: LeaseHolder) -> None:
        with self._lock:
            self._run([(_RELEASE, (self.name, holder.id))])
            if self._con is not None:
                self._con.close()
                self._con = None

    def fence_query(self, holder: LeaseHolder) -> tuple[str, tuple[Any, ...]]:
        """SQL (and parameters) that counts rows naming `holder` as the lease's owner: a commit
        transaction that reads 0 must roll back."""
        return self._sql(_FENCE), (self.name, holder.id)

    def holder(self) -> str | None:
        """Who holds the lease now (for `status`), or None."""
        with self._lock:
            owner = self._read()
        return None if owner is None else str(owner[1])

    # -- internals ---------------------------------------------------------------------------

    def _sql(self, template: str) -> str:
        return template.replace("{t}", self.table).replace("{p}", self._param)

    def _connection(self) -> Any:
        if self._con is None:
            self._con = self._connect()
        return self._con

    def _run(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Run `statements` in one transaction."""
        con = self._connection()
        cursor = con.cursor()
        try:
            cursor.execute("BEGIN")
            for template, params in statements:
                cursor.execute(self._sql(template), params)
            cursor.execute("COMMIT")
        except BaseException:
            try:
                cursor.execute("ROLLBACK")
            except Exception:  # the connection may be gone; the next call reconnects
                self._drop()
            raise
        finally:
            _close(cursor)

    def _read(self) -> tuple[Any, ...] | None:
        cursor = self._connection().cursor()
        try:
            cursor.execute(self._sql(_READ), (self.name,))
            row = cursor.fetchone()
        finally:
            _close(cursor)
        return tuple(row) if row is not None else None

    def _drop(self) -> None:
        try:
            if self._con is not None:
                self._con.close()
        except Exception:  # already broken
            log.debug("closing a broken lease connection failed")
        self._con = None

    def _held_by(self, owner: tuple[Any, ...] | None, what: str) -> LockedError:
        if owner is None:
            return LockedError(f"{what}: the lease on {self.name} was released by someone else")
        expires = owner[2]
        if isinstance(expires, datetime):
            until = format_timestamp(expires if expires.tzinfo else expires.replace(tzinfo=UTC))
        else:
            until = str(expires)
        return LockedError(
            f"{what}: another syncd is the writer of {self.name}: {owner[1]}; its lease runs "
            f"until {until} and is taken over if it is not renewed by then"
        )


def _naive(moment: datetime) -> datetime:
    """Naive UTC, the way syncd's tables store time."""
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def _close(cursor: Any) -> None:
    close = getattr(cursor, "close", None)
    if close is not None:
        close()
