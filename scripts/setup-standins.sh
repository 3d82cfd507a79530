#!/usr/bin/env bash
# Build the test stand-ins that cannot live in the project venv (idempotent; instant when done).
# Today that is the BigQuery emulator's own virtualenv; see standins/bigquery.py for why.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" -m standins.bigquery
