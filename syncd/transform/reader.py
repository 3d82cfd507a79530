"""Streaming the rows out of a spooled export download, with memory that does not grow with it.

The download is gzip (sniffed by its magic bytes, since proxies may already have inflated it)
or plain, and holds NDJSON (first non-blank byte "{") or one JSON array (first byte "[").

- NDJSON is read line by line; a line that is not JSON becomes a row with an `error`, to be
  quarantined, and the rest of the file still loads.
- An array is read line by line too while every line holds exactly one element (the layout
  FullStory writes). At the first line that does not, the file is read again from the start by
  a splitter that cuts the array into its elements' texts (tracking strings, escapes and
  nesting, never building a value), skipping the elements already given; each element is then
  parsed as a line is: any layout gives the same rows. An array is one JSON document, so damage
  inside it fails the whole file.

Memory stays bounded whatever the input: a row or array element longer than `MAX_ROW_BYTES`
is quarantined unread (only its first `RAW_LIMIT` bytes are kept), and one nested deeper than
the parsers go (orjson stops at 1024 levels) is quarantined with that reason.

A damaged gzip stream, a file that is neither layout, or an invalid array raise TransformError:
never a short batch. Invalid UTF-8 is decoded with U+FFFD and raw NUL bytes inside strings
become U+FFFD (rows load). Blank lines are not rows; `position` counts rows from 0.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple, Protocol

import orjson

from syncd.errors import TransformError
from syncd.transform.convert import REPLACEMENT, TOO_DEEP, clean_value, dump_json

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


class Unparsed(Exception):
    """A row's text is not JSON, or (`too_deep`) nested deeper than a parser goes."""

    def __init__(self, message: str, *, too_deep: bool = False) -> None:
        super().__init__(message)
        self.too_deep = too_deep

    @property
    def reason(self) -> str:
        """The reason the row is quarantined with."""
        return str(self) if self.too_deep else f"not JSON: {self}"


class TooDeep(ValueError):
    """JSON nested deeper than the parser's recursion allows."""


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
        raise TooDeep(TOO_DEEP) from None
    if _SURROGATE_ESCAPE.search(decoded):
        value = clean_value(value)
    return value


def parse_row(text: bytes) -> tuple[Any, bool]:
    """(value, exact) from orjson, or from `parse_exact` when orjson refuses the text; raises
    Unparsed (`too_deep`, or not JSON) when neither can read it."""
    try:
        return orjson.loads(text), False
    except orjson.JSONDecodeError as exc:
        try:
            return parse_exact(text), True
        except TooDeep:
            raise Unparsed(TOO_DEEP, too_deep=True) from None
        except ValueError:
            raise Unparsed(str(exc)) from None


def row_text(row: ExportRow) -> bytes:
    """The row's text for a quarantine record (re-serialised when the streaming parser read it)."""
    if row.raw is not None:
        return row.raw
    return dump_json(row.value).encode()


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
                    value, exact = parse_row(text)
                except Unparsed as exc:
                    yield ExportRow(position, None, text[:RAW_LIMIT], exc.reason, False)
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
                value, exact = parse_row(body)
            except Unparsed as exc:
                if not exc.too_deep:  # maybe an element over several lines: split properly
                    yield from self._streamed_array(skip=position)
                    return
                yield ExportRow(position, None, body[:RAW_LIMIT], str(exc), False)
            else:
                yield ExportRow(position, value, body, "", exact)
            position += 1
            state = after
        if state != _CLOSED:
            raise TransformError(f"{self.source.name} ends inside its JSON array (truncated)")

    def _streamed_array(self, skip: int) -> Iterator[ExportRow]:
        """The array split into elements from the start; rows before `skip` were already given.

        Each element's text is parsed as a line of the line path is (orjson, else the exact
        parser), so every layout gives the same rows; one longer than MAX_ROW_BYTES or nested
        too deeply is quarantined, anything else that does not parse fails the file.
        """
        self.streamed = True
        stream = self._stream()
        _skip_to_content(stream)
        stream.read(1)  # the "[" (sniffed before)
        splitter = _ArraySplitter(stream, self.source.name)
        for position, (text, size) in enumerate(splitter.elements()):
            if position < skip:
                continue
            if size > MAX_ROW_BYTES:
                error = f"array element longer than {MAX_ROW_BYTES} bytes"
                yield ExportRow(position, None, text, error, False)
                continue
            try:
                value, exact = parse_row(text)
            except Unparsed as exc:
                if not exc.too_deep:
                    raise TransformError(
                        f"{self.source.name} is not a valid JSON array: {_first_line(exc)}"
                    ) from None
                yield ExportRow(position, None, text[:RAW_LIMIT], str(exc), False)
                continue
            yield ExportRow(position, value, text, "", exact)


#: How deep the splitter checks that brackets close what they opened (deeper, the element's
#: own parse refuses it anyway): memory for this stays small whatever the depth.
_KINDS_TRACKED = 1024


