"""The columnar fast transform writes exactly what the reference `transform_file` writes.

Every test transforms the same download both ways and compares the staged tables (schema and
rows) and the quarantine files line for line.
"""

from __future__ import annotations

import gzip
import itertools
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.batch import BatchKey, StagedFormat, TransformedBatch
from syncd.fields import MOBILE_FIELDS, Column, dropped_fields, export_columns
from syncd.simulator.bodies import FORMAT_JSON, FORMAT_NDJSON, ExportSpec, iter_json_rows
from syncd.simulator.events import HOUR_MS, EventGenerator, to_ms
from syncd.transform import columnar, transform_file
from syncd.transform.columnar import NeedsReference, transform, transform_columnar
from syncd.transform.rules import NO_RULES, OutputRules
from syncd.transform.writers import BackgroundWriter

SAMPLES = Path("/work/shared/samples")
KEY = BatchKey(datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 1, 2, tzinfo=timezone.utc))
#: FullStory's samples hold events of 2020-08-27 to 2020-08-30.
SAMPLE_KEY = BatchKey(
    datetime(2020, 8, 27, tzinfo=timezone.utc), datetime(2020, 8, 31, tzinfo=timezone.utc)
)
LOADED_AT = datetime(2026, 11, 1, 12, 30, 15, 250000, tzinfo=timezone.utc)
SEGMENT = export_columns()
START_MS = to_ms(KEY.start)


# ---- helpers -------------------------------------------------------------------------------


def outcome(batch: TransformedBatch) -> tuple[Any, ...]:
    """What a transform produced, in comparable form."""
    if batch.format == "parquet":
        table = pq.read_table(batch.path)
        content: Any = (table.schema, table.to_pylist())
    else:
        content = gzip.decompress(batch.path.read_bytes())
    rejects = batch.rejects_path.read_bytes() if batch.rejects_path else b""
    return batch.rows, batch.rejected, content, rejects


