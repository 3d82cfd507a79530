"""The status page: the calendar's states, the lag chart, the held batch (its error safe and
escaped), as a real headless Chromium parses the page a running daemon serves at `/`, and the
page `syncd status --html FILE` writes without a daemon. The calendar's rules, rows per
second and the escaping are also checked on their own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from e2e_support import API_KEY, HOUR, NOW, SyncdFiles, run_cli, window_key, write_config
from test_metrics import START, Daemon, free_port, wait_for

from syncd.app import build_app, status_file
from syncd.batch import BatchKey, SyncRecord
from syncd.config import load_settings
from syncd.errors import TransientSourceError
from syncd.observability.health import OpsServer
from syncd.observability.statuspage import (
    LAG_RESOLUTION,
    Held,
    PageData,
    StatusPage,
    Window,
    calendar,
    page_from_records,
    render,
    rows_per_second,
    window_of_id,
    windows_of,
)
from syncd.simulator import Endpoint, Fault, Simulator, SimulatorConfig
from syncd.state import DaemonStatus, HeldBatch
from syncd.timeutil import UTC, utcnow

CHROMIUM = Path("/usr/bin/chromium")
#: Where to copy the daemon page's screenshot too (docs/status-page.png is made this way).
SCREENSHOT_ENV = "SYNCD_STATUS_PAGE_SCREENSHOT"


# -- reading the DOM Chromium dumps -----------------------------------------------------------


class Dom(HTMLParser):
    """The parts of a parsed page the tests look at."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.cells: dict[str, str] = {}  # data-start -> data-state
        self.ids: dict[str, str] = {}  # id -> tag
        self.tags: list[str] = []
        self.texts: dict[str, str] = {}  # id -> text, for elements without children
        self.polyline_points = 0
        self._open: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if a.get("id"):
            self.ids[str(a["id"])] = tag
            self._open = str(a["id"])
            self.texts[self._open] = ""
        if a.get("data-state") and a.get("data-start"):
            self.cells[str(a["data-start"])] = str(a["data-state"])
        if tag == "polyline":
            self.polyline_points = len((a.get("points") or "").split())

    def handle_endtag(self, tag: str) -> None:
        self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.texts[self._open] += data


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium, a fresh profile, nothing fetched but the page."""
    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: run scripts/setup-standins.sh (make test does)")
    with tempfile.TemporaryDirectory(prefix="syncd-chromium-") as profile:
        return subprocess.run(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )


def dump_dom(url: str) -> Dom:
    return Dom(chromium("--dump-dom", url).stdout)


def screenshot(url: str, path: Path) -> bytes:
    chromium(f"--screenshot={path}", "--window-size=1280,1000", "--hide-scrollbars", url)
    return path.read_bytes()


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the daemon's page in Chromium --------------------------------------------------------------


class SteppingClock:
    """The page's wall clock: each reading is `LAG_RESOLUTION` later than the one before, so
    each lag sample is a point of its own."""

    def __init__(self, start: datetime) -> None:
        self._next = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            now, self._next = self._next, self._next + LAG_RESOLUTION
            return now


class PageDaemon(Daemon):
    """test_metrics' Daemon, with the status page among its hooks and served at `/`."""

    def __init__(self, files: SyncdFiles, now: datetime) -> None:
        super().__init__(files, now)
        self.server.stop()
        self.app.close()
        settings = load_settings(files.config).settings
        self.page = StatusPage(
            slot=settings.export_duration,
            export_delay=settings.export_delay,
            start_time=settings.start_time,
            clock=SteppingClock(now),
            refresh_seconds=0,
        )
        self.app = build_app(
            settings,
            stop=self.stop,
            hooks=[self.metrics, self.health, self.page],
            clock=lambda: now,
        )
        self.page.follow(lambda: self.app.pipeline.records)
        self.server = OpsServer("127.0.0.1", 0, self.health, self.metrics, self.page).start()
        self.port = self.server.port


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=120)) as s:
        yield s


