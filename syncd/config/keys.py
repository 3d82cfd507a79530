"""What a configuration key is, and the core's keys (the top level and [metrics]).

Each `Key` says where it lives (top level or a `[section]`), its TOML spelling, its kind, its
default written as a TOML value, and what it means. Warehouse and stage sections are declared
by their plugins (`warehouses.plugin`); `syncd.config.table` joins them with these into the
one table the loader, `reference_markdown()` and `example_toml()` read, so the documentation
cannot drift from the code.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

ENV_PREFIX = "SYNCD_"
FILE_SUFFIX = "_FILE"


class Kind(enum.Enum):
    """How a key's value is written in TOML (and in its environment variable)."""

    STRING = "string"
    SECRET = "secret string"
    PATH = "path"
    URL = "URL"
    BOOL = "boolean"
    INT = "integer"
    PORT = "port"
    DURATION = "duration"
    TIMESTAMP = "RFC 3339 timestamp"
    CHOICE = "choice"
    NAMES = "list of names"
    HEADERS = "array of tables"


@dataclass(frozen=True)
class Key:
    section: str  # "" for the top level
    name: str  # the canonical TOML spelling; matched case-insensitively
    kind: Kind
    default: str | int | bool | tuple[str, ...] | None  # a TOML value; None means unset or derived
    doc: str
    choices: tuple[str, ...] = ()
    default_doc: str = ""  # how a derived or unset default is described
    example: str = ""  # TOML text of a sample value, for keys best left commented out
    deprecated: str = ""  # what the key maps to now; empty for current keys
    hauser: bool = False  # hauser reads this key too
    new_meaning: str = ""  # where syncd differs from hauser, said plainly
    extra_env: tuple[str, ...] = ()  # other variables that set it (lower precedence)
    attr: str = ""  # attribute on the settings object; derived from the name when empty

    @property
    def label(self) -> str:
        """How problems name the key: `ExportDuration` or `[s3] Bucket`."""
        return f"[{self.section}] {self.name}" if self.section else self.name

    @property
    def env_var(self) -> str:
        section = f"{self.section.upper()}_" if self.section else ""
        return f"{ENV_PREFIX}{section}{self.name.upper()}"

    @property
    def field(self) -> str:
        return self.attr or _snake(self.name)

    @property
    def secret(self) -> bool:
        return self.kind is Kind.SECRET


def _snake(name: str) -> str:
    """`ExportDuration` -> `export_duration`, `ApiURL` -> `api_url`, `IAMRole` -> `iam_role`."""
    words = re.findall(r"[A-Z]+(?=[A-Z][a-z]|\d|\b)|[A-Z]?[a-z]+|[A-Z]+|\d+", name)
    return "_".join(w.lower() for w in words)


K = Kind

#: Stand-ins in TOP_LEVEL for the keys whose choices come from the plugins (`top_level`
#: puts the real keys in their place).
PROVIDER_SLOT = Key("", "Provider", K.CHOICE, None, "")
WAREHOUSE_SLOT = Key("", "Warehouse", K.CHOICE, None, "")


