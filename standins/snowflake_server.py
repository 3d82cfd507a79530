"""The Snowflake stand-in's server: fakesnow's HTTP server with the rules syncd relies on.

Run by the fakesnow virtualenv's Python (`standins.snowflake` starts it), never imported by
the project: `python snowflake_server.py --port N [--s3-endpoint URL] [--integrations a,b]
`. fakesnow runs Snowflake's SQL on DuckDB and answers the real
snowflake-connector-python over HTTP; this module wraps its COPY INTO where it falls short of
Snowflake's documentation (every rule and every remaining difference is listed in
docs/cloud-conformance.md, "Snowflake"):

- load metadata ("COPY INTO <table>", "Loading older files"): a file name this table loaded in
  the last 64 days is skipped, silently, unless FORCE = TRUE. The metadata is written outside
  the statement's transaction, so a rollback does not forget it (the strict reading: the docs
  promise nothing else). FORCE = FALSE is FALSE (fakesnow took any FORCE for TRUE). A file
  older than 64 days whose load status is unknown is skipped unless LOAD_UNCERTAIN_FILES = TRUE
  or FORCE = TRUE. `POST /standin/clock?days=N` moves the stand-in's clock on by N days;
- COPY INTO from an external location `s3://bucket/path` reads the object from the S3
  stand-in (moto) at `--s3-endpoint`: the statement must name a STORAGE_INTEGRATION that exists
  (`--integrations`) or CREDENTIALS = (AWS_KEY_ID = ... AWS_SECRET_KEY = ...), as Snowflake
  refuses a private bucket without either; the path is a prefix, as in Snowflake;
- a NULL TIMESTAMP in a result reaches the client as NULL (fakesnow sent 1970-01-01);
- INSERT ... VALUES takes constants only ("VALUES": each expression a constant): a function
  call such as PARSE_JSON inside the VALUES list is refused (002014), and so is a string for
  a VARIANT column (002023, "Expression type does not match column data type"); fakesnow
  (DuckDB) took both, turning the text into JSON. `INSERT ... SELECT ... FROM (VALUES ...)`
  stays allowed, as in Snowflake;
- MATCH_BY_COLUMN_NAME = CASE_SENSITIVE matches the table's column names as stored (fakesnow
  upper-cased them, so a quoted mixed-case column never matched).
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import threading
import urllib.parse
from typing import Any

import boto3
import fakesnow.arrow as arrow_mod
import fakesnow.copy_into as copy_mod
import fakesnow.cursor as cursor_mod
import fakesnow.server as server_mod
import pyarrow as pa
import pyarrow.compute as pc
import snowflake.connector.errors as sf_errors
import uvicorn
from sqlglot import exp
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

#: Snowflake keeps load metadata for 64 days ("Loading older files").
LOAD_METADATA_DAYS = 64

_original_copy_into = copy_mod.copy_into
_clock_offset = datetime.timedelta()
_clock_lock = threading.Lock()
_settings: dict[str, Any] = {
    "s3_endpoint": "",
    "integrations": frozenset(),
    "integration_keys": ("", ""),
}
_mirror = tempfile.mkdtemp(prefix="snowflake_standin_s3_")


def now() -> datetime.datetime:
    with _clock_lock:
        return datetime.datetime.now(datetime.timezone.utc) + _clock_offset


def _error(msg: str, errno: int, sqlstate: str) -> sf_errors.ProgrammingError:
    return sf_errors.ProgrammingError(msg=msg, errno=errno, sqlstate=sqlstate)


def _bool_option(param: exp.CopyParameter) -> bool:
    value = param.expression
    if isinstance(value, exp.Boolean):
        return value.this is True
    if value is None:
        return True
    text = str(value.name).upper()
    if text in ("TRUE", "FALSE"):
        return text == "TRUE"
    raise _error(
        f"SQL compilation error:\ninvalid value [{value.sql()}] for parameter '{param.this.name}'",
        1008,
        "22023",
    )


def _pop_options(expr: exp.Copy) -> tuple[bool, bool, list[str]]:
    """FORCE, LOAD_UNCERTAIN_FILES and FILES, removed from the statement."""
    force = uncertain = False
    files: list[str] = []
    kept = []
    for param in expr.args.get("params", []):
        name = param.this.name.upper()
        if name == "FORCE":
            force = _bool_option(param)
        elif name == "LOAD_UNCERTAIN_FILES":
            uncertain = _bool_option(param)
        elif name == "FILES":
            files = [lit.name for lit in param.find_all(exp.Literal)]
        else:
            kept.append(param)
    expr.set("params", kept)
    return force, uncertain, files


def _check_authorization(expr: exp.Copy, source: str) -> tuple[str, str]:
    """An external location needs a storage integration or credentials (both are removed from
    the statement); the S3 keys to read it with: the statement's, or the integration's."""
    credentials = expr.args.get("credentials")
    expr.set("credentials", None)
    if not source.startswith(("s3://", "gcs://", "azure://")):
        return "", ""
    if credentials is None or not (
        credentials.args.get("storage") or credentials.args.get("credentials")
    ):
        raise _error(
            f"Failure using stage area. Cause: [Access Denied (Status Code: 403; Error Code: "
            f"AccessDenied)] for {source}: no STORAGE_INTEGRATION or CREDENTIALS",
            91016,
            "22000",
        )
    storage = credentials.args.get("storage")
    if storage is not None:
        name = storage.name if storage.args.get("quoted") else storage.name.upper()
        if name not in _settings["integrations"]:
            raise _error(
                f"SQL compilation error:\nIntegration '{name}' does not exist or not authorized.",
                3001,
                "42501",
            )
        key_id, secret = _settings["integration_keys"]
        return str(key_id), str(secret)
    keys = {
        p.this.name.upper(): p.args["value"].name for p in credentials.args.get("credentials") or []
    }
    if not {"AWS_KEY_ID", "AWS_SECRET_KEY"} <= set(keys):
        raise _error(
            "SQL compilation error:\nCREDENTIALS need AWS_KEY_ID and AWS_SECRET_KEY", 1008, "22023"
        )
    return keys["AWS_KEY_ID"], keys["AWS_SECRET_KEY"]


def _s3(keys: tuple[str, str]) -> Any:
    endpoint = _settings["s3_endpoint"]
    if not endpoint:
        raise _error("the stand-in was started without --s3-endpoint", 91016, "22000")
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=keys[0],
        aws_secret_access_key=keys[1],
    )


def _s3_objects(client: Any, url: str, files: list[str]) -> list[tuple[str, datetime.datetime]]:
    """The objects under an s3:// prefix (or the named FILES), with their LastModified."""
    parsed = urllib.parse.urlparse(url)
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
    wanted = {prefix + f for f in files} if files else None
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            if key.endswith("/") or (wanted is not None and key not in wanted):
                continue
            found.append((f"s3://{bucket}/{key}", item["LastModified"]))
    return found


