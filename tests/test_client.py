"""The export client, downloads, operation store and fetcher against httpx.MockTransport.

`FakeApi` answers like FullStory (and a storage bucket behind signed URLs); a test queues the
odd answer it needs (a 429, a truncated body) and asserts on the one outcome it cares about.
"""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from syncd.errors import (
    AuthError,
    ConfigError,
    ExportPending,
    RateLimited,
    SourceError,
    TerminalSourceError,
    TransientSourceError,
)
from syncd.sources.client import (
    API_ANSWER_LIMIT,
    SIGNED_URL_ATTEMPTS,
    Bundle,
    ExportClient,
    map_httpx_error,
)
from syncd.sources.download import TruncatedDownload, write_body
from syncd.sources.fetcher import Fetcher
from syncd.sources.operations import OperationStore, PendingOperation
from syncd.sources.ratelimit import RateLimiter
from syncd.sources.retry import RetryPolicy
from syncd.timeutil import UTC

KEY = "na1.S3cr3tK3y/abc=="
API = "https://api.test"
LEGACY = "https://legacy.test/api/v1"
OP_ID = "b3BlcmF0aW9u=="  # operation ids contain "="
EXPORT_ID = "export-1"
SIGNED = "https://bucket.test/exports/export-1.ndjson.gz"
START = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
END = datetime(2026, 11, 1, 1, 0, tzinfo=UTC)
ROWS = [{"EventStart": "2026-11-01T00:00:01.000Z", "EventType": "click", "IndvId": 2**60 + 1}]
NDJSON = b"".join(json.dumps(r).encode() + b"\n" for r in ROWS)
FAST = RetryPolicy(base=1.0, max_attempts=3, cap=4.0, jitter=0.0)
BIG_ID = 2**63 + 12345  # beyond 2**53: a float would round it


class FakeClock:
    """Monotonic seconds that advance only when something sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Chunks(httpx.SyncByteStream):
    """A response body delivered in the given pieces; an exception piece is raised."""

    def __init__(self, *pieces: bytes | Exception) -> None:
        self.pieces = pieces

    def __iter__(self) -> Iterator[bytes]:
        for piece in self.pieces:
            if isinstance(piece, Exception):
                raise piece
            yield piece


Answer = httpx.Response | Exception


class FakeApi:
    """FullStory's two APIs plus the bucket behind signed URLs, in one MockTransport handler."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.queued: dict[str, list[Answer]] = {}
        self.states = ["PENDING", "COMPLETED"]
        self.export_body = gzip.compress(NDJSON)
        self.bundle_pages: list[list[dict[str, Any]]] = [[]]
        self.signed_url = SIGNED
        self.on_poll: list[Any] = []

    def queue(self, route: str, *answers: Answer) -> None:
        self.queued.setdefault(route, []).extend(answers)

    def count(self, route: str) -> int:
        return sum(1 for r in self.requests if route_of(r) == route)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = route_of(request)
        if self.queued.get(route):
            answer = self.queued[route].pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        if route == "POST /segments/v1/exports":
            return httpx.Response(200, json={"operationId": OP_ID})
        if route == f"GET /operations/v1/{OP_ID}":
            for hook in self.on_poll:
                hook()
            state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            results = {"searchExportId": EXPORT_ID} if state == "COMPLETED" else None
            return httpx.Response(200, json={"id": OP_ID, "state": state, "results": results})
        if route == f"GET /search/v1/exports/{EXPORT_ID}/results":
            return httpx.Response(200, json={"location": self.signed_url, "expires": "x"})
        if route == "GET /exports/export-1.ndjson.gz":
            return httpx.Response(200, content=self.export_body)
        if route == "GET /api/v1/export/list":
            page = self.bundle_pages.pop(0) if self.bundle_pages else []
            return httpx.Response(200, json={"exports": page})
        if route == "GET /api/v1/export/get":
            return httpx.Response(200, content=gzip.compress(b"[" + NDJSON.strip() + b"]"))
        return httpx.Response(404, json={"code": "not_found", "message": f"no route {route}"})


def route_of(request: httpx.Request) -> str:
    return f"{request.method} {request.url.path}"


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(api: FakeApi, clock: FakeClock) -> Iterator[ExportClient]:
    with make_client(api, clock) as made:
        yield made


def make_client(api: FakeApi, clock: FakeClock, **options: Any) -> ExportClient:
    options.setdefault("retry", FAST)
    options.setdefault("legacy_rate", RateLimiter(2, 60.0, clock=clock, sleep=clock.sleep))
    return ExportClient(
        API,
        KEY,
        legacy_api_url=LEGACY,
        http=httpx.Client(transport=httpx.MockTransport(api)),
        sleep=clock.sleep,
        clock=clock,
        **options,
    )


def error(status: int, code: str = "oops", message: str = "it broke", **headers: str) -> Answer:
    return httpx.Response(status, json={"code": code, "message": message}, headers=headers)


