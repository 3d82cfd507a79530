"""The FullStory export APIs over httpx: segment exports and legacy bundles.

Every call has connect and read timeouts and goes through the one retry loop; every httpx
exception is translated in `map_httpx_error`, so callers only ever see `syncd.errors`. The API
key travels in one private header map and never reaches a repr, a log line or an error.
Signed result URLs are fetched with a bare request: no API key, no extra headers.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import structlog

from syncd import __version__
from syncd.batch import Bundle
from syncd.config.secret import Secret
from syncd.errors import (
    AuthError,
    ConfigError,
    ExportFailed,
    ExportPending,
    RateLimited,
    SourceError,
    SyncdError,
    TerminalSourceError,
    TransientSourceError,
)
from syncd.sources.download import (
    DEFAULT_DOWNLOAD_DEADLINE,
    Download,
    TruncatedDownload,
    write_body,
)
from syncd.sources.ratelimit import RateLimiter
from syncd.sources.retry import RetryHook, RetryPolicy, call_with_retry, parse_retry_after
from syncd.timeutil import UTC, format_timestamp, parse_timestamp, utcnow

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

DEFAULT_API_URL = "https://api.fullstory.com"
DEFAULT_LEGACY_API_URL = "https://export.fullstory.com/api/v1"
DEFAULT_TIMEOUT = 60.0
#: Wait before the first poll of an export operation; each later wait doubles, up to the
#: poll interval (most exports of one window finish within seconds).
FIRST_POLL_WAIT = 0.5
#: Connecting never waits longer than this, whatever the read timeout.
MAX_CONNECT_TIMEOUT = 30.0
#: Redirects followed for one legacy bundle download.
MAX_REDIRECTS = 5
#: Fresh signed URLs asked for, in one download attempt, when the last one was refused.
SIGNED_URL_ATTEMPTS = 3
#: A full page of the legacy export list; fewer rows means there are no more for now.
LEGACY_PAGE_SIZE = 20
#: Statuses with which an expired signed URL is refused (S3 and GCS answer 403 or 400).
_SIGNED_URL_REFUSED = frozenset({400, 403})
_MAX_DETAIL = 300  # characters of an error body quoted in a message
#: The most of an API answer read, after decoding: FullStory's are a few KiB; a body that
#: inflates past this (a gzip bomb, a broken proxy) is refused, never held in memory whole.
API_ANSWER_LIMIT = 16 << 20
#: The most of an error body read, after decoding: enough for its message.
ERROR_BODY_LIMIT = 64 << 10


class SignedUrlRefused(TransientSourceError):
    """The signed results URL was refused (expired); a fresh one usually works."""


@dataclass(frozen=True)
class Operation:
    """A segment export operation as the operations API reports it."""

    id: str
    state: str  # PENDING, COMPLETED or FAILED
    export_id: str | None  # results.searchExportId, once COMPLETED
    error_details: str = ""
    percent_complete: int | None = None
    expires: datetime | None = None  # when the export's results go away


def map_httpx_error(exc: httpx.HTTPError | httpx.InvalidURL, what: str) -> SourceError:
    """The one translation of httpx's exceptions (and error statuses) into `syncd.errors`.

    `what` names the call ("GET /operations/v1/..."); messages never carry headers or URLs
    with query strings (signed URLs hold credentials).
    """
    if isinstance(exc, httpx.HTTPStatusError):
        return _status_error(exc.response, what)
    name = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return TransientSourceError(f"{what}: timed out ({name})")
    if isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)):
        return TransientSourceError(f"{what}: connection failed ({name}: {exc})")
    if isinstance(exc, httpx.DecodingError):
        return TransientSourceError(f"{what}: body could not be decoded ({name})")
    # LocalProtocolError, UnsupportedProtocol, TooManyRedirects, InvalidURL, anything newer:
    # the request itself is wrong, so repeating it will not help.
    return TerminalSourceError(f"{what}: request failed ({name}: {exc})")


def _status_error(response: httpx.Response, what: str) -> SourceError:
    error = _error_for_status(response, what)
    error.status = response.status_code
    return error


def _error_for_status(response: httpx.Response, what: str) -> SourceError:
    status = response.status_code
    message = f"{what}: HTTP {status}{_api_detail(response)}"
    if status in (401, 403):
        return AuthError(message)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"), now=utcnow())
        return RateLimited(message, retry_after=retry_after)
    if status == 499 or status >= 500:
        return TransientSourceError(message)
    if 300 <= status < 400:
        return TerminalSourceError(f"{what}: unexpected redirect (HTTP {status})")
    return TerminalSourceError(message)


def _api_detail(response: httpx.Response) -> str:
    """ ": code: message" from a FullStory error body, else the start of the body's text."""
    try:
        body = response.content
    except httpx.ResponseNotRead:
        return ""
    if not body:
        return ""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and ("code" in parsed or "message" in parsed):
        code, text = parsed.get("code", ""), parsed.get("message", "")
        detail = f"{code}: {text}" if code and text else f"{code}{text}"
    else:
        detail = body.decode("utf-8", "replace").strip()
    return f" {detail[:_MAX_DETAIL]}" if detail else ""


