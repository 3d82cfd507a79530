"""Ready-to-analyze views over the export table, in each warehouse's own SQL.

`fs_sessions`, `fs_pageviews`, `fs_clicks`, `fs_custom_events` and `fs_users` (docs/views.md
documents their columns). Each view is written once below as a SQL template, rendered by
`warehouses.sql.render` through the warehouse's `warehouses.sql.Dialect` ("duckdb",
"postgres", "redshift", "bigquery"): what the warehouses spell differently there is how an
identifier is quoted (`Dialect.quote`), the floating-point type
(`Dialect.column_type(FieldType.FLOAT)`), and how a view is replaced
(`Dialect.replace_view_changes_columns`). The views lean on SQL the four share (GROUP BY,
CASE, COUNT(DISTINCT ...), and FIRST_VALUE over an explicit window frame, which Redshift
requires), so nothing else differs.

Durations come from the export's own millisecond fields (EventSessionOffset, PageDuration),
never from timestamp arithmetic, so every warehouse computes the same figures.

`fs_users` is built in two parts joined on IndvId: the identity of each individual and the
activity (`_ACTIVITY`, aggregates of the events). The identity comes from the events
(`_IDENTITY`: the latest event of each IndvId), or, when the people table is kept
(ExportIndividuals: `people_table`), from that table (`_PEOPLE_IDENTITY`: the individuals
export, the most recent winning), with the events' identity only for individuals it does not
hold yet; the view's columns are the same either way.

Creating them: `create_views(warehouse)`, for a warehouse with the optional `MakesViews`
protocol (`warehouses.base`), which runs `view_statements` for its dialect in a transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from syncd.errors import TerminalLoadError
from syncd.fields import FieldType
from warehouses import sql
from warehouses.base import MakesViews, validate_identifier
from warehouses.sql import Dialect

VIEW_NAMES: tuple[str, ...] = (
    "fs_sessions",
    "fs_pageviews",
    "fs_clicks",
    "fs_custom_events",
    "fs_users",
)


_CLICK = "{EventType} = 'click'"
_FRUSTRATED = (
    "(COALESCE({EventModFrustrated}, 0) > 0 OR COALESCE({EventModDead}, 0) > 0 "
    "OR COALESCE({EventModError}, 0) > 0)"
)


def _first(column: str, partition: str, order: str = "{EventStart}") -> str:
    """FIRST_VALUE of `column` in its partition, with the frame Redshift requires."""
    return (
        f"FIRST_VALUE({{{column}}}) OVER (PARTITION BY {partition} ORDER BY {order} "
        "ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)"
    )


_SESSION = "{IndvId}, {UserId}, {SessionId}"
_SESSION_ORDER = "{EventStart}, {PageId}"

_SESSIONS = f"""SELECT {_SESSION},
  MIN({{SessionStart}}) AS {{SessionStart}},
  MAX({{EventStart}}) AS {{SessionEnd}},
  CAST(MAX({{EventSessionOffset}}) AS {{float}}) / 1000 AS {{DurationSeconds}},
  COUNT(DISTINCT {{PageId}}) AS {{Pages}},
  COUNT(*) AS {{Events}},
  SUM(CASE WHEN {_CLICK} THEN 1 ELSE 0 END) AS {{Clicks}},
  SUM(CASE WHEN {_CLICK} AND {_FRUSTRATED} THEN 1 ELSE 0 END) AS {{FrustratedClicks}},
  SUM(CASE WHEN {_CLICK} AND COALESCE({{EventModFrustrated}}, 0) > 0 THEN 1 ELSE 0 END)
    AS {{RageClicks}},
  SUM(CASE WHEN {_CLICK} AND COALESCE({{EventModDead}}, 0) > 0 THEN 1 ELSE 0 END)
    AS {{DeadClicks}},
  SUM(CASE WHEN {_CLICK} AND COALESCE({{EventModError}}, 0) > 0 THEN 1 ELSE 0 END)
    AS {{ErrorClicks}},
  MIN({{FirstDevice}}) AS {{Device}},
  MIN({{FirstBrowser}}) AS {{Browser}},
  MIN({{FirstLocation}}) AS {{Location}},
  MIN({{FirstUrl}}) AS {{FirstUrl}},
  MIN({{FirstReferrer}}) AS {{Referrer}}
