"""Durations with units and RFC 3339 UTC timestamps: the only two time formats syncd reads."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

UTC = timezone.utc

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration such as "90s", "1h30m", "500ms", "24h" (as hauser writes them).

    A bare number is refused: a duration must carry its unit.
    """
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return timedelta(0)
    pos = 0
    total = 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError(
            f"{text!r} is not a duration with units, e.g. '90s', '15m', '1h30m', '24h'"
        )
    return timedelta(seconds=sign * total)


def format_duration(value: timedelta) -> str:
    """The shortest unit-carrying text for a duration: 3600 s -> "1h", 90 s -> "1m30s"."""
    total = value.total_seconds()
    if total == 0:
        return "0s"
    sign = "-" if total < 0 else ""
    total = abs(total)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total >= size:
            n = int(total // size)
            parts.append(f"{n}{unit}")
            total -= n * size
    if total:
        parts.append(f"{total:g}s")
    return sign + "".join(parts)


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime ("Z" or an offset required)."""
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        raise ValueError(
            f"{text!r} has no time zone; write it as RFC 3339, e.g. 2026-11-01T00:00:00Z"
        )
    return dt.astimezone(UTC)


def format_timestamp(dt: datetime) -> str:
    """RFC 3339 UTC with a "Z", seconds precision unless there are fractions."""
    dt = dt.astimezone(UTC)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def utcnow() -> datetime:
    """The default clock; inject another where time matters in tests."""
    return datetime.now(UTC)
