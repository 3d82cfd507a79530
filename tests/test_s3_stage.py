"""S3Stage against moto's S3 server over real HTTP: layout, multipart, checkpoint, errors."""

# ruff: noqa: F811 - fixtures are imported by name from aws_support
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aws_support import bucket, moto_s3  # noqa: F401 - fixtures
from botocore.exceptions import ClientError, EndpointConnectionError

from standins.moto_s3 import MotoS3
from syncd.errors import TerminalStageError, TransientStageError
from syncd.timeutil import UTC
from warehouses.base import Stage
from warehouses.s3 import MULTIPART_THRESHOLD, S3Stage, map_s3_error, split_bucket
from warehouses.storage_only import read_checkpoint, write_checkpoint

END = datetime(2024, 3, 1, 6, 0, tzinfo=UTC)


def stage_for(moto: MotoS3, bucket: str, prefix: str = "", **options: Any) -> S3Stage:
    return S3Stage(bucket, prefix, endpoint_url=moto.endpoint_url, region="us-east-1", **options)


@pytest.fixture
def stage(moto_s3: MotoS3, bucket: str) -> S3Stage:
    return stage_for(moto_s3, bucket)


@pytest.fixture
def staged_file(tmp_path: Path) -> Path:
    path = tmp_path / "segment-20240301T000000Z-20240301T010000Z.csv.gz"
    path.write_bytes(b"\x1f\x8b fake gzip bytes")
    return path


def keys(moto: MotoS3, bucket: str) -> list[str]:
    listing = moto.client().list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_fills_the_stage_protocol(stage: S3Stage) -> None:
    assert isinstance(stage, Stage)


def test_put_returns_the_s3_uri(stage: S3Stage, bucket: str, staged_file: Path) -> None:
    assert stage.put(staged_file, staged_file.name) == f"s3://{bucket}/{staged_file.name}"


def test_put_stores_the_bytes(
    stage: S3Stage, moto_s3: MotoS3, bucket: str, staged_file: Path
) -> None:
    stage.put(staged_file, "a.csv.gz")
    body = moto_s3.client().get_object(Bucket=bucket, Key="a.csv.gz")["Body"].read()
    assert body == staged_file.read_bytes()


def test_a_bucket_with_a_path_puts_objects_under_it(
    moto_s3: MotoS3, bucket: str, staged_file: Path
) -> None:
    stage = stage_for(moto_s3, f"{bucket}/exports/fullstory/", "hauser-")
    stage.put(staged_file, "a.csv.gz")
    assert keys(moto_s3, bucket) == ["exports/fullstory/hauser-a.csv.gz"]


def test_split_bucket_reads_hausers_bucket_path() -> None:
    assert split_bucket("my-bucket/sub/path") == ("my-bucket", "sub/path/")


