"""Any byte sequence from the network is survivable: each hostile body (small when compressed)
is transformed, or `syncd once` is run against a simulator answering with it, in a child
process whose peak RSS must stay within 512 MB. The batch either loads with the bad rows
quarantined, or is held with a one-line reason; nothing grows with the input's inflation,
depth or size. `scripts/hostile.py` prints the same figures (and an older checkout's)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import NOW, NOW_ENV, write_config
from hostile_support import CASES, RSS_LIMIT_MB, Case, measure, measure_command

from syncd.simulator import Endpoint, Fault, Simulator, SimulatorConfig
from syncd.timeutil import format_timestamp

#: What each body must come to: (rows loaded, rows quarantined).
EXPECTED = {
    "deep-array": (0, 1),
    "deep-array-element": (2, 1),
    "deep-custom-var": (2, 1),
    "inflating-array": (1, 1),  # the 2 GB element holds the second row: quarantined whole
    "huge-element": (1, 1),
    "megabyte-rows": (1500, 0),
    "many-custom-keys": (60_000, 0),
}


@pytest.fixture(scope="module")
def bodies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile-bodies")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_hostile_body_is_transformed_within_bounded_memory(case: Case, bodies: Path) -> None:
    got = measure(case, bodies, kill_mb=4 * RSS_LIMIT_MB, timeout=300)
    rows = (got.outcome.get("rows"), got.outcome.get("rejected"))
    assert (rows, got.peak_mb <= RSS_LIMIT_MB) == (EXPECTED[case.name], True), got


# -- `syncd once` against an API that answers with bombs --------------------------------------


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(api_key="hostile-key", events_per_hour=20)) as running:
        yield running


def once_in_a_child(tmp_path: Path, sim: Simulator) -> tuple[float, int, str]:
    """`syncd once` in a child process with the clock at NOW: (peak MB, exit code, stderr)."""
    files = write_config(
        tmp_path,
        sim,
        NOW.replace(hour=0, minute=0),
        {"FsApiToken": "hostile-key", "MaxBatchAttempts": 1, "BackoffStepsMax": 2},
    )
    runner = Path(__file__).resolve().parent / "crash_runner.py"
    argv = [sys.executable, str(runner), "none", "once", "-c", str(files.config)]
    env = {NOW_ENV: format_timestamp(NOW)}
    got = measure_command(argv, kill_mb=4 * RSS_LIMIT_MB, timeout=300, env=env)
    return got.peak_mb, int(got.outcome.get("exit", 0)), str(got.outcome.get("stderr"))


@pytest.mark.parametrize(
    ("endpoint", "status"),
    [(Endpoint.CREATE, 200), (Endpoint.OPERATION, 200), (Endpoint.DOWNLOAD, 403)],
    ids=["api-answer", "operation-answer", "signed-url-error-body"],
)
def test_a_gzip_bomb_from_the_api_holds_the_batch_within_bounded_memory(
    tmp_path: Path, sim: Simulator, endpoint: Endpoint, status: int
) -> None:
    sim.faults.add(Fault.GZIP_BOMB, 1000, endpoint=endpoint, status=status)
    peak, code, stderr = once_in_a_child(tmp_path, sim)
    fired = sum(f.kind is Fault.GZIP_BOMB for f in sim.faults.fired())
    assert (code, "is held" in stderr, fired > 0, peak <= RSS_LIMIT_MB) == (1, True, True, True), (
        peak,
        stderr,
    )
