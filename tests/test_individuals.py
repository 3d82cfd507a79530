"""ExportIndividuals end to end: `syncd once` against the simulator keeps the people table
(`syncd.people`) equal to the simulator's individuals exports, the most recent export winning,
with its own bookkeeping (`<IndividualsTable>_sync`); a replay changes nothing.

The expectation is computed here from `Simulator.expected_individuals`, independently of
syncd's transform: per window, oldest first, each individual's row replaces the one before.
"""

# ruff: noqa: F811 - fixtures are imported by name from aws_support
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
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
    warehouse_rows,
)
from e2e_support import (
    API_KEY,
    SyncdFiles,
    export_rows,
    hour_windows,
    read_table,
    run_cli,
    sync_rows,
    write_config,
)
from people_support import IDENTITY, assert_people_equal, expected_people, stored_people

from standins.redshift_proxy import RedshiftProxy
from syncd.cli import EXIT_CONFIG, EXIT_OK
from syncd.people import PeopleBatch, people_batch_id, read_individuals, write_ndjson
from syncd.simulator import Simulator, SimulatorConfig
from syncd.timeutil import UTC
from warehouses.sql import PEOPLE_COLUMNS

START = datetime(2026, 11, 1, 21, tzinfo=UTC)
#: The first run sees three windows (21:00..00:00), the second five (..02:00).
FIRST_NOW = datetime(2026, 11, 2, 1, 30, tzinfo=UTC)
SECOND_NOW = datetime(2026, 11, 2, 3, 30, tzinfo=UTC)
FIRST = hour_windows(START, datetime(2026, 11, 2, 0, tzinfo=UTC))
ALL = hour_windows(START, datetime(2026, 11, 2, 2, tzinfo=UTC))
EVENTS_PER_HOUR = 150
#: Individuals come back across windows (with other user vars): "most recent wins" matters.
RETURNING = 12
PEOPLE_KEYS: dict[str, object] = {"ExportIndividuals": True, "CreateViews": True}


# -- DuckDB ------------------------------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        api_key=API_KEY, events_per_hour=EVENTS_PER_HOUR, returning_individuals=RETURNING
    )
    with Simulator(config) as s:
        yield s


def duckdb_files(tmp_path: Path, sim: Simulator, **extra: object) -> SyncdFiles:
    return write_config(tmp_path, sim, START, {**PEOPLE_KEYS, **extra})


def once(files: SyncdFiles, now: datetime) -> int:
    return run_cli(["once", "-c", str(files.config)], now=now)


def test_the_expectation_has_individuals_in_several_windows(sim: Simulator) -> None:
    """The "most recent wins" tests below mean something: people recur across windows, and
    their user vars differ between them."""
    seen: dict[int, list[dict[str, Any]]] = {}
    for start, end in ALL:
        for raw in sim.expected_individuals(start, end):
            seen.setdefault(int(raw["IndvId"]), []).append(raw)
    recurring = [rows for rows in seen.values() if len(rows) > 1]
    assert len(recurring) >= 5
    for rows in recurring:  # who an individual is stays the same in every window
        assert len({tuple(r.get(k) for k in IDENTITY) for r in rows}) == 1
    assert any(
        {k: v for k, v in a.items() if k.startswith("user_")}
        != {k: v for k, v in b.items() if k.startswith("user_")}
        for a, b, *_ in recurring
    )


#: Reads a table of the warehouse under test: (table) -> rows as dicts.
TableReader = Callable[[str], list[dict[str, Any]]]


