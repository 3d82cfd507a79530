"""PostgreSQL as the warehouse, loading staged files with COPY ... FROM STDIN (psycopg 3).

The commit, consistency, rollback and lease are `warehouses.dbapi.DbApiWarehouse`'s; this
module supplies the connection, the bulk load and the one function that sorts psycopg's
exceptions into transient and terminal.

PostgreSQL specifics:
- TLS: sslmode defaults to verify-full, or prefer when the host is this machine (loopback
  or a Unix socket): see `default_sslmode`; a refused certificate is terminal;
- CustomVars is JSONB; strings TEXT (no length limit, so nothing is truncated);
- the local stage only: COPY reads the transform's file through the client connection:
  CSV (gzip) is streamed as it is (`HEADER MATCH` checks the header against the column list),
  Parquet is re-encoded as CSV one row group at a time, NDJSON is fed row by row to COPY
  (never as INSERTs); rejects (NDJSON) likewise.
"""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import orjson
import structlog

import syncd
from syncd.batch import StagedBatch, SyncRecord
from syncd.errors import LoadError, TerminalLoadError, TransientLoadError
from syncd.fields import Column, FieldType
from syncd.net import is_loopback_host
from syncd.timeutil import parse_timestamp, utcnow
from warehouses import sql
from warehouses.base import Capabilities
from warehouses.dbapi import DbApiWarehouse
from warehouses.sql import POSTGRES, TableNames, render

if TYPE_CHECKING:
    import psycopg

log = structlog.get_logger(__name__)

COPY_CHUNK = 1024 * 1024

# SQLSTATE classes and codes a later attempt may not meet: connection trouble, serialization
# failures and deadlocks, lock timeouts, resource exhaustion, cancellation and shutdown.
_TRANSIENT_CLASSES = ("08", "40", "53", "57")
_TRANSIENT_CODES = frozenset({"55P03", "55006", "58030", "XX001"})


def is_transient_sqlstate(code: str | None) -> bool:
    """True for SQLSTATEs worth retrying (shared by PostgreSQL and Redshift)."""
    if not code:
        return False
    return code.startswith(_TRANSIENT_CLASSES) or code in _TRANSIENT_CODES


def default_sslmode(host: str) -> str:
    """libpq sslmode when [postgres] SSLMode is not set: "verify-full" (the certificate must
    chain to a trusted CA and name the host; no password goes to a server refusing TLS), but
    "prefer" when every host is this machine: loopback (127.0.0.0/8, ::1, localhost) or a
    Unix socket (a path)."""
    hosts = [h.strip() for h in host.split(",")]
    return "prefer" if all(_is_local(h) for h in hosts) else "verify-full"


def _is_local(host: str) -> bool:
    """A Unix socket (a path, or an abstract "@name") or a loopback host."""
    return host.startswith(("/", "@")) or is_loopback_host(host)


#: libpq's words for a TLS connection it refused: a certificate that fails verification, or a
#: server that will not speak TLS when the sslmode requires it. Retrying cannot help.
_TLS_REFUSED = re.compile(
    r"certificate verify failed|server certificate for .* does not match|"
    r"does not match host name|server does not support SSL|SSL was required",
    re.IGNORECASE,
)


def map_postgres_error(exc: Exception, action: str) -> LoadError:
    """The one place psycopg's exceptions become syncd's: transient or terminal."""
    import psycopg

    if isinstance(exc, psycopg.Error):
        code = exc.sqlstate
        diag = exc.diag
        primary = diag.message_primary or str(exc).strip().splitlines()[0]
        detail = f" ({diag.context.strip().splitlines()[0]})" if diag.context else ""
        message = f"{action}: {primary}{detail}" + (f" [SQLSTATE {code}]" if code else "")
        if code is None and _TLS_REFUSED.search(str(exc)):
            return TerminalLoadError(f"{message} (see [postgres] SSLMode)")
        if is_transient_sqlstate(code) or (
            code is None and isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
        ):
            return TransientLoadError(message)
        return TerminalLoadError(message)
    if isinstance(exc, OSError):
        return TransientLoadError(f"{action}: {exc.strerror or exc}")
    return TerminalLoadError(f"{action}: {type(exc).__name__}: {exc}")


_COPY_TEXT = "COPY {table} ({columns}) FROM STDIN"
_COPY_CSV = "COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv, HEADER {header})"


