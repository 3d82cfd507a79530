"""A Redshift stand-in: PostgreSQL behind a wire-protocol proxy that speaks Redshift's dialect.

The real `redshift_connector` connects to the proxy (with `ssl=False`), which
- refuses SSL and GSS encryption (answers 'N'), unless given `tls` (a server-side
  SSLContext, e.g. from `standins.tls.TestCA`): then it answers 'S' to the SSL request and
  speaks TLS with that certificate, so a client's certificate checks can be tested;
- drops the startup parameters PostgreSQL rejects (`client_protocol_version`, ...);
- reports `server_version` as a bare number ("15.18"), which the driver can parse;
- rewrites every statement (simple Query and extended Parse) with `redshift_sql.translate`;
- answers `SET`/`RESET`/`SHOW enable_case_sensitive_identifier` itself (PostgreSQL does not
  know it), per session, starting from the cluster's `case_sensitive_identifiers` (a
  parameter group that turns it on): quoted identifiers are folded to lower case only while
  it is off; a COPY from S3 is refused while it is on (the COPY parser folds names);
- serves `COPY ... FROM 's3://...'` itself: it rewrites the statement to
  `COPY ... FROM STDIN`, and when PostgreSQL asks for the data it reads the objects under
  the prefix from the S3 stand-in, converts them (gzip CSV, Parquet) to CSV and feeds them;
  CSV is read by Redshift's rules, not PostgreSQL's (`_read_csv`: an empty field is '' in
  CHAR/VARCHAR, NULL only by NULL AS's string), a string longer than its VARCHAR's bytes
  fails the load unless TRUNCATECOLUMNS (CSV only), a Parquet COPY reads only a bucket in
  `cluster_region` and loads a SUPER column only with SERIALIZETOJSON;
  a failure becomes Redshift's answer: "Load into table 'x' failed. Check 'stl_load_errors'
  system table for details." with the line, column and reason written to the proxy's
  `stl_load_errors` table, as Redshift logs them (outside the failed transaction);
- refuses a COPY whose parameters Redshift refuses (`redshift_sql.parse_copy`: e.g. REGION or
  TRUNCATECOLUMNS with Parquet) with a syntax error naming them, the transaction aborted;
- records the COPY statements it served in `copies`, credentials redacted;
- passes `SET statement_timeout` on to PostgreSQL, which enforces it, and words the
  cancellation as Redshift does ("Query (<id>) canceled on user's request", SQLSTATE 57014).

Faults for tests: `fail_copies(n, reason, s3=...)` makes the next n COPYs fail.

Runs an asyncio loop in a thread; `start()` returns once it listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import itertools
import json
import re
import ssl
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import psycopg
import structlog

from standins.redshift_sql import (
    CASE_PARAMETER,
    LOG_SCHEMA,
    LOG_TABLES,
    CopyFromS3,
    CopySyntaxError,
    case_setting_sql,
    parse_case_setting,
    parse_copy,
    redact_copy,
    refusal_sql,
    translate,
)

log = structlog.get_logger(__name__)

SSL_REQUEST = 80877103
GSS_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_3 = 196608
DROPPED_STARTUP_PARAMETERS = frozenset(
    {b"client_protocol_version", b"driver_version", b"os_version", b"driver_discovery_version"}
)
COPY_CHUNK = 256 * 1024
LOAD_FAILED = "Load into table '{table}' failed.  Check 'stl_load_errors' system table for details."
_VERSION_NUMBER = re.compile(rb"^(\d+(?:\.\d+)*)")


class LoadFailure(Exception):
    """A COPY from S3 failed the way Redshift reports it."""

    def __init__(
        self,
        message: str,
        *,
        line: int = 0,
        column: str = "",
        reason: str = "",
        raw: str = "",
        filename: str = "",
        logged: bool = True,
        code: int = 1200,
    ) -> None:
        super().__init__(message)
        self.line, self.column, self.reason, self.raw = line, column, reason or message, raw
        self.filename, self.logged, self.code = filename, logged, code


@dataclass
class CopyFault:
    remaining: int
    reason: str
    s3: bool  # an S3 read failure (not logged in stl_load_errors) rather than bad data


@dataclass(frozen=True)
class TargetColumn:
    """A column of a COPY's target table, as the catalog has it."""

    name: str
    type: str  # information_schema's data_type
    width: int | None  # CHAR/VARCHAR bytes

    @property
    def character(self) -> bool:
        """CHAR or VARCHAR: where Redshift loads an empty field as '' (not NULL)."""
        return self.type in ("character varying", "character", "text")


