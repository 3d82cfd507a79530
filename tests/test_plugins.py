"""Warehouses as plugins: a module declares its section, rules and factory; the registry names it.

A plugin written here to tmp_path (a real module on sys.path, registered with one line) is
parsed from TOML and the environment, documented, scrubbed from the logs and built by name to
sync against the simulator; nothing under syncd/ names a warehouse; a provider whose extra is
not installed is refused with the extra's name, and the docs and `--help` work without them.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from e2e_support import HOUR, export_rows, run_cli, sync_rows, write_config

from syncd.app import register_secrets
from syncd.config import example_toml, reference_markdown, settings_from_mapping
from syncd.errors import ConfigError
from syncd.simulator import Simulator, SimulatorConfig
from syncd.timeutil import utcnow
from warehouses import registry
from warehouses.duckdb import DuckDBWarehouse

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "plugin-test-key"
PLUGIN_SECRET = "fake-wh-secret-5c2e9a71"

FAKE_PLUGIN = '''
"""A warehouse added as a plugin: its own section (with a secret), rules and factory."""

from dataclasses import dataclass
from pathlib import Path

import structlog

from syncd.config.keys import Key, Kind
from syncd.config.secret import Secret
from warehouses.duckdb import DuckDBWarehouse
from warehouses.plugin import ConfigSection, WarehousePlugin, check_names, table_keys


@dataclass(frozen=True)
class FakeSettings:
    path: Path
    api_secret: Secret
    export_table: str
    sync_table: str
    rejects_table: str
    stage: str


def _validate(ctx, provider):
    check_names(ctx, "fakewh")


SECTION = ConfigSection(
    "fakewh",
    'A warehouse from a plugin module (Provider = "fakewh").',
    (
        Key("fakewh", "Path", Kind.PATH, "fake.duckdb", "Where the fake warehouse keeps its file."),
        Key("fakewh", "ApiSecret", Kind.SECRET, "", "The fake warehouse's password."),
        *table_keys("fakewh", hauser=False),
        Key("fakewh", "Stage", Kind.CHOICE, "local", "Where files are staged.", choices=("local", "s3")),
    ),
    FakeSettings,
    required=("ApiSecret",),
    validate=_validate,
)


def _build(settings, stage, read_only):
    fake = settings.section("fakewh")
    # a careless adapter that logs its password: the scrubber must still hide it
    structlog.get_logger("fakewh").warning(
        "fake warehouse opened", dsn=f"fake://loader:{fake.api_secret.reveal()}@here"
    )
    return DuckDBWarehouse(
        fake.path, fake.export_table, fake.sync_table, fake.rejects_table, read_only=read_only
    )


PLUGIN = WarehousePlugin(
    "fakewh",
    "local folder + a plugin's DuckDB",
    stage="local",
    stage_key="[fakewh] Stage",
    section=SECTION,
    build=_build,
    destination=lambda settings: f"the fake file {settings.section('fakewh').path}",
    aliases=("fakeold",),
)

MISSING = WarehousePlugin(
    "fakemiss",
    "a provider whose driver is not installed",
    stage="local",
    section=None,
    build=_build,
    extra="fakeextra",
    drivers=("syncd_test_no_such_driver",),
)
'''


@pytest.fixture
def fake_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Register `fakewh_plugin` (written to tmp_path) with one registry line each."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "fakewh_plugin.py").write_text(textwrap.dedent(FAKE_PLUGIN), encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setitem(registry.PROVIDERS, "fakewh", "fakewh_plugin:PLUGIN")
    monkeypatch.setitem(registry.PROVIDERS, "fakemiss", "fakewh_plugin:MISSING")
    registry.reset()
    yield "fakewh"
    monkeypatch.undo()
    registry.reset()
    sys.modules.pop("fakewh_plugin", None)


def test_a_plugins_section_is_parsed_from_toml_and_the_environment(fake_plugin: str) -> None:
    data = {"Provider": "fakewh", "fakewh": {"Path": "a.duckdb", "SyncTable": "mysync"}}
    loaded = settings_from_mapping(data, {"SYNCD_FAKEWH_APISECRET": PLUGIN_SECRET})
    fake = loaded.settings.section("fakewh")
    assert (fake.path, fake.sync_table, fake.api_secret.reveal(), loaded.settings.fakewh) == (
        Path("a.duckdb"),
        "mysync",
        PLUGIN_SECRET,
        fake,
    )
    assert loaded.origins["[fakewh] ApiSecret"] == "env SYNCD_FAKEWH_APISECRET"
    assert PLUGIN_SECRET not in repr(loaded.settings) + str(loaded.settings.redacted())


def test_a_plugins_rules_and_aliases_apply(fake_plugin: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(
            {"Provider": "fakewh", "fakewh": {"ExportTable": "a-b", "SyncTable": "fsexport"}}, {}
        )
    assert caught.value.problems == [
        "[fakewh] ApiSecret: required with Provider 'fakewh'",
        "[fakewh] ExportTable: 'a-b' is not a valid name: use letters, digits and underscores, "
        "starting with a letter or underscore (at most 127 characters)",
    ]
    with pytest.raises(ConfigError) as unknown:
        settings_from_mapping({"fakewh": {"Pathh": "x"}}, {})
    assert unknown.value.problems == ["unknown key 'Pathh' in [fakewh]; did you mean 'Path'?"]
    loaded = settings_from_mapping(
        {"Warehouse": "fakeold", "fakewh": {"ApiSecret": PLUGIN_SECRET}}, {}
    )
    assert (loaded.settings.provider, loaded.warnings) == (
        "fakewh",
        ("Warehouse = 'fakeold' is deprecated; read as Provider = 'fakewh'",),
    )


def test_a_plugin_may_choose_its_stage_by_a_key(fake_plugin: str) -> None:
    base = {"Provider": "fakewh", "fakewh": {"ApiSecret": PLUGIN_SECRET, "Stage": "s3"}}
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(base, {})
    assert caught.value.problems == ["[s3] Bucket: required with Provider 'fakewh'"]
    loaded = settings_from_mapping({**base, "s3": {"Bucket": "b", "S3Only": True}}, {})
    assert (registry.stage_of(loaded.settings).name, loaded.settings.storage_only) == ("s3", True)
    assert registry.destination(loaded.settings) == "files in s3://b"
    on_local = settings_from_mapping(
        {**base, "fakewh": {"ApiSecret": "x"}, "s3": {"S3Only": True}}, {}
    )
    assert (registry.stage_of(on_local.settings).name, on_local.settings.storage_only) == (
        "local",
        False,
    )
    assert on_local.warnings == (
        "[s3] S3Only is deprecated and has no effect with Provider 'fakewh' (as in hauser)",
    )


def test_settings_reach_a_section_by_name_and_replace_it(fake_plugin: str) -> None:
    settings = settings_from_mapping({"fakewh": {"SyncTable": "s1"}}, {}).settings
    renamed = settings.with_section("fakewh", replace(settings.fakewh, sync_table="s2"))
    assert (settings.fakewh.sync_table, renamed.section("fakewh").sync_table) == ("s1", "s2")
    with pytest.raises(KeyError, match=r"no section \[nope\]"):
        settings.section("nope")
    with pytest.raises(AttributeError, match="nope"):
        settings.nope  # noqa: B018


def test_a_plugins_section_is_documented(fake_plugin: str) -> None:
    markdown, example = reference_markdown(), example_toml()
    assert "## [fakewh]" in markdown
    assert (
        '| `ApiSecret` | secret string | `""` | `SYNCD_FAKEWH_APISECRET` |  | '
        "The fake warehouse's password. |" in markdown
    )
    assert '"fakewh" (local folder + a plugin\'s DuckDB)' in markdown  # Provider's choices
    assert "`[fakewh] ApiSecret`" in markdown  # the list of secrets
    assert '[fakewh]\n# Where the fake warehouse keeps its file.\nPath = "fake.duckdb"' in example


def test_a_plugin_warehouse_is_built_by_name_syncs_and_its_secret_never_logs(
    fake_plugin: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "fake.duckdb"
    with Simulator(SimulatorConfig(api_key=API_KEY, events_per_hour=30)) as sim:
        start = utcnow().replace(minute=0, second=0, microsecond=0) - 3 * HOUR
        files = write_config(
            tmp_path,
            sim,
            start,
            {
                "FsApiToken": API_KEY,
                "Provider": "fakewh",
                "LogLevel": "debug",
                "fakewh.Path": db,
                "fakewh.ApiSecret": PLUGIN_SECRET,
            },
        )
        code = run_cli(["once", "-c", str(files.config), "--log-format", "json"], now=None)
    output = "".join(capfd.readouterr())
    assert (code, PLUGIN_SECRET in output, "fake warehouse opened" in output) == (0, False, True)
    assert "fake://loader:***@here" in output  # scrubbed, not dropped
    assert len(sync_rows(db)) >= 2 and export_rows(db)
    loaded = settings_from_mapping(
        {"Provider": "fakewh", "fakewh": {"Path": str(db), "ApiSecret": PLUGIN_SECRET}}, {}
    )
    stage = registry.build_stage(loaded.settings)
    built = registry.build_warehouse(loaded.settings, stage, read_only=True)
    assert (type(built), registry.destination(loaded.settings)) == (
        DuckDBWarehouse,
        f"the fake file {db}",
    )
    built.close()


def test_register_secrets_covers_every_secret_key(fake_plugin: str) -> None:
    from syncd.observability.logging import safe_text

    loaded = settings_from_mapping({"fakewh": {"ApiSecret": PLUGIN_SECRET}}, {})
    register_secrets(loaded.settings)
    assert safe_text(f"password={PLUGIN_SECRET}") == "password=***"


def test_a_provider_without_its_extra_is_refused_with_the_extras_name(fake_plugin: str) -> None:
    settings = settings_from_mapping({"Provider": "fakemiss"}, {}).settings
    with pytest.raises(ConfigError) as caught:
        registry.build_stage(settings)
    assert caught.value.problems == [
        "Provider: 'fakemiss' needs syncd_test_no_such_driver, which is not installed; "
        "pip install 'syncd[fakeextra]'"
    ]


# -- without the optional drivers ------------------------------------------------------------

#: Runs a command with the optional drivers made impossible to import.
BLOCKED = textwrap.dedent(
    """
    import runpy, sys
    from importlib.abc import MetaPathFinder

    BLOCKED = ("google", "boto3", "botocore", "psycopg", "redshift_connector")

    class Block(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    """
)


def without_extras(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", BLOCKED, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        check=False,
    )


def test_docs_and_help_work_without_the_optional_drivers() -> None:
    markdown = without_extras("syncd.config", "--markdown")
    assert (markdown.returncode, markdown.stderr) == (0, "")
    assert markdown.stdout == (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    helped = without_extras("syncd", "--help")
    assert (helped.returncode, "usage: syncd" in helped.stdout) == (0, True)


@pytest.mark.parametrize(
    ("provider", "module", "extra"),
    [
        ("gcp", "google.cloud.storage", "gcp"),
        ("aws", "boto3", "aws"),
        ("postgres", "psycopg", "postgres"),
    ],
)
def test_a_real_provider_without_its_extra_names_the_extra(
    tmp_path: Path, provider: str, module: str, extra: str
) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text(
        f'Provider = "{provider}"\nStateDir = "{tmp_path / "state"}"\nTmpDir = "{tmp_path / "tmp"}"\n'
        '[s3]\nBucket = "b"\n[gcs]\nBucket = "b"\n'
        '[redshift]\nHost = "h"\nDB = "d"\nUser = "u"\nIAMRole = "arn:aws:iam::1:role/r"\n'
        '[bigquery]\nProject = "p"\nDataset = "d"\n[postgres]\nUser = "u"\nDB = "d"\n',
        encoding="utf-8",
    )
    result = without_extras("syncd", "check", "-c", str(config))
    message = (
        f"Provider: '{provider}' needs {module}, which is not installed; "
        f"pip install 'syncd[{extra}]'"
    )
    lines = result.stdout.splitlines()
    assert (result.returncode, lines[0], lines[2:]) == (
        1,
        "config       ok",
        [f"stage        FAILED: {message}", f"warehouse    FAILED: {message}"],
    ), result.stdout + result.stderr


# -- no module under syncd/ names a warehouse ------------------------------------------------

#: Names of warehouses, stages and providers that only their plugin modules may use in code.
PLUGIN_NAMES = ("duckdb", "postgres", "redshift", "bigquery", "aws", "gcp", "s3", "gcs")
_LABEL = re.compile(r"\[(" + "|".join(PLUGIN_NAMES) + r")\]", re.IGNORECASE)


def names_in_code(source: str) -> list[str]:
    """Where `source` names a warehouse in code: a string that is one of the names or holds a
    key label ("[s3] Bucket"), an attribute or keyword of that name (`settings.redshift`,
    `duckdb=...`). Docstrings, comments and imports (DuckDB is the transform's engine too)
    are not code that branches on a warehouse."""
    tree = ast.parse(source)
    docstrings = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in docstrings:
                continue
            text = node.value
            if text.strip().lower() in PLUGIN_NAMES or _LABEL.search(text):
                found.append((node.lineno, f"string {text[:60]!r}"))
        elif isinstance(node, ast.Attribute) and node.attr.lower() in PLUGIN_NAMES:
            found.append((node.lineno, f"attribute .{node.attr}"))
        elif isinstance(node, ast.keyword) and (node.arg or "").lower() in PLUGIN_NAMES:
            found.append((node.lineno, f"keyword {node.arg}="))
    return [f"line {line}: {what}" for line, what in sorted(found)]


def test_the_scan_finds_names_in_code() -> None:
    source = textwrap.dedent(
        '''
        """A docstring may say DuckDB, [s3] Bucket and redshift."""
        import duckdb  # the transform's engine
        def f(settings):
            if settings.provider == "aws":
                return settings.redshift.password
            problem("[s3] Bucket", "required")
            return dict(duckdb=1)
        '''
    )
    assert names_in_code(source) == [
        "line 5: string 'aws'",
        "line 6: attribute .redshift",
        "line 7: string '[s3] Bucket'",
        "line 8: keyword duckdb=",
    ]


def test_no_module_under_syncd_names_a_warehouse() -> None:
    found = {
        str(path.relative_to(ROOT)): names
        for path in sorted((ROOT / "syncd").rglob("*.py"))
        if "simulator" not in path.relative_to(ROOT / "syncd").parts
        and (names := names_in_code(path.read_text(encoding="utf-8")))
    }
    assert found == {}
