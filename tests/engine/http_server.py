"""A small static HTTP server for the remote-input tests, run as its own process on 127.0.0.1.

``python tests/engine/http_server.py ROOT`` serves the files under ``ROOT`` and prints its port on the first line of
stdout. It honours single ``Range: bytes=a-b`` requests (206 with ``Content-Range``; 416 past the end), as static
servers do and GDAL's ``/vsicurl/`` needs, and counts the bytes it sent. Special paths make the failure cases:

- ``/norange/...``: the same files, but ``Range`` is ignored (200 with the whole file, no ``Accept-Ranges``);
- ``/error500/...``: every request answers HTTP 500;
- ``/slow/...``: answers after :data:`SLOW_S` seconds (a server that hangs);
- ``/stats``: JSON ``{"requests": n, "bytes": n, "paths": [...]}`` of what was served so far.

A separate process, not a thread: the test process holds the GIL while GDAL reads, and a server in it could stall.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

SLOW_S = 30.0
RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class Handler(BaseHTTPRequestHandler):
    """GET/HEAD of static files with Range support and the failure paths of the module docstring."""

    root = "."
    lock = threading.Lock()
    stats: dict = {"requests": 0, "bytes": 0, "paths": []}

    def log_message(self, fmt: str, *args: object) -> None:
        """Quiet: the tests read /stats instead."""

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        if path == "/stats":
            self._send(200, json.dumps(self.stats).encode(), "application/json", body)
            return
        ranges = True
        for prefix in ("/norange", "/error500", "/slow"):
            if path.startswith(prefix + "/"):
                path = path[len(prefix) :]
                if prefix == "/norange":
                    ranges = False
                elif prefix == "/error500":
                    self._send(500, b"internal error", "text/plain", body)
                    return
                else:
                    time.sleep(SLOW_S)
        file = os.path.realpath(os.path.join(self.root, path.lstrip("/")))
        if not file.startswith(os.path.realpath(self.root) + os.sep) or not os.path.isfile(file):
            self._send(404, b"not found", "text/plain", body)
            return
        with open(file, "rb") as f:
            data = f.read()
        with self.lock:
            self.stats["requests"] += 1
            self.stats["paths"].append(path)
        match = RANGE.match(self.headers.get("Range", "")) if ranges else None
        if match is None:
            self._send(200, data, "application/octet-stream", body, ranges)
            return
        first, last = match.groups()
        size = len(data)
        if first == "":  # suffix range: the last N bytes
            start, end = max(size - int(last), 0), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        if start >= size or start > end:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        part = data[start : end + 1]
        self._send(206, part, "application/octet-stream", body, True, f"bytes {start}-{end}/{size}")

    def _send(self, code: int, data: bytes, ctype: str, body: bool, ranges: bool = False, crange: str = "") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if ranges:
            self.send_header("Accept-Ranges", "bytes")
        if crange:
            self.send_header("Content-Range", crange)
        self.end_headers()
        if body:
            self.wfile.write(data)
            with self.lock:
                self.stats["bytes"] += len(data)


def main() -> None:
    """Serve ``sys.argv[1]`` on 127.0.0.1 (port ``sys.argv[2]`` or a free one), printing the port first."""
    Handler.root = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    parent = os.getppid()

    def exit_with_parent() -> None:  # a test process that crashed never runs its fixture's teardown
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=exit_with_parent, daemon=True).start()
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
