"""Reading a TOML file and the environment into raw values, one per key of the table.

Keys and sections match case-insensitively, as hauser's Go TOML decoder does. Every problem
is collected (never the first one only) so an operator fixes the file in one pass. Secret
values never enter a message: problems name the key, never echo what a secret key holds.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any

from syncd.config.keys import ENV_PREFIX, FILE_SUFFIX, Key, Kind
from syncd.config.model import HttpHeader
from syncd.config.secret import Secret
from syncd.errors import ConfigError
from syncd.timeutil import UTC, parse_duration, parse_timestamp

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found]

#: Variables with the SYNCD_ prefix that are not settings (no "unknown variable" warning).
ENV_NOT_SETTINGS: tuple[str, ...] = ("SYNCD_CONFIG", "SYNCD_TEST_")

_BARE_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_INT = re.compile(r"[+-]?\d+")


class Invalid:
    """Marks a value that failed to convert; its problem is already recorded."""


INVALID = Invalid()


@dataclass(frozen=True)
class RawValue:
    """A value as given, with where it came from (for messages and `origins`)."""

    value: object
    origin: str  # "file", "env SYNCD_X", "file named by SYNCD_X_FILE"
    where: str  # the key as problems name it


def read_toml(path: Path) -> dict[str, Any]:
    """Parse the config file; a missing file or bad syntax is a ConfigError naming the path."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"config file {path} does not exist"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise ConfigError([f"config file {path} cannot be read: {reason}"]) from None
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config file {path} is not valid TOML: {exc}"]) from None
    return data


def suggest(name: str, candidates: list[str]) -> str:
    """The hint "; did you mean 'X'?" for the nearest candidate, or "" when none is near."""
    by_lower = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"; did you mean '{by_lower[close[0]]}'?" if close else ""


def _elsewhere(name: str, section: str) -> str:
    """The hint "; did you mean '[s3] Bucket'?" when the key exists in another section."""
    from syncd.config.table import key_table

    for other, keys in key_table().by_section.items():
        if other != section and name.lower() in keys:
            return f"; did you mean '{keys[name.lower()].label}'?"
    return ""


def file_values(data: Mapping[str, Any], problems: list[str]) -> dict[Key, RawValue]:
    """Match the file's keys to the table, case-insensitively; report unknown and doubled keys."""
    from syncd.config.table import key_table

    by_section = key_table().by_section
    found: dict[Key, RawValue] = {}
    spelled: dict[Key, str] = {}

    def put(k: Key, given: str, value: object) -> None:
        if k in found:
            problems.append(f"{k.label} is given twice (as '{spelled[k]}' and '{given}'); keep one")
            return
        found[k] = RawValue(value, "file", k.label)
        spelled[k] = given

    sections = {s.lower(): s for s in by_section if s}
    for name, value in data.items():
        lower = name.lower()
        if lower in by_section[""]:
            put(by_section[""][lower], name, value)
        elif lower in sections:
            section = sections[lower]
            if not isinstance(value, dict):
                problems.append(f"[{section}] must be a table (a [{section}] section)")
                continue
            for sub, subvalue in value.items():
                k = by_section[section].get(sub.lower())
                if k is None:
                    names = [c.name for c in by_section[section].values()]
                    hint = suggest(sub, names) or _elsewhere(sub, section)
                    problems.append(f"unknown key '{sub}' in [{section}]{hint}")
                else:
                    put(k, sub, subvalue)
        elif isinstance(value, dict):
            close = difflib.get_close_matches(lower, list(sections), n=1, cutoff=0.5)
            hint = f"; did you mean [{sections[close[0]]}]?" if close else ""
            problems.append(f"unknown section [{name}]{hint}")
        else:
            names = [c.name for c in by_section[""].values()]
            hint = suggest(name, names) or _elsewhere(name, "")
            problems.append(f"unknown key '{name}' in [top level]{hint}")
    return found