class PostgresWarehouse(DbApiWarehouse):
    """Implements `warehouses.base.Warehouse` on PostgreSQL, loading from the local stage."""

    dialect = POSTGRES
    name = "PostgreSQL"
    fence_lock = " FOR SHARE"
    capabilities = Capabilities(staging_formats=("csv", "parquet", "ndjson"))

    def __init__(
        self,
        conninfo: str = "",
        *,
        host: str = "",
        port: int = 5432,
        user: str = "",
        password: str = "",
        dbname: str = "",
        sslmode: str | None = None,
        schema: str | None = "public",
        export_table: str = "fsexport",
        sync_table: str = "fssync",
        rejects_table: str = "fsrejects",
        connect_timeout: int = 30,
        lease_clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(
            TableNames(export=export_table, sync=sync_table, rejects=rejects_table, schema=schema),
            lease_clock=lease_clock,
        )
        self._conninfo = conninfo
        self._params: dict[str, Any] = {
            k: v
            for k, v in {
                "host": host,
                "port": port if host else None,
                "user": user,
                "password": password,
                "dbname": dbname,
                "sslmode": (sslmode or default_sslmode(host)) if host else None,
                "connect_timeout": connect_timeout,
                "application_name": f"syncd/{syncd.__version__}",
            }.items()
            if v
        }
        self._where = f"{host}:{port}/{dbname}" if host else "(conninfo)"

    def __repr__(self) -> str:
        return f"PostgresWarehouse(server={self._where!r}, tables={self.tables!r})"

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        try:
            con = psycopg.connect(self._conninfo, autocommit=False, **self._params)
        except psycopg.Error as exc:
            raise self._map_error(exc, f"cannot connect to PostgreSQL at {self._where}") from exc
        con.execute("SET TIME ZONE 'UTC'")
        con.commit()
        return con

    def _map_error(self, exc: Exception, action: str) -> LoadError:
        return map_postgres_error(exc, action)

    def _load(self, cursor: Any, staged: StagedBatch, record: SyncRecord) -> int:
        batch = staged.batch
        path = _local_file(staged.uri, batch.path)
        names = sql.column_list(batch.columns, self.dialect)
        table = self.tables.qualified(self.tables.export)
        if batch.format == "ndjson":
            statement = render(_COPY_TEXT, self.dialect, table=table, columns=names)
            return _copy(cursor, statement, _ndjson_rows(path, batch.columns))
        header = "MATCH" if batch.format == "csv" and _server_version(cursor) >= 150000 else "true"
        statement = render(_COPY_CSV, self.dialect, table=table, columns=names, header=header)
        if batch.format == "csv":
            return _copy(cursor, statement, _gunzipped_chunks(path))
        return _copy(cursor, statement, parquet_csv_chunks(path, batch.columns))

    def _load_rejects(self, cursor: Any, staged: StagedBatch, record: SyncRecord) -> int:
        path = rejects_file(staged)
        if path is None:
            return 0
        statement = render(
            _COPY_TEXT,
            self.dialect,
            table=self.tables.qualified(self.tables.rejects),
            columns=sql.column_list(sql.REJECTS_COLUMNS, self.dialect),
        )
        rows = reject_rows(path, staged.batch.key.id, record.committed_at)
        return _copy(cursor, statement, rows)


# --- staged files as COPY input (the rejects also for Redshift's INSERTs) ---------------------


def parquet_csv_chunks(
    source: Path | IO[bytes], columns: Sequence[Column] | None = None
) -> Iterator[bytes]:
    """A Parquet file as CSV with a header, one row group at a time.

    Strings are always quoted and NULL is an empty unquoted field, so COPY keeps "" and NULL
    apart; timestamps are written naive (UTC), as stored.
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(source)
    names = [c.name for c in columns] if columns is not None else None
    first = True
    for index in range(parquet.num_row_groups):
        table = parquet.read_row_group(index, columns=names)
        buffer = io.BytesIO()
        options = pacsv.WriteOptions(include_header=first, quoting_style="needed")
        pacsv.write_csv(table, buffer, options)
        first = False
        yield buffer.getvalue()
    if first:  # no row groups: the header alone
        header = ",".join(f'"{n}"' for n in (names or parquet.schema_arrow.names))
        yield (header + "\n").encode()


def _gunzipped_chunks(path: Path) -> Iterator[bytes]:
    with _open_maybe_gzip(path) as handle:
        while chunk := handle.read(COPY_CHUNK):
            yield chunk


def _open_maybe_gzip(path: Path) -> IO[bytes]:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def _ndjson_rows(path: Path, columns: Sequence[Column]) -> Iterator[tuple[Any, ...]]:
    """Rows of a gzip NDJSON file in column order: timestamps naive UTC, JSON as text."""
    with _open_maybe_gzip(path) as handle:
        for line in handle:
            if not line.strip():
                continue
            obj = orjson.loads(line)
            yield tuple(_ndjson_value(obj.get(c.name), c.type) for c in columns)


def _ndjson_value(value: Any, type_: FieldType) -> Any:
    if value is None:
        return None
    if type_ is FieldType.TIMESTAMP:
        return sql.to_db_timestamp(parse_timestamp(str(value)))
    if type_ is FieldType.JSON:
        return value if isinstance(value, str) else orjson.dumps(value).decode()
    return value


def reject_rows(path: Path, batch_id: str, rejected_at: datetime) -> Iterator[tuple[Any, ...]]:
    """Rows for the rejects table (REJECTS_COLUMNS order) from the rejects NDJSON file."""
    at = sql.to_db_timestamp(rejected_at)
    with _open_maybe_gzip(path) as handle:
        for line in handle:
            if line.strip():
                obj = orjson.loads(line)
                yield (batch_id, obj.get("position"), obj.get("reason"), obj.get("raw"), at)


def rejects_file(staged: StagedBatch) -> Path | None:
    """The local rejects file of a staged batch, when it has one."""
    batch = staged.batch
    if staged.rejects_uri is None and batch.rejects_path is None:
        return None
    return _local_file(staged.rejects_uri, batch.rejects_path)


def _local_file(uri: str | None, fallback: Path | None) -> Path:
    """The local file to COPY from: the staged path, or the transform's file otherwise."""
    if uri is not None and "://" not in uri:
        return Path(uri)
    if uri is not None and uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(uri).path))
    if fallback is None:
        raise TerminalLoadError(f"no local file to load for {uri!r}")
    return fallback


