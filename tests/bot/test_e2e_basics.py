"""End to end: /start and /help, a photo, an image sent as a file, text and unknown commands (albums: test_e2e_albums)."""
from __future__ import annotations

import pytest
from e2e_support import assert_prediction, assert_short_notice, expected_prediction, why_button

from devtools.samples import CLASS_NAMES, jpeg, png

pytestmark = pytest.mark.timeout(60)


async def test_start_registers_commands_and_help_lists_classes(fake_api, running_bot):
    async with running_bot():
        registered = await fake_api.wait_for_call("setMyCommands")
        names = {command["command"] for command in registered.params["commands"]}
        assert {"start", "help", "why"} <= names
        assert all(command["description"] for command in registered.params["commands"])
        for command in ("/start", "/help"):
            mark = fake_api.mark()
            update = await fake_api.push(fake_api.command_update(command))
            chat_id = update["message"]["chat"]["id"]
            answer = await fake_api.wait_for_call("sendMessage", lambda c, chat_id=chat_id: c.chat_id == chat_id, after=mark)
            text = answer.text.lower()
            assert all(name in text for name in CLASS_NAMES), answer.text
            assert "/why" in text, "help explains /why"
            assert "%" in text or "percent" in text or "confiden" in text, "and what the confidence means"
            assert "mb" in text, "and the file size limit"


async def test_photo_gets_class_and_confidence_with_why_button(fake_api, running_bot, classifier):
    photo = jpeg(seed=2)
    async with running_bot():
        update = await fake_api.push(fake_api.photo_update(photo, caption="what is this?"))
        answer = await fake_api.wait_for_answer(update["message"])
    assert_prediction(answer, expected_prediction(classifier, photo))
    assert len(why_button(answer)["callback_data"].encode()) <= 64
    # The reply is shown as a reply to the photo, with the button under it.
    assert answer.result["reply_to_message"]["message_id"] == update["message"]["message_id"]


async def test_default_bot_serves_from_the_frozen_graph(fake_api, running_bot, classifier):
    photo = jpeg(seed=5)
    async with running_bot(own_classifier=True, FROZEN_GRAPH="1") as app:
        update = await fake_api.push(fake_api.photo_update(photo))
        answer = await fake_api.wait_for_answer(update["message"])
        served = app.bot_data["services"].classifier.classifier  # the torch engine's own Classifier
    assert served is not classifier and served.graph is not None
    assert_prediction(answer, expected_prediction(classifier, photo))  # the eager session model's answer


async def test_picks_a_photo_size_big_enough_for_the_model(fake_api, running_bot):
    big = jpeg(seed=3, width=1600, height=1200)  # Telegram offers 90, 320, 800, 1280 px and the original
    async with running_bot():
        update = await fake_api.push(fake_api.photo_update(big))
        await fake_api.wait_for_answer(update["message"])
    sizes = {size["file_id"]: size for size in update["message"]["photo"]}
    fetched = [sizes[c.params["file_id"]] for c in fake_api.find_calls("getFile") if c.params["file_id"] in sizes]
    assert len(fetched) == 1, fetched
    assert min(fetched[0]["width"], fetched[0]["height"]) >= 224, "too small a size for a 224 px model"


@pytest.mark.parametrize("mime_type", ["image/png", "application/octet-stream", "application/pdf", None])
async def test_image_sent_as_a_file_is_recognised_by_its_bytes(fake_api, running_bot, classifier, mime_type):
    picture = png(seed=4)
    async with running_bot():
        update = await fake_api.push(fake_api.document_update(picture, file_name="IMG_0042", mime_type=mime_type))
        answer = await fake_api.wait_for_answer(update["message"])
    assert_prediction(answer, expected_prediction(classifier, picture))
    why_button(answer)


@pytest.mark.parametrize("text", ["hello, what can you do?", "/frobnicate", "/frobnicate@ProductIdBot now"])
async def test_text_and_unknown_commands_get_a_hint(fake_api, running_bot, classifier, text):
    photo = jpeg(seed=5)
    async with running_bot():
        mark = fake_api.mark()
        await fake_api.push(fake_api.text_update(text))
        hint = await fake_api.wait_for_call("sendMessage", after=mark)
        assert_short_notice(hint)
        assert "photo" in hint.text.lower() or "/help" in hint.text, hint.text
        update = await fake_api.push(fake_api.photo_update(photo))
        answer = await fake_api.wait_for_answer(update["message"])
    assert_prediction(answer, expected_prediction(classifier, photo))