FROM (
  SELECT {_SESSION}, {{PageId}}, {{SessionStart}}, {{EventStart}}, {{EventSessionOffset}},
    {{EventType}}, {{EventModFrustrated}}, {{EventModDead}}, {{EventModError}},
    {_first("PageDevice", _SESSION, _SESSION_ORDER)} AS {{FirstDevice}},
    {_first("PageBrowser", _SESSION, _SESSION_ORDER)} AS {{FirstBrowser}},
    {_first("PageLatLong", _SESSION, _SESSION_ORDER)} AS {{FirstLocation}},
    {_first("PageUrl", _SESSION, _SESSION_ORDER)} AS {{FirstUrl}},
    {_first("PageRefererUrl", _SESSION, _SESSION_ORDER)} AS {{FirstReferrer}}
  FROM {{export}}
) ev
GROUP BY {_SESSION}"""  # noqa: S608 - a constant template; names quoted by sql.render

_PAGEVIEWS = f"""SELECT {_SESSION}, {{PageId}},
  MIN({{PageStart}}) AS {{PageStart}},
  MIN({{PageName}}) AS {{PageName}},
  MIN({{PageUrl}}) AS {{PageUrl}},
  MIN({{PageRefererUrl}}) AS {{PageRefererUrl}},
  CAST(MAX({{PageDuration}}) AS {{float}}) / 1000 AS {{DurationSeconds}},
  CAST(MAX({{PageActiveDuration}}) AS {{float}}) / 1000 AS {{ActiveSeconds}},
  COUNT(*) AS {{Events}},
  SUM(CASE WHEN {_CLICK} THEN 1 ELSE 0 END) AS {{Clicks}}
FROM {{export}}
GROUP BY {_SESSION}, {{PageId}}"""  # noqa: S608 - a constant template; names quoted by sql.render

_CLICKS = f"""SELECT {_SESSION}, {{PageId}}, {{EventStart}}, {{PageUrl}},
  {{EventTargetText}} AS {{TargetText}},
  {{selector}} AS {{TargetSelector}},
  COALESCE({{EventModFrustrated}}, 0) AS {{RageClicks}},
  COALESCE({{EventModDead}}, 0) AS {{Dead}},
  COALESCE({{EventModError}}, 0) AS {{Error}},
  CASE WHEN {_FRUSTRATED} THEN 1 ELSE 0 END AS {{Frustrated}}
FROM {{export}}
WHERE {_CLICK}"""  # noqa: S608 - a constant template; names quoted by sql.render

_CUSTOM_EVENTS = f"""SELECT {_SESSION}, {{PageId}}, {{EventStart}},
  {{EventCustomName}} AS {{Name}},
  {{PageUrl}},
  {{CustomVars}} AS {{Vars}}
FROM {{export}}
WHERE {{EventType}} = 'custom'"""  # noqa: S608 - a constant template; names quoted by sql.render

_USER_ORDER = "{EventStart} DESC, {SessionId} DESC, {PageId} DESC"

#: Who each individual is: here from their latest event; a people table can take this over.
_IDENTITY = f"""SELECT {{IndvId}},
    MIN({{LatestUserId}}) AS {{UserId}},
    MIN({{LatestAppKey}}) AS {{UserAppKey}},
    MIN({{LatestName}}) AS {{UserDisplayName}},
    MIN({{LatestEmail}}) AS {{UserEmail}}
  FROM (
    SELECT {{IndvId}},
      {_first("UserId", "{IndvId}", _USER_ORDER)} AS {{LatestUserId}},
      {_first("UserAppKey", "{IndvId}", _USER_ORDER)} AS {{LatestAppKey}},
      {_first("UserDisplayName", "{IndvId}", _USER_ORDER)} AS {{LatestName}},
      {_first("UserEmail", "{IndvId}", _USER_ORDER)} AS {{LatestEmail}}
    FROM {{export}}
  ) latest
  GROUP BY {{IndvId}}"""  # noqa: S608 - a constant template; names quoted by sql.render

#: Who each individual is, from the people table (`syncd.people`), and from the events for
#: those it does not hold (yet).
_PEOPLE_IDENTITY = """SELECT {IndvId}, {UserId}, {UserAppKey}, {UserDisplayName}, {UserEmail}
  FROM {people}
  UNION ALL
  SELECT ev.{IndvId}, ev.{UserId}, ev.{UserAppKey}, ev.{UserDisplayName}, ev.{UserEmail}
  FROM ({events_identity}) ev
  WHERE ev.{IndvId} NOT IN (SELECT {IndvId} FROM {people})"""

#: What each individual did, from the events.
_ACTIVITY = """SELECT {IndvId},
    MIN({UserCreated}) AS {UserCreated},
    MIN({EventStart}) AS {FirstSeen},
    MAX({EventStart}) AS {LastSeen},
    COUNT(DISTINCT {SessionId}) AS {Sessions},
    COUNT(DISTINCT {PageId}) AS {Pages},
    COUNT(*) AS {Events}
  FROM {export}
  GROUP BY {IndvId}"""

_USERS = """SELECT act.{IndvId}, ident.{UserId}, ident.{UserAppKey},
  ident.{UserDisplayName}, ident.{UserEmail}, act.{UserCreated},
  act.{FirstSeen}, act.{LastSeen}, act.{Sessions}, act.{Pages},
  act.{Events}
