"""Helpers of the end-to-end tests: a syncd config for a running simulator, the CLI run in
process with a frozen clock, the DuckDB tables read back, and what they must hold.

The expectation is built here from the conversion rules (see `syncd/transform/convert.py`),
in plain code and without calling `syncd.transform`, so that a transform bug shows up as a
difference between the table and `sim.expected_events(...)` turned into rows.
"""

from __future__ import annotations

import json
import math
import re
import signal
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import structlog

import syncd.app
from syncd import cli
from syncd.batch import BatchKey
from syncd.fields import (
    BATCH_ID,
    CUSTOM_PREFIXES,
    CUSTOM_VARS,
    LOADED_AT,
    Column,
    FieldType,
    dropped_fields,
    export_columns,
)
from syncd.simulator import Bundle, Simulator, SimulatorConfig
from syncd.sources.ratelimit import RateLimiter
from syncd.timeutil import UTC, format_timestamp, parse_timestamp
from warehouses.base import quote_identifier

HOUR = timedelta(hours=1)
API_KEY = "e2e-key"
#: The frozen "now" of in-process runs: with 1-hour windows and ExportDelay 1h, windows up to
#: 02:00 are ready, so a start the evening before spans two UTC days.
NOW = datetime(2026, 11, 2, 3, 30, tzinfo=UTC)
#: Names the frozen clock for `tests/crash_runner.py` (RFC 3339).
NOW_ENV = "SYNCD_TEST_NOW"


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncdFiles:
    """Where one configured syncd keeps its things."""

    config: Path
    duckdb: Path
    save_dir: Path
    state_dir: Path


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return json.dumps(format_timestamp(value))
    if isinstance(value, (str, Path)):
        return json.dumps(str(value), ensure_ascii=False)
    raise TypeError(f"no TOML form for {value!r}")


def write_config(
    directory: Path,
    sim: Simulator,
    start: datetime,
    overrides: Mapping[str, object] | None = None,
) -> SyncdFiles:
    """Write `directory/syncd.toml` for syncd against `sim`, everything kept under `directory`.

    Small volumes and short waits by default; `overrides` sets or replaces keys, a section's
    keys written as "section.Key" (e.g. {"MaxBatchAttempts": 2, "duckdb.ExportTable": "t"}).
    """
    root = directory.resolve()
    files = SyncdFiles(
        config=root / "syncd.toml",
        duckdb=root / "syncd.duckdb",
        save_dir=root / "staged",
        state_dir=root / "state",
    )
    keys: dict[str, object] = {
        "FsApiToken": API_KEY,
        "ApiURL": sim.url,
        "LegacyApiURL": sim.legacy_url,
        "Provider": "duckdb",
        "StartTime": start,
        "ExportDuration": "1h",
        "ExportDelay": "1h",
        "PollInterval": "50ms",
        "Backoff": "100ms",
        "HeldRetryInterval": "200ms",
        "LogLevel": "warning",
        "TmpDir": root / "tmp",
        "StateDir": files.state_dir,
        "local.SaveDir": files.save_dir,
        "duckdb.Path": files.duckdb,
        "duckdb.ReaderWindow": "0s",  # no pause between commits unless a test asks for one
        "metrics.Address": "off",  # `run` would serve 127.0.0.1:9108; tests pick a port
    }
    keys.update(overrides or {})
    top = [f"{k} = {_toml_value(v)}" for k, v in keys.items() if "." not in k]
    sections: dict[str, list[str]] = {}
    for key, value in keys.items():
        if "." in key:
            section, name = key.split(".", 1)
            sections.setdefault(section, []).append(f"{name} = {_toml_value(value)}")
    text = "\n".join(top) + "\n"
    for section, lines in sections.items():
        text += f"\n[{section}]\n" + "\n".join(lines) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    files.config.write_text(text, encoding="utf-8")
    return files


# -- running the CLI in this process ---------------------------------------------------------


@contextmanager
def frozen_clock(now: datetime) -> Iterator[None]:
    """Make every pipeline built by `syncd.app.build_app` see `now` as the time.

    The planner decides from the clock which windows are ready; freezing it keeps a test's
    windows the same whatever the wall clock does while it runs.
    """
    original = syncd.app.build_app

    def build_app(
        settings: Any,
        *,
        stop: Any,
        hooks: Sequence[Any] = (),
        clock: Callable[[], datetime] | None = None,
    ) -> syncd.app.App:
        return original(settings, stop=stop, hooks=hooks, clock=lambda: now)

    syncd.app.build_app = build_app
    try:
        yield
    finally:
        syncd.app.build_app = original


