"""The status page: which windows are loaded, settled, held, missing or in flight, at a glance.

One self-contained HTML page (inline CSS and SVG, nothing fetched from the network) that
`syncd run` serves at `/` of the metrics address (`StatusPage`, a `PipelineHooks` that keeps the
held batch, the batches in flight and a bounded lag history) and that `syncd status --html FILE`
writes from the warehouse without a daemon (`page_from_records`).

Every text on the page goes through `html.escape`; error texts come from the network, so they
also go through `safe_text` first (no secret, no URL query, one line).

The calendar takes `Window`s, not SyncRecords: `windows_of` is the one place that maps the
SyncTable to what the calendar shows (whether a window is settled, too).
"""

from __future__ import annotations

import bisect
import html
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from syncd.batch import BatchKey, SyncRecord
from syncd.observability.logging import safe_text
from syncd.pipeline import PipelineHooks
from syncd.planner import contiguous_end, lag_behind
from syncd.timeutil import UTC, format_timestamp, utcnow

if TYPE_CHECKING:
    from syncd.config import Settings

CellState = Literal["loaded", "settled", "held", "missing", "in-flight", "not-due", "before-start"]
#: Days the calendar shows, today included.
CALENDAR_DAYS = 7
#: The calendar's smallest cell: shorter windows share a cell (a day has at most 288 cells).
MIN_CELL = timedelta(minutes=5)
#: Lag samples kept; with one sample per `LAG_RESOLUTION` at most, a day of history.
LAG_SAMPLES = 2880
LAG_RESOLUTION = timedelta(seconds=30)
#: Rows per second are measured over the commits of this span before the last one.
RATE_SPAN = timedelta(hours=1)
RECENT = 10
_STAMP = r"(\d{8}T\d{6}Z)"


@dataclass(frozen=True)
class Window:
    """A committed window as the calendar sees it."""

    start: datetime
    end: datetime
    rows: int
    settled: bool = False


def windows_of(records: Iterable[SyncRecord]) -> list[Window]:
    """The SyncTable's records as calendar windows, in time order; a window is settled once
    its record has `SettledAt` (SettleAfter). A row continued from a hauser SyncTable has no
    start: it covers from the previous row's end."""
    windows: list[Window] = []
    previous: datetime | None = None
    for r in sorted(records, key=lambda r: r.end):
        start = r.start if r.start is not None else (previous or r.end)
        settled = r.settled_at is not None
        windows.append(Window(start=start, end=r.end, rows=r.rows_loaded, settled=settled))
        previous = r.end
    return windows


@dataclass(frozen=True)
class Held:
    """The held batch: its window when known, its error (raw; the page makes it safe)."""

    batch_id: str
    error: str
    attempts: int
    since: datetime | None
    start: datetime | None = None
    end: datetime | None = None


def window_of_id(batch_id: str) -> tuple[datetime, datetime] | None:
    """The window a batch id names (`BatchKey.id`: source-START-END[-digest]), if it names one."""
    match = re.search(rf"-{_STAMP}-{_STAMP}", batch_id)
    if match is None:
        return None
    start, end = (
        datetime.strptime(s, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) for s in match.groups()
    )
    return start, end


@dataclass(frozen=True)
class Cell:
    start: datetime
    end: datetime
    state: CellState
    rows: int = 0


@dataclass(frozen=True)
class PageData:
    """Everything the page shows."""

    now: datetime
    source: str
    slot: timedelta  # the calendar's cell: ExportDuration, or a day when grouping by day
    export_delay: timedelta
    start_time: datetime | None
    windows: Sequence[Window]
    recent: Sequence[SyncRecord]
    held: Held | None = None
    in_flight: Sequence[tuple[datetime, datetime]] = ()
    lag_history: Sequence[tuple[datetime, float]] = ()
    refresh_seconds: int | None = None
    sync_point: datetime | None = None  # the committed prefix (`planner.contiguous_end`)
    rows_per_second: float | None = None  # `rows_per_second` of every record

    @property
    def lag(self) -> timedelta | None:
        return lag_behind(self.sync_point, self.now, self.export_delay)


