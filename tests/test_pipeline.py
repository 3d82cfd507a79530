"""The pipeline's own logic with a fake source: order, retries, holding, stop, cleanup.

The warehouse and stage are the real DuckDB (in memory) and local folder; only the export API
is replaced, so failures can be scripted exactly.
"""

from __future__ import annotations

import dataclasses
import gzip
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest

import syncd.pipeline as pipeline_module
from syncd.batch import BatchKey, SyncRecord
from syncd.errors import TerminalSourceError, TransientSourceError
from syncd.fields import export_columns
from syncd.pipeline import Fetched, Pipeline, PipelineHooks, PipelineOptions
from syncd.planner import WindowPlan, next_window_ready_at, plan_windows
from syncd.state import StatusFile
from syncd.timeutil import UTC
from syncd.transform.columnar import transform
from warehouses.duckdb import DuckDBWarehouse
from warehouses.local import LocalStage

T0 = datetime(2026, 11, 1, tzinfo=UTC)
H = timedelta(hours=1)
NOW = T0 + 5 * H  # with a 1 h delay, four windows are ready


class FakeSource:
    """Serves two events per window; `failures` scripts errors per window start hour."""

    kind = "segment"

    def __init__(self, spool: Path, failures: dict[int, list[Exception]] | None = None) -> None:
        self.spool = spool
        self.plan_ = WindowPlan(duration=H, delay=H, start_time=T0)
        self.failures = failures or {}
        self.fetched: list[str] = []
        self.discarded: list[str] = []

    def plan(self, records: Sequence[SyncRecord], now: datetime, limit: int) -> list[BatchKey]:
        return plan_windows(records, self.plan_, now, limit)

    def next_ready_at(self, records: Sequence[SyncRecord], now: datetime) -> datetime:
        return next_window_ready_at(records, self.plan_, now)

    def fetch(self, key: BatchKey) -> Fetched:
        pending = self.failures.get(key.start.hour, [])
        if pending:
            raise pending.pop(0)
        self.fetched.append(key.id)
        self.spool.mkdir(parents=True, exist_ok=True)
        path = self.spool / f"{key.id}.ndjson.gz"
        events = [
            {"IndvId": key.start.hour * 10 + i, "EventStart": (key.start + i * H / 4).isoformat()}
            for i in range(2)
        ]
        path.write_bytes(gzip.compress(b"".join(orjson.dumps(e) + b"\n" for e in events)))
        return Fetched(paths=(path,), bytes=path.stat().st_size, operation_id=f"op-{key.id}")

    def discard(self, key: BatchKey) -> None:
        self.discarded.append(key.id)

    def sweep(self, committed: Collection[str]) -> None:
        pass


def make(
    tmp_path: Path,
    source: FakeSource,
    *,
    max_attempts: int = 3,
    keep_staged: bool = False,
    hooks: Sequence[PipelineHooks] = (),
    stop: threading.Event | None = None,
    lookahead: int = 0,
    clock: Callable[[], datetime] = lambda: NOW,
) -> tuple[Pipeline, DuckDBWarehouse]:
    warehouse = DuckDBWarehouse(":memory:")
    pipeline = Pipeline(
        source,
        LocalStage(tmp_path / "staged"),
        warehouse,
        export_columns(),
        PipelineOptions(
            work_dir=tmp_path / "work",
            staged_format="parquet",
            keep_staged=keep_staged,
            max_attempts=max_attempts,
            retry_base=0.0,
            held_retry_interval=0.0,
            lookahead=lookahead,
        ),
        status=StatusFile(tmp_path / "status.json"),
        hooks=hooks,
        stop=stop,
        clock=clock,
    )
    pipeline.start()
    return pipeline, warehouse


def test_catches_up_window_by_window_in_order(tmp_path: Path) -> None:
    pipeline, warehouse = make(tmp_path, FakeSource(tmp_path / "spool"))
    summary = pipeline.run(until_caught_up=True)
    assert (summary.batches, summary.rows) == (4, 8)
    assert [r.start for r in warehouse.sync_records()] == [T0 + i * H for i in range(4)]


def test_transient_failures_are_retried_until_the_batch_commits(tmp_path: Path) -> None:
    failures: dict[int, list[Exception]] = {
        1: [TransientSourceError("503"), TransientSourceError("503")]
    }
    pipeline, warehouse = make(tmp_path, FakeSource(tmp_path / "spool", failures), max_attempts=3)
    summary = pipeline.run(until_caught_up=True)
    assert (summary.batches, summary.held) == (4, None)


