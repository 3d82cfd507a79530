"""The Google Cloud plumbing shared by the GCS stage and BigQuery (`warehouses.google_cloud`):
the one transient-error predicate (table-driven, with the documented set it follows), the one
retry, the one client factory."""

from __future__ import annotations

import concurrent.futures
import errno
from pathlib import Path

import pytest
import requests
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud import bigquery, storage  # type: ignore[attr-defined]
from google.resumable_media.common import InvalidResponse

from syncd.errors import (
    TerminalLoadError,
    TerminalStageError,
    TransientLoadError,
    TransientStageError,
)
from warehouses import google_cloud
from warehouses.bigquery import BigQueryWarehouse
from warehouses.bigquery_jobs import map_bigquery_error
from warehouses.gcs import GCSStage, map_gcs_error

ENDPOINT = "http://127.0.0.1:9"  # never contacted: the clients connect lazily


def status(code: int, reason: str = "", message: str = "error") -> Exception:
    """The API error google-api-core raises for an HTTP status (with a BigQuery reason)."""
    errors = [{"reason": reason, "message": message}] if reason else []
    return api_exceptions.from_http_status(code, message, errors=errors)


def upload_response(code: int) -> Exception:
    """What a resumable upload's chunk raises on an unexpected status."""
    response = requests.Response()
    response.status_code = code
    return InvalidResponse(response, "unexpected status")


#: (error, transient?): "Retry strategy" (Cloud Storage) and "Error messages" / "Troubleshoot
#: quota and limit errors" (BigQuery); docs/cloud-conformance.md cites them.
CASES: list[tuple[str, BaseException, bool]] = [
    ("408", status(408), True),
    ("429", status(429), True),
    ("500", status(500), True),
    ("501", status(501), True),
    ("502", status(502), True),
    ("503", status(503), True),
    ("504", status(504), True),
    ("599", status(599), True),
    ("403 rateLimitExceeded", status(403, "rateLimitExceeded"), True),
    ("403 quotaExceeded", status(403, "quotaExceeded"), True),
    ("500 backendError", status(500, "backendError"), True),
    ("500 internalError", status(500, "internalError"), True),
    ("400 jobBackendError", status(400, "jobBackendError"), True),
    ("400 jobInternalError", status(400, "jobInternalError"), True),
    ("400 tableUnavailable", status(400, "tableUnavailable"), True),
    (
        "400 concurrent update",
        status(
            400, "invalidQuery", "Could not serialize access to table t due to concurrent update"
        ),
        True,
    ),
    (
        "400 aborted transaction",
        status(400, message="Transaction is aborted due to concurrent update"),
        True,
    ),
    ("ConnectionResetError", ConnectionResetError(errno.ECONNRESET, "reset"), True),
    ("ConnectionRefusedError", ConnectionRefusedError(errno.ECONNREFUSED, "refused"), True),
    ("TimeoutError", TimeoutError("timed out"), True),
    ("futures.TimeoutError", concurrent.futures.TimeoutError("job wait"), True),
    ("requests.ConnectionError", requests.ConnectionError("dropped"), True),
    ("requests.ReadTimeout", requests.ReadTimeout("read timed out"), True),
    ("auth TransportError", auth_exceptions.TransportError("token endpoint unreachable"), True),
    ("RetryError", api_exceptions.RetryError("deadline exceeded", ConnectionError()), True),
    ("upload chunk 503", upload_response(503), True),
    ("upload chunk 429", upload_response(429), True),
    ("400", status(400), False),
    ("400 invalid", status(400, "invalid", "bad value in row 7"), False),
    ("400 invalidQuery", status(400, "invalidQuery", "Syntax error"), False),
    ("401", status(401), False),
    ("403 accessDenied", status(403, "accessDenied"), False),
    ("404 notFound", status(404, "notFound"), False),
    ("409 duplicate", status(409, "duplicate"), False),
    ("412", status(412), False),
    ("upload chunk 404", upload_response(404), False),
    ("auth RefreshError", auth_exceptions.RefreshError("invalid_grant"), False),
    ("requests.HTTPError", requests.HTTPError("no response"), False),
    ("ValueError", ValueError("bad"), False),
]


@pytest.mark.parametrize(("error", "transient"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_predicate_follows_the_documented_set(error: BaseException, transient: bool) -> None:
    assert google_cloud.is_transient(error) is transient


@pytest.mark.parametrize(("error", "transient"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_gcs_and_bigquery_agree_on_what_is_transient(error: Exception, transient: bool) -> None:
    load, stage = map_bigquery_error(error, "load"), map_gcs_error(error, "upload")
    assert (isinstance(load, TransientLoadError), isinstance(stage, TransientStageError)) == (
        transient,
        transient,
    )
    assert isinstance(load, TransientLoadError | TerminalLoadError)
    assert isinstance(stage, TransientStageError | TerminalStageError)


def test_the_retry_uses_the_predicate_and_the_deadline_of_the_moment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(google_cloud, "RETRY_DEADLINE", 7.0)
    retry = google_cloud.default_retry()
    assert (retry._predicate, retry._timeout, google_cloud.default_retry(2.0)._timeout) == (
        google_cloud.is_transient,
        7.0,
        2.0,
    )


def test_the_stage_and_the_warehouse_retry_with_the_one_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(google_cloud, "RETRY_DEADLINE", 3.0)
    stage = GCSStage("bucket", endpoint_url=ENDPOINT)
    warehouse = BigQueryWarehouse("p", "ds", endpoint_url=ENDPOINT)
    retries = [(r._predicate, r._timeout) for r in (stage.retry, warehouse.retry)]
    assert retries == [(google_cloud.is_transient, 3.0)] * 2


def test_an_emulator_endpoint_gets_anonymous_clients_on_that_endpoint() -> None:
    made = [
        google_cloud.make_client(
            storage.Client, project="p", endpoint_url=ENDPOINT, no_credentials=TerminalStageError
        ),
        google_cloud.make_client(
            bigquery.Client,
            project="p",
            endpoint_url=ENDPOINT,
            no_credentials=TerminalLoadError,
            location="EU",
        ),
    ]
    assert [(c._connection.API_BASE_URL, c.project) for c in made] == [(ENDPOINT, "p")] * 2
    assert made[1].location == "EU"


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: GCSStage("bucket", project="p"), TerminalStageError),
        (lambda: BigQueryWarehouse("p", "ds"), TerminalLoadError),
    ],
    ids=["gcs", "bigquery"],
)
def test_missing_credentials_are_terminal_and_say_what_to_set(
    make: object, error: type[Exception], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(
        error, match="no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS"
    ):
        make()  # type: ignore[operator]
