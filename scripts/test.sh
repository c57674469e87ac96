#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine with Python 3.11: installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
# System parts: venv for Debian's python3, OpenSSH's sshd and iproute2 for the SSH node tests,
# OpenMPI for mpirun across those nodes, Node.js for Azurite (the Azure Blob emulator), rclone
# and fuse3 for mounting read-only blob volumes, cifs-utils for SMB mounts of Azure Files, Chromium and its
# WebDriver for clicking through the Airflow UI.
missing=""
python3 -c 'import ensurepip' 2>/dev/null || missing="$missing python3-venv"
[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
command -v ip >/dev/null || missing="$missing iproute2"
command -v ssh-keygen >/dev/null || missing="$missing openssh-client"
command -v mpirun >/dev/null || missing="$missing openmpi-bin"
command -v npm >/dev/null || missing="$missing nodejs npm"
command -v rclone >/dev/null || missing="$missing rclone"
command -v fusermount3 >/dev/null || missing="$missing fuse3"
[ -x /usr/sbin/mount.cifs ] || missing="$missing cifs-utils"
command -v docker-compose >/dev/null || missing="$missing docker-compose"  # only to validate docker-compose.yaml
command -v chromium >/dev/null || missing="$missing chromium"  # the UI walk in a headless browser
command -v chromedriver >/dev/null || missing="$missing chromium-driver"
[ -x /usr/sbin/slurmctld ] || missing="$missing slurmctld slurmd slurm-client munge"  # a real Slurm cluster for the Slurm tests
if [ -n "$missing" ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
[ -x node_modules/.bin/azurite-blob ] || npm install --no-audit --no-fund --silent
python3 -m venv .venv
# PyTorch's CPU build from its own index (PyPI's torch is the CUDA build, about 5 GB more): torch alone
# (--no-deps), its dependencies come with the rest from the usual index; a wheel folder or index in
# pip's configuration still counts (and an unreachable index only costs pip's retries).
.venv/bin/pip install -q --disable-pip-version-check --no-deps 'torch==2.13.0' --index-url https://download.pytorch.org/whl/cpu 2>&1 | grep -v '^WARNING: \(Location\|Retrying\)' || true
# editable_mode=strict: a link tree of the package, which type checkers and other readers can follow
.venv/bin/pip install -q --disable-pip-version-check -e '.[test,examples]' --config-settings editable_mode=strict 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c 'import airflow_batchai, torch, sklearn' # fail here, not in the middle of the suite
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Three pytest-xdist workers on two cores: most tests wait on servers, nodes and Airflow, not the CPU.
# Each worker starts its own servers on its own ports and subnets (tests/sshhosts.py); files that share
# a costly session fixture (the Airflow deployment, the Slurm clusters) are grouped onto one worker.
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n "${BATCHAI_TEST_WORKERS:-3}" --dist load "$@"