def test_a_batch_that_keeps_failing_is_held_and_nothing_after_it_commits(tmp_path: Path) -> None:
    failures: dict[int, list[Exception]] = {2: [TransientSourceError("503")] * 5}
    pipeline, warehouse = make(tmp_path, FakeSource(tmp_path / "spool", failures), max_attempts=3)
    summary = pipeline.run(until_caught_up=True)
    assert summary.held is not None and summary.held.batch_id.startswith("segment-20261101T020000Z")
    assert [r.end for r in warehouse.sync_records()] == [T0 + H, T0 + 2 * H]


def test_held_batch_is_reported_in_the_status_file(tmp_path: Path) -> None:
    failures: dict[int, list[Exception]] = {0: [TerminalSourceError("400 bad_request: nope")]}
    pipeline, _ = make(tmp_path, FakeSource(tmp_path / "spool", failures))
    pipeline.run(until_caught_up=True)
    status = StatusFile(tmp_path / "status.json").read()
    assert status is not None and status.held is not None
    assert (status.state, status.held.error) == (
        "held",
        "TerminalSourceError: 400 bad_request: nope",
    )


def test_a_terminal_error_holds_at_once(tmp_path: Path) -> None:
    failures: dict[int, list[Exception]] = {0: [TerminalSourceError("403")]}
    pipeline, _ = make(tmp_path, FakeSource(tmp_path / "spool", failures), max_attempts=5)
    summary = pipeline.run(until_caught_up=True)
    assert summary.held is not None and summary.held.attempts == 1


def test_held_batch_commits_once_the_fault_clears(tmp_path: Path) -> None:
    failures: dict[int, list[Exception]] = {0: [TerminalSourceError("403")]}
    pipeline, _ = make(tmp_path, FakeSource(tmp_path / "spool", failures))
    assert pipeline.run(until_caught_up=True).held is not None
    summary = pipeline.run(until_caught_up=True)
    assert (summary.batches, summary.held, pipeline.held) == (4, None, None)


class FailingPlanSource(FakeSource):
    """Planning itself fails (as listing legacy bundles can) the first `failures` times."""

    def __init__(self, spool: Path, failures: list[Exception]) -> None:
        super().__init__(spool)
        self.plan_failures = failures

    def plan(self, records: Sequence[SyncRecord], now: datetime, limit: int) -> list[BatchKey]:
        if self.plan_failures:
            raise self.plan_failures.pop(0)
        return super().plan(records, now, limit)


def test_a_planning_failure_is_retried_like_a_batch(tmp_path: Path) -> None:
    source = FailingPlanSource(tmp_path / "spool", [TransientSourceError("500")] * 2)
    pipeline, _ = make(tmp_path, source, max_attempts=3)
    summary = pipeline.run(until_caught_up=True)
    assert (summary.batches, summary.held) == (4, None)


def test_a_planning_failure_that_persists_holds_and_clears_later(tmp_path: Path) -> None:
    failures: list[Exception] = [TerminalSourceError("bundle 7 has an impossible time")]
    pipeline, _ = make(tmp_path, FailingPlanSource(tmp_path / "spool", failures))
    held = pipeline.run(until_caught_up=True).held
    assert held is not None
    assert held.error == "TerminalSourceError: bundle 7 has an impossible time"
    status = StatusFile(tmp_path / "status.json").read()
    assert status is not None and status.state == "held"
    summary = pipeline.run(until_caught_up=True)
    assert (summary.batches, summary.held, pipeline.held) == (4, None, None)


def test_damaged_download_is_discarded_before_the_retry(tmp_path: Path) -> None:
    source = FakeSource(tmp_path / "spool")
    pipeline, _ = make(tmp_path, source)
    original = source.fetch

    def fetch_damaged_once(key: BatchKey) -> Fetched:
        fetched = original(key)
        if key.start == T0 and len(source.fetched) == 1:
            fetched.paths[0].write_bytes(gzip.compress(b'{"IndvId": 1}\n')[:-6])
        return fetched

    source.fetch = fetch_damaged_once  # type: ignore[method-assign]
    summary = pipeline.run(until_caught_up=True)
    assert summary.batches == 4
    assert source.discarded[0] == BatchKey(T0, T0 + H).id


def test_stop_before_commit_commits_nothing(tmp_path: Path) -> None:
    stop = threading.Event()

    class StopAfterStage(PipelineHooks):
        def after_step(self, key: BatchKey, step: str, seconds: float) -> None:
            if step == "stage":
                stop.set()

    pipeline, warehouse = make(
        tmp_path, FakeSource(tmp_path / "spool"), hooks=[StopAfterStage()], stop=stop
    )
    summary = pipeline.run(until_caught_up=False)
    assert (summary.batches, warehouse.sync_records(), summary.held) == (0, [], None)


