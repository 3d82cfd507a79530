"""The typed, frozen settings the rest of syncd reads.

Field names are the TOML keys in snake case (`ExportDuration` -> `export_duration`, `[s3]
Bucket` -> `settings.s3.bucket`), so a reader of the config file finds the field at once.
Values are final: defaults applied, deprecated keys folded in, durations as `timedelta`,
`StartTime` as an aware UTC datetime.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from syncd.batch import SourceKind
from syncd.config.keys import KEYS, Key
from syncd.config.secret import MASK, Secret
from syncd.timeutil import format_duration, format_timestamp

ProviderName = Literal["duckdb", "postgres", "local", "aws", "gcp", "snowflake"]
StagedFormatSetting = Literal["auto", "parquet", "csv", "ndjson"]
LogFormat = Literal["auto", "json", "console"]


def _split_bucket(bucket: str) -> tuple[str, str]:
    name, _, path = bucket.strip("/").partition("/")
    return name, f"{path.strip('/')}/" if path.strip("/") else ""


@dataclass(frozen=True)
class HttpHeader:
    key: str
    value: Secret


@dataclass(frozen=True)
class DuckDBSettings:
    path: Path
    lock_wait: timedelta
    reader_window: timedelta
    export_table: str
    sync_table: str
    rejects_table: str


@dataclass(frozen=True)
class PostgresSettings:
    host: str
    port: int
    user: str
    password: Secret
    db: str
    database_schema: str
    export_table: str
    sync_table: str
    rejects_table: str
    ssl_mode: str | None  # None: the adapter decides from the host (default_sslmode)


@dataclass(frozen=True)
class LocalSettings:
    save_dir: Path
    use_start_time: bool


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    region: str
    timeout: timedelta
    endpoint_url: str
    server_side_encryption: str
    kms_key_id: str

    @property
    def bucket_name(self) -> str:
        """The bucket without hauser's optional path: "b/sub/path" -> "b"."""
        return _split_bucket(self.bucket)[0]

    @property
    def key_prefix(self) -> str:
        """The path part of `bucket` as an object-name prefix: "b/sub/path" -> "sub/path/"."""
        return _split_bucket(self.bucket)[1]


@dataclass(frozen=True)
class RedshiftSettings:
    host: str
    port: int
    db: str
    user: str
    password: Secret
    database_schema: str
    export_table: str
    sync_table: str
    rejects_table: str
    credentials: Secret
    iam_role: str
    region: str  # resolved: [s3] Region when not set
    varchar_max: int
    ssl: bool
    statement_timeout: timedelta
    custom_vars_type: Literal["varchar", "super"]

    @property
    def schema(self) -> str | None:
        """The schema to qualify names with; None for hauser's "search_path" (unqualified)."""
        return None if self.database_schema.lower() == "search_path" else self.database_schema


@dataclass(frozen=True)
class GCSSettings:
    bucket: str
    endpoint_url: str

    @property
    def bucket_name(self) -> str:
        return _split_bucket(self.bucket)[0]

    @property
    def key_prefix(self) -> str:
        return _split_bucket(self.bucket)[1]


@dataclass(frozen=True)
class BigQuerySettings:
    project: str
    dataset: str
    export_table: str
    sync_table: str
    rejects_table: str
    partition_expiration: timedelta  # 0 = partitions never expire
    location: str
    clustering: tuple[str, ...]
    require_partition_filter: bool
    endpoint_url: str


@dataclass(frozen=True)
class SnowflakeSettings:
    account: str
    user: str
    password: Secret
    private_key_file: str
    private_key_passphrase: Secret
    role: str
    warehouse: str
    database: str
    database_schema: str
    export_table: str
    sync_table: str
    rejects_table: str
    stage: Literal["s3", "gcs", "internal"]
    storage_integration: str
    aws_key_id: str
    aws_secret_key: Secret
    host: str
    port: int
    protocol: str


@dataclass(frozen=True)
class MetricsSettings:
    address: str  # "off" = no endpoint

    @property
    def bind(self) -> tuple[str, int] | None:
        """(host, port) to listen on, or None when the endpoint is off."""
        if not self.address or self.address.lower() == "off":
            return None
        host, _, port = self.address.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Settings:
    fs_api_token: Secret
    api_url: str
    legacy_api_url: str
    source: SourceKind
    segment_id: str
    include_mobile_apps_fields: bool
    additional_http_headers: tuple[HttpHeader, ...]
    provider: ProviderName
    storage_only: bool  # effective: StorageOnly, S3Only/GCSOnly (as hauser), Provider "local"
    save_as_json: bool
    staged_format: StagedFormatSetting  # "ndjson" when SaveAsJson; "auto" = warehouse's choice
    file_prefix: str
    tmp_dir: Path
    state_dir: Path
    keep_staged_files: bool
    export_duration: timedelta
    export_delay: timedelta
    settle_after: timedelta  # 0: settling off
    start_time: datetime | None  # None = 30 days before now, resolved by the planner
    group_files_by_day: bool
    backoff: timedelta
    backoff_steps_max: int
    poll_interval: timedelta
    api_requests_per_second: int
    operation_timeout: timedelta
    http_timeout: timedelta
    download_timeout: timedelta
    max_batch_attempts: int
    lookahead: int
    held_retry_interval: timedelta
    log_format: LogFormat
    log_level: str
    duckdb: DuckDBSettings
    postgres: PostgresSettings
    local: LocalSettings
    s3: S3Settings
    redshift: RedshiftSettings
    gcs: GCSSettings
    bigquery: BigQuerySettings
    snowflake: SnowflakeSettings
    metrics: MetricsSettings

    def reveal_http_headers(self) -> list[tuple[str, str]]:
        """AdditionalHttpHeader as (name, value) pairs, for the HTTP client only."""
        return [(h.key, h.value.reveal()) for h in self.additional_http_headers]

    def value_of(self, key: Key) -> Any:
        """The settled value of one key of the table (not for deprecated keys)."""
        holder: object = getattr(self, key.section) if key.section else self
        return getattr(holder, key.field)

    def redacted(self) -> dict[str, Any]:
        """Every setting by its TOML name, secrets masked: safe to print and to log."""
        out: dict[str, Any] = {}
        for k in KEYS:
            if k.deprecated:
                continue
            target = out.setdefault(k.section, {}) if k.section else out
            target[k.name] = _display(self.value_of(k))
        return out


def duration_text(duration: timedelta) -> str:
    """A duration as an operator writes it: whole hours stay hours ("24h", not "1d")."""
    hours, rest = divmod(duration, timedelta(hours=1))
    return f"{hours}h" if hours and not rest else format_duration(duration)


def _display(value: object) -> object:
    if isinstance(value, Secret):
        return MASK if value else ""
    if isinstance(value, timedelta):
        return duration_text(value)
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, HttpHeader):
        return {"Key": value.key, "Value": _display(value.value)}
    if isinstance(value, tuple):
        return [_display(v) for v in value]
    return value


__all__ = [
    "BigQuerySettings",
    "DuckDBSettings",
    "GCSSettings",
    "HttpHeader",
    "LocalSettings",
    "LogFormat",
    "MetricsSettings",
    "PostgresSettings",
    "ProviderName",
    "RedshiftSettings",
    "SnowflakeSettings",
    "S3Settings",
    "Settings",
    "StagedFormatSetting",
]