def run_cli(argv: Sequence[str], now: datetime | None = NOW) -> int:
    """`syncd.cli.main(argv)` in this process (clock frozen at `now` unless None); the exit
    code. The signal handlers and the logging set-up the CLI installs are put back afterwards
    (its log stream may be a capture that pytest closes after the test)."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    logging = structlog.get_config()
    try:
        if now is None:
            return cli.main(list(argv))
        with frozen_clock(now):
            return cli.main(list(argv))
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        structlog.configure(**logging)


# -- reading DuckDB back ---------------------------------------------------------------------


def read_table(db: Path, table: str, order_by: str | None = None) -> list[dict[str, Any]]:
    """Every row of `table` as a dict (column name -> value as DuckDB returns it)."""
    with duckdb.connect(str(db), read_only=True) as con:
        exists = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
        ).fetchone()
        if not exists or not exists[0]:
            return []
        order = f" ORDER BY {quote_identifier(order_by)}" if order_by else ""
        cursor = con.execute(f"SELECT * FROM {quote_identifier(table)}{order}")  # noqa: S608
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def export_rows(db: Path, table: str = "fsexport") -> list[dict[str, Any]]:
    """The export table's rows."""
    return read_table(db, table)


def sync_rows(db: Path, table: str = "fssync") -> list[dict[str, Any]]:
    """The SyncTable's rows, oldest batch first."""
    return read_table(db, table, order_by="BatchStart")


def reject_rows(db: Path, table: str = "fsrejects") -> list[dict[str, Any]]:
    return read_table(db, table)


# -- the expectation: export rows -> table rows, from the stated rules -----------------------


class Rejected(Exception):
    """The rules say this row cannot be loaded."""


_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:[Zz]|([+-])(\d\d):(\d\d))",
    re.ASCII,
)
_TRACE_NAMES = frozenset((CUSTOM_VARS.name, BATCH_ID.name, LOADED_AT.name))
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _clean(text: str) -> str:
    return _LONE_SURROGATE.sub("\ufffd", text.replace("\x00", "\ufffd"))


def _clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, dict):
        return {_clean(k): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_json(v) for v in value]
    return value


def _timestamp(value: object) -> datetime:
    match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise Rejected(f"not an RFC 3339 timestamp: {value!r}")
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    micros = int((fraction or "")[:6].ljust(6, "0"))
    moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micros)
    if sign:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        moment = moment - offset if sign == "+" else moment + offset
    return moment


def _int64(value: object) -> int:
    if isinstance(value, bool):
        raise Rejected("boolean for an integer")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value, re.ASCII):
        value = int(value)
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return value
    raise Rejected(f"not an int64: {value!r}")