def test_the_daemon_serves_the_page_chromium_shows_windows_lag_and_the_held_error(
    tmp_path: Path, sim: Simulator
) -> None:
    files = write_config(tmp_path, sim, START, {"MaxBatchAttempts": 1})
    # first run, three hours earlier: 21:00 and 22:00 of Nov 1 loaded
    earlier = PageDaemon(files, NOW - 3 * HOUR).start()
    try:
        assert earlier.idle.wait(30)
    finally:
        earlier.close()
    # now every API answer echoes the request (its URL, the API key): 23:00 is held
    sim.faults.add(Fault.ECHO_REQUEST, count=1000)
    daemon = PageDaemon(files, NOW).start()
    url = f"http://127.0.0.1:{daemon.port}/"
    try:
        wait_for(lambda: daemon.app.pipeline.held is not None)
        dom = dump_dom(url)
        shot = screenshot(url, tmp_path / "status-page.png")
    finally:
        daemon.close()
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(tmp_path / "status-page.png", os.environ[SCREENSHOT_ENV])
    day1 = datetime(2026, 11, 1, tzinfo=UTC)
    states = {h: dom.cells.get(stamp(day1 + timedelta(hours=h))) for h in (20, 21, 22, 23)}
    states |= {24 + h: dom.cells.get(stamp(day1 + timedelta(hours=24 + h))) for h in (0, 1, 2)}
    assert states == {
        20: "before-start",
        21: "loaded",
        22: "loaded",
        23: "held",
        24: "missing",
        25: "missing",
        26: "not-due",
    }
    assert len(dom.cells) == 7 * 24  # seven days of hour windows
    error = dom.texts["held-error"]
    assert ("request refused" in error, API_KEY in error, "?" in error.replace("?...", "")) == (
        True,
        False,
        False,
    ), error
    assert dom.texts["held-batch"] == window_key(NOW - 4.5 * HOUR, NOW - 3.5 * HOUR).id
    assert (dom.ids["calendar"], dom.ids["lag"], dom.polyline_points >= 2) == ("table", "svg", True)
    assert "script" not in dom.tags and shot[:8] == b"\x89PNG\r\n\x1a\n"


def test_chromium_shows_the_batch_in_flight(tmp_path: Path, sim: Simulator) -> None:
    files = write_config(tmp_path, sim, START)
    # the first download is answered only when the simulator stops: 21:00 stays in flight
    sim.faults.add(Fault.SLOW, endpoint=Endpoint.DOWNLOAD, delay=300)
    daemon = PageDaemon(files, NOW).start()
    try:
        wait_for(lambda: daemon.page.data().in_flight)
        dom = dump_dom(f"http://127.0.0.1:{daemon.port}/")
    finally:
        sim.stop()
        daemon.close()
    day1 = datetime(2026, 11, 1, tzinfo=UTC)
    states = [dom.cells.get(stamp(day1 + timedelta(hours=h))) for h in (20, 21, 22, 23)]
    assert states == ["before-start", "in-flight", "missing", "missing"]


def test_syncd_run_serves_the_page_at_the_root_of_the_metrics_address(
    tmp_path: Path, sim: Simulator
) -> None:
    port = free_port()
    start = utcnow().replace(minute=0, second=0, microsecond=0) - 4 * HOUR
    files = write_config(tmp_path, sim, start, {"metrics.Address": f"127.0.0.1:{port}"})
    status = files.state_dir / "status.json"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "syncd", "run", "-c", str(files.config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: status.exists() and json.loads(status.read_text())["state"] == "idle")
        answer = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        dom = dump_dom(f"http://127.0.0.1:{port}/")
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    finally:
        if daemon.poll() is None:
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.wait()
    cells = [dom.cells.get(stamp(start + h * HOUR)) for h in (-1, 0, 1, 2)]
    assert (answer.status_code, answer.headers["content-type"]) == (
        200,
        "text/html; charset=utf-8",
    )
    assert cells == ["before-start", "loaded", "loaded", "loaded"]