def _download(client: Any, url: str) -> str:
    parsed = urllib.parse.urlparse(url)
    local = os.path.join(_mirror, parsed.netloc, parsed.path.lstrip("/"))
    os.makedirs(os.path.dirname(local), exist_ok=True)
    client.download_file(parsed.netloc, parsed.path.lstrip("/"), local)
    return local


def _history(catalog: str) -> str:
    """The load history table of a database (fakesnow's), its name quoted."""
    quoted = exp.to_identifier(catalog, quoted=True).sql("duckdb")
    return f"{quoted}._fs_information_schema._fs_load_history"


def _loaded_at(
    meta: Any, catalog: str, schema: str, table: str, url: str
) -> datetime.datetime | None:
    meta.execute(
        f"SELECT MAX(LAST_LOAD_TIME) FROM {_history(catalog)} "  # noqa: S608 - quoted name
        "WHERE FILE_NAME = ? AND TABLE_NAME = ? AND SCHEMA_NAME = ? AND STATUS = 'LOADED'",
        [url, table, schema],
    )
    row = meta.fetchone()
    if not row or row[0] is None:
        return None
    value = (
        row[0]
        if isinstance(row[0], datetime.datetime)
        else datetime.datetime.fromisoformat(str(row[0]))
    )
    return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)


