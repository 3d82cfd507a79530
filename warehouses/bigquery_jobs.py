"""BigQuery jobs: load and query job submission, job ids, location, attaching, polling.

Load job ids are deterministic (`load_job_id`): they derive from the table, the batch key and a
fingerprint of the batch's content (export operation, bytes, rows). Before submitting, the job
is looked up: a running job is waited for, and a finished one whose staging table holds the
batch's rows is attached to instead of loading twice (this is what a restart after a crash
finds). A 409 on submission means the job exists: attach. A finished job that failed, or whose
staging table is gone, cannot be re-run under its id: the next id (`<id>_1`, `<id>_2`, ...) is
used. Query jobs get the client's `syncd_` prefix and a random id.

Location. Every job is submitted, and every job lookup made, in the dataset's location (the
`location` given: `BigQueryWarehouse` reads it from the dataset). BigQuery finds a job of a
single-region dataset only when asked with its location (jobs.get without one answers 404), so
a lookup without it would take a finished load job for a missing one, and its 409 on
resubmission for a job that "conflicts but cannot be found".

Errors: `map_bigquery_error` is the one place google-cloud-bigquery's exceptions become
LoadErrors, transient or terminal by `warehouses.google_cloud.is_transient`; a terminal one
carries the job's error list. API calls are retried inside the client with the retry given.

Timeouts. Every HTTP request is bounded by `request_timeout`; waiting for a job by
`job_timeout` in all, polled with requests of at most `request_timeout` each.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from syncd.batch import StagedFormat, SyncRecord
from syncd.errors import LoadError, TerminalLoadError, TransientLoadError
from syncd.timeutil import UTC
from warehouses import google_cloud

if TYPE_CHECKING:
    from google.api_core.retry import Retry
    from google.cloud import bigquery

log = structlog.get_logger(__name__)

JOB_TIMEOUT = 3600.0  # seconds to wait for one load or query job
MAX_JOB_ID_SUFFIX = 50  # reloads of one batch content before giving up

#: The staged formats BigQuery loads for syncd. Not CSV: a CSV load reads an empty field as
#: NULL (nullMarker defaults to the empty string), and a custom nullMarker makes empty fields
#: of other types errors while a quoted string equal to the marker is not documented either
#: way: NULL and "" could not be kept apart (docs/cloud-conformance.md).
SOURCE_FORMATS: dict[StagedFormat, str] = {
    "parquet": "PARQUET",
    "ndjson": "NEWLINE_DELIMITED_JSON",
}


def map_bigquery_error(exc: BaseException, action: str) -> LoadError:
    """The one place google-cloud-bigquery's exceptions become syncd's LoadError."""
    message = google_cloud.error_text(exc)
    details = [
        f"{e.get('reason', '')}: {e.get('message', '')}".strip(": ")
        + (f" (at {e['location']})" if e.get("location") else "")
        for e in (getattr(exc, "errors", None) or [])
        if isinstance(e, Mapping)
    ]
    details = [d for d in details if d and d not in message]
    text = f"{action}: {message}" + "".join(f"\n  - {d}" for d in details[:10])
    if google_cloud.is_transient(exc):
        return TransientLoadError(text)
    return TerminalLoadError(text)


def load_job_id(dataset: str, export_table: str, record: SyncRecord, part: str, rows: int) -> str:
    """`syncd_<dataset>_<table>_<batch>_<part>_<fingerprint>`: the same for the same content."""
    content = f"{record.operation_id}|{record.bytes}|{rows}|{record.bundle_ids}"
    fingerprint = hashlib.sha1(content.encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9_-]", "_", record.batch_id)
    return f"syncd_{dataset}_{export_table}_{slug}_{part}_{fingerprint}"[:1000]


def _parameter_value(type_: str, value: Any) -> Any:
    """TIMESTAMP parameters as aware UTC (the sync SQL keeps naive UTC)."""
    if type_ == "TIMESTAMP" and isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class Jobs:
    """Runs the load and query jobs of one dataset, in its location."""

    def __init__(
        self,
        client: bigquery.Client,
        *,
        location: Callable[[], str],
        retry: Retry,
        request_timeout: float,
        job_timeout: float,
    ) -> None:
        self._client = client
        self._location = location
        self.retry = retry
        self.request_timeout = request_timeout
        self.job_timeout = job_timeout

    def query(
        self, text: str, params: Iterable[tuple[str, str, Any]], action: str
    ) -> list[tuple[Any, ...]]:
        """Run one query job (named parameters: (name, type, value)) to the end; its rows."""
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter(name, type_, _parameter_value(type_, value))
                for name, type_, value in params
            ],
            use_legacy_sql=False,
        )
        try:
            job = self._client.query(
                text,
                job_config=config,
                location=self._location(),
                retry=self.retry,
                job_retry=None,  # a failed job surfaces; the pipeline retries the batch
                job_id_prefix="syncd_",
                timeout=self.request_timeout,
            )
            return [tuple(row.values()) for row in self._wait(job)]
        except google_cloud.api_errors() as exc:
            raise map_bigquery_error(exc, action) from exc

    def load(
        self,
        uri: str,
        table: bigquery.TableReference,
        schema: Sequence[tuple[str, str]],
        fmt: StagedFormat,
        job_id: str,
        rows: int,
        staged_rows: Callable[[], int | None],
    ) -> None:
        """Load `uri` into `table` (replacing it) with a job `job_id` (or its next free
        suffix), attaching to an earlier job that did this; `staged_rows()` must then be
        `rows`."""
        action = f"load {uri} into {table.table_id}"
        for n in range(MAX_JOB_ID_SUFFIX):
            current = job_id if n == 0 else f"{job_id}_{n}"
            job = self._existing_job(current, action)
            if job is not None and job.state != "DONE":
                log.info("attaching to a running load job", job_id=current)
            elif job is not None:
                if job.error_result is None and staged_rows() == rows:
                    log.info("attached to a finished load job", job_id=current)
                    return
                continue  # failed, or its table is gone: it cannot run again under this id
            else:
                job = self._submit_load(uri, table, schema, fmt, current, action)
            try:
                self._wait(job)
            except google_cloud.api_errors() as exc:
                raise map_bigquery_error(exc, f"{action} (job {current})") from exc
            staged = staged_rows()
            if staged != rows:
                raise TerminalLoadError(
                    f"{action}: the staging table holds {staged} rows, the batch says {rows}"
                )
            return
        raise TerminalLoadError(f"{action}: {MAX_JOB_ID_SUFFIX} earlier load jobs; giving up")

    def _existing_job(self, job_id: str, action: str) -> bigquery.LoadJob | None:
        from google.api_core import exceptions as api_exceptions
        from google.cloud import bigquery

        try:
            job = self._client.get_job(
                job_id, location=self._location(), retry=self.retry, timeout=self.request_timeout
            )
        except api_exceptions.NotFound:
            return None
        except google_cloud.api_errors() as exc:
            raise map_bigquery_error(exc, f"{action}: look up job {job_id}") from exc
        if not isinstance(job, bigquery.LoadJob):
            raise TerminalLoadError(f"{action}: job id {job_id} belongs to another kind of job")
        return job

    def _submit_load(
        self,
        uri: str,
        table: bigquery.TableReference,
        schema: Sequence[tuple[str, str]],
        fmt: StagedFormat,
        job_id: str,
        action: str,
    ) -> bigquery.LoadJob:
        from google.api_core import exceptions as api_exceptions
        from google.cloud import bigquery

        config = bigquery.LoadJobConfig(
            schema=[bigquery.SchemaField(name, type_) for name, type_ in schema],
            source_format=SOURCE_FORMATS[fmt],
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        )
        try:
            return self._client.load_table_from_uri(
                uri,
                table,
                job_id=job_id,
                location=self._location(),
                job_config=config,
                retry=self.retry,
                timeout=self.request_timeout,
            )
        except api_exceptions.Conflict:
            log.info("load job already submitted; attaching", job_id=job_id)
            job = self._existing_job(job_id, action)
            if job is None:
                raise TransientLoadError(
                    f"{action}: job {job_id} conflicts but cannot be found"
                ) from None
            return job
        except google_cloud.api_errors() as exc:
            raise map_bigquery_error(exc, f"{action} (job {job_id})") from exc

    def _wait(self, job: Any) -> Any:
        """`job.result()` within `job_timeout` in all, each request within `request_timeout`.

        The client applies the timeout given to `result` to each request of the wait as well
        (a query job's poll would otherwise be one request allowed the whole `job_timeout`), so
        the wait is made of slices of at most `request_timeout`; a slice that ends with the job
        still running starts the next one.
        """
        deadline = time.monotonic() + self.job_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise concurrent.futures.TimeoutError(
                    f"job {job.job_id} did not finish within {self.job_timeout:.0f}s"
                )
            try:
                return job.result(retry=self.retry, timeout=min(self.request_timeout, remaining))
            except concurrent.futures.TimeoutError:
                if job.state == "DONE":
                    raise  # the job finished: a request for its results timed out
