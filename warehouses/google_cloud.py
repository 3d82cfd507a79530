"""The Google Cloud plumbing shared by the GCS stage and BigQuery: one client factory, one
transient-error predicate, one retry.

Transient (worth retrying with backoff), as Google documents it (docs/cloud-conformance.md,
"Google Cloud: transient errors"):
- HTTP 408, 429 and any 5xx ("Retry strategy", Cloud Storage; "Error messages", BigQuery:
  "If you receive a 5xx response code, then retry the request later");
- the BigQuery error reasons `rateLimitExceeded` (a short-term limit: retry with exponential
  backoff), `quotaExceeded` (a longer-term limit: wait and try again, so syncd's retry of the
  batch, not a failure), `backendError`, `internalError`, `jobBackendError`,
  `jobInternalError` (retry, a failed job under a new job id) and `tableUnavailable`, whatever
  the status they come with (BigQuery sends rate limits as 403, job errors as 400);
- a DML statement aborted by a concurrent update of its table ("Could not serialize access to
  table ... due to concurrent update": retry);
- socket timeouts and dropped connections: `requests`' connection errors and timeouts, the
  builtins `ConnectionError` and `TimeoutError` (`concurrent.futures.TimeoutError` on 3.10),
  google-auth's `TransportError` (a token refresh that could not reach the server), and a
  resumable upload's `InvalidResponse` carrying one of the statuses above;
- a `RetryError`: the client's own retry gave up on errors of this list.
Everything else (no such bucket or dataset, no permission, a bad statement) is terminal.

Timeouts: every HTTP request is bounded by `REQUEST_TIMEOUT` (the clients' own default is none:
an endpoint that accepts the connection and never answers would block syncd forever, whatever
the retry deadline, which is only checked between attempts); a retried call by
`RETRY_DEADLINE` in all.
"""

from __future__ import annotations

import concurrent.futures
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from google.api_core.retry import Retry

# google.* is imported where it is used: importing this module needs no Google library.

#: Seconds one HTTP request may take (connect, read).
REQUEST_TIMEOUT = 120.0
#: Seconds a retried API call may take in all (read when a retry is made: tests shorten it).
RETRY_DEADLINE = 600.0

TRANSIENT_STATUS = frozenset({408, 429})  # and every 5xx
TRANSIENT_REASONS = frozenset(
    {
        "rateLimitExceeded",
        "quotaExceeded",
        "backendError",
        "internalError",
        "jobBackendError",
        "jobInternalError",
        "tableUnavailable",
    }
)
_CONCURRENT_UPDATE = re.compile(r"concurrent update|aborted due to concurrent", re.IGNORECASE)

Client = TypeVar("Client")


def _transient_status(status: object) -> bool:
    return isinstance(status, int) and (status in TRANSIENT_STATUS or 500 <= status <= 599)


def _reasons(exc: BaseException) -> set[str]:
    """The `reason` of each entry of an API error's error list."""
    errors = getattr(exc, "errors", None) or []
    return {str(e.get("reason", "")) for e in errors if isinstance(e, Mapping)}


def is_transient(exc: BaseException) -> bool:
    """THE predicate: worth retrying (see the module's doc for the documented set)."""
    import requests
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    if isinstance(exc, api_exceptions.GoogleAPICallError):
        return (
            _transient_status(exc.code)
            or bool(_reasons(exc) & TRANSIENT_REASONS)
            or bool(_CONCURRENT_UPDATE.search(exc.message or ""))
        )
    if isinstance(
        exc,
        (
            api_exceptions.RetryError,
            auth_exceptions.TransportError,
            concurrent.futures.TimeoutError,
            ConnectionError,
            TimeoutError,
        ),
    ):
        return True
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return True
    # google-resumable-media's InvalidResponse (a resumable upload's chunk) carries the response
    return _transient_status(getattr(getattr(exc, "response", None), "status_code", None))


def default_retry(deadline: float | None = None) -> Retry:
    """THE retry: exponential backoff (1 s doubling to 32 s, BigQuery's SLA back-off) on
    transient errors for at most `deadline` seconds in all (default `RETRY_DEADLINE`)."""
    from google.api_core.retry import Retry

    return Retry(
        predicate=is_transient,
        initial=1.0,
        maximum=32.0,
        multiplier=2.0,
        timeout=RETRY_DEADLINE if deadline is None else deadline,
    )


def api_errors() -> tuple[type[BaseException], ...]:
    """What a google-cloud client call may raise: its API errors, auth errors, timeouts and
    the HTTP library's errors (what an error mapper catches)."""
    import requests
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    return (
        api_exceptions.GoogleAPICallError,
        api_exceptions.RetryError,
        auth_exceptions.GoogleAuthError,
        concurrent.futures.TimeoutError,
        ConnectionError,
        TimeoutError,
        requests.RequestException,
    )


def error_text(exc: BaseException) -> str:
    """An error's own message (an API error's without the request URL), never empty."""
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


def make_client(
    client_class: Callable[..., Client],
    *,
    project: str | None,
    endpoint_url: str,
    no_credentials: Callable[[str], Exception],
    **options: Any,
) -> Client:
    """A google-cloud client (`storage.Client`, `bigquery.Client`): Application Default
    Credentials, or anonymous for an emulator `endpoint_url`. Without credentials,
    `no_credentials(text)` is raised (the caller's terminal error)."""
    from google.auth import exceptions as auth_exceptions

    if endpoint_url:
        from google.auth.credentials import AnonymousCredentials

        options["client_options"] = {"api_endpoint": endpoint_url}
        options["credentials"] = AnonymousCredentials()  # type: ignore[no-untyped-call]
    try:
        return client_class(project=project or None, **options)
    except auth_exceptions.DefaultCredentialsError as exc:
        raise no_credentials(
            "no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS or run where "
            "Application Default Credentials exist"
        ) from exc
