"""Metrics: scraped over HTTP during an end-to-end run over the simulator, checked against the
rows the SyncTable says were loaded; and `syncd run` serving them when an address is set."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import (
    API_KEY,
    HOUR,
    NOW,
    SyncdFiles,
    hour_windows,
    run_cli,
    sync_rows,
    write_config,
)
from prometheus_client.parser import text_string_to_metric_families

from syncd.app import App, build_app
from syncd.config import load_settings
from syncd.observability.health import Health, OpsServer
from syncd.observability.metrics import SyncMetrics
from syncd.planner import contiguous_end
from syncd.simulator import Fault, Simulator, SimulatorConfig
from syncd.timeutil import UTC, utcnow

START = datetime(2026, 11, 1, 21, tzinfo=UTC)
WINDOWS = hour_windows(START, datetime(2026, 11, 2, 2, tzinfo=UTC))


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, labels)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


class Daemon:
    """syncd's pipeline running in a thread with a frozen clock, metrics and health served."""

    def __init__(self, files: SyncdFiles, now: datetime = NOW) -> None:
        settings = load_settings(files.config).settings
        self.stop = threading.Event()
        self.metrics = SyncMetrics(export_delay=settings.export_delay, clock=lambda: now)
        self.health = Health()
        self.app: App = build_app(
            settings, stop=self.stop, hooks=[self.metrics, self.health], clock=lambda: now
        )
        self.metrics.follow(lambda: contiguous_end(self.app.pipeline.records))
        self.server = OpsServer("127.0.0.1", 0, self.health, self.metrics).start()
        self.port = self.server.port
        self.idle = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.app.pipeline.start()
        self.health.mark_started()
        self.app.pipeline.run(until_caught_up=False)

    def start(self) -> Daemon:
        original = self.app.pipeline._idle

        def idle(ready_at: datetime) -> None:
            original(ready_at)
            self.idle.set()

        self.app.pipeline._idle = idle  # type: ignore[method-assign]
        self._thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=30)
        self.server.stop()
        self.app.close()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=150, bad_row_rate=0.03)) as s:
        yield s


@pytest.fixture
def files(tmp_path: Path, sim: Simulator) -> SyncdFiles:
    return write_config(tmp_path, sim, START)


@pytest.fixture(scope="module")
def caught_up(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], SyncdFiles]]:
    """Metrics scraped once the daemon is caught up (one rate limit served on the way); one
    run shared by the tests that read it."""
    config = SimulatorConfig(api_key=API_KEY, events_per_hour=150, bad_row_rate=0.03)
    with Simulator(config) as sim:
        files = write_config(tmp_path_factory.mktemp("caught-up"), sim, START)
        sim.faults.add(Fault.RATE_LIMIT, count=1, retry_after=0)
        daemon = Daemon(files).start()
        try:
            assert daemon.idle.wait(30)
            samples = scrape(daemon.port)
        finally:
            daemon.close()
        yield samples, files


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return samples[(name, ())]


def test_rows_loaded_equals_the_sync_tables_rows(caught_up: Any) -> None:
    samples, files = caught_up
    rows = sync_rows(files.duckdb)
    assert value(samples, "syncd_rows_loaded_total") == sum(r["RowsLoaded"] for r in rows)


def test_rows_rejected_equals_the_sync_tables_rejects(caught_up: Any) -> None:
    samples, files = caught_up
    rows = sync_rows(files.duckdb)
    rejected = sum(r["RowsRejected"] for r in rows)
    assert (rejected > 0, value(samples, "syncd_rows_rejected_total")) == (True, rejected)


def test_batches_committed_counts_every_window(caught_up: Any) -> None:
    samples, _ = caught_up
    assert value(samples, "syncd_batches_committed_total") == len(WINDOWS)


def test_bytes_downloaded_equal_the_sync_tables_bytes(caught_up: Any) -> None:
    samples, files = caught_up
    assert value(samples, "syncd_bytes_downloaded_total") == sum(
        r["Bytes"] for r in sync_rows(files.duckdb)
    )


def test_bytes_staged_are_counted(caught_up: Any) -> None:
    samples, _ = caught_up
    assert value(samples, "syncd_bytes_staged_total") > 0


def test_sync_point_and_lag_follow_the_frozen_clock(caught_up: Any) -> None:
    samples, _ = caught_up
    end = WINDOWS[-1][1]
    lag = (NOW - HOUR - end).total_seconds()  # ExportDelay is 1h
    got = (
        value(samples, "syncd_sync_point_timestamp_seconds"),
        value(samples, "syncd_lag_seconds"),
    )
    assert got == (end.timestamp(), lag)


