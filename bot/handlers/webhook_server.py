"""PTB's tornado webhook app and server, guarded (installed by :func:`bot.handlers.webhook.guard_webhook_server`).

PTB's ``Updater.start_webhook`` looks both classes up in ``telegram.ext._updater``; these subclasses take
their place there:

- the handler compares the secret header with :func:`hmac.compare_digest` (PTB's uses ``!=``), and always
  requires one (PTB's skips the check when no secret was given);
- the server refuses a body over :data:`WEBHOOK_MAX_BODY_BYTES` (tornado answers 400 from the Content-Length,
  before reading the body; a chunked body is cut off at the cap). Telegram's updates are a few KB; the largest
  (a 4096-character message with its entities) stays far below.

Imports tornado: only imported in webhook mode.
"""
from __future__ import annotations

import hmac
from http import HTTPStatus

import tornado.web
from telegram.ext._utils.webhookhandler import TelegramHandler, WebhookAppClass, WebhookServer
from tornado.httpserver import HTTPServer

WEBHOOK_MAX_BODY_BYTES = 1024 * 1024
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class ConstantTimeTelegramHandler(TelegramHandler):
    """PTB's handler, with the secret always required and compared in constant time."""

    def _validate_post(self) -> None:
        if self.request.headers.get("Content-Type", None) != "application/json":
            raise tornado.web.HTTPError(HTTPStatus.FORBIDDEN)
        given = self.request.headers.get(SECRET_HEADER, "").encode()
        if not self.secret_token or not hmac.compare_digest(given, self.secret_token.encode()):
            raise tornado.web.HTTPError(HTTPStatus.FORBIDDEN, reason="missing or wrong secret token")


class GuardedWebhookApp(WebhookAppClass):
    """PTB's app with :class:`ConstantTimeTelegramHandler`; refuses to exist without a secret."""

    def __init__(self, webhook_path: str, bot, update_queue, secret_token: str | None = None):
        if not secret_token:
            raise ValueError("a webhook needs a secret token")
        self.shared_objects = {"bot": bot, "update_queue": update_queue, "secret_token": secret_token}
        tornado.web.Application.__init__(self, [(rf"{webhook_path}/?", ConstantTimeTelegramHandler, self.shared_objects)])


class CappedWebhookServer(WebhookServer):
    """PTB's server whose tornado HTTPServer refuses bodies over :data:`WEBHOOK_MAX_BODY_BYTES`."""

    def __init__(self, listen, port, webhook_app, ssl_ctx, unix=None):
        super().__init__(listen, port, webhook_app, ssl_ctx, unix)
        # PTB's HTTPServer is not listening yet (serve_forever binds it): this one takes its place.
        self._http_server = HTTPServer(webhook_app, ssl_options=ssl_ctx, max_body_size=WEBHOOK_MAX_BODY_BYTES)
