"""Hostile names are refused by config validation, naming the key; secrets and signed-URL query
strings never reach logs, error messages or `status --json` (real runs against the simulator)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import HOUR, SyncdFiles, write_config

from syncd.config.settle import settings_from_mapping
from syncd.errors import ConfigError
from syncd.simulator import Endpoint, Fault, Simulator, SimulatorConfig
from syncd.timeutil import utcnow
from warehouses.base import validate_identifier

API_TOKEN = "fs-token-sec-5b2e91d7c4"
HEADER_SECRET = "hdr-secret-a81f6c03"
REDSHIFT_PASSWORD = "rs-password-4c7d2e"
REDSHIFT_CREDENTIALS = "aws_access_key_id=AKIAEXAMPLE;aws_secret_access_key=sec-9e1b7f"
SIGNED_QUERY = ("Signature=", "Expires=")

BASE: dict[str, dict[str, Any]] = {
    "duckdb": {"Provider": "duckdb"},
    "postgres": {"Provider": "postgres", "postgres": {"User": "u", "DB": "d"}},
    "aws": {
        "Provider": "aws",
        "s3": {"Bucket": "b"},
        "redshift": {"Host": "h", "DB": "d", "User": "u", "IAMRole": "arn:aws:iam::1:role/r"},
    },
    "gcp": {
        "Provider": "gcp",
        "gcs": {"Bucket": "b"},
        "bigquery": {"Project": "p", "Dataset": "d"},
    },
}
NAMED_KEYS = [
    ("duckdb", "duckdb", "ExportTable"),
    ("duckdb", "duckdb", "SyncTable"),
    ("duckdb", "duckdb", "RejectsTable"),
    ("postgres", "postgres", "ExportTable"),
    ("postgres", "postgres", "SyncTable"),
    ("postgres", "postgres", "RejectsTable"),
    ("postgres", "postgres", "DatabaseSchema"),
    ("aws", "redshift", "ExportTable"),
    ("aws", "redshift", "SyncTable"),
    ("aws", "redshift", "RejectsTable"),
    ("aws", "redshift", "DatabaseSchema"),
    ("gcp", "bigquery", "ExportTable"),
    ("gcp", "bigquery", "SyncTable"),
    ("gcp", "bigquery", "RejectsTable"),
    ("gcp", "bigquery", "Dataset"),
]
HOSTILE = [
    'x"; DROP TABLE y; --',
    "x`; DROP TABLE y; --",
    "a.b",
    "tablé",
    "x" * 200,
    "fsexport\n",
    "1table",
    "x y",
    "x'--",
]


def problems_for(provider: str, section: str, key: str, name: str) -> list[str]:
    doc = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE[provider].items()}
    doc.setdefault(section, {})[key] = name
    try:
        settings_from_mapping(doc, {})
    except ConfigError as exc:
        return list(exc.problems)
    return []


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.parametrize(("provider", "section", "key"), NAMED_KEYS)
def test_hostile_names_are_rejected_naming_the_key(
    provider: str, section: str, key: str, name: str
) -> None:
    problems = problems_for(provider, section, key, name)
    assert [p.startswith(f"[{section}] {key}:") for p in problems] == [True]


def test_a_name_with_a_trailing_newline_is_not_an_identifier() -> None:
    with pytest.raises(ConfigError):
        validate_identifier("fsexport\n")


def test_the_base_configs_are_valid() -> None:
    assert [problems_for(p, s, "ExportTable", "events") for p, s, _ in NAMED_KEYS[::4]] == [[]] * 4


def test_config_errors_and_reprs_do_not_show_redshift_secrets() -> None:
    doc = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE["aws"].items()}
    del doc["redshift"]["IAMRole"]
    doc["redshift"].update(Password=REDSHIFT_PASSWORD, Credentials=REDSHIFT_CREDENTIALS)
    doc["FsApiToken"] = API_TOKEN
    settings = settings_from_mapping(doc, {})
    doc["redshift"]["Port"] = "not a port"
    try:
        settings_from_mapping(doc, {})
    except ConfigError as exc:
        text = repr(settings) + str(settings) + str(exc) + repr(exc)
    assert [s for s in (REDSHIFT_PASSWORD, "sec-9e1b7f", API_TOKEN) if s in text] == []


# ---- real runs ------------------------------------------------------------------------------


def syncd(*args: str) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def leaked(output: str) -> list[str]:
    secrets = (API_TOKEN, HEADER_SECRET, *SIGNED_QUERY)
    return [s for s in secrets if s in output]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(api_key=API_TOKEN, events_per_hour=20)) as s:
        yield s


def config(tmp_path: Path, sim: Simulator, token: str = API_TOKEN) -> SyncdFiles:
    start = utcnow().replace(minute=0, second=0, microsecond=0) - 3 * HOUR
    files = write_config(
        tmp_path, sim, start, {"FsApiToken": token, "LogLevel": "debug", "MaxBatchAttempts": 1}
    )
    with files.config.open("a") as f:
        f.write(f'\n[[AdditionalHttpHeader]]\nKey = "X-Proxy-Token"\nValue = "{HEADER_SECRET}"\n')
    return files


def test_expired_signed_urls_leave_no_query_string_in_logs_or_status(
    tmp_path: Path, sim: Simulator
) -> None:
    sim.faults.add(Fault.EXPIRED_URL, count=2)
    files = config(tmp_path, sim)
    _, output = syncd("once", "-c", str(files.config), "--log-format", "json")
    _, status = syncd("status", "-c", str(files.config), "--json")
    assert (
        leaked(output + status),
        sum(f.kind is Fault.EXPIRED_URL for f in sim.faults.fired()),
    ) == ([], 2)


def test_a_held_batch_shows_its_error_without_the_signed_url(
    tmp_path: Path, sim: Simulator
) -> None:
    sim.faults.add(Fault.EXPIRED_URL, count=100)
    files = config(tmp_path, sim)
    code, output = syncd("once", "-c", str(files.config), "--log-format", "console")
    _, status = syncd("status", "-c", str(files.config), "--json")
    assert (code, leaked(output + status)) == (1, [])


def test_a_wrong_key_fails_without_showing_either_key(tmp_path: Path, sim: Simulator) -> None:
    files = config(tmp_path, sim, token="wrong-key-e4d1a0b7")
    code, output = syncd("once", "-c", str(files.config), "--log-format", "json")
    _, status = syncd("status", "-c", str(files.config), "--json")
    text = output + status
    assert (code, leaked(text), "wrong-key-e4d1a0b7" in text) == (1, [], False)


# ---- an error body that echoes the request: every output, not only the logs ----------------


def outputs_after_a_held_echo(tmp_path: Path, sim: Simulator) -> dict[str, str]:
    """`once` (console logs), `status`, `status --json`, the status file and `check`, as text."""
    files = config(tmp_path, sim)
    code, once = syncd("once", "-c", str(files.config), "--log-format", "console")
    assert code == 1
    return {
        "once": once,
        "status": syncd("status", "-c", str(files.config))[1],
        "status --json": syncd("status", "-c", str(files.config), "--json")[1],
        "status.json": (files.state_dir / "status.json").read_text(),
        "check": syncd("check", "-c", str(files.config))[1],
    }


def unsafe(text: str) -> list[str]:
    """Secrets, signed-URL queries and raw control characters found in `text`."""
    controls = sorted({repr(c) for c in text if not c.isprintable() and c not in "\n\t"})
    return leaked(text) + controls


@pytest.mark.parametrize(
    "endpoint", [None, Endpoint.DOWNLOAD], ids=["every-api-call", "signed-url"]
)
def test_an_error_body_echoing_the_request_reaches_no_output(
    tmp_path: Path, sim: Simulator, endpoint: Endpoint | None
) -> None:
    sim.faults.add(Fault.ECHO_REQUEST, count=1000, endpoint=endpoint)
    outputs = outputs_after_a_held_echo(tmp_path, sim)
    echoed = [f.endpoint for f in sim.faults.fired() if f.kind is Fault.ECHO_REQUEST]
    assert {name: unsafe(text) for name, text in outputs.items()} == dict.fromkeys(outputs, [])
    assert echoed and "is held" in outputs["once"] and "request refused" in outputs["status"]


def test_readiness_shows_an_echoed_error_without_secrets(tmp_path: Path, sim: Simulator) -> None:
    from test_health import poll_until
    from test_metrics import Daemon

    sim.faults.add(Fault.ECHO_REQUEST, count=1000)
    files = config(tmp_path, sim)
    daemon = Daemon(files, now=utcnow()).start()
    url = f"http://127.0.0.1:{daemon.port}/readyz"
    try:
        poll_until(url, 503, text=" is held: ")
        body = httpx.get(url, timeout=5).text
    finally:
        daemon.close()
    assert ("request refused" in body, unsafe(body.rstrip("\n"))) == (True, [])
