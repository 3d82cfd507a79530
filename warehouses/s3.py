"""Amazon S3 (or an S3-compatible store) as the stage, and the StorageOnly checkpoint in it.

Layout: the bucket setting may carry a path, as hauser allowed (`bucket/sub/path`, hauser
issue #34); every object is `s3://bucket/<sub/path/><FilePrefix><name>`, and the StorageOnly
checkpoint is `<sub/path/><FilePrefix>.sync.hauser` holding the RFC 3339 end time, as hauser
wrote it.

Uploads stream from disk with boto3's managed transfer (multipart above `MULTIPART_THRESHOLD`,
parts of `MULTIPART_CHUNK`), so a multi-GB file never sits in memory; S3 makes an object
visible whole or not at all, so `put` and `write_object` are atomic. Credentials come from
the standard AWS chain (environment, profile, instance or task role); this module never sees
or logs them. Every botocore/boto3 error is mapped in `map_s3_error`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import structlog

from syncd.errors import StageError, TerminalStageError, TransientStageError
from warehouses.plugin import bucket_parts

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = structlog.get_logger(__name__)

MULTIPART_THRESHOLD = 16 * 1024 * 1024
MULTIPART_CHUNK = 16 * 1024 * 1024
DEFAULT_TIMEOUT = 300.0
_PROBE_NAME = ".syncd-write-probe"

# S3 error codes a later attempt may not meet: throttling, server trouble, clock skew.
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
        "502",
        "504",
    }
)
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def map_s3_error(exc: Exception, action: str) -> StageError:
    """The one place boto3/botocore errors become syncd's: transient or terminal."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        text = str(error.get("Message", "")) or code
        message = f"{action}: {code}: {text}"
        if code in _TRANSIENT_CODES:
            return TransientStageError(message)
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return TerminalStageError(f"{message} (check the credentials and bucket policy)")
        return TerminalStageError(message)
    if isinstance(exc, S3UploadFailedError):
        # boto3 folds the underlying ClientError into its text
        text = str(exc)
        transient = any(f"({code})" in text for code in _TRANSIENT_CODES)
        kind = TransientStageError if transient else TerminalStageError
        return kind(f"{action}: {text}")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return TerminalStageError(
            f"{action}: no AWS credentials found (environment, profile or instance role)"
        )
    if isinstance(exc, ConnectionError):  # endpoint unreachable, timeouts, dropped connections
        return TransientStageError(f"{action}: {exc}")
    if isinstance(exc, BotoCoreError):
        return TerminalStageError(f"{action}: {exc}")
    if isinstance(exc, OSError):
        return TransientStageError(f"{action}: {exc.strerror or exc}")
    return TerminalStageError(f"{action}: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        if not uri.startswith("s3://"):
            raise TerminalStageError(f"{uri!r} is not an s3:// URI")
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not bucket or not key:
            raise TerminalStageError(f"{uri!r} does not name a bucket and an object")
        return cls(bucket, key)


def split_bucket(bucket: str) -> tuple[str, str]:
    """hauser's `bucket/sub/path` as (bucket name, key prefix "sub/path/" or "")."""
    name, prefix = bucket_parts(bucket)
    if not name:
        raise TerminalStageError("[s3] Bucket is empty")
    return name, prefix


class S3Stage:
    """Stage files in S3; implements `warehouses.base.Stage`."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        region: str = "",
        endpoint_url: str = "",
        server_side_encryption: str = "",
        kms_key_id: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        client: S3Client | None = None,
    ) -> None:
        self.bucket, self.key_prefix = split_bucket(bucket)
        self.prefix = prefix
        self.region = region
        self.endpoint_url = endpoint_url
        self.server_side_encryption = server_side_encryption
        self.kms_key_id = kms_key_id
        self.timeout = timeout
        self._client = client or self._make_client()

    def __repr__(self) -> str:
        where = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return (
            f"S3Stage(bucket={self.bucket!r}, key_prefix={self.key_prefix!r}, "
            f"prefix={self.prefix!r}{where})"
        )

    @property
    def client(self) -> S3Client:
        return self._client

    def key_for(self, name: str) -> str:
        """The object key of `name`: `<sub/path/><FilePrefix><name>`, refusing escapes."""
        key = self.key_prefix + self.prefix + name
        parts = PurePosixPath(key).parts
        if not name or name.startswith("/") or ".." in parts or "\x00" in key or "\\" in key:
            raise TerminalStageError(f"object name {self.prefix + name!r} is not a plain name")
        return key

    def uri_for(self, name: str) -> str:
        return S3Location(self.bucket, self.key_for(name)).uri

    # --- Stage --------------------------------------------------------------------------------

    def put(self, local_path: Path, name: str) -> str:
        """Upload `local_path` as `<prefix><name>` (multipart when large); return its s3:// URI."""
        from boto3.s3.transfer import TransferConfig

        location = S3Location(self.bucket, self.key_for(name))
        config = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=MULTIPART_CHUNK,
            use_threads=True,
            max_concurrency=4,
        )
        try:
            self._client.upload_file(
                str(local_path),
                location.bucket,
                location.key,
                ExtraArgs=self._put_args(),
                Config=config,
            )
        except Exception as exc:
            raise map_s3_error(exc, f"cannot upload {local_path} to {location.uri}") from exc
        log.debug("staged", uri=location.uri)
        return location.uri

    def delete(self, uri: str) -> None:
        """Remove a staged object; a missing one is fine, one outside the stage is refused."""
        location = S3Location.parse(uri)
        if location.bucket != self.bucket or not location.key.startswith(self.key_prefix):
            raise TerminalStageError(
                f"refusing to delete {uri!r}: it is not inside s3://{self.bucket}/{self.key_prefix}"
            )
        try:
            self._client.delete_object(Bucket=location.bucket, Key=location.key)
        except Exception as exc:
            if _is_missing(exc):
                return
            raise map_s3_error(exc, f"cannot delete {uri}") from exc

    def read_object(self, name: str) -> bytes | None:
        """The bytes of object `<prefix><name>`, or None when there is no such object."""
        key = self.key_for(name)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            data: bytes = response["Body"].read()
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise map_s3_error(exc, f"cannot read {S3Location(self.bucket, key).uri}") from exc
        return data

    def write_object(self, name: str, data: bytes) -> None:
        """Replace object `<prefix><name>` (one PUT: S3 shows the old or the new, never half)."""
        key = self.key_for(name)
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType="text/plain",
                **self._put_args(),
            )
        except Exception as exc:
            raise map_s3_error(exc, f"cannot write {S3Location(self.bucket, key).uri}") from exc

    def check(self) -> None:
        """The bucket exists and is reachable, and an object can be written and removed."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            if _is_missing(exc) or _code(exc) == "NoSuchBucket":
                raise TerminalStageError(f"S3 bucket {self.bucket!r} does not exist") from exc
            raise map_s3_error(exc, f"cannot reach S3 bucket {self.bucket!r}") from exc
        probe = self.key_for(_PROBE_NAME)
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=probe, Body=b"syncd", **self._put_args()
            )
            self._client.delete_object(Bucket=self.bucket, Key=probe)
        except Exception as exc:
            raise map_s3_error(exc, f"cannot write to s3://{self.bucket}/{probe}") from exc

    # --- internals ----------------------------------------------------------------------------

    def _put_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self.server_side_encryption:
            args["ServerSideEncryption"] = self.server_side_encryption
            if self.server_side_encryption == "aws:kms" and self.kms_key_id:
                args["SSEKMSKeyId"] = self.kms_key_id
        return args

    def _make_client(self) -> S3Client:
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=min(self.timeout, 60.0),
            read_timeout=self.timeout,
            retries={"max_attempts": 5, "mode": "standard"},
            region_name=self.region or None,
        )
        try:
            return boto3.client("s3", endpoint_url=self.endpoint_url or None, config=config)
        except Exception as exc:
            raise map_s3_error(exc, "cannot create the S3 client") from exc


def _code(exc: Exception) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def _is_missing(exc: Exception) -> bool:
    return _code(exc) in _MISSING_CODES


# --- the plugin declarations (warehouses.plugin): the [s3] section and the stage -------------

from datetime import timedelta as _timedelta  # noqa: E402

from syncd.config.keys import Key, Kind  # noqa: E402
from warehouses.plugin import ConfigSection, SettleContext, StagePlugin  # noqa: E402

if TYPE_CHECKING:
    from syncd.config.model import Settings


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    region: str
    timeout: _timedelta
    endpoint_url: str
    server_side_encryption: str
    kms_key_id: str

    @property
    def bucket_name(self) -> str:
        """The bucket without hauser's optional path: "b/sub/path" -> "b"."""
        return split_bucket(self.bucket)[0]

    @property
    def key_prefix(self) -> str:
        """The path part of `bucket` as an object-name prefix: "b/sub/path" -> "sub/path/"."""
        return split_bucket(self.bucket)[1]