def both(
    tmp_path: Path,
    source: Path,
    columns: tuple[Column, ...] = SEGMENT,
    fmt: StagedFormat = "parquet",
    *,
    fast_only: bool = True,
    key: BatchKey = KEY,
    rules: OutputRules = NO_RULES,
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(reference outcome, fast outcome); with `fast_only` the fast path may not hand over."""
    fast = transform_columnar if fast_only else transform
    reference = transform_file(key, source, tmp_path / "ref", columns, fmt, LOADED_AT, rules=rules)
    columnar = fast(key, source, tmp_path / "fast", columns, fmt, LOADED_AT, rules=rules)
    return outcome(reference), outcome(columnar)


def simulated(
    path: Path, *, events: int, array: bool, bad_row_rate: float = 0.0, mobile: bool = False
) -> Path:
    """A gzip export body of the simulator's events (a FORMAT_JSON array or NDJSON)."""
    generator = EventGenerator(
        seed=11, events_per_hour=events, bad_row_rate=bad_row_rate, include_mobile=mobile
    )
    spec = ExportSpec(START_MS, START_MS + HOUR_MS, FORMAT_JSON if array else FORMAT_NDJSON)
    rows = [raw for _, raw, _ in iter_json_rows(generator, spec)]
    body = (b"[" + b",\n".join(rows) + b"]") if array else b"".join(r + b"\n" for r in rows)
    path.write_bytes(gzip.compress(body, compresslevel=1))
    return path


# ---- FullStory's samples -------------------------------------------------------------------


def test_segment_sample_matches_reference(tmp_path: Path) -> None:
    reference, fast = both(tmp_path, SAMPLES / "segment-export-events.json", key=SAMPLE_KEY)
    assert fast == reference


def test_legacy_sample_matches_reference(tmp_path: Path) -> None:
    legacy = export_columns("legacy")
    reference, fast = both(tmp_path, SAMPLES / "legacy-bundle-events.json", legacy, key=SAMPLE_KEY)
    assert fast == reference


def test_legacy_sample_with_segment_columns_folds_renamed_fields(tmp_path: Path) -> None:
    reference, fast = both(tmp_path, SAMPLES / "legacy-bundle-events.json", key=SAMPLE_KEY)
    assert fast == reference


def test_csv_output_matches_reference(tmp_path: Path) -> None:
    reference, fast = both(
        tmp_path, SAMPLES / "segment-export-events.json", fmt="csv", key=SAMPLE_KEY
    )
    assert fast == reference


def test_several_sources_count_positions_across_files(tmp_path: Path) -> None:
    first = simulated(tmp_path / "a.json.gz", events=300, array=True, bad_row_rate=0.05)
    second = simulated(tmp_path / "b.json.gz", events=200, array=True, bad_row_rate=0.05)
    reference = transform_file(
        KEY, [first, second], tmp_path / "ref", SEGMENT, "parquet", LOADED_AT
    )
    fast = transform_columnar(
        KEY, [first, second], tmp_path / "fast", SEGMENT, "parquet", LOADED_AT
    )
    assert outcome(fast) == outcome(reference)


def test_rows_outside_a_segment_window_are_quarantined_like_the_reference(
    tmp_path: Path,
) -> None:
    rows = [
        b'{"IndvId":1,"EventStart":"2023-12-31T23:59:59.999Z"}',
        b'{"IndvId":2,"EventStart":"2024-01-01T00:00:00.000Z"}',
        b'{"IndvId":3,"EventStart":"2024-01-01T23:59:59.999Z"}',
        b'{"IndvId":4,"EventStart":"2024-01-02T00:00:00.000Z"}',
        b'{"IndvId":5}',
    ]
    source = tmp_path / "export.json"
    source.write_bytes(b"\n".join(rows) + b"\n")
    reference, fast = both(tmp_path, source)
    assert fast == reference
    assert [r["IndvId"] for r in fast[2][1]] == [2, 3, 5]
    assert fast[3].count(b"outside the batch window") == 2


def test_legacy_bundles_keep_rows_of_any_event_start(tmp_path: Path) -> None:
    """A bundle holds what was processed in its time, whatever the EventStart."""
    key = BatchKey(KEY.start, KEY.end, source="legacy", bundle_ids=(1,))
    source = tmp_path / "bundle.json"
    source.write_bytes(b'[{"IndvId":1,"EventStart":"2023-12-31T23:59:59.999Z"}]')
    reference, fast = both(tmp_path, source, export_columns("legacy"), key=key)
    assert (fast, fast[:2]) == (reference, (1, 0))


# ---- simulated exports ---------------------------------------------------------------------


@pytest.mark.parametrize("array", [True, False], ids=["json-array", "ndjson"])
@pytest.mark.parametrize("mobile", [False, True], ids=["web", "mobile"])
def test_simulated_export_matches_reference(tmp_path: Path, array: bool, mobile: bool) -> None:
    source = simulated(tmp_path / "export.gz", events=3000, array=array, mobile=mobile)
    reference, fast = both(tmp_path, source, export_columns(include_mobile=mobile))
    assert fast == reference


def test_mobile_fields_fold_into_custom_vars_without_their_columns(tmp_path: Path) -> None:
    source = simulated(tmp_path / "export.gz", events=2000, array=False, mobile=True)
    reference, fast = both(tmp_path, source, SEGMENT)
    assert fast == reference


@pytest.mark.parametrize("with_columns", [False, True], ids=["no-app-columns", "app-columns"])
@pytest.mark.parametrize("array", [True, False], ids=["json-array", "ndjson"])
def test_dropped_mobile_fields_are_left_out_like_the_reference(
    tmp_path: Path, array: bool, with_columns: bool
) -> None:
    """IncludeMobileAppsFields = false on an export of every field: the App* keys are in no
    column (not even one the table has) and not in CustomVars, on both paths; rows with
    other nulls about (checked key by key) too."""
    source = simulated(tmp_path / "export.gz", events=2000, array=array, mobile=True)
    columns = export_columns(include_mobile=with_columns)
    rules = OutputRules(dropped_fields=dropped_fields(include_mobile=False))
    reference, fast = both(tmp_path, source, columns, rules=rules)
    assert fast == reference
    rows = fast[2][1]
    mobile = {c.name for c in MOBILE_FIELDS}
    assert rows and all(not mobile & json.loads(r["CustomVars"]).keys() for r in rows)
    assert all(r.get(name) is None for r in rows for name in mobile)
    kept = both(tmp_path / "kept", source, columns)[1][2][1]  # without the rule they arrive
    assert any(mobile & {k for k, v in r.items() if v is not None} for r in kept) or any(
        mobile & json.loads(r["CustomVars"]).keys() for r in kept
    )


def test_bad_rows_in_an_array_are_quarantined_like_the_reference(tmp_path: Path) -> None:
    source = simulated(tmp_path / "export.gz", events=3000, array=True, bad_row_rate=0.05)
    reference, fast = both(tmp_path, source)
    assert fast == reference and fast[1] > 0


def test_malformed_ndjson_rows_hand_the_file_to_the_reference(tmp_path: Path) -> None:
    source = simulated(tmp_path / "export.gz", events=2000, array=False, bad_row_rate=0.05)
    reference, fast = both(tmp_path, source, fast_only=False)
    assert fast == reference and fast[1] > 0


def test_fast_path_refuses_a_file_with_a_malformed_row(tmp_path: Path) -> None:
    source = tmp_path / "broken.ndjson"
    source.write_bytes(b'{"IndvId":1}\n{"IndvId":\n')
    with pytest.raises(NeedsReference):
        transform_columnar(KEY, source, tmp_path / "fast", SEGMENT, "parquet", LOADED_AT)


def test_array_in_another_layout_goes_to_the_reference(tmp_path: Path) -> None:
    rows = [{"IndvId": i, "EventType": "click", "user_x": i} for i in range(50)]
    source = tmp_path / "pretty.json"
    source.write_text(json.dumps(rows, indent=2))
    reference, fast = both(tmp_path, source, fast_only=False)
    assert fast == reference


def test_array_missing_a_separator_fails_like_the_reference(tmp_path: Path) -> None:
    source = tmp_path / "bad.json"
    source.write_bytes(b'[{"IndvId":1}\n{"IndvId":2}]\n')
    with pytest.raises(NeedsReference):
        transform_columnar(KEY, source, tmp_path / "fast", SEGMENT, "parquet", LOADED_AT)


# ---- the lines fed to DuckDB ---------------------------------------------------------------


@pytest.mark.parametrize("array", [False, True], ids=["ndjson", "json-array"])
def test_lines_fed_in_many_batches_match_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, array: bool
) -> None:
    # batches of a few rows each: rows cut between batches, rejects' positions across them
    monkeypatch.setattr(columnar, "_LINE_BATCH_BYTES", 4096)
    source = simulated(
        tmp_path / "export.gz", events=3000, array=array, bad_row_rate=0.05 if array else 0.0
    )
    reference, fast = both(tmp_path, source)
    assert fast == reference and fast[0] > 2000
    if array:
        assert fast[1] > 0


