"""GCP stage and warehouse faults: the GCS emulator and the BigQuery emulator SIGKILLed mid-run
and restarted on the same port with their data (as a real bucket and BigQuery keep theirs);
each scenario ends with BigQuery equal to the simulator's events, once each, and one sync row
per batch counting its rows.

Each test has stand-ins of its own (`gcp_support.own_gcp`), so a kill disturbs no other test.
The kill is set off from inside syncd's own steps (right after a call returns, with no request
in flight), so it lands at the same place on every run, and the restart comes from a timer
thread, as in `test_faults_warehouse.py`. Two outcomes are acceptable and both are tested: the
API clients' retries (exponential backoff, product defaults) ride out an outage of a few seconds
within the same `once`; an outage longer than their deadline holds the batch (exit 1) and the
next `once` finishes it. A batch is never skipped.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    API_KEY,
    SyncdFiles,
    assert_rows_equal,
    batch_counts,
    expected_segment_rows,
    hour_windows,
    run_cli,
    sorted_custom_vars,
    window_key,
    write_config,
)
from fault_support import after_first_call, later, once_until_done
from gcp_support import LOCATION, PROJECT, OwnGcp, bq_rows, object_names, own_gcp

import syncd.lease
from syncd.cli import EXIT_OK
from syncd.errors import TransientLoadError, TransientStageError
from syncd.simulator import Simulator, SimulatorConfig
from syncd.timeutil import UTC, utcnow
from warehouses import google_cloud
from warehouses.bigquery import BigQueryWarehouse
from warehouses.gcs import GCSStage

__all__ = ["own_gcp"]  # fixture

START = datetime(2026, 11, 1, 21, tzinfo=UTC)
WINDOWS = hour_windows(START, datetime(2026, 11, 2, 2, tzinfo=UTC))
EVENTS_PER_HOUR = 150
OUTAGE_SECONDS = 3.0
#: The API clients' retry deadline in the tests where the outage outlasts it.
SHORT_RETRY_DEADLINE = 1.0

pytestmark = pytest.mark.timeout(180)  # a hang fails here, not after the clients' 600 s


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=EVENTS_PER_HOUR)) as s:
        yield s


def gcp_files(directory: Path, sim: Simulator, gcp: OwnGcp, **overrides: object) -> SyncdFiles:
    """syncd on `gcp`'s GCS and BigQuery, one batch at a time (so a kill lands between two
    requests), with attempts enough to ride out an outage."""
    keys: dict[str, object] = {
        "Provider": "gcp",
        "FilePrefix": "hauser-uploads/",
        "gcs.Bucket": gcp.bucket,
        "gcs.EndpointURL": gcp.gcs.endpoint,
        "bigquery.Project": PROJECT,
        "bigquery.Dataset": gcp.dataset,
        "bigquery.EndpointURL": gcp.bigquery.endpoint,
        "Lookahead": 0,
        "MaxBatchAttempts": 10,
    }
    keys.update(overrides)
    return write_config(directory, sim, START, keys)


def assert_bigquery_exact(gcp: OwnGcp, sim: Simulator) -> None:
    """Every event once; one sync row per window, in order, counting its batch's rows."""
    rows = bq_rows(gcp.dataset, "fsexport", bigquery=gcp.bigquery)
    sync = bq_rows(gcp.dataset, "fssync", order_by="BatchStart", bigquery=gcp.bigquery)
    synced = {str(r["SyncdBatchId"]): r["RowsLoaded"] for r in sync}
    assert [r["SyncdBatchId"] for r in sync] == [window_key(*w).id for w in WINDOWS]
    assert synced == batch_counts(rows)
    # BigQuery's JSON type keeps the object, not necessarily its key order
    expected = expected_segment_rows(sim, WINDOWS)
    assert_rows_equal(sorted_custom_vars(rows), sorted_custom_vars(expected))


