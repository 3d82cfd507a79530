"""The FullStory export APIs: client, retries, rate limit, checked downloads, fetcher.

ExportClient     segment exports (create, poll, results URL, download) and legacy bundles
call_with_retry  the one retry loop (RetryPolicy: capped backoff, jitter, Retry-After)
RateLimiter      client-side sliding window (legacy bundle downloads: 2 a minute)
write_body       streams a response to a spool file, refusing short or corrupt bodies
OperationStore   in-flight export operations, persisted so a restart resumes them
Fetcher          "fetch this batch to this file", composed of the above
"""

from syncd.batch import Bundle
from syncd.sources.client import (
    DEFAULT_API_URL,
    DEFAULT_LEGACY_API_URL,
    ExportClient,
    Operation,
    SignedUrlRefused,
    map_httpx_error,
    source_retry_reason,
)
from syncd.sources.download import Download, TruncatedDownload, write_body
from syncd.sources.fetcher import Fetcher, FetchResult
from syncd.sources.operations import OperationStore, PendingOperation
from syncd.sources.ratelimit import RateLimiter
from syncd.sources.retry import RetryPolicy, call_with_retry, parse_retry_after

__all__ = [
    "DEFAULT_API_URL",
    "DEFAULT_LEGACY_API_URL",
    "Bundle",
    "Download",
    "ExportClient",
    "FetchResult",
    "Fetcher",
    "Operation",
    "OperationStore",
    "PendingOperation",
    "RateLimiter",
    "RetryPolicy",
    "SignedUrlRefused",
    "TruncatedDownload",
    "call_with_retry",
    "map_httpx_error",
    "parse_retry_after",
    "source_retry_reason",
    "write_body",
]
