"""Webhook delivery for the fake Bot API: after ``setWebhook``, updates are POSTed to the bot's URL with
Telegram's ``X-Telegram-Bot-Api-Secret-Token`` header, as Telegram does, instead of waiting for getUpdates.

The URL a bot registers is public HTTPS (its reverse proxy); :meth:`proxy_webhook_to` says where that
proxy would forward, on 127.0.0.1 (this fake never sends anywhere else). Telegram retries a delivery that
fails; so does this fake, a few times, so a bot still starting its server gets its updates.
:meth:`post_update` sends one update with any secret (or none), for tests of refusals.
"""
from __future__ import annotations

import asyncio
import json

from aiohttp import ClientError, ClientSession, ClientTimeout

from .fake_telegram_checks import BadRequest

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
DELIVERY_ATTEMPTS = 20
DELIVERY_RETRY_S = 0.25


class WebhookDelivery:
    webhook_url: str = ""  # what the bot registered (setWebhook)
    webhook_secret: str | None = None
    webhook_target: str = ""  # where its HTTPS proxy forwards: http://127.0.0.1:PORT/PATH
    deliveries: list[tuple[int, int]]  # (update_id, HTTP status) of each webhook POST

    def proxy_webhook_to(self, local_url: str) -> None:
        if not local_url.startswith("http://127.0.0.1:"):
            raise ValueError("the fake delivers webhooks to http://127.0.0.1 only")
        self.webhook_target = local_url

    async def api_setWebhook(self, params, files):
        if not str(params.get("url") or "").startswith("https://"):
            raise BadRequest("bad webhook: An HTTPS URL must be provided for webhook")
        self.webhook_url, self.webhook_secret = str(params["url"]), params.get("secret_token")
        self.deliveries = []
        return True

    async def api_deleteWebhook(self, params, files):
        self.webhook_url, self.webhook_secret = "", None
        return True

    async def api_getWebhookInfo(self, params, files):
        return {"url": self.webhook_url, "has_custom_certificate": False, "pending_update_count": 0}

    async def push(self, update: dict) -> dict:
        if not (self.webhook_url and self.webhook_target):
            return await super().push(update)
        for _ in range(DELIVERY_ATTEMPTS):
            status = await self.post_update(update, self.webhook_secret)
            if status == 200:
                break
            await asyncio.sleep(DELIVERY_RETRY_S)
        return update

    async def post_update(self, update: dict, secret: str | None, url: str | None = None) -> int:
        """POST ``update`` to the webhook (``secret`` None: no header); the HTTP status, 0 if unreachable."""
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers[SECRET_HEADER] = secret
        try:
            async with ClientSession(timeout=ClientTimeout(total=10)) as session:
                async with session.post(url or self.webhook_target, data=json.dumps(update), headers=headers) as response:
                    status = response.status
        except (ClientError, OSError):
            status = 0
        self.deliveries = [*getattr(self, "deliveries", []), (update.get("update_id", 0), status)]
        return status
