"""Streaming the rows out of a spooled export download, with memory that does not grow with it.

The download is gzip (sniffed by its magic bytes, since proxies may already have inflated it)
or plain, and holds NDJSON (first non-blank byte "{") or one JSON array (first byte "[").

- NDJSON is read line by line; a line that is not JSON becomes a row with an `error`, to be
  quarantined, and the rest of the file still loads.
- An array is read line by line too while every line holds exactly one element (the layout
  FullStory writes). At the first line that does not, the file is parsed again from the start
  with ijson (yajl2_c), skipping the elements already given: any layout gives the same rows.
  yajl2_c mishandles lone surrogate escapes (a lone low one fails the parse, a lone high one
  becomes "?"), so once the text it is fed holds one, the rest of the array is parsed by
  ijson's exact pure-Python backend instead, and lone surrogates become U+FFFD as on every
  other path. An array is one JSON document, so damage inside it fails the whole file.

A damaged gzip stream, a file that is neither layout, or an invalid array raise TransformError:
never a short batch. Invalid UTF-8 is decoded with U+FFFD and raw NUL bytes inside strings
become U+FFFD (rows load). Blank lines are not rows; `position` counts rows from 0.
"""

from __future__ import annotations

import codecs
import gzip
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple, Protocol

import ijson
import orjson

from syncd.errors import TransformError
from syncd.transform.convert import REPLACEMENT, clean_value, dump_json

Layout = Literal["ndjson", "array", "empty"]

GZIP_MAGIC = b"\x1f\x8b"
#: An array line longer than this sends the file to the streaming parser (a one-line array).
ARRAY_LINE_LIMIT = 1 << 20
#: An NDJSON row longer than this is quarantined without being parsed.
MAX_ROW_BYTES = 16 << 20
#: How much of a row's text a quarantine record keeps.
RAW_LIMIT = 64 << 10

_JSON_WHITESPACE = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"
_COMMA, _CLOSE = ord(","), ord("]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]", re.ASCII)
#: A surrogate escape that is not half of a pair: a high one not followed by a low one, or a
#: low one not preceded by a high one. An escaped backslash before "u" may match too, which only
#: costs speed (the exact parser gives the same rows).
_LONE_SURROGATE_ESCAPE = re.compile(
    r"\\u[dD](?:(?P<high>[89abAB])[0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|[c-fC-F][0-9a-fA-F]{2}(?<!\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}))",
    re.ASCII,
)
#: What may follow a high surrogate escape at the end of a read when the low one that pairs
#: it comes with the next read.
_LOW_ESCAPE_START = re.compile(r"(\\(u([dD]([c-fC-F][0-9a-fA-F]{0,2})?)?)?)?", re.ASCII)
#: How much of the previous read the lone-surrogate check looks back into: one escape pair.
_ESCAPE_PAIR_CHARS = 12
#: A surrogate code point in a parsed string: a lone one (pairs decode to one character).
_SURROGATE_CHAR = re.compile("[\ud800-\udfff]")
_STREAM_READ = 1 << 16
# Array line states: after "[", after ",", after an element with no separator on its line, done.
_OPEN, _NEED_ELEMENT, _AFTER_ELEMENT, _CLOSED = range(4)


class ExportRow(NamedTuple):
    """One row of the file, parsed or not."""

    position: int  # 0-based row position in the file
    value: Any  # the parsed JSON value (None when `error` is set)
    raw: bytes | None  # the row's text; None when the streaming parser produced `value`
    error: str  # why the row's text is not JSON; "" when it parsed
    exact: bool  # True when numbers are exact (orjson rounds integers beyond 64 bits)


class _ByteStream(Protocol):
    """What the reader needs of a (decompressing) file: gzip.GzipFile and io.BufferedReader."""

    def read(self, size: int = -1, /) -> bytes: ...

    def readline(self, size: int = -1, /) -> bytes: ...

    def peek(self, size: int, /) -> bytes: ...

    def close(self) -> None: ...


class _Unparsed(Exception):
    """A row's text is not JSON."""


def _finite_float(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"number {text} is out of range")
    return number


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


_EXACT_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_no_constant)


def parse_exact(text: bytes) -> Any:
    """Parse a row with exact integers, invalid UTF-8 and raw NUL replaced by U+FFFD.

    The slow, forgiving twin of orjson.loads: used when orjson refuses a row or may have
    rounded a number. Raises ValueError when the text is not JSON even so.
    """
    decoded = text.decode("utf-8", "replace")
    if "\x00" in decoded:
        decoded = decoded.replace("\x00", REPLACEMENT)
    try:
        value = _EXACT_DECODER.decode(decoded)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if _SURROGATE_ESCAPE.search(decoded):
        value = clean_value(value)
    return value