def rows_per_second(records: Sequence[SyncRecord]) -> float | None:
    """Rows committed per second over the commits of the last `RATE_SPAN` before the last
    commit (the first of them only marks the start); None with fewer than two commits."""
    if len(records) < 2:
        return None
    last = max(r.committed_at for r in records)
    span = sorted(
        (r for r in records if r.committed_at >= last - RATE_SPAN), key=lambda r: r.committed_at
    )
    seconds = (last - span[0].committed_at).total_seconds()
    if len(span) < 2 or seconds <= 0:
        return None
    return sum(r.rows_loaded for r in span[1:]) / seconds


def calendar(data: PageData, days: int = CALENDAR_DAYS) -> list[tuple[date, list[Cell]]]:
    """The last `days` UTC days, newest first, cut into cells of `data.slot` (at least
    `MIN_CELL`, so a day has at most 288 cells) with their state. A cell is loaded (or
    settled) when committed windows cover all of it; the windows are looked up by bisection,
    so a year of 5-minute windows costs no more than a week of them."""
    slot = max(data.slot, MIN_CELL)
    due_until = data.now - data.export_delay
    index = _Index(data.windows)
    first = index.first_start
    if data.start_time is not None:
        first = data.start_time if first is None else min(first, data.start_time)
    held = None
    if data.held is not None and data.held.start is not None and data.held.end is not None:
        held = (data.held.start, data.held.end)
    today = data.now.astimezone(UTC).date()
    out: list[tuple[date, list[Cell]]] = []
    for offset in range(days):
        day = today - timedelta(days=offset)
        begin = datetime(day.year, day.month, day.day, tzinfo=UTC)
        cells: list[Cell] = []
        start = begin
        while start < begin + timedelta(days=1):
            end = min(start + slot, begin + timedelta(days=1))
            cells.append(_cell(data, index, start, end, held, due_until, first))
            start = end
        out.append((day, cells))
    return out


class _Index:
    """Committed windows sorted by start, found by bisection."""

    def __init__(self, windows: Iterable[Window]) -> None:
        self.windows = sorted(windows, key=lambda w: (w.start, w.end))
        self.starts = [w.start for w in self.windows]
        self.max_ends: list[datetime] = []  # the latest end among windows[: i + 1]
        for w in self.windows:
            self.max_ends.append(max(w.end, self.max_ends[-1]) if self.max_ends else w.end)
        self.first_start = self.starts[0] if self.starts else None

    def overlapping(self, start: datetime, end: datetime) -> list[Window]:
        low = bisect.bisect_right(self.max_ends, start)  # every window before ends by `start`
        high = bisect.bisect_left(self.starts, end)  # every window from here starts at `end`
        return [w for w in self.windows[low:high] if w.end > start]


def _overlaps(a: tuple[datetime, datetime], start: datetime, end: datetime) -> bool:
    return a[0] < end and start < a[1]


def _covers(windows: Sequence[Window], start: datetime, end: datetime) -> bool:
    reached = start
    for w in windows:  # sorted by start
        if w.start > reached:
            return False
        reached = max(reached, w.end)
    return reached >= end


def _cell(
    data: PageData,
    index: _Index,
    start: datetime,
    end: datetime,
    held: tuple[datetime, datetime] | None,
    due_until: datetime,
    first: datetime | None,
) -> Cell:
    if held is not None and _overlaps(held, start, end):
        return Cell(start, end, "held")
    if any(_overlaps(w, start, end) for w in data.in_flight):
        return Cell(start, end, "in-flight")
    loaded = index.overlapping(start, end)
    if loaded and _covers(loaded, start, end):
        state: CellState = "settled" if all(w.settled for w in loaded) else "loaded"
        return Cell(start, end, state, sum(w.rows for w in loaded))
    if first is None or end <= first:
        return Cell(start, end, "before-start")
    if end <= due_until:
        return Cell(start, end, "missing")
    return Cell(start, end, "not-due")


# -- rendering ---------------------------------------------------------------------------------

