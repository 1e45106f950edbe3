"""A gate in front of `rclone serve s3` that enforces what R2 enforces and rclone does not.

rclone accepts multipart parts of any size (docs/facts.md#r2-and-s3), so an upload that R2
would refuse passes against it. The gate refuses CompleteMultipartUpload when a non-final
part is under 5 MiB or the non-final parts differ in size, as R2 does. rclone also ignores
conditional writes; the gate honours them as R2 does: a PutObject or CompleteMultipartUpload
with ``If-None-Match: *`` where an object is, or ``If-Match: <etag>`` where the object's ETag
is another (or none), is refused with 412 PreconditionFailed, the check and the write atomic
per key. It also counts the body bytes the server received per object (tests prove a resumed
upload re-sends nothing), can play an outage (connections closed unanswered, as when the
endpoint is down) and hold a key's writes unanswered once it has received N bytes (a test
kills the uploader mid-upload, whatever the machine's speed).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

MIN_PART = 5 * 2**20
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection"}


class Gate:
    def __init__(self, upstream: str, data: Path) -> None:
        self.upstream = upstream
        self.data = data  # rclone's data dir: <bucket>/<key> files
        self.lock = threading.Lock()
        self.down = False
        self.parts: dict[str, dict[int, int]] = {}  # upload id -> part number -> size
        self.bytes_in: dict[str, int] = {}  # object key -> body bytes received
        self.refused: list[str] = []
        self.key_locks: dict[str, threading.Lock] = {}
        # A hold: once the key has received this many bytes, its writes wait unanswered
        # until the hold is lifted (a test kills the client meanwhile).
        self.hold: tuple[str, int] | None = None
        self.held = 0
        self.released = threading.Event()

    def etag_of(self, key: str) -> str | None:
        """The ETag rclone gives the object at ``key`` (bucket/key: a file under its data
        dir, whose ETag is its MD5), None when there is none."""
        path = self.data / key
        if not path.is_file():
            return None
        digest = hashlib.md5()  # noqa: S324 - rclone's ETag for a local file
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        return f'"{digest.hexdigest()}"'

    def key_lock(self, key: str) -> threading.Lock:
        """One lock per object key: a conditional write's check and write happen under it."""
        with self.lock:
            return self.key_locks.setdefault(key, threading.Lock())

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "bytes_in": dict(self.bytes_in),
                "refused": list(self.refused),
                "held": self.held,
            }

    def set_hold(self, key: str | None, after_bytes: int) -> None:
        with self.lock:
            self.released.set()  # whatever waits on an earlier hold goes
            self.released = threading.Event()
            self.hold, self.held = ((key, after_bytes) if key else None), 0

    def holds(self, key: str) -> threading.Event | None:
        """The event a write to ``key`` must wait for, when the hold has caught it."""
        with self.lock:
            if self.hold is None or self.hold[0] != key:
                return None
            if self.bytes_in.get(key, 0) < self.hold[1]:
                return None
            self.held += 1
            return self.released

    def clear(self) -> None:
        with self.lock:
            self.bytes_in.clear()
            self.refused.clear()

    def record_part(self, upload_id: str, number: int, size: int) -> None:
        with self.lock:
            self.parts.setdefault(upload_id, {})[number] = size

    def count(self, key: str, size: int) -> None:
        with self.lock:
            self.bytes_in[key] = self.bytes_in.get(key, 0) + size

    def r2_refusal(self, upload_id: str, body: bytes) -> str | None:
        """R2's answer to a CompleteMultipartUpload with parts R2 would not accept."""
        numbers = sorted(int(n) for n in re.findall(rb"<PartNumber>(\d+)</PartNumber>", body))
        with self.lock:
            sizes = self.parts.get(upload_id, {})
            known = [sizes[n] for n in numbers if n in sizes]
        if len(known) != len(numbers) or len(numbers) < 2:
            return None
        leading = known[:-1]
        if min(leading) < MIN_PART:
            return "EntityTooSmall: Your proposed upload is smaller than the minimum allowed size"
        if len(set(leading)) > 1:
            return "InvalidPart: All non-trailing parts must have the same length."
        return None


