"""GzipMembers: every member read, in bounded pieces, truncation and damage refused."""

from __future__ import annotations

import gzip
import zlib

import pytest

from syncd.gzip_members import GzipMembers


def inflate(data: bytes, step: int = 1 << 16, chunk: int = 1 << 16) -> tuple[bytes, int]:
    """(the text, the largest piece yielded) of `data` fed in chunks of `chunk` bytes."""
    members = GzipMembers(step)
    pieces = [p for i in range(0, len(data), chunk) for p in members.feed(data[i : i + chunk])]
    pieces += list(members.finish())
    return b"".join(pieces), max((len(p) for p in pieces), default=0)


def test_members_back_to_back_are_one_text() -> None:
    data = gzip.compress(b"first\n") + gzip.compress(b"") + gzip.compress(b"third\n")
    assert inflate(data) == (b"first\nthird\n", 6)


def test_zero_padding_after_the_last_member_is_allowed() -> None:
    assert inflate(gzip.compress(b"row\n") + b"\0" * 4096, chunk=1000)[0] == b"row\n"


def test_fed_a_byte_at_a_time_it_reads_the_same() -> None:
    data = gzip.compress(b"a" * 5000) + gzip.compress(b"b" * 5000)
    assert inflate(data, step=64, chunk=1)[0] == b"a" * 5000 + b"b" * 5000


def test_a_body_that_inflates_a_thousandfold_comes_in_pieces_of_at_most_step() -> None:
    text, largest = inflate(gzip.compress(b"\0" * 20_000_000), step=1 << 20)
    assert (len(text), largest) == (20_000_000, 1 << 20)


@pytest.mark.parametrize("cut", [1, 6, 8, 20])
def test_a_member_cut_short_is_refused(cut: int) -> None:
    data = gzip.compress(b"x" * 100) + gzip.compress(b"y" * 100)
    with pytest.raises(EOFError, match="truncated"):
        inflate(data[:-cut])


def test_nothing_at_all_is_refused() -> None:
    with pytest.raises(EOFError):
        inflate(b"")


def test_a_bad_crc_is_refused() -> None:
    data = bytearray(gzip.compress(b"row\n"))
    data[-8] ^= 0xFF
    with pytest.raises(zlib.error):
        inflate(bytes(data))


def test_garbage_after_a_member_is_refused() -> None:
    with pytest.raises(zlib.error):
        inflate(gzip.compress(b"row\n") + b"not gzip")
