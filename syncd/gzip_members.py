"""Inflating a gzip stream member after member, in bounded pieces.

A gzip file may hold several members back to back (what `cat a.gz b.gz`, pigz's independent
blocks or a re-chunking proxy produce) and zero padding after the last one (as tape-era gzip
tools write); gzip -d and Python's gzip module read all of it as one text. zlib's
decompressobj stops at the end of the first member and leaves the rest in `unused_data`:
reading only that would load the first member's rows and silently drop the others. The
download's check (syncd/sources/download.py) and the fast transform's reader
(syncd/transform/columnar.py) both inflate through this class, so what the one accepts the
other reads whole.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

_GZIP_WBITS = 31  # zlib: expect a gzip header and trailer


class GzipMembers:
    """Inflates gzip data fed in chunks, each member in turn, at most `step` bytes at a time.

    `feed` and `finish` yield the inflated text (discard it to only check the stream).
    Corrupt data raises zlib.error; `finish` raises EOFError unless the data ended exactly at
    the end of a member (zero padding after it allowed)."""

    def __init__(self, step: int) -> None:
        self._step = step
        self._inflate = zlib.decompressobj(wbits=_GZIP_WBITS)
        self.members = 0
        self._in_member = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            if not self._in_member and self.members and not data.strip(b"\x00"):
                return  # zero padding after a complete member
            self._in_member = True
            out = self._inflate.decompress(data, self._step)
            if out:
                yield out
            if self._inflate.eof:
                data = self._inflate.unused_data
                self._end_member()
            else:
                data = self._inflate.unconsumed_tail

    def finish(self) -> Iterator[bytes]:
        """What the decompressor still holds back after the last chunk; then the check that
        the stream ended at the end of a member."""
        while self._in_member and not self._inflate.eof:
            out = self._inflate.decompress(b"", self._step)
            if not out:
                break
            yield out
        if self._in_member and self._inflate.eof:
            self._end_member()
        if self._in_member or self.members == 0:
            raise EOFError("gzip data ends before its trailer (truncated)")

    def _end_member(self) -> None:
        self.members += 1
        self._in_member = False
        self._inflate = zlib.decompressobj(wbits=_GZIP_WBITS)
