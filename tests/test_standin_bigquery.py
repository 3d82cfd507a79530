"""The BigQuery stand-in refuses what BigQuery refuses (`standins/bqemulator_rules.py`).

Each test shows one documented rule of BigQuery enforced by the stand-in, through the real
client: a stand-in that accepted the wrong form would hide the bug it is there to catch
(docs/cloud-conformance.md names the documentation of each rule).
"""

# ruff: noqa: F811, S608 - fixtures are imported by name from gcp_support; SQL of test names

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import gcp_support
import pytest
from gcp_support import PROJECT, bigquery_emulator  # noqa: F401 (fixtures)
from google.api_core import exceptions as api_exceptions
from google.cloud import bigquery

from standins.bigquery import BigQueryEmulator
from warehouses import google_cloud

REGION = "asia-northeast1"


@pytest.fixture
def client(bigquery_emulator: BigQueryEmulator) -> Iterator[bigquery.Client]:
    made = bigquery_emulator.client()
    yield made
    made.close()


@pytest.fixture
def regional() -> Iterator[str]:
    """A dataset in a single region."""
    name = gcp_support.new_dataset(location=REGION)
    yield name
    gcp_support.drop_dataset(name)


@pytest.fixture
def multi_regional() -> Iterator[str]:
    """A dataset in the US multi-region."""
    name = gcp_support.new_dataset(location="US")
    yield name
    gcp_support.drop_dataset(name)


def retry() -> Any:
    return google_cloud.default_retry(gcp_support.FAST_RETRY_DEADLINE)


def run(client: bigquery.Client, text: str, **options: Any) -> list[Any]:
    job = client.query(text, job_retry=None, retry=retry(), **options)
    return list(job.result(timeout=gcp_support.JOB_TIMEOUT))


def unique_job() -> str:
    return gcp_support.unique("job_")


# -- locations ---------------------------------------------------------------------------------


def test_a_dataset_keeps_its_location(client: bigquery.Client, regional: str) -> None:
    assert client.get_dataset(f"{PROJECT}.{regional}", retry=retry()).location == REGION


def test_a_job_runs_in_its_datasets_location(client: bigquery.Client, regional: str) -> None:
    job_id = unique_job()
    run(client, f"SELECT COUNT(*) FROM `{regional}`.INFORMATION_SCHEMA.TABLES", job_id=job_id)
    found = client.get_job(job_id, location=REGION, retry=retry())
    assert found.location == REGION


def test_a_single_region_job_is_not_found_without_its_location(
    client: bigquery.Client, regional: str
) -> None:
    job_id = unique_job()
    run(client, f"CREATE TABLE `{regional}`.`t` (a INT64)", job_id=job_id)
    with pytest.raises(api_exceptions.NotFound, match=f"Not found: Job {PROJECT}:{job_id}"):
        client.get_job(job_id, retry=retry())


def test_a_job_is_not_found_in_another_location(client: bigquery.Client, regional: str) -> None:
    job_id = unique_job()
    run(client, f"CREATE TABLE `{regional}`.`t` (a INT64)", job_id=job_id)
    with pytest.raises(api_exceptions.NotFound):
        client.get_job(job_id, location="us-central1", retry=retry())


def test_a_multi_region_job_is_found_without_its_location(
    client: bigquery.Client, multi_regional: str
) -> None:
    job_id = unique_job()
    run(client, f"CREATE TABLE `{multi_regional}`.`t` (a INT64)", job_id=job_id)
    assert client.get_job(job_id, retry=retry()).location == "US"


def test_query_results_need_the_jobs_location(client: bigquery.Client, regional: str) -> None:
    job_id = unique_job()
    run(client, f"CREATE TABLE `{regional}`.`t` (a INT64)", job_id=job_id)
    with pytest.raises(api_exceptions.NotFound):
        client._get_query_results(job_id, retry(), project=PROJECT, timeout_ms=1000)


def test_a_job_in_another_location_than_its_dataset_is_refused(
    client: bigquery.Client, regional: str
) -> None:
    with pytest.raises(
        api_exceptions.NotFound, match=f"Dataset {PROJECT}:{regional} was not found in location US"
    ):
        run(client, f"CREATE TABLE `{regional}`.`t` (a INT64)", location="US")


# -- job ids -----------------------------------------------------------------------------------


