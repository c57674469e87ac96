#!/usr/bin/env bash
# The Batch AI CNTK quickstart (seed document 002) with the batchai CLI, on the embedded default:
# upload a training script and a real data set, create a 1-node cluster, submit the quickstart's
# job.json unchanged, stream its progress, list the model files, scale the cluster to zero.
# Installs what it needs into .venv first. No cloud account needed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/batchai ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
fi
export BATCHAI_HOME="${BATCHAI_HOME:-$PWD/.batchai-quickstart}"
batchai() { .venv/bin/batchai "$@"; }
storage="$BATCHAI_HOME/storage/local"   # the embedded default's storage account "local"
job="cntk_python_$(date +%s)"

echo "== upload: training script to share 'scripts', digits data to container 'data'"
mkdir -p "$storage/scripts/cntk" "$storage/logs"
cp dags/assets/quickstart/ConvNet_MNIST.py "$storage/scripts/cntk/"
.venv/bin/python dags/assets/quickstart/prepare_data.py "$storage/data/mnist_cntk"

if batchai cluster show -n nc6 -w quickstart >/dev/null 2>&1; then  # an earlier run (or the DAG) left it at zero nodes
  echo "== az batchai cluster resize -n nc6 -t 1"
  batchai cluster resize -n nc6 -t 1 -w quickstart >/dev/null
else
  echo "== az batchai cluster create -n nc6 -s STANDARD_NC6 -t 1"
  batchai cluster create -n nc6 -s STANDARD_NC6 -t 1 -w quickstart >/dev/null
fi
echo "== az batchai job create -n $job -c nc6 -e quickstart -f job.json"
batchai job create -n "$job" -c nc6 -w quickstart -e quickstart -f dags/assets/quickstart/job.json >/dev/null
echo "== az batchai job file stream -f stderr.txt"
batchai job file stream -j "$job" -w quickstart -e quickstart -f stderr.txt
batchai job wait -n "$job" -w quickstart -e quickstart
echo "== az batchai job file list -d MODEL"
batchai job file list -j "$job" -w quickstart -e quickstart -d MODEL | .venv/bin/python -c \
  'import json,sys; print("\n".join("%-24s %8d bytes  %s" % (f["name"], f["contentLength"], f["downloadUrl"]) for f in json.load(sys.stdin)))'
echo "== az batchai cluster resize -n nc6 -t 0"
batchai cluster resize -n nc6 -t 0 -w quickstart | .venv/bin/python -c 'import json,sys; c=json.load(sys.stdin); print("nodes:", c["currentNodeCount"], c["allocationState"])'
