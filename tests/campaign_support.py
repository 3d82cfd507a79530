"""The crash campaign: `syncd once` SIGKILLed at random moments over a backfill while the export
API misbehaves, restarted each time, then the warehouse compared with the simulator's events.

One round is one backfill of `days` UTC days of 1-hour windows into a fresh table (a new DuckDB
file, PostgreSQL schema, or BigQuery dataset): up to `kills_per_round` runs of `syncd once`
are killed after a random delay (seeded), then one more run is let finish. Meanwhile a
`FaultInjector` plans one API fault at a time on the simulator at seeded random moments (429
with Retry-After, 5xx, dropped connections, truncated gzip bodies, expired signed URLs, FAILED
export operations); the figures count the faults that fired, from the simulator's record. A
run that exits 1 because a FAILED export held its batch is run again, as cron would; the next
run creates a new export of that window. A campaign repeats rounds until `kills` runs have been
killed. After each round:

- rows lost / duplicated / unexpected: the export table against the simulator's good events,
  as multisets of full rows (SyncdLoadedAt aside);
- sync rows ok: one sync row per window, in order, RowsLoaded equal to the rows present for
  that batch and RowsRejected to the bad rows the simulator served for it;
- rejects ok: the rejects table holds exactly the bad rows the simulator served (malformed
  NDJSON lines, mistyped integers and timestamps), per batch: same positions, same raw text,
  a reason naming the field (or JSON for a malformed line);
- people ok (with `individuals`: ExportIndividuals on, individuals returning across windows):
  the people table equals the simulator's individuals exports, the most recent winning, and
  `<IndividualsTable>_sync` holds one row per window with its row count.

The simulator and the stand-ins run in this process (threads, children) and survive the kills.
Used by `tests/test_campaign.py` (CI scale) and `scripts/campaign.py` (the long run).
"""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import threading
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
    sorted_custom_vars,
    window_key,
    write_config,
)
from people_support import DuplicatePerson, expected_people, stored_people

from syncd.fields import BATCH_ID, LOADED_AT
from syncd.people import people_batch_id
from syncd.simulator import BAD_MALFORMED, Fault, FaultPlan, ServedRow, Simulator, SimulatorConfig
from syncd.timeutil import UTC, format_timestamp

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
WAREHOUSES = ("duckdb", "postgres", "redshift", "bigquery", "snowflake")
#: The backfill starts at a UTC midnight; "now" is frozen 90 minutes after its end, so with
#: ExportDelay 1h every window of the backfill is ready and no later one is.
BACKFILL_START = datetime(2026, 11, 1, tzinfo=UTC)
_EXPORT = "fsexport"
_SYNC = "fssync"
_REJECTS = "fsrejects"
_PEOPLE = "fsindividuals"
_PEOPLE_SYNC = "fsindividuals_sync"
#: With `individuals`, sessions belong to this many individuals (they return across windows).
_RETURNING_INDIVIDUALS = 25


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
    from aws_support import (
        AwsEnv,
        drop_schema,
        new_schema,
        postgres_overrides,
        shared_postgres,
        warehouse_rows,
    )

    pg = shared_postgres()
    schema = new_schema()
    overrides: dict[str, object] = postgres_overrides(pg, schema)
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


def _snowflake_target() -> Target:
    from aws_support import new_bucket, shared_moto
    from snowflake_support import new_schema, snowflake_overrides, snowflake_rows

    moto, schema = shared_moto(), new_schema()
    overrides = snowflake_overrides(schema, new_bucket(moto))

    def read(root: Path, table: str) -> list[dict[str, Any]]:
        import snowflake.connector.errors

        try:
            return snowflake_rows(schema, table)
        except snowflake.connector.errors.ProgrammingError:  # killed before the table existed
            return []

    return Target(overrides, TESTS / "snowflake_support.py", dict(moto.environment()), read)


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
    "snowflake": _snowflake_target,
}


# -- API faults ------------------------------------------------------------------------------

