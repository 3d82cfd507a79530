"""Stream an HTTP body to a spool file, and refuse to keep it unless it is complete.

A short or corrupt export must never look like a small one: the byte count is checked against
Content-Length, and a gzip body is inflated as it arrives (and thrown away) so that a missing
end or a bad CRC is caught without reading the file twice. The file appears under its final
name only once it passed, by rename from a `.part` file.
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import structlog

from syncd.errors import TransientSourceError
from syncd.gzip_members import GzipMembers
from syncd.private_files import open_private_new

log = structlog.get_logger(__name__)

#: The longest one download may take, however steadily bytes trickle in.
DEFAULT_DOWNLOAD_DEADLINE = 30 * 60.0
GZIP_MAGIC = b"\x1f\x8b"
_INFLATE_STEP = 1 << 20  # most inflated bytes held at once while checking


class TruncatedDownload(TransientSourceError):
    """The body ended early or is corrupt; downloading it again usually cures it."""


@dataclass(frozen=True)
class Download:
    """A complete file on disk: `bytes` as received; `compressed` when it is gzip."""

    path: Path
    bytes: int
    compressed: bool


class GzipCheck:
    """Inflates gzip data as it arrives, discarding the output, to prove the stream whole.

    Handles several gzip members back to back (and zero padding after the last one, as gzip
    tools do): `GzipMembers`, the same reading the fast transform does. `finish()` raises
    unless the data ended exactly at the end of a member.
    """

    def __init__(self) -> None:
        self._members = GzipMembers(_INFLATE_STEP)

    def feed(self, data: bytes) -> None:
        try:
            for _ in self._members.feed(data):
                pass
        except zlib.error as exc:
            raise TruncatedDownload(f"gzip data is corrupt: {exc}") from exc

    def finish(self) -> None:
        try:
            for _ in self._members.finish():
                pass
        except zlib.error as exc:
            raise TruncatedDownload(f"gzip data is corrupt: {exc}") from exc
        except EOFError as exc:
            raise TruncatedDownload(
                "gzip data ends before its trailer (truncated download)"
            ) from exc


def _raw_chunks(response: httpx.Response) -> Iterator[bytes]:
    """The body as sent; a response already read into memory (a test fake) as one chunk."""
    if response.is_stream_consumed:
        return iter([response.content])
    return response.iter_raw()


def content_length(response: httpx.Response) -> int | None:
    """The declared body size, or None when absent or unreadable."""
    value = response.headers.get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def write_body(
    response: httpx.Response,
    dest: Path,
    *,
    deadline: float = DEFAULT_DOWNLOAD_DEADLINE,
    clock: Callable[[], float] = time.monotonic,
    stop: threading.Event | None = None,
) -> Download:
    """Write a successful streaming response's raw body to `dest`, checked complete.

    Bytes are stored as sent (`iter_raw`): gzip stays gzip, and a body some proxy already
    inflated is stored inflated with `compressed=False`. httpx errors raised while reading
    propagate for the caller to translate; failed checks raise `TruncatedDownload`. Setting
    `stop` abandons the download at the next chunk (a shutdown does not wait for gigabytes).
    """
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)  # dest exists only when this download completed
    expected = content_length(response)
    give_up_at = clock() + deadline
    received = 0
    head = b""  # the first bytes, kept until there are enough to recognise gzip
    check: GzipCheck | None = None
    try:
        with open_private_new(part) as out:
            for chunk in _raw_chunks(response):
                out.write(chunk)
                received += len(chunk)
                if len(head) < len(GZIP_MAGIC):
                    head += chunk
                    if len(head) < len(GZIP_MAGIC):
                        continue
                    check = GzipCheck() if head.startswith(GZIP_MAGIC) else None
                    chunk = head
                if check is not None:
                    check.feed(chunk)
                if stop is not None and stop.is_set():
                    raise TransientSourceError(
                        f"stopping: download abandoned after {received} bytes"
                    )
                if clock() > give_up_at:
                    raise TransientSourceError(
                        f"download exceeded its deadline of {deadline:g}s after {received} bytes"
                    ) from TimeoutError("download deadline")
            if expected is not None and received != expected:
                raise TruncatedDownload(
                    f"download has {received} bytes but Content-Length said {expected}"
                )
            if check is not None:
                check.finish()
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    compressed = check is not None
    log.info("downloaded", path=str(dest), bytes=received, compressed=compressed)
    return Download(path=dest, bytes=received, compressed=compressed)
