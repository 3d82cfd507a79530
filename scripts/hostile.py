"""Peak RSS and outcome of a transform of each hostile export body (tests/hostile_support.py).

    .venv/bin/python scripts/hostile.py [--root DIR] [--kill-mb N] [--case NAME ...]

`--root` measures another checkout of syncd (e.g. an older commit in a git worktree) with the
same bodies, for before/after figures. Each case runs in a fresh child process, killed past
`--kill-mb`, so a regression cannot take the machine down.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from hostile_support import CASES, ROOT, measure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the syncd checkout to measure")
    parser.add_argument("--kill-mb", type=float, default=3072)
    parser.add_argument("--case", action="append", help="only these cases (by name)")
    parser.add_argument("--bodies", type=Path, help="keep the generated bodies in this folder")
    args = parser.parse_args()
    cases = [c for c in CASES if not args.case or c.name in args.case]
    with tempfile.TemporaryDirectory(prefix="syncd-hostile-") as scratch:
        folder = args.bodies or Path(scratch)
        print("| case | input | peak RSS (MB) | seconds | outcome |\n|---|---|---:|---:|---|")
        for case in cases:
            got = measure(case, folder, kill_mb=args.kill_mb, root=args.root.resolve())
            outcome = ", ".join(f"{k} {v}" for k, v in got.outcome.items())
            print(
                f"| {case.name} | {case.what} | {got.peak_mb:.0f} | {got.seconds:.1f} | {outcome} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
