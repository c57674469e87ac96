#!/usr/bin/env python3
"""Node agent: supervises one job (or one node setup) on one node. Standard library only.

It is copied to the node with the other modules of this folder and started detached, so the
job outlives the Airflow worker and the SSH connection that started it. The truth about the
job lives next to it, in ``status.json`` in the run folder (written atomically; the control
plane only reads it):

    state      starting | preparing | running | succeeded | failed | terminated (protocol.RunState)
    pid        this agent's pid;  pgids: process groups of the job's processes
    heartbeat  epoch seconds, refreshed every HEARTBEAT_INTERVAL_S while the agent lives
    start_time, end_time, exit_code, error {code, message}

Usage:
    agent.py run RUN_DIR          run the plan in RUN_DIR/plan.json (secrets in RUN_DIR/secrets.json)
    agent.py terminate RUN_DIR    stop it: SIGTERM to every process group, SIGKILL after the grace period
    agent.py terminate-all RUNS   stop every run in the folder RUNS (a node leaving its cluster)
    agent.py unmount-under ROOT   unmount everything below ROOT (before it is removed)
    agent.py slurm-run BASE       inside a Slurm allocation: this node's plan from BASE (slurmstep.py), then run it
    agent.py serve                run commands sent over stdin (the control plane's kept-open channel)
    agent.py authorize FILE TAG KEY [--keep UUIDS]   add the public KEY to FILE on a line tagged TAG
    agent.py deauthorize FILE TAG [--keep UUIDS]     remove the lines tagged TAG from FILE
                                  (--keep: lines of clusters not listed are removed too)

Python >= 3.8 on the node; nothing to install there.
"""

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

if __package__:  # in the control plane: the package airflow_batchai.agent
    from . import protocol, resources, runtime, slurmstep, tools
    from .container import Containers
    from .volumes import Volumes
else:  # on a node: these files lie flat in one folder, this script's own (first on sys.path)
    import protocol  # type: ignore[no-redef]
    import resources  # type: ignore[no-redef]
    import runtime  # type: ignore[no-redef]
    import slurmstep  # type: ignore[no-redef]
    import tools  # type: ignore[no-redef]
    from container import Containers  # type: ignore[no-redef]
    from volumes import Volumes  # type: ignore[no-redef]

JobError, now, read_json, write_json_atomically = runtime.JobError, runtime.now, runtime.read_json, runtime.write_json_atomically
AgentPlan, ProtocolError, expand = protocol.AgentPlan, protocol.ProtocolError, protocol.expand
DEFAULT_GRACE_S, FINAL_STATES, HEARTBEAT_INTERVAL_S = protocol.DEFAULT_GRACE_S, protocol.FINAL_STATES, protocol.HEARTBEAT_INTERVAL_S
PLAN_FILE, SECRETS_FILE, STATUS_FILE, POLL_INTERVAL_S = (
    protocol.PLAN_FILE,
    protocol.SECRETS_FILE,
    protocol.STATUS_FILE,
    protocol.POLL_INTERVAL_S,
)
REGISTRY_PASSWORD_KEY, SAS_KEY_PREFIX = protocol.REGISTRY_PASSWORD_KEY, protocol.SAS_KEY_PREFIX


