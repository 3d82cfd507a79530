"""transform_file and its conversion rules, on FullStory's own sample rows and on crafted ones."""

from __future__ import annotations

import csv
import gzip
import io
import json
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from syncd.batch import BatchKey, StagedFormat, TransformedBatch
from syncd.errors import TransformError
from syncd.fields import (
    CUSTOM_PREFIXES,
    CUSTOM_VARS,
    Column,
    FieldType,
    export_columns,
)
from syncd.transform import RowConverter, RowRejected, transform_file
from syncd.transform.rules import OutputRules

SAMPLES = Path("/work/shared/samples")
KEY = BatchKey(  # FullStory's samples hold events of 2020-08-27 to 2020-08-30
    datetime(2020, 8, 27, tzinfo=timezone.utc), datetime(2020, 8, 31, tzinfo=timezone.utc)
)
LOADED_AT = datetime(2026, 11, 1, 12, 30, 15, 250000, tzinfo=timezone.utc)
LOADED_AT_UTC = LOADED_AT.replace(tzinfo=None)
SEGMENT = export_columns()
LEGACY = export_columns("legacy")
SMALL = (
    Column("IndvId", FieldType.INT64),
    Column("PageIp", FieldType.STRING),
    Column("EventType", FieldType.STRING),
    Column("EventStart", FieldType.TIMESTAMP),
    Column("EventCumulativeLayoutShift", FieldType.FLOAT),
    *export_columns()[-3:],
)
TRACE_NAMES = {"CustomVars", "SyncdBatchId", "SyncdLoadedAt"}
STAMPS = {c.name for c in SEGMENT if c.type is FieldType.TIMESTAMP}


# ---- helpers -------------------------------------------------------------------------------


def gz(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data))
    return path


def ndjson(rows: list[Any]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def run(
    tmp_path: Path,
    data: bytes,
    fmt: StagedFormat = "parquet",
    columns: tuple[Column, ...] = SMALL,
    **kwargs: Any,
) -> TransformedBatch:
    tmp_path.mkdir(parents=True, exist_ok=True)
    source = gz(tmp_path / "export.json.gz", data)
    return transform_file(KEY, source, tmp_path / "out", columns, fmt, LOADED_AT, **kwargs)


def parquet_rows(batch: TransformedBatch) -> list[dict[str, Any]]:
    return list(pq.read_table(batch.path).to_pylist())


def ndjson_rows(batch: TransformedBatch) -> list[dict[str, Any]]:
    with gzip.open(batch.path) as f:
        return [json.loads(line) for line in f]


def csv_text(batch: TransformedBatch) -> str:
    with gzip.open(batch.path, "rt", newline="") as f:
        return f.read()


def rejects(batch: TransformedBatch) -> list[dict[str, Any]]:
    assert batch.rejects_path is not None
    return [json.loads(line) for line in batch.rejects_path.read_text().splitlines()]


def convert(value: dict[str, Any], columns: tuple[Column, ...] = SMALL) -> dict[str, Any]:
    row = RowConverter(columns, KEY.id, LOADED_AT_UTC).convert(value, exact=True)
    return dict(zip([c.name for c in columns], row, strict=True))


def reject_reason(value: object, columns: tuple[Column, ...] = SMALL) -> str:
    with pytest.raises(RowRejected) as info:
        RowConverter(columns, KEY.id, LOADED_AT_UTC).convert(value, exact=True)
    return info.value.reason


def expected_row(event: dict[str, Any], columns: tuple[Column, ...]) -> dict[str, Any]:
    """An independent statement of the rules for the sample rows (ints, strings, timestamps)."""
    names = {c.name for c in columns} - TRACE_NAMES
    out: dict[str, Any] = {}
    for column in columns:
        value = event.get(column.name) if column.name in names else None
        if value is not None and column.type is FieldType.TIMESTAMP:
            value = datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)
        out[column.name] = value
    folded = {
        k: v for k, v in sorted(event.items()) if k not in names or k.startswith(CUSTOM_PREFIXES)
    }
    out["CustomVars"] = json.dumps(folded, separators=(",", ":"), ensure_ascii=False)
    out["SyncdBatchId"] = KEY.id
    out["SyncdLoadedAt"] = LOADED_AT_UTC
    return out


def parsed_custom(row: dict[str, Any]) -> list[tuple[str, Any]]:
    return list(json.loads(row["CustomVars"]).items())


