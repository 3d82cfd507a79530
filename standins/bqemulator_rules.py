"""bqemulator 1.4.0 with the rules of BigQuery it lacks: run by the emulator's own Python.

`standins.bigquery` starts `python bqemulator_rules.py start ...` with the emulator's
virtualenv; this file is never imported by syncd or the tests (bqemulator, FastAPI and sqlglot
live only in that virtualenv). A stand-in that accepts what BigQuery refuses hides the bug it is
there to catch, so each rule below is one BigQuery documents, refused as BigQuery refuses it
(docs/cloud-conformance.md lists the sources and the tests that show each refusal):

- Locations. A dataset keeps the location it was created with; a job runs in the location of
  the datasets it names (a job whose requested location differs is refused: "Not found:
  Dataset ... was not found in location ..."). A job is looked up (jobs.get, jobs.cancel,
  getQueryResults) with its location: without one only a job in the US or EU multi-region is
  found, with another one none is (404), as jobs.get's `location` parameter documents.
- Job ids: letters, digits, `_` and `-`, at most 1,024 characters (400 invalid); a job id
  already used answers 409 duplicate ("Already Exists: Job ...").
- A multi-statement transaction takes SELECT, DML and DDL on TEMP entities only: DDL on a
  permanent table between BEGIN TRANSACTION and COMMIT is refused.
- `requirePartitionFilter`: a statement that reads, deletes or updates such a table without a
  filter on its partitioning column that can prune partitions (a comparison of the bare column
  with a constant; conjunctions need one such term, disjunctions one in every branch) is refused
  with BigQuery's "Cannot query over table ... without a filter over column(s) ... that can be
  used for partition elimination".
- Expiration. A table past its `expirationTime` is gone; the rows of a partition whose date plus
  the table's partition expiration is past are gone (so rows loaded into an expired partition
  vanish as well), checked before each API request.

Two fixes of the emulator itself, neither a relaxation: it starts without DuckDB's `spatial`
extension (not downloadable offline), and a table update that adds columns adds them to the
DuckDB table behind it too (bqemulator changes only its catalog, where BigQuery applies the
schema update to the table).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import bqemulator.api.routes.jobs as jobs_routes
import bqemulator.api.routes.tables as tables_routes
import bqemulator.catalog.duckdb_repository as persistent
import bqemulator.catalog.memory_repository as catalog
import bqemulator.server as server
import bqemulator.storage.engine as engine
import sqlglot
from bqemulator.storage.sql_identifiers import quoted_table_ref
from bqemulator.storage.type_map import bq_schema_to_duckdb_columns
from sqlglot import expressions as exp
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

MULTI_REGIONS = frozenset({"US", "EU"})
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,1024}")
_JOB_PATH = re.compile(r"^/bigquery/v2/projects/([^/]+)/(jobs|queries)(?:/([^/]+))?(/cancel)?$")
_LOCATIONS_FILE = "syncd-job-locations.json"

# -- the two fixes ------------------------------------------------------------------------------

engine.DuckDBEngine._load_spatial = lambda self: None
_update_table = catalog.MemoryCatalogRepository.update_table
_update_persistent_table = persistent.DuckDBCatalogRepository.update_table


def _add_stored_columns(duckdb: Any, old: Any, table: Any) -> None:
    if old is None or duckdb is None:
        return
    have = {f.name.lower() for f in old.schema_.fields}
    added = [f for f in table.schema_.fields if f.name.lower() not in have]
    columns = bq_schema_to_duckdb_columns(
        [{"name": f.name, "type": f.type, "mode": f.mode} for f in added]
    )
    ref = quoted_table_ref(table.project_id, table.dataset_id, table.table_id)
    for name, type_ in columns:
        duckdb.execute(f'ALTER TABLE {ref} ADD COLUMN "{name}" {type_}')


def _update_memory(self: Any, table: Any) -> Any:
    key = (table.project_id, table.dataset_id, table.table_id)
    _add_stored_columns(self._engine, self._tables.get(key), table)
    return _update_table(self, table)


def _update_persistent(self: Any, table: Any) -> Any:
    self.ensure_ready()
    key = (table.project_id, table.dataset_id, table.table_id)
    _add_stored_columns(self._engine, self._cache._tables.get(key), table)
    return _update_persistent_table(self, table)


catalog.MemoryCatalogRepository.update_table = _update_memory
persistent.DuckDBCatalogRepository.update_table = _update_persistent

# -- errors in BigQuery's shape ------------------------------------------------------------------

_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 409: "ALREADY_EXISTS"}


def _error(code: int, reason: str, message: str) -> JSONResponse:
    body = {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": _STATUS[code],
        }
    }
    return JSONResponse(body, status_code=code)


class Refused(Exception):
    """A request BigQuery refuses: its HTTP answer."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.response = _error(code, reason, message)