class Agent:
    def __init__(self, run_dir):
        self.run_dir = os.path.abspath(run_dir)
        document = read_json(os.path.join(self.run_dir, PLAN_FILE))
        if document is None:
            raise SystemExit("agent: no readable %s in %s" % (PLAN_FILE, self.run_dir))
        try:
            self.plan = AgentPlan.from_json(document, PLAN_FILE)
        except ProtocolError as error:  # a control plane of another version: refuse, say why
            raise SystemExit("agent: %s" % error) from None
        self.status_path = os.path.join(self.run_dir, STATUS_FILE)
        self.lock = threading.Lock()
        self.status = {"state": "starting", "pid": os.getpid(), "pgids": [], "heartbeat": now(), "start_time": now()}
        self.children = []  # (name, Popen)
        self.terminate_requested = threading.Event()
        self.done = threading.Event()
        self.env = {}
        self.job_variables = {}  # what a container gets: the job's variables only, not the host's
        self.registry_password = None
        self.log_handle = None
        self.log_dir_fd = None  # the stdouterr folder, opened before the job's processes run
        self.sas = {}
        self.deadline = now() + float(self.plan.max_wall_clock_s or 7 * 86400)
        self.release_status = None  # on Slurm: node 0's status.json; a reserved node is released when it is final
        self.fenced = None  # why the agent stopped its own job: it could not renew its heartbeat, or a disk is full
        self.reserve_path = os.path.join(self.run_dir, ".reserve")
        self.marker = protocol.run_marker(os.path.basename(self.run_dir), self.plan.node_id)
        self.launched = os.stat(os.path.join(self.run_dir, PLAN_FILE)).st_mtime  # written just before this agent started
        self.next_disk_check = 0.0
        self.job_account = None  # pwd entry of plan.job_user when the job runs as another user than this agent
        self.volumes = Volumes(self)  # links, staging, mounts and uploads of the job's folders
        self.containers = Containers(self)  # the job's container, when it runs in one

    def set_status(self, **changes):
        with self.lock:
            self.status.update(changes)
            self.status["heartbeat"] = now()
            try:
                write_json_atomically(self.status_path, self.status)
            except OSError as error:
                if error.errno != errno.ENOSPC or not os.path.exists(self.reserve_path):
                    raise
                # The node's disk is full: the job is stopped (it filled it, or it cannot go on), and
                # the reserve gives way so this status, and the final one, can still be written.
                self.disk_full("the node's run folder", self.run_dir)
                os.unlink(self.reserve_path)
                write_json_atomically(self.status_path, self.status)

    def keep_reserve(self):
        try:
            with open(self.reserve_path, "wb") as handle:
                handle.write(b"\0" * runtime.RESERVE_BYTES)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError:  # already full: nothing to keep; the job is stopped on the first check
            self.release_reserve()

    def release_reserve(self):
        try:
            os.unlink(self.reserve_path)
        except OSError:
            pass

    def watched_folders(self):
        """(what, path) of the folders a job fills: its working folder, its stdouterr and output volumes."""
        named = [("the node's working folder", self.plan.cwd)]
        for name in self.plan.make_dirs:
            label = "the output directory %s" % name[len("AZ_BATCHAI_OUTPUT_") :] if name.startswith("AZ_BATCHAI_OUTPUT_") else None
            if name == self.plan.log_dir_env:
                label = "the stdouterr volume"
            if label and self.env.get(name):
                named.append((label, self.env[name]))
        return named

    def privileged_job(self):
        return os.geteuid() == 0 and self.job_account is None

    def check_disks(self, force=False):
        """Stop the job when a folder it writes has filled up (checked every second, and at its end)."""
        if not force and now() < self.next_disk_check:
            return
        self.next_disk_check = now() + 1.0
        for what, path in self.watched_folders():
            free = runtime.free_bytes(path, self.privileged_job()) if os.path.isdir(path) else None
            if free is not None and free < runtime.DISK_FULL_BYTES:
                self.disk_full(what, path, free)
                return

    def disk_full(self, what, path, free=None):
        if self.fenced is None:
            free = runtime.free_bytes(path, self.privileged_job()) if free is None else free
            message = "%s %s on node %s is full (%s bytes free)" % (what, path, self.plan.node_id, free if free is not None else "no")
            self.fenced = ("DiskFull", message)
            self.terminate_requested.set()

    def heartbeat_loop(self):
        """Renew the heartbeat; an agent that cannot for AGENT_FENCE_S stops its job (fencing).

        The control plane lets a lost run's next attempt start once its node has been silent
        for longer than that, so a run that lost contact must not go on beside its successor.
        """
        last_beat = now()
        while not self.done.wait(HEARTBEAT_INTERVAL_S):
            with self.lock:
                if self.status["state"] in FINAL_STATES:
                    return
            try:
                self.set_status()
                last_beat = now()
            except OSError as error:
                if now() - last_beat > protocol.AGENT_FENCE_S:
                    self.fence("HeartbeatLost", "the agent could not write its status for %.0f s (%s)" % (now() - last_beat, error))
            contact = self.last_contact()
            if contact is not None and now() - contact > self.plan.contact_fence_s:
                self.fence("ContactLost", "its controller has not been in touch for %.0f s" % (now() - contact))
            failing = self.volumes.syncer.failing_since if self.volumes.syncer is not None else None
            if failing is not None and now() - failing > protocol.AGENT_FENCE_S:
                self.fence("StorageUnreachable", "the job's storage refused or did not answer for %.0f s" % (now() - failing))

    def gpu_watch_loop(self):
        """Sample the node's GPUs (nvidia-smi) for the idle-GPU watchdog: since when every one of them has
        been below the policy's threshold, and the highest seen since. The control plane decides across
        the job's nodes; a node where nvidia-smi fails says so and never counts as idle."""
        watch = self.plan.gpu_watch
        low_since, peak = None, 0.0
        while not self.done.wait(float(watch["sample_s"])):
            gpus = resources.gpu_sample(max_age_s=float(watch["sample_s"]))  # the curves' own sample, when recent
            if gpus is None:
                low_since, peak = None, 0.0
                sample = {"error": "nvidia-smi is missing, failed or read no GPU"}
            else:
                values = [gpu[0] for gpu in gpus]
                if max(values) < float(watch["min"]):
                    if low_since is None:
                        low_since, peak = now(), 0.0
                    peak = max(peak, max(values))
                else:
                    low_since, peak = None, 0.0
                sample = {"utilization": values, "low_since": low_since, "peak": peak, "at": now()}
            with self.lock:
                if self.status["state"] in FINAL_STATES:
                    return
            try:
                self.set_status(gpu=sample)
            except OSError:
                pass  # the heartbeat loop says what a status it cannot write means

    def resource_sample(self, series):
        """One sample of the job's resource curves (resources.py); the series, or None once sampling failed."""
        if series is None:
            series = resources.Series(
                protocol.resources_file(self.plan.node_id), self.log_dir_fd, self.plan.node_id, self.plan.resource_sample_s
            )
        try:
            series.tick(self.plan.cwd)
        except (OSError, ValueError) as error:  # a full disk, or a name the job took: curves are not worth a job
            self.log("resource samples stopped: %r" % (error,))
            return None
        return series

    def resource_loop(self, series):
        """A sample every resource_sample_s while the job runs."""
        while not self.done.wait(float(self.plan.resource_sample_s)):
            if self.resource_sample(series) is None:
                return

    def last_contact(self):
        """When a controller last renewed this node's contact file, if it did since this run was launched."""
        try:
            renewed = os.stat(os.path.join(os.path.dirname(os.path.dirname(self.run_dir)), protocol.CONTACT_FILE)).st_mtime
        except OSError:
            return None
        return renewed if renewed >= self.launched else None

    def fence(self, code, message):
        if self.fenced is None:
            self.fenced = (code, message + ": the job was stopped so that its next attempt cannot run beside it")
            self.terminate_requested.set()

    def log(self, message):
        line = "%s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), message)
        if self.log_handle is not None:
            try:
                self.log_handle.write(line)
                self.log_handle.flush()
            except OSError:  # its volume is full: the status still says what happened
                pass

    def on_terminate(self, signum, frame):
        self.terminate_requested.set()

    def resolve_job_user(self):
        """The account the job's processes run as, when the connection names one other than ours.

        On a node shared with control-plane processes, a job of the same user could read their
        /proc/<pid>/environ and files; as another user it cannot. Refused, not ignored, where
        this agent cannot switch users.
        """
        name = self.plan.job_user
        if not name or self.plan.kind != "job":
            return
        import pwd

        try:
            account = pwd.getpwnam(name)
        except KeyError:
            raise JobError("JobPreparationFailed", "job_user %s does not exist on node %s" % (name, self.plan.node_id)) from None
        if account.pw_uid == os.geteuid():
            return
        if os.geteuid() != 0 or sys.version_info < (3, 9):
            raise JobError(
                "JobPreparationFailed",
                "job_user %s: the agent on node %s must run as root with python >= 3.9 to start jobs as another user"
                % (name, self.plan.node_id),
            )
        self.job_account = account

    def hand_over(self, paths):
        """Give the folders this agent just made for the job to the job's user (no-op without one); never through a link."""
        if self.job_account is None:
            return
        for path in paths:
            try:
                os.chown(path, self.job_account.pw_uid, self.job_account.pw_gid, follow_symlinks=False)
            except FileNotFoundError:
                pass

    def build_environment(self):
        env = protocol.job_base_environment(os.environ, self.plan.inherit_env)
        if self.job_account is not None:
            account = self.job_account
            env.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name, SHELL=account.pw_shell or "/bin/sh")
        env.update(self.plan.env)
        secrets_path = os.path.join(self.run_dir, SECRETS_FILE)
        secrets = read_json(secrets_path) or {}
        self.registry_password = secrets.pop(REGISTRY_PASSWORD_KEY, None)
        self.sas = dict((name, secrets.pop(name)) for name in list(secrets) if name.startswith(SAS_KEY_PREFIX))
        env.update(secrets)
        if os.path.exists(secrets_path):
            os.unlink(secrets_path)  # held in memory only from here on
        python_dir = os.path.dirname(sys.executable)
        env["PATH"] = python_dir + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        env[protocol.RUN_MARKER] = self.marker  # how the run's strays are found (fencing); mounters do not get it
        env.setdefault("BATCHAI_PYTHON", sys.executable)
        env.setdefault("PYTHONUNBUFFERED", "1")
        for name, template in self.plan.expand_env:
            env[name] = os.path.normpath(expand(template, env))
        names = set(self.plan.env) | set(secrets) | set(name for name, _ in self.plan.expand_env)
        self.job_variables = dict((name, env[name]) for name in names)
        self.job_variables.update(PYTHONUNBUFFERED="1", BATCHAI_PYTHON="python")
        address = self.plan.socket_address
        if address and not (env.get("GLOO_SOCKET_IFNAME") or env.get("NCCL_SOCKET_IFNAME")):
            interface = interface_for(address)
            if interface:  # without it torch may resolve the hostname to 127.0.0.1 and ranks never meet
                env["GLOO_SOCKET_IFNAME"] = env["NCCL_SOCKET_IFNAME"] = interface
        self.env = env

    def open_execution_log(self):
        """Open the stdouterr folder once, before any of the job's processes runs: every log file is
        then made in that folder itself, even if the job later swaps it for a link elsewhere."""
        folder = self.env.get(self.plan.log_dir_env, "")
        if folder and os.path.isdir(folder):
            self.log_dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self.log_handle = os.fdopen(append_only(self.plan.execution_log, self.log_dir_fd), "a")  # lives as long as the agent

    def log_file(self, folder, name):
        """A stdout/stderr file for appending: in the stdouterr folder opened before the job ran, else in ``folder``."""
        if self.log_dir_fd is not None:
            return append_only(name, self.log_dir_fd)
        return append_only(os.path.join(folder, name))

    def check_requirements(self):
        if self.plan.container:
            self.containers.start()
            return
        for program in self.plan.requires:
            if shutil.which(program, path=self.env.get("PATH")) is None:
                raise JobError(
                    "JobPreparationFailed",
                    "this job needs %s on node %s, which has none (install MPI there, e.g. in jobPreparation or node setup)"
                    % (program, self.plan.node_id),
                )

    def start(self, name, command, extra_env, stdout_name, stderr_name):
        env = dict(self.env)
        env.update(extra_env or {})
        folder = self.env.get(self.plan.log_dir_env, self.run_dir)
        container = self.plan.container
        if container:  # values reach the container from this docker client's environment, not its command line
            passed = [flag for name in sorted(extra_env or {}) for flag in ("--env", name)]
            argv = container.exec + passed + [container.name] + container.shell + [command]
        else:
            argv = ["/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh", "-c", command]
        account = {}
        if self.job_account is not None and not container:
            groups = os.getgrouplist(self.job_account.pw_name, self.job_account.pw_gid)  # video, render: the GPUs
            account = {"user": self.job_account.pw_uid, "group": self.job_account.pw_gid, "extra_groups": groups}
        with os.fdopen(self.log_file(folder, stdout_name), "ab") as out, os.fdopen(self.log_file(folder, stderr_name), "ab") as err:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=self.plan.cwd or folder,
                start_new_session=True,
                close_fds=True,
                **account,
            )
        self.children.append((name, process))
        with self.lock:
            self.status["pgids"] = [p.pid for _, p in self.children]
            self.status.setdefault("tasks", []).append({"name": name, "pid": process.pid})
        self.set_status()
        self.log("started %s as pid %d" % (name, process.pid))
        return process

    def kill_all(self, grace_s):
        if self.containers.started:  # docker exec clients do not forward signals: stop what runs inside
            subprocess.run(
                ["docker", "stop", "--time", str(int(grace_s)), self.plan.container.name],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=self.env,
            )
        live = [p for _, p in self.children if p.poll() is None]
        for process in live:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except OSError:
                pass
        deadline = now() + grace_s
        while now() < deadline and any(p.poll() is None for p in live):
            time.sleep(POLL_INTERVAL_S)
        for process in live:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the whole group: grandchildren too
            except OSError:
                pass
            process.wait()

    def wait_for(self, processes, stop_on_failure):
        """Wait until all exit; returns the first non-zero exit code (0 if none)."""
        grace = float(self.plan.grace_s)
        first_failure = 0
        while True:
            self.check_disks()
            if self.terminate_requested.is_set():
                self.log("terminate requested: stopping all processes")
                self.kill_all(grace)
                if self.fenced:
                    raise JobError(self.fenced[0], self.fenced[1], exit_code=-1)
                raise JobError("JobTerminated", "the job was terminated", exit_code=-1)
            if now() > self.deadline:
                self.log("maxWallClockTime exceeded: stopping all processes")
                self.kill_all(grace)
                raise JobError("MaxWallClockTimeExceeded", "the job ran longer than its maxWallClockTime", exit_code=-1)
            running = False
            for process in processes:
                code = process.poll()
                if code is None:
                    running = True
                elif code != 0 and first_failure == 0:
                    first_failure = code if code > 0 else 128 - code
                    if stop_on_failure:
                        self.log("a process exited with code %d: stopping the others" % code)
                        self.kill_all(grace)
                        return first_failure
            if not running:
                self.check_disks(force=True)  # a job that filled its disk and exited 0 did not succeed
                if self.fenced:
                    raise JobError(self.fenced[0], self.fenced[1], exit_code=-1)
                return first_failure
            time.sleep(POLL_INTERVAL_S)

    def run(self):
        signal.signal(signal.SIGTERM, self.on_terminate)
        signal.signal(signal.SIGINT, self.on_terminate)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.set_status()
        threading.Thread(target=self.heartbeat_loop, daemon=True).start()
        try:
            self.resolve_job_user()
            self.build_environment()
            self.volumes.prepare_folders()
            self.keep_reserve()
            self.open_execution_log()
            self.volumes.stage_volumes()  # after the log opens, so what was mounted or staged shows in execution.log
            self.log("agent %d on node %s: %s" % (os.getpid(), self.plan.node_id, self.plan.kind))
            self.check_requirements()
            preparation = self.plan.preparation
            if preparation:
                self.set_status(state="preparing")
                process = self.start("preparation", preparation.command, {}, preparation.stdout, preparation.stderr)
                code = self.wait_for([process], stop_on_failure=True)
                self.log("preparation exited with code %d" % code)
                if code != 0:
                    raise JobError("JobPreparationFailed", "preparation exited with code %d" % code, code)
            self.set_status(state="running")
            processes = [self.start(t.name, t.command, t.env, t.stdout, t.stderr) for t in self.plan.tasks]
            if self.plan.gpu_watch:
                threading.Thread(target=self.gpu_watch_loop, daemon=True).start()
            if self.plan.kind == "job" and self.plan.resource_sample_s > 0 and self.log_dir_fd is not None:
                series = self.resource_sample(None)  # the first at once, here: every job that ran has its file, however short
                if series is not None:
                    threading.Thread(target=self.resource_loop, args=(series,), daemon=True).start()
            if self.plan.wait_for_release:
                while not self.terminate_requested.wait(POLL_INTERVAL_S):
                    if now() > self.deadline or self.released():
                        break
                self.finish("succeeded", 0)
                return 0
            code = self.wait_for(processes, stop_on_failure=True)
            self.log("processes ended, exit code %d" % code)
            if code == 0:
                self.finish("succeeded", 0)
            else:
                self.finish("failed", code, {"code": self.plan.failure_code, "message": "exit code %d" % code})
            return code
        except JobError as error:
            self.log("%s: %s" % (error.code, error.message))
            state = "terminated" if error.code == "JobTerminated" else "failed"
            self.finish(state, error.exit_code, {"code": error.code, "message": error.message})
            return 1
        except Exception as error:  # anything unexpected still ends in a final status
            self.log("agent error: %r" % (error,))
            self.kill_all(float(self.plan.grace_s))
            self.finish("failed", -1, {"code": "AgentError", "message": "%s: %s" % (type(error).__name__, error)})
            return 1

    def free_disk(self):
        """After a full disk: remove the job's working folder; why the node is still full, or None."""
        for path in self.plan.clean_dirs:
            shutil.rmtree(path, ignore_errors=True)
        self.release_reserve()
        free = runtime.free_bytes(self.plan.cwd if os.path.isdir(self.plan.cwd) else self.run_dir, self.privileged_job())
        if free is not None and free < runtime.DISK_FULL_BYTES:
            return "its disk is still full after the job's folder was removed (%d bytes free): it takes no job until freed" % free
        return None

    def released(self):
        if self.release_status is None:
            return False
        return (read_json(self.release_status) or {}).get("state") in FINAL_STATES

    def finish(self, state, exit_code, error=None):
        if self.plan.kind == "job" and not tools.kill_marked(self.marker):  # what it left running (setsid, daemons)
            self.log("some of the job's processes would not stop")
        try:
            self.containers.remove()
        except (OSError, subprocess.SubprocessError) as failure:
            self.log("could not remove the container: %r" % (failure,))
        self.volumes.unmount_all()
        failed_upload = self.volumes.flush_uploads()
        if failed_upload:
            self.log("%s: %s" % (failed_upload["code"], failed_upload["message"]))
            if state == "succeeded":
                state, exit_code, error = "failed", -1, failed_upload
        self.volumes.release_links(keep_staged=bool(failed_upload))
        if error and error.get("code") == "DiskFull":
            still_full = self.free_disk()
            error = dict(
                error, message=error["message"] + (("; " + still_full) if still_full else "; the job's working folder was removed")
            )
            if still_full:
                error["nodeFull"] = still_full
        self.release_reserve()
        self.set_status(state=state, exit_code=exit_code, end_time=now(), error=error)
        self.done.set()
        if self.log_handle is not None:
            self.log_handle.close()


