"""Export operations, signed result URLs and rate limiters: the stateful half of the API."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from syncd.simulator.bodies import ExportSpec
from syncd.timeutil import format_timestamp

PENDING = "PENDING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"

#: Leading bytes that make a hostile id's base64 start with "+/": such ids need URL quoting.
_ID_MARK = b"\xfb\xff"


def mint_id(kind: bytes, number: int, *, hostile: bool = False) -> str:
    """An operation or export id.

    By default URL-safe (unpadded base64url: letters, digits, "-" and "_"), so a client that
    puts it in a path unencoded (as FullStory-authored clients do) reaches it. `hostile`:
    standard base64 with "+", "/" and a trailing "==", an id clients must URL-quote (the
    reference says real ids may contain "="), for testing a client's quoting.
    """
    raw = kind[:2].ljust(2, b"_") + number.to_bytes(9, "big")
    if hostile:
        return base64.b64encode(_ID_MARK + raw).decode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class ExportOperation:
    """One created export: its operation id, its export id, and how it ends."""

    id: str
    export_id: str
    token: str  # names the signed download URL
    spec: ExportSpec
    created_at: datetime
    ready_at: datetime  # created_at + the configured latency
    expires_at: datetime  # results stay available until then
    failure: str | None = None  # errorDetails of a FAILED operation
    build: Future[bytes] | None = None
    finished_at: datetime | None = None

    def state(self, now: datetime, build_progress: float, latency: float) -> dict[str, Any]:
        """The operation as GET /operations/v1/{id} shows it at `now`."""
        answer: dict[str, Any] = {
            "id": self.id,
            "type": "SEARCH_EXPORT",
            "createdAt": format_timestamp(self.created_at),
            "errorDetails": "",
        }
        due = now >= self.ready_at
        failure = self.failure
        done = self.build is not None and self.build.done()
        if failure is None and done and self.build is not None and self.build.exception():
            failure = "export failed while writing results"
        if due and (failure is not None or done):
            if self.finished_at is None:
                self.finished_at = max(now, self.ready_at)
            answer["finishedAt"] = format_timestamp(self.finished_at)
            if failure is not None:
                answer.update(state=FAILED, estimatePctComplete=100, errorDetails=failure)
            else:
                answer.update(
                    state=COMPLETED,
                    estimatePctComplete=100,
                    results={
                        "searchExportId": self.export_id,
                        "expires": format_timestamp(self.expires_at),
                    },
                )
            return answer
        elapsed = (now - self.created_at).total_seconds()
        time_part = 1.0 if latency <= 0 else min(1.0, elapsed / latency)
        work_part = 1.0 if failure is not None else build_progress
        answer.update(
            state=PENDING, estimatePctComplete=min(99, int(100 * min(time_part, work_part)))
        )
        return answer

    def completed(self, now: datetime) -> bool:
        return (
            self.failure is None
            and now >= self.ready_at
            and self.build is not None
            and self.build.done()
            and self.build.exception() is None
        )


class UrlSigner:
    """HMAC signatures for results URLs, so a URL works only as issued and until it expires."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def __repr__(self) -> str:
        return "UrlSigner(secret=***)"

    def sign(self, token: str, expires: int) -> str:
        return hmac.new(self._secret, f"{token}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def verify(self, token: str, expires: int, signature: str) -> bool:
        return hmac.compare_digest(self.sign(token, expires), signature)


def download_token(export_id: str) -> str:
    """The path segment of an export's signed URL: opaque and URL-safe."""
    return hashlib.sha256(export_id.encode()).hexdigest()[:32]


def retry_after_seconds(wait: float) -> int:
    """Retry-After in whole seconds, never 0 while the limit still holds."""
    return max(1, math.ceil(wait))


class TokenBucket:
    """A per-second limiter with a burst of one second's worth of requests."""

    def __init__(self, rate: float, clock: Callable[[], datetime]) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def take(self) -> float | None:
        """None when the request may pass, else the seconds until it would."""
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, (now - self._last).total_seconds())
            self._last = now
            self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return None
            return (1.0 - self._tokens) / self._rate


class SlidingWindow:
    """At most `limit` events in any `window`: the legacy API's downloads per minute."""

    def __init__(self, limit: int, window: timedelta, clock: Callable[[], datetime]) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._times: deque[datetime] = deque()
        self._lock = threading.Lock()

    def take(self) -> float | None:
        """None (and the event counted) when allowed, else the seconds until a slot frees."""
        with self._lock:
            now = self._clock()
            while self._times and self._times[0] <= now - self._window:
                self._times.popleft()
            if len(self._times) < self._limit:
                self._times.append(now)
                return None
            return (self._times[0] + self._window - now).total_seconds()
