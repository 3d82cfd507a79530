"""`syncd demo`: the main job on the embedded default, with no account and no network.

Starts the built-in export-API simulator on 127.0.0.1, writes a config for it next to the data,
syncs a few simulated days into DuckDB through the real pipeline, and prints a summary.
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

from syncd.app import build_app
from syncd.config import load_settings
from syncd.planner import DAY
from syncd.simulator import Simulator, SimulatorConfig
from syncd.timeutil import format_timestamp, utcnow
from warehouses.base import quote_identifier

DEMO_API_KEY = "demo-key"


def demo_config(directory: Path, api_url: str, legacy_url: str, start: str) -> str:
    """A syncd config that points at the simulator and keeps everything under `directory`."""
    d = directory.resolve()
    return f"""# Written by `syncd demo`: the simulator's address changes on every run.
FsApiToken = "{DEMO_API_KEY}"
ApiURL = "{api_url}"
LegacyApiURL = "{legacy_url}"
Provider = "duckdb"
StartTime = "{start}"
ExportDuration = "1h"
ExportDelay = "1h"
PollInterval = "100ms"
Backoff = "1s"
TmpDir = "{d / "tmp"}"
StateDir = "{d / "state"}"

[local]
SaveDir = "{d / "staged"}"

[duckdb]
Path = "{d / "syncd.duckdb"}"
# The demo loads days back to back with nobody querying yet: no pause between commits (the
# default, 1s, keeps room for readers beside a daemon that is catching up).
ReaderWindow = "0s"
"""


def run_demo(directory: Path, *, days: int = 3, events_per_hour: int = 2000) -> int:
    """Sync `days` simulated days and print what happened. Returns the exit code."""
    directory.mkdir(parents=True, exist_ok=True)
    now = utcnow()
    start = (now - days * DAY).replace(hour=0, minute=0, second=0, microsecond=0)
    sim_config = SimulatorConfig(api_key=DEMO_API_KEY, events_per_hour=events_per_hour, seed=7)
    with Simulator(sim_config) as sim:
        config_path = directory / "demo.toml"
        config_path.write_text(
            demo_config(directory, sim.url, sim.legacy_url, format_timestamp(start))
        )
        settings = load_settings(config_path).settings
        print(
            f"syncd demo: simulator on {sim.url}; syncing {format_timestamp(start)} "
            f"to {format_timestamp(now - timedelta(hours=1))} into {settings.duckdb.path}",
            file=sys.stderr,
        )
        stop = threading.Event()
        app = build_app(settings, stop=stop)
        started = time.monotonic()
        try:
            app.pipeline.start()
            summary = app.pipeline.run(until_caught_up=True)
        finally:
            app.close()
        seconds = time.monotonic() - started
    db = settings.duckdb
    # Shown to the user, never executed here; the table name is a validated identifier.
    query = (
        "SELECT EventType, count(*) AS n FROM "  # noqa: S608
        f"{quote_identifier(db.export_table)} GROUP BY 1 ORDER BY n DESC"
    ).replace('"', '\\"')
    rate = summary.rows / seconds if seconds else 0.0
    print(
        f"""
syncd demo finished
  batches committed  {summary.batches} (1-hour windows)
  rows loaded        {summary.rows:,}
  rows quarantined   {summary.rejected:,}
  time               {seconds:.1f} s ({rate:,.0f} rows/s)
  DuckDB file        {db.path}
  config             {config_path}

Try a query:
  .venv/bin/python -c "import duckdb; print(duckdb.connect('{db.path}', read_only=True).sql('{query}'))"
Or look at the sync state:
  .venv/bin/syncd status -c {config_path}
"""
    )
    if summary.held is not None:
        print(f"a batch is held: {summary.held.batch_id}: {summary.held.error}", file=sys.stderr)
        return 1
    return 0
