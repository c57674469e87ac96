#!/usr/bin/env python3
"""Node agent: supervises one job (or one node setup) on one node. Standard library only.

It is copied to the node and started detached, so the job outlives the Airflow worker and the
SSH connection that started it. The truth about the job lives next to it, in ``status.json``
in the run folder (written atomically; the control plane only reads it):

    state      starting | preparing | running | succeeded | failed | terminated
    pid        this agent's pid;  pgids: process groups of the job's processes
    heartbeat  epoch seconds, refreshed every HEARTBEAT_INTERVAL_S while the agent lives
    start_time, end_time, exit_code, error {code, message}

Usage:
    agent.py run RUN_DIR          run the plan in RUN_DIR/plan.json (secrets in RUN_DIR/secrets.json)
    agent.py terminate RUN_DIR    stop it: SIGTERM to every process group, SIGKILL after the grace period
    agent.py terminate-all RUNS   stop every run in the folder RUNS (a node leaving its cluster)
    agent.py serve                run commands sent over stdin (the control plane's kept-open channel)
    agent.py authorize FILE TAG KEY   add the public KEY to the authorized_keys FILE on a line tagged TAG
    agent.py deauthorize FILE TAG     remove the lines tagged TAG from FILE (nothing else)

Python >= 3.8 on the node; nothing to install there.
"""

from __future__ import print_function

import base64
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time

if __package__:  # imported by the control plane
    from airflow_batchai.agentstorage import SAS_KEY_PREFIX, BlobError, Syncer, download_prefixes, volume_client
else:  # run on a node: agentstorage.py lies next to this file (nodeops.AGENT_FILES)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from agentstorage import SAS_KEY_PREFIX, BlobError, Syncer, download_prefixes, volume_client

HEARTBEAT_INTERVAL_S = 2.0
POLL_INTERVAL_S = 0.1
DEFAULT_GRACE_S = 10.0
FINAL_STATES = ("succeeded", "failed", "terminated")
REGISTRY_PASSWORD_KEY = "BATCHAI_REGISTRY_PASSWORD"  # travels with the secrets, never in a plan
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def now():
    return time.time()


def write_json_atomically(path, document, mode=0o644):
    """Readers see the old or the new file, never half of one. No fsync: status is rewritten every
    heartbeat and a lost last beat after a power cut only makes the node look silent (measured: the
    fsyncs cost most of the ~125 ms from launch to a running job)."""
    temporary = "%s.%d.tmp" % (path, os.getpid())
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(document, handle, sort_keys=True)
    os.replace(temporary, path)


def read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (IOError, OSError, ValueError):
        return None


def expand(template, env):
    """$VAR / ${VAR} expansion against the job's environment (unknown variables stay as written)."""

    def replace(match):
        name = match.group(1) or match.group(2)
        return env.get(name, match.group(0))

    return _VARIABLE.sub(replace, template)


class JobError(Exception):
    def __init__(self, code, message, exit_code=-1):
        Exception.__init__(self, message)
        self.code = code
        self.message = message
        self.exit_code = exit_code


