"""The analysis views (warehouses/views.py, docs/views.md) on every SQL warehouse.

`syncd once` loads three hours from the simulator into DuckDB, PostgreSQL, Redshift (the
dialect proxy over PostgreSQL, moto S3), BigQuery (the emulator over the GCS emulator) and
Snowflake (the fakesnow stand-in, its internal stage);
`syncd views` (or `CreateViews = true` at start-up) creates the views; every row of every view
is compared with figures computed here, in Python, from the simulator's generated events (its
truth), not from the warehouse.
"""

# ruff: noqa: F811 - fixtures are imported by name from aws_support
from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
import redshift_connector
from aws_support import (  # noqa: F401 - fixtures
    AwsEnv,
    aws,
    aws_overrides,
    bucket,
    moto_s3,
    postgres,
    postgres_overrides,
    redshift_proxy,
    schema,
)
from e2e_support import API_KEY, NOW, run_cli, write_config

from standins.postgres import PostgresCluster
from standins.redshift_proxy import RedshiftProxy
from syncd.fields import KNOWN_FIELDS
from syncd.simulator import Simulator, SimulatorConfig
from syncd.timeutil import UTC, parse_timestamp
from warehouses.views import VIEW_NAMES, view_statements

START = datetime(2026, 11, 1, 23, tzinfo=UTC)
END = START + timedelta(hours=3)  # the windows ready at e2e_support.NOW with ExportDelay 1h
DOCS = Path(__file__).resolve().parent.parent / "docs"

Row = dict[str, Any]


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=150, seed=11)) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def truth(sim: Simulator) -> dict[str, list[Row]]:
    events = sim.expected_events(START, END)
    assert NOW - timedelta(hours=1) < END + timedelta(hours=1)  # the next window is not ready
    return expected_views(events)


# -- the truth, from the simulator's events ----------------------------------------------------


def _ts(value: str | None) -> datetime | None:
    return None if value is None else parse_timestamp(value)


def _n(event: Row, key: str) -> int:
    value = event.get(key)
    return int(value) if value is not None else 0


def _frustrated(event: Row) -> bool:
    return any(_n(event, k) > 0 for k in ("EventModFrustrated", "EventModDead", "EventModError"))


def _by_time(events: list[Row]) -> list[Row]:
    return sorted(events, key=lambda e: (e["EventStart"], e["PageId"]))


