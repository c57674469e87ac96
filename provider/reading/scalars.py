"""Training curves: the scalars a job writes as TensorBoard event files under its output directories.

What PyTorch's ``SummaryWriter``, TensorFlow's ``tf.summary`` and Keras' TensorBoard callback write
is read with TensorBoard's own reader (record framing, checksums, the Event protobuf and the migration
of old-style summaries to tensors), never a parser of ours. Event files only grow, so each one is read
incrementally: the bytes read so far and the points found are kept per file, and a page refreshed every
few seconds reads only what was appended since. A truncated last record (the writer mid-flush) is
left for the next read.

Bounded for week-long jobs and for folders of thousands of files: a walk of a few levels and listings,
a few event files, a byte budget per read, and at most ``MAX_POINTS`` points kept per curve (halved,
keeping the last point, when it fills up).
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import BatchAIError
from .outputs import OutputFiles

EVENT_MARK = ".tfevents."  # events.out.tfevents.<time>.<host>[.<pid>.<n>][.v2]
MAX_DEPTH = 4  # output/tensorboard/<run>/<sub-run>/events...
MAX_LISTINGS = 40  # folder listings per look, across all output directories
MAX_FILES = 16
MAX_READ_BYTES = 16 * 2**20  # per file and look; the rest is read on the next look
MAX_POINTS = 2000  # per curve; charts draw fewer
MAX_CACHED_FILES = 256


@dataclass
class Curve:
    """One tag of one run: (step, value, wall time) in the order written."""

    points: list[tuple[int, float, float]] = field(default_factory=list)

    def add(self, step: int, value: float, wall_time: float) -> None:
        self.points.append((step, value, wall_time))
        if len(self.points) > MAX_POINTS:
            last = self.points[-1]
            self.points = [*self.points[:-1:2], last]


@dataclass
class _FileState:
    consumed: int = 0
    curves: dict[str, Curve] = field(default_factory=dict)


@dataclass
class EventFile:
    output_id: str
    path: str  # inside the output directory
    size: int

    @property
    def run(self) -> str:
        """TensorBoard's run name: the folder holding the file, under its output directory's id."""
        folder = posixpath.dirname(self.path)
        return f"{self.output_id}/{folder}" if folder else self.output_id


class ScalarReader:
    """Reads scalars for any job, keeping what each event file yielded so far (per process)."""

    def __init__(self) -> None:
        self._files: OrderedDict[tuple[str, str, str], _FileState] = OrderedDict()
        self._ended: OrderedDict[str, list[EventFile]] = OrderedDict()  # an ended job's event files, found once
        self._lock = threading.Lock()

    def curves(self, files: OutputFiles, ended: bool = False) -> dict[str, dict[str, list[tuple[int, float, float]]]]:
        """tag -> run -> [(step, value, wall time)]: every scalar found in the job's event files. An ``ended``
        job's files no longer change: once read whole, a look at its page costs no request at all."""
        found: dict[str, dict[str, list[tuple[int, float, float]]]] = {}
        with self._lock:
            known = self._ended.get(files.job.uuid)
        if known is None:
            known = find_event_files(files)
            if ended:
                with self._lock:
                    self._ended[files.job.uuid] = known
                    while len(self._ended) > MAX_CACHED_FILES:
                        self._ended.popitem(last=False)
        for event_file in known:
            state = self._read(files, event_file)
            for tag, curve in state.curves.items():
                found.setdefault(tag, {})[event_file.run] = list(curve.points)
        return found

    def _read(self, files: OutputFiles, event_file: EventFile) -> _FileState:
        key = (files.job.uuid, event_file.output_id, event_file.path)
        with self._lock:
            state = self._files.pop(key, None) or _FileState()
            self._files[key] = state
            while len(self._files) > MAX_CACHED_FILES:
                self._files.popitem(last=False)
        offset = state.consumed
        if event_file.size <= offset:
            return state
        try:
            chunk = files.read(event_file.output_id, event_file.path, offset, MAX_READ_BYTES)
        except BatchAIError:
            return state  # gone or unreachable for now: show what was read before
        with self._lock:
            if chunk and state.consumed == offset:  # two pages read the same bytes: only the first adds them
                state.consumed += _parse(chunk, state.curves)
        return state


def find_event_files(files: OutputFiles) -> list[EventFile]:
    """Event files under the job's output directories (not its stdout/stderr folder), folder by folder in name order."""
    found: list[EventFile] = []
    budget = MAX_LISTINGS
    for directory in files.spec.output_directories or []:
        pending = [(".", 0)]
        while pending and budget > 0 and len(found) < MAX_FILES:
            folder, depth = pending.pop(0)
            budget -= 1
            try:
                entries = files.list(directory.id, folder, urls=False)
            except BatchAIError:
                break  # not created yet (the job has not started) or storage unreachable
            for entry in sorted(entries, key=lambda e: e.name):
                path = entry.name if folder == "." else f"{folder}/{entry.name}"
                if entry.file_type == "directory" and depth + 1 < MAX_DEPTH:
                    pending.append((path, depth + 1))
                elif entry.file_type == "file" and EVENT_MARK in entry.name and len(found) < MAX_FILES:
                    found.append(EventFile(directory.id, path, int(entry.content_length or 0)))
    return found


def _parse(chunk: bytes, curves: dict[str, Curve]) -> int:
    """Adds the chunk's scalars to ``curves``; returns the bytes of whole records read (a cut last record waits)."""
    from tensorboard import data_compat
    from tensorboard.compat.proto import event_pb2
    from tensorboard.util import tensor_util

    consumed = 0
    for raw in _records(chunk):
        consumed += len(raw) + 16  # TFRecord framing: length (8), its CRC (4), the record, its CRC (4)
        event = event_pb2.Event.FromString(raw)
        for value in event.summary.value:
            number = _scalar(value, data_compat, tensor_util)
            if number is not None:
                curves.setdefault(value.tag, Curve()).add(int(event.step), number, float(event.wall_time))
    if consumed == 0 and len(chunk) >= MAX_READ_BYTES:
        # one record larger than a whole read (a big image or embedding): step over it by its length header
        consumed = int.from_bytes(chunk[:8], "little") + 16
    return consumed


def _scalar(value: Any, data_compat: Any, tensor_util: Any) -> float | None:
    """A summary value's number when it is a scalar. The two common encodings are read straight from the
    proto (a ``simple_value``, as PyTorch's SummaryWriter writes; a one-float tensor of the scalars plugin,
    as TensorFlow 2 and TensorBoard's writer do); anything else goes through TensorBoard's migration."""
    if value.WhichOneof("value") == "simple_value":
        return float(value.simple_value)
    if value.metadata.plugin_data.plugin_name == "scalars" and len(value.tensor.float_val) == 1 and not value.tensor.tensor_content:
        return float(value.tensor.float_val[0])
    migrated = data_compat.migrate_value(value)
    if migrated.metadata.plugin_data.plugin_name != "scalars":
        return None  # images, histograms, text: not curves
    array = tensor_util.make_ndarray(migrated.tensor)
    return float(array.reshape(-1)[0]) if array.size == 1 else None


def _records(chunk: bytes) -> Iterator[bytes]:
    """TensorBoard's loader reads a file by name, so the chunk is one for the length of the read."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

    handle, name = tempfile.mkstemp(prefix="batchai-events-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(chunk)
        yield from RawEventFileLoader(name).Load()
    finally:
        os.unlink(name)