def _float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Rejected(f"not a number: {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise Rejected(f"not a number: {value!r}") from None
    if not math.isfinite(number):
        raise Rejected("not finite")
    return number


def _string(value: object) -> str:
    if isinstance(value, str):
        return _clean(value)
    return json.dumps(_clean_json(value), ensure_ascii=False, separators=(",", ":"))


_CONVERT: dict[FieldType, Callable[[object], object]] = {
    FieldType.INT64: _int64,
    FieldType.FLOAT: _float,
    FieldType.STRING: _string,
    FieldType.TIMESTAMP: _timestamp,
    FieldType.JSON: lambda v: _clean_json(v),
}


def expected_row(
    event: Mapping[str, Any],
    columns: Sequence[Column],
    batch_id: str,
    window: tuple[datetime, datetime] | None = None,
    dropped: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The table row an export row becomes (raises Rejected when it must be quarantined,
    also when `window` is given and its EventStart falls outside it).

    CustomVars is the folded keys as a dict, in sorted order as syncd writes them;
    SyncdLoadedAt is left out. Keys in `dropped` (`dropped_fields`) are in neither.
    """
    typed = {
        c.name: c.type
        for c in columns
        if c.name not in _TRACE_NAMES and not c.name.startswith(CUSTOM_PREFIXES)
    }
    row: dict[str, Any] = {c.name: None for c in columns if c.name != LOADED_AT.name}
    custom: dict[str, Any] = {}
    for key, value in sorted(event.items(), key=lambda item: _clean(item[0])):
        if key in dropped:
            continue
        if key in typed:
            row[key] = None if value is None else _CONVERT[typed[key]](value)
        else:
            custom[_clean(key)] = _clean_json(value)
    row[CUSTOM_VARS.name] = custom
    row[BATCH_ID.name] = batch_id
    event_start = row.get("EventStart")
    if window is not None and event_start is not None:
        low, high = (t.astimezone(UTC).replace(tzinfo=None) for t in window)
        if not low <= event_start < high:
            raise Rejected("EventStart outside the batch window")
    return row


def window_key(start: datetime, end: datetime) -> BatchKey:
    return BatchKey(start=start, end=end, source="segment")


def hour_windows(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The 1-hour windows [start, end) is cut into."""
    out = []
    while start < end:
        out.append((start, start + HOUR))
        start += HOUR
    return out


def expected_segment_rows(
    sim: Simulator,
    windows: Iterable[tuple[datetime, datetime]],
    columns: Sequence[Column] | None = None,
    *,
    include_mobile: bool = False,
) -> list[dict[str, Any]]:
    """What the export table holds after loading `windows` from the Segment Export API (every
    field exported; the mobile apps' fields dropped unless `include_mobile`)."""
    columns = export_columns("segment", include_mobile) if columns is None else columns
    dropped = dropped_fields(include_mobile)
    rows = []
    for start, end in windows:
        batch_id = window_key(start, end).id
        for event in sim.expected_events(start, end):
            rows.append(expected_row(event, columns, batch_id, dropped=dropped))
    return rows


def legacy_key(bundles: Sequence[Bundle]) -> BatchKey:
    """The batch key of legacy bundles loaded together."""
    return BatchKey(
        start=bundles[0].start,
        end=max(b.stop for b in bundles),
        source="legacy",
        bundle_ids=tuple(b.id for b in bundles),
    )


def expected_legacy_rows(
    sim: Simulator, batches: Iterable[Sequence[Bundle]]
) -> list[dict[str, Any]]:
    """What the export table holds after loading each group of legacy bundles as a batch."""
    columns = export_columns("legacy")
    rows = []
    for bundles in batches:
        batch_id = legacy_key(bundles).id
        for bundle in bundles:
            for event in sim.expected_events(bundle.start, bundle.stop, legacy=True):
                rows.append(expected_row(event, columns, batch_id, dropped=dropped_fields()))
    return rows


# -- comparing -------------------------------------------------------------------------------


def _canonical(value: Any) -> Any:
    """A hashable form that tells types apart (True is not 1, 1 is not 1.0)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return ("object", tuple((k, _canonical(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("array", tuple(_canonical(v) for v in value))
    if isinstance(value, datetime) and value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return (type(value).__name__, value)


def _table_row(row: Mapping[str, Any], names: Sequence[str]) -> tuple[Any, ...]:
    values = []
    for name in names:
        value = row.get(name)
        if name == CUSTOM_VARS.name and isinstance(value, str):
            value = json.loads(value)
        values.append(_canonical(value))
    return tuple(values)


def assert_rows_equal(
    actual: Sequence[Mapping[str, Any]], expected: Sequence[Mapping[str, Any]]
) -> None:
    """The table rows equal the expected rows as multisets of full rows (SyncdLoadedAt aside,
    which must only be set)."""
    assert expected, "the expectation is empty: the test would prove nothing"
    names = [n for n in expected[0] if n != LOADED_AT.name]
    missing_loaded_at = sum(1 for r in actual if r.get(LOADED_AT.name) is None)
    assert missing_loaded_at == 0, f"{missing_loaded_at} rows have no {LOADED_AT.name}"
    have = Counter(_table_row(r, names) for r in actual)
    want = Counter(_table_row(r, names) for r in expected)
    if have == want:
        return
    extra = list((have - want).elements())
    missing = list((want - have).elements())
    lines = [
        f"table rows differ: {len(actual)} in the table, {len(expected)} expected; "
        f"{len(extra)} unexpected, {len(missing)} missing"
    ]
    batch = names.index(BATCH_ID.name)
    for label, rows in (("unexpected", extra), ("missing", missing)):
        if rows:
            lines.append(f"{label} rows by batch: {dict(Counter(r[batch][1] for r in rows))}")
    if extra and missing:
        a = extra[0]
        b = min(missing, key=lambda m: sum(x != y for x, y in zip(a, m, strict=True)))
        diffs = {n: (x, y) for n, x, y in zip(names, a, b, strict=True) if x != y}
        lines.append(f"an unexpected row and the closest missing one differ in: {diffs}")
    else:
        for label, rows in (("unexpected", extra[:2]), ("missing", missing[:2])):
            lines += [f"{label}: {dict(zip(names, row, strict=True))}" for row in rows]
    raise AssertionError("\n".join(lines))


def sorted_custom_vars(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """JSON columns that keep the object, not its key order (PostgreSQL's JSONB, BigQuery's
    JSON): compare CustomVars with sorted keys."""

    def ordered(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ordered(value[k]) for k in sorted(value)}
        if isinstance(value, list):
            return [ordered(v) for v in value]
        return value

    return [{**r, "CustomVars": ordered(r["CustomVars"])} for r in rows]


def batch_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Rows per SyncdBatchId."""
    return dict(Counter(str(r[BATCH_ID.name]) for r in rows))


def frozen_now_from_env(env: Mapping[str, str]) -> datetime | None:
    """The frozen clock `tests/crash_runner.py` was given, if any."""
    text = env.get(NOW_ENV)
    return parse_timestamp(text) if text else None


# -- legacy bundles ----------------------------------------------------------------------------

#: The legacy simulator's first data: two complete days of bundles before its clock.
LEGACY_DATA_START = datetime(2026, 10, 30, tzinfo=UTC)


@contextmanager
def legacy_simulator(monkeypatch: Any) -> Iterator[Simulator]:
    """Two complete days of 6-hour bundles (the clock stands at 03:00 on the third day); the
    client's own limit of 2 bundle downloads a minute is lifted for the test's speed."""
    monkeypatch.setattr(
        RateLimiter, "legacy_default", classmethod(lambda cls, state_path=None: cls(1000, 60.0))
    )
    config = SimulatorConfig(
        api_key=API_KEY,
        events_per_hour=60,
        data_start=LEGACY_DATA_START,
        legacy_bundle_hours=6,
        legacy_downloads_per_minute=None,
        clock=lambda: LEGACY_DATA_START + timedelta(days=2, hours=3),
    )
    with Simulator(config) as sim:
        yield sim
