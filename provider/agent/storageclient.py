"""What the node agent needs of Azure Storage: blob containers and file shares over SAS URLs.

Standard library only (python >= 3.8), like the agent, and copied next to it on each node. The
control plane imports the same classes (the one module of ``node/`` besides protocol.py it
uses), so nodes and control plane make the same REST calls:
listing (parsed directly, far faster than the SDK's generic deserializer), downloads, block
uploads, append blobs for logs, and the Files API counterparts. ``Syncer`` uploads what a job
writes while it runs, and at the end checks that storage holds exactly what the node wrote.
"""

import base64
import contextlib
import errno
import hashlib
import os
import re
import stat
import threading
import time

BLOB_API_VERSION = "2021-08-06"
BLOB_RETRIES = 4
REQUEST_TIMEOUT_S = 20  # the longest silence inside one answer
REQUEST_DEADLINE_S = 45  # no retry starts after this long: a hung account is an error, not a stuck agent
SINGLE_PUT_LIMIT = 32 * 1024 * 1024
BLOCK_SIZE = 8 * 1024 * 1024
APPEND_LIMIT = 4 * 1024 * 1024  # the most one Append Block takes
SYNC_INTERVAL_S = 0.5
_BATCHAI_LAYOUT = re.compile(r"(^|/)[^/]+/[^/]+/workspaces/[^/]+/(experiments/[^/]+/jobs|clusters)/")


class BlobError(Exception):
    """A failed storage call. The message names the blob, never the SAS."""

    def __init__(self, message, status=None):
        Exception.__init__(self, message)
        self.status = status


def content_md5(data):
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def file_md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(BLOCK_SIZE), b""):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode()


def parse_listing(payload, file_tag, folder_tag):
    """Entries and the continuation marker of one List Blobs / List Directories and Files page.

    Parsed with ElementTree directly: about ten times faster than the SDK's generic
    deserializer, which is what makes listing 50,000 outputs with SAS URLs cheap.
    """
    import xml.etree.ElementTree as ElementTree

    root = ElementTree.fromstring(payload)
    found = []
    for item in root.iter(file_tag):
        found.append(
            {
                "name": item.findtext("Name"),
                "size": int(item.findtext("Properties/Content-Length") or "0"),
                "last_modified": item.findtext("Properties/Last-Modified"),
                "md5": item.findtext("Properties/Content-MD5") or None,  # blobs list it; Files listings do not
                "etag": item.findtext("Properties/Etag") or None,
                "is_prefix": False,
            }
        )
    for item in root.iter(folder_tag):
        found.append({"name": item.findtext("Name"), "size": 0, "last_modified": None, "is_prefix": True})
    return found, root.findtext("NextMarker") or ""


