"""The Snowflake path end to end: the export-API simulator -> syncd -> moto S3 -> the
Snowflake stand-in (fakesnow with Snowflake's load rules), through the real CLI, boto3 and
snowflake-connector-python.

Shown here: the Snowflake table equals the simulator's events row for row; a second run loads
nothing twice; a day rolled back is reloaded (Snowflake's load metadata would skip the same
file names without FORCE); SIGKILL at a step of a batch and a restart leave no duplicates and
no gaps.
"""

# ruff: noqa: F811 - fixtures are imported by name from aws_support
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from aws_support import bucket, moto_s3, shared_moto  # noqa: F401 - fixtures
from e2e_support import (
    API_KEY,
    NOW,
    NOW_ENV,
    SyncdFiles,
    assert_rows_equal,
    expected_segment_rows,
    hour_windows,
    run_cli,
    window_key,
    write_config,
)
from snowflake_support import new_schema, snowflake_overrides, snowflake_rows

from syncd.cli import EXIT_OK
from syncd.simulator import Simulator, SimulatorConfig
from syncd.timeutil import UTC, format_timestamp

START = datetime(2026, 11, 1, 23, tzinfo=UTC)
WINDOWS = hour_windows(START, datetime(2026, 11, 2, 2, tzinfo=UTC))  # two UTC days
RUNNER = Path(__file__).with_name("snowflake_support.py")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=150)) as simulator:
        yield simulator


@pytest.fixture
def schema() -> str:
    return new_schema()


@pytest.fixture
def files(tmp_path: Path, sim: Simulator, schema: str, bucket: str) -> SyncdFiles:
    return write_config(tmp_path, sim, START, snowflake_overrides(schema, bucket))


def sync_ids(schema: str) -> list[str]:
    return sorted(str(r["SyncdBatchId"]) for r in snowflake_rows(schema, "fssync"))


def once(files: SyncdFiles) -> int:
    return run_cli(["once", "-c", str(files.config)])


def test_the_snowflake_table_equals_the_simulators_events(
    files: SyncdFiles, sim: Simulator, schema: str
) -> None:
    assert once(files) == EXIT_OK
    assert_rows_equal(snowflake_rows(schema), expected_segment_rows(sim, WINDOWS))
    assert sync_ids(schema) == sorted(window_key(*w).id for w in WINDOWS)


def test_a_second_run_loads_nothing_twice(files: SyncdFiles, sim: Simulator, schema: str) -> None:
    once(files)
    assert once(files) == EXIT_OK
    assert_rows_equal(snowflake_rows(schema), expected_segment_rows(sim, WINDOWS))


def test_a_rolled_back_day_is_loaded_again_from_the_same_file_names(
    files: SyncdFiles, sim: Simulator, schema: str
) -> None:
    once(files)
    day = ["--day", "2026-11-02"]
    assert run_cli(["rollback", "-c", str(files.config), *day, "--yes"]) == EXIT_OK
    assert len(snowflake_rows(schema)) < len(expected_segment_rows(sim, WINDOWS))
    assert once(files) == EXIT_OK
    assert_rows_equal(snowflake_rows(schema), expected_segment_rows(sim, WINDOWS))


def test_over_the_internal_stage_the_table_equals_the_simulators_events(
    tmp_path: Path, sim: Simulator, schema: str
) -> None:
    files = write_config(tmp_path, sim, START, snowflake_overrides(schema))
    assert once(files) == EXIT_OK
    assert_rows_equal(snowflake_rows(schema), expected_segment_rows(sim, WINDOWS))
    day = ["--day", "2026-11-02"]
    assert run_cli(["rollback", "-c", str(files.config), *day, "--yes"]) == EXIT_OK
    assert once(files) == EXIT_OK
    assert_rows_equal(snowflake_rows(schema), expected_segment_rows(sim, WINDOWS))


#: A few points across a batch: each kills the second batch (the first is committed).
CRASH_POINTS = ("staged", "sf_loaded", "committed")


def crash(files: SyncdFiles, point: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **shared_moto().environment(), NOW_ENV: format_timestamp(NOW)}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), str(REPO / "tests"), env.get("PYTHONPATH")])
    )
    return subprocess.run(
        [sys.executable, str(RUNNER), point, "once", "-c", str(files.config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_kill_at_each_step_then_a_restart_leaves_no_duplicates_and_no_gaps(
    point: str, files: SyncdFiles, sim: Simulator, schema: str
) -> None:
    crashed = crash(files, f"{point}@2")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert once(files) == EXIT_OK
    assert_rows_equal(snowflake_rows(schema), expected_segment_rows(sim, WINDOWS))
    assert sync_ids(schema) == sorted(window_key(*w).id for w in WINDOWS)
