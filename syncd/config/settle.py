"""From raw values to `Settings`: defaults, hauser's deprecated keys, and every cross-key rule.

`load_settings` and `settings_from_mapping` are the two ways in. All problems are collected
and raised together as one `ConfigError`; deprecated keys are mapped and reported in
`LoadedSettings.warnings` (the CLI logs them).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from syncd.config.keys import KEYS, WAREHOUSE_ALIASES, Key
from syncd.config.loader import (
    Invalid,
    RawValue,
    convert,
    env_values,
    file_values,
    is_empty,
    read_toml,
    suggest,
)
from syncd.config.model import (
    BigQuerySettings,
    DuckDBSettings,
    GCSSettings,
    LocalSettings,
    MetricsSettings,
    PostgresSettings,
    RedshiftSettings,
    S3Settings,
    Settings,
    SnowflakeSettings,
    duration_text,
)
from syncd.errors import ConfigError
from syncd.fields import BATCH_ID, KNOWN_FIELDS, LOADED_AT
from syncd.net import is_cleartext_remote_url
from syncd.observability.logging import one_line
from warehouses.base import validate_identifier

MIN_EXPORT_DURATION = timedelta(minutes=15)
MAX_EXPORT_DURATION = timedelta(hours=24)
MIN_EXPORT_DELAY = timedelta(hours=1)
DEFAULT_EXPORT_DURATION = timedelta(hours=1)
DEFAULT_EXPORT_DELAY = timedelta(hours=24)
MAX_CLUSTERING_COLUMNS = 4  # BigQuery's limit
CLUSTERABLE_COLUMNS = (*KNOWN_FIELDS, BATCH_ID.name, LOADED_AT.name)

_BY_LABEL = {k.label: k for k in KEYS}
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]*):(\d{1,5})$")
_POSITIVE_DURATIONS = (
    "Backoff",
    "PollInterval",
    "OperationTimeout",
    "HttpTimeout",
    "DownloadTimeout",
    "HeldRetryInterval",
    "[s3] Timeout",
)
_WAREHOUSE_SECTION = {
    "duckdb": "duckdb",
    "postgres": "postgres",
    "aws": "redshift",
    "gcp": "bigquery",
    "snowflake": "snowflake",
}


@dataclass(frozen=True)
class LoadedSettings:
    """Settings plus what the operator should hear about: deprecated keys and their mapping."""

    settings: Settings
    warnings: tuple[str, ...] = ()
    path: Path | None = None
    origins: Mapping[str, str] = field(default_factory=dict)  # key label -> where it came from


def load_settings(path: Path | None, env: Mapping[str, str] = os.environ) -> LoadedSettings:
    """Read `path` (None: defaults only), apply environment overrides, validate everything."""
    data = read_toml(path) if path is not None else {}
    return settings_from_mapping(data, env, path=path)


def settings_from_mapping(
    data: Mapping[str, Any],
    env: Mapping[str, str] = os.environ,
    *,
    path: Path | None = None,
) -> LoadedSettings:
    """Validate a decoded TOML document (e.g. a dict in a test) plus environment overrides."""
    problems: list[str] = []
    warnings: list[str] = []
    given = file_values(data, problems)
    given.update(env_values(env, problems, warnings))  # the environment beats the file
    settle = _Settle(given, problems, warnings)
    settle.map_deprecated_keys()
    settle.apply_derived_defaults()
    settle.check()
    if problems:
        raise ConfigError([one_line(p) for p in problems])
    return LoadedSettings(settle.build(), tuple(warnings), path, dict(settle.origins))


class _Settle:
    """One pass over the values of one load; rules read and write them by key label."""

    def __init__(
        self, given: dict[Key, RawValue], problems: list[str], warnings: list[str]
    ) -> None:
        self.problems = problems
        self.warnings = warnings
        self.values: dict[Key, object] = {}
        self.origins: dict[str, str] = {}
        self.explicit: set[str] = set()
        for k in KEYS:
            raw = given.get(k)
            if raw is not None and not is_empty(raw.value):
                self.values[k] = convert(k, raw, problems)
                self.origins[k.label] = raw.origin
                self.explicit.add(k.label)
            elif k.default is None:
                self.values[k] = None
                if not k.deprecated:
                    self.origins[k.label] = "default"
            else:
                self.values[k] = convert(k, RawValue(k.default, "default", k.label), problems)
                self.origins[k.label] = "default"

    def get(self, label: str) -> Any:
        return self.values[_BY_LABEL[label]]

    def set(self, label: str, value: object, origin: str) -> None:
        self.values[_BY_LABEL[label]] = value
        self.origins[label] = origin

    def ok(self, *labels: str) -> bool:
        """True when these keys converted; rules on broken values would only add noise."""
        return not any(isinstance(self.get(label), Invalid) for label in labels)

    def problem(self, label: str, text: str) -> None:
        self.problems.append(f"{label}: {text}")

    # -- hauser's deprecated keys -----------------------------------------------------------

    def map_deprecated_keys(self) -> None:
        given = self.explicit
        if "Warehouse" in given and self.ok("Warehouse"):
            warehouse = self.get("Warehouse")
            if "Provider" in given:
                self.warnings.append("Warehouse is deprecated and ignored because Provider is set")
            else:
                provider = WAREHOUSE_ALIASES[warehouse]
                self.set("Provider", provider, "Warehouse (deprecated)")
                self.warnings.append(
                    f"Warehouse = '{warehouse}' is deprecated; read as Provider = '{provider}'"
                )
        if "ExportURL" in given and self.ok("ExportURL"):
            if "LegacyApiURL" in given:
                self.warnings.append("ExportURL is deprecated and ignored; LegacyApiURL is set")
            else:
                self.set("LegacyApiURL", self.get("ExportURL"), "ExportURL (deprecated)")
                self.warnings.append("ExportURL is deprecated; read as LegacyApiURL")
        for label in ("CheckInterval", "ListExportLimit"):
            if label in given:
                self.warnings.append(f"{label} is deprecated and unused; ignored")
        if "[local] StartTime" in given:
            self.warnings.append(
                "[local] StartTime is deprecated and ignored (as in hauser); use the top-level "
                "StartTime, with [local] UseStartTime = true to force it"
            )
        if self.ok("Provider", "StorageOnly", "[s3] S3Only", "[gcs] GCSOnly"):
            self._fold_storage_only()
        if self.ok("GroupFilesByDay", "Source", "ExportDuration"):
            self._group_files_by_day()

    def _fold_storage_only(self) -> None:
        provider = self.get("Provider")
        storage_only = bool(self.get("StorageOnly"))
        for label, owner in (("[s3] S3Only", "aws"), ("[gcs] GCSOnly", "gcp")):
            if label not in self.explicit:
                continue
            flag = bool(self.get(label))
            if provider == owner:
                if flag and not storage_only:
                    storage_only = True
                    self.origins["StorageOnly"] = f"{label} (deprecated)"
                self.warnings.append(
                    f"{label} is deprecated; use StorageOnly ({label} = {str(flag).lower()} "
                    "is ORed into it)"
                )
            else:
                self.warnings.append(
                    f"{label} is deprecated and has no effect with Provider '{provider}' "
                    "(as in hauser)"
                )
        if provider == "local":
            if "StorageOnly" in self.explicit and not storage_only:
                self.warnings.append(
                    "StorageOnly = false is ignored: Provider 'local' only stores files"
                )
            storage_only = True
            self.origins["StorageOnly"] = "Provider 'local'"
        self.set("StorageOnly", storage_only, self.origins["StorageOnly"])

    def _group_files_by_day(self) -> None:
        if not self.get("GroupFilesByDay") or self.get("Source") != "segment":
            return
        duration = self.get("ExportDuration")
        if "ExportDuration" in self.explicit and duration:
            self.warnings.append(
                "GroupFilesByDay is deprecated and ignored because ExportDuration is set"
            )
            return
        self.set("ExportDuration", timedelta(hours=24), "GroupFilesByDay (deprecated)")
        self.warnings.append("GroupFilesByDay = true is deprecated; read as ExportDuration = '24h'")

    # -- defaults that depend on other keys -------------------------------------------------

    def apply_derived_defaults(self) -> None:
        if self.get("ExportDuration") == timedelta(0):
            self.set("ExportDuration", DEFAULT_EXPORT_DURATION, "default")
        if self.get("ExportDelay") == timedelta(0):
            self.set("ExportDelay", DEFAULT_EXPORT_DELAY, "default")
        if self.get("StateDir") is None and self.ok("TmpDir"):
            self.set("StateDir", self.get("TmpDir") / "syncd-state", "derived from TmpDir")
        if self.get("[redshift] Region") is None and self.ok("[s3] Region"):
            self.set("[redshift] Region", self.get("[s3] Region"), "derived from [s3] Region")
        if self.ok("SaveAsJson", "StagedFormat") and self.get("SaveAsJson"):
            staged = self.get("StagedFormat")
            if staged != "auto" and "StagedFormat" in self.explicit:
                self.problem(
                    "StagedFormat",
                    f"'{staged}' conflicts with SaveAsJson = true (which stages NDJSON); "
                    "remove one of them",
                )
            self.set("StagedFormat", "ndjson", "SaveAsJson")

    # -- rules ------------------------------------------------------------------------------

    def check(self) -> None:
        self._check_cleartext_urls()
        self._check_schedule()
        self._check_counts()
        self._check_storage()
        if self.ok("Provider", "StorageOnly"):
            self._check_provider(self.get("Provider"), bool(self.get("StorageOnly")))

    def _check_cleartext_urls(self) -> None:
        for label in ("ApiURL", "LegacyApiURL"):
            url = self.get(label)
            if self.ok(label) and isinstance(url, str) and is_cleartext_remote_url(url):
                self.warnings.append(
                    f"{label}: {urlsplit(url).hostname} is reached over plain http://, so the API key "
                    "travels in clear text; use https:// (only loopback hosts are exempt)"
                )

    def _check_schedule(self) -> None:
        duration = self.get("ExportDuration")
        if self.ok("ExportDuration"):
            text = duration_text(duration)
            if not MIN_EXPORT_DURATION <= duration <= MAX_EXPORT_DURATION:
                self.problem("ExportDuration", f"'{text}' is out of range; allowed: 15m to 24h")
            elif (MAX_EXPORT_DURATION // timedelta(microseconds=1)) % (
                duration // timedelta(microseconds=1)
            ):
                self.problem(
                    "ExportDuration",
                    f"'{text}' must divide 24h evenly, e.g. '15m', '30m', '1h', '2h', '3h', "
                    "'4h', '6h', '8h', '12h' or '24h'",
                )
        delay = self.get("ExportDelay")
        if self.ok("ExportDelay") and delay < MIN_EXPORT_DELAY:
            self.problem("ExportDelay", f"'{duration_text(delay)}' is too small; the minimum is 1h")
        settle_after = self.get("SettleAfter")
        if self.ok("SettleAfter", "ExportDelay") and settle_after:
            if settle_after < timedelta(0) or settle_after <= self.get("ExportDelay"):
                self.problem(
                    "SettleAfter",
                    f"'{duration_text(settle_after)}' must be longer than ExportDelay "
                    f"('{duration_text(self.get('ExportDelay'))}'), or \"0\" for off",
                )
            elif self.get("Source") != "segment":
                self.problem("SettleAfter", 'settles segment windows: needs Source "segment"')
            elif self.ok("StorageOnly") and self.get("StorageOnly"):
                self.problem(
                    "SettleAfter",
                    "replaces a window's rows in a warehouse: StorageOnly keeps files only",
                )
        for label in _POSITIVE_DURATIONS:
            if self.ok(label) and self.get(label) <= timedelta(0):
                self.problem(label, "must be more than 0s")

    def _check_counts(self) -> None:
        for label, least in (
            ("BackoffStepsMax", 1),
            ("MaxBatchAttempts", 1),
            ("Lookahead", 0),
            ("ApiRequestsPerSecond", 1),
        ):
            if self.ok(label) and self.get(label) < least:
                self.problem(label, f"{self.get(label)} is too small; the minimum is {least}")
        varchar_max = self.get("[redshift] VarCharMax")
        if self.ok("[redshift] VarCharMax") and not 1 <= varchar_max <= 65535:
            self.problem(
                "[redshift] VarCharMax", f"{varchar_max} is out of range; allowed: 1 to 65535"
            )
        address = self.get("[metrics] Address")
        if self.ok("[metrics] Address") and address and address.lower() != "off":
            match = _ADDRESS.match(address)
            if not match or not 1 <= int(match.group(2)) <= 65535:
                self.problem(
                    "[metrics] Address",
                    f"{address!r} must be host:port with a port from 1 to 65535, "
                    "e.g. '127.0.0.1:9108', or 'off'",
                )

    def _check_storage(self) -> None:
        prefix = self.get("FilePrefix")
        if self.ok("FilePrefix") and (
            prefix.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", prefix)
        ):
            self.problem(
                "FilePrefix", f"{prefix!r} must be a relative name (no leading '/', no '..')"
            )
        if self.ok("SaveAsJson", "Provider", "StorageOnly") and self.get("SaveAsJson"):
            provider = self.get("Provider")
            if provider not in ("local", "duckdb") and not self.get("StorageOnly"):
                self.problem(
                    "SaveAsJson",
                    f"true needs Provider 'local' or 'duckdb', or StorageOnly = true; "
                    f"Provider '{provider}' cannot load JSON files",
                )

    def _check_provider(self, provider: str, storage_only: bool) -> None:
        """Required keys and valid names, for the provider in use only (hauser's example
        files keep placeholders in the sections of providers they do not use)."""
        if provider == "aws":
            self._require("[s3] Bucket", provider)
            sse = self.get("[s3] ServerSideEncryption")
            if self.get("[s3] KMSKeyId") and sse != "aws:kms" and self.ok("[s3] KMSKeyId"):
                self.problem("[s3] KMSKeyId", "is only used with ServerSideEncryption = 'aws:kms'")
        if provider == "gcp":
            self._require("[gcs] Bucket", provider)
        if provider == "snowflake":
            self._snowflake(storage_only)
        section = _WAREHOUSE_SECTION.get(provider)
        if storage_only or section is None:
            return
        required = {
            "postgres": ("User", "DB"),
            "redshift": ("Host", "DB", "User"),
            "bigquery": ("Project", "Dataset"),
            "snowflake": ("Account", "User", "Database"),
        }.get(section, ())
        for name in required:
            self._require(f"[{section}] {name}", provider)
        names = [f"[{section}] {t}" for t in ("ExportTable", "SyncTable", "RejectsTable")]
        if section == "snowflake":
            names.append("[snowflake] Schema")
        if section in ("postgres", "redshift"):
            schema = self.get(f"[{section}] DatabaseSchema")
            if not (section == "redshift" and str(schema).lower() == "search_path"):
                names.append(f"[{section}] DatabaseSchema")
        if section == "bigquery":
            names.append("[bigquery] Dataset")
        for label in names:
            self._identifier(label)
        self._distinct_tables(names[:3])
        if section == "redshift":
            self._redshift_auth()
        if section == "bigquery" and self.ok("[bigquery] Clustering"):
            self._clustering(self.get("[bigquery] Clustering"))

    def _require(self, label: str, provider: str) -> None:
        if self.ok(label) and not self.get(label):
            self.problem(label, f"required with Provider '{provider}'")

    def _identifier(self, label: str) -> None:
        value = self.get(label)
        if self.ok(label) and value:
            try:
                validate_identifier(value, label)
            except ConfigError as exc:
                self.problems.extend(exc.problems)

    def _distinct_tables(self, labels: list[str]) -> None:
        seen: dict[str, str] = {}
        for label in labels:
            name = str(self.get(label)).lower()
            if name in seen:
                self.problem(label, f"is the same table as {seen[name]}; use another name")
            seen.setdefault(name, label)

    def _redshift_auth(self) -> None:
        credentials, role = self.get("[redshift] Credentials"), self.get("[redshift] IAMRole")
        if not self.ok("[redshift] Credentials", "[redshift] IAMRole"):
            return
        if credentials and role:
            self.problem("[redshift] Credentials", "and [redshift] IAMRole are both set; set one")
        elif not credentials and not role:
            self.problem(
                "[redshift] IAMRole",
                "required with Provider 'aws' (or [redshift] Credentials) so COPY can read S3",
            )

    def _snowflake(self, storage_only: bool) -> None:
        """Provider "snowflake": the stage's bucket, and how COPY INTO and the session log in."""
        stage = self.get("[snowflake] Stage")
        if stage != "internal":
            self._require("[gcs] Bucket" if stage == "gcs" else "[s3] Bucket", "snowflake")
        elif storage_only:
            self.problem(
                "[snowflake] Stage", "'internal' stages in Snowflake: not with StorageOnly"
            )
        if storage_only:
            return
        integration = self.get("[snowflake] StorageIntegration")
        keys = self.get("[snowflake] AwsKeyId"), self.get("[snowflake] AwsSecretKey").reveal()
        if integration:
            self._identifier("[snowflake] StorageIntegration")
        if stage == "internal":
            pass  # PUT and COPY from the table's own stage need no storage authorization
        elif stage == "gcs" and not integration:
            self.problem("[snowflake] StorageIntegration", "required with Stage = 'gcs'")
        elif stage == "s3" and not integration and not all(keys):
            self.problem(
                "[snowflake] StorageIntegration",
                "required with Stage = 's3' (or [snowflake] AwsKeyId and AwsSecretKey) so "
                "COPY INTO can read S3",
            )
        elif integration and any(keys):
            self.problem(
                "[snowflake] StorageIntegration", "and [snowflake] AwsKeyId are both set; set one"
            )
        password = self.get("[snowflake] Password").reveal()
        key_file = self.get("[snowflake] PrivateKeyFile")
        if password and key_file:
            self.problem(
                "[snowflake] Password", "and [snowflake] PrivateKeyFile are both set; set one"
            )
        elif not password and not key_file:
            self.problem(
                "[snowflake] Password", "required with Provider 'snowflake' (or PrivateKeyFile)"
            )

    def _clustering(self, columns: tuple[str, ...]) -> None:
        label = "[bigquery] Clustering"
        if len(columns) > MAX_CLUSTERING_COLUMNS:
            self.problem(label, f"has {len(columns)} columns; BigQuery allows at most 4")
        for column in columns:
            if column not in CLUSTERABLE_COLUMNS:
                hint = suggest(column, list(CLUSTERABLE_COLUMNS))
                self.problem(label, f"{column!r} is not a column of the export table{hint}")

    # -- the result -------------------------------------------------------------------------

    def build(self) -> Settings:
        def fields(section: str) -> dict[str, Any]:
            return {
                k.field: self.values[k] for k in KEYS if k.section == section and not k.deprecated
            }

        return Settings(
            **fields(""),
            duckdb=DuckDBSettings(**fields("duckdb")),
            postgres=PostgresSettings(**fields("postgres")),
            local=LocalSettings(**fields("local")),
            s3=S3Settings(**fields("s3")),
            redshift=RedshiftSettings(**fields("redshift")),
            gcs=GCSSettings(**fields("gcs")),
            bigquery=BigQuerySettings(**fields("bigquery")),
            snowflake=SnowflakeSettings(**fields("snowflake")),
            metrics=MetricsSettings(**fields("metrics")),
        )


__all__ = ["LoadedSettings", "load_settings", "settings_from_mapping"]