@dataclass
class CopyJob:
    copy: CopyFromS3
    extended: bool  # issued by Parse/Bind/Execute: a Sync must follow CopyDone
    query_id: int = 0
    failure: LoadFailure | None = None


@dataclass
class RedshiftProxy:
    """`start()`, connect redshift_connector to `host`:`port` with ssl=False, `stop()`."""

    backend_host: str
    backend_port: int
    s3_client_factory: Callable[[], Any]
    backend_user: str = "postgres"
    backend_database: str = "postgres"
    #: The cluster's AWS Region: a Parquet COPY reads only buckets of this Region.
    cluster_region: str = "us-east-1"
    host: str = "127.0.0.1"
    port: int = 0
    #: The cluster's enable_case_sensitive_identifier (its parameter group); sessions start so.
    case_sensitive_identifiers: bool = False
    #: Accept the client's SSL request with this server-side context (None: refuse SSL).
    tls: ssl.SSLContext | None = None
    copies: list[str] = field(default_factory=list)
    _faults: deque[CopyFault] = field(default_factory=deque)
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.base_events.Server | None = None
    _thread: threading.Thread | None = None
    _query_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> RedshiftProxy:
        with self._side_connection() as con:
            for statement in LOG_TABLES:
                con.execute(statement)
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._serve, self.host, self.port)
                )
                self.port = int(self._server.sockets[0].getsockname()[1])
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="redshift-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise RuntimeError(f"the Redshift proxy could not listen: {failure[0]}")
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def shutdown() -> None:
            server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            if tasks:  # let them close their sockets while the loop still runs
                await asyncio.wait(tasks, timeout=5)

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = self._server = None

    def fail_copies(self, count: int, reason: str, *, s3: bool = False) -> None:
        """Make the next `count` COPYs fail: an S3 read error (`s3`) or a logged load error."""
        with self._lock:
            self._faults.append(CopyFault(count, reason, s3))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # --- one client connection -----------------------------------------------------------------

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        backend_w: asyncio.StreamWriter | None = None
        try:
            startup = await self._read_startup(client_r, client_w)
            if startup is None:
                return
            backend_r, backend_w = await asyncio.open_connection(
                self.backend_host, self.backend_port
            )
            backend_w.write(startup)
            session = _Session(self, client_w, backend_w)
            await asyncio.gather(
                session.pump_client(client_r),
                session.pump_backend(backend_r),
            )
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away (or refused our TLS certificate)
        finally:
            for writer in (client_w, backend_w):
                if writer is not None:
                    writer.close()

    async def _read_startup(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes | None:
        """Answer SSL/GSS requests ('S' and TLS with `tls`, else 'N'); return the cleaned
        startup packet."""
        while True:
            length = struct.unpack("!i", await reader.readexactly(4))[0]
            body = await reader.readexactly(length - 4)
            code = struct.unpack("!i", body[:4])[0]
            if code == SSL_REQUEST and self.tls is not None:
                writer.write(b"S")
                await writer.drain()
                start_tls = getattr(writer, "start_tls", None)  # StreamWriter.start_tls: 3.11+
                if start_tls is None:
                    raise ConnectionError("the TLS stand-in needs Python 3.11 or later")
                await start_tls(self.tls)
                continue
            if code in (SSL_REQUEST, GSS_REQUEST):
                writer.write(b"N")
                await writer.drain()
                continue
            if code == CANCEL_REQUEST:
                _, backend_w = await asyncio.open_connection(self.backend_host, self.backend_port)
                backend_w.write(struct.pack("!i", length) + body)
                await backend_w.drain()
                backend_w.close()
                return None
            if code != PROTOCOL_3:
                raise ConnectionError("unsupported protocol")
            items = body[4:].split(b"\x00")
            kept = b""
            for key, value in zip(items[0::2], items[1::2], strict=False):
                if key and key not in DROPPED_STARTUP_PARAMETERS:
                    kept += key + b"\x00" + value + b"\x00"
            packet = struct.pack("!i", PROTOCOL_3) + kept + b"\x00"
            return struct.pack("!i", len(packet) + 4) + packet

    # --- COPY from S3 (runs in a worker thread) ------------------------------------------------

    def _csv_payload(self, copy: CopyFromS3) -> list[bytes]:
        """The COPY's rows as CSV chunks with one header; raises LoadFailure as Redshift fails."""
        with self._lock:
            fault = self._faults[0] if self._faults else None
            if fault is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.popleft()
        uri = f"s3://{copy.bucket}/{copy.prefix}"
        if fault is not None:
            if fault.s3:
                raise LoadFailure(fault.reason, logged=False)
            raise LoadFailure(fault.reason, reason=fault.reason, filename=uri, line=1)
        client = self.s3_client_factory()
        try:
            listing = client.list_objects_v2(Bucket=copy.bucket, Prefix=copy.prefix)
        except Exception as exc:
            raise LoadFailure(f"S3ServiceException:{exc}", logged=False) from exc
        keys = sorted(o["Key"] for o in listing.get("Contents", []))
        if not keys:
            raise LoadFailure(
                f"The specified S3 prefix '{copy.prefix}' does not exist", logged=False
            )
        if copy.format == "PARQUET":
            self._check_bucket_region(client, copy.bucket)
        target = self._target_columns(copy)
        widths = {c.name: c.width for c in target if c.width is not None}
        chunks: list[bytes] = []
        for number, key in enumerate(keys):
            filename = f"s3://{copy.bucket}/{key}"
            body = client.get_object(Bucket=copy.bucket, Key=key)["Body"].read()
            table = _read_table(copy, body, filename, target)
            table = _fit_widths(table, widths, copy.truncate_columns, filename)
            # one header for the whole COPY: later files of the prefix send rows only
            chunks.extend(_csv_chunks(table, header=number == 0))
        return chunks

    def _check_bucket_region(self, client: Any, bucket: str) -> None:
        """COPY from columnar data formats: the bucket must be in the cluster's Region."""
        try:
            location = client.get_bucket_location(Bucket=bucket).get("LocationConstraint")
        except Exception as exc:
            raise LoadFailure(f"S3ServiceException:{exc}", logged=False) from exc
        region = location or "us-east-1"
        if region != self.cluster_region:
            raise LoadFailure(
                f"Spectrum Scan Error: S3 bucket {bucket} is in Region {region}, the cluster in "
                f"{self.cluster_region}: COPY from Parquet needs the bucket in the cluster's Region",
                logged=False,
            )

    def _target_columns(self, copy: CopyFromS3) -> list[TargetColumn]:
        """The target table's columns in table order: name, type, VARCHAR width in bytes.

        An unqualified name is looked up in every schema (the proxy does not follow the
        client's search_path): a name's first sighting counts."""
        schema, table = copy.table_parts
        query = (
            "SELECT column_name, data_type, character_maximum_length "
            "FROM information_schema.columns WHERE table_name = %s"
            + (" AND table_schema = %s" if schema else "")
            + " ORDER BY table_schema, ordinal_position"
        )
        params = (table, schema) if schema else (table,)
        with self._side_connection() as con:
            rows = con.execute(query, params).fetchall()
        columns: dict[str, TargetColumn] = {}
        for name, kind, width in rows:
            columns.setdefault(
                str(name), TargetColumn(str(name), str(kind), int(width) if width else None)
            )
        return list(columns.values())

    def _log_copy(self, job: CopyJob, session_pid: int, rows: int | None) -> None:
        """Record the COPY (and its failure) in the log tables, outside the client's transaction."""
        with self._side_connection() as con:
            con.execute(
                f"INSERT INTO {LOG_SCHEMA}.copies VALUES (%s, %s, %s, %s, %s)",  # noqa: S608
                (job.query_id, session_pid, rows or 0, job.copy.prefix, _utcnow()),
            )
            failure = job.failure
            if failure is not None and failure.logged:
                con.execute(
                    f"INSERT INTO {LOG_SCHEMA}.stl_load_errors VALUES "  # noqa: S608
                    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        job.query_id,
                        session_pid,
                        failure.filename[:256],
                        failure.line,
                        failure.column[:127],
                        "",
                        failure.raw[:1024],
                        failure.raw[:1024],
                        failure.code,
                        failure.reason[:100],
                        _utcnow(),
                    ),
                )

    def _side_connection(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=self.backend_host,
            port=self.backend_port,
            user=self.backend_user,
            dbname=self.backend_database,
            autocommit=True,
        )


