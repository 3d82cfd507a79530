"""RedshiftWarehouse through the real redshift_connector, against the Redshift proxy (PostgreSQL
behind it) and moto S3: COPY text, types, loads, truncation, load errors, hauser upgrade."""

# ruff: noqa: F811 - fixtures are imported by name from aws_support
from __future__ import annotations

import gzip
import logging
from collections.abc import Callable, Iterator
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from aws_support import (  # noqa: F401 - fixtures
    IAM_ROLE,
    AwsEnv,
    TlsServer,
    aws,
    bucket,
    case_sensitive_proxy,
    moto_s3,
    postgres,
    redshift_proxy,
    redshift_warehouse,
    schema,
    tls_proxy,
)

from standins.redshift_proxy import RedshiftProxy
from syncd.batch import StagedBatch, StagedFormat, SyncRecord, TransformedBatch
from syncd.errors import TerminalLoadError, TransientLoadError
from syncd.fields import export_columns
from syncd.pipeline import output_rules
from syncd.timeutil import UTC
from syncd.transform.columnar import transform
from warehouses.redshift import (
    CSV_NULL,
    RedshiftWarehouse,
    endpoint_region,
    map_redshift_error,
    quote_literal,
    redact,
    truncate_utf8,
)
from warehouses.s3 import S3Stage
from warehouses.sql import Query

if TYPE_CHECKING:
    from conftest import StagedFiles

COMMITTED_AT = datetime(2024, 3, 5, 12, 0, tzinfo=UTC)
SECRET = "wJalrXUtnFEMI-K7MDENG-SECRET"
CREDENTIALS = f"aws_access_key_id=AKIAEXAMPLE;aws_secret_access_key={SECRET}"


def record_for(batch: TransformedBatch, uri: str) -> SyncRecord:
    return SyncRecord(
        batch_id=batch.key.id,
        source=batch.key.source,
        start=batch.key.start,
        end=batch.key.end,
        committed_at=COMMITTED_AT,
        rows_loaded=batch.rows,
        rows_rejected=batch.rejected,
        staged_uri=uri,
    )


@pytest.fixture
def stage(aws: AwsEnv) -> S3Stage:
    return S3Stage(aws.bucket, endpoint_url=aws.moto.endpoint_url, client=aws.moto.client())


@pytest.fixture
def make_warehouse(
    aws: AwsEnv, redshift_proxy: RedshiftProxy
) -> Iterator[Callable[..., RedshiftWarehouse]]:
    made: list[RedshiftWarehouse] = []

    def make(**options: Any) -> RedshiftWarehouse:
        wh = redshift_warehouse(aws.schema, **options)
        made.append(wh)
        return wh

    yield make
    for wh in made:
        wh.close()
    redshift_proxy.clear_faults()


@pytest.fixture
def warehouse(make_warehouse: Callable[..., RedshiftWarehouse]) -> RedshiftWarehouse:
    wh = make_warehouse()
    wh.ensure_tables(export_columns())
    return wh


def stage_batch(
    staged_files: StagedFiles,
    stage: S3Stage,
    start: str = "2024-03-01T00:00:00Z",
    count: int = 3,
    fmt: StagedFormat = "csv",
    **values: Any,
) -> StagedBatch:
    key = staged_files.key(start)
    rejects = [{"position": count, "reason": "not an object", "raw": "42"}]
    rows = staged_files.rows(key, count, **values)
    batch = staged_files.write(key, rows, fmt, rejects, csv_null=CSV_NULL)
    assert batch.rejects_path is not None
    return StagedBatch(
        batch=batch,
        uri=stage.put(batch.path, batch.path.name),
        rejects_uri=stage.put(batch.rejects_path, batch.rejects_path.name),
    )


@pytest.fixture
def commit(
    warehouse: RedshiftWarehouse, staged_files: StagedFiles, stage: S3Stage
) -> Callable[..., StagedBatch]:
    def run(**options: Any) -> StagedBatch:
        staged = stage_batch(staged_files, stage, **options)
        warehouse.commit_batch(staged, record_for(staged.batch, staged.uri))
        return staged

    return run


