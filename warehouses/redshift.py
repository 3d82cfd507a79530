"""Amazon Redshift as the warehouse: COPY from the S3 stage, in one transaction (redshift_connector).

A commit is one transaction: delete this batch's earlier rows, rejects and sync row; `COPY
export (columns in file order) FROM 's3://...' <authorization> REGION ... FORMAT AS CSV
IGNOREHEADER 1 GZIP TIMEFORMAT 'auto' TRUNCATECOLUMNS NULL AS '\\0'` (or `...
<authorization> FORMAT AS PARQUET`: COPY from columnar data takes none of the other parameters, not even REGION, and
needs the bucket in the cluster's Region, which syncd checks against the endpoint's name when
it can, see `parquet_region_problem`); check the rows
(`pg_last_copy_count()` and a count by batch id); insert the rejects; insert the sync row;
commit. When COPY fails, the reason is read from `stl_load_errors` (or, on Redshift Serverless,
`sys_load_error_detail`) and put into the error: line, column, reason.

Connections (redshift_connector) use TLS with `sslmode="verify-full"` (given explicitly: the
driver's own default only warns when the certificate names another host); the driver trusts
the system's CA store (`load_default_certs`, which honours SSL_CERT_FILE) and its bundled
Redshift CA file. A failed certificate check is terminal. The driver's `timeout` is the
socket's timeout for the connection's whole life, so it bounds the connect, TLS handshake
and login (CONNECT_TIMEOUT) and is then lifted: no read timeout cuts off a long COPY, DELETE
or wait in the WLM queue. TCP keepalive finds a dead peer instead, and each session runs
`SET statement_timeout` (`[redshift] StatementTimeout`, default 1h; 0 = none), which Redshift
measures including the queue wait; a statement cancelled by it is terminal (the batch is
held at once). Each session also sets enable_case_sensitive_identifier off (below).

Redshift specifics:
- identifiers fold to lower case even when quoted (every session sets
  enable_case_sensitive_identifier off, whatever the cluster's parameter group says): the
  dialect matches names case-blind, and
  the export table's columns are reported under the catalog's spelling (`IndvId`), whatever
  the cluster shows (`indvid`), so the transform writes files with the names it knows;
- strings are VARCHAR(VarCharMax) (bytes): `capabilities.max_string_bytes` makes the
  transform cut longer values at a UTF-8 character boundary, whatever the staged format
  (Parquet takes no TRUNCATECOLUMNS: a longer string would fail its COPY; CSV keeps
  TRUNCATECOLUMNS for an existing table with narrower columns); CustomVars is VARCHAR(65535)
  holding JSON text (as in hauser's tables): `max_json_bytes` makes the transform quarantine a
  row whose CustomVars is longer (cut JSON is not JSON); or SUPER (`custom_vars="super"`: COPY
  parses the CSV field's JSON, so only CSV is staged); the export table is created with
  SORTKEY (EventStart); rejects are few and are inserted (cut to 65535 bytes) from the local
  rejects file;
- CSV keeps NULL apart from "": Redshift reads an empty field, quoted or not, as "" in a
  VARCHAR (and NULL in other types), so NULL is written as a NUL-only field (`CSV_NULL`,
  `capabilities.csv_null`) and loaded with `NULL AS '\\0'`; Parquet carries types and NULLs
  natively;
- the COPY text carries the authorization (IAM_ROLE, or hauser's Credentials string) as a
  literal, since COPY takes no parameters: it is never logged, and every error message is
  passed through `redact` before it leaves this module.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

import structlog

import syncd
from syncd.batch import StagedBatch, SyncRecord
from syncd.errors import LoadError, TerminalLoadError, TransientLoadError
from syncd.fields import BATCH_ID, Column, FieldType
from syncd.timeutil import utcnow
from warehouses import sql
from warehouses.base import Capabilities, close_quietly
from warehouses.dbapi import DbApiWarehouse
from warehouses.postgres import is_transient_sqlstate, reject_rows, rejects_file
from warehouses.sql import REDSHIFT, Dialect, Query, TableNames, render

log = structlog.get_logger(__name__)

REDSHIFT_VARCHAR_MAX = 65535
#: Limit on opening a connection (TCP connect, TLS handshake, login), in seconds.
CONNECT_TIMEOUT = 30.0
#: Default statement timeout, in seconds (see `[redshift] StatementTimeout`).
STATEMENT_TIMEOUT = 3600.0
#: TCP keepalive: first probe after this idle time, then every interval, dead after count.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 60, 20, 6
#: SQLSTATE of a cancelled statement (statement_timeout, or a cancel request).
QUERY_CANCELED = "57014"
REJECTS_PER_INSERT = 200
MASK = "***"

#: NULL in staged CSV: a field holding only NUL, loaded by NULL AS '\0' ("Data conversion
#: parameters"). Redshift loads an empty CHAR/VARCHAR field as "" (quoted or not) and knows
#: NULL only by NULL AS's string; syncd's strings never hold NUL (the transform makes it
#: U+FFFD), so no string can be taken for NULL.
CSV_NULL = "\x00"
_COPY_CSV = (
    "COPY {table} ({columns}) FROM {uri} {authorization} {region}"
    "FORMAT AS CSV IGNOREHEADER 1 GZIP TIMEFORMAT 'auto' TRUNCATECOLUMNS NULL AS '\\0'"
)
# COPY from columnar data formats takes no REGION (nor GZIP, TRUNCATECOLUMNS, ...): the bucket
# must be in the cluster's Region, see `parquet_region_problem`.
_COPY_PARQUET = "COPY {table} ({columns}) FROM {uri} {authorization} FORMAT AS PARQUET"
_LAST_COPY_COUNT = "SELECT pg_last_copy_count()"
_SORTKEY = " SORTKEY ({EventStart})"
_LOAD_ERRORS = (
    "SELECT line_number, TRIM(colname), TRIM(err_reason), TRIM(filename) FROM stl_load_errors "
    "WHERE query = pg_last_copy_id() ORDER BY line_number LIMIT 3"
)
_LOAD_ERRORS_SERVERLESS = (
    "SELECT line_number, TRIM(column_name), TRIM(error_message), TRIM(file_name) "
    "FROM sys_load_error_detail WHERE query_id = pg_last_copy_id() ORDER BY line_number LIMIT 3"
)
_INSERT_REJECTS = "INSERT INTO {rejects} ({columns}) VALUES {rows}"

# Redshift reports S3 trouble and serialization conflicts (ERROR 1023 "Serializable isolation
# violation", which its docs say to retry) as internal errors (XX000); these mean "try again".
_TRANSIENT_TEXT = re.compile(
    r"SlowDown|reduce your request rate|ServiceUnavailable|InternalError|timed out|"
    r"Serializable isolation violation|"
    r"Connection reset|connection refused|could not connect|S3ServiceException.*Status 5\d\d",
    re.IGNORECASE,
)
# A cluster's or workgroup's endpoint names its Region: name.id.us-east-1.redshift.amazonaws.com
_ENDPOINT_REGION = re.compile(
    r"\.([a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-[0-9])\.redshift(?:-serverless)?\.amazonaws\.com"
    r"(?:\.cn)?\.?$",
    re.IGNORECASE,
)
_SECRET_LITERALS = re.compile(
    r"\b(CREDENTIALS|ACCESS_KEY_ID|SECRET_ACCESS_KEY|SESSION_TOKEN)(\s+(?:AS\s+)?)'(?:[^']|'')*'",
    re.IGNORECASE,
)
_SECRET_PAIRS = re.compile(
    r"(aws_secret_access_key|aws_access_key_id|token)=[^;'\s]*", re.IGNORECASE
)


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """`text` with credential literals, key=value credentials and the given secrets masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    text = _SECRET_LITERALS.sub(lambda m: f"{m.group(1)}{m.group(2)}'{MASK}'", text)
    return _SECRET_PAIRS.sub(lambda m: f"{m.group(1)}={MASK}", text)


