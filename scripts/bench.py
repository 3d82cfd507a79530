"""syncd's benchmark: transform and end-to-end throughput against `gzip -dc` of the same data.

    .venv/bin/python scripts/bench.py                  # 1,000,000 events, ~10 minutes
    .venv/bin/python scripts/bench.py --quick          # 50,000 events, for CI (< 60 s)
    .venv/bin/python scripts/bench.py --scale 4        # also the fast path at 4x the events
    .venv/bin/python scripts/bench.py --backfill       # also 30 days of 1-hour windows
    .venv/bin/python scripts/bench.py --soak           # only: `syncd run` over 200 windows

Every figure stands beside a baseline measured in the same run on the same file: the time of
`gzip -dc FILE > /dev/null`, the floor of one gzip stream on one core. Transforms run in a child
process each, so their peak RSS (from wait4) is theirs alone. Inputs are generated once by the
simulator's own event generator and cached under `<out dir>/cache`. The end-to-end runs start
the simulator in this process (its own threads) and `syncd once` as a child process.
Prints a table and writes JSON (`--out`, default bench-results/bench.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from syncd.simulator.bodies import (  # noqa: E402
    FORMAT_JSON,
    FORMAT_NDJSON,
    ExportSpec,
    iter_json_rows,
)
from syncd.simulator.events import HOUR_MS, EventGenerator, to_ms  # noqa: E402
from syncd.timeutil import UTC, format_timestamp, utcnow  # noqa: E402

SEED = 7
EVENTS_PER_HOUR = 100_000  # generated inputs: ten hours make a million events
DATA_START = datetime(2024, 1, 1, tzinfo=UTC)
GZIP_LEVEL = 1  # the simulator's (and a fast exporter's) level
E2E_EVENTS_PER_HOUR = 50_000
API_KEY = "bench-key"


@dataclass
class Figure:
    """One measurement and its baseline from the same run."""

    name: str
    events: int
    seconds: float
    baseline_seconds: float
    peak_rss_mb: float | None = None
    rows: int | None = None
    rejected: int | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.seconds / self.baseline_seconds if self.baseline_seconds else float("nan")


# -- inputs ----------------------------------------------------------------------------------


def generate(path: Path, events: int, array: bool) -> Path:
    """A gzip export body of `events` simulated events: a FORMAT_JSON array or NDJSON."""
    if path.exists():
        return path
    generator = EventGenerator(seed=SEED, events_per_hour=EVENTS_PER_HOUR)
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    start = to_ms(DATA_START)
    partial = path.with_name(path.name + ".partial")
    written = 0
    with open(partial, "wb") as out:
        buffer = bytearray(b"[" if array else b"")
        hour = 0
        while written < events:
            spec = ExportSpec(
                start + hour * HOUR_MS,
                start + (hour + 1) * HOUR_MS,
                FORMAT_JSON if array else FORMAT_NDJSON,
            )
            for _, raw, _ in iter_json_rows(generator, spec):
                if array and written:
                    buffer += b",\n"
                buffer += raw
                if not array:
                    buffer += b"\n"
                written += 1
                if len(buffer) >= 8 << 20:
                    out.write(compressor.compress(bytes(buffer)))
                    buffer = bytearray()
                if written >= events:
                    break
            hour += 1
        if array:
            buffer += b"]"
        out.write(compressor.compress(bytes(buffer)))
        out.write(compressor.flush())
    partial.rename(path)
    return path


# -- measuring -------------------------------------------------------------------------------


def run_child(argv: list[str], **kwargs: Any) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, stdout) of one child process; raises when it fails."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
    assert child.stdout is not None and child.stderr is not None
    out = child.stdout.read()
    err = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(argv)} failed ({child.returncode}): {err.decode()[-2000:]}"
        )
    return seconds, usage.ru_maxrss / 1024, out.decode()


def gzip_baseline(path: Path) -> float:
    seconds, _, _ = run_child(["sh", "-c", f"gzip -dc {shlex.quote(str(path))} > /dev/null"])
    return seconds


def transform_child(
    path: Path, which: str, out_dir: Path, fmt: str
) -> tuple[float, float, dict[str, Any]]:
    argv = [sys.executable, __file__, "_transform", which, str(path), str(out_dir), fmt]
    seconds, rss, out = run_child(argv)
    return seconds, rss, json.loads(out.strip().splitlines()[-1])


def _transform_in_child(which: str, source: str, out_dir: str, fmt: str) -> None:
    """Child side: one transform, its counts on stdout as JSON."""
    from syncd.batch import BatchKey
    from syncd.fields import export_columns
    from syncd.transform import transform_file
    from syncd.transform.columnar import transform_columnar

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    # a legacy bundle: its rows are loaded whatever their EventStart (a segment window would
    # quarantine the hours past its end)
    key = BatchKey(DATA_START, DATA_START + timedelta(days=1), source="legacy", bundle_ids=(1,))
    # the fast path alone: a file it hands to the reference path (say DuckDB ran out of its
    # memory limit) fails the figure instead of timing the reference path under its name
    fn = transform_columnar if which == "fast" else transform_file
    batch = fn(key, Path(source), Path(out_dir), export_columns(), fmt, utcnow())  # type: ignore[arg-type]
    print(json.dumps({"rows": batch.rows, "rejected": batch.rejected}))
    batch.path.unlink()


def bench_transforms(
    cache: Path, work: Path, events: int, paths: list[str], fmt: str, label: str = ""
) -> list[Figure]:
    figures = []
    for form, array in (("json-array", True), ("ndjson", False)):
        source = generate(cache / f"events-{events}-{form}.gz", events, array)
        baseline = gzip_baseline(source)
        for which in paths:
            seconds, rss, counts = transform_child(source, which, work / f"{which}-{form}", fmt)
            figures.append(
                Figure(
                    name=f"transform {which} {form}{label}",
                    events=events,
                    seconds=seconds,
                    baseline_seconds=baseline,
                    peak_rss_mb=rss,
                    rows=counts["rows"],
                    rejected=counts["rejected"],
                    note=f"{counts['rows']:,} rows, {counts['rejected']:,} rejected",
                    extra={"source_mb": round(source.stat().st_size / 2**20, 1), "format": fmt},
                )
            )
            print_figure(figures[-1])
    return figures


# -- end to end ------------------------------------------------------------------------------


def e2e_config(
    directory: Path, api_url: str, legacy_url: str, start: datetime, extra: str = ""
) -> Path:
    d = directory.resolve()
    config = directory / "bench.toml"
    config.write_text(
        f"""{extra}FsApiToken = "{API_KEY}"
