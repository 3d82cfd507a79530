"""The people table (`ExportIndividuals = true`): one row per individual, kept current from the
individuals exports (`type: TYPE_INDIVIDUAL`) of the committed event windows.

A *people batch* is one committed segment window's individuals export, id
`individuals-<start>-<end>`. After each event commit (and whenever the loop is caught up) the
pipeline runs the people batches of every committed window that has none yet, oldest first:

1. fetch: the individuals export of the window, through the same `Fetcher` as events, so its
   operation id is persisted before it is polled and a restart resumes the same export;
2. transform (`read_individuals`): one row per individual in `warehouses.sql.PEOPLE_COLUMNS`:
   IndvId, UserId, UserCreated, UserAppKey, UserDisplayName, UserEmail as the API documents
   them for individuals, every user var (`user_<name>_<type>`) in the UserVars JSON object,
   and SyncdBatchId, SyncdExportEnd (the window's end) and SyncdLoadedAt;
3. (BigQuery only, `PeopleWarehouse.people_from_stage`) stage the rows as NDJSON;
4. commit (`PeopleWarehouse.commit_people`), ONE transaction: nothing when the batch's row is
   already in `<IndividualsTable>_sync` (a replay is a no-op); otherwise delete the stored rows
   of the batch's individuals that came from an export ending at or before this one's, insert
   the rows of the individuals no newer export wrote (the most recent export wins), and insert
   the batch's row into `<IndividualsTable>_sync`.
5. cleanup: the persisted operation, spool, local and staged files go (at start-up too, for
   batches a crash left committed but not cleaned up).

A crash before 4 loses nothing (the window has no people sync row, so it is planned again and
its export resumed); 4 is atomic; a crash after it duplicates nothing (the sync row makes the
replay a no-op). The people bookkeeping lives apart from the SyncTable, so the sync point, the
consistency check, `rollback`, `status` and hauser's reader of the SyncTable are unchanged. A
people batch's transient failure is retried after its backoff (up to MaxBatchAttempts); one
that still fails never holds up the events: it is logged, shown in the status detail, and
tried again at the next round (`syncd once` exits 1 saying so).

A settle (SettleAfter) replaces a window's events but not its people batch (same window, same
people batch id); a backfill into windows of another layout gives them people batches of their
own, and the most recent export still wins. DB-API warehouses commit the rows as parameters
(multi-row INSERTs in `warehouses.sql.PEOPLE_CHUNK`s), BigQuery from the staged NDJSON.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import orjson
import structlog

from syncd import __version__
from syncd.batch import SyncRecord
from syncd.errors import TerminalSourceError
from syncd.sources.fetcher import Fetcher
from syncd.timeutil import UTC, parse_timestamp
from warehouses.base import Stage

log = structlog.get_logger(__name__)

#: Starts the id of every people batch.
PEOPLE_PREFIX = "individuals"
#: The identity fields of an individuals row, as the API documents them for TYPE_INDIVIDUAL.
IDENTITY_FIELDS: tuple[str, ...] = (
    "IndvId",
    "UserId",
    "UserCreated",
    "UserAppKey",
    "UserDisplayName",
    "UserEmail",
)
USER_VAR_PREFIX = "user_"


def _stamp(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def people_batch_id(start: datetime, end: datetime) -> str:
    """The id of the people batch of the window [start, end)."""
    return f"{PEOPLE_PREFIX}-{_stamp(start)}-{_stamp(end)}"


@dataclass(frozen=True)
class PeopleBatch:
    """One window's individuals, ready to commit."""

    batch_id: str
    start: datetime
    end: datetime  # the export's end: the most recent export wins
    operation_id: str
    committed_at: datetime
    #: Values in `warehouses.sql.PEOPLE_COLUMNS` order, timestamps naive UTC, UserVars JSON text.
    rows: tuple[tuple[Any, ...], ...]
    #: The rows as staged NDJSON, for a warehouse that loads from its stage ("" otherwise).
    uri: str = ""

    def sync_row(self) -> tuple[Any, ...]:
        """Its row of `<IndividualsTable>_sync`, in `warehouses.sql.PEOPLE_SYNC_COLUMNS` order."""
        return (
            self.batch_id,
            _naive(self.start),
            _naive(self.end),
            self.operation_id,
            len(self.rows),
            _naive(self.committed_at),
            __version__,
        )


@runtime_checkable
class PeopleWarehouse(Protocol):
    """A warehouse that keeps a people table (every SQL warehouse of syncd)."""

    #: True when `commit_people` loads the batch from its staged NDJSON (`PeopleBatch.uri`).
    people_from_stage: bool

    def ensure_people_tables(self, table: str) -> None:
        """Create or reconcile the people table `table` and `<table>_sync`."""
        ...

    def people_batch_ids(self, table: str) -> set[str]:
        """The ids of the committed people batches (empty before the first)."""
        ...

    def commit_people(self, table: str, batch: PeopleBatch) -> bool:
        """Upsert the batch's rows and insert its sync row in one transaction (see the module
        doc); False when it was committed already and nothing changed."""
        ...


def _naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    opener: Callable[[], Any] = (
        (lambda: gzip.open(path, "rb")) if compressed else (lambda: path.open("rb"))
    )
    with opener() as f:
        data: bytes = f.read()
    stripped = data.lstrip()
    if stripped.startswith(b"["):  # a JSON array export
        for row in orjson.loads(data):
            yield orjson.dumps(row)
        return
    for line in data.splitlines():
        if line.strip():
            yield line


