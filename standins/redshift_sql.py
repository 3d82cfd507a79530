"""What the Redshift stand-in translates, in one table: Redshift SQL -> PostgreSQL SQL.

`TRANSLATIONS` lists every rewrite the proxy applies to a statement, in order, with why. A
statement passes through `translate()` (the case-folding rule only while the session's
enable_case_sensitive_identifier is off); `parse_copy()` recognises `COPY ... FROM 's3://...'`,
which the proxy serves itself (see `standins.redshift_proxy`), and `parse_case_setting()` the
SET/RESET/SHOW of that session parameter, which PostgreSQL does not know. Nothing else is
rewritten: SQL that Redshift and PostgreSQL share passes through unchanged, and Redshift-only
SQL that is not in this table fails on PostgreSQL, as it should fail a test.

String literals ('...') are never changed by any rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

#: Where the proxy keeps Redshift's system log tables (written outside the client's transaction).
LOG_SCHEMA = "syncd_proxy"


@dataclass(frozen=True)
class Rule:
    name: str
    why: str
    apply: Callable[[str], str]
    #: Applies only while the session folds identifiers (enable_case_sensitive_identifier off).
    case_folding: bool = False
    #: Applied once to the whole statement (literals included) after the other rules.
    whole: bool = False


def _sub(pattern: str, replacement: str) -> Callable[[str], str]:
    compiled = re.compile(pattern, re.IGNORECASE | re.DOTALL)
    return lambda text: compiled.sub(replacement, text)


def _fold_quoted_identifiers(text: str) -> str:
    return re.sub(r'"((?:[^"]|"")*)"', lambda m: f'"{m.group(1).lower()}"', text)


_PAREN_LIST = r"\s*\([^()]*\)"
_CONSTRAINT_NAME = r'(?:CONSTRAINT\s+(?:"(?:[^"]|"")*"|\w+)\s+)?'
_TABLE_KEY = re.compile(
    r",\s*" + _CONSTRAINT_NAME + r"(?:PRIMARY\s+KEY|UNIQUE)" + _PAREN_LIST, re.IGNORECASE
)
_COLUMN_KEY = re.compile(r"\s+" + _CONSTRAINT_NAME + r"(?:PRIMARY\s+KEY|UNIQUE)\b", re.IGNORECASE)

TRANSLATIONS: tuple[Rule, ...] = (
    Rule(
        "fold quoted identifiers",
        "Redshift folds identifiers to lower case even when quoted while the session's "
        "enable_case_sensitive_identifier is off (the default; a parameter group or SET can "
        "turn it on, and then quoted case is kept, as PostgreSQL always keeps it)",
        _fold_quoted_identifiers,
        case_folding=True,
    ),
    Rule(
        "drop ENCODE",
        "column compression encodings do not exist in PostgreSQL",
        _sub(r"\s+ENCODE\s+\w+", ""),
    ),
    Rule(
        "drop DISTSTYLE",
        "data distribution across slices does not exist in PostgreSQL",
        _sub(r"\s+DISTSTYLE\s+(EVEN|KEY|ALL|AUTO)\b", ""),
    ),
    Rule("drop DISTKEY", "as DISTSTYLE", _sub(r"\s+DISTKEY" + _PAREN_LIST, "")),
    Rule(
        "drop SORTKEY",
        "sort keys order Redshift's blocks; PostgreSQL has no equivalent in CREATE TABLE",
        _sub(r"\s+(COMPOUND\s+|INTERLEAVED\s+)?SORTKEY" + _PAREN_LIST, ""),
    ),
    Rule(
        "drop PRIMARY KEY / UNIQUE",
        "Redshift's uniqueness and primary key constraints are informational only, not "
        "enforced (Table constraints, Amazon Redshift Database Developer Guide): PostgreSQL "
        "would enforce them and hide a duplicate that Redshift lets in. Table constraints "
        "(`, PRIMARY KEY (a)`) and column constraints (`a INT PRIMARY KEY`) of CREATE TABLE",
        lambda text: _COLUMN_KEY.sub("", _TABLE_KEY.sub("", text)),
    ),
    Rule(
        "rows of an unordered SELECT in no particular order",
        "Redshift returns the rows of a query without ORDER BY in no predictable order, and "
        "the same query may order them differently each time (ORDER BY clause, usage notes); "
        "PostgreSQL's heap order is stable enough to hide code that depends on it. A plain "
        "SELECT ... FROM without ORDER BY, GROUP BY, LIMIT, DISTINCT, set operations, "
        "aggregates or FOR UPDATE/SHARE gets ORDER BY random()",
        lambda text: _shuffle_unordered(text),
        whole=True,
    ),
    Rule(
        "VARCHAR(MAX)",
        "Redshift's longest VARCHAR is 65535 bytes",
        _sub(r"\bVARCHAR\s*\(\s*MAX\s*\)", "VARCHAR(65535)"),
    ),
    Rule(
        "SUPER",
        "Redshift's semi-structured type; JSONB is the nearest",
        _sub(r"\bSUPER\b", "JSONB"),
    ),
    Rule(
        "GETDATE() / SYSDATE",
        "Redshift's current UTC timestamp without time zone",
        _sub(r"\bGETDATE\s*\(\s*\)|\bSYSDATE\b", "LOCALTIMESTAMP"),
    ),
    Rule(
        "pg_last_copy_id()",
        "the id of this session's last COPY, kept by the proxy in its log schema",
        _sub(
            r"\bpg_last_copy_id\s*\(\s*\)",
            f"(SELECT COALESCE(MAX(query), -1) FROM {LOG_SCHEMA}.copies "  # noqa: S608
            "WHERE session = pg_backend_pid())",
        ),
    ),
    Rule(
        "pg_last_copy_count()",
        "the rows loaded by this session's last COPY, kept by the proxy",
        _sub(
            r"\bpg_last_copy_count\s*\(\s*\)",
            f"(SELECT COALESCE((SELECT rows FROM {LOG_SCHEMA}.copies "  # noqa: S608
            "WHERE session = pg_backend_pid() ORDER BY query DESC LIMIT 1), 0))",
        ),
    ),
    Rule(
        "JSON_EXTRACT_PATH_TEXT(json_text, key [, ...] [, null_if_invalid])",
        "Redshift's function on JSON held in a VARCHAR (CustomVars, as hauser's tables hold it): "
        "PostgreSQL's namesake takes json, not text; the proxy's functions of the same name in "
        "its log schema parse the text and give NULL for a missing key, as Redshift does, and "
        "for invalid JSON when null_if_invalid is true (one key only in that form)",
        _sub(r"\bJSON_EXTRACT_PATH_TEXT\s*\(", f"{LOG_SCHEMA}.json_extract_path_text("),
    ),
    Rule(
        "stl_load_errors / sys_load_error_detail",
        "Redshift's load-error logs: tables of the proxy's log schema, written outside the "
        "failed transaction as Redshift's system log is",
        _sub(
            r"\b(pg_catalog\.)?(stl_load_errors|sys_load_error_detail)\b",
            rf"{LOG_SCHEMA}.\2",
        ),
    ),
)

#: The log tables the proxy creates in PostgreSQL (column names as in Redshift), and the
#: functions its translations call.
LOG_TABLES = (
    f"CREATE SCHEMA IF NOT EXISTS {LOG_SCHEMA}",
    f"CREATE TABLE IF NOT EXISTS {LOG_SCHEMA}.copies "
    "(query BIGINT, session INTEGER, rows BIGINT, filename TEXT, starttime TIMESTAMP)",
    f"CREATE TABLE IF NOT EXISTS {LOG_SCHEMA}.stl_load_errors (query BIGINT, session INTEGER, "
    "filename CHAR(256), line_number BIGINT, colname CHAR(127), type CHAR(10), "
    "raw_line CHAR(1024), raw_field_value CHAR(1024), err_code INTEGER, err_reason CHAR(100), "
    "starttime TIMESTAMP)",
    f"CREATE OR REPLACE VIEW {LOG_SCHEMA}.sys_load_error_detail AS SELECT query AS query_id, "  # noqa: S608
    "session AS session_id, filename AS file_name, line_number, colname AS column_name, "
    "type AS column_type, raw_line, raw_field_value AS column_value, "
    "err_reason AS error_message, err_code AS error_code, starttime AS start_time "
    f"FROM {LOG_SCHEMA}.stl_load_errors",
    f"CREATE OR REPLACE FUNCTION {LOG_SCHEMA}.json_extract_path_text(doc TEXT, VARIADIC path TEXT[]) "
    "RETURNS TEXT LANGUAGE sql IMMUTABLE AS "
    "$$ SELECT pg_catalog.json_extract_path_text(doc::json, VARIADIC path) $$",
    f"CREATE OR REPLACE FUNCTION {LOG_SCHEMA}.json_extract_path_text("
    "doc TEXT, key TEXT, null_if_invalid BOOLEAN) RETURNS TEXT LANGUAGE plpgsql IMMUTABLE AS "
    "$$ BEGIN RETURN pg_catalog.json_extract_path_text(doc::json, key); "
    "EXCEPTION WHEN invalid_text_representation THEN "
    "IF null_if_invalid THEN RETURN NULL; END IF; RAISE; END $$",
)

_LITERAL = re.compile(r"('(?:[^']|'')*')")


def translate(sql: str, *, case_sensitive: bool = False) -> str:
    """Apply every rule of TRANSLATIONS to the text outside string literals (the case-folding
    rule only when the session is not `case_sensitive`), then the whole-statement rules."""
    rules = [r for r in TRANSLATIONS if not (case_sensitive and r.case_folding)]
    parts = _LITERAL.split(sql)
    for index in range(0, len(parts), 2):  # even parts lie outside literals
        for rule in rules:
            if not rule.whole:
                parts[index] = rule.apply(parts[index])
    text = "".join(parts)
    for rule in rules:
        if rule.whole:
            text = rule.apply(text)
    return text


_PLAIN_SELECT = re.compile(r"^\s*SELECT\b.*\bFROM\b", re.IGNORECASE | re.DOTALL)
_ORDER_DECIDED = re.compile(
    r"\bORDER\s+BY\b|\bGROUP\s+BY\b|\bLIMIT\b|\bOFFSET\b|\bDISTINCT\b|\bUNION\b|"
    r"\bINTERSECT\b|\bEXCEPT\b|\bFOR\s+(?:UPDATE|SHARE)\b|"
    r"\b(?:count|sum|min|max|avg|bool_and|bool_or|string_agg|array_agg|listagg)\s*\(",
    re.IGNORECASE,
)


def _shuffle_unordered(sql: str) -> str:
    masked = _LITERAL.sub("''", sql)
    if not _PLAIN_SELECT.match(masked) or _ORDER_DECIDED.search(masked):
        return sql
    return sql.rstrip().rstrip(";") + " ORDER BY random()"


# --- the session parameter enable_case_sensitive_identifier ---------------------------------

#: Redshift's session parameter that PostgreSQL does not know: the proxy answers it itself.
CASE_PARAMETER = "enable_case_sensitive_identifier"
#: Where the proxy lets PostgreSQL keep the value (a placeholder setting PostgreSQL accepts).
CASE_PLACEHOLDER = f"{LOG_SCHEMA}.{CASE_PARAMETER}"
_CASE_STATEMENT = re.compile(
    rf"^\s*(?:(?P<set>SET)\s+(?:SESSION\s+)?{CASE_PARAMETER}\s*(?:TO|=)\s*'?(?P<value>\w+)'?"
    rf"|(?P<reset>RESET)\s+{CASE_PARAMETER}|(?P<show>SHOW)\s+{CASE_PARAMETER})\s*;?\s*$",
    re.IGNORECASE,
)
_TRUE, _FALSE = frozenset({"true", "on", "1"}), frozenset({"false", "off", "0"})


@dataclass(frozen=True)
class CaseSetting:
    """`SET`/`RESET`/`SHOW enable_case_sensitive_identifier`; `value` is None for RESET/SHOW."""

    verb: str  # "SET", "RESET" or "SHOW"
    value: bool | None = None


def parse_case_setting(sql: str) -> CaseSetting | None:
    """The statement as a case setting, None when it is something else; raises ValueError on a
    value Redshift would refuse."""
    match = _CASE_STATEMENT.match(sql)
    if match is None:
        return None
    if match.group("set"):
        word = match.group("value").lower()
        if word not in _TRUE | _FALSE:
            raise ValueError(f'invalid value for parameter "{CASE_PARAMETER}": "{word}"')
        return CaseSetting("SET", word in _TRUE)
    return CaseSetting("RESET" if match.group("reset") else "SHOW")


def case_setting_sql(setting: CaseSetting, current: bool) -> str:
    """What PostgreSQL runs for a case setting, `current` being the session's value after it:
    SET/RESET keep it in a placeholder setting (the client sees "SET"), SHOW reads it back."""
    word = "on" if current else "off"
    if setting.verb == "SHOW":
        return f"SELECT '{word}' AS {CASE_PARAMETER}"
    return f"SET {CASE_PLACEHOLDER} TO '{word}'"


def refusal_sql(message: str, sqlstate: str = "0A000") -> str:
    """A statement PostgreSQL fails with `message` (the stand-in refusing what it cannot serve)."""
    text = message.replace("'", "''").replace("$", "").replace("%", "%%")
    return f"DO $$BEGIN RAISE EXCEPTION '{text}' USING ERRCODE = '{sqlstate}'; END$$"


# --- COPY FROM S3 ------------------------------------------------------------------------------

_COPY = re.compile(
    r"^\s*COPY\s+(?P<table>(?:\"(?:[^\"]|\"\")+\"|\w+)(?:\.(?:\"(?:[^\"]|\"\")+\"|\w+))?)\s*"
    r"(?:\((?P<columns>[^)]*)\))?\s*FROM\s+'(?P<uri>s3://(?:[^']|'')*)'(?P<options>.*?);?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_OPTION_TOKEN = re.compile(r"\s*(?:'((?:[^']|'')*)'|(\w+))", re.DOTALL)
_FLAGS = frozenset(
    {
        "GZIP",
        "TRUNCATECOLUMNS",
        "EMPTYASNULL",
        "BLANKSASNULL",
        "ACCEPTANYDATE",
        "CSV",
        "FILLRECORD",
        "MANIFEST",
        "EXPLICIT_IDS",
        "IGNOREBLANKLINES",
        "SERIALIZETOJSON",
        "ESCAPE",
        "REMOVEQUOTES",
    }
)
_VALUED = frozenset(
    {
        "IAM_ROLE",
        "CREDENTIALS",
        "ACCESS_KEY_ID",
        "SECRET_ACCESS_KEY",
        "SESSION_TOKEN",
        "REGION",
        "IGNOREHEADER",
        "TIMEFORMAT",
        "DATEFORMAT",
        "MAXERROR",
        "ACCEPTINVCHARS",
        "COMPUPDATE",
        "STATUPDATE",
        "DELIMITER",
        "NULL",  # NULL AS 'null_string'
        "FIXEDWIDTH",
    }
)
#: The only parameters Redshift accepts with FORMAT PARQUET (besides FROM), from "COPY from
#: columnar data formats": every other one (REGION, GZIP, TRUNCATECOLUMNS, ...) is refused.
PARQUET_OPTIONS = frozenset(
    {
        "ACCEPTINVCHARS",
        "FILLRECORD",
        "IAM_ROLE",
        "CREDENTIALS",
        "ACCESS_KEY_ID",
        "SECRET_ACCESS_KEY",
        "SESSION_TOKEN",
        "STATUPDATE",
        "MANIFEST",
        "EXPLICIT_IDS",
        # "Loading semi-structured data": a Parquet column loads into a SUPER column only so
        "SERIALIZETOJSON",
    }
)
#: "Data format parameters": CSV cannot be used with FIXEDWIDTH, REMOVEQUOTES, or ESCAPE.
CSV_REFUSED = frozenset({"FIXEDWIDTH", "REMOVEQUOTES", "ESCAPE"})
_SECRET_OPTIONS = ("CREDENTIALS", "SECRET_ACCESS_KEY", "SESSION_TOKEN", "ACCESS_KEY_ID")


class CopySyntaxError(ValueError):
    """The COPY statement is not one Redshift would accept."""


@dataclass(frozen=True)
class CopyFromS3:
    """A parsed `COPY table (columns) FROM 's3://bucket/prefix' options`."""

    table: str  # as written (quoted, maybe schema-qualified), folded like any identifier
    columns: tuple[str, ...]  # unquoted, folded to lower case; () = all, in table order
    bucket: str
    prefix: str
    format: str  # "CSV" or "PARQUET"
    options: dict[str, str] = field(default_factory=dict)

    @property
    def gzip(self) -> bool:
        return "GZIP" in self.options

    @property
    def ignore_header(self) -> int:
        return int(self.options.get("IGNOREHEADER", "0"))

    @property
    def truncate_columns(self) -> bool:
        return "TRUNCATECOLUMNS" in self.options

    @property
    def null_as(self) -> str:
        """The field text loaded as NULL ("Data conversion parameters", NULL AS): '\\N' unless
        given; '\\0' and '\\000' mean a field holding only NUL."""
        value = self.options.get("NULL", "\\N")
        return "\x00" if value in ("\\0", "\\000") else value

    @property
    def empty_as_null(self) -> bool:
        """EMPTYASNULL (or NULL AS ''): empty CHAR/VARCHAR fields load as NULL, not ''."""
        return "EMPTYASNULL" in self.options or self.null_as == ""

    @property
    def blanks_as_null(self) -> bool:
        return "BLANKSASNULL" in self.options

    @property
    def serialize_to_json(self) -> bool:
        return "SERIALIZETOJSON" in self.options

    @property
    def fill_record(self) -> bool:
        return "FILLRECORD" in self.options

    @property
    def ignore_blank_lines(self) -> bool:
        return "IGNOREBLANKLINES" in self.options

    @property
    def table_parts(self) -> tuple[str | None, str]:
        """(schema or None, table), unquoted and lower case."""
        names = [_unquote(p) for p in _split_qualified(self.table)]
        return (names[0], names[1]) if len(names) == 2 else (None, names[0])

    def to_stdin(self) -> str:
        """The PostgreSQL statement that takes this COPY's rows from the proxy."""
        columns = f" ({', '.join(_quote(c) for c in self.columns)})" if self.columns else ""
        return f"COPY {translate(self.table)}{columns} FROM STDIN WITH (FORMAT csv, HEADER true)"


