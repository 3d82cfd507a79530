"""Wiring: turn settings into a running pipeline (client, source, stage, warehouse, hooks).

Everything provider-specific is behind `warehouses.registry`; this module only connects parts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

import httpx
import structlog

from syncd.batch import SyncRecord
from syncd.config import Settings
from syncd.config.table import key_table
from syncd.errors import ConfigError
from syncd.fields import dropped_fields, export_columns
from syncd.observability.logging import register_secret
from syncd.people import PeopleSync, PeopleWarehouse
from syncd.pipeline import BatchSource, Pipeline, PipelineHooks, PipelineOptions
from syncd.planner import WindowPlan
from syncd.sources.batches import LegacySource, SegmentSource
from syncd.sources.client import ExportClient
from syncd.sources.fetcher import Fetcher
from syncd.sources.operations import OperationStore
from syncd.sources.ratelimit import RateLimiter
from syncd.sources.retry import RetryPolicy
from syncd.state import StatusFile
from syncd.timeutil import utcnow
from warehouses.base import Stage, Warehouse
from warehouses.registry import build_stage, build_warehouse

#: Files in StateDir where the rate limiters remember a Retry-After pause and legacy downloads.
API_RATE_STATE = "api-rate.json"
LEGACY_RATE_STATE = "legacy-rate.json"

log = structlog.get_logger(__name__)


def register_secrets(settings: Settings) -> None:
    """Tell the log scrubber every secret value the settings hold: every key of kind SECRET
    (the plugins declare their sections' keys) and the AdditionalHttpHeader values."""
    for secret in (
        *(settings.value_of(k) for k in key_table().keys if k.secret and not k.deprecated),
        *(h.value for h in settings.additional_http_headers),
    ):
        register_secret(secret.reveal())


@runtime_checkable
class ClientObserver(Protocol):
    """A hook that also watches the export API client (metrics): retries and responses."""

    def on_retry(self, reason: str, attempt: int, wait_seconds: float) -> None: ...

    def on_response(self, response: httpx.Response) -> None: ...


def status_file(settings: Settings) -> StatusFile:
    return StatusFile(settings.state_dir / "status.json")


def build_client(
    settings: Settings,
    stop: threading.Event,
    *,
    retry: RetryPolicy | None = None,
    http: httpx.Client | None = None,
    on_retry: Callable[[str, int, float], None] | None = None,
) -> ExportClient:
    """The export API client (on `http` when given: the caller closes that one)."""
    if not settings.fs_api_token:
        raise ConfigError(
            ["FsApiToken: an API key is required; set it in the file or in FULLSTORY_API_TOKEN"]
        )
    return ExportClient(
        settings.api_url,
        settings.fs_api_token,
        legacy_api_url=settings.legacy_api_url,
        extra_headers=settings.reveal_http_headers(),
        timeout=settings.http_timeout.total_seconds(),
        retry=retry
        or RetryPolicy(
            base=settings.backoff.total_seconds(), max_attempts=settings.backoff_steps_max
        ),
        stop=stop,
        api_rate=RateLimiter(
            settings.api_requests_per_second,
            1.0,
            state_path=settings.state_dir / API_RATE_STATE,
            remember_calls=False,  # a one-second window: only a Retry-After pause outlives it
        ),
        legacy_rate=RateLimiter.legacy_default(settings.state_dir / LEGACY_RATE_STATE),
        download_deadline=settings.download_timeout.total_seconds(),
        http=http,
        on_retry=on_retry,
    )


def _observe_response(observers: Sequence[ClientObserver]) -> Callable[[httpx.Response], None]:
    def hook(response: httpx.Response) -> None:
        for observer in observers:
            observer.on_response(response)

    return hook


def _observe_retry(observers: Sequence[ClientObserver]) -> Callable[[str, int, float], None]:
    def hook(reason: str, attempt: int, wait_seconds: float) -> None:
        for observer in observers:
            observer.on_retry(reason, attempt, wait_seconds)

    return hook


def build_source(settings: Settings, client: ExportClient) -> BatchSource:
    spool = settings.state_dir / "spool"
    fetcher = Fetcher(
        client,
        OperationStore(settings.state_dir / "operations.json"),
        spool,
        segment_id=settings.segment_id,
        poll_interval=settings.poll_interval.total_seconds(),
        operation_deadline=settings.operation_timeout.total_seconds(),
    )
    if settings.source == "legacy":
        return LegacySource(
            client,
            fetcher,
            start_time=settings.start_time,
            group_by_day=settings.group_files_by_day,
        )
    plan = WindowPlan(
        duration=settings.export_duration,
        delay=settings.export_delay,
        start_time=settings.start_time,
    )
    return SegmentSource(fetcher, plan, settings.settle_after)


def staged_format(settings: Settings, warehouse: Warehouse) -> str:
    """The configured staged format if the warehouse loads it, else the warehouse's choice."""
    formats = warehouse.capabilities.staging_formats
    if settings.staged_format == "auto":
        return formats[0]
    if settings.staged_format not in formats:
        raise ConfigError(
            [
                f"StagedFormat: {settings.staged_format!r} cannot be loaded by this warehouse; "
                f"use one of {', '.join(formats)}"
            ]
        )
    return settings.staged_format


@dataclass
class App:
    """The parts of one configured syncd, ready to run."""

    settings: Settings
    client: ExportClient
    stage: Stage
    warehouse: Warehouse
    pipeline: Pipeline
    http: httpx.Client | None = None  # made for client observers; closed here

    def close(self) -> None:
        self.warehouse.close()
        self.client.close()
        if self.http is not None:
            self.http.close()


class ViewsAtStart(PipelineHooks):
    """`CreateViews = true`: create or replace the views (`warehouses.views`) once the tables
    are ready at start-up. A failure is logged as a warning (the sync goes on without them)."""

    def __init__(self, warehouse: Warehouse, people_table: str | None = None) -> None:
        self.warehouse = warehouse
        self.people_table = people_table

    def after_start(self, records: Sequence[SyncRecord]) -> None:
        from warehouses.views import create_views

        names = create_views(self.warehouse, self.people_table)
        log.info("views created or replaced", views=names)


def build_app(
    settings: Settings,
    *,
    stop: threading.Event,
    hooks: Sequence[PipelineHooks] = (),
    clock: Callable[[], datetime] = utcnow,
) -> App:
    """Connect every part; nothing is contacted until `pipeline.start()`."""
    register_secrets(settings)
    observers = [h for h in hooks if isinstance(h, ClientObserver)]
    http = None
    if observers:  # count every response and retry (metrics)
        http = httpx.Client(event_hooks={"response": [_observe_response(observers)]})
    client = build_client(
        settings,
        stop,
        http=http,
        on_retry=_observe_retry(observers) if observers else None,
    )
    stage = build_stage(settings)
    warehouse = build_warehouse(settings, stage)
    fmt = staged_format(settings, warehouse)
    options = PipelineOptions(
        work_dir=settings.state_dir / "work",
        staged_format=fmt,  # type: ignore[arg-type]
        keep_staged=settings.keep_staged_files or settings.storage_only,
        max_attempts=settings.max_batch_attempts,
        retry_base=settings.backoff.total_seconds(),
        held_retry_interval=settings.held_retry_interval.total_seconds(),
        lookahead=settings.lookahead,
        dropped_fields=dropped_fields(settings.include_mobile_apps_fields),
    )
    if settings.create_views:
        hooks = [*hooks, ViewsAtStart(warehouse, people_table(settings))]
    source = build_source(settings, client)
    pipeline = Pipeline(
        source,
        stage,
        warehouse,
        export_columns(settings.source, settings.include_mobile_apps_fields),
        options,
        status=status_file(settings),
        hooks=hooks,
        stop=stop,
        clock=clock,
        people=build_people(settings, source, stage, warehouse),
    )
    return App(settings, client, stage, warehouse, pipeline, http)


def people_table(settings: Settings) -> str | None:
    """The people table when ExportIndividuals keeps one (fs_users reads it), else None."""
    return settings.individuals_table if settings.export_individuals else None


def build_people(
    settings: Settings, source: BatchSource, stage: Stage, warehouse: Warehouse
) -> PeopleSync | None:
    """ExportIndividuals: the people table's sync (`syncd.people`), sharing the events'
    fetcher (one store of in-flight operations); None when off."""
    if not settings.export_individuals:
        return None
    if not isinstance(source, SegmentSource):
        raise ConfigError(['ExportIndividuals: exports individuals: needs Source "segment"'])
    if not isinstance(warehouse, PeopleWarehouse):
        raise ConfigError(
            [f"ExportIndividuals: Provider {settings.provider!r} keeps no people table"]
        )
    return PeopleSync(
        source.fetcher,
        warehouse,
        stage,
        settings.individuals_table,
        settings.state_dir / "work" / "people",
        keep_staged=settings.keep_staged_files,
    )
