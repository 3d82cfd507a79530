"""The table of every configuration key: the core's and those the plugins declare.

`key_table()` joins the top-level keys (`syncd.config.keys`), every registered stage's and
warehouse's section (`warehouses.registry`) and [metrics], in the order the docs list them:
for each provider in registry order, its stage's section, then its warehouse's.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from syncd.config.keys import METRICS_KEYS, Key, ProviderChoice, top_level
from syncd.config.model import MetricsSettings
from warehouses import registry
from warehouses.plugin import ConfigSection, SettleContext, StagePlugin, WarehousePlugin

TOP_LEVEL_DOC = "Top-level keys: the export API, the schedule, retries, staging and logging."

_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]*):(\d{1,5})$")


def _check_metrics(ctx: SettleContext) -> None:
    label = "[metrics] Address"
    address = ctx.get(label)
    if ctx.ok(label) and address and address.lower() != "off":
        match = _ADDRESS.match(address)
        if not match or not 1 <= int(match.group(2)) <= 65535:
            ctx.problem(
                label,
                f"{address!r} must be host:port with a port from 1 to 65535, "
                "e.g. '127.0.0.1:9108', or 'off'",
            )


METRICS = ConfigSection(
    "metrics",
    "The Prometheus metrics and health endpoint.",
    METRICS_KEYS,
    MetricsSettings,
    check=_check_metrics,
)


@dataclass(frozen=True)
class KeyTable:
    """Every key, and the sections in docs order (the top level is section "")."""

    keys: tuple[Key, ...]
    sections: tuple[ConfigSection, ...]  # plugin sections, then [metrics]
    providers: tuple[WarehousePlugin, ...]
    stages: tuple[StagePlugin, ...]
    by_section: Mapping[str, Mapping[str, Key]] = field(default_factory=dict)
    by_label: Mapping[str, Key] = field(default_factory=dict)

    @property
    def section_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sections)

    def section(self, name: str) -> ConfigSection:
        return next(s for s in self.sections if s.name == name)

    def doc(self, section: str) -> str:
        return self.section(section).doc if section else TOP_LEVEL_DOC

    def provider(self, name: str) -> WarehousePlugin:
        return next(p for p in self.providers if p.provider == name)

    def stage(self, name: str) -> StagePlugin | None:
        return next((s for s in self.stages if s.name == name), None)

    @property
    def aliases(self) -> dict[str, str]:
        """hauser's `Warehouse` values -> the provider."""
        return {alias: p.provider for p in self.providers for alias in p.aliases}


def key_table() -> KeyTable:
    """The table for the plugins registered now (cached while the registry is unchanged)."""
    return _table(registry.providers(), registry.stages())


@functools.cache
def _table(providers: tuple[WarehousePlugin, ...], stages: tuple[StagePlugin, ...]) -> KeyTable:
    by_stage = {s.name: s for s in stages}
    sections: dict[str, ConfigSection] = {}
    for plugin in providers:
        stage = by_stage.get(plugin.stage)
        for section in (stage.section if stage else None, plugin.section):
            if section is not None:
                _add(sections, section)
    for stage in stages:
        _add(sections, stage.section)
    _add(sections, METRICS)
    choices = [ProviderChoice(p.provider, p.summary, p.aliases) for p in providers]
    keys = top_level(choices, registry.DEFAULT_PROVIDER) + tuple(
        k for s in sections.values() for k in s.keys
    )
    by_section: dict[str, dict[str, Key]] = {"": {}, **{name: {} for name in sections}}
    for k in keys:
        by_section[k.section][k.name.lower()] = k
    return KeyTable(
        keys,
        tuple(sections.values()),
        providers,
        stages,
        by_section,
        {k.label: k for k in keys},
    )


def _add(sections: dict[str, ConfigSection], section: ConfigSection) -> None:
    known = sections.get(section.name)
    if known is not None and known != section:
        raise TypeError(f"two plugins declare section [{section.name}]")
    sections[section.name] = section


__all__ = ["METRICS", "TOP_LEVEL_DOC", "KeyTable", "key_table"]
