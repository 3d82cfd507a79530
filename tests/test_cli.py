"""The command line as a user meets it: subprocesses, exit codes and exact messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from e2e_support import API_KEY, HOUR, NOW, SyncdFiles, run_cli, write_config

from syncd.cli import EXIT_CONFIG, EXIT_OK, build_parser
from syncd.config import load_settings
from syncd.simulator import Simulator, SimulatorConfig
from syncd.timeutil import parse_timestamp


def syncd(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )


def test_help_lists_every_command() -> None:
    result = syncd("--help")
    assert result.returncode == EXIT_OK
    for command in ("run", "once", "status", "rollback", "check", "demo", "simulate"):
        assert command in result.stdout


@pytest.mark.parametrize(
    "command", ["run", "once", "status", "rollback", "check", "demo", "simulate"]
)
def test_every_command_help_has_an_example(command: str) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert "Example:" in (sub.choices[command].description or "")  # type: ignore[index]


def test_bad_config_names_the_key_and_exits_2_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('ExportDuration = "7m"\nExportDuraton = "1h"\n')
    result = syncd("once", "-c", str(config))
    assert result.returncode == EXIT_CONFIG
    assert "Traceback" not in result.stderr
    assert "ExportDuration" in result.stderr
    assert "did you mean 'ExportDuration'" in result.stderr


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    result = syncd("status", "-c", str(tmp_path / "nope.toml"))
    assert (result.returncode, "nope.toml" in result.stderr) == (EXIT_CONFIG, True)


def test_once_without_an_api_key_says_where_to_put_it(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'[local]\nSaveDir = "{tmp_path}/s"\n[duckdb]\nPath = "{tmp_path}/d.duckdb"\n'
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = syncd("once", "-c", str(config), env=env)
    assert result.returncode == EXIT_CONFIG
    assert "FULLSTORY_API_TOKEN" in result.stderr


def test_rollback_needs_yes_when_not_on_a_terminal(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'[local]\nSaveDir = "{tmp_path}/s"\n[duckdb]\nPath = "{tmp_path}/d.duckdb"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "rollback", "-c", str(config), "--day", "2026-11-01"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert result.returncode == EXIT_CONFIG
    assert "--yes" in result.stderr


def test_rollback_rejects_a_malformed_day(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[duckdb]\nPath = "{tmp_path}/d.duckdb"\n')
    result = syncd("rollback", "-c", str(config), "--day", "01/11/2026", "--yes")
    assert result.returncode == EXIT_CONFIG
    assert "YYYY-MM-DD" in result.stderr


# -- status ----------------------------------------------------------------------------------

STATUS_START = NOW - 14 * HOUR  # with ExportDelay 1h, 13 hourly windows are ready at NOW


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=20)) as s:
        yield s


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, sim: Simulator) -> SyncdFiles:
    """A syncd that has run `once` (13 batches, more than the status file's last 10)."""
    files = write_config(tmp_path_factory.mktemp("loaded"), sim, STATUS_START)
    assert run_cli(["once", "-c", str(files.config)]) == EXIT_OK
    return files


def status_json(files: SyncdFiles) -> dict[str, Any]:
    result = syncd("status", "-c", str(files.config), "--json")
    assert result.returncode == EXIT_OK, result.stderr
    shown: dict[str, Any] = json.loads(result.stdout)
    return shown


def leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in leaves(v)]
    return [value]


def test_status_before_anything_was_loaded_exits_0_and_says_so(
    tmp_path: Path, sim: Simulator
) -> None:
    files = write_config(tmp_path, sim, STATUS_START)
    text = syncd("status", "-c", str(files.config))
    shown = status_json(files)
    assert (text.returncode, text.stdout.splitlines()[0], text.stderr) == (
        EXIT_OK,
        "sync point   none: nothing has been loaded yet (read from warehouse)",
        "",
    )
    assert (shown["sync_point"], shown["lag"], shown["lag_seconds"], shown["recent"]) == (
        None,
        None,
        None,
        [],
    )


def test_status_lag_is_now_minus_export_delay_minus_the_sync_point(loaded: SyncdFiles) -> None:
    shown = status_json(loaded)
    now, point = parse_timestamp(shown["now"]), parse_timestamp(shown["sync_point"])
    lag = now - HOUR - point  # ExportDelay is 1h: syncd_lag_seconds' definition
    hours, rest = divmod(int(lag.total_seconds()), 3600)
    assert (shown["lag_seconds"], shown["lag"]) == (
        int(lag.total_seconds()),
        f"{hours}h{rest // 60:02d}m",
    )


def test_status_json_says_null_for_every_missing_value(loaded: SyncdFiles) -> None:
    shown = status_json(loaded)
    assert (shown["daemon"]["next_ready_at"], "-" in leaves(shown)) == (None, False)


def test_status_counts_the_warehouses_batches_also_from_the_status_file(
    loaded: SyncdFiles,
) -> None:
    from_warehouse = status_json(loaded)
    with duckdb.connect(str(loaded.duckdb)):  # a daemon holds the file: status reads its file
        from_file = status_json(loaded)
    assert (
        from_warehouse["batches_committed"],
        from_file["batches_committed"],
        from_file["source"].startswith("status file"),
    ) == (13, 13, True)


def test_status_into_a_closed_pipe_prints_no_traceback(loaded: SyncdFiles) -> None:
    reader, writer = os.pipe()
    os.close(reader)  # `syncd status | head` once head has exited
    try:
        result = subprocess.run(
            [sys.executable, "-m", "syncd", "status", "-c", str(loaded.config)],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(writer)
    assert (result.returncode, result.stderr) == (EXIT_OK, "")


def test_a_command_without_a_config_says_it_uses_the_defaults_and_where_it_writes(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCD_", "FULLSTORY_"))}
    result = syncd("status", cwd=tmp_path, env=env)
    settings = load_settings(None, env).settings
    assert (result.returncode, result.stderr.splitlines()) == (
        EXIT_OK,
        [
            "syncd: no configuration file (-c or SYNCD_CONFIG): using the defaults and SYNCD_ "
            f"variables; state in {(tmp_path / settings.state_dir).resolve()}, data in the DuckDB "
            f"file {(tmp_path / settings.duckdb.path).resolve()}"
        ],
    )