class _Session:
    """Both directions of one client connection."""

    def __init__(
        self, proxy: RedshiftProxy, client_w: asyncio.StreamWriter, backend_w: asyncio.StreamWriter
    ) -> None:
        self.proxy = proxy
        self.client_w = client_w
        self.backend_w = backend_w
        self.statements: dict[bytes, CopyFromS3] = {}
        self.portals: dict[bytes, CopyFromS3] = {}
        self.pending: deque[CopyJob] = deque()
        self.current: CopyJob | None = None
        self.backend_pid = 0
        #: enable_case_sensitive_identifier of this session (the cluster's default at first)
        self.case_sensitive = proxy.case_sensitive_identifiers

    async def pump_client(self, reader: asyncio.StreamReader) -> None:
        while True:
            kind, body = await _read_message(reader)
            if kind == b"Q":
                body = self._rewrite_query(body)
            elif kind == b"P":
                body = self._rewrite_parse(body)
            elif kind == b"B":
                portal, statement = _cstrings(body, 2)
                copy = self.statements.get(statement)
                if copy is not None:
                    self.portals[portal] = copy
                else:
                    self.portals.pop(portal, None)
            elif kind == b"E":
                (portal,) = _cstrings(body, 1)
                copy = self.portals.get(portal)
                if copy is not None:
                    self.pending.append(CopyJob(copy, extended=True))
            elif kind == b"X":
                self.backend_w.write(_message(kind, body))
                await self.backend_w.drain()
                return
            self.backend_w.write(_message(kind, body))
            await self.backend_w.drain()

    async def pump_backend(self, reader: asyncio.StreamReader) -> None:
        while True:
            kind, body = await _read_message(reader)
            if kind == b"S":
                body = _trim_server_version(body)
            elif kind == b"K":
                self.backend_pid = struct.unpack("!i", body[:4])[0]
            elif kind == b"G" and self.pending:  # CopyInResponse: feed it from S3
                await self._feed_copy(self.pending.popleft())
                continue
            elif kind == b"C" and self.current is not None:
                rows = _copy_rows(body)
                job, self.current = self.current, None
                await asyncio.to_thread(self.proxy._log_copy, job, self.backend_pid, rows)
            elif kind == b"E" and self.current is not None:
                job, self.current = self.current, None
                body = await self._copy_error(job, body)
            elif kind == b"E":
                body = _redshift_error(body, self.proxy._query_ids)
            self.client_w.write(_message(kind, body))
            await self.client_w.drain()

    def _rewrite_query(self, body: bytes) -> bytes:
        text, copy = self._rewrite(body.rstrip(b"\x00").decode())
        if copy is not None:
            self.pending.append(CopyJob(copy, extended=False))
        return text.encode() + b"\x00"

    def _rewrite_parse(self, body: bytes) -> bytes:
        name, text = _cstrings(body, 2)
        rest = body[len(name) + len(text) + 2 :]
        rewritten, copy = self._rewrite(text.decode())
        if copy is not None:
            self.statements[name] = copy
        else:
            self.statements.pop(name, None)
        return name + b"\x00" + rewritten.encode() + b"\x00" + rest

    def _rewrite(self, sql: str) -> tuple[str, CopyFromS3 | None]:
        """What PostgreSQL runs for `sql`, and the COPY from S3 it is, if it is one."""
        try:
            setting = parse_case_setting(sql)
        except ValueError as exc:
            return refusal_sql(str(exc), "22023"), None
        if setting is not None:
            if setting.value is not None:
                self.case_sensitive = setting.value
            elif setting.verb == "RESET":
                self.case_sensitive = self.proxy.case_sensitive_identifiers
            return case_setting_sql(setting, self.case_sensitive), None
        copy, refusal = self._parse_copy(sql)
        if refusal:
            return refusal, None
        if copy is not None:
            if self.case_sensitive:  # parse_copy folds names: it would hide a case mismatch
                return refusal_sql(f"the stand-in serves COPY only with {CASE_PARAMETER} off"), None
            return copy.to_stdin(), copy
        return translate(sql, case_sensitive=self.case_sensitive), None

    def _parse_copy(self, sql: str) -> tuple[CopyFromS3 | None, str]:
        """The COPY FROM S3 in `sql` (or None), and the statement refusing it when Redshift
        would refuse its options (or "")."""
        try:
            copy = parse_copy(sql)
        except CopySyntaxError as exc:
            log.info("COPY refused", error=str(exc))
            return None, refusal_sql(str(exc), "42601")
        if copy is not None:
            self.proxy.copies.append(redact_copy(sql))
        return copy, ""

    async def _feed_copy(self, job: CopyJob) -> None:
        job.query_id = next(self.proxy._query_ids)
        self.current = job
        try:
            chunks = await asyncio.to_thread(self.proxy._csv_payload, job.copy)
        except LoadFailure as failure:
            job.failure = failure
            self.backend_w.write(_message(b"f", str(failure).encode() + b"\x00"))
        else:
            for chunk in chunks:
                for start in range(0, len(chunk), COPY_CHUNK):
                    self.backend_w.write(_message(b"d", chunk[start : start + COPY_CHUNK]))
                    await self.backend_w.drain()
            self.backend_w.write(_message(b"c", b""))
        if job.extended:
            self.backend_w.write(_message(b"S", b""))  # the client's Sync was eaten by copy-in
        await self.backend_w.drain()

    async def _copy_error(self, job: CopyJob, body: bytes) -> bytes:
        """Turn PostgreSQL's COPY error into Redshift's answer, logging the details."""
        fields = _error_fields(body)
        log.info(
            "COPY failed in PostgreSQL",
            message=redact_copy(fields.get(b"M", b"").decode(errors="replace")),
            where=redact_copy(fields.get(b"W", b"").decode(errors="replace")),
        )
        failure = job.failure
        if failure is None:
            failure = _failure_from_postgres(fields, job.copy)
            job.failure = failure
        await asyncio.to_thread(self.proxy._log_copy, job, self.backend_pid, None)
        if failure.logged:
            message = LOAD_FAILED.format(table=job.copy.table_parts[1])
        else:
            message = str(failure)
        return _error_body({b"S": b"ERROR", b"V": b"ERROR", b"C": b"XX000", b"M": message.encode()})