# requests as FullStory expects them


def test_authorization_is_the_raw_key(client: ExportClient, api: FakeApi) -> None:
    client.create_export(START, END)
    assert api.requests[0].headers["Authorization"] == f"Basic {KEY}"


def test_extra_headers_go_on_api_calls(api: FakeApi, clock: FakeClock) -> None:
    with make_client(api, clock, extra_headers=[("X-Proxy-Token", "t0k")]) as client:
        client.create_export(START, END)
    assert api.requests[0].headers["X-Proxy-Token"] == "t0k"


def test_create_body_is_exactly_the_documented_one(client: ExportClient, api: FakeApi) -> None:
    client.create_export(START, END, fields=["EventStart", "user_*"])
    assert json.loads(api.requests[0].content) == {
        "segmentId": "everyone",
        "type": "TYPE_EVENT",
        "format": "FORMAT_NDJSON",
        "timeRange": {"start": "2026-11-01T00:00:00Z", "end": "2026-11-01T01:00:00Z"},
        "segmentTimeRange": {"start": "", "end": ""},
        "timezone": "UTC",
        "fields": ["EventStart", "user_*"],
    }


def test_no_fields_means_all_fields(client: ExportClient, api: FakeApi) -> None:
    client.create_export(START, END)
    assert "fields" not in json.loads(api.requests[0].content)


def test_create_returns_the_operation_id(client: ExportClient) -> None:
    assert client.create_export(START, END) == OP_ID


def test_operation_id_is_url_quoted(client: ExportClient, api: FakeApi) -> None:
    client.get_operation(OP_ID)
    assert api.requests[0].url.raw_path == b"/operations/v1/b3BlcmF0aW9u%3D%3D"


def test_every_request_has_connect_and_read_timeouts(client: ExportClient, api: FakeApi) -> None:
    client.create_export(START, END)
    timeouts = api.requests[0].extensions["timeout"]
    assert (timeouts["connect"], timeouts["read"]) == (30.0, 60.0)


def test_naive_window_is_refused(client: ExportClient) -> None:
    with pytest.raises(ValueError, match="timezone"):
        client.create_export(START.replace(tzinfo=None), END)


# polling


def test_wait_returns_the_search_export_id(client: ExportClient) -> None:
    assert client.wait_for_export(OP_ID, poll_interval=5.0, deadline=60.0) == EXPORT_ID


def test_polls_come_soon_then_back_off_to_the_interval(
    client: ExportClient, api: FakeApi, clock: FakeClock
) -> None:
    api.states = ["PENDING"] * 7 + ["COMPLETED"]
    client.wait_for_export(OP_ID, poll_interval=5.0, deadline=60.0)
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_a_short_poll_interval_is_never_exceeded(
    client: ExportClient, api: FakeApi, clock: FakeClock
) -> None:
    api.states = ["PENDING", "PENDING", "COMPLETED"]
    client.wait_for_export(OP_ID, poll_interval=0.25, deadline=60.0)
    assert clock.sleeps == [0.25, 0.25]


def test_failed_operation_carries_error_details(client: ExportClient, api: FakeApi) -> None:
    api.queue(
        f"GET /operations/v1/{OP_ID}",
        httpx.Response(200, json={"id": OP_ID, "state": "FAILED", "errorDetails": "too big"}),
    )
    with pytest.raises(TerminalSourceError, match="too big"):
        client.wait_for_export(OP_ID, poll_interval=5.0, deadline=60.0)


def test_pending_past_the_deadline_is_transient(client: ExportClient, api: FakeApi) -> None:
    api.states = ["PENDING"]
    with pytest.raises(TransientSourceError, match="still PENDING"):
        client.wait_for_export(OP_ID, poll_interval=5.0, deadline=12.0)


def test_stop_ends_polling(api: FakeApi) -> None:
    api.states = ["PENDING"]
    stop = threading.Event()
    api.on_poll.append(stop.set)
    http = httpx.Client(transport=httpx.MockTransport(api))
    with ExportClient(API, KEY, http=http, stop=stop) as client:
        with pytest.raises(TransientSourceError, match="stopping"):
            client.wait_for_export(OP_ID, poll_interval=3600.0, deadline=7200.0)


def test_unknown_operation_is_terminal(client: ExportClient) -> None:
    with pytest.raises(TerminalSourceError, match="not_found"):
        client.get_operation("gone")


# signed results URL


def test_download_stores_the_export(client: ExportClient, tmp_path: Path) -> None:
    download = client.download_export(EXPORT_ID, tmp_path / "b.ndjson.gz")
    assert gzip.decompress(download.path.read_bytes()) == NDJSON


def test_signed_url_gets_no_key_and_no_extra_headers(
    api: FakeApi, clock: FakeClock, tmp_path: Path
) -> None:
    with make_client(api, clock, extra_headers=[("X-Proxy-Token", "t0k")]) as client:
        client.download_export(EXPORT_ID, tmp_path / "b.ndjson.gz")
    signed = next(r for r in api.requests if r.url.host == "bucket.test")
    assert {"authorization", "x-proxy-token"} & set(signed.headers.keys()) == set()