ApiURL = "{api_url}"
LegacyApiURL = "{legacy_url}"
Provider = "duckdb"
StartTime = "{format_timestamp(start)}"
ExportDuration = "1h"
ExportDelay = "1h"
Backoff = "1s"
TmpDir = "{d / "tmp"}"
StateDir = "{d / "state"}"

[local]
SaveDir = "{d / "staged"}"

[duckdb]
Path = "{d / "bench.duckdb"}"
# Nobody queries the file here: no pause for readers between commits (see docs/benchmark.md).
ReaderWindow = "0s"
"""
    )
    return config


def run_once(config: Path) -> tuple[float, float]:
    argv = [sys.executable, "-m", "syncd", "once", "-c", str(config), "--log-level", "warning"]
    seconds, rss, _ = run_child(argv, cwd=ROOT)
    return seconds, rss


def loaded_rows(config_dir: Path) -> int:
    import duckdb

    with duckdb.connect(str(config_dir / "bench.duckdb"), read_only=True) as con:
        listed = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        tables = [r[0] for r in listed]
        table = next(t for t in tables if "sync" not in t.lower())
        row = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()  # noqa: S608
        return int(row[0]) if row else 0


BACKFILL_LATENCY = 2.0  # seconds per export operation ("a few seconds")
BACKFILL_RATE_LIMIT = 20.0  # API requests per second


def bench_e2e(cache: Path, work: Path, events: int) -> Figure:
    """`syncd once` into DuckDB over windows totalling about `events` events."""
    from syncd.simulator import Simulator, SimulatorConfig

    hours = max(1, round(events / E2E_EVENTS_PER_HOUR))
    now = utcnow().replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(hours=hours + 1)
    config = SimulatorConfig(api_key=API_KEY, events_per_hour=E2E_EVENTS_PER_HOUR, seed=SEED)
    with Simulator(config) as sim:
        warm, measured = work / "e2e-warm", work / "e2e"
        for directory in (warm, measured):  # a DuckDB file left by an earlier run would
            shutil.rmtree(directory, ignore_errors=True)  # hold the windows already synced
            directory.mkdir(parents=True)
        # the first run makes the simulator build (and cache) every body; the second is timed
        run_once(e2e_config(warm, sim.url, sim.legacy_url, start))
        config_path = e2e_config(measured, sim.url, sim.legacy_url, start)
        seconds, rss = run_once(config_path)
        spec = ExportSpec(to_ms(start), to_ms(now - timedelta(hours=1)), FORMAT_NDJSON)
        rows = loaded_rows(measured)
    baseline_file = cache / f"e2e-{to_ms(start)}-{hours}.ndjson.gz"
    if not baseline_file.exists():
        generator = EventGenerator(seed=SEED, events_per_hour=E2E_EVENTS_PER_HOUR)
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        with open(baseline_file, "wb") as out:
            for _, raw, _ in iter_json_rows(generator, spec):
                out.write(compressor.compress(raw + b"\n"))
            out.write(compressor.flush())
    return Figure(
        name="e2e once -> duckdb",
        events=rows,
        seconds=seconds,
        baseline_seconds=gzip_baseline(baseline_file),
        peak_rss_mb=rss,
        rows=rows,
        note=f"{hours} 1-hour windows; simulator in the bench process, syncd in a child",
    )


def bench_backfill(work: Path, days: int, events_per_hour: int) -> Figure:
    """Days of 1-hour windows with export latency and a rate limit: syncd's default settings
    against the same run forced to one batch at a time (`Lookahead = 0`), each against a fresh
    simulator; the simulator counts requests refused by its rate limit."""
    from syncd.simulator import Simulator, SimulatorConfig

    now = utcnow().replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(days=days)
    config = SimulatorConfig(
        api_key=API_KEY,
        events_per_hour=events_per_hour,
        seed=SEED,
        operation_latency=BACKFILL_LATENCY,
        rate_limit_per_second=BACKFILL_RATE_LIMIT,
    )
    runs: dict[str, tuple[float, float, int, int]] = {}
    for name, extra in (("one-at-a-time", "Lookahead = 0\n"), ("default", "")):
        with Simulator(config) as sim:
            directory = work / f"backfill-{name}"
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            config_path = e2e_config(directory, sim.url, sim.legacy_url, start, extra)
            seconds, rss = run_once(config_path)
            runs[name] = (seconds, rss, loaded_rows(directory), sim.stats.rate_limited)
    seconds, rss, rows, limited = runs["default"]
    baseline, _, baseline_rows, baseline_limited = runs["one-at-a-time"]
    if rows != baseline_rows:
        raise SystemExit(f"backfill runs loaded different rows: {rows} vs {baseline_rows}")
    windows = days * 24 - 1  # ExportDelay keeps the last hour back
    return Figure(
        name="backfill once (default settings)",
        events=rows,
        seconds=seconds,
        baseline_seconds=baseline,
        peak_rss_mb=rss,
        rows=rows,
        note=(
            f"{windows} windows, {BACKFILL_LATENCY:g} s export latency, "
            f"{BACKFILL_RATE_LIMIT:g} req/s limit; baseline = the same run with Lookahead = 0 "
            f"(target ratio <= 0.25); 429s sent: {limited} (one at a time: {baseline_limited})"
        ),
    )


SOAK_SAMPLE_AT = 20  # the window whose RSS the last one is compared with


def _rss_mb(pid: int) -> float:
    """The process's resident set now (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def bench_soak(work: Path, windows: int, events_per_hour: int) -> Figure:
    """`syncd run` (the daemon, a child process) over `windows` 1-hour windows into DuckDB: its
    resident memory after each commit, window `SOAK_SAMPLE_AT` against the last."""
    import signal

    from syncd.simulator import Simulator, SimulatorConfig

    now = utcnow().replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(hours=windows + 1)  # ExportDelay keeps the last hour back
    config = SimulatorConfig(api_key=API_KEY, events_per_hour=events_per_hour, seed=SEED)
    rss: list[float] = []
    rows = 0
    with Simulator(config) as sim:
        directory = work / "soak"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        config_path = e2e_config(directory, sim.url, sim.legacy_url, start)
        argv = [sys.executable, "-m", "syncd", "run", "-c", str(config_path)]
        argv += ["--log-format", "json", "--log-level", "info"]
        started = time.perf_counter()
        child = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert child.stdout is not None
        try:
            for line in child.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == "batch committed":
                    rss.append(_rss_mb(child.pid))
                    rows += int(event.get("rows", 0))
                if len(rss) >= windows or str(event.get("event", "")).startswith("caught up"):
                    break
                if event.get("level") == "error":
                    print(f"soak: {line.decode().strip()}", file=sys.stderr)
        finally:
            seconds = time.perf_counter() - started
            child.send_signal(signal.SIGTERM)
            child.stdout.close()
            _, _, usage = os.wait4(child.pid, 0)
    if len(rss) < min(windows, SOAK_SAMPLE_AT + 1):
        raise SystemExit(f"soak: syncd committed only {len(rss)} of {windows} windows")
    # RSS after a commit moves by a window's buffers (tens of MB) from one commit to the next:
    # the medians of the 10 commits around window SOAK_SAMPLE_AT and of the last 10 compare
    early = statistics.median(rss[max(0, SOAK_SAMPLE_AT - 5) : SOAK_SAMPLE_AT + 5])
    late = statistics.median(rss[-10:])
    growth = late / early - 1
    return Figure(
        name=f"soak run ({len(rss)} windows)",
        events=rows,
        seconds=seconds,
        baseline_seconds=0.0,
        peak_rss_mb=usage.ru_maxrss / 1024,
        rows=rows,
        note=(
            f"RSS around window {SOAK_SAMPLE_AT} {early:.0f} MB, over the last 10 "
            f"{late:.0f} MB ({growth:+.1%}; target <= +10%); "
            f"{events_per_hour:,} events a window"
        ),
        extra={"rss_mb_after_each_commit": [round(r, 1) for r in rss], "growth": round(growth, 4)},
    )


