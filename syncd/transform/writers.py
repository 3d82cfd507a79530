"""Writing converted rows to the staged formats, one block at a time.

Every writer takes blocks of rows (value lists in column order, as `RowConverter` makes them)
and appends them to one file, so memory holds one block, never the batch:

- Parquet: one zstd row group per block; int64, float64, string, timestamp("us") without a
  time zone holding UTC; CustomVars as a string.
- CSV (gzip): a header row, every string quoted (so "" is the empty string), NULL unquoted
  as the warehouse's text (`OutputRules.csv_null`): an empty field by default, as
  PostgreSQL's COPY reads NULL, while a warehouse that reads an empty field as "" (Redshift)
  names its own; timestamps as "YYYY-MM-DD HH:MM:SS.ffffff".
- NDJSON (gzip): one object per row, NULL columns left out, timestamps RFC 3339 with "Z",
  JSON columns (CustomVars) nested as objects.
"""

from __future__ import annotations

import gzip
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
    """A block of row-major value lists as an Arrow table of `schema`."""
    by_column = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    arrays = [pa.array(values, type=f.type) for values, f in zip(by_column, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


class BlockWriter(Protocol):
    """Appends blocks of rows to one file; `close` completes it, `abort` just lets it go."""

    def write(self, rows: Sequence[Sequence[Any]]) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class ParquetBlockWriter:
    def __init__(self, path: Path, columns: Sequence[Column]) -> None:
        self._schema = arrow_schema(columns)
        self._writer = pq.ParquetWriter(str(path), self._schema, compression=PARQUET_COMPRESSION)

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            table = rows_to_table(rows, self._schema)
            self._writer.write_table(table, row_group_size=len(rows))

    def close(self) -> None:
        self._writer.close()

    def abort(self) -> None:
        self._writer.close()


def csv_write_options(null: str = "") -> pacsv.WriteOptions:
    """Header, every string quoted, NULL as `null` unquoted (both CSV writers use these)."""
    return pacsv.WriteOptions(include_header=True, quoting_style="needed", null_string=null)


class CsvBlockWriter:
    def __init__(self, path: Path, columns: Sequence[Column], null: str = "") -> None:
        self._schema = arrow_schema(columns)
        self._file = gzip.open(path, "wb", compresslevel=GZIP_LEVEL)
        options = csv_write_options(null)
        self._writer = pacsv.CSVWriter(self._file, self._schema, write_options=options)

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._writer.write_table(rows_to_table(rows, self._schema))

    def close(self) -> None:
        self._writer.close()
        self._file.close()

    def abort(self) -> None:
        self._file.close()


class NdjsonBlockWriter:
    def __init__(self, path: Path, columns: Sequence[Column]) -> None:
        self._names = [c.name for c in columns]
        self._json_names = [c.name for c in columns if c.type is FieldType.JSON]
        self._file = gzip.open(path, "wb", compresslevel=GZIP_LEVEL)

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        names, json_names, dumps = self._names, self._json_names, orjson.dumps
        lines = []
        for row in rows:
            obj = {name: value for name, value in zip(names, row, strict=True) if value is not None}
            for name in json_names:
                if name in obj:
                    obj[name] = orjson.Fragment(obj[name])
            lines.append(dumps(obj, option=_NDJSON_OPTIONS))
        self._file.write(b"".join(lines))

    def close(self) -> None:
        self._file.close()

    def abort(self) -> None:
        self._file.close()


def open_block_writer(
    fmt: StagedFormat, path: Path, columns: Sequence[Column], *, csv_null: str = ""
) -> BlockWriter:
    """A writer of `fmt` creating `path` (the caller renames it into place when complete);
    `csv_null` is the text of NULL in CSV."""
    if fmt == "parquet":
        return ParquetBlockWriter(path, columns)
    if fmt == "csv":
        return CsvBlockWriter(path, columns, csv_null)
    if fmt == "ndjson":
        return NdjsonBlockWriter(path, columns)
    raise ValueError(f"unknown staged format {fmt!r}; expected one of {', '.join(EXTENSIONS)}")