TOP_LEVEL: tuple[Key, ...] = (
    Key(
        "",
        "FsApiToken",
        K.SECRET,
        "",
        "FullStory API key (an Admin or Architect key).",
        hauser=True,
        example='"<your FullStory API key>"',
        extra_env=("FULLSTORY_API_TOKEN",),
        default_doc="none (required to sync)",
    ),
    Key(
        "",
        "ApiURL",
        K.URL,
        "https://api.fullstory.com",
        "Base URL of the FullStory API.",
        hauser=True,
    ),
    Key(
        "",
        "LegacyApiURL",
        K.URL,
        "https://export.fullstory.com/api/v1",
        'Base URL of the legacy bundle export API (Source = "legacy").',
    ),
    Key(
        "",
        "Source",
        K.CHOICE,
        "segment",
        'Where events come from: "segment" (Segment Export API, time windows) or "legacy" '
        "(the deprecated bundle API).",
        choices=("segment", "legacy"),
    ),
    Key(
        "",
        "SegmentId",
        K.STRING,
        "everyone",
        'Segment to export; "everyone" exports all data.',
        hauser=True,
    ),
    Key(
        "",
        "IncludeMobileAppsFields",
        K.BOOL,
        False,
        "Also load the App* fields of mobile apps (columns). Exports carry every field; "
        "without this they are left out of every row, not folded into CustomVars.",
        hauser=True,
    ),
    Key(
        "",
        "AdditionalHttpHeader",
        K.HEADERS,
        (),
        "Extra HTTP headers on every API call, as `[[AdditionalHttpHeader]]` tables with `Key` "
        "and `Value`. Values are treated as secrets.",
        hauser=True,
        attr="additional_http_headers",
        example='[{ Key = "X-Proxy-Token", Value = "<value>" }]',
    ),
    PROVIDER_SLOT,
    Key(
        "",
        "StorageOnly",
        K.BOOL,
        False,
        "Stage files only, load no database; the resume point is the checkpoint object "
        '`<FilePrefix>.sync.hauser` next to the files. Always true for Provider "local".',
        hauser=True,
    ),
    Key(
        "",
        "SaveAsJson",
        K.BOOL,
        False,
        'Stage the export as NDJSON instead of a table file. Only with Provider "local" or '
        '"duckdb", or with StorageOnly.',
        hauser=True,
    ),
    Key(
        "",
        "StagedFormat",
        K.CHOICE,
        "auto",
        'Staged file format: "auto" (the warehouse\'s preferred one), "parquet" or "csv". '
        "SaveAsJson = true means NDJSON. BigQuery takes no CSV: its CSV loads cannot keep NULL "
        'apart from "".',
        choices=("auto", "parquet", "csv"),
    ),
    Key(
        "",
        "FilePrefix",
        K.STRING,
        "",
        'Prefix of staged object and file names, e.g. "hauser-uploads/" (keep the slash for '
        "a folder).",
        hauser=True,
    ),
    Key(
        "",
        "TmpDir",
        K.PATH,
        "syncd-data/tmp",
        "Folder for downloads and files being transformed.",
        hauser=True,
        new_meaning="hauser's default was the working directory",
    ),
    Key(
        "",
        "StateDir",
        K.PATH,
        None,
        "Folder for spool files, in-flight export operation ids and the status file; keep it "
        "across restarts so an interrupted export resumes.",
        default_doc='"<TmpDir>/syncd-state"',
        example='"syncd-data/tmp/syncd-state"',
    ),
    Key(
        "",
        "KeepStagedFiles",
        K.BOOL,
        False,
        "Keep staged files after their batch is committed (they are never deleted before).",
    ),
    Key(
        "",
        "CreateViews",
        K.BOOL,
        False,
        "Create or replace the analysis views (fs_sessions, fs_pageviews, fs_clicks, "
        "fs_custom_events, fs_users; docs/views.md) over the export table at start-up, in the "
        "warehouse's own SQL (`syncd views` does it on demand). Not with StorageOnly.",
    ),
    Key(
        "",
        "ExportIndividuals",
        K.BOOL,
        False,
        "Also keep a people table (IndividualsTable) current from the individuals export "
        "(TYPE_INDIVIDUAL) of every committed window: one row per individual with the identity "
        "fields and user vars, the most recent export winning, committed with its own "
        "bookkeeping in <IndividualsTable>_sync (docs/reliability.md). fs_users reads it. "
        'Needs Source "segment"; not with StorageOnly.',
    ),
    Key(
        "",
        "IndividualsTable",
        K.STRING,
        "fsindividuals",
        "The people table of ExportIndividuals, beside the export table (same dataset or "
        "schema); its bookkeeping is <IndividualsTable>_sync.",
    ),
    Key(
        "",
        "ExportDuration",
        K.DURATION,
        "1h",
        'Length of one export window: 15m to 24h, dividing 24h evenly. "0" means the default.',
        hauser=True,
    ),
    Key(
        "",
        "ExportDelay",
        K.DURATION,
        "24h",
        'Stay this far behind now, so late events are complete (at least 1h). "0" means the '
        "default.",
        hauser=True,
    ),
    Key(
        "",
        "SettleAfter",
        K.DURATION,
        "0",
        "Export every window loaded younger than this again once it is this old, and replace "
        "it in one transaction, so late events arrive too: fresh data after ExportDelay, "
        "complete data after SettleAfter. Fresh windows come first; settles fill the gaps. "
        'Must be longer than ExportDelay; "0" turns settling off. Source "segment" with a '
        'warehouse (not StorageOnly). E.g. ExportDelay = "1h" with SettleAfter = "24h".',
        example='"48h"',
    ),
    Key(
        "",
        "StartTime",
        K.TIMESTAMP,
        None,
        "Where a fresh install starts exporting; empty means 30 days before now. Once batches "
        "are committed, syncd continues after them; a StartTime before the first committed "
        "batch loads the time before it too (a rolled-back first day, or earlier history). "
        "StorageOnly with [local] UseStartTime: every start begins here.",
        default_doc="now - 30 days",
        example='"2026-01-01T00:00:00Z"',
        hauser=True,
    ),
    Key(
        "",
        "GroupFilesByDay",
        K.BOOL,
        False,
        'Deprecated in hauser v2. Source "segment": means ExportDuration = 24h when ExportDuration '
        'is unset. Source "legacy": load the bundles of one UTC day together.',
        hauser=True,
    ),
    Key(
        "",
        "Backoff",
        K.DURATION,
        "30s",
        "First wait before retrying a failed call; doubles each retry.",
        hauser=True,
        new_meaning="hauser had no default",
    ),
    Key(
        "",
        "BackoffStepsMax",
        K.INT,
        8,
        "Attempts of one call before its step fails (at least 1).",
        hauser=True,
        new_meaning="hauser had no default; 0 is invalid",
    ),
    Key(
        "",
        "PollInterval",
        K.DURATION,
        "5s",
        "Longest wait between polls of a running export operation; the first polls come "
        "sooner (0.5s, doubling up to this), as most exports of a window finish in seconds.",
    ),
    Key(
        "",
        "ApiRequestsPerSecond",
        K.INT,
        10,
        "Most calls to the export API (create, poll, results, bundle lists) syncd makes in "
        "any second, over all batches in flight; a 429's Retry-After pauses them all.",
    ),
    Key(
        "",
        "OperationTimeout",
        K.DURATION,
        "2h",
        "Longest wait for one export operation to finish before it counts as failed.",
    ),
    Key("", "HttpTimeout", K.DURATION, "60s", "Connect and read timeout of every API call."),
    Key("", "DownloadTimeout", K.DURATION, "30m", "Overall limit on downloading one export file."),
    Key(
        "",
        "MaxBatchAttempts",
        K.INT,
        5,
        "Attempts of one batch before it is held (the daemon stays up and reports unhealthy).",
    ),
    Key("", "HeldRetryInterval", K.DURATION, "15m", "How often a held batch is tried again."),
    Key(
        "",
        "Lookahead",
        K.INT,
        6,
        "Batches exported, downloaded, transformed and staged ahead of the one being "
        "committed (commits stay strictly in order); 0 = one batch at a time.",
    ),
    Key(
        "",
        "LogFormat",
        K.CHOICE,
        "auto",
        '"json" (one object per line), "console" (for people), or "auto" (console on a '
        "terminal, JSON otherwise).",
        choices=("auto", "json", "console"),
    ),
    Key(
        "",
        "LogLevel",
        K.CHOICE,
        "info",
        "Least severe level logged.",
        choices=("debug", "info", "warning", "error", "critical"),
    ),
    # Deprecated hauser keys: read, mapped, and reported in LoadedSettings.warnings.
    WAREHOUSE_SLOT,
    Key(
        "", "CheckInterval", K.DURATION, None, "Unused.", deprecated="unused; ignored", hauser=True
    ),
    Key("", "ListExportLimit", K.INT, None, "Unused.", deprecated="unused; ignored", hauser=True),
    Key(
        "",
        "ExportURL",
        K.URL,
        None,
        "hauser v1's debug URL of the bundle API.",
        deprecated="read as LegacyApiURL; ignored when LegacyApiURL is set",
        hauser=True,
    ),
)


