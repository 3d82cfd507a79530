"""Health: readiness turns 503 while a batch is held and 200 again once it commits; liveness
rules, with an injected clock."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import API_KEY, SyncdFiles, window_key, write_config
from test_metrics import START, WINDOWS, Daemon

from syncd.batch import BatchKey
from syncd.errors import ConfigError, TransientSourceError
from syncd.observability.health import Check, Health, OpsServer
from syncd.simulator import Fault, Simulator, SimulatorConfig
from syncd.timeutil import UTC


def poll_until(url: str, status: int, timeout: float = 30.0, text: str = "") -> int:
    """Poll `url` until it answers `status` (with `text` in its body); the last status."""
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.get(url, timeout=5)
        if (answer.status_code == status and text in answer.text) or time.monotonic() > deadline:
            return answer.status_code
        time.sleep(0.02)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=60)) as s:
        yield s


@pytest.fixture
def files(tmp_path: Path, sim: Simulator) -> SyncdFiles:
    return write_config(tmp_path, sim, START)


def test_readiness_is_503_while_a_batch_is_held_and_200_after(
    files: SyncdFiles, sim: Simulator
) -> None:
    sim.faults.add(Fault.FAILED_OPERATION, count=1000)
    daemon = Daemon(files).start()
    url = f"http://127.0.0.1:{daemon.port}/readyz"
    try:
        # a starting daemon is not ready either: wait for the batch to be held (a FAILED
        # export is retried with a new one, MaxBatchAttempts times, before it is held)
        while_held = poll_until(url, 503, text=" is held: ")
        held_text = httpx.get(url, timeout=5).text
        sim.faults.clear()
        after = poll_until(url, 200)
        daemon.idle.wait(30)
    finally:
        daemon.close()
    assert (while_held, window_key(*WINDOWS[0]).id in held_text, after) == (503, True, 200), (
        held_text
    )


def test_liveness_stays_200_while_a_batch_is_held(files: SyncdFiles, sim: Simulator) -> None:
    sim.faults.add(Fault.FAILED_OPERATION, count=1000)
    daemon = Daemon(files).start()
    try:
        poll_until(f"http://127.0.0.1:{daemon.port}/readyz", 503, text=" is held: ")
        live = httpx.get(f"http://127.0.0.1:{daemon.port}/livez", timeout=5).status_code
    finally:
        daemon.close()
    assert live == 200


# -- the rules, with a clock -------------------------------------------------------------------

KEY = BatchKey(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 1, 1, tzinfo=UTC))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def health(clock: Clock) -> Health:
    h = Health(failing_threshold=60, stall_timeout=600, clock=clock)
    h.mark_started()
    return h


def test_not_ready_before_the_tables_are_ensured(clock: Clock) -> None:
    assert Health(clock=clock).readiness().ok is False


def test_ready_while_failures_are_younger_than_the_threshold(health: Health, clock: Clock) -> None:
    health.on_failure(KEY, TransientSourceError("HTTP 503"), 1, held=False)
    clock.now += 59
    assert health.readiness().ok is True


def test_unready_once_failures_last_longer_than_the_threshold(health: Health, clock: Clock) -> None:
    health.on_failure(KEY, TransientSourceError("HTTP 503"), 1, held=False)
    clock.now += 61
    health.on_failure(KEY, TransientSourceError("HTTP 503"), 2, held=False)
    assert health.readiness() == Check(
        False, "attempts have failed for 61s: TransientSourceError: HTTP 503"
    )


def test_idle_after_failures_is_ready_again(health: Health, clock: Clock) -> None:
    health.on_failure(KEY, TransientSourceError("x"), 1, held=True)
    health.on_idle(None, datetime(2026, 11, 2, tzinfo=UTC))
    assert health.readiness().ok is True


def test_liveness_fails_when_the_loop_is_silent_too_long(health: Health, clock: Clock) -> None:
    clock.now += 601
    assert health.liveness().ok is False


def test_liveness_fails_once_the_loop_has_stopped(health: Health) -> None:
    health.mark_stopped()
    assert health.liveness().ok is False


@pytest.mark.parametrize(
    ("path", "status"), [("/livez", 200), ("/healthz", 200), ("/readyz", 200), ("/nope", 404)]
)
def test_the_server_routes(health: Health, path: str, status: int) -> None:
    with OpsServer("127.0.0.1", 0, health, None) as server:
        got: Any = httpx.get(f"http://127.0.0.1:{server.port}{path}", timeout=5).status_code
    assert got == status


def test_a_busy_address_is_a_config_error_naming_the_key(health: Health) -> None:
    with OpsServer("127.0.0.1", 0, health, None) as server:
        with pytest.raises(ConfigError) as caught:
            OpsServer("127.0.0.1", server.port, health, None)
    assert str(caught.value).startswith("[metrics] Address: cannot listen on 127.0.0.1:")


def test_a_held_settle_leaves_the_daemon_ready_and_alive(health: Health, clock: Clock) -> None:
    settle = dataclasses.replace(KEY, settle=True)
    health.on_failure(settle, TransientSourceError("HTTP 503"), 5, held=True)
    clock.now += 3600
    health.on_failure(settle, TransientSourceError("HTTP 503"), 6, held=True)
    assert health.readiness().ok is True
    assert health.liveness().ok is True
