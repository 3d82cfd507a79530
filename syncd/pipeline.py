"""The sync loop: plan the next batch, fetch, transform, stage, commit; strictly in order.

Exactly-once rests on two facts: the warehouse commits a batch and its sync row atomically
(see `warehouses.base.Warehouse.commit_batch`), and the planner derives the next batch from the
committed sync rows only. Everything before the commit can be repeated after a crash; nothing
after it is needed for correctness (cleanup only).

A batch that keeps failing is retried with capped backoff, then *held*: the daemon stays up,
reports it in the status file and to hooks, retries it every `held_retry_interval`, and never
plans past it.

A source that settles (`Settles`: SettleAfter) adds settles of committed windows to a planning
round after the fresh batches, only in the room they leave: fresh windows always come first,
through the same client and rate limit. A settle's commit replaces its window (rows, rejects,
sync row) in one transaction (`commit_batch(..., replace=True)`). A settle that keeps failing
is held on its own (`settles_held`): reported, left out of planning until its retry time, and
never in the way of fresh windows. A settle's failed attempt is never waited for either: the
settle sits out its backoff (`_settle_waits`) while fresh windows go on.

A warehouse that may wait for another process (`warehouses.base.ReportsWaits`: DuckDB while a
reader has its file open) tells the pipeline, which shows the wait in the status file (state
"waiting") and puts the previous state back when the wait ends.

With ExportIndividuals (`people`: `syncd.people.PeopleSync`), a people round runs after each
commit and whenever the loop is caught up: the individuals export of every committed window
that has no people batch yet, each committed with its own bookkeeping. A transient failure is
retried after its backoff (up to MaxBatchAttempts); a people batch that still fails is logged,
shown in the status detail and tried again at the next round; it never holds the events back
for longer (`RunSummary.people_error`: `syncd once` exits 1 with it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Protocol, TypeVar, cast, runtime_checkable

import structlog

from syncd import __version__
from syncd.batch import (
    SETTLE_SUFFIX,
    BatchKey,
    SourceKind,
    StagedBatch,
    StagedFormat,
    SyncRecord,
    TransformedBatch,
)
from syncd.errors import SyncdError, TransformError
from syncd.fields import Column
from syncd.observability.logging import safe_text
from syncd.people import PeopleBatch, PeopleSync
from syncd.planner import contiguous_end, covering_before
from syncd.sources.retry import RetryPolicy
from syncd.state import DaemonStatus, HeldBatch, StatusFile
from syncd.timeutil import UTC, utcnow
from syncd.transform.columnar import transform
from syncd.transform.rules import OutputRules
from warehouses.base import Capabilities, ReportsWaits, Stage, Warehouse, first_kept_day

log = structlog.get_logger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True)
class Fetched:
    """The downloaded export files of one batch, on the spool disk."""

    paths: tuple[Path, ...]
    bytes: int
    operation_id: str = ""


class BatchSource(Protocol):
    """Plans and downloads batches of one export API (segment export or legacy bundles)."""

    kind: str

    def plan(self, records: Sequence[SyncRecord], now: datetime, limit: int) -> list[BatchKey]:
        """The next ready batches after the committed records, in commit order."""
        ...

    def next_ready_at(self, records: Sequence[SyncRecord], now: datetime) -> datetime:
        """When planning may next find a batch, for the idle wait."""
        ...

    def fetch(self, key: BatchKey) -> Fetched:
        """Download the batch (resuming an in-flight export when there is one)."""
        ...

    def discard(self, key: BatchKey) -> None:
        """Forget the batch's in-flight export and spool files (after commit, or when corrupt)."""
        ...

    def sweep(self, committed: Collection[str]) -> None:
        """Forget exports and spool files of committed batches (left by a crash after commit)."""
        ...


