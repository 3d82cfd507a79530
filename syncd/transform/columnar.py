"""The fast transform: DuckDB types the rows in C++, the reference converter handles the rest.

    transform(key, source, out_dir, columns, fmt, loaded_at) -> TransformedBatch

Same signature and the SAME output as `transform_file` (row for row, type for type, the same
quarantine), several times faster. How it stays identical:

- A thread inflates the file and hands DuckDB its lines as Arrow batches of about 2 MiB of
  text (`_LineFeed`); one query parses each row once, on every core: one `json_transform`
  gives every column's value as text (STRING columns as JSON text, so a string is told from a
  number) and every custom key seen in the file's first 8 MiB as JSON text, from which
  CustomVars is spelled in sorted key order; `json_keys` counts the row's keys, proving none
  was missed or repeated. Typed values are cast in SQL and accepted only when they are
  exactly the reference's.
- Every row where anything might differ from the reference is *flagged* and converted by the
  reference `RowConverter` from its raw text instead: a value of another JSON type (the
  reference converts or rejects it), a timestamp that is not the API's canonical
  "YYYY-MM-DDTHH:MM:SS.mmmZ", duplicate or unforeseen keys, an
  EventStart outside a segment batch's window, NaN/Infinity, `\\u0000`, a CustomVars text that
  is not exactly what orjson would write, integers of 20+ digits, a value longer than the
  warehouse holds (`OutputRules`: the reference cuts or rejects it). Flagged rows are rare in real
  exports, so nearly all work stays in C++.
- Whole files go to the reference `transform_file` when the fast path cannot follow them: a
  line that is not JSON (DuckDB's parse fails the query), not UTF-8 or longer than
  `MAX_FAST_ROW_BYTES`, an array not laid out one element per line, staged format NDJSON, an
  empty file; and files under `FAST_PATH_MIN_BYTES`, where the fast path's fixed cost is more
  than it saves.

A JSON array (FORMAT_JSON, legacy bundles) is rewritten to lines on the way by the same thread,
which drops the separators of the usual one-element-per-line layout: the array is never held
whole, and both layouts take the same query.
"""

from __future__ import annotations

import json
import queue
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import structlog

from syncd.batch import BatchKey, StagedFormat, TransformedBatch
from syncd.errors import TransformError
from syncd.fields import BATCH_ID, CUSTOM_PREFIXES, CUSTOM_VARS, LOADED_AT, Column, FieldType
from syncd.gzip_members import GzipMembers
from syncd.timeutil import UTC
from syncd.transform.convert import (
    EVENT_START,
    NeedsExactParse,
    RowConverter,
    RowRejected,
    batch_window,
)
from syncd.transform.reader import GZIP_MAGIC, MAX_ROW_BYTES, Unparsed, parse_exact, parse_row
from syncd.transform.rules import NO_RULES, OutputRules
from syncd.transform.transform import (
    DEFAULT_BLOCK_ROWS,
    OutputFiles,
    RejectSink,
    finished_batch,
    transform_file,
    write_outputs,
)
from syncd.transform.writers import BackgroundWriter, TableWriter, arrow_schema, open_writer
from warehouses.base import quote_identifier

log = structlog.get_logger(__name__)

#: Staged formats the fast path writes; the others always take the reference path.
FAST_FORMATS: frozenset[StagedFormat] = frozenset(("parquet", "csv"))
#: Files (compressed bytes, all sources of a batch) below this take the reference path.
FAST_PATH_MIN_BYTES = 256 << 10
#: DuckDB's memory cap for one transform (it streams; this bounds its buffers): below what
#: the query needs DuckDB runs out at the first rows and every file would take the reference
#: path (docs/benchmark.md).
DUCKDB_MEMORY_LIMIT = "256MB"
#: Most rows in one Arrow batch out of DuckDB (one Parquet row group): a batch is held by the
#: query, by the writer's queue and by the writer at once.
_ARROW_BATCH_ROWS = 10_000
#: Rows longer than this go to the reference path (which quarantines rows over 16 MiB).
MAX_FAST_ROW_BYTES = 2 << 20
#: Bytes at the head of each file whose rows tell the custom keys to expect.
_SAMPLE_BYTES = 8 << 20
#: A file whose sampled rows hold more distinct keys than this takes the reference path: the
#: query types each key (a struct field, a term of sums and CASEs: DuckDB refuses expressions
#: deeper than 1000, and 100,000 keys took gigabytes).
_MAX_SAMPLED_KEYS = 512
#: Text (inflated) per Arrow batch of lines handed to DuckDB, cut between lines.
_LINE_BATCH_BYTES = 2 << 20
#: Batches of lines ready ahead of DuckDB's query.
_BATCHES_AHEAD = 1
#: Bytes read, and most bytes inflated, at a time.
_READ_BYTES = 1 << 20

