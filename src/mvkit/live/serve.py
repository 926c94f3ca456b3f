"""`mvkit live --serve`: a small local web page with the annotated stream (MJPEG, which every browser shows in an
<img>) and the current label, confidence, rate and latency (polled from /status.json). Python's own http.server:
one thread per viewer, loopback unless told otherwise."""

from __future__ import annotations

import io
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

from mvkit.errors import MvkitError

BOUNDARY = "mvkitframe"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mvkit live</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 1.5rem; background: #111; color: #eee; }
 img { width: min(100%, 640px); border: 1px solid #444; image-rendering: auto; }
 #label { font-size: 2rem; font-weight: 600; }
 .stats span { margin-right: 1.5rem; }
</style></head>
<body>
<h1>mvkit live</h1>
<div id="label">waiting for the first frame</div>
<div class="stats"><span id="confidence"></span><span id="fps"></span><span id="latency"></span><span id="frames"></span></div>
<p><img id="stream" src="/stream.mjpg" alt="annotated stream"></p>
<p id="model"></p>
<script>
async function refresh() {
  try {
    const s = await (await fetch('/status.json', {cache: 'no-store'})).json();
    if (s.label !== null) {
      document.getElementById('label').textContent = s.label;
      document.getElementById('confidence').textContent = 'confidence ' + (100 * s.confidence).toFixed(1) + '%';
      document.getElementById('fps').textContent = (s.fps === null ? '-' : s.fps.toFixed(1)) + ' fps';
      document.getElementById('latency').textContent = 'latency ' + s.latency_ms.toFixed(1) + ' ms';
      document.getElementById('frames').textContent = 'frame ' + s.frame;
    }
    document.getElementById('model').textContent = s.model;
  } catch (e) {}
  setTimeout(refresh, 250);
}
refresh();
</script>
</body></html>
"""


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT, or PORT alone for loopback."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise MvkitError(f"--serve {text}: give HOST:PORT, e.g. 127.0.0.1:8080")
    return host, int(port)


class LiveServer:
    def __init__(self, address: str, model: str):
        host, port = parse_address(address)
        self._frame: bytes | None = None
        self._sequence = 0
        self._status = {"label": None, "confidence": None, "fps": None, "latency_ms": None, "frame": None,
                        "model": model}
        self._changed = threading.Condition()
        self._closed = False
        try:
            self.httpd = ThreadingHTTPServer((host, port), self._handler())
        except OSError as exc:
            raise MvkitError(f"--serve {address}: cannot listen there ({exc.strerror or exc}); choose another port") from None
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self.public = host not in ("127.0.0.1", "localhost", "::1")
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="mvkit-live-serve", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def publish(self, image: Image.Image, status: dict) -> None:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
        with self._changed:
            self._frame = buffer.getvalue()
            self._sequence += 1
            self._status.update(status)
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _next_frame(self, seen: int) -> tuple[int, bytes | None]:
        with self._changed:
            while self._sequence == seen and not self._closed:
                self._changed.wait(1.0)
            return self._sequence, (None if self._closed else self._frame)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # no request log on the terminal
                pass

            def _send(self, body: bytes, content_type: str) -> None:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path in ("/", "/index.html"):
                    self._send(PAGE.encode(), "text/html; charset=utf-8")
                elif path == "/status.json":
                    with server._changed:
                        body = json.dumps(server._status).encode()
                    self._send(body, "application/json")
                elif path == "/stream.mjpg":
                    self._stream()
                else:
                    self.send_error(HTTPStatus.NOT_FOUND)

            def _stream(self) -> None:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                seen = 0
                try:
                    while True:
                        seen, jpeg = server._next_frame(seen)
                        if jpeg is None:
                            return
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                         f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):  # the viewer closed the page
                    return

        return Handler
