"""Stand-ins of the AWS path for the tests: moto S3, a throwaway PostgreSQL, the Redshift proxy.

Also a crash runner: `python tests/aws_support.py POINT[@N] once -c syncd.toml` is
`tests/crash_runner.py` with plain (non-SSL) Redshift connections and one more point,
`rs_loaded` (COPY done inside the open commit transaction).

Each stand-in starts once per test process, on 127.0.0.1 and a free port, the first time a
test asks for it, and stops (by its handle) when the process exits. Tests import the fixtures
below by name; each fixture hands out a fresh bucket or schema, so tests never see each
other's data. A stand-in that cannot start fails the test with the reason: these tests never
skip (except `live_*`, which need SYNCD_TEST_REDSHIFT_* variables).
"""

from __future__ import annotations

import atexit
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
import pytest

from standins.moto_s3 import MotoS3
from standins.postgres import PostgresCluster
from warehouses.local import LocalStage
from warehouses.postgres import PostgresWarehouse
from warehouses.redshift import RedshiftWarehouse
from warehouses.s3 import S3Stage
from warehouses.storage_only import StorageOnlyWarehouse

if TYPE_CHECKING:
    from standins.redshift_proxy import RedshiftProxy

_T = TypeVar("_T")
_started: dict[str, Any] = {}
_lock = threading.RLock()


def _shared(name: str, start: Callable[[], _T], stop: Callable[[_T], None]) -> _T:
    """One instance per process, started on first use, stopped at exit."""
    with _lock:
        if name not in _started:
            try:
                instance = start()
            except Exception as exc:
                pytest.fail(f"the {name} stand-in could not start: {exc}", pytrace=False)
            _started[name] = instance
            atexit.register(stop, instance)
        return _started[name]  # type: ignore[no-any-return]


def shared_moto() -> MotoS3:
    return _shared("moto S3", lambda: MotoS3().start(), lambda m: m.stop())


def shared_postgres() -> PostgresCluster:
    return _shared("PostgreSQL", lambda: PostgresCluster().start(), lambda p: p.stop())


def shared_proxy() -> RedshiftProxy:
    def start() -> RedshiftProxy:
        from standins.redshift_proxy import RedshiftProxy

        pg = shared_postgres()
        moto = shared_moto()
        return RedshiftProxy(
            backend_host=pg.host, backend_port=pg.port, s3_client_factory=moto.client
        ).start()

    return _shared("Redshift proxy", start, lambda p: p.stop())


def shared_case_sensitive_proxy() -> RedshiftProxy:
    """A proxy for a cluster whose parameter group turns enable_case_sensitive_identifier on."""

    def start() -> RedshiftProxy:
        from standins.redshift_proxy import RedshiftProxy

        pg = shared_postgres()
        return RedshiftProxy(
            backend_host=pg.host,
            backend_port=pg.port,
            s3_client_factory=shared_moto().client,
            case_sensitive_identifiers=True,
        ).start()

    return _shared("case-sensitive Redshift proxy", start, lambda p: p.stop())


def new_bucket(moto: MotoS3) -> str:
    name = f"syncd-test-{secrets.token_hex(6)}"
    moto.client().create_bucket(Bucket=name)
    return name


def new_schema() -> str:
    return f"t_{secrets.token_hex(6)}"


def drop_schema(schema: str) -> None:
    pg = shared_postgres()
    with psycopg.connect(pg.dsn, autocommit=True) as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@dataclass
