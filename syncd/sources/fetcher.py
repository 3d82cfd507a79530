"""Fetch one batch to the spool folder: export, poll, download (or download legacy bundles).

The operation id is persisted before it is polled, so a restart (or the next attempt after a
failure) resumes the same export. It is forgotten only when the caller says the batch is
committed (`forget`), or when the operation turns out unusable (FAILED, expired, or still
PENDING `operation_deadline` (OperationTimeout) after it was created, counted across attempts
and restarts), in which case a new export of the same window is created.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

import structlog

from syncd.errors import (
    AuthError,
    ExportFailed,
    ExportPending,
    TerminalSourceError,
    TransientSourceError,
)
from syncd.sources.client import ExportClient
from syncd.sources.download import GZIP_MAGIC, Download
from syncd.sources.operations import OperationStore, PendingOperation
from syncd.timeutil import utcnow

log = structlog.get_logger(__name__)

#: Seconds between polls of an export operation (public clients poll every 2 to 15 s).
DEFAULT_POLL_INTERVAL = 5.0
#: How long one fetch waits for an operation before giving up (and resuming it next time).
DEFAULT_OPERATION_DEADLINE = 30 * 60.0

ExportFormat = Literal["ndjson", "json-array"]


class BundleRef(Protocol):
    """Anything with a legacy bundle id (the client's and the planner's `Bundle` both are)."""

    @property
    def id(self) -> int: ...


@dataclass(frozen=True)
class FetchResult:
    """One downloaded export file on the spool disk."""

    path: Path
    bytes: int
    compressed: bool
    operation_id: str  # "" for legacy bundles
    format: ExportFormat = "ndjson"
    bundle_id: int | None = None


class Fetcher:
    """Composes the export client and the operation store into "fetch this batch"."""

    def __init__(
        self,
        client: ExportClient,
        store: OperationStore,
        spool_dir: Path,
        *,
        segment_id: str = "everyone",
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        operation_deadline: float = DEFAULT_OPERATION_DEADLINE,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.client = client
        self.store = store
        self.spool_dir = spool_dir
        self.segment_id = segment_id
        self.poll_interval = poll_interval
        self.operation_deadline = operation_deadline
        self._clock = clock

    def fetch_segment(
        self, batch_id: str, start: datetime, end: datetime, *, individuals: bool = False
    ) -> FetchResult:
        """Download the export of [start, end), resuming the batch's persisted operation;
        with `individuals`, the individuals export of the window (`syncd.people`)."""
        pending = self.store.get(batch_id)
        if pending is not None and (pending.start, pending.end) != (start, end):
            log.warning(
                "persisted operation is for another window; starting afresh",
                batch_id=batch_id,
                operation_id=pending.operation_id,
            )
            pending = None
        if pending is not None:
            log.info(
                "resuming export operation", batch_id=batch_id, operation_id=pending.operation_id
            )
            try:
                return self._complete(pending, self._time_left(pending))
            except AuthError:
                raise
            except (TerminalSourceError, ExportPending) as exc:
                if isinstance(exc, ExportPending) and self._time_left(pending) > 0:
                    raise  # within OperationTimeout: poll the same operation next attempt
                log.warning(
                    "persisted operation unusable; creating a new export",
                    batch_id=batch_id,
                    operation_id=pending.operation_id,
                    error=str(exc),
                )
                self.store.remove(batch_id)
        # every field (`fields` omitted): a list would never export a field FullStory adds
        # later; what the config leaves out is dropped by the transform
        create = self.client.create_individuals_export if individuals else self.client.create_export
        operation_id = create(start, end, segment_id=self.segment_id)
        pending = PendingOperation(
            batch_id=batch_id,
            operation_id=operation_id,
            start=start,
            end=end,
            created_at=self._clock(),
        )
        self.store.put(pending)
        try:
            return self._complete(pending, self.operation_deadline)
        except (ExportFailed, ExportPending) as exc:
            # FullStory gave up on this export, or it outlived OperationTimeout: forget it, and
            # let the batch's next attempt (after its backoff, like any transient failure)
            # create a new one
            self.store.remove(batch_id)
            raise TransientSourceError(f"{exc}; the next attempt creates a new export") from exc

    def _time_left(self, pending: PendingOperation) -> float:
        """Seconds of OperationTimeout the operation has left (0 once it ran out: one more
        poll finds whether it completed meanwhile)."""
        age = (self._clock() - pending.created_at).total_seconds()
        return max(0.0, self.operation_deadline - age)

    def fetch_bundles(self, batch_id: str, bundles: Sequence[BundleRef]) -> list[FetchResult]:
        """Download each legacy bundle of the batch, in order, through the rate limiter."""
        results = []
        for bundle in bundles:
            dest = self.spool_dir / f"{batch_id}-{bundle.id}.json.gz"
            download = _spooled(dest)
            if download is None:
                download = _truthful_name(self.client.download_bundle(bundle.id, dest))
            else:  # a predecessor (killed before its commit) fetched it: no second download
                log.info("bundle already downloaded", bundle_id=bundle.id, path=str(dest))
            results.append(
                FetchResult(
                    path=download.path,
                    bytes=download.bytes,
                    compressed=download.compressed,
                    operation_id="",
                    format="json-array",
                    bundle_id=bundle.id,
                )
            )
        return results

    def forget(self, batch_id: str) -> None:
        """Drop the batch's persisted operation and its spool files: call after its commit (or
        to re-export)."""
        self.store.remove(batch_id)
        for path in self._spool_files(batch_id):
            path.unlink(missing_ok=True)

    def sweep(self, committed: Collection[str]) -> None:
        """Forget what a crash between commit and cleanup left behind for committed batches."""
        for pending in self.store.all():
            if pending.batch_id in committed:
                self.store.remove(pending.batch_id)
        for batch_id in committed:
            for path in self._spool_files(batch_id):
                path.unlink(missing_ok=True)

    def _spool_files(self, batch_id: str) -> list[Path]:
        # Names are "<batch id>.<ext>" (segment) or "<batch id>-<bundle id>.<ext>" (legacy).
        return list(self.spool_dir.glob(f"{glob.escape(batch_id)}[.-]*"))

    def _complete(self, pending: PendingOperation, deadline: float) -> FetchResult:
        export_id = pending.export_id
        if export_id is None:
            export_id = self.client.wait_for_export(
                pending.operation_id, poll_interval=self.poll_interval, deadline=deadline
            )
            self.store.put(pending.with_export_id(export_id))
        dest = self.spool_dir / f"{pending.batch_id}.ndjson.gz"
        download = _spooled(dest) or _truthful_name(self.client.download_export(export_id, dest))
        return FetchResult(
            path=download.path,
            bytes=download.bytes,
            compressed=download.compressed,
            operation_id=pending.operation_id,
        )


def _spooled(dest: Path) -> Download | None:
    """The complete download already at `dest` (or at its inflated name), if there is one.

    Downloads are verified (byte count, gzip trailer) under a temporary name and only then
    renamed to `dest`, so a file there is whole; a damaged one is removed by `forget`."""
    for path in (dest, dest.with_suffix("")):
        try:
            with path.open("rb") as f:
                compressed = f.read(len(GZIP_MAGIC)) == GZIP_MAGIC
                size = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            continue
        return _truthful_name(Download(path=path, bytes=size, compressed=compressed))
    return None


def _truthful_name(download: Download) -> Download:
    """Drop the ".gz" of a file some proxy already inflated, so the name tells the truth."""
    if download.compressed or download.path.suffix != ".gz":
        return download
    plain = download.path.with_suffix("")
    download.path.replace(plain)
    return Download(path=plain, bytes=download.bytes, compressed=False)
