"""The plugins syncd knows, one line each, and building the stage and warehouse a config names.

A provider (`Provider = "<name>"`) maps to its module's `WarehousePlugin` and a stage name to its
module's `StagePlugin`, as "module:ATTRIBUTE"; the module is imported when first needed. This is
the one place that lists them: the config loader, the docs and the core read the declarations
(`warehouses.plugin`), never a name. docs/plugins.md says how to add a warehouse.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from syncd.errors import ConfigError
from warehouses.plugin import StagePlugin, WarehousePlugin

if TYPE_CHECKING:
    from syncd.config.model import Settings
    from warehouses.base import Stage, Warehouse

#: Provider name -> its WarehousePlugin, in the order the docs list them.
PROVIDERS: dict[str, str] = {
    "duckdb": "warehouses.duckdb:PLUGIN",
    "postgres": "warehouses.postgres:PLUGIN",
    "local": "warehouses.local:PLUGIN",
    "aws": "warehouses.redshift:PLUGIN",
    "gcp": "warehouses.bigquery:PLUGIN",
    "snowflake": "warehouses.snowflake:PLUGIN",
}

#: Stage name -> its StagePlugin.
STAGES: dict[str, str] = {
    "local": "warehouses.local:STAGE",
    "s3": "warehouses.s3:STAGE",
    "gcs": "warehouses.gcs:STAGE",
}

#: The provider of a config that names none: the embedded one, needing no server.
DEFAULT_PROVIDER = "duckdb"


def _load(ref: str) -> Any:
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


def reset() -> None:
    """Forget the loaded plugins: call after changing PROVIDERS or STAGES (tests do)."""
    providers.cache_clear()
    stages.cache_clear()


@functools.cache
def providers() -> tuple[WarehousePlugin, ...]:
    """Every provider's declaration, in registry order."""
    out = []
    for name, ref in PROVIDERS.items():
        plugin = _load(ref)
        if not isinstance(plugin, WarehousePlugin) or plugin.provider != name:
            raise TypeError(f"{ref} is not the WarehousePlugin of provider {name!r}")
        out.append(plugin)
    return tuple(out)


@functools.cache
def stages() -> tuple[StagePlugin, ...]:
    """Every stage's declaration, in registry order."""
    out = []
    for name, ref in STAGES.items():
        plugin = _load(ref)
        if not isinstance(plugin, StagePlugin) or plugin.name != name:
            raise TypeError(f"{ref} is not the StagePlugin of stage {name!r}")
        out.append(plugin)
    return tuple(out)


def provider(name: str) -> WarehousePlugin:
    for plugin in providers():
        if plugin.provider == name:
            return plugin
    raise ConfigError([f"Provider: {name!r} is not supported by this version of syncd yet"])


def stage_plugin(name: str) -> StagePlugin:
    for plugin in stages():
        if plugin.name == name:
            return plugin
    raise ConfigError([f"no stage {name!r} in this version of syncd"])


def stage_of(settings: Settings) -> StagePlugin:
    """The stage the configured provider uses."""
    return stage_plugin(provider(settings.provider).stage_name(settings.get))


def _missing_extra(plugin: WarehousePlugin, module: str) -> ConfigError:
    extra = f"pip install 'syncd[{plugin.extra}]'" if plugin.extra else "install its drivers"
    return ConfigError(
        [
            f"Provider: {plugin.provider!r} needs {module}, which is not installed; {extra}",
        ]
    )


def _require_drivers(plugin: WarehousePlugin) -> None:
    for module in plugin.drivers:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:  # a parent package is missing
            found = False
        if not found:
            raise _missing_extra(plugin, module)


def build_stage(settings: Settings) -> Stage:
    """The stage the configured provider stages its files in."""
    plugin = provider(settings.provider)
    _require_drivers(plugin)
    try:
        return stage_of(settings).build(settings)
    except ImportError as exc:
        raise _missing_extra(plugin, exc.name or str(exc)) from exc


def build_warehouse(settings: Settings, stage: Stage, *, read_only: bool = False) -> Warehouse:
    """The warehouse for the provider, or the checkpoint-only one in StorageOnly mode."""
    if settings.storage_only:
        from warehouses.storage_only import StorageOnlyWarehouse

        return StorageOnlyWarehouse(stage, use_start_time=settings.local.use_start_time)
    plugin = provider(settings.provider)
    _require_drivers(plugin)
    if plugin.build is None:
        raise ConfigError(
            [f"Provider: {plugin.provider!r} loads no warehouse; it only stores files"]
        )
    try:
        return plugin.build(settings, stage, read_only)
    except ImportError as exc:
        raise _missing_extra(plugin, exc.name or str(exc)) from exc


def destination(settings: Settings) -> str:
    """Where the configured provider writes the data, in a few words for a person (e.g. the
    note a command run on the defaults prints)."""
    plugin = provider(settings.provider)
    if settings.storage_only or plugin.destination is None:
        return stage_of(settings).describe(settings)
    return plugin.destination(settings)


__all__ = [
    "DEFAULT_PROVIDER",
    "PROVIDERS",
    "STAGES",
    "build_stage",
    "build_warehouse",
    "destination",
    "provider",
    "providers",
    "reset",
    "stage_of",
    "stage_plugin",
    "stages",
]
