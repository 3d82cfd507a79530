#!/usr/bin/env bash
# Build the test stand-ins that cannot live in the project venv (idempotent; instant when done).
# - Debian's chromium: the status page tests load the page in a real headless browser
#   (installed as root when /usr/bin/chromium is absent; apt-get update first).
# - The BigQuery emulator's own virtualenv; see standins/bigquery.py for why.
# - The Snowflake stand-in's (fakesnow) own virtualenv; see standins/snowflake.py for why.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup-standins: /usr/bin/chromium is missing; run this script as root to install it" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium
fi
"${PYTHON:-.venv/bin/python}" -m standins.snowflake
exec "${PYTHON:-.venv/bin/python}" -m standins.bigquery