#: The API faults a round injects, as the summary names them (in its order).
FAULT_LABELS: dict[Fault, str] = {
    Fault.RATE_LIMIT: "429",
    Fault.SERVER_ERROR: "5xx",
    Fault.DROP_CONNECTION: "drop",
    Fault.TRUNCATED_GZIP: "truncated",
    Fault.EXPIRED_URL: "expired",
    Fault.FAILED_OPERATION: "failed",
}
#: One cycle of the injector, shuffled anew each time: every kind comes round, 429 and 5xx
#: twice as often (they hit every API call; the others only downloads or export creations).
_FAULT_CYCLE = (
    Fault.RATE_LIMIT,
    Fault.RATE_LIMIT,
    Fault.SERVER_ERROR,
    Fault.SERVER_ERROR,
    Fault.DROP_CONNECTION,
    Fault.TRUNCATED_GZIP,
    Fault.EXPIRED_URL,
    Fault.FAILED_OPERATION,
)
#: Seconds a 429 asks to wait: small, so that rounds stay short.
RETRY_AFTER = 1
#: Planned faults not fired yet beyond which the injector waits (no piling up between runs).
_MAX_PENDING = 2
#: What the simulator puts in a FAILED operation's errorDetails, which syncd's held line quotes.
_FAILED_EXPORT = "simulated export failure"


def format_faults(faults: Mapping[str, int]) -> str:
    """The summary's cell, e.g. "429×12, 5xx×8, drop×5": kinds in order, those at 0 left out."""
    text = ", ".join(f"{k}×{faults[k]}" for k in FAULT_LABELS.values() if faults.get(k))
    return text or "none"


def fired_faults(plan: FaultPlan) -> dict[str, int]:
    """The faults that fired, by summary label (every label, 0 when it never fired), from the
    plan's record of fired faults, not from what was planned."""
    fired = Counter(FAULT_LABELS.get(f.kind, f.kind.value) for f in plan.fired())
    return {**{label: 0 for label in FAULT_LABELS.values()}, **fired}


class FaultInjector:
    """Plans one API fault at a time on a simulator's fault plan, at seeded random moments,
    from a background thread, until stopped. Each fault fires on the next request it applies
    to (see syncd/simulator/faults.py); kinds come in shuffled cycles of `_FAULT_CYCLE`."""

    def __init__(self, plan: FaultPlan, seed: int, min_gap: float, max_gap: float) -> None:
        self._plan = plan
        self._rng = random.Random(seed)
        self._gaps = (min_gap, max_gap)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._inject, name="campaign-faults", daemon=True)

    def __enter__(self) -> FaultInjector:
        if self._gaps[1] > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """No more faults from now on (those planned may still fire)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _inject(self) -> None:
        cycle: list[Fault] = []
        while not self._stop.wait(self._rng.uniform(*self._gaps)):
            if self._plan.pending() >= _MAX_PENDING:
                continue
            if not cycle:
                cycle = self._rng.sample(_FAULT_CYCLE, len(_FAULT_CYCLE))
            kind = cycle.pop()
            self._plan.add(kind, retry_after=RETRY_AFTER if kind is Fault.RATE_LIMIT else None)


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
    #: syncd's own limit on API calls. Its default (10 a second, FullStory's limit) would make
    #: a 2-day backfill wait on itself for about 15 s; the simulator sets no limit, and the
    #: limiter is tested on its own (tests/test_rate_limit.py). A 429 still pauses every caller.
    api_requests_per_second: int = 1000
    run_timeout: float = 300.0
    #: API faults are planned one at a time, each after a gap drawn from [min, max] seconds;
    #: 0 for max_fault_gap injects none.
    min_fault_gap: float = 0.2
    max_fault_gap: float = 0.8
    #: Runs again after the kills, when the last one ended held by a FAILED export.
    held_reruns: int = 3
    #: ExportIndividuals on: the people batches are killed and checked too.
    individuals: bool = False


@dataclass
class RoundResult:
    """What one backfill's check found."""

    kills: int
    rows_expected: int
    rows_lost: int
    rows_duplicated: int
    rows_unexpected: int
    sync_rows_ok: bool
    rejects_ok: bool
    final_exit: int
    problems: list[str] = field(default_factory=list)
    #: Faults that fired, by summary label ("429", "5xx", ...), from the simulator's record.
    faults: dict[str, int] = field(default_factory=dict)
    #: Bad rows the simulator served, by kind (malformed, mistyped_int, mistyped_timestamp).
    bad_rows: dict[str, int] = field(default_factory=dict)
    #: Runs that exited 1 because a FAILED export held their batch (each run again).
    held_runs: int = 0
    #: The simulator's seed: the same seed serves the same events and bad rows again.
    simulator_seed: int = 0
    #: The people table and its sync rows matched (True when not exported).
    people_ok: bool = True


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
    def faults(self) -> Counter[str]:
        """Faults that fired over every round, by summary label."""
        return sum((Counter(r.faults) for r in self.rounds), Counter())

    @property
    def bad_rows(self) -> Counter[str]:
        """Bad rows served over every round, by kind."""
        return sum((Counter(r.bad_rows) for r in self.rounds), Counter())

    @property
    def ok(self) -> bool:
        return all(
            not (r.rows_lost or r.rows_duplicated or r.rows_unexpected or r.problems)
            and r.sync_rows_ok
            and r.rejects_ok
            and r.people_ok
            and r.final_exit == 0
            for r in self.rounds
        )

    def summary(self) -> dict[str, Any]:
        faults, bad = self.faults, self.bad_rows
        return {
            "warehouse": self.warehouse,
            "rounds": len(self.rounds),
            "kills_survived": self.kills,
            "faults_injected": sum(faults.values()),
            "faults_by_kind": {label: faults[label] for label in FAULT_LABELS.values()},
            "faults": format_faults(faults),
            "held_runs": sum(r.held_runs for r in self.rounds),
            "bad_rows_tried": sum(bad.values()),
            "bad_rows_by_kind": dict(sorted(bad.items())),
            "rows_expected": sum(r.rows_expected for r in self.rounds),
            "rows_lost": sum(r.rows_lost for r in self.rounds),
            "rows_duplicated": sum(r.rows_duplicated for r in self.rounds),
            "rows_unexpected": sum(r.rows_unexpected for r in self.rounds),
            "sync_rows_ok": all(r.sync_rows_ok for r in self.rounds),
            "rejects_ok": all(r.rejects_ok for r in self.rounds),
            "people_ok": all(r.people_ok for r in self.rounds),
            "wall_seconds": round(self.wall_seconds, 1),
            "ok": self.ok,
        }

    def as_json(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "kill_delays": [round(d, 3) for d in self.kill_delays],
            "round_details": [asdict(r) for r in self.rounds],
        }


