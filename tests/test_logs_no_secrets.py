"""No configured secret reaches syncd's output: logs at debug level (JSON and console), status,
check, and the messages of failures, captured from real runs against the simulator."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import HOUR, SyncdFiles, write_config

from syncd.simulator import Fault, Simulator, SimulatorConfig
from syncd.timeutil import utcnow

API_TOKEN = "fs-token-7f3a9c2e51d84b06"
HEADER_SECRET = "proxy-secret-0d5e8a1f"
POSTGRES_PASSWORD = "pg-password-93b1c7"


def syncd(*args: str) -> str:
    """stdout and stderr of one syncd command."""
    result = subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout + result.stderr


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(api_key=API_TOKEN, events_per_hour=30)) as s:
        yield s


@pytest.fixture
def files(tmp_path: Path, sim: Simulator) -> SyncdFiles:
    start = utcnow().replace(minute=0, second=0, microsecond=0) - 3 * HOUR
    files = write_config(
        tmp_path,
        sim,
        start,
        {"FsApiToken": API_TOKEN, "LogLevel": "debug", "postgres.Password": POSTGRES_PASSWORD},
    )
    with files.config.open("a") as f:
        f.write(f'\n[[AdditionalHttpHeader]]\nKey = "X-Proxy-Token"\nValue = "{HEADER_SECRET}"\n')
    return files


def leaked(output: str) -> list[str]:
    return [s for s in (API_TOKEN, HEADER_SECRET, POSTGRES_PASSWORD) if s in output]


def test_a_debug_run_logs_no_secret(files: SyncdFiles, sim: Simulator) -> None:
    sim.faults.add(Fault.RATE_LIMIT, count=1, retry_after=0)
    output = syncd("once", "-c", str(files.config), "--log-format", "json")
    assert (leaked(output), '"batch committed"' in output) == ([], True)


def test_console_logs_status_and_check_show_no_secret(files: SyncdFiles) -> None:
    output = syncd("once", "-c", str(files.config), "--log-format", "console")
    output += syncd("status", "-c", str(files.config), "--json")
    output += syncd("check", "-c", str(files.config))
    assert (leaked(output), "committed" in output) == ([], True)


def test_a_rejected_key_is_reported_without_the_key(tmp_path: Path) -> None:
    with Simulator(SimulatorConfig(api_key="another-key", events_per_hour=30)) as other:
        start = utcnow().replace(minute=0, second=0, microsecond=0) - 3 * HOUR
        files = write_config(tmp_path, other, start, {"FsApiToken": API_TOKEN})
        output = syncd("once", "-c", str(files.config), "--log-format", "json")
    assert (leaked(output), "AuthError" in output) == ([], True)
