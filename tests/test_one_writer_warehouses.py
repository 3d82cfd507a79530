"""One writer per SyncTable on PostgreSQL, Redshift and BigQuery: the warehouse lease.

Two `syncd` processes on one PostgreSQL SyncTable: the second exits 3 naming the first, and
every batch is loaded once. Then, for each warehouse (PostgreSQL, Redshift through the proxy
stand-in, BigQuery through the emulator), two warehouse objects on one SyncTable stand for two
daemons, with an injected clock: the second is refused with the holder named, a stale lease is
taken over, the old holder learns it lost the lease, and its commit is refused (fencing).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from aws_support import (  # noqa: F401 - fixtures
    AwsEnv,
    aws,
    bucket,
    drop_schema,
    moto_s3,
    new_schema,
    postgres,
    postgres_overrides,
    redshift_proxy,
    redshift_warehouse,
    schema,
    shared_postgres,
)
from e2e_support import API_KEY, HOUR, write_config
from gcp_support import (  # noqa: F401 - fixtures
    bigquery_emulator,
    bq_dataset,
    gcs_bucket,
    gcs_emulator,
    make_stage,
    make_warehouse,
)

from syncd.batch import StagedBatch, SyncRecord
from syncd.cli import EXIT_LOCKED
from syncd.errors import LockedError, TerminalLoadError
from syncd.fields import Column
from syncd.lease import LeaseHolder
from syncd.simulator import Simulator, SimulatorConfig
from syncd.timeutil import UTC, utcnow
from warehouses.postgres import PostgresWarehouse
from warehouses.s3 import S3Stage

if TYPE_CHECKING:
    from conftest import StagedFiles

T0 = datetime(2026, 11, 2, 12, tzinfo=UTC)
TTL = timedelta(seconds=60)
START = "2024-03-01T00:00:00Z"


def wait_for(
    predicate: Callable[[], bool], timeout: float = 30.0, what: Callable[[], str] = str
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what()}")
        time.sleep(0.05)


# -- two syncd processes on one PostgreSQL SyncTable -----------------------------------------


@dataclass(frozen=True)
class TwoDaemons:
    second: subprocess.CompletedProcess[str]
    first_pid: int
    schema: str


def postgres_sql(query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(shared_postgres().dsn, autocommit=True) as con:
        cursor = con.execute(query)
        return list(cursor.fetchall()) if cursor.description else []


@pytest.fixture(scope="module")
def two_daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoDaemons]:
    """`syncd run` loading into PostgreSQL; `syncd once` on the same config meanwhile."""
    pg = shared_postgres()
    name = new_schema()
    overrides = postgres_overrides(pg, name)
    config = SimulatorConfig(api_key=API_KEY, events_per_hour=60, operation_latency=0.1)
    with Simulator(config) as sim:
        start = utcnow().replace(minute=0, second=0, microsecond=0) - 6 * HOUR
        files = write_config(tmp_path_factory.mktemp("pg-one-writer"), sim, start, overrides)
        status = files.state_dir / "status.json"
        argv = [sys.executable, "-m", "syncd", "run", "-c", str(files.config)]
        once = [sys.executable, "-m", "syncd", "once", "-c", str(files.config)]
        log = (files.config.parent / "first.log").open("w")
        first = subprocess.Popen(argv, stdout=log, stderr=log)
        try:
            wait_for(
                lambda: status.exists() and bool(json.loads(status.read_text())["recent"]),
                what=lambda: (files.config.parent / "first.log").read_text()[-3000:],
            )
            second = subprocess.run(once, capture_output=True, text=True, timeout=60, check=False)
            wait_for(lambda: json.loads(status.read_text())["state"] == "idle")
            first.send_signal(signal.SIGTERM)
            first.wait(timeout=30)
        finally:
            if first.poll() is None:
                os.kill(first.pid, signal.SIGKILL)
                first.wait()
        yield TwoDaemons(second, first.pid, name)
    drop_schema(name)


def test_the_second_postgres_daemon_exits_3(two_daemons: TwoDaemons) -> None:
    assert two_daemons.second.returncode == EXIT_LOCKED


def test_the_second_postgres_daemon_names_the_holder(two_daemons: TwoDaemons) -> None:
    holder = re.escape(f"syncd pid {two_daemons.first_pid} on {socket.gethostname()}")
    assert re.fullmatch(
        rf"syncd: cannot start: another syncd is the writer of fssync: {holder} \(since \S+Z\); "
        r"its lease runs until \S+Z and is taken over if it is not renewed by then\n",
        two_daemons.second.stderr,
    ), two_daemons.second.stderr


def test_every_postgres_batch_is_loaded_once(two_daemons: TwoDaemons) -> None:
    s = two_daemons.schema
    sync = postgres_sql(f'SELECT "SyncdBatchId", "RowsLoaded" FROM "{s}".fssync')  # noqa: S608
    loaded = postgres_sql(
        f'SELECT "SyncdBatchId", count(*) FROM "{s}".fsexport GROUP BY 1'  # noqa: S608
    )
    ids = [batch_id for batch_id, _ in sync]
    assert (len(ids) == len(set(ids)) > 0, dict(sync)) == (True, dict(loaded))


def test_the_stopped_daemon_released_its_lease(two_daemons: TwoDaemons) -> None:
    s = two_daemons.schema
    assert postgres_sql(f'SELECT "Holder" FROM "{s}".fssync_lease') == []  # noqa: S608


# -- two warehouse objects on one SyncTable, per warehouse ------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def holder(pid: int) -> LeaseHolder:
    return LeaseHolder(host="db-host", pid=pid, started_at=T0, id=f"holder-{pid}")


@dataclass
class Daemons:
    """Two warehouses (two daemons) on one SyncTable, a shared clock, a way to commit."""

    first: Any
    second: Any
    clock: Clock
    commit: Callable[[Any, str], SyncRecord]


def _record(staged: StagedBatch) -> SyncRecord:
    key = staged.batch.key
    return SyncRecord(
        batch_id=key.id,
        source=key.source,
        start=key.start,
        end=key.end,
        committed_at=key.end + HOUR,
        operation_id=f"op-{key.id}",
        rows_loaded=staged.batch.rows,
        rows_rejected=staged.batch.rejected,
        bytes=staged.batch.source_bytes,
        staged_uri=staged.uri,
    )


def _postgres(in_schema: str, clock: Clock) -> list[Any]:
    pg = shared_postgres()

    def make() -> PostgresWarehouse:
        return PostgresWarehouse(
            host=pg.host,
            port=pg.port,
            user=pg.user,
            dbname=pg.database,
            schema=in_schema,
            lease_clock=clock,
        )

    return [make(), make()]


@pytest.fixture(params=["postgres", "redshift", "bigquery", "snowflake"])
def daemons(request: pytest.FixtureRequest, staged_files: StagedFiles) -> Iterator[Daemons]:
    clock = Clock()
    columns: tuple[Column, ...] = staged_files.columns
    if request.param == "postgres":
        fresh = new_schema()
        request.addfinalizer(lambda: drop_schema(fresh))
        pair = _postgres(fresh, clock)

        def commit(warehouse: Any, start: str) -> SyncRecord:
            key = staged_files.key(start)
            batch = staged_files.write(key, staged_files.rows(key, 3), "csv")
            staged = staged_files.in_place(batch)
            warehouse.commit_batch(staged, _record(staged))
            return _record(staged)

    elif request.param == "redshift":
        env: AwsEnv = request.getfixturevalue("aws")
        request.getfixturevalue("redshift_proxy")
        pair = [redshift_warehouse(env.schema, lease_clock=clock) for _ in range(2)]
        s3 = S3Stage(env.bucket, endpoint_url=env.moto.endpoint_url, client=env.moto.client())

        def commit(warehouse: Any, start: str) -> SyncRecord:
            key = staged_files.key(start)
            batch = staged_files.write(key, staged_files.rows(key, 3), "csv")
            staged = StagedBatch(batch, s3.put(batch.path, batch.path.name), None)
            warehouse.commit_batch(staged, _record(staged))
            return _record(staged)

    elif request.param == "snowflake":
        import snowflake_support

        schema_name = snowflake_support.new_schema()
        pair = [
            snowflake_support.snowflake_warehouse(schema_name, lease_clock=clock) for _ in range(2)
        ]
        s3_stage = snowflake_support.s3_stage()

        def commit(warehouse: Any, start: str) -> SyncRecord:
            key = staged_files.key(start)
            batch = staged_files.write(key, staged_files.rows(key, 3), "parquet")
            staged = StagedBatch(batch, s3_stage.put(batch.path, batch.path.name), None)
            warehouse.commit_batch(staged, _record(staged))
            return _record(staged)

    else:
        dataset: str = request.getfixturevalue("bq_dataset")
        gcs = make_stage(request.getfixturevalue("gcs_bucket"), "hauser-uploads/")
        pair = [make_warehouse(dataset, lease_clock=clock) for _ in range(2)]

        def commit(warehouse: Any, start: str) -> SyncRecord:
            key = staged_files.key(start)
            batch = staged_files.write(key, staged_files.rows(key, 3), "parquet")
            staged = StagedBatch(batch, gcs.put(batch.path, batch.path.name), None)
            warehouse.commit_batch(staged, _record(staged))
            return _record(staged)

    pair[0].ensure_tables(columns)
    yield Daemons(pair[0], pair[1], clock, commit)
    for warehouse in pair:
        warehouse.close()


def test_a_second_daemon_is_refused_with_the_first_named(daemons: Daemons) -> None:
    daemons.first.acquire_lease(holder(101), TTL)
    with pytest.raises(LockedError) as caught:
        daemons.second.acquire_lease(holder(202), TTL)
    assert str(caught.value) == (
        "cannot start: another syncd is the writer of fssync: syncd pid 101 on db-host "
        "(since 2026-11-02T12:00:00Z); its lease runs until 2026-11-02T12:01:00Z and is taken "
        "over if it is not renewed by then"
    )


def test_a_stale_lease_is_taken_over(daemons: Daemons) -> None:
    daemons.first.acquire_lease(holder(101), TTL)
    daemons.clock.now += TTL + timedelta(seconds=1)
    daemons.second.acquire_lease(holder(202), TTL)
    assert daemons.second.lease_holder() == holder(202).describe()


def test_a_renewed_lease_is_not_taken_over(daemons: Daemons) -> None:
    daemons.first.acquire_lease(holder(101), TTL)
    daemons.clock.now += TTL / 2
    daemons.first.renew_lease(holder(101), TTL)
    daemons.clock.now += TTL / 2 + timedelta(seconds=1)
    with pytest.raises(LockedError, match="syncd pid 101 on db-host"):
        daemons.second.acquire_lease(holder(202), TTL)


def test_the_old_holder_learns_it_lost_the_lease(daemons: Daemons) -> None:
    daemons.first.acquire_lease(holder(101), TTL)
    daemons.clock.now += TTL + timedelta(seconds=1)
    daemons.second.acquire_lease(holder(202), TTL)
    with pytest.raises(LockedError, match="^lease lost: .* syncd pid 202 on db-host"):
        daemons.first.renew_lease(holder(101), TTL)


def test_a_released_lease_is_free_at_once(daemons: Daemons) -> None:
    daemons.first.acquire_lease(holder(101), TTL)
    daemons.first.release_lease(holder(101))
    daemons.second.acquire_lease(holder(202), TTL)
    assert daemons.second.lease_holder() == holder(202).describe()


def test_the_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(
    daemons: Daemons,
) -> None:
    dead = LeaseHolder(host=socket.gethostname(), pid=_pid_of_finished_process(), started_at=T0)
    daemons.first.acquire_lease(dead, TTL)
    daemons.second.acquire_lease(holder(202), TTL)
    assert daemons.second.lease_holder() == holder(202).describe()


def _pid_of_finished_process() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_holder_commits(daemons: Daemons) -> None:
    daemons.first.acquire_lease(holder(101), TTL)
    record = daemons.commit(daemons.first, START)
    assert [r.batch_id for r in daemons.first.sync_records()] == [record.batch_id]


def test_a_commit_after_a_takeover_is_refused_naming_both_holders(daemons: Daemons) -> None:
    daemons.first.acquire_lease(holder(101), TTL)
    daemons.clock.now += TTL + timedelta(seconds=1)
    daemons.second.acquire_lease(holder(202), TTL)
    with pytest.raises(TerminalLoadError) as caught:
        daemons.commit(daemons.first, START)
    assert str(caught.value).endswith(
        "refused: syncd pid 101 on db-host (since 2026-11-02T12:00:00Z) no longer holds the "
        "writer lease of fssync (now held by syncd pid 202 on db-host (since "
        "2026-11-02T12:00:00Z)); another syncd took over"
    )


def test_a_refused_commit_leaves_nothing(daemons: Daemons) -> None:
    daemons.first.acquire_lease(holder(101), TTL)
    daemons.clock.now += TTL + timedelta(seconds=1)
    daemons.second.acquire_lease(holder(202), TTL)
    with pytest.raises(TerminalLoadError):
        daemons.commit(daemons.first, START)
    assert daemons.second.sync_records() == []


def test_the_new_holder_commits_after_a_takeover(daemons: Daemons) -> None:
    daemons.first.acquire_lease(holder(101), TTL)
    daemons.clock.now += TTL + timedelta(seconds=1)
    daemons.second.acquire_lease(holder(202), TTL)
    record = daemons.commit(daemons.second, START)
    assert [r.batch_id for r in daemons.second.sync_records()] == [record.batch_id]


# -- daemons starting together: exactly one holder, every time ---------------------------------

RACERS = 4
ROUNDS = 40


def _race(warehouses: list[Any], round_: int) -> list[int]:
    """All `warehouses` acquire at once; the indexes of those that got the lease."""
    import threading

    start = threading.Barrier(len(warehouses))
    outcomes: list[object] = [None] * len(warehouses)

    def acquire(index: int) -> None:
        start.wait()
        try:
            warehouses[index].acquire_lease(holder(1000 * round_ + index), TTL)
            outcomes[index] = True
        except LockedError:
            outcomes[index] = False
        except Exception as exc:  # reported below, not swallowed
            outcomes[index] = exc

    threads = [threading.Thread(target=acquire, args=(i,)) for i in range(len(warehouses))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert errors == []
    return [i for i, won in enumerate(outcomes) if won is True]


@pytest.mark.parametrize("warehouse", ["postgres", "redshift"])
def test_daemons_starting_together_get_exactly_one_holder(
    request: pytest.FixtureRequest, warehouse: str, staged_files: StagedFiles
) -> None:
    clock = Clock()
    if warehouse == "postgres":
        in_schema = new_schema()
        request.addfinalizer(lambda: drop_schema(in_schema))
        racers = _postgres(in_schema, clock) + _postgres(in_schema, clock)
    else:
        in_schema = request.getfixturevalue("aws").schema
        request.getfixturevalue("redshift_proxy")
        racers = [redshift_warehouse(in_schema, lease_clock=clock) for _ in range(RACERS)]
    try:
        racers[0].acquire_lease(holder(1), TTL)  # the lease table exists before the race
        winners = []
        for round_ in range(1, ROUNDS + 1):
            postgres_sql(f'DELETE FROM "{in_schema}".fssync_lease')  # noqa: S608 - test names
            winners.append(len(_race(racers, round_)))
    finally:
        for racer in racers:
            racer.close()
    assert (warehouse, winners) == (warehouse, [1] * ROUNDS), winners


def test_on_redshift_a_takeover_waits_for_the_commit_in_progress(
    request: pytest.FixtureRequest, staged_files: StagedFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit starts with LOCK of the lease table: a takeover cannot slip in between the
    commit's first statement and its fence (under Redshift's snapshot isolation the fence
    would read the lease as of that first statement)."""
    import threading

    env: AwsEnv = request.getfixturevalue("aws")
    request.getfixturevalue("redshift_proxy")
    clock = Clock()
    first, second = (redshift_warehouse(env.schema, lease_clock=clock) for _ in range(2))
    request.addfinalizer(first.close)
    request.addfinalizer(second.close)
    first.ensure_tables(staged_files.columns)
    first.acquire_lease(holder(101), TTL)
    clock.now += TTL + timedelta(seconds=1)  # stale: the second daemon may take it over
    events: list[str] = []
    taken = threading.Event()

    def take_over() -> None:
        second.acquire_lease(holder(202), TTL)
        events.append("taken over")
        taken.set()

    taker = threading.Thread(target=take_over)
    load = first._load

    def load_while_taking_over(cursor: Any, staged: StagedBatch, record: SyncRecord) -> int:
        taker.start()
        taken.wait(1.0)  # without the lock, the takeover completes here
        events.append("loaded")
        return int(load(cursor, staged, record))

    monkeypatch.setattr(first, "_load", load_while_taking_over)
    s3 = S3Stage(env.bucket, endpoint_url=env.moto.endpoint_url, client=env.moto.client())
    key = staged_files.key(START)
    batch = staged_files.write(key, staged_files.rows(key, 3), "csv")
    staged = StagedBatch(batch, s3.put(batch.path, batch.path.name), None)
    first.commit_batch(staged, _record(staged))
    taker.join(30)
    assert (events, second.lease_holder()) == (["loaded", "taken over"], holder(202).describe())