def _integer(value: Any) -> int | None:
    """An id as the export writes it (a number, or its digits as text); None when absent."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def individual_row(
    raw: dict[str, Any], batch_id: str, export_end: datetime, loaded_at: datetime
) -> tuple[Any, ...]:
    """One individuals export row as a people-table row (`warehouses.sql.PEOPLE_COLUMNS`)."""
    indv_id = _integer(raw.get("IndvId"))
    if indv_id is None:
        raise TerminalSourceError(f"{batch_id}: an individuals row has no IndvId: {raw!r:.200}")
    created = raw.get("UserCreated")
    user_created = (
        _naive(parse_timestamp(created)) if isinstance(created, str) and created else None
    )

    def text(name: str) -> str | None:
        value = raw.get(name)
        return None if value is None else str(value)

    user_vars = {k: v for k, v in raw.items() if k.startswith(USER_VAR_PREFIX)}
    return (
        indv_id,
        _integer(raw.get("UserId")),
        user_created,
        text("UserAppKey"),
        text("UserDisplayName"),
        text("UserEmail"),
        orjson.dumps(user_vars, option=orjson.OPT_SORT_KEYS).decode(),
        batch_id,
        _naive(export_end),
        _naive(loaded_at),
    )


def read_individuals(
    path: Path, batch_id: str, export_end: datetime, loaded_at: datetime
) -> tuple[tuple[Any, ...], ...]:
    """The people-table rows of a downloaded individuals export (NDJSON or a JSON array,
    gzipped or not); one per IndvId (a repeated id: its last row). A line that is not a JSON
    object with an IndvId (and a UserCreated that is a timestamp, when present) is skipped and
    counted in a warning: one bad row never holds the people table back."""
    rows: dict[int, tuple[Any, ...]] = {}
    skipped = 0
    for line in _lines(path):
        try:
            raw = orjson.loads(line)
            if not isinstance(raw, dict):
                raise TerminalSourceError(f"{batch_id}: not a JSON object")
            row = individual_row(raw, batch_id, export_end, loaded_at)
        except (orjson.JSONDecodeError, TerminalSourceError, ValueError):
            skipped += 1
            continue
        rows[row[0]] = row
    if skipped:
        log.warning(
            "individuals rows skipped: not an object with an IndvId", batch=batch_id, rows=skipped
        )
    return tuple(rows.values())


def write_ndjson(rows: Sequence[tuple[Any, ...]], names: Sequence[str], path: Path) -> None:
    """The rows as NDJSON objects keyed by `names` (timestamps as naive UTC text)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        for row in rows:
            obj = {
                n: (v.isoformat(sep=" ") if isinstance(v, datetime) else v)
                for n, v in zip(names, row, strict=True)
            }
            f.write(orjson.dumps(obj) + b"\n")
    os.replace(tmp, path)


def pending_windows(
    records: Sequence[SyncRecord], committed: Collection[str]
) -> list[tuple[datetime, datetime]]:
    """The committed segment windows without a committed people batch, oldest first."""
    windows = {
        (r.start, r.end)
        for r in records
        if r.source == "segment" and r.start is not None and r.end > r.start
    }
    return sorted(
        (start, end) for start, end in windows if people_batch_id(start, end) not in committed
    )


@dataclass
class PeopleRound:
    """What one people round did."""

    committed: int = 0
    rows: int = 0
    error: str = ""


class PeopleSync:
    """Keeps the people table current: see the module doc."""

    def __init__(
        self,
        fetcher: Fetcher,
        warehouse: PeopleWarehouse,
        stage: Stage,
        table: str,
        work_dir: Path,
        *,
        keep_staged: bool = False,
    ) -> None:
        self.fetcher = fetcher
        self.warehouse = warehouse
        self.stage = stage
        self.table = table
        self.work_dir = work_dir
        self.keep_staged = keep_staged
        self.committed: set[str] = set()

    def start(self) -> None:
        """Create or reconcile the people tables; read the committed people batches; clean up
        what a crash after a commit left."""
        self.warehouse.ensure_people_tables(self.table)
        self.committed = self.warehouse.people_batch_ids(self.table)
        self.fetcher.sweep(self.committed)

    def pending(self, records: Sequence[SyncRecord]) -> list[tuple[datetime, datetime]]:
        return pending_windows(records, self.committed)

    def process(self, start: datetime, end: datetime, now: datetime) -> PeopleBatch:
        """Fetch, transform, (stage,) commit and clean up one window's people batch."""
        batch_id = people_batch_id(start, end)
        log.info("people batch started", batch=batch_id)
        fetched = self.fetcher.fetch_segment(batch_id, start, end, individuals=True)
        rows = read_individuals(fetched.path, batch_id, end, now)
        uri = ""
        local: Path | None = None
        if self.warehouse.people_from_stage:
            from warehouses.sql import PEOPLE_COLUMNS

            local = self.work_dir / f"{batch_id}.ndjson"
            write_ndjson(rows, [c.name for c in PEOPLE_COLUMNS], local)
            uri = self.stage.put(local, local.name)
        batch = PeopleBatch(
            batch_id=batch_id,
            start=start,
            end=end,
            operation_id=fetched.operation_id,
            committed_at=now,
            rows=rows,
            uri=uri,
        )
        changed = self.warehouse.commit_people(self.table, batch)
        self.committed.add(batch_id)
        log.info("people batch committed", batch=batch_id, rows=len(rows), replay=not changed)
        self._cleanup(batch_id, local, uri)
        return batch

    def _cleanup(self, batch_id: str, local: Path | None, uri: str) -> None:
        try:
            self.fetcher.forget(batch_id)
            if local is not None:
                local.unlink(missing_ok=True)
            if uri and not self.keep_staged:
                self.stage.delete(uri)
        except Exception as exc:  # files are re-creatable, never needed for correctness
            log.warning("cleanup after a people commit failed; files left behind", error=str(exc))
