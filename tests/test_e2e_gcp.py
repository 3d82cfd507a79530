"""End to end on the GCP path: the export simulator, the GCS stand-in and the BigQuery stand-in.

syncd runs through its CLI (in process, or in a subprocess that SIGKILLs itself at a crash
point: `tests/gcp_crash_runner.py`); the stand-ins and the simulator run in this process's
children and threads, so they survive the kill. See `gcp_support` for where the stand-ins
differ from Google.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import gcp_support
import pytest
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
from gcp_support import PROJECT, bq_rows, object_names

import warehouses.google_cloud
from syncd.cli import EXIT_CONFIG, EXIT_OK
from syncd.simulator import Simulator, SimulatorConfig
from syncd.timeutil import UTC, format_timestamp

START = datetime(2026, 11, 1, 21, tzinfo=UTC)
WINDOWS = hour_windows(START, datetime(2026, 11, 2, 2, tzinfo=UTC))
RUNNER = Path(__file__).with_name("gcp_crash_runner.py")
EVENTS_PER_HOUR = 150

#: Crash points on the GCP path; each hits the second batch, so the first is committed.
CRASH_POINTS = ("staged", "bq_loaded", "bq_committed", "committed")


@pytest.fixture(autouse=True)
def short_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in's 500 fails in seconds, not after the client's 600 s of retries."""
    monkeypatch.setattr(warehouses.google_cloud, "RETRY_DEADLINE", gcp_support.FAST_RETRY_DEADLINE)


@dataclass(frozen=True)
class GcpSyncd:
    files: SyncdFiles
    bucket: str
    dataset: str


def gcp_config(
    directory: Path,
    sim: Simulator,
    *,
    storage_only: bool = False,
    prefix: str = "hauser-uploads/",
    lookahead: int = 3,
) -> GcpSyncd:
    """A syncd configured for GCS (+ BigQuery unless `storage_only`) on the stand-ins."""
    bucket = gcp_support.new_bucket()
    dataset = "" if storage_only else gcp_support.new_dataset()
    overrides: dict[str, object] = {
        "Provider": "gcp",
        "FilePrefix": prefix,
        "gcs.Bucket": bucket,
        "gcs.EndpointURL": gcp_support.shared_gcs().endpoint,
        "Lookahead": lookahead,
    }
    if storage_only:
        overrides["StorageOnly"] = True
    else:
        overrides.update(
            {
                "bigquery.Project": PROJECT,
                "bigquery.Dataset": dataset,
                "bigquery.EndpointURL": gcp_support.shared_bigquery().endpoint,
            }
        )
    files = write_config(directory, sim, START, overrides)
    return GcpSyncd(files, bucket, dataset)


def once(syncd: GcpSyncd) -> int:
    return run_cli(["once", "-c", str(syncd.files.config)])


def sync_ids(syncd: GcpSyncd) -> list[str]:
    return [r["SyncdBatchId"] for r in bq_rows(syncd.dataset, "fssync", order_by="BatchStart")]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=EVENTS_PER_HOUR)) as s:
        yield s


# -- BigQuery over GCS -----------------------------------------------------------------------


@pytest.fixture
def synced(tmp_path: Path, sim: Simulator) -> GcpSyncd:
    syncd = gcp_config(tmp_path, sim)
    assert once(syncd) == EXIT_OK
    return syncd


def test_once_loads_every_window_row_for_row(sim: Simulator, synced: GcpSyncd) -> None:
    assert_rows_equal(bq_rows(synced.dataset, "fsexport"), expected_segment_rows(sim, WINDOWS))


def test_once_writes_one_sync_row_per_window(synced: GcpSyncd) -> None:
    assert sync_ids(synced) == [window_key(*w).id for w in WINDOWS]


def test_once_deletes_the_staged_files_after_their_commit(synced: GcpSyncd) -> None:
    assert object_names(synced.bucket) == []


def test_a_second_once_loads_nothing_new(sim: Simulator, synced: GcpSyncd) -> None:
    assert once(synced) == EXIT_OK
    assert_rows_equal(bq_rows(synced.dataset, "fsexport"), expected_segment_rows(sim, WINDOWS))


def test_a_rolled_back_day_is_reloaded_exactly(sim: Simulator, synced: GcpSyncd) -> None:
    config = str(synced.files.config)
    assert run_cli(["rollback", "-c", config, "--day", "2026-11-02", "--yes"]) == EXIT_OK
    assert once(synced) == EXIT_OK
    assert_rows_equal(bq_rows(synced.dataset, "fsexport"), expected_segment_rows(sim, WINDOWS))


# -- GCS only ----------------------------------------------------------------------------------


def test_gcs_only_mode_stages_the_files_and_the_checkpoint(tmp_path: Path, sim: Simulator) -> None:
    syncd = gcp_config(tmp_path, sim, storage_only=True)
    assert once(syncd) == EXIT_OK
    staged = {f"hauser-uploads/{window_key(*w).id}.parquet" for w in WINDOWS}
    assert set(object_names(syncd.bucket)) == staged | {"hauser-uploads/.sync.hauser"}


def test_gcs_only_mode_checkpoints_the_last_window(tmp_path: Path, sim: Simulator) -> None:
    syncd = gcp_config(tmp_path, sim, storage_only=True)
    assert once(syncd) == EXIT_OK
    checkpoint = (
        gcp_support.shared_gcs().objects_root / syncd.bucket / "hauser-uploads/.sync.hauser"
    )
    assert checkpoint.read_text() == format_timestamp(WINDOWS[-1][1])