def child_env(target: Target, now: datetime) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, **target.env, NOW_ENV: format_timestamp(now), "PYTHONPATH": path}


def run_once(
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
    """One backfill into a fresh table under API faults, killed up to `max_kills` times, then
    let finish and checked."""
    end = BACKFILL_START + timedelta(days=settings.days)
    now = end + timedelta(minutes=90)
    windows = hour_windows(BACKFILL_START, end)
    config = SimulatorConfig(
        api_key=API_KEY,
        events_per_hour=settings.events_per_hour,
        bad_row_rate=settings.bad_row_rate,
        seed=rng.randrange(1, 2**31),
        returning_individuals=_RETURNING_INDIVIDUALS if settings.individuals else 0,
    )
    fault_seed = rng.randrange(1, 2**31)
    target = TARGETS[settings.warehouse]()
    try:
        with Simulator(config) as sim:
            overrides = {
                **target.overrides,
                "Lookahead": settings.lookahead,
                "ApiRequestsPerSecond": settings.api_requests_per_second,
                "ExportIndividuals": settings.individuals,
            }
            files = write_config(directory, sim, BACKFILL_START, overrides)
            env = child_env(target, now)
            kills, held, problems = 0, 0, []
            gaps = (settings.min_fault_gap, settings.max_fault_gap)
            with FaultInjector(sim.faults, fault_seed, *gaps):
                while kills < max_kills:
                    delay = rng.uniform(settings.min_delay, settings.max_delay)
                    code, tail = run_once(target, files.config, env, delay, settings.run_timeout)
                    if code == -signal.SIGKILL:
                        kills += 1
                        delays.append(delay)
                    elif code == 0:
                        break  # the backfill finished before the kill: the round is complete
                    elif held_by_failed_export(code, tail):
                        held += 1  # run again: the next run creates a new export
                    else:
                        problems.append(f"a run exited {code}: {tail}")
                        break
            # No more faults planned; those already planned may still fire in the last runs.
            final, tail = run_once(target, files.config, env, None, settings.run_timeout)
            for _ in range(settings.held_reruns):
                if not held_by_failed_export(final, tail):
                    break
                held += 1
                final, tail = run_once(target, files.config, env, None, settings.run_timeout)
            if final != 0:
                problems.append(f"the final run exited {final}: {tail}")
            result = check(sim, windows, directory, target, kills, final, problems)
            if settings.individuals:
                result.people_ok = people_match(sim, windows, directory, target, result.problems)
            result.faults = fired_faults(sim.faults)
            result.held_runs = held
            result.simulator_seed = config.seed
            return result
    finally:
        target.cleanup()


def held_by_failed_export(code: int, log: str) -> bool:
    """True when `syncd once` exited 1 because a FAILED export operation held its batch (or
    failed its people batch, every attempt)."""
    held = [
        line for line in log.splitlines() if " is held: " in line or "a people batch failed" in line
    ]
    return code == 1 and bool(held) and _FAILED_EXPORT in held[-1]


def people_match(
    sim: Simulator,
    windows: Sequence[tuple[datetime, datetime]],
    root: Path,
    target: Target,
    problems: list[str],
) -> bool:
    """The people table equals the simulator's individuals (the most recent winning), and its
    sync table holds one row per window with that window's individuals."""
    try:
        stored = stored_people(target.read(root, _PEOPLE))
    except DuplicatePerson as exc:
        problems.append(f"people rows duplicated: {exc}")
        return False
    expected = expected_people(sim, windows)
    wrong = sorted(i for i in set(stored) | set(expected) if stored.get(i) != expected.get(i))
    if wrong:
        problems.append(f"people rows differ for {len(wrong)} individuals: {wrong[:3]}")
    sync = sorted(
        (
            str(r.get("SyncdBatchId", r.get("syncdbatchid"))),
            r.get("RowsLoaded", r.get("rowsloaded")),
        )
        for r in target.read(root, _PEOPLE_SYNC)
    )
    want = sorted((people_batch_id(*w), len(sim.expected_individuals(*w))) for w in windows)
    if sync != want:
        problems.append(f"people sync rows differ: {sorted(set(sync) ^ set(want))[:4]}")
    return not wrong and sync == want


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
        expected, actual = sorted_custom_vars(expected), sorted_custom_vars(actual)
    names = [n for n in expected[0] if n != LOADED_AT.name]
    have = Counter(_table_row(r, names) for r in actual)
    want = Counter(_table_row(r, names) for r in expected)
    lost = sum((want - have).values())
    surplus = have - want
    duplicated = sum(n for row, n in surplus.items() if row in want)
    unexpected = sum(n for row, n in surplus.items() if row not in want)
    if any(r.get(LOADED_AT.name) is None for r in actual):
        problems.append(f"rows without {LOADED_AT.name}")

    bad = {window_key(*w).id: bad_rows(sim, w) for w in windows}
    loaded = Counter(str(r[BATCH_ID.name]) for r in actual)
    sync = sorted(target.read(root, _SYNC), key=lambda r: str(r["SyncdBatchId"]))
    got_sync = [(str(r["SyncdBatchId"]), r["RowsLoaded"], r["RowsRejected"]) for r in sync]
    want_sync = sorted((i, loaded[i], len(bad[i])) for i in bad)
    sync_ok = got_sync == want_sync
    if not sync_ok:
        problems.append(f"sync rows differ: {sorted(set(got_sync) ^ set(want_sync))[:6]}")
    rejects_ok = rejects_match(target.read(root, _REJECTS), bad, problems)
    kinds = Counter(
        row.bad.partition(":")[0] for rows in bad.values() for _, row in rows if row.bad
    )
    return RoundResult(
        kills=kills,
        rows_expected=len(expected),
        rows_lost=lost,
        rows_duplicated=duplicated,
        rows_unexpected=unexpected,
        sync_rows_ok=sync_ok,
        rejects_ok=rejects_ok,
        final_exit=final_exit,
        problems=problems,
        bad_rows=dict(sorted(kinds.items())),
    )


def rejects_match(
    rejects: list[dict[str, Any]],
    bad: Mapping[str, list[tuple[int, ServedRow]]],
    problems: list[str],
) -> bool:
    """The rejects table holds each bad row served once: its batch, position and raw text, with
    a reason naming the field (JSON for a malformed line); nothing else."""
    got = Counter((str(r["SyncdBatchId"]), r["Position"], r["Raw"]) for r in rejects)
    want = Counter(
        (batch_id, position, row.raw.decode())
        for batch_id, rows in bad.items()
        for position, row in rows
    )
    reasons = {(str(r["SyncdBatchId"]), r["Position"]): str(r["Reason"]) for r in rejects}
    names = {(i, position): _reason_names(row) for i, rows in bad.items() for position, row in rows}
    wrong_reason = [
        (key, reasons[key])
        for key, name in names.items()
        if key in reasons and name not in reasons[key]
    ]
    if got != want:
        problems.append(
            f"rejects differ: missing {sorted(want - got)[:3]}, surplus {sorted(got - want)[:3]}"
        )
    if wrong_reason:
        problems.append(f"rejects whose reason does not name the field: {wrong_reason[:3]}")
    return got == want and not wrong_reason


def _reason_names(row: ServedRow) -> str:
    """What a reject's reason must name: the mistyped field, or JSON for a malformed line."""
    return "JSON" if row.bad == BAD_MALFORMED else str(row.bad).partition(":")[2]


def bad_rows(sim: Simulator, window: tuple[datetime, datetime]) -> list[tuple[int, ServedRow]]:
    """The bad rows an export of `window` serves, with their positions in the body."""
    served = sim.served_rows(*window)
    return [(position, row) for position, row in enumerate(served) if row.bad is not None]


# -- a campaign ------------------------------------------------------------------------------


def run_campaign(
    settings: CampaignSettings, directory: Path, progress: Callable[[str], None] | None = None
) -> CampaignResult:
    """Rounds until `settings.kills` runs were killed (at least one round).

    Each round draws its simulator's seed, its faults' seed and its runs' kill delays from a
    generator seeded by (seed, warehouse, round number), so a seed gives the same events, the
    same sequence of faults and of delays again (which of them land depends on timing)."""
    started = time.monotonic()
    rounds: list[RoundResult] = []
    delays: list[float] = []
    while not rounds or sum(r.kills for r in rounds) < settings.kills:
        remaining = settings.kills - sum(r.kills for r in rounds)
        limit = max(0, min(settings.kills_per_round, remaining))
        number = len(rounds) + 1
        rng = random.Random(f"syncd-campaign/{settings.seed}/{settings.warehouse}/{number}")
        result = run_round(settings, directory / f"round-{number}", rng, delays, limit)
        rounds.append(result)
        if progress:
            progress(
                f"{settings.warehouse} round {len(rounds)}: {result.kills} kills, "
                f"faults {format_faults(result.faults)}, held {result.held_runs}, "
                f"bad rows {sum(result.bad_rows.values())}, lost {result.rows_lost}, "
                f"duplicated {result.rows_duplicated}, sync ok {result.sync_rows_ok}, "
                f"rejects ok {result.rejects_ok}, people ok {result.people_ok}, "
                f"problems {len(result.problems)}"
            )
        last = rounds[-1]
        if not (last.kills or last.held_runs) and last.final_exit == 0 and len(rounds) > 3:
            break  # runs finish before any kill: more rounds would not add kills
        if len(rounds) >= 2 * math.ceil(settings.kills / max(1, settings.kills_per_round)) + 4:
            break  # runs keep ending (held) before their kill: twice the rounds wanted is enough
    return CampaignResult(settings.warehouse, rounds, time.monotonic() - started, delays)


SUMMARY_COLUMNS = (
    ("warehouse", "warehouse"),
    ("kills_survived", "kills"),
    ("faults", "faults injected (fired)"),
    ("bad_rows_tried", "bad rows tried"),
    ("rows_expected", "rows expected"),
    ("rows_lost", "lost"),
    ("rows_duplicated", "duplicated"),
    ("sync_rows_ok", "sync rows ok"),
    ("rejects_ok", "rejects ok"),
    ("people_ok", "people ok"),
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
