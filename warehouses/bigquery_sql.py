"""All of BigQuery's SQL text: constant templates and the functions that fill them.

Every statement the BigQuery warehouse, its jobs and its lease run is built here, rendered by
`warehouses.sql.render` through `warehouses.sql.BIGQUERY` (backtick quotes, `@name`
parameters written in the templates, its type names): named fragments as given, every other
field a column name quoted through `warehouses.base.quote_identifier`. Values travel as query
parameters (`@name`), except where BigQuery needs constants: partition bounds are TIMESTAMP
literals made from datetimes (`timestamp`: BigQuery eliminates partitions only on constant
filters, and the emulator ignores parameters inside scripts), and the lease fence and the kept
batches of a rollback carry checked plain words (`literal`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from dataclasses import replace as dataclass_replace
from datetime import datetime, timedelta

from syncd.batch import BatchKey
from syncd.errors import TerminalLoadError
from syncd.fields import BATCH_ID, LOADED_AT, Column, FieldType
from syncd.timeutil import UTC
from warehouses import sql

#: Staged type -> target type: the SELECT expression that converts.
_CONVERSIONS: dict[tuple[str, str], str] = {
    ("DATETIME", "TIMESTAMP"): "TIMESTAMP({column})",
    ("STRING", "JSON"): "PARSE_JSON({column})",
    ("JSON", "STRING"): "TO_JSON_STRING({column})",
}

_COMMIT = """BEGIN TRANSACTION;
DELETE FROM {export} WHERE {SyncdBatchId} IN (SELECT {SyncdBatchId} FROM {row}) AND {rows_in};
DELETE FROM {rejects} WHERE {SyncdBatchId} IN (SELECT {SyncdBatchId} FROM {row});
DELETE FROM {sync} WHERE {SyncdBatchId} IN (SELECT {SyncdBatchId} FROM {row});
{replace}INSERT INTO {export} ({targets}) SELECT {expressions} FROM {data} AS s CROSS JOIN {row} AS v;
{insert_rejects}INSERT INTO {sync} ({sync_columns}) SELECT {sync_columns} FROM {row};
{fence}COMMIT TRANSACTION;"""
# A backfill's commit (`replace`) of window [start, end) of day [lo, hi) also deletes the
# window's old rows (see `warehouses.sql.replace_window`, the same rule): the rejects and sync
# rows of the day's segment batches that end in the window, then the rows dated in it but
# those of batches of other days. Bounds are TIMESTAMP literals (`timestamp`), as in the
# rollback.
_ENDING_IN_WINDOW = (
    "{SyncdSource} = 'segment' AND {BatchStart} >= {lo} AND {BatchStart} < {end} "
    "AND {BundleEndTime} > {start} AND {BundleEndTime} <= {end} AND {SyncdBatchId} IS NOT NULL"
)
# The day's segment batches that go on after the window (a coarser old layout): their
# RowsLoaded is lowered by their rows in the window, so the day stays consistent mid-way.
_GOING_ON = (
    "{SyncdSource} = 'segment' AND {BatchStart} >= {lo} AND {BatchStart} < {end} "
    "AND {BundleEndTime} > {end} AND {SyncdBatchId} IS NOT NULL"
)
_REPLACE_WINDOW = """DELETE FROM {rejects} WHERE {SyncdBatchId} IN (SELECT {SyncdBatchId} FROM {sync} WHERE {inside});
DELETE FROM {sync} WHERE {inside};
UPDATE {sync} AS s SET {RowsLoaded} = s.{RowsLoaded} - (SELECT COUNT(*) FROM {export} AS e WHERE e.{SyncdBatchId} = s.{SyncdBatchId} AND {rows_in}) WHERE {going_on};
DELETE FROM {export} WHERE {rows_in} AND ({SyncdBatchId} IS NULL OR {SyncdBatchId} NOT IN (SELECT {SyncdBatchId} FROM {sync} WHERE {SyncdBatchId} IS NOT NULL AND ({BatchStart} < {lo} OR {BatchStart} >= {hi})));
"""
_INSERT_REJECTS = (
    "INSERT INTO {rejects} ({SyncdBatchId}, {Position}, {Reason}, {Raw}, {RejectedAt}) "
    "SELECT v.{SyncdBatchId}, r.{position}, r.{reason}, r.{raw}, v.{Processed} "
    "FROM {rejects_data} AS r CROSS JOIN {row} AS v;\n"
)
_INSERT_ROW = "INSERT INTO {table} ({columns}) VALUES ({parameters})"

# Rollback of days [lo, hi). The bounds are TIMESTAMP literals made from datetimes
# (`timestamp`): BigQuery eliminates partitions only on constant filters, and the emulator
# ignores parameters inside scripts. {rows_in} bounds the rows of the days' batches.
_BATCHES_IN_DAYS = "SELECT s.{SyncdBatchId} FROM {sync} AS s WHERE s.{BatchStart} >= {lo} AND s.{BatchStart} < {hi}{kept}"
_NOT_KEPT = " AND s.{SyncdBatchId} NOT IN ({kept})"
_NULL_OR_NOT_KEPT = " AND ({SyncdBatchId} IS NULL OR {SyncdBatchId} NOT IN ({kept}))"
_ROLLBACK_EXPORT_WHERE = (
    "{rows_in} AND ({SyncdBatchId} IN ({batches_in_days}) "
    "OR ({EventStart} >= {lo} AND {EventStart} < {hi} "
    "AND ({SyncdBatchId} IS NULL OR {SyncdBatchId} NOT IN "
    "(SELECT {SyncdBatchId} FROM {sync} WHERE {SyncdBatchId} IS NOT NULL))))"
)
_ROLLBACK_SYNC_WHERE = (
    "(({BatchStart} >= {lo} AND {BatchStart} < {hi}) "
    "OR ({BatchStart} IS NULL AND {BundleEndTime} > {lo} AND {BundleEndTime} <= {hi})){kept}"
)
_ROWS_IN = "{EventStart} >= {lo} AND {EventStart} < {hi}"
_STAGED_RANGE = "SELECT MIN({EventStart}), MAX({EventStart}) FROM {data}"
_ROLLBACK = """BEGIN TRANSACTION;
DELETE FROM {export} WHERE {export_where};
DELETE FROM {rejects} WHERE {SyncdBatchId} IN ({batches_in_days});
DELETE FROM {sync} WHERE {sync_where};
COMMIT TRANSACTION;"""
_COUNT_WHERE = "SELECT COUNT(*) FROM {table} WHERE {where}"

# The lease row. Its name and the holder id are checked plain words, so the script's fence can
# carry them as literals (scripts take no parameters on the emulator).
_NEVER = "TIMESTAMP '1970-01-01 00:00:00+00'"
_LEASE_CREATE = (
    "CREATE TABLE {lease} AS SELECT {name} AS {Name}, '' AS {HolderId}, '' AS {Holder}, "
    "'' AS {Host}, CAST(0 AS INT64) AS {Pid}, {never} AS {StartedAt}, {never} AS {AcquiredAt}, "
    "{never} AS {ExpiresAt}"
)
_LEASE_SET = (
    "UPDATE {lease} SET {HolderId} = @holder_id, {Holder} = @holder, {Host} = @host, "
    "{Pid} = @pid, {StartedAt} = @started_at, {AcquiredAt} = @now, {ExpiresAt} = @expires "
    "WHERE {Name} = @name "
)
_LEASE_TAKE = _LEASE_SET + "AND ({HolderId} = @holder_id OR {ExpiresAt} < @now)"
_LEASE_TAKE_FROM = _LEASE_SET + "AND {HolderId} = @previous"
_LEASE_RENEW = (
    "UPDATE {lease} SET {ExpiresAt} = @expires WHERE {Name} = @name AND {HolderId} = @holder_id"
)
_LEASE_RELEASE = (
    "UPDATE {lease} SET {HolderId} = '', {Holder} = '', {ExpiresAt} = {never} "
    "WHERE {Name} = @name AND {HolderId} = @holder_id"
)
_LEASE_READ = (
    "SELECT {HolderId}, {Holder}, {ExpiresAt}, {Host}, {Pid}, {StartedAt} FROM {lease} "
    "WHERE {Name} = @name"
)
LEASE_LOST = "syncd writer lease lost"
_LEASE_FENCE = (
    "SELECT IF(EXISTS(SELECT 1 FROM {lease} WHERE {Name} = {name} AND {HolderId} = {holder_id}), "
    "1, ERROR({lost}));\n"
)
PROBE = "SELECT 1"


def literal(word: str) -> str:
    """A string literal of a checked plain word (identifier, holder id, fixed text)."""
    if not re.fullmatch(r"[A-Za-z0-9_.: -]+", word):
        raise TerminalLoadError(f"{word!r} cannot be a literal in a script")
    return f"'{word}'"


def timestamp(value: datetime) -> str:
    """A TIMESTAMP literal of a datetime (naive is UTC), formatted from its fields: never text
    from elsewhere. Filters on the partitioning column must be constant for BigQuery to
    eliminate partitions by them, and scripts take no parameters on the emulator."""
    if not isinstance(value, datetime):
        raise TypeError(f"not a datetime: {value!r}")
    utc = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return f"TIMESTAMP '{utc:%Y-%m-%d %H:%M:%S.%f}+00'"


def rows_in(lo: datetime, hi: datetime) -> str:
    """EventStart in [lo, hi), constant bounds."""
    return sql.render(_ROWS_IN, sql.BIGQUERY, lo=timestamp(lo), hi=timestamp(hi))


@dataclass(frozen=True)
class Tables:
    """The quoted `dataset`.`table` names of one warehouse (queries run in its project)."""

    dataset: str
    names: sql.TableNames

    def q(self, table: str) -> str:
        return sql.qualified_name(table, self.dataset, sql.BIGQUERY.quote)

    @property
    def in_dataset(self) -> sql.TableNames:
        """The tables qualified by the dataset, for the queries `warehouses.sql` builds."""
        return dataclass_replace(self.names, schema=self.dataset)

    @property
    def export(self) -> str:
        return self.q(self.names.export)

    @property
    def sync(self) -> str:
        return self.q(self.names.sync)

    @property
    def rejects(self) -> str:
        return self.q(self.names.rejects)


@dataclass(frozen=True)
class StagingTables:
    """The per-batch staging tables of one batch: data, rejects and the sync row."""

    data: str
    rejects: str
    row: str


def insert_row(table: str, names: Sequence[str], parameters: Sequence[str]) -> str:
    """Insert one row of `@parameters` into `table` (quoted)."""
    return sql.render(
        _INSERT_ROW,
        sql.BIGQUERY,
        table=table,
        columns=sql.column_list(names, sql.BIGQUERY),
        parameters=", ".join(f"@{p}" for p in parameters),
    )


def commit_script(
    t: Tables,
    staging: StagingTables,
    batch_columns: Sequence[Column],
    staged_types: dict[str, str],
    target_types: dict[str, FieldType],
    has_rejects: bool,
    batch_rows_in: str,
    replace: str,
    fence: str,
) -> str:
    """The commit transaction of one batch (see `warehouses.bigquery`): its columns converted
    from their `staged_types` to the export table's (`target_types`, by lower-case name)."""
    targets: list[str] = []
    expressions: list[str] = []
    for column in batch_columns:
        if column.name.lower() == BATCH_ID.name.lower():
            continue
        target_type = sql.BIGQUERY.column_type(target_types.get(column.name.lower(), column.type))
        source = sql.column_list([column.name], sql.BIGQUERY, "s.")
        conversion = _CONVERSIONS.get((staged_types[column.name], target_type), "{column}")
        targets.append(column.name)
        expressions.append(conversion.replace("{column}", source))
    targets.append(BATCH_ID.name)
    expressions.append(sql.column_list([BATCH_ID], sql.BIGQUERY, "v."))
    if not any(c.name.lower() == LOADED_AT.name.lower() for c in batch_columns):
        targets.append(LOADED_AT.name)
        expressions.append(sql.column_list(["Processed"], sql.BIGQUERY, "v."))
    tables = {
        "export": t.export,
        "rejects": t.rejects,
        "sync": t.sync,
        "data": t.q(staging.data),
        "row": t.q(staging.row),
        "rejects_data": t.q(staging.rejects),
    }
    return sql.render(
        _COMMIT,
        sql.BIGQUERY,
        None,
        fence=fence,
        targets=sql.column_list(targets, sql.BIGQUERY),
        expressions=", ".join(expressions),
        insert_rejects=sql.render(_INSERT_REJECTS, sql.BIGQUERY, None, **tables)
        if has_rejects
        else "",
        replace=replace,
        rows_in=batch_rows_in,
        sync_columns=sql.column_list(sql.SYNC_COLUMNS, sql.BIGQUERY),
        **tables,
    )


