"""Configuration: a TOML file (hauser's keys and syncd's) validated into frozen `Settings`.

    loaded = load_settings(Path("config.toml"))      # environment overrides applied
    for warning in loaded.warnings: log.warning(warning)
    loaded.settings.export_duration                  # timedelta(hours=1)
    loaded.settings.section("s3").bucket             # a plugin's section (also settings.s3)

Secrets are `Secret`s: `.reveal()` is the one place a secret is read. Bad settings raise
`syncd.errors.ConfigError` with one line per problem. The keys of the stage and warehouse
sections are declared by their plugins (`warehouses.plugin`, `warehouses.registry`).
"""

from __future__ import annotations

from typing import Any

from syncd.config.keys import Key, Kind
from syncd.config.model import (
    HttpHeader,
    LogFormat,
    MetricsSettings,
    ProviderName,
    Settings,
    StagedFormatSetting,
)
from syncd.config.reference import example_toml, reference_markdown
from syncd.config.secret import Secret
from syncd.config.settle import LoadedSettings, load_settings, settings_from_mapping


def __getattr__(name: str) -> Any:
    """`KEYS` (every key) and `SECTIONS` (the section names in docs order), read from the
    plugins registered when first asked. (`syncd.config.table` is imported only then: the
    plugin modules import this package.)"""
    from syncd.config.table import key_table

    if name == "KEYS":
        return key_table().keys
    if name == "SECTIONS":
        return key_table().section_names
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "HttpHeader",
    "Key",
    "Kind",
    "LoadedSettings",
    "LogFormat",
    "MetricsSettings",
    "ProviderName",
    "Secret",
    "Settings",
    "StagedFormatSetting",
    "example_toml",
    "load_settings",
    "reference_markdown",
    "settings_from_mapping",
]
