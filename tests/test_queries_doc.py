"""docs/queries.md runs: every ```sql duckdb / postgres / redshift / bigquery block against a
warehouse that `syncd once` loaded from the simulator (Redshift: through the dialect proxy over
moto S3; BigQuery: the emulator over the GCS emulator), each query answering rows; and docs/columns.md is current and names the column types
the adapters really create."""

# ruff: noqa: F811 - fixtures are imported by name from aws_support
from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
import redshift_connector
from aws_support import (  # noqa: F401 - fixtures
    AwsEnv,
    aws,
    aws_overrides,
    bucket,
    moto_s3,
    postgres,
    postgres_overrides,
    redshift_proxy,
    schema,
)
from e2e_support import API_KEY, run_cli, write_config

from standins.postgres import PostgresCluster
from standins.redshift_proxy import RedshiftProxy
from syncd.fields import export_columns
from syncd.simulator import Simulator, SimulatorConfig
from syncd.timeutil import UTC
from warehouses import columns_doc
from warehouses.sql import PEOPLE_COLUMNS, PEOPLE_SYNC_COLUMNS, REJECTS_COLUMNS, SYNC_COLUMNS

DOCS = Path(__file__).resolve().parent.parent / "docs"
START = datetime(2026, 11, 1, 23, tzinfo=UTC)
_BLOCK = re.compile(r"^```sql (\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def queries(dialect: str) -> list[str]:
    """The statements of every ```sql <dialect> block of docs/queries.md."""
    text = (DOCS / "queries.md").read_text()
    found = [
        statement.strip()
        for name, body in _BLOCK.findall(text)
        if name == dialect
        for statement in body.split(";")
        if statement.strip()
    ]
    assert found, f"no ```sql {dialect} block in docs/queries.md"
    return found


def expects_rows(query: str) -> bool:
    return "fsrejects" not in query  # the simulator's default traffic has no bad rows


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=300)) as simulator:
        yield simulator


def test_the_column_reference_is_current() -> None:
    assert columns_doc.undocumented() == []
    current = (DOCS / "columns.md").read_text()
    assert current == columns_doc.markdown(), (
        "docs/columns.md is stale: python -m warehouses.columns_doc > docs/columns.md"
    )


def documented_types(warehouse: int) -> dict[str, dict[str, str]]:
    """table -> column -> type as docs/columns.md gives it (column 1 DuckDB, 2 PostgreSQL)."""
    text = (DOCS / "columns.md").read_text()
    tables: dict[str, dict[str, str]] = {}
    for section in text.split("\n## ")[1:]:
        title = re.search(r"\(`(\w+)`\)", section.splitlines()[0])
        if title is None:
            continue
        rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| `")]
        tables[title.group(1)] = {r[0].strip("|` "): r[warehouse] for r in rows}
    return tables


def test_duckdb_queries_run_on_a_loaded_warehouse(tmp_path: Path, sim: Simulator) -> None:
    files = write_config(tmp_path, sim, START, PEOPLE)
    assert run_cli(["once", "-c", str(files.config)]) == 0
    with duckdb.connect(str(files.duckdb), read_only=True) as con:
        for query in queries("duckdb"):
            rows = con.execute(query).fetchall()
            assert rows or not expects_rows(query), query
            assert all(v is not None for v in rows[0][:1]) if rows else True, query
        for table, columns in documented_types(1).items():
            actual = dict(
                con.execute(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = ?",
                    [table],
                ).fetchall()
            )
            wanted = {c: t for c, t in columns.items() if c in actual}
            assert {c: actual[c] for c in wanted} == wanted, table
            assert len(wanted) >= len(expected_names(table)), table


def expected_names(table: str) -> list[str]:
    if table == "fsexport":
        return [c.name for c in export_columns()]
    tables = {
        "fssync": SYNC_COLUMNS,
        "fsrejects": REJECTS_COLUMNS,
        "fsindividuals": PEOPLE_COLUMNS,
        "fsindividuals_sync": PEOPLE_SYNC_COLUMNS,
    }
    return [c.name for c in tables[table]]


#: The people tables are documented too: keep them, so their documented types are checked.
PEOPLE: dict[str, object] = {"ExportIndividuals": True}