def copy_into(
    duck_conn: Any,
    current_database: str | None,
    current_schema: str | None,
    expr: exp.Copy,
    table_stages: Any,
    params: Any = None,
) -> str:
    """fakesnow's COPY INTO, one file at a time, under Snowflake's load metadata rules."""
    force, uncertain, files = _pop_options(expr)
    table = copy_mod._extract_table(expr.this)
    catalog = table.catalog or current_database
    schema = table.db or current_schema
    assert catalog and schema
    source = copy_mod._from_source(expr)
    keys = _check_authorization(expr, source)
    client = None
    if source.startswith("s3://"):
        client = _s3(keys)
        candidates = _s3_objects(client, source, files)
    elif source.startswith("@"):
        stage_url = copy_mod.stage_url_from_var(
            source[1:], duck_conn, current_database, current_schema, table_stages, table
        )
        if files and copy_mod.stage.is_internal(stage_url):  # fakesnow wanted a URL scheme
            urls = [os.path.join(stage_url, name) for name in files]
        elif files:
            urls = copy_mod._source_urls(stage_url, files)
        else:
            urls = copy_mod._source_glob(stage_url, duck_conn)
        candidates = [
            (
                u,
                datetime.datetime.fromtimestamp(
                    os.path.getmtime(copy_mod.stage.file_path(u)), datetime.timezone.utc
                ),
            )
            for u in urls
            if os.path.exists(copy_mod.stage.file_path(u))
        ]
    else:
        raise _error(
            f"SQL compilation error:\ninvalid URL prefix found in: '{source}'", 1011, "42601"
        )

    at = now()
    horizon = at - datetime.timedelta(days=LOAD_METADATA_DAYS)
    meta = duck_conn.cursor()  # its own transaction: load metadata outlives a rollback
    results: list[tuple[Any, ...]] = []
    loaded: list[tuple[str, int]] = []
    try:
        for url, modified in candidates:
            last = _loaded_at(meta, catalog, schema, table.name, url)
            if not force:
                if last is not None and last > horizon:
                    continue  # loaded in the last 64 days: skipped, silently
                if modified <= horizon and not uncertain:
                    continue  # too old to know: skipped unless LOAD_UNCERTAIN_FILES
            local = _download(client, url) if client is not None else url
            one = expr.copy()
            one.set("files", [exp.Table(this=exp.Literal.string(local))])
            one.append(
                "params",
                exp.CopyParameter(this=exp.Var(this="FORCE"), expression=exp.Boolean(this=True)),
            )
            _original_copy_into(
                duck_conn, current_database, current_schema, one, table_stages, params
            )
            for row in duck_conn.fetchall():
                results.append((url if url.startswith("s3://") else row[0], *row[1:]))
                loaded.append((url, int(row[3] or 0)))
        for url, rows in loaded:
            meta.execute(
                f"INSERT INTO {_history(catalog)} VALUES "  # noqa: S608 - quoted name
                "(?, ?, ?, ?, 'LOADED', ?, ?, NULL, NULL, NULL, NULL, 0, 1)",
                [schema, url, table.name, at.isoformat(), rows, rows],
            )
    finally:
        meta.close()
    if not results:
        sql = "SELECT 'Copy executed with 0 files processed.' AS status"
        duck_conn.execute(sql)
        return sql
    columns = (
        "file",
        "status",
        "rows_parsed",
        "rows_loaded",
        "error_limit",
        "errors_seen",
        "first_error",
        "first_error_line",
        "first_error_character",
        "first_error_column_name",
    )
    sql = (
        exp.select("*").from_(exp.values(results, alias="t", columns=columns)).sql(dialect="duckdb")
    )
    duck_conn.execute(sql)
    return str(sql)


def _get_table_columns(
    table: exp.Table, duck_conn: Any, current_database: str | None, current_schema: str | None
) -> list[str]:
    """The table's column names as stored (fakesnow upper-cased them)."""
    return [
        name
        for name, _ in copy_mod._describe_table(table, duck_conn, current_database, current_schema)
    ]


def _match_parquet_columns(parquet: list[str], target: list[str], mode: Any) -> dict[str, str]:
    if mode == copy_mod.MatchByColumnName.NONE:
        return {}
    if mode == copy_mod.MatchByColumnName.CASE_SENSITIVE:
        return {col: col for col in target if col in parquet}
    lookup = {name.upper(): name for name in parquet}
    return {col: lookup[col.upper()] for col in target if col.upper() in lookup}