def parse_copy(sql: str) -> CopyFromS3 | None:
    """The COPY FROM S3 in `sql`, None when `sql` is something else; raises on bad options."""
    match = _COPY.match(sql)
    if match is None:
        return None
    uri = match.group("uri").replace("''", "'")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    options = _parse_options(match.group("options"))
    if not any(k in options for k in ("IAM_ROLE", "CREDENTIALS", "ACCESS_KEY_ID")):
        raise CopySyntaxError("Missing credentials: give IAM_ROLE, CREDENTIALS or access keys")
    fmt = options.pop("FORMAT", "CSV" if "CSV" in options else "TEXT")
    if fmt not in ("CSV", "PARQUET"):
        raise CopySyntaxError(f"the stand-in serves FORMAT CSV and PARQUET, not {fmt}")
    if fmt == "CSV" and options.keys() & CSV_REFUSED:
        raise CopySyntaxError(
            f"CSV cannot be used with {', '.join(sorted(options.keys() & CSV_REFUSED))}"
        )
    refused = sorted(options.keys() - PARQUET_OPTIONS) if fmt == "PARQUET" else []
    if refused:
        raise CopySyntaxError(
            f"{', '.join(refused)} not valid with PARQUET: COPY from columnar data formats "
            f"accepts only {', '.join(sorted(PARQUET_OPTIONS))}"
        )
    columns = tuple(
        _unquote(c.strip()).lower() for c in (match.group("columns") or "").split(",") if c.strip()
    )
    return CopyFromS3(match.group("table"), columns, bucket, prefix, fmt, options)


