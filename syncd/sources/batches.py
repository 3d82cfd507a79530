"""The two batch sources the pipeline plans and fetches from: segment export windows and
legacy bundles. Each pairs the pure planner with the fetcher of its API."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from syncd.batch import BatchKey, Bundle, SyncRecord
from syncd.pipeline import Fetched
from syncd.planner import (
    WindowPlan,
    legacy_start,
    next_settle_at,
    next_window_ready_at,
    plan_bundles,
    plan_settles,
    plan_windows,
    unsettled,
)
from syncd.sources.client import ExportClient
from syncd.sources.fetcher import Fetcher

#: How often a caught-up legacy source looks for new bundles.
LEGACY_LIST_INTERVAL = timedelta(minutes=15)


class SegmentSource:
    """Windows of the Segment Export API, ExportDuration long, ExportDelay behind now; with
    `settle_after` (SettleAfter), windows loaded younger than that are settled once that old
    (`syncd.pipeline.Settles`)."""

    kind = "segment"

    def __init__(
        self, fetcher: Fetcher, plan: WindowPlan, settle_after: timedelta = timedelta(0)
    ) -> None:
        self.fetcher = fetcher
        self.window_plan = plan
        self.settle_after = settle_after

    def plan(self, records: Sequence[SyncRecord], now: datetime, limit: int) -> list[BatchKey]:
        return plan_windows(records, self.window_plan, now, limit)

    def plan_settles(
        self, records: Sequence[SyncRecord], now: datetime, limit: int, skip: Collection[str]
    ) -> list[BatchKey]:
        return plan_settles(records, self.settle_after, now, limit, skip)

    def next_settle_at(self, records: Sequence[SyncRecord]) -> datetime | None:
        return next_settle_at(records, self.settle_after)

    def unsettled(self, records: Sequence[SyncRecord]) -> list[SyncRecord]:
        return unsettled(records, self.settle_after)

    def next_ready_at(self, records: Sequence[SyncRecord], now: datetime) -> datetime:
        return next_window_ready_at(records, self.window_plan, now)

    def fetch(self, key: BatchKey) -> Fetched:
        result = self.fetcher.fetch_segment(key.id, key.start, key.end)
        return Fetched(paths=(result.path,), bytes=result.bytes, operation_id=result.operation_id)

    def discard(self, key: BatchKey) -> None:
        self.fetcher.forget(key.id)

    def sweep(self, committed: Collection[str]) -> None:
        self.fetcher.sweep(committed)


class LegacySource:
    """Bundles of the legacy Data Export API, one batch per bundle or per UTC day."""

    kind = "legacy"

    def __init__(
        self,
        client: ExportClient,
        fetcher: Fetcher,
        *,
        start_time: datetime | None,
        group_by_day: bool,
    ) -> None:
        self.client = client
        self.fetcher = fetcher
        self.start_time = start_time
        self.group_by_day = group_by_day
        self._bundles: dict[BatchKey, list[Bundle]] = {}

    def plan(self, records: Sequence[SyncRecord], now: datetime, limit: int) -> list[BatchKey]:
        start = legacy_start(records, self.start_time, now)
        listed = self.client.list_bundles(start)
        keys = plan_bundles(records, listed, self.group_by_day, limit)
        by_id = {b.id: b for b in listed}
        for key in keys:
            self._bundles[key] = [by_id[i] for i in key.bundle_ids]
        return keys

    def next_ready_at(self, records: Sequence[SyncRecord], now: datetime) -> datetime:
        return now + LEGACY_LIST_INTERVAL

    def fetch(self, key: BatchKey) -> Fetched:
        bundles = self._bundles[key]
        results = self.fetcher.fetch_bundles(key.id, bundles)
        return Fetched(
            paths=tuple(r.path for r in results),
            bytes=sum(r.bytes for r in results),
            operation_id=",".join(str(b.id) for b in bundles),
        )

    def discard(self, key: BatchKey) -> None:
        self.fetcher.forget(key.id)
        self._bundles.pop(key, None)

    def sweep(self, committed: Collection[str]) -> None:
        self.fetcher.sweep(committed)