def _check_s3(ctx: SettleContext) -> None:
    if ctx.ok("[s3] Timeout") and ctx.get("[s3] Timeout") <= _timedelta(0):
        ctx.problem("[s3] Timeout", "must be more than 0s")


def _validate_s3(ctx: SettleContext, provider: str) -> None:
    sse = ctx.get("[s3] ServerSideEncryption")
    if ctx.get("[s3] KMSKeyId") and sse != "aws:kms" and ctx.ok("[s3] KMSKeyId"):
        ctx.problem("[s3] KMSKeyId", "is only used with ServerSideEncryption = 'aws:kms'")


SECTION = ConfigSection(
    "s3",
    'Amazon S3, where files are staged for Redshift (Provider = "aws").',
    (
        Key(
            "s3",
            "Bucket",
            Kind.STRING,
            "",
            'Bucket for staged files, optionally with a path: "bucket/sub/path". Required with '
            'Provider "aws".',
            hauser=True,
        ),
        Key(
            "s3",
            "Region",
            Kind.STRING,
            "",
            "Region of the bucket; empty means the AWS SDK's default.",
            hauser=True,
        ),
        Key(
            "s3",
            "Timeout",
            Kind.DURATION,
            "5m",
            "Limit on one S3 operation.",
            hauser=True,
            new_meaning="hauser had no default",
        ),
        Key(
            "s3",
            "EndpointURL",
            Kind.URL,
            "",
            "Custom S3 endpoint (MinIO, a local stand-in); empty = AWS.",
        ),
        Key(
            "s3",
            "ServerSideEncryption",
            Kind.CHOICE,
            "",
            'Server-side encryption of staged objects: "" (bucket default), "AES256" or "aws:kms".',
            choices=("", "AES256", "aws:kms"),
        ),
        Key("s3", "KMSKeyId", Kind.STRING, "", 'KMS key for ServerSideEncryption = "aws:kms".'),
        Key(
            "s3",
            "S3Only",
            Kind.BOOL,
            None,
            "Stage to S3 only.",
            deprecated='ORed into StorageOnly (with Provider "aws", as in hauser)',
            hauser=True,
        ),
    ),
    S3Settings,
    required=("Bucket",),
    check=_check_s3,
    validate=_validate_s3,
)


def _build_stage(settings: Settings) -> S3Stage:
    s3: S3Settings = settings.section("s3")
    return S3Stage(
        s3.bucket,
        settings.file_prefix,
        region=s3.region,
        endpoint_url=s3.endpoint_url,
        server_side_encryption=s3.server_side_encryption,
        kms_key_id=s3.kms_key_id,
        timeout=s3.timeout.total_seconds(),
    )


def _describe(settings: Settings) -> str:
    return f"files in s3://{settings.section('s3').bucket}"


STAGE = StagePlugin("s3", SECTION, _build_stage, storage_only_key="S3Only", describe=_describe)