def redact_copy(sql: str) -> str:
    """`sql` with every credential literal of a COPY replaced by '***' (safe to log)."""
    pattern = re.compile(
        r"\b(" + "|".join(_SECRET_OPTIONS) + r")(\s+(?:AS\s+)?)'(?:[^']|'')*'", re.IGNORECASE
    )
    sql = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}'***'", sql)
    pairs = r"(aws_secret_access_key|aws_access_key_id|token)=[^;'\s]*"
    return re.sub(pairs, lambda m: f"{m.group(1)}=***", sql, flags=re.IGNORECASE)


def _parse_options(text: str) -> dict[str, str]:
    tokens = [(m.group(1), m.group(2)) for m in _OPTION_TOKEN.finditer(text)]
    rest = _OPTION_TOKEN.sub("", text).strip()
    if rest:
        raise CopySyntaxError(f"syntax error at or near {rest[:20]!r}")
    options: dict[str, str] = {}
    index = 0
    while index < len(tokens):
        literal, word = tokens[index]
        if word is None:
            raise CopySyntaxError("syntax error at or near a string literal")
        key = word.upper()
        index += 1
        if key == "FORMAT":
            if index < len(tokens) and (tokens[index][1] or "").upper() == "AS":
                index += 1
            options["FORMAT"] = (tokens[index][1] or "").upper() if index < len(tokens) else ""
            index += 1
        elif key in _FLAGS:
            options[key] = ""
        elif key in _VALUED:
            if index < len(tokens) and (tokens[index][1] or "").upper() == "AS":
                index += 1
            if index >= len(tokens):
                raise CopySyntaxError(f"{key} needs a value")
            value_literal, value_word = tokens[index]
            options[key] = (
                value_literal.replace("''", "'") if value_literal is not None else value_word
            )
            index += 1
        else:
            raise CopySyntaxError(f"syntax error at or near {word!r}")
    return options


def _split_qualified(name: str) -> list[str]:
    return re.findall(r'"(?:[^"]|"")+"|\w+', name)


def _unquote(name: str) -> str:
    if name.startswith('"') and name.endswith('"'):
        return name[1:-1].replace('""', '"').lower()
    return name.lower()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
