"""The GCS stand-in: gcp-storage-emulator in disk mode, in its own process on loopback.

Disk mode matters: the emulator keeps each object as a plain file at
`<root>/.cloudstorage/<bucket>/<object>`, which is where the BigQuery stand-in resolves
`gs://bucket/object` load URIs (see `standins.bigquery`).

Killed and restarted (`GCSEmulator.restart`), it comes back on the same port with every bucket
and object it had, as a real bucket keeps its objects: it reloads them from `root`.

The helpers for running any stand-in as a child process (`free_port`, `wait_until_ready`,
`ServerProcess`) live here too; `standins.bigquery` uses them.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from google.cloud import storage  # type: ignore[attr-defined]

HOST = "127.0.0.1"
PROJECT = "test"
START_TIMEOUT = 20.0  # seconds; the emulator is ready in well under one
STOP_TIMEOUT = 5.0
_PR_SET_PDEATHSIG = 1  # prctl option (Linux)

_T = TypeVar("_T")


class StandinError(RuntimeError):
    """A stand-in could not be built or started; the message says why and shows its log."""


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A stand-in running as a child process; `stop` ends it by its PID, `kill` SIGKILLs it
    and `restart` starts the same command again on the same port."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate the process (kill it if it lingers) and reap it."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL the process (no chance to flush or clean up) and reap it."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)

    def restart(self, ready_path: str, timeout: float = START_TIMEOUT) -> None:
        """Kill the process if it runs, start the same command on the same port (its output
        appended to the log) and wait until `GET ready_path` answers 200."""
        self.kill()
        self.process = _popen(self.argv, self.env, self.log_path, "ab")
        wait_until_ready(self, ready_path, timeout)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies, so a killed test run leaves no orphan."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: `stop` (or atexit) is the only way out


class _Spawner:
    """One thread that lives as long as the process and starts every stand-in.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not the process: a
    stand-in started (or restarted) from a short-lived thread, such as a timer that brings it
    back after an outage, would get SIGTERM as soon as that thread returned. Forking from this
    thread ties the children to the life of the process, as intended.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def call(self, fn: Callable[[], _T]) -> _T:
        """Run `fn` on the spawner thread; its result, or its exception raised here."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="standin-spawner", daemon=True
                )
                self._thread.start()
        done = threading.Event()
        outcome: list[_T] = []
        failure: list[BaseException] = []

        def job() -> None:
            try:
                outcome.append(fn())
            except BaseException as exc:  # handed back to the caller
                failure.append(exc)
            finally:
                done.set()

        self._jobs.put(job)
        done.wait()
        if failure:
            raise failure[0]
        return outcome[0]

    def _serve(self) -> None:
        while True:
            self._jobs.get()()


_spawner = _Spawner()


def _popen(
    argv: list[str], env: dict[str, str], log_path: Path, mode: str
) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)

    def start() -> subprocess.Popen[bytes]:
        with log_path.open(mode) as log:
            return subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    return _spawner.call(start)


def spawn(
    name: str, argv: list[str], env: dict[str, str], port: int, log_path: Path
) -> ServerProcess:
    """Start `argv` with its output in `log_path`."""
    process = _popen(argv, env, log_path, "wb")
    return ServerProcess(name, process, port, log_path, list(argv), dict(env))


def wait_until_ready(server: ServerProcess, path: str, timeout: float = START_TIMEOUT) -> None:
    """Poll `GET path` until it answers 200; raise StandinError (with the log) otherwise."""
    deadline = time.monotonic() + timeout
    url = server.endpoint + path
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise StandinError(
                f"{server.name} exited with code {server.process.returncode} before it was "
                f"ready; its log ({server.log_path}):\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    server.stop()
    raise StandinError(
        f"{server.name} did not answer {url} within {timeout:.0f}s; its log "
        f"({server.log_path}):\n{server.log_tail()}"
    )


@dataclass
class GCSEmulator:
    """A running gcp-storage-emulator; `objects_root` is where its objects lie on disk."""

    server: ServerProcess
    root: Path

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def objects_root(self) -> Path:
        """`<root>/.cloudstorage`: object `o` of bucket `b` is the file `objects_root/b/o`."""
        return self.root / ".cloudstorage"

    def client(self, project: str = PROJECT) -> storage.Client:
        """A real google-cloud-storage client talking to the emulator, without credentials."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage  # type: ignore[attr-defined]

        return storage.Client(
            project=project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": self.endpoint},
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(name)

    def stop(self) -> None:
        self.server.stop()

    def kill(self) -> None:
        """SIGKILL the emulator: its port refuses connections until `restart`."""
        self.server.kill()

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Kill the emulator if it runs and start it again on the same port and `root`: every
        bucket and object it held is there again (a real bucket does not lose objects)."""
        self.server.restart("/", timeout)


def start_gcs_emulator(root: Path, *, timeout: float = START_TIMEOUT) -> GCSEmulator:
    """Start the emulator on a free loopback port, storing objects under `root` (disk mode)."""
    root = root.absolute()
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "STORAGE_BASE": str(root), "STORAGE_DIR": ".cloudstorage"}
    argv = [
        sys.executable,
        "-m",
        "gcp_storage_emulator",
        "start",
        "--host",
        HOST,
        "--port",
        str(port),
        "--quiet",
    ]
    server = spawn("gcp-storage-emulator", argv, env, port, root / "emulator.log")
    wait_until_ready(server, "/", timeout)
    return GCSEmulator(server, root)