_TRACE = frozenset((CUSTOM_VARS.name, BATCH_ID.name, LOADED_AT.name))
_OK, _RAW = "__syncd_ok", "__syncd_raw"
_D = "[0-9]"
_TIMESTAMP_GLOB = f"{_D * 4}-{_D * 2}-{_D * 2}T{_D * 2}:{_D * 2}:{_D * 2}.{_D * 3}Z"
#: CustomVars texts orjson might have written differently from yyjson (huge or exponent numbers).
_SUSPECT_CUSTOM = "[0-9]{20}|[0-9.][eE][-+]?[0-9]"
_JSON_WS = b" \t\r\n"


class NeedsReference(Exception):
    """The fast path cannot follow this file; the reference path must transform it."""


def transform(
    key: BatchKey,
    source: Path | Sequence[Path],
    out_dir: Path,
    columns: Sequence[Column],
    fmt: StagedFormat,
    loaded_at: datetime,
    *,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    rules: OutputRules = NO_RULES,
) -> TransformedBatch:
    """`transform_file`'s contract, by the fast path when it applies, else the reference path.

    Small files take the reference path: the fast path's fixed cost (a DuckDB connection, its
    query plan) is about 0.1 s, more than the reference needs for a thousand rows."""
    sources = [source] if isinstance(source, Path) else list(source)
    if fmt in FAST_FORMATS and _total_bytes(sources) >= FAST_PATH_MIN_BYTES:
        try:
            return transform_columnar(
                key, source, out_dir, columns, fmt, loaded_at, block_rows=block_rows, rules=rules
            )
        except NeedsReference as exc:
            log.info("transform.reference_path", batch=key.id, reason=str(exc))
    return transform_file(
        key, source, out_dir, columns, fmt, loaded_at, block_rows=block_rows, rules=rules
    )


def transform_columnar(
    key: BatchKey,
    source: Path | Sequence[Path],
    out_dir: Path,
    columns: Sequence[Column],
    fmt: StagedFormat,
    loaded_at: datetime,
    *,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    rules: OutputRules = NO_RULES,
) -> TransformedBatch:
    """The fast path alone; raises NeedsReference when the file needs the reference path
    (nothing is left behind then), TransformError like `transform_file`."""
    if fmt not in FAST_FORMATS:
        raise NeedsReference(f"staged format {fmt} has no fast path")
    if block_rows < 1:
        raise ValueError("block_rows must be at least 1")
    if loaded_at.tzinfo is None:
        raise ValueError("loaded_at must be time-zone aware")
    columns = tuple(columns)
    naive_loaded_at = loaded_at.astimezone(UTC).replace(tzinfo=None)
    window = batch_window(key)
    converter = RowConverter(  # checks columns
        columns, key.id, naive_loaded_at, window=window, rules=rules
    )
    files = OutputFiles.for_batch(out_dir, key, fmt)
    started = time.perf_counter()
    try:
        sources = [source] if isinstance(source, Path) else list(source)
        source_bytes = sum(path.stat().st_size for path in sources)
        layouts = [_sniff(path) for path in sources]
        out_dir.mkdir(parents=True, exist_ok=True)
        _remove(files.partial_rejects)
        writer = BackgroundWriter(
            open_writer(fmt, files.partial, columns, csv_null=rules.csv_null), depth=1
        )
    except OSError as exc:
        raise TransformError(f"cannot transform batch {key.id}: {exc}") from exc
    try:
        sampled = set().union(
            *(_sample_keys(p, g, lay) for p, (g, lay) in zip(sources, layouts, strict=True))
        )
        if len(sampled) > _MAX_SAMPLED_KEYS:
            raise NeedsReference(f"more than {_MAX_SAMPLED_KEYS} distinct keys in its rows")
        custom_keys = sampled
    except OSError as exc:
        raise TransformError(f"cannot transform batch {key.id}: {exc}") from exc
    plan = _QueryPlan(columns, key.id, naive_loaded_at, sorted(custom_keys), window, rules)

    def fill(rejects: RejectSink) -> int:
        rows = 0
        offset = 0
        for path, (gzipped, layout) in zip(sources, layouts, strict=True):
            seen, written = _transform_source(
                path, gzipped, layout, plan, converter, writer, rejects, offset, block_rows, out_dir
            )
            offset += seen
            rows += written
        return rows

    counts = write_outputs(files, writer, key.id, fill)
    return finished_batch(key, fmt, columns, files, counts, source_bytes, started, "columnar")


