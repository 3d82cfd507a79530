"""The export-API simulator, over real HTTP: auth, the export flow, data shape, legacy, faults."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest

from syncd.errors import ConfigError
from syncd.fields import EXPORT_FIELDS
from syncd.simulator import (
    BAD_MALFORMED,
    FORMAT_CSV,
    FORMAT_JSON,
    FORMAT_NDJSON,
    ID_BASE,
    Endpoint,
    Fault,
    FaultPlan,
    Simulator,
    SimulatorConfig,
    serve,
)
from syncd.simulator.bodies import ExportSpec, render_gzip
from syncd.simulator.config import NEW_FIELD_NAME
from syncd.simulator.events import EventGenerator, to_ms
from syncd.simulator.operations import mint_id
from syncd.timeutil import UTC, parse_timestamp

H = timedelta(hours=1)
T0 = datetime(2026, 11, 1, tzinfo=UTC)
AUTH = {"Authorization": "Basic sim-key"}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class ManualClock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0 + timedelta(days=3))


@pytest.fixture
def config(clock: ManualClock) -> SimulatorConfig:
    return SimulatorConfig(events_per_hour=300, clock=clock)


@pytest.fixture
def sim(config: SimulatorConfig) -> Iterator[Simulator]:
    with Simulator(config) as running:
        yield running


@pytest.fixture(scope="module")
def web() -> Iterator[httpx.Client]:
    """A client without the API key, as signed URLs must be fetched."""
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture
def api(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, headers=AUTH, timeout=10) as client:
        yield client


def create(
    api: httpx.Client,
    start: datetime = T0,
    end: datetime = T0 + H,
    export_format: str = FORMAT_NDJSON,
    fields: list[str] | None = None,
) -> str:
    request: dict[str, Any] = {
        "segmentId": "everyone",
        "type": "TYPE_EVENT",
        "format": export_format,
        "timeRange": {"start": _rfc3339(start), "end": _rfc3339(end)},
        "segmentTimeRange": {"start": "", "end": ""},
        "timezone": "UTC",
    }
    if fields is not None:
        request["fields"] = fields
    response = api.post("/segments/v1/exports", json=request)
    assert response.status_code == 200, response.text
    return str(response.json()["operationId"])


def poll(api: httpx.Client, operation_id: str, until: str = "PENDING") -> dict[str, Any]:
    """Poll until the state is no longer `until` (the build runs on real threads)."""
    deadline = time.monotonic() + 10
    while True:
        state: dict[str, Any] = api.get(f"/operations/v1/{quote(operation_id, safe='')}").json()
        if state["state"] != until or time.monotonic() > deadline:
            return state
        time.sleep(0.01)


def location(api: httpx.Client, operation_id: str) -> str:
    export_id = poll(api, operation_id)["results"]["searchExportId"]
    response = api.get(f"/search/v1/exports/{quote(export_id, safe='')}/results")
    return str(response.json()["location"])


def export(api: httpx.Client, web: httpx.Client, **kwargs: Any) -> bytes:
    """Create, poll, fetch the signed URL without the key, and gunzip the body."""
    response = web.get(location(api, create(api, **kwargs)))
    assert response.status_code == 200, response.text
    return gzip.decompress(response.content)


def raw_download(web: httpx.Client, url: str) -> tuple[httpx.Headers, bytes]:
    """The body bytes exactly as sent (no content decoding)."""
    with web.stream("GET", url) as response:
        return response.headers, b"".join(response.iter_raw())


def ndjson_events(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in body.splitlines()]


def _rfc3339(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic wrong"}, {"Authorization": "Basic c2ltLWtleTo="}],
    ids=["missing", "wrong", "base64-user-password"],
)
def test_a_missing_or_wrong_key_is_401(
    sim: Simulator, headers: dict[str, str], web: httpx.Client
) -> None:
    response = web.get(f"{sim.url}/api/v1/export/list?start=0", headers=headers)
    assert (response.status_code, response.json()["code"]) == (401, "unauthenticated")


def test_errors_are_json_code_and_message(api: httpx.Client) -> None:
    assert api.get("/operations/v1/nope").json() == {
        "code": "not_found",
        "message": "no such operation (is the id URL-quoted?)",
    }


def test_config_repr_hides_the_api_key() -> None:
    assert "secret-key" not in repr(SimulatorConfig(api_key="secret-key"))


def test_url_needs_a_started_simulator() -> None:
    with pytest.raises(ConfigError, match="not started"):
        _ = Simulator().url


def test_a_busy_port_is_a_config_error(sim: Simulator) -> None:
    with pytest.raises(ConfigError, match="cannot listen"):
        Simulator(port=sim.port).start()


def test_bundle_hours_must_divide_a_day() -> None:
    with pytest.raises(ConfigError, match="divide 24"):
        SimulatorConfig(legacy_bundle_hours=5)


# -- the segment export flow ---------------------------------------------------------------


def test_export_flow_returns_the_expected_events(
    sim: Simulator, api: httpx.Client, web: httpx.Client
) -> None:
    assert ndjson_events(export(api, web)) == sim.expected_events(T0, T0 + H)


@pytest.fixture
def hostile_api(config: SimulatorConfig) -> Iterator[httpx.Client]:
    """A client of a simulator with `hostile_ids` (ids that need URL quoting)."""
    config.hostile_ids = True
    with (
        Simulator(config) as running,
        httpx.Client(base_url=running.url, headers=AUTH, timeout=10) as client,
    ):
        yield client


def test_hostile_operation_ids_need_url_quoting(hostile_api: httpx.Client) -> None:
    operation_id = create(hostile_api)
    export_id = poll(hostile_api, operation_id)["results"]["searchExportId"]
    assert all(i.startswith("+/") and i.endswith("==") for i in (operation_id, export_id))


def test_an_unquoted_hostile_operation_id_is_not_found(hostile_api: httpx.Client) -> None:
    assert hostile_api.get(f"/operations/v1/{create(hostile_api)}").status_code == 404


def test_ids_are_url_safe_by_default(api: httpx.Client) -> None:
    operation_id = create(api)
    export_id = poll(api, operation_id)["results"]["searchExportId"]
    for value in (operation_id, export_id):
        assert re.fullmatch(r"[A-Za-z0-9_-]+", value), value


def _unencoded_export(api: httpx.Client, web: httpx.Client, request: dict[str, Any]) -> bytes:
    """The flow as segment-export-cli runs it: ids put into paths as they are, unencoded."""
    response = api.post("/segments/v1/exports", json=request)
    assert response.status_code == 200, response.text
    operation_id = response.json()["operationId"]
    deadline = time.monotonic() + 10
    while True:
        state = api.get(f"/operations/v1/{operation_id}")
        assert state.status_code == 200, state.text
        if state.json()["state"] == "COMPLETED" or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    export_id = state.json()["results"]["searchExportId"]
    results = api.get(f"/search/v1/exports/{export_id}/results")
    assert results.status_code == 200, results.text
    return gzip.decompress(web.get(results.json()["location"]).content)


def _camel_request(export_type: str = "TYPE_EVENT") -> dict[str, Any]:
    return {
        "segmentId": "everyone",
        "type": export_type,
        "format": FORMAT_NDJSON,
        "timeRange": {"start": _rfc3339(T0), "end": _rfc3339(T0 + H)},
        "segmentTimeRange": {"start": "", "end": ""},
        "timezone": "UTC",
    }


def _snake_request(export_type: str = "TYPE_EVENT") -> dict[str, Any]:
    """What patrick-fs/segment-export-cli sends: protobuf field names."""
    return {
        "segment_id": "everyone",
        "type": export_type,
        "format": FORMAT_NDJSON,
        "time_range": {"start": _rfc3339(T0), "end": _rfc3339(T0 + H)},
        "segment_time_range": {"start": "", "end": ""},
    }


@pytest.mark.parametrize("spelling", [_camel_request, _snake_request], ids=["json", "protobuf"])
def test_both_spellings_with_unencoded_ids_serve_the_window(
    sim: Simulator, api: httpx.Client, web: httpx.Client, spelling: Any
) -> None:
    body = _unencoded_export(api, web, spelling())
    assert ndjson_events(body) == sim.expected_events(T0, T0 + H)


def test_protobuf_spelling_of_fields_selects_them(
    sim: Simulator, api: httpx.Client, web: httpx.Client
) -> None:
    request = _snake_request()
    request["fields"] = ["EventStart", "EventType"]
    rows = ndjson_events(_unencoded_export(api, web, request))
    assert rows == sim.expected_events(T0, T0 + H, fields=["EventStart", "EventType"])


def test_a_field_in_both_spellings_is_a_400(api: httpx.Client) -> None:
    request = {**_camel_request(), "time_range": _camel_request()["timeRange"]}
    response = api.post("/segments/v1/exports", json=request)
    assert (response.status_code, response.json()["message"]) == (
        400,
        "timeRange and time_range are the same field: give one",
    )


def test_a_missing_time_range_names_both_spellings(api: httpx.Client) -> None:
    response = api.post("/segments/v1/exports", json={"segment_id": "everyone"})
    assert (response.status_code, response.json()["message"]) == (
        400,
        "timeRange (or time_range) {start, end} is required",
    )


@pytest.mark.parametrize(
    "scope", ["SCOPE_EVENT", "SCOPE_PAGES", "SCOPE_SESSIONS", "SCOPE_INDIVIDUAL"]
)
def test_every_event_scope_of_everyone_serves_every_event(
    sim: Simulator, api: httpx.Client, web: httpx.Client, scope: str
) -> None:
    body = _unencoded_export(api, web, {**_camel_request(), "scope": scope})
    assert ndjson_events(body) == sim.expected_events(T0, T0 + H)


@pytest.mark.parametrize(
    ("old", "scope"), [("TYPE_PAGES", "SCOPE_PAGES"), ("TYPE_SESSIONS", "SCOPE_SESSIONS")]
)
def test_a_scope_given_as_type_is_a_400_naming_the_scope(
    api: httpx.Client, old: str, scope: str
) -> None:
    response = api.post("/segments/v1/exports", json=_camel_request(old))
    assert response.status_code == 400
    assert f"give scope {scope}" in response.json()["message"]


# -- individuals exports (TYPE_INDIVIDUAL) -------------------------------------------------


@pytest.mark.parametrize("spelling", [_camel_request, _snake_request], ids=["json", "protobuf"])
def test_an_individuals_export_serves_one_row_per_person_of_the_window(
    sim: Simulator, api: httpx.Client, web: httpx.Client, spelling: Any
) -> None:
    people = ndjson_events(_unencoded_export(api, web, spelling("TYPE_INDIVIDUAL")))
    assert people == sim.expected_individuals(T0, T0 + H)
    # Independently of the simulator's own derivation: from the window's events.
    events = sim.expected_events(T0, T0 + H)
    assert [p["IndvId"] for p in people] == list(dict.fromkeys(e["IndvId"] for e in events))
    identity = ("IndvId", "UserId", "UserCreated", "UserAppKey", "UserDisplayName", "UserEmail")
    for person in people:
        own = [e for e in events if e["IndvId"] == person["IndvId"]]
        assert {k: person[k] for k in identity if k in person} == {
            k: own[0][k] for k in identity if k in own[0]
        }
        latest: dict[str, Any] = {}
        for event in own:
            latest.update({k: v for k, v in event.items() if k.startswith("user_")})
        assert {k: v for k, v in person.items() if k.startswith("user_")} == latest
        assert not {k for k in person if k.startswith(("Event", "Page", "evt_", "page_"))}
    assert any(any(k.startswith("user_") for k in p) for p in people)


def test_an_individuals_csv_export_has_the_identity_columns(
    sim: Simulator, api: httpx.Client, web: httpx.Client
) -> None:
    request = {**_camel_request("TYPE_INDIVIDUAL"), "format": FORMAT_CSV}
    rows = list(csv.DictReader(io.StringIO(_unencoded_export(api, web, request).decode())))
    people = sim.expected_individuals(T0, T0 + H)
    assert list(rows[0]) == [
        "IndvId",
        "UserId",
        "UserCreated",
        "UserAppKey",
        "UserDisplayName",
        "UserEmail",
    ]
    assert [int(r["IndvId"]) for r in rows] == [p["IndvId"] for p in people]


def test_operation_is_pending_until_the_latency_passed(
    sim: Simulator, api: httpx.Client, clock: ManualClock
) -> None:
    sim.config.operation_latency = 30.0
    operation_id = create(api)
    clock.advance(15)
    halfway = poll(api, operation_id, until="never")
    deadline = time.monotonic() + 10
    while halfway["estimatePctComplete"] < 50 and time.monotonic() < deadline:
        halfway = poll(api, operation_id, until="never")
    clock.advance(15)
    done = poll(api, operation_id)
    assert (halfway["state"], halfway["estimatePctComplete"], done["state"]) == (
        "PENDING",
        50,
        "COMPLETED",
    )


def test_completed_operation_names_its_export(api: httpx.Client) -> None:
    state = poll(api, create(api))
    assert (state["state"], state["errorDetails"], set(state["results"])) == (
        "COMPLETED",
        "",
        {"searchExportId", "expires"},
    )


def test_results_before_completion_are_refused(sim: Simulator, api: httpx.Client) -> None:
    sim.config.operation_latency = 60.0
    create(api)
    export_id = quote(mint_id(b"ex", 1), safe="")  # the first export's id, not yet shown
    assert api.get(f"/search/v1/exports/{export_id}/results").status_code == 400


def test_signed_url_refuses_the_api_key(api: httpx.Client, web: httpx.Client) -> None:
    response = web.get(location(api, create(api)), headers=AUTH)
    assert response.status_code == 400


def test_signed_url_expires_after_its_ttl(
    api: httpx.Client, clock: ManualClock, web: httpx.Client
) -> None:
    url = location(api, create(api))
    clock.advance(300)
    assert web.get(url).json()["code"] == "expired_token"


def test_a_fresh_results_call_gives_a_working_url(
    api: httpx.Client, clock: ManualClock, web: httpx.Client
) -> None:
    operation_id = create(api)
    location(api, operation_id)
    clock.advance(301)
    assert web.get(location(api, operation_id)).status_code == 200


def test_a_tampered_signature_is_403(api: httpx.Client, web: httpx.Client) -> None:
    url = location(api, create(api))
    assert web.get(url[:-4] + "0000").status_code == 403


def test_download_body_is_gzip(api: httpx.Client, web: httpx.Client) -> None:
    _, body = raw_download(web, location(api, create(api)))
    assert body[:2] == b"\x1f\x8b"


def test_bodies_of_many_gzip_members_end_each_member_at_a_row_end() -> None:
    """`gzip_member_bytes`: the same text as one member, cut into members at row ends."""
    spec = ExportSpec(to_ms(T0), to_ms(T0 + H), FORMAT_NDJSON)
    generator = EventGenerator(seed=3, events_per_hour=400)
    whole = gzip.decompress(render_gzip(generator, spec, level=1))
    body = render_gzip(generator, spec, level=1, member_bytes=20_000)
    texts = []
    while body:
        inflate = zlib.decompressobj(31)
        texts.append(inflate.decompress(body))
        body = inflate.unused_data
    assert b"".join(texts) == whole and len(texts) > 5
    assert all(t.endswith(b"\n") and len(t) >= 20_000 for t in texts[:-1])


def test_repeated_downloads_are_served_from_the_cache(
    sim: Simulator, api: httpx.Client, web: httpx.Client
) -> None:
    url = location(api, create(api))
    first, second = web.get(url).content, web.get(url).content
    assert (first == second, sim.stats.bodies_built) == (True, 1)


def test_a_second_export_of_a_window_is_counted(sim: Simulator, api: httpx.Client) -> None:
    create(api)
    create(api)
    assert sim.stats.exports_by_window[(T0, T0 + H)] == 2


def test_a_bad_time_range_is_400(api: httpx.Client) -> None:
    response = api.post(
        "/segments/v1/exports", json={"format": FORMAT_NDJSON, "timeRange": {"start": "x"}}
    )
    assert (response.status_code, response.json()["code"]) == (400, "invalid_argument")


# -- formats and fields ---------------------------------------------------------------------


def test_json_format_is_one_array_one_object_a_line(api: httpx.Client, web: httpx.Client) -> None:
    body = export(api, web, export_format=FORMAT_JSON)
    assert (body[:2], body[-2:], orjson.loads(body)) == (
        b"[{",
        b"}]",
        ndjson_events(export(api, web)),
    )


def test_csv_has_a_header_and_one_row_per_event(
    sim: Simulator, api: httpx.Client, web: httpx.Client
) -> None:
    rows = list(csv.reader(io.StringIO(export(api, web, export_format=FORMAT_CSV).decode())))
    assert (rows[0], len(rows) - 1) == (
        [c.name for c in EXPORT_FIELDS],
        len(sim.expected_events(T0, T0 + H)),
    )


def test_csv_cells_match_the_events(sim: Simulator, api: httpx.Client, web: httpx.Client) -> None:
    body = export(api, web, export_format=FORMAT_CSV, fields=["IndvId", "EventStart", "PageName"])
    expected = [
        {k: "" if e.get(k) is None else str(e[k]) for k in ("IndvId", "EventStart", "PageName")}
        for e in sim.expected_events(T0, T0 + H)
    ]
    assert list(csv.DictReader(io.StringIO(body.decode()))) == expected


def test_fields_select_names_and_custom_var_wildcards(api: httpx.Client, web: httpx.Client) -> None:
    fields = ["EventStart", "EventType", "user_*"]
    events = ndjson_events(export(api, web, start=T0, end=T0 + 3 * H, fields=fields))
    keys = {k for e in events for k in e}
    assert {k if not k.startswith("user_") else "user_*" for k in keys} == {
        "EventStart",
        "EventType",
        "user_*",
    }


def test_a_field_added_mid_way_is_served_when_fields_are_omitted(
    clock: ManualClock, web: httpx.Client
) -> None:
    """`new_field_from`: events from then on carry the new field in exports of every field,
    not in exports of a list that does not name it; every other value stays as without it."""
    added = T0 + timedelta(minutes=40)
    plain_config = SimulatorConfig(events_per_hour=300, clock=clock)
    with Simulator(SimulatorConfig(events_per_hour=300, clock=clock, new_field_from=added)) as sim:
        with httpx.Client(base_url=sim.url, headers=AUTH, timeout=10) as api:
            everything = ndjson_events(export(api, web))
            listed = ndjson_events(export(api, web, fields=["EventStart", "user_*"]))
        assert everything == sim.expected_events(T0, T0 + H)
    with Simulator(plain_config) as plain:
        before = plain.expected_events(T0, T0 + H)
    late = [parse_timestamp(e["EventStart"]) >= added for e in everything]
    assert 0 < sum(late) < len(late)
    assert [NEW_FIELD_NAME in e for e in everything] == late
    assert all(
        re.fullmatch(r"step-[1-5]", e[NEW_FIELD_NAME]) for e in everything if NEW_FIELD_NAME in e
    )
    assert [{k: v for k, v in e.items() if k != NEW_FIELD_NAME} for e in everything] == before
    assert not any(NEW_FIELD_NAME in e for e in listed)


def test_new_field_from_must_be_aware() -> None:
    with pytest.raises(ConfigError, match="new_field_from"):
        SimulatorConfig(new_field_from=datetime(2026, 11, 1))


def test_fields_given_to_expected_events_match_the_export(
    sim: Simulator, api: httpx.Client, web: httpx.Client
) -> None:
    fields = ["IndvId", "EventStart", "evt_*"]
    assert ndjson_events(export(api, web, fields=fields)) == sim.expected_events(
        T0, T0 + H, fields=fields
    )


# -- determinism and windows ------------------------------------------------------------------


def test_the_same_window_exports_the_same_bytes(api: httpx.Client, web: httpx.Client) -> None:
    assert export(api, web) == export(api, web)


def test_the_same_seed_gives_the_same_events_in_another_simulator(sim: Simulator) -> None:
    other = Simulator(SimulatorConfig(events_per_hour=300))
    assert other.expected_events(T0, T0 + H) == sim.expected_events(T0, T0 + H)


def test_another_seed_gives_other_events(sim: Simulator) -> None:
    other = Simulator(SimulatorConfig(events_per_hour=300, seed=2))
    assert other.expected_events(T0, T0 + H) != sim.expected_events(T0, T0 + H)


def test_windows_add_up(sim: Simulator) -> None:
    half = T0 + timedelta(minutes=90)
    parts = sim.expected_events(T0, half) + sim.expected_events(half, T0 + 2 * H)
    assert parts == sim.expected_events(T0, T0 + 2 * H)


def test_time_range_is_start_inclusive_end_exclusive(api: httpx.Client, web: httpx.Client) -> None:
    start, end = T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)
    starts = [
        parse_timestamp(e["EventStart"])
        for e in ndjson_events(export(api, web, start=start, end=end))
    ]
    assert (min(starts) >= start, max(starts) < end) == (True, True)


def test_event_count_varies_by_hour_around_the_average(sim: Simulator) -> None:
    counts = [len(sim.served_rows(T0 + n * H, T0 + (n + 1) * H)) for n in range(24)]
    assert (len(set(counts)) > 12, 0.8 < sum(counts) / 24 / 300 < 1.2) == (True, True)


# -- the shape of events -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def day() -> list[dict[str, Any]]:
    """A day of events with mobile fields, as served."""
    return Simulator(SimulatorConfig(events_per_hour=250, include_mobile=True)).expected_events(
        T0, T0 + 24 * H
    )


def test_many_ids_exceed_what_a_float_holds(api: httpx.Client, web: httpx.Client) -> None:
    body = export(api, web, start=T0, end=T0 + 2 * H)
    ids = [e[k] for e in map(json.loads, body.splitlines()) for k in ("IndvId", "SessionId")]
    big = [i for i in ids if i > 2**53]
    # Python's json keeps integers exact; a float would have changed most of these.
    assert sum(int(float(i)) != i for i in big) > len(big) // 2


def test_timestamps_are_rfc3339_utc_with_milliseconds(day: list[dict[str, Any]]) -> None:
    stamps = [
        e[k]
        for e in day
        for k in ("EventStart", "PageStart", "SessionStart", "UserCreated")
        if k in e
    ]
    assert all(TIMESTAMP.match(s) for s in stamps)


def test_events_are_in_event_start_order(day: list[dict[str, Any]]) -> None:
    starts = [e["EventStart"] for e in day]
    assert starts == sorted(starts)


@pytest.mark.parametrize(
    "key",
    [
        "user_plan_str",
        "user_age_int",
        "evt_order.total_real",
        "page_flag_bool",
        "user_signup_date",
        "evt_tags_strs",
    ],
)
def test_custom_vars_of_every_suffix_occur(day: list[dict[str, Any]], key: str) -> None:
    assert any(key in e for e in day)


def test_a_real_custom_var_sometimes_arrives_as_an_integer(day: list[dict[str, Any]]) -> None:
    totals = {type(e["evt_order.total_real"]) for e in day if "evt_order.total_real" in e}
    assert totals == {int, float}


def test_every_catalog_field_occurs(day: list[dict[str, Any]]) -> None:
    keys = {k for e in day for k in e}
    assert {c.name for c in EXPORT_FIELDS} - keys == set()


def test_request_fields_only_on_request_events(day: list[dict[str, Any]]) -> None:
    assert {e["EventType"] for e in day if "ReqUrl" in e} == {"request"}


def test_explicit_nulls_empty_strings_and_unknown_fields_occur(day: list[dict[str, Any]]) -> None:
    assert (
        any(None in e.values() for e in day),
        any("" in e.values() for e in day),
        any("EventNewThing" in e for e in day),
    ) == (True, True, True)


def test_unicode_text_occurs(day: list[dict[str, Any]]) -> None:
    names = {e["UserDisplayName"] for e in day}
    assert {"王小明", "محمد علي", "🦊 Fox Fan"} <= names


def test_mobile_fields_only_when_configured(sim: Simulator, day: list[dict[str, Any]]) -> None:
    without = sim.expected_events(T0, T0 + 3 * H)
    assert (any("AppName" in e for e in day), any("AppName" in e for e in without)) == (True, False)


# -- bad rows --------------------------------------------------------------------------------


@pytest.fixture
def bad_config(clock: ManualClock) -> SimulatorConfig:
    return SimulatorConfig(events_per_hour=300, clock=clock, bad_row_rate=0.2)


def test_malformed_ndjson_lines_do_not_parse(
    bad_config: SimulatorConfig, web: httpx.Client
) -> None:
    with Simulator(bad_config) as sim, httpx.Client(base_url=sim.url, headers=AUTH) as api:
        lines = export(api, web).splitlines()
        malformed = [r.raw for r in sim.served_rows(T0, T0 + H) if r.bad == BAD_MALFORMED]
    unparseable = []
    for line in lines:
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            unparseable.append(line)
    assert (unparseable, len(unparseable) > 5) == (malformed, True)


def test_mistyped_rows_carry_wrong_types(bad_config: SimulatorConfig) -> None:
    rows = Simulator(bad_config).served_rows(T0, T0 + H)
    wrong = {(r.bad, r.event[r.bad.split(":")[1]]) for r in rows if r.bad and r.event}
    assert wrong == {
        ("mistyped_int:IndvId", "abc"),
        ("mistyped_timestamp:EventStart", "not-a-time"),
    }


def test_a_json_array_with_bad_rows_still_parses(
    bad_config: SimulatorConfig, web: httpx.Client
) -> None:
    with Simulator(bad_config) as sim, httpx.Client(base_url=sim.url, headers=AUTH) as api:
        events = orjson.loads(export(api, web, export_format=FORMAT_JSON))
        expected = sim.expected_events(T0, T0 + H)
    good = [e for e in events if e["IndvId"] != "abc" and e["EventStart"] != "not-a-time"]
    assert good == expected


# -- legacy bundles ------------------------------------------------------------------------------


@pytest.fixture
def legacy_config(clock: ManualClock) -> SimulatorConfig:
    clock.now = T0 + 30 * H + timedelta(minutes=5)
    return SimulatorConfig(
        events_per_hour=60,
        clock=clock,
        legacy_bundle_hours=1,
        data_start=T0,
        legacy_downloads_per_minute=None,
    )


@pytest.fixture
def legacy(legacy_config: SimulatorConfig) -> Iterator[tuple[Simulator, httpx.Client]]:
    with (
        Simulator(legacy_config) as sim,
        httpx.Client(base_url=sim.legacy_url, headers=AUTH, timeout=10) as client,
    ):
        yield sim, client


def list_pages(client: httpx.Client, start: int) -> list[list[dict[str, Any]]]:
    pages = []
    while True:
        page = json.loads(client.get("/export/list", params={"start": start}).content)["exports"]
        pages.append(page)
        if len(page) < 20:
            return pages
        start = page[-1]["Stop"]


def test_legacy_list_pages_by_twenty_oldest_first(
    legacy: tuple[Simulator, httpx.Client],
) -> None:
    _, client = legacy
    pages = list_pages(client, int(T0.timestamp()))
    assert [len(p) for p in pages] == [20, 10]


def test_legacy_list_shows_only_complete_bundles(legacy: tuple[Simulator, httpx.Client]) -> None:
    _, client = legacy  # now is 30 h 5 min after the data start, bundles are 1 h long
    bundles = [b for page in list_pages(client, 0) for b in page]
    assert (len(bundles), bundles[-1]["Stop"]) == (30, int((T0 + 30 * H).timestamp()))


def test_no_events_before_the_data_start(legacy: tuple[Simulator, httpx.Client]) -> None:
    sim, _ = legacy
    assert sim.served_rows(T0 - 2 * H, T0) == []


def test_legacy_ids_exceed_2_53_and_stay_exact(legacy: tuple[Simulator, httpx.Client]) -> None:
    _, client = legacy
    first = json.loads(client.get("/export/list", params={"start": 0}).content)["exports"][0]
    assert (first["Id"] > 2**53, first["Id"] == ID_BASE + int(T0.timestamp()) // 3600) == (
        True,
        True,
    )


def test_legacy_bundle_holds_its_events_in_legacy_shape(
    legacy: tuple[Simulator, httpx.Client],
) -> None:
    sim, client = legacy
    bundle = sim.bundles(T0, T0 + H)[0]
    response = client.get("/export/get", params={"id": str(bundle.id)})
    events = json.loads(gzip.decompress(response.content))
    assert events == sim.expected_events(bundle.start, bundle.stop, legacy=True)


def test_legacy_events_use_the_old_field_names(legacy: tuple[Simulator, httpx.Client]) -> None:
    sim, _ = legacy
    keys = {k for e in sim.expected_events(T0, T0 + 3 * H, legacy=True) for k in e}
    assert (
        {"PageAgent", "EventTargetSelectorTok"} <= keys,
        {"PageUserAgent", "EventTargetSelector"} & keys,
    ) == (True, set())


def test_legacy_id_passed_through_a_float_is_not_found(
    legacy: tuple[Simulator, httpx.Client],
) -> None:
    sim, client = legacy
    mangled = int(float(sim.bundles(T0, T0 + H)[0].id))
    assert client.get("/export/get", params={"id": str(mangled)}).status_code == 404


def test_legacy_downloads_are_limited_per_minute(clock: ManualClock) -> None:
    config = SimulatorConfig(events_per_hour=10, clock=clock, legacy_bundle_hours=1)
    with Simulator(config) as sim, httpx.Client(base_url=sim.legacy_url, headers=AUTH) as client:
        bundle_id = str(sim.bundles(T0, T0 + H)[0].id)
        statuses = [client.get("/export/get", params={"id": bundle_id}) for _ in range(3)]
        clock.advance(60)
        after = client.get("/export/get", params={"id": bundle_id}).status_code
    assert ([r.status_code for r in statuses], statuses[2].headers["Retry-After"], after) == (
        [200, 200, 429],
        "60",
        200,
    )


# -- rate limits and faults ----------------------------------------------------------------------


def test_per_key_rate_limit_answers_429_with_retry_after(clock: ManualClock) -> None:
    config = SimulatorConfig(events_per_hour=10, clock=clock, rate_limit_per_second=1)
    with Simulator(config) as sim, httpx.Client(base_url=sim.url, headers=AUTH) as api:
        first, second = api.get("/operations/v1/x"), api.get("/operations/v1/x")
        clock.advance(1)
        third = api.get("/operations/v1/x")
    assert (
        first.status_code,
        second.status_code,
        second.headers["Retry-After"],
        third.status_code,
    ) == (
        404,
        429,
        "1",
        404,
    )


def test_rate_limit_fault_answers_429_with_retry_after(sim: Simulator, api: httpx.Client) -> None:
    sim.faults.add(Fault.RATE_LIMIT, count=2, retry_after=3)
    responses = [api.get("/api/v1/export/list?start=0") for _ in range(3)]
    assert [(r.status_code, r.headers.get("Retry-After")) for r in responses] == [
        (429, "3"),
        (429, "3"),
        (200, None),
    ]


def test_fired_faults_are_counted(sim: Simulator, api: httpx.Client) -> None:
    sim.faults.add(Fault.RATE_LIMIT, count=2)
    for _ in range(3):
        api.get("/api/v1/export/list?start=0")
    assert (sim.stats.faults_fired[Fault.RATE_LIMIT], sim.stats.rate_limited) == (2, 2)


def test_server_errors_cycle_through_500_502_503(sim: Simulator, api: httpx.Client) -> None:
    sim.faults.add(Fault.SERVER_ERROR, count=3)
    assert [api.get("/api/v1/export/list?start=0").status_code for _ in range(4)] == [
        500,
        502,
        503,
        200,
    ]


def test_a_fault_can_target_one_endpoint(sim: Simulator, api: httpx.Client) -> None:
    sim.faults.add(Fault.SERVER_ERROR, endpoint=Endpoint.OPERATION)
    operation_id = create(api)
    response = api.get(f"/operations/v1/{quote(operation_id, safe='')}")
    assert response.status_code == 500


def test_forbidden_fault_is_403(sim: Simulator, api: httpx.Client) -> None:
    sim.faults.add(Fault.FORBIDDEN)
    assert api.get("/api/v1/export/list?start=0").json()["code"] == "permission_denied"


def test_failed_operation_ends_failed_with_details(sim: Simulator, api: httpx.Client) -> None:
    sim.faults.add(Fault.FAILED_OPERATION)
    failed, after = poll(api, create(api)), poll(api, create(api))
    assert (failed["state"], bool(failed["errorDetails"]), after["state"]) == (
        "FAILED",
        True,
        "COMPLETED",
    )


def test_expired_url_fault_is_403_once(
    sim: Simulator, api: httpx.Client, web: httpx.Client
) -> None:
    url = location(api, create(api))
    sim.faults.add(Fault.EXPIRED_URL)
    assert [web.get(url).status_code for _ in range(2)] == [403, 200]


def test_dropped_connection_ends_the_download_early(
    sim: Simulator, api: httpx.Client, web: httpx.Client
) -> None:
    url = location(api, create(api))
    sim.faults.add(Fault.DROP_CONNECTION)
    with pytest.raises(httpx.RemoteProtocolError):
        web.get(url)


def test_truncated_gzip_is_a_complete_response_with_a_cut_body(
    sim: Simulator, api: httpx.Client, web: httpx.Client
) -> None:
    url = location(api, create(api))
    sim.faults.add(Fault.TRUNCATED_GZIP)
    headers, body = raw_download(web, url)
    assert int(headers["Content-Length"]) == len(body)
    with pytest.raises(EOFError):
        gzip.decompress(body)


def test_proxy_decompressed_body_is_plain_despite_the_header(
    sim: Simulator, api: httpx.Client, web: httpx.Client
) -> None:
    url = location(api, create(api))
    sim.faults.add(Fault.PROXY_DECOMPRESSED)
    headers, body = raw_download(web, url)
    assert (headers["Content-Encoding"], body[:1], ndjson_events(body)) == (
        "gzip",
        b"{",
        sim.expected_events(T0, T0 + H),
    )


def test_gzip_content_encoding_fault_sends_gzip_with_the_header(
    sim: Simulator, api: httpx.Client, web: httpx.Client
) -> None:
    url = location(api, create(api))
    sim.faults.add(Fault.GZIP_CONTENT_ENCODING)
    headers, body = raw_download(web, url)
    assert (headers["Content-Encoding"], body[:2]) == ("gzip", b"\x1f\x8b")


def test_slow_fault_delays_the_answer(sim: Simulator, api: httpx.Client) -> None:
    sim.faults.add(Fault.SLOW, delay=0.2)
    began = time.monotonic()
    api.get("/api/v1/export/list?start=0")
    assert time.monotonic() - began >= 0.2


def test_body_faults_also_hit_legacy_downloads(legacy: tuple[Simulator, httpx.Client]) -> None:
    sim, client = legacy
    sim.faults.add(Fault.TRUNCATED_GZIP)
    response = client.get("/export/get", params={"id": str(sim.bundles(T0, T0 + H)[0].id)})
    with pytest.raises(EOFError):
        gzip.decompress(response.content)


def test_a_fault_plan_refuses_a_zero_count() -> None:
    with pytest.raises(ConfigError, match="count"):
        FaultPlan().add(Fault.SERVER_ERROR, count=0)


def test_pending_faults_are_consumed_as_they_fire(sim: Simulator, api: httpx.Client) -> None:
    sim.faults.add(Fault.SERVER_ERROR, count=2)
    api.get("/api/v1/export/list?start=0")
    assert sim.faults.pending(Fault.SERVER_ERROR) == 1


# -- the blocking entry point ------------------------------------------------------------------


def test_serve_runs_until_stopped() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(SimulatorConfig(), "127.0.0.1", port, stop))
    thread.start()
    try:
        status = _first_status(f"http://127.0.0.1:{port}/api/v1/export/list?start=0")
    finally:
        stop.set()
        thread.join(timeout=5)
    assert (status, thread.is_alive()) == (401, False)


def _first_status(url: str) -> int:
    deadline = time.monotonic() + 5
    while True:
        try:
            return httpx.get(url).status_code
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# -- clients that go away, and stopping -------------------------------------------------------


def _handler_threads() -> list[threading.Thread]:
    """The threads serving connections (socketserver names them after its method)."""
    return [t for t in threading.enumerate() if "process_request_thread" in t.name]


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(timeout=10)


def _read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response (headers and a Content-Length body) from `sock`."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_a_client_that_resets_its_connection_leaves_no_traceback(
    sim: Simulator, capfd: pytest.CaptureFixture[str]
) -> None:
    with socket.create_connection(("127.0.0.1", sim.port)) as sock:
        sock.sendall(b"GET /api/v1/export/list?start=0 HTTP/1.1\r\nHost: sim\r\n\r\n")
        head = _read_response(sock)
        handlers = _handler_threads()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    _join(handlers)
    out, err = capfd.readouterr()
    assert head.startswith(b"HTTP/1.1 401")
    assert ("Traceback" in out + err, "simulator connection closed" in out + err) == (False, True)


def test_a_request_in_flight_when_the_simulator_stops_logs_no_error(
    sim: Simulator, api: httpx.Client, capfd: pytest.CaptureFixture[str]
) -> None:
    export_id = poll(api, create(api))["results"]["searchExportId"]
    sim.faults.add(Fault.SLOW, endpoint=Endpoint.RESULTS, delay=30)  # cut short by the stop
    results_url = f"/search/v1/exports/{quote(export_id, safe='')}/results"
    client = threading.Thread(target=lambda: _ignore_errors(lambda: api.get(results_url)))
    client.start()
    while sim.faults.pending(Fault.SLOW):
        time.sleep(0.01)
    handlers = _handler_threads()
    sim.stop()
    _join([client, *handlers])
    out, err = capfd.readouterr()
    found = ("Traceback", "ConfigError", "simulator request failed")
    assert [x for x in found if x in out + err] == []


def _ignore_errors(call: Any) -> None:
    try:
        call()
    except httpx.HTTPError:
        pass
