"""The one SQL core: one renderer through one Dialect per warehouse, one quoting function,
one commit / consistency / rollback implementation (`warehouses.dbapi`) for every DB-API
adapter, and the lease SQL rendered the same way."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from syncd.batch import StagedBatch, SyncRecord
from syncd.errors import ConfigError, TerminalLoadError
from syncd.fields import FieldType, export_columns
from syncd.timeutil import UTC
from warehouses import sql
from warehouses.base import quote_identifier
from warehouses.dbapi import DbApiCore, DbApiWarehouse
from warehouses.duckdb import DuckDBWarehouse
from warehouses.lease_sql import _READ, TableLease
from warehouses.postgres import PostgresWarehouse
from warehouses.redshift import RedshiftWarehouse, redshift_dialect
from warehouses.sql import BIGQUERY, DUCKDB, POSTGRES, REDSHIFT, Query, TableNames, render

if TYPE_CHECKING:
    from conftest import StagedFiles

TABLES = TableNames(export="ev", sync="sy", rejects="rj", schema="s1")
TEMPLATE = "DELETE FROM {export} WHERE {SyncdBatchId} = {p} AND {EventStart} < {p}"


# -- one renderer, one Dialect per warehouse --------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "expected"),
    [
        (DUCKDB, 'DELETE FROM "s1"."ev" WHERE "SyncdBatchId" = ? AND "EventStart" < ?'),
        (POSTGRES, 'DELETE FROM "s1"."ev" WHERE "SyncdBatchId" = %s AND "EventStart" < %s'),
        (REDSHIFT, 'DELETE FROM "s1"."ev" WHERE "SyncdBatchId" = %s AND "EventStart" < %s'),
    ],
    ids=["duckdb", "postgres", "redshift"],
)
def test_each_dialect_renders_its_quotes_and_placeholders(
    dialect: sql.Dialect, expected: str
) -> None:
    assert render(TEMPLATE, dialect, TABLES) == expected


def test_bigquery_renders_backticks_and_refuses_positional_parameters() -> None:
    text = render("SELECT {Holder} FROM {lease} WHERE {Name} = @name", BIGQUERY, lease="`d`.`l`")
    assert text == "SELECT `Holder` FROM `d`.`l` WHERE `Name` = @name"
    assert sql.column_list(["a", "b"], BIGQUERY, alias="s.") == "s.`a`, s.`b`"
    with pytest.raises(ValueError, match="named parameters"):
        render(TEMPLATE, BIGQUERY, TABLES)


@pytest.mark.parametrize(
    ("dialect", "types"),
    [
        (DUCKDB, ("BIGINT", "DOUBLE", "VARCHAR", "TIMESTAMP", "JSON")),
        (POSTGRES, ("BIGINT", "DOUBLE PRECISION", "TEXT", "TIMESTAMP", "JSONB")),
        (REDSHIFT, ("BIGINT", "DOUBLE PRECISION", "VARCHAR(65535)", "TIMESTAMP", "VARCHAR(65535)")),
        (BIGQUERY, ("INT64", "FLOAT64", "STRING", "TIMESTAMP", "JSON")),
    ],
    ids=["duckdb", "postgres", "redshift", "bigquery"],
)
def test_each_dialect_spells_the_column_types(dialect: sql.Dialect, types: tuple[str, ...]) -> None:
    columns = [c for c in export_columns() if c.name in ("EventStart", "CustomVars")]
    spelled = [dialect.column_type(t) for t in FieldType]
    assert tuple(spelled) == types
    create = sql.create_table(dialect, TABLES.qualified("ev", dialect.quote), columns)
    q = dialect.quote
    assert f"{q}EventStart{q} TIMESTAMP" in create.sql
    assert f"{q}CustomVars{q} {types[-1]}" in create.sql


def test_redshift_dialect_variants_keep_the_quote_and_placeholder() -> None:
    super_json = redshift_dialect(1000, super_json=True)
    assert (super_json.quote, super_json.param, super_json.fold_case) == ('"', "%s", True)
    assert super_json.column_type(FieldType.STRING) == "VARCHAR(1000)"
    assert super_json.column_type(FieldType.JSON) == "SUPER"


# -- one quoting function ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ['a"b', "a`b", "1abc", "x; DROP TABLE y", "", "a b", "ä", "x" * 128, "a.b", "a\x00"],
)
def test_quote_identifier_refuses_names_that_are_not_plain(name: str) -> None:
    with pytest.raises(ConfigError, match="not a valid name"):
        quote_identifier(name)
    with pytest.raises(ConfigError, match="not a valid name"):
        quote_identifier(name, "`")


@pytest.mark.parametrize("dialect", [DUCKDB, POSTGRES, REDSHIFT, BIGQUERY], ids=lambda d: d.name)
def test_render_quotes_every_name_it_inserts_and_refuses_bad_ones(dialect: sql.Dialect) -> None:
    with pytest.raises(ConfigError, match="not a valid name"):
        render("SELECT {bad-name} FROM t", dialect)
    with pytest.raises(ConfigError, match="not a valid name"):
        sql.column_list(['x" OR 1=1 --'], dialect)
    with pytest.raises(ConfigError, match="not a valid name"):
        TableNames(export='ev"; DROP TABLE x; --')


def test_quote_identifier_of_any_text_doubles_the_quote() -> None:
    """The columnar transform reads JSON keys (data, not names) as struct fields."""
    assert quote_identifier('we"ird key', any_text=True) == '"we""ird key"'
    assert quote_identifier("back`tick", "`", any_text=True) == "`back``tick`"


# -- the lease SQL, rendered like the rest ----------------------------------------------------


@pytest.mark.parametrize("param", ["?", "%s"])
def test_the_lease_sql_is_rendered_through_the_dialect(param: str) -> None:
    lease = TableLease(lambda: None, "fssync_lease", "fssync", schema="s1", param=param)
    text, params = lease.fence_query(" FOR SHARE")
    assert text == (
        f'SELECT "HolderId", "Holder" FROM "s1"."fssync_lease" WHERE "Name" = {param} '  # noqa: S608
        'ORDER BY "AcquiredAt" DESC, "HolderId" FOR SHARE'
    )
    assert params == ("fssync",)
    assert lease.lock_query() == 'LOCK "s1"."fssync_lease"'
    assert lease._sql(_READ).count(param) == 1


def test_the_lease_refuses_a_bad_table_name() -> None:
    with pytest.raises(ConfigError, match="not a valid name"):
        TableLease(lambda: None, 'l"; DROP TABLE x', "fssync")


# -- one commit path for every DB-API adapter -------------------------------------------------

SHARED = (
    "ensure_tables",
    "commit_batch",
    "sync_records",
    "inconsistent_days",
    "rollback_days",
    "check",
    "read_rows",
    "drop_tables",
    "_transaction",
    "_reconcile",
    "_check_loaded",
)


@pytest.mark.parametrize("adapter", [DuckDBWarehouse, PostgresWarehouse, RedshiftWarehouse])
def test_every_db_api_adapter_uses_the_one_core(adapter: type[DbApiCore]) -> None:
    assert issubclass(adapter, DbApiCore)
    own = [name for name in SHARED if name in vars(adapter)]
    assert own == [], f"{adapter.__name__} re-implements {own}"
    for name in SHARED:
        assert inspect.getmodule(getattr(adapter, name)).__name__ == "warehouses.dbapi"  # type: ignore[union-attr]


def test_the_table_lease_is_for_the_networked_warehouses_only() -> None:
    assert issubclass(PostgresWarehouse, DbApiWarehouse)
    assert issubclass(RedshiftWarehouse, DbApiWarehouse)
    assert not hasattr(DuckDBWarehouse, "acquire_lease")  # its lease is the OS lock file


class RecordingDuckDB(DuckDBWarehouse):
    """DuckDB with its hooks noted as the core calls them; `refuse` makes the fence refuse."""

    refuse = False

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.calls: list[str] = []

    def _begin(self, cursor: Any) -> None:
        self.calls.append("begin")
        super()._begin(cursor)

    def _begin_commit(self, cursor: Any) -> None:
        self.calls.append("begin_commit")

    def _load(self, cursor: Any, staged: StagedBatch, record: SyncRecord) -> int:
        self.calls.append("load")
        return super()._load(cursor, staged, record)

    def _load_rejects(self, cursor: Any, staged: StagedBatch, record: SyncRecord) -> int:
        self.calls.append("load_rejects")
        return super()._load_rejects(cursor, staged, record)

    def _fence(self, cursor: Any, action: str) -> None:
        self.calls.append("fence")
        if self.refuse:
            raise TerminalLoadError(f"{action}: refused by the fence")


@pytest.fixture
def recording(tmp_path: Path) -> Iterator[RecordingDuckDB]:
    warehouse = RecordingDuckDB(tmp_path / "core.duckdb")
    warehouse.ensure_tables(export_columns())
    yield warehouse
    warehouse.close()


def _commit(warehouse: DuckDBWarehouse, staged_files: StagedFiles, start: str, count: int) -> None:
    key = staged_files.key(start)
    batch = staged_files.write(key, staged_files.rows(key, count), "parquet")
    record = SyncRecord(
        batch_id=key.id,
        source=key.source,
        start=key.start,
        end=key.end,
        committed_at=datetime(2024, 3, 5, 12, tzinfo=UTC),
        rows_loaded=batch.rows,
    )
    warehouse.commit_batch(StagedBatch(batch=batch, uri=str(batch.path), rejects_uri=None), record)


def test_the_core_commit_calls_the_hooks_in_order(
    recording: RecordingDuckDB, staged_files: StagedFiles
) -> None:
    recording.calls.clear()
    _commit(recording, staged_files, "2024-03-01T00:00:00Z", 3)
    assert recording.calls == ["begin", "begin_commit", "load", "load_rejects", "fence"]
    assert [r.rows_loaded for r in recording.sync_records()] == [3]


def test_a_fence_refusal_rolls_the_whole_commit_back(
    recording: RecordingDuckDB, staged_files: StagedFiles
) -> None:
    _commit(recording, staged_files, "2024-03-01T00:00:00Z", 3)
    recording.refuse = True
    with pytest.raises(TerminalLoadError, match="refused by the fence"):
        _commit(recording, staged_files, "2024-03-01T01:00:00Z", 4)
    assert [r.rows_loaded for r in recording.sync_records()] == [3]
    assert recording.inconsistent_days(date(2024, 3, 1)) == []
    result = recording.rollback_days(date(2024, 3, 1), date(2024, 3, 1))
    assert (result.rows_deleted, result.sync_rows_deleted) == (3, 1)


def test_the_core_queries_are_the_dialects(recording: RecordingDuckDB) -> None:
    """What the core runs for DuckDB is `warehouses.sql` rendered in DuckDB's dialect."""
    window = (datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 1, 1, tzinfo=UTC))
    for query in (
        *sql.delete_batch(DUCKDB, recording.tables, "b", window),
        *sql.rollback_days(DUCKDB, recording.tables, date(2024, 3, 1), date(2024, 3, 1)),
        sql.inconsistent_days(DUCKDB, recording.tables, date(2024, 3, 1)),
    ):
        assert isinstance(query, Query)
        assert "%s" not in query.sql and "`" not in query.sql
        assert query.sql.count("?") == len(query.params)
