"""One writer per SyncTable: a second daemon on the same DuckDB file exits 3 naming the holder
(no duplicate rows), and the warehouse lease (`TableLease`) on DuckDB and PostgreSQL: held,
refused to a second holder with its name, taken over when stale, lost on renewal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from e2e_support import API_KEY, HOUR, batch_counts, export_rows, sync_rows, write_config

from syncd.cli import EXIT_LOCKED
from syncd.errors import LockedError
from syncd.lease import LeaseHolder, LeaseKeeper
from syncd.simulator import Simulator, SimulatorConfig
from syncd.timeutil import UTC, utcnow
from warehouses.lease_sql import TableLease

T0 = datetime(2026, 11, 2, 12, tzinfo=UTC)
TTL = timedelta(seconds=60)


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def two_daemons(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[subprocess.CompletedProcess[str], int, Path]]:
    """A daemon loading; a second started on the same config meanwhile. The second's result,
    the first's PID, and the DuckDB file (after the first stopped)."""
    config = SimulatorConfig(api_key=API_KEY, events_per_hour=60, operation_latency=0.1)
    with Simulator(config) as sim:
        start = utcnow().replace(minute=0, second=0, microsecond=0) - 6 * HOUR
        files = write_config(tmp_path_factory.mktemp("one-writer"), sim, start)
        status = files.state_dir / "status.json"
        argv = [sys.executable, "-m", "syncd", "run", "-c", str(files.config)]
        first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: status.exists() and bool(json.loads(status.read_text())["recent"]))
            second = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
            wait_for(lambda: json.loads(status.read_text())["state"] == "idle")
            first.send_signal(signal.SIGTERM)
            first.wait(timeout=30)
        finally:
            if first.poll() is None:
                os.kill(first.pid, signal.SIGKILL)
                first.wait()
        yield second, first.pid, files.duckdb


def test_the_second_daemon_exits_3(two_daemons: Any) -> None:
    second, _, _ = two_daemons
    assert second.returncode == EXIT_LOCKED


def test_the_second_daemon_names_the_holder(two_daemons: Any) -> None:
    second, pid, db = two_daemons
    assert second.stderr.strip() == (
        f"syncd: the DuckDB file {db} is in use by another process (PID {pid}): DuckDB admits "
        "one writer process, and no reader while it writes"
    )


def test_every_batch_is_loaded_once(two_daemons: Any) -> None:
    _, _, db = two_daemons
    counts = batch_counts(export_rows(db))
    rows = sync_rows(db)
    ids = [r["SyncdBatchId"] for r in rows]
    assert (len(ids) == len(set(ids)), {r["SyncdBatchId"]: r["RowsLoaded"] for r in rows}) == (
        True,
        counts,
    )


# -- TableLease ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def holder(pid: int) -> LeaseHolder:
    return LeaseHolder(host="db-host", pid=pid, started_at=T0, id=f"holder-{pid}")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["duckdb", "postgres"])
def lease_pair(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> Iterator[tuple[TableLease, TableLease]]:
    """Two daemons' leases on one SyncTable, each on its own connection."""
    if request.param == "duckdb":
        path = str(tmp_path / "lease.duckdb")
        connect: Callable[[], Any] = lambda: duckdb.connect(path)  # noqa: E731
        param = "?"
    else:
        cluster = postgres_cluster()
        import psycopg

        connect = lambda: psycopg.connect(cluster.dsn, autocommit=True)  # noqa: E731
        param = "%s"
        with psycopg.connect(cluster.dsn, autocommit=True) as con:
            con.execute('DROP TABLE IF EXISTS "fssync_lease"')
    pair = tuple(
        TableLease(connect, "fssync_lease", "fssync", param=param, clock=clock) for _ in range(2)
    )
    yield pair[0], pair[1]


_cluster: list[Any] = []


def postgres_cluster() -> Any:
    """A throwaway PostgreSQL for this module; a stand-in that cannot start fails the test."""
    if not _cluster:
        from standins.postgres import PostgresCluster, PostgresUnavailable

        try:
            cluster = PostgresCluster().start()
        except PostgresUnavailable as exc:
            pytest.fail(f"the PostgreSQL stand-in did not start: {exc}")
        import atexit

        atexit.register(cluster.stop)
        _cluster.append(cluster)
    return _cluster[0]


def test_a_second_holder_is_refused_with_the_first_named(
    lease_pair: tuple[TableLease, TableLease],
) -> None:
    first, second = lease_pair
    first.acquire_lease(holder(101), TTL)
    with pytest.raises(LockedError) as caught:
        second.acquire_lease(holder(202), TTL)
    assert str(caught.value) == (
        "cannot start: another syncd is the writer of fssync: syncd pid 101 on db-host "
        "(since 2026-11-02T12:00:00Z); its lease runs until 2026-11-02T12:01:00Z and is taken "
        "over if it is not renewed by then"
    )


def test_a_stale_lease_is_taken_over(
    lease_pair: tuple[TableLease, TableLease], clock: Clock
) -> None:
    first, second = lease_pair
    first.acquire_lease(holder(101), TTL)
    clock.now += TTL + timedelta(seconds=1)
    second.acquire_lease(holder(202), TTL)
    assert second.holder() == holder(202).describe()


def test_a_renewed_lease_is_not_taken_over(
    lease_pair: tuple[TableLease, TableLease], clock: Clock
) -> None:
    first, second = lease_pair
    first.acquire_lease(holder(101), TTL)
    clock.now += TTL / 2
    first.renew_lease(holder(101), TTL)
    clock.now += TTL / 2 + timedelta(seconds=1)
    with pytest.raises(LockedError):
        second.acquire_lease(holder(202), TTL)


def test_the_old_holder_learns_it_lost_the_lease(
    lease_pair: tuple[TableLease, TableLease], clock: Clock
) -> None:
    first, second = lease_pair
    first.acquire_lease(holder(101), TTL)
    clock.now += TTL + timedelta(seconds=1)
    second.acquire_lease(holder(202), TTL)
    with pytest.raises(LockedError) as caught:
        first.renew_lease(holder(101), TTL)
    assert "syncd pid 202 on db-host" in str(caught.value)


def test_a_released_lease_is_free_at_once(lease_pair: tuple[TableLease, TableLease]) -> None:
    first, second = lease_pair
    first.acquire_lease(holder(101), TTL)
    first.release_lease(holder(101))
    second.acquire_lease(holder(202), TTL)
    assert second.holder() == holder(202).describe()


def test_the_same_holder_may_acquire_again(lease_pair: tuple[TableLease, TableLease]) -> None:
    first, _ = lease_pair
    first.acquire_lease(holder(101), TTL)
    first.acquire_lease(holder(101), TTL)
    assert first.holder() == holder(101).describe()


class LosingLease:
    """A warehouse whose lease is lost at the first renewal."""

    def acquire_lease(self, holder: LeaseHolder, ttl: timedelta) -> None:
        pass

    def renew_lease(self, holder: LeaseHolder, ttl: timedelta) -> None:
        raise LockedError("lease lost")

    def release_lease(self, holder: LeaseHolder) -> None:
        pass


def test_a_keeper_that_loses_its_lease_stops_the_daemon() -> None:
    stop = threading.Event()
    keeper = LeaseKeeper(LosingLease(), holder(1), stop, ttl=timedelta(milliseconds=30))
    with keeper.held():
        stopped = stop.wait(5)
    assert stopped is True


def test_a_warehouse_without_lease_methods_needs_no_lease() -> None:
    keeper = LeaseKeeper(object(), holder(1), threading.Event())
    assert keeper.lease is None
