"""`syncd demo`: the main job on the embedded default, with no account and no network.

Starts the built-in export-API simulator on 127.0.0.1, writes a config for it next to the data,
syncs a few simulated days into the default provider's warehouse (the embedded DuckDB; its
plugin declares the demo's section and summary lines) through the real pipeline, and prints a
summary that says how to go on: `syncd demo --serve` keeps the simulator up and runs the daemon on the
written config (`serve`, given by the CLI, is `syncd run`), or the same by hand with
`syncd simulate` on the port the config names (same seed and volume: the same events) and
`syncd run -c demo-data/demo.toml`.
"""

from __future__ import annotations

import shlex
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from syncd.app import build_app
from syncd.config import Settings, load_settings
from syncd.errors import SyncdError
from syncd.pipeline import RunSummary
from syncd.planner import DAY
from syncd.simulator import Simulator, SimulatorConfig
from syncd.timeutil import format_timestamp, utcnow
from warehouses.registry import DEFAULT_PROVIDER, destination, provider

DEMO_API_KEY = "demo-key"
DEFAULT_DIR = "demo-data"
DEFAULT_EVENTS_PER_HOUR = 2000
DEMO_SEED = 7  # `syncd simulate --seed 7` serves the same events as the demo's simulator


@dataclass(frozen=True)
class _DemoPlugin:
    config: Callable[[Path], str]  # the warehouse's config section, under the demo's folder
    summary: Callable[[Settings], tuple[str, str]]  # (where the data is, how to look at it)


def demo_config(directory: Path, api_url: str, legacy_url: str, start: str) -> str:
    """A syncd config that points at the simulator and keeps everything under `directory`, for
    the default provider (its plugin's `demo_config` keeps the warehouse there too)."""
    d = directory.resolve()
    return f"""# Written by `syncd demo`: the simulator's address changes on every run.
FsApiToken = "{DEMO_API_KEY}"
ApiURL = "{api_url}"
LegacyApiURL = "{legacy_url}"
Provider = "{DEFAULT_PROVIDER}"
StartTime = "{start}"
ExportDuration = "1h"
ExportDelay = "1h"
PollInterval = "100ms"
Backoff = "1s"
TmpDir = "{d / "tmp"}"
StateDir = "{d / "state"}"

[local]
SaveDir = "{d / "staged"}"

{_demo_plugin().config(d)}"""


def _demo_plugin() -> _DemoPlugin:
    plugin = provider(DEFAULT_PROVIDER)
    if plugin.demo_config is None or plugin.demo_summary is None:
        raise SyncdError(f"Provider {DEFAULT_PROVIDER!r} declares no demo")
    return _DemoPlugin(plugin.demo_config, plugin.demo_summary)


def run_demo(
    directory: Path,
    *,
    days: int = 3,
    events_per_hour: int = DEFAULT_EVENTS_PER_HOUR,
    port: int = 0,
    serve: Callable[[Path], int] | None = None,
) -> int:
    """Sync `days` simulated days and print what happened. Returns the exit code.

    With `serve` (the daemon, given the config's path), the simulator stays up after the
    summary while `serve` runs, and its exit code is the demo's.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = utcnow()
    start = (now - days * DAY).replace(hour=0, minute=0, second=0, microsecond=0)
    sim_config = SimulatorConfig(
        api_key=DEMO_API_KEY, events_per_hour=events_per_hour, seed=DEMO_SEED
    )
    with Simulator(sim_config, "127.0.0.1", port) as sim:
        config_path = directory / "demo.toml"
        config_path.write_text(
            demo_config(directory, sim.url, sim.legacy_url, format_timestamp(start))
        )
        settings = load_settings(config_path).settings
        print(
            f"syncd demo: simulator on {sim.url}; syncing {format_timestamp(start)} "
            f"to {format_timestamp(now - timedelta(hours=1))} into {destination(settings)}",
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
        again = "syncd demo --serve"
        if directory != Path(DEFAULT_DIR):
            again += f" --dir {shlex.quote(str(directory))}"
        if events_per_hour != DEFAULT_EVENTS_PER_HOUR:
            again += f" --events-per-hour {events_per_hour}"
        _print_summary(summary, seconds, settings, config_path, again, sim.port, events_per_hour)
        if summary.held is not None:
            print(
                f"a batch is held: {summary.held.batch_id}: {summary.held.error}", file=sys.stderr
            )
            return 1
        if serve is None:
            return 0
        print(
            f"serving: the simulator on {sim.url} and the daemon (`syncd run -c {config_path}`), "
            "which loads each hour as it becomes ready; Ctrl-C stops both",
            file=sys.stderr,
        )
        return serve(config_path)


def _print_summary(
    summary: RunSummary,
    seconds: float,
    settings: Settings,
    config_path: Path,
    again: str,
    port: int,
    events_per_hour: int,
) -> None:
    where, look = _demo_plugin().summary(settings)
    rate = summary.rows / seconds if seconds else 0.0
    print(
        f"""
syncd demo finished
  batches committed  {summary.batches} (1-hour windows)
  rows loaded        {summary.rows:,}
  rows quarantined   {summary.rejected:,}
  time               {seconds:.1f} s ({rate:,.0f} rows/s)
  {where}
  config             {config_path}

{look}
Or look at the sync state:
  .venv/bin/syncd status -c {shlex.quote(str(config_path))}

Go on syncing, each new hour as it becomes ready (Ctrl-C stops):
  .venv/bin/{again}
or by hand, in two terminals (the simulator on the port the config names, same events):
  .venv/bin/syncd simulate --port {port} --api-key {DEMO_API_KEY} --events-per-hour {events_per_hour} --seed {DEMO_SEED}
  .venv/bin/syncd run -c {shlex.quote(str(config_path))}
""",
        flush=True,
    )
