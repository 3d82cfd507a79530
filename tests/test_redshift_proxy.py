"""The Redshift stand-in: its translation table, the wire-protocol fixes, and COPY from S3
answering as Redshift does (including the errors a real COPY gives for bad files)."""

# ruff: noqa: F811 - fixtures are imported by name from aws_support
from __future__ import annotations

import gzip
import io
import re
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redshift_connector
from aws_support import (  # noqa: F401
    AwsEnv,
    TlsServer,
    aws,
    bucket,
    case_sensitive_proxy,
    moto_s3,
    postgres,
    redshift_proxy,
    schema,
    tls_proxy,
)
from redshift_connector.error import ProgrammingError

from standins.redshift_proxy import RedshiftProxy, truncate_utf8
from standins.redshift_sql import (
    TRANSLATIONS,
    CopySyntaxError,
    parse_copy,
    redact_copy,
    translate,
)

ROLE = "IAM_ROLE 'arn:aws:iam::1:role/r'"


@pytest.mark.parametrize(
    ("redshift", "postgres"),
    [
        ('CREATE TABLE "T" ("A" BIGINT ENCODE az64)', 'CREATE TABLE "t" ("a" BIGINT)'),
        ('CREATE TABLE t (a INT) DISTSTYLE EVEN SORTKEY ("A")', "CREATE TABLE t (a INT)"),
        ("CREATE TABLE t (a INT) DISTKEY (a) COMPOUND SORTKEY (a, b)", "CREATE TABLE t (a INT)"),
        ("CREATE TABLE t (s VARCHAR(MAX), j SUPER)", "CREATE TABLE t (s VARCHAR(65535), j JSONB)"),
        ("SELECT GETDATE(), SYSDATE", "SELECT LOCALTIMESTAMP, LOCALTIMESTAMP"),
        ("SELECT a FROM t WHERE b = 'x';", "SELECT a FROM t WHERE b = 'x' ORDER BY random()"),
        ("SELECT count(*) FROM t", "SELECT count(*) FROM t"),
        ("SELECT a FROM t ORDER BY a LIMIT 1", "SELECT a FROM t ORDER BY a LIMIT 1"),
        (
            'CREATE TABLE t ("A" INT NOT NULL PRIMARY KEY, b INT UNIQUE)',
            'CREATE TABLE t ("a" INT NOT NULL, b INT)',
        ),
        (
            "CREATE TABLE t (a INT, b INT, CONSTRAINT k PRIMARY KEY (a, b), UNIQUE (b))",
            "CREATE TABLE t (a INT, b INT)",
        ),
        ("SELECT 'GETDATE() \"Keep\"'", "SELECT 'GETDATE() \"Keep\"'"),
    ],
)
def test_translations(redshift: str, postgres: str) -> None:
    assert translate(redshift) == postgres


def test_load_error_tables_are_the_proxys() -> None:
    assert "syncd_proxy.stl_load_errors" in translate("SELECT * FROM stl_load_errors")


def test_every_translation_says_why() -> None:
    assert all(rule.why for rule in TRANSLATIONS)


def test_a_copy_from_s3_is_parsed() -> None:
    copy = parse_copy(
        f"""COPY "S"."T" ("A", "B") FROM 's3://bkt/p/x.csv.gz' {ROLE} REGION 'us-east-1' """
        "FORMAT AS CSV IGNOREHEADER 1 GZIP TIMEFORMAT 'auto' TRUNCATECOLUMNS"
    )
    assert copy is not None
    assert (copy.table_parts, copy.columns, copy.bucket, copy.prefix, copy.gzip) == (
        ("s", "t"),
        ("a", "b"),
        "bkt",
        "p/x.csv.gz",
        True,
    )


def test_the_copy_becomes_copy_from_stdin() -> None:
    copy = parse_copy(f"""COPY "S"."T" ("A") FROM 's3://b/k' {ROLE} CSV""")
    assert copy is not None
    assert copy.to_stdin() == 'COPY "s"."t" ("a") FROM STDIN WITH (FORMAT csv, HEADER true)'