_original_timestamp_struct = arrow_mod.timestamp_to_sf_struct


def timestamp_to_sf_struct(ts: Any) -> Any:
    """fakesnow's timestamp result column with its NULLs kept (it sent NULL as 1970-01-01)."""
    if isinstance(ts, pa.ChunkedArray):
        ts = ts.combine_chunks()
    mask = pc.is_null(ts)
    if not pc.any(mask).as_py():
        return _original_timestamp_struct(ts)
    filled = _original_timestamp_struct(pc.fill_null(ts, pa.scalar(0, type=ts.type)))
    children = [filled.field(i) for i in range(filled.type.num_fields)]
    return pa.StructArray.from_arrays(children, fields=list(filled.type), mask=mask)


_original_check = cursor_mod.FakeSnowflakeCursor.check_db_and_schema
#: What a VALUES list of an INSERT may hold: constants (a parameter arrives inlined by the
#: connector's client-side binding, or as a placeholder bound to a constant).
_CONSTANTS = (exp.Literal, exp.Null, exp.Boolean, exp.Placeholder, exp.Neg)


def check_insert_values(self: Any, expression: Any) -> None:
    """fakesnow's check of the statement, then Snowflake's rules for INSERT ... VALUES."""
    _original_check(self, expression)
    if not isinstance(expression, exp.Insert) or not isinstance(expression.expression, exp.Values):
        return
    rows = [row.expressions for row in expression.expression.expressions]
    for row in rows:
        for value in row:
            # a constant cast ('2024-01-01'::TIMESTAMP_NTZ) is evaluated at compilation: allowed
            inner = value.this if isinstance(value, exp.Cast) else value
            if not isinstance(inner, _CONSTANTS):
                raise _error(
                    f"SQL compilation error:\nInvalid expression [{value.sql('snowflake')}] "
                    "in VALUES clause",
                    2014,
                    "42601",
                )
    target = expression.this
    table = target.this if isinstance(target, exp.Schema) else target
    named = [c.name for c in target.expressions] if isinstance(target, exp.Schema) else []
    described = copy_mod._describe_table(
        table, self._duck_conn, self._conn.database, self._conn.schema
    )
    types = {name: type_.upper() for name, type_ in described}
    columns = named or [name for name, _ in described]
    variant = {i for i, name in enumerate(columns) if types.get(name) == "JSON"}
    for row in rows:
        for i in variant:
            if i < len(row) and isinstance(row[i], exp.Literal) and row[i].is_string:
                raise _error(
                    "SQL compilation error:\nExpression type does not match column data type, "
                    f"expecting VARIANT but got VARCHAR for column {columns[i]}",
                    2023,
                    "22000",
                )


async def move_clock(request: Request) -> JSONResponse:
    """Stand-in control: move the clock on by `days` (load metadata ages with it)."""
    global _clock_offset
    days = float(request.query_params.get("days", "0"))
    with _clock_lock:
        _clock_offset += datetime.timedelta(days=days)
    return JSONResponse({"success": True, "now": now().isoformat()})


async def ready(_: Request) -> JSONResponse:
    return JSONResponse({"success": True})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--s3-endpoint", default="")
    parser.add_argument("--integrations", default="")
    args = parser.parse_args()
    # a storage integration reads the bucket with the S3 stand-in's keys (from the environment)
    _settings["integration_keys"] = (
        os.environ.get("AWS_ACCESS_KEY_ID", ""),
        os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
    )
    _settings["s3_endpoint"] = args.s3_endpoint.rstrip("/")
    _settings["integrations"] = frozenset(n for n in args.integrations.split(",") if n)
    cursor_mod.copy_into = copy_into
    cursor_mod.FakeSnowflakeCursor.check_db_and_schema = check_insert_values
    arrow_mod.timestamp_to_sf_struct = timestamp_to_sf_struct
    copy_mod._get_table_columns = _get_table_columns
    copy_mod._match_parquet_columns = _match_parquet_columns
    server_mod.app.router.routes.append(Route("/standin/clock", move_clock, methods=["POST"]))
    server_mod.app.router.routes.append(Route("/standin/ready", ready, methods=["GET"]))
    uvicorn.run(server_mod.app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