def _total_bytes(sources: Sequence[Path]) -> int:
    try:
        return sum(path.stat().st_size for path in sources)
    except OSError:
        return 0  # the reference path reports it


# -- what the file holds ---------------------------------------------------------------------


def _sniff(path: Path) -> tuple[bool, str]:
    """(gzipped, layout) where layout is "ndjson" or "array"; NeedsReference for anything else."""
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == GZIP_MAGIC
    try:
        head = _head(path, gzipped, 4096)
    except (zlib.error, EOFError) as exc:
        raise NeedsReference(f"not readable as gzip: {exc}") from None
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip(_JSON_WS)
    if text[:1] == b"{":
        return gzipped, "ndjson"
    if text[:1] == b"[":
        return gzipped, "array"
    raise NeedsReference("empty, or neither NDJSON nor a JSON array")


def _sample_keys(path: Path, gzipped: bool, layout: str) -> set[str]:
    """The keys of the rows in the file's first `_SAMPLE_BYTES`: the custom keys to expect.

    A key first seen later only costs speed: its rows are flagged and take the reference."""
    try:
        head = _head(path, gzipped, _SAMPLE_BYTES)
    except (zlib.error, EOFError):
        return set()  # damaged: the transform itself says so
    keys: set[str] = set()
    lines = head.split(b"\n")
    if len(head) >= _SAMPLE_BYTES:
        lines.pop()  # cut short
    for line in lines:
        line = line.strip(_JSON_WS)
        if layout == "array":
            line = line.lstrip(b"[").rstrip(b"],")
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if type(row) is dict:
            keys.update(row)
            if len(keys) > _MAX_SAMPLED_KEYS:  # more would make the query's struct huge
                break
    return keys


def _head(path: Path, gzipped: bool, limit: int) -> bytes:
    """The file's first `limit` bytes of text (all of it when shorter), across gzip members
    as the transform reads them (`_pieces`)."""
    head = bytearray()
    with open(path, "rb") as raw:
        for data in _pieces(raw, gzipped):
            head += data
            if len(head) >= limit:
                break
    return bytes(head[:limit])


# -- the query -------------------------------------------------------------------------------


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return quote_identifier(name, any_text=True)