def test_gcs_only_mode_resumes_from_its_checkpoint(tmp_path: Path, sim: Simulator) -> None:
    syncd = gcp_config(tmp_path, sim, storage_only=True)
    first_now = WINDOWS[1][1] + (NOW - WINDOWS[-1][1])  # only the first two windows are ready
    assert run_cli(["once", "-c", str(syncd.files.config)], now=first_now) == EXIT_OK
    assert once(syncd) == EXIT_OK
    assert dict(sim.stats.exports_by_window) == {w: 1 for w in WINDOWS}


# -- crashes -----------------------------------------------------------------------------------


def crash(syncd: GcpSyncd, point: str) -> subprocess.CompletedProcess[str]:
    """`syncd once` in a subprocess that kills itself at `point`."""
    here = str(Path(__file__).parent)
    pythonpath = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, str(RUNNER), point, "once", "-c", str(syncd.files.config)],
        env={**os.environ, NOW_ENV: format_timestamp(NOW), "PYTHONPATH": pythonpath},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@dataclass(frozen=True)
class Recovery:
    sim: Simulator
    syncd: GcpSyncd
    crashed: subprocess.CompletedProcess[str]
    restart_code: int


@pytest.fixture(scope="module", params=CRASH_POINTS)
def recovery(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Recovery]:
    patch = pytest.MonkeyPatch()
    patch.setattr(warehouses.google_cloud, "RETRY_DEADLINE", gcp_support.FAST_RETRY_DEADLINE)
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=EVENTS_PER_HOUR)) as sim:
        # One batch at a time, so "no window exported twice" is exact (see test_crash.py).
        syncd = gcp_config(tmp_path_factory.mktemp(request.param), sim, lookahead=0)
        crashed = crash(syncd, f"{request.param}@2")
        yield Recovery(sim, syncd, crashed, once(syncd))
    patch.undo()


def test_the_crash_runner_dies_by_sigkill(recovery: Recovery) -> None:
    assert recovery.crashed.returncode == -signal.SIGKILL, recovery.crashed.stderr[-3000:]


def test_after_a_crash_the_next_once_makes_the_table_exact(recovery: Recovery) -> None:
    assert recovery.restart_code == EXIT_OK
    assert_rows_equal(
        bq_rows(recovery.syncd.dataset, "fsexport"), expected_segment_rows(recovery.sim, WINDOWS)
    )


def test_after_a_crash_the_sync_table_has_one_row_per_window(recovery: Recovery) -> None:
    assert sync_ids(recovery.syncd) == [window_key(*w).id for w in WINDOWS]


def test_after_a_crash_no_window_is_exported_twice(recovery: Recovery) -> None:
    assert dict(recovery.sim.stats.exports_by_window) == {w: 1 for w in WINDOWS}


# -- partition expiration ----------------------------------------------------------------------


@dataclass(frozen=True)
class Expiring:
    sim: Simulator
    syncd: GcpSyncd
    now: datetime
    windows: list[tuple[datetime, datetime]]  # day windows from StartTime, four days back
    kept: list[tuple[datetime, datetime]]  # those BigQuery keeps: the last one


@pytest.fixture
def expiring(tmp_path: Path, sim: Simulator) -> Expiring:
    """StartTime four days back, partitions expiring after two days, day-long windows. The
    stand-in expires partitions by the wall clock, so syncd's clock is frozen at it; in the
    first hour of a day (ExportDelay) at 01:05, when yesterday's window is ready: an hour
    ahead of the wall clock moves no partition past its two days."""
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    now = max(now, midnight + timedelta(hours=1, minutes=5))
    starts = [midnight - timedelta(days=n) for n in (4, 3, 2, 1)]
    windows = [(s, s + timedelta(days=1)) for s in starts]
    syncd = gcp_config(tmp_path, sim)
    text = syncd.files.config.read_text()
    text = text.replace(format_timestamp(START), format_timestamp(starts[0]))
    text = text.replace('ExportDuration = "1h"', 'ExportDuration = "24h"')
    text = text.replace("[bigquery]\n", '[bigquery]\nPartitionExpiration = "48h"\n')
    syncd.files.config.write_text(text)
    return Expiring(sim, syncd, now, windows, windows[-1:])


def test_days_older_than_the_partition_expiration_are_not_loaded(expiring: Expiring) -> None:
    """Their rows would vanish at once, the day never reconcile and be reloaded at every
    start: they are not loaded, not checked, and a second run loads nothing again."""
    assert run_cli(["once", "-c", str(expiring.syncd.files.config)], now=expiring.now) == EXIT_OK
    assert run_cli(["once", "-c", str(expiring.syncd.files.config)], now=expiring.now) == EXIT_OK
    assert dict(expiring.sim.stats.exports_by_window) == {w: 1 for w in expiring.kept}
    assert sync_ids(expiring.syncd) == [window_key(*w).id for w in expiring.kept]


def test_a_backfill_of_an_expired_day_is_refused(expiring: Expiring) -> None:
    config = str(expiring.syncd.files.config)
    assert run_cli(["once", "-c", config], now=expiring.now) == EXIT_OK
    expired = expiring.windows[0][0].date().isoformat()
    code = run_cli(["backfill", "-c", config, "--from", expired, "--yes"], now=expiring.now)
    assert code == EXIT_CONFIG and dict(expiring.sim.stats.exports_by_window) == {
        w: 1 for w in expiring.kept
    }
