#!/usr/bin/env bash
# Install Granary into .venv (again only when pyproject.toml changed) and start a single-node
# server. Arguments go to `granary server`, e.g. --data DIR --s3-address HOST:PORT, or -c FILE.
# The first start prints the S3 endpoint and a new access key with its secret; later starts
# print the endpoint and the key id, and how to show the secret again.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/granary ] || [ pyproject.toml -nt .venv/.granary-installed ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --upgrade pip
    .venv/bin/pip install --quiet -e '.[traces]'
    touch .venv/.granary-installed
fi
exec .venv/bin/granary server "$@"
