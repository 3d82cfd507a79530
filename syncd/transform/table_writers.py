"""Writing Arrow tables to the staged formats: the columnar twin of `writers`.

The same files as `writers.open_block_writer` makes from row lists (same schema, compression,
CSV options), for callers that already hold Arrow tables: one Parquet row group per table.
"""

from __future__ import annotations

import gzip
import queue
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from syncd.batch import StagedFormat
from syncd.fields import Column
from syncd.transform.writers import (
    GZIP_LEVEL,
    PARQUET_COMPRESSION,
    arrow_schema,
    csv_write_options,
)


class TableWriter(Protocol):
    """Appends tables of `arrow_schema(columns)` to one file; `close` completes it."""

    def write(self, table: pa.Table) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class ParquetTableWriter:
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


class CsvTableWriter:
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


class BackgroundTableWriter:
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


def open_table_writer(
    fmt: StagedFormat, path: Path, columns: Sequence[Column], *, csv_null: str = ""
) -> TableWriter:
    """A table writer of `fmt` (Parquet or CSV) creating `path`; `csv_null` as in
    `writers.open_block_writer`."""
    if fmt == "parquet":
        return ParquetTableWriter(path, columns)
    if fmt == "csv":
        return CsvTableWriter(path, columns, csv_null)
    raise ValueError(f"no table writer for staged format {fmt!r}")
