"""Thread-safe counters of what the simulator served, for tests and the benchmark to assert on."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from syncd.simulator.faults import Endpoint, Fault, FiredFault


@dataclass
class SimulatorStats:
    """Counters updated by the server threads; read them directly or take a `snapshot()`.

    `exports_by_window` counts export creations per (start, end) window: a client that
    re-exports a window after a restart shows up as a count above 1. `download_times` and
    `legacy_download_times` hold the clock time each download started, for rate-limit checks.
    """

    exports_created: int = 0
    operations_polled: int = 0
    results_fetched: int = 0
    downloads_started: int = 0
    downloads_completed: int = 0
    legacy_lists: int = 0
    legacy_downloads: int = 0
    legacy_downloads_completed: int = 0
    rate_limited: int = 0
    bodies_built: int = 0  # export and bundle bodies rendered (repeats come from the cache)
    bytes_sent: int = 0
    requests_by_status: Counter[int] = field(default_factory=Counter)
    requests_by_endpoint: Counter[Endpoint] = field(default_factory=Counter)
    exports_by_window: Counter[tuple[datetime, datetime]] = field(default_factory=Counter)
    faults_fired: Counter[Fault] = field(default_factory=Counter)
    download_times: list[datetime] = field(default_factory=list)
    legacy_download_times: list[datetime] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, counter: str, amount: int = 1) -> None:
        """Add to one of the integer counters, by attribute name."""
        with self._lock:
            setattr(self, counter, getattr(self, counter) + amount)

    def record_request(self, endpoint: Endpoint | None, status: int) -> None:
        with self._lock:
            self.requests_by_status[status] += 1
            if endpoint is not None:
                self.requests_by_endpoint[endpoint] += 1
            if status == 429:
                self.rate_limited += 1

    def record_export(self, start: datetime, end: datetime) -> None:
        with self._lock:
            self.exports_created += 1
            self.exports_by_window[(start, end)] += 1

    def record_download(self, at: datetime, *, legacy: bool) -> None:
        with self._lock:
            if legacy:
                self.legacy_downloads += 1
                self.legacy_download_times.append(at)
            else:
                self.downloads_started += 1
                self.download_times.append(at)

    def record_fault(self, fired: FiredFault) -> None:
        with self._lock:
            self.faults_fired[fired.kind] += 1

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of every counter (containers copied)."""
        with self._lock:
            return {
                name: (value.copy() if isinstance(value, (Counter, list)) else value)
                for name, value in vars(self).items()
                if not name.startswith("_")
            }
