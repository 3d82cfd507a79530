"""One export row (a parsed JSON object) -> the typed values of one export table row.

These rules are the reference every faster path is checked against:

- A key fills the column of the same name when `columns` has one, unless the key is a custom
  variable (`user_*`, `evt_*`, `page_*`) or names a trace column. Every other key (a known field
  without a column, a custom variable, a field the catalog does not know yet) is folded into
  the CustomVars JSON object with their values as they came, keys in sorted (code point)
  order as Go's encoding/json writes them in hauser's tables: one text for one set of keys,
  whatever order the exporter sent them in.
- A key in `rules.dropped_fields` (the mobile apps' fields without IncludeMobileAppsFields)
  is left out: no column, not in CustomVars. The export carries every field; switches that
  narrow what is loaded act here.
- Absent and JSON null are NULL; the empty string stays "" in STRING columns.
- With a `window` (a segment export's [start, end)), a row whose EventStart falls outside it is
  rejected: the API exports by EventStart, and loading it would duplicate the row loaded with
  the neighbouring window.
- INT64 takes a JSON integer within int64, a float with an integral value, or a string of
  ASCII digits (optionally negative). FLOAT takes a number or a numeric string. TIMESTAMP takes
  an RFC 3339 string ("T", "t" or " " between date and time, "Z", "z" or an offset), stored as
  naive UTC, fractions beyond microseconds truncated. STRING takes strings as they are and
  numbers, booleans, objects and arrays as their JSON text. Anything else rejects the row, with
  a reason naming every bad field.
- NUL characters (which PostgreSQL and Redshift cannot hold) and lone UTF-16 surrogates become
  U+FFFD, in column values and anywhere inside CustomVars.
- With `rules` from a warehouse that limits strings (Redshift's VarCharMax), STRING values are
  cut to `max_string_bytes` of UTF-8 at a character boundary, and a row whose CustomVars text
  is longer than `max_json_bytes` is rejected (cut JSON is not JSON; the load would fail).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson

from syncd.batch import BatchKey
from syncd.fields import BATCH_ID, CUSTOM_PREFIXES, CUSTOM_VARS, LOADED_AT, Column, FieldType
from syncd.timeutil import UTC
from syncd.transform.rules import NO_RULES, OutputRules, cut_utf8, utf8_length

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
REPLACEMENT = "\ufffd"

#: Beyond this magnitude orjson may have read an integer literal as a rounded float.
_INEXACT_FLOAT = 2.0**63
_MAYBE_ROUNDED = (float, list, dict)  # the parsed types that may hide a rounded integer
_TIMESTAMP_CACHE_LIMIT = 4096  # session, page and user times repeat; event times rarely
_TRACE_NAMES = frozenset((CUSTOM_VARS.name, BATCH_ID.name, LOADED_AT.name))
_FOLD = (-1, -1)  # the slot of a key without a column: folded into CustomVars

# FieldType members as small ints: enum attribute access is slow in the per-value loop.
_STRING, _INT64, _TIMESTAMP, _FLOAT, _JSON = range(5)
_KIND_CODES = {
    FieldType.STRING: _STRING,
    FieldType.INT64: _INT64,
    FieldType.TIMESTAMP: _TIMESTAMP,
    FieldType.FLOAT: _FLOAT,
    FieldType.JSON: _JSON,
}

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_INT_TEXT = re.compile(r"-?[0-9]{1,19}", re.ASCII)
_FLOAT_TEXT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_CANONICAL_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z", re.ASCII
)
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))",
    re.ASCII,
)


class RowRejected(Exception):
    """The row cannot be loaded; `reason` says which fields and why (no values)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NeedsExactParse(Exception):
    """orjson may have rounded a huge integer to a float: parse the row's text exactly, again."""


class BadValue(Exception):
    """One value does not fit its column; the message completes "<field>: ..."."""


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for reasons."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def clean_text(text: str) -> str:
    """Replace NUL and lone surrogates (no warehouse stores them) with U+FFFD."""
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    if _LONE_SURROGATE.search(text):
        text = _LONE_SURROGATE.sub(REPLACEMENT, text)
    return text


#: The column a segment export's window is about.
EVENT_START = "EventStart"


def outside_window(event_start: datetime, window: tuple[datetime, datetime]) -> str:
    """The quarantine reason of a row exported for the wrong window."""
    return (
        f"EventStart {event_start.isoformat()} is outside the batch window "
        f"[{window[0].isoformat()}, {window[1].isoformat()})"
    )


def batch_window(key: BatchKey) -> tuple[datetime, datetime] | None:
    """The [start, end) (naive UTC) every row of a segment batch must have its EventStart in;
    None for legacy bundles, which hold whatever was processed in their time."""
    if key.source != "segment":
        return None
    return (
        key.start.astimezone(UTC).replace(tzinfo=None),
        key.end.astimezone(UTC).replace(tzinfo=None),
    )