def replace_window(t: Tables, key: BatchKey) -> str:
    """The statements that delete the old rows of a segment batch's window (none for a legacy
    bundle, which has no window)."""
    if key.source != sql.SEGMENT_SOURCE:
        return ""
    lo = sql.day_start(key.start.astimezone(UTC).date())
    inside = sql.render(
        _ENDING_IN_WINDOW,
        sql.BIGQUERY,
        lo=timestamp(lo),
        start=timestamp(key.start),
        end=timestamp(key.end),
    )
    return sql.render(
        _REPLACE_WINDOW,
        sql.BIGQUERY,
        export=t.export,
        sync=t.sync,
        rejects=t.rejects,
        inside=inside,
        going_on=sql.render(_GOING_ON, sql.BIGQUERY, lo=timestamp(lo), end=timestamp(key.end)),
        rows_in=rows_in(key.start, key.end),
        lo=timestamp(lo),
        hi=timestamp(lo + timedelta(days=1)),
    )


def staged_range(data: str) -> str:
    """The EventStart range of a staging table (quoted)."""
    return sql.render(_STAGED_RANGE, sql.BIGQUERY, data=data)


@dataclass(frozen=True)
class Rollback:
    """A rollback of days: what it deletes (counted first) and the transaction."""

    count_rows: str
    count_sync_rows: str
    script: str