class _QueryPlan:
    """The SQL that types one file's rows and flags those the reference must convert.

    One `json_transform` parses each row once and gives every typed column's value as text:
    STRING columns as their JSON text (so a string is told from a number, and unescaped only
    when it has escapes), the others as VARCHAR, cast in SQL and accepted only when casting
    back gives the same text. The same transform takes every custom key seen in the file's
    first rows (`custom_keys`) as JSON text, and CustomVars is spelled from those in sorted
    order, as the reference writes it. `json_keys` counts the row's keys: when each is a
    column, a known custom key or a dropped field (`OutputRules.dropped_fields`: parsed and
    counted, then left out) holding a value, nothing was missed or repeated; rows with nulls
    about are checked key by key; any other row is flagged for the reference.
    """

    def __init__(
        self,
        columns: Sequence[Column],
        batch_id: str,
        loaded_at: datetime,
        custom_keys: Sequence[str] = (),
        window: tuple[datetime, datetime] | None = None,
        rules: OutputRules = NO_RULES,
    ) -> None:
        self.columns = tuple(columns)
        self.window = window
        self.schema = arrow_schema(columns)
        self.batch_id = batch_id
        self.loaded_at = loaded_at
        dropped = rules.dropped_fields
        self._slots = [
            c
            for c in columns
            if c.name not in _TRACE
            and not c.name.startswith(CUSTOM_PREFIXES)
            and c.name not in dropped
        ]
        #: (column, most UTF-8 bytes): rows with a longer value go to the reference, which
        #: cuts the string or rejects the row (CustomVars)
        self.byte_limits: list[tuple[str, int]] = []
        if rules.max_string_bytes is not None:
            self.byte_limits += [
                (c.name, rules.max_string_bytes) for c in self._slots if c.type is FieldType.STRING
            ]
        if rules.max_json_bytes is not None and CUSTOM_VARS.name in {c.name for c in columns}:
            self.byte_limits.append((CUSTOM_VARS.name, rules.max_json_bytes))
        spec = {c.name: "JSON" if c.type is FieldType.STRING else "VARCHAR" for c in self._slots}
        # DuckDB's struct fields ignore case: a key that differs from another only in case
        # stays unknown, and its rows go to the reference
        taken = {name.lower() for name in spec}
        #: dropped fields (`OutputRules.dropped_fields`) counted as present, then left out
        self.dropped: list[str] = []
        for key in sorted(dropped):
            if key.lower() not in taken:
                taken.add(key.lower())
                self.dropped.append(key)
        spec.update((key, "JSON") for key in self.dropped)
        self.custom_keys: list[str] = []
        for key in sorted(set(custom_keys)):
            if key.lower() not in taken:
                taken.add(key.lower())
                self.custom_keys.append(key)
        spec.update((key, "JSON") for key in self.custom_keys)
        self._known = set(spec)
        self._spec = _sql_text(json.dumps(spec))
        self._known_list = _sql_list(list(spec))

    def query(self, source_sql: str) -> str:
        values: list[str] = []
        checks = [
            "left(j, 1) = '{'",
            "NOT contains(j, '\\u0000')",
            "NOT contains(j, 'NaN')",
            "NOT contains(j, 'Infinity')",
            f"(c = '{{}}' OR NOT regexp_matches(c, {_sql_text(_SUSPECT_CUSTOM)}))",
            # every key a known one holding a value; with nulls about (a null and a missing
            # key look alike), no key repeated or unknown (null custom keys are spelled from k)
            "CASE WHEN n + m = len(k) THEN true"
            " WHEN NOT contains(j, ':null') THEN false"
            f" ELSE len(list_distinct(k)) = len(k) AND list_has_all({self._known_list}, k) END",
        ]
        present = " + ".join(f"(s.{_ident(c.name)} IS NOT NULL)::INT" for c in self._slots)
        custom_present = " + ".join(
            f"(s.{_ident(key)} IS NOT NULL)::INT" for key in self.custom_keys
        )
        dropped_present = " + ".join(f"(s.{_ident(key)} IS NOT NULL)::INT" for key in self.dropped)
        custom_text = self._custom_text(with_nulls=False)
        custom_text_nulls = self._custom_text(with_nulls=True)
        typed: list[str] = []
        limits = dict(self.byte_limits)
        for index, column in enumerate(self.columns):
            name = column.name
            out = _ident(name)
            if name in limits:  # strlen counts bytes: a longer value is the reference's to cut
                value_sql = "c" if name == CUSTOM_VARS.name else f"v{index}"
                checks.append(f"({value_sql} IS NULL OR strlen({value_sql}) <= {limits[name]})")
            if name == CUSTOM_VARS.name:
                values.append(f"c AS {out}")
            elif name == BATCH_ID.name:
                values.append(f"{_sql_text(self.batch_id)} AS {out}")
            elif name == LOADED_AT.name:
                values.append(f"TIMESTAMP {_sql_text(self.loaded_at.isoformat())} AS {out}")
            elif name not in self._known or name in self.dropped:
                values.append(f"CAST(NULL AS {_DUCK_TYPES[column.type]}) AS {out}")
            else:
                alias = f"v{index}"
                value, check = _typed_value(column, f"s.{_ident(name)}", alias)
                typed.append(f"{value} AS {alias}")
                values.append(f"{alias} AS {out}")
                checks.append(check)
                if name == EVENT_START and self.window is not None:
                    # outside the window: the reference converter quarantines it
                    low, high = (_sql_text(t.isoformat()) for t in self.window)
                    checks.append(
                        f"({alias} IS NULL OR ({alias} >= TIMESTAMP {low}"
                        f" AND {alias} < TIMESTAMP {high}))"
                    )
        ok = " AND ".join(f"coalesce({check}, false)" for check in checks)
        # Built from names quoted by _ident and literals quoted by _sql_text only.
        return f"""
WITH src AS (SELECT json AS j FROM {source_sql}),
parsed AS (SELECT j, json_transform(j, {self._spec}) AS s, json_keys(j) AS k FROM src),
counted AS (
  SELECT *, ({present or "0"}) + ({dropped_present or "0"}) AS n,
    ({custom_present or "0"}) AS m FROM parsed
),
folded AS (
  SELECT *,
    CASE WHEN n + m < len(k) THEN {custom_text_nulls}
      WHEN m = 0 THEN '{{}}' ELSE {custom_text} END AS c,
    {", ".join(typed) or "NULL AS v"}
  FROM counted
),
judged AS (SELECT *, ({ok}) AS ok FROM folded)
SELECT {", ".join(values)}, ok AS {_OK},
  CASE WHEN ok AND m = 0 THEN NULL ELSE j END AS {_RAW}
FROM judged
"""  # noqa: S608

    def _custom_text(self, *, with_nulls: bool) -> str:
        """SQL spelling CustomVars from the custom keys' JSON texts, in sorted key order; with
        `with_nulls`, keys present with a null value (a null and a missing key look alike in
        `s`) are found in the row's keys `k`."""
        parts = []
        for key in self.custom_keys:
            field, name = f"s.{_ident(key)}", orjson.dumps(key).decode()
            null = f" WHEN list_contains(k, {_sql_text(key)}) THEN {_sql_text(name + ':null')}"
            parts.append(
                f"CASE WHEN {field} IS NOT NULL THEN {_sql_text(name + ':')} || {field}"
                f"{null if with_nulls else ''} END"
            )
        if not parts:
            return "'{}'"
        return "'{' || concat_ws(',', " + ", ".join(parts) + ") || '}'"


