# ruff: noqa: F811 - fixtures are imported by name from aws_support
"""SettleAfter: windows loaded young are exported again once settled and replaced atomically.

The pipeline tests use a fake export API (late events scripted exactly) with the real DuckDB
and local stage; the end-to-end test runs the CLI against the simulator's late-arrival mode.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import orjson
import psycopg
import pytest
import tomllib
from aws_support import postgres, schema  # noqa: F401 - fixtures
from e2e_support import (
    API_KEY,
    NOW,
    SyncdFiles,
    assert_rows_equal,
    expected_row,
    export_rows,
    hour_windows,
    run_cli,
    sorted_custom_vars,
    sync_rows,
    write_config,
)
from test_config import problems, settings

from standins.postgres import PostgresCluster
from syncd.batch import BatchKey, SyncRecord
from syncd.cli import EXIT_OK
from syncd.errors import TerminalSourceError, TransientSourceError
from syncd.fields import dropped_fields, export_columns
from syncd.observability.metrics import SyncMetrics
from syncd.pipeline import Fetched, Pipeline, PipelineHooks, PipelineOptions
from syncd.planner import (
    WindowPlan,
    next_settle_at,
    next_window_ready_at,
    plan_settles,
    plan_windows,
    unsettled,
)
from syncd.simulator import Simulator, SimulatorConfig
from syncd.state import StatusFile
from syncd.timeutil import UTC
from warehouses.base import Warehouse
from warehouses.duckdb import DuckDBWarehouse
from warehouses.local import LocalStage
from warehouses.postgres import PostgresWarehouse

if TYPE_CHECKING:
    from conftest import StagedFiles

T0 = datetime(2026, 11, 1, tzinfo=UTC)
H = timedelta(hours=1)
SETTLE_AFTER = 4 * H
RETRY = 2 * H  # HeldRetryInterval


def rec(start: datetime, committed_at: datetime, **kw: Any) -> SyncRecord:
    key = BatchKey(start=start, end=start + H)
    return SyncRecord(
        batch_id=key.id,
        source="segment",
        start=start,
        end=start + H,
        committed_at=committed_at,
        **kw,
    )


# -- the planner -------------------------------------------------------------------------------


def test_a_window_loaded_young_is_unsettled_until_settled() -> None:
    young = rec(T0, T0 + 2 * H)  # loaded 1 h after its end: before it was 4 h old
    old = rec(T0 + H, T0 + 7 * H)  # loaded 5 h after its end: settled already
    settled = rec(T0 + 2 * H, T0 + 8 * H, settled_at=T0 + 8 * H)
    hauser = SyncRecord(batch_id="h", source="hauser", start=None, end=T0, committed_at=T0)
    records = [hauser, young, old, settled]
    assert unsettled(records, SETTLE_AFTER) == [young]
    assert unsettled(records, timedelta(0)) == []  # off
    assert next_settle_at(records, SETTLE_AFTER) == T0 + H + SETTLE_AFTER


def test_settles_are_planned_once_due_oldest_first_and_skip_held_ones() -> None:
    records = [rec(T0 + i * H, T0 + (i + 2) * H) for i in range(3)]  # ends 01:00, 02:00, 03:00
    now = T0 + 2 * H + SETTLE_AFTER  # the first two are due
    keys = plan_settles(records, SETTLE_AFTER, now, limit=5)
    assert [(k.start, k.settle) for k in keys] == [(T0, True), (T0 + H, True)]
    assert keys[0].id == BatchKey(start=T0, end=T0 + H).id + "-settle"
    assert plan_settles(records, SETTLE_AFTER, now, limit=1) == keys[:1]
    assert plan_settles(records, SETTLE_AFTER, now, limit=5, skip={keys[0].id}) == keys[1:]
    assert plan_settles(records, SETTLE_AFTER, T0 + H + SETTLE_AFTER - H / 60, limit=5) == []


# -- configuration -----------------------------------------------------------------------------


def test_settle_after_is_off_by_default_and_must_exceed_export_delay() -> None:
    assert settings({}).settle_after == timedelta(0)
    assert settings({"ExportDelay": "1h", "SettleAfter": "24h"}).settle_after == 24 * H
    said = problems({"ExportDelay": "2h", "SettleAfter": "2h"})
    assert any("SettleAfter" in p and "longer than ExportDelay" in p for p in said), said
    said = problems({"Source": "legacy", "SettleAfter": "48h"})
    assert any("SettleAfter" in p and "segment" in p for p in said), said
    said = problems({"Provider": "local", "SettleAfter": "48h"})
    assert any("SettleAfter" in p and "StorageOnly" in p for p in said), said


# -- the pipeline, with a fake export API ------------------------------------------------------


class LateSource:
    """Two events per window at once, a third (late) one in exports made 3 h after its end;
    settles like `syncd.sources.batches.SegmentSource`. `settle_failures` scripts errors."""

    kind = "segment"

    def __init__(self, spool: Path, clock: list[datetime]) -> None:
        self.spool = spool
        self.clock = clock
        self.plan_ = WindowPlan(duration=H, delay=H, start_time=T0)
        self.settle_failures: dict[str, list[Exception]] = {}
        self.fetched: list[str] = []

    def plan(self, records: Sequence[SyncRecord], now: datetime, limit: int) -> list[BatchKey]:
        return plan_windows(records, self.plan_, now, limit)

    def next_ready_at(self, records: Sequence[SyncRecord], now: datetime) -> datetime:
        return next_window_ready_at(records, self.plan_, now)

    def plan_settles(
        self, records: Sequence[SyncRecord], now: datetime, limit: int, skip: Collection[str]
    ) -> list[BatchKey]:
        return plan_settles(records, SETTLE_AFTER, now, limit, skip)

    def next_settle_at(self, records: Sequence[SyncRecord]) -> datetime | None:
        return next_settle_at(records, SETTLE_AFTER)

    def unsettled(self, records: Sequence[SyncRecord]) -> list[SyncRecord]:
        return unsettled(records, SETTLE_AFTER)

    def fetch(self, key: BatchKey) -> Fetched:
        failures = self.settle_failures.get(key.id)
        if failures:
            raise failures.pop(0)
        self.fetched.append(key.id)
        count = 3 if self.clock[0] >= key.end + 3 * H else 2
        events = [
            {"IndvId": key.start.hour * 10 + i, "EventStart": (key.start + i * H / 4).isoformat()}
            for i in range(count)
        ]
        self.spool.mkdir(parents=True, exist_ok=True)
        path = self.spool / f"{key.id}.ndjson.gz"
        path.write_bytes(gzip.compress(b"".join(orjson.dumps(e) + b"\n" for e in events)))
        return Fetched(paths=(path,), bytes=path.stat().st_size, operation_id=f"op-{key.id}")

    def discard(self, key: BatchKey) -> None:
        pass

    def sweep(self, committed: Collection[str]) -> None:
        pass


def make(
    tmp_path: Path,
    source: LateSource,
    clock: list[datetime],
    hooks: Sequence[PipelineHooks] = (),
    *,
    max_attempts: int = 1,
    retry_base: float = 0.0,
    stop: threading.Event | None = None,
) -> Pipeline:
    pipeline = Pipeline(
        source,
        LocalStage(tmp_path / "staged"),
        DuckDBWarehouse(":memory:"),
        export_columns(),
        PipelineOptions(
            work_dir=tmp_path / "work",
            staged_format="parquet",
            max_attempts=max_attempts,
            retry_base=retry_base,
            held_retry_interval=RETRY.total_seconds(),
        ),
        status=StatusFile(tmp_path / "status.json"),
        hooks=hooks,
        stop=stop,
        clock=lambda: clock[0],
    )
    pipeline.start()
    return pipeline


def window_ids(first: int, last: int, settle: bool = False) -> list[str]:
    return [
        BatchKey(start=T0 + i * H, end=T0 + (i + 1) * H, settle=settle).id
        for i in range(first, last)
    ]


@pytest.fixture
def clock() -> list[datetime]:
    return [T0 + 3 * H]  # windows 00:00 and 01:00 are ready, both loaded young


def test_fresh_windows_come_first_and_settles_fill_the_gaps(
    tmp_path: Path, clock: list[datetime]
) -> None:
    source = LateSource(tmp_path / "spool", clock)
    pipeline = make(tmp_path, source, clock)
    pipeline.run(until_caught_up=True)
    clock[0] = T0 + 6 * H  # windows 02..04 ready; 00:00 and 01:00 due for their settle (4 h)
    summary = pipeline.run(until_caught_up=True)
    assert source.fetched == [*window_ids(0, 2), *window_ids(2, 5), *window_ids(0, 2, settle=True)]
    assert summary.batches == 5
    # the settles replaced the windows: one sync row a window, the late row in each
    records = pipeline.warehouse.sync_records()
    assert [r.batch_id for r in records] == [*window_ids(0, 2, settle=True), *window_ids(2, 5)]
    assert [(r.rows_loaded, r.settled_at, r.settle_delta) for r in records[:2]] == [
        (3, clock[0], 1),
        (3, clock[0], 1),
    ]
    assert [r.settled_at for r in records[2:]] == [None, None, None]
    assert pipeline.warehouse.inconsistent_days(T0.date()) == []
    assert sorted(pipeline.records, key=lambda r: r.end) == records  # planning goes on from it
    pipeline.run(until_caught_up=True)  # nothing more: settled windows are not settled again
    assert len(source.fetched) == 7


class IdleWaits(PipelineHooks):
    """Until when each idle pipeline means to sleep."""

    def __init__(self) -> None:
        self.next_ready_at: list[datetime] = []

    def on_idle(self, sync_point: datetime | None, next_ready_at: datetime) -> None:
        self.next_ready_at.append(next_ready_at)


def metric(metrics: SyncMetrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


def test_a_held_settle_never_blocks_fresh_windows(tmp_path: Path, clock: list[datetime]) -> None:
    source = LateSource(tmp_path / "spool", clock)
    metrics = SyncMetrics(export_delay=H, settle_after=SETTLE_AFTER, clock=lambda: clock[0])
    idle = IdleWaits()
    pipeline = make(tmp_path, source, clock, hooks=[metrics, idle])
    metrics.follow(lambda: None, lambda: pipeline.records)
    pipeline.run(until_caught_up=True)
    assert metric(metrics, "syncd_windows_unsettled") == 2
    clock[0] = T0 + 6 * H
    held_id = window_ids(0, 1, settle=True)[0]
    source.settle_failures = {
        held_id: [TerminalSourceError("export failed"), TerminalSourceError("again")]
    }
    summary = pipeline.run(until_caught_up=True)
    # the first settle was held; the second still went; fresh windows all went before
    assert source.fetched == [*window_ids(0, 2), *window_ids(2, 5), *window_ids(1, 2, settle=True)]
    assert summary.held is None and pipeline.held is None
    assert list(pipeline.settles_held) == [held_id]
    status = StatusFile(tmp_path / "status.json").read()
    assert status is not None and [h.batch_id for h in status.settles_held] == [held_id]
    assert status.state == "idle"
    # the daemon sleeps until the next fresh window or due settle (07:00), not in a loop on
    # the held settle's past due time; the held one comes back at its retry time (08:00)
    assert idle.next_ready_at == [T0 + 3 * H + H, T0 + 7 * H]
    assert status.settles_held[0].next_attempt == T0 + 6 * H + RETRY
    assert (status.unsettled, status.settle_rows_gained) == (4, 1)  # 00:00, 02:00..04:00
    assert metric(metrics, "syncd_settles_held") == 1
    assert metric(metrics, "syncd_batch_held") == 0  # the daemon is not held
    assert metric(metrics, "syncd_settles_committed_total") == 1
    assert metric(metrics, "syncd_settle_rows_gained") == 1
    assert metric(metrics, "syncd_windows_unsettled") == 4
    clock[0] += H  # a new fresh window is ready; the held settle waits for its retry time
    pipeline.run(until_caught_up=True)
    assert window_ids(5, 6)[0] in source.fetched and held_id not in source.fetched
    clock[0] += RETRY  # its retry time: it fails again, still held alone
    pipeline.run(until_caught_up=True)
    assert pipeline.settles_held[held_id].attempts == 2 and pipeline.held is None
    clock[0] += RETRY  # and then it goes through
    pipeline.run(until_caught_up=True)
    assert pipeline.settles_held == {}
    assert metric(metrics, "syncd_settles_held") == 0
    assert window_ids(0, 1, settle=True)[0] in {
        r.batch_id for r in pipeline.warehouse.sync_records()
    }


class WaitsSeen(threading.Event):
    """A stop event that records every wait the pipeline makes on it, and does not wait."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return self.is_set()


