"""Snowflake as the warehouse: COPY INTO from Parquet staged in S3 (or GCS), in one transaction.

The driver is snowflake-connector-python (extra `syncd[snowflake]`), connected with
autocommit off: a commit is one transaction that deletes this batch's earlier rows, rejects
and sync row, runs `COPY INTO <export> FROM '<s3://... of the staged file>' <authorization>
FILE_FORMAT = (TYPE = PARQUET) MATCH_BY_COLUMN_NAME = CASE_SENSITIVE FORCE = TRUE`, turns
CustomVars into JSON (`PARSE_JSON`), checks the rows, inserts the rejects and the sync row, and
commits. Any failure rolls all of it back.

Load metadata: Snowflake remembers for 64 days which file names it loaded into a table and
silently skips them in a later COPY ("Loading older files"). That metadata outlives a rollback
and a DELETE, so a batch reloaded after a failed commit or a `syncd rollback` would load
nothing. Every COPY says FORCE = TRUE: the same transaction has just deleted the batch's earlier
rows, so loading the file again can never duplicate them; the row check then proves the load
put exactly the batch's rows in.

Identifiers: Snowflake folds unquoted names to UPPER case; syncd quotes every name, so the
tables and columns keep syncd's (hauser's) spelling exactly: `"EventStart"`, `"fsexport"`,
and a query must quote them too (`SELECT "EventStart" FROM "fsexport"`). Each session sets
QUOTED_IDENTIFIERS_IGNORE_CASE = FALSE, so an account that sets it TRUE cannot fold them. The
schema is quoted as well: the default is `PUBLIC` (Snowflake's default schema, upper case).

Types: strings VARCHAR (16 MB at most: `capabilities.max_string_bytes`), integers NUMBER(38,0),
FLOAT, timestamps TIMESTAMP_NTZ holding UTC (as hauser's tables), CustomVars VARIANT.

Stages: "s3" (an external location, read with a storage integration or with the S3 keys given
in the COPY, which are then a literal in the statement: never logged, and every error passes
through `redact`), "gcs" (a storage integration only, as Snowflake requires for GCS), or
"internal": the transform's local file is uploaded with PUT to the export table's own stage
(`@"<schema>"."%<table>"`) inside the commit, then loaded with FILES = ('<name>') and PURGE.

Authentication: a password, or a key pair (PrivateKeyFile, PEM, optionally encrypted with
PrivateKeyPassphrase); the key is read and handed to the driver as PKCS#8 DER.
"""

from __future__ import annotations

import secrets as _secrets
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import structlog

import syncd
from syncd.batch import StagedBatch, SyncRecord
from syncd.errors import LoadError, TerminalLoadError, TransientLoadError
from syncd.fields import FieldType
from syncd.timeutil import utcnow
from warehouses import sql
from warehouses.base import Capabilities, quote_identifier
from warehouses.dbapi import DbApiWarehouse
from warehouses.postgres import reject_rows, rejects_file
from warehouses.redshift import quote_literal, redact
from warehouses.sql import Dialect, Query, TableNames, render

log = structlog.get_logger(__name__)

StageKind = Literal["s3", "gcs", "internal"]

#: Snowflake's longest VARCHAR, in bytes.
SNOWFLAKE_VARCHAR_MAX = 16 * 1024 * 1024
LOGIN_TIMEOUT = 60
NETWORK_TIMEOUT = 3600

SNOWFLAKE = Dialect(
    name="snowflake",
    types={
        FieldType.INT64: "NUMBER(38,0)",
        FieldType.FLOAT: "FLOAT",
        FieldType.STRING: "VARCHAR",
        FieldType.TIMESTAMP: "TIMESTAMP_NTZ",
        FieldType.JSON: "VARIANT",
    },
    param="%s",  # the connector's default paramstyle (pyformat)
    paramstyle="format",
    fold_case=False,  # every name is quoted: matched exactly
    insert_json_function="PARSE_JSON",  # INSERT ... VALUES takes neither JSON text nor calls
    # DDL commits at once in Snowflake: each view is replaced in one statement, never dropped
    replace_view_changes_columns=True,
)