def check_people_follow_the_exports(
    files: SyncdFiles, sim: Simulator, read: TableReader, segment_rows: Callable[[], int]
) -> None:
    """Two `once` runs (three windows, then five), then a run with nothing new: the people
    table equals the simulator's individuals, the most recent export winning; one people sync
    row per window; the SyncTable holds segment batches only."""
    assert once(files, FIRST_NOW) == EXIT_OK
    assert_people_equal(stored_people(read("fsindividuals")), expected_people(sim, FIRST))
    bookkeeping = sorted(
        ({k.lower(): v for k, v in r.items()} for r in read("fsindividuals_sync")),
        key=lambda r: r["windowstart"],
    )
    assert [r["syncdbatchid"] for r in bookkeeping] == [people_batch_id(*w) for w in FIRST]
    assert [r["rowsloaded"] for r in bookkeeping] == [
        len(sim.expected_individuals(*w)) for w in FIRST
    ]

    # a later run: the newer windows' values win for the individuals seen again
    assert once(files, SECOND_NOW) == EXIT_OK
    assert_people_equal(stored_people(read("fsindividuals")), expected_people(sim, ALL))
    assert len(read("fsindividuals_sync")) == len(ALL)
    assert segment_rows() == sum(len(sim.expected_events(*w)) for w in ALL)

    # nothing left behind: no in-flight operation, no spool file
    state = files.state_dir
    assert not list((state / "spool").glob("individuals-*"))
    assert "individuals" not in (state / "operations.json").read_text()

    # caught up, a run changes nothing
    before = stored_people(read("fsindividuals"))
    assert once(files, SECOND_NOW) == EXIT_OK
    assert stored_people(read("fsindividuals")) == before
    assert len(read("fsindividuals_sync")) == len(ALL)

    # CreateViews: fs_users takes who each individual is from the people table
    users = {int(_lower(u)["indvid"]): _lower(u) for u in read("fs_users")}
    assert sorted(users) == sorted(before)
    for indv_id, person in before.items():
        shown = users[indv_id]
        assert [shown[k.lower()] for k in ("UserId", *IDENTITY[2:])] == [
            person[k] for k in ("UserId", *IDENTITY[2:])
        ]


def _lower(row: dict[str, Any]) -> dict[str, Any]:
    return {k.lower(): v for k, v in row.items()}


def test_duckdb_people_table_follows_the_exports(tmp_path: Path, sim: Simulator) -> None:
    files = duckdb_files(tmp_path, sim)
    check_people_follow_the_exports(
        files,
        sim,
        lambda table: read_table(files.duckdb, table),
        lambda: len(export_rows(files.duckdb)),
    )
    # the events' own bookkeeping never sees a people batch
    assert {r["SyncdSource"] for r in sync_rows(files.duckdb)} == {"segment"}

    # fs_users shows the people table's identity, not the events': change one person's name
    import duckdb

    some = next(iter(stored_people(read_table(files.duckdb, "fsindividuals"))))
    with duckdb.connect(str(files.duckdb)) as con:
        con.execute(
            'UPDATE fsindividuals SET "UserDisplayName" = ? WHERE "IndvId" = ?', ["Renamed", some]
        )
    users = read_table(files.duckdb, "fs_users")
    assert [u["UserDisplayName"] for u in users if u["IndvId"] == some] == ["Renamed"]
    # and an individual the people table does not hold (yet) keeps the events' identity
    with duckdb.connect(str(files.duckdb)) as con:
        con.execute('DELETE FROM fsindividuals WHERE "IndvId" = ?', [some])
    users = read_table(files.duckdb, "fs_users")
    assert [u["UserDisplayName"] for u in users if u["IndvId"] == some] not in ([], ["Renamed"])


def test_postgres_people_table_follows_the_exports(
    tmp_path: Path, sim: Simulator, aws: AwsEnv
) -> None:
    overrides = {**postgres_overrides(aws.postgres, aws.schema), **PEOPLE_KEYS}
    files = write_config(tmp_path, sim, START, overrides)
    check_people_follow_the_exports(
        files, sim, lambda table: warehouse_rows(aws, table), lambda: len(warehouse_rows(aws))
    )
    assert {r["SyncdSource"] for r in warehouse_rows(aws, "fssync")} == {"segment"}