def test_other_statements_are_not_copies() -> None:
    assert parse_copy("SELECT 1") is None


def test_a_copy_without_credentials_is_refused() -> None:
    with pytest.raises(CopySyntaxError, match="credentials"):
        parse_copy("COPY t FROM 's3://b/k' CSV")


@pytest.mark.parametrize(
    "option",
    [
        "REGION 'us-east-1'",
        "TRUNCATECOLUMNS",
        "GZIP",
        "IGNOREHEADER 1",
        "TIMEFORMAT 'auto'",
        "EMPTYASNULL",
        "NULL AS '\\0'",
        "MAXERROR 10",
        "ACCEPTANYDATE",
    ],
)
def test_parquet_refuses_every_parameter_columnar_copy_does_not_list(option: str) -> None:
    """COPY from columnar data formats: only ACCEPTINVCHARS, FILLRECORD, FROM, IAM_ROLE,
    CREDENTIALS, the access-key forms, STATUPDATE, MANIFEST and EXPLICIT_IDS."""
    with pytest.raises(CopySyntaxError, match="not valid with PARQUET"):
        parse_copy(f"COPY t FROM 's3://b/k' {ROLE} FORMAT AS PARQUET {option}")


@pytest.mark.parametrize(
    "options",
    [
        f"{ROLE} FORMAT AS PARQUET",
        "CREDENTIALS 'aws_iam_role=arn:aws:iam::1:role/r' FORMAT AS PARQUET",
        "ACCESS_KEY_ID 'A' SECRET_ACCESS_KEY 'S' SESSION_TOKEN 'T' FORMAT AS PARQUET",
        f"{ROLE} FORMAT AS PARQUET ACCEPTINVCHARS '?' FILLRECORD STATUPDATE OFF EXPLICIT_IDS",
    ],
)
def test_parquet_accepts_the_listed_parameters(options: str) -> None:
    copy = parse_copy(f"COPY t FROM 's3://b/k' {options}")
    assert copy is not None and copy.format == "PARQUET"


@pytest.mark.parametrize("option", ["ESCAPE", "REMOVEQUOTES", "FIXEDWIDTH 'a:1,b:2'"])
def test_csv_refuses_escape_removequotes_and_fixedwidth(option: str) -> None:
    """Data format parameters: CSV cannot be used with FIXEDWIDTH, REMOVEQUOTES, or ESCAPE."""
    with pytest.raises(CopySyntaxError, match="CSV cannot be used with"):
        parse_copy(f"COPY t FROM 's3://b/k' {ROLE} FORMAT AS CSV {option}")


def test_csv_takes_the_options_syncd_sends() -> None:
    copy = parse_copy(
        f"COPY t (a) FROM 's3://b/k' {ROLE} REGION 'us-east-1' FORMAT AS CSV IGNOREHEADER 1 "
        "GZIP TIMEFORMAT 'auto' TRUNCATECOLUMNS NULL AS '\\0'"
    )
    assert copy is not None
    assert (copy.format, copy.ignore_header, copy.gzip, copy.null_as) == ("CSV", 1, True, "\x00")


def test_redact_copy_masks_credentials() -> None:
    text = "COPY t FROM 's3://b/k' CREDENTIALS 'aws_access_key_id=A;aws_secret_access_key=S'"
    assert redact_copy(text) == "COPY t FROM 's3://b/k' CREDENTIALS '***'"


def test_truncation_never_splits_a_character() -> None:
    assert truncate_utf8("aé€", 4) == "aé"


# -- the wire protocol -------------------------------------------------------------------------


def test_ssl_is_refused(redshift_proxy: RedshiftProxy) -> None:
    with socket.create_connection((redshift_proxy.host, redshift_proxy.port), timeout=5) as sock:
        sock.sendall(struct.pack("!ii", 8, 80877103))
        assert sock.recv(1) == b"N"


