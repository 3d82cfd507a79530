"""Fixtures of the GCP tests: the GCS and BigQuery stand-ins, started once per session.

Import the fixtures by name into a test module (`from gcp_support import gcs_emulator, ...`).
Both stand-ins run as child processes on 127.0.0.1 on free ports, start once per test process
the first time a test asks for them, and are stopped by their PID when the process exits.
Each fixture hands out a fresh bucket or dataset, so tests never see each other's data. A
stand-in that cannot start fails the test with the reason and its log: these tests never skip
(except `live_*`, which need SYNCD_TEST_BIGQUERY_* variables).

Where the stand-ins differ from Google, and how the tests deal with it (the product is never
bent for an emulator):
- bqemulator ignores query parameters inside multi-statement scripts. The commit and rollback
  transactions take no parameters in any case: the sync row is staged into a one-row table
  through a single-statement parameterized INSERT, which both accept, and the EventStart
  bounds are TIMESTAMP literals made from datetimes (constant filters, which BigQuery needs to
  eliminate partitions).
- bqemulator 1.4.0 lacks several rules of BigQuery; the stand-in adds them
  (`standins/bqemulator_rules.py`, shown by `test_standin_bigquery.py`): job locations (a job
  of a single-region dataset is found only with its location; test datasets are created in
  `LOCATION`, a single region, so a missing location fails), 409 on a reused job id, job id
  characters, no permanent DDL inside a transaction, `requirePartitionFilter`, and table and
  partition expiration.
- bqemulator 1.4.0 applies a schema update (`update_table` adding columns) to its catalog
  only, so DML would not see the new columns; ALTER TABLE takes one column per statement and
  is not reflected in the catalog. syncd adds columns with one `update_table` (what BigQuery
  does best), and the stand-in's start-up wrapper (`standins/bqemulator_rules.py`) makes that
  update also alter the table's storage, as BigQuery does.
- bqemulator cannot insert into `_PARTITIONTIME`, and `load_table_from_json` uploads fail
  there (multipart content type): syncd uses neither (rows of an ingestion-time partitioned
  hauser table land in their load day's partition, on both).
- bqemulator's `output_rows` is the table's total: the warehouse counts staged rows with
  `get_table().num_rows` of a per-batch table instead.
- bqemulator reads a quoted empty CSV field ("") as NULL: the CSV conformance rows hold no
  empty strings; Parquet (the preferred format) and NDJSON keep "" and NULL apart.
- On a 500 the client's default retry loops for 600 s: every client call in the tests gets a
  `Retry` with a deadline of a few seconds (`FAST_RETRY_DEADLINE`).
- The GCS emulator accepts anonymous requests and has no IAM: permission failures are covered
  by the error-mapping tests, not by the stand-in.
"""

from __future__ import annotations

import atexit
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from standins.bigquery import BigQueryEmulator, start_bigquery_emulator
from standins.gcs import GCSEmulator, start_gcs_emulator
from warehouses import google_cloud
from warehouses.bigquery import BigQueryWarehouse
from warehouses.gcs import GCSStage

PROJECT = "test"
LOCATION = "asia-northeast1"  # a single region: jobs are found only with their location
FAST_RETRY_DEADLINE = 5.0
JOB_TIMEOUT = 60.0

_T = TypeVar("_T")
_started: dict[str, Any] = {}
_lock = threading.Lock()


def _shared(name: str, start: Callable[[], _T], stop: Callable[[_T], None]) -> _T:
    """One instance per process, started on first use, stopped (by PID) at exit."""
    with _lock:
        if name not in _started:
            try:
                instance = start()
            except Exception as exc:
                pytest.fail(f"the {name} stand-in could not start: {exc}", pytrace=False)
            _started[name] = instance
            atexit.register(stop, instance)
        return _started[name]  # type: ignore[no-any-return]


def shared_gcs() -> GCSEmulator:
    root = Path(tempfile.mkdtemp(prefix="syncd-gcs-emulator-"))
    return _shared("GCS", lambda: start_gcs_emulator(root), lambda e: e.stop())


def shared_bigquery() -> BigQueryEmulator:
    gcs = shared_gcs()
    log_path = gcs.root / "bqemulator.log"
    return _shared(
        "BigQuery",
        lambda: start_bigquery_emulator(gcs.objects_root, log_path, project=PROJECT),
        lambda e: e.stop(),
    )


def unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


def new_bucket() -> str:
    name = unique("syncd-test-")
    shared_gcs().create_bucket(name)
    return name


def new_dataset(location: str = LOCATION) -> str:
    """A new dataset, by default in a single region (`LOCATION`), where every job lookup needs
    the location (a multi-region dataset forgives its absence)."""
    from google.cloud import bigquery

    name = unique("ds_")
    client = shared_bigquery().client()
    dataset = bigquery.Dataset(f"{PROJECT}.{name}")
    dataset.location = location
    client.create_dataset(dataset, retry=google_cloud.default_retry(FAST_RETRY_DEADLINE))
    client.close()
    return name


def drop_dataset(name: str) -> None:
    client = shared_bigquery().client()
    client.delete_dataset(
        f"{PROJECT}.{name}",
        delete_contents=True,
        not_found_ok=True,
        retry=google_cloud.default_retry(FAST_RETRY_DEADLINE),
    )
    client.close()


