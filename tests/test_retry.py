"""The retry loop and the rate limiter, on a fake clock: nothing here really waits."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from syncd.errors import (
    ConfigError,
    RateLimited,
    TerminalSourceError,
    TransientLoadError,
    TransientSourceError,
)
from syncd.sources.ratelimit import RateLimiter
from syncd.sources.retry import (
    MAX_RETRY_AFTER,
    RetryPolicy,
    call_with_retry,
    parse_retry_after,
)
from syncd.timeutil import UTC

NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)
NO_JITTER = RetryPolicy(base=1.0, max_attempts=4, cap=5.0, jitter=0.0)


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


def failing(errors: list[Exception], result: str = "ok") -> Callable[[], str]:
    """A call that raises the given errors in turn, then returns `result`."""
    pending = list(errors)

    def call() -> str:
        if pending:
            raise pending.pop(0)
        return result

    return call


# RetryPolicy


def test_backoff_doubles_from_base() -> None:
    assert [NO_JITTER.wait(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]


def test_backoff_is_capped() -> None:
    assert NO_JITTER.wait(10) == 5.0


def test_jitter_spreads_the_wait_both_ways() -> None:
    policy = RetryPolicy(base=10.0, jitter=0.2)
    assert (policy.wait(1, rand=lambda: 0.0), policy.wait(1, rand=lambda: 1.0)) == (8.0, 12.0)


def test_retry_after_is_a_floor_even_above_the_cap() -> None:
    assert NO_JITTER.wait(1, retry_after=42.0) == 42.0


def test_backoff_above_retry_after_is_kept() -> None:
    assert NO_JITTER.wait(3, retry_after=1.0) == 4.0


def test_defaults_follow_hauser() -> None:
    assert RetryPolicy() == RetryPolicy(base=30.0, max_attempts=8, cap=600.0, jitter=0.2)


def test_policy_refuses_zero_attempts() -> None:
    with pytest.raises(ConfigError, match="BackoffStepsMax"):
        RetryPolicy(max_attempts=0)


# Retry-After


def test_retry_after_in_seconds() -> None:
    assert parse_retry_after("3", now=NOW) == 3.0


def test_retry_after_as_http_date() -> None:
    assert parse_retry_after("Sun, 01 Nov 2026 12:00:30 GMT", now=NOW) == 30.0


def test_retry_after_in_the_past_means_now() -> None:
    assert parse_retry_after("Sun, 01 Nov 2026 11:00:00 GMT", now=NOW) == 0.0


@pytest.mark.parametrize(
    "value",
    ["inf", "Infinity", "1e10", "1e9", "1e400", "Fri, 31 Dec 9999 23:59:59 GMT"],
)
def test_huge_retry_after_is_clamped(value: str) -> None:
    assert parse_retry_after(value, now=NOW) == MAX_RETRY_AFTER


def test_decimal_retry_after_is_kept() -> None:
    assert parse_retry_after("2.5", now=NOW) == 2.5


@pytest.mark.parametrize(
    "value", [None, "", "soon", "nan", "-nan", "Mon, 99 Foo 2026 99:99:99 GMT", "\x00\x01"]
)
def test_unusable_retry_after_is_none(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


# call_with_retry


def test_transient_errors_are_retried_until_success() -> None:
    clock = FakeClock()
    call = failing([TransientSourceError("5xx"), TransientSourceError("5xx")])
    assert call_with_retry(call, NO_JITTER, sleep=clock.sleep) == "ok"


def test_waits_grow_between_attempts() -> None:
    clock = FakeClock()
    call = failing(
        [TransientSourceError("a"), TransientSourceError("b"), TransientSourceError("c")]
    )
    call_with_retry(call, NO_JITTER, sleep=clock.sleep)
    assert clock.sleeps == [1.0, 2.0, 4.0]


def test_retry_after_of_a_429_sets_the_wait() -> None:
    clock = FakeClock()
    call_with_retry(failing([RateLimited("429", retry_after=3.0)]), NO_JITTER, sleep=clock.sleep)
    assert clock.sleeps == [3.0]


def test_terminal_error_is_not_retried() -> None:
    clock = FakeClock()
    with pytest.raises(TerminalSourceError):
        call_with_retry(failing([TerminalSourceError("400")]), NO_JITTER, sleep=clock.sleep)
    assert clock.sleeps == []


def test_foreign_exception_propagates_untouched() -> None:
    with pytest.raises(KeyError):
        call_with_retry(failing([KeyError("bug")]), NO_JITTER, sleep=FakeClock().sleep)


def test_other_transient_syncd_errors_are_retried_too() -> None:
    call = failing([TransientLoadError("warehouse busy")])
    assert call_with_retry(call, NO_JITTER, sleep=FakeClock().sleep) == "ok"


def test_last_error_is_raised_when_attempts_run_out() -> None:
    errors: list[Exception] = [TransientSourceError(f"failure {n}") for n in range(1, 6)]
    with pytest.raises(TransientSourceError, match="failure 4"):
        call_with_retry(failing(errors), NO_JITTER, sleep=FakeClock().sleep)


def test_attempts_count_the_first_call() -> None:
    calls = []

    def call() -> str:
        calls.append(1)
        raise TransientSourceError("down")

    with pytest.raises(TransientSourceError):
        call_with_retry(call, NO_JITTER, sleep=FakeClock().sleep)
    assert len(calls) == NO_JITTER.max_attempts


def test_on_retry_reports_reason_attempt_and_wait() -> None:
    seen: list[tuple[str, int, float]] = []
    call = failing([RateLimited("429", retry_after=2.0), TransientSourceError("boom")])
    call_with_retry(
        call,
        NO_JITTER,
        sleep=FakeClock().sleep,
        on_retry=lambda *args: seen.append(args),
        reason_of=lambda exc: "429" if isinstance(exc, RateLimited) else "5xx",
    )
    assert seen == [("429", 1, 2.0), ("5xx", 2, 2.0)]


def test_failing_hook_does_not_break_the_retry() -> None:
    def hook(reason: str, attempt: int, wait: float) -> None:
        raise RuntimeError("metrics down")

    call = failing([TransientSourceError("x")])
    assert call_with_retry(call, NO_JITTER, sleep=FakeClock().sleep, on_retry=hook) == "ok"


def test_stop_set_before_a_retry_raises_at_once() -> None:
    stop = threading.Event()
    stop.set()
    clock = FakeClock()
    with pytest.raises(TransientSourceError):
        call_with_retry(
            failing([TransientSourceError("x")]), NO_JITTER, sleep=clock.sleep, stop=stop
        )
    assert clock.sleeps == []


def test_stop_during_a_wait_ends_it_at_once() -> None:
    stop = threading.Event()
    policy = RetryPolicy(base=3600.0, max_attempts=3, jitter=0.0)
    threading.Timer(0.05, stop.set).start()
    with pytest.raises(TransientSourceError, match="down"):
        call_with_retry(failing([TransientSourceError("down")]), policy, stop=stop)


# RateLimiter


def test_calls_within_the_limit_do_not_wait() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, 60.0, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    limiter.acquire()
    assert clock.sleeps == []


def test_call_over_the_limit_waits_for_the_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, 60.0, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        limiter.acquire()
        clock.now += 10.0
    assert clock.sleeps == [40.0]


def test_window_slides() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, 60.0, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        limiter.acquire()
    assert clock.now == 120.0


def test_hold_pauses_every_caller() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, 60.0, clock=clock, sleep=clock.sleep)
    limiter.hold(25.0)
    limiter.acquire()
    assert clock.sleeps == [25.0]


def test_stop_ends_a_rate_limit_wait() -> None:
    stop = threading.Event()
    limiter = RateLimiter(1, 3600.0)
    limiter.acquire()
    threading.Timer(0.05, stop.set).start()
    with pytest.raises(TransientSourceError, match="stopping"):
        limiter.acquire(stop)


def test_threads_share_the_limit() -> None:
    clock = FakeClock()
    limiter = RateLimiter(20, 60.0, clock=clock, sleep=clock.sleep)
    threads = [threading.Thread(target=limiter.acquire) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    limiter.acquire()
    assert clock.sleeps == [60.0]


# RateLimiter state across restarts: a new process has a new monotonic clock, the same wall clock


class Process:
    """One syncd process's clocks: a monotonic clock from 0, and the wall clock it started at."""

    def __init__(self, started: float) -> None:
        self.clock = FakeClock()
        self.started = started

    def wall_clock(self) -> float:
        return self.started + self.clock.now

    def limiter(self, path: Path, **options: Any) -> RateLimiter:
        return RateLimiter(
            2,
            60.0,
            clock=self.clock,
            sleep=self.clock.sleep,
            state_path=path,
            wall_clock=self.wall_clock,
            **options,
        )


