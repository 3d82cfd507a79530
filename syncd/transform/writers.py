"""Writing staged files: one family of writers, each appending Arrow tables to one file.

Both transforms hand the writers Arrow tables of `arrow_schema(columns)`: the reference path
turns each block of converted rows into one (`rows_to_table`), the fast path has them from
DuckDB. Memory holds one table, never the batch:

- Parquet: one zstd row group per table; int64, float64, string, timestamp("us") without a
  time zone holding UTC; CustomVars as a string.
- CSV (gzip): a header row, every string quoted (so "" is the empty string), NULL unquoted
  as the warehouse's text (`OutputRules.csv_null`): an empty field by default, as
  PostgreSQL's COPY reads NULL, while a warehouse that reads an empty field as "" (Redshift)
  names its own; timestamps as "YYYY-MM-DD HH:MM:SS.ffffff".
- NDJSON (gzip): one object per row, NULL columns left out, timestamps RFC 3339 with "Z",
  JSON columns (CustomVars) nested as objects.

`BackgroundWriter` wraps any of them to encode and compress on its own thread.
"""

from __future__ import annotations

import gzip
import queue
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from syncd.batch import StagedFormat
from syncd.fields import Column, FieldType

#: File name endings of the staged formats.
EXTENSIONS: dict[StagedFormat, str] = {"parquet": "parquet", "csv": "csv.gz", "ndjson": "ndjson.gz"}
#: Levels 1-3 deflate ~3x faster than the default 6 for ~1.5x the size: staged files are
#: transient, so CPU matters more than bytes (Arrow's own gzip default, 9, is slower still).
GZIP_LEVEL = 3
PARQUET_COMPRESSION = "zstd"

_ARROW_TYPES: dict[FieldType, pa.DataType] = {
    FieldType.INT64: pa.int64(),
    FieldType.FLOAT: pa.float64(),
    FieldType.STRING: pa.string(),
    FieldType.TIMESTAMP: pa.timestamp("us"),
    FieldType.JSON: pa.string(),
}
_NDJSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE


def arrow_schema(columns: Sequence[Column]) -> pa.Schema:
    """The Arrow schema of a staged file with these columns (all nullable)."""
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.type]) for c in columns])


def rows_to_table(rows: Sequence[Sequence[Any]], schema: pa.Schema) -> pa.Table:
    """A block of row-major value lists (as `RowConverter` makes them) as a table of `schema`."""
    by_column = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    arrays = [pa.array(values, type=f.type) for values, f in zip(by_column, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


class TableWriter(Protocol):
    """Appends tables of `arrow_schema(columns)` to one file; `close` completes it, `abort`
    just lets it go (the caller removes the partial file)."""

    def write(self, table: pa.Table) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class ParquetWriter:
    def __init__(self, path: Path, columns: Sequence[Column]) -> None:
        self._writer = pq.ParquetWriter(
            str(path), arrow_schema(columns), compression=PARQUET_COMPRESSION
        )

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table, row_group_size=table.num_rows)

    def close(self) -> None:
        self._writer.close()

    def abort(self) -> None:
        self._writer.close()


def csv_write_options(null: str = "") -> pacsv.WriteOptions:
    """Header, every string quoted, NULL as `null` unquoted."""
    return pacsv.WriteOptions(include_header=True, quoting_style="needed", null_string=null)


class CsvWriter:
    def __init__(self, path: Path, columns: Sequence[Column], null: str = "") -> None:
        self._file = gzip.open(path, "wb", compresslevel=GZIP_LEVEL)
        options = csv_write_options(null)
        self._writer = pacsv.CSVWriter(self._file, arrow_schema(columns), write_options=options)

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()
        self._file.close()

    def abort(self) -> None:
        self._file.close()


class NdjsonWriter:
    def __init__(self, path: Path, columns: Sequence[Column]) -> None:
        self._names = [c.name for c in columns]
        self._json = [c.type is FieldType.JSON for c in columns]
        self._file = gzip.open(path, "wb", compresslevel=GZIP_LEVEL)

    def write(self, table: pa.Table) -> None:
        dumps, fragment = orjson.dumps, orjson.Fragment
        values = [
            [fragment(v) if v is not None else None for v in column.to_pylist()]
            if is_json
            else column.to_pylist()
            for column, is_json in zip(table.columns, self._json, strict=True)
        ]
        names = self._names
        lines = [
            dumps(
                {n: v for n, v in zip(names, row, strict=True) if v is not None},
                option=_NDJSON_OPTIONS,
            )
            for row in zip(*values, strict=True)
        ]
        self._file.write(b"".join(lines))

    def close(self) -> None:
        self._file.close()

    def abort(self) -> None:
        self._file.close()


def open_writer(
    fmt: StagedFormat, path: Path, columns: Sequence[Column], *, csv_null: str = ""
) -> TableWriter:
    """A writer of `fmt` creating `path` (the caller renames it into place when complete);
    `csv_null` is the text of NULL in CSV."""
    if fmt == "parquet":
        return ParquetWriter(path, columns)
    if fmt == "csv":
        return CsvWriter(path, columns, csv_null)
    if fmt == "ndjson":
        return NdjsonWriter(path, columns)
    raise ValueError(f"unknown staged format {fmt!r}; expected one of {', '.join(EXTENSIONS)}")


class BackgroundWriter:
    """Hands tables to another writer on its own thread, so that encoding and compressing one
    table overlaps producing the next (Arrow releases the GIL while it writes). At most
    `depth` tables wait; a failure of the inner writer is raised by the next call."""

    _DONE = None

    def __init__(self, inner: TableWriter, depth: int = 2) -> None:
        self._inner = inner
        self._queue: queue.Queue[pa.Table | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="syncd-table-writer", daemon=True)
        self._thread.start()

    def write(self, table: pa.Table) -> None:
        self._raise()
        if table.num_rows:
            while True:
                try:
                    self._queue.put(table, timeout=0.1)
                    return
                except queue.Full:
                    self._raise()

    def close(self) -> None:
        self._stop()
        self._raise()
        self._inner.close()

    def abort(self) -> None:
        self._stop()
        self._inner.abort()

    def _stop(self) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(self._DONE, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            table = self._queue.get()
            if table is None:
                return
            if self._error is None:
                try:
                    self._inner.write(table)
                except BaseException as exc:  # raised on the caller's thread
                    self._error = exc
