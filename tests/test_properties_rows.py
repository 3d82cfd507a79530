"""Bad input, by property: any export row either loads faithfully or is quarantined with a reason.

Rows are generated with any JSON value in any catalog field and custom-variable key, huge strings,
NUL characters, lone surrogates, invalid UTF-8 bytes in the raw line, integers past int64, deep
nesting and duplicate keys, written as NDJSON and as one JSON array. The reference transform and
the columnar fast path must give identical output; the loaded rows must equal an independent
expectation (tests/e2e_support.expected_row); rows + rejected must equal rows in.
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import ijson
import orjson
import pyarrow.parquet as pq
import pytest
from e2e_support import Rejected, assert_rows_equal, expected_row
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.batch import BatchKey, StagedBatch, SyncRecord, TransformedBatch
from syncd.errors import TransformError
from syncd.fields import LOADED_AT, export_columns
from syncd.transform import transform_file
from syncd.transform.columnar import NeedsReference, transform, transform_columnar
from warehouses.duckdb import DuckDBWarehouse

KEY = BatchKey(datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 1, 2, tzinfo=timezone.utc))
LOADED = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
COLUMNS = export_columns()
FIELD_NAMES = [c.name for c in COLUMNS if c.name != LOADED_AT.name]
INVALID_UTF8 = b"\xff\xfe\xc3"  # marker "\x01BAD\x01" in a string becomes these raw bytes
BAD_MARKER = "\x01BAD\x01"
# markers the raw line gets huge strings for (past RAW_LIMIT, past ARRAY_LINE_LIMIT)
HUGE = {"\x02HUGE64K\x02": b"h" * 70_000, "\x02HUGE1M\x02": b"h" * 1_100_000}
SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ---- strategies -----------------------------------------------------------------------------

_TEXT = st.one_of(
    st.text(max_size=10),
    st.sampled_from(["", "a\x00b", "\ud800", "x\udfffy", "\U0001f600", BAD_MARKER, "42", "-7"]),
    st.sampled_from(list(HUGE)),
)
_TIMESTAMPS = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(timezone.utc)
).map(lambda d: d.isoformat().replace("+00:00", "Z"))
_NUMBERS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, -(10**40)]),
    st.floats(allow_nan=False, allow_infinity=False),
)
_SCALARS = st.one_of(st.none(), st.booleans(), _NUMBERS, _TEXT, _TIMESTAMPS)
_KEYS = st.one_of(
    st.sampled_from(FIELD_NAMES),
    st.sampled_from(["user_a", "evt_b_real", "page_c", "NewField", "Ünï", "a\x00k", "\ud83d"]),
    st.text(max_size=6),
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


_VALUES = st.one_of(_JSON, st.integers(min_value=50, max_value=300).map(_nested))
# A row is a list of (key, value) pairs, so duplicate keys reach the raw line.
_PAIRS = st.lists(st.tuples(_KEYS, _VALUES), max_size=8)
_ODD_ROWS = st.sampled_from([b"[1,2]", b'"s"', b"42", b"null", b"{", b'{"a":NaN}', b"{}x"])


@st.composite
def _rows(draw: st.DrawFn) -> list[bytes]:
    """Raw row texts; the first is always an object, so the file reads as NDJSON."""
    rows = [_encode(draw(_PAIRS)) for _ in range(draw(st.integers(1, 8)))]
    for _ in range(draw(st.integers(0, 2))):
        rows.insert(draw(st.integers(1, len(rows))), draw(_ODD_ROWS))
    return rows


def _encode(pairs: list[tuple[str, Any]]) -> bytes:
    """An object with the pairs in order (keys may repeat); ASCII escapes keep lone surrogates."""
    members = [
        json.dumps(k, ensure_ascii=True) + ":" + json.dumps(v, ensure_ascii=True) for k, v in pairs
    ]
    text = "{" + ",".join(members) + "}"
    return text.encode()


def _expand(rows: list[bytes]) -> list[bytes]:
    """The raw lines: markers become invalid UTF-8 bytes and huge strings (kept out of the
    drawn values, so a failing example stays short to print)."""
    raws = []
    for row in rows:
        raw = row.replace(_escaped(BAD_MARKER), INVALID_UTF8)
        for marker, huge in HUGE.items():
            raw = raw.replace(_escaped(marker), huge)
        raws.append(raw)
    return raws


def _escaped(marker: str) -> bytes:
    return json.dumps(marker).strip('"').encode()


# ---- the independent expectation ------------------------------------------------------------


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def _finite(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError("out of range")
    return number


def _parse(raw: bytes) -> Any:
    """JSON as the stated rules read it: invalid UTF-8 and raw NUL become U+FFFD."""
    text = raw.decode("utf-8", "replace").replace("\x00", "\ufffd")
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite)


def _expected(raws: list[bytes]) -> tuple[list[dict[str, Any]], int]:
    """(loaded rows, rejected count) for NDJSON rows."""
    loaded, rejected = [], 0
    for raw in raws:
        try:
            value = _parse(raw)
            if not isinstance(value, dict):
                raise Rejected("not an object")
            loaded.append(expected_row(value, COLUMNS, KEY.id, (KEY.start, KEY.end)))
        except (Rejected, ValueError, OverflowError, RecursionError):
            rejected += 1
    return loaded, rejected


# ---- running both transforms ----------------------------------------------------------------


def _outcome(batch: TransformedBatch) -> tuple[Any, ...]:
    table = pq.read_table(batch.path)
    rejects = batch.rejects_path.read_bytes() if batch.rejects_path else b""
    return batch.rows, batch.rejected, table.schema, table.to_pylist(), rejects


def _run_all(tmp: Path, body: bytes, *, fast: bool = True) -> tuple[Any, ...] | None:
    """The outcome, the same from every transform; None when all refuse the file.

    `fast` adds `transform_columnar` on its own (for arrays `transform` takes the reference).
    """
    source = tmp / "export.json.gz"
    source.write_bytes(gzip.compress(body, compresslevel=1))
    outcomes: list[Any] = []
    runs = [("ref", transform_file), ("auto", transform)]
    if fast:
        runs.append(("fast", transform_columnar))
    for name, run in runs:
        try:
            outcomes.append(_outcome(run(KEY, source, tmp / name, COLUMNS, "parquet", LOADED)))
        except NeedsReference:
            continue
        except TransformError:
            outcomes.append(None)
    assert all(o == outcomes[0] for o in outcomes)
    return outcomes[0]  # type: ignore[no-any-return]


def _reasons(outcome: tuple[Any, ...]) -> list[str]:
    return [orjson.loads(line)["reason"] for line in outcome[4].splitlines()]


def _check_rows(outcome: tuple[Any, ...], expected: list[dict[str, Any]], rejected: int) -> None:
    rows, count, _, table_rows, _ = outcome
    assert (rows, count) == (len(expected), rejected)
    assert all(reason for reason in _reasons(outcome))
    if expected:
        assert_rows_equal(table_rows, expected)


@SETTINGS
@given(rows=_rows())
def test_any_ndjson_rows_load_faithfully_or_are_quarantined(
    tmp_path_factory: pytest.TempPathFactory, rows: list[bytes]
) -> None:
    raws = _expand(rows)
    outcome = _run_all(tmp_path_factory.mktemp("ndjson"), b"\n".join(raws) + b"\n")
    assert outcome is not None, "an NDJSON file is never refused as a whole"
    _check_rows(outcome, *_expected(raws))


@SETTINGS
@given(rows=_rows())
def test_any_json_array_loads_faithfully_or_fails_as_a_whole(
    tmp_path_factory: pytest.TempPathFactory, rows: list[bytes]
) -> None:
    raws = _expand(rows)
    body = b"[" + b",\n".join(raws) + b"]\n"
    outcome = _run_all(tmp_path_factory.mktemp("array"), body, fast=False)
    try:
        elements = _parse(body)
    except (ValueError, RecursionError):
        assert outcome is None, "a broken array must fail the file, not load part of it"
        return
    assert outcome is not None
    _check_rows(outcome, *_expected([json.dumps(e).encode() for e in elements]))


_STREAMED_PREFIX = b'[{"evt_pad":"' + b"h" * 1_100_000 + b'"},\n'


def test_streamed_array_with_a_lone_surrogate_loads(tmp_path: Path) -> None:
    outcome = _run_all(tmp_path, _STREAMED_PREFIX + b'{"evt_s":"x\\udfffy"}]', fast=False)
    assert outcome is not None and outcome[0] == 2


def test_streamed_array_replaces_a_lone_surrogate_key_with_ufffd(tmp_path: Path) -> None:
    outcome = _run_all(tmp_path, _STREAMED_PREFIX + b'{"\\ud83d":1}]', fast=False)
    assert outcome is not None and orjson.loads(outcome[3][1]["CustomVars"]) == {"\ufffd": 1}


#: ijson's read size: the streaming parser sees the file in reads of this many bytes.
_READ = 64 * 1024


def _escape_across_a_read(escape: bytes, split: int) -> bytes:
    """A streamed array whose second element's string holds `escape` (JSON text), its first
    `split` bytes ending one of the parser's reads, then more elements."""
    head = _STREAMED_PREFIX + b'{"evt_s":"'
    pad = (len(head) // _READ + 1) * _READ - split - len(head)
    return head + b"p" * pad + escape + b'z"},\n{"evt_t":"\\ud83d\\ude00"}]'


@pytest.mark.parametrize("split", [1, 5, 6, 7, 11])
@pytest.mark.parametrize("escape", [b"\\udfff", b"\\ud83d", b"\\ud83d\\ude00", b"\\u00e9\\udc00"])
def test_streamed_array_with_a_surrogate_escape_across_a_read_loads_as_elsewhere(
    tmp_path: Path, escape: bytes, split: int
) -> None:
    body = _escape_across_a_read(escape, split)
    outcome = _run_all(tmp_path, body, fast=False)
    assert outcome is not None
    _check_rows(outcome, *_expected([json.dumps(e).encode() for e in _parse(body)]))


def test_streamed_array_with_surrogate_pairs_only_stays_on_the_fast_parser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backends: list[str] = []
    original = ijson.get_backend

    def get_backend(name: str) -> Any:
        backends.append(name)
        return original(name)

    monkeypatch.setattr(ijson, "get_backend", get_backend)
    outcome = _run_all(tmp_path, _escape_across_a_read(b"\\ud83d\\ude00", 6), fast=False)
    assert (outcome is not None, backends) == (True, [])


def test_deeply_nested_row_is_quarantined_and_its_neighbours_load(tmp_path: Path) -> None:
    raws = [b'{"IndvId":1}', b'{"evt_deep":' + b"[" * 5000 + b"]" * 5000 + b"}", b'{"IndvId":2}']
    outcome = _run_all(tmp_path, b"\n".join(raws))
    assert outcome is not None and (outcome[0], outcome[1]) == (2, 1)


@pytest.mark.parametrize("depth", [990, 1000, 1020])
def test_a_custom_var_nested_as_deep_as_orjson_parses_is_quarantined(
    tmp_path: Path, depth: int
) -> None:
    # orjson reads up to 1024 levels; writing CustomVars back recursed past Python's limit
    deep = b'{"user_deep":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"
    raws = [b'{"IndvId":1}', deep, b'{"IndvId":2}']
    outcome = _run_all(tmp_path, b"\n".join(raws))
    assert outcome is not None and (outcome[0], outcome[1]) == (2, 1)
    assert _reasons(outcome) == ["JSON nested too deeply (more than 1000 levels)"]


# ---- into DuckDB ----------------------------------------------------------------------------


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=_rows())
def test_committed_rows_and_rejects_reconcile_with_rows_in(
    tmp_path_factory: pytest.TempPathFactory, rows: list[bytes]
) -> None:
    raws = _expand(rows)
    tmp = tmp_path_factory.mktemp("duckdb")
    source = tmp / "export.json"
    source.write_bytes(b"\n".join(raws))
    batch = transform(KEY, source, tmp / "staged", COLUMNS, "parquet", LOADED)
    record = SyncRecord(
        batch_id=KEY.id,
        source="segment",
        start=KEY.start,
        end=KEY.end,
        committed_at=LOADED,
        rows_loaded=batch.rows,
        rows_rejected=batch.rejected,
    )
    rejects = str(batch.rejects_path) if batch.rejects_path else None
    with DuckDBWarehouse(tmp / "w.duckdb") as warehouse:
        warehouse.ensure_tables(COLUMNS)
        warehouse.commit_batch(StagedBatch(batch, str(batch.path), rejects), record)
    con = duckdb.connect(str(tmp / "w.duckdb"), read_only=True)
    try:
        counts = con.execute(
            "SELECT (SELECT count(*) FROM fsexport), (SELECT count(*) FROM fsrejects"
            " WHERE reason <> ''), (SELECT RowsLoaded + RowsRejected FROM fssync),"
            " (SELECT count(*) FROM fsexport WHERE json_valid(CustomVars))"
        ).fetchone()
    finally:
        con.close()
    assert counts is not None
    loaded, quarantined, in_sync, valid_custom = counts
    assert (loaded + quarantined, in_sync, valid_custom) == (len(raws), len(raws), loaded)


# ---- regressions found by the properties ----------------------------------------------------


def test_integer_past_int64_inside_a_custom_list_stays_exact(tmp_path: Path) -> None:
    outcome = _run_all(tmp_path, b'{"user_a":[-9223372036854775809]}\n')
    assert (
        outcome is not None and outcome[3][0]["CustomVars"] == '{"user_a":[-9223372036854775809]}'
    )


def test_integer_just_below_int64_is_rejected_not_rounded_into_range(tmp_path: Path) -> None:
    outcome = _run_all(tmp_path, b'{"IndvId":-9223372036854775809}\n')
    assert outcome is not None and (outcome[0], outcome[1]) == (0, 1)


def test_custom_var_nested_past_orjson_depth_loads_on_the_fast_path(tmp_path: Path) -> None:
    row = b'{"user_deep":' + b"[" * 300 + b"1" + b"]" * 300 + b"}\n"
    outcome = _run_all(tmp_path, b'{"IndvId":1}\n' + row)
    assert outcome is not None and (outcome[0], outcome[1]) == (2, 0)
