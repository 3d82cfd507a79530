"""The crash campaign at CI scale: per warehouse, `syncd once` SIGKILLed at seeded random
moments over a backfill with bad rows while the simulator injects API faults (429, 5xx, dropped
connections, truncated gzip, expired signed URLs, FAILED operations) at seeded random moments,
restarted, then checked against the simulator's events.

The long run is `scripts/campaign.py` (see docs/reliability.md); both use
`tests/campaign_support.py`. BigQuery and Redshift backfill one day instead of two, to keep
the whole file at about a minute (10 to 20 s a warehouse); Snowflake too, with 5 kills (its runs
spend more of their time logging in, so fewer kills meet too few API faults; about 30 s).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from campaign_support import (
    BACKFILL_START,
    TARGETS,
    CampaignResult,
    CampaignSettings,
    bad_rows,
    child_env,
    held_by_failed_export,
    rejects_match,
    run_campaign,
    run_once,
)
from e2e_support import (
    API_KEY,
    assert_rows_equal,
    expected_segment_rows,
    export_rows,
    window_key,
    write_config,
)

import warehouses.google_cloud
from syncd.simulator import Fault, Simulator, SimulatorConfig


def ci_settings(warehouse: str, kills: int, days: int, max_delay: float) -> CampaignSettings:
    """Kills within the first half of a clean run (each restart resumes, so the kills still
    walk through the backfill); a fault planned every 0.1 to 0.4 s (at most two waiting), so
    that even these short rounds meet several kinds."""
    return CampaignSettings(
        warehouse, kills=kills, days=days, max_delay=max_delay, min_fault_gap=0.1, max_fault_gap=0.4
    )


CI_SETTINGS = {
    "duckdb": ci_settings("duckdb", kills=3, days=2, max_delay=3.0),
    "postgres": ci_settings("postgres", kills=3, days=2, max_delay=3.0),
    "redshift": ci_settings("redshift", kills=3, days=1, max_delay=4.5),
    "bigquery": ci_settings("bigquery", kills=2, days=1, max_delay=5.0),
    "snowflake": ci_settings("snowflake", kills=5, days=1, max_delay=6.0),
}


@pytest.fixture(scope="module", params=list(CI_SETTINGS))
def campaign(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CampaignResult]:
    patch = pytest.MonkeyPatch()  # the checks' BigQuery reads fail fast on a stand-in's 500
    patch.setattr(warehouses.google_cloud, "RETRY_DEADLINE", 5.0)
    settings = CI_SETTINGS[request.param]
    yield run_campaign(settings, Path(tmp_path_factory.mktemp(f"campaign-{request.param}")))
    patch.undo()


def test_every_planned_kill_happened(campaign: CampaignResult) -> None:
    assert campaign.kills == CI_SETTINGS[campaign.warehouse].kills, campaign.as_json()


def test_no_row_is_lost(campaign: CampaignResult) -> None:
    assert campaign.summary()["rows_lost"] == 0, campaign.as_json()


def test_no_row_is_duplicated_or_unexpected(campaign: CampaignResult) -> None:
    summary = campaign.summary()
    assert (summary["rows_duplicated"], summary["rows_unexpected"]) == (0, 0), campaign.as_json()


def test_the_sync_table_has_one_row_per_window_with_its_counts(campaign: CampaignResult) -> None:
    assert campaign.summary()["sync_rows_ok"], campaign.as_json()


def test_every_bad_row_is_quarantined_once(campaign: CampaignResult) -> None:
    summary = campaign.summary()
    assert (summary["rejects_ok"], summary["bad_rows_tried"] > 0) == (True, True)


def test_api_faults_fired_and_every_run_survived_them(campaign: CampaignResult) -> None:
    """Faults of several kinds fired (by the simulator's record) in the same rounds whose
    checks above pass, and no run failed but for a batch held by a FAILED export."""
    fired = campaign.faults
    kinds = sorted(k for k in fired if fired[k])
    problems = [p for r in campaign.rounds for p in r.problems]
    assert (len(kinds) >= 3, sum(fired.values()) >= 4, problems) == (True, True, []), (
        campaign.as_json()
    )


def test_the_final_run_of_each_backfill_completes(campaign: CampaignResult) -> None:
    assert [r.final_exit for r in campaign.rounds] == [0] * len(campaign.rounds)


# -- the checks themselves -------------------------------------------------------------------


def test_a_failed_export_is_replaced_within_the_same_run(tmp_path: Path) -> None:
    """A FAILED export is a transient failure of its batch: after the batch's backoff the same
    `once` creates a new export of the window and loads it whole (exit 0, two exports)."""
    window = (BACKFILL_START, BACKFILL_START + timedelta(hours=1))
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=40)) as sim:
        files = write_config(tmp_path, sim, BACKFILL_START, {"Lookahead": 0})
        target = TARGETS["duckdb"]()
        env = child_env(target, window[1] + timedelta(minutes=90))  # one window is ready
        sim.faults.add(Fault.FAILED_OPERATION)
        done = run_once(target, files.config, env, None, 60.0)
        rows = export_rows(files.duckdb)
        exports = sim.stats.exports_by_window[window]
    assert (done[0], held_by_failed_export(*done), exports) == (0, False, 2), done[1]
    assert held_by_failed_export(1, "batch b is held: TransientLoadError: copy failed") is False
    assert_rows_equal(rows, expected_segment_rows(sim, [window]))


def test_the_rejects_check_fails_on_a_missing_a_surplus_or_a_wrong_reject() -> None:
    sim = Simulator(SimulatorConfig(events_per_hour=200, bad_row_rate=0.1))
    window = (BACKFILL_START, BACKFILL_START + timedelta(hours=1))
    batch_id = window_key(*window).id
    bad = {batch_id: bad_rows(sim, window)}
    # A reason names the field ("mistyped_int:IndvId") or JSON (a malformed line).
    right: list[dict[str, Any]] = [
        {
            "SyncdBatchId": batch_id,
            "Position": position,
            "Reason": f"{row.bad}: not JSON" if row.bad == "malformed" else f"{row.bad}: mistyped",
            "Raw": row.raw.decode(),
        }
        for position, row in bad[batch_id]
    ]
    wrong_raw = [{**right[0], "Raw": right[0]["Raw"] + " "}, *right[1:]]
    wrong_reason = [{**right[0], "Reason": "something"}, *right[1:]]
    verdicts = [
        rejects_match(rejects, bad, [])
        for rejects in (right, right[1:], [*right, right[0]], wrong_raw, wrong_reason)
    ]
    assert (len(right) > 2, verdicts) == (True, [True, False, False, False, False])


# -- the people batches (ExportIndividuals) ---------------------------------------------------


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def people_campaign(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> CampaignResult:
    """Kills land in event and people batches alike (a people batch follows each commit)."""
    settings = ci_settings(request.param, kills=3, days=1, max_delay=2.5)
    settings.individuals = True
    return run_campaign(settings, Path(tmp_path_factory.mktemp(f"people-{request.param}")))


def test_people_campaign_kills_happened_and_nothing_was_lost(
    people_campaign: CampaignResult,
) -> None:
    assert people_campaign.kills >= 3
    summary = people_campaign.summary()
    assert (summary["rows_lost"], summary["rows_duplicated"], summary["rows_unexpected"]) == (
        0,
        0,
        0,
    )
    assert summary["sync_rows_ok"] and summary["rejects_ok"]


def test_people_campaign_people_table_and_its_sync_rows_match(
    people_campaign: CampaignResult,
) -> None:
    problems = [p for r in people_campaign.rounds for p in r.problems]
    assert all(r.people_ok for r in people_campaign.rounds), problems
    assert people_campaign.ok, problems
