"""The one error tree of syncd.

Every foreign exception (httpx, a database driver, a cloud SDK) is translated into one of
these where it enters, so the core only ever decides on `transient`:

    SyncdError
     ├── ConfigError                 bad settings; carries one message per problem
     ├── SourceError                 the FullStory export API
     │    ├── TransientSourceError   429, 5xx, 499, connection failures, truncated downloads
     │    │    ├── RateLimited       429 with the server's Retry-After
     │    │    └── ExportPending     an export operation still PENDING when the wait ends
     │    └── TerminalSourceError    other 4xx, FAILED operations
     │         └── AuthError         401 / 403
     ├── TransformError              the downloaded file as a whole cannot be read
     ├── StageError                  local folder, S3, GCS
     │    ├── TransientStageError
     │    └── TerminalStageError
     ├── LoadError                   the warehouse
     │    ├── TransientLoadError
     │    └── TerminalLoadError
     └── LockedError                 another syncd holds the writer lock or lease

Library code raises these; only `syncd.cli` turns them into exit codes.
"""

from __future__ import annotations


class SyncdError(Exception):
    """Base of every error syncd raises on purpose."""

    transient: bool = False


class ConfigError(SyncdError):
    """The configuration is invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class SourceError(SyncdError):
    """The export API failed. `status` is the HTTP status when there was a response."""

    status: int | None = None


class TransientSourceError(SourceError):
    """Worth retrying: rate limits, server errors, dropped or truncated transfers."""

    transient = True


class RateLimited(TransientSourceError):
    """HTTP 429; `retry_after` is the server's wait in seconds, when it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ExportPending(TransientSourceError):
    """An export operation was still PENDING (or RUNNING) when its wait ran out."""


class TerminalSourceError(SourceError):
    """Retrying will not help: bad request, failed export operation."""


class ExportFailed(TerminalSourceError):
    """An export operation ended FAILED: polling it again cannot help, a new export may."""


class AuthError(TerminalSourceError):
    """The API key is missing, wrong, or lacks the export permission."""


class TransformError(SyncdError):
    """The downloaded file as a whole cannot be read (not gzip, not JSON at all)."""

    transient = True  # a fresh download usually cures a damaged file


class StageError(SyncdError):
    """Staging files (local folder, S3, GCS) failed."""


class TransientStageError(StageError):
    transient = True


class TerminalStageError(StageError):
    pass


class LoadError(SyncdError):
    """The warehouse failed to load or commit a batch."""


class TransientLoadError(LoadError):
    transient = True


class TerminalLoadError(LoadError):
    pass


class NotCreatedError(TerminalLoadError):
    """A read-only look at a warehouse that was never written (e.g. no DuckDB file yet):
    nothing is loaded, which `status` reports as such rather than as a failure."""


class LockedError(SyncdError):
    """Another syncd process is the writer; the message names it."""


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same step may succeed."""
    return isinstance(exc, SyncdError) and exc.transient