def append_only(path, folder_fd=None):
    """A log file opened for appending, never through a link: a job (its earlier preparation, or
    another user's job on a shared volume) may have put one there, and the agent may be root."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=folder_fd)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise JobError("JobPreparationFailed", "%s is a symbolic link: the job's logs are not written through one" % path) from None
        raise


def interface_for(address):
    """The network interface this node reaches ``address`` through (its own address: the interface holding it)."""
    try:
        shown = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=10).stdout
        for line in shown.splitlines():
            parts = line.split()
            if len(parts) > 3 and parts[3].split("/")[0] == address:
                return parts[1].rstrip(":")
        route = subprocess.run(["ip", "-o", "route", "get", address], capture_output=True, text=True, timeout=10).stdout
        match = re.search(r"\bdev (\S+)", route)
        return match.group(1) if match else None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv):
    if len(argv) >= 2 and argv[0] == "run":
        return Agent(argv[1]).run()
    if len(argv) == 2 and argv[0] == "slurm-run":
        run_dir, first = slurmstep.materialize(os.path.abspath(argv[1]), os.environ)
        agent = Agent(run_dir)
        agent.release_status = first
        return agent.run()
    if argv[:1] == ["serve"]:
        return tools.serve()
    if len(argv) >= 2 and argv[0] == "terminate-all":
        return tools.terminate_all(os.path.abspath(argv[1]), float(argv[2]) if len(argv) > 2 else DEFAULT_GRACE_S)
    if len(argv) >= 2 and argv[0] == "terminate":
        grace = float(argv[2]) if len(argv) > 2 else DEFAULT_GRACE_S
        return tools.terminate(os.path.abspath(argv[1]), grace)
    if len(argv) == 2 and argv[0] == "unmount-under":
        return tools.unmount_under(argv[1])
    keep = None
    if len(argv) >= 2 and argv[-2] == "--keep":  # the uuids of the clusters that exist (not secret)
        keep, argv = set(filter(None, argv[-1].split(","))), argv[:-2]
    if len(argv) == 4 and argv[0] == "authorize":
        return tools.edit_authorized_keys(argv[1], argv[2], argv[3], keep)
    if len(argv) == 3 and argv[0] == "deauthorize":
        return tools.edit_authorized_keys(argv[1], argv[2], keep=keep)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
