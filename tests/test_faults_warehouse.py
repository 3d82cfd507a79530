"""Warehouse and stage fault campaign: the database or the stage goes away mid-run, a COPY
fails, the spool disk fills up; each scenario ends with the warehouse equal to the simulator's
events, once each, and nothing is ever committed short.

Faults are set off from inside syncd's own steps (a wrapped `commit_batch` or `put`), so they
land mid-run at the same place on every run; `once` is repeated while a batch is held, as a
cron job would.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from aws_support import (
    IAM_ROLE,
    AwsEnv,
    aws,
    bucket,
    drop_schema,
    moto_s3,
    new_bucket,
    new_schema,
    postgres,
    redshift_proxy,
    schema,
    shared_postgres,
    warehouse_rows,
)
from e2e_support import (
    API_KEY,
    SyncdFiles,
    assert_rows_equal,
    batch_counts,
    expected_segment_rows,
    export_rows,
    hour_windows,
    run_cli,
    sorted_custom_vars,
    sync_rows,
    window_key,
    write_config,
)
from fault_support import after_first_call, later, once_until_done

from standins.moto_s3 import MotoS3
from standins.postgres import PostgresCluster
from standins.redshift_proxy import RedshiftProxy
from syncd.cli import EXIT_OK
from syncd.simulator import Simulator, SimulatorConfig
from syncd.timeutil import UTC
from warehouses.postgres import PostgresWarehouse
from warehouses.s3 import S3Stage

__all__ = ["aws", "bucket", "moto_s3", "postgres", "redshift_proxy", "schema"]  # fixtures

START = datetime(2026, 11, 1, 21, tzinfo=UTC)
WINDOWS = hour_windows(START, datetime(2026, 11, 2, 2, tzinfo=UTC))
EVENTS_PER_HOUR = 150
OUTAGE_SECONDS = 1.5


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=EVENTS_PER_HOUR)) as s:
        yield s


# -- PostgreSQL stopped and restarted --------------------------------------------------------


def pg_ctl(cluster: PostgresCluster, *args: str) -> None:
    """Run pg_ctl on the cluster's data folder (as the server's user when root)."""
    cluster.run_tool("pg_ctl", "-D", str(cluster.data_dir), *args)


def pg_start(cluster: PostgresCluster) -> None:
    assert cluster.root is not None
    options = (
        f"-c listen_addresses=127.0.0.1 -p {cluster.port} -k {cluster.root / 'sock'} "
        "-c fsync=off -c timezone=UTC"
    )
    pg_ctl(cluster, "-o", options, "-l", str(cluster.root / "server.log"), "-w", "start")


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    """A cluster of this test's own: stopping it disturbs no other test. Restarted with
    synchronous_commit on (the stand-in turns it off for speed, and then a crash may lose
    commits already acknowledged, as PostgreSQL documents), as a production server runs."""
    with PostgresCluster() as cluster:
        pg_ctl(cluster, "-m", "fast", "-w", "stop")
        pg_start(cluster)
        yield cluster


def test_postgres_stopped_and_restarted_mid_run_ends_exact(
    tmp_path: Path,
    sim: Simulator,
    own_postgres: PostgresCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    overrides: dict[str, object] = {
        "Provider": "postgres",
        "postgres.Host": own_postgres.host,
        "postgres.Port": own_postgres.port,
        "postgres.User": own_postgres.user,
        "postgres.DB": own_postgres.database,
        "postgres.SSLMode": "disable",
        "Lookahead": 0,
        "MaxBatchAttempts": 10,  # enough backoff to ride out the outage within one `once`
    }
    files = write_config(tmp_path, sim, START, overrides)

    def outage() -> None:
        pg_ctl(own_postgres, "-m", "immediate", "-w", "stop")
        later(OUTAGE_SECONDS, lambda: pg_start(own_postgres))

    fired = after_first_call(monkeypatch, PostgresWarehouse, "commit_batch", outage)
    code = run_cli(["once", "-c", str(files.config)])
    env = AwsEnv(None, own_postgres, "", "public")  # type: ignore[arg-type] # reads need no S3
    rows = warehouse_rows(env)
    synced = {str(r["SyncdBatchId"]): r["RowsLoaded"] for r in warehouse_rows(env, "fssync")}
    assert (fired.is_set(), code, synced) == (True, EXIT_OK, batch_counts(rows))
    assert_rows_equal(
        sorted_custom_vars(rows), sorted_custom_vars(expected_segment_rows(sim, WINDOWS))
    )


# -- Redshift: failing COPYs; the S3 stand-in killed and restarted ---------------------------


def redshift_overrides(
    moto: MotoS3, proxy: RedshiftProxy, bucket: str, schema: str
) -> dict[str, object]:
    return {
        "Provider": "aws",
        "s3.Bucket": bucket,
        "s3.Region": "us-east-1",
        "s3.EndpointURL": moto.endpoint_url,
        "s3.Timeout": "5s",
        "redshift.Host": proxy.host,
        "redshift.Port": proxy.port,
        "redshift.DB": "postgres",
        "redshift.User": "postgres",
        "redshift.Password": "proxy-password",
        "redshift.DatabaseSchema": schema,
        "redshift.IAMRole": IAM_ROLE,
        "redshift.SSL": False,
        "Lookahead": 0,
        "MaxBatchAttempts": 10,
    }


def assert_redshift_exact(env: AwsEnv, sim: Simulator) -> None:
    rows = warehouse_rows(env)
    synced = {str(r["SyncdBatchId"]): r["RowsLoaded"] for r in warehouse_rows(env, "fssync")}
    assert synced == batch_counts(rows)
    assert_rows_equal(rows, expected_segment_rows(sim, WINDOWS))


def test_copies_failing_on_several_batches_are_retried_and_end_exact(
    tmp_path: Path, sim: Simulator, aws: AwsEnv, redshift_proxy: RedshiftProxy
) -> None:
    files = write_config(
        tmp_path, sim, START, redshift_overrides(aws.moto, redshift_proxy, aws.bucket, aws.schema)
    )
    copies_before = len(redshift_proxy.copies)
    redshift_proxy.fail_copies(
        3, "S3ServiceException:Please reduce your request rate.,Status 503,Error SlowDown", s3=True
    )
    codes = once_until_done(files)
    copies = len(redshift_proxy.copies) - copies_before
    assert (codes[-1], copies) == (EXIT_OK, len(WINDOWS) + 3)
    assert_redshift_exact(aws, sim)


@pytest.fixture
def own_moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoS3]:
    moto = MotoS3().start()
    for name, value in moto.environment().items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    yield moto
    moto.stop()


def test_the_s3_standin_killed_and_restarted_mid_run_ends_exact(
    tmp_path: Path, sim: Simulator, own_moto: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg = shared_postgres()
    proxy = RedshiftProxy(
        backend_host=pg.host, backend_port=pg.port, s3_client_factory=own_moto.client
    ).start()
    env = AwsEnv(own_moto, pg, new_bucket(own_moto), new_schema())
    files = write_config(
        tmp_path, sim, START, redshift_overrides(own_moto, proxy, env.bucket, env.schema)
    )

    def outage() -> None:
        own_moto.stop()
        later(OUTAGE_SECONDS, own_moto.start)

    fired = after_first_call(monkeypatch, S3Stage, "put", outage)
    try:
        codes = once_until_done(files)
        assert (fired.is_set(), codes[-1]) == (True, EXIT_OK)
        assert_redshift_exact(env, sim)
    finally:
        proxy.stop()
        drop_schema(env.schema)


# -- the spool disk full ---------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of this test's own (we run as root), unmounted afterwards."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"cannot mount a tmpfs here: {result.stderr}"
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill `disk` until only about `leave` bytes are free; the filler file."""
    filler = disk / "filler"
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize
    with filler.open("wb") as out:
        out.write(b"\0" * max(0, free - leave))
    return filler