def test_the_copy_text_is_exact(
    commit: Callable[..., StagedBatch], aws: AwsEnv, redshift_proxy: RedshiftProxy
) -> None:
    staged = commit(count=1)
    assert redshift_proxy.copies[-1] == (
        f'COPY "{aws.schema}"."fsexport" ("IndvId", "SessionId", "EventStart", "EventType", '
        '"PageUrl", "EventCumulativeLayoutShift", "CustomVars", "SyncdBatchId", "SyncdLoadedAt") '
        f"FROM '{staged.uri}' IAM_ROLE '{IAM_ROLE}' REGION 'us-east-1' "
        "FORMAT AS CSV IGNOREHEADER 1 GZIP TIMEFORMAT 'auto' TRUNCATECOLUMNS NULL AS '\\0'"
    )


def test_parquet_copies_as_parquet_without_region(
    commit: Callable[..., StagedBatch], redshift_proxy: RedshiftProxy
) -> None:
    """COPY from columnar data formats refuses REGION (the stand-in too): it is left out."""
    staged = commit(count=1, fmt="parquet")
    assert redshift_proxy.copies[-1].endswith(
        f"FROM '{staged.uri}' IAM_ROLE '{IAM_ROLE}' FORMAT AS PARQUET"
    )


@pytest.mark.parametrize(
    ("host", "region"),
    [
        ("c.abc123.us-east-1.redshift.amazonaws.com", "us-east-1"),
        ("wg.123456789012.eu-west-1.redshift-serverless.amazonaws.com", "eu-west-1"),
        ("c.abc.cn-north-1.redshift.amazonaws.com.cn", "cn-north-1"),
        ("c.abc.us-gov-west-1.redshift.amazonaws.com", "us-gov-west-1"),
        ("127.0.0.1", None),
        ("warehouse.example.com", None),
    ],
)
def test_the_cluster_region_is_read_from_the_endpoint(host: str, region: str | None) -> None:
    assert endpoint_region(host) == region


def test_parquet_from_a_bucket_in_another_region_is_refused_naming_the_keys(
    staged_files: StagedFiles, stage: S3Stage
) -> None:
    wh = RedshiftWarehouse(
        host="c.abc123.us-east-1.redshift.amazonaws.com",
        database="d",
        user="u",
        iam_role=IAM_ROLE,
        region="us-west-2",
    )
    staged = stage_batch(staged_files, stage, count=1, fmt="parquet")
    with pytest.raises(TerminalLoadError, match=r"\[redshift\] Region 'us-west-2'.*StagedFormat"):
        wh.copy_statement(staged)
    csv = stage_batch(staged_files, stage, count=1, fmt="csv")
    assert "REGION 'us-west-2'" in wh.copy_statement(csv)  # CSV may cross Regions


def test_parquet_across_regions_is_a_config_error() -> None:
    from syncd.config import settings_from_mapping
    from syncd.errors import ConfigError
    from warehouses.registry import build_stage, build_warehouse

    config = {
        "Provider": "aws",
        "StagedFormat": "parquet",
        "s3": {"Bucket": "b", "Region": "us-west-2"},
        "redshift": {
            "Host": "c.abc123.us-east-1.redshift.amazonaws.com",
            "DB": "d",
            "User": "u",
            "IAMRole": IAM_ROLE,
        },
    }
    settings = settings_from_mapping(config, {}).settings
    with pytest.raises(ConfigError, match=r"Region 'us-west-2'.*us-east-1.*StagedFormat"):
        build_warehouse(settings, build_stage(settings))
    config["StagedFormat"] = "csv"
    settings = settings_from_mapping(config, {}).settings
    assert isinstance(build_warehouse(settings, build_stage(settings)), RedshiftWarehouse)


