"""`python -m syncd.config --markdown | --example`: print the generated reference or example.

Regenerate the checked-in files with:
    python -m syncd.config --markdown > docs/configuration.md
    python -m syncd.config --example > example-config.toml
"""

from __future__ import annotations

import argparse
import sys

from syncd.config.reference import example_toml, reference_markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m syncd.config", description=__doc__)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--markdown", action="store_true", help="the configuration reference")
    which.add_argument("--example", action="store_true", help="the example config file")
    args = parser.parse_args(argv)
    sys.stdout.write(reference_markdown() if args.markdown else example_toml())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
