"""End to end: "✓ Right" / "✗ Wrong" under an answer, the class buttons, and the record left on disk."""
from __future__ import annotations

import json

import pytest
from e2e_support import inline_buttons

from devtools.samples import CLASS_NAMES, jpeg

pytestmark = pytest.mark.timeout(60)
CHAT = 987654321  # distinctive, to be sure it never appears on disk in plain


def button(markup_call, *words: str) -> dict:
    found = [b for b in inline_buttons(markup_call) if all(w in b["text"].lower() for w in words)]
    assert found, f"no button with {words} in {[b['text'] for b in inline_buttons(markup_call)]}"
    return found[0]


async def press(fake_api, data: str, message: dict):
    """Press a button; returns the edit of that message that follows (text or buttons)."""
    mark = fake_api.mark()
    pressed = await fake_api.push(fake_api.callback_update(data, message))
    await fake_api.wait_for_call("answerCallbackQuery",
                                 lambda c: c.params["callback_query_id"] == pressed["callback_query"]["id"], after=mark)
    return await fake_api.wait_for_call(
        None, lambda c: c.method.startswith("editMessage") and c.params.get("message_id") == message["message_id"],
        after=mark)


def shown_text(call) -> str:
    return " ".join([call.text] + [b["text"] for b in inline_buttons(call)]).lower()


def records(folder) -> list[dict]:
    return [json.loads(path.read_text()) for path in folder.rglob("*.json") if not path.name.startswith(".")]


async def test_wrong_then_a_class_is_stored_with_that_label(fake_api, running_bot, tmp_path):
    inbox = tmp_path / "feedback"
    async with running_bot(FEEDBACK_DIR=str(inbox)):
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/help", user_id=CHAT))
        help_call = await fake_api.wait_for_call("sendMessage", after=mark)
        assert "stor" in help_call.text.lower() and "photo" in help_call.text.lower(), "help says what is kept"
        update = await fake_api.push(fake_api.photo_update(jpeg(3), user_id=CHAT))
        answer = await fake_api.wait_for_answer(update["message"])
        button(answer, "why")
        button(answer, "right")
        choices = await press(fake_api, button(answer, "wrong")["callback_data"], answer.result)
        for name in CLASS_NAMES:
            button(choices, name)
        button(choices, "none")
        thanks = await press(fake_api, button(choices, "saree")["callback_data"], answer.result)
        assert "saree" in shown_text(thanks) and ("thank" in shown_text(thanks) or "noted" in shown_text(thanks))
        # A round trip, so that anything the bot writes after the edit is on disk by now.
        mark = fake_api.mark()
        await fake_api.push(fake_api.text_update("ok", user_id=CHAT))
        await fake_api.wait_for_call("sendMessage", after=mark)
    saved = records(inbox)
    assert [record.get("label") for record in saved] == ["saree"], saved
    assert str(CHAT) not in json.dumps(saved), "the chat id must only be stored as a salted hash"
    assert any(path.read_bytes() == fake_api.file_bytes(fake_api.find_calls("getFile")[-1].params["file_id"])
               for path in inbox.rglob("*") if path.is_file() and not path.suffix == ".json"), "the photo is kept"


async def test_right_is_stored_as_the_predicted_class(fake_api, running_bot, tmp_path, classifier):
    inbox = tmp_path / "feedback"
    async with running_bot(FEEDBACK_DIR=str(inbox)):
        update = await fake_api.push(fake_api.photo_update(jpeg(4), user_id=CHAT))
        answer = await fake_api.wait_for_answer(update["message"])
        thanks = await press(fake_api, button(answer, "right")["callback_data"], answer.result)
        mark = fake_api.mark()
        await fake_api.push(fake_api.text_update("ok", user_id=CHAT))
        await fake_api.wait_for_call("sendMessage", after=mark)
    (record,) = records(inbox)
    assert record["label"] in CLASS_NAMES and record["label"] in shown_text(thanks)
    assert record["label"].lower() in answer.text.lower()


async def test_feedback_off_stores_nothing(fake_api, running_bot, tmp_path):
    async with running_bot():
        update = await fake_api.push(fake_api.photo_update(jpeg(5), user_id=CHAT))
        answer = await fake_api.wait_for_answer(update["message"])
        labels = [b["text"].lower() for b in inline_buttons(answer)]
        if any("wrong" in label for label in labels):  # buttons shown anyway: pressing must store nothing
            await press(fake_api, button(answer, "wrong")["callback_data"], answer.result)
    assert not records(tmp_path), "feedback is off, yet something was recorded"
