"""Configuration: a TOML file (hauser's keys and syncd's) validated into frozen `Settings`.

    loaded = load_settings(Path("config.toml"))      # environment overrides applied
    for warning in loaded.warnings: log.warning(warning)
    loaded.settings.export_duration                  # timedelta(hours=1)
    loaded.settings.redshift.password.reveal()       # the one place a secret is read

Bad settings raise `syncd.errors.ConfigError` with one line per problem.
"""

from __future__ import annotations

from syncd.config.keys import KEYS, SECTIONS, Key, Kind
from syncd.config.model import (
    BigQuerySettings,
    DuckDBSettings,
    GCSSettings,
    HttpHeader,
    LocalSettings,
    LogFormat,
    MetricsSettings,
    PostgresSettings,
    ProviderName,
    RedshiftSettings,
    S3Settings,
    Settings,
    StagedFormatSetting,
)
from syncd.config.reference import example_toml, reference_markdown
from syncd.config.secret import Secret
from syncd.config.settle import LoadedSettings, load_settings, settings_from_mapping

__all__ = [
    "KEYS",
    "SECTIONS",
    "BigQuerySettings",
    "DuckDBSettings",
    "GCSSettings",
    "HttpHeader",
    "Key",
    "Kind",
    "LoadedSettings",
    "LocalSettings",
    "LogFormat",
    "MetricsSettings",
    "PostgresSettings",
    "ProviderName",
    "RedshiftSettings",
    "S3Settings",
    "Secret",
    "Settings",
    "StagedFormatSetting",
    "example_toml",
    "load_settings",
    "reference_markdown",
    "settings_from_mapping",
]
