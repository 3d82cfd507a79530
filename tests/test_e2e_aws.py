"""The AWS path end to end: the export-API simulator -> syncd -> moto S3 -> Redshift proxy
(PostgreSQL behind it), through the real CLI, boto3 and redshift_connector.

Shown here: the Redshift table equals the simulator's events row for row; SIGKILL at a step
of a batch and a restart leave no duplicates and no gaps; an injected COPY failure is retried
cleanly, and a persistent one holds the batch with Redshift's error in the status; a hauser
table and SyncTable are continued; S3-only mode leaves the files and hauser's checkpoint in
the bucket and resumes from it.
"""

# ruff: noqa: F811 - fixtures are imported by name from aws_support
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from aws_support import (  # noqa: F401 - fixtures
    AwsEnv,
    aws,
    aws_overrides,
    bucket,
    moto_s3,
    postgres,
    redshift_proxy,
    schema,
    warehouse_rows,
)
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

from standins.redshift_proxy import RedshiftProxy
from syncd.cli import EXIT_FAILED, EXIT_OK
from syncd.simulator import Simulator, SimulatorConfig
from syncd.timeutil import UTC, format_timestamp

START = datetime(2026, 11, 1, 23, tzinfo=UTC)
WINDOWS = hour_windows(START, datetime(2026, 11, 2, 2, tzinfo=UTC))  # two UTC days
RUNNER = Path(__file__).with_name("aws_support.py")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=150)) as simulator:
        yield simulator


@pytest.fixture
def files(tmp_path: Path, sim: Simulator, aws: AwsEnv, redshift_proxy: RedshiftProxy) -> SyncdFiles:
    return write_config(tmp_path, sim, START, aws_overrides(aws, bucket_path="fullstory/exports"))


def sync_ids(aws: AwsEnv) -> list[str]:
    rows = warehouse_rows(aws, "fssync")
    return sorted(str(r["SyncdBatchId"]) for r in rows)


def test_the_redshift_table_equals_the_simulators_events(
    files: SyncdFiles, sim: Simulator, aws: AwsEnv
) -> None:
    assert run_cli(["once", "-c", str(files.config)]) == EXIT_OK
    assert_rows_equal(warehouse_rows(aws), expected_segment_rows(sim, WINDOWS))


def test_each_window_has_one_sync_row(files: SyncdFiles, aws: AwsEnv) -> None:
    run_cli(["once", "-c", str(files.config)])
    assert sync_ids(aws) == [window_key(*w).id for w in WINDOWS]


def test_staged_objects_are_removed_after_their_commit(files: SyncdFiles, aws: AwsEnv) -> None:
    run_cli(["once", "-c", str(files.config)])
    assert aws.keys() == []


def test_staged_objects_can_be_kept_under_the_bucket_path(
    tmp_path: Path, sim: Simulator, aws: AwsEnv
) -> None:
    overrides = {**aws_overrides(aws, bucket_path="fullstory"), "KeepStagedFiles": True}
    files = write_config(tmp_path, sim, START, overrides)
    run_cli(["once", "-c", str(files.config)])
    assert aws.keys() == sorted(f"fullstory/{window_key(*w).id}.csv.gz" for w in WINDOWS)


def test_a_second_run_loads_nothing_twice(files: SyncdFiles, aws: AwsEnv, sim: Simulator) -> None:
    run_cli(["once", "-c", str(files.config)])
    run_cli(["once", "-c", str(files.config)])
    assert_rows_equal(warehouse_rows(aws), expected_segment_rows(sim, WINDOWS))


def test_a_failed_copy_is_retried_cleanly(
    files: SyncdFiles,
    aws: AwsEnv,
    sim: Simulator,
    redshift_proxy: RedshiftProxy,
) -> None:
    redshift_proxy.fail_copies(
        1, "S3ServiceException:Please reduce your request rate.,Status 503,Error SlowDown", s3=True
    )
    assert run_cli(["once", "-c", str(files.config)]) == EXIT_OK
    assert_rows_equal(warehouse_rows(aws), expected_segment_rows(sim, WINDOWS))


