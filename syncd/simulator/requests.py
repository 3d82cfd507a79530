"""The body of POST /segments/v1/exports, read the way the real API reads it.

The API is protobuf behind a JSON gateway, so every field has two spellings: the JSON name
(`segmentId`, `timeRange`, `segmentTimeRange`) and the protobuf name (`segment_id`,
`time_range`, `segment_time_range`); FullStory-authored clients send the second. Both are
accepted for every field; a field given in both spellings at once is a 400. Unknown fields
are ignored.

Export types, as FullStory's "Create Export" page describes them: `type` is `TYPE_EVENT`
(events) or `TYPE_INDIVIDUAL` (the individuals matching the segment, one row each). An event
export's breadth is a separate `scope` (`SCOPE_EVENT`, `SCOPE_PAGES`, `SCOPE_SESSIONS`,
`SCOPE_INDIVIDUAL`): for the built-in "everyone" segment every scope selects every event, so
the simulator serves the same events for each. An older revision of the page listed
`TYPE_PAGES` and `TYPE_SESSIONS` among the scopes under the name `type`; the simulator keeps
the two readings apart: `TYPE_INDIVIDUAL` is always the individuals export, and
`TYPE_PAGES` / `TYPE_SESSIONS` as a `type` are a 400 that names the `scope` to use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from syncd.simulator.bodies import FORMAT_NDJSON, FORMATS
from syncd.simulator.handler import HttpError
from syncd.timeutil import parse_timestamp

TYPE_EVENT = "TYPE_EVENT"
TYPE_INDIVIDUAL = "TYPE_INDIVIDUAL"
TYPES: tuple[str, ...] = (TYPE_EVENT, TYPE_INDIVIDUAL)
SCOPES: tuple[str, ...] = ("SCOPE_EVENT", "SCOPE_PAGES", "SCOPE_SESSIONS", "SCOPE_INDIVIDUAL")
#: Scope names an older page revision listed as `type` values.
_SCOPE_TYPES = {"TYPE_PAGES": "SCOPE_PAGES", "TYPE_SESSIONS": "SCOPE_SESSIONS"}

#: JSON name -> protobuf name, for every field of the request and of a TimeRange.
FIELD_NAMES: dict[str, str] = {
    "segmentId": "segment_id",
    "type": "type",
    "format": "format",
    "timeRange": "time_range",
    "segmentTimeRange": "segment_time_range",
    "timezone": "timezone",
    "fields": "fields",
    "scope": "scope",
}


@dataclass(frozen=True)
class CreateRequest:
    """A create request, whichever spelling it came in."""

    type: str
    format: str
    start: datetime
    end: datetime
    fields: list[str] | None
    segment_id: str
    scope: str | None


def _field(body: dict[str, Any], json_name: str, proto_name: str) -> Any:
    if json_name != proto_name and json_name in body and proto_name in body:
        raise HttpError(
            400, "invalid_argument", f"{json_name} and {proto_name} are the same field: give one"
        )
    return body[json_name] if json_name in body else body.get(proto_name)


def get(body: dict[str, Any], json_name: str) -> Any:
    """The request field `json_name` (None when absent), in either spelling."""
    return _field(body, json_name, FIELD_NAMES[json_name])


def parse_create(body: dict[str, Any]) -> CreateRequest:
    """The request, or the 400 the API would answer."""
    export_type = get(body, "type")
    export_type = TYPE_EVENT if export_type is None else export_type
    if export_type in _SCOPE_TYPES:
        raise HttpError(
            400,
            "invalid_argument",
            f"type {export_type} is not an export type (TYPE_EVENT or TYPE_INDIVIDUAL): "
            f"for an event export of that breadth give scope {_SCOPE_TYPES[export_type]}",
        )
    if export_type not in TYPES:
        raise HttpError(400, "invalid_argument", f"unknown type {export_type!r}")
    scope = get(body, "scope")
    if scope is not None and scope not in SCOPES:
        raise HttpError(400, "invalid_argument", f"unknown scope {scope!r}")
    export_format = get(body, "format")
    export_format = FORMAT_NDJSON if export_format is None else export_format
    if export_format not in FORMATS:
        raise HttpError(400, "invalid_argument", f"unknown format {export_format!r}")
    time_range = get(body, "timeRange")
    if not isinstance(time_range, dict):
        raise HttpError(
            400, "invalid_argument", "timeRange (or time_range) {start, end} is required"
        )
    try:
        start = parse_timestamp(str(_field(time_range, "start", "start") or ""))
        end = parse_timestamp(str(_field(time_range, "end", "end") or ""))
    except ValueError as exc:
        raise HttpError(400, "invalid_argument", f"timeRange: {exc}") from None
    if end <= start:
        raise HttpError(400, "invalid_argument", "timeRange end must be after start")
    segment_range = get(body, "segmentTimeRange")
    if segment_range is not None and not isinstance(segment_range, dict):
        raise HttpError(400, "invalid_argument", "segmentTimeRange must be {start, end}")
    fields = get(body, "fields")
    if fields is not None and (
        not isinstance(fields, list) or not all(isinstance(f, str) for f in fields)
    ):
        raise HttpError(400, "invalid_argument", "fields must be a list of strings")
    segment_id = get(body, "segmentId")
    timezone = get(body, "timezone")
    if timezone is not None and not isinstance(timezone, str):
        raise HttpError(400, "invalid_argument", "timezone must be a string")
    return CreateRequest(
        type=export_type,
        format=export_format,
        start=start,
        end=end,
        fields=fields or None,
        segment_id=str(segment_id) if segment_id is not None else "everyone",
        scope=scope,
    )