# -- job locations --------------------------------------------------------------------------------


class JobLocations:
    """Where each job ran; kept in the data folder in persistent mode (jobs outlive restarts)."""

    def __init__(self, folder: Path | None) -> None:
        self._path = folder / _LOCATIONS_FILE if folder is not None else None
        self._known: dict[str, str] = {}
        if self._path is not None and self._path.exists():
            self._known = json.loads(self._path.read_text())

    def get(self, project: str, job_id: str) -> str:
        return self._known.get(f"{project}:{job_id}", "US")

    def put(self, project: str, job_id: str, location: str) -> None:
        self._known[f"{project}:{job_id}"] = location
        if self._path is not None:
            temporary = self._path.with_suffix(".tmp")
            temporary.write_text(json.dumps(self._known))
            temporary.replace(self._path)


def _data_dir(argv: list[str]) -> Path | None:
    if "--persistent" in argv and "--data-dir" in argv:
        return Path(argv[argv.index("--data-dir") + 1])
    return None


LOCATIONS = JobLocations(_data_dir(sys.argv))
_build_job_response = jobs_routes._build_job_response


def _job_response(project_id: str, job_id: str, job_meta: Any, config: Any) -> dict[str, Any]:
    result: dict[str, Any] = _build_job_response(project_id, job_id, job_meta, config)
    result["jobReference"]["location"] = LOCATIONS.get(project_id, job_id)
    return result


jobs_routes._build_job_response = _job_response