class _ArraySplitter:
    """Cuts the rest of a JSON array (after its "[") into the texts of its elements.

    It tracks only what decides where an element ends: strings (with escapes), brackets and
    top-level commas, scanned with regular expressions, so no value is built and memory is one
    element at most (MAX_ROW_BYTES; past that only the first RAW_LIMIT bytes are kept, and the
    element's size tells the caller).
    """

    _STRUCTURE = re.compile(rb'[][{},"]')
    #: A string's text up to its closing quote (or a backslash that ends the chunk). No
    #: possessive quantifiers (Python 3.10): nothing follows the group, so nothing backtracks.
    _STRING_BODY = re.compile(rb'(?:[^"\\]+|\\.)*', re.DOTALL)

    def __init__(self, stream: _ByteStream, name: str) -> None:
        self._stream = stream
        self._name = name

    def elements(self) -> Iterator[tuple[bytes, int]]:
        """(text, size) of each element in order; text is cut to RAW_LIMIT when size exceeds
        MAX_ROW_BYTES. Raises TransformError for a truncated array or data after it."""
        parts: list[bytes] = []
        kinds = bytearray()  # the open brackets, as far as a parser would go
        size = depth = 0
        in_string = escaped = closed = False
        element_seen = False  # a separator was passed: an element must follow
        while chunk := self._stream.read(_STREAM_READ):
            if closed:
                if chunk.strip(_JSON_WHITESPACE):
                    raise TransformError(f"{self._name} has data after its JSON array")
                continue
            pos, start, end = 0, 0, len(chunk)
            while pos < end:
                if escaped:  # the escaped character opened this chunk
                    escaped, pos = False, pos + 1
                    continue
                if in_string:
                    pos = self._STRING_BODY.match(chunk, pos).end()  # type: ignore[union-attr]
                    if pos >= end:
                        break
                    if chunk[pos] == 0x5C:  # a backslash ending the chunk
                        escaped, pos = True, pos + 1
                        continue
                    in_string, pos = False, pos + 1  # the closing quote
                    continue
                found = self._STRUCTURE.search(chunk, pos)
                if found is None:
                    break
                pos, byte = found.end(), chunk[found.start()]
                if byte == 0x22:  # '"'
                    in_string = True
                elif byte in (0x5B, 0x7B):  # '[' '{'
                    if depth < _KINDS_TRACKED:
                        kinds.append(byte)
                    depth += 1
                elif depth > 0 and byte in (0x5D, 0x7D):  # ']' '}'
                    depth -= 1
                    if depth < _KINDS_TRACKED and kinds.pop() != byte - 2:  # '['+2 = ']'
                        raise TransformError(
                            f"{self._name} is not a valid JSON array: a bracket closes "
                            "what it did not open"
                        )
                elif depth == 0 and byte in (0x2C, 0x5D):  # top level: ',' ends an element
                    parts, size = _keep(parts, size, chunk[start : found.start()])
                    text = b"".join(parts).strip(_JSON_WHITESPACE)
                    if text or element_seen or byte == 0x2C:
                        if not text and size <= MAX_ROW_BYTES:
                            raise TransformError(
                                f"{self._name} is not a valid JSON array: an empty element"
                            )
                        yield text, size
                    parts, size, start = [], 0, pos
                    element_seen = byte == 0x2C
                    if byte == 0x5D:
                        closed = True
                        if chunk[pos:].strip(_JSON_WHITESPACE):
                            raise TransformError(f"{self._name} has data after its JSON array")
                        break
                # a top-level '}' is a broken element: its parse fails
            if not closed:
                parts, size = _keep(parts, size, chunk[start:])
        if not closed:
            raise TransformError(f"{self._name} ends inside its JSON array (truncated)")


def _keep(parts: list[bytes], size: int, piece: bytes) -> tuple[list[bytes], int]:
    """Add `piece` to an element's parts: whole while the element fits in MAX_ROW_BYTES, then
    only up to RAW_LIMIT bytes in all (what a quarantine record keeps)."""
    size += len(piece)
    if size <= MAX_ROW_BYTES:
        parts.append(piece)
        return parts, size
    kept = sum(len(p) for p in parts)
    if kept < RAW_LIMIT:
        parts.append(piece[: RAW_LIMIT - kept])
    elif kept > RAW_LIMIT:
        parts = [b"".join(parts)[:RAW_LIMIT]]
    return parts, size


def _first_line(exc: Exception) -> str:
    """The parser's message without the excerpt of file content it may quote after it."""
    text = re.split(r"\n|\\n", str(exc), maxsplit=1)[0].strip(" b'\"")
    return text[:200] or type(exc).__name__


def open_export(source: Path) -> ExportReader:
    """A reader over the rows of a spooled export file (gzip or plain, NDJSON or an array)."""
    return ExportReader(source)
