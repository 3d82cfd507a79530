"""The fault plan: failures the simulator serves on purpose, counted and consumed as they fire.

Tests add faults at any time, even while a client is running against the server:

    sim.faults.add(Fault.RATE_LIMIT, count=3, retry_after=1)   # next 3 API calls get 429
    sim.faults.add(Fault.TRUNCATED_GZIP, endpoint=Endpoint.DOWNLOAD)

Each planned fault applies to the endpoints its kind makes sense for (or to the one endpoint
given) and fires on the next matching requests, in the order the faults were added. Nothing
is random: the same plan against the same requests fires the same way every time.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass

from syncd.errors import ConfigError


class Endpoint(str, enum.Enum):
    """The simulator's routes, as the fault plan and the stats name them."""

    CREATE = "create"  # POST /segments/v1/exports
    OPERATION = "operation"  # GET /operations/v1/{id}
    RESULTS = "results"  # GET /search/v1/exports/{id}/results
    DOWNLOAD = "download"  # GET of the signed results URL (no API key)
    LEGACY_LIST = "legacy_list"  # GET /api/v1/export/list
    LEGACY_GET = "legacy_get"  # GET /api/v1/export/get


class Fault(str, enum.Enum):
    RATE_LIMIT = "rate_limit"  # 429 with Retry-After: retry_after (default 1)
    SERVER_ERROR = "server_error"  # status, or 500, 502, 503 in turn
    FORBIDDEN = "forbidden"  # 403: the key lacks the export permission
    SLOW = "slow"  # wait `delay` seconds before answering (combines with the others)
    FAILED_OPERATION = "failed_operation"  # the created export ends in state FAILED
    EXPIRED_URL = "expired_url"  # the signed URL answers 403 as if expired
    DROP_CONNECTION = "drop_connection"  # half the body, then the connection is closed
    TRUNCATED_GZIP = "truncated_gzip"  # a complete response whose gzip body is cut short
    PROXY_DECOMPRESSED = "proxy_decompressed"  # plain body while headers still say gzip
    GZIP_CONTENT_ENCODING = "gzip_content_encoding"  # gzip body sent with Content-Encoding: gzip
    #: an error (status, default 403) whose message echoes the request as a misconfigured proxy
    #: does: its URL with the query string, every header (the API key too), control characters
    ECHO_REQUEST = "echo_request"
    #: an answer (status, default 403) sent with Content-Encoding: gzip whose ~1 MB body
    #: inflates to 1 GiB: a bomb in an API answer (status 200) or an error body
    GZIP_BOMB = "gzip_bomb"


API_ENDPOINTS: frozenset[Endpoint] = frozenset(
    {
        Endpoint.CREATE,
        Endpoint.OPERATION,
        Endpoint.RESULTS,
        Endpoint.LEGACY_LIST,
        Endpoint.LEGACY_GET,
    }
)
BODY_ENDPOINTS: frozenset[Endpoint] = frozenset({Endpoint.DOWNLOAD, Endpoint.LEGACY_GET})
ALL_ENDPOINTS: frozenset[Endpoint] = frozenset(Endpoint)

#: Where each kind applies when `add` is given no endpoint.
DEFAULT_SCOPE: dict[Fault, frozenset[Endpoint]] = {
    Fault.RATE_LIMIT: API_ENDPOINTS,
    Fault.SERVER_ERROR: ALL_ENDPOINTS,
    Fault.FORBIDDEN: API_ENDPOINTS,
    Fault.SLOW: ALL_ENDPOINTS,
    Fault.FAILED_OPERATION: frozenset({Endpoint.CREATE}),
    Fault.EXPIRED_URL: frozenset({Endpoint.DOWNLOAD}),
    Fault.DROP_CONNECTION: BODY_ENDPOINTS,
    Fault.TRUNCATED_GZIP: BODY_ENDPOINTS,
    Fault.PROXY_DECOMPRESSED: BODY_ENDPOINTS,
    Fault.GZIP_CONTENT_ENCODING: BODY_ENDPOINTS,
    Fault.ECHO_REQUEST: ALL_ENDPOINTS,
    Fault.GZIP_BOMB: ALL_ENDPOINTS,
}