def rollback(
    t: Tables, lo: datetime, hi: datetime, rows_end: datetime | None, keep: Collection[str]
) -> Rollback:
    """Delete the rows, rejects and sync rows of days [lo, hi) but the batches in `keep`; the
    export rows bounded by EventStart in [lo, rows_end) (unbounded when None: legacy)."""
    tables = t.in_dataset
    bounds = {"lo": timestamp(lo), "hi": timestamp(hi)}

    def fill(template: str, **fragments: str) -> str:
        return sql.render(template, sql.BIGQUERY, tables, **bounds, **fragments)

    kept = ", ".join(literal(k) for k in keep)
    batches = fill(_BATCHES_IN_DAYS, kept=fill(_NOT_KEPT, kept=kept) if kept else "")
    rows = "TRUE" if rows_end is None else rows_in(lo, rows_end)
    export_where = fill(_ROLLBACK_EXPORT_WHERE, batches_in_days=batches, rows_in=rows)
    sync_kept = fill(_NULL_OR_NOT_KEPT, kept=kept) if kept else ""
    sync_where = fill(_ROLLBACK_SYNC_WHERE, kept=sync_kept)
    script = fill(
        _ROLLBACK, export_where=export_where, sync_where=sync_where, batches_in_days=batches
    )
    return Rollback(
        count_rows=fill(_COUNT_WHERE, table=t.export, where=export_where),
        count_sync_rows=fill(_COUNT_WHERE, table=t.sync, where=sync_where),
        script=script,
    )