def env_values(
    env: Mapping[str, str], problems: list[str], warnings: list[str]
) -> dict[Key, RawValue]:
    """SYNCD_<KEY>, SYNCD_<SECTION>_<KEY> and their _FILE variants (empty means unset)."""
    from syncd.config.table import key_table

    keys = key_table().keys
    found: dict[Key, RawValue] = {}
    for k in keys:
        for var in (k.env_var, *k.extra_env):
            text = _env_text(env, var, problems)
            if text is not None:
                used = var if env.get(var) else f"{var}{FILE_SUFFIX}"
                origin = f"env {var}" if used == var else f"file named by {used}"
                where = f"{k.label} (from {used})"
                found[k] = RawValue(_from_env_text(k, text, where, problems), origin, where)
                break
    known = {v for k in keys for v in (k.env_var, f"{k.env_var}{FILE_SUFFIX}")}
    for var in sorted(env):
        if var.startswith(ENV_PREFIX) and var not in known and env[var]:
            if not var.startswith(ENV_NOT_SETTINGS):
                hint = suggest(var, sorted(known))
                warnings.append(f"environment variable {var} is not a syncd setting{hint}")
    return found


def _env_text(env: Mapping[str, str], var: str, problems: list[str]) -> str | None:
    direct, from_file = env.get(var, ""), env.get(var + FILE_SUFFIX, "")
    if direct and from_file:
        problems.append(f"{var} and {var}{FILE_SUFFIX} are both set; set only one")
        return None
    if direct:
        return direct
    if not from_file:
        return None
    try:
        return Path(from_file).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        problems.append(f"{var}{FILE_SUFFIX}: cannot read {from_file}: {reason}")
        return None


def _from_env_text(k: Key, text: str, where: str, problems: list[str]) -> object:
    """An environment string read as a TOML value of the key's kind."""
    if k.kind is Kind.BOOL:
        if text.strip().lower() in ("true", "false"):
            return text.strip().lower() == "true"
        problems.append(f"{where}: expected true or false, got {toml_text(text)}")
        return INVALID
    if k.kind is Kind.INT:
        if _INT.fullmatch(text.strip()):
            return int(text)
        problems.append(f"{where}: expected a whole number, got {toml_text(text)}")
        return INVALID
    if k.kind is Kind.NAMES and not text.lstrip().startswith("["):
        return [part.strip() for part in text.split(",") if part.strip()]
    if k.kind in (Kind.NAMES, Kind.HEADERS):
        try:
            return tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            shape = '[{Key = "X-Name", Value = "v"}]' if k.kind is Kind.HEADERS else '["a", "b"]'
            problems.append(f"{where}: must be a TOML array such as {shape}")
            return INVALID
    return text


def convert(k: Key, raw: RawValue, problems: list[str]) -> object:
    """A raw value as the key's Python type, or INVALID with one problem recorded."""
    value, where = raw.value, raw.where
    if value is INVALID:
        return INVALID
    try:
        return _CONVERTERS[k.kind](k, value)
    except _Problem as problem:
        problems.append(f"{where}: {problem}")
        return INVALID


class _Problem(Exception):
    """What is wrong with one value; `convert` prefixes the key."""