def _written_key(item: tuple[str, Any]) -> str:
    return clean_text(item[0])


#: The reason a row nested too deeply to parse or re-serialise is quarantined with.
TOO_DEEP = "JSON nested too deeply (more than 1000 levels)"


def clean_value(value: Any) -> Any:
    """`clean_text` applied to every string (keys too) inside a parsed JSON value."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(k): clean_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_value(v) for v in value]
    return value


def _may_be_rounded(value: object) -> bool:
    """Whether orjson may have rounded an integer literal somewhere in `value` (to a float)."""
    if type(value) is float:
        return abs(value) >= _INEXACT_FLOAT
    if type(value) is list:
        return any(_may_be_rounded(v) for v in value)
    if type(value) is dict:
        return any(_may_be_rounded(v) for v in value.values())
    return False


def dump_json(value: Any) -> str:
    """Compact JSON text; integers beyond 64 bits (which orjson refuses) go through the stdlib."""
    try:
        data = orjson.dumps(value)
    except TypeError:
        cleaned = clean_value(value)
        return json.dumps(cleaned, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if b"\\u0000" in data:  # a NUL somewhere inside: rewrite it as U+FFFD
        data = orjson.dumps(clean_value(value))
    return data.decode()


def to_int64(value: object) -> int:
    """INT64 from an integer, an integral float or a string of digits."""
    if isinstance(value, bool):
        raise BadValue("expected int64, got boolean")
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return value
        raise BadValue("is out of int64 range")
    if isinstance(value, float):
        if not value.is_integer():
            raise BadValue("expected int64, got a number with a fraction")
        if -_INEXACT_FLOAT <= value < _INEXACT_FLOAT:
            return int(value)
        raise BadValue("is out of int64 range")
    if isinstance(value, str):
        if _INT_TEXT.fullmatch(value):
            number = int(value)
            if INT64_MIN <= number <= INT64_MAX:
                return number
            raise BadValue("is out of int64 range")
        if re.fullmatch(r"-?[0-9]+", value, re.ASCII):
            raise BadValue("is out of int64 range")
        raise BadValue("expected int64, got a non-numeric string")
    raise BadValue(f"expected int64, got {json_type(value)}")


def to_float(value: object) -> float:
    """FLOAT from a number or a numeric string; NaN and infinities are refused."""
    if isinstance(value, bool):
        raise BadValue("expected float, got boolean")
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            raise BadValue("is out of float range") from None
    elif isinstance(value, str):
        if not _FLOAT_TEXT.fullmatch(value):
            raise BadValue("expected float, got a non-numeric string")
        number = float(value)
    else:
        raise BadValue(f"expected float, got {json_type(value)}")
    if not math.isfinite(number):
        raise BadValue("is out of float range")
    return number


def to_string(value: object) -> str:
    """STRING: text as it is (cleaned), anything else as its JSON text."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return dump_json(value)


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 timestamp as a naive UTC datetime, truncated to microseconds."""
    try:
        if len(text) == 24 and _CANONICAL_TIMESTAMP.fullmatch(text):
            return datetime.fromisoformat(text[:23])  # the API's own shape: ms, "Z"
        match = _RFC3339.fullmatch(text)
        if match is None:
            raise BadValue("is not an RFC 3339 timestamp")
        year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
        micros = int(fraction[:6].ljust(6, "0")) if fraction else 0
        parsed = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros
        )
        if sign:
            if int(off_h) > 23 or int(off_m) > 59:
                raise BadValue("has an invalid UTC offset")
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            parsed = parsed - offset if sign == "+" else parsed + offset
        return parsed
    except (ValueError, OverflowError):
        raise BadValue("is not a valid date and time") from None


class RowConverter:
    """Converts parsed rows into value lists in the order of `columns`.

    The trace columns are filled here too: SyncdBatchId with `batch_id`, SyncdLoadedAt with
    `loaded_at` (naive UTC), CustomVars with the folded keys as JSON text ("{}" when none).
    """

    def __init__(
        self,
        columns: Sequence[Column],
        batch_id: str,
        loaded_at: datetime,
        *,
        window: tuple[datetime, datetime] | None = None,
        rules: OutputRules = NO_RULES,
    ) -> None:
        names = [c.name for c in columns]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate columns: {', '.join(duplicates)}")
        missing = [n for n in (CUSTOM_VARS.name, BATCH_ID.name, LOADED_AT.name) if n not in names]
        if missing:
            raise ValueError(f"columns lack the trace columns {', '.join(missing)}")
        self.columns = tuple(columns)
        self._custom_index = names.index(CUSTOM_VARS.name)
        self._template: list[Any] = [None] * len(names)
        self._template[names.index(BATCH_ID.name)] = batch_id
        self._template[names.index(LOADED_AT.name)] = loaded_at
        dropped = rules.dropped_fields
        self._slots: dict[str, tuple[int, int] | None] = {
            c.name: (i, _KIND_CODES[c.type])
            for i, c in enumerate(columns)
            if c.name not in _TRACE_NAMES
            and not c.name.startswith(CUSTOM_PREFIXES)
            and c.name not in dropped
        }
        self._slots.update((name, None) for name in dropped)  # None: left out of the row
        self._timestamps: dict[str, datetime] = {}
        self.window = window
        self._event_start = names.index(EVENT_START) if EVENT_START in names else None
        self.rules = rules

    def convert(self, obj: object, *, exact: bool = False) -> list[Any]:
        """The row's values; raises RowRejected, or NeedsExactParse when `exact` is False and a
        number may have been rounded by orjson. A value nested deeper than Python recurses
        (a custom var ~1000 levels deep: orjson parses it, re-serialising it cannot) is a
        rejected row, never a failed batch."""
        try:
            return self._convert(obj, exact)
        except RecursionError:
            raise RowRejected(TOO_DEEP) from None

    def _convert(self, obj: object, exact: bool) -> list[Any]:
        if type(obj) is not dict:
            raise RowRejected(f"not a JSON object (got {json_type(obj)})")
        row = self._template.copy()
        custom: dict[str, Any] | None = None
        problems: list[str] | None = None
        slots = self._slots
        str_, int_, float_ = str, int, float
        limit = self.rules.max_string_bytes
        for key, value in obj.items():
            slot = slots.get(key, _FOLD)
            if slot is _FOLD:
                if custom is None:
                    custom = {}
                custom[key] = value
                if not exact and type(value) in _MAYBE_ROUNDED and _may_be_rounded(value):
                    raise NeedsExactParse
                continue
            if value is None or slot is None:  # null, or a dropped field
                continue
            index, kind = slot
            try:
                if kind == _STRING:
                    if type(value) is str_:
                        text = value if "\x00" not in value else clean_text(value)
                    else:
                        if not exact and type(value) in _MAYBE_ROUNDED and _may_be_rounded(value):
                            raise NeedsExactParse
                        text = to_string(value)
                    if limit is not None and len(text) * 4 > limit:
                        text = cut_utf8(text, limit)
                    row[index] = text
                elif kind == _INT64:
                    if type(value) is int_ and INT64_MIN <= value <= INT64_MAX:
                        row[index] = value
                    elif type(value) is float_ and not exact and abs(value) >= _INEXACT_FLOAT:
                        raise NeedsExactParse  # e.g. -9223372036854775809 read as -2.0**63
                    else:
                        row[index] = to_int64(value)
                elif kind == _TIMESTAMP:
                    row[index] = self._timestamp(value)
                elif kind == _FLOAT:
                    row[index] = value if type(value) is float_ else to_float(value)
                else:
                    if not exact and type(value) in _MAYBE_ROUNDED and _may_be_rounded(value):
                        raise NeedsExactParse
                    row[index] = dump_json(value)
            except BadValue as exc:
                if problems is None:
                    problems = []
                problems.append(f"{key}: {exc}")
        if problems:
            raise RowRejected("; ".join(problems))
        if self.window is not None and self._event_start is not None:
            start = row[self._event_start]
            if start is not None and not self.window[0] <= start < self.window[1]:
                raise RowRejected(outside_window(start, self.window))
        if custom:
            if len(custom) > 1:  # by the keys as written: NUL and lone surrogates as U+FFFD
                custom = dict(sorted(custom.items(), key=_written_key))
            text = dump_json(custom)
            json_limit = self.rules.max_json_bytes
            if json_limit is not None and len(text) * 4 > json_limit:
                size = utf8_length(text)
                if size > json_limit:
                    raise RowRejected(
                        f"{CUSTOM_VARS.name}: its JSON text is {size} bytes, more than the "
                        f"{json_limit} the warehouse's column holds (cut, it would not be JSON)"
                    )
            row[self._custom_index] = text
        else:
            row[self._custom_index] = "{}"
        return row

    def _timestamp(self, value: object) -> datetime:
        if type(value) is not str:
            raise BadValue(f"expected an RFC 3339 timestamp string, got {json_type(value)}")
        cached = self._timestamps.get(value)
        if cached is None:
            cached = parse_rfc3339(value)
            if len(self._timestamps) >= _TIMESTAMP_CACHE_LIMIT:
                self._timestamps.clear()
            self._timestamps[value] = cached
        return cached