def map_redshift_error(
    exc: Exception,
    action: str,
    secrets: Sequence[str] = (),
    *,
    statement_timeout: float | None = None,
) -> LoadError:
    """The one place redshift_connector's exceptions become syncd's: transient or terminal.

    A cancelled statement (SQLSTATE 57014: it ran past `statement_timeout`, or an operator
    cancelled it) is terminal: the same statement would run into the same limit again, so
    the batch is held at once and the reason shown, rather than retried into it.
    """
    from redshift_connector import error as rs_error

    code: str | None = None
    refused = _certificate_error(exc)
    if refused is not None:
        return TerminalLoadError(
            redact(
                f"{action}: the server's TLS certificate failed verification ({refused}); "
                "syncd connects with sslmode verify-full: the certificate must chain to a "
                "trusted CA and name the host",
                secrets,
            )
        )
    if isinstance(exc, rs_error.Error):
        details = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else None
        if details is not None:
            code = details.get("C")
            text = str(details.get("M", "")) or str(details)
            if details.get("D"):
                text += f" ({details['D']})"
        else:
            text = str(exc)
        message = redact(f"{action}: {text}" + (f" [SQLSTATE {code}]" if code else ""), secrets)
        if code == QUERY_CANCELED:
            limit = (
                f"[redshift] StatementTimeout ({statement_timeout:g}s)"
                if statement_timeout
                else "[redshift] StatementTimeout"
            )
            return TerminalLoadError(
                f"{message}: the statement ran past {limit} or was cancelled; raise "
                "StatementTimeout if a load needs longer"
            )
        connection_lost = code is None and isinstance(
            exc, (rs_error.InterfaceError, rs_error.OperationalError)
        )
        if connection_lost or is_transient_sqlstate(code) or _TRANSIENT_TEXT.search(text):
            return TransientLoadError(message)
        return TerminalLoadError(message)
    if isinstance(exc, OSError):
        return TransientLoadError(redact(f"{action}: {exc.strerror or exc}", secrets))
    return TerminalLoadError(redact(f"{action}: {type(exc).__name__}: {exc}", secrets))