@pytest.mark.parametrize("array", [False, True], ids=["ndjson", "json-array"])
def test_every_gzip_member_is_read_like_the_reference(tmp_path: Path, array: bool) -> None:
    """A body of several gzip members (an empty one first, then cut mid-row, zero padding
    after the last): the download's check accepts it, so the fast path must read every
    member, not only the first one that zlib stops after, and sniff past an empty one."""
    one = simulated(tmp_path / "one.gz", events=3000, array=array)
    plain = gzip.decompress(one.read_bytes())
    cuts = [0, len(plain) // 3 + 17, 2 * len(plain) // 3 + 5, len(plain)]
    source = tmp_path / "members.gz"
    members = [gzip.compress(plain[a:b], compresslevel=1) for a, b in itertools.pairwise(cuts)]
    source.write_bytes(gzip.compress(b"") + b"".join(members) + b"\0" * 512)
    reference, fast = both(tmp_path, source)
    whole = transform_columnar(KEY, one, tmp_path / "one", SEGMENT, "parquet", LOADED_AT)
    assert fast == reference and fast[0] == whole.rows > 2000


def test_bom_crlf_and_blank_lines_match_reference(tmp_path: Path) -> None:
    rows = [b'{"IndvId":%d,"EventType":"click","user_k":"v%d"}' % (i, i) for i in range(200)]
    rows[7] = b'{"IndvId":7,"EventStart":"not a time"}'  # flagged, then rejected
    rows[150] = b'{"IndvId":150,"UserId":"abc"}'  # the same, its position after blanks
    body = b"\xef\xbb\xbf \r\n" + b"\r\n".join(rows[:100]) + b"\r\n \t\r\n\r\n\n"
    body += b"\n".join(rows[100:])  # the last row without its newline
    source = tmp_path / "crlf.ndjson"
    source.write_bytes(body)
    reference, fast = both(tmp_path, source)
    assert fast == reference and (fast[0], fast[1]) == (198, 2)


def test_a_row_that_is_not_utf8_hands_the_file_to_the_reference(tmp_path: Path) -> None:
    source = tmp_path / "latin1.ndjson"
    source.write_bytes(b'{"IndvId":1}\n{"EventType":"caf\xe9"}\n')
    with pytest.raises(NeedsReference, match="UTF-8"):
        transform_columnar(KEY, source, tmp_path / "fast", SEGMENT, "parquet", LOADED_AT)
    reference, fast = both(tmp_path, source, fast_only=False)
    assert fast == reference and fast[0] == 2


@pytest.mark.parametrize("array", [False, True], ids=["ndjson", "json-array"])
def test_a_row_too_long_for_the_fast_path_hands_the_file_to_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, array: bool
) -> None:
    monkeypatch.setattr(columnar, "MAX_FAST_ROW_BYTES", 1000)
    rows = [b'{"IndvId":1}', b'{"EventType":"' + b"x" * 2000 + b'"}', b'{"IndvId":3}']
    body = (b"[" + b",\n".join(rows) + b"]\n") if array else b"\n".join(rows) + b"\n"
    source = tmp_path / "long.json"
    source.write_bytes(body)
    with pytest.raises(NeedsReference, match="longer than 1000 bytes"):
        transform_columnar(KEY, source, tmp_path / "fast", SEGMENT, "parquet", LOADED_AT)
    reference, fast = both(tmp_path, source, fast_only=False)
    assert fast == reference and fast[0] == 3