# -- `syncd status --html FILE` -----------------------------------------------------------------


def test_status_html_writes_the_page_from_the_warehouse_and_escapes_the_held_error(
    tmp_path: Path, sim: Simulator
) -> None:
    # status reads the wall clock: windows relative to it
    start = utcnow().replace(minute=0, second=0, microsecond=0) - 3 * HOUR
    files = write_config(tmp_path, sim, start)
    assert run_cli(["once", "-c", str(files.config)], now=None) == 0
    settings = load_settings(files.config).settings
    held = window_key(start + 2 * HOUR, start + 3 * HOUR)
    hostile = (
        f'<img src=x onerror="alert(1)"> & {API_KEY} https://dl.example/x?X-Amz-Signature=s3cr3t'
    )
    status_file(settings).write(
        DaemonStatus(
            pid=os.getpid(),
            updated_at=utcnow(),
            state="held",
            held=HeldBatch(batch_id=held.id, error=hostile, since=utcnow(), attempts=3),
        )
    )
    page = tmp_path / "out" / "status.html"
    code = run_cli(["status", "-c", str(files.config), "--html", str(page)], now=None)
    dom = dump_dom(page.as_uri())
    cells = {h: dom.cells.get(stamp(start + h * HOUR)) for h in (-1, 0, 1, 2)}
    assert (code, cells) == (
        1,  # a batch is held, as `status` says
        {-1: "before-start", 0: "loaded", 1: "loaded", 2: "held"},
    )
    error = dom.texts["held-error"]
    assert error.startswith('<img src=x onerror="alert(1)"> & '), error
    assert (API_KEY in error, "s3cr3t" in error, "img" in dom.tags) == (False, False, False)
    assert dom.ids["lag"] == "svg" and "not enough samples" in dom.texts["lag"]


# -- the rules, on their own --------------------------------------------------------------------

DAY = datetime(2026, 11, 2, tzinfo=UTC)


def data(**kw: object) -> PageData:
    base: dict[str, object] = {
        "now": DAY + timedelta(hours=12, minutes=30),
        "source": "test",
        "slot": HOUR,
        "export_delay": HOUR,
        "start_time": DAY + timedelta(hours=2),
        "windows": [
            Window(DAY + timedelta(hours=2), DAY + timedelta(hours=3), 5, settled=True),
            Window(DAY + timedelta(hours=3), DAY + timedelta(hours=4), 7),
            Window(DAY + timedelta(hours=6), DAY + timedelta(hours=7), 1),
        ],
        "recent": [],
    }
    base.update(kw)
    return PageData(**base)  # type: ignore[arg-type]


def states_today(page: PageData) -> list[str]:
    (day, cells), *_ = calendar(page, days=1)
    assert day == DAY.date()
    return [c.state for c in cells]


def test_calendar_states_of_one_day() -> None:
    page = data(
        held=Held("b", "e", 1, None, DAY + timedelta(hours=4), DAY + timedelta(hours=5)),
        in_flight=[(DAY + timedelta(hours=5), DAY + timedelta(hours=6))],
    )
    assert states_today(page)[:13] == [
        "before-start",
        "before-start",
        "settled",
        "loaded",
        "held",
        "in-flight",
        "loaded",
        "missing",
        "missing",
        "missing",
        "missing",
        "not-due",  # 11:00-12:00 ends after now minus ExportDelay
        "not-due",
    ]


def test_the_daemon_page_follows_its_hooks() -> None:
    clock = SteppingClock(DAY + timedelta(hours=12))
    page = StatusPage(slot=HOUR, export_delay=HOUR, start_time=DAY, clock=clock)
    key = BatchKey(DAY, DAY + HOUR)
    page.before_batch(key)
    flying = states_today(page.data())[0]
    page.on_failure(key, TransientSourceError("HTTP 503 <b>"), 5, held=True)
    held = states_today(page.data())[0]
    record = SyncRecord(
        key.id, "segment", key.start, key.end, DAY + timedelta(hours=12), rows_loaded=3
    )
    page.follow(lambda: [record])
    page.after_commit(key, record)
    after = page.data()
    assert (flying, held, states_today(after)[0], after.held) == (
        "in-flight",
        "held",
        "loaded",
        None,
    )
    assert len(page.lag_history()) >= 2