@pytest.fixture
def full_disk_files(tmp_path: Path, sim: Simulator, small_disk: Path) -> SyncdFiles:
    """syncd with its StateDir (spool), TmpDir and SaveDir on a disk with ~8 KiB free."""
    files = write_config(
        tmp_path,
        sim,
        START,
        {
            "StateDir": small_disk / "state",
            "TmpDir": small_disk / "tmp",
            "local.SaveDir": small_disk / "staged",
            "MaxBatchAttempts": 2,
        },
    )
    (small_disk / "state").mkdir()
    fill(small_disk, 8 * 1024)
    return files


def test_a_full_spool_disk_commits_no_batch_short(
    sim: Simulator, full_disk_files: SyncdFiles
) -> None:
    run_cli(["once", "-c", str(full_disk_files.config)])
    rows = export_rows(full_disk_files.duckdb)
    synced = {str(r["SyncdBatchId"]): r["RowsLoaded"] for r in sync_rows(full_disk_files.duckdb)}
    committed = [w for w in WINDOWS if window_key(*w).id in synced]
    assert synced == batch_counts(rows)
    if committed:
        assert_rows_equal(rows, expected_segment_rows(sim, committed))


def test_a_full_spool_disk_holds_the_batch_with_exit_1(full_disk_files: SyncdFiles) -> None:
    assert run_cli(["once", "-c", str(full_disk_files.config)]) == 1


def test_a_full_spool_disk_completes_exactly_once_space_is_back(
    sim: Simulator, full_disk_files: SyncdFiles, small_disk: Path
) -> None:
    run_cli(["once", "-c", str(full_disk_files.config)])
    (small_disk / "filler").unlink()
    assert once_until_done(full_disk_files)[-1] == EXIT_OK
    rows = export_rows(full_disk_files.duckdb)
    assert_rows_equal(rows, expected_segment_rows(sim, WINDOWS))


def test_a_full_spool_disk_is_retried_like_any_transient_failure_before_it_is_held(
    full_disk_files: SyncdFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    # The status file cannot be written on a full disk either: read the log's held line.
    run_cli(["once", "-c", str(full_disk_files.config)])
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    held = [x for x in lines if x["event"].startswith("batch held")]
    assert [(x["attempt"], "No space left on device" in x["error"]) for x in held] == [(2, True)]


def test_a_spool_disk_freed_mid_run_completes_within_the_same_once(
    tmp_path: Path, sim: Simulator, small_disk: Path
) -> None:
    files = write_config(
        tmp_path,
        sim,
        START,
        {"StateDir": small_disk / "state", "TmpDir": small_disk / "tmp", "MaxBatchAttempts": 10},
    )
    (small_disk / "state").mkdir()
    filler = fill(small_disk, 8 * 1024)
    later(0.3, filler.unlink)
    assert run_cli(["once", "-c", str(files.config)]) == EXIT_OK
    assert_rows_equal(export_rows(files.duckdb), expected_segment_rows(sim, WINDOWS))