@runtime_checkable
class Settles(Protocol):
    """A source that exports committed windows again once late events have arrived."""

    def plan_settles(
        self, records: Sequence[SyncRecord], now: datetime, limit: int, skip: Collection[str]
    ) -> list[BatchKey]:
        """Up to `limit` settles due by `now`, oldest first, none whose id is in `skip`."""
        ...

    def next_settle_at(self, records: Sequence[SyncRecord]) -> datetime | None:
        """When the next settle falls due (None: no window waits for one)."""
        ...

    def unsettled(self, records: Sequence[SyncRecord]) -> list[SyncRecord]:
        """The committed windows still waiting for their settle."""
        ...


class PipelineHooks:
    """Cross-cutting observers (metrics, health, progress). A failing hook is logged, not raised."""

    def after_start(self, records: Sequence[SyncRecord]) -> None:
        """Start-up is done: `records` are the SyncTable's rows (earlier runs' commits)."""

    def before_batch(self, key: BatchKey) -> None:
        pass

    def after_step(self, key: BatchKey, step: str, seconds: float) -> None:
        pass

    def after_stage(self, key: BatchKey, staged: StagedBatch) -> None:
        pass

    def after_commit(self, key: BatchKey, record: SyncRecord) -> None:
        pass

    def on_failure(self, key: BatchKey, error: BaseException, attempt: int, held: bool) -> None:
        pass

    def on_idle(self, sync_point: datetime | None, next_ready_at: datetime) -> None:
        pass


@dataclass(frozen=True)
class Prepared:
    """A batch fetched, transformed and staged, waiting for its turn to commit."""

    fetched: Fetched
    staged: StagedBatch


@dataclass(frozen=True)
class PipelineOptions:
    work_dir: Path  # transform output before staging
    staged_format: StagedFormat
    keep_staged: bool = False
    max_attempts: int = 5  # attempts before a batch is held
    retry_base: float = 30.0  # seconds; doubles each attempt
    retry_cap: float = 600.0
    held_retry_interval: float = 900.0
    consistency_days: int = 7  # how far back start-up checks days for disagreement
    lookahead: int = 0  # batches prepared (fetched .. staged) ahead of the one committing
    dropped_fields: frozenset[str] = frozenset()  # left out of every row (OutputRules)
    staged_name: Callable[[TransformedBatch], str] = field(
        default=lambda b: b.path.name  # the stage applies FilePrefix
    )


@dataclass
class RunSummary:
    batches: int = 0
    rows: int = 0
    rejected: int = 0
    bytes: int = 0
    seconds: float = 0.0
    held: HeldBatch | None = None
    committed: list[SyncRecord] = field(default_factory=list)
    people_batches: int = 0  # people batches committed (ExportIndividuals)
    people_rows: int = 0
    people_error: str = ""  # the last people round's failure, "" when it succeeded