def test_a_persistent_load_failure_holds_the_batch_with_redshifts_error(
    files: SyncdFiles,
    aws: AwsEnv,
    redshift_proxy: RedshiftProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    redshift_proxy.fail_copies(100, "Invalid digit, Value 'x', Pos 0, Type: Long")
    code = run_cli(["once", "-c", str(files.config)])
    redshift_proxy.clear_faults()
    capsys.readouterr()
    run_cli(["status", "-c", str(files.config), "--json"])
    held = json.loads(capsys.readouterr().out)["held"]
    assert (code, held["batch"], "Invalid digit" in held["error"]) == (
        EXIT_FAILED,
        window_key(*WINDOWS[0]).id,
        True,
    )


def test_a_held_batch_is_not_skipped_and_loads_once_the_fault_clears(
    files: SyncdFiles,
    aws: AwsEnv,
    sim: Simulator,
    redshift_proxy: RedshiftProxy,
) -> None:
    redshift_proxy.fail_copies(100, "Invalid digit, Value 'x', Pos 0, Type: Long")
    run_cli(["once", "-c", str(files.config)])
    redshift_proxy.clear_faults()
    assert run_cli(["once", "-c", str(files.config)]) == EXIT_OK
    assert_rows_equal(warehouse_rows(aws), expected_segment_rows(sim, WINDOWS))


# -- crashes ------------------------------------------------------------------------------------

#: A few points across a batch: each kills the second batch (the first is committed).
CRASH_POINTS = ("staged", "rs_loaded", "committed")


def crash(files: SyncdFiles, point: str, aws: AwsEnv) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **aws.moto.environment(), NOW_ENV: format_timestamp(NOW)}
    # `standins` is a top-level folder of the checkout, not (yet) an installed package
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, str(RUNNER), point, "once", "-c", str(files.config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_kill_at_each_step_then_a_restart_leaves_no_duplicates_and_no_gaps(
    point: str,
    files: SyncdFiles,
    aws: AwsEnv,
    sim: Simulator,
) -> None:
    crashed = crash(files, f"{point}@2", aws)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert run_cli(["once", "-c", str(files.config)]) == EXIT_OK
    assert_rows_equal(warehouse_rows(aws), expected_segment_rows(sim, WINDOWS))
    assert sync_ids(aws) == [window_key(*w).id for w in WINDOWS]


# -- upgrade from hauser ------------------------------------------------------------------------


def create_hauser_tables(aws: AwsEnv, sim: Simulator) -> list[dict[str, object]]:
    """hauser's Redshift tables after it loaded the first window: lower-cased names, no
    SyncdBatchId, a SyncTable row with ID -1. Returns the rows it loaded."""
    s = f'"{aws.schema}"'
    aws.sql(f"CREATE SCHEMA {s}")
    aws.sql(
        f"CREATE TABLE {s}.fsexport (indvid BIGINT, sessionid BIGINT, eventstart TIMESTAMP, "
        "eventtype VARCHAR(65535), pageagent VARCHAR(65535), customvars VARCHAR(65535))"
    )
    aws.sql(f"CREATE TABLE {s}.fssync (id BIGINT, processed TIMESTAMP, bundleendtime TIMESTAMP)")
    first_start, first_end = WINDOWS[0]
    loaded = []
    for event in sim.expected_events(first_start, first_end):
        row = {
            "indvid": event.get("IndvId"),
            "sessionid": event.get("SessionId"),
            "eventstart": str(event.get("EventStart")),
            "eventtype": event.get("EventType"),
        }
        loaded.append(row)
        aws.sql(
            f"INSERT INTO {s}.fsexport (indvid, sessionid, eventstart, eventtype) "  # noqa: S608
            "VALUES (%s, %s, %s, %s)",
            *row.values(),
        )
    aws.sql(
        f"INSERT INTO {s}.fssync VALUES (-1, %s, %s)",  # noqa: S608
        (first_end + timedelta(minutes=5)).replace(tzinfo=None),
        first_end.replace(tzinfo=None),
    )
    return loaded


def test_a_hauser_table_and_sync_table_are_continued_without_loss_or_duplicates(
    files: SyncdFiles, aws: AwsEnv, sim: Simulator
) -> None:
    hauser_rows = create_hauser_tables(aws, sim)
    assert run_cli(["once", "-c", str(files.config)]) == EXIT_OK
    rows = warehouse_rows(aws)
    kept = [r for r in rows if r["SyncdBatchId"] is None]
    added = [r for r in rows if r["SyncdBatchId"] is not None]
    assert len(kept) == len(hauser_rows)
    assert_rows_equal(added, expected_segment_rows(sim, WINDOWS[1:]))


# -- S3-only ------------------------------------------------------------------------------------


def test_s3_only_leaves_the_files_and_hausers_checkpoint_in_the_bucket(
    tmp_path: Path, sim: Simulator, aws: AwsEnv
) -> None:
    overrides = {**aws_overrides(aws), "s3.S3Only": True, "SaveAsJson": True}
    files = write_config(tmp_path, sim, START, overrides)
    assert run_cli(["once", "-c", str(files.config)]) == EXIT_OK
    body = aws.moto.client().get_object(Bucket=aws.bucket, Key=".sync.hauser")["Body"].read()
    names = [k for k in aws.keys() if not k.startswith(".")]
    assert (body.decode(), len(names), all(k.endswith(".ndjson.gz") for k in names)) == (
        format_timestamp(WINDOWS[-1][1]),
        len(WINDOWS),
        True,
    )


def test_s3_only_resumes_from_the_checkpoint(tmp_path: Path, sim: Simulator, aws: AwsEnv) -> None:
    files = write_config(tmp_path, sim, START, {**aws_overrides(aws), "StorageOnly": True})
    run_cli(["once", "-c", str(files.config)], now=NOW - timedelta(hours=1))
    first = set(aws.keys())
    run_cli(["once", "-c", str(files.config)])
    added = sorted(k for k in set(aws.keys()) - first if not k.startswith("."))
    assert added == [k for k in aws.keys() if window_key(*WINDOWS[-1]).id in k]
