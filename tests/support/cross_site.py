"""A site of its own on another origin: a page that plays the stream at ``?src=`` with hls.js,
for proving the platform's CORS from a real browser."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support.ports import free_port

HLS_JS = Path(__file__).parents[2] / "services" / "origin" / "static" / "vendor" / "hls.min.js"
PAGE = b"""<!doctype html>
<video id="video" muted autoplay playsinline></video>
<script src="/hls.min.js"></script>
<script>
  const video = document.getElementById("video");
  const hls = new Hls();
  window.playback = { errors: [], video };
  hls.on(Hls.Events.ERROR, (_, d) =>
    window.playback.errors.push({ details: d.details, fatal: d.fatal }));
  hls.loadSource(new URLSearchParams(location.search).get("src"));
  hls.attachMedia(video);
  video.play().catch(() => {});
</script>
"""


class PageServer(BaseHTTPRequestHandler):
    """The player page and hls.js, nothing of the platform's."""

    def do_GET(self) -> None:
        if self.path.startswith("/hls.min.js"):
            body, kind = HLS_JS.read_bytes(), "text/javascript"
        else:
            body, kind = PAGE, "text/html"
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serve_site() -> Iterator[str]:
    """The other site, served on a port of its own: ``http://127.0.0.1:<port>``."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), PageServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