def _copy(cursor: Any, statement: str, data: Iterator[bytes] | Iterator[tuple[Any, ...]]) -> int:
    """Run a COPY ... FROM STDIN with `data`: chunks of a file in the statement's format
    (bytes) or rows (tuples, COPY's text format); the rows copied."""
    with cursor.copy(statement) as copy:
        for item in data:
            if isinstance(item, bytes):
                copy.write(item)
            else:
                copy.write_row(item)
    return int(cursor.rowcount)


def _server_version(cursor: Any) -> int:
    return int(cursor.connection.info.server_version)


__all__ = [
    "PostgresWarehouse",
    "default_sslmode",
    "is_transient_sqlstate",
    "map_postgres_error",
    "parquet_csv_chunks",
    "reject_rows",
    "rejects_file",
]


# --- the plugin declarations (warehouses.plugin): the [postgres] section and Provider "postgres" -

from dataclasses import dataclass as _dataclass  # noqa: E402

from syncd.config.keys import Key, Kind  # noqa: E402
from syncd.config.secret import Secret  # noqa: E402
from warehouses.plugin import (  # noqa: E402
    ConfigSection,
    SettleContext,
    WarehousePlugin,
    check_names,
    table_keys,
)

if TYPE_CHECKING:
    from syncd.config.model import Settings
    from warehouses.base import Stage


@_dataclass(frozen=True)
class PostgresSettings:
    host: str
    port: int
    user: str
    password: Secret
    db: str
    database_schema: str
    export_table: str
    sync_table: str
    rejects_table: str
    ssl_mode: str | None  # None: the adapter decides from the host (default_sslmode)


def _validate(ctx: SettleContext, provider: str) -> None:
    check_names(ctx, "postgres", "DatabaseSchema")


SECTION = ConfigSection(
    "postgres",
    'PostgreSQL, loaded with COPY FROM STDIN (Provider = "postgres").',
    (
        Key("postgres", "Host", Kind.STRING, "127.0.0.1", "Server host name or address."),
        Key("postgres", "Port", Kind.PORT, 5432, "Server port."),
        Key("postgres", "User", Kind.STRING, "", 'User name; required with Provider "postgres".'),
        Key("postgres", "Password", Kind.SECRET, "", "Password."),
        Key("postgres", "DB", Kind.STRING, "", 'Database name; required with Provider "postgres".'),
        Key("postgres", "DatabaseSchema", Kind.STRING, "public", "Schema of the tables."),
        *table_keys("postgres", hauser=False),
        Key(
            "postgres",
            "SSLMode",
            Kind.CHOICE,
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
    ),
    PostgresSettings,
    required=("User", "DB"),
    validate=_validate,
)


def _build(settings: Settings, stage: Stage, read_only: bool) -> PostgresWarehouse:
    pg: PostgresSettings = settings.section("postgres")
    return PostgresWarehouse(
        host=pg.host,
        port=pg.port,
        user=pg.user,
        password=pg.password.reveal(),
        dbname=pg.db,
        sslmode=pg.ssl_mode,
        schema=pg.database_schema,
        export_table=pg.export_table,
        sync_table=pg.sync_table,
        rejects_table=pg.rejects_table,
    )


def _destination(settings: Settings) -> str:
    pg: PostgresSettings = settings.section("postgres")
    return f"PostgreSQL database {pg.db} on {pg.host}:{pg.port}"


PLUGIN = WarehousePlugin(
    "postgres",
    "local folder + PostgreSQL",
    stage="local",
    section=SECTION,
    build=_build,
    destination=_destination,
    extra="postgres",
    drivers=("psycopg",),
)