def _redshift_error(body: bytes, query_ids: itertools.count[int]) -> bytes:
    """PostgreSQL's error as Redshift words it: a cancelled statement (statement_timeout, or
    a cancel request) is "Query (<id>) canceled on user's request" (SQLSTATE kept)."""
    fields = _error_fields(body)
    if fields.get(b"C") != b"57014":
        return body
    fields[b"M"] = f"Query ({next(query_ids)}) canceled on user's request".encode()
    return _error_body(fields)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


# --- files to CSV ------------------------------------------------------------------------------


def _read_table(
    copy: CopyFromS3, body: bytes, filename: str, target: Sequence[TargetColumn]
) -> Any:
    """A file of the COPY as an Arrow table (CSV: every column a string) named as its columns."""
    import pyarrow.parquet as pq

    if copy.format == "PARQUET":
        try:
            table = pq.read_table(io.BytesIO(body))
        except Exception as exc:
            raise LoadFailure(
                f"Spectrum Scan Error: invalid Parquet file {filename}: {exc}",
                filename=filename,
                reason="Invalid Parquet file",
                code=15007,
            ) from exc
        if copy.columns:
            if table.num_columns != len(copy.columns):
                raise LoadFailure(
                    "column count mismatch",
                    filename=filename,
                    reason=f"Parquet has {table.num_columns} columns, COPY lists {len(copy.columns)}",
                    code=1202,
                )
            table = table.rename_columns(list(copy.columns))
        return _parquet_into_super(copy, table, filename, target)
    return _read_csv(copy, body, filename, target)


