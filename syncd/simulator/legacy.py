"""Legacy Data Export bundles: fixed-length blocks of time with ids above 2^53.

Bundles tile time from the epoch in `bundle_hours` steps (a divisor of 24, so they tile each
UTC day). Bundle `index` covers [index * length, (index + 1) * length) and has the id
ID_BASE + index: an integer a float cannot hold exactly, as real bundle ids can be.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from syncd.batch import Bundle
from syncd.timeutil import UTC

ID_BASE = 2**60
PAGE_SIZE = 20  # the list endpoint answers at most 20 bundles per call
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def bundle_json(bundle: Bundle) -> dict[str, int]:
    """As the list endpoint shows a bundle: Id, Start and Stop in unix seconds."""
    return {
        "Id": bundle.id,
        "Start": int((bundle.start - _EPOCH).total_seconds()),
        "Stop": int((bundle.stop - _EPOCH).total_seconds()),
    }


class BundleCalendar:
    """Which bundles exist: complete (Stop <= now) and not before the account's data start."""

    def __init__(self, bundle_hours: int, data_start: datetime | None) -> None:
        self.length = timedelta(hours=bundle_hours)
        self._length_s = bundle_hours * 3600
        self._first_index = 0
        if data_start is not None:
            self._first_index = max(0, -(-(data_start - _EPOCH) // self.length))

    def bundle(self, index: int) -> Bundle:
        start = _EPOCH + timedelta(seconds=index * self._length_s)
        return Bundle(ID_BASE + index, start, start + self.length)

    def by_id(self, bundle_id: int, now: datetime) -> Bundle | None:
        """The complete bundle with this id, or None."""
        index = bundle_id - ID_BASE
        if index < self._first_index:
            return None
        bundle = self.bundle(index)
        return bundle if bundle.stop <= now else None

    def after(self, start_unix: int, now: datetime, limit: int = PAGE_SIZE) -> list[Bundle]:
        """Up to `limit` complete bundles whose Stop is after `start_unix`, oldest first."""
        # The bundle holding `start_unix` is the first whose Stop lies after it.
        index = max(self._first_index, start_unix // self._length_s)
        out: list[Bundle] = []
        for bundle in self._from(index):
            if bundle.stop > now or len(out) == limit:
                break
            out.append(bundle)
        return out

    def within(self, start: datetime, end: datetime, now: datetime) -> list[Bundle]:
        """Complete bundles lying wholly inside [start, end)."""
        index = max(self._first_index, -(-(start - _EPOCH) // self.length))
        out: list[Bundle] = []
        for bundle in self._from(index):
            if bundle.stop > end or bundle.stop > now:
                break
            out.append(bundle)
        return out

    def _from(self, index: int) -> Iterator[Bundle]:
        while True:
            yield self.bundle(index)
            index += 1