def test_a_job_id_is_used_once(client: bigquery.Client, regional: str) -> None:
    job_id = unique_job()
    run(client, "SELECT 1", job_id=job_id)
    with pytest.raises(api_exceptions.Conflict, match=f"Already Exists: Job {PROJECT}:"):
        run(client, "SELECT 1", job_id=job_id)


@pytest.mark.parametrize("job_id", ["has space", "dot.ted", "x" * 1025])
def test_a_job_id_is_letters_digits_underscores_and_dashes(
    client: bigquery.Client, job_id: str
) -> None:
    with pytest.raises(api_exceptions.BadRequest, match="Invalid job ID"):
        run(client, "SELECT 1", job_id=job_id)


def test_the_longest_job_id_is_accepted(client: bigquery.Client) -> None:
    assert run(client, "SELECT 1", job_id=unique_job().ljust(1024, "-"))[0][0] == 1


# -- transactions ------------------------------------------------------------------------------


def test_a_transaction_refuses_ddl_on_a_permanent_table(
    client: bigquery.Client, regional: str
) -> None:
    with pytest.raises(api_exceptions.BadRequest, match="not supported inside a transaction"):
        run(
            client,
            f"BEGIN TRANSACTION;\nCREATE TABLE `{regional}`.`t` (a INT64);\nCOMMIT TRANSACTION;",
        )


def test_a_transaction_takes_dml_and_temporary_tables(
    client: bigquery.Client, regional: str
) -> None:
    run(client, f"CREATE TABLE `{regional}`.`t` (a INT64)")
    run(
        client,
        "BEGIN TRANSACTION;\nCREATE TEMP TABLE x AS SELECT 1 AS a;\n"
        f"INSERT INTO `{regional}`.`t` (a) SELECT a FROM x;\n"
        f"DELETE FROM `{regional}`.`t` WHERE a = 2;\nCOMMIT TRANSACTION;",
    )
    assert run(client, f"SELECT a FROM `{regional}`.`t`")[0][0] == 1


# -- requirePartitionFilter --------------------------------------------------------------------


def partitioned(
    client: bigquery.Client,
    dataset: str,
    *,
    require_filter: bool = False,
    expiration: timedelta | None = None,
) -> str:
    table = bigquery.Table(
        f"{PROJECT}.{dataset}.events",
        schema=[bigquery.SchemaField("ts", "TIMESTAMP"), bigquery.SchemaField("b", "STRING")],
    )
    table.time_partitioning = bigquery.TimePartitioning(
        field="ts",
        expiration_ms=None if expiration is None else int(expiration.total_seconds() * 1000),
    )
    table.require_partition_filter = require_filter
    client.create_table(table, retry=retry())
    return f"`{dataset}`.`events`"


def test_a_table_keeps_require_partition_filter(client: bigquery.Client, regional: str) -> None:
    partitioned(client, regional, require_filter=True)
    table = client.get_table(f"{PROJECT}.{regional}.events", retry=retry())
    assert table.require_partition_filter is True


REFUSED = "Cannot query over table '{}.events' without a filter over column\\(s\\) 'ts'"


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM {t}",
        "SELECT COUNT(*) FROM {t} WHERE b = 'x'",
        "DELETE FROM {t} WHERE b = 'x'",
        "DELETE FROM {t} WHERE b = 'x' OR ts >= TIMESTAMP '2024-01-01'",
        "SELECT * FROM {t} WHERE ts >= (SELECT MIN(ts) FROM {t} WHERE ts > TIMESTAMP '2024-01-01')",
        "SELECT * FROM {t} AS e WHERE e.b IN (SELECT b FROM {t} WHERE ts > TIMESTAMP '2024-01-01')",
    ],
)
def test_a_table_that_requires_a_partition_filter_refuses_statements_without_one(
    client: bigquery.Client, regional: str, statement: str
) -> None:
    table = partitioned(client, regional, require_filter=True)
    with pytest.raises(api_exceptions.BadRequest, match=REFUSED.format(regional)):
        run(client, statement.format(t=table))


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT COUNT(*) FROM {t} WHERE ts >= TIMESTAMP '2024-01-01'",
        "SELECT COUNT(*) FROM {t} AS e WHERE e.b = 'x' AND e.ts < TIMESTAMP '2024-01-02'",
        "DELETE FROM {t} WHERE b = 'x' AND ts >= TIMESTAMP '2024-01-01' "
        "AND ts < TIMESTAMP '2024-01-02'",
        "INSERT INTO {t} (ts, b) VALUES (TIMESTAMP '2024-01-01', 'x')",
    ],
)
def test_a_table_that_requires_a_partition_filter_takes_statements_with_one(
    client: bigquery.Client, regional: str, statement: str
) -> None:
    table = partitioned(client, regional, require_filter=True)
    run(client, statement.format(t=table))