# ---- FullStory's sample rows ---------------------------------------------------------------


@pytest.fixture(scope="module")
def segment_events() -> list[dict[str, Any]]:
    return list(json.loads((SAMPLES / "segment-export-events.json").read_text()))


@pytest.fixture(scope="module")
def legacy_events() -> list[dict[str, Any]]:
    return list(json.loads((SAMPLES / "legacy-bundle-events.json").read_text()))


@pytest.fixture(scope="module")
def segment_rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("segment")
    data = (SAMPLES / "segment-export-events.json").read_bytes()
    return parquet_rows(run(tmp, data, columns=SEGMENT))


@pytest.fixture(scope="module")
def legacy_rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("legacy")
    data = (SAMPLES / "legacy-bundle-events.json").read_bytes()
    return parquet_rows(run(tmp, data, columns=LEGACY))


def test_segment_sample_gives_exactly_the_expected_rows(
    segment_rows: list[dict[str, Any]], segment_events: list[dict[str, Any]]
) -> None:
    expected = [expected_row(e, SEGMENT) for e in segment_events]
    assert [{**r, "CustomVars": parsed_custom(r)} for r in segment_rows] == [
        {**e, "CustomVars": parsed_custom(e)} for e in expected
    ]


def test_legacy_sample_gives_exactly_the_expected_rows(
    legacy_rows: list[dict[str, Any]], legacy_events: list[dict[str, Any]]
) -> None:
    expected = [expected_row(e, LEGACY) for e in legacy_events]
    assert [{**r, "CustomVars": parsed_custom(r)} for r in legacy_rows] == [
        {**e, "CustomVars": parsed_custom(e)} for e in expected
    ]


def test_sample_ids_are_exact(segment_rows: list[dict[str, Any]]) -> None:
    first = segment_rows[0]
    assert (first["IndvId"], first["SessionId"], first["PageId"]) == (
        5189870820212736,
        5320771273179136,
        4564805825019904,
    )


def test_sample_timestamp_keeps_milliseconds_as_utc(segment_rows: list[dict[str, Any]]) -> None:
    assert segment_rows[3]["EventStart"] == datetime(2020, 8, 27, 6, 20, 27, 482000)


def test_sample_empty_string_stays_empty(segment_rows: list[dict[str, Any]]) -> None:
    assert (segment_rows[0]["PageIp"], segment_rows[0]["UserEmail"]) == ("", "")


def test_sample_absent_field_is_null(segment_rows: list[dict[str, Any]]) -> None:
    assert (segment_rows[0]["UserCreated"], segment_rows[64]["PageClusterId"]) == (None, None)


def test_sample_dotted_custom_var_is_folded(segment_rows: list[dict[str, Any]]) -> None:
    assert json.loads(segment_rows[28]["CustomVars"])["evt_order.total_real"] == 8.54


def test_sample_real_custom_var_sent_as_integer_stays_integer(
    segment_rows: list[dict[str, Any]],
) -> None:
    assert json.loads(segment_rows[12]["CustomVars"])["evt_featuredFruit_real"] == 4


def test_sample_row_without_custom_vars_has_empty_object(
    segment_rows: list[dict[str, Any]],
) -> None:
    assert segment_rows[0]["CustomVars"] == "{}"


def test_legacy_field_without_a_column_is_folded(segment_rows: list[dict[str, Any]]) -> None:
    assert "EventTargetSelectorTok" in json.loads(segment_rows[3]["CustomVars"])


def test_legacy_field_with_a_column_fills_it(legacy_rows: list[dict[str, Any]]) -> None:
    assert legacy_rows[0]["PageAgent"].startswith("Mozilla/5.0 (Macintosh")


def test_legacy_sample_into_a_segment_table_folds_page_agent(
    tmp_path: Path, legacy_events: list[dict[str, Any]]
) -> None:
    batch = run(tmp_path, ndjson(legacy_events[:1]), columns=SEGMENT)
    assert json.loads(parquet_rows(batch)[0]["CustomVars"])["PageAgent"].startswith("Mozilla")


# ---- layouts and formats -------------------------------------------------------------------


