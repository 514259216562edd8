"""``python -m bot.ops.probe [URL]``: exit 0 when the bot's ``/livez`` (or ``/readyz``) answers 200, else 1.

For supervisors that run a command rather than an HTTP probe: Docker's ``HEALTHCHECK`` (the Dockerfile), a
cron job, a monitoring agent's exec check. It only ever asks the loopback (the metrics endpoint listens there
by default, and a health check has no business reaching elsewhere), waits at most ``--timeout`` seconds, and
prints one line saying what it saw, never the response body (nothing of the bot's state leaks through logs).
Standard library only, so it runs in the torch-free image and starts in well under a second.
"""
from __future__ import annotations

import argparse
import http.client
import ipaddress
import sys
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:9464/livez"


def loopback_target(url: str) -> tuple[str, int, str]:
    """(host, port, path) of an ``http://`` URL on the loopback; ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise ValueError("expected http://HOST:PORT/PATH")
    host = parts.hostname
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{host} is not the loopback: the probe asks only this machine")
    return host, parts.port, parts.path or "/"


def probe(url: str, timeout_s: float) -> tuple[bool, str]:
    """(healthy, what was seen) for one GET of ``url``."""
    host, port, path = loopback_target(url)
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read(4096)
        return response.status == 200, f"{path}: HTTP {response.status}"
    except (OSError, http.client.HTTPException) as error:
        return False, f"{path}: no answer ({type(error).__name__})"
    finally:
        connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.ops.probe", description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default=DEFAULT_URL, help=f"the endpoint to ask (default {DEFAULT_URL})")
    parser.add_argument("--timeout", type=float, default=4.0, help="seconds to wait for the answer (default 4)")
    args = parser.parse_args(argv)
    try:
        healthy, seen = probe(args.url, args.timeout)
    except ValueError as error:
        print(f"probe: {error}", file=sys.stderr)
        return 2
    print(("healthy: " if healthy else "unhealthy: ") + seen)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