def _parquet_into_super(
    copy: CopyFromS3, table: Any, filename: str, target: Sequence[TargetColumn]
) -> Any:
    """A Parquet column loads into a SUPER column only with SERIALIZETOJSON, which stores its
    values as JSON (a string column: JSON strings, never parsed) ("Loading semi-structured
    data into Amazon Redshift": the column types must match)."""
    import pyarrow as pa

    super_columns = {c.name for c in target if c.type == "jsonb"}
    for index, name in enumerate(table.column_names):
        if name.lower() not in super_columns:
            continue
        if not copy.serialize_to_json:
            raise LoadFailure(
                f"Spectrum Scan Error: column {name} is {table.schema.field(index).type} in "
                "the Parquet file and SUPER in the table (give SERIALIZETOJSON)",
                filename=filename,
                column=name,
                reason="Parquet type does not match SUPER column",
                code=15001,
            )
        values = [None if v is None else json.dumps(v) for v in table.column(index).to_pylist()]
        table = table.set_column(index, name, pa.array(values, pa.string()))
    return table


def _read_csv(copy: CopyFromS3, body: bytes, filename: str, target: Sequence[TargetColumn]) -> Any:
    """CSV read by Redshift's rules ("Data conversion parameters", "Data format parameters"),
    not PostgreSQL's: quoting does not tell NULL from a string; a field equal to NULL AS's
    string ('\\N' by default; '\\0' = a field of only NUL) is NULL; an empty field is ''
    in a CHAR/VARCHAR column (NULL with EMPTYASNULL, blank ones with BLANKSASNULL) and NULL in
    any other; a NUL anywhere else ends the record, which fails the load."""
    import pyarrow as pa

    if copy.gzip:
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError, zlib.error) as exc:
            raise LoadFailure(
                "gzip error",
                filename=filename,
                reason=f"gzip: {exc}"[:100],
                code=1216,
            ) from exc
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LoadFailure(
            "Invalid UTF8", filename=filename, reason=f"Invalid UTF8: {exc}"[:100], code=1220
        ) from exc
    kinds = {c.name: c for c in target}
    names = list(copy.columns) if copy.columns else [c.name for c in target]
    character = [kinds[n].character if n in kinds else True for n in names]
    null_as = copy.null_as
    values: list[list[str | None]] = [[] for _ in names]
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    record_number = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise _delimiter_not_found(filename, reader.line_num, str(exc)) from exc
        record_number += 1
        if record_number <= copy.ignore_header or (not record and copy.ignore_blank_lines):
            continue
        line = reader.line_num
        if len(record) > len(names):
            raise LoadFailure(
                "Extra column(s) found",
                filename=filename,
                line=line,
                reason="Extra column(s) found",
                raw=",".join(record)[:200],
                code=1213,
            )
        if len(record) < len(names):
            if not copy.fill_record:
                raise _delimiter_not_found(filename, line, ",".join(record))
            record = record + [""] * (len(names) - len(record))
        for index, text_value in enumerate(record):
            values[index].append(
                _field_value(
                    text_value, character[index], copy, null_as, filename, line, names[index]
                )
            )
    return pa.table({n: pa.array(v, pa.string()) for n, v in zip(names, values, strict=True)})


