"""The transform: a spooled export download -> one staged file (Parquet, CSV or NDJSON).

    transform_file(key, source, out_dir, columns, fmt, loaded_at, rules=...) -> TransformedBatch

Streams with bounded memory, types every column, folds custom variables into CustomVars and
quarantines the rows it cannot load (see `convert` for the rules, `reader` for the layouts);
`rules` (`rules.OutputRules`, from the warehouse's Capabilities and the config) limits
strings, names CSV's NULL and the fields left out of every row (IncludeMobileAppsFields).
"""

from __future__ import annotations

from syncd.transform.convert import RowConverter, RowRejected, parse_rfc3339
from syncd.transform.reader import ExportReader, ExportRow, open_export
from syncd.transform.transform import (
    DEFAULT_BLOCK_ROWS,
    output_path,
    rejects_path,
    transform_file,
)
from syncd.transform.writers import EXTENSIONS, arrow_schema, open_writer

__all__ = [
    "DEFAULT_BLOCK_ROWS",
    "EXTENSIONS",
    "ExportReader",
    "ExportRow",
    "RowConverter",
    "RowRejected",
    "arrow_schema",
    "open_export",
    "open_writer",
    "output_path",
    "parse_rfc3339",
    "rejects_path",
    "transform_file",
]
