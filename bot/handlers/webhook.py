"""Webhook mode's guards: never without a secret, the secret compared in constant time, and a capped body.

- No WEBHOOK_SECRET: :func:`with_webhook_secret` makes a random one at each start (the bot registers it with
  ``setWebhook`` itself, and Telegram sends it back in every POST); ``python -m bot`` adds it to the log
  redaction. :func:`webhook_arguments` refuses settings without one, so no code path serves a webhook that
  anyone who reaches the port could post to.
- PTB's tornado handler compares the secret with ``!=`` and its server takes bodies up to tornado's 100 MB:
  :func:`guard_webhook_server` puts the subclasses of :mod:`bot.handlers.webhook_server` in their place.

Listening: WEBHOOK_LISTEN defaults to 127.0.0.1, behind the reverse proxy that terminates TLS.
"""
from __future__ import annotations

import dataclasses
import secrets
from urllib.parse import urlparse

from telegram import Update

from bot.config import ConfigError, Settings

GENERATED_SECRET_BYTES = 32  # 43 URL-safe characters (Telegram takes 1-256 of A-Z a-z 0-9 _ -)


def with_webhook_secret(settings: Settings) -> Settings:
    """``settings`` with a new random WEBHOOK_SECRET when it serves a webhook without one."""
    if not settings.webhook_url or settings.webhook_secret:
        return settings
    return dataclasses.replace(settings, webhook_secret=secrets.token_urlsafe(GENERATED_SECRET_BYTES))


def webhook_arguments(settings: Settings) -> dict:
    """What PTB's webhook server gets from the settings (``run_webhook``, or ``updater.start_webhook`` in tests);
    the guarded server is put in place first."""
    if not settings.webhook_secret:
        raise ConfigError("a webhook needs WEBHOOK_SECRET (python -m bot makes a random one when it is unset)")
    guard_webhook_server()
    return {"listen": settings.webhook_listen, "port": settings.webhook_port,
            "url_path": urlparse(settings.webhook_url).path.lstrip("/"), "webhook_url": settings.webhook_url,
            "secret_token": settings.webhook_secret, "allowed_updates": Update.ALL_TYPES}


def guard_webhook_server() -> None:
    """PTB's Updater builds its tornado app and server from names in ``telegram.ext._updater``: ours go there
    (idempotent). Needs tornado (python-telegram-bot[webhooks])."""
    import telegram.ext._updater as updater_module

    if not updater_module.WEBHOOKS_AVAILABLE:
        raise ConfigError("WEBHOOK_URL needs python-telegram-bot[webhooks] (tornado)")
    from bot.handlers.webhook_server import CappedWebhookServer, GuardedWebhookApp

    updater_module.WebhookAppClass, updater_module.WebhookServer = GuardedWebhookApp, CappedWebhookServer
