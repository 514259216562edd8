"""The pure parts of the feedback buttons, and the async store (one download per photo, off the loop)."""
from __future__ import annotations

import asyncio

import pytest
from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot import feedback, messages
from bot.feedback import FeedbackData, answer_rows, choice_rows, thanks_rows, with_feedback_rows
from bot.feedback_store import FeedbackStore
from model import Prediction
from model.inbox import Inbox

KEY = "0123456789ab"  # the bot's photo keys are 12 hex characters
CHECKPOINT = "f" * 64


def test_callback_data_round_trips_and_stays_under_64_bytes():
    many = [f"class_with_a_long_name_{i}" for i in range(999)]
    prediction = Prediction(many[998], 1.0, ((many[998], 1.0),))
    [[right, wrong]] = answer_rows(KEY, prediction, many, CHECKPOINT)
    choices = choice_rows(FeedbackData.decode(wrong.callback_data), many)
    every = [right, wrong] + [button for row in choices for button in row]
    assert max(len(b.callback_data.encode()) for b in every) <= 64
    assert sum(len(row) for row in choices) <= 100  # Telegram's limit on buttons per keyboard
    decoded = FeedbackData.decode(right.callback_data)
    assert decoded == FeedbackData("r", KEY, 998, 1000, CHECKPOINT[:8])
    assert FeedbackData.decode(choices[-1][0].callback_data).choice == feedback.NONE_CHOICE


@pytest.mark.parametrize("junk", [None, "", "fb", "fb:", "fb:x:1:2:3:4", "fb:r:k:1:2", "fb:c:k:1:2:ab:",
                                  "fb:r:k/..:1:2:ab", "fb:c:k:1:2:ab:-1", "why:abc", "fb:r:k:-1:2:ab"])
def test_malformed_callback_data_is_refused(junk):
    assert FeedbackData.decode(junk) is None


def test_choice_rows_offer_every_class_then_none_of_these():
    data = FeedbackData("w", KEY, 1, 640, "abcd1234")
    rows = choice_rows(data, ["kurti", "saree", "shirt", "t_shirt"])
    assert [[b.text for b in row] for row in rows] == [["Kurti", "Saree", "Shirt"], ["T shirt"], ["None of these"]]
    assert FeedbackData.decode(rows[0][1].callback_data) == FeedbackData("c", KEY, 1, 640, "abcd1234", "1")


def test_feedback_rows_are_replaced_other_rows_kept():
    why = [InlineKeyboardButton("Why?", callback_data=f"why:{KEY}")]
    prediction = Prediction("saree", 0.93, (("saree", 0.93),))
    markup = with_feedback_rows(InlineKeyboardMarkup([why]), answer_rows(KEY, prediction, ["kurti", "saree"], CHECKPOINT))
    assert [[b.text for b in row] for row in markup.inline_keyboard] == [["Why?"], ["✓ Right", "✗ Wrong"]]
    done = with_feedback_rows(markup, thanks_rows("saree"))
    assert [[b.text for b in row] for row in done.inline_keyboard] == [["Why?"], ["Thanks — noted as saree"]]
    assert with_feedback_rows(done, []).inline_keyboard == (tuple(why),)


def test_thanks_text():
    assert messages.feedback_thanks("t_shirt") == "Thanks — noted as t shirt"
    assert messages.feedback_thanks(None) == "Thanks — noted as none of these"


async def test_store_downloads_a_photo_once_even_for_simultaneous_presses(tmp_path):
    store = await FeedbackStore.open(tmp_path / "inbox", salt="")
    fetches = []

    async def fetch() -> bytes:
        fetches.append(1)
        await asyncio.sleep(0)  # let the other presses run into the lock
        return b"\xff\xd8\xff-photo"

    async def judge(label: str, chat_id: int):
        return await store.record(photo_id="AgADphoto", fetch_photo=fetch, predicted="saree", confidence=0.93,
                                  label=label, checkpoint_id=CHECKPOINT, chat_id=chat_id)

    records = await asyncio.gather(judge("saree", 1), judge("kurti", 2), judge("saree", 1))
    assert len(fetches) == 1
    assert not store._photo_locks and not store._photo_users  # no lock left behind per photo
    inbox = Inbox(tmp_path / "inbox")
    assert inbox.photo_count() == 1 and len(inbox.records()) == 3
    assert {r.photo_file for r in records} == {"photos/AgADphoto.jpg"}
    assert records[0].chat == records[2].chat != records[1].chat
    assert (tmp_path / "inbox" / "salt").exists()  # made on first use, since no salt was given


async def test_store_uses_the_configured_salt_and_a_failed_download_stores_nothing(tmp_path):
    store = await FeedbackStore.open(tmp_path / "inbox", salt="operator-salt")
    assert not (tmp_path / "inbox" / "salt").exists()

    async def broken() -> bytes:
        raise OSError("network down")

    with pytest.raises(OSError):
        await store.record(photo_id="U1", fetch_photo=broken, predicted="a", confidence=0.5, label="b",
                           checkpoint_id=CHECKPOINT, chat_id=5)
    live, photos = await store.live_accuracy()
    assert live.judged == 0 and photos == 0
