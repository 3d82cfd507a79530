"""API fault campaign: the export API misbehaves in every documented way, and each scenario
still ends with the DuckDB table equal to the simulator's events, once each.

`once` runs in process with the clock frozen at `NOW` (five 1-hour windows ready). Request
times are taken on the server side, so a Retry-After check measures what syncd really waited.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from e2e_support import (
    API_KEY,
    SyncdFiles,
    assert_rows_equal,
    batch_counts,
    expected_segment_rows,
    export_rows,
    hour_windows,
    run_cli,
    sync_rows,
    write_config,
)
from fault_support import once_until_done

from syncd.cli import EXIT_OK
from syncd.simulator import Endpoint, Fault, FiredFault, Simulator, SimulatorConfig
from syncd.simulator.faults import ERROR_FAULTS
from syncd.timeutil import UTC

START = datetime(2026, 11, 1, 21, tzinfo=UTC)
WINDOWS = hour_windows(START, datetime(2026, 11, 2, 2, tzinfo=UTC))
EVENTS_PER_HOUR = 150


@dataclass(frozen=True)
class Request:
    """One API request as the server saw it: when, where, and the fault it got (if any)."""

    at: float
    endpoint: Endpoint
    fault: Fault | None


class TimedSimulator(Simulator):
    """A simulator that notes the monotonic time of every request it guards."""

    def __init__(self, config: SimulatorConfig, port: int = 0) -> None:
        super().__init__(config, port=port)
        self.requests: list[Request] = []
        self._requests_lock = threading.Lock()

    def take_fault(self, endpoint: Endpoint, kinds: frozenset[Fault]) -> FiredFault | None:
        fired = super().take_fault(endpoint, kinds)
        if kinds == ERROR_FAULTS:  # asked exactly once per request, before any answer
            with self._requests_lock:
                self.requests.append(
                    Request(time.monotonic(), endpoint, None if fired is None else fired.kind)
                )
        return fired


def sim_config() -> SimulatorConfig:
    return SimulatorConfig(api_key=API_KEY, events_per_hour=EVENTS_PER_HOUR)


@pytest.fixture
def sim() -> Iterator[TimedSimulator]:
    timed = TimedSimulator(sim_config())
    timed.start()
    yield timed
    timed.stop()


@pytest.fixture
def files(tmp_path: Path, sim: Simulator) -> SyncdFiles:
    return write_config(tmp_path, sim, START, {"Backoff": "20ms"})


def once(files: SyncdFiles) -> int:
    return run_cli(["once", "-c", str(files.config)])


def assert_exact(sim: Simulator, files: SyncdFiles) -> None:
    """Every served event is in the table once, and each sync row counts its batch's rows."""
    rows = export_rows(files.duckdb)
    assert_rows_equal(rows, expected_segment_rows(sim, WINDOWS))
    counted = {str(r["SyncdBatchId"]): r["RowsLoaded"] for r in sync_rows(files.duckdb)}
    assert counted == batch_counts(rows)


def gaps_after_429(requests: list[Request]) -> list[float]:
    """Seconds from each 429 to the next request on the same endpoint."""
    gaps = []
    for i, request in enumerate(requests):
        if request.fault is Fault.RATE_LIMIT:
            later = [r.at for r in requests[i + 1 :] if r.endpoint is request.endpoint]
            gaps.append(later[0] - request.at)
    return gaps


# -- 429 storm -------------------------------------------------------------------------------


def test_a_429_storm_waits_at_least_retry_after_before_each_next_request(
    tmp_path: Path, sim: TimedSimulator
) -> None:
    # One batch at a time, so the next request on an endpoint is the retry of the 429'd one.
    files = write_config(tmp_path, sim, START, {"Backoff": "20ms", "Lookahead": 0})
    sim.faults.add(Fault.RATE_LIMIT, count=3, retry_after=1)
    code = once(files)
    gaps = gaps_after_429(sim.requests)
    assert (code, len(gaps), [g for g in gaps if g < 1.0]) == (EXIT_OK, 3, [])
    assert_exact(sim, files)


# -- bursts of every transient kind ----------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "count", "endpoint"),
    [
        (Fault.SERVER_ERROR, 6, None),
        (Fault.SERVER_ERROR, 5, Endpoint.DOWNLOAD),
        (Fault.DROP_CONNECTION, 5, None),
        (Fault.TRUNCATED_GZIP, 5, None),
        (Fault.EXPIRED_URL, 5, None),
    ],
    ids=["5xx-api", "5xx-download", "dropped-connection", "truncated-gzip", "expired-url"],
)
def test_a_burst_of_faults_ends_with_the_table_exact(
    sim: TimedSimulator, files: SyncdFiles, fault: Fault, count: int, endpoint: Endpoint | None
) -> None:
    sim.faults.add(fault, count=count, endpoint=endpoint)
    code = once(files)
    assert (code, sim.stats.faults_fired[fault]) == (EXIT_OK, count)
    assert_exact(sim, files)


def test_every_transient_kind_mixed_over_every_window_ends_exact(
    sim: TimedSimulator, files: SyncdFiles
) -> None:
    for _ in WINDOWS:
        sim.faults.add(Fault.SERVER_ERROR, count=1, endpoint=Endpoint.CREATE)
        sim.faults.add(Fault.SERVER_ERROR, count=1, endpoint=Endpoint.OPERATION)
        sim.faults.add(Fault.SERVER_ERROR, count=1, endpoint=Endpoint.RESULTS)
        sim.faults.add(Fault.EXPIRED_URL, count=1)
        sim.faults.add(Fault.DROP_CONNECTION, count=1)
        sim.faults.add(Fault.TRUNCATED_GZIP, count=1)
    assert (once(files), sim.faults.pending()) == (EXIT_OK, 0)
    assert_exact(sim, files)


# -- FAILED operations -----------------------------------------------------------------------


def test_failed_operations_are_retried_with_a_new_export_and_end_exact(
    sim: TimedSimulator, files: SyncdFiles
) -> None:
    sim.faults.add(Fault.FAILED_OPERATION, count=2)
    codes = once_until_done(files, tries=4)
    assert (codes[-1], sim.stats.faults_fired[Fault.FAILED_OPERATION]) == (EXIT_OK, 2)
    assert_exact(sim, files)


# -- the API down for a while ----------------------------------------------------------------


def test_the_api_down_and_back_on_the_same_port_ends_exact(
    sim: TimedSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The API goes away mid-run (every connection refused) and comes back on the same port
    with its exports intact: one `once` waits it out and ends exact."""
    # one batch at a time, so that windows are left to export when the outage starts
    overrides = {"Backoff": "100ms", "BackoffStepsMax": 10, "Lookahead": 0}
    files = write_config(tmp_path, sim, START, overrides)
    outage_over = threading.Event()

    def take_the_api_down() -> None:
        while not [r for r in sim.requests if r.endpoint is Endpoint.DOWNLOAD]:
            time.sleep(0.01)
        sim.stop()
        time.sleep(1.5)
        sim.start()
        outage_over.set()

    outage = threading.Thread(target=take_the_api_down, daemon=True)
    outage.start()
    code = once(files)
    outage.join(timeout=10)
    refused = '"reason": "connect"' in capsys.readouterr().err  # syncd met the outage
    assert (code, outage_over.is_set(), refused) == (EXIT_OK, True, True)
    assert_exact(sim, files)
