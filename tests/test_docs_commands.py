"""Every `syncd ...` command the docs show is one the CLI accepts: each command line in a code
block or inline code of README.md and docs/*.md is parsed by syncd's own argument parser, and
every docs/*.md page is linked from the README."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from syncd.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_COMMAND = re.compile(r"(?:^|`|\s)(?:\.venv/bin/|/opt/syncd/bin/)?(syncd (?:[a-z]+)[^`\n]*)")
_CODE = re.compile(r"```[^\n]*\n(.*?)```|`([^`\n]+)`", re.DOTALL)


def shown_commands(text: str) -> list[str]:
    commands = []
    for block, inline in _CODE.findall(text):
        for line in (block or inline).splitlines():
            line = line.split(" #", 1)[0].strip()
            found = _COMMAND.search(line)
            if found:
                commands.append(found.group(1).split(" && ")[0].strip())
    return commands


def test_the_docs_show_commands() -> None:
    shown = [c for page in PAGES for c in shown_commands(page.read_text())]
    assert len(shown) > 20
    assert any(c.startswith("syncd demo --serve") for c in shown)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_shown_command_parses(page: Path) -> None:
    parser = build_parser()
    for command in shown_commands(page.read_text()):
        argv = shlex.split(re.sub(r"\[[^\]]*\]", "", command))[1:]  # usage's [optional] parts
        if argv in (["--version"], ["--help"]) or not argv or argv[0].startswith("<"):
            continue
        if argv[0] not in parser._subparsers._group_actions[0].choices:  # type: ignore[union-attr]
            continue  # prose such as "syncd keeps ...", not a command
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"{page.name}: `{command}` does not parse (exit {exc.code})")


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        assert f"](docs/{page.name})" in readme, page.name