def _parse(text: bytes) -> tuple[Any, bool]:
    """(value, exact) from orjson, or from `parse_exact` when orjson refuses the text."""
    try:
        return orjson.loads(text), False
    except orjson.JSONDecodeError as exc:
        try:
            return parse_exact(text), True
        except ValueError:
            raise _Unparsed(str(exc)) from None


def _holds_surrogate(value: Any) -> bool:
    """Whether a string anywhere in `value` (keys too) holds a lone surrogate."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE_CHAR.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def row_text(row: ExportRow) -> bytes:
    """The row's text for a quarantine record (re-serialised when the streaming parser read it)."""
    if row.raw is not None:
        return row.raw
    return dump_json(row.value).encode()


class _CleanStream:
    """A byte stream for ijson: BOM dropped, invalid UTF-8 and NUL turned into U+FFFD.

    `lone_surrogate` turns True in the read that completes the first lone surrogate escape:
    an element parsed entirely from earlier reads holds none. A high surrogate escape that
    ends a read and may be paired by the next one is decided with the next read (its string,
    and so its element, cannot end before).
    """

    def __init__(self, stream: _ByteStream) -> None:
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")("replace")
        self.lone_surrogate = False
        self._tail = ""  # the end of the text read so far, for escapes across two reads
        self._tail_at = 0  # where the tail starts in the text read so far
        self._decided = 0  # escapes ending up to here in the text read so far are decided

    def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""
        while True:
            chunk = self._stream.read(size if size > 0 else _STREAM_READ)
            text = self._decoder.decode(chunk, not chunk)
            if "\x00" in text:
                text = text.replace("\x00", REPLACEMENT)
            if not self.lone_surrogate:
                self._check_surrogates(text, final=not chunk)
            if text or not chunk:
                return text.encode()

    def _check_surrogates(self, text: str, *, final: bool) -> None:
        window, at = self._tail + text, self._tail_at
        decided = at + len(window)
        if "\\u" in window:
            for match in _LONE_SURROGATE_ESCAPE.finditer(window):
                if at + match.end() <= self._decided:
                    continue  # seen whole, with its neighbours, in the previous read
                after = window[match.end() :]
                if not final and match.lastgroup == "high" and _LOW_ESCAPE_START.fullmatch(after):
                    decided = at + match.start()  # ends this read: the next one tells
                    break
                self.lone_surrogate = True
                return
        self._decided = decided
        self._tail = window[-_ESCAPE_PAIR_CHARS:]
        self._tail_at = at + len(window) - len(self._tail)


def _open(source: Path) -> _ByteStream:
    with open(source, "rb") as probe:
        magic = probe.read(2)
    if magic == GZIP_MAGIC:
        return gzip.open(source, "rb")
    return open(source, "rb")


def _skip_to_content(stream: _ByteStream) -> bytes:
    """Consume a BOM and leading whitespace; the first content byte (not consumed), or b""."""
    peek = stream.peek
    if peek(3)[:3] == _BOM:
        stream.read(3)
    while True:
        chunk: bytes = peek(1)
        if not chunk:
            return b""
        content = chunk.lstrip(_JSON_WHITESPACE)
        stream.read(len(chunk) - len(content))
        if content:
            return content[:1]


