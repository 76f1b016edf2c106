"""A loopback web server for ``fetch_url`` tests: pages, a PDF, huge and slow bodies,
redirects (to anywhere a test names); it counts the requests it serves."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PAGE = b"""<!doctype html><html><head><title>Otters</title><script>var x = 1;</script></head>
<body><nav>Home | About</nav><article><h1>Sea otters</h1>
<p>Sea otters hold hands while they sleep so that they do not drift apart.</p>
<p>They use stones as tools to open shellfish, and keep a favourite stone in a pouch.</p>
</article><footer>(c) otters</footer></body></html>"""


def make_pdf(text: str) -> bytes:
    """A one-page PDF showing ``text`` (Helvetica), with a correct xref table."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


class WebServer:
    """``with WebServer() as web: web.url + "/page"``; ``web.redirects["/x"] = "http://…"``."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, str]] = []  # (path, Host header)
        self.redirects: dict[str, str] = {}
        self.pages: dict[str, tuple[str, bytes]] = {
            "/page": ("text/html; charset=utf-8", PAGE),
            "/doc.pdf": ("application/pdf", make_pdf("Hello from a PDF about otters.")),
            "/plain": ("text/plain", b"just text"),
            "/long": ("text/plain", b"otter " * 50_000),
            "/image": ("image/png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100),
        }
        web = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                web.hits.append((path, self.headers.get("Host", "")))
                if path in web.redirects:
                    self.send_response(302)
                    self.send_header("Location", web.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif path == "/huge":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(50_000_000))
                    self.end_headers()
                    try:
                        for _ in range(50_000):
                            self.wfile.write(b"x" * 1000)
                    except OSError:
                        pass
                elif path == "/slow":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    try:
                        for _ in range(1000):
                            self.wfile.write(b"s")
                            self.wfile.flush()
                            time.sleep(0.05)
                    except OSError:
                        pass
                elif path in web.pages:
                    ctype, body = web.pages[path]
                    self.send_response(200)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True)

    def wrap(self, context: Any) -> None:
        """Serve HTTPS with ``context`` (call before the first request)."""
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> WebServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def served(self, path: str) -> int:
        """How many times ``path`` was requested."""
        return sum(1 for p, _ in self.hits if p == path)