def _sql_list(items: Sequence[str]) -> str:
    return "[" + ", ".join(_sql_text(item) for item in items) + "]::VARCHAR[]"


_DUCK_TYPES: dict[FieldType, str] = {
    FieldType.INT64: "BIGINT",
    FieldType.FLOAT: "DOUBLE",
    FieldType.STRING: "VARCHAR",
    FieldType.TIMESTAMP: "TIMESTAMP",
    FieldType.JSON: "VARCHAR",
}
_FLOAT_TEXT = r"-?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?"


def _typed_value(column: Column, v: str, alias: str) -> tuple[str, str]:
    """(SQL of the value from `v`, SQL of "value `alias` is the reference's value")."""
    if column.type is FieldType.INT64:
        value = f"TRY_CAST({v} AS BIGINT)"
        return value, f"({v} IS NULL OR CAST({alias} AS VARCHAR) = {v})"
    if column.type is FieldType.FLOAT:
        value = f"TRY_CAST({v} AS DOUBLE)"
        numeric = f"regexp_full_match({v}, {_sql_text(_FLOAT_TEXT)})"
        return value, f"({v} IS NULL OR ({numeric} AND isfinite({alias})))"
    if column.type is FieldType.TIMESTAMP:
        # the API's own shape only, as the reference's fast path: digits where digits go,
        # hours below 24 and a year from 0001 (DuckDB takes 24:00 and year 0); DuckDB's cast
        # checks the rest of the calendar like datetime.fromisoformat
        # (substr, not v[a:b]: DuckDB's slice counts characters from both ends, 2-3x slower)
        shape = (
            f"{v} GLOB {_sql_text(_TIMESTAMP_GLOB)} AND substr({v}, 12, 2) < '24'"
            f" AND substr({v}, 1, 4) <> '0000'"
        )
        value = f"CASE WHEN {shape} THEN TRY_CAST(substr({v}, 1, 23) AS TIMESTAMP) END"
        return value, f"({v} IS NULL OR {alias} IS NOT NULL)"
    if column.type is FieldType.JSON:  # JSON columns besides CustomVars: the reference's text
        return "CAST(NULL AS VARCHAR)", f"{v} IS NULL"
    # STRING: the JSON text of a string, unquoted; escapes undone by a tiny parse
    value = (
        f"CASE WHEN NOT contains({v}, '\\') THEN substr({v}, 2, length({v}) - 2)"
        f" ELSE json_extract_string({v}, '$') END"
    )
    return value, f"({v} IS NULL OR left({v}, 1) = '\"')"


# -- one source file -------------------------------------------------------------------------


class _RowSink(Protocol):
    def add(self, position: int, reason: str, raw: bytes) -> None: ...