def test_a_failing_hook_does_not_break_a_batch(tmp_path: Path) -> None:
    class Broken(PipelineHooks):
        def after_commit(self, key: BatchKey, record: SyncRecord) -> None:
            raise RuntimeError("metrics backend down")

    pipeline, _ = make(tmp_path, FakeSource(tmp_path / "spool"), hooks=[Broken()])
    assert pipeline.run(until_caught_up=True).batches == 4


@pytest.mark.parametrize("keep", [False, True])
def test_staged_files_are_removed_after_commit_unless_kept(tmp_path: Path, keep: bool) -> None:
    pipeline, _ = make(tmp_path, FakeSource(tmp_path / "spool"), keep_staged=keep)
    pipeline.run(until_caught_up=True)
    staged = sorted(p.name for p in (tmp_path / "staged").glob("*.parquet"))
    assert len(staged) == (4 if keep else 0)
    assert list((tmp_path / "work").glob("*")) == []


def test_start_rolls_back_a_day_whose_rows_disagree_with_its_sync_rows(tmp_path: Path) -> None:
    pipeline, warehouse = make(tmp_path, FakeSource(tmp_path / "spool"))
    pipeline.run(until_caught_up=True)
    first = BatchKey(T0, T0 + H).id
    warehouse._con.execute(
        'DELETE FROM "fsexport" WHERE "SyncdBatchId" = ? AND "IndvId" = 0', [first]
    )
    assert pipeline.repair() == [T0.date()]
    assert warehouse.sync_records() == []
    assert pipeline.run(until_caught_up=True).batches == 4


class SlowSource(FakeSource):
    """Each fetch takes a while (an export being prepared); records how many overlap."""

    def __init__(self, spool: Path) -> None:
        super().__init__(spool)
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def fetch(self, key: BatchKey) -> Fetched:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        threading.Event().wait(0.1)
        try:
            return super().fetch(key)
        finally:
            with self.lock:
                self.running -= 1


def test_lookahead_prepares_batches_in_parallel_and_commits_in_order(tmp_path: Path) -> None:
    source = SlowSource(tmp_path / "spool")
    pipeline, warehouse = make(tmp_path, source, lookahead=3)
    summary = pipeline.run(until_caught_up=True)
    assert (summary.batches, source.most_at_once > 1) == (4, True)
    assert [r.start for r in warehouse.sync_records()] == [T0 + i * H for i in range(4)]