def read_rows(t: Tables, names: Sequence[str]) -> str:
    """The export rows of batch `@batch_id`."""
    return sql.render(
        "SELECT {columns} FROM {export} WHERE {SyncdBatchId} = @batch_id",
        sql.BIGQUERY,
        columns=sql.column_list(names, sql.BIGQUERY),
        export=t.export,
    )


# -- the lease row (`warehouses.bigquery_lease`) ----------------------------------------------


def lease_create(lease: str, name: str) -> str:
    """Create the lease table (quoted) with its one free row for SyncTable `name`."""
    return sql.render(_LEASE_CREATE, sql.BIGQUERY, lease=lease, name=literal(name), never=_NEVER)


def lease_take(lease: str, *, from_previous: bool = False) -> str:
    """Take the row when free, stale or ours (`from_previous`: when `@previous` holds it)."""
    return sql.render(_LEASE_TAKE_FROM if from_previous else _LEASE_TAKE, sql.BIGQUERY, lease=lease)


def lease_renew(lease: str) -> str:
    return sql.render(_LEASE_RENEW, sql.BIGQUERY, lease=lease)


def lease_release(lease: str) -> str:
    return sql.render(_LEASE_RELEASE, sql.BIGQUERY, lease=lease, never=_NEVER)


def lease_read(lease: str) -> str:
    return sql.render(_LEASE_READ, sql.BIGQUERY, lease=lease)