@pytest.fixture
def connection(redshift_proxy: RedshiftProxy, aws: AwsEnv) -> Iterator[Any]:
    con = redshift_connector.connect(
        host=redshift_proxy.host,
        port=redshift_proxy.port,
        database="postgres",
        user="postgres",
        password="x",
        ssl=False,
    )
    con.autocommit = True
    con.cursor().execute(f'CREATE SCHEMA "{aws.schema}"')
    con.cursor().execute(f'SET search_path = "{aws.schema}"')
    yield con
    con.close()
    redshift_proxy.clear_faults()


def run(con: Any, sql: str) -> list[Any]:
    cursor = con.cursor()
    cursor.execute(sql)
    return list(cursor.fetchall()) if cursor.description else []


def test_redshift_connector_reads_a_parseable_version(connection: Any) -> None:
    assert str(connection._server_version)[0].isdigit()


def test_redshift_ddl_runs(connection: Any) -> None:
    run(connection, 'CREATE TABLE "T" ("A" BIGINT ENCODE az64, "B" VARCHAR(MAX)) SORTKEY ("A")')
    assert run(connection, "SELECT count(*) FROM t") == [[0]]


def put(aws: AwsEnv, key: str, body: bytes) -> None:
    aws.moto.client().put_object(Bucket=aws.bucket, Key=key, Body=body)


def copy(aws: AwsEnv, key: str, options: str = "FORMAT AS CSV IGNOREHEADER 1 GZIP") -> str:
    return f"COPY t (a, b) FROM 's3://{aws.bucket}/{key}' {ROLE} {options}"


@pytest.fixture
def table(connection: Any) -> Any:
    run(connection, "CREATE TABLE t (a BIGINT, b VARCHAR(4))")
    return connection


def test_copy_loads_gzip_csv_from_s3(table: Any, aws: AwsEnv) -> None:
    put(aws, "x.csv.gz", gzip.compress(b'"a","b"\n1,"x"\n2,"y"\n'))
    run(table, copy(aws, "x.csv.gz"))
    assert run(table, "SELECT a, b FROM t ORDER BY a") == [[1, "x"], [2, "y"]]


# Redshift's CSV rules ("Data conversion parameters": EMPTYASNULL, NULL AS), not PostgreSQL's:
# quoting does not make NULL; an empty VARCHAR field is "" and an empty BIGINT one NULL.


def test_an_empty_csv_field_is_an_empty_string_quoted_or_not_and_null_in_other_types(
    table: Any, aws: AwsEnv
) -> None:
    put(aws, "e.csv.gz", gzip.compress(b'"a","b"\n1,\n2,""\n,"x"\n'))
    run(table, copy(aws, "e.csv.gz"))
    assert run(table, "SELECT a, b FROM t ORDER BY a NULLS LAST") == [
        [1, ""],
        [2, ""],
        [None, "x"],
    ]


def test_emptyasnull_loads_empty_varchar_fields_as_null(table: Any, aws: AwsEnv) -> None:
    put(aws, "e.csv.gz", gzip.compress(b'"a","b"\n1,\n2,""\n'))
    run(table, copy(aws, "e.csv.gz", "FORMAT AS CSV IGNOREHEADER 1 GZIP EMPTYASNULL"))
    assert run(table, "SELECT a, b FROM t ORDER BY a") == [[1, None], [2, None]]


def test_the_default_null_string_is_backslash_n_quoted_or_not(table: Any, aws: AwsEnv) -> None:
    put(aws, "n.csv.gz", gzip.compress(b'"a","b"\n1,\\N\n2,"\\N"\n\\N,"x"\n'))
    run(table, copy(aws, "n.csv.gz"))
    assert run(table, "SELECT a, b FROM t ORDER BY a NULLS LAST") == [
        [1, None],
        [2, None],
        [None, "x"],
    ]


def test_null_as_nul_loads_a_nul_only_field_as_null_in_every_type(table: Any, aws: AwsEnv) -> None:
    put(aws, "z.csv.gz", gzip.compress(b'"a","b"\n1,\x00\n\x00,"\\N"\n3,""\n'))
    run(table, copy(aws, "z.csv.gz", "FORMAT AS CSV IGNOREHEADER 1 GZIP NULL AS '\\0'"))
    assert run(table, "SELECT a, b FROM t ORDER BY a NULLS LAST") == [
        [1, None],
        [3, ""],
        [None, "\\N"],
    ]


