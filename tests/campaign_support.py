"""The crash campaign: `syncd once` SIGKILLed at random moments over a backfill, restarted each
time, then the warehouse compared with the simulator's events.

One round is one backfill of `days` UTC days of 1-hour windows into a fresh table (a new DuckDB
file, PostgreSQL schema, or BigQuery dataset): up to `kills_per_round` runs of `syncd once`
are killed after a random delay (seeded), then one more run is let finish. A campaign repeats
rounds until `kills` runs have been killed. After each round:

- rows lost / duplicated / unexpected: the export table against the simulator's good events,
  as multisets of full rows (SyncdLoadedAt aside);
- sync rows ok: one sync row per window, in order, RowsLoaded equal to the rows present for
  that batch and RowsRejected to the bad rows the simulator served for it;
- rejects ok: the rejects table holds exactly the simulator's bad rows, per batch.

The simulator and the stand-ins run in this process (threads, children) and survive the kills.
Used by `tests/test_campaign.py` (CI scale) and `scripts/campaign.py` (the long run).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from e2e_support import (
    API_KEY,
    NOW_ENV,
    _table_row,
    expected_segment_rows,
    hour_windows,
    read_table,
    window_key,
    write_config,
)

from syncd.fields import BATCH_ID, CUSTOM_VARS, LOADED_AT, requested_fields
from syncd.simulator import Simulator, SimulatorConfig
from syncd.timeutil import UTC, format_timestamp

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
WAREHOUSES = ("duckdb", "postgres", "redshift", "bigquery")
#: The backfill starts at a UTC midnight; "now" is frozen 90 minutes after its end, so with
#: ExportDelay 1h every window of the backfill is ready and no later one is.
BACKFILL_START = datetime(2026, 11, 1, tzinfo=UTC)
_EXPORT = "fsexport"
_SYNC = "fssync"
_REJECTS = "fsrejects"


# -- the warehouses --------------------------------------------------------------------------


@dataclass
class Target:
    """One warehouse behind syncd for one round: config keys, how to run and read it back."""

    overrides: dict[str, object]
    runner: Path
    env: dict[str, str]
    read: Callable[[Path, str], list[dict[str, Any]]]
    cleanup: Callable[[], None] = lambda: None
    #: PostgreSQL's JSONB keeps object keys in its own order, not the order they came in.
    json_keys_unordered: bool = False


def _duckdb_target() -> Target:
    return Target(
        {}, TESTS / "crash_runner.py", {}, lambda root, t: read_table(root / "syncd.duckdb", t)
    )


def _postgres_target() -> Target:
    from aws_support import AwsEnv, drop_schema, new_schema, shared_postgres, warehouse_rows

    pg = shared_postgres()
    schema = new_schema()
    overrides: dict[str, object] = {
        "Provider": "postgres",
        "postgres.Host": pg.host,
        "postgres.Port": pg.port,
        "postgres.User": pg.user,
        "postgres.DB": pg.database,
        "postgres.DatabaseSchema": schema,
        "postgres.SSLMode": "disable",
    }
    env = AwsEnv(None, pg, "", schema)  # type: ignore[arg-type] # reads need no S3

    def read(root: Path, table: str) -> list[dict[str, Any]]:
        return _rows_or_empty(lambda: warehouse_rows(env, table))

    return Target(overrides, TESTS / "crash_runner.py", {}, read, lambda: drop_schema(schema), True)


def _redshift_target() -> Target:
    from aws_support import (
        AwsEnv,
        aws_overrides,
        drop_schema,
        new_bucket,
        new_schema,
        shared_moto,
        shared_postgres,
        shared_proxy,
        warehouse_rows,
    )

    moto, pg = shared_moto(), shared_postgres()
    shared_proxy()
    env = AwsEnv(moto, pg, new_bucket(moto), new_schema())

    def read(root: Path, table: str) -> list[dict[str, Any]]:
        return _rows_or_empty(lambda: warehouse_rows(env, table))

    return Target(
        aws_overrides(env),
        TESTS / "aws_support.py",
        dict(moto.environment()),
        read,
        lambda: drop_schema(env.schema),
    )


def _bigquery_target() -> Target:
    import gcp_support

    bucket, dataset = gcp_support.new_bucket(), gcp_support.new_dataset()
    overrides: dict[str, object] = {
        "Provider": "gcp",
        "gcs.Bucket": bucket,
        "gcs.EndpointURL": gcp_support.shared_gcs().endpoint,
        "bigquery.Project": gcp_support.PROJECT,
        "bigquery.Dataset": dataset,
        "bigquery.EndpointURL": gcp_support.shared_bigquery().endpoint,
    }

    def read(root: Path, table: str) -> list[dict[str, Any]]:
        if table not in gcp_support.bq_table_names(dataset):
            return []
        return gcp_support.bq_rows(dataset, table)

    return Target(
        overrides,
        TESTS / "gcp_crash_runner.py",
        {},
        read,
        lambda: gcp_support.drop_dataset(dataset),
    )


def _rows_or_empty(read: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """A table's rows; none when syncd was killed before it created the table."""
    import psycopg

    try:
        return read()
    except psycopg.errors.UndefinedTable:
        return []


