"""`tests/crash_runner.py` with crash points inside the BigQuery commit, and short retries.

    python tests/gcp_crash_runner.py POINT[@N] once -c syncd.toml

Points added to crash_runner's (`staged`, `committed`, ...):

    bq_loaded     the batch's load job finished; the sync row and the transaction have not run
    bq_committed  the commit transaction finished; the staging tables are not dropped yet

API calls retry for a few seconds only, so that a stand-in's 500 fails fast.
"""

from __future__ import annotations

import sys
from typing import Any

import crash_runner
from crash_runner import CrashPoint

import warehouses.bigquery
import warehouses.google_cloud

RETRY_DEADLINE = 5.0


def install_bq_loaded(crash: CrashPoint) -> None:
    crash_runner._after(warehouses.bigquery.BigQueryWarehouse, "_load", crash, lambda _: True)


def install_bq_committed(crash: CrashPoint) -> None:
    warehouse = warehouses.bigquery.BigQueryWarehouse
    original = warehouse._query

    def query(self: Any, text: str, *args: Any, **kwargs: Any) -> Any:
        result = original(self, text, *args, **kwargs)
        if text.startswith("BEGIN TRANSACTION;") and "INSERT INTO" in text:
            crash.arrive()
        return result

    warehouse._query = query  # type: ignore[method-assign]


if __name__ == "__main__":
    warehouses.google_cloud.RETRY_DEADLINE = RETRY_DEADLINE
    crash_runner.POINTS["bq_loaded"] = install_bq_loaded
    crash_runner.POINTS["bq_committed"] = install_bq_committed
    sys.exit(crash_runner.main(sys.argv[1:]))
