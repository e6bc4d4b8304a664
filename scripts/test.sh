#!/usr/bin/env bash
# Install Granary and its test tools into .venv, then run the whole test suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[test]'
# rclone is a Debian package; install it when we can (root on Debian, as in CI).
if ! command -v rclone >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq rclone >/dev/null) || echo "note: rclone not installed; its tests will be skipped"
fi
export PATH="$PWD/.venv/bin:$PATH"
exec python -m pytest -q "$@"
