"""`python -m syncd` runs the CLI."""

from syncd.cli import main

raise SystemExit(main())
