"""Re-export and replace a past range of days: late-arriving data, a repaired export.

FullStory keeps settling a day's data for about a day, so an operator may want a range loaded
again. A backfill goes day by day through the rollback path, the same one start-up repair uses:
roll the day back (its rows, rejects and sync rows, in one transaction), then run the ordinary
pipeline over a source that plans only batches starting before the day's end. The planner
fills the gap the rollback left, fetching fresh exports; each batch commits with its sync row
as always. A crash or a held batch mid-day leaves a gap that the next `run` or `backfill`
fills: the exactly-once guarantees are the pipeline's own.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import structlog

from syncd.batch import BatchKey, SyncRecord
from syncd.errors import ConfigError
from syncd.observability.progress import ProgressDisplay
from syncd.pipeline import BatchSource, Fetched, Pipeline
from syncd.state import HeldBatch
from syncd.timeutil import UTC
from warehouses.base import Capabilities, first_kept_day

log = structlog.get_logger(__name__)

#: Enough to count every batch of a day whatever ExportDuration is (1 minute windows: 1440).
_PLAN_LIMIT = 10_000


@dataclass
class BackfillResult:
    days_done: list[date] = field(default_factory=list)
    batches: int = 0
    rows: int = 0
    rejected: int = 0
    rows_replaced: int = 0  # rows the rollbacks deleted
    held: HeldBatch | None = None
    stopped: bool = False


class BoundedSource:
    """A `BatchSource` that plans only batches starting before `until` (a day's end)."""

    def __init__(self, source: BatchSource, until: datetime) -> None:
        self.source = source
        self.until = until
        self.kind = source.kind

    def plan(self, records: Sequence[SyncRecord], now: datetime, limit: int) -> list[BatchKey]:
        keys = []
        for key in self.source.plan(records, now, limit):
            if key.start >= self.until:
                break
            keys.append(key)
        return keys

    def next_ready_at(self, records: Sequence[SyncRecord], now: datetime) -> datetime:
        return self.source.next_ready_at(records, now)

    def fetch(self, key: BatchKey) -> Fetched:
        return self.source.fetch(key)

    def discard(self, key: BatchKey) -> None:
        self.source.discard(key)

    def sweep(self, committed: Collection[str]) -> None:
        self.source.sweep(committed)


def check_range(
    first: date,
    last: date,
    records: Sequence[SyncRecord],
    start_time: datetime | None,
    capabilities: Capabilities | None = None,
    now: datetime | None = None,
) -> None:
    """Refuse a range the planner would not load again after rolling it back, or whose rows
    the warehouse would drop as soon as they are loaded (days older than its retention)."""
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
    progress: ProgressDisplay | None = None,
    clock: Callable[[], datetime] | None = None,
) -> BackfillResult:
    """Replace days first..last, one after another, through `pipeline` (already started)."""
    now = clock or pipeline.clock
    check_range(first, last, pipeline.records, start_time, pipeline.warehouse.capabilities, now())
    source = pipeline.source
    result = BackfillResult()
    day = first
    try:
        while day <= last and not pipeline.stop.is_set():
            with structlog.contextvars.bound_contextvars(day=day.isoformat()):
                _backfill_day(pipeline, source, day, now, progress, result)
            if result.held is not None:
                break
            result.days_done.append(day)
            day += timedelta(days=1)
    finally:
        pipeline.source = source
    result.stopped = pipeline.stop.is_set()
    return result


def _backfill_day(
    pipeline: Pipeline,
    source: BatchSource,
    day: date,
    now: Callable[[], datetime],
    progress: ProgressDisplay | None,
    result: BackfillResult,
) -> None:
    rolled = pipeline.warehouse.rollback_days(day, day)
    result.rows_replaced += rolled.rows_deleted
    pipeline.records = pipeline.warehouse.sync_records()
    until = datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)
    pipeline.source = BoundedSource(source, until)
    if progress is not None:
        progress.add_total(len(pipeline.source.plan(pipeline.records, now(), _PLAN_LIMIT)))
    log.info(
        "backfill: day rolled back, reloading",
        rows_deleted=rolled.rows_deleted,
        sync_rows_deleted=rolled.sync_rows_deleted,
    )
    summary = pipeline.run(until_caught_up=True)
    result.batches += summary.batches
    result.rows += summary.rows
    result.rejected += summary.rejected
    result.held = summary.held
