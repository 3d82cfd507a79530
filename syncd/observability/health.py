"""Liveness and readiness of the daemon, and the one HTTP server for probes and metrics.

- Liveness (`/livez`, also `/healthz`): the sync loop is alive: it has started, not ended, and
  has shown a sign of life (any hook, or its idle wait) within `stall_timeout`. A failing
  liveness probe means "restart me": it must not fail while a batch is merely held.
- Readiness (`/readyz`): the configuration was valid and the tables are ensured (`started`),
  no batch is held, and the current run of failed attempts (if any) began less than
  `failing_threshold` ago. A failing settle (SettleAfter) does not count: fresh windows go on
  past it, and `status` and the metrics report it. A failing readiness probe means "page someone", not "restart".

`OpsServer` serves both, `/metrics` and the status page at `/` (`statuspage.StatusPage`) on the
configured `[metrics] Address`; it is started only by `syncd run`, never at import.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import structlog

from syncd.batch import BatchKey, SyncRecord
from syncd.errors import ConfigError
from syncd.observability.logging import safe_text
from syncd.observability.metrics import CONTENT_TYPE, SyncMetrics
from syncd.pipeline import PipelineHooks

if TYPE_CHECKING:
    from syncd.observability.statuspage import StatusPage

log = structlog.get_logger(__name__)

#: Readiness fails once attempts have kept failing this long (seconds) without being held.
DEFAULT_FAILING_THRESHOLD = 900.0
#: Liveness fails when the loop has shown no sign of life for this long (seconds). The idle
#: wait of the loop lasts at most an hour, and a step is bounded by the operation and download
#: deadlines; the CLI raises this when those are configured longer.
DEFAULT_STALL_TIMEOUT = 2 * 3600.0


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


class Health(PipelineHooks):
    """Tracks the loop through its hooks; answers the two probes. `clock` is monotonic."""

    def __init__(
        self,
        *,
        failing_threshold: float = DEFAULT_FAILING_THRESHOLD,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failing_threshold = failing_threshold
        self.stall_timeout = stall_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._started = False
        self._stopped = False
        self._beat = clock()
        self._failing_since: float | None = None
        self._held: str | None = None
        self._last_error = ""

    # -- lifecycle, told by the CLI ------------------------------------------------------------

    def mark_started(self) -> None:
        """Tables ensured, repair done: the loop is about to run."""
        with self._lock:
            self._started = True
            self._beat = self._clock()

    def mark_stopped(self) -> None:
        with self._lock:
            self._stopped = True

    def beat(self) -> None:
        """A sign of life from the loop."""
        with self._lock:
            self._beat = self._clock()

    # -- probes ------------------------------------------------------------------------------

    def liveness(self) -> Check:
        with self._lock:
            if self._stopped:
                return Check(False, "the sync loop has stopped")
            silent = self._clock() - self._beat
            if silent > self.stall_timeout:
                return Check(False, f"the sync loop has shown no progress for {silent:.0f}s")
            return Check(True, "the sync loop is running" if self._started else "starting")

    def readiness(self) -> Check:
        with self._lock:
            if not self._started:
                return Check(False, "starting: tables not ensured yet")
            if self._stopped:
                return Check(False, "stopped")
            if self._held is not None:
                return Check(False, f"batch {self._held} is held: {self._last_error}")
            if self._failing_since is not None:
                failing = self._clock() - self._failing_since
                if failing > self.failing_threshold:
                    return Check(
                        False, f"attempts have failed for {failing:.0f}s: {self._last_error}"
                    )
            return Check(True, "ready")

    # -- PipelineHooks -----------------------------------------------------------------------

    def before_batch(self, key: BatchKey) -> None:
        self.beat()

    def after_step(self, key: BatchKey, step: str, seconds: float) -> None:
        self.beat()

    def after_commit(self, key: BatchKey, record: SyncRecord) -> None:
        with self._lock:
            self._beat = self._clock()
            self._failing_since = None
            self._held = None
            self._last_error = ""

    def on_failure(self, key: BatchKey, error: BaseException, attempt: int, held: bool) -> None:
        with self._lock:
            now = self._clock()
            self._beat = now
            if key.settle:
                return  # held on its own, never in the way: `status` and metrics report it
            if self._failing_since is None:
                self._failing_since = now
            self._held = key.id if held else None
            self._last_error = f"{type(error).__name__}: {error}"

    def on_idle(self, sync_point: datetime | None, next_ready_at: datetime) -> None:
        with self._lock:
            self._beat = self._clock()
            self._failing_since = None
            self._held = None


class OpsServer:
    """`/metrics`, `/livez` (and `/healthz`), `/readyz` and the status page (`/`, when given
    one) over HTTP on one address, in a thread."""

    def __init__(
        self,
        host: str,
        port: int,
        health: Health,
        metrics: SyncMetrics | None,
        page: StatusPage | None = None,
    ) -> None:
        self.health = health
        self.metrics = metrics
        self.page = page
        handler = _handler_for(self)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(
                [f"[metrics] Address: cannot listen on {host}:{port}: {exc.strerror or exc}"]
            ) from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="syncd-ops-server", daemon=True
        )

    @property
    def port(self) -> int:
        """The port bound (useful when 0 asked for any free one)."""
        return int(self._server.server_address[1])

    def start(self) -> OpsServer:
        self._thread.start()
        log.info("serving metrics and health", port=self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OpsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of `path`."""
        route = path.split("?", 1)[0].rstrip("/") or "/"
        if route == "/metrics" and self.metrics is not None:
            return 200, CONTENT_TYPE, self.metrics.render()
        if route == "/" and self.page is not None:
            return 200, "text/html; charset=utf-8", self.page.render()
        probes = {
            "/livez": self.health.liveness,
            "/healthz": self.health.liveness,
            "/readyz": self.health.readiness,
        }
        if route in probes:
            check = probes[route]()
            # the probe may be served on 0.0.0.0: nothing from an error body goes out raw
            body = f"{'ok' if check.ok else 'failing'}: {safe_text(check.detail)}\n".encode()
            return (200 if check.ok else 503), "text/plain; charset=utf-8", body
        return 404, "text/plain; charset=utf-8", b"not found: try /, /metrics, /livez, /readyz\n"


def _handler_for(server: OpsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, content_type, body = server.answer(self.path)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Probes every few seconds would flood the logs; they are not logged."""

    return Handler