@dataclass
class Outage:
    """When a stand-in was down, and the calls of syncd's adapter that started meanwhile."""

    killed: float = 0.0
    restarted: float = 0.0
    calls: list[tuple[str, float]] = field(default_factory=list)

    def calls_while_down(self) -> list[str]:
        return [n for n, t in self.calls if self.killed <= t < (self.restarted or float("inf"))]


def record_calls(
    monkeypatch: pytest.MonkeyPatch, owner: type, methods: tuple[str, ...], outage: Outage
) -> None:
    """Note the start time of every call of `owner.<methods>` in `outage.calls`."""
    for method in methods:
        original = getattr(owner, method)

        def wrapped(self: Any, *args: Any, _f: Any = original, _n: str = method, **kw: Any) -> Any:
            outage.calls.append((_n, time.monotonic()))
            return _f(self, *args, **kw)

        monkeypatch.setattr(owner, method, wrapped)


def as_a_new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next in-process `once` see this PID's earlier lease holders as a previous
    process, as the next cron run (a new process) would: a `once` that could not release its
    lease (the warehouse down as it exited) left one behind."""
    monkeypatch.setattr(syncd.lease, "PROCESS_STARTED", utcnow())


# -- the stand-ins themselves ---------------------------------------------------------------


def test_a_standin_restarted_from_a_thread_outlives_that_thread(own_gcp: OwnGcp) -> None:
    # The cause of "the GCS emulator did not come back": stand-ins died with SIGTERM as soon as
    # the (timer) thread that restarted them ended, PR_SET_PDEATHSIG being per thread.
    own_gcp.gcs.client().bucket(own_gcp.bucket).blob("kept").upload_from_string(b"data")
    own_gcp.gcs.kill()
    restarter = later(0.0, own_gcp.gcs.restart)
    restarter.join(timeout=30)
    time.sleep(0.5)
    blob = own_gcp.gcs.client().bucket(own_gcp.bucket).blob("kept")
    assert (own_gcp.gcs.server.process.poll(), blob.download_as_bytes()) == (None, b"data")


def test_the_bigquery_standin_keeps_its_tables_and_jobs_across_a_kill(own_gcp: OwnGcp) -> None:
    client = own_gcp.bigquery.client()
    table = f"{own_gcp.dataset}.t"
    client.query(
        f"CREATE TABLE {table} AS SELECT 1 AS n", job_id="kept_job", job_retry=None
    ).result()
    own_gcp.bigquery.restart()  # SIGKILL, then the same ports and data folder
    client = own_gcp.bigquery.client()
    query = client.query(f"SELECT n FROM {table}")  # noqa: S608 (a test's own name)
    rows = [tuple(r.values()) for r in query.result()]
    kept = client.get_job("kept_job", location=LOCATION)  # its region, kept too
    assert (rows, kept.state, kept.location) == ([(1,)], "DONE", LOCATION)


# -- the GCS emulator and the BigQuery emulator killed and restarted ---------------------------


@dataclass(frozen=True)
class KillPoint:
    """Where a stand-in is killed: right after the first call of `owner.method` returns."""

    owner: type
    method: str
    watched: tuple[str, ...]  # calls of `owner` noted while the stand-in is down
    first_calls_while_down: list[str]


KILL_POINTS = {
    # after the first batch's upload: its commit reads the file, then its delete meets the outage
    "gcs": KillPoint(GCSStage, "put", ("put", "delete"), ["delete"]),
    # after the first batch's load job: its sync row and transaction meet the outage
    "bigquery": KillPoint(
        BigQueryWarehouse,
        "_load",
        ("_drop", "_write_row"),
        ["_write_row", "_drop"],
    ),
}


def kill_after_first_call(
    monkeypatch: pytest.MonkeyPatch,
    gcp: OwnGcp,
    standin: str,
    outage: Outage,
    restart_after: float | None,
) -> threading.Event:
    """SIGKILL `standin` at its kill point and restart it `restart_after` seconds later on a
    timer thread (None: the test restarts it); the event is set once it was killed."""
    point, emulator = KILL_POINTS[standin], getattr(gcp, standin)

    def restart() -> None:
        emulator.restart()
        outage.restarted = time.monotonic()

    def fault() -> None:
        emulator.kill()
        outage.killed = time.monotonic()
        if restart_after is not None:
            later(restart_after, restart)

    return after_first_call(monkeypatch, point.owner, point.method, fault)


@pytest.mark.parametrize("standin", list(KILL_POINTS))
def test_a_standin_killed_and_restarted_mid_run_ends_exact_in_the_same_once(
    tmp_path: Path,
    sim: Simulator,
    own_gcp: OwnGcp,
    monkeypatch: pytest.MonkeyPatch,
    standin: str,
) -> None:
    point, outage = KILL_POINTS[standin], Outage()
    files = gcp_files(tmp_path, sim, own_gcp)
    record_calls(monkeypatch, point.owner, point.watched, outage)
    fired = kill_after_first_call(monkeypatch, own_gcp, standin, outage, OUTAGE_SECONDS)
    code = run_cli(["once", "-c", str(files.config)])
    down = outage.calls_while_down()[: len(point.first_calls_while_down)]
    assert (fired.is_set(), code, down) == (True, EXIT_OK, point.first_calls_while_down)
    assert_bigquery_exact(own_gcp, sim)
    assert object_names(own_gcp.bucket, own_gcp.gcs) == []  # each staged file deleted once


@pytest.mark.parametrize("standin", list(KILL_POINTS))
def test_an_outage_longer_than_the_retry_deadline_holds_the_batch_until_the_next_once(
    tmp_path: Path,
    sim: Simulator,
    own_gcp: OwnGcp,
    monkeypatch: pytest.MonkeyPatch,
    standin: str,
) -> None:
    monkeypatch.setattr(google_cloud, "RETRY_DEADLINE", SHORT_RETRY_DEADLINE)
    files = gcp_files(tmp_path, sim, own_gcp, MaxBatchAttempts=2)
    fired = kill_after_first_call(monkeypatch, own_gcp, standin, Outage(), None)
    first = run_cli(["once", "-c", str(files.config)])
    getattr(own_gcp, standin).restart()
    as_a_new_process(monkeypatch)
    codes = once_until_done(files)
    assert (fired.is_set(), first, codes) == (True, 1, [EXIT_OK])
    assert_bigquery_exact(own_gcp, sim)


# -- an endpoint that accepts connections and never answers -----------------------------------


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An HTTP endpoint on loopback that accepts connections and never answers, as one behind
    a network path that drops packets: only a request timeout gets a client out."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:  # closed
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for connection in accepted:
        connection.close()


def outcome_within(seconds: float, call: Callable[[], object]) -> object:
    """What `call` raised or returned, or "still blocked" if it has not ended by `seconds`."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return outcome[0] if outcome else f"still blocked after {seconds:.0f}s"


def bigquery_check(endpoint: str) -> Callable[[], None]:
    return BigQueryWarehouse(
        PROJECT,
        "ds",
        endpoint_url=endpoint,
        retry=google_cloud.default_retry(SHORT_RETRY_DEADLINE),
        request_timeout=0.5,
    ).check


def gcs_check(endpoint: str) -> Callable[[], None]:
    return GCSStage(
        "bucket",
        endpoint_url=endpoint,
        retry=google_cloud.default_retry(SHORT_RETRY_DEADLINE),
        timeout=0.5,
    ).check


# Regression (BigQuery): its client sends requests without a timeout by default, and a retry
# deadline is only checked between attempts, so `check` (and every commit) blocked forever.
@pytest.mark.parametrize(
    ("check", "error"),
    [(bigquery_check, TransientLoadError), (gcs_check, TransientStageError)],
    ids=["bigquery", "gcs"],
)
def test_requests_to_an_endpoint_that_never_answers_time_out_as_transient(
    black_hole: str, check: Callable[[str], Callable[[], None]], error: type[Exception]
) -> None:
    outcome = outcome_within(20, check(black_hole))
    assert isinstance(outcome, error), outcome