class Pipeline:
    """Runs batches through fetch -> transform -> stage -> commit, one at a time, in order."""

    def __init__(
        self,
        source: BatchSource,
        stage: Stage,
        warehouse: Warehouse,
        columns: Sequence[Column],
        options: PipelineOptions,
        *,
        status: StatusFile | None = None,
        hooks: Sequence[PipelineHooks] = (),
        stop: threading.Event | None = None,
        clock: Callable[[], datetime] = utcnow,
        people: PeopleSync | None = None,
    ) -> None:
        self.source = source
        self.people = people
        self.stage = stage
        self.warehouse = warehouse
        self.wanted_columns = tuple(columns)
        self.columns: tuple[Column, ...] = ()
        self.options = options
        self.status_file = status
        self.hooks = tuple(hooks)
        self.stop = stop or threading.Event()
        self.clock = clock
        self.records: list[SyncRecord] = []
        #: Commits replace the old rows of their windows (`syncd.backfill` sets it for a day).
        self.replace = False
        self.held: HeldBatch | None = None
        #: Settles that keep failing, by batch id: retried at their `next_attempt`, meanwhile
        #: left out of planning so that fresh windows go on.
        self.settles_held: dict[str, HeldBatch] = {}
        #: When each failed settle may be tried again (its backoff, or HeldRetryInterval).
        self._settle_waits: dict[str, datetime] = {}
        self._floor_said: date | None = None
        self._attempts: dict[str, int] = {}
        self._rng = random.Random()
        self._ahead: dict[BatchKey, Future[Prepared]] = {}
        self._executor: ThreadPoolExecutor | None = None
        # one transform at a time: it uses every core already, and each holds its own DuckDB
        # buffers; nor beside a commit that loads a local file (DuckDB's runs in this process,
        # up to its MemoryLimit), so the daemon's peak is the larger of the two, not their sum
        # (docs/benchmark.md); a remote load (S3, GCS) leaves transforms free
        self._transforming = threading.Lock()
        self._shown: tuple[str, str, datetime | None] = ("starting", "", None)
        if isinstance(warehouse, ReportsWaits):
            warehouse.report_waits(self, self.stop)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Create or reconcile tables, repair inconsistent days, read the sync point."""
        self.columns = self.warehouse.ensure_tables(self.wanted_columns)
        self.records = self.warehouse.sync_records()
        if self.people is not None:
            self.people.start()
        self.repair()
        # Whatever a crash between commit and cleanup left: transform outputs are always
        # re-creatable, and spool files of committed batches are no longer needed.
        shutil.rmtree(self.options.work_dir, ignore_errors=True)
        self.source.sweep({r.batch_id for r in self.records})
        self._notify("after_start", list(self.records))
        self._publish("starting")

    def _plan_kept(self, limit: int) -> tuple[list[BatchKey], list[SyncRecord]]:
        """The next batches, and the records they were planned from.

        None lies in a day the warehouse no longer keeps (`warehouses.base.first_kept_day`):
        when the plan would start before the first day kept (an old StartTime, a gap, a held
        batch that aged past it), time before that day counts as done (`covering_before`), as
        its rows would vanish as soon as loaded. Said once per first kept day."""
        now = self.clock()
        keys = self.source.plan(self.records, now, limit)
        kept = first_kept_day(self.warehouse.capabilities, now)
        if kept is None or not keys:
            return keys, list(self.records)
        floor = datetime.combine(kept, dt_time(0), tzinfo=UTC)
        if keys[0].start >= floor:
            return keys, list(self.records)
        if self._floor_said != kept:
            self._floor_said = kept
            capabilities = self.warehouse.capabilities
            log.warning(
                "days before the first kept day are not loaded: the warehouse drops their rows "
                "as soon as they are loaded",
                first_kept_day=kept.isoformat(),
                skipped_from=keys[0].start.isoformat(),
                retention=str(capabilities.retention),
                setting=capabilities.retention_setting,
            )
        records = covering_before(self.records, floor)
        return self.source.plan(records, now, limit), records

    def _leave_expired_hold(self, keys: Sequence[BatchKey]) -> None:
        """A held batch is always the first one planned, until its day is older than the
        warehouse keeps (`_plannable`): then it is left behind, said, not retried forever."""
        if self.held is None or self.warehouse.capabilities.retention is None:
            return
        if any(k.id == self.held.batch_id for k in keys):
            return
        log.warning(
            "a held batch is left behind: its day is older than the warehouse keeps",
            batch=self.held.batch_id,
            error=self.held.error,
        )
        self.held = None

    def repair(self) -> list[date]:
        """Roll back every recent day whose rows and sync rows disagree, so it reloads whole.

        Days the warehouse no longer keeps (older than its retention) are not checked: their
        rows are gone by design, and reloading them would only see them vanish again."""
        end = contiguous_end(self.records) or self.clock()
        since = (end - timedelta(days=self.options.consistency_days)).date()
        kept = first_kept_day(self.warehouse.capabilities, self.clock())
        if kept is not None and kept > since:
            since = kept
        days = self.warehouse.inconsistent_days(since)
        for day in days:
            result = self.warehouse.rollback_days(day, day)
            log.warning(
                "rolled back an inconsistent day",
                day=day.isoformat(),
                rows_deleted=result.rows_deleted,
                sync_rows_deleted=result.sync_rows_deleted,
            )
        if days:
            self.records = self.warehouse.sync_records()
        return days

    def run(self, *, until_caught_up: bool) -> RunSummary:
        """Load batches until stopped (daemon) or until nothing is ready (`once`).

        With `lookahead`, the next batches are prepared (exported, downloaded, transformed,
        staged) on worker threads while the current one commits; commits stay in order.
        """
        summary = RunSummary()
        started = time.monotonic()
        if self.options.lookahead > 0:
            self._executor = ThreadPoolExecutor(
                max_workers=self.options.lookahead, thread_name_prefix="syncd-prepare"
            )
        try:
            while not self.stop.is_set():
                planned = self._plan()
                if planned is None:  # planning failed: retried, then held, like a batch
                    planning = self._planning_key()
                    if self.held is not None and self.held.batch_id == planning.id:
                        if until_caught_up:
                            break
                        self.stop.wait(self.options.held_retry_interval)
                    else:
                        self.stop.wait(self._backoff(self._attempts.get(planning.id, 1)))
                    continue
                keys, plannable = planned
                self._leave_expired_hold(keys)
                self._look_ahead(keys)
                if not keys:
                    self._people_round(summary)
                    ready_at = self._next_ready_at(plannable)
                    self._idle(ready_at)
                    if until_caught_up:
                        break
                    self._wait_until(ready_at)
                    continue
                key = keys[0]
                record = self._attempt(key)
                if record is not None:
                    summary.batches += 1
                    summary.rows += record.rows_loaded
                    summary.rejected += record.rows_rejected
                    summary.bytes += record.bytes
                    summary.committed.append(record)
                    self._people_round(summary)
                    continue
                if key.settle:
                    continue  # planned again at its retry time; fresh windows go on meanwhile
                if self.held is not None and self.held.batch_id == key.id:
                    if until_caught_up:
                        break
                    self.stop.wait(self.options.held_retry_interval)
                else:
                    self.stop.wait(self._backoff(self._attempts.get(key.id, 1)))
        finally:
            stopped = self.stop.is_set()
            self._end_look_ahead()
            summary.seconds = time.monotonic() - started
            summary.held = self.held
            self._publish("stopped" if stopped else ("held" if self.held else "idle"))
        return summary

    def _look_ahead(self, keys: Sequence[BatchKey]) -> None:
        """Start preparing the planned batches after the first; drop those no longer planned."""
        for key in list(self._ahead):
            if key not in keys:
                self._drop_prepared(self._ahead.pop(key))
        if self._executor is None:
            return
        for key in keys[1:]:
            if key not in self._ahead:
                self._ahead[key] = self._executor.submit(self._prepare_in_thread, key)

    def _prepare_in_thread(self, key: BatchKey) -> Prepared:
        with structlog.contextvars.bound_contextvars(batch=key.id):
            return self.prepare(key)

    def _drop_prepared(self, future: Future[Prepared]) -> None:
        """A prepared batch that will not be committed as prepared: remove its files (once it is
        ready, when it is still being prepared)."""
        if future.cancel():
            return
        if not future.done():
            future.add_done_callback(self._drop_prepared)
            return
        if future.exception() is not None:
            return
        prepared = future.result()
        self._remove_files(prepared.staged, keep_staged=self.options.keep_staged)

    def _end_look_ahead(self) -> None:
        """Stop preparing: cancel queued work, end running steps at their next check."""
        if self._executor is None:
            return
        running = [f for f in self._ahead.values() if not f.done()]
        interrupt = bool(running) and not self.stop.is_set()
        if interrupt:
            self.stop.set()  # ends polls, downloads and steps of the batches ahead
        self._executor.shutdown(wait=True, cancel_futures=True)
        if interrupt:
            self.stop.clear()  # only this run is over; the caller may run again
        for future in self._ahead.values():
            self._drop_prepared(future)
        self._ahead.clear()
        self._executor = None

    def _plan(self) -> tuple[list[BatchKey], list[SyncRecord]] | None:
        """`_plan_kept`'s batches and records, or None when planning failed. Planning may call
        the API (legacy bundles are listed), so its failures are reported, retried and held as
        a batch's are, under `_planning_key`."""
        key = self._planning_key()
        attempt = self._attempts.get(key.id, 0) + 1
        with structlog.contextvars.bound_contextvars(batch=key.id):
            try:
                planned = self._with_settles(self._plan_kept(1 + self.options.lookahead))
            except Exception as exc:  # never ends the daemon: held and retried instead
                self._attempts[key.id] = attempt
                self._failed(key, exc, attempt)
                return None
        self._attempts.pop(key.id, None)
        if self.held is not None and self.held.batch_id == key.id:
            self.held = None
        return planned

    def _with_settles(
        self, planned: tuple[list[BatchKey], list[SyncRecord]]
    ) -> tuple[list[BatchKey], list[SyncRecord]]:
        """The fresh batches, then settles in the room left (none when the source does not
        settle); held settles wait for their retry time; none in a day no longer kept."""
        keys, records = planned
        room = 1 + self.options.lookahead - len(keys)
        if room <= 0 or not isinstance(self.source, Settles):
            return keys, records
        now = self.clock()
        waiting = {batch_id for batch_id, at in self._settle_waits.items() if at > now}
        kept = first_kept_day(self.warehouse.capabilities, now)
        settles = [
            k
            for k in self.source.plan_settles(self.records, now, room, waiting)
            if kept is None or k.start.date() >= kept
        ]
        return [*keys, *settles], records

    def _next_ready_at(self, records: Sequence[SyncRecord]) -> datetime:
        """When planning may next find work: a fresh batch, a settle falling due, or a held
        settle's retry."""
        now = self.clock()
        moments = [self.source.next_ready_at(records, now)]
        if isinstance(self.source, Settles):
            # a failed settle's window counts at its retry time, not at its (past) due time
            waiting = [
                r for r in self.records if f"{r.batch_id}{SETTLE_SUFFIX}" not in self._settle_waits
            ]
            due = self.source.next_settle_at(waiting)
            if due is not None:
                moments.append(due)
            moments.extend(self._settle_waits.values())
        return min(moments)

    def _planning_key(self) -> BatchKey:
        """Stands for "the batch after the sync point" while it cannot be planned: an empty
        window at the sync point (at the Unix epoch before the first commit)."""
        point = contiguous_end(self.records) or datetime.fromtimestamp(0, UTC)
        return BatchKey(start=point, end=point, source=cast(SourceKind, self.source.kind))

    # -- people (ExportIndividuals) ---------------------------------------------------------

    def _people_round(self, summary: RunSummary) -> None:
        """The people batches of the committed windows that have none, oldest first; the
        first failure ends the round (tried again at the next one)."""
        if self.people is None:
            return
        summary.people_error = ""
        for start, end in self.people.pending(self.records):
            batch = self._people_batch(start, end, summary)
            if batch is None:
                return
            summary.people_batches += 1
            summary.people_rows += len(batch.rows)

    def _people_batch(
        self, start: datetime, end: datetime, summary: RunSummary
    ) -> PeopleBatch | None:
        """One people batch, a transient failure retried after its backoff (as a batch's, up
        to MaxBatchAttempts); None when it failed for this round (or a stop was asked for)."""
        assert self.people is not None
        for attempt in range(1, self.options.max_attempts + 1):
            if self.stop.is_set():
                return None
            try:
                return self.people.process(start, end, self.clock())
            except Exception as exc:  # never stops the events; retried next round at worst
                message = _describe(exc)
                transient = (isinstance(exc, SyncdError) and exc.transient) or _disk_full(exc)
                if transient and attempt < self.options.max_attempts:
                    log.warning("people batch failed; will retry", attempt=attempt, error=message)
                    self.stop.wait(self._backoff(attempt))
                    continue
                summary.people_error = message
                log.error("people batch failed; tried again at the next round", error=message)
                self._publish("loading", f"people batch failed: {message}")
                return None
        return None

    # -- one batch -------------------------------------------------------------------------

    def _attempt(self, key: BatchKey) -> SyncRecord | None:
        """One attempt at a batch; on failure, wait out its backoff (or hold it)."""
        attempt = self._attempts.get(key.id, 0) + 1
        self._attempts[key.id] = attempt
        with structlog.contextvars.bound_contextvars(batch=key.id):
            try:
                record = self.process(key)
            except Exception as exc:  # every failure is reported and retried, never skipped
                self._failed(key, exc, attempt)
                return None
        self._attempts.pop(key.id, None)
        if key.settle:
            self.settles_held.pop(key.id, None)
            self._settle_waits.pop(key.id, None)
        else:
            self.held = None
        return record

    def process(self, key: BatchKey) -> SyncRecord:
        """Prepare (or take the prepared) batch, commit it, clean up after the commit."""
        self._notify("before_batch", key)
        self._publish("loading", f"batch {key.id}")
        future = self._ahead.pop(key, None)
        prepared = future.result() if future is not None else self.prepare(key)
        return self.commit(key, prepared)

    def prepare(self, key: BatchKey) -> Prepared:
        """Fetch, transform and stage one batch: everything that may run ahead of commits."""
        log.info("batch started", start=key.start.isoformat(), end=key.end.isoformat())
        fetched = self._step(key, "fetch", lambda: self.source.fetch(key))
        loaded_at = self.clock()
        try:
            with self._transforming:
                batch = self._step(
                    key,
                    "transform",
                    lambda: transform(
                        key,
                        fetched.paths,
                        self.options.work_dir,
                        self.columns,
                        self.options.staged_format,
                        loaded_at,
                        rules=output_rules(
                            self.warehouse.capabilities, self.options.dropped_fields
                        ),
                    ),
                )
        except TransformError:
            self.source.discard(key)  # a damaged download: fetch it afresh next attempt
            raise
        try:
            staged = self._step(key, "stage", lambda: self._stage(batch))
        except BaseException:  # stopped or failed: the next attempt transforms afresh
            for path in (batch.path, batch.rejects_path):
                if path is not None:
                    path.unlink(missing_ok=True)
            raise
        self._notify("after_stage", key, staged)
        return Prepared(fetched=fetched, staged=staged)

    def commit(self, key: BatchKey, prepared: Prepared) -> SyncRecord:
        """Commit a prepared batch with its sync row, then clean up. Main thread only."""
        fetched, staged = prepared.fetched, prepared.staged
        batch = staged.batch
        now = self.clock()
        replaced = [r for r in self.records if key.settle and _in_window(r, key)]
        record = SyncRecord(
            batch_id=key.id,
            source=key.source,
            start=key.start,
            end=key.end,
            committed_at=now,
            bundle_ids=key.bundle_ids,
            operation_id=fetched.operation_id,
            rows_loaded=batch.rows,
            rows_rejected=batch.rejected,
            bytes=fetched.bytes,
            staged_uri=staged.uri,
            syncd_version=__version__,
            settled_at=now if key.settle else None,
            settle_delta=batch.rows - sum(r.rows_loaded for r in replaced) if key.settle else 0,
        )
        if self.stop.is_set():
            raise _Stopped()
        replace = self.replace or key.settle
        in_process = self.warehouse.capabilities.loads_in_process
        with self._transforming if in_process else contextlib.nullcontext():
            self._step(
                key, "commit", lambda: self.warehouse.commit_batch(staged, record, replace=replace)
            )
        if replaced:
            self.records = [r for r in self.records if r not in replaced]
        self.records.append(record)
        log.info(
            "batch committed",
            rows=record.rows_loaded,
            rejected=record.rows_rejected,
            bytes=record.bytes,
            **({"settle_delta": record.settle_delta} if key.settle else {}),
        )
        self._notify("after_commit", key, record)
        self._cleanup(key, staged)
        self._publish("loading", f"committed {key.id}")
        return record

    def _stage(self, batch: TransformedBatch) -> StagedBatch:
        uri = self.stage.put(batch.path, self.options.staged_name(batch))
        rejects_uri = None
        if batch.rejects_path is not None:
            rejects_uri = self.stage.put(batch.rejects_path, batch.rejects_path.name)
        return StagedBatch(batch=batch, uri=uri, rejects_uri=rejects_uri)

    def _cleanup(self, key: BatchKey, staged: StagedBatch) -> None:
        """After the commit: spool, local and (unless kept) staged files go."""
        try:
            self.source.discard(key)
        except (OSError, SyncdError) as exc:
            log.warning("cleanup after commit failed; files left behind", error=str(exc))
        self._remove_files(staged, keep_staged=self.options.keep_staged)

    def _remove_files(self, staged: StagedBatch, *, keep_staged: bool) -> None:
        """Remove a batch's transform output and (unless kept) its staged objects; failures
        are only logged (the files are re-creatable, never needed for correctness)."""
        batch = staged.batch
        try:
            for path in (batch.path, batch.rejects_path):
                if path is not None:
                    path.unlink(missing_ok=True)
            if not keep_staged:
                self.stage.delete(staged.uri)
                if staged.rejects_uri is not None:
                    self.stage.delete(staged.rejects_uri)
        except (OSError, SyncdError) as exc:
            log.warning("removing a batch's files failed; files left behind", error=str(exc))

    def _step(self, key: BatchKey, name: str, fn: Callable[[], _T]) -> _T:
        if self.stop.is_set():
            raise _Stopped()
        started = time.monotonic()
        result = fn()
        seconds = time.monotonic() - started
        log.debug("step done", step=name, seconds=round(seconds, 3))
        self._notify("after_step", key, name, seconds)
        return result

    # -- failure, waiting, status -----------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        policy = RetryPolicy(
            base=self.options.retry_base,
            cap=self.options.retry_cap,
            max_attempts=self.options.max_attempts,
        )
        return policy.wait(attempt, rand=self._rng.random)

    def _failed(self, key: BatchKey, exc: Exception, attempt: int) -> None:
        """Log and report a failed attempt; hold the batch when it is out of attempts."""
        if isinstance(exc, _Stopped):
            return
        message = _describe(exc)
        transient = (isinstance(exc, SyncdError) and exc.transient) or _disk_full(exc)
        held = attempt >= self.options.max_attempts or not transient
        if key.settle:
            self._settle_failed(key, exc, attempt, message, held)
            return
        if held:
            now = self.clock()
            since = self.held.since if self.held and self.held.batch_id == key.id else now
            self.held = HeldBatch(
                batch_id=key.id,
                error=message,
                since=since,
                attempts=attempt,
                next_attempt=now + timedelta(seconds=self.options.held_retry_interval),
            )
            log.error(
                "batch held: it keeps failing; retrying later, never skipping it",
                attempt=attempt,
                error=message,
                retry_in_s=self.options.held_retry_interval,
            )
        else:
            log.warning("batch failed; will retry", attempt=attempt, error=message)
        self._notify("on_failure", key, exc, attempt, held)
        self._publish("held" if held else "retrying", message)

    def _settle_failed(
        self, key: BatchKey, exc: Exception, attempt: int, message: str, held: bool
    ) -> None:
        """A settle's failed attempt: it sits out its backoff (held: HeldRetryInterval) out of
        planning, so the loop goes on with fresh windows instead of waiting for it."""
        now = self.clock()
        wait = self.options.held_retry_interval if held else self._backoff(attempt)
        retry_at = now + timedelta(seconds=wait)
        self._settle_waits[key.id] = retry_at
        if held:
            before = self.settles_held.get(key.id)
            self.settles_held[key.id] = HeldBatch(
                batch_id=key.id,
                error=message,
                since=before.since if before is not None else now,
                attempts=attempt,
                next_attempt=retry_at,
            )
            log.error(
                "settle held: it keeps failing; fresh windows go on, the settle is retried later",
                attempt=attempt,
                error=message,
                retry_in_s=wait,
            )
        else:
            log.warning(
                "settle failed; fresh windows go on, it is retried after its backoff",
                attempt=attempt,
                error=message,
                retry_in_s=round(wait, 1),
            )
        self._notify("on_failure", key, exc, attempt, held)
        self._publish("loading", f"settle {'held' if held else 'failed'}: {message}")

    def _idle(self, ready_at: datetime) -> None:
        sync_point = contiguous_end(self.records)
        self._notify("on_idle", sync_point, ready_at)
        self._publish("idle", f"caught up; next batch ready at {ready_at.isoformat()}", ready_at)

    def _wait_until(self, moment: datetime) -> None:
        delay = (moment - self.clock()).total_seconds()
        log.info(
            "caught up; sleeping until the next batch can exist",
            until=moment.isoformat(),
            seconds=round(delay),
        )
        self.stop.wait(max(1.0, min(delay, 3600.0)))

    def _notify(self, hook: str, *args: object) -> None:
        for h in self.hooks:
            try:
                getattr(h, hook)(*args)
            except Exception as exc:  # a hook must never break a batch
                log.warning("hook failed", hook=hook, error=str(exc))

    def warehouse_waiting(self, reason: str) -> None:
        """`warehouses.base.WaitListener`: the status shows the wait until it ends."""
        self._publish("waiting", reason)

    def warehouse_free(self, waited_seconds: float) -> None:
        """`warehouses.base.WaitListener`: the status goes back to what it showed before."""
        self._publish(*self._shown)

    def _publish(self, state: str, detail: str = "", ready_at: datetime | None = None) -> None:
        if state != "waiting":
            self._shown = (state, detail, ready_at)
        if self.status_file is None:
            return
        status = DaemonStatus(
            pid=os.getpid(),
            updated_at=self.clock(),
            state=state,
            detail=detail,
            sync_point=contiguous_end(self.records),
            batches_committed=len(self.records),
            next_ready_at=ready_at,
            held=self.held,
            recent=self.records[-10:],
            settles_held=list(self.settles_held.values()),
            unsettled=len(self.source.unsettled(self.records))
            if isinstance(self.source, Settles)
            else 0,
            settle_rows_gained=sum(r.settle_delta for r in self.records),
        )
        try:
            self.status_file.write(status)
        except OSError as exc:
            log.warning("could not write the status file", error=str(exc))


class _Stopped(Exception):
    """Raised between steps when a stop was asked for: nothing half-committed, nothing reported."""


#: Out of disk space or quota: space can come back, so the batch is retried like any other
#: transient failure before it is held.
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _in_window(record: SyncRecord, key: BatchKey) -> bool:
    """A segment batch inside the window of `key`: what a settle of that window replaces."""
    return (
        record.source == key.source
        and record.start is not None
        and key.start <= record.start
        and record.end <= key.end
    )


def output_rules(
    capabilities: Capabilities, dropped_fields: frozenset[str] = frozenset()
) -> OutputRules:
    """What the transform must respect for this warehouse: its string limits, its CSV NULL;
    and the fields the config leaves out of every row."""
    return OutputRules(
        max_string_bytes=capabilities.max_string_bytes,
        max_json_bytes=capabilities.max_json_bytes,
        csv_null=capabilities.csv_null,
        dropped_fields=dropped_fields,
    )


def _disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS


def _describe(exc: BaseException) -> str:
    """The error as the status file, `status` and stderr show it: `safe_text` (it may quote an
    API answer that echoed a header, a signed URL, or control characters)."""
    text = str(exc) or type(exc).__name__
    return safe_text(f"{type(exc).__name__}: {text}")
