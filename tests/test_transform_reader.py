"""The export reader: gzip or plain, NDJSON or any array layout, damage reported, never short."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.errors import TransformError
from syncd.transform import reader as reader_module
from syncd.transform.reader import ExportRow, open_export, parse_exact, row_text

ROWS = [
    {"IndvId": 9007199254740993, "EventType": "click", "PageIp": ""},
    {"IndvId": 2, "evt_total_real": 8.54, "nested": {"a": [1, "x"]}},
    {"IndvId": 3, "EventTargetText": "caf\u00e9 \u2603"},
]
NDJSON = b"".join(
    [
        b'{"IndvId":9007199254740993,"EventType":"click","PageIp":""}\n',
        b'{"IndvId":2,"evt_total_real":8.54,"nested":{"a":[1,"x"]}}\n',
        '{"IndvId":3,"EventTargetText":"caf\u00e9 \u2603"}\n'.encode(),
    ]
)
ONE_PER_LINE = b"[" + NDJSON.replace(b"}\n{", b"},\n{").rstrip(b"\n") + b"]\n"
COMPACT = ONE_PER_LINE.replace(b"\n", b"")
PRETTY = (
    b'[\n  {\n    "IndvId": 9007199254740993,\n    "EventType": "click",\n    "PageIp": ""\n  },\n'
    b'  {\n    "IndvId": 2,\n    "evt_total_real": 8.54,\n    "nested": {"a": [1, "x"]}\n  },\n'
    + '  {"IndvId": 3, "EventTargetText": "caf\u00e9 \u2603"}\n]\n'.encode()
)
LEADING_COMMAS = ONE_PER_LINE.replace(b"},\n{", b"}\n,{")
CLOSE_ON_OWN_LINE = ONE_PER_LINE.replace(b"}]\n", b"}\n]\n")


def write(path: Path, data: bytes, *, compress: bool = True) -> Path:
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def values(path: Path) -> list[object]:
    with open_export(path) as reader:
        return [row.value for row in reader]


def rows(path: Path) -> list[ExportRow]:
    with open_export(path) as reader:
        return list(reader)


@pytest.mark.parametrize(
    "layout",
    [NDJSON, ONE_PER_LINE, COMPACT, PRETTY, LEADING_COMMAS, CLOSE_ON_OWN_LINE],
    ids=["ndjson", "one-per-line", "compact", "pretty", "leading-commas", "close-own-line"],
)
def test_every_layout_gives_the_same_rows(tmp_path: Path, layout: bytes) -> None:
    assert values(write(tmp_path / "x.gz", layout)) == ROWS


@pytest.mark.parametrize(
    "data", [NDJSON, ONE_PER_LINE, COMPACT], ids=["ndjson", "array", "compact"]
)
def test_plain_uncompressed_file_reads_like_gzip(tmp_path: Path, data: bytes) -> None:
    assert values(write(tmp_path / "x.json", data, compress=False)) == ROWS


def test_one_element_per_line_is_read_without_the_streaming_parser(tmp_path: Path) -> None:
    path = write(tmp_path / "x.gz", ONE_PER_LINE)
    with open_export(path) as reader:
        list(reader)
    assert (reader.layout, reader.streamed) == ("array", False)


def test_compact_array_is_streamed(tmp_path: Path) -> None:
    path = write(tmp_path / "x.gz", COMPACT)
    with open_export(path) as reader:
        list(reader)
    assert (reader.layout, reader.streamed) == ("array", True)


def test_positions_count_rows_from_zero_skipping_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "x.gz", b"\n" + NDJSON.replace(b"}\n", b"}\n\r\n  \n"))
    assert [row.position for row in rows(path)] == [0, 1, 2]


def test_streamed_positions_continue_after_the_line_path(tmp_path: Path) -> None:
    mixed = b'[{"a":0},\n{"a":1},\n{"a":2}, {"a":3},\n{"a":4}]'
    path = write(tmp_path / "x.gz", mixed)
    assert [(row.position, row.value) for row in rows(path)] == [(i, {"a": i}) for i in range(5)]


def test_byte_order_mark_and_leading_whitespace_are_skipped(tmp_path: Path) -> None:
    path = write(tmp_path / "x.gz", b"\xef\xbb\xbf \n\t" + NDJSON)
    assert values(path) == ROWS


def test_bom_before_a_streamed_array_is_skipped(tmp_path: Path) -> None:
    assert values(write(tmp_path / "x.gz", b"\xef\xbb\xbf" + COMPACT)) == ROWS


@pytest.mark.parametrize("data", [b"", b"  \n\n", b"[]", b"[\n]\n", b" [ ] "])
def test_empty_export_has_no_rows(tmp_path: Path, data: bytes) -> None:
    assert values(write(tmp_path / "x.gz", data)) == []


def test_bad_ndjson_line_becomes_an_error_row(tmp_path: Path) -> None:
    path = write(tmp_path / "x.gz", b'{"a":1}\n{"a":\n{"a":3}\n')
    bad = rows(path)[1]
    assert (bad.position, bad.value, bad.raw, bad.error.startswith("not JSON")) == (
        1,
        None,
        b'{"a":',
        True,
    )


def test_rows_after_a_bad_ndjson_line_still_load(tmp_path: Path) -> None:
    path = write(tmp_path / "x.gz", b'{"a":1}\nnot json\n[1]\n{"a":3}\n')
    assert values(path) == [{"a": 1}, None, [1], {"a": 3}]


def test_invalid_utf8_is_replaced_not_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "x.gz", b'{"s":"a\xffb\xc3"}\n')
    assert values(path) == [{"s": "a\ufffdb\ufffd"}]


def test_invalid_utf8_in_a_streamed_array_is_replaced(tmp_path: Path) -> None:
    path = write(tmp_path / "x.gz", b'[{"s":"a\xffb"},{"s":"c"}]')
    assert values(path) == [{"s": "a\ufffdb"}, {"s": "c"}]


def test_raw_nul_byte_inside_a_string_is_replaced(tmp_path: Path) -> None:
    path = write(tmp_path / "x.gz", b'{"s":"a\x00b"}\n')
    assert values(path) == [{"s": "a\ufffdb"}]


def test_lone_surrogate_escape_is_replaced(tmp_path: Path) -> None:
    path = write(tmp_path / "x.gz", b'{"s":"a\\ud800b","t":"\\ud83d\\ude00"}\n')
    assert values(path) == [{"s": "a\ufffdb", "t": "\U0001f600"}]


def test_integer_beyond_64_bits_is_read_exactly_by_the_forgiving_parser() -> None:
    assert parse_exact(b'{"n":123456789012345678901234567890}') == {
        "n": 123456789012345678901234567890
    }


def test_streamed_array_with_integer_beyond_int64_keeps_its_text_for_an_exact_parse(
    tmp_path: Path,
) -> None:
    # as on the line path: orjson's value may round it (exact=False), the text is exact
    path = write(tmp_path / "x.gz", b'[{"n":1}, {"n":123456789012345678901234567890}]')
    huge = rows(path)[1]
    assert (huge.exact, parse_exact(row_text(huge))) == (
        False,
        {"n": 123456789012345678901234567890},
    )


def test_exact_streamed_parse_leaves_an_escaped_nul_as_the_line_path_does(tmp_path: Path) -> None:
    # yajl2_c counts -2**63 as an overflow, which hands the array to the exact backend; it used
    # to turn the NUL into U+FFFD there, where the line path keeps it (found by the property
    # test below).
    row = {"IndvId": -(2**63), "evt_x_str": "\x00"}
    path = write(tmp_path / "x.gz", json.dumps([row], indent=1).encode())
    assert values(path) == [row]


def test_overlong_ndjson_row_becomes_an_error_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader_module, "MAX_ROW_BYTES", 64)
    path = write(tmp_path / "x.gz", b'{"a":1}\n{"s":"' + b"x" * 500 + b'"}\n{"a":3}\n')
    assert [(row.value, row.error) for row in rows(path)] == [
        ({"a": 1}, ""),
        (None, "row longer than 64 bytes"),
        ({"a": 3}, ""),
    ]


def test_array_line_longer_than_the_limit_is_streamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader_module, "ARRAY_LINE_LIMIT", 16)
    assert values(write(tmp_path / "x.gz", ONE_PER_LINE)) == ROWS


def test_truncated_gzip_raises(tmp_path: Path) -> None:
    data = gzip.compress(NDJSON * 50)
    path = tmp_path / "x.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TransformError, match="cannot read"):
        values(path)


def test_truncated_gzip_of_a_streamed_array_raises(tmp_path: Path) -> None:
    data = gzip.compress(b"[" + b",".join(b'{"a":%d}' % i for i in range(20_000)) + b"]")
    path = tmp_path / "x.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TransformError, match="cannot read"):
        values(path)


def test_gzip_with_a_bad_checksum_raises(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(NDJSON))
    data[-8] ^= 0xFF  # the CRC32 of the trailer
    path = tmp_path / "x.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(TransformError):
        values(path)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(TransformError):
        values(tmp_path / "absent.gz")


@pytest.mark.parametrize("data", [b"<html>503</html>", b"id,name\n1,a\n", b'"text"'])
def test_neither_ndjson_nor_array_raises(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(TransformError, match="neither NDJSON nor a JSON array"):
        values(write(tmp_path / "x.gz", data))


@pytest.mark.parametrize(
    "data",
    [
        b'[{"a":1},\n{"a":2},\n',  # cut after a separator
        b'[{"a":1},\n{"a":2}\n',  # cut before the closing bracket
        b'[{"a":1},\n{"a":',  # cut inside an element
        b'[{"a":1}, {"a":',  # cut inside a streamed element
    ],
)
def test_truncated_array_raises(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(TransformError):
        values(write(tmp_path / "x.gz", data))


@pytest.mark.parametrize(
    "data",
    [b'[{"a":1},\n{"a":2]\n', b'[{"a":1},\n{"a":NaN},\n{"a":3}]\n', b'[{"a":1},\n]\n'],
    ids=["broken-element", "nan", "trailing-comma"],
)
def test_damage_inside_an_array_fails_the_whole_file(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(TransformError, match="not a valid JSON array"):
        values(write(tmp_path / "x.gz", data))


@pytest.mark.parametrize("data", [b'[{"a":1}]\n[{"a":2}]\n', b'[{"a":1}] x'])
def test_data_after_the_array_raises(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(TransformError):
        values(write(tmp_path / "x.gz", data))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
export_rows = st.lists(
    st.dictionaries(st.sampled_from(["IndvId", "evt_x_str", "a,]", "PageUrl"]), json_values)
    | json_values,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(export_rows)
def test_line_path_and_streaming_parser_agree(
    tmp_path_factory: pytest.TempPathFactory, rows: list[object]
) -> None:
    folder = tmp_path_factory.mktemp("agree")
    one_per_line = b"[" + b",\n".join(orjson.dumps(r) for r in rows) + b"]\n"
    compact = orjson.dumps(rows)
    pretty = json.dumps(rows, indent=1).encode()
    results = [
        values(write(folder / f"{i}.gz", data))
        for i, data in enumerate([one_per_line, compact, pretty])
    ]
    assert results == [rows, rows, rows]


DEEP = b"[" * 5000 + b"]" * 5000


@pytest.mark.parametrize(
    "data",
    [
        b'[{"a":1},\n' + DEEP + b',\n{"a":3}]\n',  # one element per line
        b'[{"a":1},' + DEEP + b',{"a":3}]',  # compact: the splitter
        b'{"a":1}\n' + DEEP + b'\n{"a":3}\n',  # NDJSON
    ],
    ids=["one-per-line", "compact", "ndjson"],
)
def test_a_row_nested_too_deeply_is_quarantined_and_the_rest_loads(
    tmp_path: Path, data: bytes
) -> None:
    got = [(r.position, r.value, r.error) for r in rows(write(tmp_path / "x.gz", data))]
    assert got == [
        (0, {"a": 1}, ""),
        (1, None, "JSON nested too deeply (more than 1000 levels)"),
        (2, {"a": 3}, ""),
    ]


def test_an_array_element_longer_than_the_limit_is_quarantined_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader_module, "MAX_ROW_BYTES", 64)
    monkeypatch.setattr(reader_module, "RAW_LIMIT", 10)
    big = b'{"s":"' + b"x" * 500 + b'"}'
    got = rows(write(tmp_path / "x.gz", b'[{"a":1},' + big + b',{"a":3}]'))
    assert [(r.value, r.raw, r.error) for r in got] == [
        ({"a": 1}, b'{"a":1}', ""),
        (None, big[:10], "array element longer than 64 bytes"),
        ({"a": 3}, b'{"a":3}', ""),
    ]


@pytest.mark.parametrize(
    "data",
    [b'[{"a":"x\\\\"},{"b":"]"}]', b'[{"a":"\\"],"},{"b":2}]', b'["[{",{"c":"}"}]'],
    ids=["escaped-backslash", "escaped-quote", "brackets-in-strings"],
)
def test_the_splitter_reads_strings_as_json_does(tmp_path: Path, data: bytes) -> None:
    assert values(write(tmp_path / "x.gz", data)) == json.loads(data)


def test_the_splitter_reads_strings_across_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader_module, "_STREAM_READ", 3)  # every token split between reads
    data = b'[{"a":"x\\\\","b":"\\"]"},\n  {"c":[1,{"d":"}"}]}]'
    assert values(write(tmp_path / "x.gz", data)) == json.loads(data)
