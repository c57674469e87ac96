"""What the node agent needs of Azure Storage: blob containers and file shares over SAS URLs.

Standard library only (python >= 3.8), like the agent, and copied next to it on each node. The
control plane imports the same classes (the one module of ``node/`` besides protocol.py it
uses), so nodes and control plane make the same REST calls:
listing (parsed directly, far faster than the SDK's generic deserializer), downloads, block
uploads, append blobs for logs, and the Files API counterparts. ``Syncer`` uploads what a job
writes while it runs.
"""

import base64
import os
import re
import threading
import time

BLOB_API_VERSION = "2021-08-06"
BLOB_RETRIES = 4
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
                "is_prefix": False,
            }
        )
    for item in root.iter(folder_tag):
        found.append({"name": item.findtext("Name"), "size": 0, "last_modified": None, "is_prefix": True})
    return found, root.findtext("NextMarker") or ""


class Container:
    """One blob container through a SAS URL, with the standard library only."""

    def __init__(self, url, sas):
        self.url = url.rstrip("/")
        self.sas = (sas or "").lstrip("?")

    def _url(self, blob=None, query=""):
        from urllib.parse import quote

        base = self.url + ("/" + quote(blob, safe="/~") if blob else "")
        return base + "?" + "&".join(part for part in (query, self.sas) if part)

    def request(self, method, blob=None, query="", body=None, headers=None, timeout=120):
        import urllib.error
        import urllib.request

        headers = dict(headers or {})
        headers["x-ms-version"] = BLOB_API_VERSION
        if body is not None:
            headers["Content-Length"] = str(len(body))
        delay = 0.5
        for attempt in range(BLOB_RETRIES + 1):
            request = urllib.request.Request(self._url(blob, query), data=body, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as error:
                status = error.code
                error.close()
                if status < 500 or attempt == BLOB_RETRIES:
                    return status, b""
            except (urllib.error.URLError, OSError) as error:
                if attempt == BLOB_RETRIES:
                    raise BlobError("%s %s: %s" % (method, blob or "container", getattr(error, "reason", error))) from None
            time.sleep(delay)
            delay *= 2
        return 599, b""

    def _check(self, status, what, allowed=(200, 201)):
        if status not in allowed:
            raise BlobError("%s failed with HTTP %d" % (what, status), status)

    def list(self, prefix):
        """(name, size) of every blob under ``prefix``."""
        return [(e["name"], e["size"]) for e in self.entries(prefix) if not e["is_prefix"]]

    def entries(self, prefix, delimiter=""):
        """Blobs (name, size, last_modified) and, with a delimiter, folder prefixes; all pages."""
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
            if not marker:
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
        """A block blob: one Put Blob when small, else blocks and a block list (files of any size)."""
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            if size <= SINGLE_PUT_LIMIT:
                status, _ = self.request("PUT", name, body=handle.read(), headers={"x-ms-blob-type": "BlockBlob"})
                return self._check(status, "uploading %s" % name)
            ids, index = [], 0
            while True:
                chunk = handle.read(BLOCK_SIZE)
                if not chunk:
                    break
                block = base64.b64encode(("%08d" % index).encode()).decode()
                status, _ = self.request("PUT", name, "comp=block&blockid=%s" % block.replace("=", "%3D"), body=chunk)
                self._check(status, "uploading block %d of %s" % (index, name))
                ids.append(block)
                index += 1
        listing = '<?xml version="1.0" encoding="utf-8"?><BlockList>%s</BlockList>' % "".join("<Latest>%s</Latest>" % b for b in ids)
        status, _ = self.request("PUT", name, "comp=blocklist", body=listing.encode())
        self._check(status, "committing %s" % name)

    def create_append(self, name):
        status, _ = self.request("PUT", name, body=b"", headers={"x-ms-blob-type": "AppendBlob"})
        self._check(status, "creating %s" % name)

    def append(self, name, data):
        for start in range(0, len(data), APPEND_LIMIT):
            status, _ = self.request("PUT", name, "comp=appendblock", body=data[start : start + APPEND_LIMIT])
            self._check(status, "appending to %s" % name)


class FileShare(Container):
    """One Azure Files share through a SAS URL: the same calls as a blob container, over the File REST API.

    Folders are real here: they are created before a file and walked when listing. A log grows
    by resizing the file and writing the new range, the Files counterpart of an append blob.
    """

    RANGE_LIMIT = 4 * 1024 * 1024  # the most one Put Range takes

    def __init__(self, url, sas):
        Container.__init__(self, url, sas)
        self.sizes = {}  # log file -> bytes written, so an append knows where it starts

    def entries(self, prefix, delimiter=""):
        folder = prefix.rstrip("/")
        found = []
        pending = [folder]
        while pending:
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
            query = "restype=directory&comp=list&include=Timestamps" + ("&marker=%s" % quote(marker, safe="") if marker else "")
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
        size = os.path.getsize(path)
        self._create(name, size, md5)
        with open(path, "rb") as handle:
            offset = 0
            while True:
                chunk = handle.read(self.RANGE_LIMIT)
                if not chunk:
                    return
                self._write(name, offset, chunk)
                offset += len(chunk)

    def create_append(self, name):
        self._create(name, 0)
        self.sizes[name] = 0

    def append(self, name, data):
        old = self.sizes.get(name, 0)
        status, _ = self.request("PUT", name, "comp=properties", body=b"", headers={"x-ms-content-length": str(old + len(data))})
        self._check(status, "growing %s" % name)
        self._write(name, old, data)
        self.sizes[name] = old + len(data)


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
    tick, so a reader is at most SYNC_INTERVAL_S behind. Other files are uploaded whole once
    their size and mtime held still for a tick (a checkpoint being written is not sent half
    done), and at the end whatever changed.
    """

    def __init__(self, entries, log):
        self.entries = entries  # [(local folder, Container, blob prefix, is_log)]
        self.log = log
        self.appended = {}  # blob name -> bytes sent
        self.uploaded = {}  # blob name -> (size, mtime) sent
        self.seen = {}  # blob name -> (size, mtime) at the last tick
        self.stop = threading.Event()
        self.failure = None

    def loop(self):
        while not self.stop.wait(SYNC_INTERVAL_S):
            try:
                self.tick(final=False)
            except BlobError as error:
                self.log("sync to storage failed, will retry: %s" % error)

    def tick(self, final):
        for local, container, prefix, is_log in self.entries:
            if not os.path.isdir(local):
                continue
            for folder, _, names in os.walk(local):
                for file_name in sorted(names):
                    path = os.path.join(folder, file_name)
                    name = "/".join(part for part in (prefix, os.path.relpath(path, local).replace(os.sep, "/")) if part)
                    if is_log:
                        self.send_log(container, name, path)
                    else:
                        self.send_file(container, name, path, final)

    def send_log(self, container, name, path):
        try:
            size = os.path.getsize(path)
        except OSError:
            return
        sent = self.appended.get(name)
        if sent is None or size < sent:
            container.create_append(name)
            sent = self.appended[name] = 0
        if size > sent:
            with open(path, "rb") as handle:
                handle.seek(sent)
                data = handle.read(size - sent)
            container.append(name, data)
            self.appended[name] = sent + len(data)

    def send_file(self, container, name, path, final):
        try:
            stat = os.stat(path)
        except OSError:
            return
        state = (stat.st_size, stat.st_mtime)
        steady = self.seen.get(name) == state
        self.seen[name] = state
        if self.uploaded.get(name) != state and (final or steady):
            container.upload(name, path)
            self.uploaded[name] = state