def _certificate_error(exc: BaseException) -> str | None:
    """The reason, when `exc` (or what it wraps) is a failed certificate check."""
    import ssl

    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending:
        item = pending.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ssl.SSLCertVerificationError):
            return str(item.verify_message or item)
        pending.extend((item.__cause__, item.__context__, *item.args))
    return None


def _lift_read_timeout(con: Any) -> None:
    """Clear the socket timeout redshift_connector set for the connect: left in place it
    would be a read timeout that cuts off every COPY, DELETE or WLM queue wait longer than it.
    The driver has no separate connect timeout, so this reaches its socket."""
    sock = getattr(con, "_usock", None)
    if sock is None or not hasattr(sock, "settimeout"):
        raise TerminalLoadError(
            "this redshift_connector does not expose its socket; syncd cannot lift the "
            "connect timeout from it (pin redshift_connector 2.x)"
        )
    sock.settimeout(None)


def quote_literal(value: str, what: str) -> str:
    """A SQL string literal for COPY (which takes no parameters): quotes doubled, no controls."""
    if any(ord(ch) < 32 for ch in value):
        raise TerminalLoadError(f"{what} contains control characters")
    return "'" + value.replace("'", "''") + "'"


def endpoint_region(host: str) -> str | None:
    """The AWS Region in a Redshift endpoint's host name (provisioned or Serverless), None when
    the host does not say (an alias, an IP address, a stand-in)."""
    match = _ENDPOINT_REGION.search(host)
    return match.group(1).lower() if match else None


def parquet_region_problem(host: str, region: str) -> str:
    """Why a Parquet COPY cannot work with this bucket Region, or "" when it may.

    COPY from Parquet takes no REGION parameter and needs the bucket in the cluster's Region
    ("COPY from columnar data formats"); CSV can cross Regions with REGION."""
    cluster = endpoint_region(host)
    if not region or cluster is None or cluster == region.lower():
        return ""
    return (
        f"[redshift] Region {region!r} (the bucket's) differs from the cluster's Region "
        f"{cluster!r} (from [redshift] Host): Redshift's COPY from Parquet takes no REGION and "
        'reads only a bucket in the cluster\'s Region; set StagedFormat = "csv" (COPY from CSV '
        "names the Region) or stage in a bucket of the cluster's Region"
    )


