"""Export bodies: rows of a window rendered as JSON, NDJSON or CSV, gzipped, and cached.

One code path renders rows for both the HTTP server and the test helpers
(`Simulator.served_rows`, `Simulator.expected_events`), so what the tests expect is exactly
what the server sends.
"""

from __future__ import annotations

import csv
import io
import threading
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from syncd.fields import EXPORT_FIELDS, MOBILE_FIELDS
from syncd.simulator.events import BAD_INT, BAD_MALFORMED, EventGenerator, hour_indexes
from syncd.simulator.people import INDIVIDUAL_FIELDS, individual_rows
from syncd.simulator.shape import FieldSelector, corrupt, legacy_shape, select_fields

FORMAT_JSON = "FORMAT_JSON"
FORMAT_NDJSON = "FORMAT_NDJSON"
FORMAT_CSV = "FORMAT_CSV"
FORMATS: tuple[str, ...] = (FORMAT_JSON, FORMAT_NDJSON, FORMAT_CSV)

_CHUNK_BYTES = 8 << 20  # large chunks: fewer GIL hand-offs with the compressor thread
_COMPRESS_BACKLOG = 3  # chunks queued for the compressor thread


@dataclass(frozen=True)
class ExportSpec:
    """Everything that decides an export body; equal specs give byte-identical bodies."""

    start_ms: int
    end_ms: int
    format: str = FORMAT_NDJSON
    fields: tuple[str, ...] | None = None
    legacy: bool = False
    #: Late events of hours from this one on have not arrived yet (late-arrival mode).
    late_hidden_from: int | None = None
    #: An individuals export (TYPE_INDIVIDUAL): one row per person, see `people`.
    individuals: bool = False


@dataclass(frozen=True)
class ServedRow:
    """One row as served: its bytes, what a parser reads from them, and why it is bad if it is.

    `event` is None for a malformed row; for a CSV row it maps column to cell text.
    """

    raw: bytes
    event: dict[str, Any] | None
    bad: str | None


class Cancelled(Exception):
    """A body build stopped because the simulator is shutting down."""