def test_array_layouts_and_ndjson_give_the_same_parquet(
    tmp_path: Path, segment_events: list[dict[str, Any]]
) -> None:
    one_per_line = (SAMPLES / "segment-export-events.json").read_bytes()
    compact = orjson.dumps(segment_events)
    pretty = json.dumps(segment_events, indent=2).encode()
    outputs = [
        pq.read_table(run(tmp_path / name, data, columns=SEGMENT).path)
        for name, data in [
            ("lines", one_per_line),
            ("compact", compact),
            ("pretty", pretty),
            ("ndjson", ndjson(segment_events)),
        ]
    ]
    assert all(table.equals(outputs[0]) for table in outputs[1:])


def test_parquet_has_the_columns_in_order_with_their_types(tmp_path: Path) -> None:
    batch = run(tmp_path, b'{"IndvId":1}\n')
    assert pq.read_schema(batch.path) == pa.schema(
        [
            ("IndvId", pa.int64()),
            ("PageIp", pa.string()),
            ("EventType", pa.string()),
            ("EventStart", pa.timestamp("us")),
            ("EventCumulativeLayoutShift", pa.float64()),
            ("CustomVars", pa.string()),
            ("SyncdBatchId", pa.string()),
            ("SyncdLoadedAt", pa.timestamp("us")),
        ]
    )


def test_parquet_is_zstd_compressed_in_row_groups_of_block_rows(tmp_path: Path) -> None:
    batch = run(tmp_path, ndjson([{"IndvId": i} for i in range(25)]), block_rows=10)
    meta = pq.ParquetFile(batch.path).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert (sizes, meta.row_group(0).column(0).compression) == ([10, 10, 5], "ZSTD")


def test_parquet_round_trips_typed_values(tmp_path: Path) -> None:
    event = {
        "IndvId": 9007199254740993,
        "PageIp": "",
        "EventStart": "2020-08-27T06:20:26.900Z",
        "EventCumulativeLayoutShift": 0.125,
        "user_plan_str": "pro",
    }
    assert parquet_rows(run(tmp_path, ndjson([event]))) == [
        {
            "IndvId": 9007199254740993,
            "PageIp": "",
            "EventType": None,
            "EventStart": datetime(2020, 8, 27, 6, 20, 26, 900000),
            "EventCumulativeLayoutShift": 0.125,
            "CustomVars": '{"user_plan_str":"pro"}',
            "SyncdBatchId": KEY.id,
            "SyncdLoadedAt": LOADED_AT_UTC,
        }
    ]


def test_csv_quotes_empty_strings_and_leaves_null_unquoted(tmp_path: Path) -> None:
    event = {"IndvId": 7, "PageIp": "", "EventType": None, "EventStart": "2020-08-27T06:20:26Z"}
    assert csv_text(run(tmp_path, ndjson([event]), fmt="csv")).splitlines() == [
        '"IndvId","PageIp","EventType","EventStart","EventCumulativeLayoutShift",'
        '"CustomVars","SyncdBatchId","SyncdLoadedAt"',
        f'7,"",,2020-08-27 06:20:26.000000,,"{{}}","{KEY.id}",2026-11-01 12:30:15.250000',
    ]


def test_csv_quotes_embedded_quotes_commas_and_newlines(tmp_path: Path) -> None:
    event = {"EventType": 'say "hi",\nthen go'}
    rows = list(csv.DictReader(io.StringIO(csv_text(run(tmp_path, ndjson([event]), fmt="csv")))))
    assert rows[0]["EventType"] == 'say "hi",\nthen go'


@pytest.mark.parametrize("null", ["", "\x00"])
def test_csv_writes_null_as_the_warehouses_text_unquoted_and_quotes_every_string(
    tmp_path: Path, null: str
) -> None:
    """NULL is `OutputRules.csv_null` unquoted (Redshift: a NUL-only field, for NULL AS '\\0');
    "" and a string spelling "\\N" stay quoted strings."""
    events = [{"IndvId": 1, "EventType": "", "PageIp": "\\N"}, {"IndvId": 2}]
    batch = run(tmp_path, ndjson(events), fmt="csv", rules=OutputRules(csv_null=null))
    lines = csv_text(batch).splitlines()
    header = lines[0].split(",")
    first, second = (dict(zip(header, line.split(","), strict=True)) for line in lines[1:])
    assert (first['"IndvId"'], first['"EventType"'], first['"PageIp"']) == ("1", '""', '"\\N"')
    assert (second['"EventType"'], second['"PageIp"'], second['"EventStart"']) == (null,) * 3


