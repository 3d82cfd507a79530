"""Re-export and replace a past range of days: late-arriving data, a repaired export.

FullStory keeps settling a day's data for about a day, so an operator may want a range loaded
again. A backfill never leaves a day worse than it found it: it deletes nothing up front. Day
by day, it runs the ordinary pipeline over a source that plans every window of the day again
(`ReplacingSource`: the planner sees the day as a gap, but for the windows replaced so far),
fetching fresh exports, and each batch's commit replaces the old rows of its window in the
same transaction (`warehouses.base.Warehouse.commit_batch` with `replace`). Once every batch
of the day has committed, the day's leftovers go in one transaction: rows and sync rows of
old batches no new batch replaced (another batch layout, hauser's sync rows), through
`rollback_days` with the new batches kept.

A crash, a stop or a held batch in the middle leaves the day with new rows for the windows
replaced and old rows for the others, never a window with neither; running the backfill again
replaces the day again, from its first window. The exactly-once guarantees are the
pipeline's own. The caller (`syncd backfill`) checks the API key, the stage and the warehouse
first and refuses days that are not over yet (`check_ready`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import structlog

from syncd.batch import BatchKey, SyncRecord
from syncd.errors import ConfigError
from syncd.observability.progress import ProgressDisplay
from syncd.pipeline import BatchSource, Fetched, Pipeline, PipelineHooks
from syncd.planner import covering_before
from syncd.state import HeldBatch
from syncd.timeutil import UTC, format_timestamp
from warehouses.base import Capabilities, first_kept_day

log = structlog.get_logger(__name__)

#: Enough to count every batch of a day whatever ExportDuration is (1 minute windows: 1440).
_PLAN_LIMIT = 10_000


@dataclass
class BackfillResult:
    days_done: list[date] = field(default_factory=list)
    planned: int = 0  # batches of every day of the range, counted before the first one
    batches: int = 0  # batches replaced
    rows: int = 0
    rejected: int = 0
    rows_replaced: int = 0  # rows the leftover steps deleted (old batches no new one replaced)
    held: HeldBatch | None = None
    stopped: bool = False
    #: The day left part replaced by a stop or a held batch, and where its new rows end.
    partial_day: date | None = None
    replaced_until: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.held is None and not self.stopped and self.partial_day is None


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    lo = datetime.combine(day, time(), tzinfo=UTC)
    return lo, lo + timedelta(days=1)


class _Replaced(PipelineHooks):
    """Collects the batches committed while a day is being replaced."""

    def __init__(self) -> None:
        self.records: dict[str, SyncRecord] = {}

    def after_commit(self, key: BatchKey, record: SyncRecord) -> None:
        self.records[record.batch_id] = record


class ReplacingSource:
    """A `BatchSource` that plans every batch of one UTC day again, but those replaced so far.

    The planner sees all time before the day (or before StartTime, within it) as done, the day's committed batches as not
    there (a gap, as after a rollback, though nothing was deleted), except the batches this
    backfill has committed (`replaced`), and time after the day as it is; only batches starting
    in the day are returned.
    """

    def __init__(
        self,
        source: BatchSource,
        day: date,
        replaced: Collection[str] | None = None,
        *,
        start_time: datetime | None = None,
    ) -> None:
        self.source = source
        self.kind = source.kind
        self.day = day
        self.lo, self.hi = _day_bounds(day)
        self.replaced: Collection[str] = replaced if replaced is not None else ()
        # StartTime inside the day: the planner starts there by itself, nothing before it
        self.floor = None if start_time is not None and start_time > self.lo else self.lo

    def planning_records(self, records: Sequence[SyncRecord]) -> list[SyncRecord]:
        seen: list[SyncRecord] = []
        for r in records:
            if r.batch_id in self.replaced:
                seen.append(r)
            elif r.start is not None:
                if r.start >= self.hi:
                    seen.append(r)
            elif r.end > self.hi:  # hauser's (or a checkpoint): everything before its end
                seen.append(
                    SyncRecord(batch_id="", source="", start=self.hi, end=r.end, committed_at=r.end)
                )
        return covering_before(seen, self.floor)

    def plan(self, records: Sequence[SyncRecord], now: datetime, limit: int) -> list[BatchKey]:
        """Up to `limit` batches of the day. Planned past `limit`: a legacy bundle that began
        the day before and is not committed comes first, and must not hide the day's."""
        keys: list[BatchKey] = []
        for key in self.source.plan(self.planning_records(records), now, _PLAN_LIMIT):
            if key.start >= self.hi or len(keys) >= limit:
                break
            if key.start >= self.lo:
                keys.append(key)
        return keys

    def next_ready_at(self, records: Sequence[SyncRecord], now: datetime) -> datetime:
        return self.source.next_ready_at(self.planning_records(records), now)

    def fetch(self, key: BatchKey) -> Fetched:
        return self.source.fetch(key)

    def discard(self, key: BatchKey) -> None:
        self.source.discard(key)

    def sweep(self, committed: Collection[str]) -> None:
        self.source.sweep(committed)