def test_a_nul_inside_a_field_fails_the_copy(table: Any, aws: AwsEnv) -> None:
    put(aws, "z.csv.gz", gzip.compress(b'"a","b"\n1,"x\x00y"\n'))
    with pytest.raises(ProgrammingError, match="Check 'stl_load_errors'"):
        run(table, copy(aws, "z.csv.gz", "FORMAT AS CSV IGNOREHEADER 1 GZIP NULL AS '\\0'"))
    assert load_error(table) == [[2, "b", 1214]]


def test_a_short_record_fails_unless_fillrecord(table: Any, aws: AwsEnv) -> None:
    put(aws, "s.csv.gz", gzip.compress(b'"a","b"\n1\n'))
    with pytest.raises(ProgrammingError, match="Check 'stl_load_errors'"):
        run(table, copy(aws, "s.csv.gz"))
    assert load_error(table) == [[2, "", 1214]]
    run(table, copy(aws, "s.csv.gz", "FORMAT AS CSV IGNOREHEADER 1 GZIP FILLRECORD"))
    assert run(table, "SELECT a, b FROM t") == [[1, ""]]


def test_copy_loads_every_object_under_the_prefix(table: Any, aws: AwsEnv) -> None:
    put(aws, "p/1.csv.gz", gzip.compress(b'"a","b"\n1,"x"\n'))
    put(aws, "p/2.csv.gz", gzip.compress(b'"a","b"\n2,"y"\n'))
    run(table, copy(aws, "p/"))
    assert run(table, "SELECT pg_last_copy_count()") == [[2]]


def test_copy_loads_parquet(table: Any, aws: AwsEnv) -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"a": [7], "b": ["z"]}), buffer)
    put(aws, "x.parquet", buffer.getvalue())
    run(table, copy(aws, "x.parquet", "FORMAT AS PARQUET"))
    assert run(table, "SELECT a, b FROM t") == [[7, "z"]]


def load_error(con: Any) -> list[Any]:
    return run(
        con,
        "SELECT line_number, TRIM(colname), err_code FROM stl_load_errors "
        "WHERE query = pg_last_copy_id()",
    )


def test_a_refused_parquet_copy_fails_with_the_reason(table: Any, aws: AwsEnv) -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"a": [7], "b": ["z"]}), buffer)
    put(aws, "x.parquet", buffer.getvalue())
    with pytest.raises(ProgrammingError, match="REGION not valid with PARQUET"):
        run(table, copy(aws, "x.parquet", "REGION 'us-east-1' FORMAT AS PARQUET"))
    assert run(table, "SELECT count(*) FROM t") == [[0]]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (gzip.compress(b'"a","b"\n1,"x"\nnope,"y"\n'), [3, "a", 1207]),
        (gzip.compress(b'"a","b"\n1,"longer"\n'), [2, "b", 1204]),
        (b"not gzip at all", [0, "", 1216]),
    ],
    ids=["bad-number", "too-long", "not-gzip"],
)
def test_a_bad_file_fails_as_redshift_and_logs_the_error(
    table: Any, aws: AwsEnv, body: bytes, expected: list[Any]
) -> None:
    put(aws, "bad.csv.gz", body)
    with pytest.raises(ProgrammingError, match="Check 'stl_load_errors'"):
        run(table, copy(aws, "bad.csv.gz"))
    assert load_error(table) == [expected]


def test_truncatecolumns_cuts_long_strings(table: Any, aws: AwsEnv) -> None:
    put(aws, "long.csv.gz", gzip.compress('"a","b"\n1,"ééé"\n'.encode()))
    run(table, copy(aws, "long.csv.gz", "FORMAT AS CSV IGNOREHEADER 1 GZIP TRUNCATECOLUMNS"))
    assert run(table, "SELECT b FROM t") == [["éé"]]