_COPY = (
    "COPY INTO {table} FROM {uri} {authorization} FILE_FORMAT = (TYPE = PARQUET) "
    "MATCH_BY_COLUMN_NAME = CASE_SENSITIVE FORCE = TRUE"
)
_PUT = "PUT {file} {stage} AUTO_COMPRESS = FALSE OVERWRITE = TRUE"
_COPY_INTERNAL = (
    "COPY INTO {table} FROM {stage} FILES = ({name}) FILE_FORMAT = (TYPE = PARQUET) "
    "MATCH_BY_COLUMN_NAME = CASE_SENSITIVE FORCE = TRUE PURGE = TRUE"
)
_PARSE_JSON = (
    "UPDATE {export} SET {column} = PARSE_JSON({column}::STRING) "
    "WHERE {SyncdBatchId} = {p} AND {column} IS NOT NULL"
)
_INSERT_REJECTS = "INSERT INTO {rejects} ({columns}) VALUES ({placeholders})"
#: First half of the commit's fence: Snowflake locks no row by reading it, so the commit touches
#: its own lease row; a takeover's DELETE of the lease then waits for the commit to end.
_TOUCH_LEASE = (
    "UPDATE {lease} SET {ExpiresAt} = {ExpiresAt} WHERE {Name} = {p} AND {HolderId} = {p}"
)
_CREATE_PROBE = "CREATE TABLE {probe} ({ok} INTEGER)"
_DROP_PROBE = "DROP TABLE IF EXISTS {probe}"

#: Connector error numbers that a later attempt may not meet: the network (25xxxx are the
#: client's own: 250001 "could not connect", 250003 "failed to get the response"...), a
#: statement aborted for a lock wait or a deadlock (000625, 000604 cancelled), the service
#: busy (000630 queue, 390114 auth token expired: the driver logs in again).
_TRANSIENT_ERRNOS = frozenset({250001, 250002, 250003, 604, 625, 630, 390114})
#: Login failures: wrong password, key, user or account; retrying cannot help.
_LOGIN_ERRNOS = frozenset({390100, 390144, 390318, 394304, 250001})


def map_snowflake_error(exc: Exception, action: str, secrets: Sequence[str] = ()) -> LoadError:
    """The one place the connector's exceptions become syncd's: transient or terminal."""
    from snowflake.connector import errors as sf

    if isinstance(exc, sf.Error):
        errno = exc.errno
        text = redact(str(exc.msg or exc).strip(), secrets)
        state = f" [SQLSTATE {exc.sqlstate}]" if exc.sqlstate else ""
        message = redact(f"{action}: {text} (error {errno}){state}", secrets)
        if errno in _TRANSIENT_ERRNOS and not _login_refused(text):
            return TransientLoadError(message)
        if isinstance(exc, (sf.OperationalError, sf.InterfaceError)) and not _login_refused(text):
            return TransientLoadError(message)
        if "conflict" in text.lower() or "lock" in text.lower() and "timeout" in text.lower():
            return TransientLoadError(message)
        return TerminalLoadError(message)
    if isinstance(exc, OSError):
        return TransientLoadError(redact(f"{action}: {exc.strerror or exc}", secrets))
    return TerminalLoadError(redact(f"{action}: {type(exc).__name__}: {exc}", secrets))


def _login_refused(text: str) -> bool:
    lowered = text.lower()
    return "incorrect username or password" in lowered or "jwt token is invalid" in lowered


