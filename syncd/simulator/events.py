"""Deterministic synthetic export events, generated one UTC hour at a time.

Every hour's events come from a random stream seeded by (seed, hour) alone, so any window is
the union of its hours filtered on EventStart: the same window always gives the same rows,
and [0h, 1h) + [1h, 2h) == [0h, 2h). Events are grouped into sessions and pages that share
identity and page fields (as real exports do) and carry every documented field where it
applies: absent where it does not, sometimes an empty string, sometimes an explicit null,
sometimes an unknown new field, ids above 2^53, unicode, custom vars of every suffix.

Late arrival (`late_fraction`): each event is late or not by its own roll from (seed, hour),
and an export may be asked to hide the late events of some hours (`hide_late`): those the
simulator says have not arrived yet when the export is made (`syncd.simulator.server`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar

from syncd.simulator import vocabulary
from syncd.timeutil import UTC

HOUR_MS = 3_600_000
_MS = timedelta(milliseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Kinds of bad rows. A malformed row only exists in NDJSON (a JSON array cannot hold one, so
#: array and CSV bodies serve it as a mistyped integer instead).
BAD_MALFORMED = "malformed"
BAD_INT = "mistyped_int"
BAD_TIME = "mistyped_timestamp"
BAD_KINDS: tuple[str, ...] = (BAD_MALFORMED, BAD_INT, BAD_TIME)

#: One event before its own fields are drawn: (EventStart ms << _SEQ_BITS | creation order,
#: page fields, page start ms, session start ms, event type, mobile).
_Skeleton = tuple[int, dict[str, Any], int, int, str, bool]
_SEQ_BITS = 32
#: An event in parts: (EventStart ms, shared page fields, the event's own fields, bad kind).
Parts = tuple[int, dict[str, Any], dict[str, Any], str | None]
_T = TypeVar("_T")


def to_ms(dt: datetime) -> int:
    """Unix milliseconds of an aware datetime, exactly (no float)."""
    return (dt.astimezone(UTC) - _EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def format_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds and a "Z", as exports write timestamps."""
    return from_ms(ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


#: Before every session: the moment returning individuals' UserCreated is counted back from.
_PERSON_EPOCH_MS = 1_700_000_000_000


def _identity(rng: random.Random, indv_id: int, created_before: int) -> dict[str, Any]:
    """The identity fields of individual `indv_id` (and a SessionId), drawn from `rng`."""
    chance = rng.random
    identity: dict[str, Any] = {
        "IndvId": indv_id,
        "UserId": indv_id if chance() < 0.9 else _big_id(rng),
        "SessionId": _big_id(rng),
    }
    if chance() < 0.8:
        identity["UserCreated"] = format_ms(created_before - 1 - _below(chance, 400 * 86_400_000))
    identity["UserAppKey"] = "" if chance() < 0.6 else f"user-{_below(chance, 10**6)}"
    identity["UserDisplayName"] = _pick(chance, vocabulary.NAMES)
    identity["UserEmail"] = "" if chance() < 0.3 else f"u{_below(chance, 10**6)}@example.com"
    return identity


def _big_id(rng: random.Random) -> int:
    """A 16-digit id like the samples', and above 2^53 (up to 2^63) about a third of the time."""
    if rng.random() < 0.35:
        return 2**53 + 1 + rng.getrandbits(62)
    return 10**15 + rng.getrandbits(52)


def _int(chance: Callable[[], float], low: int, high: int) -> int:
    """A fast `random.randint` for small ranges."""
    return low + int(chance() * (high - low + 1))


def _below(chance: Callable[[], float], limit: int) -> int:
    """A fast `random.randrange(limit)` for small limits."""
    return int(chance() * limit)


class EventGenerator:
    """Generates the events of any UTC hour from (seed, hour) alone.

    Two passes per hour keep memory flat: a skeleton (sessions, pages, times, event types) is
    built and sorted by EventStart, then each event's dict is built as it is yielded, so the
    caller can serialize and drop it at once.
    """

    def __init__(
        self,
        *,
        seed: int,
        events_per_hour: int,
        include_mobile: bool = False,
        bad_row_rate: float = 0.0,
        data_start: datetime | None = None,
        new_field: tuple[str, datetime] | None = None,
        late_fraction: float = 0.0,
        returning_individuals: int = 0,
    ) -> None:
        self.seed = seed
        #: >0: sessions belong to this many individuals, who come back across hours (see
        #: SimulatorConfig.returning_individuals); 0: every session is a new individual.
        self.returning_individuals = returning_individuals
        self.late_fraction = late_fraction
        self.events_per_hour = events_per_hour
        self.include_mobile = include_mobile
        self.bad_row_rate = bad_row_rate
        self.data_start_ms = None if data_start is None else to_ms(data_start)
        #: (name, from ms): events from then on carry a field FullStory added (see
        #: SimulatorConfig.new_field_from); its value comes from EventStart, not the random
        #: stream, so every other field of every event stays as without it
        self.new_field = None if new_field is None else (new_field[0], to_ms(new_field[1]))

    def hour_count(self, hour_index: int) -> int:
        """How many events the hour holds: a daily wave around the average, with jitter."""
        rng = random.Random(f"syncd-sim/count/{self.seed}/{hour_index}")
        wave = 1.0 + 0.3 * math.sin(2 * math.pi * ((hour_index % 24) - 9) / 24)
        return max(0, round(self.events_per_hour * wave * (0.9 + 0.2 * rng.random())))

    def window(
        self, start_ms: int, end_ms: int, late_hidden_from: int | None = None
    ) -> Iterator[tuple[int, dict[str, Any], str | None]]:
        """(EventStart ms, event, bad-row kind or None) for every event in [start_ms, end_ms);
        late events of hours from `late_hidden_from` on are left out (not arrived yet)."""
        for hour_index in hour_indexes(start_ms, end_ms):
            hide = late_hidden_from is not None and hour_index >= late_hidden_from
            for t, page, own, bad in self.hour(hour_index, start_ms, end_ms, hide_late=hide):
                yield t, {**page, **own}, bad

    def hour(
        self,
        hour_index: int,
        start_ms: int | None = None,
        end_ms: int | None = None,
        *,
        hide_late: bool = False,
    ) -> Iterator[Parts]:
        """Events of hour `hour_index` (hours since the epoch) in EventStart order, as parts.

        Each event is (EventStart ms, page fields, own fields, bad-row kind or None): the page
        dict is shared by every event of the page (never mutate it), the event is
        `{**page, **own}`. Bounds [start_ms, end_ms) only filter: the stream is the same.
        With `hide_late`, the hour's late events (`late_fraction`) are left out, the others
        are the same.
        """
        hour_ms = hour_index * HOUR_MS
        skeleton = self._skeleton(hour_index)
        rng = random.Random(f"syncd-sim/detail/{self.seed}/{hour_index}")
        bad_roll = random.Random(f"syncd-sim/bad/{self.seed}/{hour_index}").random
        late_roll = random.Random(f"syncd-sim/late/{self.seed}/{hour_index}").random
        late_fraction = self.late_fraction if hide_late else 0.0
        prefix = from_ms(hour_ms).strftime("%Y-%m-%dT%H:")
        rate, kinds = self.bad_row_rate, len(BAD_KINDS)
        low = hour_ms if start_ms is None else max(hour_ms, start_ms)
        if self.data_start_ms is not None:
            low = max(low, self.data_start_ms)
        high = hour_ms + HOUR_MS if end_ms is None else end_ms
        chance = rng.random
        new_field = self.new_field
        for order, page, page_ms, session_ms, event_type, mobile in skeleton:
            t = order >> _SEQ_BITS
            if t >= high:
                return
            within = t - hour_ms
            own: dict[str, Any] = {
                "EventStart": (
                    f"{prefix}{within // 60_000:02d}:{within // 1000 % 60:02d}.{within % 1000:03d}Z"
                ),
                "EventType": event_type,
                "EventPageOffset": t - page_ms,
                "EventSessionOffset": t - session_ms,
            }
            _event_fields(rng, event_type, own, mobile)
            if chance() < 0.01:
                own["EventNewThing"] = _pick(chance, ("beta", "", "新"))
            if new_field is not None and t >= new_field[1]:
                own[new_field[0]] = f"step-{t % 5 + 1}"
            roll, kind = bad_roll(), BAD_KINDS[int(bad_roll() * kinds)]
            late = late_roll() < late_fraction
            if t >= low and not late:
                yield t, page, own, (kind if roll < rate else None)

    def _skeleton(self, hour_index: int) -> list[_Skeleton]:
        """Sessions and pages of the hour, one entry per event, sorted by EventStart."""
        hour_ms = hour_index * HOUR_MS
        count = self.hour_count(hour_index)
        rng = random.Random(f"syncd-sim/events/{self.seed}/{hour_index}")
        out: list[_Skeleton] = []
        while len(out) < count:
            self._session(rng, hour_ms, count - len(out), out)
        out.sort()  # the first item (time, then creation order) is unique
        return out

    def _session(self, rng: random.Random, hour_ms: int, budget: int, out: list[_Skeleton]) -> None:
        """Append one session's events (at most `budget`, all inside the hour) to `out`."""
        hour_end = hour_ms + HOUR_MS
        chance = rng.random
        session_ms = hour_ms + _below(chance, HOUR_MS - 60_000)
        if self.returning_individuals:
            # who the individual is comes from their number alone: the same in every hour
            number = _below(chance, self.returning_individuals)
            person = random.Random(f"syncd-sim/person/{self.seed}/{number}")
            identity = _identity(person, _big_id(person), _PERSON_EPOCH_MS)
            identity["SessionId"] = _big_id(rng)
            mobile = self.include_mobile and chance() < 0.25
        else:
            indv_id = _big_id(rng)
            mobile = self.include_mobile and chance() < 0.25
            identity = _identity(rng, indv_id, session_ms)
        session_start = format_ms(session_ms)
        page_ms = session_ms
        for _ in range(_int(chance, 1, 4)):
            if page_ms >= hour_end or budget <= 0:
                return
            count = min(budget, _int(chance, 3, 30))
            base = dict(identity)
            base["PageId"] = _big_id(rng)
            base["SessionStart"] = session_start
            base["PageStart"] = format_ms(page_ms)
            base.update(_page_fields(rng, mobile, count))
            names, cum = (
                (vocabulary.MOBILE_NAMES, vocabulary.MOBILE_CUM)
                if mobile
                else (vocabulary.WEB_NAMES, vocabulary.WEB_CUM)
            )
            types = rng.choices(names, cum_weights=cum, k=count)
            if not mobile:
                types[0] = "navigate"
            t = page_ms
            for event_type in types:
                if t >= hour_end:
                    break
                out.append(
                    ((t << _SEQ_BITS) | len(out), base, page_ms, session_ms, event_type, mobile)
                )
                budget -= 1
                t += 13 + int(chance() * 9_000)
            page_ms = t + _int(chance, 5_000, 240_000)


def _pick(chance: Callable[[], float], options: tuple[_T, ...]) -> _T:
    """A fast `random.choice` for the per-event path."""
    return options[int(chance() * len(options))]


def _page_fields(rng: random.Random, mobile: bool, count: int) -> dict[str, Any]:
    """The fields every event of one page shares."""
    chance = rng.random
    page: dict[str, Any] = {}
    roll = chance()
    if roll < 0.05:
        page["PageName"] = None
    elif roll < 0.6:
        page["PageName"] = _pick(chance, vocabulary.PAGE_NAMES)
    if mobile:
        app, package, model, vendor, platform, os_version = _pick(chance, vocabulary.APPS)
        page.update(
            AppName=app,
            AppPackageName=package,
            AppDeviceModel=model,
            AppDeviceVendor=vendor,
            AppVersion=f"{_int(chance, 1, 5)}.{_int(chance, 0, 20)}.{_int(chance, 0, 9)}",
            AppOsVersion=os_version,
            AppViewName=_pick(chance, vocabulary.APP_VIEWS),
            PageDevice="Mobile",
            PagePlatform=platform,
            PageOperatingSystem="Android" if platform == "Android" else "iOS",
        )
    else:
        domain = _pick(chance, vocabulary.DOMAINS)
        agent, browser, version, device, platform, system = _pick(chance, vocabulary.AGENTS)
        page.update(
            PageUrl=f"https://{domain}{_pick(chance, vocabulary.PATHS)}",
            PageRefererUrl="" if chance() < 0.2 else f"https://{domain}/",
            PageUserAgent=agent,
            PageBrowser=browser,
            PageBrowserVersion=version,
            PageDevice=device,
            PagePlatform=platform,
            PageOperatingSystem=system,
        )
    page["PageIp"] = "" if chance() < 0.3 else f"203.0.113.{_int(chance, 1, 254)}"
    page["PageLatLong"] = _pick(chance, vocabulary.LATLONG)
    duration = _int(chance, 1_000, 600_000)
    width, height = _pick(chance, ((1920, 1080), (1440, 900), (390, 844), (412, 915)))
    page.update(
        PageDuration=duration,
        PageActiveDuration=_int(chance, 0, duration),
        PageScreenWidth=width,
        PageScreenHeight=height,
        PageViewportWidth=width - _pick(chance, (0, 15)),
        PageViewportHeight=height - _pick(chance, (0, 120)),
        PageNumEvents=count,
        PageNumDerivedEvents=_int(chance, 0, count),
        PageNumInfos=_int(chance, 0, 5),
        PageNumWarnings=_int(chance, 0, 4),
        PageNumErrors=_int(chance, 0, 3),
    )
    if chance() < 0.97:
        page["PageClusterId"] = _int(chance, 1, 2_000)
    page["PageMaxScrollDepthPercent"] = _int(chance, 0, 100)
    if chance() < 0.3:
        page["page_flag_bool"] = chance() < 0.5
        page["page_section_str"] = _pick(chance, ("shop", "ブログ", "", "help"))
    return page


def _event_fields(rng: random.Random, event_type: str, event: dict[str, Any], mobile: bool) -> None:
    """Add the fields that apply to this kind of event (and only those)."""
    chance = rng.random
    if event_type in ("click", "change", "seen", "copy"):
        event["EventTargetText"] = _pick(chance, vocabulary.TEXTS)
        event["EventTargetSelector"] = _pick(chance, vocabulary.SELECTORS)
        if event_type == "click":
            roll = chance()
            if roll < 0.05:
                event["EventModFrustrated"] = 3 + int(chance() * 7)
            elif roll < 0.13:
                event["EventModDead"] = 1
            elif roll < 0.16:
                event["EventModError"] = 1
            elif roll < 0.17:
                event["EventModSuspicious"] = 1
    elif event_type == "navigate":
        if chance() < 0.3:
            event["EventSubType"] = _pick(chance, ("pushState", "hashchange", "popstate"))
    elif event_type == "load":
        dom = 100 + int(chance() * 3_900)
        event["LoadDomContentTime"] = dom
        event["LoadFirstPaintTime"] = dom + int(chance() * 500)
        event["LoadEventTime"] = dom + 100 + int(chance() * 2_900)
        if chance() < 0.7:
            event["LoadLargestPaintTime"] = dom + 50 + int(chance() * 2_450)
        if chance() < 0.4:
            event["EventFirstInputDelay"] = 1 + int(chance() * 300)
    elif event_type == "custom":
        _custom_event(rng, event)
    elif event_type in ("custom_error", "click_error", "console_message"):
        event["EventVarErrorKind"] = _pick(chance, vocabulary.ERROR_KINDS)
        if not mobile:
            event["EventWebSourceFileUrl"] = "https://cdn.example.com/app.min.js"
        if event_type == "custom_error":
            event["EventCustomName"] = "Checkout Error"
            event["evt_code_str"] = _pick(chance, ("OOS-134B", "AC10XY2"))
    elif event_type == "uservar":
        _user_vars(rng, event)
    elif event_type == "cumulative_layout_shift":
        event["EventCumulativeLayoutShift"] = round(chance() * 0.5, 4)
    elif event_type == "request":
        event["ReqUrl"] = _pick(chance, vocabulary.REQ_URLS)
        event["ReqMethod"] = _pick(chance, vocabulary.REQ_METHODS)
        event["ReqStatus"] = _pick(chance, vocabulary.REQ_STATUS)
    elif event_type == "crashed":
        event["EventMobileSourceFile"] = "CheckoutFragment.kt:212"


def _custom_event(rng: random.Random, event: dict[str, Any]) -> None:
    name = rng.choice(vocabulary.CUSTOM_EVENTS)
    event["EventCustomName"] = name
    if name == "Order Completed":
        total = rng.randint(1, 500)
        # A `_real` value sometimes arrives as a JSON integer.
        event["evt_order.total_real"] = total if rng.random() < 0.3 else total + 0.54
        event["evt_order.items_real"] = rng.randint(1, 9)
        event["evt_order.order_id_str"] = f"o{rng.randrange(16**8):08x}"
        event["evt_tags_strs"] = rng.sample(vocabulary.TAGS, rng.randint(0, 3))
        event["evt_gift_bool"] = rng.random() < 0.2
    elif name == "Product Added":
        event["evt_price_real"] = round(rng.uniform(0.5, 99.0), 2)
        event["evt_product_id_str"] = f"p{rng.randrange(10**6)}"
        event["evt_name_str"] = rng.choice(("Bluebs", "りんご", "Ägg 🥚", "", None))
        event["evt_quantity_int"] = rng.randint(1, 12)
    elif name == "Signed Up":
        event["evt_signup_date"] = format_ms(rng.randrange(1_500_000_000_000, 1_800_000_000_000))
    else:
        event["evt_message_str"] = rng.choice(("The product is out of stock", "نفد المخزون"))


def _user_vars(rng: random.Random, event: dict[str, Any]) -> None:
    user_vars: dict[str, Any] = {
        "user_plan_str": None if rng.random() < 0.1 else rng.choice(vocabulary.PLANS),
        "user_age_int": rng.randint(16, 90),
        "user_vip_bool": rng.random() < 0.1,
        "user_signup_date": format_ms(rng.randrange(1_500_000_000_000, 1_800_000_000_000)),
    }
    if rng.random() < 0.5:
        user_vars["user_score_real"] = round(rng.uniform(0, 100), 3)
    event["EventVarFields"] = ",".join(user_vars)
    event.update(user_vars)


def hour_indexes(start_ms: int, end_ms: int) -> range:
    """Indexes of the UTC hours that overlap [start_ms, end_ms)."""
    if end_ms <= start_ms:
        return range(0)
    return range(start_ms // HOUR_MS, (end_ms - 1) // HOUR_MS + 1)