@pytest.mark.parametrize("string_type", [pa.string(), pa.large_string()])
def test_a_parquet_string_longer_than_its_column_fails_the_copy(
    table: Any, aws: AwsEnv, string_type: pa.DataType
) -> None:
    """Parquet takes no TRUNCATECOLUMNS: a string over its VARCHAR's bytes fails the load."""
    buffer = io.BytesIO()
    pq.write_table(pa.table({"a": [1, 2], "b": pa.array(["ok", "ééé"], string_type)}), buffer)
    put(aws, "long.parquet", buffer.getvalue())
    with pytest.raises(ProgrammingError, match="Check 'stl_load_errors'"):
        run(table, copy(aws, "long.parquet", "FORMAT AS PARQUET"))
    assert load_error(table) == [[3, "b", 1204]]
    with pytest.raises(ProgrammingError, match="TRUNCATECOLUMNS not valid with PARQUET"):
        run(table, copy(aws, "long.parquet", "FORMAT AS PARQUET TRUNCATECOLUMNS"))


def test_a_parquet_file_must_have_the_columns_of_the_copy(table: Any, aws: AwsEnv) -> None:
    """COPY from columnar data formats: the numbers of columns must match."""
    buffer = io.BytesIO()
    pq.write_table(pa.table({"a": [7]}), buffer)
    put(aws, "one.parquet", buffer.getvalue())
    with pytest.raises(ProgrammingError, match="Check 'stl_load_errors'"):
        run(table, copy(aws, "one.parquet", "FORMAT AS PARQUET"))
    assert load_error(table) == [[0, "", 1202]]


