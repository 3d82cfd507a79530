"""BigQueryWarehouse over the GCS and BigQuery stand-ins: tables, commits, attach, upgrade from
hauser, rollback, and the mapping of Google's errors (see `gcp_support` for where the stand-ins
differ from Google and how these tests deal with it)."""

# ruff: noqa: F811 - fixtures are imported by name from gcp_support

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import gcp_support
import pytest
from gcp_support import (  # noqa: F401 (fixtures)
    PROJECT,
    bigquery_emulator,
    bq_dataset,
    bq_rows,
    bq_table,
    bq_table_names,
    gcs_bucket,
    gcs_emulator,
    make_stage,
    make_warehouse,
)
from google.api_core import exceptions as api_exceptions
from google.cloud import bigquery

from syncd.batch import BatchKey, StagedBatch, SyncRecord, TransformedBatch
from syncd.errors import TerminalLoadError
from syncd.timeutil import parse_timestamp
from warehouses import bigquery_sql
from warehouses.bigquery import (
    SCRATCH_EXPIRATION,
    SCRATCH_SWEEP_AGE,
    BigQueryWarehouse,
    staging_tables,
)
from warehouses.bigquery_jobs import map_bigquery_error
from warehouses.gcs import GCSStage

if TYPE_CHECKING:
    from conftest import StagedFiles

#: Long enough that the tests' 2024 partitions have not expired (BigQuery, and the stand-in,
#: drop the rows of a partition whose date plus the expiration is past).
PARTITION_EXPIRATION = timedelta(days=3650)


@pytest.fixture
def stage(gcs_bucket: str) -> GCSStage:
    return make_stage(gcs_bucket, "hauser-uploads/")


@pytest.fixture
def warehouse(bq_dataset: str, staged_files: StagedFiles) -> Iterator[BigQueryWarehouse]:
    made = make_warehouse(
        bq_dataset, partition_expiration=PARTITION_EXPIRATION, clustering=("EventType",)
    )
    made.ensure_tables(staged_files.columns)
    yield made
    made.close()


def staged_batch(
    stage: GCSStage, staged_files: StagedFiles, start: str, count: int = 3, **options: Any
) -> tuple[StagedBatch, SyncRecord]:
    key = staged_files.key(start)
    rows = options.pop("rows", None) or staged_files.rows(key, count)
    batch = staged_files.write(key, rows, options.pop("fmt", "parquet"), **options)
    rejects_uri = None
    if batch.rejects_path is not None:
        rejects_uri = stage.put(batch.rejects_path, batch.rejects_path.name)
    staged = StagedBatch(batch, stage.put(batch.path, batch.path.name), rejects_uri)
    record = SyncRecord(
        batch_id=key.id,
        source=key.source,
        start=key.start,
        end=key.end,
        committed_at=key.end + timedelta(hours=1),
        operation_id=f"op-{key.id}",
        rows_loaded=batch.rows,
        rows_rejected=batch.rejected,
        bytes=batch.source_bytes,
        staged_uri=staged.uri,
    )
    return staged, record


@pytest.fixture
def commit(
    warehouse: BigQueryWarehouse, stage: GCSStage, staged_files: StagedFiles
) -> Callable[..., TransformedBatch]:
    def run(start: str, count: int = 3, **options: Any) -> TransformedBatch:
        staged, record = staged_batch(stage, staged_files, start, count, **options)
        warehouse.commit_batch(staged, record)
        return staged.batch

    return run


def count_calls(monkeypatch: pytest.MonkeyPatch, obj: Any, name: str) -> list[Any]:
    """Record the calls of `obj.name` (still calling it)."""
    calls: list[Any] = []
    original = getattr(obj, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("job_id"))
        return original(*args, **kwargs)

    monkeypatch.setattr(obj, name, spy)
    return calls


# -- tables ----------------------------------------------------------------------------------


def test_the_export_table_is_partitioned_by_day_on_event_start(
    warehouse: BigQueryWarehouse, bq_dataset: str
) -> None:
    partitioning = bq_table(bq_dataset, "fsexport").time_partitioning
    assert (partitioning.type_, partitioning.field) == ("DAY", "EventStart")


def test_partition_expiration_is_honoured(warehouse: BigQueryWarehouse, bq_dataset: str) -> None:
    expiration = bq_table(bq_dataset, "fsexport").time_partitioning.expiration_ms
    assert expiration == PARTITION_EXPIRATION.total_seconds() * 1000


