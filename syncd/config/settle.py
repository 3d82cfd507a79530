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
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from syncd.config.keys import Key
from syncd.config.loader import (
    Invalid,
    RawValue,
    convert,
    env_values,
    file_values,
    is_empty,
    read_toml,
)
from syncd.config.model import MetricsSettings, Settings, duration_text
from syncd.errors import ConfigError
from syncd.net import is_cleartext_remote_url
from syncd.observability.logging import one_line
from warehouses.base import validate_identifier

if TYPE_CHECKING:
    from syncd.config.table import KeyTable
    from warehouses.plugin import ConfigSection, WarehousePlugin

MIN_EXPORT_DURATION = timedelta(minutes=15)
MAX_EXPORT_DURATION = timedelta(hours=24)
MIN_EXPORT_DELAY = timedelta(hours=1)
DEFAULT_EXPORT_DURATION = timedelta(hours=1)
DEFAULT_EXPORT_DELAY = timedelta(hours=24)

_POSITIVE_DURATIONS = (
    "Backoff",
    "PollInterval",
    "OperationTimeout",
    "HttpTimeout",
    "DownloadTimeout",
    "HeldRetryInterval",
)


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
    """One pass over the values of one load; rules read and write them by key label. It is the
    `warehouses.plugin.SettleContext` the plugins' rules see."""

    def __init__(
        self, given: dict[Key, RawValue], problems: list[str], warnings: list[str]
    ) -> None:
        from syncd.config.table import key_table

        self.table: KeyTable = key_table()
        self.problems = problems
        self.warnings = warnings
        self.values: dict[Key, object] = {}
        self.origins: dict[str, str] = {}
        self.given: set[str] = set()
        for k in self.table.keys:
            raw = given.get(k)
            if raw is not None and not is_empty(raw.value):
                self.values[k] = convert(k, raw, problems)
                self.origins[k.label] = raw.origin
                self.given.add(k.label)
            elif k.default is None:
                self.values[k] = None
                if not k.deprecated:
                    self.origins[k.label] = "default"
            else:
                self.values[k] = convert(k, RawValue(k.default, "default", k.label), problems)
                self.origins[k.label] = "default"

    def get(self, label: str) -> Any:
        return self.values[self.table.by_label[label]]

    def set(self, label: str, value: object, origin: str) -> None:
        self.values[self.table.by_label[label]] = value
        self.origins[label] = origin

    def ok(self, *labels: str) -> bool:
        """True when these keys converted; rules on broken values would only add noise."""
        return not any(isinstance(self.get(label), Invalid) for label in labels)

    def explicit(self, label: str) -> bool:
        return label in self.given

    def problem(self, label: str, text: str) -> None:
        self.problems.append(f"{label}: {text}")

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def require(self, label: str, provider: str) -> None:
        if self.ok(label) and not self.get(label):
            self.problem(label, f"required with Provider '{provider}'")

    def identifier(self, label: str) -> None:
        value = self.get(label)
        if self.ok(label) and value:
            try:
                validate_identifier(value, label)
            except ConfigError as exc:
                self.problems.extend(exc.problems)

    def distinct_tables(self, labels: list[str]) -> None:
        seen: dict[str, str] = {}
        for label in labels:
            name = str(self.get(label)).lower()
            if name in seen:
                self.problem(label, f"is the same table as {seen[name]}; use another name")
            seen.setdefault(name, label)

    # -- the provider and its sections --------------------------------------------------------

    def _plugin(self) -> WarehousePlugin | None:
        """The provider in use, when Provider converted."""
        return self.table.provider(self.get("Provider")) if self.ok("Provider") else None

    def _stage_section(self, plugin: WarehousePlugin) -> ConfigSection | None:
        if plugin.stage_key and not self.ok(plugin.stage_key):
            return None
        stage = self.table.stage(plugin.stage_name(self.get))
        return stage.section if stage else None

    # -- hauser's deprecated keys -----------------------------------------------------------

    def map_deprecated_keys(self) -> None:
        given = self.given
        if "Warehouse" in given and self.ok("Warehouse"):
            warehouse = self.get("Warehouse")
            if "Provider" in given:
                self.warnings.append("Warehouse is deprecated and ignored because Provider is set")
            else:
                provider = self.table.aliases[warehouse]
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
        for section in self.table.sections:
            if section.derive is not None:
                section.derive(self)
        flags = [
            s.section.label(s.storage_only_key) for s in self.table.stages if s.storage_only_key
        ]
        if self.ok("Provider", "StorageOnly", *flags):
            self._fold_storage_only()
        if self.ok("GroupFilesByDay", "Source", "ExportDuration"):
            self._group_files_by_day()

    def _fold_storage_only(self) -> None:
        provider = self.get("Provider")
        plugin = self.table.provider(provider)
        in_use = plugin.stage_name(self.get) if self.ok(plugin.stage_key or "Provider") else ""
        storage_only = bool(self.get("StorageOnly"))
        for stage in self.table.stages:
            label = stage.section.label(stage.storage_only_key)
            if not stage.storage_only_key or label not in self.given:
                continue
            flag = bool(self.get(label))
            if stage.name == in_use:
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
        if plugin.storage_only:
            if "StorageOnly" in self.given and not storage_only:
                self.warnings.append(
                    f"StorageOnly = false is ignored: Provider '{provider}' only stores files"
                )
            storage_only = True
            self.origins["StorageOnly"] = f"Provider '{provider}'"
        self.set("StorageOnly", storage_only, self.origins["StorageOnly"])

    def _group_files_by_day(self) -> None:
        if not self.get("GroupFilesByDay") or self.get("Source") != "segment":
            return
        duration = self.get("ExportDuration")
        if "ExportDuration" in self.given and duration:
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
        if self.ok("SaveAsJson", "StagedFormat") and self.get("SaveAsJson"):
            staged = self.get("StagedFormat")
            if staged != "auto" and "StagedFormat" in self.given:
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
        for section in self.table.sections:
            if section.check is not None:
                section.check(self)
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
        self._check_individuals()
        for label in _POSITIVE_DURATIONS:
            if self.ok(label) and self.get(label) <= timedelta(0):
                self.problem(label, "must be more than 0s")

    def _check_individuals(self) -> None:
        self.identifier("IndividualsTable")
        if self.ok("IndividualsTable") and self.get("IndividualsTable"):
            try:
                validate_identifier(f"{self.get('IndividualsTable')}_sync", "IndividualsTable")
            except ConfigError as exc:
                self.problems.extend(exc.problems)
        if not (self.ok("ExportIndividuals") and self.get("ExportIndividuals")):
            return
        if self.get("Source") != "segment":
            self.problem("ExportIndividuals", 'exports individuals: needs Source "segment"')
        elif self.ok("StorageOnly") and self.get("StorageOnly"):
            self.problem(
                "ExportIndividuals",
                "keeps a people table in a warehouse: StorageOnly keeps files only",
            )
        plugin = self._plugin()
        if plugin is not None and plugin.section is not None and self.ok("IndividualsTable"):
            tables = [plugin.section.label(t) for t in ("ExportTable", "SyncTable", "RejectsTable")]
            present = [t for t in tables if t in self.table.by_label and self.ok(t)]
            self.distinct_tables([*present, "IndividualsTable"])

    def _check_counts(self) -> None:
        for label, least in (
            ("BackoffStepsMax", 1),
            ("MaxBatchAttempts", 1),
            ("Lookahead", 0),
            ("ApiRequestsPerSecond", 1),
        ):
            if self.ok(label) and self.get(label) < least:
                self.problem(label, f"{self.get(label)} is too small; the minimum is {least}")

    def _check_storage(self) -> None:
        prefix = self.get("FilePrefix")
        if self.ok("FilePrefix") and (
            prefix.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", prefix)
        ):
            self.problem(
                "FilePrefix", f"{prefix!r} must be a relative name (no leading '/', no '..')"
            )
        plugin = self._plugin()
        if plugin and self.ok("SaveAsJson", "StorageOnly") and self.get("SaveAsJson"):
            if not (plugin.loads_json or plugin.storage_only) and not self.get("StorageOnly"):
                able = [
                    f"'{p.provider}'"
                    for p in sorted(self.table.providers, key=lambda p: not p.storage_only)
                    if p.loads_json or p.storage_only
                ]
                names = " or ".join([", ".join(able[:-1]), able[-1]] if len(able) > 1 else able)
                self.problem(
                    "SaveAsJson",
                    f"true needs Provider {names}, or StorageOnly = true; "
                    f"Provider '{plugin.provider}' cannot load JSON files",
                )

    def _check_provider(self, provider: str, storage_only: bool) -> None:
        """Required keys and valid names, for the provider in use only (hauser's example
        files keep placeholders in the sections of providers they do not use)."""
        plugin = self.table.provider(provider)
        stage = self._stage_section(plugin)
        in_use = [stage] if stage is not None else []
        if plugin.section is not None and not storage_only:
            in_use.append(plugin.section)
        for section in in_use:
            for name in section.required:
                self.require(section.label(name), provider)
            if section.validate is not None:
                section.validate(self, provider)

    # -- the result -------------------------------------------------------------------------

    def build(self) -> Settings:
        def fields(section: str) -> dict[str, Any]:
            return {
                k.field: self.values[k]
                for k in self.table.keys
                if k.section == section and not k.deprecated
            }

        return Settings(
            **fields(""),
            metrics=MetricsSettings(**fields("metrics")),
            sections=tuple(
                (s.name, s.settings_type(**fields(s.name)))
                for s in self.table.sections
                if s.name != "metrics"
            ),
        )


__all__ = ["LoadedSettings", "load_settings", "settings_from_mapping"]
