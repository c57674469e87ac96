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
    with os.fdopen(descriptor, "w") as handle:
        json.dump(document, handle, sort_keys=True)
    os.replace(temporary, path)


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
