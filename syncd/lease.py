"""One writer per SyncTable: a lease held in the warehouse, taken over when it goes stale.

Two daemons on the same SyncTable would plan and load the same batches. The guard lives in the
warehouse, the one thing both daemons share:

- An adapter that can hold a lease implements `LeasedWarehouse` (three optional methods of the
  `Warehouse` protocol): `acquire_lease(holder, ttl)` raises `LockedError` naming the current
  holder; `renew_lease` extends it (and raises `LockedError` when it was lost);
  `release_lease` gives it up. `LeaseKeeper` acquires at start-up, renews every `ttl / 3`
  from a thread, releases at exit; when a renewal fails it sets the stop event, so the daemon
  stops after the current step.
- DuckDB: an OS lock file is the lease. syncd keeps the DuckDB file closed between commits (so
  that others can query it), so a writable `DuckDBWarehouse` holds a `flock` on
  `<path>.lock` for its whole life instead; the lock goes with the process (a dead daemon
  leaves no stale lock), and a second writer's constructor raises `LockedError` naming the
  holder's PID. `DuckDBWarehouse` needs no lease methods.
- PostgreSQL and Redshift: `warehouses.lease_sql.TableLease`, one row in `<SyncTable>_lease` on
  a connection of its own (autocommit, so lease statements never mix with a batch's
  transaction). Taking the lease is one transaction that reads the rows, decides, deletes what
  it read and inserts its own row; a row whose `ExpiresAt` has passed belongs to a dead or hung
  daemon and is taken over. Of two daemons taking it at once exactly one wins: on PostgreSQL by
  the enforced primary key and DELETE's row locks; on Redshift, which enforces no key and whose
  snapshot isolation lets two transactions both read "no row", by `LOCK` of the lease table at
  the start of every lease transaction. Readers order the rows, so all name the same holder.
  For fencing, `DbApiWarehouse.commit_batch` runs `TableLease.fence_query()` (PostgreSQL with
  FOR SHARE, so a takeover waits for the commit; Redshift after a `LOCK` of the lease table as
  the commit's first statement) and refuses to commit when the holder is no longer this one
  (once the warehouse object has acquired the lease).
- BigQuery: the same row in a `<SyncTable>_lease` table, written by DML (conditional UPDATE /
  INSERT); BigQuery aborts one of two conflicting DML statements, which gives the same
  exactly-one-winner rule. See `warehouses.bigquery` (CREATE TABLE AS SELECT makes the row,
  conditional UPDATEs move it, the commit script checks it and raises ERROR() when lost).

A holder that died on this host (same host name, its PID gone, or this very PID but from before
this process started, as after a container restart) is taken over at once, without waiting for
the TTL: a daemon killed and restarted resumes at once. Host names shared by two live daemons
at worst make one take over from the other, which then loses its lease and stops: the commit
fence keeps that to one writer.

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
from syncd.state import pid_alive
from syncd.timeutil import UTC, format_timestamp, utcnow

log = structlog.get_logger(__name__)

#: How long a lease lasts without renewal; it is renewed every third of it.
DEFAULT_LEASE_TTL = timedelta(minutes=5)

#: When this process (near enough: this module's import) started; a holder with this PID and
#: an earlier start is a previous process that had the same PID.
PROCESS_STARTED = utcnow()


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


def holder_is_gone(host: str, pid: int, started_at: datetime) -> bool:
    """True when a lease holder ran on this host and its process no longer exists."""
    if host != socket.gethostname() or pid <= 0:
        return False
    if pid == os.getpid():
        return _aware(started_at) < PROCESS_STARTED
    return not pid_alive(pid)


def held_by_error(name: str, owner: tuple[Any, ...] | None, what: str) -> LockedError:
    """The LockedError for a lease on `name` held by `owner` (HolderId, Holder, ExpiresAt, ...)
    or released (None)."""
    if owner is None:
        return LockedError(f"{what}: the lease on {name} was released by someone else")
    expires = owner[2]
    until = format_timestamp(_aware(expires)) if isinstance(expires, datetime) else str(expires)
    return LockedError(
        f"{what}: another syncd is the writer of {name}: {owner[1]}; its lease runs "
        f"until {until} and is taken over if it is not renewed by then"
    )


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


def holder_values(holder: LeaseHolder, now: datetime, ttl: timedelta) -> tuple[Any, ...]:
    """HolderId, Holder, Host, Pid, StartedAt, AcquiredAt, ExpiresAt of a lease row (naive UTC)."""
    return (
        holder.id,
        holder.describe(),
        holder.host,
        holder.pid,
        naive_utc(holder.started_at),
        naive_utc(now),
        naive_utc(now + ttl),
    )


def owner_is_gone(owner: tuple[Any, ...] | None) -> bool:
    """`holder_is_gone` for a row read as (HolderId, Holder, ExpiresAt, Host, Pid, StartedAt)."""
    if owner is None or not isinstance(owner[5], datetime):
        return False
    return holder_is_gone(str(owner[3]), int(owner[4]), owner[5])


def naive_utc(moment: datetime) -> datetime:
    """Naive UTC, the way syncd's tables store time."""
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