class AwsEnv:
    """The stand-ins one test uses: a fresh bucket and schema on the shared servers."""

    moto: MotoS3
    postgres: PostgresCluster
    bucket: str
    schema: str

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the PostgreSQL behind the proxy directly (the ground truth of a test)."""
        with psycopg.connect(self.postgres.dsn, autocommit=True) as con:
            cur = con.execute(query, params or None)
            return list(cur.fetchall()) if cur.description else []

    def keys(self, prefix: str = "") -> list[str]:
        listing = self.moto.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for o in listing.get("Contents", []))


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> MotoS3:
    """The shared moto server, with its dummy credentials in the environment (the AWS chain)."""
    moto = shared_moto()
    for name, value in moto.environment().items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    return moto


@pytest.fixture
def bucket(moto_s3: MotoS3) -> str:
    return new_bucket(moto_s3)


@pytest.fixture
def postgres() -> PostgresCluster:
    return shared_postgres()


@pytest.fixture
def schema(postgres: PostgresCluster) -> Iterator[str]:
    name = new_schema()
    yield name
    drop_schema(name)


@pytest.fixture
def redshift_proxy(moto_s3: MotoS3, postgres: PostgresCluster) -> RedshiftProxy:
    return shared_proxy()


@pytest.fixture
def case_sensitive_proxy(moto_s3: MotoS3, postgres: PostgresCluster) -> RedshiftProxy:
    return shared_case_sensitive_proxy()


@dataclass
class TlsServer:
    """A Redshift proxy speaking TLS with a certificate for `names`, signed by the CA in `ca`."""

    proxy: RedshiftProxy
    ca: Path


@pytest.fixture
def tls_proxy(
    tmp_path: Path, moto_s3: MotoS3, postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[list[str]], TlsServer]]:
    """Start TLS proxies on the shared PostgreSQL; the test CA is trusted by default
    (SSL_CERT_FILE, which redshift_connector's default verify paths read)."""
    from standins.redshift_proxy import RedshiftProxy
    from standins.tls import TestCA

    ca = TestCA(tmp_path / "tls")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
    started: list[RedshiftProxy] = []

    def start(names: list[str]) -> TlsServer:
        certificate = ca.issue(names, stem=f"server{len(started)}")
        proxy = RedshiftProxy(
            backend_host=postgres.host,
            backend_port=postgres.port,
            s3_client_factory=moto_s3.client,
            tls=certificate.server_context(),
        ).start()
        started.append(proxy)
        return TlsServer(proxy, ca.ca_file)

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def aws(moto_s3: MotoS3, postgres: PostgresCluster, bucket: str, schema: str) -> AwsEnv:
    return AwsEnv(moto_s3, postgres, bucket, schema)


def live_redshift_settings() -> dict[str, str] | None:
    """SYNCD_TEST_REDSHIFT_{HOST,PORT,DB,USER,PASSWORD,IAM_ROLE,BUCKET,REGION} when all set."""
    names = ("HOST", "PORT", "DB", "USER", "PASSWORD", "IAM_ROLE", "BUCKET", "REGION")
    values = {n.lower(): os.environ.get(f"SYNCD_TEST_REDSHIFT_{n}", "") for n in names}
    return values if all(values.values()) else None


__all__ = [
    "AwsEnv",
    "aws",
    "bucket",
    "case_sensitive_proxy",
    "live_redshift_settings",
    "moto_s3",
    "postgres",
    "redshift_proxy",
    "schema",
    "shared_moto",
    "shared_postgres",
    "shared_proxy",
    "tls_proxy",
]


# --- adapters for tests/test_conformance.py: (warehouse, stage) over the shared stand-ins -------


def postgres_over_local(folder: Path) -> tuple[PostgresWarehouse, LocalStage]:
    pg = shared_postgres()
    warehouse = PostgresWarehouse(
        host=pg.host, port=pg.port, user=pg.user, dbname=pg.database, schema=new_schema()
    )
    return warehouse, LocalStage(folder / "stage")


def s3_stage(prefix: str = "") -> S3Stage:
    """A stage on a fresh bucket of the shared moto server (credentials passed, not from env)."""
    moto = shared_moto()
    return S3Stage(new_bucket(moto), prefix, endpoint_url=moto.endpoint_url, client=moto.client())


def storage_only_over_s3(folder: Path) -> tuple[StorageOnlyWarehouse, S3Stage]:
    stage = s3_stage("hauser-uploads/")
    return StorageOnlyWarehouse(stage), stage


#: The authorization the tests' COPYs carry (the proxy accepts any).
IAM_ROLE = "arn:aws:iam::123456789012:role/syncd-load"


def redshift_warehouse(
    schema: str | None, proxy: RedshiftProxy | None = None, **options: Any
) -> RedshiftWarehouse:
    """A RedshiftWarehouse talking to the shared proxy, or `proxy` (redshift_connector, ssl off)."""
    proxy = proxy or shared_proxy()
    settings: dict[str, Any] = {"iam_role": IAM_ROLE, "region": "us-east-1", **options}
    return RedshiftWarehouse(
        host=proxy.host,
        port=proxy.port,
        database="postgres",
        user="postgres",
        password="proxy-password",
        schema=schema,
        ssl=False,
        **settings,
    )


def redshift_over_s3(folder: Path) -> tuple[RedshiftWarehouse, S3Stage]:
    return redshift_warehouse(new_schema()), s3_stage()


# --- syncd over the stand-ins: config, plain connections, reading the warehouse back ---------


def postgres_overrides(pg: PostgresCluster, schema: str) -> dict[str, object]:
    """Config keys for syncd on the PostgreSQL stand-in, its tables in `schema` (loopback: no
    TLS)."""
    return {
        "Provider": "postgres",
        "postgres.Host": pg.host,
        "postgres.Port": pg.port,
        "postgres.User": pg.user,
        "postgres.DB": pg.database,
        "postgres.DatabaseSchema": schema,
        "postgres.SSLMode": "disable",
    }


def aws_overrides(aws: AwsEnv, *, bucket_path: str = "") -> dict[str, object]:
    """Config keys (e2e_support.write_config style) for Provider "aws" over the stand-ins."""
    proxy = shared_proxy()
    return {
        "Provider": "aws",
        "s3.Bucket": aws.bucket + (f"/{bucket_path}" if bucket_path else ""),
        "s3.Region": "us-east-1",
        "s3.EndpointURL": aws.moto.endpoint_url,
        "s3.Timeout": "20s",
        "redshift.Host": proxy.host,
        "redshift.Port": proxy.port,
        "redshift.DB": "postgres",
        "redshift.User": "postgres",
        "redshift.Password": "proxy-password",
        "redshift.DatabaseSchema": aws.schema,
        "redshift.IAMRole": IAM_ROLE,
        "redshift.SSL": False,  # the proxy refuses SSL, as plain PostgreSQL does
    }


def warehouse_rows(aws: AwsEnv, table: str = "fsexport") -> list[dict[str, Any]]:
    """Rows of a table in the proxy's PostgreSQL, under syncd's column spelling."""
    from syncd.fields import KNOWN_FIELDS, TRACE_COLUMNS
    from warehouses.sql import REJECTS_COLUMNS, SYNC_COLUMNS

    spelled = {
        n.lower(): n
        for n in (
            *KNOWN_FIELDS,
            *(c.name for c in (*TRACE_COLUMNS, *SYNC_COLUMNS, *REJECTS_COLUMNS)),
        )
    }
    with psycopg.connect(aws.postgres.dsn, autocommit=True) as con:
        cursor = con.execute(f'SELECT * FROM "{aws.schema}"."{table}"')  # noqa: S608 - test names
        names = [spelled.get(d.name, d.name) for d in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


# --- crash runner: tests/crash_runner.py with Redshift crash points, plain connections ----------


def _install_rs_loaded(crash: Any) -> None:
    """`rs_loaded`: COPY ran inside the open commit transaction; nothing is committed yet."""
    import crash_runner

    crash_runner._after(RedshiftWarehouse, "_load", crash, lambda _: True)


if __name__ == "__main__":
    import sys

    import crash_runner

    crash_runner.POINTS["rs_loaded"] = _install_rs_loaded
    sys.exit(crash_runner.main(sys.argv[1:]))