class Container:
    """One blob container through a SAS URL, with the standard library only."""

    listed_size_is_written = True  # an append blob's length grows only by committed appends

    def __init__(self, url, sas):
        self.url = url.rstrip("/")
        self.sas = (sas or "").lstrip("?")
        self.deadline = None  # time.time() after which no request starts or waits: the end of a job's final upload

    def _url(self, blob=None, query=""):
        from urllib.parse import quote

        base = self.url + ("/" + quote(blob, safe="/~") if blob else "")
        return base + "?" + "&".join(part for part in (query, self.sas) if part)

    def request(self, method, blob=None, query="", body=None, headers=None, timeout=REQUEST_TIMEOUT_S):
        status, payload, _ = self.call(method, blob, query, body, headers, timeout)
        return status, payload

    def call(self, method, blob=None, query="", body=None, headers=None, timeout=REQUEST_TIMEOUT_S):
        """(status, body, headers), retrying 5xx answers and network errors within REQUEST_DEADLINE_S."""
        import urllib.error
        import urllib.request

        headers = dict(headers or {})
        headers["x-ms-version"] = BLOB_API_VERSION
        if body is not None:
            headers["Content-Length"] = str(len(body))
        delay = 0.5
        started = time.time()
        for attempt in range(BLOB_RETRIES + 1):
            last = attempt == BLOB_RETRIES or time.time() + delay - started > REQUEST_DEADLINE_S
            if self.deadline is not None:
                last = last or time.time() + delay > self.deadline
                timeout = max(1.0, min(timeout, self.deadline - time.time()))
            request = urllib.request.Request(self._url(blob, query), data=body, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    return response.status, response.read(), dict(response.headers)
            except urllib.error.HTTPError as error:
                status = error.code
                error.close()
                if status < 500 or last:
                    return status, b"", {}
            except (urllib.error.URLError, OSError) as error:
                if last:
                    raise BlobError("%s %s: %s" % (method, blob or "container", getattr(error, "reason", error))) from None
            time.sleep(delay)
            delay *= 2
        return 599, b"", {}

    def properties(self, name):
        """(size, stored MD5 or None) of one blob or file; None when storage does not have it."""
        status, _, headers = self.call("HEAD", name)
        if status == 404:
            return None
        self._check(status, "reading the properties of %s" % name, allowed=(200,))
        lowered = dict((key.lower(), value) for key, value in headers.items())
        return int(lowered.get("content-length", "0")), lowered.get("content-md5") or None

    def _check(self, status, what, allowed=(200, 201)):
        if status not in allowed:
            raise BlobError("%s failed with HTTP %d" % (what, status), status)

    def list(self, prefix):
        """(name, size) of every blob under ``prefix``."""
        return [(e["name"], e["size"]) for e in self.entries(prefix) if not e["is_prefix"]]

    def entries(self, prefix, delimiter="", limit=None):
        """Blobs (name, size, last_modified) and, with a delimiter, folder prefixes; all pages
        (with ``limit``, it stops at the first page past that many)."""
        from urllib.parse import quote

        found, marker = [], ""
        while True:
            query = "restype=container&comp=list&prefix=%s" % quote(prefix, safe="")
            if delimiter:
                query += "&delimiter=%s" % quote(delimiter, safe="")
            if marker:
                query += "&marker=%s" % quote(marker, safe="")
            status, payload = self.request("GET", query=query)
            self._check(status, "listing %s" % (prefix or "/"))
            page, marker = parse_listing(payload, "Blob", "BlobPrefix")
            found.extend(page)
            if not marker or (limit is not None and len(found) > limit):
                return found

    def download(self, name, path):
        status, payload = self.request("GET", name)
        self._check(status, "downloading %s" % name)
        folder = os.path.dirname(path)
        if folder and not os.path.isdir(folder):
            os.makedirs(folder)
        with open(path, "wb") as handle:
            handle.write(payload)

    def upload(self, name, path):
        """A block blob: one Put Blob when small, else blocks and a block list (files of any size).

        Returns the content's MD5, which the blob keeps as its Content-MD5 for a later check.
        """
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            if size <= SINGLE_PUT_LIMIT:
                data = handle.read()
                md5 = content_md5(data)
                headers = {"x-ms-blob-type": "BlockBlob", "Content-MD5": md5, "x-ms-blob-content-md5": md5}
                status, _ = self.request("PUT", name, body=data, headers=headers)
                self._check(status, "uploading %s" % name)
                return md5
            ids, index, digest = [], 0, hashlib.md5()
            while True:
                chunk = handle.read(BLOCK_SIZE)
                if not chunk:
                    break
                digest.update(chunk)
                block = base64.b64encode(("%08d" % index).encode()).decode()
                status, _ = self.request("PUT", name, "comp=block&blockid=%s" % block.replace("=", "%3D"), body=chunk)
                self._check(status, "uploading block %d of %s" % (index, name))
                ids.append(block)
                index += 1
        md5 = base64.b64encode(digest.digest()).decode()
        listing = '<?xml version="1.0" encoding="utf-8"?><BlockList>%s</BlockList>' % "".join("<Latest>%s</Latest>" % b for b in ids)
        status, _ = self.request("PUT", name, "comp=blocklist", body=listing.encode(), headers={"x-ms-blob-content-md5": md5})
        self._check(status, "committing %s" % name)
        return md5

    def create_append(self, name):
        status, _ = self.request("PUT", name, body=b"", headers={"x-ms-blob-type": "AppendBlob"})
        self._check(status, "creating %s" % name)

    def append(self, name, data, position):
        """Append Block with the append-position condition: storage takes the bytes only where
        we believe its blob ends. 412 (someone's count is off, e.g. storage lost writes it had
        acknowledged) and 404 (the blob is gone) raise BlobError with that status for the caller
        to re-read the committed length and resend from there."""
        for start in range(0, len(data), APPEND_LIMIT):
            headers = {"x-ms-blob-condition-appendpos": str(position + start)}
            status, _ = self.request("PUT", name, "comp=appendblock", body=data[start : start + APPEND_LIMIT], headers=headers)
            self._check(status, "appending to %s at byte %d" % (name, position + start))


class FileShare(Container):
    """One Azure Files share through a SAS URL: the same calls as a blob container, over the File REST API.

    Folders are real here: they are created before a file and walked when listing. A log grows
    by resizing the file and writing the new range, the Files counterpart of an append blob.
    """

    RANGE_LIMIT = 4 * 1024 * 1024  # the most one Put Range takes
    listed_size_is_written = False  # a file is resized before its ranges are written

    def __init__(self, url, sas):
        Container.__init__(self, url, sas)

    def entries(self, prefix, delimiter="", limit=None):
        """Files under the folder ``prefix`` names (Files has folders, not name prefixes); with ``limit``,
        the walk stops once it has found more than that many."""
        folder = prefix.rstrip("/")
        found = []
        pending = [folder]
        while pending and (limit is None or len(found) <= limit):
            current = pending.pop(0)
            listed = self._list_directory(current)
            if listed is None:
                if current == folder and folder:  # the prefix may name one file
                    status, headers = self.head(folder)
                    if status == 200:
                        found.append(
                            {
                                "name": folder,
                                "size": int(headers.get("Content-Length", "0")),
                                "last_modified": headers.get("Last-Modified"),
                                "is_prefix": False,
                            }
                        )
                continue
            for entry in listed:
                name = "/".join(part for part in (current, entry["name"]) if part)
                if entry["is_prefix"]:
                    if delimiter:
                        found.append({"name": name + "/", "size": 0, "last_modified": None, "is_prefix": True})
                    else:
                        pending.append(name)
                else:
                    found.append(dict(entry, name=name))
        return found

    def _list_directory(self, folder):
        from urllib.parse import quote

        entries, marker = [], ""
        while True:
            query = "restype=directory&comp=list&include=Timestamps,ETag" + ("&marker=%s" % quote(marker, safe="") if marker else "")
            status, payload = self.request("GET", folder or None, query)
            if status == 404:
                return None
            self._check(status, "listing %s" % (folder or "/"))
            page, marker = parse_listing(payload, "File", "Directory")
            entries.extend(page)
            if not marker:
                return entries

    def head(self, name):
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self._url(name), method="HEAD", headers={"x-ms-version": BLOB_API_VERSION})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, dict(response.headers)
        except urllib.error.HTTPError as error:
            error.close()
            return error.code, {}
        except (urllib.error.URLError, OSError) as error:
            raise BlobError("reading %s: %s" % (name, getattr(error, "reason", error))) from None

    def _make_parents(self, name):
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            status, _ = self.request("PUT", "/".join(parts[:depth]), "restype=directory", body=b"")
            if status not in (201, 409):
                raise BlobError("creating folder %s failed with HTTP %d" % ("/".join(parts[:depth]), status), status)

    def _create(self, name, size, md5=None):
        headers = {"x-ms-type": "file", "x-ms-content-length": str(size)}
        if md5:
            headers["x-ms-content-md5"] = md5
        status, _ = self.request("PUT", name, body=b"", headers=headers)
        if status == 404:  # the folder is missing: make it, then once more
            self._make_parents(name)
            status, _ = self.request("PUT", name, body=b"", headers=headers)
        self._check(status, "creating %s" % name)

    def _write(self, name, offset, data):
        for start in range(0, len(data), self.RANGE_LIMIT):
            chunk = data[start : start + self.RANGE_LIMIT]
            first = offset + start
            headers = {"x-ms-range": "bytes=%d-%d" % (first, first + len(chunk) - 1), "x-ms-write": "update"}
            status, _ = self.request("PUT", name, "comp=range", body=chunk, headers=headers)
            self._check(status, "writing %s" % name)

    def upload(self, name, path, md5=None):
        """Returns the MD5 kept as the file's Content-MD5 (Files does not compute one itself)."""
        size = os.path.getsize(path)
        md5 = md5 or file_md5(path)
        self._create(name, size, md5)
        with open(path, "rb") as handle:
            offset = 0
            while True:
                chunk = handle.read(self.RANGE_LIMIT)
                if not chunk:
                    return md5
                self._write(name, offset, chunk)
                offset += len(chunk)

    def create_append(self, name):
        self._create(name, 0)

    def append(self, name, data, position):
        """Grow the file to ``position + len(data)`` and Put Range at ``position``: the Files
        counterpart of an append at a known offset (written again at the same place, it is the same)."""
        status, _ = self.request("PUT", name, "comp=properties", body=b"", headers={"x-ms-content-length": str(position + len(data))})
        self._check(status, "growing %s" % name)
        self._write(name, position, data)


