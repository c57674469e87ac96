#!/usr/bin/env bash
# The quickstart DAG (seed document 002's flow) end to end on the embedded default: Airflow on
# SQLite, local nodes, local storage folders; no cloud account. Installs what it needs first.
#   upload script + digits data -> 1-node cluster -> quickstart job.json -> sensor -> MODEL files -> scale to 0
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import ensurepip' 2>/dev/null; then  # Debian's python3 ships venv separately
  apt-get update -qq && apt-get install -y -qq python3-venv
fi
if [ ! -x .venv/bin/airflow ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
fi
export AIRFLOW_HOME="${AIRFLOW_HOME:-$PWD/.airflow-quickstart}"
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export BATCHAI_HOME="${BATCHAI_HOME:-$PWD/.batchai-quickstart}"
.venv/bin/airflow db migrate >/dev/null
log="$AIRFLOW_HOME/quickstart-dag-test.log"
echo "== airflow dags test batchai_quickstart   (full log: $log)"
if ! .venv/bin/airflow dags test batchai_quickstart >"$log" 2>&1 || ! grep -q "DagRun Finished: dag_id=batchai_quickstart.*state=success" "$log"; then
  tail -50 "$log"
  echo "the quickstart DAG failed" >&2
  exit 1
fi
grep -E "uploaded [0-9]+ file|submitted job|cluster nc6:" "$log" | sed -E 's/^[^ ]+ \[info *\] //; s/ \[airflow[^]]*\].*$//' || true
job=$(.venv/bin/batchai job list -w quickstart -e quickstart | .venv/bin/python -c 'import json,sys; print(max(json.load(sys.stdin), key=lambda j: j["creationTime"])["name"])')
echo "== the job's training progress (batchai job file stream -f stderr.txt)"
.venv/bin/batchai job file stream -j "$job" -w quickstart -e quickstart -f stderr.txt | tail -4
echo "== its model files (batchai job file list -d MODEL)"
.venv/bin/batchai job file list -j "$job" -w quickstart -e quickstart -d MODEL | .venv/bin/python -c \
  'import json,sys; files=json.load(sys.stdin); print("\n".join("  %-24s %8d bytes" % (f["name"], f["contentLength"]) for f in files[:3])); print("  ... %d files in %s" % (len(files), files[0]["downloadUrl"].rsplit("/", 1)[0]))'
echo "quickstart DAG succeeded"
