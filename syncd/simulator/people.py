"""Individuals exports (`type: TYPE_INDIVIDUAL`): the people behind a window's events.

FullStory's "Create Export" page: an individuals export holds one row per individual matching
the segment; for TYPE_INDIVIDUAL, `timeRange` selects the individuals who performed events in
it. The simulator derives each row from the same generated events an event export of the
window serves (late events not arrived yet left out alike), so the people and the events
agree: the identity fields of the individual's first event in the window (IndvId, UserId,
UserCreated, UserAppKey, UserDisplayName, UserEmail; absent where the events lack them) and
every user var (`user_<name>_<type>`) at its latest value in the window. Rows come in the
order of each individual's first event.
"""

from __future__ import annotations

from typing import Any

from syncd.simulator.events import EventGenerator

#: The documented identity fields an individuals row carries (user vars follow them).
INDIVIDUAL_FIELDS: tuple[str, ...] = (
    "IndvId",
    "UserId",
    "UserCreated",
    "UserAppKey",
    "UserDisplayName",
    "UserEmail",
)
USER_VAR_PREFIX = "user_"


def individual_rows(
    generator: EventGenerator, start_ms: int, end_ms: int, late_hidden_from: int | None
) -> list[dict[str, Any]]:
    """One row per IndvId with an event in [start_ms, end_ms), as described above."""
    people: dict[int, dict[str, Any]] = {}
    for _, event, _ in generator.window(start_ms, end_ms, late_hidden_from):
        indv_id = event["IndvId"]
        row = people.get(indv_id)
        if row is None:
            row = people[indv_id] = {k: event[k] for k in INDIVIDUAL_FIELDS if k in event}
        for key, value in event.items():
            if key.startswith(USER_VAR_PREFIX):
                row[key] = value
    return list(people.values())