@dataclass(frozen=True)
class ProviderChoice:
    """What the top-level keys say of one provider (from its plugin)."""

    name: str
    summary: str  # e.g. "S3 + Redshift"
    aliases: tuple[str, ...] = ()  # hauser's `Warehouse` values read as this provider


def top_level(providers: Sequence[ProviderChoice], default: str) -> tuple[Key, ...]:
    """TOP_LEVEL with `Provider` and hauser's `Warehouse` written for these providers."""
    choices = ", ".join(f'"{p.name}" ({p.summary})' for p in providers)
    provider = Key(
        "",
        "Provider",
        K.CHOICE,
        default,
        f"Where files are staged and loaded: {choices}.",
        choices=tuple(p.name for p in providers),
        hauser=True,
        new_meaning="hauser required it and knew local/aws/gcp only",
    )
    aliases = {alias: p.name for p in providers for alias in p.aliases}
    old = ", ".join(f'"{a}"' + ("" if a == p else f' (= "{p}")') for a, p in aliases.items())
    mapping = ", ".join(f"{a} -> {p}" for a, p in aliases.items())
    warehouse = Key(
        "",
        "Warehouse",
        K.CHOICE,
        None,
        f"Old name of Provider: {old}.",
        choices=tuple(aliases),
        deprecated=f"read as Provider ({mapping}); ignored when Provider is set",
        hauser=True,
    )
    slots = {PROVIDER_SLOT: provider, WAREHOUSE_SLOT: warehouse}
    return tuple(slots.get(k, k) for k in TOP_LEVEL)


METRICS_KEYS: tuple[Key, ...] = (
    Key(
        "metrics",
        "Address",
        K.STRING,
        "127.0.0.1:9108",
        "host:port of the Prometheus metrics and health endpoint that `syncd run` serves "
        '(other commands never serve it); "0.0.0.0:9108" in a container; "off" turns it off.',
    ),
)


def __getattr__(name: str) -> object:
    """`KEYS`: every key, the plugins' sections included (`syncd.config.table.key_table`)."""
    if name == "KEYS":
        from syncd.config.table import key_table

        return key_table().keys
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
