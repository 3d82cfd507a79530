"""Build the stage and the warehouse a configuration names, importing drivers lazily.

This is the one place that maps a provider's name to adapters; the core only sees the
`Stage` and `Warehouse` protocols.
"""

from __future__ import annotations

from syncd.config import Settings
from syncd.errors import ConfigError
from warehouses.base import Stage, Warehouse


def build_stage(settings: Settings) -> Stage:
    """The stage for the provider: a local folder for duckdb, postgres and local."""
    if settings.provider in ("duckdb", "postgres", "local"):
        from warehouses.local import LocalStage

        return LocalStage(settings.local.save_dir, settings.file_prefix)
    raise ConfigError(
        [f"Provider: {settings.provider!r} is not supported by this version of syncd yet"]
    )


def build_warehouse(settings: Settings, stage: Stage, *, read_only: bool = False) -> Warehouse:
    """The warehouse for the provider, or the checkpoint-only one in StorageOnly mode."""
    if settings.storage_only:
        from warehouses.storage_only import StorageOnlyWarehouse

        return StorageOnlyWarehouse(stage, use_start_time=settings.local.use_start_time)
    if settings.provider == "duckdb":
        from warehouses.duckdb import DuckDBWarehouse

        db = settings.duckdb
        return DuckDBWarehouse(
            db.path,
            export_table=db.export_table,
            sync_table=db.sync_table,
            rejects_table=db.rejects_table,
            read_only=read_only,
        )
    raise ConfigError(
        [f"Provider: {settings.provider!r} is not supported by this version of syncd yet"]
    )
