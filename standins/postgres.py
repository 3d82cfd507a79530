"""A throwaway PostgreSQL cluster on 127.0.0.1, for tests: initdb, start, stop, remove.

Uses Debian's server binaries (package postgresql-15, under /usr/lib/postgresql/<v>/bin).
`initdb` and `pg_ctl` refuse to run as root, so as root they run as the `postgres` user via
`runuser`; the data folder is made for that user. Authentication is `trust` on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

DEBIAN_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
DATABASE = "postgres"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, or the cluster would not start."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def find_bin_dir() -> Path:
    """The newest Debian PostgreSQL bin folder holding initdb and pg_ctl."""
    candidates = sorted(
        (p for p in DEBIAN_ROOT.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise PostgresUnavailable(
            f"no PostgreSQL server binaries under {DEBIAN_ROOT} (install postgresql-15)"
        )
    return candidates[-1]


@dataclass
class PostgresCluster:
    """One cluster: `start()` it, connect to `dsn`, `stop()` it (which removes its files)."""

    port: int = 0
    root: Path | None = None
    bin_dir: Path | None = None
    _owned_root: bool = field(default=False, repr=False)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def user(self) -> str:
        return SUPERUSER

    @property
    def database(self) -> str:
        return DATABASE

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={DATABASE}"

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    def start(self) -> PostgresCluster:
        """initdb (trust auth, UTF-8, UTC) and start on a free port; fail loudly."""
        self.bin_dir = self.bin_dir or find_bin_dir()
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="syncd-pg-"))
            self._owned_root = True
        self.port = self.port or free_port()
        socket_dir = self.root / "sock"
        for folder in (self.root, socket_dir):
            folder.mkdir(parents=True, exist_ok=True)
            self._give_to_postgres(folder)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--username",
            SUPERUSER,
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {socket_dir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c timezone=UTC "
            "-c max_connections=50"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "30",
            "start",
        )
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove the cluster's files."""
        if self.root is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
            except PostgresUnavailable:
                pass
        if self._owned_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        path = (self.root or Path("/nonexistent")) / "server.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self, program: str, *args: str) -> None:
        assert self.bin_dir is not None
        command = [str(self.bin_dir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SUPERUSER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"{program} failed ({result.returncode}): {result.stderr.strip()[-800:]}\n"
                f"{self.log_tail()}"
            )

    @staticmethod
    def _give_to_postgres(folder: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(folder, user=SUPERUSER, group=SUPERUSER)
