"""The real client and fetcher against the simulator over loopback, through every fault.

Time is shared and fake: the simulator's clock (operation latency, signed URL and export
expiry, the legacy 2-a-minute limit) and the client's waits (backoff, polling, rate limit)
advance together when the client sleeps, so nothing here really waits except the SLOW fault.
Every download is read back and compared row for row with `expected_events`.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from syncd.errors import AuthError, TransientSourceError
from syncd.simulator import Endpoint, Fault, Simulator, SimulatorConfig
from syncd.simulator.config import NEW_FIELD_NAME
from syncd.sources.client import Bundle, ExportClient
from syncd.sources.fetcher import Fetcher, FetchResult
from syncd.sources.operations import OperationStore
from syncd.sources.ratelimit import RateLimiter
from syncd.sources.retry import RetryPolicy
from syncd.timeutil import UTC, parse_timestamp

pytestmark = pytest.mark.timeout(60)

DATA_START = datetime(2026, 10, 1, tzinfo=UTC)
START = datetime(2026, 10, 2, 5, 0, tzinfo=UTC)
END = START + timedelta(hours=1)
NOW = datetime(2026, 10, 5, tzinfo=UTC)
KEY = "sim-key"
POLICY = RetryPolicy(base=0.5, max_attempts=5, cap=8.0, jitter=0.0)


class SharedTime:
    """Fake time for both sides: the simulator's "now" and the client's monotonic clock."""

    def __init__(self, start: datetime) -> None:
        self._lock = threading.Lock()
        self._now = start
        self._origin = start
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return (self._now - self._origin).total_seconds()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._now += timedelta(seconds=seconds)


@pytest.fixture
def fake_time() -> SharedTime:
    return SharedTime(NOW)


def simulator(fake_time: SharedTime, **options: Any) -> Simulator:
    options.setdefault("events_per_hour", 400)
    return Simulator(SimulatorConfig(data_start=DATA_START, clock=fake_time.now, seed=7, **options))


@pytest.fixture
def sim(fake_time: SharedTime) -> Iterator[Simulator]:
    with simulator(fake_time) as running:
        yield running


class Setup:
    """A client, an operation store and a fetcher pointed at one simulator."""

    def __init__(self, sim: Simulator, fake_time: SharedTime, folder: Path, **client: Any) -> None:
        self.reasons: list[str] = []
        client.setdefault("retry", POLICY)
        client.setdefault(
            "legacy_rate", RateLimiter(2, 60.0, clock=fake_time.monotonic, sleep=fake_time.sleep)
        )
        self.client = ExportClient(
            sim.url,
            client.pop("api_key", KEY),
            legacy_api_url=sim.legacy_url,
            sleep=fake_time.sleep,
            clock=fake_time.monotonic,
            on_retry=lambda reason, attempt, wait: self.reasons.append(reason),
            **client,
        )
        self.store = OperationStore(folder / "operations.json", clock=fake_time.now)
        self.fetcher = Fetcher(
            self.client,
            self.store,
            folder / "spool",
            poll_interval=2.0,
            operation_deadline=3600.0,
            clock=fake_time.now,
        )

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def setup(sim: Simulator, fake_time: SharedTime, tmp_path: Path) -> Iterator[Setup]:
    made = Setup(sim, fake_time, tmp_path)
    yield made
    made.close()


def read_events(result: FetchResult) -> list[dict[str, Any]]:
    """The events of a downloaded file, parsed as the transform will parse them."""
    data = result.path.read_bytes()
    text = gzip.decompress(data) if result.compressed else data
    if result.format == "json-array":
        events: list[dict[str, Any]] = orjson.loads(text)
        return events
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


# segment exports


def test_export_arrives_row_for_row(sim: Simulator, setup: Setup) -> None:
    result = setup.fetcher.fetch_segment("b1", START, END)
    assert read_events(result) == sim.expected_events(START, END)


def test_exports_ask_for_every_field_so_a_field_added_mid_way_arrives(
    fake_time: SharedTime, tmp_path: Path
) -> None:
    """The create-export request names no fields (the API's "omitted means all"): a field
    FullStory adds in the middle of the window arrives on the events from then on."""
    bodies: list[dict[str, Any]] = []

    def record(request: httpx.Request) -> None:
        if request.method == "POST":
            bodies.append(orjson.loads(request.read()))

    added = START + timedelta(minutes=25)
    http = httpx.Client(event_hooks={"request": [record]})
    with simulator(fake_time, new_field_from=added) as sim:
        made = Setup(sim, fake_time, tmp_path, http=http)
        try:
            events = read_events(made.fetcher.fetch_segment("b1", START, END))
        finally:
            made.close()
            http.close()
        assert events == sim.expected_events(START, END)
    assert len(bodies) == 1 and "fields" not in bodies[0]
    carrying = [parse_timestamp(e["EventStart"]) >= added for e in events]
    assert [NEW_FIELD_NAME in e for e in events] == carrying
    assert 0 < sum(carrying) < len(events)


@pytest.mark.parametrize(
    ("fault", "options", "reasons"),
    [
        (Fault.RATE_LIMIT, {"count": 2, "retry_after": 3}, {"429"}),
        (Fault.SERVER_ERROR, {"count": 3}, {"5xx"}),
        (Fault.SERVER_ERROR, {"endpoint": Endpoint.DOWNLOAD, "status": 503}, {"5xx"}),
        (Fault.EXPIRED_URL, {"count": 2}, set()),
        (Fault.DROP_CONNECTION, {"endpoint": Endpoint.DOWNLOAD}, {"connect"}),
        (Fault.TRUNCATED_GZIP, {"endpoint": Endpoint.DOWNLOAD}, {"truncated"}),
        (Fault.PROXY_DECOMPRESSED, {"endpoint": Endpoint.DOWNLOAD}, set()),
        (Fault.GZIP_CONTENT_ENCODING, {"endpoint": Endpoint.DOWNLOAD}, set()),
    ],
    ids=lambda v: v.value if isinstance(v, Fault) else None,
)
def test_export_survives_fault(
    sim: Simulator, setup: Setup, fault: Fault, options: dict[str, Any], reasons: set[str]
) -> None:
    sim.faults.add(fault, **options)
    result = setup.fetcher.fetch_segment("b1", START, END)
    outcome = (read_events(result), sim.faults.pending(), set(setup.reasons))
    assert outcome == (sim.expected_events(START, END), 0, reasons)


def test_slow_answer_times_out_and_is_retried(
    sim: Simulator, fake_time: SharedTime, tmp_path: Path
) -> None:
    sim.faults.add(Fault.SLOW, endpoint=Endpoint.OPERATION, delay=0.6)
    setup = Setup(sim, fake_time, tmp_path, timeout=0.2)
    try:
        result = setup.fetcher.fetch_segment("b1", START, END)
    finally:
        setup.close()
    assert (read_events(result), setup.reasons) == (sim.expected_events(START, END), ["timeout"])


def test_429_waits_as_long_as_retry_after_says(
    sim: Simulator, setup: Setup, fake_time: SharedTime
) -> None:
    sim.faults.add(Fault.RATE_LIMIT, endpoint=Endpoint.CREATE, retry_after=7)
    setup.client.create_export(START, END)
    assert fake_time.sleeps == [7.0]


def test_proxy_inflated_export_is_kept_plain(sim: Simulator, setup: Setup) -> None:
    sim.faults.add(Fault.PROXY_DECOMPRESSED, endpoint=Endpoint.DOWNLOAD)
    result = setup.fetcher.fetch_segment("b1", START, END)
    assert (result.compressed, result.path.name) == (False, "b1.ndjson")


def test_missing_permission_is_an_auth_error(sim: Simulator, setup: Setup) -> None:
    sim.faults.add(Fault.FORBIDDEN)
    with pytest.raises(AuthError, match="permission_denied"):
        setup.fetcher.fetch_segment("b1", START, END)


def test_wrong_key_is_an_auth_error(sim: Simulator, fake_time: SharedTime, tmp_path: Path) -> None:
    setup = Setup(sim, fake_time, tmp_path, api_key="not-the-key")
    try:
        with pytest.raises(AuthError, match="unauthenticated"):
            setup.client.create_export(START, END)
    finally:
        setup.close()


def test_a_failed_export_is_a_transient_failure_of_its_batch(sim: Simulator, setup: Setup) -> None:
    """Polling a FAILED export again cannot help, a new export may: the attempt fails as
    transient (retried with backoff, never held at once) and the operation is forgotten."""
    sim.faults.add(Fault.FAILED_OPERATION)
    with pytest.raises(TransientSourceError, match="simulated export failure"):
        setup.fetcher.fetch_segment("b1", START, END)
    assert setup.fetcher.store.get("b1") is None


def test_failed_export_is_created_anew_on_the_next_attempt(sim: Simulator, setup: Setup) -> None:
    sim.faults.add(Fault.FAILED_OPERATION)
    with pytest.raises(TransientSourceError):
        setup.fetcher.fetch_segment("b1", START, END)
    result = setup.fetcher.fetch_segment("b1", START, END)
    assert read_events(result) == sim.expected_events(START, END)
    assert sim.stats.exports_by_window[(START, END)] == 2


def test_restart_resumes_the_same_export(
    fake_time: SharedTime, tmp_path: Path, sim_slow: Simulator
) -> None:
    stop = threading.Event()
    first = Setup(sim_slow, fake_time, tmp_path, stop=stop)
    first.fetcher.client.create_export = _then_set(first.fetcher.client.create_export, stop)
    with pytest.raises(TransientSourceError, match="stopping: left operation"):
        first.fetcher.fetch_segment("b1", START, END)  # shut down while it is pending
    first.close()
    restarted = Setup(sim_slow, fake_time, tmp_path)  # a new process: same files, new objects
    result = restarted.fetcher.fetch_segment("b1", START, END)
    restarted.close()
    outcome = (read_events(result), sim_slow.stats.exports_by_window[(START, END)])
    assert outcome == (sim_slow.expected_events(START, END), 1)


def test_an_export_pending_past_the_operation_timeout_is_exported_anew(
    fake_time: SharedTime, tmp_path: Path, sim_slow: Simulator
) -> None:
    setup = Setup(sim_slow, fake_time, tmp_path)
    setup.fetcher.operation_deadline = 60.0  # the simulator takes 300 s
    with pytest.raises(TransientSourceError, match="the next attempt creates a new export"):
        setup.fetcher.fetch_segment("b1", START, END)
    setup.fetcher.operation_deadline = 3600.0
    result = setup.fetcher.fetch_segment("b1", START, END)
    setup.close()
    outcome = (read_events(result), sim_slow.stats.exports_by_window[(START, END)])
    assert outcome == (sim_slow.expected_events(START, END), 2)


def _then_set(call: Any, event: threading.Event) -> Any:
    """`call`, which sets `event` once it has returned."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = call(*args, **kwargs)
        event.set()
        return result

    return wrapped


@pytest.fixture
def sim_slow(fake_time: SharedTime) -> Iterator[Simulator]:
    with simulator(fake_time, operation_latency=300.0) as running:
        yield running


def test_expired_export_is_exported_again(
    fake_time: SharedTime, tmp_path: Path, setup_short_lived: tuple[Simulator, Setup]
) -> None:
    sim, setup = setup_short_lived
    first = setup.fetcher.fetch_segment("b1", START, END)  # a crash after download, before commit
    first.path.unlink()  # ... and the spool is lost with its container
    fake_time.sleep(7200.0)  # the export's results have expired meanwhile
    result = setup.fetcher.fetch_segment("b1", START, END)
    outcome = (read_events(result), sim.stats.exports_by_window[(START, END)])
    assert outcome == (sim.expected_events(START, END), 2)


@pytest.fixture
def setup_short_lived(fake_time: SharedTime, tmp_path: Path) -> Iterator[tuple[Simulator, Setup]]:
    with simulator(fake_time, export_ttl=3600.0) as running:
        made = Setup(running, fake_time, tmp_path)
        yield running, made
        made.close()


def test_committed_batch_is_forgotten(setup: Setup) -> None:
    setup.fetcher.fetch_segment("b1", START, END)
    setup.fetcher.forget("b1")
    assert setup.store.get("b1") is None


# legacy bundles


def test_bundles_are_listed_across_pages_with_exact_ids(
    fake_time: SharedTime, tmp_path: Path, sim_hourly: Simulator
) -> None:
    setup = Setup(sim_hourly, fake_time, tmp_path)
    listed = setup.client.list_bundles(DATA_START)
    setup.close()
    expected = [Bundle(b.id, b.start, b.stop) for b in sim_hourly.bundles(DATA_START, NOW)]
    assert (listed, len(listed) > 40) == (expected, True)


@pytest.fixture
def sim_hourly(fake_time: SharedTime) -> Iterator[Simulator]:
    with simulator(fake_time, legacy_bundle_hours=1, events_per_hour=40) as running:
        yield running


def legacy_events(sim: Simulator, bundles: list[Any]) -> list[list[dict[str, Any]]]:
    return [sim.expected_events(b.start, b.stop, legacy=True) for b in bundles]


def test_bundles_arrive_row_for_row_within_the_limit(
    fake_time: SharedTime, tmp_path: Path, sim_hourly: Simulator
) -> None:
    setup = Setup(sim_hourly, fake_time, tmp_path)
    bundles = sim_hourly.bundles(START, START + timedelta(hours=3))
    results = setup.fetcher.fetch_bundles("legacy-b1", bundles)
    setup.close()
    outcome = ([read_events(r) for r in results], sim_hourly.stats.rate_limited)
    assert outcome == (legacy_events(sim_hourly, bundles), 0)


def test_server_429_on_bundles_is_honoured(
    fake_time: SharedTime, tmp_path: Path, sim_hourly: Simulator
) -> None:
    eager = RateLimiter(10, 60.0, clock=fake_time.monotonic, sleep=fake_time.sleep)
    setup = Setup(sim_hourly, fake_time, tmp_path, legacy_rate=eager)
    bundles = sim_hourly.bundles(START, START + timedelta(hours=3))
    results = setup.fetcher.fetch_bundles("legacy-b1", bundles)
    setup.close()
    outcome = ([read_events(r) for r in results], "429" in setup.reasons)
    assert outcome == (legacy_events(sim_hourly, bundles), True)


@pytest.mark.parametrize(
    "fault",
    [Fault.TRUNCATED_GZIP, Fault.DROP_CONNECTION, Fault.SERVER_ERROR, Fault.RATE_LIMIT],
    ids=lambda f: f.value,
)
def test_bundle_download_survives_fault(
    fake_time: SharedTime, tmp_path: Path, sim_hourly: Simulator, fault: Fault
) -> None:
    sim_hourly.faults.add(fault, endpoint=Endpoint.LEGACY_GET)
    setup = Setup(sim_hourly, fake_time, tmp_path)
    bundles = sim_hourly.bundles(START, START + timedelta(hours=1))
    results = setup.fetcher.fetch_bundles("legacy-b1", bundles)
    setup.close()
    outcome = ([read_events(r) for r in results], sim_hourly.faults.pending())
    assert outcome == (legacy_events(sim_hourly, bundles), 0)


# ids and export types


def test_the_client_url_quotes_hostile_ids(fake_time: SharedTime, tmp_path: Path) -> None:
    """Ids with "+", "/" and "==" (the simulator's `hostile_ids`) reach their operation and
    export only URL-quoted: the client's quoting, end to end."""
    with simulator(fake_time, hostile_ids=True) as sim:
        made = Setup(sim, fake_time, tmp_path)
        try:
            operation_id = made.client.create_export(START, END)
            export_id = made.client.wait_for_export(operation_id, poll_interval=2.0, deadline=60.0)
            made.client.download_export(export_id, tmp_path / "events.gz")
            rows = gzip.decompress((tmp_path / "events.gz").read_bytes()).splitlines()
        finally:
            made.close()
        assert operation_id.startswith("+/") and export_id.endswith("==")
        assert [orjson.loads(row) for row in rows] == sim.expected_events(START, END)
        assert sim.stats.requests_by_status[404] == 0


def test_an_individuals_export_through_the_client(
    sim: Simulator, setup: Setup, tmp_path: Path
) -> None:
    client = setup.client
    operation_id = client.create_individuals_export(START, END)
    export_id = client.wait_for_export(operation_id, poll_interval=2.0, deadline=600.0)
    dest = tmp_path / "people.ndjson.gz"
    client.download_export(export_id, dest)
    data = dest.read_bytes()
    text = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    people = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    assert people == sim.expected_individuals(START, END)
    assert len(people) == len({e["IndvId"] for e in sim.expected_events(START, END)}) > 0
