#!/usr/bin/env bash
# Install Granary and its test tools into .venv, then run the whole test suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[test]'
# rclone and restic (clients under test), strace (to see what the server syncs), prometheus
# (it scrapes a cluster) and mmdebstrap (it builds the OCI image) are Debian packages; install
# the missing ones when we can (root on Debian, as in CI).
missing=""
for tool in rclone restic strace prometheus mmdebstrap; do command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"; done
if [ -n "$missing" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  # shellcheck disable=SC2086 # one word per package
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null) || echo "note:$missing not installed; their tests will be skipped"
fi
export PATH="$PWD/.venv/bin:$PATH"
exec python -m pytest -q "$@"
