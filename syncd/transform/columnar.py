"""The fast transform: DuckDB types the rows in C++, the reference converter handles the rest.

    transform(key, source, out_dir, columns, fmt, loaded_at) -> TransformedBatch

Same signature and the SAME output as `transform_file` (row for row, type for type, the same
quarantine), several times faster. How it stays identical:

- DuckDB reads the NDJSON (its own gzip reader) with `read_ndjson_objects` and parses each
  row once, on every core: one `json_transform` gives every column's value as text (STRING
  columns as JSON text, so a string is told from a number) and every custom key seen in the
  file's first 8 MiB as JSON text, from which CustomVars is spelled in sorted key order;
  `json_keys` counts the row's keys, proving none was missed or repeated. Typed values are
  cast in SQL and accepted only when they are exactly the reference's.
- Every row where anything might differ from the reference is *flagged* and converted by the
  reference `RowConverter` from its raw text instead: a value of another JSON type (the
  reference converts or rejects it), a timestamp that is not the API's canonical
  "YYYY-MM-DDTHH:MM:SS.mmmZ", duplicate or unforeseen keys, an
  EventStart outside a segment batch's window, NaN/Infinity, `\\u0000`, a CustomVars text that
  is not exactly what orjson would write, integers of 20+ digits, a value longer than the
  warehouse holds (`OutputRules`: the reference cuts or rejects it). Flagged rows are rare in real
  exports, so nearly all work stays in C++.
- Whole files go to the reference `transform_file` when the fast path cannot follow them: a
  line that is not JSON (its text is lost to DuckDB), an array not laid out one element per
  line, staged format NDJSON, an empty file; and files under `FAST_PATH_MIN_BYTES`, where the
  fast path's fixed cost is more than it saves.

A JSON array (FORMAT_JSON, legacy bundles) is rewritten to NDJSON on the fly by a thread that
inflates it and drops the separators of the usual one-element-per-line layout, into chunk files
of 64 MiB that DuckDB reads one after the other: the array is never held whole.
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
#: DuckDB's memory cap for one transform (it streams; this bounds its buffers). With two
#: threads the query needs about 224 MB (the JSON reader's buffers and the typed vectors of
#: each thread; docs/benchmark.md): below that DuckDB runs out at the first rows and every
#: file would take the reference path.
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
#: NDJSON bytes per chunk file the array rewriter hands to DuckDB, and chunks written ahead.
_CHUNK_BYTES = 64 << 20
_CHUNKS_AHEAD = 1
#: Bytes inflated per read by the array rewriter.
_ARRAY_READ = 1 << 20

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
    inflater = zlib.decompressobj(31) if gzipped else None
    with open(path, "rb") as raw:
        head = b""
        while len(head) < 4096:
            chunk = raw.read(1 << 16)
            if not chunk:
                break
            try:
                head += inflater.decompress(chunk, 4096) if inflater else chunk
            except zlib.error as exc:
                raise NeedsReference(f"not readable as gzip: {exc}") from None
            if inflater is not None and inflater.unconsumed_tail:
                break
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip(_JSON_WS)
    if text[:1] == b"{":
        return gzipped, "ndjson"
    if text[:1] == b"[":
        return gzipped, "array"
    raise NeedsReference("empty, or neither NDJSON nor a JSON array")


def _sample_keys(path: Path, gzipped: bool, layout: str) -> set[str]:
    """The keys of the rows in the file's first `_SAMPLE_BYTES`: the custom keys to expect.

    A key first seen later only costs speed: its rows are flagged and take the reference."""
    inflater = zlib.decompressobj(31) if gzipped else None
    head = b""
    with open(path, "rb") as raw:
        while len(head) < _SAMPLE_BYTES:
            chunk = raw.read(1 << 16)
            if not chunk:
                break
            try:
                head += inflater.decompress(chunk, _SAMPLE_BYTES) if inflater else chunk
            except zlib.error:
                break
            if inflater is not None and inflater.unconsumed_tail:
                break
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
  CASE WHEN ok AND m = 0 THEN NULL ELSE coalesce(j, '') END AS {_RAW},
  j IS NULL AS __syncd_unreadable
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
        shape = (
            f"{v} GLOB {_sql_text(_TIMESTAMP_GLOB)} AND {v}[12:13] < '24' AND {v}[1:4] <> '0000'"
        )
        value = f"CASE WHEN {shape} THEN TRY_CAST({v}[1:23] AS TIMESTAMP) END"
        return value, f"({v} IS NULL OR {alias} IS NOT NULL)"
    if column.type is FieldType.JSON:  # JSON columns besides CustomVars: the reference's text
        return "CAST(NULL AS VARCHAR)", f"{v} IS NULL"
    # STRING: the JSON text of a string, unquoted; escapes undone by a tiny parse
    value = (
        f"CASE WHEN NOT contains({v}, '\\') THEN {v}[2:-2] ELSE json_extract_string({v}, '$') END"
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

    NDJSON is read by DuckDB itself (its gzip reader). A JSON array is rewritten to NDJSON
    chunk files by a thread, each transformed as it is complete: memory stays bounded by the
    chunk size whatever the array's size, and DuckDB parses each chunk on every core."""
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
        rewriter: _ArrayRewriter | None = None
        try:
            if layout == "array":
                rewriter = _ArrayRewriter(path, gzipped, Path(scratch))
                rewriter.start()
                parts: Iterator[tuple[Path, str]] = ((c, "none") for c in rewriter.chunks())
            else:
                parts = iter([(path, "gzip" if gzipped else "none")])
            seen = written = 0
            for read_from, compression in parts:
                source_sql = (
                    f"read_ndjson_objects({_sql_text(str(read_from))}, "
                    f"compression={_sql_text(compression)}, ignore_errors=true, "
                    f"maximum_object_size={MAX_FAST_ROW_BYTES})"
                )
                try:
                    reader = connection.sql(plan.query(source_sql)).to_arrow_reader(
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
                    raise NeedsReference(f"DuckDB could not read it: {exc}") from exc
                if read_from != path:
                    read_from.unlink()
            return seen, written
        finally:
            if rewriter is not None:
                rewriter.abandon()
            connection.close()


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
    if pc.any(batch.column("__syncd_unreadable")).as_py():
        raise NeedsReference("a row is not JSON")
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
        text = (raw or "").encode()
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


# -- JSON arrays -----------------------------------------------------------------------------


def _pieces(raw: Any, gzipped: bool) -> Iterator[bytes]:
    """The file's (inflated) bytes in pieces of at most `_ARRAY_READ`, then one b"": however
    far a piece of gzip inflates, no more than that is held at once."""
    inflater = zlib.decompressobj(31) if gzipped else None
    while chunk := raw.read(_ARRAY_READ):
        if inflater is None:
            yield chunk
            continue
        data = inflater.decompress(chunk, _ARRAY_READ)
        while True:
            if data:
                yield data
            if not inflater.unconsumed_tail:
                break
            data = inflater.decompress(inflater.unconsumed_tail, _ARRAY_READ)
    if inflater is not None and not inflater.eof:
        raise EOFError("compressed file ended before the end-of-stream marker")
    yield b""


class _ArrayRewriter:
    """Inflates a JSON array laid out one element per line and writes it as NDJSON chunk
    files of about `_CHUNK_BYTES` each (cut between rows), at most `_CHUNKS_AHEAD` ahead of
    the reader.

    Runs on its own thread (zlib releases the GIL). When the layout is anything else it stops
    and `chunks` raises NeedsReference: the reference reader handles every layout.
    """

    def __init__(self, source: Path, gzipped: bool, scratch: Path) -> None:
        self._source = source
        self._gzipped = gzipped
        self._scratch = scratch
        self._problem: str | None = None
        self._error: BaseException | None = None
        self._ready: queue.Queue[Path | None] = queue.Queue(maxsize=_CHUNKS_AHEAD)
        self._thread = threading.Thread(target=self._run, name="syncd-array-rewriter", daemon=True)
        self._stop = threading.Event()
        self._count = 0
        self._out: Any = None
        self._out_path: Path | None = None

    def start(self) -> None:
        self._thread.start()

    def chunks(self) -> Iterator[Path]:
        """Each complete chunk file, in order; then raises what stopped the rewrite, if any."""
        while True:
            chunk = self._ready.get()
            if chunk is None:
                break
            yield chunk
        self._thread.join()
        if self._error is not None:
            raise TransformError(f"cannot read {self._source.name}: {self._error}")
        if self._problem is not None:
            raise NeedsReference(self._problem)

    def abandon(self) -> None:
        """Stop the thread (the reader is gone) and let it end."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._ready.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    def _run(self) -> None:
        try:
            self._rewrite(self)
            self._close_chunk()
        except (OSError, zlib.error, EOFError) as exc:
            self._error = exc
        finally:
            if self._out is not None:
                self._out.close()
            self._hand_over(None)

    def write(self, data: bytes) -> None:
        """Append NDJSON rows to the current chunk; a full chunk is handed over."""
        if self._out is None:
            self._count += 1
            self._out_path = self._scratch / f"chunk-{self._count:06d}.ndjson"
            self._out = open(self._out_path, "wb")
        self._out.write(data)
        if self._out.tell() >= _CHUNK_BYTES:
            self._close_chunk()

    def _close_chunk(self) -> None:
        if self._out is None:
            return
        self._out.close()
        self._out = None
        if self._problem is None:
            self._hand_over(self._out_path)

    def _hand_over(self, chunk: Path | None) -> None:
        while not (self._stop.is_set() and chunk is not None):
            try:
                self._ready.put(chunk, timeout=0.05)
                return
            except queue.Full:
                continue

    def _rewrite(self, out: Any) -> None:
        carry = b""
        started = False
        emitted = False
        with open(self._source, "rb") as raw:
            for data in _pieces(raw, self._gzipped):
                if self._stop.is_set():
                    return
                end = not data
                carry += data
                if not started:
                    stripped = carry.removeprefix(b"\xef\xbb\xbf").lstrip(_JSON_WS)
                    if not stripped and not end:
                        if len(carry) > 3:  # only whitespace so far (a BOM is 3 bytes)
                            carry = b""
                        continue
                    if stripped[:1] != b"[":
                        self._problem = "not a JSON array"
                        return
                    carry = stripped[1:]
                    started = True
                if end:
                    break
                # keep the last complete line back: it may be the one before "]"
                last = carry.rfind(b"\n")
                cut = carry.rfind(b"\n", 0, last) if last > 0 else -1
                if cut < 0:
                    if len(carry) > MAX_ROW_BYTES:
                        self._problem = "an array line is too long"
                        return
                    continue
                block, carry = carry[: cut + 1], carry[cut + 1 :]
                if not self._write_block(out, block, emitted):
                    return
                emitted = True
        tail = carry.rstrip(_JSON_WS)
        if not tail.endswith(b"]"):
            self._problem = "the array does not end with ]"
            return
        body = tail[:-1].rstrip(_JSON_WS)
        if not body:
            if emitted:
                self._problem = "a separator before ]"
            return
        if body.endswith(b","):
            self._problem = "a separator before ]"
            return
        if not self._write_block(out, body + b",\n", emitted):
            return

    def _write_block(self, out: Any, block: bytes, emitted: bool) -> bool:
        """Write lines that each end with ",\\n" as NDJSON; False (and a problem) otherwise."""
        if not emitted:
            block = block.lstrip(_JSON_WS)
        rewritten = block.replace(b",\n", b"\n")
        if len(block) - len(rewritten) != block.count(b"\n"):
            self._problem = "not one array element per line"
            return False
        out.write(rewritten)
        return True