def test_a_retry_after_pause_outlives_a_restart(tmp_path: Path) -> None:
    first = Process(1_000_000.0)
    first.limiter(tmp_path / "rate.json").hold(30.0)
    restarted = Process(1_000_000.0 + 10.0)  # killed, back 10 s later
    restarted.limiter(tmp_path / "rate.json").acquire()
    assert restarted.clock.sleeps == [pytest.approx(20.0)]


def test_legacy_downloads_are_counted_across_a_restart(tmp_path: Path) -> None:
    first = Process(1_000_000.0)
    limiter = first.limiter(tmp_path / "rate.json")
    limiter.acquire()
    limiter.acquire()
    restarted = Process(1_000_000.0 + 15.0)
    restarted.limiter(tmp_path / "rate.json").acquire()
    assert restarted.clock.sleeps == [pytest.approx(45.0)]


def test_calls_are_not_remembered_unless_asked(tmp_path: Path) -> None:
    first = Process(1_000_000.0)
    limiter = first.limiter(tmp_path / "rate.json", remember_calls=False)
    limiter.acquire()
    limiter.acquire()
    restarted = Process(1_000_000.0 + 1.0)
    restarted.limiter(tmp_path / "rate.json", remember_calls=False).acquire()
    assert restarted.clock.sleeps == []


@pytest.mark.parametrize(
    "text",
    ["{not json", "[]", '{"not_before": "soon", "calls": [true, "x", null]}', ""],
)
def test_an_unreadable_state_file_counts_as_none(tmp_path: Path, text: str) -> None:
    (tmp_path / "rate.json").write_text(text)
    process = Process(1_000_000.0)
    process.limiter(tmp_path / "rate.json").acquire()
    assert process.clock.sleeps == []


def test_a_pause_in_the_state_file_is_clamped(tmp_path: Path) -> None:
    (tmp_path / "rate.json").write_text('{"not_before": 1e300, "calls": []}')
    process = Process(1_000_000.0)
    process.limiter(tmp_path / "rate.json").acquire()
    assert process.clock.sleeps == [MAX_RETRY_AFTER]
