"""A client-side sliding-window rate limiter, shared by threads.

The legacy export API allows 2 bundle downloads a minute and answers 429 beyond that; the
other export API calls share one limit (`ApiRequestsPerSecond`) across every batch in flight.
Keeping under a limit ourselves costs nothing, and a 429's `Retry-After` pauses every caller.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import structlog

from syncd.errors import TransientSourceError

log = structlog.get_logger(__name__)

#: The legacy export API's published limit on bundle downloads.
LEGACY_DOWNLOADS_PER_MINUTE = 2


class RateLimiter:
    """At most `max_calls` acquisitions in any `period` seconds.

    `clock` is monotonic seconds; `sleep` replaces the wait in tests. Without it, waits go
    through the `stop` event given to `acquire`, so a shutdown ends the wait at once.
    """

    def __init__(
        self,
        max_calls: int,
        period: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if max_calls < 1:
            raise ValueError("RateLimiter.max_calls must be at least 1")
        if not period > 0:
            raise ValueError("RateLimiter.period must be positive")
        self.max_calls = max_calls
        self.period = period
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._calls: deque[float] = deque()
        self._not_before = float("-inf")

    @classmethod
    def legacy_default(cls) -> RateLimiter:
        return cls(LEGACY_DOWNLOADS_PER_MINUTE, 60.0)

    def acquire(self, stop: threading.Event | None = None) -> None:
        """Wait until a call is allowed and count it; raise if `stop` is set while waiting."""
        idle = stop if stop is not None else threading.Event()
        while True:
            wait = self._try_acquire()
            if wait <= 0:
                return
            log.debug("rate limit wait", wait_seconds=round(wait, 3))
            if self._sleep is not None:
                self._sleep(wait)
                stopped = idle.is_set()
            else:
                stopped = idle.wait(wait)
            if stopped:
                raise TransientSourceError("stopping: gave up waiting for the rate limit")

    def hold(self, seconds: float) -> None:
        """Allow no call for `seconds` from now (the server said so with a 429)."""
        with self._lock:
            self._not_before = max(self._not_before, self._clock() + seconds)

    def _try_acquire(self) -> float:
        """Count a call and return 0, or return how long to wait before trying again."""
        with self._lock:
            now = self._clock()
            while self._calls and self._calls[0] <= now - self.period:
                self._calls.popleft()
            if now < self._not_before:
                return self._not_before - now
            if len(self._calls) < self.max_calls:
                self._calls.append(now)
                return 0.0
            return self._calls[0] + self.period - now

    def __repr__(self) -> str:
        return f"RateLimiter(max_calls={self.max_calls}, period={self.period})"