def lease_fence(lease: str, name: str, holder_id: str) -> str:
    """The commit script's check that `holder_id` still holds the lease: ERROR() otherwise."""
    return sql.render(
        _LEASE_FENCE,
        sql.BIGQUERY,
        lease=lease,
        name=literal(name),
        holder_id=literal(holder_id),
        lost=literal(LEASE_LOST),
    )


# --- the people table (ExportIndividuals, `syncd.people`) -------------------------------------

# One people batch, from its staging tables (`data`: the staged NDJSON, `row`: its sync row),
# in one transaction and without IF (scripts stay plain statements): unless the batch's sync
# row is there already, the stored rows of its individuals that no newer export wrote are
# deleted; then its rows are inserted for the individuals the table no longer holds (on a
# replay: none), and its sync row unless it is there. `end` is the export's end (a literal).
_PEOPLE_COMMIT = """BEGIN TRANSACTION;
DELETE FROM {people} WHERE {IndvId} IN (SELECT {IndvId} FROM {data}) AND {SyncdExportEnd} <= {end} AND NOT EXISTS (SELECT 1 FROM {sync} WHERE {SyncdBatchId} IN (SELECT {SyncdBatchId} FROM {row}));
INSERT INTO {people} ({targets}) SELECT {expressions} FROM {data} AS s WHERE s.{IndvId} NOT IN (SELECT {IndvId} FROM {people});
INSERT INTO {sync} ({sync_columns}) SELECT {sync_columns} FROM {row} WHERE NOT EXISTS (SELECT 1 FROM {sync} WHERE {SyncdBatchId} IN (SELECT {SyncdBatchId} FROM {row}));
{fence}COMMIT TRANSACTION;"""
_PEOPLE_COMMITTED = "SELECT COUNT(*) FROM {sync} WHERE {SyncdBatchId} = @batch_id"
_PEOPLE_BATCHES = "SELECT {SyncdBatchId} FROM {sync}"


def people_staged_type(type_: FieldType) -> str:
    """How the staged NDJSON carries a people column: JSON as its text."""
    return "STRING" if type_ == FieldType.JSON else sql.BIGQUERY.column_type(type_)


def people_commit(people: str, sync: str, data: str, row: str, end: datetime, fence: str) -> str:
    """The commit script of one people batch (quoted table names; see `_PEOPLE_COMMIT`)."""
    targets: list[str] = []
    expressions: list[str] = []
    for column in sql.PEOPLE_COLUMNS:
        source = sql.column_list([column.name], sql.BIGQUERY, "s.")
        key = (people_staged_type(column.type), sql.BIGQUERY.column_type(column.type))
        targets.append(column.name)
        expressions.append(_CONVERSIONS.get(key, "{column}").replace("{column}", source))
    return sql.render(
        _PEOPLE_COMMIT,
        sql.BIGQUERY,
        None,
        people=people,
        sync=sync,
        data=data,
        row=row,
        end=timestamp(end),
        fence=fence,
        targets=sql.column_list(targets, sql.BIGQUERY),
        expressions=", ".join(expressions),
        sync_columns=sql.column_list(sql.PEOPLE_SYNC_COLUMNS, sql.BIGQUERY),
    )


def people_committed(sync: str) -> str:
    return sql.render(_PEOPLE_COMMITTED, sql.BIGQUERY, sync=sync)


def people_batches(sync: str) -> str:
    return sql.render(_PEOPLE_BATCHES, sql.BIGQUERY, sync=sync)