FROM ({activity}) act
JOIN ({identity}) ident ON ident.{IndvId} = act.{IndvId}"""

_BODIES: Mapping[str, str] = {
    "fs_sessions": _SESSIONS,
    "fs_pageviews": _PAGEVIEWS,
    "fs_clicks": _CLICKS,
    "fs_custom_events": _CUSTOM_EVENTS,
    "fs_users": _USERS,
}


#: A legacy-bundle table (`Source = "legacy"`) holds the selector under its old name.
_LEGACY_SELECTOR = "EventTargetSelectorTok"


def view_sql(
    dialect: str | Dialect,
    view: str,
    export_table: str,
    schema: str | None = None,
    columns: Collection[str] = (),
    people_table: str | None = None,
) -> str:
    """The SELECT of one view over `export_table` (in `schema`: a schema, or BigQuery's
    dataset), in the dialect's SQL. `columns`: the export table's columns, when known: a
    legacy table's `EventTargetSelectorTok` fills `TargetSelector` where the new name is
    NULL. `people_table`: the people table (ExportIndividuals), which `fs_users` reads
    identities from."""
    d = _dialect(dialect)
    validate_identifier(export_table, "ExportTable")
    legacy = _LEGACY_SELECTOR.lower() in {c.lower() for c in columns}
    selector = "COALESCE({EventTargetSelector}, {EventTargetSelectorTok})"
    fragments = {
        "export": sql.qualified_name(export_table, schema, d.quote),
        "float": d.column_type(FieldType.FLOAT),
        "selector": sql.render(selector if legacy else "{EventTargetSelector}", d),
    }
    if view == "fs_users":
        fragments["activity"] = sql.render(_ACTIVITY, d, None, **fragments)
        identity = sql.render(_IDENTITY, d, None, **fragments)
        if people_table is not None:
            validate_identifier(people_table, "IndividualsTable")
            people = sql.qualified_name(people_table, schema, d.quote)
            identity = sql.render(_PEOPLE_IDENTITY, d, people=people, events_identity=identity)
        fragments["identity"] = identity
    return sql.render(_BODIES[view], d, None, **fragments)


def view_statements(
    dialect: str | Dialect,
    export_table: str,
    schema: str | None = None,
    columns: Collection[str] = (),
    people_table: str | None = None,
) -> list[str]:
    """Every statement that creates or replaces the views, in order (run them in one
    transaction where the warehouse has one); `columns` and `people_table` as for
    `view_sql`."""
    d = _dialect(dialect)
    statements = []
    for view in VIEW_NAMES:
        name = sql.qualified_name(view, schema, d.quote)
        body = view_sql(d, view, export_table, schema, columns, people_table)
        if d.replace_view_changes_columns:
            statements.append(f"CREATE OR REPLACE VIEW {name} AS\n{body}")
        else:
            statements.append(f"DROP VIEW IF EXISTS {name}")
            statements.append(f"CREATE VIEW {name} AS\n{body}")
    return statements


def _dialect(dialect: str | Dialect) -> Dialect:
    """The Dialect itself, or the one of that name (`warehouses.sql.DIALECTS`)."""
    if isinstance(dialect, Dialect):
        return dialect
    try:
        return sql.DIALECTS[dialect]
    except KeyError:
        raise TerminalLoadError(
            f"no views for the {dialect!r} warehouse (views exist for {', '.join(sql.DIALECTS)})"
        ) from None


def create_views(warehouse: object, people_table: str | None = None) -> list[str]:
    """Create or replace every view in the warehouse; the names of the views. With
    `people_table` (ExportIndividuals), `fs_users` reads identities from it.

    A warehouse without views (StorageOnly, `local`) is a TerminalLoadError saying so."""
    if not isinstance(warehouse, MakesViews):
        raise TerminalLoadError(
            "this configuration has no SQL warehouse to create views in (Provider local or "
            "StorageOnly): views need a SQL warehouse (DuckDB, PostgreSQL, Redshift, BigQuery "
            "or Snowflake)"
        )
    warehouse.create_views(people_table)
    return list(VIEW_NAMES)
