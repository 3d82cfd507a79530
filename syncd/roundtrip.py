"""`syncd check --round-trip`: edge-case rows through the real load path and back, value by value.

Why: a warehouse, a driver or a stand-in that quietly changes a value (an id past 2^53 read
through a float, NULL loaded as "", a long string cut inside a character, a NUL) passes every
row count. The round trip sends rows built to meet those edges as an export body (gzip NDJSON,
as the export API sends it) through the SAME transform as the pipeline (by its columnar fast
path where the staged format has one, as a real export takes it), the configured stage
(`Stage.put`) and the warehouse's `ensure_tables` + `commit_batch`, into scratch tables
(`<table>__syncd_roundtrip_<random>`: the configured tables are never touched), reads the
batch back (`Warehouse.read_rows`), and judges each value against the documented rules:

- exact: integers exactly (never through a float), floats exactly, timestamps to the
  microsecond, strings exactly, CustomVars equal as parsed JSON (key order aside, types kept:
  1 is neither 1.0 nor true; nested values as they came);
- changed only as documented: NUL becomes U+FFFD (README, "Columns"); a string longer than the
  warehouse's `Capabilities.max_string_bytes` (Redshift's VarCharMax) comes back as its
  longest prefix of whole characters within that many UTF-8 bytes.

The expected values are derived here from those rules, not from the transform, so a transform
fault shows too. Everything the round trip created (scratch tables, staged objects, local
files) is removed whatever happens, and what could not be removed is reported. Only `cli.py`
prints: this module returns a `RoundTripReport` and the lines of its table.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from syncd.batch import BatchKey, StagedBatch, StagedFormat, SyncRecord, TransformedBatch
from syncd.config import Settings
from syncd.errors import ConfigError, SyncdError
from syncd.fields import BATCH_ID, CUSTOM_VARS, LOADED_AT, Column, FieldType, export_columns
from syncd.pipeline import output_rules
from syncd.timeutil import UTC, utcnow
from syncd.transform.rules import OutputRules
from warehouses import registry
from warehouses.base import Stage, Warehouse

#: Appended (with a random token) to each configured table name to name its scratch table.
SCRATCH_MARK = "__syncd_roundtrip_"
#: The byte offset the long string's multi-byte character straddles when the warehouse keeps
#: strings of any length: Redshift's largest VARCHAR, the cut a user meets most.
DEFAULT_CUT = 65535
LONG_STRING_CHARS = 70_000
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
#: Which export row a read-back row is: EventPageOffset holds the row's number.
ROW_TAG = "EventPageOffset"

EXACT = "exact"
NUL_REPLACED = "exact (NUL -> U+FFFD, documented)"
CUT = "cut to {limit} bytes (documented)"
CHANGED = "CHANGED"
MISSING = "MISSING"

_SHOW_CHARS = 34


# -- the rows ----------------------------------------------------------------------------------


def round_trip_window(now: datetime) -> BatchKey:
    """The whole hour that ended an hour before the current one began: recent, so that a
    partition expiration set on the warehouse does not drop the rows as they land."""
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return BatchKey(hour - timedelta(hours=2), hour - timedelta(hours=1))


def _ms(dt: datetime) -> str:
    """RFC 3339 UTC with milliseconds and "Z", as the export API writes timestamps."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def long_string(cut: int) -> str:
    """LONG_STRING_CHARS characters whose UTF-8 form has a 3-byte character on byte `cut`
    (bytes cut-1..cut+1): a cut at `cut` bytes that is not at a character boundary would split
    it."""
    head = "a" * (cut - 1)
    return head + "€" + "b" * (LONG_STRING_CHARS - len(head) - 1)


#: Row 3's string values, by column; other string columns get a plain text naming the column.
SPECIAL_STRINGS: dict[str, str] = {
    "UserDisplayName": "emoji 😀🎉 and CJK 新しい",
    "EventTargetText": "ZWJ 👩‍👩‍👧‍👦, skin tone 👍🏽, combining é",
    "EventCustomName": "line\u2028separator\u2029paragraph",
    "UserEmail": "nul\x00inside",
    "PageName": 'tab\tnewline\ncrlf\r\nquote"comma,backslash\\',
    "UserAppKey": "  padded  ",
    "PageIp": "\\N",
    "ReqMethod": "NULL",
    "EventWebSourceFileUrl": "00123",
}
LONG_COLUMN = "PageUrl"

