"""What the target warehouse's columns hold, and which fields the config leaves out, as the
transform must respect them.

The pipeline fills `OutputRules` from the warehouse's `Capabilities` (and the config's
`dropped_fields`); the transform (both paths, row for row the same) and the staged-file
writers follow them, so the core never asks which warehouse it writes for.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutputRules:
    #: STRING columns (not SyncdBatchId) are cut to this many UTF-8 bytes, never inside a
    #: character; None: kept whole.
    max_string_bytes: int | None = None
    #: A row whose CustomVars JSON text is longer than this many UTF-8 bytes is quarantined:
    #: a cut JSON document is not JSON any more. None: no limit.
    max_json_bytes: int | None = None
    #: The text of NULL in staged CSV, unquoted; every string is quoted, so "" stays the empty
    #: string. "" (an empty unquoted field) is PostgreSQL's and DuckDB's NULL.
    csv_null: str = ""
    #: Keys left out of every row, neither column nor CustomVars (`syncd.fields.dropped_fields`:
    #: the mobile apps' fields without IncludeMobileAppsFields). Exports carry every field, so
    #: such switches act here, after the export.
    dropped_fields: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in ("max_string_bytes", "max_json_bytes"):
            limit = getattr(self, name)
            if limit is not None and limit < 1:
                raise ValueError(f"{name} must be at least 1, not {limit}")


def cut_utf8(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` bytes of UTF-8, never inside a character."""
    if len(text) * 4 <= max_bytes:
        return text
    encoded = text.encode("utf-8", errors="surrogatepass")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def utf8_length(text: str) -> int:
    """The UTF-8 bytes of `text`."""
    return len(text.encode("utf-8", errors="surrogatepass"))


#: No limits, NULL as an empty field: what a warehouse without special needs gets.
NO_RULES = OutputRules()