def source_retry_reason(exc: SyncdError) -> str:
    """The metrics label of a retried source error."""
    if isinstance(exc, RateLimited):
        return "429"
    if isinstance(exc, TruncatedDownload):
        return "truncated"
    if isinstance(exc, SignedUrlRefused):
        return "expired_url"
    cause = exc.__cause__
    if isinstance(cause, (httpx.TimeoutException, TimeoutError)):
        return "timeout"
    if isinstance(cause, httpx.HTTPStatusError):
        return "5xx"
    if isinstance(cause, httpx.TransportError):
        return "connect"
    return "other"


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise map_httpx_error(exc, what) from exc


def _read_capped(
    response: httpx.Response, what: str, limit: int = API_ANSWER_LIMIT, *, truncate: bool = False
) -> httpx.Response:
    """`response` (streamed) read into memory, at most `limit` bytes after decoding: a body
    that inflates past it is cut there (`truncate`, for error bodies, whose start is all that
    is quoted) or refused as a transient source error. The response is closed."""
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                if not truncate:
                    raise TransientSourceError(
                        f"{what}: HTTP {response.status_code} answer larger than "
                        f"{limit} bytes once decoded; refused"
                    )
                chunks.append(chunk[: len(chunk) - (size - limit)])
                break
            chunks.append(chunk)
    finally:
        response.close()
    headers = [
        (name, value)
        for name, value in response.headers.multi_items()
        if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    ]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=b"".join(chunks),
        request=response.request,
        extensions=response.extensions,
    )


def _raise_for_status(response: httpx.Response, what: str) -> None:
    if response.is_success:
        return
    error = httpx.HTTPStatusError(
        f"{what}: HTTP {response.status_code}", request=response.request, response=response
    )
    raise map_httpx_error(error, what) from error


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        parsed = json.loads(response.content)
    except ValueError as exc:
        raise TransientSourceError(f"{what}: the answer is not JSON") from exc
    if not isinstance(parsed, dict):
        raise TerminalSourceError(f"{what}: expected a JSON object, got {type(parsed).__name__}")
    return parsed


def _auth_headers(api_key: str | Secret, extra: Sequence[tuple[str, str]]) -> httpx.Headers:
    key = api_key.reveal() if isinstance(api_key, Secret) else api_key
    problems = []
    if not key:
        problems.append("the FullStory API key is empty")
    elif not _printable(key, space=False):
        problems.append(
            "the FullStory API key has characters an HTTP header cannot carry "
            "(spaces, line breaks or non-ASCII): check how it was pasted"
        )
    for name, value in extra:
        if not name or not _printable(name, space=False) or ":" in name:
            problems.append(f"extra HTTP header name {name!r} is not a valid header name")
        elif not _printable(value, space=True):
            problems.append(f"extra HTTP header {name!r} has a value an HTTP header cannot carry")
    if problems:
        raise ConfigError(problems)
    return httpx.Headers(
        [
            ("Authorization", f"Basic {key}"),
            ("User-Agent", f"syncd/{__version__}"),
            ("Accept", "application/json"),
            *extra,
        ]
    )