#: Row 3's integers, by column; other integer columns get small numbers.
SPECIAL_INTS: dict[str, int] = {
    "IndvId": INT64_MAX,
    "UserId": 2**53 + 1,
    "SessionId": 2**53 + 3,
    "PageId": INT64_MAX - 1,
    "EventSessionOffset": INT64_MIN,
}

#: Row 4's integers: the same edges in a row with nothing the columnar fast path hands to the
#: reference converter (no NUL, canonical timestamps), so they go through DuckDB's casts.
FAST_INTS: dict[str, int] = {
    "IndvId": 2**53 + 5,
    "UserId": INT64_MAX,
    "SessionId": INT64_MIN,
    "PageId": 2**62 + 7,
}
FAST_CUSTOM: dict[str, Any] = {
    "user_plan_str": "team",
    "evt_big_int": INT64_MAX,
    "evt_nested": {"ids": [2**53 + 1, -(2**53) - 1], "f": 1.5, "s": "x\u2028y 👩‍💻"},
    "evt_emoji_👍_str": "新しい",
}

#: Row 3's custom variables and an unknown field (both folded into CustomVars).
CUSTOM: dict[str, Any] = {
    "user_plan_str": "pro",
    "evt_odd key.with dots-and-dashes": 1,
    'evt_quote"back\\slash': "v",
    "user_ünïcödé_str": "日本",
    "evt_emoji_👍_str": "👩‍💻",
    "page_line\u2028sep_str": "a\u2028b",
    "evt_nul\x00key_str": "nul\x00value",
    "evt_big_int": INT64_MAX,
    "evt_past_2_53_int": 2**53 + 1,
    "evt_neg_real": -0.5,
    "evt_nested": {
        "list": [1, "two", None, True, {"deep": [2**53 + 3]}],
        "empty_obj": {},
        "empty_list": [],
        "f": 1.25,
    },
    "evt_null_value": None,
    "evt_empty_str": "",
    "EventNewThing": "新",
}


def edge_rows(
    columns: Sequence[Column], key: BatchKey, max_string_bytes: int | None
) -> list[dict[str, Any]]:
    """Four export rows (JSON objects as the API sends them) over `columns`:
    1. EventStart at the window's first millisecond, JSON null in every other field;
    2. EventStart at its last millisecond, "" in every string column, zeros elsewhere;
    3. the edges: the long string, emoji, ZWJ, U+2028, NUL, CSV and COPY metacharacters,
       int64 max and min, ids past 2^53, a float, a timestamp before 1970, CustomVars with odd
       keys and nested values, an unknown field;
    4. int64 max and min, ids past 2^53, emoji, ZWJ and U+2028 again, in a row the columnar
       fast path types itself (row 3's NUL sends that row to the reference converter)."""
    first, last = key.start, key.end - timedelta(milliseconds=1)
    mid = key.start + timedelta(minutes=30, milliseconds=1)
    cut = max_string_bytes or DEFAULT_CUT
    names = {c.name for c in columns}
    trace = {CUSTOM_VARS.name, BATCH_ID.name, LOADED_AT.name}
    fields = [c for c in columns if c.name not in trace]
    nulls: dict[str, Any] = {c.name: None for c in fields}
    nulls.update(EventStart=_ms(first), **{ROW_TAG: 1})
    empties: dict[str, Any] = {}
    edges: dict[str, Any] = {}
    fast: dict[str, Any] = {}
    for n, c in enumerate(fields):
        if c.type is FieldType.STRING:
            empties[c.name] = ""
            edges[c.name] = SPECIAL_STRINGS.get(c.name, f"row 3 {c.name}")
            fast[c.name] = f"row 4 {c.name} 👩‍💻\u2028新"
        elif c.type is FieldType.INT64:
            empties[c.name] = 0
            edges[c.name] = SPECIAL_INTS.get(c.name, n)
            fast[c.name] = FAST_INTS.get(c.name, n * 1000)
        elif c.type is FieldType.FLOAT:
            empties[c.name] = 0.0
            edges[c.name] = 0.1
            fast[c.name] = 123456.789
        elif c.type is FieldType.TIMESTAMP:
            empties[c.name] = _ms(last)
            edges[c.name] = _ms(first)
            fast[c.name] = _ms(mid)
    empties.update(EventStart=_ms(last), **{ROW_TAG: 2})
    edges.update(EventStart=_ms(mid), **{ROW_TAG: 3})
    fast.update(EventStart=_ms(mid + timedelta(milliseconds=1)), **{ROW_TAG: 4})
    if "UserCreated" in names:
        edges["UserCreated"] = "1969-12-31T23:59:59.999Z"
    if LONG_COLUMN in names:
        edges[LONG_COLUMN] = long_string(cut)
    edges.update({k: v for k, v in CUSTOM.items() if k not in names})
    fast.update({k: v for k, v in FAST_CUSTOM.items() if k not in names})
    return [nulls, empties, edges, fast]