def load_private_key(path: Path, passphrase: str = "") -> bytes:
    """The PEM private key at `path` (decrypted with `passphrase`) as PKCS#8 DER, for the
    connector's key-pair authentication; a TerminalLoadError says what is wrong."""
    from cryptography.hazmat.primitives import serialization

    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise TerminalLoadError(
            f"[snowflake] PrivateKeyFile {str(path)!r} cannot be read: {exc.strerror or exc}"
        ) from exc
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase.encode() or None)
    except (ValueError, TypeError) as exc:
        reason = "wrong PrivateKeyPassphrase, or not a PEM private key"
        if isinstance(exc, TypeError):
            reason = (
                "the key is encrypted: set PrivateKeyPassphrase"
                if not passphrase
                else "the key is not encrypted: leave PrivateKeyPassphrase empty"
            )
        raise TerminalLoadError(
            f"[snowflake] PrivateKeyFile {str(path)!r} cannot be loaded ({reason})"
        ) from None
    return key.private_bytes(
        encoding=serialization.Encoding.DER,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


class SnowflakeWarehouse(DbApiWarehouse):
    """Implements `warehouses.base.Warehouse` on Snowflake, loading Parquet from S3 or GCS."""

    dialect = SNOWFLAKE
    name = "Snowflake"
    capabilities = Capabilities(
        staging_formats=("parquet",), max_string_bytes=SNOWFLAKE_VARCHAR_MAX
    )

    def __init__(
        self,
        *,
        account: str,
        user: str,
        database: str,
        password: str = "",
        private_key_file: Path | None = None,
        private_key_passphrase: str = "",
        role: str = "",
        warehouse: str = "",
        schema: str = "PUBLIC",
        export_table: str = "fsexport",
        sync_table: str = "fssync",
        rejects_table: str = "fsrejects",
        stage: StageKind = "s3",
        storage_integration: str = "",
        aws_key_id: str = "",
        aws_secret_key: str = "",
        host: str = "",
        port: int = 0,
        protocol: str = "",
        login_timeout: int = LOGIN_TIMEOUT,
        lease_clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(
            TableNames(export=export_table, sync=sync_table, rejects=rejects_table, schema=schema),
            lease_clock=lease_clock,
        )
        if stage == "gcs" and not storage_integration:
            raise TerminalLoadError('[snowflake] Stage = "gcs" needs a StorageIntegration')
        elif stage == "s3" and not storage_integration and not (aws_key_id and aws_secret_key):
            raise TerminalLoadError(
                '[snowflake] Stage = "s3" needs a StorageIntegration, or AwsKeyId and AwsSecretKey'
            )
        if not password and private_key_file is None:
            raise TerminalLoadError("[snowflake] needs a Password or a PrivateKeyFile")
        self._stage = stage
        self._integration = (
            quote_identifier(storage_integration.upper()) if storage_integration else ""
        )
        self._aws_key_id = aws_key_id
        self._aws_secret_key = aws_secret_key
        self._password = password
        self._private_key_file = private_key_file
        self._passphrase = private_key_passphrase
        self._where = f"{account}/{database}"
        self._params: dict[str, Any] = {
            k: v
            for k, v in {
                "account": account,
                "user": user,
                "role": role,
                "warehouse": warehouse,
                "database": database,
                "host": host,
                "port": port,
                "protocol": protocol,
                "login_timeout": login_timeout,
                "network_timeout": NETWORK_TIMEOUT,
                "application": "syncd",
            }.items()
            if v
        }

    def __repr__(self) -> str:
        return f"SnowflakeWarehouse(account={self._where!r}, tables={self.tables!r})"

    @property
    def _secrets(self) -> tuple[str, ...]:
        return (self._password, self._passphrase, self._aws_secret_key, self._aws_key_id)

    # --- DbApiWarehouse hooks ----------------------------------------------------------------

    def _connect(self) -> Any:
        import snowflake.connector

        auth: dict[str, Any] = (
            {"private_key": load_private_key(self._private_key_file, self._passphrase)}
            if self._private_key_file is not None
            else {"password": self._password}
        )
        try:
            return snowflake.connector.connect(
                **self._params,
                **auth,
                autocommit=False,
                session_parameters={
                    "QUOTED_IDENTIFIERS_IGNORE_CASE": False,
                    "TIMEZONE": "UTC",
                    "CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False,
                    "QUERY_TAG": f"syncd/{syncd.__version__}",
                },
            )
        except Exception as exc:
            raise self._map_error(exc, f"cannot connect to Snowflake {self._where}") from exc

    def _map_error(self, exc: Exception, action: str) -> LoadError:
        return map_snowflake_error(exc, action, self._secrets)

    def _load(self, cursor: Any, staged: StagedBatch, record: SyncRecord) -> int:
        batch = staged.batch
        table = self.tables.qualified(self.tables.export)
        if self._stage == "internal":
            path = _local_path(staged.uri)
            stage = self._table_stage()
            put = render(
                _PUT,
                self.dialect,
                file=quote_literal(path.resolve().as_uri(), "the staged file's path"),
                stage=stage,
            )
            cursor.execute(put)
            cursor.fetchall()
            statement = render(
                _COPY_INTERNAL,
                self.dialect,
                table=table,
                stage=stage,
                name=quote_literal(path.name, "the staged file's name"),
            )
        else:
            statement = render(
                _COPY,
                self.dialect,
                table=table,
                uri=quote_literal(self._external_uri(staged.uri), "the staged file's URI"),
                authorization=self._authorization(),
            )
        cursor.execute(statement)
        loaded = _rows_loaded(cursor)
        for column in batch.columns:
            if column.type is FieldType.JSON:
                # a Parquet string loads into VARIANT as a string: make it the JSON it holds
                update = render(
                    _PARSE_JSON,
                    self.dialect,
                    self.tables,
                    column=quote_identifier(column.name),
                )
                self._execute(cursor, Query(update, (batch.key.id,)))
        return loaded

    def _load_rejects(self, cursor: Any, staged: StagedBatch, record: SyncRecord) -> int:
        path = rejects_file(staged)
        if path is None:
            return 0
        rows = list(reject_rows(path, staged.batch.key.id, record.committed_at))
        if rows:
            statement = render(
                _INSERT_REJECTS,
                self.dialect,
                self.tables,
                columns=sql.column_list(sql.REJECTS_COLUMNS, self.dialect),
                placeholders=self.dialect.placeholders(len(sql.REJECTS_COLUMNS)),
            )
            cursor.executemany(statement, rows)
        return len(rows)

    # --- Snowflake specifics -----------------------------------------------------------------

    def check(self) -> None:
        """Connect, read, and create and drop a table in the schema. Snowflake commits DDL at
        once (a CREATE TABLE ends the open transaction), so the probe is dropped, not rolled
        back."""
        probe = self.tables.qualified(f"syncd_write_probe_{_secrets.token_hex(6)}")
        with self._lock:
            with self._transaction("read the database") as cursor:
                self._fetch(cursor, Query("SELECT 1"))
            with self._transaction("create a table") as cursor:
                self._create_schema(cursor)
                self._execute(cursor, Query(render(_CREATE_PROBE, self.dialect, probe=probe)))
                self._execute(cursor, Query(render(_DROP_PROBE, self.dialect, probe=probe)))

    def _table_stage(self) -> str:
        """The export table's own stage: `@"<schema>"."%<table>"`."""
        name = quote_identifier(self.tables.export)
        stage = f'"%{name[1:]}'
        if self.tables.schema is not None:
            stage = f"{quote_identifier(self.tables.schema)}.{stage}"
        return f"@{stage}"

    def _fence(self, cursor: Any, action: str) -> None:
        """The lease fence, made to hold until COMMIT: an UPDATE of this holder's own lease row
        (DML takes the lease table's lock, which a takeover's DELETE must wait for), then the
        read of the holder that refuses the commit when another syncd took over."""
        holder, lease = self._lease_holder, self._lease
        if holder is not None and lease is not None:
            touch = render(_TOUCH_LEASE, self.dialect, lease=lease.table)
            self._execute(cursor, Query(touch, (lease.name, holder.id)))
        super()._fence(cursor, action)

    def _authorization(self) -> str:
        if self._integration:
            return f"STORAGE_INTEGRATION = {self._integration}"
        key_id = quote_literal(self._aws_key_id, "[snowflake] AwsKeyId")
        secret = quote_literal(self._aws_secret_key, "[snowflake] AwsSecretKey")
        return f"CREDENTIALS = (AWS_KEY_ID = {key_id} AWS_SECRET_KEY = {secret})"

    def _external_uri(self, uri: str) -> str:
        if self._stage == "s3" and uri.startswith("s3://"):
            return uri
        if self._stage == "gcs" and uri.startswith("gs://"):
            return "gcs://" + uri[len("gs://") :]
        raise TerminalLoadError(
            f"Snowflake with Stage = {self._stage!r} cannot load {uri!r}: stage the files in "
            f"{'S3' if self._stage == 's3' else 'GCS'}"
        )


def _local_path(uri: str) -> Path:
    """The local file of an internal-stage batch (a path or a file:// URI)."""
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(uri).path))
    if "://" in uri:
        raise TerminalLoadError(
            f"Snowflake with Stage = 'internal' cannot load {uri!r}: it uploads a local file"
        )
    return Path(uri)


