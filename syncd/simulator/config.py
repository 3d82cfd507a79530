"""Settings of the export-API simulator: volume, timing, limits and data quirks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from syncd.errors import ConfigError
from syncd.timeutil import utcnow

DEFAULT_API_KEY = "sim-key"
DEFAULT_EVENTS_PER_HOUR = 600
DEFAULT_SIGNED_URL_TTL = 300.0  # the real signed URL lives about 5 minutes
DEFAULT_EXPORT_TTL = 7 * 86_400.0  # finished exports stay available about 7 days
DEFAULT_LEGACY_BUNDLE_HOURS = 24
DEFAULT_LEGACY_DOWNLOADS_PER_MINUTE = 2  # the documented legacy limit
DEFAULT_GZIP_LEVEL = 1  # fast: the simulator must serve millions of events
DEFAULT_CACHE_BYTES = 512 * 2**20
#: The field `new_field_from` makes FullStory "add": in no catalog, a string such as "step-3".
NEW_FIELD_NAME = "NewFieldCheckoutStep"


@dataclass
class SimulatorConfig:
    """What the simulated FullStory account looks like and how its API behaves.

    `clock` is "now" for everything time-based (operation latency, signed URL expiry, the
    rate limiters, which legacy bundles are complete), so tests can drive time by hand.
    """

    api_key: str = field(default=DEFAULT_API_KEY, repr=False)
    events_per_hour: int = DEFAULT_EVENTS_PER_HOUR
    seed: int = 1
    operation_latency: float = 0.0
    signed_url_ttl: float = DEFAULT_SIGNED_URL_TTL
    legacy_bundle_hours: int = DEFAULT_LEGACY_BUNDLE_HOURS
    include_mobile: bool = False
    bad_row_rate: float = 0.0
    rate_limit_per_second: float | None = None
    legacy_downloads_per_minute: int | None = DEFAULT_LEGACY_DOWNLOADS_PER_MINUTE
    clock: Callable[[], datetime] = utcnow
    #: No events exist before this instant (and no legacy bundle starts before it).
    data_start: datetime | None = None
    export_ttl: float = DEFAULT_EXPORT_TTL
    gzip_level: int = DEFAULT_GZIP_LEVEL
    #: >0: export bodies are several gzip members, a new one at the first row end past every
    #: this many bytes of text (as a server that flushes a member per block of rows sends
    #: them); 0: one member.
    gzip_member_bytes: int = 0
    #: Compressed export bodies kept for repeated downloads (least recently used go first).
    cache_bytes: int = DEFAULT_CACHE_BYTES
    #: From this instant on (by EventStart), every event carries `new_field_name`: a field
    #: FullStory added mid-way. Exports of every field (`fields` omitted) serve it; a field
    #: list serves it only if it names it. None: no such field.
    new_field_from: datetime | None = None
    new_field_name: str = NEW_FIELD_NAME
    #: Late arrival: this fraction of each hour's events (chosen by seed) is only in exports
    #: created `late_after` or more after the end of the event's hour; 0 turns it off.
    late_fraction: float = 0.0
    late_after: timedelta = timedelta(hours=6)
    #: Operation and export ids with "+", "/" and "==" that a client must URL-quote (for
    #: testing a client's quoting); False: URL-safe ids, usable unencoded in a path.
    hostile_ids: bool = False
    #: >0: every session belongs to one of this many individuals (the same identity fields in
    #: every hour), so individuals come back across windows with newer user vars; 0: each
    #: session is a new individual.
    returning_individuals: int = 0

    def __post_init__(self) -> None:
        problems = []
        if not self.api_key:
            problems.append("api_key must not be empty")
        if self.events_per_hour < 0:
            problems.append("events_per_hour must be >= 0")
        if self.operation_latency < 0:
            problems.append("operation_latency must be >= 0 seconds")
        if self.signed_url_ttl <= 0:
            problems.append("signed_url_ttl must be > 0 seconds")
        if self.legacy_bundle_hours < 1 or 24 % self.legacy_bundle_hours:
            problems.append("legacy_bundle_hours must divide 24 (1, 2, 3, 4, 6, 8, 12 or 24)")
        if not 0.0 <= self.bad_row_rate <= 1.0:
            problems.append("bad_row_rate must be between 0 and 1")
        if self.rate_limit_per_second is not None and self.rate_limit_per_second <= 0:
            problems.append("rate_limit_per_second must be > 0 (or None for no limit)")
        if self.legacy_downloads_per_minute is not None and self.legacy_downloads_per_minute < 1:
            problems.append("legacy_downloads_per_minute must be >= 1 (or None for no limit)")
        if self.data_start is not None and self.data_start.tzinfo is None:
            problems.append("data_start must be timezone-aware (UTC)")
        if self.new_field_from is not None and self.new_field_from.tzinfo is None:
            problems.append("new_field_from must be timezone-aware (UTC)")
        if not self.new_field_name:
            problems.append("new_field_name must not be empty")
        if not 0.0 <= self.late_fraction <= 1.0:
            problems.append("late_fraction must be between 0 and 1")
        if self.late_after < timedelta(0):
            problems.append("late_after must be >= 0")
        if not 0 <= self.gzip_level <= 9:
            problems.append("gzip_level must be 0..9")
        if self.gzip_member_bytes < 0:
            problems.append("gzip_member_bytes must be >= 0 (0: one member)")
        if problems:
            raise ConfigError(problems)