def check_ready(first: date, last: date, now: datetime, export_delay: timedelta) -> None:
    """Refuse a range with a day after today (UTC), or a day whose last windows are not ready
    yet: a window is exported once its end is ExportDelay behind now."""
    today = now.astimezone(UTC).date()
    if last > today:
        raise ConfigError(
            [f"backfill: {last} is in the future (today is {today} UTC): nothing to replace yet"]
        )
    ready_at = _day_bounds(last)[1] + export_delay
    if ready_at > now:
        raise ConfigError(
            [
                f"backfill: {last} is not over yet: its last windows are ready at "
                f"{format_timestamp(ready_at)} (the day's end plus ExportDelay "
                f"{export_delay}); backfill it after that"
            ]
        )


def check_range(
    first: date,
    last: date,
    records: Sequence[SyncRecord],
    start_time: datetime | None,
    capabilities: Capabilities | None = None,
    now: datetime | None = None,
) -> None:
    """Refuse a range the planner would not load again, or whose rows the warehouse would drop
    as soon as they are loaded (days older than its retention)."""
    if last < first:
        raise ConfigError(["backfill: --to is before --from"])
    if capabilities is not None and now is not None:
        kept = first_kept_day(capabilities, now)
        if kept is not None and first < kept:
            setting = capabilities.retention_setting or "the warehouse's retention"
            raise ConfigError(
                [
                    f"backfill: {first} is before {kept}, the first day the warehouse keeps: it "
                    f"drops the rows of days older than {setting} ({capabilities.retention}) as "
                    f"soon as they are loaded; backfill from {kept} on, or raise {setting} first"
                ]
            )
    if start_time is not None:
        if first < start_time.astimezone(UTC).date():
            raise ConfigError(
                [
                    f"backfill: {first} is before StartTime ({start_time.date()}); syncd never "
                    "loads days before StartTime: set an earlier StartTime first"
                ]
            )
        return
    starts = [r.start for r in records if r.start is not None]
    if starts and first <= min(starts).date():
        raise ConfigError(
            [
                f"backfill: {first} is the first committed day and StartTime is not set, so "
                "syncd would not reload it; set StartTime = "
                f'"{first.isoformat()}T00:00:00Z" first'
            ]
        )


def backfill(
    pipeline: Pipeline,
    first: date,
    last: date,
    *,
    start_time: datetime | None,
    export_delay: timedelta = timedelta(0),
    progress: ProgressDisplay | None = None,
    clock: Callable[[], datetime] | None = None,
) -> BackfillResult:
    """Replace days first..last, one after another, through `pipeline` (already started)."""
    now = clock or pipeline.clock
    check_ready(first, last, now(), export_delay)
    check_range(first, last, pipeline.records, start_time, pipeline.warehouse.capabilities, now())
    source = pipeline.source
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    result = BackfillResult()
    for day in days:
        planning = ReplacingSource(source, day, start_time=start_time)
        result.planned += len(planning.plan(pipeline.records, now(), _PLAN_LIMIT))
    if progress is not None:
        progress.add_total(result.planned)
    hooks = pipeline.hooks
    try:
        for day in days:
            if pipeline.stop.is_set():
                break
            with structlog.contextvars.bound_contextvars(day=day.isoformat()):
                replacing = ReplacingSource(source, day, start_time=start_time)
                _replace_day(pipeline, replacing, result)
            if result.partial_day is not None:
                break
            result.days_done.append(day)
    finally:
        pipeline.source = source
        pipeline.hooks = hooks
        pipeline.replace = False
    result.stopped = pipeline.stop.is_set()
    return result


def _replace_day(pipeline: Pipeline, source: ReplacingSource, result: BackfillResult) -> None:
    day = source.day
    replaced = _Replaced()
    source.replaced = replaced.records
    pipeline.hooks = (*pipeline.hooks, replaced)
    pipeline.source = source
    pipeline.replace = True
    log.info("backfill: replacing the day batch by batch")
    try:
        summary = pipeline.run(until_caught_up=True)
    finally:
        pipeline.hooks = tuple(h for h in pipeline.hooks if h is not replaced)
        pipeline.replace = False
    result.batches += summary.batches
    result.rows += summary.rows
    result.rejected += summary.rejected
    result.held = summary.held
    if summary.held is not None or pipeline.stop.is_set():
        result.partial_day = day
        ends = [r.end for r in replaced.records.values()]
        result.replaced_until = max(ends) if ends else None
        log.warning(
            "backfill: day left part replaced",
            batches=len(replaced.records),
            replaced_until=format_timestamp(result.replaced_until)
            if result.replaced_until
            else None,
        )
        return
    if not replaced.records:  # nothing to load for the day: its old rows are all it has
        log.warning("backfill: no batch of the day could be planned; the day is left as it was")
        return
    left = pipeline.warehouse.rollback_days(day, day, keep=list(replaced.records))
    result.rows_replaced += left.rows_deleted
    pipeline.records = pipeline.warehouse.sync_records()
    log.info(
        "backfill: day replaced",
        batches=len(replaced.records),
        leftover_rows_deleted=left.rows_deleted,
        leftover_sync_rows_deleted=left.sync_rows_deleted,
    )
