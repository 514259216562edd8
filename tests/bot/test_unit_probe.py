"""``python -m bot.ops.probe`` (the Dockerfile's HEALTHCHECK) against real HTTP servers on 127.0.0.1: what it calls
healthy, how it fails, and that it never asks beyond the loopback. The bot's own endpoint is probed end to end in
tests/bot/test_e2e_metrics.py."""
from __future__ import annotations

import contextlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bot.ops.probe import loopback_target, main, probe


@contextlib.contextmanager
def server_answering(status: int):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the standard library's name)
            body = b"secret-looking body that must not be printed\n"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("status, healthy", [(200, True), (503, False), (404, False), (500, False)])
def test_only_200_is_healthy(status, healthy, capsys):
    with server_answering(status) as base:
        assert probe(base + "/livez", 2.0) == (healthy, f"/livez: HTTP {status}")
        assert main([base + "/livez"]) == (0 if healthy else 1)
    out = capsys.readouterr().out
    assert f"HTTP {status}" in out and "secret" not in out, "one line of status, never the body"


def test_a_silent_or_absent_server_is_unhealthy_within_the_timeout():
    with socket.socket() as silent:  # accepts the connection (the backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        healthy, seen = probe(f"http://127.0.0.1:{silent.getsockname()[1]}/livez", 0.3)
        assert not healthy and "TimeoutError" in seen, seen
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    healthy, seen = probe(f"http://127.0.0.1:{port}/livez", 1.0)
    assert not healthy and "ConnectionRefusedError" in seen, seen


@pytest.mark.parametrize("url", ["http://10.1.2.3:9464/livez", "http://example.org:9464/livez",
                                 "https://127.0.0.1:9464/livez", "http://127.0.0.1/livez", "ftp://127.0.0.1:21/x"])
def test_refuses_anything_but_a_loopback_http_url(url, capsys):
    with pytest.raises(ValueError):
        loopback_target(url)
    assert main([url]) == 2
    assert "probe:" in capsys.readouterr().err


def test_the_loopback_in_any_spelling():
    assert loopback_target("http://127.0.0.1:9464/livez") == ("127.0.0.1", 9464, "/livez")
    assert loopback_target("http://[::1]:9464/readyz") == ("::1", 9464, "/readyz")
    assert loopback_target("http://127.8.0.1:1") == ("127.8.0.1", 1, "/")
