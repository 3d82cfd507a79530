"""PostgresWarehouse against a throwaway PostgreSQL cluster: tables, COPY loads, atomic commits,
rollback, consistency, error mapping."""

# ruff: noqa: F811 - fixtures are imported by name from aws_support
from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from aws_support import (  # noqa: F401 - fixtures
    TlsServer,
    moto_s3,
    postgres,
    postgres_overrides,
    schema,
    tls_proxy,
)

from standins.postgres import PostgresCluster
from syncd.batch import StagedFormat, SyncRecord, TransformedBatch
from syncd.errors import TerminalLoadError, TransientLoadError
from syncd.fields import Column, FieldType, export_columns
from syncd.timeutil import UTC
from warehouses.postgres import PostgresWarehouse, is_transient_sqlstate, map_postgres_error

if TYPE_CHECKING:
    from conftest import StagedFiles

FORMATS: tuple[StagedFormat, ...] = ("csv", "parquet", "ndjson")
COMMITTED_AT = datetime(2024, 3, 5, 12, 0, tzinfo=UTC)
Peek = Callable[..., list[tuple[Any, ...]]]


def record_for(batch: TransformedBatch) -> SyncRecord:
    return SyncRecord(
        batch_id=batch.key.id,
        source=batch.key.source,
        start=batch.key.start,
        end=batch.key.end,
        committed_at=COMMITTED_AT,
        operation_id="op-1",
        rows_loaded=batch.rows,
        rows_rejected=batch.rejected,
        bytes=batch.source_bytes,
        staged_uri=str(batch.path),
        syncd_version="0.1.0",
    )


def warehouse_for(pg: PostgresCluster, schema: str) -> PostgresWarehouse:
    return PostgresWarehouse(
        host=pg.host, port=pg.port, user=pg.user, dbname=pg.database, schema=schema
    )


@pytest.fixture
def warehouse(postgres: PostgresCluster, schema: str) -> Iterator[PostgresWarehouse]:
    wh = warehouse_for(postgres, schema)
    wh.ensure_tables(export_columns())
    yield wh
    wh.close()


@pytest.fixture
def peek(postgres: PostgresCluster, schema: str) -> Iterator[Peek]:
    """A second connection, with the test's schema on its search path."""
    con = psycopg.connect(postgres.dsn, autocommit=True)
    con.execute(f'SET search_path = "{schema}"')

    def run(query: str, *params: Any) -> list[tuple[Any, ...]]:
        cursor = con.execute(query, params or None)
        return list(cursor.fetchall()) if cursor.description else []

    yield run
    con.close()


@pytest.fixture
def commit(
    warehouse: PostgresWarehouse, staged_files: StagedFiles
) -> Callable[..., TransformedBatch]:
    def run(
        start: str, count: int = 3, fmt: StagedFormat = "csv", **values: Any
    ) -> TransformedBatch:
        key = staged_files.key(start)
        rejects = [{"position": count, "reason": "not an object", "raw": "42"}]
        batch = staged_files.write(key, staged_files.rows(key, count, **values), fmt, rejects)
        warehouse.commit_batch(staged_files.in_place(batch), record_for(batch))
        return batch

    return run