def test_the_partition_expiration_is_the_warehouses_retention(
    warehouse: BigQueryWarehouse,
) -> None:
    caps = warehouse.capabilities
    assert (caps.retention, caps.retention_setting) == (
        PARTITION_EXPIRATION,
        "[bigquery] PartitionExpiration",
    )


def test_the_export_table_is_clustered_as_configured(
    warehouse: BigQueryWarehouse, bq_dataset: str
) -> None:
    assert bq_table(bq_dataset, "fsexport").clustering_fields == ["EventType"]


def test_custom_vars_is_a_json_column(warehouse: BigQueryWarehouse, bq_dataset: str) -> None:
    types = {f.name: f.field_type for f in bq_table(bq_dataset, "fsexport").schema}
    assert types["CustomVars"] == "JSON"


def test_a_missing_dataset_is_named_plainly(bigquery_emulator: Any) -> None:
    with pytest.raises(TerminalLoadError, match=r"dataset test:no_such_dataset does not exist"):
        make_warehouse("no_such_dataset").check()


# -- commits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "ndjson"])
def test_a_commit_loads_the_rows_as_staged(
    commit: Callable[..., TransformedBatch],
    bq_dataset: str,
    staged_files: StagedFiles,
    fmt: str,
) -> None:
    batch = commit("2024-03-01T00:00:00Z", fmt=fmt)
    got = [
        (r["IndvId"], r["EventStart"], r["CustomVars"], r["SyncdBatchId"])
        for r in bq_rows(bq_dataset, "fsexport", order_by="EventStart")
    ]
    want = [
        (r["IndvId"], r["EventStart"], r["CustomVars"], batch.key.id)
        for r in staged_files.rows(batch.key, 3)
    ]
    assert got == want


def test_ndjson_keeps_the_empty_string_apart_from_null(
    commit: Callable[..., TransformedBatch], bq_dataset: str, staged_files: StagedFiles
) -> None:
    key = staged_files.key("2024-03-01T00:00:00Z")
    rows = staged_files.rows(key, 2)
    rows[0]["PageUrl"], rows[1]["PageUrl"] = "", None
    commit("2024-03-01T00:00:00Z", rows=rows, fmt="ndjson")
    assert [r["PageUrl"] for r in bq_rows(bq_dataset, "fsexport", order_by="EventStart")] == [
        "",
        None,
    ]


def test_a_commit_writes_its_sync_row(
    commit: Callable[..., TransformedBatch], warehouse: BigQueryWarehouse
) -> None:
    batch = commit("2024-03-01T00:00:00Z", count=4)
    record = warehouse.sync_records()[-1]
    assert (record.batch_id, record.rows_loaded, record.end) == (batch.key.id, 4, batch.key.end)


def test_a_commit_loads_the_rejects(
    commit: Callable[..., TransformedBatch], bq_dataset: str
) -> None:
    commit("2024-03-01T00:00:00Z", rejects=[{"position": 7, "reason": "not an object", "raw": "1"}])
    got = [(r["Position"], r["Reason"], r["Raw"]) for r in bq_rows(bq_dataset, "fsrejects")]
    assert got == [(7, "not an object", "1")]


def test_a_commit_leaves_no_staging_tables(
    commit: Callable[..., TransformedBatch], bq_dataset: str
) -> None:
    commit("2024-03-01T00:00:00Z", rejects=[{"position": 3, "reason": "x", "raw": "1"}])
    assert bq_table_names(bq_dataset) == ["fsexport", "fsrejects", "fssync"]


