"""SnowflakeWarehouse on the Snowflake stand-in (fakesnow + rules, reading the moto S3 server)
through the real snowflake-connector-python. The conformance suite (tests/test_conformance.py)
covers the Warehouse protocol; these tests cover what is Snowflake's own."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aws_support import s3_stage
from snowflake_support import (
    credentials_options,
    new_schema,
    shared_snowflake,
    snowflake_overrides,
    snowflake_warehouse,
)

from syncd.batch import StagedBatch, SyncRecord, TransformedBatch
from syncd.config import settings_from_mapping
from syncd.errors import ConfigError, TerminalLoadError, TransientLoadError
from syncd.fields import export_columns
from syncd.timeutil import UTC
from warehouses.registry import build_stage, build_warehouse
from warehouses.s3 import S3Stage
from warehouses.snowflake import SnowflakeWarehouse, load_private_key, map_snowflake_error

if TYPE_CHECKING:
    from conftest import StagedFiles

COMMITTED_AT = datetime(2024, 6, 1, 12, tzinfo=UTC)


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
def stage() -> S3Stage:
    return s3_stage()


@pytest.fixture
def warehouse() -> Iterator[SnowflakeWarehouse]:
    wh = snowflake_warehouse()
    wh.ensure_tables(export_columns())
    yield wh
    wh.close()


def stage_batch(
    staged_files: StagedFiles, stage: S3Stage, start: str = "2024-03-01T00:00:00Z", count: int = 3
) -> StagedBatch:
    key = staged_files.key(start)
    rejects = [{"position": count, "reason": "not an object", "raw": "42"}]
    batch = staged_files.write(key, staged_files.rows(key, count), "parquet", rejects)
    assert batch.rejects_path is not None
    return StagedBatch(
        batch=batch,
        uri=stage.put(batch.path, batch.path.name),
        rejects_uri=stage.put(batch.rejects_path, batch.rejects_path.name),
    )


def sql(wh: SnowflakeWarehouse, text: str, *params: Any) -> list[tuple[Any, ...]]:
    con = shared_snowflake().connect(schema=wh.tables.schema or "PUBLIC")
    try:
        cur = con.cursor()
        cur.execute(text, params or None)
        return [tuple(r) for r in cur.fetchall()]
    finally:
        con.close()


def test_tables_get_snowflake_types_under_syncds_spelling(warehouse: SnowflakeWarehouse) -> None:
    rows = sql(
        warehouse,
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = 'fsexport'",
        warehouse.tables.schema,
    )
    types = dict(rows)
    assert types["EventStart"] == "TIMESTAMP_NTZ"
    assert types["CustomVars"] == "VARIANT"
    assert types["IndvId"] == "NUMBER"
    assert types["PageUrl"] == "TEXT"


def test_a_commit_loads_rows_rejects_and_custom_vars_as_json(
    warehouse: SnowflakeWarehouse, staged_files: StagedFiles, stage: S3Stage
) -> None:
    staged = stage_batch(staged_files, stage, count=4)
    warehouse.commit_batch(staged, record_for(staged.batch, staged.uri))
    table = f'"{warehouse.tables.schema}"."fsexport"'
    rows = sql(
        warehouse,
        f'SELECT "CustomVars":user_plan_str::STRING, "EventStart" FROM {table} '  # noqa: S608
        'WHERE "SyncdBatchId" = %s ORDER BY "EventStart"',
        staged.batch.key.id,
    )
    assert [r[0] for r in rows] == ["pro"] * 4  # an object, not a JSON string
    assert rows[0][1] == datetime(2024, 3, 1)  # TIMESTAMP_NTZ holding UTC
    rejects = f'"{warehouse.tables.schema}"."fsrejects"'
    assert sql(warehouse, f"SELECT COUNT(*) FROM {rejects}") == [(1,)]  # noqa: S608
    read = warehouse.read_rows(staged.batch.key.id)
    assert len(read) == 4 and read[0]["CustomVars"] == (
        '{"user_plan_str":"pro","evt_total_real":9.5}'
    )


def test_a_batch_reloaded_after_a_rollback_loads_again(
    warehouse: SnowflakeWarehouse, staged_files: StagedFiles, stage: S3Stage
) -> None:
    """Snowflake's load metadata remembers the file name across the rollback (and the
    `syncd rollback` that deletes the day): without FORCE = TRUE the reload would load
    nothing and the row check would hold the batch."""
    staged = stage_batch(staged_files, stage)
    record = record_for(staged.batch, staged.uri)
    warehouse.commit_batch(staged, record)
    result = warehouse.rollback_days(date(2024, 3, 1), date(2024, 3, 1))
    assert result.rows_deleted == 3
    warehouse.commit_batch(staged, record)
    assert len(warehouse.read_rows(staged.batch.key.id)) == 3
    # and again, replacing its own rows: still exactly the batch's rows
    warehouse.commit_batch(staged, record)
    assert len(warehouse.read_rows(staged.batch.key.id)) == 3


def test_a_failed_commit_leaves_nothing_and_the_retry_loads(
    warehouse: SnowflakeWarehouse, staged_files: StagedFiles, stage: S3Stage
) -> None:
    staged = stage_batch(staged_files, stage)
    lying = StagedBatch(
        batch=TransformedBatch(**{**staged.batch.__dict__, "rows": 99}),
        uri=staged.uri,
        rejects_uri=staged.rejects_uri,
    )
    with pytest.raises(TerminalLoadError, match="holds 3 rows"):
        warehouse.commit_batch(lying, record_for(lying.batch, staged.uri))
    assert warehouse.sync_records() == []
    assert warehouse.read_rows(staged.batch.key.id) == []
    warehouse.commit_batch(staged, record_for(staged.batch, staged.uri))
    assert len(warehouse.read_rows(staged.batch.key.id)) == 3


def test_copy_with_credentials_never_shows_the_secret(
    staged_files: StagedFiles,
    stage: S3Stage,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    options = credentials_options()
    wh = snowflake_warehouse(**options)
    wh.ensure_tables(export_columns())
    staged = stage_batch(staged_files, stage)
    wh.commit_batch(staged, record_for(staged.batch, staged.uri))
    missing = StagedBatch(batch=staged.batch, uri=staged.uri + ".gone", rejects_uri=None)
    with pytest.raises(TerminalLoadError) as caught:
        wh.commit_batch(missing, record_for(missing.batch, missing.uri))
    seen = str(caught.value) + caplog.text + "".join(capsys.readouterr()) + repr(wh)
    assert options["aws_secret_key"] not in seen
    wh.close()


def test_check_leaves_no_probe_table(warehouse: SnowflakeWarehouse) -> None:
    """DDL commits at once in Snowflake: the write probe is dropped, not rolled back."""
    warehouse.check()
    tables = sql(
        warehouse,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
        warehouse.tables.schema,
    )
    assert sorted(t for (t,) in tables) == ["fsexport", "fsrejects", "fssync"]


def test_key_pair_authentication_connects(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"open sesame"),
    )
    path = tmp_path / "rsa_key.p8"
    path.write_bytes(pem)
    der = load_private_key(path, "open sesame")
    assert serialization.load_der_private_key(der, None).public_key().public_numbers() == (
        key.public_key().public_numbers()
    )
    wh = snowflake_warehouse(private_key_file=path, private_key_passphrase="open sesame")
    wh.check()
    wh.close()
    with pytest.raises(TerminalLoadError) as caught:
        load_private_key(path, "not-the-passphrase")
    assert "PrivateKeyPassphrase" in str(caught.value)
    assert "not-the-passphrase" not in str(caught.value)
    with pytest.raises(TerminalLoadError, match="set PrivateKeyPassphrase"):
        load_private_key(path)
    with pytest.raises(TerminalLoadError, match="cannot be read"):
        load_private_key(tmp_path / "missing.p8")


def test_an_authorization_and_a_login_are_required() -> None:
    with pytest.raises(TerminalLoadError, match="StorageIntegration"):
        SnowflakeWarehouse(account="a", user="u", database="d", password="p")
    with pytest.raises(TerminalLoadError, match="GCS|gcs"):
        SnowflakeWarehouse(account="a", user="u", database="d", password="p", stage="gcs")
    with pytest.raises(TerminalLoadError, match="Password or a PrivateKeyFile"):
        SnowflakeWarehouse(account="a", user="u", database="d", storage_integration="i")


def test_an_unreachable_endpoint_is_transient() -> None:
    from standins.gcs import free_port

    wh = snowflake_warehouse(port=free_port(), login_timeout=5)
    with pytest.raises(TransientLoadError):
        wh.check()
    wh.close()


@pytest.mark.parametrize(
    ("errno", "kind", "transient"),
    [
        (250001, "OperationalError", True),
        (625, "ProgrammingError", True),
        (2003, "ProgrammingError", False),
        (390100, "DatabaseError", False),
    ],
)
def test_snowflake_errors_are_sorted(errno: int, kind: str, transient: bool) -> None:
    from snowflake.connector import errors

    message = (
        "Incorrect username or password was specified." if errno == 390100 else "something failed"
    )
    exc = getattr(errors, kind)(msg=message, errno=errno)
    assert map_snowflake_error(exc, "commit").transient is transient


def test_a_local_file_is_refused(staged_files: StagedFiles, stage: S3Stage) -> None:
    wh = snowflake_warehouse()
    wh.ensure_tables(export_columns())
    staged = stage_batch(staged_files, stage)
    local = StagedBatch(batch=staged.batch, uri=str(staged.batch.path), rejects_uri=None)
    with pytest.raises(TerminalLoadError, match="cannot load"):
        wh.commit_batch(local, record_for(local.batch, local.uri))
    wh.close()


def test_the_config_builds_the_snowflake_warehouse_over_s3() -> None:
    overrides = snowflake_overrides(new_schema(), "some-bucket")
    data: dict[str, Any] = {}
    for dotted, value in overrides.items():
        section, _, name = dotted.rpartition(".")
        (data.setdefault(section, {}) if section else data)[name] = value
    settings = settings_from_mapping(data, env={}).settings
    assert isinstance(build_stage(settings), S3Stage)
    wh = build_warehouse(settings, build_stage(settings))
    assert isinstance(wh, SnowflakeWarehouse) and wh.capabilities.staging_formats == ("parquet",)
    wh.close()
    del data["snowflake"]["StorageIntegration"]
    with pytest.raises(ConfigError, match="StorageIntegration"):
        settings_from_mapping(data, env={})


def test_the_internal_stage_puts_the_file_into_the_tables_own_stage(
    staged_files: StagedFiles, tmp_path: Path
) -> None:
    wh = snowflake_warehouse(stage="internal")
    assert wh._table_stage() == f'@"{wh.tables.schema}"."%fsexport"'
    wh.ensure_tables(export_columns())
    staged = staged_files.in_place(stage_batch_locally(staged_files))
    record = record_for(staged.batch, staged.uri)
    wh.commit_batch(staged, record)
    wh.rollback_days(date(2024, 3, 1), date(2024, 3, 1))
    wh.commit_batch(staged, record)  # the same file name again: loaded, not skipped
    assert len(wh.read_rows(staged.batch.key.id)) == 3
    s3 = StagedBatch(batch=staged.batch, uri="s3://bucket/x.parquet", rejects_uri=None)
    with pytest.raises(TerminalLoadError, match="uploads a local file"):
        wh.commit_batch(s3, record)
    wh.close()


def stage_batch_locally(staged_files: StagedFiles) -> TransformedBatch:
    key = staged_files.key("2024-03-01T00:00:00Z")
    rejects = [{"position": 3, "reason": "not an object", "raw": "42"}]
    return staged_files.write(key, staged_files.rows(key, 3), "parquet", rejects)


def test_the_config_builds_the_internal_stage_without_a_bucket() -> None:
    from warehouses.local import LocalStage

    data: dict[str, Any] = {}
    for dotted, value in snowflake_overrides(new_schema()).items():
        section, _, name = dotted.rpartition(".")
        (data.setdefault(section, {}) if section else data)[name] = value
    settings = settings_from_mapping(data, env={}).settings
    stage = build_stage(settings)
    assert isinstance(stage, LocalStage)
    wh = build_warehouse(settings, stage)
    assert isinstance(wh, SnowflakeWarehouse) and wh._stage == "internal"
    wh.close()


def test_the_standin_refuses_json_text_and_calls_in_insert_values() -> None:
    """As Snowflake: INSERT ... VALUES takes constants only, so neither JSON text for a VARIANT
    column nor PARSE_JSON(...) in the list; INSERT ... SELECT ... FROM (VALUES ...) parses it."""
    from snowflake.connector.errors import ProgrammingError

    schema = new_schema()
    con = shared_snowflake().connect(schema="PUBLIC")
    try:
        cur = con.cursor()
        cur.execute(f'CREATE SCHEMA "{schema}"')
        cur.execute(f'USE SCHEMA "{schema}"')
        cur.execute('CREATE TABLE "people" ("IndvId" NUMBER(38,0), "UserVars" VARIANT)')
        with pytest.raises(ProgrammingError, match="expecting VARIANT") as text:
            cur.execute('INSERT INTO "people" ("IndvId", "UserVars") VALUES (%s, %s)', (1, "{}"))
        assert text.value.errno == 2023
        with pytest.raises(ProgrammingError, match="Invalid expression") as call:
            cur.execute(
                'INSERT INTO "people" ("IndvId", "UserVars") VALUES (%s, PARSE_JSON(%s))',
                (1, '{"a": 1}'),
            )
        assert call.value.errno == 2014
        cur.execute('INSERT INTO "people" ("IndvId", "UserVars") VALUES (%s, NULL)', (2,))
        # a constant cast is a constant: allowed, as in Snowflake
        cur.execute('INSERT INTO "people" ("IndvId", "UserVars") VALUES (4, \'[1]\'::VARIANT)')
        cur.execute(
            'INSERT INTO "people" ("IndvId", "UserVars") SELECT v."IndvId", '
            'PARSE_JSON(v."UserVars") FROM (VALUES (%s, %s)) AS v ("IndvId", "UserVars")',
            (3, '{"a": 1}'),
        )
        cur.execute('SELECT "IndvId", "UserVars" FROM "people" ORDER BY 1')
        rows = [(int(i), json.loads(v) if v is not None else None) for i, v in cur.fetchall()]
        assert rows == [(2, None), (3, {"a": 1}), (4, [1])]
    finally:
        con.close()