class Handler(BaseHTTPRequestHandler):
    gate: Gate
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _control(self) -> bool:
        path = urlsplit(self.path).path
        if not path.startswith("/_gate/"):
            return False
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if path == "/_gate/stats":
            self._reply(200, json.dumps(self.gate.stats()).encode())
        elif path == "/_gate/stats/clear":
            self.gate.clear()
            self._reply(200, b"{}")
        elif path == "/_gate/outage":
            self.gate.down = bool(json.loads(body or b"{}").get("down"))
            self._reply(200, b"{}")
        elif path == "/_gate/hold":  # {"key": "bucket/key", "after_bytes": N}; {} lifts it
            wanted = json.loads(body or b"{}")
            self.gate.set_hold(wanted.get("key"), int(wanted.get("after_bytes", 0)))
            self._reply(200, b"{}")
        else:
            self._reply(404, b"{}")
        return True

    def _proxy(self) -> None:
        if self._control():
            return
        length = self.headers.get("Content-Length")
        if length is None and self.command in ("PUT", "POST"):
            self._reply(411, b"Content-Length required", "text/plain")
            return
        body = self.rfile.read(int(length)) if length else b""
        if length and len(body) < int(length):
            # The client went away mid-body (killed): R2 stores nothing of such a request.
            self.close_connection = True
            return
        if self.gate.down:
            self.close_connection = True  # as an endpoint that is down: no answer at all
            return
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        key = url.path.lstrip("/")
        if self.command == "PUT" and (release := self.gate.holds(key)) is not None:
            release.wait()
            self.close_connection = True  # never answered: the client was killed meanwhile
            return
        if self.command == "PUT":
            self.gate.count(key, len(body))
            if "partNumber" in query and "uploadId" in query:
                self.gate.record_part(query["uploadId"][0], int(query["partNumber"][0]), len(body))
        if self.command == "POST" and "uploadId" in query:
            refusal = self.gate.r2_refusal(query["uploadId"][0], body)
            if refusal is not None:
                code, message = refusal.split(": ", 1)
                with self.gate.lock:
                    self.gate.refused.append(f"{key}: {code}")
                xml = (
                    f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                    f"<Message>{message}</Message></Error>"
                ).encode()
                self._reply(400, xml, "application/xml")
                return
        writes_object = (self.command == "PUT" and "partNumber" not in query) or (
            self.command == "POST" and "uploadId" in query
        )
        condition = self.headers.get("If-None-Match") or self.headers.get("If-Match")
        if writes_object and condition:
            with self.gate.key_lock(key):
                if not self._condition_holds(key):
                    with self.gate.lock:
                        self.gate.refused.append(f"{key}: PreconditionFailed")
                    xml = (
                        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>PreconditionFailed'
                        b"</Code><Message>At least one of the pre-conditions you specified did"
                        b" not hold</Message></Error>"
                    )
                    self._reply(412, xml, "application/xml")
                    return
                self._forward(body)
            return
        if writes_object or (self.command in ("GET", "HEAD") and "/" in key):
            # R2 shows an object whole or not at all; rclone writes its file in place, so a
            # read during a write could see half of it: one at a time per key, as R2 appears.
            with self.gate.key_lock(key):
                self._forward(body)
            return
        self._forward(body)

    def _condition_holds(self, key: str) -> bool:
        """If-None-Match: * holds where no object is; If-Match where the object's ETag is it."""
        etag = self.gate.etag_of(key)
        if self.headers.get("If-None-Match") == "*":
            return etag is None
        wanted = (self.headers.get("If-Match") or "").strip()
        return etag is not None and wanted in (etag, etag.strip('"'), "*")

    def _forward(self, body: bytes) -> None:
        upstream = http.client.HTTPConnection(self.gate.upstream, timeout=300)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream.request(self.command, self.path, body=body, headers=headers)
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status, answer.reason)
        for name, value in answer.getheaders():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        # A HEAD answer keeps the object's length; its body is empty.
        length_header = answer.getheader("Content-Length")
        self.send_header(
            "Content-Length", length_header if self.command == "HEAD" else str(len(data))
        )
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        upstream.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _proxy


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.s3gate")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="host:port of rclone serve s3")
    parser.add_argument("--data", required=True, help="the directory rclone serves")
    args = parser.parse_args()
    Handler.gate = Gate(args.upstream, Path(args.data))
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
