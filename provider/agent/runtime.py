"""What every module of the node agent uses: the job's error, the clock, files written whole.

Standard library only (python >= 3.8 on the node), like everything in this package.
"""

import json
import os
import time


def now():
    return time.time()


def write_json_atomically(path, document, mode=0o644):
    """Readers see the old or the new file, never half of one. No fsync: status is rewritten every
    heartbeat and a lost last beat after a power cut only makes the node look silent (measured: the
    fsyncs cost most of the ~125 ms from launch to a running job)."""
    temporary = "%s.%d.tmp" % (path, os.getpid())
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(document, handle, sort_keys=True)
        os.replace(temporary, path)
    except OSError:  # a full disk: leave no half-written temporary behind
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


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


class JobError(Exception):
    def __init__(self, code, message, exit_code=-1):
        Exception.__init__(self, message)
        self.code = code
        self.message = message
        self.exit_code = exit_code


DISK_FULL_BYTES = 1024 * 1024  # a folder with less than this free (to its user) is full
RESERVE_BYTES = 256 * 1024  # kept by the agent on its node so that its last status can be written on a full disk


def free_bytes(path, privileged=False):
    """Bytes a writer may still use where ``path`` lives (None if it cannot be asked): root may also
    use the blocks a file system keeps for it, so a root job on a disk "full" for users is not full."""
    try:
        found = os.statvfs(path)
    except OSError:
        return None
    if found.f_blocks == 0:  # a file system that does not say (some FUSE mounts): not "full"
        return None
    return (found.f_bfree if privileged else found.f_bavail) * found.f_frsize