@pytest.fixture
def gcs_emulator() -> GCSEmulator:
    return shared_gcs()


@pytest.fixture
def bigquery_emulator() -> BigQueryEmulator:
    return shared_bigquery()


@pytest.fixture
def gcs_bucket() -> str:
    """A new, empty bucket."""
    return new_bucket()


@pytest.fixture
def bq_dataset() -> Iterator[str]:
    """A new, empty dataset, deleted with its tables afterwards."""
    name = new_dataset()
    yield name
    drop_dataset(name)


def make_stage(bucket: str, prefix: str = "") -> GCSStage:
    return GCSStage(
        bucket,
        prefix,
        client=shared_gcs().client(),
        retry=google_cloud.default_retry(FAST_RETRY_DEADLINE),
        chunk_size=256 * 1024,
    )


def make_warehouse(dataset: str, **options: Any) -> BigQueryWarehouse:
    return BigQueryWarehouse(
        PROJECT,
        dataset,
        client=shared_bigquery().client(),
        retry=google_cloud.default_retry(FAST_RETRY_DEADLINE),
        job_timeout=JOB_TIMEOUT,
        **options,
    )


def object_names(bucket: str, gcs: GCSEmulator | None = None) -> list[str]:
    """Names of the objects in `bucket`, as the GCS emulator (the shared one unless `gcs`)
    keeps them on disk."""
    root = (gcs or shared_gcs()).objects_root / bucket
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@dataclass(frozen=True)
class OwnGcp:
    """A GCS emulator and a persistent BigQuery emulator of one test's own (so it may kill and
    restart them), with a bucket and a dataset."""

    gcs: GCSEmulator
    bigquery: BigQueryEmulator
    bucket: str
    dataset: str


@pytest.fixture
def own_gcp(tmp_path: Path) -> Iterator[OwnGcp]:
    """Both stand-ins of this test's own, stopped by PID afterwards. BigQuery runs in its
    persistent mode, so a restart keeps its datasets, tables and jobs, as BigQuery does."""
    root = tmp_path / "gcp-standins"
    gcs = start_gcs_emulator(root / "gcs")
    try:
        bigquery = start_bigquery_emulator(
            gcs.objects_root, root / "bqemulator.log", project=PROJECT, data_dir=root / "bq"
        )
    except Exception as exc:
        gcs.stop()
        pytest.fail(f"the BigQuery stand-in could not start: {exc}", pytrace=False)
    try:
        bucket, dataset = unique("syncd-test-"), unique("ds_")
        gcs.create_bucket(bucket)
        from google.cloud import bigquery as bq

        client = bigquery.client()
        made = bq.Dataset(f"{PROJECT}.{dataset}")
        made.location = LOCATION
        client.create_dataset(made, retry=google_cloud.default_retry(FAST_RETRY_DEADLINE))
        client.close()
        yield OwnGcp(gcs, bigquery, bucket, dataset)
    finally:
        bigquery.stop()
        gcs.stop()


# --- adapters for tests/test_conformance.py: (warehouse, stage) over the shared stand-ins -------


def bigquery_over_gcs(folder: Path) -> tuple[BigQueryWarehouse, GCSStage]:
    return make_warehouse(new_dataset()), make_stage(new_bucket(), "hauser-uploads/")


def storage_only_over_gcs(folder: Path) -> tuple[Any, GCSStage]:
    from warehouses.storage_only import StorageOnlyWarehouse

    stage = make_stage(new_bucket(), "hauser-uploads/")
    return StorageOnlyWarehouse(stage), stage


__all__ = [
    "bigquery_emulator",
    "bq_dataset",
    "gcs_bucket",
    "gcs_emulator",
    "own_gcp",
]


def bq_rows(
    dataset: str,
    table: str,
    order_by: str | None = None,
    bigquery: BigQueryEmulator | None = None,
) -> list[dict[str, Any]]:
    """Every row of `dataset.table` as a dict, read back through the BigQuery client (from the
    shared emulator unless `bigquery`)."""
    client = (bigquery or shared_bigquery()).client()
    order = f" ORDER BY `{order_by}`" if order_by else ""
    job = client.query(
        f"SELECT * FROM `{dataset}`.`{table}`{order}",  # noqa: S608 (test names)
        retry=google_cloud.default_retry(FAST_RETRY_DEADLINE),
        job_retry=None,
    )
    rows = [dict(row.items()) for row in job.result(timeout=JOB_TIMEOUT)]
    client.close()
    return rows


def bq_table(dataset: str, table: str) -> Any:
    client = shared_bigquery().client()
    found = client.get_table(
        f"{PROJECT}.{dataset}.{table}", retry=google_cloud.default_retry(FAST_RETRY_DEADLINE)
    )
    client.close()
    return found


def bq_table_names(dataset: str) -> list[str]:
    client = shared_bigquery().client()
    names = sorted(
        t.table_id
        for t in client.list_tables(
            f"{PROJECT}.{dataset}", retry=google_cloud.default_retry(FAST_RETRY_DEADLINE)
        )
    )
    client.close()
    return names
