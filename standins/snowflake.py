"""The Snowflake stand-in: fakesnow's server in its own virtualenv, started on loopback.

fakesnow (https://github.com/tekumara/fakesnow) runs Snowflake's SQL on DuckDB and answers
the real snowflake-connector-python over HTTP, so syncd's adapter is tested with the driver it
ships with. Its own virtualenv (`.standins/fakesnow-venv`): fakesnow pins DuckDB 2.0 and
sqlglot 30, which must stay out of the project's venv, and it needs a connector < 5 (5.x
reorganised the modules fakesnow imports; syncd's own connector is pinned < 5 as well, since
5.x logs in through a core that fakesnow's server does not answer).

`standins/snowflake_server.py`, run by the virtualenv's Python, wraps fakesnow where it falls
short of Snowflake's documentation (load metadata, FORCE, LOAD_UNCERTAIN_FILES, COPY INTO from
the S3 stand-in with a storage integration or credentials, MATCH_BY_COLUMN_NAME); see that
module and docs/cloud-conformance.md ("Snowflake") for every rule and difference.

Everything lives in memory: a restarted stand-in starts empty.

`python -m standins.snowflake` builds the virtualenv (idempotent; `scripts/setup-standins.sh`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from standins.bigquery import BUILD_TIMEOUT, _base_python, _build_lock, venv_python
from standins.gcs import HOST, ServerProcess, StandinError, free_port, spawn, wait_until_ready

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".standins" / "fakesnow-venv"
REQUIREMENTS = ("fakesnow[server]==0.12.1", "snowflake-connector-python==4.8.1", "boto3")
SERVER = Path(__file__).resolve().with_name("snowflake_server.py")
START_TIMEOUT = 60.0
#: The storage integration the stand-in knows (any other name is refused, as in Snowflake).
INTEGRATION = "SYNCD_S3"
ACCOUNT = "standin"
DATABASE = "SYNCD"
USER = "syncd"
PASSWORD = "standin-password"  # a dummy: the stand-in accepts any


def ensure_venv(venv: Path = VENV) -> Path:
    """Build fakesnow's virtualenv unless it already holds REQUIREMENTS; its python."""
    wanted = " ".join(REQUIREMENTS)
    stamp = venv / ".syncd-requirements"
    with _build_lock(venv):
        if venv_python(venv).exists() and stamp.exists() and stamp.read_text() == wanted:
            return venv_python(venv)
        shutil.rmtree(venv, ignore_errors=True)
        pip = [str(venv_python(venv)), "-m", "pip", "install", "--quiet"]
        for argv in (
            [_base_python(), "-m", "venv", str(venv)],
            [*pip, "--disable-pip-version-check", *REQUIREMENTS],
        ):
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
            )
            if done.returncode != 0:
                raise StandinError(
                    f"building the Snowflake stand-in failed: {' '.join(argv)} exited "
                    f"{done.returncode}:\n{done.stderr[-3000:]}"
                )
        stamp.write_text(wanted)
    return venv_python(venv)


@dataclass
class SnowflakeStandin:
    """A running fakesnow server (HTTP on `port`), reading s3:// from `s3_endpoint`."""

    server: ServerProcess
    s3_endpoint: str

    @property
    def port(self) -> int:
        return self.server.port

    def connect_args(self) -> dict[str, Any]:
        """Keyword arguments of snowflake.connector.connect for this stand-in."""
        return {
            "account": ACCOUNT,
            "user": USER,
            "password": PASSWORD,
            "host": HOST,
            "port": self.port,
            "protocol": "http",
            "database": DATABASE,
        }

    def connect(self, schema: str = "PUBLIC", **extra: Any) -> Any:
        """A real connector session (autocommit on) for tests."""
        import snowflake.connector

        args = {
            **self.connect_args(),
            "schema": schema,
            "session_parameters": {"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
            "login_timeout": 30,
            **extra,
        }
        return snowflake.connector.connect(**args)

    def advance_clock(self, days: float) -> None:
        """Move the stand-in's clock on (load metadata older than 64 days expires)."""
        httpx.post(
            f"{self.server.endpoint}/standin/clock", params={"days": days}, timeout=10
        ).raise_for_status()

    def stop(self) -> None:
        self.server.stop()


def start_snowflake_standin(
    log_path: Path,
    *,
    s3_endpoint: str = "",
    venv: Path = VENV,
    timeout: float = START_TIMEOUT,
) -> SnowflakeStandin:
    """Build the virtualenv if needed, then start the server on a free loopback port."""
    python = ensure_venv(venv)
    port = free_port()
    from standins.moto_s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY

    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,  # what the storage integration reads S3 with
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
    }
    env.pop("PYTHONPATH", None)  # nothing of the project's venv may leak in
    argv = [
        str(python),
        "-P",
        str(SERVER),
        "--port",
        str(port),
        "--s3-endpoint",
        s3_endpoint,
        "--integrations",
        INTEGRATION,
    ]
    server = spawn("fakesnow", argv, env, port, log_path)
    wait_until_ready(server, "/standin/ready", timeout)
    return SnowflakeStandin(server, s3_endpoint)


if __name__ == "__main__":
    print(f"Snowflake stand-in ready: {ensure_venv()}")
