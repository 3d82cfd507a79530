"""The typed, frozen settings the rest of syncd reads.

Field names are the TOML keys in snake case (`ExportDuration` -> `export_duration`, `[s3]
Bucket` -> `settings.s3.bucket`), so a reader of the config file finds the field at once. A
stage's or warehouse's section is the frozen dataclass its plugin declares
(`warehouses.plugin.ConfigSection.settings_type`).
Values are final: defaults applied, deprecated keys folded in, durations as `timedelta`,
`StartTime` as an aware UTC datetime.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from syncd.batch import SourceKind
from syncd.config.keys import Key
from syncd.config.secret import MASK, Secret
from syncd.timeutil import format_duration, format_timestamp

ProviderName = str  # a name in warehouses.registry.PROVIDERS
StagedFormatSetting = Literal["auto", "parquet", "csv", "ndjson"]
LogFormat = Literal["auto", "json", "console"]


@dataclass(frozen=True)
class HttpHeader:
    key: str
    value: Secret


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
    create_views: bool  # CreateViews: the views of warehouses.views at start-up
    export_individuals: bool  # ExportIndividuals: the people table (syncd.people)
    individuals_table: str  # IndividualsTable
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
    metrics: MetricsSettings
    #: The plugins' sections by name, each its plugin's frozen settings dataclass; read them
    #: as `settings.section("s3")` or `settings.s3`.
    sections: tuple[tuple[str, Any], ...] = ()

    def section(self, name: str) -> Any:
        """The settings of section `name` (a stage's or a warehouse's)."""
        for section, value in self.sections:
            if section == name:
                return value
        raise KeyError(f"no section [{name}] in the settings")

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: `settings.s3` is `settings.section("s3")`.
        for section, value in self.__dict__.get("sections", ()):
            if section == name:
                return value
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def with_section(self, name: str, value: Any) -> Settings:
        """A copy with section `name` replaced by `value`."""
        self.section(name)
        sections = tuple((n, value if n == name else v) for n, v in self.sections)
        return replace(self, sections=sections)

    def get(self, label: str) -> Any:
        """The settled value of a key by its label ("ExportDuration", "[s3] Bucket")."""
        from syncd.config.table import key_table

        return self.value_of(key_table().by_label[label])

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
        from syncd.config.table import key_table

        for k in key_table().keys:
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
    "HttpHeader",
    "LogFormat",
    "MetricsSettings",
    "ProviderName",
    "Settings",
    "StagedFormatSetting",
]