def test_csv_round_trips_with_the_csv_module(
    tmp_path: Path, segment_events: list[dict[str, Any]]
) -> None:
    data = ndjson(segment_events)
    parquet = parquet_rows(run(tmp_path / "p", data, columns=SEGMENT))
    text = csv_text(run(tmp_path / "c", data, fmt="csv", columns=SEGMENT))
    as_text = [
        {
            k: "" if v is None else (v.isoformat(" ", "microseconds") if k in STAMPS else str(v))
            for k, v in row.items()
        }
        for row in parquet
    ]
    assert list(csv.DictReader(io.StringIO(text))) == as_text


def test_ndjson_leaves_out_nulls_and_nests_custom_vars(tmp_path: Path) -> None:
    event = {"IndvId": 7, "PageIp": "", "EventStart": "2020-08-27T06:20:26.900Z", "evt_x_int": 1}
    assert ndjson_rows(run(tmp_path, ndjson([event]), fmt="ndjson")) == [
        {
            "IndvId": 7,
            "PageIp": "",
            "EventStart": "2020-08-27T06:20:26.900000Z",
            "CustomVars": {"evt_x_int": 1},
            "SyncdBatchId": KEY.id,
            "SyncdLoadedAt": "2026-11-01T12:30:15.250000Z",
        }
    ]


def test_ndjson_round_trips_the_sample(
    tmp_path: Path, segment_events: list[dict[str, Any]]
) -> None:
    data = ndjson(segment_events)
    parquet = parquet_rows(run(tmp_path / "p", data, columns=SEGMENT))
    back = [
        {
            c.name: (
                datetime.fromisoformat(row[c.name][:-1])
                if c.type is FieldType.TIMESTAMP and c.name in row
                else json.dumps(row[c.name], separators=(",", ":"), ensure_ascii=False)
                if c is CUSTOM_VARS
                else row.get(c.name)
            )
            for c in SEGMENT
        }
        for row in ndjson_rows(run(tmp_path / "n", data, fmt="ndjson", columns=SEGMENT))
    ]
    assert back == parquet


@pytest.mark.parametrize("fmt", ["parquet", "csv", "ndjson"])
def test_empty_export_gives_an_empty_but_valid_file(tmp_path: Path, fmt: StagedFormat) -> None:
    batch = run(tmp_path, b"[]", fmt=fmt)
    assert (batch.rows, batch.rejected, batch.path.exists()) == (0, 0, True)


def test_empty_parquet_still_has_the_schema(tmp_path: Path) -> None:
    assert pq.read_table(run(tmp_path, b"").path).num_columns == len(SMALL)


# ---- the returned record and the files on disk ---------------------------------------------


def test_returned_batch_describes_the_output(tmp_path: Path) -> None:
    batch = run(tmp_path, b'{"IndvId":1}\n{"IndvId":2}\n', fmt="ndjson")
    assert batch == TransformedBatch(
        key=KEY,
        path=tmp_path / "out" / f"{KEY.id}.ndjson.gz",
        format="ndjson",
        columns=SMALL,
        rows=2,
        rejected=0,
        rejects_path=None,
        source_bytes=(tmp_path / "export.json.gz").stat().st_size,
    )


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("parquet", "parquet"), ("csv", "csv.gz"), ("ndjson", "ndjson.gz")],
)
def test_output_is_named_after_the_batch(tmp_path: Path, fmt: StagedFormat, name: str) -> None:
    assert run(tmp_path, b'{"IndvId":1}\n', fmt=fmt).path.name == f"{KEY.id}.{name}"


def test_success_leaves_no_partial_files(tmp_path: Path) -> None:
    run(tmp_path, b'{"IndvId":1}\n{"IndvId":"x"}\n')
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"{KEY.id}.parquet",
        f"{KEY.id}.rejects.ndjson",
    ]


