"""Webhook mode end to end: the fake Bot API POSTs updates to PTB's webhook server with Telegram's secret
header; the bot answers them, and refuses a POST with a wrong or missing secret without handling it."""
from __future__ import annotations

import asyncio

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