def test_a_parquet_copy_reads_only_a_bucket_in_the_clusters_region(table: Any, aws: AwsEnv) -> None:
    """COPY from columnar data formats: the bucket must be in the cluster's Region (and REGION
    cannot say otherwise); CSV may cross Regions."""
    client = aws.moto.client()
    far = f"{aws.bucket}-west"
    client.create_bucket(Bucket=far, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    buffer = io.BytesIO()
    pq.write_table(pa.table({"a": [7], "b": ["z"]}), buffer)
    client.put_object(Bucket=far, Key="x.parquet", Body=buffer.getvalue())
    client.put_object(Bucket=far, Key="x.csv.gz", Body=gzip.compress(b'"a","b"\n1,"x"\n'))
    statement = f"COPY t (a, b) FROM 's3://{far}/x.parquet' {ROLE} FORMAT AS PARQUET"
    with pytest.raises(ProgrammingError, match="needs the bucket in the cluster's Region"):
        run(table, statement)
    csv_copy = f"COPY t (a, b) FROM 's3://{far}/x.csv.gz' {ROLE} REGION 'us-west-2' CSV IGNOREHEADER 1 GZIP"
    run(table, csv_copy)
    assert run(table, "SELECT a, b FROM t") == [[1, "x"]]


def test_parquet_into_super_needs_serializetojson_and_stays_a_string(
    connection: Any, aws: AwsEnv
) -> None:
    """A Parquet column loads into SUPER only with SERIALIZETOJSON, as JSON: a string column's
    JSON text becomes a JSON string, not the object (why SUPER CustomVars stage CSV)."""
    run(connection, "CREATE TABLE s (a BIGINT, j SUPER)")
    buffer = io.BytesIO()
    pq.write_table(pa.table({"a": [1], "j": ['{"k":1}']}), buffer)
    put(aws, "s.parquet", buffer.getvalue())
    statement = f"COPY s (a, j) FROM 's3://{aws.bucket}/s.parquet' {ROLE} FORMAT AS PARQUET"
    with pytest.raises(ProgrammingError, match="Check 'stl_load_errors'"):
        run(connection, statement)
    run(connection, statement + " SERIALIZETOJSON")
    assert run(connection, "SELECT a, j FROM s") == [[1, '"{\\"k\\":1}"']]  # a JSON string


def test_super_from_csv_parses_the_json(connection: Any, aws: AwsEnv) -> None:
    run(connection, "CREATE TABLE s (a BIGINT, j SUPER)")
    put(aws, "s.csv.gz", gzip.compress(b'"a","j"\n1,"{""k"":1}"\n2,\x00\n'))
    run(
        connection,
        f"COPY s (a, j) FROM 's3://{aws.bucket}/s.csv.gz' {ROLE} CSV IGNOREHEADER 1 GZIP NULL AS '\\0'",
    )
    assert run(connection, "SELECT a, j FROM s ORDER BY a") == [[1, '{"k": 1}'], [2, None]]


def test_a_missing_prefix_fails_as_redshift(table: Any, aws: AwsEnv) -> None:
    with pytest.raises(ProgrammingError, match="The specified S3 prefix 'nothing' does not exist"):
        run(table, copy(aws, "nothing"))


def test_an_injected_failure_fails_the_next_copy_only(
    table: Any, aws: AwsEnv, redshift_proxy: RedshiftProxy
) -> None:
    put(aws, "x.csv.gz", gzip.compress(b'"a","b"\n1,"x"\n'))
    redshift_proxy.fail_copies(1, "S3ServiceException:SlowDown", s3=True)
    with pytest.raises(ProgrammingError, match="SlowDown"):
        run(table, copy(aws, "x.csv.gz"))
    run(table, copy(aws, "x.csv.gz"))
    assert run(table, "SELECT count(*) FROM t") == [[1]]


def test_the_proxy_records_copies_redacted(
    table: Any, aws: AwsEnv, redshift_proxy: RedshiftProxy
) -> None:
    put(aws, "x.csv.gz", gzip.compress(b'"a","b"\n1,"x"\n'))
    statement = copy(aws, "x.csv.gz").replace(ROLE, "CREDENTIALS 'aws_secret_access_key=S3CR3T'")
    run(table, statement)
    assert redshift_proxy.copies[-1] == statement.replace("aws_secret_access_key=S3CR3T", "***")


# -- statement_timeout -------------------------------------------------------------------------


def test_a_statement_over_statement_timeout_is_cancelled_as_redshift_words_it(
    connection: Any,
) -> None:
    run(connection, "SET statement_timeout TO 200")
    with pytest.raises(ProgrammingError) as caught:
        run(connection, "SELECT pg_sleep(2)")
    details = caught.value.args[0]
    assert details["C"] == "57014"
    assert re.fullmatch(r"Query \(\d+\) canceled on user's request", details["M"])


# -- enable_case_sensitive_identifier ----------------------------------------------------------


def connect(proxy: RedshiftProxy, schema: str) -> Any:
    con = redshift_connector.connect(
        host=proxy.host,
        port=proxy.port,
        database="postgres",
        user="postgres",
        password="x",
        ssl=False,
    )
    con.autocommit = True
    run(con, f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    run(con, f'SET search_path = "{schema}"')
    return con


def test_a_case_sensitive_cluster_keeps_quoted_names_apart(
    case_sensitive_proxy: RedshiftProxy, aws: AwsEnv
) -> None:
    con = connect(case_sensitive_proxy, aws.schema)
    try:
        run(con, 'CREATE TABLE t ("IndvId" BIGINT, "indvid" BIGINT)')
        run(con, """INSERT INTO t ("IndvId", "indvid") VALUES (1, 2)""")
        assert run(con, 'SELECT "IndvId", "indvid" FROM t') == [[1, 2]]
    finally:
        con.close()


def test_with_the_setting_off_quoted_names_fold_and_collide(
    case_sensitive_proxy: RedshiftProxy, aws: AwsEnv
) -> None:
    con = connect(case_sensitive_proxy, aws.schema)
    try:
        run(con, "SET enable_case_sensitive_identifier TO off")
        with pytest.raises(ProgrammingError, match="specified more than once"):
            run(con, 'CREATE TABLE t ("IndvId" BIGINT, "indvid" BIGINT)')
    finally:
        con.close()


@pytest.mark.parametrize(
    ("statements", "shown"),
    [
        ([], "on"),
        (["SET enable_case_sensitive_identifier TO false"], "off"),
        (
            [
                "SET enable_case_sensitive_identifier = off",
                "RESET enable_case_sensitive_identifier",
            ],
            "on",
        ),
    ],
)
def test_the_session_setting_starts_at_the_cluster_default(
    case_sensitive_proxy: RedshiftProxy, aws: AwsEnv, statements: list[str], shown: str
) -> None:
    con = connect(case_sensitive_proxy, aws.schema)
    try:
        for statement in statements:
            run(con, statement)
        assert run(con, "SHOW enable_case_sensitive_identifier") == [[shown]]
    finally:
        con.close()


def test_a_default_cluster_folds_quoted_names(connection: Any) -> None:
    assert run(connection, "SHOW enable_case_sensitive_identifier") == [["off"]]
    run(connection, 'CREATE TABLE t ("IndvId" BIGINT)')
    assert run(connection, "SELECT indvid FROM t") == []


def test_a_bad_value_is_refused(connection: Any) -> None:
    with pytest.raises(ProgrammingError, match="invalid value"):
        run(connection, "SET enable_case_sensitive_identifier TO maybe")


def test_a_copy_in_a_case_sensitive_session_is_refused(
    case_sensitive_proxy: RedshiftProxy, aws: AwsEnv
) -> None:
    con = connect(case_sensitive_proxy, aws.schema)
    try:
        with pytest.raises(ProgrammingError, match="COPY only with enable_case_sensitive"):
            run(con, copy(aws, "x.csv.gz"))
    finally:
        con.close()


# -- constraints are informational ------------------------------------------------------------


def test_a_duplicate_primary_key_is_let_in_as_redshift_does(connection: Any) -> None:
    run(connection, 'CREATE TABLE k ("Name" VARCHAR(128) NOT NULL PRIMARY KEY, v INT UNIQUE)')
    run(connection, "INSERT INTO k VALUES ('fssync', 1)")
    run(connection, "INSERT INTO k VALUES ('fssync', 1)")
    assert run(connection, "SELECT count(*) FROM k") == [[2]]


def test_not_null_is_still_enforced(connection: Any) -> None:
    run(connection, 'CREATE TABLE k ("Name" VARCHAR(128) NOT NULL PRIMARY KEY)')
    with pytest.raises(ProgrammingError, match="null value"):
        run(connection, "INSERT INTO k VALUES (NULL)")


def test_an_unordered_select_comes_back_in_no_particular_order(connection: Any) -> None:
    run(connection, "CREATE TABLE k (a INT)")
    run(connection, "INSERT INTO k SELECT generate_series(1, 20)")
    orders = {tuple(a for (a,) in run(connection, "SELECT a FROM k")) for _ in range(10)}
    assert len(orders) > 1 and run(connection, "SELECT a FROM k ORDER BY a")[:2] == [[1], [2]]


# -- TLS: the stand-in can present a certificate --------------------------------------------------


def tls_handshake(server: TlsServer, hostname: str) -> None:
    """The PostgreSQL SSL request, then a verifying TLS handshake expecting `hostname`."""
    import ssl

    proxy = server.proxy
    context = ssl.create_default_context(cafile=str(server.ca))
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
        sock.sendall(struct.pack("!ii", 8, 80877103))
        assert sock.recv(1) == b"S"
        with context.wrap_socket(sock, server_hostname=hostname):
            pass


def test_a_verifying_client_refuses_a_certificate_naming_another_host(
    tls_proxy: Callable[[list[str]], TlsServer],
) -> None:
    import ssl

    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        tls_handshake(tls_proxy(["redshift.example.com"]), "127.0.0.1")


def test_redshift_connector_verifies_a_certificate_naming_the_host(
    tls_proxy: Callable[[list[str]], TlsServer],
) -> None:
    proxy = tls_proxy(["127.0.0.1"]).proxy
    con = redshift_connector.connect(
        host=proxy.host,
        port=proxy.port,
        database="postgres",
        user="postgres",
        password="x",
        ssl=True,
        sslmode="verify-full",
    )
    try:
        assert run(con, "SELECT 1") == [[1]]
    finally:
        con.close()
