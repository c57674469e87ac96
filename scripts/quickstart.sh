#!/usr/bin/env bash
# The quickstart DAG (seed document 002's flow) end to end on the embedded default: Airflow on
# SQLite, local nodes, local storage folders; no cloud account. Installs what it needs first.
#   upload script + digits data -> 1-node cluster -> quickstart job.json -> sensor -> MODEL files -> scale to 0
set -euo pipefail
cd "$(dirname "$0")/.."
# The same PyTorch as scripts/test.sh, in its CPU build: the local nodes have no GPU, and PyPI's torch
# is the CUDA build, about 5 GB more to download and unpack.
TORCH_VERSION=2.13.0
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
export AIRFLOW_HOME="${AIRFLOW_HOME:-$PWD/.airflow-quickstart}"
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export BATCHAI_HOME="${BATCHAI_HOME:-$PWD/.batchai-quickstart}"
tty=false
[ -t 1 ] && tty=true

# pip's whole output goes to a log; the terminal gets a line per phase and, on a terminal, one live
# line saying what pip is at, so a first install of a few minutes visibly moves.
pip_progress() {
  local line status="" summary="nothing new to install" collected=0 words
  while IFS= read -r line; do
    case "$line" in
      "Collecting "*|"Processing "*)  # from an index, or a wheel or folder on this machine
        collected=$((collected + 1)); status="collecting package $collected: ${line#* }" ;;
      "Installing collected packages:"*) status="installing what was collected (unpacking takes a while)" ;;
      "Successfully installed "*) read -ra words <<<"${line#Successfully installed }"; summary="installed ${#words[@]} package(s)"; continue ;;
      *) continue ;;
    esac
    if $tty; then printf '\r\033[K      %.90s' "$status"; fi
  done
  if $tty; then printf '\r\033[K'; fi
  echo "      $summary"
}
pip_install() {  # pip_install WHAT PIP-ARGUMENTS...
  echo "      $1"
  shift
  if ! .venv/bin/pip install --disable-pip-version-check --progress-bar off "$@" 2>&1 | tee -a "$pip_log" | pip_progress; then
    tail -25 "$pip_log" >&2
    echo "pip install failed; its whole output is in $pip_log" >&2
    exit 1
  fi
}

# Ready when the provider, Airflow and what every example DAG's jobs import are there: a .venv from
# an older quickstart (or made by hand) may have Airflow but not PyTorch or TensorBoard.
if [ -x .venv/bin/airflow ] && .venv/bin/python -c 'import airflow_batchai, torch, sklearn, tensorboard' 2>/dev/null; then
  echo "[1/4] .venv has Airflow, the provider, PyTorch, scikit-learn and TensorBoard: nothing to install"
else
  echo "[1/4] installing Airflow, the provider and CPU PyTorch into .venv (first run: a few minutes)"
  if ! python3 -c 'import ensurepip' 2>/dev/null; then  # Debian's python3 ships venv separately
    echo "      python3-venv, with apt-get"
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  fi
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  pip_log="$PWD/.venv/quickstart-pip.log"
  : >"$pip_log"
  if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    # torch alone from PyTorch's CPU index (--no-deps: its dependencies come with the rest, from the
    # usual index, where each name is looked up once); any index or wheel folder in the user's pip
    # configuration still counts, and a CPU build found there is taken as well.
    pip_install "PyTorch $TORCH_VERSION, CPU build, from $TORCH_CPU_INDEX" \
      --no-deps "torch==$TORCH_VERSION" --index-url "$TORCH_CPU_INDEX"
  fi
  pip_install "Airflow 3.3.2, the provider (editable) and the example DAGs' packages" -e '.[test,examples]'
  .venv/bin/python -c 'import airflow_batchai, torch, sklearn, tensorboard'  # fail here, not in a task
fi

echo "[2/4] preparing Airflow's database (SQLite in $AIRFLOW_HOME)"
.venv/bin/airflow db migrate >/dev/null

