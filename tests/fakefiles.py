"""A fake Azure Files service: Azure Files has no local emulator (Azurite serves only Blob, Queue, Table).

It answers the File REST calls we make (create share, directories, files, ranges, resize,
list, read, head) the way the service documents them, keeps everything in memory, and checks
that each request carries a SAS whose ``sp`` allows it, or a SharedKey header for the control
plane's share creation. It records the SAS permissions it saw per share, so tests can assert
least privilege. Started on a free loopback port; stopped at the end of the session.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape


@dataclass
class Entry:
    data: bytearray = field(default_factory=bytearray)
    md5: str | None = None
    modified: float = 0.0


@dataclass
class FakeFiles:
    shares: set[str] = field(default_factory=set)
    folders: set[tuple[str, str]] = field(default_factory=set)  # (share, path)
    files: dict[tuple[str, str], Entry] = field(default_factory=dict)
    permissions_seen: dict[str, set[str]] = field(default_factory=dict)  # share -> sp values
    lock: threading.RLock = field(default_factory=threading.RLock)
    server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def _now() -> str:
    return formatdate(usegmt=True)


def _handler(state: FakeFiles) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, code: str | None = None) -> None:
            if code and not body:
                body = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{code}</Message></Error>'.encode()
            self.send_response(status)
            for name, value in {"x-ms-request-id": "fake", "x-ms-version": "2021-08-06", **(headers or {})}.items():
                self.send_header(name, value)
            if code:
                self.send_header("x-ms-error-code", code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def parse(self) -> tuple[str, str, dict[str, str]]:
            parts = urlsplit(self.path)
            segments = unquote(parts.path).strip("/").split("/", 1)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            return segments[0], segments[1] if len(segments) > 1 else "", query

        def allowed(self, share: str, query: dict[str, str], needs: str) -> bool:
            if self.headers.get("Authorization", "").startswith("SharedKey "):
                return True
            if "sig" not in query:
                return False
            with state.lock:
                state.permissions_seen.setdefault(share, set()).add(query.get("sp", ""))
            return any(letter in query.get("sp", "") for letter in needs)

        def body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            share, path, query = self.parse()
            if query.get("comp") == "list":
                if not self.allowed(share, query, "l"):
                    return self.reply(403, code="AuthorizationPermissionMismatch")
                return self.list_folder(share, path)
            if not self.allowed(share, query, "r"):
                return self.reply(403, code="AuthorizationPermissionMismatch")
            entry = state.files.get((share, path))
            if entry is None:
                return self.reply(404, code="ResourceNotFound")
            headers = {"Last-Modified": formatdate(entry.modified, usegmt=True), "ETag": '"0x1"', "x-ms-type": "File"}
            if entry.md5:
                headers["Content-MD5"] = entry.md5
            wanted = self.headers.get("x-ms-range") or self.headers.get("Range")
            if wanted and self.command == "GET":
                start, end = (int(x) for x in wanted.split("=")[1].split("-"))
                data = bytes(entry.data[start : end + 1])
                headers["Content-Range"] = f"bytes {start}-{start + len(data) - 1}/{len(entry.data)}"
                return self.reply(206, data, headers)
            if self.command == "HEAD":
                self.send_response(200)
                for name, value in {**headers, "Content-Length": str(len(entry.data))}.items():
                    self.send_header(name, value)
                self.end_headers()
                return None
            return self.reply(200, bytes(entry.data), headers)

        def list_folder(self, share: str, path: str) -> None:
            if share not in state.shares or (path and (share, path) not in state.folders):
                return self.reply(404, code="ResourceNotFound")
            prefix = f"{path}/" if path else ""
            items = []
            for s, folder in sorted(state.folders):
                if s == share and folder.startswith(prefix) and "/" not in folder[len(prefix) :]:
                    items.append(f"<Directory><Name>{escape(folder[len(prefix) :])}</Name><Properties /></Directory>")
            for (s, name), entry in sorted(state.files.items()):
                if s == share and name.startswith(prefix) and "/" not in name[len(prefix) :]:
                    items.append(
                        f"<File><Name>{escape(name[len(prefix) :])}</Name><Properties><Content-Length>{len(entry.data)}</Content-Length>"
                        f"<Last-Modified>{formatdate(entry.modified, usegmt=True)}</Last-Modified></Properties></File>"
                    )
            body = f'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ShareName="{share}" DirectoryPath="{escape(path)}"><Entries>{"".join(items)}</Entries><NextMarker /></EnumerationResults>'
            return self.reply(200, body.encode(), {"Content-Type": "application/xml"})

        def do_PUT(self) -> None:
            share, path, query = self.parse()
            payload = self.body()
            import time

            with state.lock:
                if query.get("restype") == "share":
                    if share in state.shares:
                        return self.reply(409, code="ShareAlreadyExists")
                    if not self.allowed(share, query, "c"):
                        return self.reply(403, code="AuthorizationFailure")
                    state.shares.add(share)
                    return self.reply(201, headers={"ETag": '"0x1"', "Last-Modified": _now()})
                if share not in state.shares:
                    return self.reply(404, code="ShareNotFound")
                parent = path.rsplit("/", 1)[0] if "/" in path else ""
                if query.get("restype") == "directory":
                    if not self.allowed(share, query, "cw"):
                        return self.reply(403, code="AuthorizationPermissionMismatch")
                    if parent and (share, parent) not in state.folders:
                        return self.reply(404, code="ParentNotFound")
                    if (share, path) in state.folders:
                        return self.reply(409, code="ResourceAlreadyExists")
                    state.folders.add((share, path))
                    return self.reply(201, headers={"ETag": '"0x1"', "Last-Modified": _now()})
                if query.get("comp") in ("range", "properties"):
                    if not self.allowed(share, query, "w"):
                        return self.reply(403, code="AuthorizationPermissionMismatch")
                    entry = state.files.get((share, path))
                    if entry is None:
                        return self.reply(404, code="ResourceNotFound")
                    entry.modified = time.time()
                    if query["comp"] == "properties":
                        size = int(self.headers["x-ms-content-length"])
                        entry.data = entry.data[:size] + bytearray(max(0, size - len(entry.data)))
                        return self.reply(200, headers={"ETag": '"0x1"', "Last-Modified": _now()})
                    start, end = (int(x) for x in self.headers["x-ms-range"].split("=")[1].split("-"))
                    if end >= len(entry.data) or end - start + 1 != len(payload):
                        return self.reply(416, code="InvalidRange")
                    entry.data[start : end + 1] = payload
                    return self.reply(
                        201, headers={"ETag": '"0x1"', "Content-MD5": base64.b64encode(hashlib.md5(payload).digest()).decode()}
                    )
                if self.headers.get("x-ms-type", "").lower() == "file":
                    if not self.allowed(share, query, "cw"):
                        return self.reply(403, code="AuthorizationPermissionMismatch")
                    if parent and (share, parent) not in state.folders:
                        return self.reply(404, code="ParentNotFound")
                    size = int(self.headers["x-ms-content-length"])
                    state.files[(share, path)] = Entry(bytearray(size), self.headers.get("x-ms-content-md5"), time.time())
                    return self.reply(201, headers={"ETag": '"0x1"', "Last-Modified": _now()})
            return self.reply(400, code="UnsupportedHttpVerb")

    return Handler


def start() -> FakeFiles:
    state = FakeFiles()
    state.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    threading.Thread(target=state.server.serve_forever, daemon=True, name="fake-azure-files").start()
    return state


def stop(state: FakeFiles) -> None:
    if state.server is not None:
        state.server.shutdown()
        state.server.server_close()
