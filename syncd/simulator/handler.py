"""The HTTP side of the simulator: routing, auth and fault guards, JSON and body responses.

The API logic lives in `Simulator` (server.py); this module turns requests into calls on it
and its answers (or `HttpError`s) into responses.
"""

from __future__ import annotations

import functools
import gzip
import re
import socket
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import orjson
import structlog

from syncd.simulator.bodies import FORMAT_CSV, FORMAT_JSON, FORMAT_NDJSON
from syncd.simulator.faults import BODY_FAULTS, ERROR_FAULTS, Endpoint, Fault, FiredFault

if TYPE_CHECKING:
    from syncd.simulator.server import Simulator

log = structlog.get_logger(__name__)

_WRITE_CHUNK = 256 * 1024
FILE_NAMES = {
    FORMAT_JSON: "export.json.gz",
    FORMAT_NDJSON: "export.ndjson.gz",
    FORMAT_CSV: "export.csv.gz",
}
_PLAIN_TYPES = {
    FORMAT_JSON: "application/json",
    FORMAT_NDJSON: "application/x-ndjson",
    FORMAT_CSV: "text/csv",
}
_INTEGER = re.compile(r"-?[0-9]+")
_SERVER_ERROR_CODES = {500: "internal", 502: "bad_gateway", 503: "unavailable", 504: "timeout"}


class HttpError(Exception):
    """Ends a request with a JSON error body {"code", "message"}."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class RawAnswer(Exception):
    """Ends a request with this exact answer (status, body bytes, headers)."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers


#: What the GZIP_BOMB fault's body inflates to.
GZIP_BOMB_INFLATED = 1 << 30