def _base_url(url: str, name: str) -> str:
    """An http(s) base URL without its trailing slash; anything else is a config error."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ConfigError([f"{name} {url!r} is not a URL: {exc}"]) from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError([f"{name} {url!r} must be an http:// or https:// URL with a host"])
    return url.rstrip("/")


def _printable(text: str, *, space: bool) -> bool:
    """Printable ASCII only: what an HTTP header can carry without surprises."""
    low = 0x20 if space else 0x21
    return all(low <= ord(c) <= 0x7E for c in text)


class ExportClient:
    """Client of the Segment Export API and the legacy Data Export API.

    `http` is the seam for tests (`httpx.Client(transport=httpx.MockTransport(...))`); a client
    passed in is not closed here. `sleep` replaces every wait (tests); otherwise waits go
    through `stop`, so setting it ends polls and backoffs at once. `clock` is monotonic.
    """

    def __init__(
        self,
        api_url: str,
        api_key: str | Secret,
        *,
        legacy_api_url: str = DEFAULT_LEGACY_API_URL,
        extra_headers: Sequence[tuple[str, str]] = (),
        timeout: float = DEFAULT_TIMEOUT,
        http: httpx.Client | None = None,
        retry: RetryPolicy | None = None,
        legacy_rate: RateLimiter | None = None,
        api_rate: RateLimiter | None = None,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        download_deadline: float = DEFAULT_DOWNLOAD_DEADLINE,
        on_retry: RetryHook | None = None,
    ) -> None:
        if not timeout > 0 or timeout == float("inf"):
            raise ConfigError([f"HTTP timeout must be a positive number of seconds, not {timeout}"])
        self.api_url = _base_url(api_url, "ApiURL")
        self.legacy_api_url = _base_url(legacy_api_url, "legacy export API URL")
        self._headers = _auth_headers(api_key, extra_headers)
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, MAX_CONNECT_TIMEOUT))
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=self._timeout)
        self._retry_policy = retry if retry is not None else RetryPolicy()
        self._legacy_rate = legacy_rate if legacy_rate is not None else RateLimiter.legacy_default()
        self._api_rate = api_rate
        self._stop = stop if stop is not None else threading.Event()
        self._sleep = sleep
        self._clock = clock
        self._download_deadline = download_deadline
        self._on_retry = on_retry

    def __repr__(self) -> str:
        return (
            f"ExportClient(api_url={self.api_url!r}, legacy_api_url={self.legacy_api_url!r}, "
            "api_key=***)"
        )

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> ExportClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Segment Export API

    def create_export(
        self,
        start: datetime,
        end: datetime,
        *,
        segment_id: str = "everyone",
        fields: list[str] | None = None,
        format: str = "FORMAT_NDJSON",
        type: str = "TYPE_EVENT",
    ) -> str:
        """Start exporting events with EventStart in [start, end); returns the operation id."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("export windows must be timezone-aware datetimes")
        if not start < end:
            raise ValueError(f"export window start {start} is not before its end {end}")
        body: dict[str, Any] = {
            "segmentId": segment_id,
            "type": type,
            "format": format,
            "timeRange": {"start": format_timestamp(start), "end": format_timestamp(end)},
            "segmentTimeRange": {"start": "", "end": ""},
            "timezone": "UTC",
        }
        if fields is not None:
            body["fields"] = list(fields)
        what = "POST /segments/v1/exports"

        def create() -> str:
            answer = _json_object(
                self._call("POST", f"{self.api_url}/segments/v1/exports", what, json=body), what
            )
            operation_id = answer.get("operationId")
            if not isinstance(operation_id, str) or not operation_id:
                raise TerminalSourceError(f"{what}: the answer has no operationId")
            return operation_id

        operation_id = self._retry(create, what)
        log.info(
            "export created",
            operation_id=operation_id,
            start=body["timeRange"]["start"],
            end=body["timeRange"]["end"],
            segment_id=segment_id,
        )
        return operation_id

    def create_individuals_export(
        self,
        start: datetime,
        end: datetime,
        *,
        segment_id: str = "everyone",
        fields: list[str] | None = None,
        format: str = "FORMAT_NDJSON",
    ) -> str:
        """Start exporting the individuals (people) with events in [start, end): one row per
        person with their identity fields and user vars (`type: TYPE_INDIVIDUAL`); returns
        the operation id, to poll, fetch and download as an event export's."""
        return self.create_export(
            start, end, segment_id=segment_id, fields=fields, format=format, type="TYPE_INDIVIDUAL"
        )

    def check(self, source: str = "segment") -> None:
        """Reach the API with the key: raises AuthError for a wrong key, SourceError otherwise.

        For the segment API, asks for an operation that does not exist: 404 proves the key
        works without creating an export.
        """
        if source == "legacy":
            self.list_bundles(utcnow())
            return
        try:
            self.get_operation("syncd-check")
        except AuthError:
            raise
        except TerminalSourceError as exc:
            if exc.status != 404:
                raise

    def get_operation(self, operation_id: str) -> Operation:
        """The operation's state; a 404 (expired or unknown id) is a TerminalSourceError."""
        url = f"{self.api_url}/operations/v1/{quote(operation_id, safe='')}"
        what = f"GET /operations/v1/{operation_id}"
        return self._retry(
            lambda: _operation(_json_object(self._call("GET", url, what), what)), what
        )

    def wait_for_export(self, operation_id: str, *, poll_interval: float, deadline: float) -> str:
        """Poll until the operation completes; returns its searchExportId.

        FAILED raises TerminalSourceError with the API's errorDetails; still PENDING after
        `deadline` seconds raises ExportPending (transient).
        """
        give_up_at = self._clock() + deadline
        wait = FIRST_POLL_WAIT
        while True:
            operation = self.get_operation(operation_id)
            if operation.state == "COMPLETED":
                if not operation.export_id:
                    raise TerminalSourceError(
                        f"export operation {operation_id} completed without a searchExportId"
                    )
                log.info("export ready", operation_id=operation_id, export_id=operation.export_id)
                return operation.export_id
            if operation.state == "FAILED":
                raise ExportFailed(
                    f"export operation {operation_id} failed: "
                    f"{operation.error_details or 'no errorDetails given'}"
                )
            remaining = give_up_at - self._clock()
            if remaining <= 0:
                raise ExportPending(
                    f"export operation {operation_id} still {operation.state} after {deadline:g}s"
                )
            log.debug(
                "export pending",
                operation_id=operation_id,
                percent_complete=operation.percent_complete,
            )
            if self._pause(min(wait, poll_interval, remaining)):
                raise TransientSourceError(f"stopping: left operation {operation_id} pending")
            wait *= 2

    def results_url(self, export_id: str) -> str:
        """A fresh signed URL of the export's results (it lives about 5 minutes)."""
        return self._retry(lambda: self._results_url_once(export_id), self._results_what(export_id))

    def download_export(self, export_id: str, dest: Path) -> Download:
        """Download the export's results to `dest`, asking again when a signed URL is refused."""

        def attempt() -> Download:
            refused = 0
            while True:
                location = self._results_url_once(export_id)
                try:
                    return self._download(location, dest, "GET signed results URL", signed=True)
                except SignedUrlRefused:
                    refused += 1
                    if refused >= SIGNED_URL_ATTEMPTS:
                        raise
                    log.info("signed URL refused; asking for a fresh one", export_id=export_id)

        return self._retry(attempt, f"download export {export_id}")

    # Legacy Data Export API

    def list_bundles(self, start: datetime) -> list[Bundle]:
        """Every completed bundle whose end is after `start`, oldest first, all pages."""
        if start.tzinfo is None:
            raise ValueError("list_bundles needs a timezone-aware start")
        cursor = math.floor(start.timestamp())
        bundles: list[Bundle] = []
        while True:
            page = self._retry(functools.partial(self._list_page, cursor), "GET /export/list")
            bundles.extend(page)
            if len(page) < LEGACY_PAGE_SIZE:
                return bundles
            next_cursor = int(page[-1].stop.timestamp())
            if next_cursor <= cursor:
                raise TerminalSourceError(
                    f"GET /export/list: a full page did not advance past start={cursor}"
                )
            cursor = next_cursor

    def download_bundle(self, bundle_id: int, dest: Path) -> Download:
        """Download one bundle to `dest`, within the client-side rate limit."""
        url = f"{self.legacy_api_url}/export/get"
        what = f"GET /export/get?id={bundle_id}"

        def attempt() -> Download:
            self._legacy_rate.acquire(self._stop)
            try:
                return self._download(url, dest, what, signed=False, params={"id": str(bundle_id)})
            except RateLimited as exc:
                if exc.retry_after:
                    self._legacy_rate.hold(exc.retry_after)
                raise

        return self._retry(attempt, what)

    # one attempt each

    def _call(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        """One API call, within the client-side rate limit (`api_rate`) when there is one."""
        if self._api_rate is not None:
            self._api_rate.acquire(self._stop)
        with _translated(what):
            request = self._http.build_request(
                method, url, headers=self._headers, timeout=self._timeout, **kwargs
            )
            response = _read_capped(self._http.send(request, stream=True), what)
        try:
            _raise_for_status(response, what)
        except RateLimited as exc:
            if exc.retry_after and self._api_rate is not None:
                self._api_rate.hold(exc.retry_after)  # every thread waits it out, not just this
            raise
        return response

    def _results_url_once(self, export_id: str) -> str:
        what = self._results_what(export_id)
        url = f"{self.api_url}/search/v1/exports/{quote(export_id, safe='')}/results"
        location = _json_object(self._call("GET", url, what), what).get("location")
        if not isinstance(location, str) or not location:
            raise TerminalSourceError(f"{what}: the answer has no location")
        return location

    @staticmethod
    def _results_what(export_id: str) -> str:
        return f"GET /search/v1/exports/{export_id}/results"

    def _download(
        self,
        url: str,
        dest: Path,
        what: str,
        *,
        signed: bool,
        params: dict[str, str] | None = None,
    ) -> Download:
        """Stream one response to `dest`. A signed URL gets a bare request: no key, no headers."""
        with _translated(what):
            if signed:
                request = httpx.Request("GET", url, extensions={"timeout": self._timeout.as_dict()})
            else:
                request = self._http.build_request(
                    "GET", url, params=params, headers=self._headers, timeout=self._timeout
                )
            if signed:  # a signed URL is the end of the road: a redirect there is an error
                response = self._http.send(request, stream=True, auth=None, follow_redirects=False)
            else:
                response = self._send_following(request, what)
            try:
                if signed and response.status_code in _SIGNED_URL_REFUSED:
                    refused = _read_capped(response, what, ERROR_BODY_LIMIT, truncate=True)
                    raise SignedUrlRefused(
                        f"{what}: HTTP {response.status_code}{_api_detail(refused)}"
                    )
                if not response.is_success:
                    _raise_for_status(
                        _read_capped(response, what, ERROR_BODY_LIMIT, truncate=True), what
                    )
                return write_body(
                    response,
                    dest,
                    deadline=self._download_deadline,
                    clock=self._clock,
                    stop=self._stop,
                )
            finally:
                response.close()

    def _send_following(self, request: httpx.Request, what: str) -> httpx.Response:
        """Send `request`, following redirects by hand: within its origin as sent, to another
        origin (a bundle's storage) as a bare GET, since the API key and every extra header
        (`AdditionalHttpHeader` may hold a proxy's secret) are for FullStory only."""
        origin = request.url.copy_with(path="/", query=None, fragment=None)
        bare = False
        for _ in range(MAX_REDIRECTS + 1):
            response = self._http.send(request, stream=True, auth=None, follow_redirects=False)
            following = response.next_request
            if following is None:
                return response
            response.close()
            if bare or following.url.copy_with(path="/", query=None, fragment=None) != origin:
                bare = True
                request = httpx.Request(
                    "GET", following.url, extensions={"timeout": self._timeout.as_dict()}
                )
            else:
                request = following
        raise TerminalSourceError(f"{what}: more than {MAX_REDIRECTS} redirects")

    def _list_page(self, cursor: int) -> list[Bundle]:
        what = "GET /export/list"
        answer = _json_object(
            self._call(
                "GET", f"{self.legacy_api_url}/export/list", what, params={"start": str(cursor)}
            ),
            what,
        )
        rows = answer.get("exports") or []
        if not isinstance(rows, list):
            raise TerminalSourceError(f"{what}: 'exports' is not a list")
        return [_bundle(row, what) for row in rows]

    def _retry(self, fn: Callable[[], _T], what: str) -> _T:
        return call_with_retry(
            fn,
            self._retry_policy,
            sleep=self._sleep,
            stop=self._stop,
            on_retry=self._on_retry,
            reason_of=source_retry_reason,
            what=what,
        )

    def _pause(self, seconds: float) -> bool:
        """Wait; True when the stop event is set."""
        if self._sleep is not None:
            self._sleep(seconds)
            return self._stop.is_set()
        return self._stop.wait(seconds)


def _operation(answer: dict[str, Any]) -> Operation:
    results = answer.get("results") or {}
    if not isinstance(results, dict):
        results = {}
    state = answer.get("state")
    if state not in ("PENDING", "COMPLETED", "FAILED"):
        raise TerminalSourceError(f"operation {answer.get('id')!r} has unknown state {state!r}")
    export_id = results.get("searchExportId")
    pct = answer.get("estimatePctComplete")
    return Operation(
        id=str(answer.get("id", "")),
        state=state,
        export_id=export_id if isinstance(export_id, str) and export_id else None,
        error_details=str(answer.get("errorDetails") or ""),
        percent_complete=pct if isinstance(pct, int) and not isinstance(pct, bool) else None,
        expires=_maybe_timestamp(results.get("expires")),
    )


def _maybe_timestamp(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


def _bundle(row: object, what: str) -> Bundle:
    if not isinstance(row, dict):
        raise TerminalSourceError(f"{what}: a bundle is not a JSON object")
    bundle_id, start, stop = (_exact_int(row.get(k), k, what) for k in ("Id", "Start", "Stop"))
    try:
        bundle = Bundle(
            id=bundle_id,
            start=datetime.fromtimestamp(start, UTC),
            stop=datetime.fromtimestamp(stop, UTC),
        )
    except (OverflowError, OSError, ValueError) as exc:  # beyond the years a datetime holds
        raise TerminalSourceError(
            f"{what}: bundle {bundle_id} has an impossible time (Start {start}, Stop {stop})"
        ) from exc
    if bundle.stop <= bundle.start:
        raise TerminalSourceError(
            f"{what}: bundle {bundle_id} ends before it starts (Start {start}, Stop {stop})"
        )
    return bundle


def _exact_int(value: object, name: str, what: str) -> int:
    """An integer exactly as sent: ids exceed 2**53, so a float is refused, never rounded."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise TerminalSourceError(f"{what}: bundle {name} {value!r} is not an integer")
