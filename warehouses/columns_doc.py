"""The column reference (docs/columns.md): every column of the export table, the SyncTable
and the rejects table, its type in each warehouse, its meaning and an example value.

Generated, like docs/configuration.md, from the tables the adapters create (syncd.fields,
warehouses.sql, the dialects and BigQuery's types), so a new column or type shows up here;
`python -m warehouses.columns_doc > docs/columns.md` rewrites it and a test fails when the
file is stale or a column has no description. It lives in warehouses/ because the types are
the adapters' knowledge.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from syncd.fields import EXPORT_FIELDS, LEGACY_FIELDS, MOBILE_FIELDS, TRACE_COLUMNS, Column
from syncd.fields import FieldType as T
from warehouses.redshift import REDSHIFT_VARCHAR_MAX, redshift_dialect
from warehouses.sql import (
    BIGQUERY,
    DUCKDB,
    PEOPLE_COLUMNS,
    PEOPLE_SYNC_COLUMNS,
    POSTGRES,
    REJECTS_COLUMNS,
    SYNC_COLUMNS,
)

#: Column name -> (meaning, example value as a query shows it).
DESCRIPTIONS: dict[str, tuple[str, str]] = {
    # identities
    "IndvId": (
        "FullStory's id of the individual: every user with the same UserAppKey, across devices",
        "2739058571827658885",
    ),
    "UserId": (
        "FullStory's id of a user cookie on one device and browser (reset when cookies are cleared)",
        "2739058571827658885",
    ),
    "SessionId": (
        "the session within the user; UserId and SessionId together identify a session",
        "4148936078785568",
    ),
    "PageId": (
        "the page load within the session; with UserId and SessionId it identifies a page",
        "4080834620698877",
    ),
    "UserCreated": ("when the cookie of UserId was first seen", "2025-11-15 12:02:03.854"),
    "UserAppKey": ("your id for the user, as given to FS.identify (uid)", "user-769631"),
    "UserDisplayName": ("the display name given to FS.identify or setUserVars", "Ada Lovelace"),
    "UserEmail": ("the email given to FS.identify or setUserVars", "ada@example.com"),
    # the event
    "EventStart": (
        "when the event happened (UTC); the partition and sort column",
        "2026-11-01 00:06:03.103",
    ),
    "EventType": ("kind of event: navigate, click, change, load, custom, pageview, ...", "click"),
    "EventSubType": ("refinement of EventType (e.g. how a navigate happened)", "popstate"),
    "EventCustomName": ("name of a custom event (FS.event)", "Checkout Error"),
    "EventTargetText": ("text of the element the event targeted", "Add to cart"),
    "EventTargetSelector": ("CSS selector of the targeted element", "body div .cart a .btn"),
    "EventPageOffset": ("milliseconds from the page's start to the event", "5230"),
    "EventSessionOffset": ("milliseconds from the session's start to the event", "125230"),
    "EventModFrustrated": ("1 when the event was a frustrated (rage) click", "1"),
    "EventModDead": ("1 when the click had no effect (dead click)", "1"),
    "EventModError": ("1 when the click was followed by an error", "1"),
    "EventModSuspicious": ("FullStory's suspicious-event flag (1 or 0)", "0"),
    "EventVarErrorKind": ("kind of a JavaScript error event", "ReferenceError"),
    "EventVarFields": (
        "names of the custom fields the event carried",
        "user_plan_str,user_vip_bool",
    ),
    "EventWebSourceFileUrl": (
        "script file an error event came from",
        "https://cdn.example.com/app.min.js",
    ),
    "EventFirstInputDelay": ("first input delay, milliseconds (web vitals)", "50"),
    "EventCumulativeLayoutShift": ("cumulative layout shift score (web vitals)", "0.0732"),
    "EventMobileSourceFile": ("source file of a mobile app error event", "CartView.swift"),
    # session and page
    "SessionStart": ("when the session started", "2026-11-01 00:06:03.103"),
    "PageStart": ("when the page view started", "2026-11-01 00:06:03.103"),
    "PageName": ("the page's name (FullStory's page definitions)", "Checkout"),
    "PageUrl": ("URL of the page", "https://shop.example.org/cart"),
    "PageRefererUrl": ("referrer of the page", "https://www.example.com/"),
    "PageIp": ("client IP address", "203.0.113.45"),
    "PageLatLong": ('approximate location of the IP, "lat,long"', "-33.8688,151.2093"),
    "PageUserAgent": ("the browser's user agent string", "Mozilla/5.0 (Windows NT 10.0; ...)"),
    "PageBrowser": ("browser name", "Chrome"),
    "PageBrowserVersion": ("browser version", "120.0.0.0"),
    "PageDevice": ("device class: Desktop, Mobile, Tablet", "Desktop"),
    "PagePlatform": ("web or a mobile platform", "web"),
    "PageOperatingSystem": ("operating system", "Windows"),
    "PageDuration": ("page view length, milliseconds", "321202"),
    "PageActiveDuration": ("active time on the page, milliseconds", "262126"),
    "PageScreenWidth": ("screen width, pixels", "1920"),
    "PageScreenHeight": ("screen height, pixels", "1080"),
    "PageViewportWidth": ("viewport width, pixels", "1905"),
    "PageViewportHeight": ("viewport height, pixels", "1080"),
    "PageNumEvents": ("events on the page", "3"),
    "PageNumDerivedEvents": ("derived events on the page", "3"),
    "PageNumInfos": ("console info messages on the page", "0"),
    "PageNumWarnings": ("console warnings on the page", "3"),
    "PageNumErrors": ("console errors on the page", "0"),
    "PageClusterId": ("FullStory's id of the cluster of similar pages", "2"),
    "PageMaxScrollDepthPercent": ("deepest scroll on the page, percent", "14"),
    "LoadDomContentTime": ("DOMContentLoaded, milliseconds after navigation start", "1950"),
    "LoadEventTime": ("load event, milliseconds after navigation start", "2464"),
    "LoadFirstPaintTime": ("first paint, milliseconds", "2168"),
    "LoadLargestPaintTime": ("largest contentful paint, milliseconds", "4847"),
    "ReqUrl": ("URL of a network request event", "https://api.example.com/v1/cart"),
    "ReqMethod": ("HTTP method of the request", "GET"),
    "ReqStatus": ("HTTP status of the request", "204"),
    # mobile (IncludeMobileAppsFields)
    "AppName": ("mobile app name", "Example Shop"),
    "AppPackageName": ("app package or bundle id", "com.example.shop"),
    "AppDeviceModel": ("device model", "iPhone15,2"),
    "AppDeviceVendor": ("device vendor", "Apple"),
    "AppVersion": ("app version", "4.2.0"),
    "AppOsVersion": ("OS version", "17.1"),
    "AppViewName": ("the app view (screen) name", "CartView"),
    # legacy bundles
    "PageAgent": ("legacy bundles' name of PageUserAgent", "Mozilla/5.0 (...)"),
    "EventTargetSelectorTok": (
        "legacy bundles' name of EventTargetSelector",
        "body div .cart a .btn",
    ),
    # syncd's
    "CustomVars": (
        "JSON object of every custom variable (user_*, evt_*, page_*; keys sorted) and every "
        "field without a column (a field FullStory added after this catalog, e.g.)",
        '{"evt_code_str":"OOS-134B","user_plan_str":"free"}',
    ),
    "SyncdBatchId": (
        "the batch that loaded the row (its SyncTable row has the same id)",
        "segment-20261101T000000Z-20261101T010000Z",
    ),
    "SyncdLoadedAt": ("when syncd transformed the batch (UTC)", "2026-11-01 02:03:04.567"),
    # SyncTable
    "ID": ("hauser's sync id: -1 in the rows syncd writes; hauser's own rows keep theirs", "-1"),
    "Processed": ("when the batch was committed (hauser's column)", "2026-11-01 02:03:05.001"),
    "BundleEndTime": (
        "end of the batch, exclusive; the resume point is the latest (hauser's column)",
        "2026-11-01 01:00:00",
    ),
    "SyncdSource": ("segment, legacy, or hauser for a row continued from hauser", "segment"),
    "BatchStart": ("start of the batch, inclusive", "2026-11-01 00:00:00"),
    "BundleIds": (
        "legacy bundle ids of the batch, comma-separated (empty for segment)",
        "1761955200,1761958800",
    ),
    "OperationId": ("the Segment Export operation that produced the batch", "op-7f3a9c"),
    "RowsLoaded": ("rows the batch put in the export table", "1997"),
    "RowsRejected": ("rows of the batch quarantined in the rejects table", "3"),
    "Bytes": ("bytes of the export downloaded for the batch (gzip)", "1832440"),
    "StagedUri": (
        "where the staged file is (or was, when not kept)",
        "s3://bucket/syncd/segment-....parquet",
    ),
    "SyncdVersion": ("syncd version that committed the batch", "0.1.0"),
    "SettledAt": (
        "when a settle (SettleAfter) exported the window again and replaced it; empty for a "
        "first load",
        "2026-11-02 01:00:03.120",
    ),
    "SettleRowsDelta": (
        "rows the settle added to the window (negative: removed); empty for a first load",
        "12",
    ),
    # the people table (ExportIndividuals)
    "UserVars": (
        "JSON object of the individual's user vars (user_<name>_<type>, keys sorted), as the "
        "individuals export has them",
        '{"user_age_int":34,"user_plan_str":"pro"}',
    ),
    "SyncdExportEnd": (
        "end of the export window the row came from: the most recent export wins",
        "2026-11-01 01:00:00",
    ),
    "WindowStart": ("start of the people batch's window, inclusive", "2026-11-01 00:00:00"),
    "WindowEnd": ("end of the people batch's window, exclusive", "2026-11-01 01:00:00"),
    "CommittedAt": ("when the people batch was committed (UTC)", "2026-11-01 02:03:05.001"),
    # rejects
    "Position": ("0-based position of the row in the export body", "412"),
    "Reason": ("why the row was quarantined, naming the field", "IndvId: not an integer: 'abc'"),
    "Raw": ("the row as the export served it (first 64 KiB)", '{"IndvId":"abc",...}'),
    "RejectedAt": ("when syncd quarantined it (UTC)", "2026-11-01 02:03:04.512"),
}

#: What a shared column name means in the people tables.
_PEOPLE_MEANINGS: dict[str, tuple[str, str]] = {
    "UserId": (
        "FullStory's id of the individual's user cookie, from the export",
        "2739058571827658885",
    ),
    "SyncdBatchId": (
        "the people batch that wrote the row (its people sync row has the same id)",
        "individuals-20261101T000000Z-20261101T010000Z",
    ),
    "SyncdLoadedAt": ("when syncd read the individuals export (UTC)", "2026-11-01 02:03:04.567"),
    "OperationId": ("the individuals export operation", "op-7f3a9c"),
    "RowsLoaded": ("individuals in the window's export", "214"),
}

_REDSHIFT = redshift_dialect()
_REDSHIFT_SUPER = redshift_dialect(super_json=True)


def _types(t: T) -> tuple[str, str, str, str]:
    redshift = _REDSHIFT.column_type(t)
    if t is T.JSON:
        redshift += " or " + _REDSHIFT_SUPER.column_type(t)
    return DUCKDB.column_type(t), POSTGRES.column_type(t), redshift, BIGQUERY.column_type(t)


def _table(
    columns: Sequence[Column],
    note: dict[str, str] | None = None,
    own: dict[str, tuple[str, str]] | None = None,
) -> list[str]:
    """The Markdown table of `columns`; `own`: this table's meaning of a shared name."""
    lines = [
        "| column | DuckDB | PostgreSQL | Redshift | BigQuery | meaning | example |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in columns:
        meaning, example = (own or {}).get(c.name) or DESCRIPTIONS[c.name]
        extra = (note or {}).get(c.name, "")
        cells = (f"`{c.name}`", *_types(c.type), meaning + extra, f"`{example}`")
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines


def undocumented() -> list[str]:
    """Columns of any table that have no description (the test wants none)."""
    every = (*EXPORT_FIELDS, *MOBILE_FIELDS, *LEGACY_FIELDS, *TRACE_COLUMNS)
    tables = (*every, *SYNC_COLUMNS, *REJECTS_COLUMNS, *PEOPLE_COLUMNS, *PEOPLE_SYNC_COLUMNS)
    return [c.name for c in tables if c.name not in DESCRIPTIONS]


def markdown() -> str:
    header = f"""# Columns

<!-- Generated by `python -m warehouses.columns_doc > docs/columns.md`; edit
warehouses/columns_doc.py instead (a test fails when this file is stale). -->

syncd writes three tables (names set by `ExportTable`, `SyncTable` and `RejectsTable` in the
warehouse's section; defaults `fsexport`, `fssync`, `fsrejects`). Column names are as below
(Redshift shows them in lower case); a table that exists already keeps its columns and their
order, and syncd adds the missing ones. Timestamps are UTC without a zone, to the millisecond
as FullStory exports them (`SyncdLoadedAt` and the SyncTable's to the microsecond). An absent
field and a JSON null are NULL; an empty string stays an empty string.

syncd asks the export for every field, so a field FullStory adds later is loaded too: into
CustomVars, or into a column of its name once you add one to the export table (e.g.
`ALTER TABLE fsexport ADD COLUMN "NewField" VARCHAR`; filled from syncd's next start on).
The mobile apps' fields are left out of every row (no column, not in CustomVars) unless
`IncludeMobileAppsFields = true`.

Redshift: strings are `VARCHAR(VarCharMax)` (bytes; default {REDSHIFT_VARCHAR_MAX}, a longer
value is cut at a UTF-8 character boundary), CustomVars is `VARCHAR({REDSHIFT_VARCHAR_MAX})`
JSON text as in hauser's tables, or `SUPER` with `[redshift] CustomVarsType = "super"`.
BigQuery: the export table is partitioned by DAY on `EventStart`. Reading CustomVars in each
warehouse: [queries.md](queries.md).

## Types

| kind | DuckDB | PostgreSQL | Redshift | BigQuery |
|---|---|---|---|---|
"""
    kinds = [f"| {t.value} | " + " | ".join(_types(t)) + " |" for t in T]
    mobile = {c.name: " (only with `IncludeMobileAppsFields`)" for c in MOBILE_FIELDS}
    legacy = {c.name: ' (only with `Source = "legacy"`)' for c in LEGACY_FIELDS}
    parts = [
        header + "\n".join(kinds),
        "## Export table (`fsexport`)\n\nOne row per event, in this order in a new table.\n\n"
        + "\n".join(
            _table(
                (*EXPORT_FIELDS, *MOBILE_FIELDS, *LEGACY_FIELDS, *TRACE_COLUMNS), mobile | legacy
            )
        ),
        "## SyncTable (`fssync`)\n\nOne row per committed batch, written in the batch's "
        "transaction. hauser's three columns come first, so hauser's SyncTable is continued "
        "and hauser could still read syncd's.\n\n" + "\n".join(_table(SYNC_COLUMNS)),
        "## Rejects table (`fsrejects`)\n\nOne row per quarantined export row, committed with "
        "its batch.\n\n" + "\n".join(_table(REJECTS_COLUMNS)),
        "## People table (`fsindividuals`)\n\nWith `ExportIndividuals = true` (name: "
        "`IndividualsTable`): one row per individual, from the individuals exports "
        "(`TYPE_INDIVIDUAL`) of the committed windows; a newer export's row replaces an older "
        "one. `fs_users` reads identities from it ([views.md](views.md)).\n\n"
        + "\n".join(_table(PEOPLE_COLUMNS, own=_PEOPLE_MEANINGS)),
        "## People sync table (`fsindividuals_sync`)\n\n`<IndividualsTable>_sync`: one row per "
        "committed people batch (a window's individuals export), written in the batch's "
        "transaction; the SyncTable never holds people batches.\n\n"
        + "\n".join(_table(PEOPLE_SYNC_COLUMNS, own=_PEOPLE_MEANINGS)),
    ]
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    missing = undocumented()
    if missing:
        sys.exit(f"no description for: {', '.join(missing)}")
    sys.stdout.write(markdown())