def _transform_source(
    path: Path,
    gzipped: bool,
    layout: str,
    plan: _QueryPlan,
    converter: RowConverter,
    writer: TableWriter,
    rejects: _RowSink,
    offset: int,
    block_rows: int,
    scratch_root: Path,
) -> tuple[int, int]:
    """Transform one file; (rows seen, rows written).

    The file is inflated here and handed to DuckDB as Arrow batches of its lines (`_LineFeed`),
    one query over them all: DuckDB's own JSON reader and its per-thread buffers are not used,
    a JSON array is rewritten to lines on the way, and DuckDB parses each batch on every core."""
    with tempfile.TemporaryDirectory(prefix="syncd-columnar-", dir=scratch_root) as scratch:
        connection = duckdb.connect(
            ":memory:",
            config={
                "memory_limit": DUCKDB_MEMORY_LIMIT,
                "preserve_insertion_order": True,
                "temp_directory": scratch,
            },
        )
        connection.execute("SET enable_progress_bar = false")
        feed = _LineFeed(path, gzipped, layout)
        seen = written = 0
        try:
            connection.register(_LINES, feed.reader())
            reader = connection.sql(plan.query(_LINES_SQL)).to_arrow_reader(
                min(block_rows, _ARROW_BATCH_ROWS)
            )
            for batch in _batches(reader):
                table, count = _finish_batch(
                    batch, plan, converter, rejects, offset + seen, layout == "array"
                )
                seen += count
                if table.num_rows:
                    writer.write(table)
                    written += table.num_rows
        except duckdb.Error as exc:
            feed.raise_problem()
            raise NeedsReference(f"DuckDB could not read it: {exc}") from exc
        except NeedsReference:
            feed.raise_problem()
            raise
        finally:
            feed.close()
            connection.close()
        feed.raise_problem()
        return seen, written


def _batches(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    """The query's batches; DuckDB's failures mid-stream (e.g. its memory limit) arrive as
    OSError through Arrow and hand the file to the reference path."""
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except OSError as exc:
            raise NeedsReference(f"DuckDB stopped: {str(exc).splitlines()[0]}") from exc
        yield batch


def _finish_batch(
    batch: pa.RecordBatch,
    plan: _QueryPlan,
    converter: RowConverter,
    rejects: _RowSink,
    first_position: int,
    array: bool,
) -> tuple[pa.Table, int]:
    """The batch's rows as the reference would write them, its rejects quarantined."""
    count = batch.num_rows
    ok = batch.column(_OK)
    custom = batch.column(CUSTOM_VARS.name) if CUSTOM_VARS.name in batch.schema.names else None
    if custom is not None:
        ok = _check_custom(custom, ok)
    names = [c.name for c in plan.columns]
    table = pa.Table.from_batches([batch]).select(names).cast(plan.schema)
    if pc.all(ok).as_py():
        return table, count
    flagged = pc.indices_nonzero(pc.invert(ok)).to_pylist()
    raw_column = batch.column(_RAW)
    converted: list[list[Any]] = []
    kept: list[int] = []
    for index in flagged:
        raw = raw_column[index].as_py()
        text = (raw or "").encode().strip(_JSON_WS)
        try:
            converted.append(_reference_row(converter, text, array))
            kept.append(index)
        except RowRejected as exc:
            rejects.add(first_position + index, exc.reason, text)
    if converted:
        table = _replace_rows(table, kept, _rows_table(converted, plan.schema))
    if len(kept) < len(flagged):  # some were rejected: drop them
        keep = [True] * count
        for index in set(flagged) - set(kept):
            keep[index] = False
        table = table.filter(pa.array(keep))
    return table, count


def _replace_rows(table: pa.Table, rows: list[int], fixed: pa.Table) -> pa.Table:
    """`table` with rows `rows` (ascending) replaced by `fixed`'s. Most flagged rows were only
    suspected, and the reference gives the same values: only differing columns are rebuilt."""
    where = pa.array(rows, pa.int64())
    mask: pa.Array | None = None
    columns = []
    for index in range(table.num_columns):
        column, new = table.column(index), fixed.column(index)
        if column.take(where).equals(new):
            columns.append(column)
            continue
        if mask is None:
            flags = [False] * table.num_rows
            for row in rows:
                flags[row] = True
            mask = pa.array(flags)
        columns.append(pc.replace_with_mask(column.combine_chunks(), mask, new.combine_chunks()))
    return pa.Table.from_arrays(columns, schema=table.schema)


def _check_custom(custom: pa.Array, ok: pa.Array) -> pa.Array:
    """Clear `ok` where CustomVars is not exactly what the reference writes (orjson's text)."""
    candidates = pc.and_(ok, pc.not_equal(custom, "{}"))
    indices = pc.indices_nonzero(candidates)
    if len(indices) == 0:
        return ok
    texts = custom.take(indices)
    joined = pc.binary_join(pa.ListArray.from_arrays([0, len(texts)], texts), ",")[0].as_py()
    whole = ("[" + joined + "]").encode()
    try:
        same = orjson.dumps(orjson.loads(whole)) == whole and b"\\u0000" not in whole
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):  # too deep for orjson too
        same = False
    if same:
        return ok
    bad = [
        int(i)
        for i, t in zip(indices.to_pylist(), texts.to_pylist(), strict=True)
        if not _canonical(t)
    ]
    mask = pa.array([True] * len(ok))
    if bad:
        flags = [True] * len(ok)
        for i in bad:
            flags[i] = False
        mask = pa.array(flags)
    return pc.and_(ok, mask)