def test_tables_are_created_with_postgres_types(warehouse: PostgresWarehouse, peek: Peek) -> None:
    types: dict[str, str] = dict(
        peek(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'fsexport'"
        )
    )
    assert (types["IndvId"], types["EventStart"], types["CustomVars"], types["PageUrl"]) == (
        "bigint",
        "timestamp without time zone",
        "jsonb",
        "text",
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_commit_loads_every_row(
    commit: Callable[..., TransformedBatch], peek: Peek, fmt: StagedFormat
) -> None:
    batch = commit("2024-03-01T00:00:00Z", count=5, fmt=fmt)
    assert peek('SELECT count(*) FROM fsexport WHERE "SyncdBatchId" = %s', batch.key.id) == [(5,)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_values_arrive_typed(
    commit: Callable[..., TransformedBatch], peek: Peek, fmt: StagedFormat
) -> None:
    commit("2024-03-01T00:00:00Z", count=1, fmt=fmt)
    row = peek(
        'SELECT "IndvId", "EventStart", "EventCumulativeLayoutShift", "CustomVars" FROM fsexport'
    )
    assert row == [
        (
            5_000_000_000_000_000,
            datetime(2024, 3, 1, 0, 0),
            0.25,
            {"user_plan_str": "pro", "evt_total_real": 9.5},
        )
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_null_and_empty_string_stay_apart(
    commit: Callable[..., TransformedBatch], peek: Peek, fmt: StagedFormat
) -> None:
    commit("2024-03-01T00:00:00Z", count=1, fmt=fmt, EventType="", PageUrl=None)
    assert peek('SELECT "EventType", "PageUrl" FROM fsexport') == [("", None)]


def test_the_sync_row_records_the_batch(
    commit: Callable[..., TransformedBatch], warehouse: PostgresWarehouse
) -> None:
    batch = commit("2024-03-01T00:00:00Z", count=4)
    assert warehouse.sync_records() == [
        SyncRecord(
            batch_id=batch.key.id,
            source="segment",
            start=batch.key.start,
            end=batch.key.end,
            committed_at=COMMITTED_AT,
            operation_id="op-1",
            rows_loaded=4,
            rows_rejected=1,
            bytes=batch.source_bytes,
            staged_uri=str(batch.path),
            syncd_version="0.1.0",
        )
    ]


def test_rejects_are_loaded(commit: Callable[..., TransformedBatch], peek: Peek) -> None:
    commit("2024-03-01T00:00:00Z", count=2)
    assert peek('SELECT "Position", "Reason", "Raw" FROM fsrejects') == [(2, "not an object", "42")]


def test_a_recommit_replaces_the_batch(commit: Callable[..., TransformedBatch], peek: Peek) -> None:
    commit("2024-03-01T00:00:00Z", count=3)
    commit("2024-03-01T00:00:00Z", count=2)
    assert peek("SELECT count(*) FROM fsexport") == [(2,)]


def test_a_row_count_mismatch_rolls_everything_back(
    warehouse: PostgresWarehouse, staged_files: StagedFiles, peek: Peek
) -> None:
    key = staged_files.key("2024-03-01T00:00:00Z")
    batch = staged_files.write(key, staged_files.rows(key, 3), "csv", claimed_rows=4)
    with pytest.raises(TerminalLoadError, match="holds 3 rows"):
        warehouse.commit_batch(staged_files.in_place(batch), record_for(batch))
    assert peek("SELECT count(*) FROM fsexport") == [(0,)]


def test_bad_data_is_terminal_and_names_the_line(
    warehouse: PostgresWarehouse, staged_files: StagedFiles
) -> None:
    key = staged_files.key("2024-03-01T00:00:00Z")
    staged_files.columns = (Column("IndvId", FieldType.STRING), *staged_files.columns[1:])
    bad = staged_files.write(key, staged_files.rows(key, 2, IndvId="not-a-number"), "csv")
    with pytest.raises(TerminalLoadError, match=r"line 2, column IndvId"):
        warehouse.commit_batch(staged_files.in_place(bad), record_for(bad))


def test_a_failed_commit_keeps_the_earlier_load(
    commit: Callable[..., TransformedBatch],
    warehouse: PostgresWarehouse,
    staged_files: StagedFiles,
    peek: Peek,
) -> None:
    commit("2024-03-01T00:00:00Z", count=3)
    key = staged_files.key("2024-03-01T00:00:00Z")
    short = staged_files.write(key, staged_files.rows(key, 1), "csv", claimed_rows=9)
    with pytest.raises(TerminalLoadError):
        warehouse.commit_batch(staged_files.in_place(short), record_for(short))
    assert peek("SELECT count(*) FROM fsexport") == [(3,)]


def test_an_existing_table_keeps_its_columns_and_gains_the_missing(
    postgres: PostgresCluster, schema: str, peek: Peek
) -> None:
    with psycopg.connect(postgres.dsn, autocommit=True) as con:
        con.execute(f'CREATE SCHEMA "{schema}"')
        con.execute(f'CREATE TABLE "{schema}".fsexport ("PageAgent" TEXT, "EventStart" TIMESTAMP)')
    wh = warehouse_for(postgres, schema)
    names = [c.name for c in wh.ensure_tables(export_columns())]
    wh.close()
    assert names[:3] == ["PageAgent", "EventStart", "IndvId"]


def test_rollback_deletes_the_days_rows_and_sync_rows(
    commit: Callable[..., TransformedBatch], warehouse: PostgresWarehouse, peek: Peek
) -> None:
    commit("2024-02-29T23:00:00Z")
    commit("2024-03-01T00:00:00Z")
    warehouse.rollback_days(date(2024, 3, 1), date(2024, 3, 1))
    assert peek('SELECT count(*), min("EventStart") FROM fsexport') == [
        (3, datetime(2024, 2, 29, 23, 0))
    ]


def test_rollback_reports_what_it_deleted(
    commit: Callable[..., TransformedBatch], warehouse: PostgresWarehouse
) -> None:
    commit("2024-03-01T00:00:00Z", count=4)
    result = warehouse.rollback_days(date(2024, 3, 1), date(2024, 3, 1))
    assert (result.rows_deleted, result.sync_rows_deleted) == (4, 1)


def test_rows_without_a_sync_row_make_their_day_inconsistent(
    commit: Callable[..., TransformedBatch], warehouse: PostgresWarehouse, peek: Peek
) -> None:
    commit("2024-03-01T00:00:00Z")
    peek("DELETE FROM fssync")
    assert warehouse.inconsistent_days(date(2024, 2, 28)) == [date(2024, 3, 1)]


def test_a_hauser_sync_table_is_continued(postgres: PostgresCluster, schema: str) -> None:
    with psycopg.connect(postgres.dsn, autocommit=True) as con:
        con.execute(f'CREATE SCHEMA "{schema}"')
        con.execute(
            f'CREATE TABLE "{schema}".fssync ("ID" BIGINT, "Processed" TIMESTAMP, '
            '"BundleEndTime" TIMESTAMP)'
        )
        con.execute(
            f'INSERT INTO "{schema}".fssync VALUES (-1, %s, %s)',  # noqa: S608 - test schema
            (datetime(2024, 3, 1, 7), datetime(2024, 3, 1, 6)),
        )
    wh = warehouse_for(postgres, schema)
    wh.ensure_tables(export_columns())
    ends = [r.end for r in wh.sync_records()]
    wh.close()
    assert ends == [datetime(2024, 3, 1, 6, 0, tzinfo=UTC)]


def test_check_passes_and_leaves_nothing(warehouse: PostgresWarehouse, peek: Peek) -> None:
    warehouse.check()
    tables = peek(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    )
    assert sorted(t for (t,) in tables) == ["fsexport", "fsrejects", "fssync"]


def test_a_lost_connection_is_transient_and_the_next_call_reconnects(
    warehouse: PostgresWarehouse, postgres: PostgresCluster
) -> None:
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE 'syncd/%%'"
        )
    with pytest.raises(TransientLoadError):
        warehouse.sync_records()
    assert warehouse.sync_records() == []


def test_an_unreachable_server_is_transient(schema: str) -> None:
    from standins.postgres import free_port

    wh = PostgresWarehouse(host="127.0.0.1", port=free_port(), user="x", dbname="x", schema=schema)
    with pytest.raises(TransientLoadError, match="cannot connect"):
        wh.check()


def test_a_wrong_password_never_shows_the_password(postgres: PostgresCluster) -> None:
    wh = PostgresWarehouse(
        host=postgres.host,
        port=postgres.port,
        user="nobody",
        password="hunter2-secret",
        dbname="postgres",
    )
    with pytest.raises(Exception) as caught:
        wh.check()
    assert "hunter2" not in str(caught.value) + repr(wh)


@pytest.mark.parametrize(
    ("sqlstate", "transient"),
    [("40001", True), ("40P01", True), ("55P03", True), ("08006", True), ("42601", False)],
)
def test_sqlstates_are_sorted(sqlstate: str, transient: bool) -> None:
    assert is_transient_sqlstate(sqlstate) is transient


def test_a_syntax_error_maps_to_terminal(
    warehouse: PostgresWarehouse, postgres: PostgresCluster
) -> None:
    with psycopg.connect(postgres.dsn) as con:
        with pytest.raises(psycopg.Error) as caught:
            con.execute("SELEC 1")
    assert isinstance(map_postgres_error(caught.value, "x"), TerminalLoadError)


def test_commit_refuses_a_record_of_another_batch(
    warehouse: PostgresWarehouse, staged_files: StagedFiles
) -> None:
    key = staged_files.key("2024-03-01T00:00:00Z")
    batch = staged_files.write(key, staged_files.rows(key, 1), "csv")
    other = SyncRecord("other", "segment", key.start, key.end + timedelta(hours=1), COMMITTED_AT)
    with pytest.raises(TerminalLoadError, match="does not belong"):
        warehouse.commit_batch(staged_files.in_place(batch), other)


def test_syncd_once_fills_postgres_with_the_simulators_events(
    tmp_path: Path, postgres: PostgresCluster, schema: str
) -> None:
    """Provider "postgres" end to end: simulator -> CLI -> local stage -> COPY FROM STDIN."""
    from e2e_support import (
        API_KEY,
        assert_rows_equal,
        expected_segment_rows,
        hour_windows,
        run_cli,
        sorted_custom_vars,
        write_config,
    )

    from syncd.simulator import Simulator, SimulatorConfig

    start = datetime(2026, 11, 1, 23, tzinfo=UTC)
    overrides = postgres_overrides(postgres, schema)
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=100)) as sim:
        files = write_config(tmp_path, sim, start, overrides)
        assert run_cli(["once", "-c", str(files.config)]) == 0
        expected = expected_segment_rows(
            sim, hour_windows(start, datetime(2026, 11, 2, 2, tzinfo=UTC))
        )
    with psycopg.connect(postgres.dsn) as con:
        cursor = con.execute(f'SELECT * FROM "{schema}".fsexport')  # noqa: S608 - test schema
        names = [d.name for d in cursor.description or []]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    # JSONB keeps the object, not its key order (PostgreSQL orders keys by length, then bytes)
    assert_rows_equal(sorted_custom_vars(rows), sorted_custom_vars(expected))


