"""The command line as a user meets it: subprocesses, exit codes and exact messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from syncd.cli import EXIT_CONFIG, EXIT_OK, build_parser


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