def test_a_large_file_goes_up_in_parts(
    stage: S3Stage, moto_s3: MotoS3, bucket: str, tmp_path: Path
) -> None:
    big = tmp_path / "big.parquet"
    big.write_bytes(os.urandom(1024) * (MULTIPART_THRESHOLD // 1024 + 1024))
    stage.put(big, big.name)
    head = moto_s3.client().head_object(Bucket=bucket, Key=big.name)
    assert head["ETag"].strip('"').endswith("-2")  # a multipart ETag: <md5>-<parts>


def test_server_side_encryption_is_requested(
    moto_s3: MotoS3, bucket: str, staged_file: Path
) -> None:
    stage = stage_for(moto_s3, bucket, server_side_encryption="AES256")
    stage.put(staged_file, "a.csv.gz")
    head = moto_s3.client().head_object(Bucket=bucket, Key="a.csv.gz")
    assert head["ServerSideEncryption"] == "AES256"


def test_delete_removes_the_object(
    stage: S3Stage, moto_s3: MotoS3, bucket: str, staged_file: Path
) -> None:
    stage.delete(stage.put(staged_file, "a.csv.gz"))
    assert keys(moto_s3, bucket) == []


def test_deleting_a_missing_object_is_fine(stage: S3Stage, bucket: str) -> None:
    stage.delete(f"s3://{bucket}/never-staged.csv.gz")


def test_delete_refuses_objects_outside_the_stage(moto_s3: MotoS3, bucket: str) -> None:
    stage = stage_for(moto_s3, f"{bucket}/sub")
    with pytest.raises(TerminalStageError, match="not inside"):
        stage.delete(f"s3://{bucket}/other/a.csv.gz")


def test_object_names_cannot_escape_the_prefix(stage: S3Stage, staged_file: Path) -> None:
    with pytest.raises(TerminalStageError, match="not a plain name"):
        stage.put(staged_file, "../outside.csv.gz")


def test_no_checkpoint_reads_as_none(stage: S3Stage) -> None:
    assert read_checkpoint(stage) is None


def test_the_checkpoint_round_trips(stage: S3Stage) -> None:
    write_checkpoint(stage, END)
    assert read_checkpoint(stage) == END


def test_the_checkpoint_is_hausers_object(moto_s3: MotoS3, bucket: str) -> None:
    write_checkpoint(stage_for(moto_s3, f"{bucket}/sub", "hauser-uploads/"), END)
    body = moto_s3.client().get_object(Bucket=bucket, Key="sub/hauser-uploads/.sync.hauser")
    assert body["Body"].read() == b"2024-03-01T06:00:00Z"


def test_a_hauser_checkpoint_is_read(moto_s3: MotoS3, bucket: str) -> None:
    moto_s3.client().put_object(Bucket=bucket, Key=".sync.hauser", Body=b"2024-03-01T06:00:00Z")
    assert read_checkpoint(stage_for(moto_s3, bucket)) == END


def test_a_garbled_checkpoint_is_terminal(moto_s3: MotoS3, bucket: str, stage: S3Stage) -> None:
    moto_s3.client().put_object(Bucket=bucket, Key=".sync.hauser", Body=b"yesterday")
    with pytest.raises(TerminalStageError, match="RFC 3339"):
        read_checkpoint(stage)


def test_check_passes_on_a_writable_bucket(stage: S3Stage) -> None:
    stage.check()


def test_check_names_a_missing_bucket(moto_s3: MotoS3) -> None:
    with pytest.raises(TerminalStageError, match="does not exist"):
        stage_for(moto_s3, "no-such-bucket-here").check()


def test_uploading_to_a_missing_bucket_is_terminal(moto_s3: MotoS3, staged_file: Path) -> None:
    with pytest.raises(TerminalStageError, match="NoSuchBucket"):
        stage_for(moto_s3, "no-such-bucket-here").put(staged_file, "a.csv.gz")


def test_an_unreachable_endpoint_is_transient(staged_file: Path, moto_s3: MotoS3) -> None:
    import boto3
    from botocore.config import Config

    from standins.postgres import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, config=Config(retries={"max_attempts": 1}, connect_timeout=2)
    )
    stage = S3Stage("b-u-c", endpoint_url=endpoint, client=client)
    with pytest.raises(TransientStageError):
        read_checkpoint(stage)


@pytest.mark.parametrize(
    ("code", "transient"),
    [("SlowDown", True), ("InternalError", True), ("AccessDenied", False), ("NoSuchBucket", False)],
)
def test_s3_error_codes_are_sorted(code: str, transient: bool) -> None:
    exc = ClientError({"Error": {"Code": code, "Message": "m"}}, "PutObject")
    assert map_s3_error(exc, "upload").transient is transient


def test_connection_errors_are_transient() -> None:
    exc = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert isinstance(map_s3_error(exc, "upload"), TransientStageError)


def test_the_repr_names_no_credentials(stage: S3Stage) -> None:
    assert "secret" not in repr(stage).lower() and "key_id" not in repr(stage).lower()
