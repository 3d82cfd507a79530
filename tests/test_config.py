"""Configuration: hauser's files load with their meaning, mistakes are named, secrets stay hidden."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from syncd.config import (
    KEYS,
    SECTIONS,
    Key,
    Kind,
    LoadedSettings,
    Secret,
    Settings,
    example_toml,
    load_settings,
    reference_markdown,
    settings_from_mapping,
)
from syncd.config.__main__ import main as config_main
from syncd.errors import ConfigError
from syncd.timeutil import UTC

ROOT = Path(__file__).resolve().parent.parent
HAUSER_EXAMPLE = ROOT / "tests" / "fixtures" / "hauser-example-config.toml"
PLACEHOLDER = (
    "StartTime = <Start time for data exports in the following format: 2018-12-27T18:30:00Z>"
)


def load(data: dict[str, Any], env: dict[str, str] | None = None) -> LoadedSettings:
    return settings_from_mapping(data, env or {})


def settings(data: dict[str, Any], env: dict[str, str] | None = None) -> Settings:
    return load(data, env).settings


def problems(data: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(data, env)
    return caught.value.problems


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- hauser's files -----------------------------------------------------------------------------


def test_hauser_example_loads_with_the_warnings_it_deserves() -> None:
    loaded = load_settings(HAUSER_EXAMPLE, env={})
    assert loaded.warnings == (
        "[local] StartTime is deprecated and ignored (as in hauser); use the top-level "
        "StartTime, with [local] UseStartTime = true to force it",
        "StorageOnly = false is ignored: Provider 'local' only stores files",
    )


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("provider", "local"),
        ("storage_only", True),
        ("export_duration", timedelta(hours=6)),
        ("export_delay", timedelta(hours=24)),
        ("start_time", None),
        ("tmp_dir", Path("tmp")),
        ("backoff", timedelta(seconds=30)),
        ("backoff_steps_max", 8),
        ("redshift.port", 5439),
        ("redshift.varchar_max", 65535),
        ("bigquery.export_table", "fs_export"),
        ("bigquery.partition_expiration", timedelta(0)),
        ("s3.timeout", timedelta(minutes=5)),
        ("local.use_start_time", True),
        ("local.save_dir", Path("<Path to your local folder to save files to>")),
    ],
)
def test_hauser_example_keeps_its_meaning(attribute: str, expected: object) -> None:
    value: object = load_settings(HAUSER_EXAMPLE, env={}).settings
    for part in attribute.split("."):
        value = getattr(value, part)
    assert value == expected


def test_hauser_placeholder_start_time_is_reported_with_line_and_column(tmp_path: Path) -> None:
    text = HAUSER_EXAMPLE.read_text()
    original = text.replace("StartTime = 2018-12-27T18:30:00Z", PLACEHOLDER)
    line = original.splitlines().index(PLACEHOLDER) + 1
    path = write(tmp_path, original)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert caught.value.problems == [
        f"config file {path} is not valid TOML: Invalid value (at line {line}, column 13)"
    ]


HAUSER_V1 = """
FsApiToken = "token-from-file"
Backoff = "30s"
BackoffStepsMax = 8
CheckInterval = "30m"
ListExportLimit = 20
TmpDir = "/tmp"
Warehouse = "redshift"
GroupFilesByDay = true
ExportURL = "https://export.fullstory.com/api/v1/"

[s3]
Bucket = "my-bucket/hauser"
Region = "us-east-2"
Timeout = "5m"
S3Only = true

[redshift]
Host = "cluster.redshift.amazonaws.com"
Port = "5439"
DB = "dev"
User = "loader"
Password = "pw"
Credentials = "aws_iam_role=arn:aws:iam::1:role/r"
VarCharMax = 65535

