"""syncd keeps to the export API's rate limit with many batches in flight.

The simulator enforces a per-second limit and counts every request it refuses; with batches
prepared ahead (Lookahead) and fast polls, syncd's own limiter (ApiRequestsPerSecond) must
keep it from ever being refused, and the rows must still be exact.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

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

from syncd.simulator import Simulator, SimulatorConfig
from syncd.timeutil import UTC

HOURS = 10


def _run(tmp_path: Path, api_requests_per_second: int) -> tuple[int, int, Simulator]:
    config = SimulatorConfig(
        api_key=API_KEY, events_per_hour=40, operation_latency=0.3, rate_limit_per_second=6.0
    )
    start = NOW.replace(minute=0) - timedelta(hours=HOURS + 1)
    with Simulator(config) as sim:
        files = write_config(
            tmp_path,
            sim,
            start,
            {
                "Lookahead": 6,
                "PollInterval": "20ms",
                "ApiRequestsPerSecond": api_requests_per_second,
            },
        )
        code = run_cli(["once", "-c", str(files.config)])
        windows = [
            (r["BatchStart"].replace(tzinfo=UTC), r["BundleEndTime"].replace(tzinfo=UTC))
            for r in sync_rows(files.duckdb)
        ]
        assert windows == hour_windows(start, start + timedelta(hours=HOURS))
        assert_rows_equal(export_rows(files.duckdb), expected_segment_rows(sim, windows))
        return code, sim.stats.rate_limited, sim


def test_batches_in_flight_never_exceed_the_api_rate_limit(tmp_path: Path) -> None:
    code, refused, _ = _run(tmp_path, api_requests_per_second=5)
    assert (code, refused) == (0, 0)


def test_without_the_client_side_limit_the_simulator_refuses_and_syncd_recovers(
    tmp_path: Path,
) -> None:
    """The control: the same run allowed far more calls than the API takes is refused (so
    the test above proves something) and still ends exact, through Retry-After."""
    code, refused, _ = _run(tmp_path, api_requests_per_second=1000)
    assert code == 0
    assert refused > 0