def test_redshift_people_table_follows_the_exports(
    tmp_path: Path, sim: Simulator, aws: AwsEnv, redshift_proxy: RedshiftProxy
) -> None:
    overrides = {**aws_overrides(aws), **PEOPLE_KEYS}
    files = write_config(tmp_path, sim, START, overrides)
    check_people_follow_the_exports(
        files, sim, lambda table: warehouse_rows(aws, table), lambda: len(warehouse_rows(aws))
    )
    assert {r["SyncdSource"] for r in warehouse_rows(aws, "fssync")} == {"segment"}
    assert not [k for k in aws.keys() if "individuals" in k]  # nothing staged for people


@pytest.fixture
def short_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in's 500 fails in seconds, not after the client's 600 s of retries."""
    import gcp_support

    import warehouses.google_cloud

    monkeypatch.setattr(warehouses.google_cloud, "RETRY_DEADLINE", gcp_support.FAST_RETRY_DEADLINE)


def test_bigquery_people_table_follows_the_exports(
    tmp_path: Path, sim: Simulator, short_retries: None
) -> None:
    import gcp_support

    bucket, dataset = gcp_support.new_bucket(), gcp_support.new_dataset()
    overrides: dict[str, object] = {
        "Provider": "gcp",
        "gcs.Bucket": bucket,
        "gcs.EndpointURL": gcp_support.shared_gcs().endpoint,
        "bigquery.Project": gcp_support.PROJECT,
        "bigquery.Dataset": dataset,
        "bigquery.EndpointURL": gcp_support.shared_bigquery().endpoint,
        **PEOPLE_KEYS,
    }
    files = write_config(tmp_path, sim, START, overrides)
    check_people_follow_the_exports(
        files,
        sim,
        lambda table: gcp_support.bq_rows(dataset, table),
        lambda: len(gcp_support.bq_rows(dataset, "fsexport")),
    )
    # the staged people files are gone after their commits
    assert not [n for n in gcp_support.object_names(bucket) if "individuals" in n]


def test_snowflake_people_table_follows_the_exports(tmp_path: Path, sim: Simulator) -> None:
    """On Snowflake (its internal stage), whose INSERT ... VALUES takes no JSON text for the
    VARIANT UserVars: the people rows are inserted through a SELECT that parses it."""
    from snowflake_support import new_schema, snowflake_overrides, snowflake_rows

    schema = new_schema()
    overrides = {**snowflake_overrides(schema), **PEOPLE_KEYS}
    files = write_config(tmp_path, sim, START, overrides)
    check_people_follow_the_exports(
        files,
        sim,
        lambda table: snowflake_rows(schema, table),
        lambda: len(snowflake_rows(schema)),
    )
    assert {r["SyncdSource"] for r in snowflake_rows(schema, "fssync")} == {"segment"}
    # UserVars is a JSON object in the VARIANT, not a JSON string
    people = snowflake_rows(schema, "fsindividuals")
    assert people and all(isinstance(json.loads(r["UserVars"]), dict) for r in people)


def _batch(
    sim: Simulator, tmp_path: Path, window: tuple[datetime, datetime], direct: Direct
) -> PeopleBatch:
    """The people batch syncd would commit for `window`, from the simulator's rows (staged
    as syncd stages it for a warehouse that loads from its stage)."""
    start, end = window
    batch_id = people_batch_id(start, end)
    path = tmp_path / f"{batch_id}.export.ndjson"
    path.write_text(
        "".join(json.dumps(r) + "\n" for r in sim.expected_individuals(start, end)),
        encoding="utf-8",
    )
    now = datetime(2026, 11, 3, tzinfo=UTC)
    rows = read_individuals(path, batch_id, end, now)
    uri = ""
    if direct.warehouse.people_from_stage:
        staged = tmp_path / f"{batch_id}.ndjson"
        write_ndjson(rows, [c.name for c in PEOPLE_COLUMNS], staged)
        uri = direct.stage.put(staged, staged.name)
    return PeopleBatch(batch_id, start, end, "op", now, rows, uri)


@dataclass
class Direct:
    """A warehouse used directly (no CLI), its stage, and a reader of its tables."""

    warehouse: Any
    stage: Any
    read: TableReader
    cleanup: Callable[[], None]


def _direct_duckdb(tmp_path: Path) -> Direct:
    from warehouses.duckdb import DuckDBWarehouse
    from warehouses.local import LocalStage

    wh = DuckDBWarehouse(tmp_path / "p.duckdb", reader_window=0)
    return Direct(
        wh,
        LocalStage(tmp_path / "stage"),
        lambda table: read_table(tmp_path / "p.duckdb", table),
        lambda: None,
    )


def _direct_postgres(tmp_path: Path) -> Direct:
    from aws_support import drop_schema, postgres_over_local, shared_postgres

    wh, stage = postgres_over_local(tmp_path)
    schema = wh.tables.schema
    env = AwsEnv(None, shared_postgres(), "", schema)  # type: ignore[arg-type] # no S3 read
    return Direct(wh, stage, lambda table: warehouse_rows(env, table), lambda: drop_schema(schema))


def _direct_bigquery(tmp_path: Path) -> Direct:
    import gcp_support

    wh, stage = gcp_support.bigquery_over_gcs(tmp_path)
    return Direct(
        wh,
        stage,
        lambda table: gcp_support.bq_rows(wh.dataset, table),
        lambda: gcp_support.drop_dataset(wh.dataset),
    )


def _direct_snowflake(tmp_path: Path) -> Direct:
    from snowflake_support import snowflake_over_internal, snowflake_rows

    wh, stage = snowflake_over_internal(tmp_path)
    schema = wh.tables.schema
    assert schema is not None
    return Direct(wh, stage, lambda table: snowflake_rows(schema, table), wh.drop_tables)


DIRECT = {
    "duckdb": _direct_duckdb,
    "postgres": _direct_postgres,
    "bigquery": _direct_bigquery,
    "snowflake": _direct_snowflake,
}


@pytest.mark.parametrize("name", list(DIRECT))
def test_replay_and_an_older_export_change_nothing(
    tmp_path: Path, sim: Simulator, name: str, short_retries: None
) -> None:
    """A committed batch committed again is a no-op; an older window's batch committed after
    a newer one never overwrites the newer rows (and is recorded)."""
    direct = DIRECT[name](tmp_path)
    wh = direct.warehouse
    try:
        wh.ensure_people_tables("people")
        wh.ensure_people_tables("people")  # reconciling again is harmless
        # two windows that share individuals, so the older export has rows to (not) overwrite
        old_window, new_window = ALL[0], ALL[2]
        shared = {r["IndvId"] for r in sim.expected_individuals(*old_window)} & {
            r["IndvId"] for r in sim.expected_individuals(*new_window)
        }
        assert len(shared) >= 2
        newer = _batch(sim, tmp_path, new_window, direct)
        assert wh.commit_people("people", newer) is True
        before = stored_people(direct.read("people"))
        assert wh.commit_people("people", newer) is False
        assert stored_people(direct.read("people")) == before
        older = _batch(sim, tmp_path, old_window, direct)
        assert wh.commit_people("people", older) is True
        assert wh.people_batch_ids("people") == {newer.batch_id, older.batch_id}
        stored = stored_people(direct.read("people"))
        assert_people_equal(stored, expected_people(sim, [old_window, new_window]))
        assert {i for i, r in stored.items() if r["SyncdBatchId"] == newer.batch_id} >= {
            int(i) for i in shared
        }
        assert any(r["SyncdBatchId"] == older.batch_id for r in stored.values())
        assert len(direct.read("people_sync")) == 2
    finally:
        wh.close()
        direct.cleanup()


def test_only_snowflake_inserts_people_through_a_select() -> None:
    """Snowflake's VALUES take constants only and its VARIANT no JSON text: its people rows go
    through a SELECT that parses UserVars; every other dialect keeps its plain VALUES list."""
    from warehouses.snowflake import SNOWFLAKE
    from warehouses.sql import DIALECTS, people_upsert

    row = (1, 2, None, "app", "Ann", "a@b", '{"user_plan_str": "pro"}', "b", None, None)
    sync_row = ("b", None, None, "op", 1, None, "v")
    for d in DIALECTS.values():
        if d.paramstyle == "named":
            continue  # BigQuery loads people from its stage
        insert = people_upsert(d, '"people"', '"people_sync"', [row, row], sync_row)[1]
        one = f"({d.placeholders(len(PEOPLE_COLUMNS))})"
        assert insert.sql.endswith(f") VALUES {one}, {one}"), d.name
        assert "PARSE_JSON" not in insert.sql
    insert = people_upsert(SNOWFLAKE, '"people"', '"people_sync"', [row, row], sync_row)[1]
    assert 'PARSE_JSON(v."UserVars")' in insert.sql
    assert insert.sql.startswith('INSERT INTO "people" ("IndvId", ')
    assert ' SELECT v."IndvId", v."UserId", ' in insert.sql
    assert insert.sql.endswith(
        ' AS v ("IndvId", "UserId", "UserCreated", "UserAppKey", '
        '"UserDisplayName", "UserEmail", "UserVars", "SyncdBatchId", "SyncdExportEnd", '
        '"SyncdLoadedAt")'
    )
    assert insert.params == row + row


def test_export_individuals_is_refused_with_storage_only(tmp_path: Path, sim: Simulator) -> None:
    files = write_config(tmp_path, sim, START, {"ExportIndividuals": True, "Provider": "local"})
    assert run_cli(["once", "-c", str(files.config)], now=FIRST_NOW) == EXIT_CONFIG


def test_individuals_table_must_be_another_table(tmp_path: Path, sim: Simulator) -> None:
    files = duckdb_files(tmp_path, sim, IndividualsTable="fsexport")
    assert run_cli(["once", "-c", str(files.config)], now=FIRST_NOW) == EXIT_CONFIG
    files = duckdb_files(tmp_path / "b", sim, IndividualsTable="no-such name")
    assert run_cli(["once", "-c", str(files.config)], now=FIRST_NOW) == EXIT_CONFIG


def test_syncd_views_makes_fs_users_over_the_people_table(tmp_path: Path, sim: Simulator) -> None:
    """`syncd views` before any batch: the people table is created, fs_users reads it."""
    import duckdb

    files = duckdb_files(tmp_path, sim, CreateViews=False)
    assert run_cli(["views", "-c", str(files.config)]) == EXIT_OK
    with duckdb.connect(str(files.duckdb), read_only=True) as con:
        row = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'fs_users'").fetchone()
    assert row is not None and "fsindividuals" in row[0]
    assert read_table(files.duckdb, "fs_users") == []


def test_a_bad_individuals_row_is_skipped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "people.ndjson"
    path.write_text(
        '{"IndvId": 7, "UserId": "8", "UserCreated": "2026-01-02T03:04:05.678Z", '
        '"user_plan_str": "pro"}\n'
        "{not json\n"
        '{"UserId": 9}\n'
        '{"IndvId": 10, "UserCreated": "yesterday"}\n'
        "[1, 2]\n"
        '{"IndvId": "11", "UserEmail": "a@b"}\n',
        encoding="utf-8",
    )
    end = datetime(2026, 11, 2, tzinfo=UTC)
    rows = read_individuals(path, "individuals-x", end, end)
    assert [(r[0], r[1], r[2], r[5], json.loads(r[6])) for r in rows] == [
        (7, 8, datetime(2026, 1, 2, 3, 4, 5, 678000), None, {"user_plan_str": "pro"}),
        (11, None, None, "a@b", {}),
    ]
