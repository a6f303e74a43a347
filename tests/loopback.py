"""A tiny HTTP server on 127.0.0.1 for download tests: byte ranges, If-Range, 404s and dropped connections.

``LoopbackServer.files`` maps URL paths to bytes; ``fail`` maps a path to an HTTP status to answer instead;
``drop_after`` maps a path to a byte count after which the next response for it is cut once; ``pace`` maps a
path to seconds to wait after each 64 KiB sent (a slow link, so a test can kill a download midway). ``sent``
counts the body bytes sent per path, so tests can show that a resumed download fetched no byte twice.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.fail: dict[str, int] = {}
        self.drop_after: dict[str, int] = {}
        self.pace: dict[str, float] = {}
        self.sent: Counter[str] = Counter()
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                path, range_header = self.path, self.headers.get("Range")
                server.requests.append((path, range_header))
                if path in server.fail or path not in server.files:
                    self.send_error(server.fail.get(path, 404))
                    return
                body = server.files[path]
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                start = 0
                if range_header and self.headers.get("If-Range", etag) == etag:
                    start = int(range_header.removeprefix("bytes=").split("-")[0])
                if start >= len(body) and start:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("ETag", etag)
                self.end_headers()
                chunk = body[start:]
                cut = server.drop_after.pop(path, None)
                if cut is not None:
                    chunk = chunk[: max(cut - start, 0)]
                piece = 1 << 16 if path in server.pace else max(len(chunk), 1)
                for offset in range(0, len(chunk), piece):
                    try:
                        self.wfile.write(chunk[offset:offset + piece])
                    except OSError:  # the client went away (a killed download)
                        return
                    server.sent[path] += len(chunk[offset:offset + piece])
                    time.sleep(server.pace.get(path, 0.0))
                if cut is not None:
                    self.close_connection = True

        return Handler
