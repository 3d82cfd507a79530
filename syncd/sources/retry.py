"""The one retry loop: capped exponential backoff with jitter, `Retry-After` as a floor.

hauser slept with a global counter and ignored `Retry-After`; here each call site owns its
attempts, waits on the stop event (a shutdown is seen at once) and reports every retry through
a hook so metrics can count them by reason.
"""

from __future__ import annotations

import email.utils
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import structlog

from syncd.errors import ConfigError, RateLimited, SyncdError, is_transient

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

#: hauser's `Backoff`: the first wait, in seconds.
DEFAULT_BASE = 30.0
#: hauser's `BackoffStepsMax`, read as the number of calls in all, the first one included.
DEFAULT_MAX_ATTEMPTS = 8
#: No single wait is longer than this (a server's `Retry-After` may still ask for more).
DEFAULT_CAP = 600.0
#: Each wait is spread by up to this fraction either way, so clients do not retry in step.
DEFAULT_JITTER = 0.2

#: The longest `Retry-After` honoured, in seconds: a longer one (or `inf`) waits this long.
MAX_RETRY_AFTER = 900.0

#: Called before each wait as `on_retry(reason, attempt, wait_seconds)`.
RetryHook = Callable[[str, int, float], None]
#: Names the reason of a transient error for metrics ("429", "5xx", "connect", ...).
ReasonOf = Callable[[SyncdError], str]


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently a transient failure is retried."""

    base: float = DEFAULT_BASE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    cap: float = DEFAULT_CAP
    jitter: float = DEFAULT_JITTER

    def __post_init__(self) -> None:
        problems = []
        if not (self.base >= 0 and self.cap >= 0):
            problems.append("Backoff: retry waits must not be negative")
        if self.max_attempts < 1:
            problems.append("BackoffStepsMax: at least 1 attempt is needed")
        if not 0 <= self.jitter < 1:
            problems.append("retry jitter must be at least 0 and below 1")
        if problems:
            raise ConfigError(problems)

    def wait(
        self,
        attempt: int,
        *,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait after failed call number `attempt` (1-based)."""
        backoff = min(self.cap, self.base * 2.0 ** (attempt - 1))
        spread = 1.0 + self.jitter * (2.0 * rand() - 1.0)
        wait = min(self.cap, backoff * spread)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """`Retry-After` as seconds from `now`, at most `MAX_RETRY_AFTER`: whole or decimal seconds
    or an HTTP date. None (the normal backoff applies) for anything else, NaN included.

    The clamp keeps a hostile or broken answer (`inf`, `1e10`, a date in year 9999) from
    stopping every caller for years or overflowing a sleep."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000" dates parse naive; HTTP dates are GMT
            when = when.replace(tzinfo=now.tzinfo)
        try:
            seconds = (when - now).total_seconds()
        except OverflowError:
            return MAX_RETRY_AFTER
    if seconds != seconds:  # NaN
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


def default_reason(exc: SyncdError) -> str:
    """The reason when the caller knows no better one."""
    return "429" if isinstance(exc, RateLimited) else type(exc).__name__


def call_with_retry(
    fn: Callable[[], _T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] | None = None,
    stop: threading.Event | None = None,
    on_retry: RetryHook | None = None,
    reason_of: ReasonOf = default_reason,
    rand: Callable[[], float] = random.random,
    what: str = "call",
) -> _T:
    """Call `fn` until it succeeds, fails for good, runs out of attempts or `stop` is set.

    Only transient `SyncdError`s are retried; anything else propagates at once. The last error
    is re-raised when attempts run out or the stop event interrupts a wait. Waits go through
    `sleep` when given (tests), else `stop.wait`, never `time.sleep`.
    """
    stop = stop if stop is not None else threading.Event()
    attempt = 1
    while True:
        try:
            return fn()
        except SyncdError as exc:
            if not is_transient(exc) or attempt >= policy.max_attempts or stop.is_set():
                raise
            retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
            wait = policy.wait(attempt, retry_after=retry_after, rand=rand)
            reason = reason_of(exc)
            log.warning(
                "retrying",
                what=what,
                reason=reason,
                attempt=attempt,
                max_attempts=policy.max_attempts,
                wait_seconds=round(wait, 3),
                error=str(exc),
            )
            _notify(on_retry, reason, attempt, wait)
            if sleep is not None:
                sleep(wait)
                stopped = stop.is_set()
            else:
                stopped = stop.wait(wait)
            if stopped:
                log.info("retry abandoned: stopping", what=what, attempt=attempt)
                raise
        attempt += 1


def _notify(hook: RetryHook | None, reason: str, attempt: int, wait: float) -> None:
    """Run the metrics hook; a failing hook is logged, never allowed to break the retry."""
    if hook is None:
        return
    try:
        hook(reason, attempt, wait)
    except Exception:
        log.exception("on_retry hook failed", reason=reason)