def test_last_success_time_is_set(caught_up: Any) -> None:
    samples, _ = caught_up
    assert value(samples, "syncd_last_success_timestamp_seconds") == NOW.timestamp()


def test_last_success_time_survives_a_restart(files: SyncdFiles) -> None:
    first = Daemon(files).start()
    try:
        assert first.idle.wait(30)
    finally:
        first.close()
    later = NOW + timedelta(minutes=5)  # no window is ready in between: nothing new commits
    second = Daemon(files, now=later).start()
    try:
        assert second.idle.wait(30)
        samples = scrape(second.port)
    finally:
        second.close()
    assert (
        value(samples, "syncd_last_success_timestamp_seconds"),
        value(samples, "syncd_batches_committed_total"),
    ) == (NOW.timestamp(), 0)


def test_api_requests_are_counted_by_status(caught_up: Any) -> None:
    samples, _ = caught_up
    statuses = {dict(k[1])["status"] for k in samples if k[0] == "syncd_api_requests_total"}
    assert {"200", "429"} <= statuses


def test_retries_are_counted_by_reason(caught_up: Any) -> None:
    samples, _ = caught_up
    assert samples[("syncd_api_retries_total", (("reason", "429"),))] == 1


def test_each_step_is_timed_once_per_batch(caught_up: Any) -> None:
    samples, _ = caught_up
    counts = {
        dict(labels)["step"]: v
        for (name, labels), v in samples.items()
        if name == "syncd_step_seconds_count"
    }
    n = len(WINDOWS)
    assert counts == {"fetch": n, "transform": n, "stage": n, "commit": n}


def test_no_batch_is_held_when_caught_up(caught_up: Any) -> None:
    samples, _ = caught_up
    assert (value(samples, "syncd_batch_held"), value(samples, "syncd_batches_held_total")) == (
        0,
        0,
    )


def test_held_batch_metrics(files: SyncdFiles, sim: Simulator) -> None:
    sim.faults.add(Fault.FAILED_OPERATION, count=1000)
    daemon = Daemon(files).start()
    try:
        wait_for(lambda: daemon.app.pipeline.held is not None)
        samples = scrape(daemon.port)
    finally:
        daemon.close()
    assert (value(samples, "syncd_batch_held"), value(samples, "syncd_batches_held_total")) == (
        1,
        1,
    )


def test_sync_point_is_nan_before_the_first_batch() -> None:
    metrics = SyncMetrics(export_delay=timedelta(hours=1))
    text = metrics.render().decode()
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert math.isnan(samples["syncd_lag_seconds"])


def test_two_instances_share_no_counters() -> None:
    first, second = SyncMetrics(), SyncMetrics()
    first.on_retry("429", 1, 1.0)
    assert b'syncd_api_retries_total{reason="429"}' not in second.render()


# -- `syncd run` serves them -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_run_serves_metrics_and_probes_on_the_configured_address(
    tmp_path: Path, sim: Simulator
) -> None:
    port = free_port()
    start = utcnow().replace(minute=0, second=0, microsecond=0) - 4 * HOUR
    files = write_config(tmp_path, sim, start, {"metrics.Address": f"127.0.0.1:{port}"})
    status = files.state_dir / "status.json"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "syncd", "run", "-c", str(files.config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def committed() -> list[str]:
        return [r["batch_id"] for r in json.loads(status.read_text())["recent"]]

    try:
        wait_for(lambda: status.exists() and json.loads(status.read_text())["state"] == "idle")
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        live = httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5)
        while True:  # an hour boundary may pass and commit one more batch meanwhile
            before = committed()
            samples = scrape(port)
            if committed() == before:
                break
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=30)
    finally:
        if daemon.poll() is None:
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.wait()
    assert (ready.status_code, live.status_code, len(before) >= 2) == (200, 200, True)
    assert value(samples, "syncd_batches_committed_total") == len(before)


def test_once_serves_no_port_and_runs_next_to_a_daemon_holding_it(
    tmp_path: Path, sim: Simulator
) -> None:
    with socket.socket() as holder:  # what a daemon on the same host does with the address
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = int(holder.getsockname()[1])
        files = write_config(tmp_path, sim, START, {"metrics.Address": f"127.0.0.1:{port}"})
        code = run_cli(["once", "-c", str(files.config)])
    assert (code, len(sync_rows(files.duckdb))) == (0, len(WINDOWS))
