#!/usr/bin/env bash
# Install Granary into .venv (first run only) and start a single-node server.
# Extra arguments go to `granary server`, e.g. --data DIR --s3-address HOST:PORT.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e .
exec .venv/bin/granary server "$@"