def test_a_failing_settle_sits_out_its_backoff_while_fresh_windows_go_on(
    tmp_path: Path, clock: list[datetime]
) -> None:
    source = LateSource(tmp_path / "spool", clock)
    stop = WaitsSeen()
    pipeline = make(tmp_path, source, clock, max_attempts=3, retry_base=40.0, stop=stop)
    pipeline.run(until_caught_up=True)
    clock[0] = T0 + 6 * H
    failing = window_ids(0, 1, settle=True)[0]
    source.settle_failures = {failing: [TransientSourceError("HTTP 503")]}
    pipeline.run(until_caught_up=True)
    assert stop.waits == []  # its backoff (30 s or more) was not waited for
    assert source.fetched[2:] == [*window_ids(2, 5), *window_ids(1, 2, settle=True)]
    assert pipeline.settles_held == {} and pipeline.held is None  # not held: one attempt
    clock[0] += H  # past its backoff: the settle goes, with the new fresh window first
    pipeline.run(until_caught_up=True)
    assert source.fetched.index(window_ids(5, 6)[0]) < source.fetched.index(failing)
    assert failing in {r.batch_id for r in pipeline.warehouse.sync_records()}


# -- end to end: the simulator's late arrivals, DuckDB, the CLI -------------------------------

START = datetime(2026, 11, 1, 21, tzinfo=UTC)
LATE_AFTER = 3 * H
LATER = NOW + 6 * H  # 09:30: fresh windows up to 08:00, settles of windows ending by 05:30


