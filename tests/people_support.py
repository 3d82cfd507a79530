"""The people table's expectation (`ExportIndividuals`), computed from the simulator's
individuals exports independently of syncd's transform, and the stored rows read back in the
same shape: shared by tests/test_individuals.py and tests/test_crash.py."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from syncd.people import people_batch_id
from syncd.simulator import Simulator
from syncd.timeutil import UTC

IDENTITY = ("UserId", "UserCreated", "UserAppKey", "UserDisplayName", "UserEmail")


def _naive(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).replace(tzinfo=None)


def expected_people(
    sim: Simulator, windows: Sequence[tuple[datetime, datetime]]
) -> dict[int, dict[str, Any]]:
    """IndvId -> the row of the latest window the individual has events in."""
    people: dict[int, dict[str, Any]] = {}
    for start, end in windows:
        for raw in sim.expected_individuals(start, end):
            people[int(raw["IndvId"])] = {
                "UserId": raw.get("UserId"),
                "UserCreated": _naive(raw["UserCreated"]) if raw.get("UserCreated") else None,
                "UserAppKey": raw.get("UserAppKey"),
                "UserDisplayName": raw.get("UserDisplayName"),
                "UserEmail": raw.get("UserEmail"),
                "UserVars": {k: v for k, v in raw.items() if k.startswith("user_")},
                "SyncdExportEnd": end.replace(tzinfo=None),
                "SyncdBatchId": people_batch_id(start, end),
            }
    return people


def _as_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


class DuplicatePerson(AssertionError):
    """The people table holds an individual twice."""


def stored_people(rows: Sequence[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The people table's rows keyed like `expected_people` (names folded by the warehouse
    matched back to syncd's spelling). An individual stored twice is an error (DuplicatePerson)."""
    spelled = {n.lower(): n for n in ("IndvId", *IDENTITY, "UserVars", "SyncdExportEnd")}
    spelled["syncdbatchid"] = "SyncdBatchId"
    out: dict[int, dict[str, Any]] = {}
    for row in rows:
        named = {spelled.get(k.lower(), k): v for k, v in row.items()}
        created = named["UserCreated"]
        if isinstance(created, datetime) and created.tzinfo is not None:
            created = created.astimezone(UTC).replace(tzinfo=None)
        end = named["SyncdExportEnd"]
        if isinstance(end, datetime) and end.tzinfo is not None:
            end = end.astimezone(UTC).replace(tzinfo=None)
        if int(named["IndvId"]) in out:
            raise DuplicatePerson(f"IndvId {named['IndvId']} has more than one row")
        out[int(named["IndvId"])] = {
            **{k: named[k] for k in ("UserId", "UserAppKey", "UserDisplayName", "UserEmail")},
            "UserCreated": created,
            "UserVars": _as_json(named["UserVars"]),
            "SyncdExportEnd": end,
            "SyncdBatchId": named["SyncdBatchId"],
        }
    return out


def assert_people_equal(
    stored: dict[int, dict[str, Any]], expected: dict[int, dict[str, Any]]
) -> None:
    assert sorted(stored) == sorted(expected)
    for indv_id, row in expected.items():
        assert stored[indv_id] == row, indv_id
