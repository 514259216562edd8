"""Webhook mode end to end: the fake Bot API POSTs updates to PTB's webhook server with Telegram's secret
header; the bot answers them, and refuses a POST with a wrong or missing secret without handling it."""
from __future__ import annotations

import asyncio

import pytest
from e2e_support import assert_prediction, expected_prediction
from webhook_support import WEBHOOK_SECRET, free_port, local_webhook, webhook_settings

from devtools.samples import image_bytes, make_photo


async def test_webhook_updates_are_answered_and_a_wrong_secret_is_refused(fake_api, running_bot, classifier):
    port = free_port()
    async with running_bot(webhook=True, **webhook_settings(port)):
        assert fake_api.webhook_url == "https://bot.example.test/telegram-hook"
        assert fake_api.webhook_secret == WEBHOOK_SECRET  # registered with setWebhook, as Telegram needs it
        fake_api.proxy_webhook_to(local_webhook(port))
        photo = image_bytes(make_photo(seed=3))

        forged = fake_api.photo_update(photo, chat_id=501)
        assert await fake_api.post_update(forged, "not-the-secret") == 403
        assert await fake_api.post_update(forged, None) == 403

        update = await fake_api.push(fake_api.photo_update(photo, chat_id=502))
        assert fake_api.deliveries[-1] == (update["update_id"], 200)
        answer = await fake_api.wait_for_answer(update["message"], timeout=20)
        assert_prediction(answer, expected_prediction(classifier, photo))
        await asyncio.sleep(0.5)  # time for a forged update to be (wrongly) handled
        assert not fake_api.answers_in(501), "an update with a wrong or missing secret was handled"


async def test_a_webhook_without_a_secret_gets_a_random_one_listens_on_loopback_and_caps_bodies(
        fake_api, running_bot, bot_settings):
    """WEBHOOK_SECRET and WEBHOOK_LISTEN unset: the bot registers a random secret of its own, refuses POSTs
    without it, listens on 127.0.0.1 only, and refuses a body over the cap before handling it."""
    from bot.handlers.webhook import with_webhook_secret
    from bot.handlers.webhook_server import WEBHOOK_MAX_BODY_BYTES

    port = free_port()
    env = {name: value for name, value in webhook_settings(port).items() if name not in ("WEBHOOK_SECRET", "WEBHOOK_LISTEN")}
    settings = with_webhook_secret(bot_settings(**env))
    assert settings.webhook_listen == "127.0.0.1"
    async with running_bot(settings=settings, webhook=True) as app:
        secret = fake_api.webhook_secret
        assert secret == settings.webhook_secret and len(secret) >= 40  # registered with setWebhook
        assert secret != with_webhook_secret(bot_settings(**env)).webhook_secret  # a new one at each start
        bound = {sock.getsockname()[0] for sock in app.updater._httpd._http_server._sockets.values()}
        assert bound == {"127.0.0.1"}
        fake_api.proxy_webhook_to(local_webhook(port))
        photo = image_bytes(make_photo(seed=4))

        forged = fake_api.photo_update(photo, chat_id=601)
        assert await fake_api.post_update(forged, None) == 403
        assert await fake_api.post_update(forged, "") == 403
        assert await fake_api.post_update(forged, secret[:-1]) == 403
        huge = fake_api.text_update("x" * (WEBHOOK_MAX_BODY_BYTES + 1), chat_id=602)
        assert await fake_api.post_update(huge, secret) == 400  # refused from its Content-Length

        update = await fake_api.push(fake_api.photo_update(photo, chat_id=603))
        assert fake_api.deliveries[-1] == (update["update_id"], 200)
        await fake_api.wait_for_answer(update["message"], timeout=20)
        await asyncio.sleep(0.5)  # time for a refused update to be (wrongly) handled
        assert not fake_api.answers_in(601) and not fake_api.answers_in(602)


def test_webhook_arguments_refuse_settings_without_a_secret(bot_settings):
    from bot.config import ConfigError
    from bot.handlers.webhook import webhook_arguments

    env = {name: value for name, value in webhook_settings(free_port()).items() if name != "WEBHOOK_SECRET"}
    with pytest.raises(ConfigError, match="WEBHOOK_SECRET"):
        webhook_arguments(bot_settings(**env))