def export_body(rows: Sequence[dict[str, Any]]) -> bytes:
    """The rows as a gzip NDJSON export body (the stdlib writes integers exactly, NUL as
    \\u0000 and U+2028 as it is, as a JSON encoder may)."""
    lines = (json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return gzip.compress("".join(lines).encode("utf-8"))


# -- what must come back -------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """The documented NUL rule, applied to every string of a JSON value (keys too)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _parse_ms(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def expected_row(
    row: dict[str, Any], columns: Sequence[Column], batch_id: str, loaded_at: datetime
) -> dict[str, Any]:
    """Each column's value after the load, by the documented rules (before any cut)."""
    names = {c.name for c in columns}
    out: dict[str, Any] = {}
    for c in columns:
        sent = row.get(c.name)
        if c.name == CUSTOM_VARS.name:
            out[c.name] = _clean({k: v for k, v in row.items() if k not in names})
        elif c.name == BATCH_ID.name:
            out[c.name] = batch_id
        elif c.name == LOADED_AT.name:
            out[c.name] = loaded_at.astimezone(UTC)
        elif sent is None:
            out[c.name] = None
        elif c.type is FieldType.TIMESTAMP:
            out[c.name] = _parse_ms(sent)
        else:
            out[c.name] = _clean(sent)
    return out


# -- judging -------------------------------------------------------------------------------------