def _field_value(
    field: str,
    character: bool,
    copy: CopyFromS3,
    null_as: str,
    filename: str,
    line: int,
    column: str,
) -> str | None:
    """One CSV field as Redshift loads it (None: NULL)."""
    if field == null_as:
        return None
    if "\x00" in field:
        raise LoadFailure(
            "Delimiter not found",
            filename=filename,
            line=line,
            column=column,
            reason="NUL (0x00) ends the record: only a field of just NUL with NULL AS '\\0'",
            code=1214,
        )
    if field == "":
        return None if copy.empty_as_null or not character else ""
    if character and copy.blanks_as_null and not field.strip(" \t"):
        return None
    return field


def _delimiter_not_found(filename: str, line: int, raw: str) -> LoadFailure:
    return LoadFailure(
        "Delimiter not found",
        filename=filename,
        line=line,
        reason="Delimiter not found",
        raw=raw[:200],
        code=1214,
    )


def _fit_widths(table: Any, widths: dict[str, int], truncate: bool, filename: str) -> Any:
    """Truncate (TRUNCATECOLUMNS) or refuse strings longer than their column's bytes."""
    import pyarrow as pa

    for index, name in enumerate(table.column_names):
        width = widths.get(name)
        kind = table.schema.field(index).type
        if width is None or not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            continue
        values = table.column(index).to_pylist()
        changed = False
        for row, value in enumerate(values):
            if value is not None and len(value.encode()) > width:
                if not truncate:
                    raise LoadFailure(
                        "String length exceeds DDL length",
                        filename=filename,
                        line=row + 2,
                        column=name,
                        reason="String length exceeds DDL length",
                        raw=value[:200],
                        code=1204,
                    )
                values[row] = truncate_utf8(value, width)
                changed = True
        if changed:
            table = table.set_column(index, name, pa.array(values, kind))
    return table


