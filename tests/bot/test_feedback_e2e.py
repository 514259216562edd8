"""End to end against the fake Bot API server: "✓ Right" / "✗ Wrong" under answers, the class choice,
"None of these", the record on disk, one photo stored once, feedback off, /help, /stats and /forget."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from model.inbox import NONE_OF_THESE, Inbox

pytestmark = pytest.mark.timeout(60)

USER = 1001  # the fake's default user (and private chat)


def jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(240, 320, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "JPEG")
    return buffer.getvalue()


def buttons(markup: dict | None) -> list[list[tuple[str, str]]]:
    return [[(b["text"], b.get("callback_data", "")) for b in row] for row in (markup or {}).get("inline_keyboard", [])]


def button_data(markup: dict | None, text: str) -> str:
    found = [data for row in buttons(markup) for label, data in row if label == text]
    assert found, f"no button {text!r} in {buttons(markup)}"
    return found[0]


async def send_photo(fake_api, seed: int):
    """The user sends a photo; returns (their message, the bot's answer call)."""
    update = await fake_api.push(fake_api.photo_update(jpeg(seed)))
    answer = await fake_api.wait_for_answer(update["message"])
    return update["message"], answer


async def press(fake_api, message: dict, data: str, *, edited: bool = False):
    """Press a button under the bot's ``message`` (as it is now); returns (answerCallbackQuery call, the
    editMessageReplyMarkup call when ``edited``)."""
    mark = fake_api.mark()
    current = fake_api.messages[(message["chat"]["id"], message["message_id"])]
    await fake_api.push(fake_api.callback_update(data, current))
    answered = await fake_api.wait_for_call("answerCallbackQuery", after=mark)
    edit = await fake_api.wait_for_call("editMessageReplyMarkup", after=mark) if edited else None
    return answered, edit


async def test_wrong_then_saree_is_acknowledged_and_stored(fake_api, running_bot, tmp_path, classifier):
    inbox_dir = tmp_path / "feedback"
    async with running_bot(FEEDBACK_DIR=str(inbox_dir)):
        photo_message, answer = await send_photo(fake_api, 0)
        markup = answer.params["reply_markup"]
        assert [text for text, _ in buttons(markup)[0]] == ["Why?"]
        assert [text for text, _ in buttons(markup)[1]] == ["✓ Right", "✗ Wrong"]
        assert all(len(data.encode()) <= 64 for row in buttons(markup) for _, data in row)
        bot_answer = answer.result

        _, edit = await press(fake_api, bot_answer, button_data(markup, "✗ Wrong"), edited=True)
        shown = [text for row in buttons(edit.params["reply_markup"]) for text, _ in row]
        assert shown == ["Why?", "Kurti", "Saree", "Shirt", "None of these"]
        assert not (inbox_dir / "records").exists() or not Inbox(inbox_dir).records()  # "Wrong" alone stores nothing

        answered, edit = await press(fake_api, bot_answer, button_data(edit.params["reply_markup"], "Saree"), edited=True)
        assert answered.params.get("text") == "Thanks — noted as saree"
        assert buttons(edit.params["reply_markup"])[0][0][0] == "Why?"  # the heat-map button stays
        assert [text for text, _ in buttons(edit.params["reply_markup"])[1]] == ["Thanks — noted as saree"]

    [record] = Inbox(inbox_dir).records()
    assert record.label == "saree"
    expected = classifier.predict_image(classifier.open(jpeg(0)))
    assert record.predicted == expected.label
    assert record.confidence == pytest.approx(expected.confidence, abs=0.001)
    assert record.checkpoint_id == classifier.checkpoint_id
    assert str(USER) not in record.chat and len(record.chat) == 16
    stored = inbox_dir / record.photo_file
    assert stored.read_bytes() == jpeg(0)  # the photo the bot classified, byte for byte
    assert record.photo_id == photo_message["photo"][-1]["file_unique_id"]


async def test_right_twice_and_none_of_these_store_the_photo_once(fake_api, running_bot, tmp_path):
    inbox_dir = tmp_path / "feedback"
    async with running_bot(FEEDBACK_DIR=str(inbox_dir)):
        photo_message, answer = await send_photo(fake_api, 1)
        file_id = photo_message["photo"][-1]["file_id"]
        right = button_data(answer.params["reply_markup"], "✓ Right")
        mark = fake_api.mark()
        answered, _ = await press(fake_api, answer.result, right, edited=True)
        assert answered.params["text"].startswith("Thanks — noted as ")
        first_downloads = len(fake_api.find_calls("getFile", lambda c: c.params["file_id"] == file_id, after=mark))
        mark = fake_api.mark()
        await press(fake_api, answer.result, right, edited=True)  # an old "Right" pressed again (a double tap)
        wrong = button_data(answer.params["reply_markup"], "✗ Wrong")
        _, edit = await press(fake_api, answer.result, wrong, edited=True)
        answered, _ = await press(fake_api, answer.result, button_data(edit.params["reply_markup"], "None of these"))
        assert answered.params["text"] == "Thanks — noted as none of these"
        again = fake_api.find_calls("getFile", lambda c: c.params["file_id"] == file_id, after=mark)

    inbox = Inbox(inbox_dir)
    records = inbox.records()
    assert first_downloads == 1 and again == []  # downloaded for the first judgement only
    assert inbox.photo_count() == 1 and len({r.photo_file for r in records}) == 1
    assert [r.label == r.predicted for r in records] == [True, True, False]
    assert records[-1].label == NONE_OF_THESE


async def test_feedback_off_shows_no_buttons_and_stores_nothing(fake_api, running_bot, tmp_path):
    async with running_bot() as app:
        _, answer = await send_photo(fake_api, 2)
        assert [[text for text, _ in row] for row in buttons(answer.params["reply_markup"])] == [["Why?"]]
        forged = answer.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"].replace("why:", "")
        answered, _ = await press(fake_api, answer.result, f"fb:{forged}:ok")
        assert answered.params["text"] == "Feedback is switched off on this bot."
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/help"))
        help_call = await fake_api.wait_for_call("sendMessage", after=mark)
        assert "Nothing you send is stored" in help_call.text
        data_dir = app.settings.data_dir
    everything = [p.name for p in tmp_path.rglob("*")]
    assert not {"records", "photos", "salt"} & set(everything), everything
    assert data_dir.is_dir()


async def test_help_stats_and_forget_when_feedback_is_on(fake_api, running_bot, tmp_path):
    inbox_dir = tmp_path / "feedback"
    async with running_bot(FEEDBACK_DIR=str(inbox_dir), ADMIN_USER_IDS=str(USER)) as app:
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/help"))
        help_text = (await fake_api.wait_for_call("sendMessage", after=mark)).text
        for kept in ("photo", "what you chose", "time", "/forget"):
            assert kept in help_text, (kept, help_text)

        _, answer = await send_photo(fake_api, 3)
        await press(fake_api, answer.result, button_data(answer.params["reply_markup"], "✓ Right"))
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/stats"))
        stats = (await fake_api.wait_for_call("sendMessage", after=mark)).text
        assert "Feedback: 1 judged, 1 right (100% live accuracy)" in stats and "photos kept: 1" in stats
        serving = app.bot_data["services"].classifier.checkpoint_id[:12]
        assert f"checkpoint {serving} (serving): 1/1 right (100%, 95% 21%-100%)" in stats

        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/forget"))
        forgot = (await fake_api.wait_for_call("sendMessage", after=mark)).text
        assert "deleted 1 judgement and 1 photo." in forgot and "last photo" in forgot
    assert Inbox(inbox_dir).records() == [] and Inbox(inbox_dir).photo_count() == 0


async def test_stale_or_forged_buttons_are_answered_not_crashed(fake_api, running_bot, tmp_path):
    from bot.state.store import StoredAnswer

    inbox_dir = tmp_path / "feedback"
    async with running_bot(FEEDBACK_DIR=str(inbox_dir)) as app:
        _, answer = await send_photo(fake_api, 4)
        key = button_data(answer.params["reply_markup"], "✓ Right").split(":")[1]
        answered, _ = await press(fake_api, answer.result, f"fb:{key}:99")  # no class 99
        assert "older model" in answered.params["text"]
        store = app.bot_data["services"].store
        stored = store.answer(answer.chat_id, key)
        photo = store.by_key(answer.chat_id, key)
        store.remember(answer.chat_id, photo, StoredAnswer(stored.label, stored.confidence, "0" * 64))  # another model's
        answered, _ = await press(fake_api, answer.result, f"fb:{key}:1")
        assert "older model" in answered.params["text"]
        for junk in ("fb:zz", "fb:", f"fb:{key}:maybe", "fb:unknownkey000:ok", f"fb:{key}:²", f"fb:{'0' * 24}:ok"):
            answered, _ = await press(fake_api, answer.result, junk)
            assert answered.ok
        errors = [c for c in fake_api.calls if c.method == "sendMessage" and "went wrong" in c.text]
        assert errors == []
    assert Inbox(inbox_dir).records() == []


async def test_photo_found_by_key_when_the_user_deleted_their_message(fake_api, running_bot, tmp_path):
    inbox_dir = tmp_path / "feedback"
    async with running_bot(FEEDBACK_DIR=str(inbox_dir)):
        _, answer = await send_photo(fake_api, 5)
        orphan = {k: v for k, v in answer.result.items() if k != "reply_to_message"}  # what Telegram sends then
        mark = fake_api.mark()
        await fake_api.push(fake_api.callback_update(button_data(answer.params["reply_markup"], "✓ Right"), orphan))
        answered = await fake_api.wait_for_call("answerCallbackQuery", after=mark)
        assert answered.params["text"].startswith("Thanks — noted as ")
    [record] = Inbox(inbox_dir).records()
    assert (inbox_dir / record.photo_file).read_bytes() == jpeg(5)


async def test_a_failed_download_is_told_and_the_next_press_works(fake_api, running_bot, tmp_path):
    inbox_dir = tmp_path / "feedback"
    async with running_bot(FEEDBACK_DIR=str(inbox_dir)):
        _, answer = await send_photo(fake_api, 6)
        right = button_data(answer.params["reply_markup"], "✓ Right")
        fake_api.fail_next("getFile", 400, retry_after=None, description="Bad Request: temporarily unavailable")
        answered, _ = await press(fake_api, answer.result, right)
        assert answered.params["text"] == "Sorry, I couldn't save that. Please try again."
        assert Inbox(inbox_dir).records() == [] and Inbox(inbox_dir).photo_count() == 0
        answered, _ = await press(fake_api, answer.result, right, edited=True)
        assert answered.params["text"].startswith("Thanks — noted as ")
    assert len(Inbox(inbox_dir).records()) == 1


async def test_an_unusable_feedback_dir_stops_the_bot_with_one_line(fake_api, running_bot, tmp_path):
    from bot.config import ConfigError

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(ConfigError, match="FEEDBACK_DIR=.* cannot be used"):
        async with running_bot(FEEDBACK_DIR=str(not_a_folder)):
            pass


async def test_the_same_photo_sent_twice_is_stored_once(fake_api, running_bot, tmp_path):
    """A forwarded or re-sent photo keeps its file_unique_id: two answers, two judgements, one stored photo."""
    inbox_dir = tmp_path / "feedback"
    async with running_bot(FEEDBACK_DIR=str(inbox_dir)):
        first, answer_one = await send_photo(fake_api, 7)
        # The fake makes new files for every photo_update; re-use the first message's sizes as Telegram would.
        again = fake_api._update(message=fake_api._user_message(USER, None, "private", None, photo=first["photo"]))
        await fake_api.push(again)
        answer_two = await fake_api.wait_for_answer(again["message"])
        for answer in (answer_one, answer_two):
            await press(fake_api, answer.result, button_data(answer.params["reply_markup"], "✓ Right"), edited=True)
    inbox = Inbox(inbox_dir)
    assert len(inbox.records()) == 2 and inbox.photo_count() == 1
    assert (inbox_dir / inbox.records()[0].photo_file).read_bytes() == jpeg(7)