def test_held_error_is_escaped_and_safe() -> None:
    error = f"<script>alert(1)</script> {API_KEY} https://x.example/p?sig=abc"
    from syncd.observability.logging import register_secret

    register_secret(API_KEY)
    text = render(data(held=Held("b<1>", error, 2, None)))
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert (API_KEY in text, "sig=abc" in text, "b&lt;1&gt;" in text) == (False, False, True)


def test_rows_per_second_over_the_last_commits() -> None:
    def rec(minute: int, rows: int) -> SyncRecord:
        at = DAY + timedelta(minutes=minute)
        return SyncRecord(f"b{minute}", "segment", at, at, at, rows_loaded=rows)

    assert rows_per_second([rec(0, 100)]) is None
    assert rows_per_second([rec(0, 100), rec(1, 60), rec(2, 60)]) == 1.0
    # commits more than an hour before the last one do not count
    assert rows_per_second([rec(0, 999), rec(100, 0), rec(101, 120)]) == 2.0


def test_window_of_id_reads_the_batch_key() -> None:
    key = BatchKey(DAY, DAY + HOUR, "legacy", (1, 2))
    assert (window_of_id(key.id), window_of_id("hauser-x")) == ((key.start, key.end), None)


def test_short_windows_share_a_cell_loaded_only_when_all_are_committed() -> None:
    minute = timedelta(minutes=1)
    windows = [Window(DAY + i * minute, DAY + (i + 1) * minute, 1) for i in range(8)]
    page = data(slot=minute, start_time=DAY, windows=windows)
    # 00:00-00:05 is covered; 00:05-00:10 only up to 00:08, and is due: missing
    assert states_today(page)[:3] == ["loaded", "missing", "missing"]
    assert len(states_today(page)) == 288


def test_a_year_of_five_minute_windows_renders_in_well_under_a_second() -> None:
    step = timedelta(minutes=5)
    start = DAY - timedelta(days=365)
    records = [
        SyncRecord(f"b{i}", "segment", start + i * step, start + (i + 1) * step, DAY)
        for i in range(365 * 288)
    ]
    began = time.perf_counter()
    text = render(data(slot=step, windows=windows_of(records), recent=records[-10:]))
    seconds = time.perf_counter() - began
    # a scan of every window per cell took 21 s here; bisection about 0.2 s
    assert (seconds < 5, text.count('data-state="loaded"')) == (True, 6 * 288), seconds


def test_the_page_shows_rows_per_second_of_every_commit_in_the_last_hour() -> None:
    def rec(i: int) -> SyncRecord:
        at = DAY + i * timedelta(minutes=1)
        return SyncRecord(f"b{i}", "segment", at, at, at, rows_loaded=60 if i < 10 else 180)

    text = page_from_records(
        [rec(i) for i in range(20)],
        now=DAY + HOUR,
        source="test",
        slot=HOUR,
        export_delay=HOUR,
        start_time=DAY,
        held=None,
        sync_point=DAY,
    )
    # (9 x 60 + 10 x 180) rows over 19 minutes; the last 10 commits alone would say 3.0
    assert Dom(text).texts["rows-per-second"] == "2.1"


def test_a_settled_record_shows_as_a_settled_window() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    records = [
        SyncRecord("a", "segment", start, start + HOUR, start, rows_loaded=3),
        SyncRecord(
            "b",
            "segment",
            start + HOUR,
            start + 2 * HOUR,
            start,
            rows_loaded=4,
            settled_at=start + 30 * HOUR,
        ),
    ]
    assert [w.settled for w in windows_of(records)] == [False, True]