def test_staging_tables_expire_within_a_day(
    warehouse: BigQueryWarehouse,
    stage: GCSStage,
    staged_files: StagedFiles,
    bq_dataset: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A crash after the loads leaves staging tables; each carries an expiration."""
    staged, record = staged_batch(
        stage,
        staged_files,
        "2024-03-01T00:00:00Z",
        rejects=[{"position": 1, "reason": "x", "raw": "1"}],
    )
    monkeypatch.setattr(bigquery_sql, "commit_script", _die)
    with pytest.raises(_Died):
        warehouse.commit_batch(staged, record)
    left = [n for n in bq_table_names(bq_dataset) if "__syncd_" in n]
    expires = [bq_table(bq_dataset, n).expires for n in left]
    horizon = datetime.now(timezone.utc) + SCRATCH_EXPIRATION + timedelta(minutes=5)
    assert len(left) == 3 and all(e is not None and e <= horizon for e in expires)


def test_start_up_sweeps_old_scratch_tables_of_this_export_table(
    warehouse: BigQueryWarehouse, bq_dataset: str, staged_files: StagedFiles
) -> None:
    client = gcp_support.shared_bigquery().client()
    for name in ("fsexport__syncd_segment_x_data", "fsexport__syncd_rollback", "other__syncd_y"):
        client.create_table(
            bigquery.Table(
                f"{PROJECT}.{bq_dataset}.{name}", schema=[bigquery.SchemaField("a", "INT64")]
            )
        )
    client.close()
    young = make_warehouse(bq_dataset, clock=lambda: datetime.now(timezone.utc))
    young.ensure_tables(staged_files.columns)
    kept = bq_table_names(bq_dataset)
    later = datetime.now(timezone.utc) + SCRATCH_SWEEP_AGE + timedelta(minutes=1)
    old = make_warehouse(bq_dataset, clock=lambda: later)
    old.ensure_tables(staged_files.columns)
    assert len(kept) == 6 and bq_table_names(bq_dataset) == [
        "fsexport",
        "fsrejects",
        "fssync",
        "other__syncd_y",
    ]


def test_drop_tables_drops_every_scratch_table_of_the_export_table_however_named(
    bq_dataset: str, staged_files: StagedFiles
) -> None:
    """A long batch id's staging tables are named after the export table's first 60
    characters (`staging_tables`): dropping the tables drops those too, not another table's."""
    export = "e" * 70
    warehouse = make_warehouse(bq_dataset, export_table=export)
    warehouse.ensure_tables(staged_files.columns)
    long_id = "segment_" + "x" * 120
    scratch = [staging_tables(export, long_id).data, f"{export}__syncd_short_data"]
    client = gcp_support.shared_bigquery().client()
    for name in [*scratch, "other__syncd_y"]:
        client.create_table(
            bigquery.Table(
                f"{PROJECT}.{bq_dataset}.{name}", schema=[bigquery.SchemaField("a", "INT64")]
            )
        )
    client.close()
    warehouse.drop_tables()
    assert scratch[0].startswith(export[:60] + "__syncd_") and bq_table_names(bq_dataset) == [
        "other__syncd_y"
    ]


def test_a_recommit_replaces_the_batch(
    commit: Callable[..., TransformedBatch], bq_dataset: str
) -> None:
    commit("2024-03-01T00:00:00Z", count=3)
    commit("2024-03-01T00:00:00Z", count=2)
    assert len(bq_rows(bq_dataset, "fsexport")) == 2


def test_a_file_that_does_not_load_surfaces_the_jobs_errors(
    warehouse: BigQueryWarehouse, stage: GCSStage, staged_files: StagedFiles
) -> None:
    staged, record = staged_batch(stage, staged_files, "2024-03-01T00:00:00Z")
    staged.batch.path.write_bytes(b"this is not parquet")
    broken = StagedBatch(staged.batch, stage.put(staged.batch.path, "broken.parquet"), None)
    with pytest.raises(
        TerminalLoadError, match=r"(?s)load gs://.*broken\.parquet.*\n  - invalid: .*No magic bytes"
    ):
        warehouse.commit_batch(broken, record)


def test_a_failed_transaction_leaves_nothing_of_the_batch(
    warehouse: BigQueryWarehouse,
    stage: GCSStage,
    staged_files: StagedFiles,
    bq_dataset: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    staged, record = staged_batch(stage, staged_files, "2024-03-01T00:00:00Z")
    original = bigquery_sql.commit_script

    def failing(*args: Any) -> str:
        script = original(*args)
        return script.replace(
            "COMMIT TRANSACTION;", "SELECT * FROM `no_such_table`;\nCOMMIT TRANSACTION;"
        )

    monkeypatch.setattr(bigquery_sql, "commit_script", failing)
    with pytest.raises(TerminalLoadError):
        warehouse.commit_batch(staged, record)
    assert (bq_rows(bq_dataset, "fsexport"), warehouse.sync_records()) == ([], [])


def test_batches_must_be_staged_on_gcs(
    warehouse: BigQueryWarehouse, stage: GCSStage, staged_files: StagedFiles
) -> None:
    staged, record = staged_batch(stage, staged_files, "2024-03-01T00:00:00Z")
    local = StagedBatch(staged.batch, str(staged.batch.path), None)
    with pytest.raises(TerminalLoadError, match="not a gs:// URI"):
        warehouse.commit_batch(local, record)


# -- load jobs: deterministic ids, attach instead of loading twice ---------------------------


def test_a_repeated_commit_attaches_to_the_finished_load_job(
    warehouse: BigQueryWarehouse,
    stage: GCSStage,
    staged_files: StagedFiles,
    bq_dataset: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A commit that dies after its load job (as after a crash) is redone without reloading."""
    staged, record = staged_batch(stage, staged_files, "2024-03-01T00:00:00Z")
    client = warehouse._client
    loads = count_calls(monkeypatch, client, "load_table_from_uri")
    with monkeypatch.context() as crash:
        crash.setattr(BigQueryWarehouse, "_write_row", _die)
        with pytest.raises(_Died):
            warehouse.commit_batch(staged, record)
    warehouse.commit_batch(staged, record)
    assert (len(loads), len(bq_rows(bq_dataset, "fsexport"))) == (1, 3)


def test_a_409_on_submission_attaches_to_the_existing_job(
    warehouse: BigQueryWarehouse,
    stage: GCSStage,
    staged_files: StagedFiles,
    bq_dataset: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reused job id answers 409 (as BigQuery does): the warehouse finds the job (in its
    dataset's single region) and attaches instead of loading again."""
    staged, record = staged_batch(stage, staged_files, "2024-03-01T00:00:00Z")
    client = warehouse._client
    with monkeypatch.context() as crash:
        crash.setattr(BigQueryWarehouse, "_write_row", _die)
        with pytest.raises(_Died):
            warehouse.commit_batch(staged, record)
    submitted = count_calls(monkeypatch, client, "load_table_from_uri")
    lookups = iter([api_exceptions.NotFound("raced")])  # the first lookup misses the job

    real_get_job = client.get_job

    def get_job(job_id: str, **kwargs: Any) -> Any:
        error = next(lookups, None)
        if error is not None:
            raise error
        return real_get_job(job_id, **kwargs)

    monkeypatch.setattr(client, "get_job", get_job)
    warehouse.commit_batch(staged, record)
    assert len(bq_rows(bq_dataset, "fsexport")) == 3 and len(submitted) == 1


def test_jobs_run_in_the_datasets_location(
    commit: Callable[..., TransformedBatch],
    warehouse: BigQueryWarehouse,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With Location empty (the default), every job call names the dataset's location."""
    locations: list[Any] = []
    client = warehouse._client
    for name in ("get_job", "load_table_from_uri", "query"):
        original = getattr(client, name)

        def spy(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            locations.append(kwargs.get("location"))
            return _original(*args, **kwargs)

        monkeypatch.setattr(client, name, spy)
    commit("2024-03-01T00:00:00Z")
    warehouse.sync_records()
    assert len(locations) >= 4 and set(locations) == {gcp_support.LOCATION}


def test_a_location_other_than_the_datasets_is_refused_plainly(bq_dataset: str) -> None:
    with pytest.raises(TerminalLoadError, match=r"Location is 'EU', but dataset .* is in"):
        make_warehouse(bq_dataset, location="EU").check()


def test_load_job_ids_are_derived_from_the_batch(
    warehouse: BigQueryWarehouse,
    stage: GCSStage,
    staged_files: StagedFiles,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    staged, record = staged_batch(stage, staged_files, "2024-03-01T00:00:00Z")
    loads = count_calls(monkeypatch, warehouse._client, "load_table_from_uri")
    warehouse.commit_batch(staged, record)
    assert loads[0].startswith(f"syncd_{warehouse.dataset}_fsexport_{staged.batch.key.id}_data_")


class _Died(Exception):
    pass


def _die(*args: Any, **kwargs: Any) -> None:
    raise _Died


# -- days: consistency and rollback ----------------------------------------------------------


def test_rollback_deletes_the_days_rows_and_keeps_the_others(
    commit: Callable[..., TransformedBatch], warehouse: BigQueryWarehouse, bq_dataset: str
) -> None:
    earlier = commit("2024-02-29T23:00:00Z", count=2)
    later = commit("2024-03-01T00:00:00Z", count=3)
    warehouse.rollback_days(later.key.day, later.key.day)
    assert {r["SyncdBatchId"] for r in bq_rows(bq_dataset, "fsexport")} == {earlier.key.id}


def test_rollback_counts_what_it_deleted(
    commit: Callable[..., TransformedBatch], warehouse: BigQueryWarehouse
) -> None:
    batch = commit("2024-03-01T00:00:00Z", count=3)
    result = warehouse.rollback_days(batch.key.day, batch.key.day)
    assert (result.rows_deleted, result.sync_rows_deleted) == (3, 1)


def test_rows_without_a_sync_row_make_their_day_inconsistent(
    commit: Callable[..., TransformedBatch], warehouse: BigQueryWarehouse, bq_dataset: str
) -> None:
    batch = commit("2024-03-01T00:00:00Z")
    client = gcp_support.shared_bigquery().client()
    client.query(
        f"DELETE FROM `{bq_dataset}`.`fssync` WHERE TRUE",  # noqa: S608 (test names)
        job_retry=None,
    ).result()
    assert warehouse.inconsistent_days(batch.key.day) == [batch.key.day]


@pytest.fixture
def strict_warehouse(warehouse: BigQueryWarehouse, bq_dataset: str) -> BigQueryWarehouse:
    """The export table as a user may set it: queries must filter on EventStart so that
    partitions can be eliminated (BigQuery refuses any other)."""
    client = gcp_support.shared_bigquery().client()
    table = client.get_table(f"{PROJECT}.{bq_dataset}.fsexport")
    table.require_partition_filter = True
    client.update_table(table, ["require_partition_filter"])
    client.close()
    return warehouse


def test_require_partition_filter_is_set_as_configured(
    bq_dataset: str, staged_files: StagedFiles
) -> None:
    made = make_warehouse(bq_dataset, require_partition_filter=True)
    made.ensure_tables(staged_files.columns)
    assert bq_table(bq_dataset, "fsexport").require_partition_filter is True


def rows_in(dataset: str, day: str) -> list[str]:
    """The batch ids of the export rows of one day (read with a partition filter)."""
    client = gcp_support.shared_bigquery().client()
    job = client.query(
        f"SELECT SyncdBatchId FROM `{dataset}`.`fsexport` "  # noqa: S608 (test names)
        f"WHERE EventStart >= TIMESTAMP '{day}' "
        f"AND EventStart < TIMESTAMP_ADD(TIMESTAMP '{day}', INTERVAL 1 DAY)",
        job_retry=None,
    )
    ids = [row[0] for row in job.result()]
    client.close()
    return ids


def test_every_statement_filters_on_the_partition_column(
    strict_warehouse: BigQueryWarehouse,
    stage: GCSStage,
    staged_files: StagedFiles,
    bq_dataset: str,
) -> None:
    """Commit, re-commit, the consistency check and rollback all bound EventStart."""
    staged, record = staged_batch(stage, staged_files, "2024-03-01T00:00:00Z")
    strict_warehouse.commit_batch(staged, record)
    strict_warehouse.commit_batch(staged, record)
    assert rows_in(bq_dataset, "2024-03-01") == [record.batch_id] * 3
    assert strict_warehouse.inconsistent_days(record.start.date()) == []  # type: ignore[union-attr]
    day = record.start.date()  # type: ignore[union-attr]
    assert strict_warehouse.rollback_days(day, day).rows_deleted == 3
    assert rows_in(bq_dataset, "2024-03-01") == []


def test_a_legacy_batch_is_bounded_by_its_staged_rows(
    strict_warehouse: BigQueryWarehouse,
    stage: GCSStage,
    staged_files: StagedFiles,
    bq_dataset: str,
) -> None:
    """A bundle may hold events from before its window (processed late): a re-commit still
    replaces all of them, under a filter BigQuery can eliminate partitions with."""
    window = staged_files.key("2024-03-02T00:00:00Z")
    key = BatchKey(window.start, window.end, "legacy", (7,))
    late = staged_files.rows(staged_files.key("2024-03-01T22:00:00Z"), 2)
    batch = staged_files.write(key, [*late, *staged_files.rows(key, 1)])
    staged = StagedBatch(batch, stage.put(batch.path, batch.path.name), None)
    record = SyncRecord(
        batch_id=key.id,
        source="legacy",
        start=key.start,
        end=key.end,
        committed_at=key.end,
        operation_id="",
        rows_loaded=batch.rows,
        rows_rejected=0,
        bytes=batch.source_bytes,
        staged_uri=staged.uri,
        bundle_ids=(7,),
    )
    strict_warehouse.commit_batch(staged, record)
    strict_warehouse.commit_batch(staged, record)
    assert (rows_in(bq_dataset, "2024-03-01"), rows_in(bq_dataset, "2024-03-02")) == (
        [key.id] * 2,
        [key.id],
    )


# -- upgrade from hauser ---------------------------------------------------------------------

HAUSER_EXPORT = [("IndvId", "INTEGER"), ("EventStart", "TIMESTAMP"), ("CustomVars", "STRING")]
HAUSER_SYNC = [("ID", "INTEGER"), ("Processed", "TIMESTAMP"), ("BundleEndTime", "TIMESTAMP")]
HAUSER_END = parse_timestamp("2024-02-29T23:00:00Z")
CUSTOM_VARS_TEXT = '{"user_plan_str":"pro"}'


@pytest.fixture
def hauser_dataset(bq_dataset: str) -> str:
    """A dataset as hauser left it: an ingestion-time partitioned export table, all columns
    NULLABLE and CustomVars a STRING, one old row, and its SyncTable with one row."""
    client = gcp_support.shared_bigquery().client()
    export = bigquery.Table(
        f"{PROJECT}.{bq_dataset}.fsexport",
        schema=[bigquery.SchemaField(n, t, mode="NULLABLE") for n, t in HAUSER_EXPORT],
    )
    export.time_partitioning = bigquery.TimePartitioning(type_="DAY")
    client.create_table(export)
    sync = bigquery.Table(
        f"{PROJECT}.{bq_dataset}.fssync",
        schema=[bigquery.SchemaField(n, t, mode="NULLABLE") for n, t in HAUSER_SYNC],
    )
    client.create_table(sync)
    for statement in (
        f"INSERT INTO `{bq_dataset}`.`fsexport` (IndvId, EventStart, CustomVars) "  # noqa: S608
        "VALUES (1, TIMESTAMP '2024-02-29 22:30:00+00', '{\"a\":1}')",
        f"INSERT INTO `{bq_dataset}`.`fssync` (ID, Processed, BundleEndTime) "  # noqa: S608
        "VALUES (-1, TIMESTAMP '2024-03-01 00:10:00+00', TIMESTAMP '2024-02-29 23:00:00+00')",
    ):
        client.query(statement, job_retry=None).result()
    client.close()
    return bq_dataset


@pytest.fixture
def hauser_warehouse(hauser_dataset: str) -> Iterator[BigQueryWarehouse]:
    made = make_warehouse(hauser_dataset)
    yield made
    made.close()


def test_a_hauser_table_keeps_its_columns_first_and_gains_the_new_ones(
    hauser_warehouse: BigQueryWarehouse, staged_files: StagedFiles
) -> None:
    columns = hauser_warehouse.ensure_tables(staged_files.columns)
    assert [c.name for c in columns][:3] == ["IndvId", "EventStart", "CustomVars"]
    assert {c.name for c in staged_files.columns} <= {c.name for c in columns}


def test_a_hauser_table_stays_ingestion_time_partitioned_with_string_custom_vars(
    hauser_warehouse: BigQueryWarehouse, hauser_dataset: str, staged_files: StagedFiles
) -> None:
    hauser_warehouse.ensure_tables(staged_files.columns)
    table = bq_table(hauser_dataset, "fsexport")
    types = {f.name: f.field_type for f in table.schema}
    assert (table.time_partitioning.field, types["CustomVars"]) == (None, "STRING")


def test_a_hauser_table_keeps_loaded_days_whatever_their_age(
    hauser_dataset: str, staged_files: StagedFiles
) -> None:
    """Its partitions are by ingestion time: expiration counts from the load, not EventStart."""
    made = make_warehouse(hauser_dataset, partition_expiration=timedelta(days=1))
    made.ensure_tables(staged_files.columns)
    assert made.capabilities.retention is None


def test_a_hauser_sync_table_gives_the_resume_point(
    hauser_warehouse: BigQueryWarehouse, staged_files: StagedFiles
) -> None:
    hauser_warehouse.ensure_tables(staged_files.columns)
    assert [r.end for r in hauser_warehouse.sync_records()] == [HAUSER_END]


def test_a_hauser_table_is_continued_with_custom_vars_as_json_text(
    hauser_warehouse: BigQueryWarehouse,
    hauser_dataset: str,
    stage: GCSStage,
    staged_files: StagedFiles,
) -> None:
    columns = hauser_warehouse.ensure_tables(staged_files.columns)
    hauser_files = type(staged_files)(staged_files.folder, columns)
    key = hauser_files.key("2024-02-29T23:00:00Z")
    rows = hauser_files.rows(key, 1, CustomVars=CUSTOM_VARS_TEXT)
    staged, record = staged_batch(stage, hauser_files, "2024-02-29T23:00:00Z", rows=rows)
    hauser_warehouse.commit_batch(staged, record)
    rows = bq_rows(hauser_dataset, "fsexport", order_by="EventStart")
    assert [(r["IndvId"], r["CustomVars"]) for r in rows] == [
        (1, '{"a":1}'),
        (5_000_000_000_000_000, CUSTOM_VARS_TEXT),
    ]


def test_a_hauser_sync_table_is_continued(
    hauser_warehouse: BigQueryWarehouse, stage: GCSStage, staged_files: StagedFiles
) -> None:
    columns = hauser_warehouse.ensure_tables(staged_files.columns)
    hauser_files = type(staged_files)(staged_files.folder, columns)
    key = hauser_files.key("2024-02-29T23:00:00Z")
    rows = hauser_files.rows(key, 2, CustomVars=CUSTOM_VARS_TEXT)
    staged, record = staged_batch(stage, hauser_files, "2024-02-29T23:00:00Z", rows=rows)
    hauser_warehouse.commit_batch(staged, record)
    assert [r.end for r in hauser_warehouse.sync_records()] == [HAUSER_END, record.end]


# -- errors (what is transient: test_google_cloud.py) -------------------------------------


def test_a_bad_request_is_terminal_and_lists_the_jobs_errors() -> None:
    error = api_exceptions.BadRequest(
        "Error while reading data",
        errors=[{"reason": "invalid", "message": "bad value in row 7", "location": "gs://b/x"}],
    )
    mapped = map_bigquery_error(error, "load gs://b/x")
    assert isinstance(
        mapped, TerminalLoadError
    ) and "invalid: bad value in row 7 (at gs://b/x)" in str(mapped)


# -- live: real BigQuery and GCS, when SYNCD_TEST_BIGQUERY_* name them -----------------------

LIVE = {
    name: os.environ.get(f"SYNCD_TEST_BIGQUERY_{name}", "")
    for name in ("PROJECT", "DATASET", "BUCKET")
}


@pytest.mark.live
@pytest.mark.skipif(
    not all(LIVE.values()),
    reason="set SYNCD_TEST_BIGQUERY_PROJECT, _DATASET and _BUCKET to run against Google",
)
def test_live_commit_and_rollback(staged_files: StagedFiles) -> None:
    stage = GCSStage(LIVE["BUCKET"], f"syncd-test-{os.getpid()}/", project=LIVE["PROJECT"])
    warehouse = BigQueryWarehouse(
        LIVE["PROJECT"],
        LIVE["DATASET"],
        export_table=f"syncd_test_export_{os.getpid()}",
        sync_table=f"syncd_test_sync_{os.getpid()}",
        rejects_table=f"syncd_test_rejects_{os.getpid()}",
    )
    try:
        warehouse.check()
        stage.check()
        warehouse.ensure_tables(staged_files.columns)
        staged, record = staged_batch(stage, staged_files, "2024-03-01T00:00:00Z")
        warehouse.commit_batch(staged, record)
        warehouse.commit_batch(staged, record)
        assert [r.rows_loaded for r in warehouse.sync_records()] == [3]
        assert warehouse.rollback_days(record.start.date(), record.start.date()).rows_deleted == 3  # type: ignore[union-attr]
    finally:
        warehouse.close()


def test_csv_is_not_staged_for_bigquery() -> None:
    # a CSV load cannot keep NULL and "" apart (see the stand-in's CSV test)
    assert "csv" not in BigQueryWarehouse.capabilities.staging_formats