# ---- crafted edge cases --------------------------------------------------------------------

EDGE_ROWS: list[bytes] = [
    b'{"IndvId":"123","UserId":2.0,"PageDuration":-0,"EventStart":"2024-01-01T00:00:00.5Z"}',
    b'{"IndvId":1,"IndvId":2,"EventType":"dup"}',
    b'{"IndvId":1,"user_a":1,"user_a":2}',
    b'{"PageName":null,"user_n":null,"EventType":""}',
    b'{"EventType":"a\\u0000b","evt_s":"\\u0000"}',
    b'{"EventType":12,"PageIp":1.5,"PageUrl":true,"PageName":{"a":[1,2]},"PageDevice":[]}',
    b'{"EventStart":"2024-02-30T00:00:00.000Z","SessionStart":"2024-01-01T24:00:00.000Z"}',
    b'{"EventStart":"0000-01-01T00:00:00.000Z","PageStart":"2024-01-01t00:00:00.000+01:00"}',
    b'{"EventCumulativeLayoutShift":"0.25","PageDuration":9223372036854775808}',
    b'{"EventCumulativeLayoutShift":1e400}',
    b'{"evt_big":100000000000000000000000,"evt_f":1e21,"evt_small":1e-7,"evt_g":0.1}',
    b'{"evt_esc":"tab\\there \\u00e9 \\/ \\"q\\"","EventTargetText":"line\\nbreak \\u2028"}',
    b'{"EventType":"\\ud83d\\ude00","evt_u":"\\ud83d\\ude00"}',
    b'{"CustomVars":"x","SyncdBatchId":"y","EventNewThing":"\xe6\x96\xb0"}',
    b'{"UserId":18446744073709551615,"evt_u64":18446744073709551615}',
    b"[1,2]",
    b'"just a string"',
    b'{"evt_nan":NaN}',
    b"{}",
    b'  {"IndvId":5}  ',
    b'{"IndvId": 6, "user_w" : "spaced"}',
    b'{"EventStart":"2024-01-01T23:59:59.999Z","ReqStatus":200,"ReqUrl":"https://x/?a=1&b=2"}',
]