TARGETS: dict[str, Callable[[], Target]] = {
    "duckdb": _duckdb_target,
    "postgres": _postgres_target,
    "redshift": _redshift_target,
    "bigquery": _bigquery_target,
}


# -- one round -------------------------------------------------------------------------------


@dataclass
class CampaignSettings:
    """How hard one warehouse's campaign pushes."""

    warehouse: str
    kills: int = 3
    kills_per_round: int = 3
    days: int = 2
    events_per_hour: int = 20
    bad_row_rate: float = 0.05
    #: Kill delays are drawn from [min_delay, max_delay] seconds after the start of a run.
    min_delay: float = 0.3
    max_delay: float = 4.0
    seed: int = 1
    lookahead: int = 3
    run_timeout: float = 300.0


@dataclass
class RoundResult:
    """What one backfill's check found."""

    kills: int
    rows_expected: int
    rows_lost: int
    rows_duplicated: int
    rows_unexpected: int
    sync_rows_ok: bool
    rejects_expected: int
    rejects_ok: bool
    final_exit: int
    problems: list[str] = field(default_factory=list)


@dataclass
class CampaignResult:
    """One warehouse's campaign, summed over its rounds."""

    warehouse: str
    rounds: list[RoundResult]
    wall_seconds: float
    kill_delays: list[float]

    @property
    def kills(self) -> int:
        return sum(r.kills for r in self.rounds)

    @property
    def ok(self) -> bool:
        return all(
            not (r.rows_lost or r.rows_duplicated or r.rows_unexpected)
            and r.sync_rows_ok
            and r.rejects_ok
            and r.final_exit == 0
            for r in self.rounds
        )

    def summary(self) -> dict[str, Any]:
        return {
            "warehouse": self.warehouse,
            "rounds": len(self.rounds),
            "kills_survived": self.kills,
            "rows_expected": sum(r.rows_expected for r in self.rounds),
            "rows_lost": sum(r.rows_lost for r in self.rounds),
            "rows_duplicated": sum(r.rows_duplicated for r in self.rounds),
            "rows_unexpected": sum(r.rows_unexpected for r in self.rounds),
            "sync_rows_ok": all(r.sync_rows_ok for r in self.rounds),
            "rejects_expected": sum(r.rejects_expected for r in self.rounds),
            "rejects_ok": all(r.rejects_ok for r in self.rounds),
            "wall_seconds": round(self.wall_seconds, 1),
            "ok": self.ok,
        }

    def as_json(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "kill_delays": [round(d, 3) for d in self.kill_delays],
            "round_details": [asdict(r) for r in self.rounds],
        }


def _child_env(target: Target, now: datetime) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, **target.env, NOW_ENV: format_timestamp(now), "PYTHONPATH": path}


def _run_once(
    target: Target, config: Path, env: Mapping[str, str], kill_after: float | None, timeout: float
) -> tuple[int, str]:
    """`syncd once` in a child; SIGKILLed after `kill_after` seconds unless it ends first.
    Returns its exit code (negative for a signal) and the tail of its stderr."""
    log = config.parent / "child.log"
    with log.open("w") as out:
        child = subprocess.Popen(
            [sys.executable, str(target.runner), "none", "once", "-c", str(config)],
            env=dict(env),
            stdout=out,
            stderr=out,
        )
        try:
            child.wait(timeout=timeout if kill_after is None else kill_after)
        except subprocess.TimeoutExpired:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
    return child.returncode, log.read_text(errors="replace")[-3000:]


def run_round(
    settings: CampaignSettings,
    directory: Path,
    rng: random.Random,
    delays: list[float],
    max_kills: int,
) -> RoundResult:
    """One backfill into a fresh table, killed up to `max_kills` times, then checked."""
    end = BACKFILL_START + timedelta(days=settings.days)
    now = end + timedelta(minutes=90)
    windows = hour_windows(BACKFILL_START, end)
    config = SimulatorConfig(
        api_key=API_KEY,
        events_per_hour=settings.events_per_hour,
        bad_row_rate=settings.bad_row_rate,
        seed=rng.randrange(1, 2**31),
    )
    target = TARGETS[settings.warehouse]()
    try:
        with Simulator(config) as sim:
            overrides = {**target.overrides, "Lookahead": settings.lookahead}
            files = write_config(directory, sim, BACKFILL_START, overrides)
            env = _child_env(target, now)
            kills, problems = 0, []
            while kills < max_kills:
                delay = rng.uniform(settings.min_delay, settings.max_delay)
                code, tail = _run_once(target, files.config, env, delay, settings.run_timeout)
                if code == -signal.SIGKILL:
                    kills += 1
                    delays.append(delay)
                elif code == 0:
                    break  # the backfill finished before the kill: the round is complete
                else:
                    problems.append(f"a run exited {code}: {tail}")
            final, tail = _run_once(target, files.config, env, None, settings.run_timeout)
            if final != 0:
                problems.append(f"the final run exited {final}: {tail}")
            return check(sim, windows, directory, target, kills, final, problems)
    finally:
        target.cleanup()