def _same_location(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


def check_lookup(project: str, job_id: str, requested: str | None) -> None:
    """jobs.get / jobs.cancel / getQueryResults: 404 unless the location finds the job."""
    actual = LOCATIONS.get(project, job_id)
    if requested:
        found = _same_location(requested, actual)
    else:
        found = actual.upper() in MULTI_REGIONS
    if not found:
        raise Refused(404, "notFound", f"Not found: Job {project}:{job_id}")


# -- what a job touches ---------------------------------------------------------------------------


def _statements(text: str) -> list[exp.Expression]:
    try:
        return [s for s in sqlglot.parse(text, read="bigquery") if s is not None]
    except sqlglot.errors.ParseError:
        return []  # the emulator answers it as it does


def _dataset_of(table: exp.Table, project: str, default: tuple[str, str] | None) -> tuple[str, str]:
    if table.db:
        return (table.catalog or project, table.db)
    return default or (project, "")


def _default_dataset(project: str, query: dict[str, Any]) -> tuple[str, str] | None:
    ref = query.get("defaultDataset") or {}
    if not ref.get("datasetId"):
        return None
    return (ref.get("projectId") or project, ref["datasetId"])


def job_datasets(project: str, config: dict[str, Any]) -> list[tuple[str, str]]:
    """The (project, dataset) pairs a job names."""
    found: list[tuple[str, str]] = []
    if "load" in config:
        ref = config["load"].get("destinationTable") or {}
        found.append((ref.get("projectId") or project, ref.get("datasetId", "")))
    if "query" in config:
        query = config["query"]
        default = _default_dataset(project, query)
        for statement in _statements(query.get("query", "")):
            for table in statement.find_all(exp.Table):
                found.append(_dataset_of(table, project, default))
        ref = query.get("destinationTable") or {}
        if ref.get("datasetId"):
            found.append((ref.get("projectId") or project, ref["datasetId"]))
    return [f for f in found if f[1]]


def job_location(ctx: Any, project: str, config: dict[str, Any], requested: str | None) -> str:
    """The location a job runs in: its datasets'; a requested location must be theirs."""
    location = None
    for project_id, dataset_id in job_datasets(project, config):
        dataset = ctx.catalog.get_dataset(project_id, dataset_id)
        if dataset is None:
            continue
        if requested and not _same_location(requested, dataset.location):
            raise Refused(
                404,
                "notFound",
                f"Not found: Dataset {project_id}:{dataset_id} was not found in location "
                f"{requested}",
            )
        location = location or dataset.location
    return location or requested or "US"


# -- transactions ---------------------------------------------------------------------------------

_TEMP = ("TEMPORARY", "TEMP")


def _is_permanent_ddl(statement: exp.Expression) -> bool:
    if not isinstance(statement, (exp.Create, exp.Drop, exp.Alter)):
        return False
    properties = statement.args.get("properties")
    temporary = properties is not None and any(
        isinstance(p, exp.TemporaryProperty) for p in properties.expressions
    )
    return not temporary and not statement.args.get("temporary")


def check_transaction(statements: list[exp.Expression]) -> None:
    """DDL on permanent entities is not allowed inside a multi-statement transaction."""
    inside = False
    for statement in statements:
        if isinstance(statement, exp.Transaction):
            inside = True
        elif isinstance(statement, (exp.Commit, exp.Rollback)):
            inside = False
        elif inside and _is_permanent_ddl(statement):
            kind = statement.key.upper()
            raise Refused(
                400,
                "invalidQuery",
                f"Query error: {kind} {statement.args.get('kind') or ''} statement is not "
                "supported inside a transaction: only SELECT, DML and DDL on temporary "
                "entities are",
            )


# -- requirePartitionFilter ----------------------------------------------------------------------

_COMPARISONS = (exp.EQ, exp.GT, exp.GTE, exp.LT, exp.LTE)
_INGESTION_COLUMNS = ("_PARTITIONTIME", "_PARTITIONDATE")


def _constant(node: exp.Expression) -> bool:
    """No column and no subquery: a value BigQuery knows before reading the table."""
    return node.find(exp.Column, exp.Select, exp.Subquery) is None


def _is_column(node: exp.Expression, names: tuple[str, ...], alias: str) -> bool:
    if isinstance(node, exp.Paren):
        return _is_column(node.this, names, alias)
    if not isinstance(node, exp.Column):
        return False
    qualifier = node.table
    return node.name.lower() in names and (not qualifier or qualifier.lower() == alias)


def prunes(node: exp.Expression | None, names: tuple[str, ...], alias: str) -> bool:
    """Whether a WHERE condition can eliminate partitions of the table (`alias`) by `names`."""
    if node is None:
        return False
    if isinstance(node, exp.Paren):
        return prunes(node.this, names, alias)
    if isinstance(node, exp.And):
        return prunes(node.left, names, alias) or prunes(node.right, names, alias)
    if isinstance(node, exp.Or):
        return prunes(node.left, names, alias) and prunes(node.right, names, alias)
    if isinstance(node, _COMPARISONS):
        left, right = node.left, node.right
        return (_is_column(left, names, alias) and _constant(right)) or (
            _is_column(right, names, alias) and _constant(left)
        )
    if isinstance(node, exp.Between):
        return (
            _is_column(node.this, names, alias)
            and _constant(node.args["low"])
            and _constant(node.args["high"])
        )
    if isinstance(node, exp.In):
        return (
            _is_column(node.this, names, alias)
            and not node.args.get("query")
            and all(_constant(e) for e in node.expressions)
        )
    return False


def _scope_where(table: exp.Table) -> exp.Expression | None | bool:
    """The WHERE condition that filters `table`'s rows; True when the table is only written."""
    parent = table.parent
    if isinstance(parent, exp.Schema) or (isinstance(parent, exp.Insert) and parent.this is table):
        return True  # an INSERT target or a created table: nothing is read
    if isinstance(parent, (exp.Delete, exp.Update)) and parent.this is table:
        where = parent.args.get("where")
        return where.this if where is not None else None
    scope = table.find_ancestor(exp.Select, exp.Delete, exp.Update)
    if scope is None:
        return None
    where = scope.args.get("where")
    return where.this if where is not None else None


def check_partition_filters(
    ctx: Any, project: str, statements: list[exp.Expression], default: tuple[str, str] | None
) -> None:
    for statement in statements:
        for table in statement.find_all(exp.Table):
            project_id, dataset_id = _dataset_of(table, project, default)
            if not dataset_id:
                continue
            meta = ctx.catalog.get_table(project_id, dataset_id, table.name)
            partitioning = None if meta is None else meta.time_partitioning
            if partitioning is None or not partitioning.require_partition_filter:
                continue
            names = (
                (partitioning.field.lower(),)
                if partitioning.field
                else tuple(c.lower() for c in _INGESTION_COLUMNS)
            )
            where = _scope_where(table)
            if where is True:
                continue
            alias = table.alias_or_name.lower()
            if not prunes(where if isinstance(where, exp.Expression) else None, names, alias):
                column = partitioning.field or ", ".join(_INGESTION_COLUMNS)
                raise Refused(
                    400,
                    "invalidQuery",
                    f"Cannot query over table '{dataset_id}.{table.name}' without a filter over "
                    f"column(s) '{column}' that can be used for partition elimination",
                )


# -- expiration -----------------------------------------------------------------------------------

_rest_to_table_meta = tables_routes._rest_to_table_meta
_table_to_rest = tables_routes._table_to_rest


def _to_table_meta(
    project_id: str, dataset_id: str, body: dict[str, Any], clock: Any, existing: Any = None
) -> Any:
    """Keep `expirationTime` and the table-level `requirePartitionFilter` (bqemulator drops
    both)."""
    meta = _rest_to_table_meta(project_id, dataset_id, body, clock, existing)
    update: dict[str, Any] = {}
    if "expirationTime" in body:
        raw = body["expirationTime"]
        update["expiration_time"] = (
            None if raw is None else datetime.fromtimestamp(int(raw) / 1000, timezone.utc)
        )
    elif existing is not None:
        update["expiration_time"] = existing.expiration_time
    if body.get("requirePartitionFilter") is not None and meta.time_partitioning is not None:
        update["time_partitioning"] = meta.time_partitioning.model_copy(
            update={"require_partition_filter": bool(body["requirePartitionFilter"])}
        )
    return meta.model_copy(update=update) if update else meta


def _to_rest(meta: Any) -> dict[str, Any]:
    body: dict[str, Any] = _table_to_rest(meta)
    if meta.expiration_time is not None:
        body["expirationTime"] = str(int(meta.expiration_time.timestamp() * 1000))
    if meta.time_partitioning is not None and meta.time_partitioning.require_partition_filter:
        body["requirePartitionFilter"] = True
    return body


tables_routes._rest_to_table_meta = _to_table_meta
tables_routes._table_to_rest = _to_rest


def _partition_cutoff(table: Any, now: datetime) -> str | None:
    """A SQL condition true for the rows of expired partitions (None: nothing expires).

    A DAY partition's data expires at its date (midnight UTC) plus the expiration: the rows of
    days up to (now - expiration)'s date are gone, i.e. those before the next midnight."""
    partitioning = table.time_partitioning
    if partitioning is None or not partitioning.field or not partitioning.expiration_ms:
        return None
    last_expired = (now - timedelta(milliseconds=int(partitioning.expiration_ms))).date()
    first_kept = datetime.combine(last_expired + timedelta(days=1), datetime.min.time())
    types = {f.name.lower(): f.type.upper() for f in table.schema_.fields}
    kind = types.get(partitioning.field.lower(), "TIMESTAMP")
    if kind == "DATE":
        literal = f"DATE '{first_kept.date().isoformat()}'"
    elif kind == "DATETIME":
        literal = f"TIMESTAMP '{first_kept.isoformat(sep=' ')}'"
    else:
        literal = f"TIMESTAMPTZ '{first_kept.isoformat(sep=' ')}+00'"
    column = '"' + partitioning.field.replace('"', '""') + '"'
    return f"{column} < {literal}"


async def expire(ctx: Any, project: str) -> None:
    """Drop tables past their expirationTime and the rows of expired partitions."""
    now = datetime.now(timezone.utc)
    for dataset in ctx.catalog.list_datasets(project):
        for listed in ctx.catalog.list_tables(project, dataset.dataset_id):
            table = ctx.catalog.get_table(project, dataset.dataset_id, listed.table_id)
            if table is None or table.table_type != "TABLE":
                continue
            ref = quoted_table_ref(project, dataset.dataset_id, table.table_id)
            if table.expiration_time is not None and table.expiration_time <= now:
                async with ctx.engine.write_lock():
                    ctx.engine.execute(f"DROP TABLE IF EXISTS {ref}")
                    ctx.catalog.delete_table(project, dataset.dataset_id, table.table_id)
                continue
            condition = _partition_cutoff(table, now)
            if condition is not None:
                async with ctx.engine.write_lock():
                    ctx.engine.execute(f"DELETE FROM {ref} WHERE {condition}")  # noqa: S608


# -- the middleware -------------------------------------------------------------------------------


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def _check_insert(request: Request, ctx: Any, project: str) -> tuple[str, str] | None:
    """jobs.insert: the job id, the location, the SQL rules; (job id, location) to record."""
    body = await _json(request)
    reference = body.get("jobReference") or {}
    config = body.get("configuration") or {}
    job_id = reference.get("jobId")
    if job_id is not None:
        if not JOB_ID.fullmatch(str(job_id)):
            raise Refused(
                400,
                "invalid",
                f'Invalid job ID "{job_id}". Job IDs must be alphanumeric (plus underscores '
                "and dashes) and must be at most 1024 characters long.",
            )
        if ctx.catalog.get_job(project, job_id) is not None:
            location = LOCATIONS.get(project, job_id)
            raise Refused(409, "duplicate", f"Already Exists: Job {project}:{location}.{job_id}")
    location = job_location(ctx, project, config, reference.get("location"))
    _check_sql(ctx, project, config.get("query"))
    return (job_id, location) if job_id else None


def _check_sql(ctx: Any, project: str, query: dict[str, Any] | None) -> None:
    if not query:
        return
    statements = _statements(query.get("query", ""))
    check_transaction(statements)
    check_partition_filters(ctx, project, statements, _default_dataset(project, query))


async def _read(response: Response) -> bytes:
    body = getattr(response, "body", None)
    if isinstance(body, bytes):
        return body
    chunks = [chunk async for chunk in response.body_iterator]
    return b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks)


