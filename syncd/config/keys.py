"""The table of every configuration key: the one source for parsing, env overrides and docs.

Each `Key` says where it lives (top level or a `[section]`), its TOML spelling, its kind, its
default written as a TOML value, and what it means. The loader, `reference_markdown()` and
`example_toml()` all read this table, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

ENV_PREFIX = "SYNCD_"
FILE_SUFFIX = "_FILE"

#: Sections in the order the docs and the example list them.
SECTIONS: tuple[str, ...] = (
    "duckdb",
    "postgres",
    "local",
    "s3",
    "redshift",
    "gcs",
    "bigquery",
    "snowflake",
    "metrics",
)

SECTION_DOCS: dict[str, str] = {
    "": "Top-level keys: the export API, the schedule, retries, staging and logging.",
    "duckdb": 'The embedded DuckDB warehouse (Provider = "duckdb", the default).',
    "postgres": 'PostgreSQL, loaded with COPY FROM STDIN (Provider = "postgres").',
    "local": 'The local staging folder (Provider "local", "duckdb" and "postgres").',
    "s3": 'Amazon S3, where files are staged for Redshift (Provider = "aws").',
    "redshift": 'Amazon Redshift, loaded with COPY from S3 (Provider = "aws").',
    "gcs": 'Google Cloud Storage, where files are staged for BigQuery (Provider = "gcp").',
    "bigquery": 'Google BigQuery, loaded with load jobs from GCS (Provider = "gcp").',
    "snowflake": 'Snowflake, loaded with COPY INTO from Parquet staged in S3 or GCS (Provider = "snowflake").',
    "metrics": "The Prometheus metrics and health endpoint.",
}


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

PROVIDERS = ("duckdb", "postgres", "local", "aws", "gcp", "snowflake")
WAREHOUSE_ALIASES = {"local": "local", "redshift": "aws", "bigquery": "gcp"}


def _tables(section: str, hauser: bool) -> tuple[Key, ...]:
    """ExportTable, SyncTable and RejectsTable, the same in every warehouse section."""
    return (
        Key(
            section, "ExportTable", K.STRING, "fsexport", "Table of exported events.", hauser=hauser
        ),
        Key(
            section,
            "SyncTable",
            K.STRING,
            "fssync",
            "One row per committed batch; the resume point. A hauser SyncTable is continued.",
            hauser=hauser,
        ),
        Key(
            section,
            "RejectsTable",
            K.STRING,
            "fsrejects",
            "Rows that could not be loaded, with why.",
        ),
    )


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
    Key(
        "",
        "Provider",
        K.CHOICE,
        "duckdb",
        'Where files are staged and loaded: "duckdb" (local folder + embedded DuckDB), '
        '"postgres" (local folder + PostgreSQL), "local" (files in [local] SaveDir only), '
        '"aws" (S3 + Redshift), "gcp" (GCS + BigQuery), "snowflake" (S3 or GCS + Snowflake).',
        choices=PROVIDERS,
        hauser=True,
        new_meaning="hauser required it and knew local/aws/gcp only",
    ),
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
    Key(
        "",
        "Warehouse",
        K.CHOICE,
        None,
        'Old name of Provider: "local", "redshift" (= "aws"), "bigquery" (= "gcp").',
        choices=tuple(WAREHOUSE_ALIASES),
        deprecated="read as Provider (local -> local, redshift -> aws, bigquery -> gcp); ignored when Provider is set",
        hauser=True,
    ),
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

SECTION_KEYS: tuple[Key, ...] = (
    # [duckdb]
    Key(
        "duckdb",
        "Path",
        K.PATH,
        "syncd-data/syncd.duckdb",
        "The DuckDB database file. syncd opens it only for a commit (or to create tables, "
        "repair, roll back, read its sync rows) and closes it after, so other processes can "
        "query it read-only in between; a second syncd is kept out by the lock file beside it "
        "(`<Path>.lock`).",
    ),
    Key(
        "duckdb",
        "LockWait",
        K.DURATION,
        "5m",
        "How long a write waits for the file while another process (a reader such as "
        "`duckdb -readonly`) has it open, retrying with backoff and saying so in the log and "
        "the status; then the batch's attempt fails and is retried (or held) like any "
        "other transient failure. 0s: do not wait.",
    ),
    Key(
        "duckdb",
        "ReaderWindow",
        K.DURATION,
        "1s",
        "The least time the file stays closed between two of syncd's uses of it, so that a "
        "reader retrying every second gets in even while batches commit back to back (a "
        "backfill). Costs up to this much per commit while catching up; 0s: no pause.",
    ),
    *_tables("duckdb", hauser=False),
    # [postgres]
    Key("postgres", "Host", K.STRING, "127.0.0.1", "Server host name or address."),
    Key("postgres", "Port", K.PORT, 5432, "Server port."),
    Key("postgres", "User", K.STRING, "", 'User name; required with Provider "postgres".'),
    Key("postgres", "Password", K.SECRET, "", "Password."),
    Key("postgres", "DB", K.STRING, "", 'Database name; required with Provider "postgres".'),
    Key("postgres", "DatabaseSchema", K.STRING, "public", "Schema of the tables."),
    *_tables("postgres", hauser=False),
    Key(
        "postgres",
        "SSLMode",
        K.CHOICE,
        None,
        'libpq sslmode. Unset, it is "verify-full" (TLS, the server\'s certificate must '
        "chain to a trusted CA, libpq's root.crt or PGSSLROOTCERT, and name the host; no "
        "password goes to a server that refuses TLS), except when Host is this machine: "
        "loopback (127.0.0.0/8, ::1, localhost) or a Unix socket (a path), where it is "
        '"prefer". "prefer", "allow" and "require" let a man in the middle '
        "read the password.",
        choices=("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
        default_doc='"verify-full"; "prefer" for a loopback host or a Unix socket',
        example='"verify-full"',
    ),
    # [local]
    Key(
        "local",
        "SaveDir",
        K.PATH,
        "syncd-data/files",
        'Folder of staged files for Provider "local" (where they stay), "duckdb" and "postgres".',
        hauser=True,
        new_meaning="hauser had no default and needed the folder to exist",
    ),
    Key(
        "local",
        "UseStartTime",
        K.BOOL,
        False,
        "Start from StartTime even when a StorageOnly checkpoint exists (as hauser did for "
        'Provider "local").',
        hauser=True,
    ),
    Key(
        "local",
        "StartTime",
        K.TIMESTAMP,
        None,
        "Unused since hauser v1.",
        deprecated="ignored; use the top-level StartTime",
        hauser=True,
    ),
    # [s3]
    Key(
        "s3",
        "Bucket",
        K.STRING,
        "",
        'Bucket for staged files, optionally with a path: "bucket/sub/path". Required with '
        'Provider "aws".',
        hauser=True,
    ),
    Key(
        "s3",
        "Region",
        K.STRING,
        "",
        "Region of the bucket; empty means the AWS SDK's default.",
        hauser=True,
    ),
    Key(
        "s3",
        "Timeout",
        K.DURATION,
        "5m",
        "Limit on one S3 operation.",
        hauser=True,
        new_meaning="hauser had no default",
    ),
    Key(
        "s3", "EndpointURL", K.URL, "", "Custom S3 endpoint (MinIO, a local stand-in); empty = AWS."
    ),
    Key(
        "s3",
        "ServerSideEncryption",
        K.CHOICE,
        "",
        'Server-side encryption of staged objects: "" (bucket default), "AES256" or "aws:kms".',
        choices=("", "AES256", "aws:kms"),
    ),
    Key("s3", "KMSKeyId", K.STRING, "", 'KMS key for ServerSideEncryption = "aws:kms".'),
    Key(
        "s3",
        "S3Only",
        K.BOOL,
        None,
        "Stage to S3 only.",
        deprecated='ORed into StorageOnly (with Provider "aws", as in hauser)',
        hauser=True,
    ),
    # [redshift]
    Key(
        "redshift",
        "Host",
        K.STRING,
        "",
        'Cluster endpoint; required with Provider "aws".',
        hauser=True,
    ),
    Key(
        "redshift",
        "Port",
        K.PORT,
        5439,
        "Cluster port (a number or, as hauser wrote it, a string).",
        hauser=True,
    ),
    Key("redshift", "DB", K.STRING, "", 'Database; required with Provider "aws".', hauser=True),
    Key("redshift", "User", K.STRING, "", 'User; required with Provider "aws".', hauser=True),
    Key("redshift", "Password", K.SECRET, "", "Password.", hauser=True),
    Key(
        "redshift",
        "DatabaseSchema",
        K.STRING,
        "public",
        'Schema of the tables; "search_path" leaves names unqualified (the search path decides).',
        hauser=True,
        new_meaning="hauser required it",
    ),
    *_tables("redshift", hauser=True),
    Key(
        "redshift",
        "Credentials",
        K.SECRET,
        "",
        'Authorization for COPY, e.g. "aws_iam_role=arn:aws:iam::123456789012:role/load". '
        "Set this or IAMRole.",
        hauser=True,
    ),
    Key(
        "redshift",
        "IAMRole",
        K.STRING,
        "",
        "ARN of the IAM role COPY uses to read S3 (instead of Credentials).",
    ),
    Key(
        "redshift",
        "Region",
        K.STRING,
        None,
        "Region of the S3 bucket, named in a CSV COPY. A Parquet COPY takes no Region: the "
        'bucket must be in the cluster\'s Region (syncd refuses StagedFormat "parquet" when '
        "this Region differs from the one in Host).",
        default_doc="[s3] Region",
        example='"us-east-2"',
    ),
    Key(
        "redshift",
        "VarCharMax",
        K.INT,
        65535,
        "Longest string kept, in bytes; longer values are cut at a UTF-8 character boundary "
        "(by the transform, whatever StagedFormat). A row whose CustomVars JSON text is over "
        "65535 bytes (VARCHAR CustomVarsType) is quarantined: cut, it would not be JSON.",
        hauser=True,
        attr="varchar_max",
        new_meaning="hauser had no default",
    ),
    Key(
        "redshift",
        "SSL",
        K.BOOL,
        True,
        "Connect with SSL, verified against Redshift's certificates (turn off only for a "
        "Redshift-compatible endpoint without SSL, such as a local stand-in).",
    ),
    Key(
        "redshift",
        "StatementTimeout",
        K.DURATION,
        "1h",
        "Longest any one statement may take (Redshift's statement_timeout, set on every "
        'connection; it counts the wait in the WLM queue too); "0" means no limit. A '
        "statement cut off by it holds the batch at once, with the reason, rather than "
        "retrying it into the same limit. There is no read timeout: TCP keepalive finds a "
        "dead connection; opening one is limited to 30s.",
    ),
    Key(
        "redshift",
        "CustomVarsType",
        K.CHOICE,
        "varchar",
        'Column type of CustomVars in a new table: "varchar" (JSON text, as hauser) or '
        '"super" (Redshift\'s semi-structured type).',
        choices=("varchar", "super"),
    ),
    # [gcs]
    Key(
        "gcs",
        "Bucket",
        K.STRING,
        "",
        'Bucket for staged files. Required with Provider "gcp".',
        hauser=True,
    ),
    Key("gcs", "EndpointURL", K.URL, "", "Custom GCS endpoint (an emulator); empty = Google."),
    Key(
        "gcs",
        "GCSOnly",
        K.BOOL,
        None,
        "Stage to GCS only.",
        deprecated='ORed into StorageOnly (with Provider "gcp", as in hauser)',
        hauser=True,
    ),
    # [bigquery]
    Key(
        "bigquery",
        "Project",
        K.STRING,
        "",
        'Project of the dataset; required with Provider "gcp".',
        hauser=True,
    ),
    Key(
        "bigquery",
        "Dataset",
        K.STRING,
        "",
        'Dataset of the tables; required with Provider "gcp".',
        hauser=True,
    ),
    *_tables("bigquery", hauser=True),
    Key(
        "bigquery",
        "PartitionExpiration",
        K.DURATION,
        "0",
        'Drop a day partition this long after the day\'s start; "0" keeps them forever. Days '
        "older than this are not loaded (their rows would vanish at once): StartTime is not "
        "reached before them and `backfill` refuses them.",
        hauser=True,
    ),
    Key(
        "bigquery", "Location", K.STRING, "", 'Location of jobs, e.g. "EU"; empty = the dataset\'s.'
    ),
    Key(
        "bigquery",
        "Clustering",
        K.NAMES,
        (),
        "Columns the export table is clustered by when syncd creates it (at most 4).",
    ),
    Key(
        "bigquery",
        "RequirePartitionFilter",
        K.BOOL,
        False,
        "Make BigQuery refuse any query over the export table without an EventStart filter "
        "that prunes partitions (a guard against full scans; syncd's own statements all have "
        "one). Turned on for an existing table too, never turned off by syncd.",
    ),
    Key(
        "bigquery",
        "EndpointURL",
        K.URL,
        "",
        "Custom BigQuery endpoint (an emulator); empty = Google.",
    ),
    # [snowflake]
    Key(
        "snowflake",
        "Account",
        K.STRING,
        "",
        'Account identifier, e.g. "myorg-myaccount"; required with Provider "snowflake".',
    ),
    Key("snowflake", "User", K.STRING, "", 'User; required with Provider "snowflake".'),
    Key("snowflake", "Password", K.SECRET, "", "Password (or use PrivateKeyFile)."),
    Key(
        "snowflake",
        "PrivateKeyFile",
        K.STRING,
        "",
        "PEM private key for key-pair authentication (instead of Password).",
        example='"/run/secrets/snowflake_key.p8"',
    ),
    Key(
        "snowflake",
        "PrivateKeyPassphrase",
        K.SECRET,
        "",
        "Passphrase of an encrypted PrivateKeyFile.",
    ),
    Key("snowflake", "Role", K.STRING, "", "Role of the session; empty = the user's default."),
    Key(
        "snowflake",
        "Warehouse",
        K.STRING,
        "",
        "Virtual warehouse that runs the loads; empty = the user's default.",
    ),
    Key("snowflake", "Database", K.STRING, "", 'Database; required with Provider "snowflake".'),
    Key(
        "snowflake",
        "Schema",
        K.STRING,
        "PUBLIC",
        "Schema of the tables, used quoted (exactly as written: Snowflake's default schema is "
        "PUBLIC, upper case).",
        attr="database_schema",
    ),
    *_tables("snowflake", hauser=False),
    Key(
        "snowflake",
        "Stage",
        K.CHOICE,
        "s3",
        'Where files are staged: "s3" ([s3] Bucket, read by COPY INTO as an external location), '
        '"gcs" ([gcs] Bucket, through a StorageIntegration) or "internal" (the export table\'s '
        "own Snowflake stage: each file is uploaded with PUT from [local] SaveDir).",
        choices=("s3", "gcs", "internal"),
    ),
    Key(
        "snowflake",
        "StorageIntegration",
        K.STRING,
        "",
        "Storage integration COPY INTO reads the bucket with (required for GCS; for S3, set "
        "this or AwsKeyId and AwsSecretKey).",
    ),
    Key("snowflake", "AwsKeyId", K.STRING, "", "S3 access key COPY INTO reads the bucket with."),
    Key("snowflake", "AwsSecretKey", K.SECRET, "", "Secret of AwsKeyId."),
    Key(
        "snowflake",
        "Host",
        K.STRING,
        "",
        "Endpoint host instead of <Account>.snowflakecomputing.com (a stand-in, PrivateLink).",
    ),
    Key("snowflake", "Port", K.PORT, 443, "Endpoint port."),
    Key(
        "snowflake",
        "Protocol",
        K.CHOICE,
        "https",
        'Endpoint protocol; "http" only for a local stand-in.',
        choices=("https", "http"),
    ),
    # [metrics]
    Key(
        "metrics",
        "Address",
        K.STRING,
        "127.0.0.1:9108",
        "host:port of the Prometheus metrics and health endpoint that `syncd run` serves "
        '(other commands never serve it); "0.0.0.0:9108" in a container; "off" turns it off.',
    ),
)

KEYS: tuple[Key, ...] = TOP_LEVEL + SECTION_KEYS

#: section -> lower-cased key name -> Key
KEYS_BY_SECTION: dict[str, dict[str, Key]] = {
    section: {k.name.lower(): k for k in KEYS if k.section == section}
    for section in ("", *SECTIONS)
}
