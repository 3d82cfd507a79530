"""The simulated FullStory export APIs over real HTTP: Segment Export and legacy bundles.

Routes (see the reference page on the export APIs):

    POST /segments/v1/exports                    create an export      -> {"operationId"}
    GET  /operations/v1/{operationId}            poll it               -> state, results
    GET  /search/v1/exports/{id}/results         a signed results URL  -> {"location", "expires"}
    GET  /storage/{token}/{file}?Expires&Signature  the gzip body (no API key allowed)
    GET  /api/v1/export/list?start=<unix>        legacy bundles, 20 a page
    GET  /api/v1/export/get?id=<Id>              a legacy bundle, gzip JSON array

Every path segment is URL-unquoted after splitting. Ids are URL-safe by default (a client may
put them in a path as they are); with `SimulatorConfig.hostile_ids` they hold "+", "/" and
"=", so a client must URL-quote them (syncd's own quoting tests). Bodies are rendered by `bodies`, the same code the test helpers use.

Late arrival (`SimulatorConfig.late_fraction`): a segment export created at `now` leaves out
the late events of every hour that ended less than `late_after` before `now`; the test
helpers (`served_rows`, `expected_events`) show everything (the full truth) unless given
`as_of`.
"""

from __future__ import annotations

import hmac
import itertools
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import structlog

from syncd.batch import Bundle
from syncd.errors import ConfigError
from syncd.simulator.bodies import (
    FORMAT_JSON,
    FORMAT_NDJSON,
    FORMATS,
    BodyCache,
    ExportSpec,
    ServedRow,
    render_gzip,
    served_rows,
)
from syncd.simulator.config import SimulatorConfig
from syncd.simulator.events import HOUR_MS, EventGenerator, to_ms
from syncd.simulator.faults import (
    API_ENDPOINTS,
    Endpoint,
    Fault,
    FaultPlan,
    FiredFault,
)
from syncd.simulator.handler import FILE_NAMES, ApiServer, HttpError, integer_param, rate_limited
from syncd.simulator.legacy import BundleCalendar, bundle_json
from syncd.simulator.operations import (
    ExportOperation,
    SlidingWindow,
    TokenBucket,
    UrlSigner,
    download_token,
    mint_id,
    retry_after_seconds,
)
from syncd.simulator.requests import TYPE_INDIVIDUAL, parse_create
from syncd.simulator.stats import SimulatorStats
from syncd.timeutil import format_timestamp

log = structlog.get_logger(__name__)

LEGACY_PREFIX = "/api/v1"
_BUILD_WORKERS = 2
_SHUTDOWN_POLL = 0.05  # seconds; how fast stop() is noticed by the accept loop


