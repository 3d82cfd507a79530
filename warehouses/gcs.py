"""Google Cloud Storage as the stage (Provider "gcp"), and the GCSOnly checkpoint.

Objects live at `gs://<bucket>/<prefix><name>`, where the prefix is the path part of hauser's
`[gcs] Bucket` ("bucket/sub/path") followed by `FilePrefix`. The StorageOnly checkpoint is the
object `<prefix>.sync.hauser` holding the RFC 3339 end time, as hauser kept it.

Uploads are resumable (chunked): a dropped connection resumes from the last chunk instead of
starting over, which matters for multi-GB batches. A GCS object write is atomic: readers see
the old object or the new one, never a part, so the checkpoint needs no temporary name.

Every google-cloud-storage exception is translated by `map_gcs_error`, transient or terminal by
`warehouses.google_cloud.is_transient` (the predicate BigQuery uses too); API calls are retried
with `google_cloud.default_retry`, each request bounded by `google_cloud.REQUEST_TIMEOUT`.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from syncd.errors import StageError, TerminalStageError, TransientStageError
from warehouses import google_cloud
from warehouses.local import stage_error
from warehouses.plugin import lazy_import

if TYPE_CHECKING:
    from google.api_core import exceptions as api_exceptions
    from google.api_core.retry import Retry
    from google.cloud import storage  # type: ignore[attr-defined]
else:  # the gcp extra is imported when first used, not when the plugin is loaded
    api_exceptions = lazy_import("google.api_core.exceptions")

log = structlog.get_logger(__name__)

SCHEME = "gs://"
#: Resumable-upload chunk: a multiple of 256 KiB; a failed chunk is resent, not the file.
CHUNK_SIZE = 16 * 1024 * 1024

_CONTENT_TYPES = {".parquet": "application/vnd.apache.parquet", ".gz": "application/gzip"}


def map_gcs_error(exc: Exception, action: str) -> StageError:
    """The one place google-cloud-storage's exceptions become syncd's StageError."""
    transient = google_cloud.is_transient(exc)
    if isinstance(exc, OSError) and not transient and exc.errno is not None:
        return stage_error(exc, action)  # the local file to upload
    text = f"{action}: {google_cloud.error_text(exc)}"
    return TransientStageError(text) if transient else TerminalStageError(text)


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
        timeout: float = google_cloud.REQUEST_TIMEOUT,
        retry: Retry | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        if not bucket or "/" in bucket:
            raise TerminalStageError(f"GCS bucket name {bucket!r} is not a bucket name")
        self.bucket_name = bucket
        self.prefix = prefix
        self.timeout = timeout
        self.retry = retry or google_cloud.default_retry()
        self.chunk_size = chunk_size
        if client is None:
            from google.cloud import storage  # type: ignore[attr-defined]

            client = google_cloud.make_client(
                storage.Client,
                project=project,
                endpoint_url=endpoint_url,
                no_credentials=TerminalStageError,
            )
        self._client = client
        self._bucket = self._client.bucket(bucket)

    def __repr__(self) -> str:
        return f"GCSStage(bucket={self.bucket_name!r}, prefix={self.prefix!r})"

    def uri_for(self, name: str) -> str:
        """`gs://bucket/<prefix><name>`."""
        return f"{SCHEME}{self.bucket_name}/{self._key_for(name)}"

    def put(self, local_path: Path, name: str) -> str:
        """Upload `local_path` as `<prefix><name>` (resumable); return its gs:// URI."""
        key, uri = self._key_for(name), self.uri_for(name)
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
            raise map_gcs_error(exc, f"cannot upload {local_path} to {uri}") from exc
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
