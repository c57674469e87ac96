"""How a job's volumes appear on its node: links to shared folders, staged copies, read-only mounts.

Blob containers a job only reads are mounted with blobfuse2 or rclone where the node has FUSE,
shares with mount.cifs where the connection opted in; everything else is staged (downloaded
before the job, uploaded while and after it runs). ``mountCommand`` of unmanagedFileSystems
runs in a shell. Credentials reach mounters in 0600 files or their environment, never on a
command line.
"""

import os
import re
import shlex
import shutil
import subprocess
import time

try:  # in the control plane: the package airflow_batchai.agent
    from .protocol import RUN_MARKER, expand
    from .runtime import JobError, write_private
    from .storageclient import BlobError, Syncer, download_prefixes, volume_client
except ImportError:  # on a node: these files lie flat in one folder, the agent script's own (first on sys.path)
    from protocol import RUN_MARKER, expand  # type: ignore[no-redef]
    from runtime import JobError, write_private  # type: ignore[no-redef]
    from storageclient import BlobError, Syncer, download_prefixes, volume_client  # type: ignore[no-redef]


class Volumes:
    """The agent's volume steps (a part the Agent holds: it uses the agent's plan, environment, SAS and log)."""

    def __init__(self, agent):
        self.agent = agent  # the plan, environment and log it works for
        self.syncer = None
        self.mounted = []  # FUSE and SMB mount points to unmount at the end
        self.mount_files = []  # mounters' credential files, removed at the end

    def prepare_folders(self):
        created = []  # what this agent made, the only folders it may give to the job's user
        for path in self.agent.plan.clean_dirs:
            shutil.rmtree(path, ignore_errors=True)
            created += make_dirs(path)
        for link in self.agent.plan.links:
            if link.mount_command:
                self.mount_unmanaged(link)
                continue
            if link.stage:  # a remote volume staged in a real folder (see ``stage_volumes``)
                if os.path.islink(link.path):
                    os.unlink(link.path)
                created += make_dirs(link.path)
                continue
            path, source = link.path, link.source
            source_made = make_dirs(source)  # the nodes of one job may share it: they race here
            if link.unlink_at_end:  # the job's shared temp, not a volume of others
                created += source_made
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if os.path.islink(path):
                os.unlink(path)
            if os.path.exists(path):
                raise JobError("MountFailed", "mount point %s exists and is not ours" % path)
            os.symlink(source, path)
        for name in self.agent.plan.make_dirs:
            if self.agent.job_account is not None:
                self.check_inside_job(self.agent.env[name], name)
            created += make_dirs(self.agent.env[name])
        hostfile = self.agent.plan.hostfile
        if hostfile:
            with open(hostfile.path, "w") as handle:
                handle.write("".join(line + "\n" for line in hostfile.lines))
        for item in self.agent.plan.files:  # the cluster's key for mpirun stays the node user's: it logs in to the peers as them
            write_private(item.path, item.text)
        self.agent.hand_over(created)

    def mounter_env(self):
        """The job's environment without the run's marker: a mount's daemon outlives the job's processes."""
        env = dict(self.agent.env)
        env.pop(RUN_MARKER, None)
        return env

    def check_inside_job(self, path, name):
        """Folders a root agent creates for another user's job lie in the job's own folders or volumes.

        A job spec may name any absolute path (Batch AI's did); as another user's job, it must not
        have root make folders in /etc, /root or the agent's own folder on the node.
        """
        own = ("AZ_BATCHAI_JOB_TEMP", "AZ_BATCHAI_JOB_MOUNT_ROOT", "AZ_BATCHAI_SHARED_JOB_TEMP")
        roots = list(self.agent.plan.clean_dirs) + [self.agent.env[n] for n in own if self.agent.env.get(n)]
        roots += [link.source for link in self.agent.plan.links if link.source] + [link.path for link in self.agent.plan.links]
        existing = os.path.abspath(path)
        while not os.path.exists(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)
        real = os.path.realpath(existing)
        for root in roots:
            anchor = os.path.realpath(root)
            if real == anchor or real.startswith(anchor.rstrip("/") + "/"):
                return
        raise JobError("InvalidPath", "%s (%s) lies outside the job's own folders and volumes" % (name, path))

    def mount_unmanaged(self, link):
        """``mountCommand <path>`` in a shell, as Batch AI ran unmanagedFileSystems. A cluster mount
        (node setup) stays for the node's time in the cluster; a job's is undone when the job ends."""
        path = link.path
        if os.path.islink(path):
            os.unlink(path)
        os.makedirs(path, exist_ok=True)
        if os.path.realpath(path) in mount_points():  # node setup mounted it already, or ran again
            return
        command = "%s %s" % (link.mount_command, shlex.quote(path))
        try:
            done = subprocess.run(
                ["/bin/sh", "-c", command], env=self.mounter_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300
            )
        except subprocess.TimeoutExpired:
            raise JobError("MountFailed", "mountCommand for %s did not finish within 300 s" % path) from None
        if done.returncode != 0:
            why = (done.stderr + done.stdout).decode(errors="replace").strip()[-300:]
            raise JobError("MountFailed", "mountCommand for %s exited with code %d: %s" % (path, done.returncode, why))
        if link.unlink_at_end:
            self.mounted.append(path)

    def container(self, item):
        return volume_client(item.kind, item.url, self.agent.sas.get(item.sas, ""))

    def stage_volumes(self):
        """Mount read-only volumes where the node can, download what the job reads from the others,
        then start uploading what it writes."""
        mounted = set()
        for item in self.agent.plan.mounts:
            local = os.path.normpath(expand(item.local, self.agent.env))
            if self.mount_read_only(item, local):
                mounted.add(local)
        for item in self.agent.plan.downloads:
            local = os.path.normpath(expand(item.local, self.agent.env))
            if local in mounted:
                continue
            try:
                count = download_prefixes(self.container(item), item.prefix, local, item.skip)
            except BlobError as error:
                raise JobError("MountFailed", "staging %s/%s failed: %s" % (item.label, item.prefix, error)) from None
            self.agent.log("staged %d file(s) of %s/%s" % (count, item.label, item.prefix))
        uploads = [
            (os.path.normpath(expand(item.local, self.agent.env)), self.container(item), item.prefix, item.log)
            for item in self.agent.plan.uploads
        ]
        if uploads:
            self.syncer = Syncer(uploads, self.agent.log)
            self.syncer.start()

    def mount_read_only(self, item, local):
        """Mount a volume the job only reads; False when the node cannot, and the volume is staged instead.

        Blob containers: blobfuse2, else ``rclone mount`` (both need FUSE). File shares:
        ``mount.cifs``, only where the connection opted in (it puts the account key on the node).
        Credentials reach the mounter through a 0600 file or the environment, never its command line.
        """
        if item.kind == "file":
            return self.mount_share(item, local)
        sas = self.agent.sas.get(item.sas, "")
        fuse = os.path.exists("/dev/fuse") and (shutil.which("fusermount3") or shutil.which("fusermount"))
        if shutil.which("blobfuse2") and fuse:
            config = os.path.join(self.agent.run_dir, "blobfuse2-%d.yaml" % len(self.mounted))
            write_private(
                config,
                "logging:\n  type: silent\ncomponents:\n  - libfuse\n  - block_cache\n  - attr_cache\n  - azstorage\n"
                "azstorage:\n  type: block\n  mode: sas\n  account-name: %s\n  container: %s\n  endpoint: %s\n  sas: '?%s'\n"
                % (item.account, item.container, item.endpoint, sas),
            )
            self.mount_files.append(config)  # blobfuse2 may re-read it while mounted: removed at unmount
            return self.run_mounter(
                ["blobfuse2", "mount", local, "--config-file=" + config, "--read-only"], self.mounter_env(), item, local
            )
        if shutil.which("rclone") and fuse:
            env = dict(self.mounter_env(), RCLONE_CONFIG_BATCHAI_TYPE="azureblob", RCLONE_CONFIG_BATCHAI_SAS_URL="%s?%s" % (item.url, sas))
            argv = ["rclone", "mount", "batchai:" + item.container, local, "--daemon", "--read-only", "--daemon-wait", "15s"]
            argv.append("--allow-non-empty")  # a cluster mount may hold files staged by an earlier job
            return self.run_mounter(argv, env, item, local)
        return False

    def mount_share(self, item, local):
        """SMB 3 with the account key in a 0600 credentials file that lives only for the mount call
        (the kernel keeps what it needs to reconnect). Where the kernel has no cifs, mount.cifs fails
        at once and the share is staged over its SAS instead."""
        helper = shutil.which("mount.cifs")
        key = self.agent.sas.get(item.key)
        if not helper or not key:
            return False
        credentials = os.path.join(self.agent.run_dir, "cifs-%d.credentials" % len(self.mounted))
        write_private(credentials, "username=%s\npassword=%s\n" % (item.account, key))
        options = ["ro", "credentials=" + credentials, "serverino", "nosharesock", "actimeo=30"]
        options += ["dir_mode=" + item.dir_mode, "file_mode=" + item.file_mode]
        try:  # SMB 3.1.1 as Microsoft's docs mount Azure Files; 3.0 for kernels before 4.17
            for version in ("3.1.1", "3.0"):
                argv = [helper, item.unc, local, "-o", ",".join(["vers=" + version, *options])]
                if self.run_mounter(argv, self.mounter_env(), item, local, quiet=version != "3.0"):
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
                self.agent.log("mounting %s with %s failed (%s): staging it instead" % (item.label, name, error))
            return False
        if done.returncode != 0 or not os.path.ismount(local):
            why = (done.stderr + done.stdout).decode(errors="replace").strip()[-200:] or "no mount appeared"
            if not quiet:
                self.agent.log("mounting %s with %s failed (%s): staging it instead" % (item.label, name, why))
            return False
        self.mounted.append(local)
        self.agent.log("mounted %s read-only at %s with %s" % (item.label, local, name))
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
                self.agent.log("could not unmount %s" % path)
        self.mounted = []
        for path in self.mount_files:
            if os.path.exists(path):
                os.unlink(path)
        self.mount_files = []

    def flush_uploads(self):
        """The last upload after the processes ended, verified against storage; files that do not
        get there intact fail the job with OutputUploadFailed, naming them."""
        if self.syncer is None:
            return None
        try:
            wrong = self.syncer.finish(time.time() + self.agent.plan.upload_deadline_s)
        except Exception as error:  # whatever it was, the job must end with a status, and not as a success
            return {"code": "OutputUploadFailed", "message": "checking the job's files in storage failed: %r" % (error,)}
        if not wrong:
            return None
        names = [name if len(name) <= 100 else "…" + name[-99:] for name in wrong[:5]]
        shown = ", ".join(names) + (" and %d more" % (len(wrong) - 5) if len(wrong) > 5 else "")
        message = "%d file(s) did not reach storage intact within %d s: %s; the node keeps its copies" % (
            len(wrong),
            self.agent.plan.upload_deadline_s,
            shown,
        )
        return {"code": "OutputUploadFailed", "message": message}

    def release_links(self, keep_staged=False):
        """At the end: unlink the job's links, remove its staged copies (kept when they did not all
        reach storage: they are then the only copy), and the empty mount points of its own mounts."""
        for link in self.agent.plan.links:
            if link.unlink_at_end and os.path.islink(link.path):
                os.unlink(link.path)
            elif link.unlink_at_end and link.stage and not keep_staged:
                shutil.rmtree(link.path, ignore_errors=True)
            elif link.unlink_at_end and link.mount_command and os.path.realpath(link.path) not in mount_points():
                try:  # only the empty mount point: never a tree that may still be someone's file system
                    os.rmdir(link.path)
                except OSError:
                    pass


def make_dirs(path):
    """os.makedirs, returning the folders it created (parents first)."""
    missing = []
    current = os.path.abspath(path)
    while not os.path.lexists(current) and os.path.dirname(current) != current:
        missing.append(current)
        current = os.path.dirname(current)
    os.makedirs(path, exist_ok=True)
    return list(reversed(missing))


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
