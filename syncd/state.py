"""The daemon's status file: what `syncd status` shows while the daemon holds the warehouse.

DuckDB admits one process per file, so the daemon publishes its state here after every step
(atomically), and `status` reads the warehouse when it can and this file when it cannot.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from syncd.atomic import write_atomic
from syncd.batch import SyncRecord
from syncd.observability.logging import safe_values
from syncd.timeutil import format_timestamp, parse_timestamp


@dataclass
class HeldBatch:
    """A batch that keeps failing: the daemon retries it and reports it, never skips it."""

    batch_id: str
    error: str
    since: datetime
    attempts: int
    next_attempt: datetime | None = None


@dataclass
class DaemonStatus:
    pid: int
    updated_at: datetime
    state: str  # "starting", "loading", "waiting" (for the warehouse), "retrying", "idle", "held", "stopped"
    detail: str = ""
    sync_point: datetime | None = None
    batches_committed: int = 0  # the SyncTable's rows, as `status` reads them from the warehouse
    next_ready_at: datetime | None = None
    held: HeldBatch | None = None
    recent: list[SyncRecord] = field(default_factory=list)
    #: SettleAfter: settles that keep failing (fresh windows go on), windows waiting for their
    #: settle, and rows the SyncTable's settles added (negative: removed).
    settles_held: list[HeldBatch] = field(default_factory=list)
    unsettled: int = 0
    settle_rows_gained: int = 0


def _encode(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return format_timestamp(obj)
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v) for v in obj]
    return obj


def _ts(value: Any) -> datetime | None:
    return parse_timestamp(value) if isinstance(value, str) and value else None


def _record(d: dict[str, Any]) -> SyncRecord:
    end = _ts(d.get("end"))
    committed = _ts(d.get("committed_at"))
    assert end is not None and committed is not None
    return SyncRecord(
        batch_id=str(d.get("batch_id", "")),
        source=str(d.get("source", "")),
        start=_ts(d.get("start")),
        end=end,
        committed_at=committed,
        bundle_ids=tuple(int(i) for i in d.get("bundle_ids", ())),
        operation_id=str(d.get("operation_id", "")),
        rows_loaded=int(d.get("rows_loaded", 0)),
        rows_rejected=int(d.get("rows_rejected", 0)),
        bytes=int(d.get("bytes", 0)),
        staged_uri=str(d.get("staged_uri", "")),
        syncd_version=str(d.get("syncd_version", "")),
        settled_at=_ts(d.get("settled_at")),
        settle_delta=int(d.get("settle_delta", 0)),
    )


def _held(held: dict[str, Any]) -> HeldBatch:
    return HeldBatch(
        batch_id=held["batch_id"],
        error=held["error"],
        since=parse_timestamp(held["since"]),
        attempts=int(held["attempts"]),
        next_attempt=_ts(held.get("next_attempt")),
    )


class StatusFile:
    """Reads and writes the daemon's status as JSON at `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, status: DaemonStatus) -> None:
        data = safe_values(_encode(asdict(status)))  # its errors may quote API answers
        write_atomic(self.path, json.dumps(data, indent=1).encode())

    def read(self) -> DaemonStatus | None:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        held = raw.get("held")
        recent = [_record(r) for r in raw.get("recent", [])]
        return DaemonStatus(
            pid=int(raw["pid"]),
            updated_at=parse_timestamp(raw["updated_at"]),
            state=str(raw["state"]),
            detail=str(raw.get("detail", "")),
            sync_point=_ts(raw.get("sync_point")),
            batches_committed=int(raw.get("batches_committed", len(recent))),
            next_ready_at=_ts(raw.get("next_ready_at")),
            held=None if not held else _held(held),
            recent=recent,
            settles_held=[_held(h) for h in raw.get("settles_held", [])],
            unsettled=int(raw.get("unsettled", 0)),
            settle_rows_gained=int(raw.get("settle_rows_gained", 0)),
        )


def pid_alive(pid: int) -> bool:
    """True when a process with this PID exists and has not exited: a zombie (exited, not yet
    reaped by its parent) is gone, though `kill(pid, 0)` still succeeds on it."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, and someone else's
    return _process_state(pid) not in ("Z", "X")


def _process_state(pid: int) -> str | None:
    """The state letter of /proc/<pid>/stat ("R", "S", "Z", ...), None where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ...": comm may hold spaces and parentheses, so split at the last ")"
    fields = stat[stat.rfind(")") + 1 :].split()
    return fields[0] if fields else None
