"""What a node's resources do while a job runs: GPUs (nvidia-smi), CPU, memory and the job folder's disk
use, sampled by the agent into a small time series stored with the job's logs (``resources-<node>.json``).

Standard library only (this file runs on the nodes). Bounded for week-long jobs: past MAX_POINTS the
series keeps every other point and samples half as often, so a file stays under about 100 KB.
"""

import json
import os
import subprocess
import threading
import time

MAX_POINTS = 720
DISK_ENTRIES_MAX = 20000  # a job folder with more files is measured up to this many (the figure says so)
GPU_QUERY = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used,memory.total", "--format=csv,noheader,nounits"]


_LAST_GPU_SAMPLE = [0.0, None]  # (monotonic time, sample): the resource curves and the watchdog share one query
_GPU_LOCK = threading.Lock()


def gpu_sample(max_age_s=0.0):
    """[[utilization %, memory used MiB, memory total MiB], ...] per GPU, or None where nvidia-smi is missing or fails.

    ``max_age_s``: a sample taken that recently (by the other loop) is returned instead of asking again,
    so a job with curves and a watchdog runs nvidia-smi once per interval, not twice."""
    with _GPU_LOCK:
        taken, sample = _LAST_GPU_SAMPLE
        if max_age_s > 0 and taken and time.monotonic() - taken <= max_age_s:
            return sample
        sample = _query_gpus()
        _LAST_GPU_SAMPLE[:] = [time.monotonic(), sample]
        return sample


def _query_gpus():
    try:
        result = subprocess.run(GPU_QUERY, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    found = []
    for line in result.stdout.splitlines():
        parts = [part.strip().rstrip("%").strip() for part in line.split(",")]
        try:
            found.append([float(part) for part in parts[:3]])
        except ValueError:
            return None
    return found or None


def cpu_times():
    """(busy, total) jiffies of all CPUs from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as handle:
            fields = [float(value) for value in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


def memory_percent():
    try:
        with open("/proc/meminfo") as handle:
            info = dict((line.split(":")[0], float(line.split()[1])) for line in handle if ":" in line)
        return round(100.0 * (1 - info["MemAvailable"] / info["MemTotal"]), 1)
    except (OSError, ValueError, KeyError, ZeroDivisionError):
        return None


def disk_bytes(path):
    """Bytes under ``path`` (links not followed), counting at most DISK_ENTRIES_MAX entries."""
    total, seen, folders = 0, 0, [path]
    while folders and seen < DISK_ENTRIES_MAX:
        try:
            entries = list(os.scandir(folders.pop()))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            try:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


class Series:
    """Samples of one node, written whole each time (a few KB) so a reader never sees half a file."""

    def __init__(self, name, folder_fd, node_id, interval_s):
        """``name`` in the folder open as ``folder_fd`` (the job's stdouterr folder, opened before the job ran:
        a link the job puts there later is never followed)."""
        self.name, self.folder_fd, self.node_id, self.interval_s = name, folder_fd, node_id, float(interval_s)
        self.points = []
        self.skip = 1  # sample every n-th tick, doubled whenever the series is halved
        self.ticks = 0
        self.last_cpu = cpu_times()

    def tick(self, job_folder):
        self.ticks += 1
        if self.ticks % self.skip:
            return False
        cpu = cpu_times()
        busy = None
        if cpu is not None and self.last_cpu is not None and cpu[1] > self.last_cpu[1]:
            busy = round(100.0 * (cpu[0] - self.last_cpu[0]) / (cpu[1] - self.last_cpu[1]), 1)
        self.last_cpu = cpu
        point = {"t": round(time.time(), 1), "cpu": busy, "mem": memory_percent(), "disk": disk_bytes(job_folder)}
        gpus = gpu_sample()
        if gpus is not None:
            point["gpu"] = [g[0] for g in gpus]
            point["gpuMem"] = [round(100.0 * g[1] / g[2], 1) if len(g) > 2 and g[2] else None for g in gpus]
        self.points.append(point)
        if len(self.points) > MAX_POINTS:
            self.points = self.points[::2]
            self.skip *= 2
        self.write()
        return True

    def write(self):
        document = {"node": self.node_id, "intervalS": self.interval_s * self.skip, "points": self.points}
        temporary = "." + self.name + ".tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        descriptor = os.open(temporary, flags, 0o644, dir_fd=self.folder_fd)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(document, handle, separators=(",", ":"))
        os.replace(temporary, self.name, src_dir_fd=self.folder_fd, dst_dir_fd=self.folder_fd)
