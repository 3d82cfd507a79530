"""In-flight export operations, persisted so that a restart resumes instead of re-exporting.

hauser forgot its operation on restart and created a new export for the same window. Here the
operation id is written down (atomically: temp file, fsync, rename) before it is polled, and
forgotten only after the batch is committed. Exports live about 7 days, so entries older than
6 days are dropped: polling them would only find an expired export.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from syncd.atomic import write_atomic
from syncd.timeutil import format_timestamp, parse_timestamp, utcnow

log = structlog.get_logger(__name__)

#: Entries older than this are discarded (FullStory keeps export results about 7 days).
MAX_OPERATION_AGE = timedelta(days=6)
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class PendingOperation:
    """An export started for a batch and not yet committed."""

    batch_id: str
    operation_id: str
    start: datetime
    end: datetime
    created_at: datetime
    export_id: str | None = None

    def with_export_id(self, export_id: str) -> PendingOperation:
        return replace(self, export_id=export_id)


class OperationStore:
    """A small JSON file: batch id -> operation; safe to share between threads."""

    def __init__(
        self,
        path: Path,
        *,
        max_age: timedelta = MAX_OPERATION_AGE,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.path = path
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._entries = self._load()
        if self._prune():
            self._save()

    def get(self, batch_id: str) -> PendingOperation | None:
        """The batch's operation, unless there is none or it is too old to resume."""
        with self._lock:
            if self._prune():
                self._save()
            return self._entries.get(batch_id)

    def put(self, operation: PendingOperation) -> None:
        """Record (or update) the batch's operation, durably, before anyone polls it."""
        with self._lock:
            self._entries[operation.batch_id] = operation
            self._save()

    def remove(self, batch_id: str) -> None:
        with self._lock:
            if self._entries.pop(batch_id, None) is not None:
                self._save()

    def all(self) -> list[PendingOperation]:
        """Every remembered operation, oldest first (for status displays)."""
        with self._lock:
            return sorted(self._entries.values(), key=lambda op: op.created_at)

    def _prune(self) -> bool:
        oldest = self._clock() - self._max_age
        stale = [k for k, op in self._entries.items() if op.created_at < oldest]
        for batch_id in stale:
            op = self._entries.pop(batch_id)
            log.info(
                "discarding old export operation",
                batch_id=batch_id,
                operation_id=op.operation_id,
                created_at=format_timestamp(op.created_at),
            )
        return bool(stale)

    def _load(self) -> dict[str, PendingOperation]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            document = json.loads(text)
            return {k: _decode(k, v) for k, v in document["operations"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Losing these ids costs a re-export of in-flight batches, never correctness.
            log.warning(
                "unreadable operation store; starting empty", path=str(self.path), error=repr(exc)
            )
            return {}

    def _save(self) -> None:
        document = {
            "version": _FORMAT_VERSION,
            "operations": {k: _encode(op) for k, op in sorted(self._entries.items())},
        }
        write_atomic(self.path, json.dumps(document, indent=2, sort_keys=True).encode("utf-8"))


def _encode(op: PendingOperation) -> dict[str, Any]:
    return {
        "operation_id": op.operation_id,
        "export_id": op.export_id,
        "window": {"start": format_timestamp(op.start), "end": format_timestamp(op.end)},
        "created_at": format_timestamp(op.created_at),
    }


def _decode(batch_id: str, raw: dict[str, Any]) -> PendingOperation:
    export_id = raw.get("export_id")
    return PendingOperation(
        batch_id=batch_id,
        operation_id=str(raw["operation_id"]),
        start=parse_timestamp(raw["window"]["start"]),
        end=parse_timestamp(raw["window"]["end"]),
        created_at=parse_timestamp(raw["created_at"]),
        export_id=str(export_id) if export_id else None,
    )