def test_truncated_gzip_raises_and_leaves_no_files(tmp_path: Path) -> None:
    data = gzip.compress(ndjson([{"IndvId": i} for i in range(5000)]))
    source = tmp_path / "export.json.gz"
    source.write_bytes(data[: len(data) // 2])
    with pytest.raises(TransformError):
        transform_file(KEY, source, tmp_path / "out", SMALL, "parquet", LOADED_AT, block_rows=100)
    assert list((tmp_path / "out").iterdir()) == []


def test_failed_retry_keeps_no_stale_output_of_the_same_name(tmp_path: Path) -> None:
    run(tmp_path, b'{"IndvId":1}\n')
    (tmp_path / "export.json.gz").write_bytes(gzip.compress(b'[{"IndvId":1},\n')[:-6])
    with pytest.raises(TransformError):
        transform_file(KEY, tmp_path / "export.json.gz", tmp_path / "out", SMALL, "csv", LOADED_AT)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{KEY.id}.parquet"]


def test_rerun_without_rejects_removes_an_earlier_rejects_file(tmp_path: Path) -> None:
    run(tmp_path, b'{"IndvId":"x"}\n')
    run(tmp_path, b'{"IndvId":1}\n')
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{KEY.id}.parquet"]


def test_partial_rejects_left_by_a_crash_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir(parents=True)
    (out / f"{KEY.id}.rejects.ndjson.partial").write_text("{}\n")
    run(tmp_path, b'{"IndvId":1}\n')
    assert sorted(p.name for p in out.iterdir()) == [f"{KEY.id}.parquet"]


def test_missing_source_raises_transform_error(tmp_path: Path) -> None:
    with pytest.raises(TransformError):
        transform_file(KEY, tmp_path / "absent.gz", tmp_path, SMALL, "parquet", LOADED_AT)


def test_naive_loaded_at_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="time-zone aware"):
        transform_file(KEY, tmp_path / "x.gz", tmp_path, SMALL, "parquet", datetime(2026, 1, 1))


def test_columns_without_custom_vars_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="CustomVars"):
        transform_file(KEY, tmp_path / "x.gz", tmp_path, SMALL[:5], "parquet", LOADED_AT)


def test_loaded_at_in_another_zone_is_stored_as_utc(tmp_path: Path) -> None:
    local = LOADED_AT.astimezone(timezone(timedelta(hours=-5)))
    source = gz(tmp_path / "x.gz", b'{"IndvId":1}\n')
    batch = transform_file(KEY, source, tmp_path / "out", SMALL, "parquet", local)
    assert parquet_rows(batch)[0]["SyncdLoadedAt"] == LOADED_AT_UTC


# ---- quarantine ----------------------------------------------------------------------------

MIXED = b"\n".join(
    [
        b'{"IndvId":1}',
        b'{"IndvId":"abc"}',
        b"not json",
        b"[1,2]",
        b'{"IndvId":2}',
        b'{"EventStart":"yesterday","EventCumulativeLayoutShift":true}',
        b'{"IndvId":9223372036854775808}',
    ]
)


def test_bad_rows_are_quarantined_and_counts_reconcile(tmp_path: Path) -> None:
    batch = run(tmp_path, MIXED)
    assert (batch.rows, batch.rejected, len(parquet_rows(batch))) == (2, 5, 2)


def test_quarantine_records_position_reason_and_raw(tmp_path: Path) -> None:
    records = rejects(run(tmp_path, MIXED))
    assert [(r["batch_id"], r["position"], r["reason"], r["raw"]) for r in records] == [
        (KEY.id, 1, "IndvId: expected int64, got a non-numeric string", '{"IndvId":"abc"}'),
        (KEY.id, 2, records[1]["reason"], "not json"),
        (KEY.id, 3, "not a JSON object (got array)", "[1,2]"),
        (
            KEY.id,
            5,
            "EventStart: is not an RFC 3339 timestamp; "
            "EventCumulativeLayoutShift: expected float, got boolean",
            '{"EventStart":"yesterday","EventCumulativeLayoutShift":true}',
        ),
        (KEY.id, 6, "IndvId: is out of int64 range", '{"IndvId":9223372036854775808}'),
    ]


def test_unparseable_line_reason_says_not_json(tmp_path: Path) -> None:
    assert rejects(run(tmp_path, MIXED))[1]["reason"].startswith("not JSON: ")


def test_quarantined_raw_is_capped_at_64_kib(tmp_path: Path) -> None:
    batch = run(tmp_path, orjson.dumps({"IndvId": "x", "s": "y" * 100_000}) + b"\n")
    assert len(rejects(batch)[0]["raw"]) == 64 * 1024


def test_rejected_row_from_a_streamed_array_keeps_its_json(tmp_path: Path) -> None:
    batch = run(tmp_path, b'[{"IndvId":1},{"IndvId":true}]')
    assert (rejects(batch)[0]["position"], rejects(batch)[0]["raw"]) == (1, '{"IndvId":true}')


def test_rows_with_invalid_utf8_and_nul_load(tmp_path: Path) -> None:
    batch = run(tmp_path, b'{"EventType":"a\xffb\\u0000c"}\n')
    assert (batch.rejected, parquet_rows(batch)[0]["EventType"]) == (0, "a\ufffdb\ufffdc")