def expected_views(events: list[Row]) -> dict[str, list[Row]]:
    """Every view's rows as docs/views.md defines them, computed from the events."""
    sessions: dict[tuple[int, int, int], list[Row]] = defaultdict(list)
    pages: dict[tuple[int, int, int, int], list[Row]] = defaultdict(list)
    people: dict[int, list[Row]] = defaultdict(list)
    for event in events:
        key = (event["IndvId"], event["UserId"], event["SessionId"])
        sessions[key].append(event)
        pages[(*key, event["PageId"])].append(event)
        people[event["IndvId"]].append(event)
    clicks = [e for e in events if e["EventType"] == "click"]
    out: dict[str, list[Row]] = {"fs_sessions": [], "fs_pageviews": [], "fs_users": []}
    for (indv, user, session), own in sessions.items():
        first = _by_time(own)[0]
        out["fs_sessions"].append(
            {
                "IndvId": indv,
                "UserId": user,
                "SessionId": session,
                "SessionStart": min(_ts(e["SessionStart"]) for e in own),  # type: ignore[type-var]
                "SessionEnd": max(_ts(e["EventStart"]) for e in own),  # type: ignore[type-var]
                "DurationSeconds": max(e["EventSessionOffset"] for e in own) / 1000,
                "Pages": len({e["PageId"] for e in own}),
                "Events": len(own),
                "Clicks": sum(e["EventType"] == "click" for e in own),
                "FrustratedClicks": sum(e["EventType"] == "click" and _frustrated(e) for e in own),
                "RageClicks": sum(
                    e["EventType"] == "click" and _n(e, "EventModFrustrated") > 0 for e in own
                ),
                "DeadClicks": sum(
                    e["EventType"] == "click" and _n(e, "EventModDead") > 0 for e in own
                ),
                "ErrorClicks": sum(
                    e["EventType"] == "click" and _n(e, "EventModError") > 0 for e in own
                ),
                "Device": first.get("PageDevice"),
                "Browser": first.get("PageBrowser"),
                "Location": first.get("PageLatLong"),
                "FirstUrl": first.get("PageUrl"),
                "Referrer": first.get("PageRefererUrl"),
            }
        )
    for (indv, user, session, page), own in pages.items():
        first = own[0]
        out["fs_pageviews"].append(
            {
                "IndvId": indv,
                "UserId": user,
                "SessionId": session,
                "PageId": page,
                "PageStart": _ts(first["PageStart"]),
                "PageName": first.get("PageName"),
                "PageUrl": first.get("PageUrl"),
                "PageRefererUrl": first.get("PageRefererUrl"),
                "DurationSeconds": first["PageDuration"] / 1000,
                "ActiveSeconds": first["PageActiveDuration"] / 1000,
                "Events": len(own),
                "Clicks": sum(e["EventType"] == "click" for e in own),
            }
        )
    out["fs_clicks"] = [
        {
            "IndvId": e["IndvId"],
            "UserId": e["UserId"],
            "SessionId": e["SessionId"],
            "PageId": e["PageId"],
            "EventStart": _ts(e["EventStart"]),
            "PageUrl": e.get("PageUrl"),
            "TargetText": e.get("EventTargetText"),
            "TargetSelector": e.get("EventTargetSelector"),
            "RageClicks": _n(e, "EventModFrustrated"),
            "Dead": _n(e, "EventModDead"),
            "Error": _n(e, "EventModError"),
            "Frustrated": int(_frustrated(e)),
        }
        for e in clicks
    ]
    out["fs_custom_events"] = [
        {
            "IndvId": e["IndvId"],
            "UserId": e["UserId"],
            "SessionId": e["SessionId"],
            "PageId": e["PageId"],
            "EventStart": _ts(e["EventStart"]),
            "Name": e.get("EventCustomName"),
            "PageUrl": e.get("PageUrl"),
            "Vars": {k: v for k, v in e.items() if k.startswith("evt_")},
        }
        for e in events
        if e["EventType"] == "custom"
    ]
    for indv, own in people.items():
        latest = sorted(
            own, key=lambda e: (e["EventStart"], e["SessionId"], e["PageId"]), reverse=True
        )[0]
        created = [_ts(e["UserCreated"]) for e in own if e.get("UserCreated") is not None]
        out["fs_users"].append(
            {
                "IndvId": indv,
                "UserId": latest["UserId"],
                "UserAppKey": latest.get("UserAppKey"),
                "UserDisplayName": latest.get("UserDisplayName"),
                "UserEmail": latest.get("UserEmail"),
                "UserCreated": min(created) if created else None,  # type: ignore[type-var]
                "FirstSeen": min(_ts(e["EventStart"]) for e in own),  # type: ignore[type-var]
                "LastSeen": max(_ts(e["EventStart"]) for e in own),  # type: ignore[type-var]
                "Sessions": len({e["SessionId"] for e in own}),
                "Pages": len({e["PageId"] for e in own}),
                "Events": len(own),
            }
        )
    return out


# -- comparing ---------------------------------------------------------------------------------


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC)
    if isinstance(value, (float, Decimal)):
        return round(float(value), 3)
    return value


def _vars(value: Any) -> dict[str, Any]:
    """The evt_* vars of a view's Vars value (JSON text or a parsed object)."""
    parsed = json.loads(value) if isinstance(value, str) else value
    return {k: v for k, v in (parsed or {}).items() if k.startswith("evt_")}