def test_a_recommit_deletes_within_the_batchs_window(
    commit: Callable[..., TransformedBatch], peek: Peek, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delete of a segment batch's earlier rows is bounded by its window (EventStart)."""
    from warehouses import sql

    windows: list[Any] = []
    original = sql.delete_batch

    def spy(*args: Any, **kwargs: Any) -> list[sql.Query]:
        windows.append(args[3] if len(args) > 3 else kwargs.get("window"))
        return original(*args, **kwargs)

    monkeypatch.setattr(sql, "delete_batch", spy)
    batch = commit("2024-03-01T00:00:00Z", count=3)
    commit("2024-03-01T00:00:00Z", count=2)
    window = (batch.key.start.replace(tzinfo=None), batch.key.end.replace(tzinfo=None))
    assert windows == [window, window] and peek("SELECT count(*) FROM fsexport") == [(2,)]


# -- TLS: verify-full unless the server is on this machine -----------------------------------------


@pytest.mark.parametrize(
    ("host", "sslmode"),
    [
        ("db.example.com", "verify-full"),
        ("10.0.0.7", "verify-full"),
        ("127.0.0.1", "prefer"),
        ("127.8.9.10", "prefer"),
        ("::1", "prefer"),
        ("localhost", "prefer"),
        ("/var/run/postgresql", "prefer"),
        ("localhost,db.example.com", "verify-full"),
    ],
)
def test_the_default_sslmode_verifies_any_host_off_this_machine(host: str, sslmode: str) -> None:
    assert PostgresWarehouse(host=host, user="u", dbname="d")._params["sslmode"] == sslmode


def test_verify_full_sends_nothing_to_a_server_that_refuses_tls(postgres: PostgresCluster) -> None:
    warehouse = PostgresWarehouse(
        host=postgres.host,
        port=postgres.port,
        user=postgres.user,
        dbname=postgres.database,
        sslmode="verify-full",
    )
    with pytest.raises(TerminalLoadError, match="server does not support SSL"):
        warehouse.check()


def tls_postgres(server: TlsServer, monkeypatch: pytest.MonkeyPatch) -> PostgresWarehouse:
    monkeypatch.setenv("PGSSLROOTCERT", str(server.ca))
    return PostgresWarehouse(
        host=server.proxy.host,
        port=server.proxy.port,
        user="postgres",
        dbname="postgres",
        sslmode="verify-full",
    )


def test_verify_full_refuses_a_certificate_naming_another_host(
    tls_proxy: Callable[[list[str]], TlsServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = tls_postgres(tls_proxy(["db.example.com"]), monkeypatch)
    with pytest.raises(TerminalLoadError, match="does not match host name"):
        warehouse.check()


def test_verify_full_accepts_a_certificate_naming_the_host(
    tls_proxy: Callable[[list[str]], TlsServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = tls_postgres(tls_proxy(["127.0.0.1"]), monkeypatch)
    try:
        warehouse.check()
    finally:
        warehouse.close()
