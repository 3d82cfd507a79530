"""Which batch comes next: export windows after the committed prefix, or legacy bundles.

The planner is pure: it takes the committed sync records and "now" and returns batch keys.
Committed time is a set of intervals; the next batch starts at the first gap after the earliest
committed time (a rolled-back day is a gap and is planned again), or at StartTime on a fresh
install. A window is ready once its end is at least ExportDelay behind now.

With SettleAfter, a segment window loaded before it was SettleAfter old is *unsettled*: late
events may still have arrived since. Once it is SettleAfter old, `plan_settles` plans it again
as a settle (`BatchKey.settle`), after the fresh windows: settles only fill what is left of a
planning round.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from syncd.batch import BatchKey, Bundle, SyncRecord
from syncd.timeutil import UTC

DAY = timedelta(days=1)
DEFAULT_LOOKBACK = timedelta(days=30)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class WindowPlan:
    """Settings that shape segment-export windows."""

    duration: timedelta = timedelta(hours=1)
    delay: timedelta = timedelta(hours=24)
    start_time: datetime | None = None  # None: DEFAULT_LOOKBACK before now, on a fresh install


def align_down(moment: datetime, duration: timedelta) -> datetime:
    """The window boundary at or before `moment`; windows are aligned to UTC midnight."""
    midnight = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    steps = (moment - midnight) // duration
    return midnight + steps * duration


def covered_intervals(records: Iterable[SyncRecord]) -> list[tuple[datetime, datetime]]:
    """Merge committed batches into disjoint [start, end) intervals, oldest first.

    A record continued from hauser's SyncTable has no start: hauser only ever advanced, so it
    covers everything before its end.
    """
    spans = sorted(((r.start or _EPOCH), r.end) for r in records if r.end > (r.start or _EPOCH))
    merged: list[tuple[datetime, datetime]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def contiguous_end(records: Sequence[SyncRecord]) -> datetime | None:
    """End of the committed prefix (the sync point an operator reads), or None when empty."""
    intervals = covered_intervals(records)
    return intervals[0][1] if intervals else None


def lag_behind(
    sync_point: datetime | None, now: datetime, export_delay: timedelta
) -> timedelta | None:
    """The lag: how far the sync point is behind `now - export_delay` (data younger than
    ExportDelay is not expected yet), never negative; None before the first batch.

    The one definition `status`, `status --json` and `syncd_lag_seconds` all use."""
    if sync_point is None:
        return None
    return max(timedelta(0), now - export_delay - sync_point)


def covering_before(records: Sequence[SyncRecord], floor: datetime | None) -> list[SyncRecord]:
    """`records` plus one that covers all time before `floor` (when given), for planning only,
    when planning would begin before `floor`: the warehouse keeps no rows there (see
    `warehouses.base.first_kept_day`), so planning resumes at `floor` (or the end of the
    committed time around it), and a held batch that aged past it is left behind."""
    if floor is None:
        return list(records)
    kept_since = SyncRecord(
        batch_id="", source="", start=_EPOCH, end=floor, committed_at=floor, syncd_version=""
    )
    return [kept_since, *records]


def first_start(records: Sequence[SyncRecord], plan: WindowPlan, now: datetime) -> datetime:
    """Where planning begins: the earliest committed time, or StartTime (aligned) when that is
    earlier or nothing is committed.

    An explicit StartTime before the earliest committed time means a rolled-back first day is
    planned again. Without StartTime (a default that moves with now) the earliest committed
    time is the anchor, so a rolled-back first day is reloaded only once StartTime is set;
    `syncd rollback` says so.
    """
    intervals = covered_intervals(records)
    if plan.start_time is None:
        if intervals:
            return intervals[0][0]
        return align_down(now - DEFAULT_LOOKBACK, plan.duration)
    start = align_down(plan.start_time, plan.duration)
    return min(start, intervals[0][0]) if intervals else start


def plan_windows(
    records: Sequence[SyncRecord], plan: WindowPlan, now: datetime, limit: int = 1
) -> list[BatchKey]:
    """Up to `limit` ready segment-export windows, in commit order."""
    intervals = covered_intervals(records)
    ready_until = now - plan.delay
    cursor = first_start(records, plan, now)
    keys: list[BatchKey] = []
    i = 0
    while len(keys) < limit:
        while i < len(intervals) and intervals[i][1] <= cursor:
            i += 1
        if i < len(intervals) and intervals[i][0] <= cursor:
            cursor = intervals[i][1]  # inside committed time: jump to its end
            continue
        end = align_down(cursor, plan.duration) + plan.duration
        if i < len(intervals):
            end = min(end, intervals[i][0])  # stop at the next committed interval
        if end > ready_until:
            break
        keys.append(BatchKey(start=cursor, end=end, source="segment"))
        cursor = end
    return keys


def unsettled(records: Sequence[SyncRecord], settle_after: timedelta) -> list[SyncRecord]:
    """Segment windows loaded before they were `settle_after` old and not settled since,
    oldest first; none when settling is off (`settle_after` 0)."""
    if settle_after <= timedelta(0):
        return []
    return sorted(
        (
            r
            for r in records
            if r.source == "segment"
            and r.start is not None
            and r.settled_at is None
            and r.committed_at < r.end + settle_after
        ),
        key=lambda r: (r.end, r.batch_id),
    )


def plan_settles(
    records: Sequence[SyncRecord],
    settle_after: timedelta,
    now: datetime,
    limit: int,
    skip: Collection[str] = (),
) -> list[BatchKey]:
    """Up to `limit` settles of unsettled windows that are `settle_after` old by `now`, oldest
    first; windows whose settle id is in `skip` (a held settle waiting for its retry) are not
    planned."""
    keys: list[BatchKey] = []
    for r in unsettled(records, settle_after):
        if len(keys) >= limit or r.end + settle_after > now:
            break
        assert r.start is not None  # unsettled() keeps windows only
        key = BatchKey(start=r.start, end=r.end, source="segment", settle=True)
        if key.id not in skip:
            keys.append(key)
    return keys


def next_settle_at(records: Sequence[SyncRecord], settle_after: timedelta) -> datetime | None:
    """When the oldest unsettled window becomes `settle_after` old (None: nothing to settle)."""
    pending = unsettled(records, settle_after)
    return pending[0].end + settle_after if pending else None


def next_window_ready_at(
    records: Sequence[SyncRecord], plan: WindowPlan, now: datetime
) -> datetime:
    """When the next segment window will be ready (its end plus the delay)."""
    probe = plan_windows(records, WindowPlan(plan.duration, timedelta(0), plan.start_time), now)
    if probe:
        return probe[0].end + plan.delay
    # Even with no delay nothing is ready: the window in progress ends at the next boundary.
    return align_down(now, plan.duration) + plan.duration + plan.delay


def legacy_start(
    records: Sequence[SyncRecord], start_time: datetime | None, now: datetime
) -> datetime:
    """Where to list legacy bundles from: the end of the committed prefix, or StartTime when
    nothing is committed or an explicit StartTime lies before the earliest committed time."""
    intervals = covered_intervals(records)
    if not intervals:
        return start_time if start_time is not None else now - DEFAULT_LOOKBACK
    if start_time is not None and start_time < intervals[0][0]:
        return start_time
    return intervals[0][1]


def plan_bundles(
    records: Sequence[SyncRecord],
    bundles: Sequence[Bundle],
    group_by_day: bool,
    limit: int = 1,
) -> list[BatchKey]:
    """Batches of legacy bundles not yet committed, oldest first.

    With `group_by_day`, one batch holds every bundle that starts on a UTC day, and a day is
    planned only once it is complete (a later bundle exists), so no day is loaded in halves.
    """
    intervals = covered_intervals(records)

    def committed(b: Bundle) -> bool:
        return any(s <= b.start and b.stop <= e for s, e in intervals)

    pending = sorted((b for b in bundles if not committed(b)), key=lambda b: (b.start, b.id))
    keys: list[BatchKey] = []
    if not group_by_day:
        for b in pending[:limit]:
            keys.append(BatchKey(start=b.start, end=b.stop, source="legacy", bundle_ids=(b.id,)))
        return keys
    latest_stop = max((b.stop for b in bundles), default=None)
    by_day: dict[datetime, list[Bundle]] = {}
    for b in pending:
        day = b.start.replace(hour=0, minute=0, second=0, microsecond=0)
        by_day.setdefault(day, []).append(b)
    for day, group in sorted(by_day.items()):
        if latest_stop is None or latest_stop < day + DAY:
            break  # the day is not complete yet
        keys.append(
            BatchKey(
                start=group[0].start,
                end=max(b.stop for b in group),
                source="legacy",
                bundle_ids=tuple(b.id for b in group),
            )
        )
        if len(keys) >= limit:
            break
    return keys