def longest_prefix(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` of whole characters within `max_bytes` bytes of UTF-8."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def _typed(value: Any) -> Any:
    """A JSON value with its types spelled out, so that 1, 1.0 and true differ."""
    if isinstance(value, dict):
        return ("object", tuple(sorted((k, _typed(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("array", tuple(_typed(v) for v in value))
    return (type(value).__name__, value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def judge(
    column: Column,
    sent: Any,
    expected: Any,
    received: Any,
    max_string_bytes: int | None,
) -> str:
    """The verdict on one value: EXACT, NUL_REPLACED, the CUT, or CHANGED."""
    if expected is None or received is None:
        return EXACT if expected is None and received is None else CHANGED
    if column.type is FieldType.JSON:
        if not isinstance(received, str):
            return CHANGED
        try:
            parsed = json.loads(received, parse_constant=_reject_constant)
        except ValueError:
            return CHANGED
        if _typed(parsed) != _typed(expected):
            return CHANGED
        return NUL_REPLACED if "\\u0000" in json.dumps(sent) else EXACT
    if column.type is FieldType.TIMESTAMP:
        if not isinstance(received, datetime) or received.tzinfo is None:
            return CHANGED
        return EXACT if received == expected else CHANGED
    if type(received) is not type(expected):  # 7 is not 7.0, "7" is not 7, True is not 1
        return CHANGED
    if column.type is FieldType.STRING and max_string_bytes is not None:
        if len(expected.encode("utf-8")) > max_string_bytes:
            cut = longest_prefix(expected, max_string_bytes)
            return CUT.format(limit=max_string_bytes) if received == cut else CHANGED
    if received != expected:
        return CHANGED
    return NUL_REPLACED if isinstance(sent, str) and "\x00" in sent else EXACT


# -- the report ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValueCheck:
    """One value of one row: what was sent, what came back, the verdict."""

    row: int
    column: str
    sent: Any
    received: Any
    verdict: str

    @property
    def ok(self) -> bool:
        return self.verdict not in (CHANGED, MISSING)


@dataclass
class RoundTripReport:
    """What the round trip did, found and cleaned up."""

    description: str = ""
    checks: list[ValueCheck] = field(default_factory=list)
    error: str | None = None  # a step that failed (nothing to judge after it)
    removed: list[str] = field(default_factory=list)
    left_behind: list[str] = field(default_factory=list)  # what cleanup could not remove

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and not self.left_behind
            and bool(self.checks)
            and all(c.ok for c in self.checks)
        )

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for check in self.checks:
            counts[check.verdict] = counts.get(check.verdict, 0) + 1
        return counts


def show(value: Any) -> str:
    """A short, unambiguous rendering of a value for the table (controls escaped)."""
    if value is None:
        return "NULL"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    if isinstance(value, (dict, list)):
        plain = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        text = repr(plain)[1:-1]
    elif isinstance(value, str):
        plain, text = value, repr(value)
    else:
        return repr(value)
    if len(text) > _SHOW_CHARS:
        return f"{text[: _SHOW_CHARS - 12]}… ({len(plain)} chars)"
    return text


def table_lines(report: RoundTripReport) -> Iterator[str]:
    """The value table: field / sent / received / verdict, one line per value."""
    header = ("field", "sent", "received", "verdict")
    rows = [
        (f"row {c.row} {c.column}", show(c.sent), show(c.received), c.verdict)
        for c in report.checks
    ]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    for line in (header, *rows):
        yield "  " + "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()


def summary(report: RoundTripReport) -> str:
    counts = report.counts()
    return ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items()))


# -- the run -------------------------------------------------------------------------------------


def scratch_settings(settings: Settings, token: str) -> Settings:
    """`settings` with every warehouse's tables (the fields its plugin declares) renamed to
    scratch names (only the configured provider's are used); nothing else changes."""
    for plugin in registry.providers():
        if plugin.section is None or not plugin.table_fields:
            continue
        section = settings.section(plugin.section.name)
        renamed = {f: f"{getattr(section, f)}{SCRATCH_MARK}{token}" for f in plugin.table_fields}
        settings = settings.with_section(
            plugin.section.name, dataclasses.replace(section, **renamed)
        )
    return settings


def _rejected(batch: TransformedBatch) -> list[str]:
    """The quarantine reasons of a transformed batch (none is expected)."""
    if batch.rejects_path is None:
        return []
    records = [json.loads(x) for x in batch.rejects_path.read_text("utf-8").splitlines() if x]
    return [f"row {r['position'] + 1}: {r['reason']}" for r in records]


class _Cleanup:
    """Runs every removal whatever failed before; records what was removed and what was not."""

    def __init__(self, report: RoundTripReport) -> None:
        self.report = report
        self.steps: list[tuple[str, Callable[[], None]]] = []

    def add(self, what: str, step: Callable[[], None]) -> None:
        self.steps.append((what, step))

    def run(self) -> None:
        for what, step in reversed(self.steps):
            try:
                step()
            except (SyncdError, OSError) as exc:
                self.report.left_behind.append(f"{what}: {exc}")
            else:
                self.report.removed.append(what)


def run_round_trip(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utcnow,
    token: str | None = None,
) -> RoundTripReport:
    """Send the edge rows through transform, stage and load into scratch tables, read them
    back and judge every value; remove everything created. Raises ConfigError in StorageOnly
    mode (there is no warehouse to read back) and LockedError when the warehouse is held."""
    from syncd.app import staged_format

    if settings.storage_only:
        raise ConfigError(
            [
                "check --round-trip: StorageOnly mode loads no warehouse, so there is nothing "
                "to read back; the staged files are checked by `syncd check`"
            ]
        )
    token = token or secrets.token_hex(4)
    scratch = scratch_settings(settings, token)
    report = RoundTripReport()
    stage: Stage = registry.build_stage(scratch)
    warehouse: Warehouse = registry.build_warehouse(scratch, stage)
    cleanup = _Cleanup(report)
    cleanup.add("warehouse connection", warehouse.close)
    step = "make a local work folder"
    try:
        settings.tmp_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="syncd-roundtrip-", dir=settings.tmp_dir))
        cleanup.add(f"local files in {work}", lambda: shutil.rmtree(work))
        step = "choose the staged format"
        fmt = cast(StagedFormat, staged_format(settings, warehouse))
        limit = warehouse.capabilities.max_string_bytes
        key = round_trip_window(clock())
        report.description = (
            f"{type(warehouse).__name__} via {fmt}: edge-case rows into scratch tables "
            f"*{SCRATCH_MARK}{token}"
        )
        step = "create the scratch tables"
        cleanup.add("scratch tables", warehouse.drop_tables)
        columns = warehouse.ensure_tables(
            export_columns(settings.source, settings.include_mobile_apps_fields)
        )
        rows = edge_rows(columns, key, limit)
        body = work / "export.ndjson.gz"
        body.write_bytes(export_body(rows))
        step = "transform"
        loaded_at = clock()
        rules = output_rules(warehouse.capabilities)
        batch = _transform(key, body, work / "out", columns, fmt, loaded_at, rules)
        step = "stage"
        name = f"syncd-roundtrip-{token}-{batch.path.name}"
        uri = stage.put(batch.path, name)
        cleanup.add(f"staged object {uri}", lambda: stage.delete(uri))
        rejects_uri = None
        if batch.rejects_path is not None:
            rejects_name = f"syncd-roundtrip-{token}-{batch.rejects_path.name}"
            rejects_uri = stage.put(batch.rejects_path, rejects_name)
            cleanup.add(f"staged object {rejects_uri}", lambda: stage.delete(str(rejects_uri)))
        rejected = _rejected(batch)
        if rejected:
            raise _RowsRejected("the transform rejected " + "; ".join(rejected))
        step = "load"
        record = SyncRecord(
            batch_id=key.id,
            source=key.source,
            start=key.start,
            end=key.end,
            committed_at=clock(),
            rows_loaded=batch.rows,
            rows_rejected=batch.rejected,
            staged_uri=uri,
        )
        warehouse.commit_batch(StagedBatch(batch, uri, rejects_uri), record)
        step = "read back"
        received = warehouse.read_rows(key.id)
        report.checks = _compare(rows, received, columns, key.id, loaded_at, limit)
    except ConfigError:
        raise  # a setting the warehouse cannot follow: `check` exits 2 naming it
    except (SyncdError, OSError, _RowsRejected) as exc:
        report.error = f"{step}: {exc}"
    finally:
        cleanup.run()
    return report


def _transform(
    key: BatchKey,
    body: Path,
    out_dir: Path,
    columns: Sequence[Column],
    fmt: StagedFormat,
    loaded_at: datetime,
    rules: OutputRules,
) -> TransformedBatch:
    """The pipeline's transform by the path a real export takes, with the warehouse's rules
    (string limits, CSV NULL) as the pipeline passes them: the columnar fast path where the
    format has one (`columnar.transform` would send a body this small to the reference path,
    which the fast path uses for the rows it flags anyway), else the reference path."""
    from syncd.transform import transform_file
    from syncd.transform.columnar import FAST_FORMATS, NeedsReference, transform_columnar

    if fmt in FAST_FORMATS:
        try:
            return transform_columnar(key, body, out_dir, columns, fmt, loaded_at, rules=rules)
        except NeedsReference:
            pass
    return transform_file(key, body, out_dir, columns, fmt, loaded_at, rules=rules)


class _RowsRejected(Exception):
    """The transform quarantined an edge row: the round trip cannot judge it."""


def _compare(
    rows: Sequence[dict[str, Any]],
    received: Sequence[dict[str, Any]],
    columns: Sequence[Column],
    batch_id: str,
    loaded_at: datetime,
    limit: int | None,
) -> list[ValueCheck]:
    by_tag: dict[Any, dict[str, Any]] = {}
    extra = 0
    for row in received:
        tag = row.get(ROW_TAG)
        if tag in by_tag or tag not in range(1, len(rows) + 1):
            extra += 1
        else:
            by_tag[tag] = row
    checks: list[ValueCheck] = []
    for number, sent_row in enumerate(rows, start=1):
        want = expected_row(sent_row, columns, batch_id, loaded_at)
        got = by_tag.get(number)
        for c in columns:
            sent = _sent_value(sent_row, c, want)
            if got is None:
                checks.append(ValueCheck(number, c.name, sent, None, MISSING))
                continue
            value = got.get(c.name)
            verdict = judge(c, sent, want[c.name], value, limit)
            checks.append(ValueCheck(number, c.name, sent, value, verdict))
    if extra:
        checks.append(ValueCheck(0, "(rows)", len(rows), len(received), CHANGED))
    return checks


def _sent_value(row: dict[str, Any], column: Column, expected: dict[str, Any]) -> Any:
    """What was sent for a column: the field, or the folded keys / the batch id / load time."""
    if column.name in (BATCH_ID.name, LOADED_AT.name):
        return expected[column.name]
    if column.name == CUSTOM_VARS.name:
        names = set(expected)
        return {k: v for k, v in row.items() if k not in names}
    return row.get(column.name)


__all__ = [
    "RoundTripReport",
    "ValueCheck",
    "edge_rows",
    "expected_row",
    "judge",
    "run_round_trip",
    "scratch_settings",
    "summary",
    "table_lines",
]
