"""Node tools the control plane runs through the agent: the command channel, stopping runs,
unmounting before a node root is removed, and the cluster keys in authorized_keys.
"""

import base64
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

try:  # in the control plane: the package airflow_batchai.agent
    from .protocol import FINAL_STATES, POLL_INTERVAL_S, RUN_MARKER, run_marker
    from .runtime import now, read_json, write_json_atomically
    from .volumes import mount_points, unmount_commands
except ImportError:  # on a node: these files lie flat in one folder, the agent script's own (first on sys.path)
    from protocol import FINAL_STATES, POLL_INTERVAL_S, RUN_MARKER, run_marker  # type: ignore[no-redef]
    from runtime import now, read_json, write_json_atomically  # type: ignore[no-redef]
    from volumes import mount_points, unmount_commands  # type: ignore[no-redef]


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is not alive
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def terminate(run_dir, grace_s):
    """Ask the agent to stop; if it is gone, stop its process groups here and record the end."""
    status_path = os.path.join(run_dir, "status.json")
    plan = read_json(os.path.join(run_dir, "plan.json")) or {}
    run_id = run_marker(os.path.basename(os.path.normpath(run_dir)), plan.get("node_id", ""))
    status = read_json(status_path) or {}
    if status.get("state") in FINAL_STATES:
        return 0 if kill_marked(run_id) else 3
    pid = status.get("pid")
    if pid and process_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = now() + grace_s + 5
        while now() < deadline:
            status = read_json(status_path) or {}
            if status.get("state") in FINAL_STATES:
                return 0 if kill_marked(run_id) else 3
            time.sleep(POLL_INTERVAL_S)
    for pgid in status.get("pgids") or []:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except OSError:
                pass
    if pid and process_alive(pid):
        os.kill(pid, signal.SIGKILL)
    if not kill_marked(run_id):
        return 3  # some of the run's processes would not die: not stopped, and not said to be
    status.update(state="terminated", end_time=now(), exit_code=-1, error={"code": "JobTerminated", "message": "the job was terminated"})
    write_json_atomically(status_path, status)
    return 0


def marked_processes(marker_value):
    """Pids whose environment carries this run's marker (processes of the run that left its groups)."""
    marker = ("%s=%s" % (RUN_MARKER, marker_value)).encode() + b"\0"
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as handle:
                environ = handle.read() + b"\0"
        except OSError:  # gone, or not ours to read
            continue
        if (b"\0" + marker) in (b"\0" + environ) and process_alive(int(name)):
            found.append(int(name))
    return found


def kill_marked(marker_value, timeout_s=10.0):
    """SIGKILL every process of the run until none is left; False if some outlived ``timeout_s``."""
    deadline = now() + timeout_s
    while True:
        found = marked_processes(marker_value)
        if not found:
            return True
        if now() > deadline:
            return False
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(POLL_INTERVAL_S)


def terminate_all(runs_dir, grace_s):
    """Stop every run under ``runs_dir`` (a node leaving its cluster must leave no process behind)."""
    try:
        names = sorted(os.listdir(runs_dir))
    except OSError:
        return 0
    for name in names:
        terminate(os.path.join(runs_dir, name), grace_s)
    return 0


SSH_SESSION_VARIABLES = ("SSH_CLIENT", "SSH2_CLIENT", "SSH_CONNECTION", "SSH_TTY")


def session_free_environment():
    """This process's environment without the SSH session's variables.

    bash sources ~/.bashrc when SSH_CLIENT is set and it seems to be a top-level shell; every
    job command is a ``bash -c``, so a pyenv-style .bashrc would cost each one ~100 ms.
    """
    return {k: v for k, v in os.environ.items() if k not in SSH_SESSION_VARIABLES}


def serve():
    """Run commands sent as length-prefixed JSON on stdin; answer the same way on stdout.

    The control plane keeps one SSH channel open to this loop, so a command costs a process
    spawn instead of a login shell (whose rc files, e.g. pyenv's, cost ~80-115 ms each time).
    """
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    environment = session_free_environment()
    while True:
        header = source.readline()
        if not header.strip():
            return 0
        request = json.loads(source.read(int(header)))
        try:
            done = subprocess.run(
                request["argv"],
                input=base64.b64decode(request.get("stdin") or ""),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                timeout=request.get("timeout"),
                env=environment,
            )
            response = {"rc": done.returncode, "out": base64.b64encode(done.stdout).decode(), "err": base64.b64encode(done.stderr).decode()}
        except subprocess.TimeoutExpired:
            response = {"timeout": True}
        except OSError as error:
            response = {"rc": 127, "out": "", "err": base64.b64encode(str(error).encode()).decode()}
        payload = json.dumps(response).encode()
        sink.write(b"%d\n" % len(payload) + payload)
        sink.flush()


def unmount_under(root):
    """Unmount everything below ``root``, deepest first, before the folder is removed: removing a tree
    with an NFS mount inside would delete the user's data. Exit 1 while anything is still mounted."""
    root = os.path.realpath(root)  # mountinfo names real paths
    below = sorted((p for p in mount_points() if p.startswith(root + os.sep)), key=len, reverse=True)
    for path in below:
        for argv in [*unmount_commands(path), ["umount", "-l", path], ["sudo", "-n", "umount", "-l", path]]:
            try:
                if subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60).returncode == 0:
                    break
            except (OSError, subprocess.SubprocessError):
                continue
    left = sorted(p for p in mount_points() if p.startswith(root + os.sep))
    if left:
        sys.stderr.write("still mounted under %s: %s\n" % (root, ", ".join(left)))
        return 1
    return 0


CLUSTER_TAG_PREFIX = "batchai-cluster-"
UUID_LENGTH = 36


def stale_cluster_line(line, keep):
    """A line of ours for a cluster whose uuid is not in KEEP (a cluster deleted while this host was unreachable)."""
    tag = (line.split() or [""])[-1]
    return keep is not None and tag.startswith(CLUSTER_TAG_PREFIX) and tag[len(CLUSTER_TAG_PREFIX) :][:UUID_LENGTH] not in keep


def edit_authorized_keys(path, tag, key=None, keep=None):
    """Drop our TAG's lines from an authorized_keys file and, given KEY, add one line "KEY TAG".

    Given KEEP (the uuids of the clusters that exist), lines of other clusters are dropped too,
    so a host that was unreachable when its cluster went away loses that login at its next setup.
    Nodes of one cluster may share a home (NFS), so edits are serialised by a lock and
    the file is replaced whole; the user's own lines are kept byte for byte, in order.
    """
    path = os.path.realpath(os.path.expanduser(path))
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        os.makedirs(folder, 0o700)
    lock = os.open(folder, os.O_RDONLY)  # a lock on the folder leaves no lock file behind
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(path) as handle:
                lines = handle.read().splitlines(True)
            mode = os.stat(path).st_mode & 0o777
        except OSError:
            lines, mode = [], 0o600
        kept = [line for line in lines if line.split()[-1:] != [tag] and not stale_cluster_line(line, keep)]
        if kept and not kept[-1].endswith("\n"):
            kept[-1] += "\n"
        if key:
            kept.append("%s %s\n" % (" ".join(key.split()[:2]), tag))
        if kept == lines:
            return 0
        temporary = "%s.%d.tmp" % (path, os.getpid())
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(descriptor, "w") as handle:
            handle.write("".join(kept))
        os.replace(temporary, path)
    finally:
        os.close(lock)
    return 0