class Agent(object):
    def __init__(self, run_dir):
        self.run_dir = os.path.abspath(run_dir)
        self.plan = read_json(os.path.join(self.run_dir, "plan.json"))
        if self.plan is None:
            raise SystemExit("agent: no readable plan.json in %s" % self.run_dir)
        self.status_path = os.path.join(self.run_dir, "status.json")
        self.lock = threading.Lock()
        self.status = {"state": "starting", "pid": os.getpid(), "pgids": [], "heartbeat": now(), "start_time": now()}
        self.children = []  # (name, Popen)
        self.terminate_requested = threading.Event()
        self.done = threading.Event()
        self.env = {}
        self.job_variables = {}  # what a container gets: the job's variables only, not the host's
        self.registry_password = None
        self.container_started = False
        self.log_handle = None
        self.syncer = None
        self.sas = {}
        self.mounted = []  # FUSE and SMB mount points to unmount at the end
        self.mount_files = []  # mounters' credential files, removed at the end
        self.deadline = now() + float(self.plan.get("max_wall_clock_s") or 7 * 86400)

    # -- status -------------------------------------------------------------------
    def set_status(self, **changes):
        with self.lock:
            self.status.update(changes)
            self.status["heartbeat"] = now()
            write_json_atomically(self.status_path, self.status)

    def heartbeat_loop(self):
        while not self.done.wait(HEARTBEAT_INTERVAL_S):
            with self.lock:
                if self.status["state"] in FINAL_STATES:
                    return
            self.set_status()

    def log(self, message):
        line = "%s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), message)
        if self.log_handle is not None:
            self.log_handle.write(line)
            self.log_handle.flush()

    # -- signals ------------------------------------------------------------------
    def on_terminate(self, signum, frame):
        self.terminate_requested.set()

    # -- preparing the node ---------------------------------------------------------
    def build_environment(self):
        env = session_free_environment()
        env.update(self.plan.get("env") or {})
        secrets_path = os.path.join(self.run_dir, "secrets.json")
        secrets = read_json(secrets_path) or {}
        self.registry_password = secrets.pop(REGISTRY_PASSWORD_KEY, None)
        self.sas = dict((name, secrets.pop(name)) for name in list(secrets) if name.startswith(SAS_KEY_PREFIX))
        env.update(secrets)
        if os.path.exists(secrets_path):
            os.unlink(secrets_path)  # held in memory only from here on
        python_dir = os.path.dirname(sys.executable)
        env["PATH"] = python_dir + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        env.setdefault("BATCHAI_PYTHON", sys.executable)
        env.setdefault("PYTHONUNBUFFERED", "1")
        for name, template in self.plan.get("expand_env") or []:
            env[name] = os.path.normpath(expand(template, env))
        names = set(self.plan.get("env") or {}) | set(secrets) | set(name for name, _ in self.plan.get("expand_env") or [])
        self.job_variables = dict((name, env[name]) for name in names)
        self.job_variables.update(PYTHONUNBUFFERED="1", BATCHAI_PYTHON="python")
        address = self.plan.get("socket_address")
        if address and not (env.get("GLOO_SOCKET_IFNAME") or env.get("NCCL_SOCKET_IFNAME")):
            interface = interface_for(address)
            if interface:  # without it torch may resolve the hostname to 127.0.0.1 and ranks never meet
                env["GLOO_SOCKET_IFNAME"] = env["NCCL_SOCKET_IFNAME"] = interface
        self.env = env

    def prepare_folders(self):
        for path in self.plan.get("clean_dirs") or []:
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path, exist_ok=True)
        for link in self.plan.get("links") or []:
            if link.get("mount_command"):
                self.mount_unmanaged(link)
                continue
            if link.get("stage"):  # a remote volume staged in a real folder (see ``stage_volumes``)
                if os.path.islink(link["path"]):
                    os.unlink(link["path"])
                os.makedirs(link["path"], exist_ok=True)
                continue
            path, source = link["path"], link["source"]
            os.makedirs(source, exist_ok=True)  # the nodes of one job may share it: they race here
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if os.path.islink(path):
                os.unlink(path)
            if os.path.exists(path):
                raise JobError("MountFailed", "mount point %s exists and is not ours" % path)
            os.symlink(source, path)
        for name in self.plan.get("make_dirs") or []:
            os.makedirs(self.env[name], exist_ok=True)
        hostfile = self.plan.get("hostfile")
        if hostfile:
            with open(hostfile["path"], "w") as handle:
                handle.write("".join(line + "\n" for line in hostfile["lines"]))
        for item in self.plan.get("files") or []:
            write_private(item["path"], item["text"])

    def mount_unmanaged(self, link):
        """``mountCommand <path>`` in a shell, as Batch AI ran unmanagedFileSystems. A cluster mount
        (node setup) stays for the node's time in the cluster; a job's is undone when the job ends."""
        path = link["path"]
        if os.path.islink(path):
            os.unlink(path)
        os.makedirs(path, exist_ok=True)
        if os.path.realpath(path) in mount_points():  # node setup mounted it already, or ran again
            return
        command = "%s %s" % (link["mount_command"], shlex.quote(path))
        try:
            done = subprocess.run(["/bin/sh", "-c", command], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
        except subprocess.TimeoutExpired:
            raise JobError("MountFailed", "mountCommand for %s did not finish within 300 s" % path) from None
        if done.returncode != 0:
            why = (done.stderr + done.stdout).decode(errors="replace").strip()[-300:]
            raise JobError("MountFailed", "mountCommand for %s exited with code %d: %s" % (path, done.returncode, why))
        if link.get("unlink_at_end"):
            self.mounted.append(path)

    def container(self, item):
        return volume_client(item.get("kind", "blob"), item["url"], self.sas.get(item["sas"], ""))

    def stage_volumes(self):
        """Mount read-only volumes where the node can, download what the job reads from the others,
        then start uploading what it writes."""
        mounted = set()
        for item in self.plan.get("mounts") or []:
            local = os.path.normpath(expand(item["local"], self.env))
            if self.mount_read_only(item, local):
                mounted.add(local)
        for item in self.plan.get("downloads") or []:
            local = os.path.normpath(expand(item["local"], self.env))
            if local in mounted:
                continue
            try:
                count = download_prefixes(self.container(item), item["prefix"], local, item.get("skip") or [])
            except BlobError as error:
                raise JobError("MountFailed", "staging %s/%s failed: %s" % (item["label"], item["prefix"], error)) from None
            self.log("staged %d file(s) of %s/%s" % (count, item["label"], item["prefix"]))
        uploads = [
            (os.path.normpath(expand(item["local"], self.env)), self.container(item), item["prefix"], bool(item.get("log")))
            for item in self.plan.get("uploads") or []
        ]
        if uploads:
            self.syncer = Syncer(uploads, self.log)
            threading.Thread(target=self.syncer.loop, daemon=True).start()

    def mount_read_only(self, item, local):
        """Mount a volume the job only reads; False when the node cannot, and the volume is staged instead.

        Blob containers: blobfuse2, else ``rclone mount`` (both need FUSE). File shares:
        ``mount.cifs``, only where the connection opted in (it puts the account key on the node).
        Credentials reach the mounter through a 0600 file or the environment, never its command line.
        """
        if item.get("kind") == "file":
            return self.mount_share(item, local)
        sas = self.sas.get(item["sas"], "")
        fuse = os.path.exists("/dev/fuse") and (shutil.which("fusermount3") or shutil.which("fusermount"))
        if shutil.which("blobfuse2") and fuse:
            config = os.path.join(self.run_dir, "blobfuse2-%d.yaml" % len(self.mounted))
            write_private(
                config,
                "logging:\n  type: silent\ncomponents:\n  - libfuse\n  - block_cache\n  - attr_cache\n  - azstorage\n"
                "azstorage:\n  type: block\n  mode: sas\n  account-name: %s\n  container: %s\n  endpoint: %s\n  sas: '?%s'\n"
                % (item["account"], item["container"], item["endpoint"], sas),
            )
            self.mount_files.append(config)  # blobfuse2 may re-read it while mounted: removed at unmount
            return self.run_mounter(["blobfuse2", "mount", local, "--config-file=" + config, "--read-only"], self.env, item, local)
        if shutil.which("rclone") and fuse:
            env = dict(self.env, RCLONE_CONFIG_BATCHAI_TYPE="azureblob", RCLONE_CONFIG_BATCHAI_SAS_URL="%s?%s" % (item["url"], sas))
            argv = ["rclone", "mount", "batchai:" + item["container"], local, "--daemon", "--read-only", "--daemon-wait", "15s"]
            argv.append("--allow-non-empty")  # a cluster mount may hold files staged by an earlier job
            return self.run_mounter(argv, env, item, local)
        return False

    def mount_share(self, item, local):
        """SMB 3 with the account key in a 0600 credentials file that lives only for the mount call
        (the kernel keeps what it needs to reconnect). Where the kernel has no cifs, mount.cifs fails
        at once and the share is staged over its SAS instead."""
        helper = shutil.which("mount.cifs")
        key = self.sas.get(item.get("key") or "")
        if not helper or not key:
            return False
        credentials = os.path.join(self.run_dir, "cifs-%d.credentials" % len(self.mounted))
        write_private(credentials, "username=%s\npassword=%s\n" % (item["account"], key))
        options = ["ro", "credentials=" + credentials, "serverino", "nosharesock", "actimeo=30"]
        options += ["dir_mode=" + item.get("dir_mode", "0777"), "file_mode=" + item.get("file_mode", "0777")]
        try:  # SMB 3.1.1 as Microsoft's docs mount Azure Files; 3.0 for kernels before 4.17
            for version in ("3.1.1", "3.0"):
                argv = [helper, item["unc"], local, "-o", ",".join(["vers=" + version, *options])]
                if self.run_mounter(argv, self.env, item, local, quiet=version != "3.0"):
                    return True
            return False
        finally:
            os.unlink(credentials)

    def run_mounter(self, argv, env, item, local, quiet=False):
        name = os.path.basename(argv[0])
        os.makedirs(local, exist_ok=True)
        try:
            done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        except (OSError, subprocess.SubprocessError) as error:
            if not quiet:
                self.log("mounting %s with %s failed (%s): staging it instead" % (item["label"], name, error))
            return False
        if done.returncode != 0 or not os.path.ismount(local):
            why = (done.stderr + done.stdout).decode(errors="replace").strip()[-200:] or "no mount appeared"
            if not quiet:
                self.log("mounting %s with %s failed (%s): staging it instead" % (item["label"], name, why))
            return False
        self.mounted.append(local)
        self.log("mounted %s read-only at %s with %s" % (item["label"], local, name))
        return True

    def unmount_all(self):
        for path in reversed(self.mounted):
            for argv in unmount_commands(path):
                try:
                    if subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60).returncode == 0:
                        break
                except (OSError, subprocess.SubprocessError):
                    continue
            else:
                self.log("could not unmount %s" % path)
        self.mounted = []
        for path in self.mount_files:
            if os.path.exists(path):
                os.unlink(path)
        self.mount_files = []

    def flush_uploads(self):
        """The last upload after the processes ended; a failure here loses outputs, so it fails the job."""
        if self.syncer is None:
            return None
        self.syncer.stop.set()
        try:
            self.syncer.tick(final=True)
        except BlobError as error:
            return {"code": "OutputUploadFailed", "message": "uploading outputs to storage failed: %s" % error}
        return None

    def open_execution_log(self):
        folder = self.env.get(self.plan.get("log_dir_env") or "", "")
        if folder and os.path.isdir(folder):
            self.log_handle = open(os.path.join(folder, self.plan.get("execution_log", "execution.log")), "a")  # noqa: SIM115 - lives as long as the agent

    def check_requirements(self):
        if self.plan.get("container"):
            self.start_container()
            return
        for program in self.plan.get("requires") or []:
            if shutil.which(program, path=self.env.get("PATH")) is None:
                raise JobError(
                    "JobPreparationFailed",
                    "this job needs %s on node %s, which has none (install MPI there, e.g. in jobPreparation or node setup)"
                    % (program, self.plan.get("node_id")),
                )

    def start_container(self):
        """One container per node for preparation and ranks; fails with FailedStartingContainer naming the node."""
        container = self.plan["container"]
        node = self.plan.get("node_id")

        def docker(argv, stdin=None):
            try:
                return subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=1800, env=self.env)
            except OSError as error:
                raise JobError("FailedStartingContainer", "no docker command on node %s: %s" % (node, error)) from None

        engine = docker(["docker", "info", "--format", "{{.ServerVersion}}"])
        if engine.returncode != 0:
            raise JobError(
                "FailedStartingContainer", "no Docker engine on node %s: %s" % (node, engine.stderr.decode(errors="replace").strip()[-300:])
            )
        lines = []
        for name, value in sorted(self.job_variables.items()):
            if "\n" in value:
                raise JobError("FailedStartingContainer", "variable %s holds a line break, which docker env files cannot carry" % name)
            lines.append("%s=%s\n" % (name, value))
        descriptor = os.open(container["env_file"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.writelines(lines)
        if container.get("login"):
            if not self.registry_password:
                raise JobError("FailedStartingContainer", "registry credentials for %s have no password" % container["image"])
            login = docker(container["login"], self.registry_password.encode())
            if login.returncode != 0:
                raise JobError("FailedStartingContainer", "docker login for %s failed on node %s" % (container["image"], node))
        docker(container["remove"])  # a leftover of an earlier attempt of this run
        started = docker(container["start"])
        if started.returncode != 0:
            raise JobError(
                "FailedStartingContainer",
                "unable to start docker container from %s on node %s: %s"
                % (container["image"], node, started.stderr.decode(errors="replace").strip()[-300:]),
            )
        self.container_started = True
        self.log("started container %s from %s" % (container["name"], container["image"]))
        for program in self.plan.get("requires") or []:
            found = docker(container["exec"] + [container["name"], "sh", "-c", "command -v %s" % program])
            if found.returncode != 0:
                raise JobError("JobPreparationFailed", "this job needs %s in image %s, which has none" % (program, container["image"]))

    def remove_container(self):
        if self.container_started:
            container = self.plan["container"]
            subprocess.run(container["remove"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, env=self.env)
            self.container_started = False
        env_file = (self.plan.get("container") or {}).get("env_file")
        if env_file and os.path.exists(env_file):
            os.unlink(env_file)

    # -- running processes -----------------------------------------------------------
    def start(self, name, command, extra_env, stdout_name, stderr_name):
        env = dict(self.env)
        env.update(extra_env or {})
        folder = self.env.get(self.plan.get("log_dir_env") or "", self.run_dir)
        container = self.plan.get("container")
        if container:  # values reach the container from this docker client's environment, not its command line
            passed = [flag for name in sorted(extra_env or {}) for flag in ("--env", name)]
            argv = container["exec"] + passed + [container["name"]] + container["shell"] + [command]
        else:
            argv = ["/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh", "-c", command]
        with open(os.path.join(folder, stdout_name), "ab") as out, open(os.path.join(folder, stderr_name), "ab") as err:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=self.plan.get("cwd") or folder,
                start_new_session=True,
                close_fds=True,
            )
        self.children.append((name, process))
        with self.lock:
            self.status["pgids"] = [p.pid for _, p in self.children]
            self.status.setdefault("tasks", []).append({"name": name, "pid": process.pid})
        self.set_status()
        self.log("started %s as pid %d" % (name, process.pid))
        return process

    def kill_all(self, grace_s):
        if self.container_started:  # docker exec clients do not forward signals: stop what runs inside
            subprocess.run(
                ["docker", "stop", "--time", str(int(grace_s)), self.plan["container"]["name"]],
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
        grace = float(self.plan.get("grace_s", DEFAULT_GRACE_S))
        first_failure = 0
        while True:
            if self.terminate_requested.is_set():
                self.log("terminate requested: stopping all processes")
                self.kill_all(grace)
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
                return first_failure
            time.sleep(POLL_INTERVAL_S)

    def run(self):
        signal.signal(signal.SIGTERM, self.on_terminate)
        signal.signal(signal.SIGINT, self.on_terminate)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.set_status()
        threading.Thread(target=self.heartbeat_loop, daemon=True).start()
        try:
            self.build_environment()
            self.prepare_folders()
            self.open_execution_log()
            self.stage_volumes()  # after the log opens, so what was mounted or staged shows in execution.log
            self.log("agent %d on node %s: %s" % (os.getpid(), self.plan.get("node_id"), self.plan.get("kind", "job")))
            self.check_requirements()
            preparation = self.plan.get("preparation")
            if preparation:
                self.set_status(state="preparing")
                process = self.start("preparation", preparation["command"], {}, preparation["stdout"], preparation["stderr"])
                code = self.wait_for([process], stop_on_failure=True)
                self.log("preparation exited with code %d" % code)
                if code != 0:
                    raise JobError(preparation.get("error_code", "JobPreparationFailed"), "preparation exited with code %d" % code, code)
            self.set_status(state="running")
            processes = [self.start(t["name"], t["command"], t.get("env"), t["stdout"], t["stderr"]) for t in self.plan.get("tasks") or []]
            if self.plan.get("wait_for_release"):
                while not self.terminate_requested.wait(POLL_INTERVAL_S):
                    if now() > self.deadline:
                        break
                self.finish("succeeded", 0)
                return 0
            code = self.wait_for(processes, stop_on_failure=True)
            self.log("processes ended, exit code %d" % code)
            if code == 0:
                self.finish("succeeded", 0)
            else:
                self.finish("failed", code, {"code": self.plan.get("failure_code", "JobFailed"), "message": "exit code %d" % code})
            return code
        except JobError as error:
            self.log("%s: %s" % (error.code, error.message))
            state = "terminated" if error.code == "JobTerminated" else "failed"
            self.finish(state, error.exit_code, {"code": error.code, "message": error.message})
            return 1
        except Exception as error:  # anything unexpected still ends in a final status
            self.log("agent error: %r" % (error,))
            self.kill_all(float(self.plan.get("grace_s", DEFAULT_GRACE_S)))
            self.finish("failed", -1, {"code": "AgentError", "message": "%s: %s" % (type(error).__name__, error)})
            return 1

    def finish(self, state, exit_code, error=None):
        try:
            self.remove_container()
        except (OSError, subprocess.SubprocessError) as failure:
            self.log("could not remove the container: %r" % (failure,))
        self.unmount_all()
        failed_upload = self.flush_uploads()
        if failed_upload:
            self.log("%s: %s" % (failed_upload["code"], failed_upload["message"]))
            if state == "succeeded":
                state, exit_code, error = "failed", -1, failed_upload
        for link in self.plan.get("links") or []:
            if link.get("unlink_at_end") and os.path.islink(link["path"]):
                os.unlink(link["path"])
            elif link.get("unlink_at_end") and link.get("stage"):
                shutil.rmtree(link["path"], ignore_errors=True)
            elif link.get("unlink_at_end") and link.get("mount_command") and os.path.realpath(link["path"]) not in mount_points():
                try:  # only the empty mount point: never a tree that may still be someone's file system
                    os.rmdir(link["path"])
                except OSError:
                    pass
        self.set_status(state=state, exit_code=exit_code, end_time=now(), error=error)
        self.done.set()
        if self.log_handle is not None:
            self.log_handle.close()


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


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is not alive
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().split(") ", 1)[1][:1] != "Z"
    except (IOError, OSError, IndexError):
        return True


def terminate(run_dir, grace_s):
    """Ask the agent to stop; if it is gone, stop its process groups here and record the end."""
    status_path = os.path.join(run_dir, "status.json")
    status = read_json(status_path) or {}
    if status.get("state") in FINAL_STATES:
        return 0
    pid = status.get("pid")
    if pid and process_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = now() + grace_s + 5
        while now() < deadline:
            status = read_json(status_path) or {}
            if status.get("state") in FINAL_STATES:
                return 0
            time.sleep(POLL_INTERVAL_S)
    for pgid in status.get("pgids") or []:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except OSError:
                pass
    if pid and process_alive(pid):
        os.kill(pid, signal.SIGKILL)
    status.update(state="terminated", end_time=now(), exit_code=-1, error={"code": "JobTerminated", "message": "the job was terminated"})
    write_json_atomically(status_path, status)
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


def mount_points():
    """Every mount point of this mount namespace (bind mounts included, which os.path.ismount misses)."""
    points = set()
    try:
        with open("/proc/self/mountinfo") as handle:
            for line in handle:
                fields = line.split(" ")
                if len(fields) > 4:
                    points.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
    except OSError:
        pass
    return points


def unmount_commands(path):
    """FUSE first, then umount; sudo without a prompt where the node user mounted with sudo
    (a mountCommand such as 'sudo mount -t nfs ...')."""
    return [["fusermount3", "-u", path], ["fusermount", "-u", path], ["umount", path], ["sudo", "-n", "umount", path]]


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


def write_private(path, text):
    """A file only the node's user can read (ssh refuses a key or config others may write)."""
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        os.makedirs(folder, 0o700)
    temporary = "%s.%d.tmp" % (path, os.getpid())
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


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
        except (IOError, OSError):
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


def terminate_all(runs_dir, grace_s):
    """Stop every run under ``runs_dir`` (a node leaving its cluster must leave no process behind)."""
    try:
        names = sorted(os.listdir(runs_dir))
    except OSError:
        return 0
    for name in names:
        terminate(os.path.join(runs_dir, name), grace_s)
    return 0


def main(argv):
    if len(argv) >= 2 and argv[0] == "run":
        return Agent(argv[1]).run()
    if argv[:1] == ["serve"]:
        return serve()
    if len(argv) >= 2 and argv[0] == "terminate-all":
        return terminate_all(os.path.abspath(argv[1]), float(argv[2]) if len(argv) > 2 else DEFAULT_GRACE_S)
    if len(argv) >= 2 and argv[0] == "terminate":
        grace = float(argv[2]) if len(argv) > 2 else DEFAULT_GRACE_S
        return terminate(os.path.abspath(argv[1]), grace)
    if len(argv) == 2 and argv[0] == "unmount-under":
        return unmount_under(argv[1])
    keep = None
    if len(argv) >= 2 and argv[-2] == "--keep":  # the uuids of the clusters that exist (not secret)
        keep, argv = set(filter(None, argv[-1].split(","))), argv[:-2]
    if len(argv) == 4 and argv[0] == "authorize":
        return edit_authorized_keys(argv[1], argv[2], argv[3], keep)
    if len(argv) == 3 and argv[0] == "deauthorize":
        return edit_authorized_keys(argv[1], argv[2], keep=keep)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
