"""syncd's crash campaign: SIGKILL `syncd once` at random moments over multi-day backfills into
each warehouse stand-in while the export API misbehaves, restart it each time, and count rows
lost and duplicated.

    .venv/bin/python scripts/campaign.py --warehouses duckdb,postgres,redshift,bigquery --kills 30

Each warehouse runs backfills (rounds) of `--days` days of 1-hour windows, each killed up to
`--kills-per-round` times after a random delay (seeded by `--seed`), until `--kills` runs were
killed. Meanwhile the simulator gets one API fault at a time, every `--fault-gap` seconds (429
with Retry-After 1 s, 5xx, dropped connections, truncated gzip, expired signed URLs, FAILED
operations), and serves `--bad-row-rate` bad rows. Every round is checked against the
simulator's events (see tests/campaign_support.py); with `--individuals` (ExportIndividuals)
the people batches are killed too and the people table is checked against the simulator's
individuals exports. Prints a Markdown summary table (faults
counted as they fired) and writes JSON (`--out`). Exits 1 when any round lost, duplicated or
misplaced a row, its sync table or rejects did not reconcile, or a run failed for any reason
but a batch held by a FAILED export.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import structlog

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import campaign_support  # noqa: E402 (needs the paths above)
from campaign_support import CampaignSettings, run_campaign, summary_table  # noqa: E402

#: Kill delays (seconds) per warehouse: up to about one clean backfill run of two days
#: (measured: DuckDB 6.5 s, PostgreSQL 6.1 s, Redshift 7.6 s, BigQuery 16.8 s).
MAX_DELAY = {
    "duckdb": 6.5,
    "postgres": 6.0,
    "redshift": 7.5,
    "bigquery": 16.0,
    "snowflake": 7.5,
}
#: Seconds between two API faults planned, per warehouse (unless --fault-gap): denser where
#: runs are short, so that each backfill meets every kind.
FAULT_GAP = {
    "duckdb": (0.1, 0.4),
    "postgres": (0.1, 0.4),
    "redshift": (0.2, 0.8),
    "bigquery": (0.2, 0.8),
    "snowflake": (0.2, 0.8),
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warehouses", default=",".join(campaign_support.WAREHOUSES))
    parser.add_argument("--kills", type=int, default=30, help="kills per warehouse")
    parser.add_argument("--kills-per-round", type=int, default=6)
    parser.add_argument("--days", type=int, default=2, help="days per backfill")
    parser.add_argument("--events-per-hour", type=int, default=30)
    parser.add_argument("--bad-row-rate", type=float, default=0.05)
    parser.add_argument(
        "--fault-gap",
        type=_gap,
        metavar="MIN,MAX",
        help="seconds between two API faults planned (drawn from [MIN, MAX]; default per "
        "warehouse, 0.1,0.4 to 0.2,0.8); 0 for none",
    )
    parser.add_argument(
        "--individuals",
        action="store_true",
        help="ExportIndividuals on: kill people batches too and check the people table",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, help="work folder (default: a new temporary one)")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "campaign.json")
    return parser.parse_args(argv)


def _gap(text: str) -> tuple[float, float]:
    """The --fault-gap value: MIN,MAX seconds, or one number (0 for no faults)."""
    low, _, high = text.partition(",")
    gap = (float(low), float(high or low))
    if not 0 <= gap[0] <= gap[1]:
        raise argparse.ArgumentTypeError(f"want MIN,MAX with 0 <= MIN <= MAX, not {text!r}")
    return gap


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.disable(logging.INFO)  # the stand-ins' own chatter
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    names = [n.strip() for n in args.warehouses.split(",") if n.strip()]
    unknown = sorted(set(names) - set(campaign_support.WAREHOUSES))
    if unknown:
        sys.stderr.write(f"unknown warehouses: {', '.join(unknown)}\n")
        return 2
    root = args.dir or Path(tempfile.mkdtemp(prefix="syncd-campaign-"))
    started = time.monotonic()
    results = []
    for name in names:
        settings = CampaignSettings(
            name,
            kills=args.kills,
            kills_per_round=args.kills_per_round,
            days=args.days,
            events_per_hour=args.events_per_hour,
            bad_row_rate=args.bad_row_rate,
            min_fault_gap=(args.fault_gap or FAULT_GAP[name])[0],
            max_fault_gap=(args.fault_gap or FAULT_GAP[name])[1],
            max_delay=MAX_DELAY[name],
            seed=args.seed,
            individuals=args.individuals,
        )
        results.append(run_campaign(settings, root / name, lambda line: print(line, flush=True)))
    print(summary_table(results))
    walls = ", ".join(f"{r.warehouse} {r.wall_seconds:.0f} s" for r in results)
    print(f"wall time {time.monotonic() - started:.0f} s ({walls})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"argv": argv, "results": [r.as_json() for r in results]}
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
