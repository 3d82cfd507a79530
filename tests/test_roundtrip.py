"""`syncd check --round-trip` on every warehouse and its stand-ins, and its verdict logic.

Each run asserts the exit code and the printed table, then that nothing it made is left:
no scratch table, no staged object, no local file. The verdict tests wrap a real adapter so
that one value comes back changed, or one step fails, and check the run says so (exit 1, the
value's row marked) and still cleans up.
"""
# ruff: noqa: F811 - fixtures are imported by name from aws_support

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import gcp_support
import pytest
from aws_support import (  # noqa: F401 - fixtures
    AwsEnv,
    aws,
    aws_overrides,
    bucket,
    live_redshift_settings,
    moto_s3,
    postgres,
    postgres_overrides,
    redshift_proxy,
    schema,
    shared_postgres,
)
from e2e_support import API_KEY, SyncdFiles, run_cli, write_config

import warehouses.google_cloud
import warehouses.registry
from standins.redshift_proxy import RedshiftProxy
from syncd.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from syncd.errors import TerminalLoadError
from syncd.fields import Column, FieldType
from syncd.roundtrip import (
    CHANGED,
    CUT,
    EXACT,
    NUL_REPLACED,
    edge_rows,
    judge,
    long_string,
    round_trip_window,
)
from syncd.simulator import Simulator, SimulatorConfig
from syncd.timeutil import UTC

START = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=10)) as s:
        yield s


