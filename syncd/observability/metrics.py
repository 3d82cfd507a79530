"""Prometheus metrics of one pipeline: a `PipelineHooks` with a registry of its own.

Nothing happens at import: every metric lives in the `CollectorRegistry` of one `SyncMetrics`
instance, so tests (and two pipelines in one process) never share counters, and the HTTP
endpoint is started only by `syncd run` when `[metrics] Address` is set (`health.OpsServer`).

Every name starts with `syncd_`; README.md ("Metrics") lists them with their meaning.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from syncd.batch import BatchKey, StagedBatch, SyncRecord
from syncd.pipeline import PipelineHooks
from syncd.planner import lag_behind, unsettled
from syncd.timeutil import utcnow

#: What `/metrics` answers with.
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Step durations run from a local transform (well under a second) to a multi-GB download.
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class SyncMetrics(PipelineHooks):
    """Counts batches, rows, bytes, API requests and retries; times each step; exposes the
    sync point, the lag and whether a batch is held.

    `export_delay` is ExportDelay: data younger than it is not expected yet, so the lag is
    measured from `now - export_delay`. `clock` is the wall clock (injected by tests).
    `settle_after` is SettleAfter: the windows still waiting for their settle and the rows
    settles gained are read from the committed records (`follow`) at every scrape, so a
    restart shows what the SyncTable says. A held settle is counted on its own
    (`syncd_settles_held`): it does not hold the daemon, so `syncd_batch_held` stays 0.
    """

    def __init__(
        self,
        *,
        export_delay: timedelta = timedelta(0),
        settle_after: timedelta = timedelta(0),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._delay = export_delay
        self._lock = threading.Lock()
        self._sync_point: Callable[[], datetime | None] = lambda: None
        self._settle_after = settle_after
        self._records: Callable[[], Sequence[SyncRecord]] = lambda: ()
        self._settles_held: set[str] = set()
        self._held_batch: str | None = None
        self._last_commit = 0.0  # Unix seconds of the last commit, this run's or an earlier one's
        r = self.registry
        self.batches_committed = Counter(
            "syncd_batches_committed", "Batches committed with their sync row.", registry=r
        )
        self.batch_failures = Counter(
            "syncd_batch_failures", "Failed attempts at a batch (each is retried).", registry=r
        )
        self.batches_held = Counter(
            "syncd_batches_held", "Times a batch was put on hold after failing.", registry=r
        )
        self.rows_loaded = Counter("syncd_rows_loaded", "Rows committed.", registry=r)
        self.rows_rejected = Counter(
            "syncd_rows_rejected", "Rows quarantined in the rejects table.", registry=r
        )
        self.bytes_downloaded = Counter(
            "syncd_bytes_downloaded", "Export bytes downloaded, of committed batches.", registry=r
        )
        self.bytes_staged = Counter(
            "syncd_bytes_staged", "Bytes of staged files (data and rejects) written.", registry=r
        )
        self.api_requests = Counter(
            "syncd_api_requests",
            "Export API responses, by HTTP status.",
            ["status"],
            registry=r,
        )
        self.api_retries = Counter(
            "syncd_api_retries", "Export API calls retried, by reason.", ["reason"], registry=r
        )
        self.step_seconds = Histogram(
            "syncd_step_seconds",
            "Time spent per batch step (fetch, transform, stage, commit).",
            ["step"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.sync_point = Gauge(
            "syncd_sync_point_timestamp_seconds",
            "End of the committed prefix of time (Unix seconds); NaN before the first batch.",
            registry=r,
        )
        self.sync_point.set_function(lambda: _unix(self._sync_point()))
        self.lag = Gauge(
            "syncd_lag_seconds",
            "How far the sync point is behind now minus ExportDelay; NaN before the first batch.",
            registry=r,
        )
        self.lag.set_function(self._lag_seconds)
        self.last_success = Gauge(
            "syncd_last_success_timestamp_seconds",
            "When the last batch was committed (Unix seconds), also by an earlier run; "
            "0 before the first.",
            registry=r,
        )
        self.last_success.set_function(lambda: self._last_commit)
        self.held = Gauge("syncd_batch_held", "1 while a batch is held, else 0.", registry=r)
        self.windows_unsettled = Gauge(
            "syncd_windows_unsettled",
            "Windows loaded before they were SettleAfter old and not settled yet.",
            registry=r,
        )
        self.windows_unsettled.set_function(
            lambda: len(unsettled(self._records(), self._settle_after))
        )
        self.settle_rows_gained = Gauge(
            "syncd_settle_rows_gained",
            "Rows the committed settles added to their windows (negative: removed), "
            "from the SyncTable.",
            registry=r,
        )
        self.settle_rows_gained.set_function(
            lambda: sum(rec.settle_delta for rec in self._records())
        )
        self.settles_committed = Counter(
            "syncd_settles_committed", "Settles committed (windows replaced).", registry=r
        )
        self.settles_held = Gauge(
            "syncd_settles_held",
            "Settles held after failing (retried later; fresh windows go on).",
            registry=r,
        )
        self.settles_held.set_function(lambda: len(self._settles_held))

    # -- what the CLI and the client report ----------------------------------------------------

    def follow(
        self,
        sync_point: Callable[[], datetime | None],
        records: Callable[[], Sequence[SyncRecord]] | None = None,
    ) -> None:
        """Read the sync point from `sync_point` at every scrape (e.g. the pipeline's
        committed prefix, which a rollback or a backfill can move backwards too), and the
        committed records (for the settle figures) from `records`."""
        self._sync_point = sync_point
        if records is not None:
            self._records = records

    def on_retry(self, reason: str, attempt: int, wait_seconds: float) -> None:
        """`ExportClient(on_retry=...)`: one API call is about to be retried."""
        self.api_retries.labels(reason=reason).inc()

    def on_response(self, response: httpx.Response) -> None:
        """An httpx response event hook: count the answer by status."""
        self.api_requests.labels(status=str(response.status_code)).inc()

    def render(self) -> bytes:
        """The exposition text `/metrics` serves."""
        return generate_latest(self.registry)

    # -- PipelineHooks -------------------------------------------------------------------------

    def after_start(self, records: Sequence[SyncRecord]) -> None:
        """The last commit before this process started, from the SyncTable: a restart does
        not make `syncd_last_success_timestamp_seconds` look as if nothing ever succeeded."""
        if records:
            last = max(r.committed_at for r in records)
            with self._lock:
                self._last_commit = max(self._last_commit, last.timestamp())

    def after_step(self, key: BatchKey, step: str, seconds: float) -> None:
        self.step_seconds.labels(step=step).observe(seconds)

    def after_stage(self, key: BatchKey, staged: StagedBatch) -> None:
        paths = (staged.batch.path, staged.batch.rejects_path)
        self.bytes_staged.inc(sum(_size(p) for p in paths if p is not None))

    def after_commit(self, key: BatchKey, record: SyncRecord) -> None:
        self.batches_committed.inc()
        self.rows_loaded.inc(record.rows_loaded)
        self.rows_rejected.inc(record.rows_rejected)
        self.bytes_downloaded.inc(record.bytes)
        if key.settle:
            self.settles_committed.inc()
        with self._lock:
            self._settles_held.discard(key.id)
            self._last_commit = record.committed_at.timestamp()
            if self._held_batch == key.id:
                self._held_batch = None
                self.held.set(0)

    def on_failure(self, key: BatchKey, error: BaseException, attempt: int, held: bool) -> None:
        self.batch_failures.inc()
        with self._lock:
            if key.settle:
                if held:
                    self._settles_held.add(key.id)
                return
            if held and self._held_batch != key.id:
                self.batches_held.inc()
            if held:
                self._held_batch = key.id
                self.held.set(1)

    # -- internals ---------------------------------------------------------------------------

    def _lag_seconds(self) -> float:
        lag = lag_behind(self._sync_point(), self._clock(), self._delay)
        return math.nan if lag is None else lag.total_seconds()


def _unix(moment: datetime | None) -> float:
    return math.nan if moment is None else moment.timestamp()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