def test_integer_beyond_64_bits_is_folded_exactly(tmp_path: Path) -> None:
    batch = run(tmp_path, b'{"user_big_int":123456789012345678901234567890,"user_f_real":1e300}\n')
    assert parquet_rows(batch)[0]["CustomVars"] == (
        '{"user_big_int":123456789012345678901234567890,"user_f_real":1e+300}'
    )


# ---- conversion rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (42, 42),
        (-(2**63), -(2**63)),
        (2**63 - 1, 2**63 - 1),
        (42.0, 42),
        ("42", 42),
        ("-7", -7),
        ("9223372036854775807", 2**63 - 1),
        (None, None),
    ],
)
def test_int64_accepts(value: object, expected: int | None) -> None:
    assert convert({"IndvId": value})["IndvId"] == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (2**63, "IndvId: is out of int64 range"),
        (1e19, "IndvId: is out of int64 range"),
        ("9223372036854775808", "IndvId: is out of int64 range"),
        ("123456789012345678901234", "IndvId: is out of int64 range"),
        (4.5, "IndvId: expected int64, got a number with a fraction"),
        (True, "IndvId: expected int64, got boolean"),
        ("", "IndvId: expected int64, got a non-numeric string"),
        (" 42", "IndvId: expected int64, got a non-numeric string"),
        ("4.2", "IndvId: expected int64, got a non-numeric string"),
        ("\u0664\u0662", "IndvId: expected int64, got a non-numeric string"),
        ({"a": 1}, "IndvId: expected int64, got object"),
    ],
)
def test_int64_rejects(value: object, reason: str) -> None:
    assert reject_reason({"IndvId": value}) == reason


@pytest.mark.parametrize(
    ("value", "expected"), [(0.25, 0.25), (3, 3.0), ("2.5", 2.5), ("-1e3", -1000.0), (None, None)]
)
def test_float_accepts(value: object, expected: float | None) -> None:
    assert convert({"EventCumulativeLayoutShift": value})["EventCumulativeLayoutShift"] == expected


@pytest.mark.parametrize("value", ["nan", "inf", "1e999", "", "0x10", False, [1.0], 10**400])
def test_float_rejects(value: object) -> None:
    assert reject_reason({"EventCumulativeLayoutShift": value}).startswith(
        "EventCumulativeLayoutShift: "
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2020-08-27T06:20:26.900Z", datetime(2020, 8, 27, 6, 20, 26, 900000)),
        ("2020-08-27T06:20:26Z", datetime(2020, 8, 27, 6, 20, 26)),
        ("2020-08-27T06:20:26.123456789Z", datetime(2020, 8, 27, 6, 20, 26, 123456)),
        ("2020-08-27T08:20:26.9+02:00", datetime(2020, 8, 27, 6, 20, 26, 900000)),
        ("2020-08-26T23:50:00-06:30", datetime(2020, 8, 27, 6, 20)),
        ("2020-08-27 06:20:26.900z", datetime(2020, 8, 27, 6, 20, 26, 900000)),
        ("2020-08-27t06:20:26+00:00", datetime(2020, 8, 27, 6, 20, 26)),
    ],
)
def test_timestamp_accepts_rfc3339(value: str, expected: datetime) -> None:
    assert convert({"EventStart": value})["EventStart"] == expected


@pytest.mark.parametrize(
    "value",
    [
        "2020-08-27T06:20:26",
        "2020-08-27",
        "20200827T062026Z",
        "2020-02-30T00:00:00Z",
        "2020-08-27T24:00:00Z",
        "2020-08-27T06:20:26+25:00",
        "0000-01-01T00:00:00Z",
        "",
        1598509226900,
    ],
)
def test_timestamp_rejects(value: object) -> None:
    assert reject_reason({"EventStart": value}).startswith("EventStart: ")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ""),
        ("plain", "plain"),
        (12, "12"),
        (2**70, str(2**70)),
        (1.5, "1.5"),
        (True, "true"),
        ({"a": [1, "x"]}, '{"a":[1,"x"]}'),
        (["a\x00"], '["a\ufffd"]'),
        ("a\x00b", "a\ufffdb"),
        (None, None),
    ],
)
def test_string_column_takes_text_and_json_text(value: object, expected: str | None) -> None:
    assert convert({"EventType": value})["EventType"] == expected