def _rows_loaded(cursor: Any) -> int:
    """The rows a COPY INTO loaded: the sum of its result's rows_loaded (no such column when it
    processed no file)."""
    names = [str(d[0]).lower() for d in (cursor.description or ())]
    rows = cursor.fetchall()
    if "rows_loaded" not in names:
        return 0
    index = names.index("rows_loaded")
    return sum(int(row[index] or 0) for row in rows)


__all__ = [
    "SNOWFLAKE",
    "SnowflakeWarehouse",
    "load_private_key",
    "map_snowflake_error",
]


# --- the plugin declarations (warehouses.plugin): the [snowflake] section and its provider ------

from dataclasses import dataclass as _dataclass  # noqa: E402
from typing import TYPE_CHECKING as _TYPE_CHECKING  # noqa: E402

from syncd.config.keys import Key, Kind  # noqa: E402
from syncd.config.secret import Secret  # noqa: E402
from warehouses.plugin import (  # noqa: E402
    ConfigSection,
    SettleContext,
    WarehousePlugin,
    check_names,
    table_keys,
)

if _TYPE_CHECKING:
    from syncd.config.model import Settings
    from warehouses.base import Stage


@_dataclass(frozen=True)
class SnowflakeSettings:
    account: str
    user: str
    password: Secret
    private_key_file: str
    private_key_passphrase: Secret
    role: str
    warehouse: str
    database: str
    database_schema: str
    export_table: str
    sync_table: str
    rejects_table: str
    stage: StageKind
    storage_integration: str
    aws_key_id: str
    aws_secret_key: Secret
    host: str
    port: int
    protocol: str


