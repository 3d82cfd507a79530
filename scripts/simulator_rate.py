"""Measure how fast the export-API simulator serves events over loopback.

Starts `python -m syncd simulate` as its own process, then times the full client flow (create,
poll, results URL, download of the gzip body) for fresh 1-hour windows, and a repeated download
of a cached one. Prints events/s.

    .venv/bin/python scripts/simulator_rate.py --events-per-hour 200000 --windows 3
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx

from syncd.observability.logging import configure_logging
from syncd.sources.client import ExportClient
from syncd.timeutil import UTC

KEY = "rate-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def count_lines(path: Path) -> int:
    import gzip

    with gzip.open(path, "rb") as f:
        return sum(1 for _ in f)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events-per-hour", type=int, default=200_000)
    parser.add_argument("--windows", type=int, default=3)
    args = parser.parse_args()
    configure_logging("console", "warning")
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "syncd",
            "simulate",
            "--port",
            str(port),
            "--api-key",
            KEY,
            "--events-per-hour",
            str(args.events_per_hour),
            "--log-level",
            "warning",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(url, timeout=0.2)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        client = ExportClient(url, KEY)
        start = datetime(2026, 11, 2, tzinfo=UTC)
        with tempfile.TemporaryDirectory() as tmp:
            total_events = 0
            total_seconds = 0.0
            export_id = ""
            for i in range(args.windows):
                begin = start + timedelta(hours=i)
                t0 = time.perf_counter()
                op = client.create_export(begin, begin + timedelta(hours=1))
                export_id = client.wait_for_export(op, poll_interval=0.05, deadline=600)
                download = client.download_export(export_id, Path(tmp) / f"w{i}.ndjson.gz")
                seconds = time.perf_counter() - t0
                events = count_lines(download.path)
                total_events += events
                total_seconds += seconds
                print(
                    f"window {i}: {events:,} events, {download.bytes / 1e6:.1f} MB gzip, "
                    f"{seconds:.2f} s, {events / seconds:,.0f} events/s (fresh)"
                )
            t0 = time.perf_counter()
            download = client.download_export(export_id, Path(tmp) / "again.ndjson.gz")
            cached = time.perf_counter() - t0
            events = count_lines(download.path)
        print(
            f"fresh windows: {total_events:,} events in {total_seconds:.2f} s = "
            f"{total_events / total_seconds:,.0f} events/s"
        )
        print(
            f"cached re-download: {events:,} events in {cached:.2f} s = "
            f"{events / cached:,.0f} events/s"
        )
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
