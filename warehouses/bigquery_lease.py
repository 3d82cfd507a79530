"""The writer lease of a BigQuery SyncTable (`syncd.lease` tells the rules).

The lease is the one row of `<SyncTable>_lease`, created with its row by one CREATE TABLE AS
SELECT (of two creators, one gets 409), then taken, renewed and released by single-statement
conditional UPDATEs with parameters, which BigQuery serialises on a table (one that fails on a
concurrent update is followed by a read, which decides). Once held, every commit transaction
ends with `fence()`: a check of that row that raises ERROR() (rolling the transaction back)
when another holder has taken it over. The row's name and the holder id are checked plain
words, so the fence can carry them as literals (scripts take no parameters on the emulator).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from syncd.errors import LoadError, TerminalLoadError, TransientLoadError
from syncd.lease import LeaseHolder, held_by_error, owner_is_gone
from warehouses import bigquery_sql
from warehouses.bigquery_jobs import Jobs

log = structlog.get_logger(__name__)

_HOLDER_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class Lease:
    """The lease row of SyncTable `name` in table `lease` (quoted), through `jobs`."""

    def __init__(
        self,
        jobs: Jobs,
        *,
        name: str,
        lease: str,
        exists: Callable[[], bool],
        clock: Callable[[], datetime],
    ) -> None:
        self._jobs = jobs
        self.name = name
        self._lease = lease
        self._exists = exists
        self._clock = clock
        self.holder: LeaseHolder | None = None  # set once this object took the lease

    def acquire(self, holder: LeaseHolder, ttl: timedelta) -> None:
        """Take the lease (or a stale one); LockedError names the live holder."""
        if not _HOLDER_ID.fullmatch(holder.id):
            raise TerminalLoadError(f"lease holder id {holder.id!r} is not a plain word")
        self._create()
        now = self._clock()
        params = self._holder_params(holder, now, ttl)
        self._update(bigquery_sql.lease_take(self._lease), params, "take the writer lease")
        owner = self.owner()
        if owner is not None and owner[0] != holder.id and owner_is_gone(owner):
            log.warning("taking over the lease of a dead syncd on this host", holder=owner[1])
            previous = ("previous", "STRING", owner[0])
            self._update(
                bigquery_sql.lease_take(self._lease, from_previous=True),
                [*params, previous],
                "take the writer lease",
            )
            owner = self.owner()
        if owner is None or owner[0] != holder.id:
            raise held_by_error(self.name, owner, "cannot start")
        self.holder = holder

    def renew(self, holder: LeaseHolder, ttl: timedelta) -> None:
        params = [
            ("expires", "TIMESTAMP", self._clock() + ttl),
            ("name", "STRING", self.name),
            ("holder_id", "STRING", holder.id),
        ]
        self._update(bigquery_sql.lease_renew(self._lease), params, "renew the writer lease")
        owner = self.owner()
        if owner is None or owner[0] != holder.id:
            raise held_by_error(self.name, owner, "lease lost")

    def release(self, holder: LeaseHolder) -> None:
        params = [("name", "STRING", self.name), ("holder_id", "STRING", holder.id)]
        self._jobs.query(
            bigquery_sql.lease_release(self._lease), params, "release the writer lease"
        )

    def current_holder(self) -> str | None:
        """Who holds the lease now (its description), or None."""
        owner = self.owner() if self._exists() else None
        return None if owner is None else str(owner[1])

    def owner(self) -> tuple[Any, ...] | None:
        """(HolderId, Holder, ExpiresAt, Host, Pid, StartedAt), or None when free."""
        rows = self._jobs.query(
            bigquery_sql.lease_read(self._lease),
            [("name", "STRING", self.name)],
            "read the writer lease",
        )
        return rows[0] if rows and rows[0][0] else None

    def fence(self) -> str:
        """The commit script's check that this object still holds the lease ("" without one)."""
        if self.holder is None:
            return ""
        return bigquery_sql.lease_fence(self._lease, self.name, self.holder.id)

    def lost(self, error: LoadError) -> bool:
        """Whether a failed commit failed on its fence: the lease was taken over."""
        return self.holder is not None and bigquery_sql.LEASE_LOST in str(error)

    def refusal(self, action: str) -> TerminalLoadError:
        """The error of a commit refused by its fence, naming both holders."""
        try:
            owner = self.owner()
            current = "nobody" if owner is None else str(owner[1])
        except LoadError as exc:  # the refusal stands either way
            current = f"unknown ({exc})"
        mine = "this syncd" if self.holder is None else self.holder.describe()
        return TerminalLoadError(
            f"{action}: refused: {mine} no longer holds the writer lease of "
            f"{self.name} (now held by {current}); another syncd took over"
        )

    def _create(self) -> None:
        """The lease table with its one (free) row, made atomically: one creator wins."""
        if self._exists():
            return
        text = bigquery_sql.lease_create(self._lease, self.name)
        try:
            self._jobs.query(text, (), "create the lease table")
        except LoadError:
            if not self._exists():
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
            ("name", "STRING", self.name),
        ]

    def _update(self, text: str, params: Sequence[tuple[str, str, Any]], action: str) -> None:
        """One conditional UPDATE; losing a concurrent update is left to the read after it."""
        try:
            self._jobs.query(text, params, action)
        except TransientLoadError as exc:
            log.debug("lease update lost a race", error=str(exc))
