"""The BigQuery stand-in: bqemulator 1.4.0 in its own virtualenv, started on loopback.

The known-good recipe (see /work/shared/reference/test-stand-ins.md):
- its own virtualenv at `.standins/bqemulator-venv`: its pins clash with google-cloud-bigquery's
  (it would downgrade protobuf), it needs DuckDB 1.5.x (2.0 answers 500 after DDL) and numpy
  (undeclared), and its auto-loaded pytest plugin must stay out of the project's test venv;
- `standins/bqemulator_rules.py`, run by the emulator's Python in place of its CLI: it turns
  `DuckDBEngine._load_spatial` into a no-op (the `spatial` extension cannot be downloaded
  offline), makes a schema update that adds columns add them to the table's storage too, and
  adds the rules of BigQuery the emulator lacks (locations, job ids, transactions, partition
  filters, expiration: see that module), then runs `bqemulator.cli.main()`;
- `BQEMU_GCS_LOCAL_ROOT` pointed at the GCS stand-in's `.cloudstorage` folder, so a load job
  from `gs://bucket/object` reads the file the GCS emulator stored.

By default it keeps everything in memory. Given a `data_dir` it runs in its persistent mode
(catalog, tables and jobs in one DuckDB file there), so it can be killed and restarted on the
same port (`BigQueryEmulator.restart`) with its datasets, tables and finished jobs intact, as
BigQuery keeps them.

`python -m standins.bigquery` builds the virtualenv (idempotent; `scripts/setup-standins.sh`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from standins.gcs import (
    HOST,
    PROJECT,
    ServerProcess,
    StandinError,
    free_port,
    spawn,
    wait_until_ready,
)

if TYPE_CHECKING:
    from google.cloud import bigquery

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".standins" / "bqemulator-venv"
REQUIREMENTS = ("bqemulator==1.4.0", "duckdb==1.5.6", "numpy")
START_TIMEOUT = 60.0  # seconds; ready in about one on an idle machine
BUILD_TIMEOUT = 900.0
_STAMP = ".syncd-requirements"

#: Runs bqemulator with BigQuery's rules it lacks and two fixes, in the emulator's virtualenv
#: (argv follows as with its CLI); see that module.
RULES = Path(__file__).resolve().with_name("bqemulator_rules.py")


def venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def _base_python() -> str:
    """A Python >= 3.11 outside any virtualenv (bqemulator needs 3.11+)."""
    return getattr(sys, "_base_executable", None) or shutil.which("python3") or "python3"


@contextmanager
def _build_lock(venv: Path) -> Iterator[None]:
    """One builder at a time (parallel test runs on a fresh machine)."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f".{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_venv(venv: Path = VENV, python: str | None = None) -> Path:
    """Build the emulator's virtualenv unless it already holds REQUIREMENTS; its python."""
    wanted = " ".join(REQUIREMENTS)
    stamp = venv / _STAMP
    with _build_lock(venv):
        if venv_python(venv).exists() and stamp.exists() and stamp.read_text() == wanted:
            return venv_python(venv)
        shutil.rmtree(venv, ignore_errors=True)
        commands = [
            [python or _base_python(), "-m", "venv", str(venv)],
            [
                str(venv_python(venv)),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *REQUIREMENTS,
            ],
        ]
        for argv in commands:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
            )
            if done.returncode != 0:
                raise StandinError(
                    f"building the BigQuery stand-in failed: {' '.join(argv)} exited "
                    f"{done.returncode}:\n{done.stderr[-3000:]}"
                )
        stamp.write_text(wanted)
    return venv_python(venv)


@dataclass
class BigQueryEmulator:
    """A running bqemulator (REST on `endpoint`), project `project`."""

    server: ServerProcess
    project: str

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def client(self) -> bigquery.Client:
        """A real google-cloud-bigquery client talking to the emulator, without credentials."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(
            project=self.project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": self.endpoint},
        )

    def stop(self) -> None:
        self.server.stop()

    def kill(self) -> None:
        """SIGKILL the emulator: its ports refuse connections until `restart`."""
        self.server.kill()

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Kill the emulator if it runs and start it again on the same ports. Started with a
        `data_dir`, it comes back with everything committed before the kill."""
        self.server.restart("/readyz", timeout)


def start_bigquery_emulator(
    gcs_objects_root: Path,
    log_path: Path,
    *,
    project: str = PROJECT,
    venv: Path = VENV,
    timeout: float = START_TIMEOUT,
    data_dir: Path | None = None,
) -> BigQueryEmulator:
    """Build the virtualenv if needed, then start the emulator on free loopback ports.

    `gcs_objects_root` is the GCS stand-in's `.cloudstorage` folder (`GCSEmulator.objects_root`).
    With `data_dir` it keeps its state in a DuckDB file there (persistent mode), in memory
    otherwise.
    """
    python = ensure_venv(venv)
    gcs_objects_root.mkdir(parents=True, exist_ok=True)
    rest_port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "BQEMU_GCS_LOCAL_ROOT": str(gcs_objects_root.absolute()),
        "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false",
    }
    env.pop("PYTHONPATH", None)  # nothing of the project's venv may leak in
    argv = [
        str(python),
        "-P",  # not the standins folder on sys.path: nothing of the project leaks in
        str(RULES),
        "start",
        "--rest-host",
        HOST,
        "--rest-port",
        str(rest_port),
        "--grpc-host",
        HOST,
        "--grpc-port",
        str(grpc_port),
        "--project",
        project,
        "--log-level",
        "warning",
    ]
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        argv += ["--persistent", "--data-dir", str(data_dir.absolute())]
    server = spawn("bqemulator", argv, env, rest_port, log_path)
    wait_until_ready(server, "/readyz", timeout)
    return BigQueryEmulator(server, project)


if __name__ == "__main__":
    print(f"BigQuery stand-in ready: {ensure_venv()}")