def test_signed_url_has_timeouts(client: ExportClient, api: FakeApi, tmp_path: Path) -> None:
    client.download_export(EXPORT_ID, tmp_path / "b.ndjson.gz")
    signed = next(r for r in api.requests if r.url.host == "bucket.test")
    assert signed.extensions["timeout"]["read"] == 60.0


def test_expired_signed_url_is_renewed(client: ExportClient, api: FakeApi, tmp_path: Path) -> None:
    api.queue("GET /exports/export-1.ndjson.gz", httpx.Response(403, text="<Error>Expired</Error>"))
    client.download_export(EXPORT_ID, tmp_path / "b.ndjson.gz")
    assert api.count(f"GET /search/v1/exports/{EXPORT_ID}/results") == 2


def test_renewal_of_signed_urls_is_bounded(api: FakeApi, clock: FakeClock, tmp_path: Path) -> None:
    api.queue("GET /exports/export-1.ndjson.gz", *(httpx.Response(400) for _ in range(10)))
    with make_client(api, clock, retry=RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(TransientSourceError):
            client.download_export(EXPORT_ID, tmp_path / "b.ndjson.gz")
    assert api.count(f"GET /search/v1/exports/{EXPORT_ID}/results") == SIGNED_URL_ATTEMPTS


# error mapping


def test_401_is_an_auth_error_with_the_api_message(client: ExportClient, api: FakeApi) -> None:
    api.queue("POST /segments/v1/exports", error(401, "unauthenticated", "bad key"))
    with pytest.raises(AuthError, match="unauthenticated: bad key"):
        client.create_export(START, END)


def test_403_is_an_auth_error(client: ExportClient, api: FakeApi) -> None:
    api.queue("POST /segments/v1/exports", error(403, "permission_denied", "no export"))
    with pytest.raises(AuthError):
        client.create_export(START, END)


def test_400_is_terminal_with_code_and_message(client: ExportClient, api: FakeApi) -> None:
    api.queue("POST /segments/v1/exports", error(400, "invalid_argument", "bad range"))
    with pytest.raises(TerminalSourceError, match="invalid_argument: bad range"):
        client.create_export(START, END)


def test_terminal_errors_are_not_retried(client: ExportClient, api: FakeApi) -> None:
    api.queue("POST /segments/v1/exports", error(400))
    with pytest.raises(TerminalSourceError):
        client.create_export(START, END)
    assert api.count("POST /segments/v1/exports") == 1


def test_429_waits_for_retry_after(client: ExportClient, api: FakeApi, clock: FakeClock) -> None:
    api.queue("POST /segments/v1/exports", error(429, **{"Retry-After": "3"}))
    client.create_export(START, END)
    assert clock.sleeps == [3.0]


def test_429_without_retries_left_is_rate_limited(api: FakeApi, clock: FakeClock) -> None:
    api.queue("POST /segments/v1/exports", error(429, **{"Retry-After": "7"}))
    with make_client(api, clock, retry=RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(RateLimited) as caught:
            client.create_export(START, END)
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize("status", [500, 502, 503, 499])
def test_server_errors_are_retried(client: ExportClient, api: FakeApi, status: int) -> None:
    api.queue("POST /segments/v1/exports", error(status))
    assert client.create_export(START, END) == OP_ID


def test_retries_run_out_with_the_last_error(client: ExportClient, api: FakeApi) -> None:
    api.queue("POST /segments/v1/exports", *(error(503, "unavailable", "later") for _ in range(3)))
    with pytest.raises(TransientSourceError, match="503"):
        client.create_export(START, END)


def _httpx_exception_classes() -> list[type[Exception]]:
    found: list[type[Exception]] = [httpx.InvalidURL]
    pending: list[type[Exception]] = [httpx.HTTPError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls is not httpx.HTTPStatusError:
            found.append(cls)
    return found


@pytest.mark.parametrize("exc_class", _httpx_exception_classes(), ids=lambda c: c.__name__)
def test_no_httpx_exception_escapes_unmapped(
    api: FakeApi, clock: FakeClock, exc_class: type[Exception]
) -> None:
    api.queue(f"GET /operations/v1/{OP_ID}", exc_class("boom"))
    with make_client(api, clock, retry=RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(SourceError):
            client.get_operation(OP_ID)


def test_status_errors_are_mapped_too() -> None:
    request = httpx.Request("GET", "https://api.test/x")
    response = httpx.Response(404, request=request)
    exc = httpx.HTTPStatusError("404", request=request, response=response)
    assert isinstance(map_httpx_error(exc, "GET /x"), TerminalSourceError)


def test_invalid_signed_url_is_terminal(client: ExportClient, api: FakeApi, tmp_path: Path) -> None:
    api.signed_url = "https://bucket.test:notaport/x"
    with pytest.raises(TerminalSourceError, match="InvalidURL"):
        client.download_export(EXPORT_ID, tmp_path / "b.ndjson.gz")


@pytest.mark.parametrize("url", ["ftp://api.test", "api.fullstory.com", "https://:80/"])
def test_api_url_must_be_http_with_a_host(url: str) -> None:
    with pytest.raises(ConfigError, match="ApiURL"):
        ExportClient(url, KEY)


def test_dropped_connection_mid_body_is_transient(
    client: ExportClient, api: FakeApi, tmp_path: Path
) -> None:
    broken = [
        httpx.Response(200, stream=Chunks(gzip.compress(NDJSON)[:10], httpx.ReadError("reset")))
        for _ in range(3)
    ]
    api.queue("GET /exports/export-1.ndjson.gz", *broken)
    with pytest.raises(TransientSourceError, match="ReadError"):
        client.download_export(EXPORT_ID, tmp_path / "b.ndjson.gz")


@pytest.mark.parametrize(
    ("answer", "times", "reason"),
    [
        (lambda: error(429, **{"Retry-After": "1"}), 1, "429"),
        (lambda: error(502), 1, "5xx"),
        (lambda: httpx.ConnectError("refused"), 1, "connect"),
        (lambda: httpx.ReadTimeout("slow"), 1, "timeout"),
        (lambda: httpx.Response(200, content=gzip.compress(NDJSON)[:-4]), 1, "truncated"),
        (lambda: httpx.Response(403), SIGNED_URL_ATTEMPTS, "expired_url"),
    ],
)
def test_retries_are_reported_by_reason(
    api: FakeApi,
    clock: FakeClock,
    tmp_path: Path,
    answer: Callable[[], Answer],
    times: int,
    reason: str,
) -> None:
    seen: list[str] = []
    api.queue("GET /exports/export-1.ndjson.gz", *(answer() for _ in range(times)))
    with make_client(api, clock, on_retry=lambda r, n, w: seen.append(r)) as client:
        client.download_export(EXPORT_ID, tmp_path / "b.ndjson.gz")
    assert seen == [reason]


# secrets


def test_repr_hides_the_key(client: ExportClient) -> None:
    assert KEY not in repr(client)


def test_key_reaches_no_log_and_no_error(client: ExportClient, api: FakeApi) -> None:
    api.queue("POST /segments/v1/exports", error(503), error(503), error(401, "bad", "key"))
    with structlog.testing.capture_logs() as logs, pytest.raises(AuthError) as caught:
        client.create_export(START, END)
    assert KEY not in repr(logs) + str(caught.value) + repr(caught.value.__cause__)


def test_key_with_a_line_break_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        ExportClient(API, "s3cr3t\n")
    assert "s3cr3t" not in str(caught.value)


# legacy bundles


DAY0 = int(START.timestamp())


def bundle_rows(first: int, count: int) -> list[dict[str, Any]]:
    day = DAY0
    return [
        {"Id": BIG_ID + n, "Start": day + 3600 * n, "Stop": day + 3600 * (n + 1)}
        for n in range(first, first + count)
    ]


def test_bundles_are_listed_across_pages(client: ExportClient, api: FakeApi) -> None:
    api.bundle_pages = [bundle_rows(0, 20), bundle_rows(20, 5)]
    assert len(client.list_bundles(START)) == 25


def test_next_page_starts_at_the_last_stop(client: ExportClient, api: FakeApi) -> None:
    api.bundle_pages = [bundle_rows(0, 20), []]
    client.list_bundles(START)
    assert api.requests[1].url.params["start"] == str(bundle_rows(0, 20)[-1]["Stop"])


def test_first_page_starts_at_start(client: ExportClient, api: FakeApi) -> None:
    client.list_bundles(START)
    assert api.requests[0].url.params["start"] == str(int(START.timestamp()))


def test_bundle_ids_are_exact(client: ExportClient, api: FakeApi) -> None:
    api.bundle_pages = [bundle_rows(0, 1)]
    assert client.list_bundles(START) == [
        Bundle(
            id=BIG_ID,
            start=datetime.fromtimestamp(DAY0, UTC),
            stop=datetime.fromtimestamp(DAY0 + 3600, UTC),
        )
    ]


def test_float_bundle_id_is_refused(client: ExportClient, api: FakeApi) -> None:
    api.bundle_pages = [[{"Id": 1.5e17, "Start": 1, "Stop": 2}]]
    with pytest.raises(TerminalSourceError, match="Id"):
        client.list_bundles(START)


@pytest.mark.parametrize(
    "row",
    [
        {"Id": 7, "Start": 10**20, "Stop": 10**20 + 3600},
        {"Id": 7, "Start": 1, "Stop": 10**20},
        {"Id": 7, "Start": 7200, "Stop": 3600},
    ],
    ids=["start-1e20", "stop-1e20", "backwards"],
)
def test_impossible_bundle_times_are_a_source_error(
    client: ExportClient, api: FakeApi, row: dict[str, int]
) -> None:
    api.bundle_pages = [[row]]
    with pytest.raises(TerminalSourceError, match="bundle 7"):
        client.list_bundles(START)


def test_bundle_download_sends_the_exact_id(
    client: ExportClient, api: FakeApi, tmp_path: Path
) -> None:
    client.download_bundle(BIG_ID, tmp_path / "b.json.gz")
    assert api.requests[0].url.params["id"] == str(BIG_ID)


def test_bundle_downloads_keep_to_the_rate_limit(
    client: ExportClient, clock: FakeClock, tmp_path: Path
) -> None:
    for n in range(3):
        client.download_bundle(n, tmp_path / f"{n}.json.gz")
    assert clock.sleeps == [60.0]


def test_bundle_429_pauses_the_limiter(api: FakeApi, clock: FakeClock, tmp_path: Path) -> None:
    limiter = RateLimiter(10, 60.0, clock=clock, sleep=clock.sleep)
    api.queue("GET /api/v1/export/get", error(429, **{"Retry-After": "20"}))
    with make_client(api, clock, legacy_rate=limiter, retry=RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(RateLimited):
            client.download_bundle(1, tmp_path / "b.json.gz")
    limiter.acquire()  # another caller, say
    assert clock.sleeps == [20.0]


def test_api_calls_keep_to_the_api_rate_limit(api: FakeApi, clock: FakeClock) -> None:
    limiter = RateLimiter(2, 1.0, clock=clock, sleep=clock.sleep)
    api.states = ["COMPLETED"]
    with make_client(api, clock, api_rate=limiter) as client:
        for _ in range(5):
            client.get_operation(OP_ID)
    assert len(api.requests) == 5
    assert clock.sleeps == [1.0, 1.0]  # two calls a second: the 3rd and 5th wait


def test_an_api_429_pauses_every_api_caller(api: FakeApi, clock: FakeClock) -> None:
    limiter = RateLimiter(10, 1.0, clock=clock, sleep=clock.sleep)
    api.queue(f"GET /operations/v1/{OP_ID}", error(429, **{"Retry-After": "7"}))
    with make_client(api, clock, api_rate=limiter, retry=RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(RateLimited):
            client.get_operation(OP_ID)
    limiter.acquire()  # another batch's thread, say
    assert clock.sleeps == [7.0]


# downloads: completeness checks


def save(tmp_path: Path, *pieces: bytes | Exception, **headers: str) -> Path:
    response = httpx.Response(200, stream=Chunks(*pieces), headers=headers)
    return write_body(response, tmp_path / "out.gz").path


def test_gzip_is_stored_as_sent(tmp_path: Path) -> None:
    body = gzip.compress(NDJSON)
    assert save(tmp_path, body).read_bytes() == body


def test_gzip_is_recognised_across_tiny_chunks(tmp_path: Path) -> None:
    body = gzip.compress(NDJSON)
    response = httpx.Response(200, stream=Chunks(*(body[i : i + 1] for i in range(len(body)))))
    assert write_body(response, tmp_path / "out.gz").compressed


def test_body_a_proxy_inflated_is_kept_uncompressed(tmp_path: Path) -> None:
    response = httpx.Response(200, stream=Chunks(NDJSON), headers={"Content-Encoding": "gzip"})
    assert write_body(response, tmp_path / "out.gz").compressed is False


def test_content_encoding_gzip_is_not_decoded(tmp_path: Path) -> None:
    body = gzip.compress(NDJSON)
    assert save(tmp_path, body, **{"Content-Encoding": "gzip"}).read_bytes() == body


def test_multi_member_gzip_is_whole(tmp_path: Path) -> None:
    body = gzip.compress(NDJSON) + gzip.compress(NDJSON)
    assert save(tmp_path, body).read_bytes() == body


def test_large_gzip_is_checked_with_bounded_memory(tmp_path: Path) -> None:
    body = gzip.compress(b"\0" * 20_000_000)
    assert save(tmp_path, body).stat().st_size == len(body)


def test_truncated_gzip_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TruncatedDownload):
        save(tmp_path, gzip.compress(NDJSON)[:-6])


def test_corrupt_crc_is_refused(tmp_path: Path) -> None:
    body = bytearray(gzip.compress(NDJSON))
    body[-8] ^= 0xFF
    with pytest.raises(TruncatedDownload, match="corrupt"):
        save(tmp_path, bytes(body))


def test_short_body_against_content_length_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TruncatedDownload, match="Content-Length"):
        save(tmp_path, NDJSON, **{"Content-Length": str(len(NDJSON) + 10)})


def test_refused_download_leaves_no_file(tmp_path: Path) -> None:
    (tmp_path / "out.gz").write_bytes(b"old")
    with pytest.raises(TruncatedDownload):
        save(tmp_path, gzip.compress(NDJSON)[:-6])
    assert list(tmp_path.iterdir()) == []


def test_download_deadline_is_enforced(tmp_path: Path) -> None:
    clock = FakeClock()
    pieces = [zlib.compress(b"x")] * 5

    def slow() -> float:
        clock.now += 100.0
        return clock.now

    response = httpx.Response(200, stream=Chunks(*pieces))
    with pytest.raises(TransientSourceError, match="deadline"):
        write_body(response, tmp_path / "out", deadline=250.0, clock=slow)


def test_stop_abandons_a_download(tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()
    response = httpx.Response(200, stream=Chunks(gzip.compress(NDJSON)))
    with pytest.raises(TransientSourceError, match="stopping"):
        write_body(response, tmp_path / "out.gz", stop=stop)


# persisted operations


def pending(batch_id: str = "b1", created_at: datetime = START) -> PendingOperation:
    return PendingOperation(batch_id, OP_ID, START, END, created_at=created_at)


def test_operation_survives_a_restart(tmp_path: Path) -> None:
    OperationStore(tmp_path / "ops.json", clock=lambda: START).put(pending())
    assert OperationStore(tmp_path / "ops.json", clock=lambda: START).get("b1") == pending()


def test_removed_operation_is_gone_after_restart(tmp_path: Path) -> None:
    store = OperationStore(tmp_path / "ops.json", clock=lambda: START)
    store.put(pending())
    store.remove("b1")
    assert OperationStore(tmp_path / "ops.json", clock=lambda: START).get("b1") is None


def test_operation_older_than_six_days_is_discarded(tmp_path: Path) -> None:
    OperationStore(tmp_path / "ops.json", clock=lambda: START).put(pending())
    later = START + timedelta(days=6, seconds=1)
    assert OperationStore(tmp_path / "ops.json", clock=lambda: later).get("b1") is None


def test_store_file_holds_window_and_ids(tmp_path: Path) -> None:
    store = OperationStore(tmp_path / "ops.json", clock=lambda: START)
    store.put(pending().with_export_id(EXPORT_ID))
    assert json.loads((tmp_path / "ops.json").read_text())["operations"]["b1"] == {
        "operation_id": OP_ID,
        "export_id": EXPORT_ID,
        "window": {"start": "2026-11-01T00:00:00Z", "end": "2026-11-01T01:00:00Z"},
        "created_at": "2026-11-01T00:00:00Z",
    }


def test_store_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = OperationStore(tmp_path / "ops.json", clock=lambda: START)
    store.put(pending("b1"))
    store.put(pending("b2"))
    assert [p.name for p in tmp_path.iterdir()] == ["ops.json"]


def test_unreadable_store_starts_empty(tmp_path: Path) -> None:
    (tmp_path / "ops.json").write_text("{not json")
    assert OperationStore(tmp_path / "ops.json").all() == []


# fetcher


@pytest.fixture
def store(tmp_path: Path) -> OperationStore:
    return OperationStore(tmp_path / "ops.json", clock=lambda: START)


def make_fetcher(client: ExportClient, store: OperationStore, tmp_path: Path) -> Fetcher:
    return Fetcher(
        client,
        store,
        tmp_path / "spool",
        segment_id="everyone",
        poll_interval=5.0,
        operation_deadline=600.0,
        clock=lambda: START,
    )


def test_fetch_downloads_the_window(
    client: ExportClient, store: OperationStore, tmp_path: Path
) -> None:
    result = make_fetcher(client, store, tmp_path).fetch_segment("b1", START, END)
    assert gzip.decompress(result.path.read_bytes()) == NDJSON


def test_spool_file_is_named_after_the_batch(
    client: ExportClient, store: OperationStore, tmp_path: Path
) -> None:
    result = make_fetcher(client, store, tmp_path).fetch_segment("b1", START, END)
    assert result.path == tmp_path / "spool" / "b1.ndjson.gz"


def test_operation_is_persisted_before_polling(
    client: ExportClient, api: FakeApi, store: OperationStore, tmp_path: Path
) -> None:
    seen: list[str] = []
    api.on_poll.append(
        lambda: seen.append(json.loads(store.path.read_text())["operations"]["b1"]["operation_id"])
    )
    make_fetcher(client, store, tmp_path).fetch_segment("b1", START, END)
    assert seen[0] == OP_ID


def test_persisted_operation_is_resumed_not_recreated(
    client: ExportClient, api: FakeApi, store: OperationStore, tmp_path: Path
) -> None:
    store.put(pending())
    make_fetcher(client, store, tmp_path).fetch_segment("b1", START, END)
    assert api.count("POST /segments/v1/exports") == 0


def test_persisted_export_id_skips_polling(
    client: ExportClient, api: FakeApi, store: OperationStore, tmp_path: Path
) -> None:
    store.put(pending().with_export_id(EXPORT_ID))
    make_fetcher(client, store, tmp_path).fetch_segment("b1", START, END)
    assert api.count(f"GET /operations/v1/{OP_ID}") == 0


def test_export_id_is_persisted_once_known(
    client: ExportClient, store: OperationStore, tmp_path: Path
) -> None:
    make_fetcher(client, store, tmp_path).fetch_segment("b1", START, END)
    assert store.get("b1") == pending().with_export_id(EXPORT_ID)


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json={"id": OP_ID, "state": "FAILED", "errorDetails": "gone"}),
        error(404, "not_found", "operation expired"),
    ],
    ids=["failed", "expired"],
)
def test_unusable_persisted_operation_is_replaced(
    client: ExportClient, api: FakeApi, store: OperationStore, tmp_path: Path, answer: Answer
) -> None:
    store.put(pending())
    api.queue(f"GET /operations/v1/{OP_ID}", answer)
    make_fetcher(client, store, tmp_path).fetch_segment("b1", START, END)
    assert api.count("POST /segments/v1/exports") == 1


def test_operation_pending_past_the_operation_timeout_is_exported_anew(
    client: ExportClient, api: FakeApi, store: OperationStore, tmp_path: Path
) -> None:
    store.put(pending(created_at=START - timedelta(hours=3)))  # the deadline is 600 s
    api.states = ["PENDING", "COMPLETED"]  # one last poll of the old one, then the new one
    result = make_fetcher(client, store, tmp_path).fetch_segment("b1", START, END)
    assert api.count("POST /segments/v1/exports") == 1
    assert gzip.decompress(result.path.read_bytes()) == NDJSON


def test_operation_past_the_timeout_that_completed_meanwhile_is_used(
    client: ExportClient, api: FakeApi, store: OperationStore, tmp_path: Path
) -> None:
    store.put(pending(created_at=START - timedelta(hours=3)))
    api.states = ["COMPLETED"]
    make_fetcher(client, store, tmp_path).fetch_segment("b1", START, END)
    assert api.count("POST /segments/v1/exports") == 0


def test_operation_pending_within_the_timeout_is_kept_for_the_next_attempt(
    client: ExportClient, api: FakeApi, store: OperationStore, tmp_path: Path
) -> None:
    store.put(pending())
    api.states = ["PENDING"]
    with pytest.raises(ExportPending):
        make_fetcher(client, store, tmp_path).fetch_segment("b1", START, END)
    assert api.count("POST /segments/v1/exports") == 0
    assert store.get("b1") == pending()


def test_new_export_pending_past_the_timeout_is_forgotten(
    client: ExportClient, api: FakeApi, store: OperationStore, tmp_path: Path
) -> None:
    api.states = ["PENDING"]
    with pytest.raises(TransientSourceError, match="the next attempt creates a new export"):
        make_fetcher(client, store, tmp_path).fetch_segment("b1", START, END)
    assert store.get("b1") is None


def test_auth_error_on_resume_is_raised_not_papered_over(
    client: ExportClient, api: FakeApi, store: OperationStore, tmp_path: Path
) -> None:
    store.put(pending())
    api.queue(f"GET /operations/v1/{OP_ID}", error(401, "unauthenticated", "key revoked"))
    with pytest.raises(AuthError):
        make_fetcher(client, store, tmp_path).fetch_segment("b1", START, END)


def test_operation_for_another_window_is_not_resumed(
    client: ExportClient, api: FakeApi, store: OperationStore, tmp_path: Path
) -> None:
    store.put(pending())
    make_fetcher(client, store, tmp_path).fetch_segment("b1", START, END + timedelta(hours=1))
    assert api.count("POST /segments/v1/exports") == 1


def test_operation_stays_until_forgotten(
    client: ExportClient, store: OperationStore, tmp_path: Path
) -> None:
    fetcher = make_fetcher(client, store, tmp_path)
    fetcher.fetch_segment("b1", START, END)
    fetcher.forget("b1")
    assert store.get("b1") is None


def test_inflated_export_loses_its_gz_name(
    client: ExportClient, api: FakeApi, store: OperationStore, tmp_path: Path
) -> None:
    api.export_body = NDJSON
    result = make_fetcher(client, store, tmp_path).fetch_segment("b1", START, END)
    assert (result.path.name, result.compressed) == ("b1.ndjson", False)


def test_bundles_are_fetched_as_json_arrays(
    client: ExportClient, store: OperationStore, tmp_path: Path
) -> None:
    bundles = [Bundle(BIG_ID, START, END), Bundle(BIG_ID + 1, END, END + timedelta(hours=1))]
    results = make_fetcher(client, store, tmp_path).fetch_bundles("legacy-1", bundles)
    assert [(r.path.name, r.format, r.bundle_id) for r in results] == [
        (f"legacy-1-{BIG_ID}.json.gz", "json-array", BIG_ID),
        (f"legacy-1-{BIG_ID + 1}.json.gz", "json-array", BIG_ID + 1),
    ]


def test_bundles_a_killed_predecessor_downloaded_are_not_downloaded_again(
    client: ExportClient, api: FakeApi, store: OperationStore, tmp_path: Path
) -> None:
    bundles = [Bundle(BIG_ID, START, END), Bundle(BIG_ID + 1, END, END + timedelta(hours=1))]
    first = make_fetcher(client, store, tmp_path).fetch_bundles("legacy-1", bundles)
    again = make_fetcher(client, store, tmp_path).fetch_bundles("legacy-1", bundles)
    assert api.count("GET /api/v1/export/get") == 2
    assert again == first


def test_an_export_already_in_the_spool_is_not_downloaded_again(
    client: ExportClient, api: FakeApi, store: OperationStore, tmp_path: Path
) -> None:
    first = make_fetcher(client, store, tmp_path).fetch_segment("b1", START, END)
    again = make_fetcher(client, store, tmp_path).fetch_segment("b1", START, END)
    assert api.count("GET /exports/export-1.ndjson.gz") == 1
    assert again == first


def test_a_spooled_file_that_is_not_gzip_gets_its_plain_name(
    client: ExportClient, api: FakeApi, store: OperationStore, tmp_path: Path
) -> None:
    store.put(pending().with_export_id(EXPORT_ID))
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "b1.ndjson.gz").write_bytes(NDJSON)  # a crash between download and rename
    result = make_fetcher(client, store, tmp_path).fetch_segment("b1", START, END)
    assert (result.path.name, result.compressed, api.count("GET /exports/export-1.ndjson.gz")) == (
        "b1.ndjson",
        False,
        0,
    )


def test_a_bundle_redirected_to_another_origin_is_fetched_bare(
    api: FakeApi, clock: FakeClock, tmp_path: Path
) -> None:
    storage = "https://bundles.storage.example.com/b.json.gz?X-Sig=1"
    api.queue("GET /api/v1/export/get", httpx.Response(302, headers={"Location": storage}))
    api.queue("GET /b.json.gz", httpx.Response(200, content=gzip.compress(b"[]")))
    with make_client(api, clock, extra_headers=[("X-Proxy-Token", "proxy-secret")]) as client:
        client.download_bundle(BIG_ID, tmp_path / "b.json.gz")
    sent = {r.url.host: r.headers for r in api.requests}
    assert sent["bundles.storage.example.com"].keys() & {"authorization", "x-proxy-token"} == set()
    assert sent[httpx.URL(LEGACY).host]["x-proxy-token"] == "proxy-secret"


def test_a_redirect_within_the_api_keeps_the_key(
    api: FakeApi, clock: FakeClock, tmp_path: Path
) -> None:
    moved = f"{LEGACY}/export/get?id={BIG_ID}&moved=1"
    api.queue("GET /api/v1/export/get", httpx.Response(307, headers={"Location": moved}))
    with make_client(api, clock, extra_headers=[("X-Proxy-Token", "proxy-secret")]) as client:
        client.download_bundle(BIG_ID, tmp_path / "b.json.gz")
    assert [("authorization" in r.headers, r.url.params.get("moved")) for r in api.requests] == [
        (True, None),
        (True, "1"),
    ]


def test_endless_redirects_are_a_source_error(
    api: FakeApi, clock: FakeClock, tmp_path: Path
) -> None:
    loop = httpx.Response(302, headers={"Location": f"{LEGACY}/export/get?id=1"})
    api.queue("GET /api/v1/export/get", *([loop] * 10))
    with make_client(api, clock) as client, pytest.raises(TerminalSourceError, match="redirects"):
        client.download_bundle(BIG_ID, tmp_path / "b.json.gz")


def gzip_bomb(size: int) -> bytes:
    return gzip.compress(b" " * size, compresslevel=9)


def test_an_api_answer_that_inflates_past_the_limit_is_refused(
    api: FakeApi, clock: FakeClock
) -> None:
    bomb = httpx.Response(
        200,
        content=gzip_bomb(API_ANSWER_LIMIT + 1),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    api.queue("POST /segments/v1/exports", *([bomb] * FAST.max_attempts))
    with make_client(api, clock) as client, pytest.raises(TransientSourceError, match="larger"):
        client.create_export(START, END)


def test_an_inflating_error_body_is_cut_not_read_whole(
    client: ExportClient, api: FakeApi, tmp_path: Path
) -> None:
    api.export_body = b""
    bomb = httpx.Response(403, content=gzip_bomb(64 << 20), headers={"Content-Encoding": "gzip"})
    api.queue("GET /exports/export-1.ndjson.gz", *([bomb] * 10))
    with pytest.raises(SourceError) as caught:
        client.download_export(EXPORT_ID, tmp_path / "x.gz")
    assert len(str(caught.value)) < 1000