def csv_columns(spec: ExportSpec, include_mobile: bool) -> list[str]:
    """The CSV header: the requested non-wildcard fields, or the whole catalog."""
    if spec.fields is not None:
        return FieldSelector(list(spec.fields)).columns
    if spec.individuals:
        return list(INDIVIDUAL_FIELDS)
    names = [c.name for c in EXPORT_FIELDS]
    if include_mobile:
        names.extend(c.name for c in MOBILE_FIELDS)
    return names


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _shaper(spec: ExportSpec) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Legacy renames and field selection, for whole events or for their parts alike."""
    selector = FieldSelector(list(spec.fields)) if spec.fields is not None else None

    def shape(event: dict[str, Any]) -> dict[str, Any]:
        if spec.legacy:
            event = legacy_shape(event)
        return event if selector is None else select_fields(event, selector)

    return shape


def _spoil(event: dict[str, Any], bad: str, ndjson: bool) -> tuple[dict[str, Any], str | None]:
    """A bad row as served, and its reason (None when the damaged field was not exported).

    A malformed row stays malformed only in NDJSON; array and CSV bodies serve it mistyped.
    """
    if bad == BAD_MALFORMED and ndjson:
        return event, BAD_MALFORMED
    mistyped = corrupt(event, BAD_INT if bad == BAD_MALFORMED else bad)
    return (event, None) if mistyped is None else mistyped


def _shaped(
    generator: EventGenerator, spec: ExportSpec
) -> Iterator[tuple[int, dict[str, Any], str | None]]:
    """Whole events of the window as served, with their bad reasons."""
    shape = _shaper(spec)
    if spec.individuals:
        for row in individual_rows(generator, spec.start_ms, spec.end_ms, spec.late_hidden_from):
            yield spec.start_ms, shape(row), None
        return
    ndjson = spec.format == FORMAT_NDJSON
    for t, event, bad in generator.window(spec.start_ms, spec.end_ms, spec.late_hidden_from):
        if bad is None:
            yield t, shape(event), None
        else:
            spoiled, reason = _spoil(shape(event), bad, ndjson)
            yield t, spoiled, reason


def _malformed(raw: bytes) -> bytes:
    """The row cut at a comma before its middle: valid UTF-8, never valid JSON."""
    cut = raw.rfind(b",", 0, len(raw) // 2)
    return raw[: max(cut, 1)]


def iter_json_rows(
    generator: EventGenerator, spec: ExportSpec
) -> Iterator[tuple[int, bytes, str | None]]:
    """(EventStart ms, row bytes, bad reason) for a JSON or NDJSON body, in order.

    The page fields every event of a page shares are serialized once per page and joined
    with each event's own fields: the same bytes as serializing the whole event, faster.
    """
    shape = _shaper(spec)
    ndjson = spec.format == FORMAT_NDJSON
    dumps = orjson.dumps
    if spec.individuals:
        for t, row, _ in _shaped(generator, spec):
            yield t, dumps(row), None
        return
    for hour_index in hour_indexes(spec.start_ms, spec.end_ms):
        pages: dict[int, tuple[dict[str, Any], bytes]] = {}  # id(page) -> (page, its JSON)
        hide = spec.late_hidden_from is not None and hour_index >= spec.late_hidden_from
        for t, page, own, bad in generator.hour(
            hour_index, spec.start_ms, spec.end_ms, hide_late=hide
        ):
            if bad is not None:
                event, reason = _spoil(shape({**page, **own}), bad, ndjson)
                raw = dumps(event)
                yield t, (_malformed(raw) if reason == BAD_MALFORMED else raw), reason
                continue
            known = pages.get(id(page))
            if known is None:
                known = pages[id(page)] = (page, dumps(shape(page))[1:-1])
            head, tail = known[1], dumps(shape(own))
            if not head:
                yield t, tail, None
            elif len(tail) == 2:  # {}
                yield t, b"{" + head + b"}", None
            else:
                yield t, b"{" + head + b"," + tail[1:], None


def iter_csv_rows(
    generator: EventGenerator, spec: ExportSpec, columns: list[str]
) -> Iterator[tuple[int, list[str], str | None]]:
    """(EventStart ms, cells, bad reason) for a CSV body; custom vars are not exported to CSV."""
    for t, event, bad in _shaped(generator, spec):
        yield t, [_csv_cell(event.get(column)) for column in columns], bad


def served_rows(generator: EventGenerator, spec: ExportSpec) -> list[ServedRow]:
    """Every row of the body `spec` describes, parsed the way a client would parse it."""
    if spec.format == FORMAT_CSV:
        columns = csv_columns(spec, generator.include_mobile)
        rows = []
        for _, cells, bad in iter_csv_rows(generator, spec, columns):
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerow(cells)
            rows.append(
                ServedRow(text.getvalue().encode(), dict(zip(columns, cells, strict=True)), bad)
            )
        return rows
    return [
        ServedRow(raw, None if bad == BAD_MALFORMED else orjson.loads(raw), bad)
        for _, raw, bad in iter_json_rows(generator, spec)
    ]


def _plain_chunks(
    generator: EventGenerator, spec: ExportSpec, progress: Callable[[float], None]
) -> Iterator[bytes]:
    """The uncompressed body in chunks of about a megabyte, reporting progress by EventStart."""
    span = max(1, spec.end_ms - spec.start_ms)

    def report(t: int) -> None:
        progress(min(0.99, (t - spec.start_ms) / span))

    if spec.format == FORMAT_CSV:
        columns = csv_columns(spec, generator.include_mobile)
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(columns)
        for t, cells, _ in iter_csv_rows(generator, spec, columns):
            writer.writerow(cells)
            if text.tell() >= _CHUNK_BYTES:
                yield text.getvalue().encode()
                report(t)
                text = io.StringIO()
                writer = csv.writer(text, lineterminator="\n")
        yield text.getvalue().encode()
        return
    array = spec.format == FORMAT_JSON
    buf = bytearray(b"[" if array else b"")
    first = True
    for t, raw, _ in iter_json_rows(generator, spec):
        if array:
            if not first:
                buf += b",\n"
            buf += raw
            first = False
        else:
            buf += raw
            buf += b"\n"
        if len(buf) >= _CHUNK_BYTES:
            yield bytes(buf)
            report(t)
            buf = bytearray()
    if array:
        buf += b"]"
    yield bytes(buf)


def render_gzip(
    generator: EventGenerator,
    spec: ExportSpec,
    *,
    level: int,
    member_bytes: int = 0,
    progress: Callable[[float], None] | None = None,
    cancelled: threading.Event | None = None,
) -> bytes:
    """The gzipped body of `spec`: one gzip member, compressed on a second thread; with
    `member_bytes`, a new member at the first row end past every `member_bytes` of text, as
    a server that flushes a member per block of rows sends it.

    zlib releases the GIL while it compresses, so generating the next chunk overlaps with
    compressing the last one.
    """
    report = progress or (lambda _fraction: None)
    chunks = _plain_chunks(generator, spec, report)
    if member_bytes > 0:
        body = _members(chunks, level, member_bytes, cancelled)
        report(1.0)
        return body
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    parts: list[bytes] = []
    pending: deque[Future[bytes]] = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sim-gzip") as pool:
        for chunk in chunks:
            if cancelled is not None and cancelled.is_set():
                raise Cancelled
            pending.append(pool.submit(compressor.compress, chunk))
            while len(pending) > _COMPRESS_BACKLOG:
                parts.append(pending.popleft().result())
        while pending:
            parts.append(pending.popleft().result())
    parts.append(compressor.flush())
    report(1.0)
    return b"".join(parts)


def _members(
    chunks: Iterator[bytes], level: int, member_bytes: int, cancelled: threading.Event | None
) -> bytes:
    """The text of `chunks` as gzip members, each ended at the first row end past
    `member_bytes` of text (the last one shorter)."""
    parts: list[bytes] = []
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    used = 0
    for chunk in chunks:
        if cancelled is not None and cancelled.is_set():
            raise Cancelled
        pos = 0
        while pos < len(chunk):
            cut = chunk.find(b"\n", pos + max(member_bytes - used, 1) - 1)
            if cut < 0:
                parts.append(compressor.compress(chunk[pos:]))
                used += len(chunk) - pos
                break
            parts.append(compressor.compress(chunk[pos : cut + 1]))
            parts.append(compressor.flush())
            compressor, used, pos = zlib.compressobj(level, zlib.DEFLATED, 31), 0, cut + 1
    parts.append(compressor.flush())
    return b"".join(parts)


class BodyCache:
    """Finished bodies by spec, least recently used evicted past `max_bytes`; one build per spec.

    Concurrent requests for a spec being built wait for that build instead of starting another.
    """

    def __init__(
        self, build: Callable[[ExportSpec, Callable[[float], None]], bytes], max_bytes: int
    ):
        self._build = build
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._bodies: OrderedDict[ExportSpec, bytes] = OrderedDict()
        self._size = 0
        self._building: dict[ExportSpec, Future[bytes]] = {}
        self._progress: dict[ExportSpec, float] = {}

    def get(self, spec: ExportSpec) -> bytes:
        """The body of `spec`, built now if it is not cached (or being built)."""
        with self._lock:
            body = self._bodies.get(spec)
            if body is not None:
                self._bodies.move_to_end(spec)
                return body
            future = self._building.get(spec)
            owner = future is None
            if future is None:
                future = self._building[spec] = Future()
                self._progress[spec] = 0.0
        if not owner:
            return future.result()
        try:
            body = self._build(spec, lambda fraction: self._set_progress(spec, fraction))
        except BaseException as exc:
            with self._lock:
                del self._building[spec]
                self._progress.pop(spec, None)
            future.set_exception(exc)
            raise
        with self._lock:
            del self._building[spec]
            self._progress[spec] = 1.0
            self._store(spec, body)
        future.set_result(body)
        return body

    def progress(self, spec: ExportSpec) -> float:
        """How far the build of `spec` has come: 0.0 to 1.0 (1.0 once cached)."""
        with self._lock:
            if spec in self._bodies:
                return 1.0
            return self._progress.get(spec, 0.0)

    def _set_progress(self, spec: ExportSpec, fraction: float) -> None:
        with self._lock:
            self._progress[spec] = fraction

    def _store(self, spec: ExportSpec, body: bytes) -> None:
        self._bodies[spec] = body
        self._size += len(body)
        while self._size > self._max_bytes and len(self._bodies) > 1:
            old_spec, old = self._bodies.popitem(last=False)
            self._size -= len(old)
            self._progress.pop(old_spec, None)