def _canonical(text: str) -> bool:
    data = text.encode()
    if b"\\u0000" in data:
        return False
    try:
        return orjson.dumps(orjson.loads(data)) == data
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return False


def _reference_row(converter: RowConverter, text: bytes, array: bool) -> list[Any]:
    """The reference reader's and converter's verdict on one row's text; raises RowRejected."""
    try:
        value, exact = parse_row(text)
    except Unparsed as exc:
        if array and not exc.too_deep:  # the reference fails such an array whole: let it
            raise NeedsReference("an array element is not JSON") from None
        raise RowRejected(exc.reason) from None
    try:
        return converter.convert(value, exact=exact)
    except NeedsExactParse:
        try:
            value = parse_exact(text)
        except ValueError as exc:
            raise RowRejected(f"not JSON: {exc}") from None
        return converter.convert(value, exact=True)


def _rows_table(rows: Sequence[Sequence[Any]], schema: pa.Schema) -> pa.Table:
    by_column = list(zip(*rows, strict=True))
    arrays = [pa.array(values, type=f.type) for values, f in zip(by_column, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


# -- the lines handed to DuckDB --------------------------------------------------------------


class _LineFeed:
    """A file's rows as Arrow batches of lines (one large_string column), read by DuckDB's
    query as it goes. A thread of its own inflates the file (zlib and Arrow's kernels release
    the GIL) and cuts it between lines into batches of about `_LINE_BATCH_BYTES`, at most
    `_BATCHES_AHEAD` ahead of DuckDB, so a few batches are held whatever the file's size. A
    JSON array laid out one element per line is rewritten to lines on the way (`_array_lines`).

    What stops the feed (a layout the fast path cannot follow, a damaged file) reaches DuckDB
    as an error; `raise_problem` raises it as NeedsReference after the query fails."""

    def __init__(self, path: Path, gzipped: bool, layout: str) -> None:
        self._path = path
        self._gzipped = gzipped
        self._layout = layout
        self._problem: str | None = None
        self._ready: queue.Queue[pa.RecordBatch | None] = queue.Queue(maxsize=_BATCHES_AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="syncd-line-feed", daemon=True)

    def reader(self) -> pa.RecordBatchReader:
        self._thread.start()
        return pa.RecordBatchReader.from_batches(_LINE_SCHEMA, self._batches())

    def raise_problem(self) -> None:
        if self._problem is not None:
            raise NeedsReference(self._problem)

    def close(self) -> None:
        """Stop the thread and the batches still asked for, and let the thread end."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._ready.get(timeout=0.05)
            except queue.Empty:
                pass
        if self._thread.ident is not None:
            self._thread.join()

    def _batches(self) -> Iterator[pa.RecordBatch]:
        while True:
            try:
                batch = self._ready.get(timeout=0.05)
            except queue.Empty:
                if self._stop.is_set():
                    raise NeedsReference("the transform stopped") from None
                continue
            if batch is None:
                break
            yield batch
        self._thread.join()
        if self._problem is not None:
            raise NeedsReference(self._problem)

    def _run(self) -> None:
        try:
            with open(self._path, "rb") as raw:
                pieces = _pieces(raw, self._gzipped)
                if self._layout == "array":
                    pieces = _array_lines(pieces)
                for block in _line_blocks(pieces):
                    if not self._hand_over(_line_batch(block)):
                        return
        except NeedsReference as exc:
            self._problem = str(exc)
        except (OSError, EOFError, zlib.error) as exc:
            self._problem = f"cannot read it: {exc}"
        finally:
            self._hand_over(None)

    def _hand_over(self, batch: pa.RecordBatch | None) -> bool:
        while not self._stop.is_set():
            try:
                self._ready.put(batch, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False


_LINES = "syncd_lines"
_LINE_SCHEMA = pa.schema([("line", pa.large_string())])
#: The rows of the fed lines: blank lines are not rows (the reference reader's rule).
_LINES_SQL = (
    "(SELECT line AS json FROM syncd_lines"
    " WHERE CASE WHEN left(line, 1) = '{' THEN true ELSE trim(line, E' \\t\\r\\n') <> '' END)"
)


def _line_blocks(pieces: Iterator[bytes]) -> Iterator[memoryview]:
    """The text of `pieces` (ended by b"") in blocks of whole lines of about
    `_LINE_BATCH_BYTES` (the last one may lack its newline), a leading BOM left out."""
    parts: list[bytes] = []
    size = 0
    first = True
    for data in pieces:
        if data:
            parts.append(data)
            size += len(data)
            if size < _LINE_BATCH_BYTES:
                continue
        block = b"".join(parts)
        if first:
            block, first = block.removeprefix(b"\xef\xbb\xbf"), False
        view = memoryview(block)
        if data:
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                if len(block) > MAX_FAST_ROW_BYTES:
                    raise NeedsReference(f"a row longer than {MAX_FAST_ROW_BYTES} bytes")
                parts = [block]
                continue
            parts = [bytes(view[cut:])]
            size = len(parts[0])
            view = view[:cut]
        if len(view):
            yield view
        if not data:
            return


def _line_batch(block: memoryview) -> pa.RecordBatch:
    """One batch of `block`'s lines (not yet stripped; blank ones included)."""
    offsets = pa.array([0, len(block)], pa.int64()).buffers()[1]
    whole = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), 1, [None, offsets, pa.py_buffer(block)]
    )
    lines = pc.split_pattern(whole, b"\n").flatten()
    if pc.max(pc.binary_length(lines)).as_py() > MAX_FAST_ROW_BYTES:
        raise NeedsReference(f"a row longer than {MAX_FAST_ROW_BYTES} bytes")
    try:
        text = lines.cast(pa.large_string())
    except pa.ArrowInvalid:
        raise NeedsReference("a row is not UTF-8") from None
    return pa.record_batch([text], schema=_LINE_SCHEMA)