def _validate(ctx: SettleContext, provider: str) -> None:
    """How COPY INTO reads the stage and how the session logs in (the stage's own bucket key
    is required by the stage's section)."""
    check_names(ctx, "snowflake", "Schema")
    storage_only = bool(ctx.get("StorageOnly"))
    stage = ctx.get("[snowflake] Stage")
    if stage == "internal" and storage_only:
        ctx.problem("[snowflake] Stage", "'internal' stages in Snowflake: not with StorageOnly")
    if storage_only:
        return
    integration = ctx.get("[snowflake] StorageIntegration")
    keys = ctx.get("[snowflake] AwsKeyId"), ctx.get("[snowflake] AwsSecretKey").reveal()
    if integration:
        ctx.identifier("[snowflake] StorageIntegration")
    if stage == "gcs" and not integration:
        ctx.problem("[snowflake] StorageIntegration", "required with Stage = 'gcs'")
    elif stage == "s3" and not integration and not all(keys):
        ctx.problem(
            "[snowflake] StorageIntegration",
            "required with Stage = 's3' (or [snowflake] AwsKeyId and AwsSecretKey) so "
            "COPY INTO can read S3",
        )
    elif stage != "internal" and integration and any(keys):
        ctx.problem(
            "[snowflake] StorageIntegration", "and [snowflake] AwsKeyId are both set; set one"
        )
    password = ctx.get("[snowflake] Password").reveal()
    key_file = ctx.get("[snowflake] PrivateKeyFile")
    if password and key_file:
        ctx.problem("[snowflake] Password", "and [snowflake] PrivateKeyFile are both set; set one")
    elif not password and not key_file:
        ctx.problem(
            "[snowflake] Password", "required with Provider 'snowflake' (or PrivateKeyFile)"
        )