def truncate_utf8(value: str, max_bytes: int) -> str:
    """`value` cut to at most `max_bytes` bytes of UTF-8, never inside a character."""
    return value.encode()[:max_bytes].decode("utf-8", errors="ignore")


def _csv_chunks(table: Any, *, header: bool) -> list[bytes]:
    """`table` as CSV (strings quoted, NULL an empty unquoted field), with or without header."""
    import pyarrow.csv as pacsv

    buffer = io.BytesIO()
    pacsv.write_csv(
        table, buffer, pacsv.WriteOptions(include_header=header, quoting_style="needed")
    )
    return [buffer.getvalue()]


def _failure_from_postgres(fields: dict[bytes, bytes], copy: CopyFromS3) -> LoadFailure:
    """PostgreSQL's COPY error (`CONTEXT: COPY t, line 3, column c: "v"`) as a load error."""
    message = fields.get(b"M", b"").decode(errors="replace")
    where = fields.get(b"W", b"").decode(errors="replace")
    match = re.search(r'line (\d+)(?:, column (\w+)(?:: "(.*)")?)?', where)
    line = int(match.group(1)) if match else 0
    column = (match.group(2) or "") if match else ""
    raw = (match.group(3) or "") if match else ""
    return LoadFailure(
        message,
        filename=f"s3://{copy.bucket}/{copy.prefix}",
        line=line,
        column=column,
        reason=message,
        raw=raw,
        code=1207,
    )


# --- wire protocol helpers ---------------------------------------------------------------------


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    header = await reader.readexactly(5)
    length = struct.unpack("!i", header[1:])[0]
    return header[:1], await reader.readexactly(length - 4)


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _cstrings(body: bytes, count: int) -> list[bytes]:
    out, start = [], 0
    for _ in range(count):
        end = body.index(b"\x00", start)
        out.append(body[start:end])
        start = end + 1
    return out


def _trim_server_version(body: bytes) -> bytes:
    name, value = _cstrings(body, 2)
    if name == b"server_version":
        match = _VERSION_NUMBER.match(value)
        if match:
            return name + b"\x00" + match.group(1) + b"\x00"
    return body


def _copy_rows(body: bytes) -> int | None:
    tag = body.rstrip(b"\x00").split()
    if len(tag) == 2 and tag[0] == b"COPY":
        return int(tag[1])
    return None


def _error_fields(body: bytes) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = {}
    for part in body.split(b"\x00"):
        if part:
            fields[part[:1]] = part[1:]
    return fields


def _error_body(fields: dict[bytes, bytes]) -> bytes:
    return b"".join(k + v + b"\x00" for k, v in fields.items()) + b"\x00"