async def _query_endpoint(
    request: Request, ctx: Any, project: str, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """jobs.query: the location and SQL rules; the job it made is recorded with its location."""
    body = await _json(request)
    query = {"query": body.get("query", ""), "defaultDataset": body.get("defaultDataset")}
    location = job_location(ctx, project, {"query": query}, body.get("location"))
    _check_sql(ctx, project, query)
    response = await call_next(request)
    raw = await _read(response)
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("jobReference"), dict):
        reference = answer["jobReference"]
        LOCATIONS.put(project, reference.get("jobId", ""), location)
        reference["location"] = location
        return JSONResponse(answer, status_code=response.status_code)
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    return Response(raw, status_code=response.status_code, headers=headers)


async def rules(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Apply the rules above to one API request."""
    path = request.url.path
    if not path.startswith("/bigquery/v2/projects/") and not path.startswith(
        "/upload/bigquery/v2/projects/"
    ):
        return await call_next(request)
    ctx = request.app.state.context
    project = path.split("/projects/", 1)[1].split("/", 1)[0]
    try:
        await expire(ctx, project)
        match = _JOB_PATH.match(path)
        if match is None:
            return await call_next(request)
        _, kind, job_id, cancel = match.groups()
        method = request.method.upper()
        if kind == "jobs" and job_id is None and method == "POST":
            recorded = await _check_insert(request, ctx, project)
            if recorded is not None:
                LOCATIONS.put(project, *recorded)
            return await call_next(request)
        if kind == "queries" and job_id is None and method == "POST":
            return await _query_endpoint(request, ctx, project, call_next)
        if job_id is not None and (method == "GET" or cancel):
            if ctx.catalog.get_job(project, job_id) is not None:
                check_lookup(project, job_id, request.query_params.get("location"))
        return await call_next(request)
    except Refused as refused:
        return refused.response


_create_app = server.create_app


def create_app(context: Any) -> Any:
    app = _create_app(context)
    app.middleware("http")(rules)
    return app


server.create_app = create_app

if __name__ == "__main__":
    from bqemulator.cli import main

    sys.argv[0] = "bqemulator"
    sys.exit(main())