def _pieces(raw: Any, gzipped: bool) -> Iterator[bytes]:
    """The file's (inflated) bytes in pieces of at most `_READ_BYTES`, then one b"": however
    far a piece of gzip inflates, no more than that is held at once. Every gzip member is
    read, as the download's check and the reference reader read them (`GzipMembers`)."""
    members = GzipMembers(_READ_BYTES) if gzipped else None
    while chunk := raw.read(_READ_BYTES):
        if members is None:
            yield chunk
        else:
            yield from members.feed(chunk)
    if members is not None:
        yield from members.finish()
    yield b""


def _array_lines(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """A JSON array laid out one element per line, from its text in `pieces` (ended by b""),
    as NDJSON text, then b""; NeedsReference at any other layout (the reference reader
    handles every layout)."""
    carry = b""
    started = False
    emitted = False
    for data in pieces:
        end = not data
        carry += data
        if not started:
            stripped = carry.removeprefix(b"\xef\xbb\xbf").lstrip(_JSON_WS)
            if not stripped and not end:
                if len(carry) > 3:  # only whitespace so far (a BOM is 3 bytes)
                    carry = b""
                continue
            if stripped[:1] != b"[":
                raise NeedsReference("not a JSON array")
            carry = stripped[1:]
            started = True
        if end:
            break
        # keep the last complete line back: it may be the one before "]"
        last = carry.rfind(b"\n")
        cut = carry.rfind(b"\n", 0, last) if last > 0 else -1
        if cut < 0:
            if len(carry) > MAX_ROW_BYTES:
                raise NeedsReference("an array line is too long")
            continue
        block, carry = carry[: cut + 1], carry[cut + 1 :]
        yield _element_lines(block, emitted)
        emitted = True
    tail = carry.rstrip(_JSON_WS)
    if not tail.endswith(b"]"):
        raise NeedsReference("the array does not end with ]")
    body = tail[:-1].rstrip(_JSON_WS)
    if body.endswith(b",") or (not body and emitted):
        raise NeedsReference("a separator before ]")
    if body:
        yield _element_lines(body + b",\n", emitted)
    yield b""


def _element_lines(block: bytes, emitted: bool) -> bytes:
    """Lines that each end with ",\\n" as NDJSON; NeedsReference otherwise."""
    if not emitted:
        block = block.lstrip(_JSON_WS)
    rewritten = block.replace(b",\n", b"\n")
    if len(block) - len(rewritten) != block.count(b"\n"):
        raise NeedsReference("not one array element per line")
    return rewritten
