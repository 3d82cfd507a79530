"""Google Cloud Storage as the stage (Provider "gcp"), and the GCSOnly checkpoint.

Objects live at `gs://<bucket>/<prefix><name>`, where the prefix is the path part of hauser's
`[gcs] Bucket` ("bucket/sub/path") followed by `FilePrefix`. The StorageOnly checkpoint is the
object `<prefix>.sync.hauser` holding the RFC 3339 end time, as hauser kept it.

Uploads are resumable (chunked): a dropped connection resumes from the last chunk instead of
starting over, which matters for multi-GB batches. A GCS object write is atomic: readers see
the old object or the new one, never a part, so the checkpoint needs no temporary name.

Every google-cloud-storage exception is translated by `map_gcs_error`: 408, 429, 5xx and
connection failures are transient; everything else (no bucket, no permission) is terminal.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from syncd.errors import StageError, TerminalStageError, TransientStageError
from warehouses.local import stage_error
from warehouses.plugin import lazy_import

if TYPE_CHECKING:
    from google.api_core import exceptions as api_exceptions
    from google.api_core.retry import Retry
    from google.auth import exceptions as auth_exceptions
    from google.cloud import storage  # type: ignore[attr-defined]
else:  # the gcp extra is imported when first used, not when the plugin is loaded
    api_exceptions = lazy_import("google.api_core.exceptions")
    auth_exceptions = lazy_import("google.auth.exceptions")

    def Retry(*args: Any, **kwargs: Any) -> Any:
        from google.api_core.retry import Retry

        return Retry(*args, **kwargs)


log = structlog.get_logger(__name__)

SCHEME = "gs://"
#: Resumable-upload chunk: a multiple of 256 KiB; a failed chunk is resent, not the file.
CHUNK_SIZE = 16 * 1024 * 1024
#: Seconds one HTTP request may take (connect, read), and the whole retried call.
REQUEST_TIMEOUT = 120.0
RETRY_DEADLINE = 600.0

_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_CONTENT_TYPES = {".parquet": "application/vnd.apache.parquet", ".gz": "application/gzip"}


def _is_transient(exc: BaseException) -> bool:
    """Worth retrying: rate limits, server errors, dropped connections, timeouts."""
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        return exc.code in _TRANSIENT_STATUS
    if isinstance(exc, api_exceptions.RetryError):
        return True
    if isinstance(exc, auth_exceptions.TransportError):
        return True
    try:
        import requests
    except ImportError:  # pragma: no cover - google-cloud-storage depends on requests
        return isinstance(exc, (ConnectionError, TimeoutError))
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return True
    status = getattr(getattr(exc, "response", None), "status_code", None)  # resumable media
    return status in _TRANSIENT_STATUS or isinstance(exc, (ConnectionError, TimeoutError))


def default_retry(deadline: float | None = None) -> Retry:
    """Exponential backoff on transient errors, for at most `deadline` seconds in all
    (default `RETRY_DEADLINE`)."""
    return Retry(
        predicate=_is_transient,
        initial=1.0,
        maximum=32.0,
        multiplier=2.0,
        timeout=RETRY_DEADLINE if deadline is None else deadline,
    )


def map_gcs_error(exc: Exception, action: str) -> StageError:
    """The one place google-cloud-storage's exceptions become syncd's StageError."""
    if isinstance(exc, OSError) and not _is_transient(exc) and exc.errno is not None:
        return stage_error(exc, action)  # the local file to upload
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    text = f"{action}: {message}"
    if _is_transient(exc):
        return TransientStageError(text)
    return TerminalStageError(text)


class GCSStage:
    """Stage files in a GCS bucket; implements `warehouses.base.Stage`."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: storage.Client | None = None,
        project: str | None = None,
        endpoint_url: str = "",
        timeout: float = REQUEST_TIMEOUT,
        retry: Retry | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        if not bucket or "/" in bucket:
            raise TerminalStageError(f"GCS bucket name {bucket!r} is not a bucket name")
        self.bucket_name = bucket
        self.prefix = prefix
        self.timeout = timeout
        self.retry = retry or default_retry()
        self.chunk_size = chunk_size
        self._client = client or _make_client(project, endpoint_url)
        self._bucket = self._client.bucket(bucket)

    def __repr__(self) -> str:
        return f"GCSStage(bucket={self.bucket_name!r}, prefix={self.prefix!r})"

    def uri_for(self, name: str) -> str:
        """`gs://bucket/<prefix><name>`."""
        return f"{SCHEME}{self.bucket_name}/{self._key_for(name)}"

    def put(self, local_path: Path, name: str) -> str:
        """Upload `local_path` as `<prefix><name>` (resumable); return its gs:// URI."""
        key = self._key_for(name)
        blob = self._bucket.blob(key, chunk_size=self.chunk_size)
        content_type = _CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")
        try:
            blob.upload_from_filename(
                str(local_path),
                content_type=content_type,
                timeout=self.timeout,
                retry=self.retry,
            )
        except Exception as exc:
            raise map_gcs_error(exc, f"cannot upload {local_path} to {self.uri_for(name)}") from exc
        uri = self.uri_for(name)
        log.debug("staged", uri=uri)
        return uri

    def delete(self, uri: str) -> None:
        """Delete a staged object of this stage; a missing object is fine."""
        key = self._key_of(uri)
        try:
            self._bucket.blob(key).delete(timeout=self.timeout, retry=self.retry)
        except api_exceptions.NotFound:
            return
        except Exception as exc:
            raise map_gcs_error(exc, f"cannot delete {uri}") from exc

    def read_object(self, name: str) -> bytes | None:
        """The bytes of object `<prefix><name>`, or None when there is no such object."""
        try:
            data: bytes = self._bucket.blob(self._key_for(name)).download_as_bytes(
                timeout=self.timeout, retry=self.retry
            )
        except api_exceptions.NotFound:
            return None
        except Exception as exc:
            raise map_gcs_error(exc, f"cannot read {self.uri_for(name)}") from exc
        return data

    def write_object(self, name: str, data: bytes) -> None:
        """Replace object `<prefix><name>` (a GCS write is atomic)."""
        blob = self._bucket.blob(self._key_for(name))
        try:
            blob.upload_from_string(
                data, content_type="text/plain", timeout=self.timeout, retry=self.retry
            )
        except Exception as exc:
            raise map_gcs_error(exc, f"cannot write {self.uri_for(name)}") from exc

    def check(self) -> None:
        """The bucket exists and an object can be written, read and deleted under the prefix."""
        try:
            exists = self._bucket.exists(timeout=self.timeout, retry=self.retry)
        except Exception as exc:
            raise map_gcs_error(exc, f"cannot reach bucket {self.bucket_name}") from exc
        if not exists:
            raise TerminalStageError(f"GCS bucket {self.bucket_name!r} does not exist")
        probe = self._bucket.blob(f"{self.prefix}.syncd-probe-{secrets.token_hex(6)}")
        try:
            probe.upload_from_string(b"syncd", timeout=self.timeout, retry=self.retry)
            probe.download_as_bytes(timeout=self.timeout, retry=self.retry)
            probe.delete(timeout=self.timeout, retry=self.retry)
        except Exception as exc:
            raise map_gcs_error(
                exc, f"cannot write, read and delete objects in gs://{self.bucket_name}/"
            ) from exc

    def _key_for(self, name: str) -> str:
        key = self.prefix + name
        if not name or name.startswith("/") or "\x00" in key or ".." in key.split("/"):
            raise TerminalStageError(f"object name {key!r} must be a relative name in the bucket")
        return key

    def _key_of(self, uri: str) -> str:
        """The object key of a gs:// URI of this stage; anything else is refused."""
        head = f"{SCHEME}{self.bucket_name}/"
        key = uri[len(head) :] if uri.startswith(head) else ""
        if not key or not key.startswith(self.prefix) or ".." in key.split("/"):
            raise TerminalStageError(
                f"refusing to delete {uri!r}: it is not a staged object under {head}{self.prefix}"
            )
        return key