class Simulator:
    """A FullStory export API on 127.0.0.1, with a fault plan and counters for tests.

    with Simulator(SimulatorConfig(events_per_hour=1000)) as sim:
        client = httpx.Client(base_url=sim.url, headers={"Authorization": "Basic sim-key"})
        sim.faults.add(Fault.RATE_LIMIT, count=2, retry_after=1)
        ...
        assert rows == sim.expected_events(start, end)
    """

    def __init__(
        self, config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or SimulatorConfig()
        self.host = host
        self.port = port
        self.faults = FaultPlan()
        self.stats = SimulatorStats()
        cfg = self.config
        self._generator = EventGenerator(
            seed=cfg.seed,
            events_per_hour=cfg.events_per_hour,
            include_mobile=cfg.include_mobile,
            bad_row_rate=cfg.bad_row_rate,
            data_start=cfg.data_start,
            new_field=(
                None if cfg.new_field_from is None else (cfg.new_field_name, cfg.new_field_from)
            ),
            late_fraction=cfg.late_fraction,
            returning_individuals=cfg.returning_individuals,
        )
        self._calendar = BundleCalendar(cfg.legacy_bundle_hours, cfg.data_start)
        self._stopping = threading.Event()
        self._cache = BodyCache(self._render, cfg.cache_bytes)
        self._signer = UrlSigner(secrets.token_bytes(32))
        self._api_limiter = (
            TokenBucket(cfg.rate_limit_per_second, cfg.clock)
            if cfg.rate_limit_per_second is not None
            else None
        )
        self._legacy_limiter = (
            SlidingWindow(cfg.legacy_downloads_per_minute, timedelta(minutes=1), cfg.clock)
            if cfg.legacy_downloads_per_minute is not None
            else None
        )
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._operations: dict[str, ExportOperation] = {}
        self._exports: dict[str, ExportOperation] = {}
        self._downloads: dict[str, ExportOperation] = {}
        self._server: ApiServer | None = None
        self._thread: threading.Thread | None = None
        self._builds: ThreadPoolExecutor | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Simulator:
        """Bind (a free port when port=0) and serve on a background thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._builds = ThreadPoolExecutor(_BUILD_WORKERS, thread_name_prefix="sim-build")
        try:
            self._server = ApiServer((self.host, self.port), self)
        except OSError as exc:
            self._builds.shutdown()
            raise ConfigError(
                [f"cannot listen on {self.host}:{self.port}: {exc.strerror}"]
            ) from exc
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _SHUTDOWN_POLL},
            name="sim-http",
            daemon=True,
        )
        self._thread.start()
        log.info("simulator started", url=self.url, legacy_url=self.legacy_url)
        return self

    def stop(self) -> None:
        """Stop accepting, close open connections, cancel builds; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
        if self._builds is not None:
            self._builds.shutdown(wait=True, cancel_futures=True)
        log.info("simulator stopped", url=self._base_url)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL of the Segment Export API, e.g. http://127.0.0.1:PORT."""
        if self._server is None:
            raise ConfigError(["the simulator is not started: call start() first"])
        return self._base_url

    @property
    def _base_url(self) -> str:
        """`url` without the check: requests still in flight while `stop` runs use it."""
        return f"http://{self.host}:{self.port}"

    @property
    def stopping(self) -> bool:
        """True from the start of `stop` until the next `start`."""
        return self._stopping.is_set()

    @property
    def legacy_url(self) -> str:
        """Base URL of the legacy Data Export API, e.g. http://127.0.0.1:PORT/api/v1."""
        return self.url + LEGACY_PREFIX

    def now(self) -> datetime:
        return self.config.clock()

    def pause(self, seconds: float) -> None:
        """Wait (a SLOW fault), but no longer than until the simulator stops."""
        self._stopping.wait(seconds)

    # -- what the tests compare against ----------------------------------------------------

    def served_rows(
        self,
        start: datetime,
        end: datetime,
        *,
        legacy: bool = False,
        export_format: str | None = None,
        fields: list[str] | None = None,
        as_of: datetime | None = None,
        individuals: bool = False,
    ) -> list[ServedRow]:
        """Every row an export of [start, end) serves, in order, bad rows included.

        `export_format` defaults to NDJSON (JSON for legacy); in a JSON array or CSV body a
        malformed row is served mistyped instead, so the good rows are the same in every format.
        `as_of`: as an export created then serves it (late events not arrived yet left out);
        None: every late event has arrived. `individuals`: the rows of a TYPE_INDIVIDUAL
        export instead (see `syncd.simulator.people`).
        """
        spec = self._spec(start, end, legacy, export_format, fields, as_of, individuals)
        return served_rows(self._generator, spec)

    def expected_individuals(
        self,
        start: datetime,
        end: datetime,
        *,
        fields: list[str] | None = None,
        as_of: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """The rows a TYPE_INDIVIDUAL export of [start, end) serves (JSON or NDJSON, parsed)."""
        rows = self.served_rows(start, end, fields=fields, as_of=as_of, individuals=True)
        return [row.event for row in rows if row.event is not None]

    def expected_events(
        self,
        start: datetime,
        end: datetime,
        *,
        legacy: bool = False,
        fields: list[str] | None = None,
        as_of: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """The good events of [start, end) exactly as served (JSON or NDJSON, parsed); with
        `as_of`, as an export created then serves them (see `served_rows`)."""
        rows = self.served_rows(start, end, legacy=legacy, fields=fields, as_of=as_of)
        return [row.event for row in rows if row.bad is None and row.event is not None]

    def bundles(self, start: datetime, end: datetime) -> list[Bundle]:
        """Complete legacy bundles lying wholly inside [start, end)."""
        return self._calendar.within(start, end, self.now())

    def _spec(
        self,
        start: datetime,
        end: datetime,
        legacy: bool,
        export_format: str | None = None,
        fields: list[str] | None = None,
        as_of: datetime | None = None,
        individuals: bool = False,
    ) -> ExportSpec:
        chosen = FORMAT_JSON if legacy else (export_format or FORMAT_NDJSON)
        if chosen not in FORMATS:
            raise ConfigError([f"format must be one of {', '.join(FORMATS)}, not {chosen!r}"])
        return ExportSpec(
            to_ms(start),
            to_ms(end),
            chosen,
            None if fields is None else tuple(fields),
            legacy,
            None if legacy else self._late_hidden_from(as_of),
            individuals,
        )

    def _late_hidden_from(self, as_of: datetime | None) -> int | None:
        """The first hour whose late events an export created at `as_of` leaves out: hour h
        is complete once (h + 1) hours + late_after <= as_of. None: nothing is left out."""
        if as_of is None or self.config.late_fraction <= 0:
            return None
        return to_ms(as_of - self.config.late_after) // HOUR_MS

    def _render(self, spec: ExportSpec, progress: Callable[[float], None]) -> bytes:
        self.stats.add("bodies_built")
        return render_gzip(
            self._generator,
            spec,
            level=self.config.gzip_level,
            member_bytes=self.config.gzip_member_bytes,
            progress=progress,
            cancelled=self._stopping,
        )

    # -- request handling (called from the handler threads) --------------------------------

    def authorized(self, header: str | None) -> bool:
        expected = f"Basic {self.config.api_key}".encode()
        return header is not None and hmac.compare_digest(header.encode(), expected)

    def check_limits(self, endpoint: Endpoint) -> None:
        """Raise the 429 of the per-key limiter when the request is over it."""
        if self._api_limiter is None or endpoint not in API_ENDPOINTS:
            return
        wait = self._api_limiter.take()
        if wait is not None:
            raise rate_limited(retry_after_seconds(wait), "per-key request rate exceeded")

    def take_fault(self, endpoint: Endpoint, kinds: frozenset[Fault]) -> FiredFault | None:
        fired = self.faults.take(endpoint, kinds)
        if fired is not None:
            self.stats.record_fault(fired)
            log.info("fault fired", fault=fired.kind.value, endpoint=endpoint.value)
        return fired

    def create_export(self, request: dict[str, Any]) -> dict[str, str]:
        """POST /segments/v1/exports: either spelling of every field (see `requests`)."""
        asked = parse_create(request)
        now = self.now()
        spec = self._spec(
            asked.start,
            asked.end,
            False,
            asked.format,
            asked.fields,
            as_of=now,
            individuals=asked.type == TYPE_INDIVIDUAL,
        )
        self.stats.record_export(asked.start, asked.end)
        failed = self.take_fault(Endpoint.CREATE, frozenset({Fault.FAILED_OPERATION}))
        hostile = self.config.hostile_ids
        with self._lock:
            number = next(self._numbers)
            export_id = mint_id(b"ex", number, hostile=hostile)
            operation = ExportOperation(
                id=mint_id(b"op", number, hostile=hostile),
                export_id=export_id,
                token=download_token(export_id),
                spec=spec,
                created_at=now,
                ready_at=now + timedelta(seconds=self.config.operation_latency),
                expires_at=now + timedelta(seconds=self.config.export_ttl),
                failure="simulated export failure" if failed else None,
            )
            self._operations[operation.id] = operation
            self._exports[operation.export_id] = operation
            self._downloads[operation.token] = operation
        if operation.failure is None and self._builds is not None:
            operation.build = self._builds.submit(self._cache.get, spec)
        return {"operationId": operation.id}

    def operation_state(self, operation_id: str) -> dict[str, Any]:
        self.stats.add("operations_polled")
        operation = self._operations.get(operation_id)
        if operation is None:
            raise HttpError(404, "not_found", "no such operation (is the id URL-quoted?)")
        with self._lock:
            return operation.state(
                self.now(), self._cache.progress(operation.spec), self.config.operation_latency
            )

    def results_location(self, export_id: str) -> dict[str, str]:
        self.stats.add("results_fetched")
        operation = self._exports.get(export_id)
        now = self.now()
        if operation is None:
            raise HttpError(404, "not_found", "no such export (is the id URL-quoted?)")
        if now >= operation.expires_at:
            raise HttpError(404, "not_found", "the export has expired")
        if not operation.completed(now):
            raise HttpError(400, "failed_precondition", "the export operation is not COMPLETED")
        expires = now + timedelta(seconds=self.config.signed_url_ttl)
        expires_unix = int(expires.timestamp())
        query = urlencode(
            {
                "Expires": expires_unix,
                "Signature": self._signer.sign(operation.token, expires_unix),
            }
        )
        file_name = FILE_NAMES[operation.spec.format]
        location = f"{self._base_url}/storage/{operation.token}/{file_name}?{query}"
        return {"location": location, "expires": format_timestamp(expires)}

    def signed_download(self, token: str, query: dict[str, list[str]]) -> ExportOperation:
        """The export a signed URL names, once its signature and expiry check out."""
        operation = self._downloads.get(token)
        try:
            expires = int(query["Expires"][0])
            signature = query["Signature"][0]
        except (KeyError, IndexError, ValueError):
            raise HttpError(403, "access_denied", "missing or malformed signature") from None
        if operation is None or not self._signer.verify(token, expires, signature):
            raise HttpError(403, "signature_does_not_match", "the signature does not match")
        if self.now().timestamp() >= expires:
            raise HttpError(403, "expired_token", "the signed URL has expired")
        if self.take_fault(Endpoint.DOWNLOAD, frozenset({Fault.EXPIRED_URL})):
            raise HttpError(403, "expired_token", "the signed URL has expired")
        return operation

    def body(self, spec: ExportSpec) -> bytes:
        """The cached gzip body (rebuilt if it was evicted)."""
        return self._cache.get(spec)

    def legacy_list(self, query: dict[str, list[str]]) -> dict[str, Any]:
        self.stats.add("legacy_lists")
        start = integer_param(query, "start")
        bundles = self._calendar.after(start, self.now())
        return {"exports": [bundle_json(bundle) for bundle in bundles]}

    def legacy_bundle(self, query: dict[str, list[str]]) -> tuple[Bundle, ExportSpec]:
        bundle = self._calendar.by_id(integer_param(query, "id"), self.now())
        if bundle is None:
            raise HttpError(404, "not_found", "no such bundle")
        if self._legacy_limiter is not None:
            wait = self._legacy_limiter.take()
            if wait is not None:
                raise rate_limited(retry_after_seconds(wait), "2 bundle downloads a minute")
        return bundle, self._spec(bundle.start, bundle.stop, True)


def serve(config: SimulatorConfig, host: str, port: int, stop: threading.Event) -> None:
    """Run the simulator until `stop` is set (for `syncd simulate`); blocks."""
    with Simulator(config, host, port) as sim:
        log.info("simulator serving", url=sim.url, legacy_url=sim.legacy_url)
        stop.wait()
