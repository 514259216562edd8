"""The bot's HTTP endpoint (METRICS_PORT, METRICS_LISTEN): ``/metrics``, ``/livez``, ``/readyz``, nothing else.

It runs on its own threads (the standard library's ThreadingHTTPServer), so a scrape never waits for the
event loop and a wedged loop cannot hide behind it: ``/livez`` reads :meth:`bot.ops.health.HealthMonitor.status`,
which notices when the loop stopped ticking. ``/metrics`` is prometheus_client's exposition of the bot's
registry (bot.ops.metrics). GET only (405 otherwise), any other path 404, small bodies; the standard library
refuses over-long lines and too many headers (431), and a client that sends nothing is dropped after
``CLIENT_TIMEOUT_S``.
"""
from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from bot.ops.health import HealthMonitor

log = logging.getLogger(__name__)

PATHS = ("/metrics", "/livez", "/readyz")
CLIENT_TIMEOUT_S = 5.0


class MetricsServer:
    """``start()`` binds (``port`` 0: any free port, see :attr:`port`) and serves on a daemon thread; ``stop()`` ends it."""

    def __init__(self, listen: str, port: int, registry: CollectorRegistry, health: HealthMonitor):
        self.listen, self.requested_port = listen, port
        self.registry, self.health = registry, health
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd else self.requested_port

    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"registry": self.registry, "health": self.health})
        self._httpd = ThreadingHTTPServer((self.listen, self.requested_port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="metrics-http", daemon=True)
        self._thread.start()
        log.info("metrics: http://%s:%d/metrics, /livez, /readyz", self.listen, self.port)

    def stop(self) -> None:
        """Blocks up to half a second (serve_forever's poll): call it from a thread."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


class _Handler(BaseHTTPRequestHandler):
    registry: CollectorRegistry
    health: HealthMonitor
    server_version = "productbot"
    sys_version = ""
    timeout = CLIENT_TIMEOUT_S
    protocol_version = "HTTP/1.0"  # one request per connection: nothing to keep a thread for
    error_message_format = "%(code)d %(message)s\n"  # the standard library's errors, as short as ours
    error_content_type = "text/plain; charset=utf-8"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._send(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        elif path in ("/livez", "/readyz"):
            status = self.health.status()
            ok, reason = (status.live, status.live_reason) if path == "/livez" else (status.ready, status.ready_reason)
            self._send(200 if ok else 503, f"{reason}\n".encode())
        else:
            self._send(404, b"not found\n")

    def _not_allowed(self) -> None:
        if urlsplit(self.path).path in PATHS:
            self._send(405, b"GET only\n", extra={"Allow": "GET"})
        else:
            self._send(404, b"not found\n")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
              extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # the standard library writes to stderr; keep it quiet
        log.debug("metrics http: " + format, *args)