def check(
    sim: Simulator,
    windows: Sequence[tuple[datetime, datetime]],
    root: Path,
    target: Target,
    kills: int,
    final_exit: int,
    problems: list[str],
) -> RoundResult:
    """Compare the warehouse with the simulator's events: rows, sync rows, rejects."""
    expected = expected_segment_rows(sim, windows)
    actual = target.read(root, _EXPORT)
    if target.json_keys_unordered:
        expected, actual = _sort_custom_vars(expected), _sort_custom_vars(actual)
    names = [n for n in expected[0] if n != LOADED_AT.name]
    have = Counter(_table_row(r, names) for r in actual)
    want = Counter(_table_row(r, names) for r in expected)
    lost = sum((want - have).values())
    surplus = have - want
    duplicated = sum(n for row, n in surplus.items() if row in want)
    unexpected = sum(n for row, n in surplus.items() if row not in want)
    if any(r.get(LOADED_AT.name) is None for r in actual):
        problems.append(f"rows without {LOADED_AT.name}")

    bad = {window_key(*w).id: _bad_rows(sim, w) for w in windows}
    loaded = Counter(str(r[BATCH_ID.name]) for r in actual)
    sync = sorted(target.read(root, _SYNC), key=lambda r: str(r["SyncdBatchId"]))
    got_sync = [(str(r["SyncdBatchId"]), r["RowsLoaded"], r["RowsRejected"]) for r in sync]
    want_sync = sorted((i, loaded[i], bad[i]) for i in bad)
    sync_ok = got_sync == want_sync
    if not sync_ok:
        problems.append(f"sync rows differ: {sorted(set(got_sync) ^ set(want_sync))[:6]}")
    rejects = Counter(str(r["SyncdBatchId"]) for r in target.read(root, _REJECTS))
    rejects_ok = rejects == Counter({i: n for i, n in bad.items() if n})
    if not rejects_ok:
        problems.append(f"rejects per batch {dict(rejects)} != {bad}")
    return RoundResult(
        kills=kills,
        rows_expected=len(expected),
        rows_lost=lost,
        rows_duplicated=duplicated,
        rows_unexpected=unexpected,
        sync_rows_ok=sync_ok,
        rejects_expected=sum(bad.values()),
        rejects_ok=rejects_ok,
        final_exit=final_exit,
        problems=problems,
    )


def _sort_custom_vars(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, CUSTOM_VARS.name: _sorted_keys(r[CUSTOM_VARS.name])} for r in rows]


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("{"):
        value = json.loads(value)
    if isinstance(value, dict):
        return {k: _sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


def _bad_rows(sim: Simulator, window: tuple[datetime, datetime]) -> int:
    served = sim.served_rows(*window, fields=requested_fields())
    return sum(1 for row in served if row.bad is not None)


# -- a campaign ------------------------------------------------------------------------------


def run_campaign(
    settings: CampaignSettings, directory: Path, progress: Callable[[str], None] | None = None
) -> CampaignResult:
    """Rounds until `settings.kills` runs were killed (at least one round)."""
    rng = random.Random(f"syncd-campaign/{settings.seed}/{settings.warehouse}")
    started = time.monotonic()
    rounds: list[RoundResult] = []
    delays: list[float] = []
    while not rounds or sum(r.kills for r in rounds) < settings.kills:
        remaining = settings.kills - sum(r.kills for r in rounds)
        limit = max(0, min(settings.kills_per_round, remaining))
        result = run_round(settings, directory / f"round-{len(rounds) + 1}", rng, delays, limit)
        rounds.append(result)
        if progress:
            progress(
                f"{settings.warehouse} round {len(rounds)}: {result.kills} kills, "
                f"lost {result.rows_lost}, duplicated {result.rows_duplicated}, "
                f"sync ok {result.sync_rows_ok}, rejects ok {result.rejects_ok}"
            )
        if not rounds[-1].kills and rounds[-1].final_exit == 0 and len(rounds) > 3:
            break  # runs finish before any kill: more rounds would not add kills
    return CampaignResult(settings.warehouse, rounds, time.monotonic() - started, delays)


SUMMARY_COLUMNS = (
    ("warehouse", "warehouse"),
    ("kills_survived", "kills survived"),
    ("rounds", "backfills"),
    ("rows_expected", "rows expected"),
    ("rows_lost", "rows lost"),
    ("rows_duplicated", "rows duplicated"),
    ("rows_unexpected", "rows unexpected"),
    ("sync_rows_ok", "sync rows ok"),
    ("rejects_expected", "rejects expected"),
    ("rejects_ok", "rejects ok"),
    ("wall_seconds", "wall time (s)"),
)


def summary_table(results: Sequence[CampaignResult]) -> str:
    """A Markdown table: one line per warehouse."""
    lines = [
        "| " + " | ".join(title for _, title in SUMMARY_COLUMNS) + " |",
        "|" + "---|" * len(SUMMARY_COLUMNS),
    ]
    for result in results:
        summary = result.summary()
        lines.append("| " + " | ".join(str(summary[k]) for k, _ in SUMMARY_COLUMNS) + " |")
    return "\n".join(lines)