@pytest.mark.parametrize("array", [False, True], ids=["ndjson", "json-array"])
def test_edge_rows_match_reference(tmp_path: Path, array: bool) -> None:
    # an array holding NaN or 1e400 is not JSON: the reference fails the file (tested below)
    rows = [r for r in EDGE_ROWS if not array or (b"NaN" not in r and b"1e400" not in r)]
    body = (b"[" + b",\n".join(rows) + b"]\n") if array else b"\n".join(rows) + b"\n\n"
    source = tmp_path / "edge.json"
    source.write_bytes(body)
    reference, fast = both(tmp_path, source)
    assert fast == reference


#: Rows with strings and CustomVars around a small warehouse's limits (10 and 60 bytes).
LONG_ROWS: list[bytes] = [
    b'{"IndvId":1,"EventType":"0123456789","PageUrl":"0123456789A"}',
    b'{"IndvId":2,"EventType":"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9","PageName":"abcdefghi\\u00e9"}',
    b'{"IndvId":3,"PageUrl":"\\ud83d\\ude00\\ud83d\\ude00\\ud83d\\ude00","EventTargetText":12345678901}',
    b'{"IndvId":4,"user_a_str":"' + b"x" * 40 + b'"}',
    b'{"IndvId":5,"user_a_str":"' + b"x" * 60 + b'"}',
    b'{"IndvId":6,"EventType":"' + "é".encode() * 7 + b'","evt_n_int":1}',
]
LIMITS = OutputRules(max_string_bytes=10, max_json_bytes=60, csv_null="\x00")


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("array", [False, True], ids=["ndjson", "json-array"])
def test_strings_over_the_warehouses_limit_are_cut_like_the_reference(
    tmp_path: Path, array: bool, fmt: StagedFormat
) -> None:
    rows = LONG_ROWS * 2
    body = (b"[" + b",\n".join(rows) + b"]\n") if array else b"\n".join(rows) + b"\n"
    source = tmp_path / "long.json"
    source.write_bytes(body)
    reference, fast = both(tmp_path, source, fmt=fmt, rules=LIMITS)
    assert fast == reference


def test_the_reference_cuts_strings_at_a_character_and_quarantines_long_custom_vars(
    tmp_path: Path,
) -> None:
    source = tmp_path / "long.json"
    source.write_bytes(b"\n".join(LONG_ROWS) + b"\n")
    batch = transform_file(KEY, source, tmp_path, SEGMENT, "parquet", LOADED_AT, rules=LIMITS)
    table = pq.read_table(batch.path).to_pylist()
    got = {r["IndvId"]: r for r in table}
    assert got[1]["EventType"] == "0123456789" and got[1]["PageUrl"] == "0123456789"
    assert got[2]["EventType"] == "ééééé" and got[2]["PageName"] == "abcdefghi"
    assert got[3]["PageUrl"] == "😀😀" and got[3]["EventTargetText"] == "1234567890"
    assert got[4]["CustomVars"] == '{"user_a_str":"' + "x" * 40 + '"}'  # 57 bytes
    assert got[6]["EventType"] == "ééééé"
    assert all(r["SyncdBatchId"] == KEY.id for r in table)  # 50 bytes, never cut
    assert 5 not in got and batch.rejected == 1
    assert batch.rejects_path is not None
    (reject,) = [orjson.loads(line) for line in batch.rejects_path.read_bytes().splitlines()]
    assert reject["position"] == 4
    assert reject["reason"] == (
        "CustomVars: its JSON text is 77 bytes, more than the 60 the warehouse's column "
        "holds (cut, it would not be JSON)"
    )


