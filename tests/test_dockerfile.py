"""The Dockerfile, checked without a Docker engine (none runs on these machines): what it
copies exists, it runs as a non-root user, its entry point is `syncd run`, its health check
asks the liveness endpoint, and the environment it sets names real configuration keys."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from syncd.cli import build_parser
from syncd.config.keys import KEYS

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    """Arguments of every `name` instruction (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [
        line.split(None, 1)[1]
        for line in text.splitlines()
        if line.split(None, 1)[:1] == [name] and len(line.split(None, 1)) == 2
    ]


def test_it_has_a_build_stage_and_a_slim_run_stage() -> None:
    stages = instructions("FROM")
    assert (len(stages), stages[-1]) == (2, "python:3.11-slim")


def test_every_copied_path_exists_in_the_project() -> None:
    sources = [
        part
        for args in instructions("COPY")
        if not args.startswith("--from")
        for part in args.split()[:-1]
    ]
    assert [s for s in sources if not (ROOT / s).exists()] == []


def test_it_runs_as_a_user_other_than_root() -> None:
    assert instructions("USER") == ["syncd"]


def test_the_entry_point_is_syncd_run() -> None:
    entry, cmd = json.loads(instructions("ENTRYPOINT")[0]), json.loads(instructions("CMD")[0])
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert (entry, cmd, "run" in commands) == (["syncd"], ["run"], True)  # type: ignore[operator]


def test_the_entry_point_is_the_projects_console_script() -> None:
    assert 'syncd = "syncd.cli:main"' in (ROOT / "pyproject.toml").read_text()


def test_the_health_check_asks_the_liveness_endpoint_on_the_metrics_port() -> None:
    check = instructions("HEALTHCHECK")[0]
    assert (
        "127.0.0.1:9108/livez" in check,
        "SYNCD_METRICS_ADDRESS=0.0.0.0:9108" in DOCKERFILE,
    ) == (
        True,
        True,
    )


def test_every_syncd_variable_it_sets_is_a_configuration_key_or_the_config_path() -> None:
    names = set(re.findall(r"\b(SYNCD_[A-Z_]+)=", DOCKERFILE))
    known = {k.env_var for k in KEYS} | {"SYNCD_CONFIG"}
    assert sorted(names - known) == []


def test_the_build_context_leaves_out_the_virtualenv_and_tests() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "tests"} <= set(ignored)


def _locked() -> dict[str, tuple[str, int]]:
    """requirements.lock as {name: (version, number of hashes)}."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "requirements.lock").read_text())
    entries: dict[str, tuple[str, int]] = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)(.*)$", line)
        if match:
            name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
            entries[name] = (match.group(2), match.group(3).count("--hash=sha256:"))
    return entries


def test_the_image_installs_only_hashed_locked_packages() -> None:
    runs = instructions("RUN")
    assert any("--require-hashes" in r and "-r requirements.lock" in r for r in runs)
    assert [r for r in runs if "pip install" in r and "--require-hashes" not in r] == [
        "/opt/syncd/bin/pip install --no-deps --no-build-isolation ."
    ]
    assert [name for name, (_, hashes) in _locked().items() if hashes == 0] == []


def test_the_lock_pins_every_runtime_dependency_within_its_range() -> None:
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in ("aws", "gcp", "postgres", "snowflake"):
        wanted += project["optional-dependencies"][extra]
    locked = _locked()
    problems = []
    for text in wanted:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate(
            {"python_version": "3.11"}
        ):
            continue
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        version = locked.get(name, ("", 0))[0]
        if not version or not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{text}: locked {version or 'nothing'}")
    assert problems == [], "run `make lock`"