def test_custom_vars_sort_their_keys_and_keep_nulls() -> None:
    row = convert({"user_b_str": "x", "IndvId": 1, "evt_a_int": None, "page_c_real": 1.5})
    assert row["CustomVars"] == '{"evt_a_int":null,"page_c_real":1.5,"user_b_str":"x"}'
    again = convert({"page_c_real": 1.5, "evt_a_int": None, "user_b_str": "x", "IndvId": 1})
    assert again["CustomVars"] == row["CustomVars"]


def test_unknown_field_is_folded() -> None:
    assert convert({"BrandNewField": {"x": 1}})["CustomVars"] == '{"BrandNewField":{"x":1}}'


def test_known_field_without_a_column_is_folded() -> None:
    assert convert({"PageUrl": "https://x"})["CustomVars"] == '{"PageUrl":"https://x"}'


def test_input_key_named_like_a_trace_column_is_folded() -> None:
    row = convert({"SyncdBatchId": "spoof", "CustomVars": 1})
    assert (row["SyncdBatchId"], row["CustomVars"]) == (
        KEY.id,
        '{"CustomVars":1,"SyncdBatchId":"spoof"}',
    )


def test_custom_var_nul_is_replaced_in_keys_and_values() -> None:
    row = convert({"user_a\x00_str": "b\x00", "user_n": {"c": "d\x00"}})
    assert row["CustomVars"] == '{"user_a\ufffd_str":"b\ufffd","user_n":{"c":"d\ufffd"}}'


def test_column_for_a_field_the_catalog_does_not_know_is_filled() -> None:
    columns = (Column("NewField", FieldType.INT64), *SMALL[-3:])
    assert convert({"NewField": "5"}, columns)["NewField"] == 5


def test_every_bad_field_is_named_in_the_reason() -> None:
    assert reject_reason({"IndvId": "a", "EventType": "ok", "EventStart": 5}) == (
        "IndvId: expected int64, got a non-numeric string; "
        "EventStart: expected an RFC 3339 timestamp string, got number"
    )


@pytest.mark.parametrize("value", ["text", 5, None, [{"IndvId": 1}]])
def test_row_that_is_not_an_object_is_rejected(value: object) -> None:
    assert reject_reason(value).startswith("not a JSON object")


# ---- memory --------------------------------------------------------------------------------


def _generated(path: Path, rows: int, *, array: bool) -> Path:
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(b"[" if array else b"")
        for start in range(0, rows, 10_000):
            lines = [
                orjson.dumps(
                    {
                        "IndvId": 5189870820212736 + i,
                        "EventStart": f"2020-08-27T06:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}"
                        f".{i % 1000:03d}Z",
                        "EventType": "click",
                        "PageIp": "",
                        "evt_n_int": i,
                    }
                )
                for i in range(start, min(start + 10_000, rows))
            ]
            sep = b"," if array else b"\n"
            f.write(sep.join(lines) + (sep if start + 10_000 < rows else b""))
        f.write(b"]" if array else b"\n")
    return path


def _peak(tmp_path: Path, rows: int, array: bool) -> int:
    source = _generated(tmp_path / f"{rows}.gz", rows, array=array)
    tracemalloc.start()
    try:
        batch = transform_file(
            KEY, source, tmp_path / "out", SMALL, "parquet", LOADED_AT, block_rows=2_000
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert batch.rows == rows
    return peak


@pytest.mark.parametrize(
    ("array", "rows"), [(False, 200_000), (True, 100_000)], ids=["ndjson", "one-line-array"]
)
def test_memory_does_not_grow_with_the_row_count(tmp_path: Path, array: bool, rows: int) -> None:
    small, large = _peak(tmp_path, rows // 10, array), _peak(tmp_path, rows, array)
    assert large < small * 1.2 + 512 * 1024 and large < 8 * 1024 * 1024


def test_several_sources_are_one_batch_with_positions_across_files(tmp_path: Path) -> None:
    first = gz(tmp_path / "a.json.gz", b'[{"IndvId":1},{"IndvId":"x"}]')
    second = gz(tmp_path / "b.json.gz", b'{"IndvId":3}\n{"IndvId":"y"}\n')
    batch = transform_file(KEY, [first, second], tmp_path / "out", SMALL, "parquet", LOADED_AT)
    assert [r["IndvId"] for r in parquet_rows(batch)] == [1, 3]
    assert [r["position"] for r in rejects(batch)] == [1, 3]
