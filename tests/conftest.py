"""Shared fixtures.

`staged_files`: writes batches the way the transform stages them (Parquet with naive UTC
`timestamp('us')` and CustomVars as a JSON string; gzip CSV with a header row, NULL as an
empty unquoted field and "" as the empty string; gzip NDJSON with CustomVars nested), so the
warehouse tests do not depend on the transform.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import hypothesis
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from syncd.batch import BatchKey, StagedBatch, StagedFormat, TransformedBatch
from syncd.fields import Column, FieldType
from syncd.timeutil import UTC, format_timestamp, parse_timestamp

# CI runs the property tests on a fixed sequence of examples (reproducible: never a new
# surprise on a submission); locally they explore new examples on every run.
hypothesis.settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    hypothesis.settings.load_profile("ci")

_T = FieldType

SAMPLE_COLUMNS: tuple[Column, ...] = (
    Column("IndvId", _T.INT64),
    Column("SessionId", _T.INT64),
    Column("EventStart", _T.TIMESTAMP),
    Column("EventType", _T.STRING),
    Column("PageUrl", _T.STRING),
    Column("EventCumulativeLayoutShift", _T.FLOAT),
    Column("CustomVars", _T.JSON),
    Column("SyncdBatchId", _T.STRING),
    Column("SyncdLoadedAt", _T.TIMESTAMP),
)


@dataclass
class StagedFiles:
    """Makes batch keys, rows and staged files in `folder`."""

    folder: Path
    columns: tuple[Column, ...] = SAMPLE_COLUMNS

    @staticmethod
    def key(start: str, hours: int = 1) -> BatchKey:
        begin = parse_timestamp(start)
        return BatchKey(begin, begin + timedelta(hours=hours))

    def rows(self, key: BatchKey, count: int, **values: Any) -> list[dict[str, Any]]:
        """`count` events inside the window of `key`, one minute apart; `values` override."""
        return [
            {
                "IndvId": 5_000_000_000_000_000 + n,
                "SessionId": 1000 + n,
                "EventStart": key.start + timedelta(minutes=n),
                "EventType": "click",
                "PageUrl": f"https://shop.example/p/{n}",
                "EventCumulativeLayoutShift": 0.25,
                "CustomVars": {"user_plan_str": "pro", "evt_total_real": 9.5},
                "SyncdBatchId": key.id,
                "SyncdLoadedAt": datetime(2024, 6, 1, tzinfo=UTC),
                **values,
            }
            for n in range(count)
        ]

    def write(
        self,
        key: BatchKey,
        rows: Sequence[dict[str, Any]],
        fmt: StagedFormat = "parquet",
        rejects: Sequence[dict[str, Any]] = (),
        claimed_rows: int | None = None,
        csv_null: str = "",
    ) -> TransformedBatch:
        """Stage `rows`; `claimed_rows` lets a test lie about the row count; `csv_null` is the
        warehouse's text of NULL in CSV (`Capabilities.csv_null`)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{key.id}.{fmt}{'' if fmt == 'parquet' else '.gz'}"
        if fmt == "csv":
            self._csv(path, rows, csv_null)
        else:
            {"parquet": self._parquet, "ndjson": self._ndjson}[fmt](path, rows)
        rejects_path = None
        if rejects:
            rejects_path = self.folder / f"{key.id}.rejects.ndjson.gz"
            lines = [{"batch_id": key.id, **r} for r in rejects]
            rejects_path.write_bytes(
                gzip.compress(b"".join(orjson.dumps(x) + b"\n" for x in lines))
            )
        return TransformedBatch(
            key=key,
            path=path,
            format=fmt,
            columns=self.columns,
            rows=len(rows) if claimed_rows is None else claimed_rows,
            rejected=len(rejects),
            rejects_path=rejects_path,
            source_bytes=path.stat().st_size,
        )

    @staticmethod
    def in_place(batch: TransformedBatch) -> StagedBatch:
        """Staged where it was written (a local stage without copying)."""
        rejects = str(batch.rejects_path) if batch.rejects_path else None
        return StagedBatch(batch=batch, uri=str(batch.path), rejects_uri=rejects)

    def _arrow(self, rows: Sequence[dict[str, Any]], tz: str | None) -> pa.Table:
        arrow_types = {
            _T.INT64: pa.int64(),
            _T.FLOAT: pa.float64(),
            _T.STRING: pa.string(),
            _T.TIMESTAMP: pa.timestamp("us", tz=tz),
            _T.JSON: pa.string(),
        }
        data: dict[str, pa.Array] = {}
        for c in self.columns:
            values = [r.get(c.name) for r in rows]
            if c.type is _T.TIMESTAMP and tz is None:
                values = [v.astimezone(UTC).replace(tzinfo=None) if v else v for v in values]
            if c.type is _T.JSON:
                values = [orjson.dumps(v).decode() if v is not None else None for v in values]
            data[c.name] = pa.array(values, arrow_types[c.type])
        return pa.table(data)

    def _parquet(self, path: Path, rows: Sequence[dict[str, Any]]) -> None:
        pq.write_table(self._arrow(rows, tz=None), path)

    def _csv(self, path: Path, rows: Sequence[dict[str, Any]], null: str) -> None:
        buffer = io.BytesIO()
        options = pa_csv.WriteOptions(quoting_style="needed", null_string=null)
        pa_csv.write_csv(self._arrow(rows, tz="UTC"), buffer, options)
        path.write_bytes(gzip.compress(buffer.getvalue()))

    def _ndjson(self, path: Path, rows: Sequence[dict[str, Any]]) -> None:
        def encode(value: Any) -> Any:
            return format_timestamp(value) if isinstance(value, datetime) else value

        lines = [
            orjson.dumps({c.name: encode(r.get(c.name)) for c in self.columns}) + b"\n"
            for r in rows
        ]
        path.write_bytes(gzip.compress(b"".join(lines)))


@pytest.fixture
def staged_files(tmp_path: Path) -> StagedFiles:
    return StagedFiles(tmp_path / "spool")
