"""The SQL of the SQL warehouses (DuckDB, PostgreSQL, Redshift; BigQuery's dialect too).

Everything a dialect does differently is data in a `Dialect`: the identifier quote character,
the parameter placeholder and style, column type names, JSON and timestamp spellings,
identifier case folding. Every builder returns a `Query`: SQL text from a constant template
filled by `render` (the one renderer: it quotes every name it inserts through
`warehouses.base.quote_identifier`, the one quoting function), plus the values that travel as
parameters. No value ever reaches the SQL text.

Timestamps are stored as naive UTC (`TIMESTAMP` without time zone), as hauser did;
`to_db_timestamp` / `from_db_timestamp` convert at the edge.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Any

import structlog

from syncd.batch import SyncRecord
from syncd.fields import BATCH_ID, KNOWN_FIELDS, LOADED_AT, Column, FieldType
from syncd.timeutil import UTC
from warehouses.base import RollbackResult, quote_identifier, validate_identifier

log = structlog.get_logger(__name__)

_I, _F, _S, _T = FieldType.INT64, FieldType.FLOAT, FieldType.STRING, FieldType.TIMESTAMP

#: The column every day-based query dates orphan rows by.
EVENT_START = Column("EventStart", KNOWN_FIELDS["EventStart"])

#: Columns the sync, consistency and rollback SQL depend on; `ensure_tables` adds them to any
#: export table that lacks them.
REQUIRED_EXPORT_COLUMNS: tuple[Column, ...] = (EVENT_START, BATCH_ID, LOADED_AT)

#: hauser's SyncTable, in hauser's order (ID is -1 since hauser v1.0, the bundle id before).
HAUSER_SYNC_COLUMNS: tuple[Column, ...] = (
    Column("ID", _I),
    Column("Processed", _T),  # committed at
    Column("BundleEndTime", _T),  # batch end: the resume point is its maximum
)

#: The SyncTable: hauser's columns first so hauser's own reader still works, then syncd's.
SYNC_COLUMNS: tuple[Column, ...] = (
    *HAUSER_SYNC_COLUMNS,
    Column("SyncdBatchId", _S),
    Column("SyncdSource", _S),
    Column("BatchStart", _T),
    Column("BundleIds", _S),  # comma-separated legacy bundle ids
    Column("OperationId", _S),
    Column("RowsLoaded", _I),
    Column("RowsRejected", _I),
    Column("Bytes", _I),
    Column("StagedUri", _S),
    Column("SyncdVersion", _S),
    Column("SettledAt", _T),  # when a settle replaced the window (SettleAfter); else NULL
    Column("SettleRowsDelta", _I),  # rows that settle added (negative: removed)
)

#: Rows the transform quarantined, one per rejected export row.
REJECTS_COLUMNS: tuple[Column, ...] = (
    Column("SyncdBatchId", _S),
    Column("Position", _I),
    Column("Reason", _S),
    Column("Raw", _S),
    Column("RejectedAt", _T),
)

#: Source of sync rows continued from a hauser SyncTable.
HAUSER_SOURCE = "hauser"
#: Source of the sync rows of segment-export batches (`syncd.batch.BatchKey.source`).
SEGMENT_SOURCE = "segment"


@dataclass(frozen=True)
class Dialect:
    """What one SQL warehouse spells differently."""

    name: str
    types: Mapping[FieldType, str]  # column type for each FieldType
    #: The placeholder of a positional parameter: "?" (DuckDB) or "%s" (psycopg,
    #: redshift_connector); "@" for BigQuery, whose parameters are named (`@name` in the
    #: template itself: `render` refuses `{p}` for it).
    param: str = "?"
    paramstyle: str = "qmark"  # PEP 249 paramstyle: "qmark", "format" or "named"
    fold_case: bool = False  # identifiers match case-insensitively even when quoted
    quote: str = '"'  # the identifier quote character
    #: CREATE OR REPLACE VIEW may change a view's columns (DuckDB, BigQuery); otherwise
    #: (PostgreSQL, Redshift) a view is dropped and created in one transaction
    #: (`warehouses.views`).
    replace_view_changes_columns: bool = False
    union_distinct: str = "UNION"  # a UNION that drops duplicate rows
    #: The function that turns JSON text into a JSON column's value when INSERT ... VALUES
    #: cannot take it (Snowflake: VALUES hold constants only and a VARIANT column refuses
    #: text): a multi-row insert is then `INSERT INTO t (cols) SELECT v.a, ..., PARSE_JSON(v.j)
    #: FROM (VALUES (...), (...)) AS v (cols)`. Empty: a plain `INSERT ... VALUES` list.
    insert_json_function: str = ""

    def column_type(self, type_: FieldType) -> str:
        return self.types[type_]

    def placeholders(self, count: int) -> str:
        return ", ".join([self.placeholder()] * count)

    def placeholder(self, name: str = "") -> str:
        """The placeholder of a parameter; a named one (`@name`) only with its `name`."""
        if self.paramstyle == "named":
            if not name:
                raise ValueError(f"{self.name} takes named parameters: write @name in the template")
            return f"{self.param}{validate_identifier(name, 'parameter')}"
        return self.param


DUCKDB = Dialect(
    name="duckdb",
    types={_I: "BIGINT", _F: "DOUBLE", _S: "VARCHAR", _T: "TIMESTAMP", FieldType.JSON: "JSON"},
    param="?",
    paramstyle="qmark",
    fold_case=True,
    replace_view_changes_columns=True,
)

POSTGRES = Dialect(
    name="postgres",
    types={
        _I: "BIGINT",
        _F: "DOUBLE PRECISION",
        _S: "TEXT",
        _T: "TIMESTAMP",
        FieldType.JSON: "JSONB",
    },
    param="%s",
    paramstyle="format",
)

#: hauser's Redshift types; CustomVars stays text as in hauser's tables (`redshift_dialect`
#: makes the configured variant: VarCharMax, SUPER). Names fold to lower case, quoted or not.
REDSHIFT = replace(
    POSTGRES,
    name="redshift",
    types={**POSTGRES.types, _S: "VARCHAR(65535)", FieldType.JSON: "VARCHAR(65535)"},
    fold_case=True,
)

#: BigQuery's GoogleSQL: backtick-quoted names, named parameters (`@name`), its type names.
BIGQUERY = Dialect(
    name="bigquery",
    types={_I: "INT64", _F: "FLOAT64", _S: "STRING", _T: "TIMESTAMP", FieldType.JSON: "JSON"},
    param="@",
    paramstyle="named",
    quote="`",
    replace_view_changes_columns=True,
    union_distinct="UNION DISTINCT",
)

#: The dialects by name (`Dialect.name`), for what names its warehouse's dialect.
DIALECTS: Mapping[str, Dialect] = {d.name: d for d in (DUCKDB, POSTGRES, REDSHIFT, BIGQUERY)}

# Catalog type names (information_schema.columns.data_type of DuckDB, PostgreSQL, Redshift)
# mapped back to a FieldType, by their leading word(s). Anything else reads as STRING.
_TYPE_FAMILIES: tuple[tuple[re.Pattern[str], FieldType], ...] = (
    (re.compile(r"^(TIMESTAMP|DATETIME)"), _T),
    (
        re.compile(
            r"^(BIGINT|INTEGER|INT|INT2|INT4|INT8|INT64|SMALLINT|TINYINT|HUGEINT|UBIGINT|"
            r"UINTEGER|USMALLINT|UTINYINT|UHUGEINT|LONG|NUMBER)\b"
        ),
        _I,
    ),
    (re.compile(r"^(DOUBLE|FLOAT|FLOAT4|FLOAT8|REAL|DECIMAL|NUMERIC)\b"), _F),
    (re.compile(r"^(JSON|JSONB|SUPER|VARIANT)\b"), FieldType.JSON),
)


def field_type_of(sql_type: str) -> FieldType:
    """The FieldType of a catalog column type; unknown types read as STRING."""
    normalized = sql_type.strip().upper()
    for pattern, type_ in _TYPE_FAMILIES:
        if pattern.match(normalized):
            return type_
    return _S


@dataclass(frozen=True)
class Query:
    """SQL text and the values that travel with it as parameters."""

    sql: str
    params: tuple[Any, ...] = ()


@dataclass(frozen=True)
class TableNames:
    """The three tables of a SQL warehouse, validated once; `schema` qualifies them if set."""

    export: str = "fsexport"
    sync: str = "fssync"
    rejects: str = "fsrejects"
    schema: str | None = None

    def __post_init__(self) -> None:
        validate_identifier(self.export, "ExportTable")
        validate_identifier(self.sync, "SyncTable")
        validate_identifier(self.rejects, "RejectsTable")
        if self.schema is not None:
            validate_identifier(self.schema, "DatabaseSchema")

    def qualified(self, table: str, quote: str = '"') -> str:
        """`"schema"."table"` or `"table"`, quoted with `quote`."""
        return qualified_name(table, self.schema, quote)


def qualified_name(name: str, schema: str | None, quote: str = '"') -> str:
    """`"schema"."name"` or `"name"` (a table or view; BigQuery's schema is its dataset),
    quoted with `quote`."""
    if schema is None:
        return quote_identifier(name, quote)
    return f"{quote_identifier(schema, quote)}.{quote_identifier(name, quote)}"


_TABLE_FIELDS = ("export", "sync", "rejects")


def render(template: str, d: Dialect, t: TableNames | None = None, **fragments: str) -> str:
    """Fill a constant SQL template; the one place where SQL text meets names.

    `{p}` becomes the dialect's parameter placeholder; `{export}`, `{sync}`, `{rejects}` the
    quoted (qualified) table names of `t`; a field named in `fragments` takes that fragment
    (built by this module from quoted identifiers and dialect type names); any other field is
    a column name and is quoted by `quote_identifier` with the dialect's quote character.
    Values never pass through here.
    """
    values: dict[str, str] = {}
    for _, name, _, _ in string.Formatter().parse(template):
        if name is None or name in values:
            continue
        if name in fragments:
            values[name] = fragments[name]
        elif name == "p":
            values[name] = d.placeholder()
        elif name in _TABLE_FIELDS and t is not None:
            values[name] = t.qualified(getattr(t, name), d.quote)
        else:
            values[name] = quote_identifier(name, d.quote)
    return template.format_map(values)


def column_list(columns: Sequence[Column] | Sequence[str], d: Dialect, alias: str = "") -> str:
    """`"a", "b"` (or `alias."a", ...`): quoted column names for an INSERT or SELECT list, in
    the dialect's quote character."""
    names = [c.name if isinstance(c, Column) else c for c in columns]
    return ", ".join(f"{alias}{quote_identifier(n, d.quote)}" for n in names)


# --- DDL -------------------------------------------------------------------------------------

_CREATE_TABLE = "CREATE TABLE IF NOT EXISTS {table} ({definitions})"
_ADD_COLUMN = "ALTER TABLE {table} ADD COLUMN {definition}"
_TABLE_COLUMNS = (
    "SELECT column_name, data_type FROM information_schema.columns "
    "WHERE {name_match} AND {schema_match} ORDER BY ordinal_position"
)


def column_definition(d: Dialect, column: Column) -> str:
    return f"{quote_identifier(column.name, d.quote)} {d.column_type(column.type)}"


def create_table(
    d: Dialect,
    qualified_table: str,
    columns: Sequence[Column],
    *,
    types: Callable[[Column], Dialect] | None = None,
    suffix: str = "",
) -> Query:
    """CREATE TABLE IF NOT EXISTS; `types` picks the dialect whose type a column gets (Redshift's
    export table: VarCharMax but for the batch id), `suffix` is rendered after the column list
    (e.g. " SORTKEY ({EventStart})")."""
    definitions = ", ".join(column_definition(types(c) if types else d, c) for c in columns)
    create = render(_CREATE_TABLE, d, table=qualified_table, definitions=definitions)
    return Query(create + render(suffix, d))


def add_column(d: Dialect, qualified_table: str, column: Column) -> Query:
    """ALTER TABLE ADD COLUMN, the column typed in `d`."""
    definition = column_definition(d, column)
    return Query(render(_ADD_COLUMN, d, table=qualified_table, definition=definition))


def table_columns(d: Dialect, table: str, schema: str | None) -> Query:
    """(column_name, data_type) of `table`, in table order; no rows when it does not exist."""
    name_match = "lower(table_name) = lower({p})" if d.fold_case else "table_name = {p}"
    schema_match = "table_schema = {p}" if schema is not None else "table_schema = current_schema()"
    params: tuple[Any, ...] = (table,) if schema is None else (table, schema)
    sql = render(
        _TABLE_COLUMNS,
        d,
        name_match=render(name_match, d),
        schema_match=render(schema_match, d),
    )
    return Query(sql, params)


def missing_columns(
    existing: Sequence[str], wanted: Sequence[Column], fold_case: bool
) -> list[Column]:
    """The `wanted` columns absent from `existing` names, in `wanted` order."""
    have = {n.lower() for n in existing} if fold_case else set(existing)
    return [c for c in wanted if (c.name.lower() if fold_case else c.name) not in have]


def with_required(columns: Sequence[Column]) -> tuple[Column, ...]:
    """`columns` plus any of REQUIRED_EXPORT_COLUMNS they lack, at the end."""
    names = {c.name.lower() for c in columns}
    return (*columns, *(c for c in REQUIRED_EXPORT_COLUMNS if c.name.lower() not in names))


# --- one batch -------------------------------------------------------------------------------

_DELETE_BATCH = "DELETE FROM {table} WHERE {SyncdBatchId} = {p}"
_DELETE_BATCH_ROWS = _DELETE_BATCH + " AND {EventStart} >= {p} AND {EventStart} < {p}"
_INSERT_SYNC_ROW = "INSERT INTO {sync} ({columns}) VALUES ({placeholders})"


def delete_batch(
    d: Dialect, t: TableNames, batch_id: str, window: tuple[datetime, datetime] | None = None
) -> list[Query]:
    """Remove every trace of one batch (export rows, rejects, sync row): a re-run's first step.

    With `window`, the [start, end) every row of the batch has its EventStart in (a segment
    batch: `syncd.transform.convert.batch_window`, the transform quarantines the other rows),
    the export rows are deleted within it, so a sort key or partitions on EventStart bound the
    scan. A legacy bundle holds whatever was processed in its time: no window, no bound.
    """
    export = (
        Query(render(_DELETE_BATCH, d, table=t.qualified(t.export)), (batch_id,))
        if window is None
        else Query(
            render(_DELETE_BATCH_ROWS, d, table=t.qualified(t.export)),
            (batch_id, to_db_timestamp(window[0]), to_db_timestamp(window[1])),
        )
    )
    return [
        export,
        *(
            Query(render(_DELETE_BATCH, d, table=t.qualified(table)), (batch_id,))
            for table in (t.rejects, t.sync)
        ),
    ]


def insert_sync_row(
    d: Dialect,
    t: TableNames,
    record: SyncRecord,
    rows_loaded: int,
    rows_rejected: int,
    syncd_version: str,
) -> Query:
    """The sync row of a committed batch; RowsLoaded/RowsRejected are what was loaded."""
    values = (
        -1,
        to_db_timestamp(record.committed_at),
        to_db_timestamp(record.end),
        record.batch_id,
        record.source,
        to_db_timestamp(record.start) if record.start is not None else None,
        ",".join(str(b) for b in record.bundle_ids),
        record.operation_id,
        rows_loaded,
        rows_rejected,
        record.bytes,
        record.staged_uri,
        record.syncd_version or syncd_version,
        to_db_timestamp(record.settled_at) if record.settled_at is not None else None,
        record.settle_delta if record.settled_at is not None else None,
    )
    sql = render(
        _INSERT_SYNC_ROW,
        d,
        t,
        columns=column_list(SYNC_COLUMNS, d),
        placeholders=d.placeholders(len(SYNC_COLUMNS)),
    )
    return Query(sql, values)


# --- reading the sync table ------------------------------------------------------------------

_SELECT_SYNC_ROWS = "SELECT {columns} FROM {sync}{where} ORDER BY {BundleEndTime}, {Processed}"
_AFTER = " WHERE {BundleEndTime} > {p}"


def select_sync_rows(
    d: Dialect, t: TableNames, since: datetime | None, present: Collection[str] | None = None
) -> Query:
    """Sync rows (SYNC_COLUMNS order) ending after `since`, oldest first.

    `present` names the sync table's columns when it may still be hauser's (not reconciled
    yet, e.g. read by the status command): syncd's missing columns then read as typed NULLs.
    A dialect with named parameters (BigQuery) takes `since` as `@since`.
    """
    have = None if present is None else {n.lower() for n in present}
    selected = ", ".join(
        quote_identifier(c.name, d.quote)
        if have is None or c.name.lower() in have
        else f"CAST(NULL AS {d.column_type(c.type)}) AS {quote_identifier(c.name, d.quote)}"
        for c in SYNC_COLUMNS
    )
    where = render(_AFTER, d, p=d.placeholder("since")) if since is not None else ""
    params = (to_db_timestamp(since),) if since is not None else ()
    return Query(render(_SELECT_SYNC_ROWS, d, t, columns=selected, where=where), params)


def record_from_row(row: Sequence[Any]) -> SyncRecord:
    """A SyncRecord from a row in SYNC_COLUMNS order; hauser's rows have only ID and times."""
    (
        hauser_id,
        processed,
        end_value,
        batch_id,
        source,
        start,
        bundle_ids,
        operation_id,
        rows_loaded,
        rows_rejected,
        size,
        staged_uri,
        version,
        settled_at,
        settle_delta,
    ) = row
    end = from_db_timestamp(end_value)
    committed_at = from_db_timestamp(processed) if processed is not None else end
    if batch_id is None:
        legacy_id = int(hauser_id) if hauser_id is not None else -1
        return SyncRecord(
            batch_id=f"{HAUSER_SOURCE}-{end.strftime('%Y%m%dT%H%M%SZ')}",
            source=HAUSER_SOURCE,
            start=None,
            end=end,
            committed_at=committed_at,
            bundle_ids=(legacy_id,) if legacy_id >= 0 else (),
            extra={"hauser_id": str(legacy_id)},
        )
    return SyncRecord(
        batch_id=batch_id,
        source=source or "",
        start=from_db_timestamp(start) if start is not None else None,
        end=end,
        committed_at=committed_at,
        bundle_ids=tuple(int(b) for b in bundle_ids.split(",") if b) if bundle_ids else (),
        operation_id=operation_id or "",
        rows_loaded=int(rows_loaded or 0),
        rows_rejected=int(rows_rejected or 0),
        bytes=int(size or 0),
        staged_uri=staged_uri or "",
        syncd_version=version or "",
        settled_at=from_db_timestamp(settled_at) if settled_at is not None else None,
        settle_delta=int(settle_delta or 0),
    )


# --- days: consistency and rollback ----------------------------------------------------------

_INCONSISTENT_DAYS = (
    "SELECT DISTINCT x.day FROM ("
    # rows of a batch that has no sync row, dated by their own EventStart
    "SELECT CAST(e.{EventStart} AS DATE) AS day FROM {export} e "
    "WHERE e.{SyncdBatchId} IS NOT NULL AND e.{EventStart} >= {p} "
    "AND NOT EXISTS (SELECT 1 FROM {sync} s WHERE s.{SyncdBatchId} = e.{SyncdBatchId}) "
    "{union} "
    # sync rows whose RowsLoaded differs from the rows present, dated by BatchStart
    "SELECT CAST(s.{BatchStart} AS DATE) AS day FROM {sync} s "
    "LEFT JOIN (SELECT {SyncdBatchId} AS batch_id, COUNT(*) AS n FROM {export} "
    "WHERE {SyncdBatchId} IN (SELECT {SyncdBatchId} FROM {sync} WHERE {BatchStart} >= {p})"
    "{rows_after_lo} GROUP BY {SyncdBatchId}) c ON c.batch_id = s.{SyncdBatchId} "
    "WHERE s.{SyncdBatchId} IS NOT NULL AND s.{BatchStart} >= {p} "
    "AND COALESCE(c.n, 0) <> COALESCE(s.{RowsLoaded}, 0)"
    ") x ORDER BY x.day"
)

_BATCHES_IN_DAYS = (
    "SELECT {SyncdBatchId} FROM {sync} WHERE {BatchStart} >= {p} AND {BatchStart} < {p}{kept}"
)
_NOT_KEPT = " AND {SyncdBatchId} NOT IN ({placeholders})"
_NULL_OR_NOT_KEPT = " AND ({SyncdBatchId} IS NULL OR {SyncdBatchId} NOT IN ({placeholders}))"
_ROLLBACK_EXPORT = (
    "DELETE FROM {export} WHERE {rows_in}({SyncdBatchId} IN ({batches_in_days}) "
    "OR ({EventStart} >= {p} AND {EventStart} < {p} AND ({SyncdBatchId} IS NULL "
    "OR {SyncdBatchId} NOT IN (SELECT {SyncdBatchId} FROM {sync} WHERE {SyncdBatchId} IS NOT NULL))))"
)
_ROWS_IN = "{EventStart} >= {p} AND {EventStart} < {p} AND "
_ROLLBACK_REJECTS = "DELETE FROM {rejects} WHERE {SyncdBatchId} IN ({batches_in_days})"
_ROLLBACK_SYNC = (
    "DELETE FROM {sync} WHERE (({BatchStart} >= {p} AND {BatchStart} < {p}) "
    "OR ({BatchStart} IS NULL AND {BundleEndTime} > {p} AND {BundleEndTime} <= {p})){kept}"
)

# A backfill's commit of window [start, end) of a day [lo, hi): the sync rows and rejects of
# the day's segment batches that end in the window, then every row dated in the window but
# those of batches of other days (the same rule as `rollback_days`).
_ENDING_IN_WINDOW = (
    "{SyncdSource} = {p} AND {BatchStart} >= {p} AND {BatchStart} < {p} "
    "AND {BundleEndTime} > {p} AND {BundleEndTime} <= {p} AND {SyncdBatchId} IS NOT NULL"
)
_REPLACED_REJECTS = (
    "DELETE FROM {rejects} WHERE {SyncdBatchId} IN "
    "(SELECT {SyncdBatchId} FROM {sync} WHERE {inside})"
)
_REPLACED_SYNC = "DELETE FROM {sync} WHERE {inside}"
# The day's segment batches that began before the window's end and go on after it (a coarser
# old layout): how many of their rows lie in the window, counted before those rows go, so that
# their RowsLoaded can say how many they still hold (the day stays consistent mid-way).
_GOING_ON = (
    "{SyncdSource} = {p} AND {BatchStart} >= {p} AND {BatchStart} < {p} "
    "AND {BundleEndTime} > {p} AND {SyncdBatchId} IS NOT NULL"
)
_GOING_ON_ROWS = (
    "SELECT {SyncdBatchId}, COUNT(*) FROM {export} WHERE {EventStart} >= {p} "
    "AND {EventStart} < {p} AND {SyncdBatchId} IN (SELECT {SyncdBatchId} FROM {sync} "
    "WHERE {going_on}) GROUP BY {SyncdBatchId}"
)
_LOWER_ROWS_LOADED = (
    "UPDATE {sync} SET {RowsLoaded} = {RowsLoaded} - {p} WHERE {SyncdBatchId} = {p}"
)
_REPLACED_ROWS = (
    "DELETE FROM {export} WHERE {EventStart} >= {p} AND {EventStart} < {p} "
    "AND ({SyncdBatchId} IS NULL OR {SyncdBatchId} NOT IN (SELECT {SyncdBatchId} FROM {sync} "
    "WHERE {SyncdBatchId} IS NOT NULL AND ({BatchStart} < {p} OR {BatchStart} >= {p})))"
)


def only_segment_batches(
    records: Sequence[SyncRecord], lo: datetime, hi: datetime | None = None
) -> bool:
    """Whether every batch starting in [lo, hi) (hi None: from lo on) is a segment batch, whose
    rows lie in its window; a legacy bundle holds whatever was processed in its time."""
    return all(
        r.source == "segment"
        for r in records
        if r.start is not None and lo <= r.start and (hi is None or r.start < hi)
    )


def segment_rows_end(records: Sequence[SyncRecord], lo: datetime, hi: datetime) -> datetime | None:
    """Where the rows of the batches starting in [lo, hi) end, by EventStart: the latest end
    of their windows, at least `hi` (their rows start at `lo` or later). A segment batch's rows
    lie in its window (the transform quarantines the others); a legacy bundle holds whatever
    was processed in its time, so with a legacy batch among them nothing bounds them: None."""
    end = hi
    for record in records:
        if record.start is None or not lo <= record.start < hi:
            continue
        if record.source != "segment":
            return None
        end = max(end, record.end)
    return end


def inconsistent_days(d: Dialect, t: TableNames, since: date, bounded: bool = False) -> Query:
    """UTC days from `since` on whose rows and sync rows disagree, one `day` per row, sorted.

    A day disagrees when it holds export rows of a batch that has no sync row (dated by each
    row's EventStart), or a sync row whose RowsLoaded differs from the rows present for its
    batch (dated by BatchStart). hauser-era rows carry no batch id and cannot be checked.
    `bounded` (every batch from `since` on is a segment batch: `segment_rows_end`) counts only
    rows from `since` on, so a sort key or partitions on EventStart bound the scan.
    Every parameter is `since`'s start: a dialect with named parameters (BigQuery) takes it
    as `@lo`.
    """
    lo = to_db_timestamp(day_start(since))
    p = d.placeholder("lo")
    union = d.union_distinct
    if bounded:
        after_lo = render(" AND {EventStart} >= {p}", d, p=p)
        text = render(_INCONSISTENT_DAYS, d, t, p=p, union=union, rows_after_lo=after_lo)
        return Query(text, (lo, lo, lo, lo))
    return Query(render(_INCONSISTENT_DAYS, d, t, p=p, union=union, rows_after_lo=""), (lo, lo, lo))


def rollback_days(
    d: Dialect,
    t: TableNames,
    first: date,
    last: date,
    rows_end: datetime | None = None,
    keep: Collection[str] = (),
) -> list[Query]:
    """Statements, in order and for one transaction, that delete days first..last inclusive.

    1. export rows of the sync rows whose BatchStart falls in the days, and rows dated in the
       days (EventStart) that belong to no sync row at all (orphans, hauser-era rows); rows of
       batches of other days stay, even when their EventStart falls in these days;
    2. rejects of those sync rows;
    3. the sync rows: syncd's by BatchStart, hauser's by BundleEndTime in (first, last + 1 day].

    With `rows_end` (`segment_rows_end`), the export rows are deleted within EventStart
    [first, rows_end), so a sort key or partitions on EventStart bound the scan. The batches
    named in `keep` (a backfill's new batches of the days) stay, with their rows and rejects.
    """
    lo, hi = to_db_timestamp(day_start(first)), to_db_timestamp(day_start(last + timedelta(1)))
    kept = tuple(keep)
    placeholders = d.placeholders(len(kept))
    batches = render(
        _BATCHES_IN_DAYS,
        d,
        t,
        kept=render(_NOT_KEPT, d, placeholders=placeholders) if kept else "",
    )
    export = (
        Query(
            render(_ROLLBACK_EXPORT, d, t, batches_in_days=batches, rows_in=""),
            (lo, hi, *kept, lo, hi),
        )
        if rows_end is None
        else Query(
            render(_ROLLBACK_EXPORT, d, t, batches_in_days=batches, rows_in=render(_ROWS_IN, d)),
            (lo, to_db_timestamp(rows_end), lo, hi, *kept, lo, hi),
        )
    )
    sync_kept = render(_NULL_OR_NOT_KEPT, d, placeholders=placeholders) if kept else ""
    return [
        export,
        Query(render(_ROLLBACK_REJECTS, d, t, batches_in_days=batches), (lo, hi, *kept)),
        Query(render(_ROLLBACK_SYNC, d, t, kept=sync_kept), (lo, hi, lo, hi, *kept)),
    ]


def going_on_rows(d: Dialect, t: TableNames, window: tuple[datetime, datetime]) -> Query:
    """(batch id, rows) of the day's segment batches that go on after the window, for their
    rows in the window: run before `replace_window`'s row delete, then `lower_rows_loaded`
    for each, so such a batch's sync row counts the rows it still holds."""
    start, end = (to_db_timestamp(w) for w in window)
    lo = to_db_timestamp(day_start(start.date()))
    going_on = render(_GOING_ON, d, t)
    return Query(
        render(_GOING_ON_ROWS, d, t, going_on=going_on),
        (start, end, SEGMENT_SOURCE, lo, end, end),
    )


def lower_rows_loaded(d: Dialect, t: TableNames, batch_id: str, rows: int) -> Query:
    return Query(render(_LOWER_ROWS_LOADED, d, t), (rows, batch_id))


def replace_window(d: Dialect, t: TableNames, window: tuple[datetime, datetime]) -> list[Query]:
    """What a backfill's commit of a segment batch deletes besides the batch's own earlier
    rows, in its transaction and before its load: the old rows of its window [start, end).

    1. rejects and 2. sync rows of the day's segment batches that end in the window (the
       same window, a finer ExportDuration's inside it, or a coarser one that began before
       it): a backfill replaces a day's windows in order from its start, so the rows of such
       a batch before this window are gone already and its last ones go now;
    3. every export row with EventStart in the window, except rows of batches that start on
       another UTC day (the rule of `rollback_days`): rows of the day's earlier batches of any
       layout, and rows no sync row names (hauser's, orphans).
    A coarser earlier batch that goes on after the window keeps its sync row and its rows
    after the window until a later window's commit (or the day's leftovers, `rollback_days`
    with `keep`); its RowsLoaded is lowered by its rows in the window (`going_on_rows`).
    Bounded by EventStart in the window, as the other deletes are.
    """
    start, end = (to_db_timestamp(w) for w in window)
    lo = to_db_timestamp(day_start(start.date()))
    hi = lo + timedelta(days=1)
    inside = render(_ENDING_IN_WINDOW, d, t)
    inside_params = (SEGMENT_SOURCE, lo, end, start, end)
    return [
        Query(render(_REPLACED_REJECTS, d, t, inside=inside), inside_params),
        Query(render(_REPLACED_SYNC, d, t, inside=inside), inside_params),
        Query(render(_REPLACED_ROWS, d, t), (start, end, lo, hi)),
    ]


# --- time at the edge ------------------------------------------------------------------------


def day_start(day: date) -> datetime:
    """Midnight UTC opening `day`."""
    return datetime.combine(day, time(0), tzinfo=UTC)


def days_between(first: date, last: date) -> tuple[date, ...]:
    return tuple(first + timedelta(n) for n in range((last - first).days + 1))


def rolled_back(
    first: date,
    last: date,
    rows: int,
    sync_rows: int,
    rejects: int | None = None,
    kept: int = 0,
) -> RollbackResult:
    """Log a finished rollback (the same line for every warehouse) and describe it; with
    `kept` batches, it removed a backfill's leftovers (an info line, not a warning)."""
    counts = {"rows": rows, "sync_rows": sync_rows}
    if rejects is not None:
        counts["rejects"] = rejects
    if kept:
        log.info("replaced days' leftovers removed", first=str(first), last=str(last), **counts)
    else:
        log.warning("days rolled back", first=str(first), last=str(last), **counts)
    return RollbackResult(
        days=days_between(first, last), rows_deleted=rows, sync_rows_deleted=sync_rows
    )


def to_db_timestamp(value: datetime) -> datetime:
    """Naive UTC, as stored in TIMESTAMP columns; a naive input is taken as UTC already."""
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def from_db_timestamp(value: datetime) -> datetime:
    """Aware UTC from a TIMESTAMP (naive UTC) or TIMESTAMPTZ value."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def stored_value(value: Any, type_: FieldType) -> Any:
    """A value read back from a column, in `Warehouse.read_rows`' terms: timestamps aware UTC,
    JSON as JSON text (a driver's parsed value is written back by the stdlib, which keeps
    integers exact); everything else as the driver returned it."""
    if value is None:
        return None
    if type_ is FieldType.TIMESTAMP and isinstance(value, datetime):
        return from_db_timestamp(value)
    if type_ is FieldType.JSON and not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


def as_date(value: Any) -> date:
    """A DATE column's value (a date, a datetime or ISO text, by driver) as a date."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


# --- the people table (ExportIndividuals, `syncd.people`) -------------------------------------

#: The people table: one row per individual, the identity fields of an individuals export
#: (`TYPE_INDIVIDUAL`), their user vars as one JSON object, and where the row came from: the
#: people batch, the end of its export window (the most recent export wins) and when it loaded.
PEOPLE_COLUMNS: tuple[Column, ...] = (
    Column("IndvId", _I),
    Column("UserId", _I),
    Column("UserCreated", _T),
    Column("UserAppKey", _S),
    Column("UserDisplayName", _S),
    Column("UserEmail", _S),
    Column("UserVars", FieldType.JSON),
    Column("SyncdBatchId", _S),
    Column("SyncdExportEnd", _T),
    Column("SyncdLoadedAt", _T),
)

#: `<IndividualsTable>_sync`: one row per committed people batch (its own bookkeeping, so the
#: SyncTable, its consistency check, rollback and hauser's reader never see people batches).
PEOPLE_SYNC_COLUMNS: tuple[Column, ...] = (
    Column("SyncdBatchId", _S),
    Column("WindowStart", _T),
    Column("WindowEnd", _T),
    Column("OperationId", _S),
    Column("RowsLoaded", _I),
    Column("CommittedAt", _T),
    Column("SyncdVersion", _S),
)

#: Rows per INSERT (and ids per DELETE) of a people commit: well under every driver's limit
#: on parameters per statement.
PEOPLE_CHUNK = 200

_PEOPLE_COMMITTED = "SELECT COUNT(*) FROM {sync} WHERE {SyncdBatchId} = {p}"
_PEOPLE_NEWER = (
    "SELECT {IndvId} FROM {people} WHERE {SyncdExportEnd} > {p} AND {IndvId} IN ({placeholders})"
)
_PEOPLE_DELETE = "DELETE FROM {people} WHERE {IndvId} IN ({placeholders})"
_PEOPLE_INSERT = "INSERT INTO {table} ({columns}) VALUES {rows}"
_PEOPLE_INSERT_SELECT = (
    "INSERT INTO {table} ({columns}) SELECT {values} FROM (VALUES {rows}) AS v ({columns})"
)
_PEOPLE_BATCHES = "SELECT {SyncdBatchId} FROM {sync}"


def people_sync_table(people_table: str) -> str:
    """The people table's bookkeeping table: `<IndividualsTable>_sync`."""
    validate_identifier(people_table, "IndividualsTable")
    return validate_identifier(f"{people_table}_sync", "IndividualsTable's sync table")


def people_committed(d: Dialect, people: str, sync: str, batch_id: str) -> Query:
    """How many sync rows the people batch has (1: committed already, its replay is a no-op)."""
    return Query(render(_PEOPLE_COMMITTED, d, sync=sync), (batch_id,))


def people_batches(d: Dialect, sync: str) -> Query:
    """The ids of the committed people batches."""
    return Query(render(_PEOPLE_BATCHES, d, sync=sync))


def people_newer(d: Dialect, people: str, export_end: datetime, ids: Sequence[int]) -> list[Query]:
    """Which of `ids` have a stored row from an export ending after `export_end` (an older
    export never overwrites them), in chunks of PEOPLE_CHUNK ids."""
    queries = []
    for i in range(0, len(ids), PEOPLE_CHUNK):
        chunk = tuple(ids[i : i + PEOPLE_CHUNK])
        text = render(_PEOPLE_NEWER, d, people=people, placeholders=d.placeholders(len(chunk)))
        queries.append(Query(text, (to_db_timestamp(export_end), *chunk)))
    return queries


def people_upsert(
    d: Dialect, people: str, sync: str, rows: Sequence[Sequence[Any]], sync_row: Sequence[Any]
) -> list[Query]:
    """Replace the stored rows of `rows`' individuals (the caller left out those a newer
    export wrote) and insert `rows` and the batch's sync row: DELETE + INSERT, in chunks of
    PEOPLE_CHUNK, every value a parameter."""
    queries: list[Query] = []
    for i in range(0, len(rows), PEOPLE_CHUNK):
        chunk = rows[i : i + PEOPLE_CHUNK]
        delete = render(_PEOPLE_DELETE, d, people=people, placeholders=d.placeholders(len(chunk)))
        queries.append(Query(delete, tuple(r[0] for r in chunk)))
    for i in range(0, len(rows), PEOPLE_CHUNK):
        chunk = rows[i : i + PEOPLE_CHUNK]
        queries.append(_insert_rows(d, people, PEOPLE_COLUMNS, chunk))
    queries.append(_insert_rows(d, sync, PEOPLE_SYNC_COLUMNS, [sync_row]))
    return queries


def _insert_rows(
    d: Dialect, table: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]]
) -> Query:
    one = f"({d.placeholders(len(columns))})"
    if d.insert_json_function:
        # VALUES of constants only; JSON text made a JSON value in the SELECT list
        values = ", ".join(
            f"{d.insert_json_function}(v.{q})" if c.type is FieldType.JSON else f"v.{q}"
            for c in columns
            for q in [quote_identifier(c.name, d.quote)]
        )
        statement = render(
            _PEOPLE_INSERT_SELECT,
            d,
            table=table,
            columns=column_list(columns, d),
            values=values,
            rows=", ".join([one] * len(rows)),
        )
        return Query(statement, tuple(v for row in rows for v in row))
    statement = render(
        _PEOPLE_INSERT,
        d,
        table=table,
        columns=column_list(columns, d),
        rows=", ".join([one] * len(rows)),
    )
    return Query(statement, tuple(v for row in rows for v in row))