# One line per task as it ends, with what it did; on a terminal, the training's latest line while the
# sensor waits. Log lines read "<time> [info     ] <message> [<logger>] key=value...".
dag_progress() {
  local line message task note="" files=0 output=""
  while IFS= read -r line; do
    message=$(sed -E 's/^[^ ]+ \[[a-z]+ *\] //; s/ +\[[A-Za-z_][A-Za-z0-9_.]*\]( [a-z_]+=.*)?$//' <<<"$line")
    case "$message" in
      "wrote "*" digits to "*|"cluster nc6: "*|"uploaded "*" file(s)"*|"submitted job "*|"job "*" failed"*)
        note="${message%% \{*}" ;;  # a cluster's line ends with its node counts as a dict
      "job "*" succeeded") note="$message${output:+: $output}" ;;
      "file  "*) files=$((files + 1)); note="$files model files" ;;
      "[stderr.txt] "*|"[stdout.txt] "*|"job "*" is "*)  # the job's output, or its state while the sensor waits
        if [ "${message:0:1}" = "[" ]; then output="${message#\[*\] }"; fi
        if $tty; then printf '\r\033[K      %.90s' "$message"; fi ;;
      "Task failed with exception") note="FAILED (the log says why)" ;;
      "[DAG TEST] end task task_id="*)
        task="${message#*task_id=}"
        if $tty; then printf '\r\033[K'; fi
        printf '      %-18s %s\n' "${task%% *}" "${note:-done}"
        note="" files=0 output="" ;;
      *)  # after a failure: the exception's line, without its module
        if [ "${note:0:6}" = FAILED ] && [[ $message =~ ^([a-z_0-9]+\.)*([A-Z][A-Za-z0-9]*(Error|Exception|Timeout):\ .*)$ ]]; then
          note="FAILED: ${BASH_REMATCH[2]}"
        fi ;;
    esac
  done
}
log="$AIRFLOW_HOME/quickstart-dag-test.log"
echo "[3/4] running the quickstart DAG: airflow dags test batchai_quickstart (under a minute; log: $log)"
if ! .venv/bin/airflow dags test batchai_quickstart 2>&1 | tee "$log" | dag_progress \
  || ! grep -q "DagRun Finished: dag_id=batchai_quickstart.*state=success" "$log"; then
  tail -50 "$log"
  echo "the quickstart DAG failed; its whole output is in $log" >&2
  exit 1
fi

echo "[4/4] the job it ran (batchai job list, job file stream, job file list)"
job=$(.venv/bin/batchai job list -w quickstart -e quickstart | .venv/bin/python -c \
  'import json, sys; print(max(json.load(sys.stdin), key=lambda j: j["creationTime"])["name"])')
echo "      job       $job"
echo "      training  the last lines of its stderr.txt:"
.venv/bin/batchai job file stream -j "$job" -w quickstart -e quickstart -f stderr.txt | tail -3 | sed 's/^/                /'
.venv/bin/batchai job file list -j "$job" -w quickstart -e quickstart -d MODEL | .venv/bin/python -c '
import json, sys
entries = json.load(sys.stdin)
files = [entry for entry in entries if entry["fileType"] == "file"]
size = sum(entry["contentLength"] for entry in files)
line = f"      model     {len(files)} files ({size} bytes)"
line += "".join(" and " + entry["name"] + "/" for entry in entries if entry["fileType"] == "directory")
if files:
    line += " in " + files[0]["downloadUrl"].rsplit("/", 1)[0].removeprefix("file://")
print(line)'

# What to do next, in the settings this script used, so the UI shows the job just run. `airflow
# standalone` starts its parts as `airflow ...` from PATH: the venv's bin folder goes first there.
cat <<NEXT

The quickstart DAG succeeded. Next, see it in Airflow's UI:

  1. Start Airflow with the quickstart's settings (standalone: api-server, scheduler, dag-processor
     and triggerer in one command; Ctrl-C stops it):
       export PATH="$PWD/.venv/bin:\$PATH" AIRFLOW_HOME="$AIRFLOW_HOME" \\
         AIRFLOW__CORE__DAGS_FOLDER="$AIRFLOW__CORE__DAGS_FOLDER" AIRFLOW__CORE__LOAD_EXAMPLES=False \\
         BATCHAI_HOME="$BATCHAI_HOME"
       airflow standalone
  2. Open http://localhost:8080 and log in as admin, with the password standalone prints the first
     time (it stays in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated).
  3. Browse > Batch AI (http://localhost:8080/plugin/batchai): clusters, nodes and jobs.
     This job's page, with its stdout/stderr, output directories and training curves:
       http://localhost:8080/batchai/jobs/quickstart/quickstart/$job
  4. Dags > batchai_distributed_pytorch > Trigger: a 2-node PyTorch DDP job on this machine's CPU.

The same from the command line, in a shell with those settings:
  batchai job list -w quickstart -e quickstart
NEXT
