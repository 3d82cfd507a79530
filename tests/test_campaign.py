"""The crash campaign at CI scale: per warehouse, `syncd once` SIGKILLed at seeded random
moments over a backfill with bad rows, restarted, then checked against the simulator's events.

The long run is `scripts/campaign.py` (see docs/reliability.md); both use
`tests/campaign_support.py`. BigQuery and Redshift backfill one day instead of two, to keep
the whole file under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from campaign_support import CampaignResult, CampaignSettings, run_campaign

import warehouses.bigquery
import warehouses.gcs

CI_SETTINGS = {
    "duckdb": CampaignSettings("duckdb", kills=3, days=2, max_delay=1.8),
    "postgres": CampaignSettings("postgres", kills=3, days=2, max_delay=2.5),
    "redshift": CampaignSettings("redshift", kills=3, days=1, max_delay=3.5),
    "bigquery": CampaignSettings("bigquery", kills=2, days=1, max_delay=5.0),
}


@pytest.fixture(scope="module", params=list(CI_SETTINGS))
def campaign(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CampaignResult]:
    patch = pytest.MonkeyPatch()  # the checks' BigQuery reads fail fast on a stand-in's 500
    patch.setattr(warehouses.bigquery, "RETRY_DEADLINE", 5.0)
    patch.setattr(warehouses.gcs, "RETRY_DEADLINE", 5.0)
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
    assert (summary["rejects_ok"], summary["rejects_expected"] > 0) == (True, True)


def test_the_final_run_of_each_backfill_completes(campaign: CampaignResult) -> None:
    assert [r.final_exit for r in campaign.rounds] == [0] * len(campaign.rounds)
