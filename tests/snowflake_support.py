"""The Snowflake stand-in for the tests: fakesnow's server (standins/snowflake.py) reading
s3:// from the shared moto S3 server.

Also a crash runner: `python tests/snowflake_support.py POINT[@N] once -c syncd.toml` is
`tests/crash_runner.py` with one more point, `sf_loaded` (COPY INTO and the CustomVars
conversion done inside the open commit transaction).

It starts once per test process, on 127.0.0.1 and a free port, the first time a test asks for
it, and stops (by its handle) when the process exits. Each test gets a fresh schema, so tests
never see each other's tables. A stand-in that cannot start fails the test with the reason.
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path
from typing import Any

from aws_support import _shared, new_bucket, s3_stage, shared_moto

from standins.moto_s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY
from standins.snowflake import (
    ACCOUNT,
    DATABASE,
    INTEGRATION,
    PASSWORD,
    USER,
    SnowflakeStandin,
    start_snowflake_standin,
)
from warehouses.local import LocalStage
from warehouses.s3 import S3Stage
from warehouses.snowflake import SnowflakeWarehouse


def shared_snowflake() -> SnowflakeStandin:
    def start() -> SnowflakeStandin:
        log = Path(tempfile.mkdtemp(prefix="syncd-fakesnow-")) / "fakesnow.log"
        return start_snowflake_standin(log, s3_endpoint=shared_moto().endpoint_url)

    return _shared("Snowflake (fakesnow)", start, lambda s: s.stop())


def new_schema() -> str:
    return f"S_{secrets.token_hex(4).upper()}"


def snowflake_warehouse(schema: str | None = None, **options: Any) -> SnowflakeWarehouse:
    """A SnowflakeWarehouse on the shared stand-in, in a fresh schema, reading S3 with the
    storage integration the stand-in knows (or the options given)."""
    standin = shared_snowflake()
    settings: dict[str, Any] = {
        "storage_integration": "" if options.get("stage") == "internal" else INTEGRATION,
        "port": standin.port,
        "login_timeout": 30,
        **options,
    }
    if "aws_key_id" in settings:
        settings.pop("storage_integration")
    if "private_key_file" not in settings:
        settings.setdefault("password", PASSWORD)
    return SnowflakeWarehouse(
        account=ACCOUNT,
        user=USER,
        database=DATABASE,
        schema=schema or new_schema(),
        host="127.0.0.1",
        protocol="http",
        **settings,
    )


def snowflake_over_s3(folder: Path) -> tuple[SnowflakeWarehouse, S3Stage]:
    return snowflake_warehouse(), s3_stage()


def snowflake_over_internal(folder: Path) -> tuple[SnowflakeWarehouse, LocalStage]:
    """Staged in a local folder, uploaded with PUT to the table's own stage."""
    return snowflake_warehouse(stage="internal"), LocalStage(folder / "stage")


def credentials_options() -> dict[str, str]:
    """COPY with the S3 stand-in's keys instead of a storage integration."""
    return {"aws_key_id": ACCESS_KEY_ID, "aws_secret_key": SECRET_ACCESS_KEY}


def snowflake_overrides(schema: str, bucket: str = "") -> dict[str, object]:
    """Config keys for syncd on the Snowflake stand-in over the moto bucket `bucket`, or over
    the table's internal stage when no bucket is given."""
    standin = shared_snowflake()
    staging: dict[str, object] = {"snowflake.Stage": "internal"}
    if bucket:
        staging = {
            "s3.Bucket": bucket,
            "s3.Region": "us-east-1",
            "s3.EndpointURL": shared_moto().endpoint_url,
            "snowflake.StorageIntegration": INTEGRATION,
        }
    return {
        "Provider": "snowflake",
        "StagedFormat": "parquet",
        **staging,
        "snowflake.Account": ACCOUNT,
        "snowflake.User": USER,
        "snowflake.Password": PASSWORD,
        "snowflake.Database": DATABASE,
        "snowflake.Schema": schema,
        "snowflake.Host": "127.0.0.1",
        "snowflake.Port": standin.port,
        "snowflake.Protocol": "http",
    }


def snowflake_rows(schema: str, table: str = "fsexport") -> list[dict[str, Any]]:
    """Every row of a table on the stand-in, keyed by column name (syncd's spelling, as
    stored: every name is quoted)."""
    con = shared_snowflake().connect(schema=schema)
    try:
        cursor = con.cursor()
        cursor.execute(f'SELECT * FROM "{schema}"."{table}"')  # noqa: S608 - test names
        names = [d[0] for d in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def _install_sf_loaded(crash: Any) -> None:
    """`sf_loaded`: COPY INTO ran inside the open commit transaction; nothing committed yet."""
    import crash_runner

    crash_runner._after(SnowflakeWarehouse, "_load", crash, lambda _: True)


__all__ = [
    "credentials_options",
    "new_bucket",
    "new_schema",
    "s3_stage",
    "shared_snowflake",
    "snowflake_over_internal",
    "snowflake_over_s3",
    "snowflake_overrides",
    "snowflake_rows",
    "snowflake_warehouse",
]


if __name__ == "__main__":
    import sys

    import crash_runner

    crash_runner.POINTS["sf_loaded"] = _install_sf_loaded
    sys.exit(crash_runner.main(sys.argv[1:]))