# -- output ----------------------------------------------------------------------------------


def print_header() -> None:
    print(
        f"{'figure':<38} {'events':>10} {'seconds':>8} {'gzip -dc':>9} {'ratio':>6} "
        f"{'peak RSS':>9}  note"
    )


def print_figure(f: Figure) -> None:
    rss = f"{f.peak_rss_mb:.0f} MB" if f.peak_rss_mb is not None else "-"
    baseline, ratio = (
        (f"{f.baseline_seconds:>9.2f}", f"{f.ratio:>5.2f}x") if f.baseline_seconds else ("-", "-")
    )
    print(
        f"{f.name:<38} {f.events:>10,} {f.seconds:>8.2f} {baseline:>9} {ratio:>6} {rss:>9}  "
        f"{f.note}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "_transform":
        _transform_in_child(*args[1:5])
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="events per input (default 1,000,000)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="50,000 events, fast path only at scale"
    )
    parser.add_argument("--scale", type=int, default=0, help="also the fast path at N x events")
    parser.add_argument("--format", default="parquet", choices=["parquet", "csv"])
    parser.add_argument("--no-reference", action="store_true", help="skip the slow reference path")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end run")
    parser.add_argument("--no-transform", action="store_true", help="skip the transform figures")
    parser.add_argument("--backfill", action="store_true", help="also the backfill scenario")
    parser.add_argument("--backfill-days", type=int, default=30, help="days of 1-hour windows")
    parser.add_argument(
        "--soak", action="store_true", help="only the soak: `syncd run` over 200 windows"
    )
    parser.add_argument("--soak-windows", type=int, default=200, help="windows of the soak")
    parser.add_argument(
        "--soak-events", type=int, default=10_000, help="events a window in the soak"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "bench.json")
    options = parser.parse_args(args)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    events = 50_000 if options.quick else options.events
    out_dir = options.out.parent
    cache = out_dir / "cache"
    work = out_dir / "work"
    cache.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    paths = ["fast"] if options.no_reference else ["reference", "fast"]
    print_header()
    if options.soak:
        figures = [bench_soak(work, options.soak_windows, options.soak_events)]
        print_figure(figures[-1])
        return _write(options.out, args, figures)
    figures = []
    if not options.no_transform:
        figures += bench_transforms(cache, work, events, paths, options.format)
    if options.scale > 1:
        figures += bench_transforms(
            cache, work, events * options.scale, ["fast"], options.format, f" x{options.scale}"
        )
    if not options.no_e2e:
        figures.append(bench_e2e(cache, work, events))
        print_figure(figures[-1])
    if options.backfill:
        figures.append(bench_backfill(work, options.backfill_days, 200 if options.quick else 2_000))
        print_figure(figures[-1])
    return _write(options.out, args, figures)


def _write(out: Path, args: list[str], figures: list[Figure]) -> int:
    result = {
        "command": shlex.join([Path(sys.executable).name, "scripts/bench.py", *args]),
        "measured_at": format_timestamp(utcnow()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "figures": [{**asdict(f), "ratio": round(f.ratio, 3)} for f in figures],
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
