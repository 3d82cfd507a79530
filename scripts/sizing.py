"""Disk and memory per million events, for docs/sizing.md: `syncd once` (a child process,
default settings, staged files kept) syncs `--hours` 1-hour windows of `--events-per-hour`
simulated events into DuckDB; prints the events, the peak RSS of the child, and the bytes of
the download (the SyncTable's Bytes), the staged Parquet files and the DuckDB file, each also
per million events.

    .venv/bin/python scripts/sizing.py --hours 6 --events-per-hour 100000
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import duckdb  # noqa: E402
from e2e_support import API_KEY, write_config  # noqa: E402

from syncd.observability.logging import configure_logging  # noqa: E402
from syncd.simulator import Simulator, SimulatorConfig  # noqa: E402
from syncd.timeutil import utcnow  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=6)
    parser.add_argument("--events-per-hour", type=int, default=100_000)
    args = parser.parse_args()
    configure_logging("console", "warning")  # not the simulator's line per request
    start = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(hours=args.hours + 1)
    with tempfile.TemporaryDirectory(prefix="syncd-sizing-") as folder:
        config = SimulatorConfig(api_key=API_KEY, events_per_hour=args.events_per_hour, seed=7)
        with Simulator(config) as sim:
            files = write_config(
                Path(folder), sim, start, {"KeepStagedFiles": True, "LogLevel": "warning"}
            )
            began = time.monotonic()
            result = subprocess.run(
                [sys.executable, "-m", "syncd", "once", "-c", str(files.config)],
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                capture_output=True,
                text=True,
                check=False,
            )
            seconds = time.monotonic() - began
        if result.returncode != 0:
            sys.exit(f"syncd once exited {result.returncode}: {result.stderr[-2000:]}")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        with duckdb.connect(str(files.duckdb), read_only=True) as con:
            row = con.execute("SELECT sum(RowsLoaded), sum(Bytes) FROM fssync").fetchone()
        assert row is not None
        events, downloaded = int(row[0]), int(row[1])
        staged = sum(p.stat().st_size for p in files.save_dir.rglob("*") if p.is_file())
        warehouse = files.duckdb.stat().st_size
    per_million = 1_000_000 / events
    print(f"events            {events:,} in {args.hours} windows, {seconds:.1f} s")
    print(f"peak RSS          {peak_mb:,.0f} MB (syncd once)")
    for name, size in (("download (gzip)", downloaded), ("staged Parquet", staged)):
        print(f"{name:<17} {size / 1e6:,.1f} MB; {size * per_million / 1e6:,.0f} MB per million")
    print(
        f"{'DuckDB file':<17} {warehouse / 1e6:,.1f} MB; "
        f"{warehouse * per_million / 1e6:,.0f} MB per million"
    )


if __name__ == "__main__":
    main()
