"""Bad config, by property: any TOML document gives valid settings or a ConfigError of one line
per problem; the CLI turns the error into exit 2 and those lines, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from syncd.config.keys import KEYS
from syncd.config.settle import settings_from_mapping
from syncd.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

SECTIONS = sorted({k.section for k in KEYS if k.section})
TOP_NAMES = sorted(k.name for k in KEYS if not k.section)
# Keys whose value the whole process acts on at once (where it writes, what it reaches).
RISKY = {"Provider", "StateDir", "TmpDir", "ApiURL", "LegacyApiURL", "Source", "StorageOnly"}


def _near_misses(name: str) -> list[str]:
    return [name.lower(), name.upper(), name[:-1], name + "s", name.replace("e", "3", 1)]


_VALUES = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False),
    st.lists(st.integers(min_value=-5, max_value=5), max_size=3),
    st.datetimes(timezones=st.just(timezone.utc)),
    st.sampled_from(["1h", "-5m", "0s", "2026-11-01T00:00:00Z", "duckdb", "gcp", "", "x" * 300]),
)


def _keys(names: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(names),
        st.sampled_from(names).flatmap(lambda n: st.sampled_from(_near_misses(n))),
        st.text(min_size=1, max_size=8),
    )


_SECTION_NAMES = st.one_of(
    st.sampled_from(SECTIONS), st.sampled_from(["s4", "Redshift", "bigqeury", "nope"])
)
_SECTION = st.dictionaries(_keys(sorted(k.name for k in KEYS if k.section)), _VALUES, max_size=4)
_DOCS = st.dictionaries(
    st.one_of(_keys(TOP_NAMES), _SECTION_NAMES),
    st.one_of(_VALUES, _SECTION),
    max_size=8,
)


def outcome(doc: dict[str, Any]) -> list[str]:
    """The problems settings_from_mapping reports (none when the document is valid)."""
    try:
        settings_from_mapping(doc, {})
    except ConfigError as exc:
        assert exc.problems, "a ConfigError names at least one problem"
        return list(exc.problems)
    return []


@settings(max_examples=300, deadline=None)
@given(doc=_DOCS)
def test_any_document_gives_settings_or_one_line_problems(doc: dict[str, Any]) -> None:
    problems = outcome(doc)
    assert all(p and "\n" not in p and "Traceback" not in p for p in problems)


@settings(max_examples=150, deadline=None)
@given(section=_SECTION_NAMES, key=_keys(sorted(k.name for k in KEYS if k.section)), value=_VALUES)
def test_a_wrong_section_value_is_reported_under_its_key(
    section: str, key: str, value: Any
) -> None:
    problems = outcome({section: {key: value}})
    assert all(p and "\n" not in p for p in problems)


# ---- through the CLI ------------------------------------------------------------------------


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else '"inf"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return _string(value)
    return str(value)


def _string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's, but for astral \\u pairs and DEL)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _document(top: dict[str, Any]) -> str:
    return "".join(f"{_string(k)} = {_toml(v)}\n" for k, v in top.items())


#: A date-time that TOML cannot carry whole: `fold` is Python's, not written to the file. A
#: message that echoed the Python repr (`datetime.datetime(..., fold=1, ...)`) differed
#: between the document and its file; messages now speak TOML (`loader.toml_text`).
_FOLDED = {"ApiRequestsPerSecond": datetime(2000, 1, 1, fold=1, tzinfo=timezone.utc)}

_CLI_DOCS = st.dictionaries(
    _keys([n for n in TOP_NAMES if n not in RISKY]).filter(lambda k: k not in RISKY),
    _VALUES.filter(lambda v: not isinstance(v, float)),
    min_size=1,
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@example(doc=_FOLDED)
@given(doc=_CLI_DOCS)
def test_a_document_and_its_toml_file_have_the_same_problems(doc: dict[str, Any]) -> None:
    """What the CLI test below relies on, in process and with many more examples."""
    assert outcome(tomllib.loads(_document(doc))) == outcome(doc)


@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@example(doc=_FOLDED)
@given(doc=_CLI_DOCS)
def test_status_exits_2_with_the_problems_or_runs_without_a_traceback(
    tmp_path_factory: pytest.TempPathFactory, doc: dict[str, Any]
) -> None:
    tmp = tmp_path_factory.mktemp("cfg")
    doc = {**doc, "StateDir": str(tmp / "state"), "duckdb": {"Path": str(tmp / "db.duckdb")}}
    path = tmp / "syncd.toml"
    path.write_text(
        _document({k: v for k, v in doc.items() if k != "duckdb"})
        + f"\n[duckdb]\nPath = {json.dumps(str(tmp / 'db.duckdb'))}\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCD_", "FULLSTORY_"))}
    env["PYTHONIOENCODING"] = "utf-8"
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "status", "-c", str(path)],
        capture_output=True,
        encoding="utf-8",
        timeout=60,
        check=False,
        cwd=tmp,
        env=env,
    )
    problems = outcome(doc)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stdout + result.stderr
    if problems:
        missing = [p for p in problems if not any(p in line for line in lines)]
        assert (result.returncode, missing) == (2, []), lines
    else:
        assert result.returncode in (0, 1)


def test_a_key_holding_a_newline_is_reported_on_one_line() -> None:
    assert outcome({"Export\nDelay": "1h"}) == [
        "unknown key 'Export\\nDelay' in [top level]; did you mean 'ExportDelay'?"
    ]


def test_make_clean_forgets_hypothesis_examples(tmp_path: Path) -> None:
    """`.hypothesis/` replays every failing example it saved on each run: `make clean` drops
    it with the caches (run on a copy of the Makefile, with a throwaway VENV)."""
    shutil.copy(Path(__file__).parents[1] / "Makefile", tmp_path / "Makefile")
    for folder in (".hypothesis/examples", ".pytest_cache", "venv"):
        (tmp_path / folder).mkdir(parents=True)
    result = subprocess.run(
        ["make", "clean", "VENV=venv"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert (result.returncode, sorted(p.name for p in tmp_path.iterdir())) == (0, ["Makefile"])