def volume_client(kind, url, sas):
    return FileShare(url, sas) if kind == "file" else Container(url, sas)


def download_prefixes(container, prefix, local, skip_prefixes=()):
    """Blobs named ``prefix`` or under ``prefix/`` into the volume folder ``local`` (same relative paths).

    Other jobs' Batch AI output trees and this job's own output prefixes are skipped: a job
    reads its inputs, not everything ever written next to them.
    """
    count = 0
    root = os.path.normpath(local)
    for name, _ in container.list(prefix):
        inside = not prefix or name == prefix or name.startswith(prefix.rstrip("/") + "/")
        if not inside or name.endswith("/") or any(name.startswith(p) for p in skip_prefixes) or _BATCHAI_LAYOUT.search(name):
            continue
        target = os.path.normpath(os.path.join(root, name))
        if not target.startswith(root + os.sep):
            raise BlobError("blob %s would land outside %s" % (name, local))
        container.download(name, target)
        count += 1
    return count


class Syncer:
    """Uploads what the job writes under its output and log folders, while it runs and at the end.

    Log files (stdouterr) become append blobs that grow by what was written since the last
    tick, so a reader is at most SYNC_INTERVAL_S behind. Each append carries the position where
    we believe the blob ends; when storage disagrees (it lost writes it had acknowledged, as an
    account failover can) we re-read what it holds and resend from there. Other files are
    uploaded whole once their size and mtime held still for a tick (a checkpoint being written
    is not sent half done), and at the end whatever changed. ``finish`` then checks every file
    in storage against the node's copy (size, and the MD5 the blob keeps) and sends again what
    differs: success is only reported for outputs that are really there.
    """

    def __init__(self, entries, log):
        self.entries = entries  # [(local folder, Container, blob prefix, is_log)]
        self.log = log
        self.appended = {}  # blob name -> bytes storage holds, as far as we know
        self.uploaded = {}  # blob name -> (size, mtime, md5) sent
        self.seen = {}  # blob name -> (size, mtime) at the last tick
        self.unsent = set()  # names already reported as unreadable (said once, not every tick)
        self.stop = threading.Event()
        self.thread = None
        self.failing_since = None  # when ticks began failing in a row (the agent's fence watches it); None while they succeed
        self.folders = {}  # local folder -> descriptor, opened before the job runs (see folder_fd)
        for local, _, _, _ in entries:
            self.folder_fd(local, trusted=True)

    def start(self):
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.stop.wait(SYNC_INTERVAL_S):
            try:
                self.tick(final=False)
                self.failing_since = None
            except BlobError as error:
                self.failing_since = self.failing_since or time.time()
                self.log("sync to storage failed, will retry: %s" % error)

    def folder_fd(self, local, trusted=False):
        """The synced folder, opened once: a job that later swaps it (or a folder in it) for a link
        moves nothing the syncer reads. Opened before the job runs (``trusted``); one that appears
        later only when its path holds no link at all."""
        if local not in self.folders:
            try:
                fd = os.open(local, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                return None
            if not trusted and os.readlink("/proc/self/fd/%d" % fd) != os.path.abspath(local):
                os.close(fd)
                return None
            self.folders[local] = fd
        return self.folders[local]

    def close(self):
        for fd in self.folders.values():
            os.close(fd)
        self.folders = {}

    def files(self, entries=None):
        """(container, blob name, its folder's descriptor, its name there, is_log) of the files under the
        synced folders, walked through descriptors that never follow a link: a link to /etc/passwd or
        to another job's folder is never sent. Valid until the next item is taken."""
        for local, container, prefix, is_log in self.entries if entries is None else entries:
            top = self.folder_fd(local)
            if top is None:
                continue
            for folder, _, names, folder_fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
                for file_name in sorted(names):
                    relative = os.path.normpath(os.path.join(folder, file_name)).replace(os.sep, "/")
                    name = "/".join(part for part in (prefix, relative) if part)
                    yield container, name, folder_fd, file_name, is_log

    def tick(self, final):
        """Each file is looked at (lstat, through its folder's descriptor) and opened only when it
        has something to send: a tick over 50,000 unchanged outputs opens none of them."""
        for container, name, folder_fd, file_name, is_log in self.files():
            try:
                found = os.stat(file_name, dir_fd=folder_fd, follow_symlinks=False)
                if not stat.S_ISREG(found.st_mode):
                    if name not in self.unsent:
                        self.unsent.add(name)
                        self.log("not sent: %s is a link or not a file (links are never followed)" % name)
                    continue
                if is_log:
                    self.send_log(container, name, found.st_size, folder_fd, file_name)
                else:
                    self.send_file(container, name, (found.st_size, found.st_mtime), final, folder_fd, file_name)
            except OSError as error:  # vanished, unreadable: the check at the end says which matter
                if name not in self.unsent:
                    self.unsent.add(name)
                    self.log("cannot send %s: %s" % (name, error))

    def send_log(self, container, name, size, folder_fd, file_name):
        sent = self.appended.get(name)
        if sent is None or size < sent:
            container.create_append(name)
            sent = self.appended[name] = 0
        if size <= sent:
            return
        with held(folder_fd, file_name) as path:
            if path is None:  # turned into a link meanwhile
                return
            with open(path, "rb") as handle:
                handle.seek(sent)
                data = handle.read(size - sent)
        try:
            container.append(name, data, sent)
        except BlobError as error:
            if error.status not in (404, 412):
                raise
            self.resync_log(container, name, size)
            return
        self.appended[name] = sent + len(data)

    def resync_log(self, container, name, size):
        """Storage does not end where we thought: continue from what it holds (next tick), or start over."""
        found = container.properties(name)
        committed = found[0] if found else None
        if committed is None or committed > size:
            self.appended.pop(name, None)
        else:
            self.appended[name] = committed
        self.log("%s: storage holds %s of %d bytes; sending the rest again" % (name, committed, size))

    def send_file(self, container, name, state, final, folder_fd, file_name):
        """``state``: (size, mtime) as seen this tick; sent once it held still for a tick (or at the end)."""
        steady = self.seen.get(name) == state
        self.seen[name] = state
        if self.uploaded.get(name, (None, None, None))[:2] != state and (final or steady):
            with held(folder_fd, file_name) as path:
                if path is not None:
                    self.uploaded[name] = (*state, container.upload(name, path))

    def finish(self, deadline):
        """The last upload after the processes ended, then verification; returns the names still
        not in storage intact when ``deadline`` (time.time()) passed, [] when all are. No request
        outlives the deadline, including those of the sync thread still under way."""
        for _, container, _, _ in self.entries:
            container.deadline = deadline
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=max(1.0, deadline - time.time()))
        try:
            while True:
                try:
                    self.tick(final=True)
                except BlobError as error:
                    self.log("final upload failed, will retry: %s" % error)
                wrong = self.check_stored()
                if not wrong or time.time() >= deadline:
                    return wrong
                self.log("%d file(s) not in storage as written (%s); sending them again" % (len(wrong), ", ".join(wrong[:3])))
                time.sleep(min(2.0, max(0.0, deadline - time.time())))
        finally:
            self.close()

    def check_stored(self):
        """Names of the files storage does not hold as the node wrote them. One listing per synced
        folder (5,000 entries a page), not a request per file: 50,000 outputs are 10 requests."""
        wrong = []
        for local, container, prefix, is_log in self.entries:
            try:
                listed = dict((e["name"], (e["size"], e.get("md5"))) for e in container.entries(prefix) if not e["is_prefix"])
            except BlobError as error:
                self.log("listing %s failed: %s" % (prefix or "/", error))
                listed = None
            for _, name, folder_fd, file_name, _ in self.files([(local, container, prefix, is_log)]):
                try:
                    with held(folder_fd, file_name) as opened:
                        if opened is None:  # a link, or vanished: not a file of the job's to keep
                            continue
                        if listed is None or not self.stored_intact(container, name, opened, is_log, listed.get(name)):
                            wrong.append(name)
                except BlobError as error:
                    self.log("checking %s failed: %s" % (name, error))
                    wrong.append(name)
                except OSError as error:  # there but unreadable: it cannot reach storage
                    self.log("cannot read %s: %s" % (name, error))
                    wrong.append(name)
        return wrong

    def stored_intact(self, container, name, path, is_log, found):
        """Compare storage's (size, md5) with the node's copy; what differs is marked for the next tick to send again.

        Where a listed size does not prove the bytes are written (Files: resized first, then
        written) our own completed send of exactly this content is required too.
        """
        stat = os.stat(path)
        size = stat.st_size
        if is_log:
            written = container.listed_size_is_written or self.appended.get(name) == size
            if found is not None and found[0] == size and written:
                self.appended[name] = size
                return True
            if found is None:
                self.appended.pop(name, None)
            else:
                self.resync_log(container, name, size)
            return False
        sent = self.uploaded.get(name)
        sent_now = sent is not None and sent[:2] == (size, stat.st_mtime)
        if found is not None and found[0] == size:
            if found[1] is not None:  # storage keeps an MD5: it must be this content's
                if found[1] == (sent[2] if sent_now and sent[2] else file_md5(path)):
                    return True
            elif sent_now:
                return True
        self.uploaded.pop(name, None)  # sent again on the next tick
        return False


@contextlib.contextmanager
def held(folder_fd, name):
    """A path (/proc/self/fd/N) to the regular file ``name`` in the folder ``folder_fd``, or None for
    a link, a FIFO or anything else; valid inside the ``with``."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder_fd)
    except OSError as error:
        if error.errno not in (errno.ELOOP, errno.ENOENT):  # unreadable: the caller says so
            raise
        yield None  # a link, or gone meanwhile
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            yield None
        else:
            yield "/proc/self/fd/%d" % fd
    finally:
        os.close(fd)