def toml_text(value: object) -> str:
    """`value` written as TOML, as the operator wrote it in the file (`true`, `"5"`,
    `2026-01-01T00:00:00+00:00`, `[1, 2]`): messages speak TOML, not Python reprs."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (datetime, date, dt_time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def toml_type(value: object) -> str:
    """What kind of TOML value `value` is ("a boolean", "a date-time"), for a secret's key,
    whose value is never echoed."""
    kinds: tuple[tuple[type | tuple[type, ...], str], ...] = (
        (bool, "a boolean"),
        (str, "a string"),
        (int, "an integer"),
        (float, "a float"),
        (datetime, "a date-time"),
        (date, "a date"),
        (dt_time, "a time"),
        ((list, tuple), "an array"),
        (dict, "a table"),
    )
    return next((name for kind, name in kinds if isinstance(value, kind)), "a value")


def _string(k: Key, value: object) -> str:
    if not isinstance(value, str):
        shown = toml_type(value) if k.secret else toml_text(value)
        raise _Problem(f"expected a string, got {shown}")
    return value


def _secret(k: Key, value: object) -> Secret:
    return Secret(_string(k, value))


def _path(k: Key, value: object) -> Path:
    return Path(_string(k, value)).expanduser()


def _url(k: Key, value: object) -> str:
    text = _string(k, value).strip()
    if text and not re.match(r"^https?://[^/\s]+", text):
        raise _Problem(f"{text!r} is not an http:// or https:// URL")
    return text.rstrip("/")


def _bool(k: Key, value: object) -> bool:
    if not isinstance(value, bool):
        raise _Problem(f"expected true or false, got {toml_text(value)}")
    return value


def _int(k: Key, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Problem(f"expected a whole number, got {toml_text(value)}")
    return value


def _port(k: Key, value: object) -> int:
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _Problem(f"expected a port number from 1 to 65535, got {toml_text(value)}")
    return value


def _duration(k: Key, value: object) -> timedelta:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        shown = toml_text(value)
        raise _Problem(f"{shown} is a bare number; add a unit, e.g. '{shown}s', '15m' or '1h'")
    text = _string(k, value).strip()
    if _BARE_NUMBER.fullmatch(text) and float(text) != 0:
        raise _Problem(f"{text!r} is a bare number; add a unit, e.g. '{text}s', '15m' or '1h'")
    try:
        duration = parse_duration(text)
    except ValueError:
        raise _Problem(
            f"{text!r} is not a duration; write a number with a unit (ms, s, m, h, d), "
            "e.g. '90s', '15m', '1h30m'"
        ) from None
    if duration.total_seconds() < 0:
        raise _Problem(f"{text!r} is negative; durations must be zero or more")
    return duration


def _timestamp(k: Key, value: object) -> datetime:
    example = "write it as RFC 3339, e.g. '2026-01-01T00:00:00Z'"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise _Problem(f"{value.isoformat()} has no time zone; {example}")
        return value.astimezone(UTC)
    if isinstance(value, date):
        raise _Problem(f"{value.isoformat()} is a date without a time; {example}")
    text = _string(k, value)
    try:
        return parse_timestamp(text)
    except ValueError:
        raise _Problem(f"{text!r} is not an RFC 3339 timestamp; {example}") from None


def _choice(k: Key, value: object) -> str:
    text = _string(k, value).strip()
    for choice in k.choices:
        if choice.lower() == text.lower():
            return choice
    allowed = ", ".join(f"'{c}'" for c in k.choices)
    raise _Problem(f"{text!r} is not one of {allowed}")


def _names(k: Key, value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        example = '["EventStart", "IndvId"]'
        raise _Problem(f"expected a list of names, e.g. {example}, got {toml_text(value)}")
    return tuple(value)


def _headers(k: Key, value: object) -> tuple[HttpHeader, ...]:
    """[[AdditionalHttpHeader]] tables with Key and Value (values never echoed)."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, dict) for v in value):
        raise _Problem("must be [[AdditionalHttpHeader]] tables, each with Key and Value")
    headers = []
    for n, table in enumerate(value, start=1):
        fields = {name.lower(): v for name, v in table.items()}
        extra = sorted(set(fields) - {"key", "value"})
        name, text = fields.get("key"), fields.get("value")
        if extra:
            raise _Problem(f"table {n} has unknown keys {extra}; only Key and Value are allowed")
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise _Problem(f"table {n}: Key must be an HTTP header name, not {name!r}")
        if not isinstance(text, str) or "\n" in text or "\r" in text:
            raise _Problem(f"table {n} ({name}): Value must be a one-line string")
        headers.append(HttpHeader(name, Secret(text)))
    return tuple(headers)


_CONVERTERS: dict[Kind, Any] = {
    Kind.STRING: _string,
    Kind.SECRET: _secret,
    Kind.PATH: _path,
    Kind.URL: _url,
    Kind.BOOL: _bool,
    Kind.INT: _int,
    Kind.PORT: _port,
    Kind.DURATION: _duration,
    Kind.TIMESTAMP: _timestamp,
    Kind.CHOICE: _choice,
    Kind.NAMES: _names,
    Kind.HEADERS: _headers,
}


def is_empty(value: object) -> bool:
    """An empty string given for a key means the key's default (as hauser treats ApiURL)."""
    return isinstance(value, str) and not value.strip()
