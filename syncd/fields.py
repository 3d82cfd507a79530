"""The export field catalog: every documented FullStory export field and its column type.

The export table has one column per catalog field (named as the field, as hauser did), plus
`CustomVars` (every `user_*`, `evt_*`, `page_*` key and every field the catalog does not know,
folded into one JSON object), `SyncdBatchId` and `SyncdLoadedAt` (traceability).

Segment exports ask for every field (the API's `fields` omitted): an explicit list would never
export a field FullStory adds later. Switches such as IncludeMobileAppsFields therefore act
after the export: `dropped_fields` names what the transform leaves out of every row.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FieldType(str, enum.Enum):
    INT64 = "int64"
    FLOAT = "float"
    STRING = "string"
    TIMESTAMP = "timestamp"  # UTC, millisecond precision
    JSON = "json"  # a JSON object stored as text or the warehouse's JSON type


@dataclass(frozen=True)
class Column:
    name: str
    type: FieldType


def _cols(type_: FieldType, names: str) -> tuple[Column, ...]:
    return tuple(Column(n, type_) for n in names.split())


_I, _F, _S, _T = FieldType.INT64, FieldType.FLOAT, FieldType.STRING, FieldType.TIMESTAMP

#: Fields of the Segment Export API, in table order.
EXPORT_FIELDS: tuple[Column, ...] = (
    *_cols(_I, "IndvId UserId SessionId PageId"),
    *_cols(_T, "UserCreated"),
    *_cols(_S, "UserAppKey UserDisplayName UserEmail"),
    *_cols(_T, "EventStart"),
    *_cols(_S, "EventType EventSubType EventCustomName EventTargetText EventTargetSelector"),
    *_cols(_I, "EventPageOffset EventSessionOffset"),
    *_cols(_I, "EventModFrustrated EventModDead EventModError EventModSuspicious"),
    *_cols(_S, "EventVarErrorKind EventVarFields EventWebSourceFileUrl"),
    *_cols(_I, "EventFirstInputDelay"),
    *_cols(_F, "EventCumulativeLayoutShift"),
    *_cols(_T, "SessionStart PageStart"),
    *_cols(
        _S,
        "PageName PageUrl PageRefererUrl PageIp PageLatLong PageUserAgent PageBrowser "
        "PageBrowserVersion PageDevice PagePlatform PageOperatingSystem",
    ),
    *_cols(
        _I,
        "PageDuration PageActiveDuration PageScreenWidth PageScreenHeight PageViewportWidth "
        "PageViewportHeight PageNumEvents PageNumDerivedEvents PageNumInfos PageNumWarnings "
        "PageNumErrors PageClusterId PageMaxScrollDepthPercent",
    ),
    *_cols(_I, "LoadDomContentTime LoadEventTime LoadFirstPaintTime LoadLargestPaintTime"),
    *_cols(_S, "ReqUrl ReqMethod"),
    *_cols(_I, "ReqStatus"),
)

#: Loaded only when IncludeMobileAppsFields is set (`dropped_fields` otherwise).
MOBILE_FIELDS: tuple[Column, ...] = _cols(
    _S,
    "AppName AppPackageName AppDeviceModel AppDeviceVendor AppVersion AppOsVersion "
    "AppViewName EventMobileSourceFile",
)

#: Legacy bundle names of fields the Segment Export API renamed.
LEGACY_FIELDS: tuple[Column, ...] = _cols(_S, "PageAgent EventTargetSelectorTok")

CUSTOM_VARS = Column("CustomVars", FieldType.JSON)
BATCH_ID = Column("SyncdBatchId", FieldType.STRING)
LOADED_AT = Column("SyncdLoadedAt", FieldType.TIMESTAMP)
TRACE_COLUMNS: tuple[Column, ...] = (CUSTOM_VARS, BATCH_ID, LOADED_AT)

#: Keys with these prefixes are custom variables, always folded into CustomVars.
CUSTOM_PREFIXES: tuple[str, ...] = ("user_", "evt_", "page_")

#: Every field name the catalog knows, with its type.
KNOWN_FIELDS: dict[str, FieldType] = {
    c.name: c.type for c in (*EXPORT_FIELDS, *MOBILE_FIELDS, *LEGACY_FIELDS)
}


def export_columns(source: str = "segment", include_mobile: bool = False) -> tuple[Column, ...]:
    """The export table's columns for a fresh table: fields, then CustomVars and trace columns."""
    fields = list(EXPORT_FIELDS)
    if include_mobile:
        fields.extend(MOBILE_FIELDS)
    if source == "legacy":
        fields.extend(LEGACY_FIELDS)
    return (*fields, *TRACE_COLUMNS)


def dropped_fields(include_mobile: bool = False) -> frozenset[str]:
    """The fields the transform leaves out of every row, neither column nor CustomVars: the
    mobile apps' fields unless IncludeMobileAppsFields. The export itself carries all fields."""
    return frozenset() if include_mobile else frozenset(c.name for c in MOBILE_FIELDS)