[gcs]
Bucket = "unused"
GCSOnly = true
"""


def test_hauser_v1_file_maps_every_deprecated_key(tmp_path: Path) -> None:
    loaded = load_settings(write(tmp_path, HAUSER_V1), env={})
    assert loaded.warnings == (
        "Warehouse = 'redshift' is deprecated; read as Provider = 'aws'",
        "ExportURL is deprecated; read as LegacyApiURL",
        "CheckInterval is deprecated and unused; ignored",
        "ListExportLimit is deprecated and unused; ignored",
        "[s3] S3Only is deprecated; use StorageOnly ([s3] S3Only = true is ORed into it)",
        "[gcs] GCSOnly is deprecated and has no effect with Provider 'aws' (as in hauser)",
        "GroupFilesByDay = true is deprecated; read as ExportDuration = '24h'",
    )


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("provider", "aws"),
        ("storage_only", True),
        ("export_duration", timedelta(hours=24)),
        ("legacy_api_url", "https://export.fullstory.com/api/v1"),
        ("s3.bucket_name", "my-bucket"),
        ("s3.key_prefix", "hauser/"),
        ("redshift.region", "us-east-2"),
    ],
)
def test_hauser_v1_file_keeps_its_meaning(tmp_path: Path, attribute: str, expected: object) -> None:
    value: object = load_settings(write(tmp_path, HAUSER_V1), env={}).settings
    for part in attribute.split("."):
        value = getattr(value, part)
    assert value == expected


def test_gcs_only_makes_gcp_storage_only() -> None:
    assert settings({"Provider": "gcp", "gcs": {"Bucket": "b", "GCSOnly": True}}).storage_only


def test_s3_only_does_not_touch_gcp_as_in_hauser() -> None:
    loaded = load(
        {"Warehouse": "bigquery", "s3": {"S3Only": True}, "gcs": {"Bucket": "b"}},
        {"SYNCD_BIGQUERY_PROJECT": "p", "SYNCD_BIGQUERY_DATASET": "d"},
    )
    assert (loaded.settings.provider, loaded.settings.storage_only) == ("gcp", False)


def test_provider_wins_over_warehouse() -> None:
    loaded = load({"Provider": "duckdb", "Warehouse": "redshift"})
    assert (loaded.settings.provider, loaded.warnings) == (
        "duckdb",
        ("Warehouse is deprecated and ignored because Provider is set",),
    )


def test_group_files_by_day_yields_to_an_explicit_export_duration() -> None:
    loaded = load({"GroupFilesByDay": True, "ExportDuration": "6h"})
    assert (loaded.settings.export_duration, loaded.warnings) == (
        timedelta(hours=6),
        ("GroupFilesByDay is deprecated and ignored because ExportDuration is set",),
    )


def test_group_files_by_day_keeps_its_v1_meaning_for_legacy_bundles() -> None:
    loaded = load({"Source": "legacy", "GroupFilesByDay": True})
    assert (
        loaded.settings.group_files_by_day,
        loaded.settings.export_duration,
        loaded.warnings,
    ) == (
        True,
        timedelta(hours=1),
        (),
    )


# -- defaults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("provider", "duckdb"),
        ("source", "segment"),
        ("api_url", "https://api.fullstory.com"),
        ("legacy_api_url", "https://export.fullstory.com/api/v1"),
        ("segment_id", "everyone"),
        ("storage_only", False),
        ("staged_format", "auto"),
        ("export_duration", timedelta(hours=1)),
        ("export_delay", timedelta(hours=24)),
        ("start_time", None),
        ("backoff", timedelta(seconds=30)),
        ("backoff_steps_max", 8),
        ("poll_interval", timedelta(seconds=5)),
        ("operation_timeout", timedelta(hours=2)),
        ("http_timeout", timedelta(seconds=60)),
        ("download_timeout", timedelta(minutes=30)),
        ("max_batch_attempts", 5),
        ("held_retry_interval", timedelta(minutes=15)),
        ("state_dir", Path("syncd-data/tmp/syncd-state")),
        ("log_format", "auto"),
        ("log_level", "info"),
        ("duckdb.path", Path("syncd-data/syncd.duckdb")),
        ("duckdb.rejects_table", "fsrejects"),
        ("postgres.port", 5432),
        ("postgres.ssl_mode", None),
        ("s3.timeout", timedelta(minutes=5)),
        ("redshift.database_schema", "public"),
        ("redshift.varchar_max", 65535),
        ("redshift.statement_timeout", timedelta(hours=1)),
        ("redshift.export_table", "fsexport"),
        ("bigquery.sync_table", "fssync"),
        ("metrics.bind", ("127.0.0.1", 9108)),
    ],
)
def test_defaults_are_safe(attribute: str, expected: object) -> None:
    value: object = settings({})
    for part in attribute.split("."):
        value = getattr(value, part)
    assert value == expected


def test_no_file_means_defaults() -> None:
    assert load_settings(None, env={}).settings == settings({})


@pytest.mark.parametrize("key", ["ExportDuration", "ExportDelay"])
def test_zero_duration_means_the_default_as_in_hauser(key: str) -> None:
    assert settings({key: "0"}) == settings({})


def test_empty_string_means_the_default_as_in_hauser() -> None:
    assert settings({"ApiURL": "", "SegmentId": "", "StartTime": ""}) == settings({})


def test_start_time_is_aware_utc() -> None:
    start = settings({"StartTime": "2026-01-01T02:00:00+02:00"}).start_time
    assert start == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)


def test_toml_datetime_start_time_is_accepted() -> None:
    start = settings({"StartTime": datetime(2026, 1, 1, tzinfo=UTC)}).start_time
    assert start == datetime(2026, 1, 1, tzinfo=UTC)


def test_save_as_json_stages_ndjson() -> None:
    assert settings({"SaveAsJson": True}).staged_format == "ndjson"


def test_redshift_search_path_leaves_names_unqualified() -> None:
    assert settings({"redshift": {"DatabaseSchema": "search_path"}}).redshift.schema is None


def test_metrics_can_be_turned_off() -> None:
    assert settings({"metrics": {"Address": "off"}}).metrics.bind is None


def test_metrics_address_gives_host_and_port() -> None:
    assert settings({"metrics": {"Address": "127.0.0.1:9108"}}).metrics.bind == ("127.0.0.1", 9108)


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings({}).provider = "aws"  # type: ignore[misc]


def test_settings_fields_match_the_key_table() -> None:
    current = [k for k in KEYS if not k.deprecated]
    defaults = settings({})
    holders: dict[str, Any] = {"": defaults, **{s: getattr(defaults, s) for s in SECTIONS}}
    fields = {(s, f.name) for s, obj in holders.items() for f in dataclasses.fields(obj)}
    fields -= {("", section) for section in SECTIONS} | {("", "sections")}
    assert fields == {(k.section, k.field) for k in current}


# -- case -------------------------------------------------------------------------------------


def test_keys_and_sections_match_case_insensitively() -> None:
    loaded = settings(
        {
            "exportDURATION": "2h",
            "S3": {"bucket": "b"},
            "Provider": "AWS",
            "REDSHIFT": {"host": "h", "db": "d", "USER": "u", "iamrole": "arn"},
        }
    )
    assert (loaded.export_duration, loaded.s3.bucket, loaded.provider) == (
        timedelta(hours=2),
        "b",
        "aws",
    )


def test_a_key_given_twice_in_different_case_is_an_error() -> None:
    assert problems({"s3": {"Bucket": "a", "bucket": "b"}}) == [
        "[s3] Bucket is given twice (as 'Bucket' and 'bucket'); keep one"
    ]


# -- mistakes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"ExportDuraton": "1h"},
            "unknown key 'ExportDuraton' in [top level]; did you mean 'ExportDuration'?",
        ),
        ({"s3": {"Buckt": "b"}}, "unknown key 'Buckt' in [s3]; did you mean 'Bucket'?"),
        ({"Bucket": "b"}, "unknown key 'Bucket' in [top level]; did you mean '[s3] Bucket'?"),
        ({"Frobnicate": 1}, "unknown key 'Frobnicate' in [top level]"),
        ({"s4": {"Bucket": "b"}}, "unknown section [s4]; did you mean [s3]?"),
        ({"s3": "bucket"}, "[s3] must be a table (a [s3] section)"),
        (
            {"ExportDuration": 3600},
            "ExportDuration: 3600 is a bare number; add a unit, e.g. '3600s', '15m' or '1h'",
        ),
        (
            {"Backoff": "90"},
            "Backoff: '90' is a bare number; add a unit, e.g. '90s', '15m' or '1h'",
        ),
        (
            {"PollInterval": "soon"},
            "PollInterval: 'soon' is not a duration; write a number with a unit (ms, s, m, h, d), "
            "e.g. '90s', '15m', '1h30m'",
        ),
        ({"ExportDuration": "10m"}, "ExportDuration: '10m' is out of range; allowed: 15m to 24h"),
        ({"ExportDuration": "48h"}, "ExportDuration: '48h' is out of range; allowed: 15m to 24h"),
        (
            {"ExportDuration": "7h"},
            "ExportDuration: '7h' must divide 24h evenly, e.g. '15m', '30m', '1h', '2h', '3h', "
            "'4h', '6h', '8h', '12h' or '24h'",
        ),
        ({"ExportDelay": "30m"}, "ExportDelay: '30m' is too small; the minimum is 1h"),
        ({"HttpTimeout": "0s"}, "HttpTimeout: must be more than 0s"),
        (
            {"s3": {"Timeout": "-5m"}},
            "[s3] Timeout: '-5m' is negative; durations must be zero or more",
        ),
        ({"BackoffStepsMax": 0}, "BackoffStepsMax: 0 is too small; the minimum is 1"),
        ({"MaxBatchAttempts": "5"}, 'MaxBatchAttempts: expected a whole number, got "5"'),
        ({"StorageOnly": "yes"}, 'StorageOnly: expected true or false, got "yes"'),
        (
            {"StartTime": "yesterday"},
            "StartTime: 'yesterday' is not an RFC 3339 timestamp; write it as RFC 3339, "
            "e.g. '2026-01-01T00:00:00Z'",
        ),
        (
            {"StartTime": datetime(2026, 1, 1)},
            "StartTime: 2026-01-01T00:00:00 has no time zone; write it as RFC 3339, "
            "e.g. '2026-01-01T00:00:00Z'",
        ),
        (
            {"Provider": "azure"},
            "Provider: 'azure' is not one of 'duckdb', 'postgres', 'local', 'aws', 'gcp', 'snowflake'",
        ),
        ({"Source": "bundles"}, "Source: 'bundles' is not one of 'segment', 'legacy'"),
        ({"LogFormat": "xml"}, "LogFormat: 'xml' is not one of 'auto', 'json', 'console'"),
        (
            {"Warehouse": "snowflake"},
            "Warehouse: 'snowflake' is not one of 'local', 'redshift', 'bigquery'",
        ),
        (
            {"ApiURL": "api.fullstory.com"},
            "ApiURL: 'api.fullstory.com' is not an http:// or https:// URL",
        ),
        ({"FilePrefix": True}, "FilePrefix: expected a string, got true"),
        ({"StorageOnly": 1.5}, "StorageOnly: expected true or false, got 1.5"),
        (
            {"MaxBatchAttempts": datetime(2000, 1, 1, fold=1, tzinfo=UTC)},
            "MaxBatchAttempts: expected a whole number, got 2000-01-01T00:00:00+00:00",
        ),
        (
            {"bigquery": {"Clustering": [1, "a"]}},
            '[bigquery] Clustering: expected a list of names, e.g. ["EventStart", "IndvId"], '
            'got [1, "a"]',
        ),
        (
            {"postgres": {"Port": 70000}},
            "[postgres] Port: expected a port number from 1 to 65535, got 70000",
        ),
        (
            {"redshift": {"VarCharMax": 0}},
            "[redshift] VarCharMax: 0 is out of range; allowed: 1 to 65535",
        ),
        (
            {"duckdb": {"ExportTable": "fs-export"}},
            "[duckdb] ExportTable: 'fs-export' is not a valid name: use letters, digits and "
            "underscores, starting with a letter or underscore (at most 127 characters)",
        ),
        (
            {"duckdb": {"MemoryLimit": "lots"}},
            "[duckdb] MemoryLimit: 'lots' must be a size such as '256MB' or '2GB' (KB, MB, GB, TB)",
        ),
        ({"duckdb": {"Threads": -1}}, "[duckdb] Threads: -1 is too small; the minimum is 0"),
        (
            {"duckdb": {"SyncTable": "FSEXPORT"}},
            "[duckdb] SyncTable: is the same table as [duckdb] ExportTable; use another name",
        ),
        (
            {
                "Provider": "aws",
                "SaveAsJson": True,
                "s3": {"Bucket": "b"},
                "redshift": {"Host": "h", "DB": "d", "User": "u", "IAMRole": "arn"},
            },
            "SaveAsJson: true needs Provider 'local' or 'duckdb', or StorageOnly = true; "
            "Provider 'aws' cannot load JSON files",
        ),
        (
            {"SaveAsJson": True, "StagedFormat": "parquet"},
            "StagedFormat: 'parquet' conflicts with SaveAsJson = true (which stages NDJSON); "
            "remove one of them",
        ),
        (
            {"FilePrefix": "../outside/"},
            "FilePrefix: '../outside/' must be a relative name (no leading '/', no '..')",
        ),
        (
            {"metrics": {"Address": "9108"}},
            "[metrics] Address: '9108' must be host:port with a port from 1 to 65535, "
            "e.g. '127.0.0.1:9108', or 'off'",
        ),
        (
            {"AdditionalHttpHeader": [{"Key": "X Bad", "Value": "v"}]},
            "AdditionalHttpHeader: table 1: Key must be an HTTP header name, not 'X Bad'",
        ),
        (
            {"Provider": "aws", "s3": {"Bucket": "b", "KMSKeyId": "k"}, "StorageOnly": True},
            "[s3] KMSKeyId: is only used with ServerSideEncryption = 'aws:kms'",
        ),
        (
            {
                "Provider": "gcp",
                "gcs": {"Bucket": "b"},
                "bigquery": {"Project": "p", "Dataset": "d", "Clustering": ["EventStrat"]},
            },
            "[bigquery] Clustering: 'EventStrat' is not a column of the export table; "
            "did you mean 'EventStart'?",
        ),
    ],
)
def test_each_mistake_is_named(data: dict[str, Any], expected: str) -> None:
    assert problems(data) == [expected]


def test_aws_names_every_missing_key() -> None:
    assert problems({"Provider": "aws"}) == [
        "[s3] Bucket: required with Provider 'aws'",
        "[redshift] Host: required with Provider 'aws'",
        "[redshift] DB: required with Provider 'aws'",
        "[redshift] User: required with Provider 'aws'",
        "[redshift] IAMRole: required with Provider 'aws' (or [redshift] Credentials) so COPY "
        "can read S3",
    ]


def test_gcp_needs_bigquery_unless_storage_only() -> None:
    assert problems({"Provider": "gcp", "gcs": {"Bucket": "b"}}) == [
        "[bigquery] Project: required with Provider 'gcp'",
        "[bigquery] Dataset: required with Provider 'gcp'",
    ]


def test_gcp_storage_only_needs_just_the_bucket() -> None:
    assert settings({"Provider": "gcp", "StorageOnly": True, "gcs": {"Bucket": "b"}}).storage_only


def test_postgres_needs_user_and_db() -> None:
    assert problems({"Provider": "postgres"}) == [
        "[postgres] User: required with Provider 'postgres'",
        "[postgres] DB: required with Provider 'postgres'",
    ]


def test_redshift_credentials_and_iam_role_exclude_each_other() -> None:
    data = {
        "Provider": "aws",
        "s3": {"Bucket": "b"},
        "redshift": {"Host": "h", "DB": "d", "User": "u", "IAMRole": "arn", "Credentials": "c"},
    }
    assert problems(data) == [
        "[redshift] Credentials: and [redshift] IAMRole are both set; set one"
    ]


def test_bigquery_clusters_on_four_columns_at_most() -> None:
    data = {
        "Provider": "gcp",
        "gcs": {"Bucket": "b"},
        "bigquery": {
            "Project": "p",
            "Dataset": "d",
            "Clustering": ["EventStart", "IndvId", "UserId", "SessionId", "PageId"],
        },
    }
    assert problems(data) == ["[bigquery] Clustering: has 5 columns; BigQuery allows at most 4"]


def test_unused_provider_sections_may_keep_placeholders() -> None:
    data = {"bigquery": {"ExportTable": "<your export table>"}, "redshift": {"SyncTable": "a b"}}
    assert settings(data).bigquery.export_table == "<your export table>"


def test_all_problems_are_reported_together() -> None:
    data = {"ExportDuraton": "1h", "ExportDelay": "10m", "Provider": "azure", "Backoff": 30}
    assert len(problems(data)) == 4


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert caught.value.problems == [f"config file {path} does not exist"]


def test_bad_toml_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, 'Provider = "duckdb"\nExportDuration = 1h\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert "(at line 2, column 19)" in caught.value.problems[0]


# -- environment --------------------------------------------------------------------------------


def test_environment_beats_the_file() -> None:
    loaded = settings({"ExportDuration": "1h"}, {"SYNCD_EXPORTDURATION": "2h"})
    assert loaded.export_duration == timedelta(hours=2)


def test_section_keys_have_section_variables() -> None:
    loaded = settings({}, {"SYNCD_REDSHIFT_PASSWORD": "pw", "SYNCD_S3_TIMEOUT": "1m"})
    assert (loaded.redshift.password.reveal(), loaded.s3.timeout) == ("pw", timedelta(minutes=1))


def test_environment_values_are_read_as_toml_values() -> None:
    env = {
        "SYNCD_STORAGEONLY": "TRUE",
        "SYNCD_MAXBATCHATTEMPTS": "12",
        "SYNCD_POSTGRES_PORT": "6543",
    }
    loaded = settings({}, env)
    assert (loaded.storage_only, loaded.max_batch_attempts, loaded.postgres.port) == (
        True,
        12,
        6543,
    )


def test_a_bad_environment_value_names_the_variable() -> None:
    assert problems({}, {"SYNCD_MAXBATCHATTEMPTS": "twelve"}) == [
        'MaxBatchAttempts (from SYNCD_MAXBATCHATTEMPTS): expected a whole number, got "twelve"'
    ]


def test_a_bare_number_from_the_environment_asks_for_a_unit() -> None:
    assert problems({}, {"SYNCD_EXPORTDELAY": "7200"}) == [
        "ExportDelay (from SYNCD_EXPORTDELAY): '7200' is a bare number; add a unit, "
        "e.g. '7200s', '15m' or '1h'"
    ]


def test_an_empty_variable_counts_as_unset() -> None:
    assert settings({"SegmentId": "seg"}, {"SYNCD_SEGMENTID": ""}).segment_id == "seg"


def test_additional_http_headers_from_the_file() -> None:
    data = {
        "AdditionalHttpHeader": [{"key": "X-Tenant", "VALUE": "t1"}, {"Key": "X-B", "Value": ""}]
    }
    assert settings(data).reveal_http_headers() == [("X-Tenant", "t1"), ("X-B", "")]


def test_list_variables_take_commas_or_a_toml_array() -> None:
    commas = settings({}, {"SYNCD_BIGQUERY_CLUSTERING": "EventStart, IndvId"})
    array = settings({}, {"SYNCD_BIGQUERY_CLUSTERING": '["EventStart", "IndvId"]'})
    assert commas.bigquery.clustering == array.bigquery.clustering == ("EventStart", "IndvId")


def test_headers_from_the_environment() -> None:
    loaded = settings({}, {"SYNCD_ADDITIONALHTTPHEADER": '[{Key = "X-Proxy", Value = "v"}]'})
    assert loaded.reveal_http_headers() == [("X-Proxy", "v")]


def test_file_variant_reads_the_value_and_strips_the_newline(tmp_path: Path) -> None:
    secret = write(tmp_path, "s3cret\n", "password")
    loaded = settings({}, {"SYNCD_POSTGRES_PASSWORD_FILE": str(secret)})
    assert loaded.postgres.password.reveal() == "s3cret"


def test_a_bad_value_from_a_file_twin_names_the_twin(tmp_path: Path) -> None:
    path = write(tmp_path, "many\n", "attempts")
    assert problems({}, {"SYNCD_MAXBATCHATTEMPTS_FILE": str(path)}) == [
        'MaxBatchAttempts (from SYNCD_MAXBATCHATTEMPTS_FILE): expected a whole number, got "many"'
    ]


def test_a_variable_and_its_file_twin_together_are_an_error(tmp_path: Path) -> None:
    secret = write(tmp_path, "x", "password")
    env = {"SYNCD_POSTGRES_PASSWORD": "y", "SYNCD_POSTGRES_PASSWORD_FILE": str(secret)}
    assert problems({}, env) == [
        "SYNCD_POSTGRES_PASSWORD and SYNCD_POSTGRES_PASSWORD_FILE are both set; set only one"
    ]


def test_an_unreadable_file_twin_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert problems({}, {"SYNCD_FSAPITOKEN_FILE": str(missing)}) == [
        f"SYNCD_FSAPITOKEN_FILE: cannot read {missing}: No such file or directory"
    ]


def test_fullstory_api_token_as_in_hauser() -> None:
    loaded = settings({"FsApiToken": "from-file"}, {"FULLSTORY_API_TOKEN": "from-env"})
    assert loaded.fs_api_token.reveal() == "from-env"


def test_fullstory_api_token_file(tmp_path: Path) -> None:
    token = write(tmp_path, "from-secret-file\n", "token")
    loaded = settings({}, {"FULLSTORY_API_TOKEN_FILE": str(token)})
    assert loaded.fs_api_token.reveal() == "from-secret-file"


def test_syncd_variable_beats_fullstory_api_token() -> None:
    loaded = settings({}, {"FULLSTORY_API_TOKEN": "hauser", "SYNCD_FSAPITOKEN": "syncd"})
    assert loaded.fs_api_token.reveal() == "syncd"


def test_an_unknown_syncd_variable_is_a_warning_with_a_suggestion() -> None:
    assert load({}, {"SYNCD_EXPORTDURATON": "2h"}).warnings == (
        "environment variable SYNCD_EXPORTDURATON is not a syncd setting; "
        "did you mean 'SYNCD_EXPORTDURATION'?",
    )


def _env_sample(k: Key) -> str:
    """A valid environment value for any key."""
    special = {
        "AdditionalHttpHeader": k.example,
        "StagedFormat": "csv",
        "[metrics] Address": "127.0.0.1:9108",
        "[s3] ServerSideEncryption": "AES256",
    }
    if k.label in special:
        return special[k.label]
    if k.example:
        return k.example.strip('"')
    if k.kind is Kind.BOOL:
        return "true"
    if k.default not in (None, "", ()):
        return str(k.default)
    samples = {Kind.SECRET: "x", Kind.STRING: "x", Kind.URL: "http://127.0.0.1:1"}
    return {**samples, Kind.NAMES: "EventStart"}[k.kind]


@pytest.mark.parametrize("k", [k for k in KEYS if not k.deprecated], ids=lambda k: k.env_var)
def test_every_key_has_an_environment_override(k: Key) -> None:
    assert load({}, {k.env_var: _env_sample(k)}).origins[k.label] == f"env {k.env_var}"


# -- secrets ------------------------------------------------------------------------------------

SECRETS = {
    "token": "tok-7f3a9c1e",
    "redshift": "rs-pass-81d2",
    "credentials": "aws_access_key_id=AKIA5EXAMPLE",
    "postgres": "pg-pass-44b0",
    "header": "hdr-9e0c",
}


def _secret_settings() -> LoadedSettings:
    data = {
        "FsApiToken": SECRETS["token"],
        "AdditionalHttpHeader": [{"Key": "X-Proxy-Token", "Value": SECRETS["header"]}],
        "redshift": {"Password": SECRETS["redshift"], "Credentials": SECRETS["credentials"]},
        "postgres": {"Password": SECRETS["postgres"]},
    }
    return load(data)


def _leaks(text: str) -> list[str]:
    return [name for name, value in SECRETS.items() if value in text]


def test_secret_prints_as_stars() -> None:
    secret = Secret("hunter2")
    assert (repr(secret), str(secret), f"{secret}", f"{secret:>20}") == ("***",) * 4


def test_secret_reveals_its_value() -> None:
    assert Secret("hunter2").reveal() == "hunter2"


def test_secrets_never_appear_in_the_settings_repr() -> None:
    assert _leaks(repr(_secret_settings())) == []


def test_secrets_are_masked_in_the_redacted_dict() -> None:
    redacted = _secret_settings().settings.redacted()
    assert (_leaks(json.dumps(redacted)), redacted["redshift"]["Password"]) == ([], "***")


def test_unset_secrets_show_as_empty_in_the_redacted_dict() -> None:
    assert settings({}).redacted()["FsApiToken"] == ""


@pytest.mark.parametrize(
    "data",
    [
        {"redshift": {"Password": ["rs-pass-81d2"]}},
        {"Passwrd": "rs-pass-81d2"},
        {"postgres": {"Passwrod": "pg-pass-44b0"}},
        {"AdditionalHttpHeader": [{"Key": "X-A", "Value": "hdr-9e0c\nInjected: 1"}]},
    ],
)
def test_secrets_never_appear_in_error_messages(data: dict[str, Any]) -> None:
    assert _leaks(str(problems(data))) == []


def test_secret_type_errors_do_not_echo_the_value() -> None:
    assert problems({"FsApiToken": 12345678}) == ["FsApiToken: expected a string, got an integer"]


def test_secrets_from_the_environment_never_appear_in_error_messages() -> None:
    env = {"SYNCD_REDSHIFT_PASSWORD": SECRETS["redshift"], "SYNCD_EXPORTDELAY": "1m"}
    assert _leaks(str(problems({}, env))) == []


def test_secrets_never_appear_in_captured_logs() -> None:
    loaded = _secret_settings()
    with structlog.testing.capture_logs() as logs:
        log = structlog.get_logger("syncd.test")
        log.info("settings", settings=loaded.settings, config=loaded.settings.redacted())
        log.warning("config", warnings=loaded.warnings, origins=loaded.origins)
    assert _leaks(repr(logs)) == []


# -- generated docs -----------------------------------------------------------------------------


def test_configuration_reference_is_current() -> None:
    current = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert current == reference_markdown(), (
        "docs/configuration.md is stale: python -m syncd.config --markdown > docs/configuration.md"
    )


def test_example_config_is_current() -> None:
    current = (ROOT / "example-config.toml").read_text(encoding="utf-8")
    assert current == example_toml(), (
        "example-config.toml is stale: python -m syncd.config --example > example-config.toml"
    )


def test_example_config_loads_to_the_defaults() -> None:
    assert load_settings(ROOT / "example-config.toml", env={}).settings == settings({})


def test_every_key_is_documented() -> None:
    reference = reference_markdown()
    assert [k.env_var for k in KEYS if not k.deprecated and k.env_var not in reference] == []


def test_config_module_prints_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    config_main(["--markdown"])
    assert capsys.readouterr().out == reference_markdown()


@pytest.mark.parametrize("key", ["ApiURL", "LegacyApiURL"])
def test_plain_http_to_a_remote_api_is_a_warning(key: str) -> None:
    warnings = load({key: "http://api.example.com/path?secret=1"}).warnings
    assert warnings == (
        f"{key}: api.example.com is reached over plain http://, so the API key travels in "
        "clear text; use https:// (only loopback hosts are exempt)",
    )


@pytest.mark.parametrize(
    "url",
    ["https://api.example.com", "http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:9"],
)
def test_https_or_loopback_api_is_no_warning(url: str) -> None:
    assert load({"ApiURL": url}).warnings == ()
