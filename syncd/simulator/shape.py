"""How a generated event is served: legacy field names, the requested fields, bad rows."""

from __future__ import annotations

from typing import Any

from syncd.simulator.events import BAD_TIME

#: Keys the segment export renamed; legacy bundles carry the old names.
LEGACY_RENAMES: dict[str, str] = {
    "PageUserAgent": "PageAgent",
    "EventTargetSelector": "EventTargetSelectorTok",
}

_BAD_INT_TARGETS = ("IndvId", "UserId", "SessionId", "PageId", "PageDuration")
_BAD_TIME_TARGETS = ("EventStart", "PageStart", "SessionStart")


def legacy_shape(event: dict[str, Any]) -> dict[str, Any]:
    """The same event as a legacy bundle carries it (old names, in place)."""
    if not any(key in event for key in LEGACY_RENAMES):
        return event
    return {LEGACY_RENAMES.get(key, key): value for key, value in event.items()}


def select_fields(event: dict[str, Any], fields: FieldSelector | None) -> dict[str, Any]:
    """Keep only the requested fields (`None` keeps every field)."""
    if fields is None:
        return event
    return {key: value for key, value in event.items() if fields.wants(key)}


class FieldSelector:
    """A segment export's `fields`: exact names plus prefix wildcards such as `user_*`."""

    def __init__(self, fields: list[str]) -> None:
        self.names = frozenset(f for f in fields if not f.endswith("*"))
        self.prefixes = tuple(f[:-1] for f in fields if f.endswith("*"))
        self.columns = [f for f in fields if not f.endswith("*")]

    def wants(self, key: str) -> bool:
        return key in self.names or (bool(self.prefixes) and key.startswith(self.prefixes))


def corrupt(event: dict[str, Any], kind: str) -> tuple[dict[str, Any], str] | None:
    """A mistyped copy of the event and its reason, or None when no target field is present."""
    targets: tuple[str, ...] = _BAD_TIME_TARGETS if kind == BAD_TIME else _BAD_INT_TARGETS
    value = "not-a-time" if kind == BAD_TIME else "abc"
    for target in targets:
        if target in event:
            bad = dict(event)
            bad[target] = value
            return bad, f"{kind}:{target}"
    return None