class Overlaps:
    """Wraps the transform and the warehouse's commit: each waits a while for the other to be
    running, and `seen` records whether they ever ran at the same time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = {"transform": 0, "commit": 0}
        self.started = {"transform": threading.Event(), "commit": threading.Event()}
        self.seen = False

    def wrap(self, step: str, call: Callable[..., object]) -> Callable[..., object]:
        other = "commit" if step == "transform" else "transform"

        def wrapped(*args: object, **kwargs: object) -> object:
            with self.lock:
                self.running[step] += 1
                self.started[step].set()
            self.started[other].wait(0.3)  # long enough for the other to start, if it may
            with self.lock:
                self.seen = self.seen or self.running[other] > 0
            try:
                return call(*args, **kwargs)
            finally:
                with self.lock:
                    self.running[step] -= 1
                    if not self.running[step]:
                        self.started[step].clear()

        return wrapped


@pytest.mark.parametrize("in_process", [True, False])
def test_a_commit_that_loads_in_process_never_runs_beside_a_transform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_process: bool
) -> None:
    """DuckDB's commit and the transform each hold a DuckDB query's memory: the pipeline runs
    them one at a time when the warehouse loads in this process (docs/sizing.md). A warehouse
    that loads elsewhere (the control) lets a look-ahead transform run beside a commit."""
    overlaps = Overlaps()
    monkeypatch.setattr(pipeline_module, "transform", overlaps.wrap("transform", transform))
    pipeline, warehouse = make(tmp_path, FakeSource(tmp_path / "spool"), lookahead=2)
    warehouse.capabilities = dataclasses.replace(
        warehouse.capabilities, loads_in_process=in_process
    )
    monkeypatch.setattr(warehouse, "commit_batch", overlaps.wrap("commit", warehouse.commit_batch))
    assert pipeline.run(until_caught_up=True).batches == 4
    assert overlaps.seen is not in_process


def test_a_failed_batch_prepared_ahead_is_retried_in_its_turn(tmp_path: Path) -> None:
    failures: dict[int, list[Exception]] = {2: [TransientSourceError("503")]}
    pipeline, warehouse = make(tmp_path, FakeSource(tmp_path / "spool", failures), lookahead=3)
    summary = pipeline.run(until_caught_up=True)
    assert (summary.batches, summary.held) == (4, None)
    assert [r.start for r in warehouse.sync_records()] == [T0 + i * H for i in range(4)]


def test_nothing_prepared_ahead_is_left_in_the_work_folder(tmp_path: Path) -> None:
    failures: dict[int, list[Exception]] = {1: [TerminalSourceError("403")]}
    pipeline, _ = make(tmp_path, FakeSource(tmp_path / "spool", failures), lookahead=3)
    assert pipeline.run(until_caught_up=True).held is not None
    assert list((tmp_path / "work").glob("*")) == []


class LongStringSource(FakeSource):
    """Events with a 6-byte EventType and a 30-byte CustomVars text."""

    def fetch(self, key: BatchKey) -> Fetched:
        self.spool.mkdir(parents=True, exist_ok=True)
        path = self.spool / f"{key.id}.ndjson.gz"
        events = [
            {"IndvId": 1, "EventStart": key.start.isoformat(), "EventType": "abcdéf"},
            {"IndvId": 2, "EventStart": key.start.isoformat(), "user_x_str": "y" * 14},
        ]
        path.write_bytes(gzip.compress(b"".join(orjson.dumps(e) + b"\n" for e in events)))
        return Fetched(paths=(path,), bytes=path.stat().st_size, operation_id=f"op-{key.id}")


def test_the_transform_follows_the_warehouses_string_limits(tmp_path: Path) -> None:
    """The pipeline hands the warehouse's Capabilities (here 5 and 29 bytes) to the transform."""
    source = LongStringSource(tmp_path / "spool")
    pipeline, warehouse = make(tmp_path, source)
    warehouse.capabilities = dataclasses.replace(
        warehouse.capabilities, max_string_bytes=5, max_json_bytes=29
    )
    summary = pipeline.run(until_caught_up=True)
    assert (summary.rows, summary.rejected) == (4, 4)
    rows = warehouse._con.execute('SELECT DISTINCT "EventType" FROM fsexport').fetchall()
    assert rows == [("abcd",)]  # "é" would end at byte 6: cut before it


# -- a warehouse that keeps days for a while only (BigQuery's partition expiration) -----------


def keeping(warehouse: DuckDBWarehouse, retention: timedelta) -> None:
    warehouse.capabilities = replace(warehouse.capabilities, retention=retention)


def test_windows_of_days_the_warehouse_no_longer_keeps_are_not_planned(tmp_path: Path) -> None:
    source = FakeSource(tmp_path / "spool")
    source.plan_ = WindowPlan(duration=H, delay=H, start_time=T0 - timedelta(days=3))
    pipeline, warehouse = make(tmp_path, source)
    keeping(warehouse, timedelta(days=1))  # NOW is Nov 1 05:00: Nov 1 is the first day kept
    summary = pipeline.run(until_caught_up=True)
    assert (summary.batches, [r.start for r in warehouse.sync_records()][:1]) == (4, [T0])


def test_a_held_batch_whose_day_expires_is_left_behind(tmp_path: Path) -> None:
    """The daemon does not hold forever on a window that aged past the retention."""
    failures: dict[int, list[Exception]] = {2: [TransientSourceError("503")] * 50}
    now = [NOW]
    pipeline, warehouse = make(
        tmp_path, FakeSource(tmp_path / "spool", failures), clock=lambda: now[0]
    )
    keeping(warehouse, timedelta(days=2))
    held = pipeline.run(until_caught_up=True).held
    now[0] = T0 + timedelta(days=2, hours=3)  # Nov 1 has expired, Nov 2 is kept
    later = pipeline.run(until_caught_up=True).held
    assert held is not None and held.batch_id.startswith("segment-20261101T020000Z")
    assert later is not None and later.batch_id.startswith("segment-20261102T020000Z")


def test_days_the_warehouse_no_longer_keeps_are_not_checked(tmp_path: Path) -> None:
    pipeline, warehouse = make(tmp_path, FakeSource(tmp_path / "spool"))
    pipeline.run(until_caught_up=True)
    warehouse._con.execute('DELETE FROM "fsexport"')  # as BigQuery drops expired partitions
    keeping(warehouse, timedelta(hours=12))  # NOW is Nov 1 05:00: Nov 1 is the first day kept
    assert pipeline.repair() == [T0.date()]
    keeping(warehouse, timedelta(hours=4))  # Nov 1 00:00 + 4 h is past: Nov 2 on is kept
    assert pipeline.repair() == [] and len(warehouse.sync_records()) == 0
