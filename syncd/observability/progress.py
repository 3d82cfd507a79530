"""A one-line progress display for long catch-ups and backfills, on a terminal only.

It redraws one line (`\\r`) on the terminal's stream: batches done of the total, rows, rate and
ETA. `progress_for` returns None off a terminal, so the display never reaches a log file or a
container's log stream; logs stay one event per line. On the terminal, log lines written to the
same stream go above the display (`logging.keep_below_logs`): it is cleared before each and
redrawn after it, so a warning during a backfill does not scroll the progress away.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from syncd.batch import BatchKey, SyncRecord
from syncd.observability.logging import keep_below_logs, terminal_lock
from syncd.pipeline import PipelineHooks


def progress_for(
    stream: TextIO, total: int | None = None, *, clock: Callable[[], float] = time.monotonic
) -> ProgressDisplay | None:
    """A display on `stream` when it is a terminal, kept below the log lines; else None."""
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):
        interactive = False
    if not interactive:
        return None
    display = ProgressDisplay(stream, total, clock=clock)
    keep_below_logs(display)
    return display


class ProgressDisplay(PipelineHooks):
    """Redraws `batches 3/48  rows 12,345  1,234 rows/s  ETA 2m10s  <batch>` after each event."""

    def __init__(
        self,
        stream: TextIO,
        total: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.total = total
        self.done = 0
        self.rows = 0
        self._clock = clock
        self._started = clock()
        self._current = ""
        self._width = 0
        self._shown = False  # drawn and not finished: a log line must make room for it

    def add_total(self, batches: int) -> None:
        """More batches are planned (a backfill plans day by day)."""
        self.total = (self.total or 0) + batches
        self.draw()

    def line(self) -> str:
        """The text of the display as it stands."""
        elapsed = max(self._clock() - self._started, 1e-9)
        of = f"/{self.total}" if self.total is not None else ""
        parts = [f"batches {self.done}{of}", f"rows {self.rows:,}"]
        if self.done:
            parts.append(f"{self.rows / elapsed:,.0f} rows/s")
            if self.total is not None and self.total >= self.done:
                parts.append(f"ETA {_duration(elapsed / self.done * (self.total - self.done))}")
        if self._current:
            parts.append(self._current)
        return "  ".join(parts)

    def draw(self) -> None:
        with terminal_lock:
            text = self.line()
            pad = max(0, self._width - len(text))
            self.stream.write(f"\r{text}{' ' * pad}")
            self.stream.flush()
            self._width = len(text)
            self._shown = True

    def clear(self) -> None:
        """Blank the line (before a log line takes its place)."""
        with terminal_lock:
            if self._shown:
                self.stream.write(f"\r{' ' * self._width}\r")
                self.stream.flush()
                self._width = 0

    def redraw(self) -> None:
        """Draw the line again (after a log line), unless finished."""
        with terminal_lock:
            if self._shown:
                self.draw()

    def finish(self) -> None:
        """Leave the last state on screen and end its line."""
        with terminal_lock:
            self._current = ""
            self.draw()
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False
            keep_below_logs(None)

    # -- PipelineHooks -----------------------------------------------------------------------

    def before_batch(self, key: BatchKey) -> None:
        self._current = f"loading {key.start:%Y-%m-%d %H:%M}"
        self.draw()

    def after_commit(self, key: BatchKey, record: SyncRecord) -> None:
        self.done += 1
        self.rows += record.rows_loaded
        self._current = ""
        self.draw()

    def on_failure(self, key: BatchKey, error: BaseException, attempt: int, held: bool) -> None:
        self._current = f"{'HELD' if held else 'retrying'} {key.start:%Y-%m-%d %H:%M}"
        self.draw()


def _duration(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