SECTION = ConfigSection(
    "snowflake",
    "Snowflake, loaded with COPY INTO from Parquet staged in S3, GCS or the table's own stage "
    '(Provider = "snowflake").',
    (
        Key(
            "snowflake",
            "Account",
            Kind.STRING,
            "",
            'Account identifier, e.g. "myorg-myaccount"; required with Provider "snowflake".',
        ),
        Key("snowflake", "User", Kind.STRING, "", 'User; required with Provider "snowflake".'),
        Key("snowflake", "Password", Kind.SECRET, "", "Password (or use PrivateKeyFile)."),
        Key(
            "snowflake",
            "PrivateKeyFile",
            Kind.STRING,
            "",
            "PEM private key for key-pair authentication (instead of Password).",
            example='"/run/secrets/snowflake_key.p8"',
        ),
        Key(
            "snowflake",
            "PrivateKeyPassphrase",
            Kind.SECRET,
            "",
            "Passphrase of an encrypted PrivateKeyFile.",
        ),
        Key(
            "snowflake", "Role", Kind.STRING, "", "Role of the session; empty = the user's default."
        ),
        Key(
            "snowflake",
            "Warehouse",
            Kind.STRING,
            "",
            "Virtual warehouse that runs the loads; empty = the user's default.",
        ),
        Key(
            "snowflake",
            "Database",
            Kind.STRING,
            "",
            'Database; required with Provider "snowflake".',
        ),
        Key(
            "snowflake",
            "Schema",
            Kind.STRING,
            "PUBLIC",
            "Schema of the tables, used quoted (exactly as written: Snowflake's default schema is "
            "PUBLIC, upper case).",
            attr="database_schema",
        ),
        *table_keys("snowflake", hauser=False),
        Key(
            "snowflake",
            "Stage",
            Kind.CHOICE,
            "s3",
            'Where files are staged: "s3" ([s3] Bucket, read by COPY INTO as an external '
            'location), "gcs" ([gcs] Bucket, through a StorageIntegration) or "internal" (the '
            "export table's own Snowflake stage: each file is uploaded with PUT from [local] "
            "SaveDir).",
            choices=("s3", "gcs", "internal"),
        ),
        Key(
            "snowflake",
            "StorageIntegration",
            Kind.STRING,
            "",
            "Storage integration COPY INTO reads the bucket with (required for GCS; for S3, set "
            "this or AwsKeyId and AwsSecretKey).",
        ),
        Key(
            "snowflake",
            "AwsKeyId",
            Kind.STRING,
            "",
            "S3 access key COPY INTO reads the bucket with.",
        ),
        Key("snowflake", "AwsSecretKey", Kind.SECRET, "", "Secret of AwsKeyId."),
        Key(
            "snowflake",
            "Host",
            Kind.STRING,
            "",
            "Endpoint host instead of <Account>.snowflakecomputing.com (a stand-in, PrivateLink).",
        ),
        Key("snowflake", "Port", Kind.PORT, 443, "Endpoint port."),
        Key(
            "snowflake",
            "Protocol",
            Kind.CHOICE,
            "https",
            'Endpoint protocol; "http" only for a local stand-in.',
            choices=("https", "http"),
        ),
    ),
    SnowflakeSettings,
    required=("Account", "User", "Database"),
    validate=_validate,
)


def _build(settings: Settings, stage: Stage, read_only: bool) -> SnowflakeWarehouse:
    sf: SnowflakeSettings = settings.section("snowflake")
    return SnowflakeWarehouse(
        account=sf.account,
        user=sf.user,
        database=sf.database,
        password=sf.password.reveal(),
        private_key_file=Path(sf.private_key_file) if sf.private_key_file else None,
        private_key_passphrase=sf.private_key_passphrase.reveal(),
        role=sf.role,
        warehouse=sf.warehouse,
        schema=sf.database_schema,
        export_table=sf.export_table,
        sync_table=sf.sync_table,
        rejects_table=sf.rejects_table,
        stage=sf.stage,
        storage_integration=sf.storage_integration,
        aws_key_id=sf.aws_key_id,
        aws_secret_key=sf.aws_secret_key.reveal(),
        host=sf.host,
        port=sf.port if sf.host else 0,
        protocol=sf.protocol if sf.host else "",
    )


def _destination(settings: Settings) -> str:
    sf: SnowflakeSettings = settings.section("snowflake")
    staged = {
        "s3": f"s3://{settings.section('s3').bucket}",
        "gcs": f"gs://{settings.section('gcs').bucket}",
        "internal": "the table's own stage",
    }[sf.stage]
    return f"Snowflake database {sf.database}.{sf.database_schema}, staged in {staged}"


PLUGIN = WarehousePlugin(
    "snowflake",
    "S3, GCS or its own stage + Snowflake",
    stage="s3",
    section=SECTION,
    build=_build,
    destination=_destination,
    stage_key="[snowflake] Stage",
    stage_aliases=(("internal", "local"),),
    extra="snowflake",
    drivers=("snowflake.connector",),
)
