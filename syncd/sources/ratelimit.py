"""A client-side sliding-window rate limiter, shared by threads.

The legacy export API allows 2 bundle downloads a minute and answers 429 beyond that; the
other export API calls share one limit (`ApiRequestsPerSecond`) across every batch in flight.
Keeping under a limit ourselves costs nothing, and a 429's `Retry-After` pauses every caller.

Given a `state_path` (in StateDir), a limiter writes down, in wall-clock time, the pause a
`Retry-After` asked for and, with `remember_calls`, its recent calls, and starts from them:
a restarted syncd (after a crash or a kill) neither calls before the server allowed it nor
spends the legacy API's 2 downloads a minute a second time.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import structlog

from syncd.atomic import write_atomic
from syncd.errors import TransientSourceError
from syncd.sources.retry import MAX_RETRY_AFTER

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
        state_path: Path | None = None,
        remember_calls: bool = True,
        wall_clock: Callable[[], float] = time.time,
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
        self._state_path = state_path
        self._remember_calls = remember_calls
        self._wall = wall_clock
        if state_path is not None:
            self._load()

    @classmethod
    def legacy_default(cls, state_path: Path | None = None) -> RateLimiter:
        """The legacy API's published download limit (remembered in `state_path`, if given)."""
        return cls(LEGACY_DOWNLOADS_PER_MINUTE, 60.0, state_path=state_path)

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
            self._save()

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
                if self._remember_calls:
                    self._save()
                return 0.0
            return self._calls[0] + self.period - now

    # -- the state file: times in wall-clock seconds, since a monotonic clock restarts ------

    def _save(self) -> None:
        """Write the pause and the calls still in the window (under the lock)."""
        if self._state_path is None:
            return
        offset = self._wall() - self._clock()
        state: dict[str, object] = {
            "not_before": self._not_before + offset if self._not_before > self._clock() else None,
            "calls": [t + offset for t in self._calls] if self._remember_calls else [],
        }
        try:
            write_atomic(self._state_path, json.dumps(state).encode())
        except OSError as exc:  # the limit still holds in memory; only a restart forgets it
            log.warning("could not write the rate-limit state", error=str(exc))

    def _load(self) -> None:
        """Start from a predecessor's pause and calls; anything unreadable counts as none."""
        assert self._state_path is not None
        try:
            state = json.loads(self._state_path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("rate-limit state unreadable; starting without it", error=str(exc))
            return
        if not isinstance(state, dict):
            return
        offset = self._clock() - self._wall()
        now = self._clock()
        not_before = state.get("not_before")
        if isinstance(not_before, (int, float)) and not isinstance(not_before, bool):
            # never longer than the longest pause a server may ask for, whatever the file says
            self._not_before = min(not_before + offset, now + MAX_RETRY_AFTER)
        calls = state.get("calls")
        if self._remember_calls and isinstance(calls, list):
            kept = sorted(
                min(t + offset, now)
                for t in calls
                if isinstance(t, (int, float)) and not isinstance(t, bool)
            )
            self._calls.extend(t for t in kept[-self.max_calls :] if t > now - self.period)

    def __repr__(self) -> str:
        return f"RateLimiter(max_calls={self.max_calls}, period={self.period})"