_LABELS: dict[CellState, str] = {
    "loaded": "loaded",
    "settled": "settled",
    "held": "held",
    "missing": "missing (due, not loaded)",
    "in-flight": "in flight",
    "not-due": "not due yet",
    "before-start": "before StartTime",
}

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .3em} h2{font-size:1.05em;margin:1.2em 0 .4em}
.summary span{margin-right:1.5em} .bad{color:#b00020;font-weight:600}
table{border-collapse:collapse} td,th{padding:2px 8px;text-align:left;vertical-align:middle}
#recent td,#recent th{border-bottom:1px solid #ddd;font-variant-numeric:tabular-nums}
.cells{display:flex;flex-wrap:nowrap;gap:1px}
.cell{display:inline-block;width:14px;height:14px;border-radius:2px}
.loaded{background:#4caf50}.settled{background:#1b5e20}.held{background:#d32f2f}
.missing{background:#ff9800}.in-flight{background:#42a5f5}.not-due{background:#e0e0e0}
.before-start{background:#fff;border:1px solid #eee;box-sizing:border-box}
.legend span{margin-right:1em;display:inline-flex;align-items:center;gap:4px}
#held{border-left:4px solid #d32f2f;padding:.3em .8em;background:#fff}
#held code{white-space:pre-wrap;word-break:break-all}
svg text{font-size:11px;fill:#555}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _ts(value: datetime | None) -> str:
    return "-" if value is None else format_timestamp(value)


def _duration(value: timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s"


def render(data: PageData) -> str:
    """The page as HTML text; every value escaped."""
    rate = data.rows_per_second
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>syncd status</title>",
    ]
    if data.refresh_seconds:
        head.append(f'<meta http-equiv="refresh" content="{int(data.refresh_seconds)}">')
    head.append(f"<style>{_CSS}</style></head><body>")
    parts = [*head, "<h1>syncd status</h1>", '<p class="summary" id="summary">']
    parts.append(f"<span>now <b>{_e(_ts(data.now))}</b></span>")
    parts.append(f'<span>sync point <b id="sync-point">{_e(_ts(data.sync_point))}</b></span>')
    parts.append(f'<span>lag <b id="lag-now">{_e(_duration(data.lag))}</b></span>')
    shown_rate = "-" if rate is None else f"{rate:,.1f}"
    parts.append(f'<span>rows/s <b id="rows-per-second">{_e(shown_rate)}</b></span>')
    parts.append(f"<span>read from {_e(data.source)}</span></p>")
    parts.append(_held_html(data.held))
    parts.append(_calendar_html(data))
    parts.append(_lag_html(data.lag_history))
    parts.append(_recent_html(data.recent))
    parts.append("</body></html>\n")
    return "\n".join(p for p in parts if p)


def _held_html(held: Held | None) -> str:
    if held is None:
        return '<p id="no-held">No batch is held.</p>'
    return (
        '<section id="held"><h2 class="bad">Held batch</h2>'
        f'<p><b id="held-batch">{_e(held.batch_id)}</b> since {_e(_ts(held.since))}, '
        f"after {_e(held.attempts)} attempts</p>"
        f'<p><code id="held-error">{_e(safe_text(held.error))}</code></p></section>'
    )


def _calendar_html(data: PageData) -> str:
    rows: list[str] = []
    for day, cells in calendar(data):
        spans = "".join(
            f'<span class="cell {c.state}" data-state="{c.state}" '
            f'data-start="{_e(_ts(c.start))}" '
            f'title="{_e(_ts(c.start))} to {_e(_ts(c.end))}: {_e(_LABELS[c.state])}'
            f'{_e(f", {c.rows} rows") if c.state in ("loaded", "settled") else ""}"></span>'
            for c in cells
        )
        rows.append(
            f'<tr data-day="{_e(day.isoformat())}"><th>{_e(day.isoformat())}</th>'
            f'<td><div class="cells">{spans}</div></td></tr>'
        )
    legend = "".join(
        f'<span><i class="cell {state}"></i>{_e(label)}</span>' for state, label in _LABELS.items()
    )
    return (
        "<section><h2>Windows of the last days (UTC: each row runs from 00:00 to 24:00, "
        f"one cell per {_e(_duration(data.slot))})</h2>"
        f'<table id="calendar">{"".join(rows)}</table>'
        f'<p class="legend">{legend}</p></section>'
    )


def _lag_html(history: Sequence[tuple[datetime, float]]) -> str:
    width, height, pad = 720, 180, 70
    title = "<h2>Lag behind now minus ExportDelay</h2>"
    if len(history) < 2:
        return (
            f'<section>{title}<svg id="lag" width="{width}" height="40" role="img">'
            '<text x="4" y="20">not enough samples yet</text></svg></section>'
        )
    t0, t1 = history[0][0], history[-1][0]
    span = max((t1 - t0).total_seconds(), 1.0)
    top = max(max(lag for _, lag in history), 1.0)
    points = " ".join(
        f"{pad + (t - t0).total_seconds() / span * (width - pad - 10):.1f},"
        f"{10 + (1 - lag / top) * (height - 30):.1f}"
        for t, lag in history
    )
    return (
        f'<section>{title}<svg id="lag" width="{width}" height="{height}" role="img" '
        f'viewBox="0 0 {width} {height}">'
        f'<line x1="{pad}" y1="{height - 20}" x2="{width - 10}" y2="{height - 20}" '
        'stroke="#999"/>'
        f'<line x1="{pad}" y1="10" x2="{pad}" y2="{height - 20}" stroke="#999"/>'
        f'<text x="2" y="14">{_e(_duration(timedelta(seconds=top)))}</text>'
        f'<text x="2" y="{height - 22}">0</text>'
        f'<text x="{pad}" y="{height - 5}">{_e(_ts(t0))}</text>'
        f'<text x="{width - 10}" y="{height - 5}" text-anchor="end">{_e(_ts(t1))}</text>'
        f'<polyline fill="none" stroke="#1565c0" stroke-width="2" points="{points}"/>'
        "</svg></section>"
    )


def _recent_html(recent: Sequence[SyncRecord]) -> str:
    header = "<tr><th>batch</th><th>start</th><th>end</th><th>rows</th><th>rejected</th>"
    header += "<th>committed at</th></tr>"
    rows = "".join(
        f"<tr><td>{_e(r.batch_id)}</td><td>{_e(_ts(r.start))}</td><td>{_e(_ts(r.end))}</td>"
        f"<td>{_e(r.rows_loaded)}</td><td>{_e(r.rows_rejected)}</td>"
        f"<td>{_e(_ts(r.committed_at))}</td></tr>"
        for r in reversed(sorted(recent, key=lambda r: r.end)[-RECENT:])
    )
    return f'<section><h2>Recent batches</h2><table id="recent">{header}{rows}</table></section>'


# -- the daemon's page -------------------------------------------------------------------------


@dataclass
class _State:
    held: Held | None = None
    in_flight: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)


class StatusPage(PipelineHooks):
    """What `/` serves in a running daemon: follows the pipeline through its hooks.

    `records` gives the SyncTable's rows as the pipeline knows them (`follow`); `clock` is the
    wall clock (tests inject one). The lag is sampled at each commit, failure and idle wait
    and at each page view, at most one sample per `LAG_RESOLUTION`, `LAG_SAMPLES` kept.
    """

    def __init__(
        self,
        *,
        slot: timedelta,
        export_delay: timedelta = timedelta(0),
        start_time: datetime | None = None,
        clock: Callable[[], datetime] = utcnow,
        refresh_seconds: int = 30,
    ) -> None:
        self.slot = slot
        self.export_delay = export_delay
        self.start_time = start_time
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._records: Callable[[], Sequence[SyncRecord]] = lambda: ()
        self._lock = threading.Lock()
        self._state = _State()
        self._lag: deque[tuple[datetime, float]] = deque(maxlen=LAG_SAMPLES)

    def follow(self, records: Callable[[], Sequence[SyncRecord]]) -> None:
        self._records = records

    def lag_history(self) -> list[tuple[datetime, float]]:
        with self._lock:
            return list(self._lag)

    def sample(self) -> None:
        """Note the lag now (replacing the last sample when it is younger than the
        resolution)."""
        now = self._clock()
        lag = lag_behind(contiguous_end(list(self._records())), now, self.export_delay)
        if lag is None:
            return
        with self._lock:
            if self._lag and now - self._lag[-1][0] < LAG_RESOLUTION:
                self._lag.pop()
            self._lag.append((now, lag.total_seconds()))

    def data(self) -> PageData:
        self.sample()
        records = list(self._records())
        with self._lock:
            held = self._state.held
            in_flight = list(self._state.in_flight.values())
            history = list(self._lag)
        return PageData(
            now=self._clock(),
            source="the running daemon",
            slot=self.slot,
            export_delay=self.export_delay,
            start_time=self.start_time,
            windows=windows_of(records),
            recent=records[-RECENT:],
            held=held,
            in_flight=in_flight,
            lag_history=history,
            refresh_seconds=self.refresh_seconds,
            sync_point=contiguous_end(records),
            rows_per_second=rows_per_second(records),
        )

    def render(self) -> bytes:
        return render(self.data()).encode()

    # -- PipelineHooks -------------------------------------------------------------------------

    def after_start(self, records: Sequence[SyncRecord]) -> None:
        self.sample()

    def before_batch(self, key: BatchKey) -> None:
        with self._lock:
            self._state.in_flight[key.id] = (key.start, key.end)

    def after_commit(self, key: BatchKey, record: SyncRecord) -> None:
        with self._lock:
            self._state.in_flight.pop(key.id, None)
            if self._state.held is not None and self._state.held.batch_id == key.id:
                self._state.held = None
        self.sample()

    def on_failure(self, key: BatchKey, error: BaseException, attempt: int, held: bool) -> None:
        with self._lock:
            if held:
                self._state.in_flight.pop(key.id, None)
                since = self._state.held.since if self._state.held else None
                if self._state.held is None or self._state.held.batch_id != key.id:
                    since = self._clock()
                self._state.held = Held(
                    batch_id=key.id,
                    error=f"{type(error).__name__}: {error}",
                    attempts=attempt,
                    since=since,
                    start=key.start,
                    end=key.end,
                )
        self.sample()

    def on_idle(self, sync_point: datetime | None, next_ready_at: datetime) -> None:
        with self._lock:
            self._state.in_flight.clear()
        self.sample()


def page_from_records(
    records: Sequence[SyncRecord],
    *,
    now: datetime,
    source: str,
    slot: timedelta,
    export_delay: timedelta,
    start_time: datetime | None,
    held: Held | None,
    sync_point: datetime | None,
) -> str:
    """The page `syncd status --html` writes: from the SyncTable (and the daemon's status
    file for a held batch), with no lag history (only a daemon keeps one)."""
    return render(
        PageData(
            now=now,
            source=source,
            slot=slot,
            export_delay=export_delay,
            start_time=start_time,
            windows=windows_of(records),
            recent=list(records)[-RECENT:],
            held=held,
            sync_point=sync_point,
            rows_per_second=rows_per_second(records),
        )
    )


def calendar_slot(settings: Settings) -> timedelta:
    """One calendar cell: a batch's window (a day when legacy bundles are grouped by day)."""
    return timedelta(days=1) if settings.group_files_by_day else settings.export_duration


def _parse(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def status_html(settings: Settings, data: dict[str, Any], records: Sequence[SyncRecord]) -> str:
    """The page for `syncd status --html`: `data` is what `syncd status --json` prints (the held
    batch, read from the daemon's status file), `records` the SyncTable's rows it was read from."""
    held = None
    if data.get("held"):
        h = data["held"]
        window = window_of_id(str(h["batch"]))
        held = Held(
            batch_id=str(h["batch"]),
            error=str(h["error"]),
            attempts=int(h["attempts"]),
            since=_parse(h.get("since")),
            start=window[0] if window else None,
            end=window[1] if window else None,
        )
    now = _parse(data["now"]) or utcnow()
    return page_from_records(
        records,
        now=now,
        source=str(data["source"]),
        slot=calendar_slot(settings),
        export_delay=settings.export_delay,
        start_time=settings.start_time,
        held=held,
        sync_point=_parse(data.get("sync_point")),
    )