def test_postgres_queries_run_on_a_loaded_warehouse(
    tmp_path: Path, sim: Simulator, postgres: PostgresCluster, schema: str
) -> None:
    overrides = {**postgres_overrides(postgres, schema), **PEOPLE}
    files = write_config(tmp_path, sim, START, overrides)
    assert run_cli(["once", "-c", str(files.config)]) == 0
    with psycopg.connect(postgres.dsn, autocommit=True) as con:
        con.execute(f'SET search_path = "{schema}"')
        for query in queries("postgres"):
            rows = con.execute(query).fetchall()  # type: ignore[arg-type]
            assert rows or not expects_rows(query), query
        for table, columns in documented_types(2).items():
            actual = {
                name: type_.upper()
                for name, type_ in con.execute(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = %s AND table_name = %s",
                    (schema, table),
                ).fetchall()
            }
            aliases = {"TIMESTAMP WITHOUT TIME ZONE": "TIMESTAMP"}
            actual = {c: aliases.get(t, t) for c, t in actual.items()}
            assert len(actual) == len(expected_names(table)), table
            assert {c: actual[c] for c in columns if c in actual} == {
                c: t for c, t in columns.items() if c in actual
            }, table


def test_redshift_queries_run_on_the_standin(
    tmp_path: Path, sim: Simulator, aws: AwsEnv, redshift_proxy: RedshiftProxy
) -> None:
    files = write_config(tmp_path, sim, START, {**aws_overrides(aws), **PEOPLE})
    assert run_cli(["once", "-c", str(files.config)]) == 0
    con: Any = redshift_connector.connect(
        host=redshift_proxy.host,
        port=redshift_proxy.port,
        database="postgres",
        user="postgres",
        password="x",
        ssl=False,
    )
    try:
        con.autocommit = True
        cursor = con.cursor()
        cursor.execute(f'SET search_path = "{aws.schema}"')
        for query in queries("redshift"):
            cursor.execute(query)
            rows = cursor.fetchall()
            assert rows or not expects_rows(query), query
    finally:
        con.close()


def test_bigquery_queries_run_on_the_emulator(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gcp_support

    from warehouses import google_cloud

    monkeypatch.setattr(google_cloud, "RETRY_DEADLINE", gcp_support.FAST_RETRY_DEADLINE)
    dataset = gcp_support.new_dataset()
    overrides: dict[str, object] = {
        "Provider": "gcp",
        "gcs.Bucket": gcp_support.new_bucket(),
        "gcs.EndpointURL": gcp_support.shared_gcs().endpoint,
        "bigquery.Project": gcp_support.PROJECT,
        "bigquery.Dataset": dataset,
        "bigquery.EndpointURL": gcp_support.shared_bigquery().endpoint,
        **PEOPLE,
    }
    try:
        files = write_config(tmp_path, sim, START, overrides)
        assert run_cli(["once", "-c", str(files.config)]) == 0
        client = gcp_support.shared_bigquery().client()
        try:
            for query in queries("bigquery"):
                job = client.query(
                    query.replace("mydataset.", f"{dataset}."),
                    location=gcp_support.LOCATION,
                    retry=google_cloud.default_retry(gcp_support.FAST_RETRY_DEADLINE),
                    job_retry=None,
                )
                rows = list(job.result(timeout=gcp_support.JOB_TIMEOUT))
                assert rows or not expects_rows(query), query
                assert rows[0][0] is not None, query
        finally:
            client.close()
    finally:
        gcp_support.drop_dataset(dataset)


def test_the_standins_json_extract_path_text_behaves_as_redshifts(
    aws: AwsEnv, redshift_proxy: RedshiftProxy
) -> None:
    """Redshift's documented results: the value as text, NULL for a missing key, an error for
    invalid JSON unless null_if_invalid is true (then NULL)."""
    con: Any = redshift_connector.connect(
        host=redshift_proxy.host,
        port=redshift_proxy.port,
        database="postgres",
        user="postgres",
        password="x",
        ssl=False,
    )
    try:
        con.autocommit = True
        cursor = con.cursor()
        cursor.execute(
            'SELECT JSON_EXTRACT_PATH_TEXT(\'{"f4":{"f6":"star"},"n":2}\', \'f4\', \'f6\'), '
            "json_extract_path_text('{\"n\":2}', 'n'), "
            "JSON_EXTRACT_PATH_TEXT('{\"n\":2}', 'missing'), "
            "JSON_EXTRACT_PATH_TEXT('{not json', 'n', true)"
        )
        assert list(cursor.fetchone()) == ["star", "2", None, None]
        with pytest.raises(redshift_connector.ProgrammingError):
            cursor.execute("SELECT JSON_EXTRACT_PATH_TEXT('{not json', 'n', false)")
    finally:
        con.close()
