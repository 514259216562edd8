"""The webhook settings a test bot gets, and a free port on 127.0.0.1 for its server."""
from __future__ import annotations

import socket

WEBHOOK_SECRET = "s3cret-Token_for-tests"
WEBHOOK_PATH = "telegram-hook"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def webhook_settings(port: int) -> dict[str, str]:
    """WEBHOOK_* as in production (a public HTTPS URL, the server on 127.0.0.1 behind its proxy)."""
    return {"WEBHOOK_URL": f"https://bot.example.test/{WEBHOOK_PATH}", "WEBHOOK_SECRET": WEBHOOK_SECRET,
            "WEBHOOK_LISTEN": "127.0.0.1", "WEBHOOK_PORT": str(port)}


def local_webhook(port: int) -> str:
    return f"http://127.0.0.1:{port}/{WEBHOOK_PATH}"
