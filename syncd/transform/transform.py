"""`transform_file`: one spooled export download -> one staged file plus its quarantine.

The output appears under its final name only when complete (written to "<name>.partial" and
renamed), so a crash never leaves a short file that looks whole. Rows that cannot be loaded go
to "<batch id>.rejects.ndjson" with their position and reason; every row of the download is
either in the output or in the quarantine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

import orjson
import structlog

from syncd.batch import BatchKey, StagedFormat, TransformedBatch
from syncd.errors import TransformError
from syncd.fields import Column
from syncd.timeutil import UTC
from syncd.transform.convert import NeedsExactParse, RowConverter, RowRejected, batch_window
from syncd.transform.reader import RAW_LIMIT, ExportRow, open_export, parse_exact, row_text
from syncd.transform.rules import NO_RULES, OutputRules
from syncd.transform.writers import (
    EXTENSIONS,
    TableWriter,
    arrow_schema,
    open_writer,
    rows_to_table,
)

log = structlog.get_logger(__name__)

DEFAULT_BLOCK_ROWS = 20_000
#: A block is also written once its rows' source text reaches this size: rows of a megabyte
#: each would otherwise hold gigabytes in one block of DEFAULT_BLOCK_ROWS.
BLOCK_BYTES = 16 << 20
PARTIAL_SUFFIX = ".partial"


def output_path(out_dir: Path, key: BatchKey, fmt: StagedFormat) -> Path:
    """Where `transform_file` puts the staged file of a batch."""
    return out_dir / f"{key.id}.{EXTENSIONS[fmt]}"


def rejects_path(out_dir: Path, key: BatchKey) -> Path:
    """Where `transform_file` puts the quarantined rows of a batch."""
    return out_dir / f"{key.id}.rejects.ndjson"


class RejectSink:
    """Quarantine records, one JSON object per line; the file is created at the first reject."""

    def __init__(self, path: Path, batch_id: str) -> None:
        self.path = path
        self.count = 0
        self._batch_id = batch_id
        self._file: IO[bytes] | None = None

    def add(self, position: int, reason: str, raw: bytes) -> None:
        if self._file is None:
            self._file = open(self.path, "wb")
        record = {
            "batch_id": self._batch_id,
            "position": position,
            "reason": reason,
            "raw": raw[:RAW_LIMIT].decode("utf-8", "replace"),
        }
        self._file.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        self.count += 1

    def __enter__(self) -> RejectSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()


def _convert(converter: RowConverter, row: ExportRow) -> list[Any]:
    """The row's values; raises RowRejected."""
    if row.error:
        raise RowRejected(row.error)
    try:
        return converter.convert(row.value, exact=row.exact)
    except NeedsExactParse:
        try:
            value = parse_exact(row_text(row))
        except ValueError as exc:
            raise RowRejected(f"not JSON: {exc}") from None
        return converter.convert(value, exact=True)


def _write_rows(
    sources: Sequence[Path],
    converter: RowConverter,
    writer: TableWriter,
    rejects: RejectSink,
    block_rows: int,
) -> int:
    """Stream the rows of `sources`, in order, into `writer` and `rejects`; the rows written.

    Positions in the quarantine count across all sources, as if they were one file. A block
    is written every `block_rows` rows or `BLOCK_BYTES` of source text, whichever comes first.
    """
    schema = arrow_schema(converter.columns)
    written = 0
    offset = 0
    block: list[list[Any]] = []
    block_bytes = 0
    for source in sources:
        seen = 0
        with open_export(source) as reader:
            for row in reader:
                seen = row.position + 1
                try:
                    block.append(_convert(converter, row))
                except RowRejected as exc:
                    rejects.add(offset + row.position, exc.reason, row_text(row))
                    continue
                block_bytes += len(row.raw) if row.raw is not None else 0
                if len(block) >= block_rows or block_bytes >= BLOCK_BYTES:
                    writer.write(rows_to_table(block, schema))
                    written += len(block)
                    block, block_bytes = [], 0
        offset += seen
    writer.write(rows_to_table(block, schema))
    return written + len(block)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class _Finishable(Protocol):
    def close(self) -> None: ...

    def abort(self) -> None: ...


