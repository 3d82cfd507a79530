"""What opening the DuckDB file for each commit costs, against a file held open.

    .venv/bin/python scripts/bench_duckdb_commit.py                     # 24 windows of 20,000 events
    .venv/bin/python scripts/bench_duckdb_commit.py --windows 6 --events 2000   # quick

`DuckDBWarehouse` opens the file for each commit and closes it after (so that others can query
it between commits; see `warehouses/duckdb.py`); closing the last connection also checkpoints
the WAL into the file. The same real staged batches (simulated 1-hour windows, through the fast
transform to Parquet) are committed into a fresh file twice per round: once as syncd does it,
and once with another connection to the file kept open in this process the whole time, so that
the warehouse's connect and close reuse the live database (no open, no checkpoint): the
difference is the price of letting readers in. Rounds alternate the two, to spread the
machine's other load over both. Also times a bare open + close of the final file.
Prints a table and writes JSON (`--out`, default bench-results/duckdb-commit.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
import zlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from syncd import __version__  # noqa: E402
from syncd.batch import BatchKey, StagedBatch, SyncRecord, TransformedBatch  # noqa: E402
from syncd.fields import export_columns  # noqa: E402
from syncd.simulator.bodies import FORMAT_NDJSON, ExportSpec, iter_json_rows  # noqa: E402
from syncd.simulator.events import HOUR_MS, EventGenerator, to_ms  # noqa: E402
from syncd.timeutil import UTC  # noqa: E402
from syncd.transform.columnar import transform  # noqa: E402
from warehouses.duckdb import DuckDBWarehouse  # noqa: E402

DATA_START = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def staged_batches(work: Path, windows: int, events: int) -> list[TransformedBatch]:
    """`windows` 1-hour windows of `events` simulated events each, transformed to Parquet."""
    generator = EventGenerator(seed=7, events_per_hour=events)
    batches = []
    for n in range(windows):
        start = DATA_START + n * HOUR
        key = BatchKey(start, start + HOUR)
        body = work / f"export-{n}.ndjson.gz"
        spec = ExportSpec(to_ms(start), to_ms(start) + HOUR_MS, FORMAT_NDJSON)
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
        with body.open("wb") as out:
            for _, raw, _ in iter_json_rows(generator, spec):
                out.write(compressor.compress(raw + b"\n"))
            out.write(compressor.flush())
        out_dir = work / f"batch-{n}"
        out_dir.mkdir()
        batches.append(transform(key, [body], out_dir, export_columns(), "parquet", start + HOUR))
    return batches


def record_for(batch: TransformedBatch) -> SyncRecord:
    return SyncRecord(
        batch_id=batch.key.id,
        source=batch.key.source,
        start=batch.key.start,
        end=batch.key.end,
        committed_at=batch.key.end,
        rows_loaded=batch.rows,
        rows_rejected=batch.rejected,
        bytes=batch.source_bytes,
        staged_uri=str(batch.path),
        syncd_version=__version__,
    )


def commit_all(path: Path, batches: list[TransformedBatch], held_open: bool) -> list[float]:
    """Seconds of each commit into a fresh file at `path`."""
    for leftover in (path, Path(f"{path}.wal"), Path(f"{path}.lock")):
        leftover.unlink(missing_ok=True)
    keeper = duckdb.connect(str(path)) if held_open else None
    seconds = []
    try:
        with DuckDBWarehouse(path) as warehouse:
            warehouse.ensure_tables(export_columns())
            for batch in batches:
                staged = StagedBatch(batch=batch, uri=str(batch.path), rejects_uri=None)
                started = time.perf_counter()
                warehouse.commit_batch(staged, record_for(batch))
                seconds.append(time.perf_counter() - started)
    finally:
        if keeper is not None:
            keeper.close()
    return seconds


def open_close(path: Path, times: int = 20) -> float:
    """Median seconds of connect + close of the file (what a reader's query pays too)."""
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        duckdb.connect(str(path)).close()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median_ms": statistics.median(ordered) * 1000,
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1))] * 1000,
        "total_s": sum(ordered),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--windows", type=int, default=24, help="batches committed per run")
    parser.add_argument("--events", type=int, default=20_000, help="events per 1-hour window")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each way")
    parser.add_argument("--work", type=Path, default=ROOT / "bench-results" / "duckdb-commit")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "duckdb-commit.json")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    batches = staged_batches(args.work, args.windows, args.events)
    rows = sum(b.rows for b in batches)
    runs: dict[str, list[float]] = {"open per commit": [], "held open": []}
    db = args.work / "bench.duckdb"
    for _ in range(args.rounds):
        runs["open per commit"] += commit_all(db, batches, held_open=False)
        runs["held open"] += commit_all(db, batches, held_open=True)
    file_mb = db.stat().st_size / 1e6
    result: dict[str, Any] = {
        "windows": args.windows,
        "events_per_window": args.events,
        "rows": rows,
        "rounds": args.rounds,
        "file_mb": round(file_mb, 1),
        "open_close_ms": open_close(db) * 1000,
        "ways": {way: summary(seconds) for way, seconds in runs.items()},
    }
    ways = result["ways"]
    result["cost_per_commit_ms"] = (
        ways["open per commit"]["median_ms"] - ways["held open"]["median_ms"]
    )
    print(
        f"{args.windows} commits of {args.events:,} events each ({rows:,} rows, a "
        f"{file_mb:.0f} MB file at the end), {args.rounds} rounds each way"
    )
    print(f"{'way':<18}{'median ms':>12}{'p90 ms':>10}{'total s':>10}")
    for way, figures in ways.items():
        print(
            f"{way:<18}{figures['median_ms']:>12.1f}{figures['p90_ms']:>10.1f}"
            f"{figures['total_s'] / args.rounds:>10.2f}"
        )
    print(f"cost of opening per commit: {result['cost_per_commit_ms']:+.1f} ms a commit (median)")
    print(f"bare open + close of the final file: {result['open_close_ms']:.1f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
