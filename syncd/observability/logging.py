"""structlog set-up: JSON lines in a container, a readable console on a terminal.

Every secret the settings hold is registered with `register_secret` and scrubbed from every
log line by the last processor, as a second line of defence behind `Secret`'s masked repr.
`safe_text` is the same defence for every other output (stderr, `status`, the status file,
probes, `check`): secrets masked, URL query strings (signed URLs carry credentials there)
dropped, control characters escaped so text from the network stays one inert line.

A status line (the progress display, on a terminal) registers with `keep_below_logs`: each log
line written to its stream first clears it and then redraws it below, so log lines never
scroll it away nor land in the middle of it.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any, Protocol, TextIO

import structlog

_secrets: set[str] = set()
_lock = threading.Lock()
MASK = "***"
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class StatusLine(Protocol):
    """A line redrawn in place at the bottom of a terminal (`progress.ProgressDisplay`)."""

    stream: TextIO

    def clear(self) -> None:
        """Blank the line and put the cursor at its start."""

    def redraw(self) -> None:
        """Write the line again (nothing when it was never drawn or is finished)."""


#: Held while writing to the terminal: by a log line, and by the status line's own redraws.
terminal_lock = threading.RLock()
_status_line: StatusLine | None = None


def keep_below_logs(line: StatusLine | None) -> None:
    """Keep `line` below the log lines written to its stream from now on; None: no line."""
    global _status_line
    with terminal_lock:
        _status_line = line


class _LogWriter(structlog.PrintLogger):
    """structlog's PrintLogger, making room for the status line around each log line."""

    def __init__(self, file: TextIO) -> None:
        super().__init__(file)
        self.stream = file

    def msg(self, message: str) -> None:
        with terminal_lock:
            line = _status_line
            if line is not None and line.stream is not self.stream:
                line = None
            if line is not None:
                line.clear()
            super().msg(message)
            if line is not None:
                line.redraw()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def register_secret(value: str) -> None:
    """Never let `value` appear in a log line (values shorter than 4 characters are ignored)."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def scrub(text: str) -> str:
    """Replace every registered secret in `text` with the mask."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


#: A URL's query string: everything from "?" to the next space, quote or bracket.
_URL_QUERY = re.compile(r"""(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#"'<>]*)\?[^\s"'<>]*""")


def drop_url_queries(text: str) -> str:
    """`text` with the query string of every URL in it replaced by `?...`: a signed URL's
    query is a credential, and none is worth printing."""
    return _URL_QUERY.sub(r"\1?...", text)


def one_line(text: str) -> str:
    """`text` with control characters escaped (as Python writes them: `\n`, `\x1b`): a
    value from a file or the network may hold a newline or a terminal escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def safe_text(text: str) -> str:
    """`text` fit for any output: secrets masked, URL queries dropped, one line."""
    return one_line(drop_url_queries(scrub(text)))


def safe_values(obj: Any) -> Any:
    """`obj` (JSON-like: dicts, lists, strings) with `safe_text` applied to every string."""
    if isinstance(obj, str):
        return safe_text(obj)
    if isinstance(obj, dict):
        return {k: safe_values(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(safe_values(v) for v in obj)
    return obj


def _scrub_processor(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if isinstance(value, BaseException):
            value = f"{type(value).__name__}: {value}"
        event_dict[key] = safe_values(value)
    return event_dict


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog for the process. `fmt` is "auto", "json" or "console"."""
    out = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
        exc_processors: list[Any] = []
    else:
        renderer = structlog.processors.JSONRenderer()
        exc_processors = [structlog.processors.format_exc_info]
    # httpx logs every request URL at INFO, signed-URL signatures included: keep it quiet.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *exc_processors,
            _scrub_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            _LEVELS.get(level.lower(), logging.INFO)
        ),
        logger_factory=lambda *args: _LogWriter(out),
        cache_logger_on_first_use=False,
    )