def normalized(rows: list[Row]) -> list[Row]:
    """Rows keyed by lower-case column name (Redshift folds names), values comparable, sorted."""
    out = []
    for row in rows:
        item = {k.lower(): _value(v) for k, v in row.items()}
        if "vars" in item:
            item["vars"] = _vars(item["vars"])
        out.append(item)
    return sorted(out, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def assert_views(read: Callable[[str], list[Row]], truth: dict[str, list[Row]]) -> None:
    for view in VIEW_NAMES:
        actual, wanted = normalized(read(view)), normalized(truth[view])
        assert wanted, view
        assert len(actual) == len(wanted), view
        for got, want in zip(actual, wanted, strict=True):
            assert got == want, view


def test_the_truth_is_not_trivial(truth: dict[str, list[Row]]) -> None:
    """The figures compared below include frustrated clicks, multi-page sessions, user vars
    and custom event vars, so a wrong definition shows."""
    sessions = truth["fs_sessions"]
    assert any(s["FrustratedClicks"] for s in sessions)
    assert any(s["Pages"] > 1 for s in sessions)
    assert any(s["RageClicks"] and s["DeadClicks"] for s in sessions) or any(
        s["DeadClicks"] for s in sessions
    )
    assert any(c["Vars"] for c in truth["fs_custom_events"])
    assert any(u["UserCreated"] is None for u in truth["fs_users"])


def test_every_dialect_makes_every_view() -> None:
    for dialect in ("duckdb", "postgres", "redshift", "bigquery"):
        statements = view_statements(dialect, "fsexport", None if dialect == "duckdb" else "s")
        assert all(any(view in s for s in statements) for view in VIEW_NAMES), dialect
    # Snowflake commits each DDL statement at once: a view is replaced, never dropped first
    from warehouses.snowflake import SNOWFLAKE

    statements = view_statements(SNOWFLAKE, "fsexport", "PUBLIC")
    assert len(statements) == len(VIEW_NAMES)
    assert all(s.startswith("CREATE OR REPLACE VIEW") for s in statements)


def test_custom_vars_hold_the_event_vars(truth: dict[str, list[Row]]) -> None:
    """The evt_* keys are custom vars (in CustomVars), never columns of the export table."""
    assert not {k for e in truth["fs_custom_events"] for k in e["Vars"]} & set(KNOWN_FIELDS)


# -- the warehouses ---------------------------------------------------------------------------


def test_duckdb_views_match_the_events(
    tmp_path: Path, sim: Simulator, truth: dict[str, list[Row]]
) -> None:
    files = write_config(tmp_path, sim, START)
    assert run_cli(["once", "-c", str(files.config)]) == 0
    assert run_cli(["views", "-c", str(files.config)]) == 0
    assert run_cli(["views", "-c", str(files.config)]) == 0  # replaces them
    with duckdb.connect(str(files.duckdb), read_only=True) as con:

        def read(view: str) -> list[Row]:
            cursor = con.execute(f'SELECT * FROM "{view}"')  # noqa: S608 - a constant name
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

        assert_views(read, truth)


def test_create_views_at_start_up(tmp_path: Path, sim: Simulator) -> None:
    """`CreateViews = true`: `syncd once` makes the views without `syncd views`."""
    files = write_config(tmp_path, sim, START, {"CreateViews": True})
    assert run_cli(["once", "-c", str(files.config)]) == 0
    with duckdb.connect(str(files.duckdb), read_only=True) as con:
        found = {
            row[0]
            for row in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal"
            ).fetchall()
        }
        sessions = con.execute("SELECT sum(Events) FROM fs_sessions").fetchone()
        events = con.execute("SELECT count(*) FROM fsexport").fetchone()
    assert found >= set(VIEW_NAMES)
    assert sessions is not None and events is not None and sessions[0] == events[0] > 0


def test_without_create_views_there_are_none(tmp_path: Path, sim: Simulator) -> None:
    files = write_config(tmp_path, sim, START)
    assert run_cli(["once", "-c", str(files.config)]) == 0
    with duckdb.connect(str(files.duckdb), read_only=True) as con:
        views = con.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchone()
    assert views == (0,)


