"""The Snowflake stand-in keeps the rules of Snowflake's documentation that syncd relies on
(docs/cloud-conformance.md, "Snowflake"). Load metadata (after a rollback, FORCE = FALSE, 64
days and LOAD_UNCERTAIN_FILES), the external location's authorization and prefix, the
CASE_SENSITIVE match and NULL timestamps are `standins/snowflake_server.py`'s additions; the DDL
commit and the folding of unquoted names are fakesnow's own, tested so that they stay."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aws_support import new_bucket, shared_moto
from snowflake_support import new_schema, shared_snowflake

from standins.moto_s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY
from standins.snowflake import INTEGRATION

CREDENTIALS = (
    f"CREDENTIALS = (AWS_KEY_ID = '{ACCESS_KEY_ID}' AWS_SECRET_KEY = '{SECRET_ACCESS_KEY}')"
)
PARQUET = "FILE_FORMAT = (TYPE = PARQUET) MATCH_BY_COLUMN_NAME = CASE_SENSITIVE"


@pytest.fixture
def cursor() -> Iterator[Any]:
    """A cursor (autocommit off) in a fresh schema holding table "t" ("Id", "At")."""
    con = shared_snowflake().connect(autocommit=False)
    cur = con.cursor()
    schema = new_schema()
    cur.execute(f'CREATE SCHEMA "{schema}"')
    cur.execute(f'USE SCHEMA "{schema}"')
    cur.execute('CREATE TABLE "t" ("Id" NUMBER(38,0), "At" TIMESTAMP_NTZ)')
    yield cur
    con.rollback()
    con.close()


def put_parquet(rows: int = 2, name: str = "") -> str:
    """A Parquet file ("Id", "At") in a fresh moto bucket; its s3:// URI."""
    bucket = new_bucket(shared_moto())
    table = pa.table(
        {
            "Id": pa.array(range(rows), pa.int64()),
            "At": pa.array([datetime(2024, 1, 1)] * rows, pa.timestamp("us")),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    key = name or f"batch-{secrets.token_hex(4)}.parquet"
    shared_moto().client().put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
    return f"s3://{bucket}/{key}"


def copy(cursor: Any, uri: str, *options: str, auth: str = CREDENTIALS) -> list[tuple[Any, ...]]:
    cursor.execute(f"COPY INTO \"t\" FROM '{uri}' {auth} {PARQUET} {' '.join(options)}")
    return [tuple(row) for row in cursor.fetchall()]


def count(cursor: Any) -> int:
    cursor.execute('SELECT COUNT(*) FROM "t"')
    return int(cursor.fetchall()[0][0])


def test_a_loaded_file_is_skipped_silently_even_after_a_rollback(cursor: Any) -> None:
    uri = put_parquet()
    first = copy(cursor, uri)
    assert [(r[0], r[1], r[3]) for r in first] == [(uri, "LOADED", 2)]
    cursor.connection.rollback()
    assert count(cursor) == 0
    # the load metadata outlived the rollback: the same file name loads nothing, no error
    assert copy(cursor, uri) == [("Copy executed with 0 files processed.",)]
    assert copy(cursor, uri, "FORCE = FALSE") == [("Copy executed with 0 files processed.",)]
    assert count(cursor) == 0


def test_force_true_loads_the_file_again(cursor: Any) -> None:
    uri = put_parquet(3)
    copy(cursor, uri)
    assert [r[3] for r in copy(cursor, uri, "FORCE = TRUE")] == [3]
    assert count(cursor) == 6


def test_load_metadata_expires_after_64_days_and_old_files_are_then_uncertain(
    cursor: Any,
) -> None:
    uri = put_parquet()
    copy(cursor, uri)
    cursor.connection.commit()
    standin = shared_snowflake()
    standin.advance_clock(65)
    try:
        # metadata gone and the file older than 64 days: its status is unknown, skipped
        assert copy(cursor, uri) == [("Copy executed with 0 files processed.",)]
        assert [r[3] for r in copy(cursor, uri, "LOAD_UNCERTAIN_FILES = TRUE")] == [2]
    finally:
        standin.advance_clock(-65)


def test_an_external_location_needs_an_integration_or_credentials(cursor: Any) -> None:
    import snowflake.connector.errors as sf

    uri = put_parquet()
    with pytest.raises(sf.ProgrammingError, match="Access Denied"):
        copy(cursor, uri, auth="")
    with pytest.raises(sf.ProgrammingError, match="does not exist or not authorized"):
        copy(cursor, uri, auth="STORAGE_INTEGRATION = no_such_integration")
    assert [r[3] for r in copy(cursor, uri, auth=f"STORAGE_INTEGRATION = {INTEGRATION}")] == [2]


def test_the_path_is_a_prefix(cursor: Any) -> None:
    uri = put_parquet(name="dir/a.parquet")
    bucket = uri.split("/")[2]
    loaded = copy(cursor, f"s3://{bucket}/dir/")
    assert [r[0] for r in loaded] == [uri]


def test_match_by_column_name_case_sensitive_matches_names_as_stored(cursor: Any) -> None:
    uri = put_parquet()
    cursor.execute('CREATE TABLE "lower" ("id" NUMBER(38,0), "At" TIMESTAMP_NTZ)')
    cursor.execute(f"COPY INTO \"lower\" FROM '{uri}' {CREDENTIALS} {PARQUET}")
    cursor.execute('SELECT "id", "At" FROM "lower"')
    # "Id" in the file is not "id": NULL, as Snowflake loads an unmatched column
    assert cursor.fetchall() == [(None, datetime(2024, 1, 1))] * 2


def test_ddl_commits_the_open_transaction(cursor: Any) -> None:
    cursor.execute('INSERT INTO "t" ("Id") VALUES (1)')
    cursor.execute('CREATE TABLE "other" ("x" NUMBER(38,0))')
    cursor.connection.rollback()
    assert count(cursor) == 1


def test_unquoted_names_fold_to_upper_case(cursor: Any) -> None:
    cursor.execute("CREATE TABLE folded (plain NUMBER(38,0))")
    cursor.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_name IN ('folded', 'FOLDED')"
    )
    assert cursor.fetchall() == [("FOLDED", "PLAIN")]


def test_a_null_timestamp_reads_back_as_null(cursor: Any) -> None:
    cursor.execute('INSERT INTO "t" ("Id", "At") VALUES (1, NULL)')
    cursor.execute('SELECT "At" FROM "t"')
    assert cursor.fetchall() == [(None,)]
