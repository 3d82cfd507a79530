"""What a warehouse or stage module declares so that syncd can use it without naming it.

A plugin module (e.g. `warehouses.duckdb`) ends with one declaration block:

- its config section (`ConfigSection`): keys (`syncd.config.keys.Key`), the frozen settings
  dataclass they fill (one field per key, `Key.field`), derived defaults (`derive`), rules
  checked always (`check`) and rules checked only when the section is in use (`validate`,
  `required`);
- a `WarehousePlugin` (a provider: `Provider = "<name>"`) or a `StagePlugin` (where files are
  staged) that builds the adapter from the settings.

`warehouses.registry` maps names to these declarations ("module:ATTRIBUTE"); the config
loader, the docs generator, the secret scrubber, the round trip and the CLI read them, so
nothing under `syncd/` names a warehouse. docs/plugins.md says how to add one.

Module top levels must not import optional drivers (psycopg, redshift_connector, boto3,
google.*): the registry imports every plugin module to document and load the configuration.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from syncd.config.keys import Key, Kind

if TYPE_CHECKING:
    from syncd.config.model import Settings
    from warehouses.base import Stage, Warehouse

#: The table keys of every warehouse section (`Key.field` names), renamed by the round trip.
TABLE_FIELDS = ("export_table", "sync_table", "rejects_table")


class SettleContext(Protocol):
    """The values of one configuration load, as a section's rules see them (by key label,
    e.g. "[s3] Bucket"). `syncd.config.settle` implements it."""

    def get(self, label: str) -> Any:
        """The converted value (or the converter's `Invalid` marker, see `ok`)."""
        ...

    def set(self, label: str, value: object, origin: str) -> None:
        """Replace a value (a derived default); `origin` says where it came from."""
        ...

    def ok(self, *labels: str) -> bool:
        """True when these keys converted; rules on broken values would only add noise."""
        ...

    def explicit(self, label: str) -> bool:
        """True when the file or the environment gave the key (not its default)."""
        ...

    def problem(self, label: str, text: str) -> None:
        """Report "<label>: <text>"; every problem is raised together as one ConfigError."""
        ...

    def warn(self, text: str) -> None:
        """A warning the CLI logs at start-up (e.g. a deprecated key)."""
        ...

    def require(self, label: str, provider: str) -> None:
        """Report the key when it is empty: "required with Provider '<provider>'"."""
        ...

    def identifier(self, label: str) -> None:
        """Report the key when its value is not a valid SQL identifier."""
        ...

    def distinct_tables(self, labels: list[str]) -> None:
        """Report a key that names the same table as an earlier one."""
        ...


@dataclass(frozen=True)
class ConfigSection:
    """One `[name]` section of the config file, declared by the module that reads it."""

    name: str
    doc: str  # one line for docs/configuration.md and example-config.toml
    keys: tuple[Key, ...]
    settings_type: Callable[..., Any]  # the frozen dataclass; called with one kwarg per key
    #: Keys (names, not labels) that must be set when the section is in use.
    required: tuple[str, ...] = ()
    #: Defaults that depend on other keys, set before any rule runs.
    derive: Callable[[SettleContext], None] | None = None
    #: Rules on the section's own values, checked whatever the provider.
    check: Callable[[SettleContext], None] | None = None
    #: Rules checked only when the section is in use: `validate(ctx, provider)`.
    validate: Callable[[SettleContext, str], None] | None = None

    def label(self, name: str) -> str:
        return f"[{self.name}] {name}"

    def __post_init__(self) -> None:
        for key in self.keys:
            if key.section != self.name:
                raise ValueError(f"{key.label} is declared in section [{self.name}]")


@dataclass(frozen=True)
class StagePlugin:
    """Where a provider stages its files (a local folder, a bucket)."""

    name: str  # the registry's name, usually the section's
    section: ConfigSection
    build: Callable[[Settings], Stage]
    #: hauser's per-stage StorageOnly key (e.g. "S3Only"), ORed into StorageOnly for the
    #: providers staging here; "" for none.
    storage_only_key: str = ""
    #: Keys (names) of folders on this machine, checked for being writable by others.
    folder_keys: tuple[str, ...] = ()
    #: Where the files go, in a few words for a person ("files in /data", "s3://bucket").
    describe: Callable[[Settings], str] = lambda settings: "staged files"


@dataclass(frozen=True)
class WarehousePlugin:
    """A provider: the value of `Provider`, the stage it uses and the warehouse it loads."""

    provider: str
    summary: str  # what Provider = "<provider>" means, e.g. "S3 + Redshift"
    stage: str  # the registry name of the stage
    #: The warehouse's section (None: the provider only stores files, as "local").
    section: ConfigSection | None = None
    #: build(settings, stage, read_only) -> the warehouse (StorageOnly never calls it).
    build: Callable[[Settings, Stage, bool], Warehouse] | None = None
    #: Where the data goes, in a few words ("the DuckDB file /data/syncd.duckdb").
    destination: Callable[[Settings], str] | None = None
    #: A key (label) whose value names the stage instead of `stage`, e.g.
    #: `[snowflake] Stage = "s3" | "gcs" | "internal"`.
    stage_key: str = ""
    #: hauser's `Warehouse = "<alias>"` values read as this provider.
    aliases: tuple[str, ...] = ()
    #: The pyproject extra holding its drivers ("aws" for `pip install 'syncd[aws]'`), and
    #: the modules it installs: without them the provider's stage and warehouse are not built
    #: and the error names the extra.
    extra: str = ""
    drivers: tuple[str, ...] = ()
    #: True when the provider only stores files (StorageOnly is always on).
    storage_only: bool = False
    #: True when it loads NDJSON (SaveAsJson) without StorageOnly.
    loads_json: bool = False
    #: The round trip renames these fields of its section to scratch tables.
    table_fields: tuple[str, ...] = TABLE_FIELDS
    #: `syncd demo` (for the default provider): `demo_config(folder)` is the TOML text of the
    #: section that keeps the warehouse in the demo's folder; `demo_summary(settings)` is
    #: (the summary line naming where the data is, the lines saying how to look at it).
    demo_config: Callable[[Path], str] | None = None
    demo_summary: Callable[[Settings], tuple[str, str]] | None = None

    #: Values of `stage_key` that name a registered stage by another name, as (value, stage):
    #: Snowflake's ("internal", "local") keeps files in the local folder for the warehouse to
    #: upload to its own stage.
    stage_aliases: tuple[tuple[str, str], ...] = ()

    def stage_name(self, get: Callable[[str], Any]) -> str:
        """The stage in use; `get` reads a value by key label."""
        if not self.stage_key:
            return self.stage
        value = str(get(self.stage_key))
        return dict(self.stage_aliases).get(value, value)


def table_keys(section: str, *, hauser: bool) -> tuple[Key, ...]:
    """ExportTable, SyncTable and RejectsTable, the same in every warehouse section."""
    return (
        Key(
            section,
            "ExportTable",
            Kind.STRING,
            "fsexport",
            "Table of exported events.",
            hauser=hauser,
        ),
        Key(
            section,
            "SyncTable",
            Kind.STRING,
            "fssync",
            "One row per committed batch; the resume point. A hauser SyncTable is continued.",
            hauser=hauser,
        ),
        Key(
            section,
            "RejectsTable",
            Kind.STRING,
            "fsrejects",
            "Rows that could not be loaded, with why.",
        ),
    )


def check_names(ctx: SettleContext, section: str, *extra: str) -> None:
    """The section's three tables and the `extra` keys (names) are valid identifiers, and the
    tables are three different tables."""
    tables = [f"[{section}] {t}" for t in ("ExportTable", "SyncTable", "RejectsTable")]
    for label in (*tables, *(f"[{section}] {name}" for name in extra)):
        ctx.identifier(label)
    ctx.distinct_tables(tables)


class _LazyModule(types.ModuleType):
    """A module imported on first attribute access (see `lazy_import`)."""

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attribute)


def lazy_import(name: str) -> Any:
    """Module `name`, imported when one of its attributes is first read: how a plugin module
    names an optional driver's module (e.g. its exceptions) at its top level without
    importing it there. `except lazy.NotFound:` imports it when an exception is matched."""
    return _LazyModule(name)


def bucket_parts(bucket: str) -> tuple[str, str]:
    """hauser's "bucket/sub/path" -> ("bucket", "sub/path/"); "bucket" -> ("bucket", "")."""
    name, _, path = bucket.strip().strip("/").partition("/")
    return name, f"{path.strip('/')}/" if path.strip("/") else ""


__all__ = [
    "TABLE_FIELDS",
    "bucket_parts",
    "ConfigSection",
    "SettleContext",
    "StagePlugin",
    "WarehousePlugin",
    "check_names",
    "lazy_import",
    "table_keys",
]