def redshift_dialect(
    varchar_max: int = REDSHIFT_VARCHAR_MAX, *, super_json: bool = False
) -> Dialect:
    """Redshift's types with strings as VARCHAR(varchar_max) and CustomVars as VARCHAR(65535)
    or SUPER; names match case-blind."""
    if not 1 <= varchar_max <= REDSHIFT_VARCHAR_MAX:
        raise TerminalLoadError(f"VarCharMax must be 1..{REDSHIFT_VARCHAR_MAX}, not {varchar_max}")
    types = dict(REDSHIFT.types)
    types[FieldType.STRING] = f"VARCHAR({varchar_max})"
    types[FieldType.JSON] = "SUPER" if super_json else f"VARCHAR({REDSHIFT_VARCHAR_MAX})"
    return dataclasses.replace(REDSHIFT, types=types)


def truncate_utf8(value: str, max_bytes: int) -> str:
    """`value` cut to at most `max_bytes` bytes of UTF-8, never inside a character."""
    encoded = value.encode("utf-8", errors="surrogatepass")
    if len(encoded) <= max_bytes:
        return value
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


#: Columns never cut to VarCharMax: the batch id must survive whole (the sync SQL joins on it).
_FULL_WIDTH = frozenset({BATCH_ID.name})


class RedshiftWarehouse(DbApiWarehouse):
    """Implements `warehouses.base.Warehouse` on Amazon Redshift, loading from S3."""

    name = "Redshift"
    lock_lease_table = True  # no enforced key, snapshot isolation: see DbApiWarehouse
    capabilities = Capabilities(
        staging_formats=("csv", "parquet"),
        csv_null=CSV_NULL,
    )

    def __init__(
        self,
        *,
        host: str,
        port: int = 5439,
        database: str,
        user: str,
        password: str = "",
        schema: str | None = "public",
        export_table: str = "fsexport",
        sync_table: str = "fssync",
        rejects_table: str = "fsrejects",
        iam_role: str = "",
        credentials: str = "",
        region: str = "",
        varchar_max: int = REDSHIFT_VARCHAR_MAX,
        custom_vars: Literal["varchar", "super"] = "varchar",
        ssl: bool = True,
        connect_timeout: float = CONNECT_TIMEOUT,
        statement_timeout: float = STATEMENT_TIMEOUT,
        connect: Callable[..., Any] | None = None,
        lease_clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(
            TableNames(export=export_table, sync=sync_table, rejects=rejects_table, schema=schema),
            lease_clock=lease_clock,
        )
        if not iam_role and not credentials:
            raise TerminalLoadError(
                "[redshift] COPY needs an authorization: set IAMRole or Credentials"
            )
        if connect_timeout <= 0 or statement_timeout < 0:
            raise TerminalLoadError(
                "the connect timeout must be positive and the statement timeout not negative"
            )
        if custom_vars not in ("varchar", "super"):
            raise TerminalLoadError(f"CustomVars type must be varchar or super, not {custom_vars}")
        super_json = custom_vars == "super"
        self.dialect = redshift_dialect()  # sync and rejects tables, the batch id
        self.export_dialect = redshift_dialect(varchar_max, super_json=super_json)
        self.capabilities = dataclasses.replace(
            self.capabilities,
            # COPY parses CSV text into SUPER; Parquet strings would stay strings
            staging_formats=("csv",) if super_json else self.capabilities.staging_formats,
            max_string_bytes=varchar_max,
            # VARCHAR(65535) JSON text: a longer document would fail the COPY (Parquet) or be
            # cut into broken JSON (CSV's TRUNCATECOLUMNS); SUPER takes far larger documents
            max_json_bytes=None if super_json else REDSHIFT_VARCHAR_MAX,
        )
        self._server: dict[str, Any] = {
            "host": host,
            "port": port,
            "database": database,
            "user": user,
        }
        self._password = password
        self._iam_role = iam_role
        self._credentials = credentials
        self.region = region
        self._ssl = ssl
        self._connect_timeout = connect_timeout
        self._statement_timeout = statement_timeout
        self._connect_fn = connect

    def __repr__(self) -> str:
        s = self._server
        return (
            f"RedshiftWarehouse(server='{s['host']}:{s['port']}/{s['database']}', "
            f"tables={self.tables!r})"
        )

    def copy_statement(self, staged: StagedBatch) -> str:
        """The COPY of a staged batch, authorization included: never log it (see `redact`)."""
        batch = staged.batch
        if not staged.uri.startswith("s3://"):
            raise TerminalLoadError(f"Redshift loads from S3; the batch is staged at {staged.uri}")
        if self._iam_role:
            authorization = f"IAM_ROLE {quote_literal(self._iam_role, 'IAMRole')}"
        else:
            authorization = f"CREDENTIALS {quote_literal(self._credentials, 'Credentials')}"
        region = f"REGION {quote_literal(self.region, 'Region')} " if self.region else ""
        if batch.format == "csv":
            template = _COPY_CSV
        else:
            problem = parquet_region_problem(self._server["host"], self.region)
            if problem:
                raise TerminalLoadError(problem)
            template = _COPY_PARQUET
        return render(
            template,
            self.dialect,
            table=self.tables.qualified(self.tables.export),
            columns=sql.column_list(batch.columns, self.dialect),
            uri=quote_literal(staged.uri, "the staged URI"),
            authorization=authorization,
            region=region,
        )

    # --- DbApiWarehouse -------------------------------------------------------------------------

    def _connect(self) -> Any:
        """A connection with its session set up: no read timeout, TCP keepalive, the statement
        timeout, identifiers folded to lower case."""
        import redshift_connector

        connect = self._connect_fn or redshift_connector.connect
        where = f"{self._server['host']}:{self._server['port']}"
        try:
            # `timeout` is the socket's timeout for its whole life: it bounds the connect, the
            # TLS handshake and the login here, and is lifted below before any statement runs.
            con = connect(
                **self._server,
                password=self._password,
                ssl=self._ssl,
                # explicit: left unset, the driver only logs a warning when the certificate
                # names another host, and the password goes to whoever presented it
                sslmode="verify-full",
                timeout=max(1, math.ceil(self._connect_timeout)),
                tcp_keepalive=True,
                tcp_keepalive_idle=KEEPALIVE_IDLE,
                tcp_keepalive_interval=KEEPALIVE_INTERVAL,
                tcp_keepalive_count=KEEPALIVE_COUNT,
                application_name=f"syncd/{syncd.__version__}",
            )
        except Exception as exc:
            raise self._map_error(exc, f"cannot connect to Redshift at {where}") from exc
        try:
            _lift_read_timeout(con)
            con.autocommit = False
            cursor = con.cursor()
            for statement in self._session_settings():
                cursor.execute(statement)
            con.commit()
        except Exception as exc:
            close_quietly(con, "the connection")
            if isinstance(exc, LoadError):
                raise
            raise self._map_error(exc, f"cannot set up the session at {where}") from exc
        return con

    def _session_settings(self) -> list[str]:
        """The SETs every connection runs (and commits) before anything else."""
        milliseconds = round(self._statement_timeout * 1000)
        return [
            f"SET statement_timeout TO {milliseconds}",
            # hauser's tables and syncd's SQL rely on quoted names folding to lower case; a
            # cluster parameter group may have turned that off for every session
            "SET enable_case_sensitive_identifier TO off",
        ]

    def _map_error(self, exc: Exception, action: str) -> LoadError:
        return map_redshift_error(
            exc,
            action,
            (self._password, self._credentials),
            statement_timeout=self._statement_timeout,
        )

    def _create_export_table(self, qualified: str, columns: Sequence[Column]) -> Query:
        return sql.create_table(
            self.dialect, qualified, columns, types=self._column_dialect, suffix=_SORTKEY
        )

    def _add_column(self, qualified: str, column: Column, *, export: bool) -> Query:
        dialect = self._column_dialect(column) if export else self.dialect
        return sql.add_column(dialect, qualified, column)

    def _column_dialect(self, column: Column) -> Dialect:
        """The export table's types: VarCharMax and the CustomVars type, but the batch id."""
        return self.dialect if column.name in _FULL_WIDTH else self.export_dialect

    def _load(self, cursor: Any, staged: StagedBatch, record: SyncRecord) -> int:
        if staged.batch.format not in ("csv", "parquet"):
            raise TerminalLoadError(f"Redshift cannot COPY staged format {staged.batch.format!r}")
        statement = self.copy_statement(staged)
        log.debug("COPY", uri=staged.uri, format=staged.batch.format)
        cursor.execute(statement)
        return int(self._fetch(cursor, Query(_LAST_COPY_COUNT))[0][0])

    def _load_rejects(self, cursor: Any, staged: StagedBatch, record: SyncRecord) -> int:
        path = rejects_file(staged)
        if path is None:
            return 0
        loaded = 0
        chunk: list[tuple[Any, ...]] = []
        for batch_id, position, reason, raw, at in reject_rows(
            path, staged.batch.key.id, record.committed_at
        ):
            cut = (
                truncate_utf8(str(v), REDSHIFT_VARCHAR_MAX) if v is not None else None
                for v in (reason, raw)
            )
            chunk.append((batch_id, position, *cut, at))
            if len(chunk) == REJECTS_PER_INSERT:
                loaded += self._insert_rejects(cursor, chunk)
                chunk = []
        if chunk:
            loaded += self._insert_rejects(cursor, chunk)
        return loaded

    def _insert_rejects(self, cursor: Any, rows: list[tuple[Any, ...]]) -> int:
        one = f"({self.dialect.placeholders(len(sql.REJECTS_COLUMNS))})"
        statement = render(
            _INSERT_REJECTS,
            self.dialect,
            self.tables,
            columns=sql.column_list(sql.REJECTS_COLUMNS, self.dialect),
            rows=", ".join([one] * len(rows)),
        )
        self._execute(cursor, Query(statement, tuple(v for row in rows for v in row)))
        return len(rows)

    def _describe_failure(self, exc: Exception, staged: StagedBatch) -> str:
        """Redshift's load-error log for the failed COPY: line, column and reason."""
        text = str(exc)
        if "stl_load_errors" not in text and "sys_load_error_detail" not in text:
            return ""
        for query in (_LOAD_ERRORS, _LOAD_ERRORS_SERVERLESS):
            try:
                with self._transaction("read the load errors") as cursor:
                    rows = self._fetch(cursor, Query(query))
            except LoadError as error:
                log.debug("load errors not readable", error=str(error))
                continue
            if rows:
                return "; ".join(
                    redact(
                        f"line {line}, column {column or '-'}: {reason} (in {filename})",
                        (self._password, self._credentials),
                    )
                    for line, column, reason, filename in rows
                )
        return ""


__all__ = [
    "CSV_NULL",
    "RedshiftWarehouse",
    "endpoint_region",
    "map_redshift_error",
    "parquet_region_problem",
    "quote_literal",
    "redact",
    "redshift_dialect",
    "truncate_utf8",
]


# --- the plugin declarations (warehouses.plugin): the [redshift] section and Provider "aws" -----

from dataclasses import dataclass as _dataclass  # noqa: E402
from datetime import timedelta as _timedelta  # noqa: E402
from typing import TYPE_CHECKING as _TYPE_CHECKING  # noqa: E402

from syncd.config.keys import Key, Kind  # noqa: E402
from syncd.config.secret import Secret  # noqa: E402
from syncd.errors import ConfigError  # noqa: E402
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
class RedshiftSettings:
    host: str
    port: int
    db: str
    user: str
    password: Secret
    database_schema: str
    export_table: str
    sync_table: str
    rejects_table: str
    credentials: Secret
    iam_role: str
    region: str  # resolved: [s3] Region when not set
    varchar_max: int
    ssl: bool
    statement_timeout: _timedelta
    custom_vars_type: Literal["varchar", "super"]

    @property
    def schema(self) -> str | None:
        """The schema to qualify names with; None for hauser's "search_path" (unqualified)."""
        return None if self.database_schema.lower() == "search_path" else self.database_schema


def _derive(ctx: SettleContext) -> None:
    if ctx.get("[redshift] Region") is None and ctx.ok("[s3] Region"):
        ctx.set("[redshift] Region", ctx.get("[s3] Region"), "derived from [s3] Region")


def _check(ctx: SettleContext) -> None:
    varchar_max = ctx.get("[redshift] VarCharMax")
    if ctx.ok("[redshift] VarCharMax") and not 1 <= varchar_max <= 65535:
        ctx.problem("[redshift] VarCharMax", f"{varchar_max} is out of range; allowed: 1 to 65535")


def _validate(ctx: SettleContext, provider: str) -> None:
    schema = ctx.get("[redshift] DatabaseSchema")
    check_names(
        ctx, "redshift", *(() if str(schema).lower() == "search_path" else ("DatabaseSchema",))
    )
    if not ctx.ok("[redshift] Credentials", "[redshift] IAMRole"):
        return
    credentials, role = ctx.get("[redshift] Credentials"), ctx.get("[redshift] IAMRole")
    if credentials and role:
        ctx.problem("[redshift] Credentials", "and [redshift] IAMRole are both set; set one")
    elif not credentials and not role:
        ctx.problem(
            "[redshift] IAMRole",
            f"required with Provider '{provider}' (or [redshift] Credentials) so COPY can read S3",
        )


SECTION = ConfigSection(
    "redshift",
    'Amazon Redshift, loaded with COPY from S3 (Provider = "aws").',
    (
        Key(
            "redshift",
            "Host",
            Kind.STRING,
            "",
            'Cluster endpoint; required with Provider "aws".',
            hauser=True,
        ),
        Key(
            "redshift",
            "Port",
            Kind.PORT,
            5439,
            "Cluster port (a number or, as hauser wrote it, a string).",
            hauser=True,
        ),
        Key(
            "redshift",
            "DB",
            Kind.STRING,
            "",
            'Database; required with Provider "aws".',
            hauser=True,
        ),
        Key(
            "redshift", "User", Kind.STRING, "", 'User; required with Provider "aws".', hauser=True
        ),
        Key("redshift", "Password", Kind.SECRET, "", "Password.", hauser=True),
        Key(
            "redshift",
            "DatabaseSchema",
            Kind.STRING,
            "public",
            'Schema of the tables; "search_path" leaves names unqualified (the search path '
            "decides).",
            hauser=True,
            new_meaning="hauser required it",
        ),
        *table_keys("redshift", hauser=True),
        Key(
            "redshift",
            "Credentials",
            Kind.SECRET,
            "",
            'Authorization for COPY, e.g. "aws_iam_role=arn:aws:iam::123456789012:role/load". '
            "Set this or IAMRole.",
            hauser=True,
        ),
        Key(
            "redshift",
            "IAMRole",
            Kind.STRING,
            "",
            "ARN of the IAM role COPY uses to read S3 (instead of Credentials).",
        ),
        Key(
            "redshift",
            "Region",
            Kind.STRING,
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
            Kind.INT,
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
            Kind.BOOL,
            True,
            "Connect with SSL, verified against Redshift's certificates (turn off only for a "
            "Redshift-compatible endpoint without SSL, such as a local stand-in).",
        ),
        Key(
            "redshift",
            "StatementTimeout",
            Kind.DURATION,
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
            Kind.CHOICE,
            "varchar",
            'Column type of CustomVars in a new table: "varchar" (JSON text, as hauser) or '
            '"super" (Redshift\'s semi-structured type).',
            choices=("varchar", "super"),
        ),
    ),
    RedshiftSettings,
    required=("Host", "DB", "User"),
    derive=_derive,
    check=_check,
    validate=_validate,
)


def _build(settings: Settings, stage: Stage, read_only: bool) -> RedshiftWarehouse:
    rs: RedshiftSettings = settings.section("redshift")
    problem = parquet_region_problem(rs.host, rs.region)
    if settings.staged_format == "parquet" and problem:
        raise ConfigError([problem])
    return RedshiftWarehouse(
        host=rs.host,
        port=rs.port,
        database=rs.db,
        user=rs.user,
        password=rs.password.reveal(),
        schema=rs.schema,
        export_table=rs.export_table,
        sync_table=rs.sync_table,
        rejects_table=rs.rejects_table,
        iam_role=rs.iam_role,
        credentials=rs.credentials.reveal(),
        region=rs.region,
        varchar_max=rs.varchar_max,
        custom_vars=rs.custom_vars_type,
        ssl=rs.ssl,
        statement_timeout=rs.statement_timeout.total_seconds(),
    )


def _destination(settings: Settings) -> str:
    rs: RedshiftSettings = settings.section("redshift")
    bucket = settings.section("s3").bucket
    return f"Redshift database {rs.db} on {rs.host}:{rs.port}, staged in s3://{bucket}"


PLUGIN = WarehousePlugin(
    "aws",
    "S3 + Redshift",
    stage="s3",
    section=SECTION,
    build=_build,
    destination=_destination,
    aliases=("redshift",),
    extra="aws",
    drivers=("boto3", "redshift_connector"),
)