@functools.cache
def gzip_bomb() -> bytes:
    """gzip of GZIP_BOMB_INFLATED spaces (about 1 MB), made once."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b" " * (1 << 20)
    parts = [packer.compress(block) for _ in range(GZIP_BOMB_INFLATED // len(block))]
    return b"".join(parts) + packer.flush()


def rate_limited(retry_after: int, message: str) -> HttpError:
    return HttpError(429, "rate_limited", message, {"Retry-After": str(retry_after)})


def integer_param(query: dict[str, list[str]], name: str) -> int:
    """An integer query parameter, parsed as text (never through a float)."""
    values = query.get(name)
    text = values[0].strip() if values else ""
    if not _INTEGER.fullmatch(text):
        raise HttpError(400, "invalid_argument", f"{name} must be an integer")
    return int(text)


class ApiServer(ThreadingHTTPServer):
    """One thread per connection; knows its simulator and can close keep-alive connections."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away, or a connection cut by `stop`, is logged at debug level;
        anything else is reported as the standard library does (with its traceback)."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError) or (
            isinstance(error, OSError) and self.simulator.stopping
        ):
            log.debug("simulator connection closed", client=client_address[0], error=str(error))
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Wake keep-alive handler threads so they end with the server."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: ApiServer
    server_version = "syncd-simulator"
    sys_version = ""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are logged by `_respond`; the default would print to stderr."""

    # -- dispatch --------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        sim = self.server.simulator
        endpoint: Endpoint | None = None
        try:
            payload = self._read_body()
            split = urlsplit(self.path)
            parts = [unquote(part) for part in split.path.split("/")[1:]]
            query = parse_qs(split.query, keep_blank_values=True)
            endpoint, argument = _route(method, parts)
            self._guard(sim, endpoint)
            self._serve(sim, endpoint, argument, payload, query)
        except HttpError as exc:
            self._error(endpoint, exc)
        except RawAnswer as answer:
            try:
                self._respond(endpoint, answer.status, answer.body, answer.headers)
            except ConnectionError as exc:  # a client that stops reading a bomb
                self._client_gone(exc)
        except ConnectionError as exc:
            self._client_gone(exc)
        except Exception as exc:
            if sim.stopping:  # cut short by `stop`, not a fault of the simulator
                log.debug("simulator request ended by stop", path=urlsplit(self.path).path)
                self._client_gone(exc)
                return
            log.exception("simulator request failed", path=urlsplit(self.path).path)
            self._error(endpoint, HttpError(500, "internal", "simulator error"))

    def _client_gone(self, exc: Exception) -> None:
        log.debug("simulator client went away", path=urlsplit(self.path).path, error=str(exc))
        self.close_connection = True

    def _guard(self, sim: Simulator, endpoint: Endpoint) -> None:
        """Authentication, then planned faults, then the per-key rate limiter."""
        auth = self.headers.get("Authorization")
        if endpoint is Endpoint.DOWNLOAD:
            if auth is not None:
                raise HttpError(
                    400, "invalid_argument", "a signed URL must be fetched without Authorization"
                )
        elif not sim.authorized(auth):
            raise HttpError(401, "unauthenticated", "missing or invalid API key")
        slow = sim.take_fault(endpoint, frozenset({Fault.SLOW}))
        if slow is not None:
            sim.pause(slow.delay)
        fired = sim.take_fault(endpoint, ERROR_FAULTS)
        if fired is not None and fired.kind is Fault.ECHO_REQUEST:
            raise self._echo(fired)
        if fired is not None and fired.kind is Fault.GZIP_BOMB:
            raise RawAnswer(
                fired.status or 403,
                gzip_bomb(),
                {"Content-Type": "application/json", "Content-Encoding": "gzip"},
            )
        if fired is not None:
            raise _fault_error(fired)
        sim.check_limits(endpoint)

    def _echo(self, fired: FiredFault) -> HttpError:
        """The ECHO_REQUEST fault's answer: the request line and headers, quoted back."""
        headers = "; ".join(f"{name}: {value}" for name, value in self.headers.items())
        message = (
            f"request refused by the gateway\n\x1b[31m{self.command} "
            f"http://{self.headers.get('Host', '')}{self.path}\x1b[0m\r\nheaders: {headers}"
        )
        return HttpError(fired.status or 403, "permission_denied", message)

    def _serve(
        self,
        sim: Simulator,
        endpoint: Endpoint,
        argument: str,
        payload: bytes,
        query: dict[str, list[str]],
    ) -> None:
        if endpoint is Endpoint.CREATE:
            try:
                request = orjson.loads(payload or b"null")
            except orjson.JSONDecodeError:
                raise HttpError(400, "invalid_argument", "the body is not JSON") from None
            if not isinstance(request, dict):
                raise HttpError(400, "invalid_argument", "the body must be a JSON object")
            self._json(endpoint, 200, sim.create_export(request))
        elif endpoint is Endpoint.OPERATION:
            self._json(endpoint, 200, sim.operation_state(argument))
        elif endpoint is Endpoint.RESULTS:
            self._json(endpoint, 200, sim.results_location(argument))
        elif endpoint is Endpoint.DOWNLOAD:
            operation = sim.signed_download(argument, query)
            spec = operation.spec
            self._send_body(sim, endpoint, sim.body(spec), spec.format, FILE_NAMES[spec.format])
        elif endpoint is Endpoint.LEGACY_LIST:
            self._json(endpoint, 200, sim.legacy_list(query))
        else:
            _, spec = sim.legacy_bundle(query)
            self._send_body(sim, endpoint, sim.body(spec), FORMAT_JSON, "DataExport.json.gz")

    # -- responses -------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _json(self, endpoint: Endpoint | None, status: int, payload: Any) -> None:
        self._respond(endpoint, status, orjson.dumps(payload), {"Content-Type": "application/json"})

    def _error(self, endpoint: Endpoint | None, error: HttpError) -> None:
        body = orjson.dumps({"code": error.code, "message": error.message})
        headers = {"Content-Type": "application/json", **error.headers}
        try:
            self._respond(endpoint, error.status, body, headers)
        except ConnectionError as exc:
            self._client_gone(exc)

    def _respond(
        self, endpoint: Endpoint | None, status: int, body: bytes, headers: dict[str, str]
    ) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self._write(body)
        self._record(endpoint, status, len(body))

    def _record(self, endpoint: Endpoint | None, status: int, size: int) -> None:
        stats = self.server.simulator.stats
        stats.record_request(endpoint, status)
        stats.add("bytes_sent", size)
        log.debug(
            "simulator request",
            method=self.command,
            path=urlsplit(self.path).path,  # never the query: it carries signatures
            status=status,
            endpoint=endpoint.value if endpoint else None,
        )

    def _write(self, body: bytes) -> None:
        view = memoryview(body)
        for offset in range(0, len(view), _WRITE_CHUNK):
            self.wfile.write(view[offset : offset + _WRITE_CHUNK])

    def _send_body(
        self, sim: Simulator, endpoint: Endpoint, body: bytes, export_format: str, file_name: str
    ) -> None:
        """Send a gzip body, bent by at most one planned body fault."""
        legacy = endpoint is Endpoint.LEGACY_GET
        fired = sim.take_fault(endpoint, BODY_FAULTS)
        kind = fired.kind if fired is not None else None
        sim.stats.record_download(sim.now(), legacy=legacy)
        headers = {
            "Content-Type": "application/gzip",
            "Content-Disposition": f'attachment; filename="{quote(file_name)}"',
        }
        payload = body
        if kind is Fault.PROXY_DECOMPRESSED:
            payload = gzip.decompress(body)
            headers["Content-Type"] = _PLAIN_TYPES[export_format]
            headers["Content-Encoding"] = "gzip"  # the header still claims gzip
        elif kind is Fault.GZIP_CONTENT_ENCODING:
            headers["Content-Encoding"] = "gzip"
        elif kind is Fault.TRUNCATED_GZIP:
            payload = body[: len(body) // 2]
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if kind is Fault.DROP_CONNECTION:
            self._write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            self._record(endpoint, 200, len(payload) // 2)
            return
        self._write(payload)
        self._record(endpoint, 200, len(payload))
        if kind is not Fault.TRUNCATED_GZIP:
            sim.stats.add("legacy_downloads_completed" if legacy else "downloads_completed")


def _route(method: str, parts: list[str]) -> tuple[Endpoint, str]:
    """The endpoint and its path argument (an id or token), or a 404/405 error."""
    if parts == ["segments", "v1", "exports"]:
        allowed, endpoint, argument = "POST", Endpoint.CREATE, ""
    elif len(parts) == 3 and parts[:2] == ["operations", "v1"]:
        allowed, endpoint, argument = "GET", Endpoint.OPERATION, parts[2]
    elif len(parts) == 5 and parts[:3] == ["search", "v1", "exports"] and parts[4] == "results":
        allowed, endpoint, argument = "GET", Endpoint.RESULTS, parts[3]
    elif len(parts) == 3 and parts[0] == "storage":
        allowed, endpoint, argument = "GET", Endpoint.DOWNLOAD, parts[1]
    elif parts == ["api", "v1", "export", "list"]:
        allowed, endpoint, argument = "GET", Endpoint.LEGACY_LIST, ""
    elif parts == ["api", "v1", "export", "get"]:
        allowed, endpoint, argument = "GET", Endpoint.LEGACY_GET, ""
    else:
        raise HttpError(404, "not_found", "no such route (are ids URL-quoted?)")
    if method != allowed:
        raise HttpError(405, "method_not_allowed", f"use {allowed}", {"Allow": allowed})
    return endpoint, argument


def _fault_error(fired: FiredFault) -> HttpError:
    """The error answer of a RATE_LIMIT, SERVER_ERROR or FORBIDDEN fault."""
    headers = {} if fired.retry_after is None else {"Retry-After": str(fired.retry_after)}
    if fired.kind is Fault.RATE_LIMIT:
        return HttpError(429, "rate_limited", "simulated rate limit", headers)
    if fired.kind is Fault.FORBIDDEN:
        return HttpError(403, "permission_denied", "the API key lacks the export permission")
    status = fired.status or 500
    code = _SERVER_ERROR_CODES.get(status, "internal")
    return HttpError(status, code, "simulated server error", headers)