def test_postgres_views_match_the_events(
    tmp_path: Path,
    sim: Simulator,
    truth: dict[str, list[Row]],
    postgres: PostgresCluster,
    schema: str,
) -> None:
    files = write_config(tmp_path, sim, START, postgres_overrides(postgres, schema))
    assert run_cli(["once", "-c", str(files.config)]) == 0
    assert run_cli(["views", "-c", str(files.config)]) == 0
    assert run_cli(["views", "-c", str(files.config)]) == 0
    with psycopg.connect(postgres.dsn, autocommit=True) as con:

        def read(view: str) -> list[Row]:
            query = f'SELECT * FROM "{schema}"."{view}"'  # noqa: S608 - constant names
            cursor = con.execute(query)  # type: ignore[arg-type]
            names = [d.name for d in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

        assert_views(read, truth)
        con.execute(f'SET search_path = "{schema}"')  # type: ignore[arg-type]
        for doc_query in doc_queries("postgres"):
            assert con.execute(doc_query).fetchall(), doc_query  # type: ignore[arg-type]


def test_redshift_views_match_the_events_on_the_standin(
    tmp_path: Path,
    sim: Simulator,
    truth: dict[str, list[Row]],
    aws: AwsEnv,
    redshift_proxy: RedshiftProxy,
) -> None:
    files = write_config(tmp_path, sim, START, aws_overrides(aws))
    assert run_cli(["once", "-c", str(files.config)]) == 0
    assert run_cli(["views", "-c", str(files.config)]) == 0
    assert run_cli(["views", "-c", str(files.config)]) == 0
    con: Any = redshift_connector.connect(
        host=redshift_proxy.host,
        port=redshift_proxy.port,
        database="postgres",
        user="postgres",
        password="x",
        ssl=False,
    )
    try:
        con.autocommit = True
        cursor = con.cursor()

        def read(view: str) -> list[Row]:
            cursor.execute(f'SELECT * FROM "{aws.schema}"."{view}"')  # noqa: S608
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

        assert_views(read, truth)
        cursor.execute(f'SET search_path = "{aws.schema}"')
        for doc_query in doc_queries("redshift"):
            cursor.execute(doc_query)
            assert cursor.fetchall(), doc_query
    finally:
        con.close()


def test_bigquery_views_match_the_events_on_the_emulator(
    tmp_path: Path,
    sim: Simulator,
    truth: dict[str, list[Row]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gcp_support

    import warehouses.google_cloud

    monkeypatch.setattr(warehouses.google_cloud, "RETRY_DEADLINE", gcp_support.FAST_RETRY_DEADLINE)
    dataset = gcp_support.new_dataset()
    overrides: dict[str, object] = {
        "Provider": "gcp",
        "gcs.Bucket": gcp_support.new_bucket(),
        "gcs.EndpointURL": gcp_support.shared_gcs().endpoint,
        "bigquery.Project": gcp_support.PROJECT,
        "bigquery.Dataset": dataset,
        "bigquery.EndpointURL": gcp_support.shared_bigquery().endpoint,
    }
    try:
        files = write_config(tmp_path, sim, START, overrides)
        assert run_cli(["once", "-c", str(files.config)]) == 0
        assert run_cli(["views", "-c", str(files.config)]) == 0
        assert run_cli(["views", "-c", str(files.config)]) == 0
        client = gcp_support.shared_bigquery().client()
        try:

            def read(view: str) -> list[Row]:
                job = client.query(
                    f"SELECT * FROM `{dataset}`.`{view}`",  # noqa: S608
                    location=gcp_support.LOCATION,
                    retry=warehouses.google_cloud.default_retry(gcp_support.FAST_RETRY_DEADLINE),
                    job_retry=None,
                )
                return [dict(row.items()) for row in job.result(timeout=gcp_support.JOB_TIMEOUT)]

            assert_views(read, truth)
            for doc_query in doc_queries("bigquery"):
                job = client.query(
                    doc_query.replace("mydataset.", f"{dataset}."),
                    location=gcp_support.LOCATION,
                    retry=warehouses.google_cloud.default_retry(gcp_support.FAST_RETRY_DEADLINE),
                    job_retry=None,
                )
                assert list(job.result(timeout=gcp_support.JOB_TIMEOUT)), doc_query
        finally:
            client.close()
    finally:
        gcp_support.drop_dataset(dataset)


def test_snowflake_views_match_the_events_on_the_standin(
    tmp_path: Path, sim: Simulator, truth: dict[str, list[Row]]
) -> None:
    from snowflake_support import new_schema, shared_snowflake, snowflake_overrides

    schema = new_schema()
    files = write_config(tmp_path, sim, START, snowflake_overrides(schema))
    assert run_cli(["once", "-c", str(files.config)]) == 0
    assert run_cli(["views", "-c", str(files.config)]) == 0
    assert run_cli(["views", "-c", str(files.config)]) == 0
    con = shared_snowflake().connect(schema=schema)
    try:
        cursor = con.cursor()

        def read(view: str) -> list[Row]:
            cursor.execute(f'SELECT * FROM "{schema}"."{view}"')  # noqa: S608
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

        assert_views(read, truth)
    finally:
        con.close()


# -- docs/views.md -----------------------------------------------------------------------------


_BLOCK = re.compile(r"^```sql (\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_the_doc_lists_every_column_of_every_view(truth: dict[str, list[Row]]) -> None:
    text = (DOCS / "views.md").read_text()
    for view in VIEW_NAMES:
        section = text.split(f"## `{view}`", 1)[1].split("\n## ", 1)[0]
        documented = re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE)
        assert documented == list(truth[view][0]), view


def doc_queries(dialect: str) -> list[str]:
    """The statements of every ```sql <dialect> block of docs/views.md."""
    text = (DOCS / "views.md").read_text()
    found = [
        s.strip()
        for name, body in _BLOCK.findall(text)
        if name == dialect
        for s in body.split(";")
        if s.strip()
    ]
    assert found, dialect
    return found


def test_the_docs_duckdb_queries_run(tmp_path: Path, sim: Simulator) -> None:
    files = write_config(tmp_path, sim, START, {"CreateViews": True})
    assert run_cli(["once", "-c", str(files.config)]) == 0
    with duckdb.connect(str(files.duckdb), read_only=True) as con:
        for query in doc_queries("duckdb"):
            assert con.execute(query).fetchall(), query


def test_views_without_a_warehouse_say_so(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    files = write_config(tmp_path, sim, START, {"Provider": "local"})
    assert run_cli(["views", "-c", str(files.config)]) == 1
    assert "no SQL warehouse to create views in" in capsys.readouterr().err


def test_a_legacy_tables_selector_fills_target_selector(tmp_path: Path) -> None:
    """Legacy bundles carry the selector as EventTargetSelectorTok (`Source = "legacy"`):
    fs_clicks reads it there when EventTargetSelector is NULL."""
    from syncd.fields import export_columns
    from warehouses.duckdb import DuckDBWarehouse

    path = tmp_path / "legacy.duckdb"
    with DuckDBWarehouse(path) as warehouse:
        warehouse.ensure_tables(export_columns("legacy"))
    with duckdb.connect(str(path)) as con:
        con.execute(
            "INSERT INTO fsexport (IndvId, UserId, SessionId, PageId, EventStart, EventType, "
            "EventTargetSelectorTok, EventTargetSelector) VALUES "
            "(1, 1, 2, 3, TIMESTAMP '2026-11-01 00:00:01', 'click', 'body a.old', NULL), "
            "(1, 1, 2, 3, TIMESTAMP '2026-11-01 00:00:02', 'click', 'body a.old', 'body a.new')"
        )
    with DuckDBWarehouse(path) as warehouse:
        warehouse.create_views()
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute("SELECT TargetSelector FROM fs_clicks ORDER BY EventStart").fetchall()
    assert rows == [("body a.old",), ("body a.new",)]