@dataclass(frozen=True)
class Target:
    overrides: dict[str, object]
    rows: Callable[[SyncdFiles], list[dict[str, Any]]]
    sync: Callable[[SyncdFiles], list[dict[str, Any]]]
    #: What the comparison ignores: JSONB keeps CustomVars' object, not its key order.
    canon: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] = lambda rows: rows


@pytest.fixture(params=["duckdb", "postgres"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "duckdb":
        yield Target({}, lambda f: export_rows(f.duckdb), lambda f: sync_rows(f.duckdb))
        return
    from aws_support import (
        AwsEnv,
        drop_schema,
        new_schema,
        postgres_overrides,
        shared_postgres,
        warehouse_rows,
    )

    pg = shared_postgres()
    schema = new_schema()
    env = AwsEnv(None, pg, "", schema)  # type: ignore[arg-type] # reads need no S3
    overrides: dict[str, object] = postgres_overrides(pg, schema)
    try:
        yield Target(
            overrides,
            lambda f: warehouse_rows(env),
            lambda f: warehouse_rows(env, "fssync"),
            sorted_custom_vars,
        )
    finally:
        drop_schema(schema)


def test_late_events_are_recovered_by_settling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: Target
) -> None:
    clock = [NOW]
    config = SimulatorConfig(
        api_key=API_KEY,
        events_per_hour=200,
        late_fraction=0.2,
        late_after=LATE_AFTER,
        clock=lambda: clock[0],
    )
    with Simulator(config) as sim:
        files = write_config(tmp_path, sim, START, {"SettleAfter": "4h", **target.overrides})
        dropped = dropped_fields(False)  # every field exported; the mobile ones left out
        columns = export_columns("segment")

        def rows(
            windows: list[tuple[datetime, datetime]], as_of: datetime | None, settle: bool
        ) -> list[dict[str, Any]]:
            out = []
            for start, end in windows:
                batch_id = BatchKey(start=start, end=end, settle=settle).id
                for event in sim.expected_events(start, end, as_of=as_of):
                    out.append(expected_row(event, columns, batch_id, dropped=dropped))
            return out

        # 03:30: five windows; the late events of 00:00 and 01:00 have not arrived yet
        assert run_cli(["once", "-c", str(files.config)], now=NOW) == EXIT_OK
        first = hour_windows(START, NOW - H - H / 2)
        assert_rows_equal(
            target.canon(target.rows(files)), target.canon(rows(first, NOW, settle=False))
        )
        missing = len(rows(first, None, False)) - len(rows(first, NOW, False))
        assert missing > 0, "the late-arrival mode hid nothing: the test would prove nothing"

        # 09:30: fresh windows 02:00..08:00, then the settles of 23:00, 00:00 and 01:00
        clock[0] = LATER
        assert run_cli(["once", "-c", str(files.config)], now=LATER) == EXIT_OK
        young = hour_windows(START + 2 * H, START + 5 * H)  # loaded at 03:30, 4 h old by 05:00
        settled_old = hour_windows(START, START + 2 * H)  # loaded when 4 h old already
        fresh = hour_windows(START + 5 * H, LATER - H - H / 2)
        want = [
            *rows(settled_old, None, False),
            *rows(young, None, True),  # the full truth, every late event
            *rows(fresh, LATER, False),
        ]
        assert_rows_equal(target.canon(target.rows(files)), target.canon(want))
        # the full truth from the start to the last window whose late events had arrived
        complete = hour_windows(START, datetime(2026, 11, 2, 6, tzinfo=UTC))
        truth = [ev for s, e in complete for ev in sim.expected_events(s, e)]
        in_table = [r for r in target.rows(files) if r["EventStart"] < datetime(2026, 11, 2, 6)]
        assert len(in_table) == len(truth)

        sync = {r["SyncdBatchId"]: r for r in target.sync(files)}
        settled = [sync[BatchKey(start=s, end=e, settle=True).id] for s, e in young]
        gained = sum(int(r["SettleRowsDelta"]) for r in settled)
        assert gained == missing  # the late rows recovered
        assert all(r["SettledAt"] == LATER.replace(tzinfo=None) for r in settled)
        assert all(sync[BatchKey(start=s, end=e).id]["SettledAt"] is None for s, e in fresh)
        assert all(BatchKey(start=s, end=e).id not in sync for s, e in young)
        capsys.readouterr()
        assert run_cli(["status", "-c", str(files.config), "--json"], now=LATER) == EXIT_OK
        settling = json.loads(capsys.readouterr().out)["settling"]
        # unsettled: 05:00, 06:00 and 07:00, loaded at 09:30 before they were 4 h old
        assert settling == {
            "settle_after": "4h",
            "unsettled": 3,
            "settled": 3,
            "rows_gained": gained,
            "held": [],
        }
        assert run_cli(["status", "-c", str(files.config)], now=LATER) == EXIT_OK
        text = capsys.readouterr().out
        assert f"settling     3 windows unsettled; {gained:+d} rows gained by 3 settles" in text
        with capsys.disabled():
            print(
                f"\n{target.overrides.get('Provider', 'duckdb')}: late rows recovered by "
                f"settling: {gained} of {len(want)} rows"
            )


def test_the_readme_lists_every_settle_metric() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    exposed = {
        m.name + ("_total" if m.type == "counter" else "")
        for m in SyncMetrics().registry.collect()
        if "settle" in m.name
    }
    assert exposed == {
        "syncd_windows_unsettled",
        "syncd_settle_rows_gained",
        "syncd_settles_committed_total",
        "syncd_settles_held",
    }
    assert [name for name in sorted(exposed) if f"`{name}`" not in readme] == []


# -- an earlier syncd's SyncTable gains the settle columns -------------------------------------


def settle_round(warehouse: Warehouse, staged_files: StagedFiles) -> list[SyncRecord]:
    """After the settle columns were dropped (an earlier syncd's SyncTable): ensure the tables,
    then settle the committed window; the sync records before and after."""
    warehouse.ensure_tables(export_columns())
    (before,) = warehouse.sync_records()
    key = BatchKey(start=before.start or T0, end=before.end, settle=True)
    batch = staged_files.write(key, staged_files.rows(key, 4), "csv")
    record = SyncRecord(
        batch_id=key.id,
        source="segment",
        start=key.start,
        end=key.end,
        committed_at=key.end + SETTLE_AFTER,
        rows_loaded=batch.rows,
        settled_at=key.end + SETTLE_AFTER,
        settle_delta=batch.rows - before.rows_loaded,
    )
    warehouse.commit_batch(staged_files.in_place(batch), record, replace=True)
    return [before, *warehouse.sync_records()]


def first_load(warehouse: Warehouse, staged_files: StagedFiles) -> None:
    warehouse.ensure_tables(export_columns())
    key = staged_files.key("2024-03-01T00:00:00Z")
    batch = staged_files.write(key, staged_files.rows(key, 3), "csv")
    record = SyncRecord(
        batch_id=key.id,
        source="segment",
        start=key.start,
        end=key.end,
        committed_at=key.end + H,
        rows_loaded=batch.rows,
    )
    warehouse.commit_batch(staged_files.in_place(batch), record)


def check_upgraded(records: list[SyncRecord]) -> None:
    before, after = records
    assert (before.settled_at, before.settle_delta) == (None, 0)
    assert after.batch_id == before.batch_id + "-settle"
    assert (after.rows_loaded, after.settle_delta) == (4, 1)
    assert after.settled_at == after.end + SETTLE_AFTER


def test_an_earlier_duckdb_sync_table_gains_the_settle_columns(
    tmp_path: Path, staged_files: StagedFiles
) -> None:
    path = tmp_path / "old.duckdb"
    with DuckDBWarehouse(path) as wh:
        first_load(wh, staged_files)
    with duckdb.connect(str(path)) as con:
        for column in ("SettledAt", "SettleRowsDelta"):
            con.execute(f'ALTER TABLE fssync DROP COLUMN "{column}"')
    with DuckDBWarehouse(path) as wh:
        check_upgraded(settle_round(wh, staged_files))


def test_an_earlier_postgres_sync_table_gains_the_settle_columns(
    postgres: PostgresCluster, schema: str, staged_files: StagedFiles
) -> None:
    def warehouse() -> PostgresWarehouse:
        return PostgresWarehouse(
            host=postgres.host,
            port=postgres.port,
            user=postgres.user,
            dbname=postgres.database,
            schema=schema,
        )

    wh = warehouse()
    first_load(wh, staged_files)
    wh.close()
    with psycopg.connect(postgres.dsn, autocommit=True) as con:
        for column in ("SettledAt", "SettleRowsDelta"):
            con.execute(f'ALTER TABLE "{schema}".fssync DROP COLUMN "{column}"')
    wh = warehouse()
    try:
        check_upgraded(settle_round(wh, staged_files))
    finally:
        wh.close()


def test_the_readme_settling_example_is_a_valid_configuration() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("**Settling (`SettleAfter`).**", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    loaded = settings(tomllib.loads(example))
    assert (loaded.export_delay, loaded.settle_after) == (H, 24 * H)


# -- the simulator's late-arrival mode ---------------------------------------------------------


def test_late_events_appear_late_after_their_hour_deterministically() -> None:
    hour = (START, START + H)

    def sim_config(seed: int = 1) -> SimulatorConfig:
        return SimulatorConfig(
            events_per_hour=500, seed=seed, late_fraction=0.25, late_after=LATE_AFTER
        )

    def events(sim: Simulator, as_of: datetime | None) -> list[str]:
        return [orjson.dumps(e).decode() for e in sim.expected_events(*hour, as_of=as_of)]

    sim, again = Simulator(sim_config()), Simulator(sim_config())
    everything = events(sim, None)
    early = events(sim, hour[1] + LATE_AFTER - timedelta(seconds=1))
    assert set(early) < set(everything)
    assert 0.15 < 1 - len(early) / len(everything) < 0.35  # about late_fraction
    assert early == events(again, hour[1] + LATE_AFTER - timedelta(seconds=1))  # by seed
    assert events(sim, hour[1] + LATE_AFTER) == everything  # arrived: the full truth
    plain = Simulator(SimulatorConfig(events_per_hour=500))
    assert events(plain, hour[1]) == everything  # the mode off: every event at once
    assert events(Simulator(sim_config(seed=2)), hour[1]) != early