#: Faults that replace the whole answer before the endpoint's own logic runs.
ERROR_FAULTS: frozenset[Fault] = frozenset(
    {Fault.RATE_LIMIT, Fault.SERVER_ERROR, Fault.FORBIDDEN, Fault.ECHO_REQUEST, Fault.GZIP_BOMB}
)
#: Faults that change how a download body is delivered.
BODY_FAULTS: frozenset[Fault] = frozenset(
    {
        Fault.DROP_CONNECTION,
        Fault.TRUNCATED_GZIP,
        Fault.PROXY_DECOMPRESSED,
        Fault.GZIP_CONTENT_ENCODING,
    }
)
_SERVER_ERROR_CYCLE = (500, 502, 503)


@dataclass
class PlannedFault:
    """One `add` call: a kind, where it applies, how many times it still fires."""

    kind: Fault
    remaining: int
    endpoints: frozenset[Endpoint]
    retry_after: int | None = None
    status: int | None = None
    delay: float = 0.0
    fired: int = 0


@dataclass(frozen=True)
class FiredFault:
    """What one request got: the kind, the endpoint, and the values to answer with."""

    kind: Fault
    endpoint: Endpoint
    retry_after: int | None
    status: int | None
    delay: float


class FaultPlan:
    """A thread-safe queue of planned faults; the server takes from it request by request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._planned: list[PlannedFault] = []
        self._fired: list[FiredFault] = []

    def add(
        self,
        kind: Fault,
        count: int = 1,
        *,
        endpoint: Endpoint | None = None,
        retry_after: int | None = None,
        status: int | None = None,
        delay: float = 0.0,
    ) -> PlannedFault:
        """Plan `count` firings of `kind` on `endpoint` (or wherever the kind applies)."""
        problems = []
        if count < 1:
            problems.append(f"{kind.value}: count must be at least 1, not {count}")
        if retry_after is not None and retry_after < 0:
            problems.append(f"{kind.value}: retry_after must be whole seconds >= 0")
        if kind is Fault.SLOW and delay <= 0:
            problems.append("slow: needs a delay in seconds")
        if problems:
            raise ConfigError(problems)
        if kind is Fault.RATE_LIMIT and retry_after is None:
            retry_after = 1
        scope = DEFAULT_SCOPE[kind] if endpoint is None else frozenset({endpoint})
        planned = PlannedFault(kind, count, scope, retry_after, status, delay)
        with self._lock:
            self._planned.append(planned)
        return planned

    def take(self, endpoint: Endpoint, kinds: frozenset[Fault]) -> FiredFault | None:
        """Consume the oldest planned fault of one of `kinds` that applies to `endpoint`."""
        with self._lock:
            for planned in self._planned:
                if planned.kind in kinds and endpoint in planned.endpoints:
                    status = planned.status
                    if planned.kind is Fault.SERVER_ERROR and status is None:
                        status = _SERVER_ERROR_CYCLE[planned.fired % len(_SERVER_ERROR_CYCLE)]
                    planned.fired += 1
                    planned.remaining -= 1
                    if planned.remaining == 0:
                        self._planned.remove(planned)
                    fired = FiredFault(
                        planned.kind, endpoint, planned.retry_after, status, planned.delay
                    )
                    self._fired.append(fired)
                    return fired
        return None

    def pending(self, kind: Fault | None = None) -> int:
        """How many firings are still planned (of `kind`, or of all kinds)."""
        with self._lock:
            return sum(p.remaining for p in self._planned if kind is None or p.kind is kind)

    def fired(self) -> list[FiredFault]:
        """Every fault fired so far, in order."""
        with self._lock:
            return list(self._fired)

    def clear(self) -> None:
        """Drop every planned fault (the record of fired ones stays)."""
        with self._lock:
            self._planned.clear()
