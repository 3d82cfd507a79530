"""After `make demo` the user can go on: `syncd demo --serve` keeps the simulator and the daemon
running, and the summary's by-hand commands (`syncd simulate ...`, `syncd run -c demo.toml`)
work as printed. Real subprocesses, stopped by PID."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import duckdb
import httpx
import pytest

from standins.postgres import free_port
from syncd.demo import DEFAULT_DIR, DEFAULT_EVENTS_PER_HOUR

ROOT = Path(__file__).resolve().parent.parent
SYNCD = [sys.executable, "-m", "syncd"]
EVENTS_PER_HOUR = 60

pytestmark = pytest.mark.slow


def env_with(metrics_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SYNCD_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
    }


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def answers(url: str, status: int = 200) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == status
    except httpx.TransportError:
        return False


def status(config: Path, env: dict[str, str], *, check: bool = True) -> dict[str, Any] | None:
    """`syncd status --json`; None when it fails and not `check` (e.g. a daemon starting)."""
    result = subprocess.run(
        [*SYNCD, "status", "-c", str(config), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0 and not check:
        return None
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def row_count(db: Path, day: str | None = None) -> int:
    """Rows of the export table (of one UTC day)."""
    query = (
        'SELECT count(*) FROM "fsexport" '
        "WHERE CAST(? AS DATE) IS NULL OR CAST(EventStart AS DATE) = CAST(? AS DATE)"
    )
    with duckdb.connect(str(db), read_only=True) as conn:
        row = conn.execute(query, [day, day]).fetchone()
    assert row is not None
    return int(row[0])


@contextmanager
def started(argv: list[str], env: dict[str, str], out: IO[str]) -> Iterator[subprocess.Popen[str]]:
    """A child process; SIGTERM by its PID afterwards (SIGKILL if it will not stop)."""
    child = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def test_demo_serve_keeps_the_simulator_and_the_daemon_running(tmp_path: Path) -> None:
    metrics_port = free_port()
    env = env_with(metrics_port)
    directory = tmp_path / "demo"
    log_path = tmp_path / "demo.log"
    argv = [*SYNCD, "demo", "--serve", "--days", "1", "--events-per-hour", str(EVENTS_PER_HOUR)]
    with log_path.open("w") as log, started([*argv, "--dir", str(directory)], env, log) as demo:
        ready = f"http://127.0.0.1:{metrics_port}/readyz"
        wait_for(lambda: answers(ready) or demo.poll() is not None, timeout=180)
        assert demo.poll() is None, log_path.read_text()[-3000:]
        output = log_path.read_text()
        assert "syncd demo finished" in output
        loaded = int(output.split("rows loaded")[1].split()[0].replace(",", ""))
        assert loaded > 0
        # The simulator the config names still answers, with the demo's key.
        config = directory / "demo.toml"
        api_url = next(
            line.split('"')[1]
            for line in config.read_text().splitlines()
            if line.startswith("ApiURL")
        )
        listed = httpx.get(
            f"{api_url}/operations/v1/nonexistent",
            headers={"Authorization": "Basic demo-key"},
            timeout=5,
        )
        assert listed.status_code == 404, listed.text
        # `status` works while the daemon holds the DuckDB file, and shows what the demo loaded.
        wait_for(lambda: caught_up(config, env, demo, ""))
        seen = status(config, env)
        assert seen is not None and seen["daemon"]["pid"] == demo.pid
        assert seen["batches_committed"] > 0 and seen["sync_point"] != "-"
        assert answers(f"http://127.0.0.1:{metrics_port}/metrics")
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    assert row_count(directory / "syncd.duckdb") >= loaded  # and any hour ready since


def test_the_summarys_by_hand_commands_run(tmp_path: Path) -> None:
    """Run the demo, roll its first day back, then run the two printed commands: the daemon
    reloads the day from the hand-started simulator, to the same rows."""
    metrics_port = free_port()
    env = env_with(metrics_port)
    directory = tmp_path / "demo"
    demo = subprocess.run(
        [*SYNCD, "demo", "--days", "1", "--events-per-hour", str(EVENTS_PER_HOUR)]
        + ["--dir", str(directory)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stderr
    config = directory / "demo.toml"
    db = directory / "syncd.duckdb"
    before = status(config, env)
    assert before is not None
    commands = [
        shlex.split(line.strip())
        for line in demo.stdout.splitlines()
        if line.strip().startswith(".venv/bin/syncd ")
    ]
    by_name = {argv[1]: argv[2:] for argv in commands}
    assert by_name["demo"] == [
        "--serve",
        "--dir",
        str(directory),
        "--events-per-hour",
        str(EVENTS_PER_HOUR),
    ]
    assert by_name["run"] == ["-c", str(config)]
    start_line = next(
        line for line in config.read_text().splitlines() if line.startswith("StartTime")
    )
    first_day = start_line.split('"')[1][:10]
    day_rows = row_count(db, first_day)
    assert day_rows > 0
    rollback = subprocess.run(
        [*SYNCD, "rollback", "-c", str(config), "--day", first_day, "--yes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rollback.returncode == 0, rollback.stderr
    assert row_count(db, first_day) == 0
    after_rollback = status(config, env)
    assert after_rollback is not None
    assert after_rollback["batches_committed"] < before["batches_committed"]
    with (
        (tmp_path / "sim.log").open("w") as sim_log,
        started([*SYNCD, "simulate", *by_name["simulate"]], env, sim_log),
    ):
        port = by_name["simulate"][by_name["simulate"].index("--port") + 1]
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/operations/v1/x", 401))
        with (
            (tmp_path / "run.log").open("w") as run_log,
            started([*SYNCD, "run", *by_name["run"]], env, run_log) as daemon,
        ):
            wait_for(lambda: caught_up(config, env, daemon, before["sync_point"]), timeout=180)
            assert daemon.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=60) == 0
    # The day came back from the hand-started simulator, the same events (same seed).
    assert row_count(db, first_day) == day_rows


def caught_up(
    config: Path, env: dict[str, str], daemon: subprocess.Popen[str], sync_point: str
) -> bool:
    """The daemon `daemon` says it is idle at `sync_point` or later (or it has exited)."""
    if daemon.poll() is not None:
        return True
    seen = status(config, env, check=False)
    if seen is None:
        return False
    state = seen.get("daemon", {})
    return bool(
        state.get("pid") == daemon.pid
        and state.get("state") == "idle"
        and seen["sync_point"] >= sync_point  # an hour may have become ready meanwhile
    )


def test_the_demos_defaults_are_the_clis() -> None:
    from syncd.cli import build_parser

    args = build_parser().parse_args(["demo"])
    assert (args.dir, args.events_per_hour) == (DEFAULT_DIR, DEFAULT_EVENTS_PER_HOUR)