def split_uri(uri: str) -> tuple[str, str]:
    """("bucket", "key") of `gs://bucket/key`."""
    if not uri.startswith(SCHEME):
        raise TerminalStageError(f"{uri!r} is not a gs:// URI")
    bucket, _, key = uri[len(SCHEME) :].partition("/")
    if not bucket or not key:
        raise TerminalStageError(f"{uri!r} does not name an object")
    return bucket, key


def _make_client(project: str | None, endpoint_url: str) -> storage.Client:
    """A storage client: Application Default Credentials, or anonymous for an emulator."""
    from google.cloud import storage  # type: ignore[attr-defined]

    kwargs: dict[str, Any] = {}
    if endpoint_url:
        from google.auth.credentials import AnonymousCredentials

        kwargs["client_options"] = {"api_endpoint": endpoint_url}
        kwargs["credentials"] = AnonymousCredentials()  # type: ignore[no-untyped-call]
    try:
        return storage.Client(project=project or None, **kwargs)
    except auth_exceptions.DefaultCredentialsError as exc:
        raise TerminalStageError(
            "no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS or run where "
            "Application Default Credentials exist"
        ) from exc


# --- the plugin declarations (warehouses.plugin): the [gcs] section and the stage --------------

from dataclasses import dataclass as _dataclass  # noqa: E402

from syncd.config.keys import Key, Kind  # noqa: E402
from warehouses.plugin import ConfigSection, StagePlugin, bucket_parts  # noqa: E402

if TYPE_CHECKING:
    from syncd.config.model import Settings


@_dataclass(frozen=True)
class GCSSettings:
    bucket: str
    endpoint_url: str

    @property
    def bucket_name(self) -> str:
        return bucket_parts(self.bucket)[0]

    @property
    def key_prefix(self) -> str:
        return bucket_parts(self.bucket)[1]


SECTION = ConfigSection(
    "gcs",
    'Google Cloud Storage, where files are staged for BigQuery (Provider = "gcp").',
    (
        Key(
            "gcs",
            "Bucket",
            Kind.STRING,
            "",
            'Bucket for staged files. Required with Provider "gcp".',
            hauser=True,
        ),
        Key(
            "gcs", "EndpointURL", Kind.URL, "", "Custom GCS endpoint (an emulator); empty = Google."
        ),
        Key(
            "gcs",
            "GCSOnly",
            Kind.BOOL,
            None,
            "Stage to GCS only.",
            deprecated='ORed into StorageOnly (with Provider "gcp", as in hauser)',
            hauser=True,
        ),
    ),
    GCSSettings,
    required=("Bucket",),
)


def _build_stage(settings: Settings) -> GCSStage:
    gcs: GCSSettings = settings.section("gcs")
    from warehouses.registry import provider

    # the client's default project: the one of the warehouse loading from here, if it names one
    warehouse = provider(settings.provider).section
    project = getattr(settings.section(warehouse.name), "project", "") if warehouse else ""
    return GCSStage(
        gcs.bucket_name,
        gcs.key_prefix + settings.file_prefix,
        project=project or None,
        endpoint_url=gcs.endpoint_url,
    )


def _describe(settings: Settings) -> str:
    return f"files in gs://{settings.section('gcs').bucket}"


STAGE = StagePlugin("gcs", SECTION, _build_stage, storage_only_key="GCSOnly", describe=_describe)