_SLOT_NAMES = [c.name for c in SEGMENT[:-3]]
_KEYS = st.sampled_from(
    [*_SLOT_NAMES, "user_a_str", "evt_b_real", "page_c", "NewField", "CustomVars", "Ünï"]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(
        ["2024-01-01T00:00:00.000Z", "2024-03-01T12:30:45.123Z", "2024-01-01 00:00:00Z", "42"]
    ),
)
_VALUES = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3), st.dictionaries(_KEYS, _SCALARS))
_ROWS = st.lists(st.dictionaries(_KEYS, _VALUES, max_size=8), min_size=1, max_size=40)


def _dumps(row: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(row)
    except TypeError:  # integers beyond 64 bits
        return json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=_ROWS, array=st.booleans())
def test_generated_rows_match_reference(
    tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]], array: bool
) -> None:
    tmp_path = tmp_path_factory.mktemp("generated")
    lines = [_dumps(r) for r in rows]
    body = (b"[" + b",\n".join(lines) + b"]") if array else b"\n".join(lines)
    source = tmp_path / "rows.json"
    source.write_bytes(body)
    reference, fast = both(tmp_path, source)
    assert fast == reference


# ---- routing and the background writer -----------------------------------------------------


def test_small_files_take_the_reference_path_and_large_ones_the_fast_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    real = columnar.transform_columnar

    def counted(*args: Any, **kwargs: Any) -> TransformedBatch:
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(columnar, "transform_columnar", counted)
    source = simulated(tmp_path / "export.gz", events=200, array=False)
    assert source.stat().st_size < columnar.FAST_PATH_MIN_BYTES
    small = transform(KEY, source, tmp_path / "small", SEGMENT, "parquet", LOADED_AT)
    monkeypatch.setattr(columnar, "FAST_PATH_MIN_BYTES", 0)
    large = transform(KEY, source, tmp_path / "large", SEGMENT, "parquet", LOADED_AT)
    assert (calls, outcome(large)) == ([tmp_path / "large"], outcome(small))


class _Recording:
    """A table writer that keeps what it was given, failing on the write numbered `fail_at`."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.tables: list[pa.Table] = []
        self.fail_at = fail_at
        self.ended = ""

    def write(self, table: pa.Table) -> None:
        if len(self.tables) + 1 == self.fail_at:
            raise OSError(28, "No space left on device")
        self.tables.append(table)

    def close(self) -> None:
        self.ended = "closed"

    def abort(self) -> None:
        self.ended = "aborted"


def _table(n: int) -> pa.Table:
    return pa.table({"n": list(range(n))})


def test_background_writer_writes_every_table_in_order() -> None:
    inner = _Recording()
    writer = BackgroundWriter(inner, depth=1)
    for n in range(1, 6):
        writer.write(_table(n))
    writer.close()
    assert ([t.num_rows for t in inner.tables], inner.ended) == ([1, 2, 3, 4, 5], "closed")


def test_background_writer_raises_the_inner_failure_and_never_closes_short() -> None:
    inner = _Recording(fail_at=2)
    writer = BackgroundWriter(inner, depth=1)
    with pytest.raises(OSError, match="No space left"):
        for n in range(1, 50):
            writer.write(_table(n))
        writer.close()
    writer.abort()
    assert ([t.num_rows for t in inner.tables], inner.ended) == ([1], "aborted")
