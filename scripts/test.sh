#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine with Python 3.11: installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import ensurepip' 2>/dev/null; then  # Debian's python3 ships venv separately
  apt-get update -qq && apt-get install -y -qq python3-venv
fi
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]' 'torch==2.13.0' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c 'import airflow_batchai, torch, sklearn' # fail here, not in the middle of the suite
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
