"""End to end: exports of every field, into DuckDB (issue 17).

syncd asks the Segment Export for every field (`fields` omitted), so a field FullStory adds
later is collected: into CustomVars, or into a column of the same name when the export table
has one (an operator's `ALTER TABLE ... ADD COLUMN`). IncludeMobileAppsFields = false still
keeps the mobile apps' fields out, by leaving them out of every row after the export.
The simulator adds `NEW_FIELD_NAME` to every event from `ADDED` on, mid-way through the
backfill of five 1-hour windows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from e2e_support import (
    API_KEY,
    NOW,
    assert_rows_equal,
    expected_segment_rows,
    export_rows,
    hour_windows,
    run_cli,
    sync_rows,
    write_config,
)

from syncd.cli import EXIT_OK
from syncd.fields import MOBILE_FIELDS, Column, FieldType, export_columns
from syncd.simulator import Simulator, SimulatorConfig
from syncd.simulator.config import NEW_FIELD_NAME
from syncd.timeutil import UTC

START = datetime(2026, 11, 1, 21, tzinfo=UTC)
WINDOWS = hour_windows(START, datetime(2026, 11, 2, 2, tzinfo=UTC))
ADDED = datetime(2026, 11, 1, 23, 30, tzinfo=UTC)  # in the middle of the third window
MOBILE = frozenset(c.name for c in MOBILE_FIELDS)
ROOT = Path(__file__).resolve().parent.parent


def naive(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None)


def custom_keys(row: dict[str, object]) -> set[str]:
    return set(json.loads(str(row["CustomVars"])))


def documented_alter_table() -> str:
    """The statement README.md and docs/columns.md show for a new field's column (the same)."""
    shown = {
        found
        for page in (ROOT / "README.md", ROOT / "docs" / "columns.md")
        for found in re.findall(r"`(ALTER TABLE fsexport ADD COLUMN [^`]+)`", page.read_text())
    }
    assert len(shown) == 1, shown
    return shown.pop()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(api_key=API_KEY, events_per_hour=200, new_field_from=ADDED)
    with Simulator(config) as s:
        yield s


def test_a_field_added_mid_way_lands_in_custom_vars(sim: Simulator, tmp_path: Path) -> None:
    files = write_config(tmp_path, sim, START)
    assert run_cli(["once", "-c", str(files.config)]) == EXIT_OK
    rows = export_rows(files.duckdb)
    assert len(sync_rows(files.duckdb)) == len(WINDOWS)
    assert_rows_equal(rows, expected_segment_rows(sim, WINDOWS))
    late = [r["EventStart"] >= naive(ADDED) for r in rows]
    assert 0 < sum(late) < len(rows)  # rows before the field came keep loading
    assert [NEW_FIELD_NAME in custom_keys(r) for r in rows] == late
    assert "EventNewThing" in set().union(*(custom_keys(r) for r in rows))


def test_a_field_added_mid_way_fills_a_column_the_table_has(sim: Simulator, tmp_path: Path) -> None:
    files = write_config(tmp_path, sim, START)
    early = datetime(2026, 11, 2, 0, tzinfo=UTC)  # 21:00 and 22:00 ready; the field comes later
    assert run_cli(["once", "-c", str(files.config)], now=early) == EXIT_OK
    with duckdb.connect(str(files.duckdb)) as db:  # the operator adds the column, as documented
        db.execute(documented_alter_table().replace('"NewField"', f'"{NEW_FIELD_NAME}"'))
    assert run_cli(["once", "-c", str(files.config)], now=NOW) == EXIT_OK
    rows = export_rows(files.duckdb)
    columns = (*export_columns(), Column(NEW_FIELD_NAME, FieldType.STRING))
    assert_rows_equal(rows, expected_segment_rows(sim, WINDOWS, columns))
    late = [r["EventStart"] >= naive(ADDED) for r in rows]
    assert 0 < sum(late) < len(rows)
    assert [r[NEW_FIELD_NAME] is not None for r in rows] == late
    assert not any(NEW_FIELD_NAME in custom_keys(r) for r in rows)


@pytest.mark.parametrize("include", [False, True], ids=["without", "with"])
def test_include_mobile_apps_fields_acts_after_an_export_of_every_field(
    tmp_path: Path, include: bool
) -> None:
    config = SimulatorConfig(api_key=API_KEY, events_per_hour=200, include_mobile=True)
    with Simulator(config) as sim:
        overrides = {"IncludeMobileAppsFields": include}
        files = write_config(tmp_path, sim, START, overrides)
        assert run_cli(["once", "-c", str(files.config)]) == EXIT_OK
        expected = expected_segment_rows(sim, WINDOWS, include_mobile=include)
        served = {k for start, end in WINDOWS for e in sim.expected_events(start, end) for k in e}
    assert MOBILE <= served  # the export carried them either way
    rows = export_rows(files.duckdb)
    assert_rows_equal(rows, expected)
    in_custom_vars = set().union(*(custom_keys(r) for r in rows)) & MOBILE
    filled = {name for name in MOBILE for r in rows if r.get(name) is not None}
    assert (filled, in_custom_vars) == ((MOBILE if include else set()), set())
    assert all(name in rows[0] for name in MOBILE) == include  # columns only when included