# -- expiration --------------------------------------------------------------------------------


def test_rows_of_an_expired_partition_are_gone(client: bigquery.Client, regional: str) -> None:
    table = partitioned(client, regional, expiration=timedelta(days=3))
    now = datetime.now(timezone.utc)
    values = ", ".join(
        f"(TIMESTAMP '{(now - timedelta(days=age)).isoformat()}', '{age}')" for age in (0, 2, 4)
    )
    run(client, f"INSERT INTO {table} (ts, b) VALUES {values}")
    kept = sorted(row[0] for row in run(client, f"SELECT b FROM {table}"))
    assert kept == ["0", "2"]


def test_a_table_past_its_expiration_time_is_gone(client: bigquery.Client, regional: str) -> None:
    table = bigquery.Table(
        f"{PROJECT}.{regional}.brief", schema=[bigquery.SchemaField("a", "INT64")]
    )
    table.expires = datetime.now(timezone.utc) + timedelta(days=1)
    made = client.create_table(table, retry=retry())
    assert client.get_table(made, retry=retry()).expires == made.expires
    made.expires = datetime.now(timezone.utc) - timedelta(seconds=1)
    client.update_table(made, ["expires"], retry=retry())
    with pytest.raises(api_exceptions.NotFound):
        client.get_table(f"{PROJECT}.{regional}.brief", retry=retry())


def test_error_in_a_transaction_fails_the_job_and_rolls_it_back(
    client: bigquery.Client, regional: str
) -> None:
    """The commit's lease fence: ERROR() ends the script, the open transaction is undone."""
    run(client, f"CREATE TABLE `{regional}`.`t` (a INT64)")
    with pytest.raises(api_exceptions.BadRequest, match="lease lost"):
        run(
            client,
            f"BEGIN TRANSACTION;\nINSERT INTO `{regional}`.`t` (a) VALUES (1);\n"
            "SELECT IF(FALSE, 1, ERROR('lease lost'));\nCOMMIT TRANSACTION;",
        )
    assert run(client, f"SELECT COUNT(*) FROM `{regional}`.`t`")[0][0] == 0


def test_creating_a_table_that_exists_is_refused(client: bigquery.Client, regional: str) -> None:
    """The lease table: of two syncds creating it, one is refused."""
    run(client, f"CREATE TABLE `{regional}`.`lease` AS SELECT 1 AS n")
    with pytest.raises(api_exceptions.GoogleAPICallError, match="(?i)already exists"):
        run(client, f"CREATE TABLE `{regional}`.`lease` AS SELECT 2 AS n")


def test_a_csv_load_reads_an_empty_field_as_null_quoted_or_not(
    client: bigquery.Client, regional: str, tmp_path: Any
) -> None:
    # nullMarker defaults to the empty string: why syncd stages no CSV for BigQuery
    bucket = gcp_support.new_bucket()
    stage = gcp_support.make_stage(bucket)
    csv = tmp_path / "rows.csv"
    csv.write_text('s,n\n"",1\n,2\n"x",3\n')
    uri = stage.put(csv, "rows.csv")
    table = f"{PROJECT}.{regional}.csv_nulls"
    config = bigquery.LoadJobConfig(
        schema=[bigquery.SchemaField("s", "STRING"), bigquery.SchemaField("n", "INT64")],
        source_format="CSV",
        skip_leading_rows=1,
    )
    client.load_table_from_uri(uri, table, job_config=config, location=REGION).result(
        timeout=gcp_support.JOB_TIMEOUT
    )
    rows = run(client, f"SELECT s, n FROM `{table}` ORDER BY n", location=REGION)
    assert [(r["s"], r["n"]) for r in rows] == [(None, 1), (None, 2), ("x", 3)]