def test_credentials_never_reach_logs_errors_or_the_proxy_record(
    make_warehouse: Callable[..., RedshiftWarehouse],
    staged_files: StagedFiles,
    stage: S3Stage,
    redshift_proxy: RedshiftProxy,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    wh = make_warehouse(iam_role="", credentials=CREDENTIALS)
    wh.ensure_tables(export_columns())
    staged = stage_batch(staged_files, stage, count=1)
    wh.commit_batch(staged, record_for(staged.batch, staged.uri))
    redshift_proxy.fail_copies(1, f"injected failure mentioning {CREDENTIALS}")
    with pytest.raises(TerminalLoadError) as caught:
        wh.commit_batch(staged, record_for(staged.batch, staged.uri))
    seen = str(caught.value) + caplog.text + "".join(capsys.readouterr()) + repr(wh)
    seen += "".join(redshift_proxy.copies[-2:])
    assert SECRET not in seen and "CREDENTIALS '***'" in redshift_proxy.copies[-1]


def test_tables_get_redshift_types_in_bytes(
    make_warehouse: Callable[..., RedshiftWarehouse], aws: AwsEnv
) -> None:
    make_warehouse(varchar_max=1024).ensure_tables(export_columns())
    types = dict(
        aws.sql(
            "SELECT column_name, data_type || COALESCE('(' || character_maximum_length || ')', '') "
            "FROM information_schema.columns WHERE table_schema = %s AND table_name = 'fsexport'",
            aws.schema,
        )
    )
    assert (types["indvid"], types["eventstart"], types["pageurl"], types["customvars"]) == (
        "bigint",
        "timestamp without time zone",
        "character varying(1024)",
        "character varying(65535)",
    )


def test_the_export_table_is_sorted_by_event_start(warehouse: RedshiftWarehouse) -> None:
    query = warehouse._create_export_table('"fsexport"', export_columns())
    assert query.sql.endswith(' SORTKEY ("EventStart")')


def test_columns_are_reported_in_syncds_spelling(warehouse: RedshiftWarehouse) -> None:
    names = [c.name for c in warehouse.ensure_tables(export_columns())]
    assert names == [c.name for c in export_columns()]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_commit_loads_rows_and_rejects(
    commit: Callable[..., StagedBatch], aws: AwsEnv, fmt: StagedFormat
) -> None:
    staged = commit(count=4, fmt=fmt)
    counts = aws.sql(
        f'SELECT (SELECT count(*) FROM "{aws.schema}".fsexport WHERE syncdbatchid = %s), '  # noqa: S608
        f'(SELECT count(*) FROM "{aws.schema}".fsrejects)',
        staged.batch.key.id,
    )
    assert counts == [(4, 1)]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_values_arrive_typed_with_null_and_empty_apart(
    commit: Callable[..., StagedBatch], aws: AwsEnv, fmt: StagedFormat
) -> None:
    commit(count=1, fmt=fmt, EventType="", PageUrl=None)
    rows = aws.sql(
        f"SELECT indvid, eventstart, eventcumulativelayoutshift, eventtype, pageurl, customvars "  # noqa: S608
        f'FROM "{aws.schema}".fsexport'
    )
    assert rows == [
        (
            5_000_000_000_000_000,
            datetime(2024, 3, 1),
            0.25,
            "",
            None,
            '{"user_plan_str":"pro","evt_total_real":9.5}',
        )
    ]


def transform_and_stage(
    wh: RedshiftWarehouse,
    staged_files: StagedFiles,
    stage: S3Stage,
    events: list[dict[str, Any]],
    fmt: StagedFormat,
) -> StagedBatch:
    """`events` as FullStory exports them, through syncd's transform with the warehouse's
    rules (as the pipeline runs it), staged in S3."""
    key = staged_files.key("2024-03-01T00:00:00Z")
    staged_files.folder.mkdir(parents=True, exist_ok=True)
    source = staged_files.folder / "export.ndjson.gz"
    source.write_bytes(gzip.compress(b"".join(orjson.dumps(e) + b"\n" for e in events)))
    columns = wh.ensure_tables(export_columns())
    rules = output_rules(wh.capabilities)
    batch = transform(
        key, source, staged_files.folder / "out", columns, fmt, COMMITTED_AT, rules=rules
    )
    rejects = batch.rejects_path
    return StagedBatch(
        batch=batch,
        uri=stage.put(batch.path, batch.path.name),
        rejects_uri=stage.put(rejects, rejects.name) if rejects else None,
    )


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_fullstorys_long_strings_are_cut_to_varcharmax_whatever_the_format(
    make_warehouse: Callable[..., RedshiftWarehouse],
    staged_files: StagedFiles,
    stage: S3Stage,
    aws: AwsEnv,
    fmt: StagedFormat,
) -> None:
    """FullStory sends 70,000-character strings; Parquet takes no TRUNCATECOLUMNS, so the
    transform cuts them (at a character) to VarCharMax bytes, and a CustomVars over 65535
    bytes (it cannot be cut and stay JSON) is quarantined with its reason."""
    wh = make_warehouse()
    start = "2024-03-01T00:00:00.000Z"
    events = [
        {"IndvId": 1, "EventStart": start, "PageUrl": "u" * 70_000, "EventType": "é" * 40_000},
        {"IndvId": 2, "EventStart": start, "user_blob_str": "x" * 70_000},
    ]
    staged = transform_and_stage(wh, staged_files, stage, events, fmt)
    wh.commit_batch(staged, record_for(staged.batch, staged.uri))
    rows = aws.sql(
        f'SELECT indvid, octet_length(pageurl), octet_length(eventtype) FROM "{aws.schema}".fsexport'  # noqa: S608
    )
    assert rows == [(1, 65535, 65534)]  # 32767 whole "é"s
    (reason,) = aws.sql(f'SELECT reason FROM "{aws.schema}".fsrejects')  # noqa: S608
    assert reason[0].startswith("CustomVars: its JSON text is 70020 bytes, more than the 65535")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_long_strings_are_cut_at_a_character_boundary(
    make_warehouse: Callable[..., RedshiftWarehouse],
    staged_files: StagedFiles,
    stage: S3Stage,
    aws: AwsEnv,
    fmt: StagedFormat,
) -> None:
    wh = make_warehouse(varchar_max=5)
    start = "2024-03-01T00:00:00.000Z"
    events = [{"IndvId": 1, "EventStart": start, "PageUrl": "ééé"}]  # 6 bytes
    staged = transform_and_stage(wh, staged_files, stage, events, fmt)
    wh.commit_batch(staged, record_for(staged.batch, staged.uri))
    assert aws.sql(f'SELECT pageurl FROM "{aws.schema}".fsexport') == [("éé",)]  # noqa: S608


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("custom_vars", ["varchar", "super"])
def test_null_and_the_empty_string_stay_apart_through_syncds_transform(
    make_warehouse: Callable[..., RedshiftWarehouse],
    staged_files: StagedFiles,
    stage: S3Stage,
    aws: AwsEnv,
    fmt: StagedFormat,
    custom_vars: str,
) -> None:
    """Redshift loads an empty CSV field as "" (quoted or not): syncd's CSV writes NULL as a
    NUL-only field, loaded by NULL AS '\\0'; a string spelling Redshift's default null
    marker (\\N) stays a string, timestamps and SUPER keep their NULLs and values."""
    if custom_vars == "super" and fmt == "parquet":
        pytest.skip("SUPER CustomVars stage CSV only")
    wh = make_warehouse(custom_vars=custom_vars)
    start = "2024-03-01T00:00:00.000Z"
    events = [
        {"IndvId": 1, "EventStart": start, "EventType": "", "PageUrl": None, "PageName": "\\N"},
        {"IndvId": 2, "EventStart": start, "SessionStart": start, "user_plan_str": "pro"},
    ]
    staged = transform_and_stage(wh, staged_files, stage, events, fmt)
    wh.commit_batch(staged, record_for(staged.batch, staged.uri))
    rows = aws.sql(
        "SELECT indvid, eventtype, pageurl, pagename, sessionstart, customvars "  # noqa: S608
        f'FROM "{aws.schema}".fsexport ORDER BY indvid'
    )
    plan = {"user_plan_str": "pro"}
    assert rows == [
        (1, "", None, "\\N", None, {} if custom_vars == "super" else "{}"),
        (
            2,
            None,
            None,
            None,
            datetime(2024, 3, 1),
            plan if custom_vars == "super" else '{"user_plan_str":"pro"}',
        ),
    ]


def test_custom_vars_as_super_hold_parsed_json(
    make_warehouse: Callable[..., RedshiftWarehouse],
    staged_files: StagedFiles,
    stage: S3Stage,
    aws: AwsEnv,
) -> None:
    wh = make_warehouse(custom_vars="super")
    wh.ensure_tables(export_columns())
    staged = stage_batch(staged_files, stage, count=1)
    wh.commit_batch(staged, record_for(staged.batch, staged.uri))
    assert aws.sql(f'SELECT customvars FROM "{aws.schema}".fsexport') == [  # noqa: S608
        ({"user_plan_str": "pro", "evt_total_real": 9.5},)
    ]


def test_custom_vars_as_super_stage_csv_only(
    make_warehouse: Callable[..., RedshiftWarehouse],
) -> None:
    assert make_warehouse(custom_vars="super").capabilities.staging_formats == ("csv",)


def test_truncate_utf8_keeps_whole_characters() -> None:
    assert truncate_utf8("a€b", 3) == "a"


def test_a_copy_failure_names_line_column_and_reason(
    warehouse: RedshiftWarehouse, staged_files: StagedFiles, stage: S3Stage
) -> None:
    from syncd.fields import Column, FieldType

    staged_files.columns = (Column("IndvId", FieldType.STRING), *staged_files.columns[1:])
    staged = stage_batch(staged_files, stage, count=2, IndvId="not-a-number")
    with pytest.raises(TerminalLoadError, match=r"line 2, column indvid: invalid input syntax"):
        warehouse.commit_batch(staged, record_for(staged.batch, staged.uri))


def test_a_failed_copy_leaves_nothing(
    warehouse: RedshiftWarehouse,
    staged_files: StagedFiles,
    stage: S3Stage,
    redshift_proxy: RedshiftProxy,
    aws: AwsEnv,
) -> None:
    staged = stage_batch(staged_files, stage)
    redshift_proxy.fail_copies(1, "Invalid digit, Value 'x', Pos 0, Type: Long")
    with pytest.raises(TerminalLoadError):
        warehouse.commit_batch(staged, record_for(staged.batch, staged.uri))
    assert aws.sql(f'SELECT count(*) FROM "{aws.schema}".fssync') == [(0,)]  # noqa: S608


def test_an_s3_slowdown_is_transient_and_the_retry_loads(
    warehouse: RedshiftWarehouse,
    staged_files: StagedFiles,
    stage: S3Stage,
    redshift_proxy: RedshiftProxy,
) -> None:
    staged = stage_batch(staged_files, stage)
    redshift_proxy.fail_copies(
        1, "S3ServiceException:Please reduce your request rate.,Status 503,Error SlowDown", s3=True
    )
    with pytest.raises(TransientLoadError, match="SlowDown"):
        warehouse.commit_batch(staged, record_for(staged.batch, staged.uri))
    warehouse.commit_batch(staged, record_for(staged.batch, staged.uri))
    assert [r.batch_id for r in warehouse.sync_records()] == [staged.batch.key.id]


def test_a_missing_staged_object_is_terminal(
    warehouse: RedshiftWarehouse, staged_files: StagedFiles, stage: S3Stage
) -> None:
    staged = stage_batch(staged_files, stage)
    stage.delete(staged.uri)
    with pytest.raises(TerminalLoadError, match="does not exist"):
        warehouse.commit_batch(staged, record_for(staged.batch, staged.uri))


def test_a_local_uri_is_refused(warehouse: RedshiftWarehouse, staged_files: StagedFiles) -> None:
    key = staged_files.key("2024-03-01T00:00:00Z")
    batch = staged_files.write(key, staged_files.rows(key, 1), "csv")
    with pytest.raises(TerminalLoadError, match="loads from S3"):
        warehouse.commit_batch(staged_files.in_place(batch), record_for(batch, str(batch.path)))


def create_hauser_tables(aws: AwsEnv) -> None:
    """A Redshift table and SyncTable as hauser made them (lower-cased by Redshift)."""
    s = f'"{aws.schema}"'
    aws.sql(f"CREATE SCHEMA {s}")
    aws.sql(
        f"CREATE TABLE {s}.fsexport (eventstart TIMESTAMP, indvid BIGINT, "
        "pageagent VARCHAR(65535), pageuseragent VARCHAR(65535), customvars VARCHAR(65535))"
    )
    aws.sql(f"CREATE TABLE {s}.fssync (id BIGINT, processed TIMESTAMP, bundleendtime TIMESTAMP)")
    aws.sql(
        f"INSERT INTO {s}.fssync VALUES (-1, %s, %s)",  # noqa: S608
        datetime(2024, 3, 1, 1, 5),
        datetime(2024, 3, 1, 0, 0),
    )


def test_a_hauser_table_keeps_its_columns_first(
    make_warehouse: Callable[..., RedshiftWarehouse], aws: AwsEnv
) -> None:
    create_hauser_tables(aws)
    names = [c.name for c in make_warehouse().ensure_tables(export_columns())]
    assert names[:5] == ["EventStart", "IndvId", "PageAgent", "PageUserAgent", "CustomVars"]


def test_a_hauser_sync_table_is_continued(
    make_warehouse: Callable[..., RedshiftWarehouse], aws: AwsEnv
) -> None:
    create_hauser_tables(aws)
    wh = make_warehouse()
    wh.ensure_tables(export_columns())
    assert [r.end for r in wh.sync_records()] == [datetime(2024, 3, 1, tzinfo=UTC)]


def test_the_legacy_page_agent_is_filled(
    make_warehouse: Callable[..., RedshiftWarehouse],
    staged_files: StagedFiles,
    stage: S3Stage,
    aws: AwsEnv,
) -> None:
    from syncd.fields import Column, FieldType

    create_hauser_tables(aws)
    wh = make_warehouse()
    columns = wh.ensure_tables(export_columns())
    staged_files.columns = tuple(
        c
        for c in columns
        if c.name
        in {
            "EventStart",
            "IndvId",
            "PageAgent",
            "PageUserAgent",
            "CustomVars",
            "SyncdBatchId",
            "SyncdLoadedAt",
        }
    )
    assert Column("PageAgent", FieldType.STRING) in staged_files.columns
    staged = stage_batch(
        staged_files, stage, count=1, PageUserAgent="Mozilla/5.0", CustomVars='{"a": 1}'
    )
    wh.commit_batch(staged, record_for(staged.batch, staged.uri))
    assert aws.sql(f'SELECT pageagent FROM "{aws.schema}".fsexport') == [("Mozilla/5.0",)]  # noqa: S608


def test_rollback_removes_the_day(
    commit: Callable[..., StagedBatch], warehouse: RedshiftWarehouse, aws: AwsEnv
) -> None:
    commit(start="2024-02-29T23:00:00Z")
    commit(start="2024-03-01T00:00:00Z")
    result = warehouse.rollback_days(date(2024, 3, 1), date(2024, 3, 1))
    assert (result.rows_deleted, result.sync_rows_deleted) == (3, 1)


def test_a_search_path_schema_puts_the_tables_on_the_search_path(
    aws: AwsEnv, staged_files: StagedFiles, stage: S3Stage
) -> None:
    suffix = aws.schema  # unique per test: the tables land in the shared "public" schema
    wh = redshift_warehouse(
        None, export_table=f"e_{suffix}", sync_table=f"s_{suffix}", rejects_table=f"r_{suffix}"
    )
    try:
        wh.ensure_tables(export_columns())
        staged = stage_batch(staged_files, stage, count=2)
        wh.commit_batch(staged, record_for(staged.batch, staged.uri))
        count = aws.sql(f'SELECT count(*) FROM public."e_{suffix}"')  # noqa: S608
    finally:
        wh.close()
        for prefix in ("e", "s", "r"):
            aws.sql(f'DROP TABLE IF EXISTS public."{prefix}_{suffix}"')
    assert count == [(2,)]


def test_a_search_path_schema_leaves_names_unqualified() -> None:
    wh = RedshiftWarehouse(host="h", database="d", user="u", schema=None, iam_role=IAM_ROLE)
    assert wh.tables.qualified(wh.tables.export) == '"fsexport"'


def test_an_authorization_is_required() -> None:
    with pytest.raises(TerminalLoadError, match="IAMRole or Credentials"):
        RedshiftWarehouse(host="h", database="d", user="u")


def test_an_unreachable_cluster_is_transient() -> None:
    from standins.postgres import free_port

    wh = RedshiftWarehouse(
        host="127.0.0.1", port=free_port(), database="d", user="u", iam_role=IAM_ROLE, ssl=False
    )
    with pytest.raises(TransientLoadError, match="cannot connect"):
        wh.check()


@pytest.mark.parametrize(
    ("details", "transient"),
    [
        ({"C": "40001", "M": "serializable isolation violation"}, True),
        ({"C": "XX000", "M": "S3ServiceException:Please reduce your request rate"}, True),
        ({"C": "42601", "M": "syntax error"}, False),
        ({"C": "42501", "M": "permission denied for schema"}, False),
        ({"C": "XX000", "M": "Load into table 'x' failed."}, False),
        ({"C": "57014", "M": "Query (150) canceled on user's request"}, False),
        (
            {
                "C": "XX000",
                "M": "1023",
                "D": "Serializable isolation violation on table - 101, transactions forming "
                "the cycle are: 201, 202 (pid:301)",
            },
            True,
        ),
    ],
)
def test_redshift_errors_are_sorted(details: dict[str, str], transient: bool) -> None:
    from redshift_connector.error import ProgrammingError

    assert map_redshift_error(ProgrammingError(details), "load").transient is transient


def test_redact_masks_every_credential_form() -> None:
    text = f"COPY t FROM 's3://b/k' CREDENTIALS '{CREDENTIALS}' near {SECRET}"
    assert SECRET not in redact(text, (SECRET,))


def test_literals_double_their_quotes() -> None:
    assert quote_literal("s3://b/it's.csv.gz", "uri") == "'s3://b/it''s.csv.gz'"


@pytest.mark.live
def test_live_cluster_commits_a_batch(staged_files: StagedFiles) -> None:
    """Against a real cluster and bucket, when SYNCD_TEST_REDSHIFT_* are all set."""
    from aws_support import live_redshift_settings

    live = live_redshift_settings()
    if live is None:
        pytest.skip("set SYNCD_TEST_REDSHIFT_{HOST,PORT,DB,USER,PASSWORD,IAM_ROLE,BUCKET,REGION}")
    stage = S3Stage(live["bucket"], "syncd-live-test/", region=live["region"])
    wh = RedshiftWarehouse(
        host=live["host"],
        port=int(live["port"]),
        database=live["db"],
        user=live["user"],
        password=live["password"],
        schema="syncd_live_test",
        iam_role=live["iam_role"],
        region=live["region"],
    )
    try:
        wh.ensure_tables(export_columns())
        staged = stage_batch(staged_files, stage, count=2)
        wh.commit_batch(staged, record_for(staged.batch, staged.uri))
        assert wh.sync_records()[-1].batch_id == staged.batch.key.id
        wh.rollback_days(staged.batch.key.day, staged.batch.key.day)
    finally:
        wh.close()


# -- timeouts: a bounded connect, no read timeout, a statement timeout ---------------------------


def sleep_in_a_transaction(warehouse: RedshiftWarehouse, seconds: float) -> None:
    """A statement that runs `seconds` (a long COPY, a wait in the WLM queue)."""
    with warehouse._transaction("wait") as cursor:
        warehouse._fetch(cursor, Query(f"SELECT pg_sleep({seconds})"))


def test_a_statement_longer_than_the_connect_timeout_completes(
    make_warehouse: Callable[..., RedshiftWarehouse],
) -> None:
    sleep_in_a_transaction(make_warehouse(connect_timeout=1), 1.5)


def test_the_session_runs_with_the_statement_timeout(
    make_warehouse: Callable[..., RedshiftWarehouse],
) -> None:
    warehouse = make_warehouse(statement_timeout=90)
    with warehouse._transaction("read") as cursor:
        assert warehouse._fetch(cursor, Query("SHOW statement_timeout")) == [("90s",)]


def test_a_statement_past_the_statement_timeout_is_terminal_and_says_so(
    make_warehouse: Callable[..., RedshiftWarehouse],
) -> None:
    with pytest.raises(TerminalLoadError, match=r"StatementTimeout \(0.2s\)"):
        sleep_in_a_transaction(make_warehouse(statement_timeout=0.2), 2)


def test_a_connect_to_a_silent_server_is_bounded() -> None:
    import socket
    import time

    with socket.socket() as silent:  # accepts TCP (the backlog), never answers the startup
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        warehouse = RedshiftWarehouse(
            host="127.0.0.1",
            port=silent.getsockname()[1],
            database="d",
            user="u",
            iam_role=IAM_ROLE,
            ssl=False,
            connect_timeout=1,
        )
        started = time.monotonic()
        with pytest.raises(TransientLoadError, match="cannot connect"):
            warehouse.check()
    assert time.monotonic() - started < 5


def aws_settings(**redshift: Any) -> Any:
    from syncd.config import settings_from_mapping

    section = {"Host": "h", "DB": "d", "User": "u", "IAMRole": IAM_ROLE, **redshift}
    return settings_from_mapping(
        {"Provider": "aws", "s3": {"Bucket": "b"}, "redshift": section}, {}
    ).settings


def test_the_statement_timeout_comes_from_the_config() -> None:
    from warehouses.registry import build_stage, build_warehouse

    settings = aws_settings(StatementTimeout="5m")
    warehouse = build_warehouse(settings, build_stage(settings))
    assert isinstance(warehouse, RedshiftWarehouse)
    assert warehouse._session_settings()[0] == "SET statement_timeout TO 300000"


# -- a cluster whose parameter group turns enable_case_sensitive_identifier on --------------------


def test_on_a_case_sensitive_cluster_names_still_fold_to_lower_case(
    make_warehouse: Callable[..., RedshiftWarehouse],
    case_sensitive_proxy: RedshiftProxy,
    aws: AwsEnv,
) -> None:
    make_warehouse(proxy=case_sensitive_proxy).ensure_tables(export_columns())
    names = aws.sql(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s",
        aws.schema,
    )
    assert [n for (n,) in names if n != n.lower()] == []


def test_on_a_case_sensitive_cluster_a_hauser_table_is_continued_and_loaded(
    make_warehouse: Callable[..., RedshiftWarehouse],
    case_sensitive_proxy: RedshiftProxy,
    staged_files: StagedFiles,
    stage: S3Stage,
    aws: AwsEnv,
) -> None:
    create_hauser_tables(aws)
    wh = make_warehouse(proxy=case_sensitive_proxy)
    staged_files.columns = tuple(
        c for c in wh.ensure_tables(export_columns()) if c.name in {"EventStart", "IndvId"}
    ) + tuple(c for c in staged_files.columns if c.name in {"SyncdBatchId", "SyncdLoadedAt"})
    staged = stage_batch(staged_files, stage, count=2)
    wh.commit_batch(staged, record_for(staged.batch, staged.uri))
    assert [r.end for r in wh.sync_records()] == [
        datetime(2024, 3, 1, tzinfo=UTC),
        staged.batch.key.end,
    ]


# -- TLS: verify-full ------------------------------------------------------------------------------


def tls_warehouse(server: TlsServer) -> RedshiftWarehouse:
    return RedshiftWarehouse(
        host=server.proxy.host,
        port=server.proxy.port,
        database="postgres",
        user="postgres",
        password="proxy-password",
        iam_role=IAM_ROLE,
        ssl=True,
    )


def test_a_certificate_naming_another_host_is_refused(
    tls_proxy: Callable[[list[str]], TlsServer],
) -> None:
    warehouse = tls_warehouse(tls_proxy(["redshift.example.com"]))
    with pytest.raises(TerminalLoadError, match="certificate"):
        warehouse.check()


def test_a_certificate_naming_the_host_is_accepted(
    tls_proxy: Callable[[list[str]], TlsServer],
) -> None:
    warehouse = tls_warehouse(tls_proxy(["127.0.0.1"]))
    try:
        warehouse.check()
    finally:
        warehouse.close()
