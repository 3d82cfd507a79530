"""The planner: windows after the committed prefix, gaps refilled, legacy bundles by day."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from syncd.batch import Bundle, SyncRecord
from syncd.planner import (
    WindowPlan,
    align_down,
    contiguous_end,
    covering_before,
    legacy_start,
    next_window_ready_at,
    plan_bundles,
    plan_windows,
)
from syncd.timeutil import UTC
from warehouses.base import Capabilities, first_kept_day

H = timedelta(hours=1)
D0 = datetime(2026, 11, 1, tzinfo=UTC)


def rec(start: datetime | None, end: datetime) -> SyncRecord:
    return SyncRecord(
        batch_id=f"b-{end:%d%H}", source="segment", start=start, end=end, committed_at=end
    )


def test_fresh_install_starts_at_start_time_aligned() -> None:
    plan = WindowPlan(duration=H, delay=24 * H, start_time=D0 + timedelta(minutes=20))
    keys = plan_windows([], plan, now=D0 + 30 * H, limit=3)
    assert [(k.start, k.end) for k in keys] == [
        (D0, D0 + H),
        (D0 + H, D0 + 2 * H),
        (D0 + 2 * H, D0 + 3 * H),
    ]


def test_default_start_is_thirty_days_back() -> None:
    now = D0 + timedelta(days=40, minutes=7)
    keys = plan_windows([], WindowPlan(duration=H, delay=H), now=now)
    assert keys[0].start == align_down(now - timedelta(days=30), H)


def test_resumes_after_the_last_committed_window() -> None:
    records = [rec(D0, D0 + H), rec(D0 + H, D0 + 2 * H)]
    keys = plan_windows(records, WindowPlan(duration=H, delay=H), now=D0 + 10 * H)
    assert keys[0].start == D0 + 2 * H


def test_nothing_ready_before_the_delay_has_passed() -> None:
    plan = WindowPlan(duration=H, delay=24 * H, start_time=D0)
    assert plan_windows([], plan, now=D0 + 24 * H + timedelta(minutes=59)) == []
    assert next_window_ready_at([], plan, now=D0 + 24 * H) == D0 + 25 * H


def test_a_rolled_back_day_is_planned_again_before_later_days() -> None:
    day = timedelta(days=1)
    records = [rec(D0, D0 + day), rec(D0 + 2 * day, D0 + 3 * day)]  # day 2 rolled back
    keys = plan_windows(records, WindowPlan(duration=6 * H, delay=H), now=D0 + 5 * day, limit=5)
    assert [k.start for k in keys[:4]] == [D0 + day + i * 6 * H for i in range(4)]
    assert keys[4].start == D0 + 3 * day


def test_window_is_clipped_at_the_next_committed_interval() -> None:
    records = [rec(D0, D0 + timedelta(minutes=30)), rec(D0 + H, D0 + 2 * H)]
    keys = plan_windows(records, WindowPlan(duration=H, delay=H), now=D0 + 10 * H)
    assert (keys[0].start, keys[0].end) == (D0 + timedelta(minutes=30), D0 + H)


def test_hauser_rows_without_start_cover_everything_before_them() -> None:
    records = [rec(None, D0 + 5 * H)]
    assert contiguous_end(records) == D0 + 5 * H
    keys = plan_windows(records, WindowPlan(duration=H, delay=H), now=D0 + 10 * H)
    assert keys[0].start == D0 + 5 * H


def test_bundles_one_batch_each_without_grouping() -> None:
    bundles = [Bundle(2**60 + i, D0 + i * 6 * H, D0 + (i + 1) * 6 * H) for i in range(3)]
    keys = plan_bundles([], bundles, group_by_day=False, limit=10)
    assert [k.bundle_ids for k in keys] == [(2**60,), (2**60 + 1,), (2**60 + 2,)]


def test_bundles_grouped_by_day_wait_for_a_complete_day() -> None:
    bundles = [Bundle(100 + i, D0 + i * 6 * H, D0 + (i + 1) * 6 * H) for i in range(6)]
    keys = plan_bundles([], bundles, group_by_day=True, limit=10)
    assert len(keys) == 1  # day 2 has only two of its four bundles
    assert keys[0].bundle_ids == (100, 101, 102, 103)
    assert (keys[0].start, keys[0].end) == (D0, D0 + 24 * H)


def test_committed_bundles_are_not_planned_again() -> None:
    bundles = [Bundle(100 + i, D0 + i * 24 * H, D0 + (i + 1) * 24 * H) for i in range(3)]
    keys = plan_bundles([rec(D0, D0 + 24 * H)], bundles, group_by_day=True, limit=10)
    assert [k.bundle_ids for k in keys] == [(101,), (102,)]


def test_a_rolled_back_first_day_is_planned_again_from_start_time() -> None:
    day = timedelta(days=1)
    records = [rec(D0 + day, D0 + 2 * day)]  # the first day, D0, was rolled back
    plan = WindowPlan(duration=24 * H, delay=H, start_time=D0)
    keys = plan_windows(records, plan, now=D0 + 3 * day + H, limit=2)
    assert [k.start for k in keys] == [D0, D0 + 2 * day]


def test_without_start_time_the_earliest_committed_window_is_the_anchor() -> None:
    records = [rec(D0 + H, D0 + 2 * H)]
    keys = plan_windows(records, WindowPlan(duration=H, delay=H), now=D0 + timedelta(days=2))
    assert keys[0].start == D0 + 2 * H


def test_legacy_listing_restarts_at_start_time_after_a_first_day_rollback() -> None:
    day = timedelta(days=1)
    assert legacy_start([rec(D0 + day, D0 + 2 * day)], D0, now=D0 + 5 * day) == D0
    assert legacy_start([rec(D0, D0 + 2 * day)], D0, now=D0 + 5 * day) == D0 + 2 * day


def test_covering_before_makes_planning_resume_at_the_floor() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    floor = start + timedelta(days=2)
    plan = WindowPlan(duration=timedelta(hours=1), delay=timedelta(hours=1), start_time=start)
    now = floor + timedelta(hours=3)
    keys = plan_windows(covering_before([], floor), plan, now, limit=2)
    assert [k.start for k in keys] == [floor, floor + timedelta(hours=1)]


def test_the_first_kept_day_follows_the_retention() -> None:
    keeps = Capabilities(staging_formats=("parquet",), retention=timedelta(days=2))
    assert first_kept_day(keeps, datetime(2026, 11, 5, 0, 0, tzinfo=UTC)) == date(2026, 11, 4)
    assert first_kept_day(keeps, datetime(2026, 11, 5, 23, 59, tzinfo=UTC)) == date(2026, 11, 4)
    assert first_kept_day(Capabilities(staging_formats=("parquet",)), datetime.now(UTC)) is None