class ExportReader:
    """Iterates the rows of one spooled export file; use as a context manager.

    After iteration `layout` tells what the file held and `streamed` whether the array had to
    be read by the streaming parser (a layout other than one element per line).
    """

    def __init__(self, source: Path) -> None:
        self.source = source
        self.layout: Layout | None = None
        self.streamed = False
        self._open_streams: list[_ByteStream] = []

    def __enter__(self) -> ExportReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        while self._open_streams:
            self._open_streams.pop().close()

    def __iter__(self) -> Iterator[ExportRow]:
        try:
            stream = self._stream()
            first = _skip_to_content(stream)
            if not first:
                self.layout = "empty"
                return
            if first == b"{":
                self.layout = "ndjson"
                yield from self._ndjson(stream)
            elif first == b"[":
                self.layout = "array"
                yield from self._array(stream)
            else:
                raise TransformError(
                    f"{self.source.name} is neither NDJSON nor a JSON array (first byte {first!r})"
                )
        except (OSError, EOFError, zlib.error) as exc:
            raise TransformError(f"cannot read {self.source.name}: {exc}") from exc
        finally:
            self.close()

    def _stream(self) -> _ByteStream:
        stream = _open(self.source)
        self._open_streams.append(stream)
        return stream

    def _ndjson(self, stream: _ByteStream) -> Iterator[ExportRow]:
        readline, loads = stream.readline, orjson.loads
        position = 0
        while line := readline(MAX_ROW_BYTES):
            if len(line) == MAX_ROW_BYTES and line[-1] != ord("\n"):
                while (rest := readline(_STREAM_READ)) and rest[-1] != ord("\n"):
                    pass
                error = f"row longer than {MAX_ROW_BYTES} bytes"
                yield ExportRow(position, None, line[:RAW_LIMIT], error, False)
                position += 1
                continue
            text = line.strip(_JSON_WHITESPACE)
            if not text:
                continue
            try:
                yield ExportRow(position, loads(text), text, "", False)
            except orjson.JSONDecodeError:
                try:
                    value, exact = _parse(text)
                except _Unparsed as exc:
                    yield ExportRow(position, None, text, f"not JSON: {exc}", False)
                else:
                    yield ExportRow(position, value, text, "", exact)
            position += 1

    def _array(self, stream: _ByteStream) -> Iterator[ExportRow]:
        """One element per line; anything else hands over to `_streamed_array`."""
        stream.read(1)  # the "["
        readline = stream.readline
        state = _OPEN
        position = 0
        while line := readline(ARRAY_LINE_LIMIT):
            if len(line) == ARRAY_LINE_LIMIT and line[-1] != ord("\n"):
                yield from self._streamed_array(skip=position)
                return
            text = line.strip(_JSON_WHITESPACE)
            if not text:
                continue
            if state == _CLOSED:
                raise TransformError(f"{self.source.name} has data after its JSON array")
            if text == b"]" and state in (_OPEN, _AFTER_ELEMENT):
                state = _CLOSED
                continue
            if state == _AFTER_ELEMENT:
                yield from self._streamed_array(skip=position)
                return
            last = text[-1]
            if last == _COMMA:
                body, after = text[:-1], _NEED_ELEMENT
            elif last == _CLOSE:
                body, after = text[:-1], _CLOSED
            else:
                body, after = text, _AFTER_ELEMENT
            try:
                value, exact = _parse(body)
            except _Unparsed:
                yield from self._streamed_array(skip=position)
                return
            yield ExportRow(position, value, body, "", exact)
            position += 1
            state = after
        if state != _CLOSED:
            raise TransformError(f"{self.source.name} ends inside its JSON array (truncated)")

    def _streamed_array(self, skip: int) -> Iterator[ExportRow]:
        """The array parsed from the start by ijson; rows before `skip` were already given.

        yajl2_c refuses integers beyond int64 and mishandles lone surrogate escapes; only then
        is the slow pure-Python backend (exact integers, lone surrogates kept) used, from the
        first element not given yet. An element holding a lone surrogate is cleaned as
        `parse_exact` cleans such a row on the line path (U+FFFD for it and for NUL); the others
        are left as the line path leaves them.
        """
        self.streamed = True
        done = skip
        backend: Any = ijson  # the best backend installed: yajl2_c
        while True:
            stream = self._stream()
            clean = _CleanStream(stream)
            exact = backend.backend_name == "python"
            items = backend.items(clean, "item", use_float=True)
            try:
                for position, value in enumerate(items):
                    if position < done:
                        continue
                    if not exact and clean.lone_surrogate:
                        break  # this element may hold it: read on with the exact backend
                    if exact and _holds_surrogate(value):
                        value = clean_value(value)  # as `parse_exact` cleans such a row
                    yield ExportRow(position, value, None, "", True)
                    done = position + 1
                else:
                    return
            except (ijson.JSONError, ValueError) as exc:
                overflow = "integer overflow" in str(exc)
                if exact or not (overflow or clean.lone_surrogate):
                    raise TransformError(
                        f"{self.source.name} is not a valid JSON array: {_first_line(exc)}"
                    ) from exc
            finally:
                stream.close()
            backend = ijson.get_backend("python")


def _first_line(exc: Exception) -> str:
    """The parser's message without the excerpt of file content it may quote after it."""
    text = re.split(r"\n|\\n", str(exc), maxsplit=1)[0].strip(" b'\"")
    return text[:200] or type(exc).__name__


def open_export(source: Path) -> ExportReader:
    """A reader over the rows of a spooled export file (gzip or plain, NDJSON or an array)."""
    return ExportReader(source)