def check_round_trip(files: SyncdFiles, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`syncd check --round-trip` in this process: (exit code, stdout)."""
    code = run_cli(["check", "--round-trip", "-c", str(files.config)], now=None)
    captured = capsys.readouterr()
    if code == EXIT_CONFIG:
        return code, captured.err
    return code, captured.out


def line_of(out: str, field: str) -> str:
    """The table line of one value, e.g. "row 3 UserId"."""
    (line,) = [x for x in out.splitlines() if x.strip().startswith(f"{field} ")]
    return line


def nothing_left_locally(files: SyncdFiles) -> None:
    staged = sorted(p.name for p in files.save_dir.rglob("*") if p.is_file())
    tmp = sorted(p.name for p in (files.config.parent / "tmp").rglob("*"))
    assert (staged, tmp) == ([], [])


def duckdb_tables(files: SyncdFiles) -> list[str]:
    with duckdb.connect(str(files.duckdb), read_only=True) as con:
        return sorted(
            r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        )


# -- DuckDB: the command as a user runs it ----------------------------------------------------


def test_duckdb_round_trip_from_the_command_line(tmp_path: Path, sim: Simulator) -> None:
    files = write_config(tmp_path, sim, START, {"LogLevel": "error"})
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "check", "--round-trip", "-c", str(files.config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = result.stdout
    assert result.returncode == EXIT_OK, out + result.stderr
    assert out.splitlines()[:5] == [
        "config       ok",
        "export API   ok",
        "stage        ok",
        "warehouse    ok",
        out.splitlines()[4],
    ] and out.splitlines()[4].startswith(
        "round trip   DuckDBWarehouse via parquet: edge-case rows into scratch tables"
    )
    assert out.splitlines()[5].split() == ["field", "sent", "received", "verdict"]
    assert line_of(out, "row 3 IndvId").split()[-3:] == [
        "9223372036854775807",
        "9223372036854775807",
        "exact",
    ]
    assert line_of(out, "row 3 UserId").split()[-3:] == [
        "9007199254740993",
        "9007199254740993",
        "exact",
    ]
    assert "'nul�inside'" in line_of(out, "row 3 UserEmail")
    assert line_of(out, "row 3 UserEmail").endswith(NUL_REPLACED)
    assert line_of(out, "row 1 UserEmail").split()[-3:] == ["NULL", "NULL", "exact"]
    assert line_of(out, "row 2 UserEmail").split()[-3:] == ["''", "''", "exact"]
    assert "round trip   ok: " in out and "cleanup      ok: removed " in out
    assert duckdb_tables(files) == []
    nothing_left_locally(files)


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_duckdb_round_trip_over_the_other_formats(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    files = write_config(tmp_path, sim, START, staged_format(fmt))
    code, out = check_round_trip(files, capsys)
    assert (code, f"DuckDBWarehouse via {fmt}" in out) == (EXIT_OK, True), out
    assert duckdb_tables(files) == []
    nothing_left_locally(files)


def test_the_round_trip_keeps_the_configured_tables(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    files = write_config(tmp_path, sim, START)
    with duckdb.connect(str(files.duckdb)) as con:
        con.execute("CREATE TABLE fsexport (IndvId BIGINT)")
        con.execute("INSERT INTO fsexport VALUES (42)")
    code, _ = check_round_trip(files, capsys)
    with duckdb.connect(str(files.duckdb), read_only=True) as con:
        kept = con.execute("SELECT * FROM fsexport").fetchall()
    assert (code, duckdb_tables(files), kept) == (EXIT_OK, ["fsexport"], [(42,)])


# -- the verdict fails when a value changes, and cleanup happens anyway ------------------------


class Wrapped:
    """A real warehouse with one method replaced (a mangled read, a failing commit)."""

    def __init__(self, inner: Any, **replaced: Callable[..., Any]) -> None:
        self.inner = inner
        self.replaced = replaced

    def __getattr__(self, name: str) -> Any:
        if name in self.replaced:
            return lambda *args: self.replaced[name](self.inner, *args)
        return getattr(self.inner, name)


def wrap_warehouses(monkeypatch: pytest.MonkeyPatch, **replaced: Callable[..., Any]) -> None:
    build = warehouses.registry.build_warehouse

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return Wrapped(build(*args, **kwargs), **replaced)

    monkeypatch.setattr(warehouses.registry, "build_warehouse", wrapped)


def test_an_id_read_through_a_float_fails_the_round_trip(
    tmp_path: Path,
    sim: Simulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def through_float(inner: Any, batch_id: str) -> list[dict[str, Any]]:
        rows = inner.read_rows(batch_id)
        return [
            {**r, "UserId": int(float(r["UserId"])) if r["UserId"] is not None else None}
            for r in rows
        ]

    wrap_warehouses(monkeypatch, read_rows=through_float)
    files = write_config(tmp_path, sim, START)
    code, out = check_round_trip(files, capsys)
    assert code == EXIT_FAILED
    assert line_of(out, "row 3 UserId").split()[-3:] == [
        "9007199254740993",
        "9007199254740992",
        CHANGED,
    ]
    assert line_of(out, "row 3 IndvId").endswith(EXACT)
    assert "round trip   FAILED: " in out and out.rstrip().split("\n")[-2].endswith(
        "changed: row 3 UserId, row 4 UserId"
    )
    assert duckdb_tables(files) == []
    nothing_left_locally(files)


def test_null_loaded_as_empty_fails_the_round_trip(
    tmp_path: Path,
    sim: Simulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def null_as_empty(inner: Any, batch_id: str) -> list[dict[str, Any]]:
        return [{**r, "PageName": r["PageName"] or ""} for r in inner.read_rows(batch_id)]

    wrap_warehouses(monkeypatch, read_rows=null_as_empty)
    code, out = check_round_trip(write_config(tmp_path, sim, START), capsys)
    assert (code, line_of(out, "row 1 PageName").split()[-3:]) == (
        EXIT_FAILED,
        ["NULL", "''", CHANGED],
    )


def test_a_failed_load_is_reported_and_everything_is_removed(
    tmp_path: Path,
    sim: Simulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing_commit(inner: Any, staged: Any, record: Any) -> None:
        raise TerminalLoadError("COPY refused the file")

    wrap_warehouses(monkeypatch, commit_batch=failing_commit)
    files = write_config(tmp_path, sim, START)
    code, out = check_round_trip(files, capsys)
    assert code == EXIT_FAILED
    assert "round trip   FAILED at load: COPY refused the file" in out
    assert "cleanup      ok: removed staged object " in out
    assert duckdb_tables(files) == []
    nothing_left_locally(files)


def test_what_cleanup_cannot_remove_is_said_and_fails_the_check(
    tmp_path: Path,
    sim: Simulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def cannot_drop(inner: Any) -> None:
        raise TerminalLoadError("permission denied for schema public")

    wrap_warehouses(monkeypatch, drop_tables=cannot_drop)
    code, out = check_round_trip(write_config(tmp_path, sim, START), capsys)
    assert code == EXIT_FAILED
    assert "round trip   ok: " in out
    assert (
        "cleanup      FAILED, left behind: scratch tables: permission denied for schema public"
        in out
    )


def test_without_a_reachable_warehouse_the_round_trip_does_not_run(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("")
    files = write_config(tmp_path, sim, START, {"duckdb.Path": tmp_path / "a-file" / "x.duckdb"})
    code, out = check_round_trip(files, capsys)
    assert (code, out.splitlines()[-1]) == (
        EXIT_FAILED,
        "round trip   not run: the stage or the warehouse is not reachable",
    )


def test_storage_only_has_no_warehouse_to_round_trip(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    files = write_config(tmp_path, sim, START, {"StorageOnly": True})
    code = run_cli(["check", "--round-trip", "-c", str(files.config)], now=None)
    err = capsys.readouterr().err
    assert (code, "StorageOnly mode loads no warehouse" in err) == (EXIT_CONFIG, True)


# -- the comparison rules ---------------------------------------------------------------------

STRING = Column("PageUrl", FieldType.STRING)
INT = Column("UserId", FieldType.INT64)
JSON_COLUMN = Column("CustomVars", FieldType.JSON)
TIMESTAMP = Column("EventStart", FieldType.TIMESTAMP)


def test_the_long_string_has_a_multibyte_character_on_the_cut() -> None:
    text = long_string(65535)
    assert (len(text), text.encode()[65534:65537].decode()) == (70_000, "€")


def test_a_cut_at_the_last_whole_character_is_the_documented_change() -> None:
    text = long_string(1000)
    assert judge(STRING, text, text, "a" * 999, 1000) == CUT.format(limit=1000)


@pytest.mark.parametrize(
    "received",
    [
        "a" * 998,  # shorter than it had to be
        "a" * 999 + "\ufffd",  # cut inside the character, decoded with replacement
        "a" * 999 + "€",  # longer than the limit
    ],
)
def test_any_other_cut_is_a_change(received: str) -> None:
    text = long_string(1000)
    assert judge(STRING, text, text, received, 1000) == CHANGED


def test_without_a_limit_a_long_string_must_come_back_whole() -> None:
    text = long_string(1000)
    assert judge(STRING, text, text, text[:1000], None) == CHANGED


@pytest.mark.parametrize(
    ("expected", "received"),
    [
        (2**53 + 1, 2**53),
        (2**53 + 1, float(2**53 + 1)),
        (7, "7"),
        ("", None),
        (None, ""),
    ],
)
def test_values_compare_by_type_and_exactly(expected: Any, received: Any) -> None:
    assert judge(INT, expected, expected, received, None) == CHANGED


@pytest.mark.parametrize(
    "received",
    [
        '{"n":1.0}',
        '{"n":true}',
        '{"n":"1"}',
        '{"n":1,"extra":null}',
        '{"n":NaN}',
        "not json",
    ],
)
def test_custom_vars_compare_as_typed_json(received: str) -> None:
    assert judge(JSON_COLUMN, {"n": 1}, {"n": 1}, received, None) == CHANGED


def test_custom_vars_key_order_does_not_matter() -> None:
    sent = {"b": [1, {"c": None}], "a": 2**63 - 1}
    assert (
        judge(JSON_COLUMN, sent, sent, '{"a":9223372036854775807,"b":[1,{"c":null}]}', None)
        == EXACT
    )


def test_timestamps_compare_to_the_microsecond() -> None:
    at = datetime(2026, 11, 1, 0, 0, 0, 1000, tzinfo=UTC)
    assert [judge(TIMESTAMP, "", at, at + timedelta(microseconds=d), None) for d in (0, 1)] == [
        EXACT,
        CHANGED,
    ]


def test_the_rows_meet_the_edges_of_the_window() -> None:
    key = round_trip_window(datetime(2026, 11, 1, 12, 30, tzinfo=UTC))
    columns = [
        Column("EventStart", FieldType.TIMESTAMP),
        Column("EventPageOffset", FieldType.INT64),
    ]
    rows = edge_rows(columns, key, None)
    assert [r["EventStart"] for r in rows[:2]] == [
        "2026-11-01T10:00:00.000Z",
        "2026-11-01T10:59:59.999Z",
    ]


# -- PostgreSQL, Redshift (proxy over moto S3), BigQuery (emulator over the GCS emulator) ------


@pytest.mark.parametrize("fmt", ["auto", "csv"])
def test_postgres_round_trip(
    tmp_path: Path, sim: Simulator, schema: str, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    pg = shared_postgres()
    overrides = {**postgres_overrides(pg, schema), **staged_format(fmt)}
    files = write_config(tmp_path, sim, START, overrides)
    code, out = check_round_trip(files, capsys)
    assert code == EXIT_OK, out
    assert line_of(out, "row 3 PageUrl").endswith(EXACT)  # TEXT keeps 70,000 characters
    assert postgres_tables(schema) == []
    nothing_left_locally(files)


def staged_format(fmt: str) -> dict[str, object]:
    """The config key choosing a staged format (NDJSON is hauser's SaveAsJson)."""
    return {"SaveAsJson": True} if fmt == "ndjson" else {"StagedFormat": fmt}


def postgres_tables(schema: str) -> list[str]:
    import psycopg

    with psycopg.connect(shared_postgres().dsn, autocommit=True) as con:
        rows = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    return sorted(r[0] for r in rows)


@pytest.mark.parametrize(
    ("fmt", "custom_vars"), [("auto", "varchar"), ("csv", "varchar"), ("auto", "super")]
)
def test_redshift_round_trip(
    tmp_path: Path,
    sim: Simulator,
    aws: AwsEnv,
    redshift_proxy: RedshiftProxy,
    capsys: pytest.CaptureFixture[str],
    fmt: str,
    custom_vars: str,
) -> None:
    overrides = {
        **aws_overrides(aws, bucket_path="fullstory"),
        "StagedFormat": fmt,
        "redshift.CustomVarsType": custom_vars,
    }
    files = write_config(tmp_path, sim, START, overrides)
    code, out = check_round_trip(files, capsys)
    assert code == EXIT_OK, out
    assert "proxy-password" not in out
    assert "RedshiftWarehouse via csv" in out
    assert line_of(out, "row 3 PageUrl").endswith(CUT.format(limit=65535))
    assert postgres_tables(aws.schema) == []
    assert aws.keys() == []
    nothing_left_locally(files)


def test_redshift_round_trip_over_parquet(
    tmp_path: Path,
    sim: Simulator,
    aws: AwsEnv,
    redshift_proxy: RedshiftProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    overrides = {**aws_overrides(aws, bucket_path="fullstory"), "StagedFormat": "parquet"}
    files = write_config(tmp_path, sim, START, overrides)
    code, out = check_round_trip(files, capsys)
    assert (postgres_tables(aws.schema), aws.keys()) == ([], [])  # cleaned up either way
    assert "proxy-password" not in out
    assert code == EXIT_OK, out


@pytest.fixture
def short_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in's 500 fails in seconds, not after the client's 600 s of retries."""
    monkeypatch.setattr(warehouses.google_cloud, "RETRY_DEADLINE", gcp_support.FAST_RETRY_DEADLINE)


@pytest.mark.usefixtures("short_retries")
@pytest.mark.parametrize("fmt", ["auto", "csv"])
def test_bigquery_round_trip(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    bucket_name, dataset = gcp_support.new_bucket(), gcp_support.new_dataset()
    overrides = {
        "Provider": "gcp",
        "FilePrefix": "hauser-uploads/",
        "gcs.Bucket": bucket_name,
        "gcs.EndpointURL": gcp_support.shared_gcs().endpoint,
        "bigquery.Project": gcp_support.PROJECT,
        "bigquery.Dataset": dataset,
        "bigquery.EndpointURL": gcp_support.shared_bigquery().endpoint,
        **staged_format(fmt),
    }
    try:
        files = write_config(tmp_path, sim, START, overrides)
        code, out = check_round_trip(files, capsys)
        if fmt == "csv":  # CSV cannot keep NULL and "" apart in BigQuery: not offered
            assert (code, "StagedFormat: 'csv' cannot be loaded" in out) == (EXIT_CONFIG, True)
            return
        assert gcp_support.bq_table_names(dataset) == []
        assert gcp_support.object_names(bucket_name) == []
        nothing_left_locally(files)
        assert code == EXIT_OK, out
        assert f"BigQueryWarehouse via {'parquet' if fmt == 'auto' else fmt}" in out
    finally:
        gcp_support.drop_dataset(dataset)


# -- live: real Redshift + S3, real BigQuery + GCS (`make test-live`) --------------------------
# The export API is the simulator (the round trip does not use it; `check` reaches it first).

LIVE_BIGQUERY = {
    n: os.environ.get(f"SYNCD_TEST_BIGQUERY_{n}", "") for n in ("PROJECT", "DATASET", "BUCKET")
}


@pytest.mark.live
def test_live_redshift_round_trip(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """Against a real cluster and bucket, when SYNCD_TEST_REDSHIFT_* are all set."""
    live = live_redshift_settings()
    if live is None:
        pytest.skip("set SYNCD_TEST_REDSHIFT_{HOST,PORT,DB,USER,PASSWORD,IAM_ROLE,BUCKET,REGION}")
    prefix = f"syncd-live-roundtrip-{os.getpid()}"
    overrides = {
        "Provider": "aws",
        "s3.Bucket": f"{live['bucket']}/{prefix}",
        "s3.Region": live["region"],
        "redshift.Host": live["host"],
        "redshift.Port": int(live["port"]),
        "redshift.DB": live["db"],
        "redshift.User": live["user"],
        "redshift.Password": live["password"],
        "redshift.DatabaseSchema": "syncd_live_test",
        "redshift.IAMRole": live["iam_role"],
        "redshift.Region": live["region"],
    }
    code, out = check_round_trip(write_config(tmp_path, sim, START, overrides), capsys)
    assert live["password"] not in out
    assert code == EXIT_OK, out
    import boto3

    listing = boto3.client("s3", region_name=live["region"]).list_objects_v2(
        Bucket=live["bucket"], Prefix=prefix
    )
    assert listing.get("KeyCount", 0) == 0


@pytest.mark.live
@pytest.mark.skipif(
    not all(LIVE_BIGQUERY.values()),
    reason="set SYNCD_TEST_BIGQUERY_PROJECT, _DATASET and _BUCKET to run against Google",
)
def test_live_bigquery_round_trip(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"syncd-live-roundtrip-{os.getpid()}/"
    overrides = {
        "Provider": "gcp",
        "FilePrefix": prefix,
        "gcs.Bucket": LIVE_BIGQUERY["BUCKET"],
        "bigquery.Project": LIVE_BIGQUERY["PROJECT"],
        "bigquery.Dataset": LIVE_BIGQUERY["DATASET"],
    }
    code, out = check_round_trip(write_config(tmp_path, sim, START, overrides), capsys)
    assert code == EXIT_OK, out
    from google.cloud import storage

    client = storage.Client(project=LIVE_BIGQUERY["PROJECT"])
    assert list(client.list_blobs(LIVE_BIGQUERY["BUCKET"], prefix=prefix)) == []


def test_make_test_live_without_variables_says_what_to_set() -> None:
    """The recipe of `make test-live` (run directly: make would first reinstall the venv when
    pyproject.toml is newer), with no SYNCD_TEST_* variable set: it passes, skipping each live
    test with the variables it needs."""
    root = Path(__file__).resolve().parents[1]
    makefile = (root / "Makefile").read_text()
    assert ".PHONY:" in makefile and " test-live " in makefile.split(".PHONY:")[1].splitlines()[0]
    recipe = makefile.split("\ntest-live:")[1].splitlines()[1].strip()
    command = recipe.replace("$(BIN)", str(Path(sys.executable).parent))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_TEST_")}
    result = subprocess.run(
        command.split(), cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "set SYNCD_TEST_REDSHIFT_{HOST,PORT,DB,USER,PASSWORD,IAM_ROLE,BUCKET,REGION}" in (
        result.stdout
    )
    assert "set SYNCD_TEST_BIGQUERY_PROJECT, _DATASET and _BUCKET" in result.stdout
    assert " passed" not in result.stdout  # nothing ran against a cloud


def test_the_rows_take_the_columnar_fast_path_where_the_format_has_one(
    tmp_path: Path,
    sim: Simulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As a real export of some size would (a body this small would take the reference path)."""
    import syncd.transform

    def no_reference_path(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the reference transform_file was used")

    monkeypatch.setattr(syncd.transform, "transform_file", no_reference_path)
    code, out = check_round_trip(write_config(tmp_path, sim, START), capsys)
    assert (code, "via parquet" in out) == (EXIT_OK, True), out