@dataclass(frozen=True)
class OutputFiles:
    """A batch's staged file and quarantine, each written under a partial name first."""

    final: Path
    final_rejects: Path

    @classmethod
    def for_batch(cls, out_dir: Path, key: BatchKey, fmt: StagedFormat) -> OutputFiles:
        return cls(output_path(out_dir, key, fmt), rejects_path(out_dir, key))

    @property
    def partial(self) -> Path:
        return self.final.with_name(self.final.name + PARTIAL_SUFFIX)

    @property
    def partial_rejects(self) -> Path:
        return self.final_rejects.with_name(self.final_rejects.name + PARTIAL_SUFFIX)


def write_outputs(
    files: OutputFiles,
    writer: _Finishable,
    batch_id: str,
    fill: Callable[[RejectSink], int],
) -> tuple[int, int]:
    """Run `fill` (which writes rows to `writer` and rejects to the sink, returning the rows
    written), then publish both files under their final names; on any failure remove both
    partial files. Returns (rows, rejected)."""
    try:
        with RejectSink(files.partial_rejects, batch_id) as rejects:
            try:
                rows = fill(rejects)
                writer.close()
            except BaseException:
                writer.abort()
                raise
        os.replace(files.partial, files.final)
        if rejects.count:
            os.replace(files.partial_rejects, files.final_rejects)
        else:
            _remove(files.final_rejects)  # left by an earlier attempt at this batch
    except BaseException as exc:
        _remove(files.partial)
        _remove(files.partial_rejects)
        if isinstance(exc, OSError):
            raise TransformError(f"cannot write {files.final.name}: {exc}") from exc
        raise
    return rows, rejects.count


def finished_batch(
    key: BatchKey,
    fmt: StagedFormat,
    columns: tuple[Column, ...],
    files: OutputFiles,
    counts: tuple[int, int],
    source_bytes: int,
    started: float,
    path: str,
) -> TransformedBatch:
    """Log the finished transform and describe its output."""
    rows, rejected = counts
    log.info(
        "transform.done",
        batch=key.id,
        format=fmt,
        path=path,
        rows=rows,
        rejected=rejected,
        source_bytes=source_bytes,
        seconds=round(time.perf_counter() - started, 3),
    )
    if rejected:
        log.warning("transform.rows_quarantined", batch=key.id, rejected=rejected)
    return TransformedBatch(
        key=key,
        path=files.final,
        format=fmt,
        columns=columns,
        rows=rows,
        rejected=rejected,
        rejects_path=files.final_rejects if rejected else None,
        source_bytes=source_bytes,
    )


def transform_file(
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
    """Convert the spooled export `source` into `<out_dir>/<key.id>.<ext>` with `columns`,
    following the warehouse's `rules` (string limits, CSV's NULL).

    `source` may be several files (the legacy bundles of one day): their rows are concatenated.

    Raises TransformError when the download as a whole cannot be read (damaged gzip, not JSON,
    a broken array) or the output cannot be written; bad rows are quarantined instead.
    `loaded_at` must be time-zone aware; it is stored as UTC.
    """
    if block_rows < 1:
        raise ValueError("block_rows must be at least 1")
    if loaded_at.tzinfo is None:
        raise ValueError("loaded_at must be time-zone aware")
    columns = tuple(columns)
    converter = RowConverter(
        columns,
        key.id,
        loaded_at.astimezone(UTC).replace(tzinfo=None),
        window=batch_window(key),
        rules=rules,
    )
    files = OutputFiles.for_batch(out_dir, key, fmt)
    started = time.perf_counter()
    try:
        sources = [source] if isinstance(source, Path) else list(source)
        source_bytes = sum(path.stat().st_size for path in sources)
        out_dir.mkdir(parents=True, exist_ok=True)
        _remove(files.partial_rejects)  # left by a crashed attempt; this one may have none
        writer = open_writer(fmt, files.partial, columns, csv_null=rules.csv_null)
    except OSError as exc:
        raise TransformError(f"cannot transform batch {key.id}: {exc}") from exc
    counts = write_outputs(
        files,
        writer,
        key.id,
        lambda rejects: _write_rows(sources, converter, writer, rejects, block_rows),
    )
    return finished_batch(key, fmt, columns, files, counts, source_bytes, started, "reference")
