"""SSH benchmark: our Transport vs Airflow's SSH provider, against the same sshd, in one run.

    .venv/bin/pip install -e '.[test,bench]' && .venv/bin/python bench/ssh_transport.py

1. Per-command round trip on a kept-open connection: SSHTransport.run vs SSHHook's
   exec_ssh_client_command (the provider's default client, as SSHOperator uses it).
2. Submit-to-running of a 1-node job on a warm pool (cluster idle, connection open): our
   Service.create_job until the job's process runs, vs SSHRemoteJobOperator's submit path
   (new connection, OS detection, setsid wrapper) until its process runs.
Prints a table with ratios and writes bench/results/ssh_transport.json. Not a test.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from airflow.providers.ssh.hooks.ssh import SSHHook  # noqa: E402
from airflow.providers.ssh.utils.remote_job import RemoteJobPaths, build_posix_wrapper_command  # noqa: E402

from airflow_batchai.pools.ssh import SSHNodePool  # noqa: E402
from airflow_batchai.service import Service  # noqa: E402
from airflow_batchai.spec import load_cluster_spec, load_job_spec  # noqa: E402
from airflow_batchai.transport.ssh import HostSpec, SSHAuth  # noqa: E402
from tests import sshhosts  # noqa: E402

ROUND_TRIPS = 200
SUBMITS = 15


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(call: object, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()  # type: ignore[operator]
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def wait_for(path: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.0005)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="batchai-bench-"))
    hosts = sshhosts.start(work / "sshd", 1, "bench", use_namespaces=False)
    host = hosts.hosts[0]
    try:
        auth = SSHAuth(user="root", key_file=str(hosts.client_key), known_hosts=str(hosts.known_hosts), allow_agent=False)
        pool = SSHNodePool([HostSpec.parse(host.entry)], auth, root=str(work / "nodes"), python=sys.executable)
        ours = pool.transport(HostSpec.parse(host.spec).node_id)
        ours.run(["true"])
        our_rtt = timed(lambda: ours.run(["true"]), ROUND_TRIPS)

        hook = SSHHook(remote_host=host.address, port=host.port, username="root", key_file=str(hosts.client_key), no_host_key_check=True)
        client = hook.get_conn()
        hook.exec_ssh_client_command(client, "true", get_pty=False, environment=None)
        their_rtt = timed(lambda: hook.exec_ssh_client_command(client, "true", get_pty=False, environment=None), ROUND_TRIPS)
        client.close()

        service = Service.embedded(work / "home", pool=pool)
        service.create_cluster("bench", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
        while service.show_cluster("bench").node_state_counts.idle_node_count < 1:
            time.sleep(0.05)
        our_submit = []
        for index in range(SUBMITS):
            marker = work / f"ours-{index}"
            body = {
                "nodeCount": 1,
                "customToolkitSettings": {"commandLine": f"touch {marker}"},
                "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP_DIR",
            }
            spec = load_job_spec({"properties": body}, environ={})
            started = time.perf_counter()
            service.create_job("bench", f"job{index}", spec)
            wait_for(marker)
            our_submit.append((time.perf_counter() - started) * 1000)
            service.wait_job(f"job{index}", poll_s=0.05)

        their_submit = []
        for index in range(SUBMITS):
            marker = work / f"theirs-{index}"
            started = time.perf_counter()
            with hook.get_conn() as ssh_client:  # what SSHRemoteJobOperator.execute does before deferring
                hook.exec_ssh_client_command(ssh_client, "uname -s", get_pty=False, environment=None)
                paths = RemoteJobPaths(job_id=f"bench_{index}_{time.time_ns()}", remote_os="posix", base_dir=str(work / "remote-jobs"))
                hook.exec_ssh_client_command(
                    ssh_client, build_posix_wrapper_command(f"touch {marker}", paths), get_pty=False, environment=None
                )
            wait_for(marker)
            their_submit.append((time.perf_counter() - started) * 1000)
    finally:
        sshhosts.teardown(hosts)

    rows = [
        ("command round trip, p50 ms", statistics.median(our_rtt), statistics.median(their_rtt)),
        ("command round trip, p95 ms", percentile(our_rtt, 0.95), percentile(their_rtt, 0.95)),
        ("submit to running, p50 ms", statistics.median(our_submit), statistics.median(their_submit)),
        ("submit to running, p95 ms", percentile(our_submit, 0.95), percentile(their_submit, 0.95)),
    ]
    print(f"{'measure':30} {'batchai':>10} {'airflow ssh':>12} {'ratio':>8}")
    for name, mine, theirs in rows:
        print(f"{name:30} {mine:10.2f} {theirs:12.2f} {theirs / mine:7.1f}x")
    print(f"targets: round trip >= 20x faster than SSHHook; submit-to-running p50 <= 150 ms (ours: {statistics.median(our_submit):.0f} ms)")
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    payload = {name: {"batchai": mine, "airflow_ssh": theirs, "ratio": theirs / mine} for name, mine, theirs in rows}
    (results / "ssh_transport.json").write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
