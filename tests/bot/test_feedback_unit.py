"""The pure parts of the feedback buttons, and the async store (one download per photo, off the loop)."""
from __future__ import annotations

import asyncio

import pytest

from bot import messages
from bot.handlers import feedback
from bot.handlers.feedback import FeedbackData, answer_keyboard, choice_rows, thanks_rows, with_feedback_rows
from bot.state.feedback_records import FeedbackStore
from model.inbox import Inbox

KEY = "0123456789abcdef01234567"  # the bot's photo keys are 24 hex characters (bot.handlers.buttons)
CHECKPOINT = "f" * 64


def test_callback_data_round_trips_and_stays_under_64_bytes():
    many = [f"class_with_a_long_name_{i}" for i in range(999)]
    [why], [right, wrong] = answer_keyboard(KEY, feedback_on=True).inline_keyboard
    choices = choice_rows(KEY, many)
    every = [why, right, wrong] + [button for row in choices for button in row] + thanks_rows(KEY, "x" * 60)[0]
    assert max(len(b.callback_data.encode()) for b in every) <= 64
    assert sum(len(row) for row in choices) <= 100  # Telegram's limit on buttons per keyboard
    assert FeedbackData.decode(right.callback_data) == FeedbackData(KEY, "ok")
    assert FeedbackData.decode(wrong.callback_data) == FeedbackData(KEY, "no")
    assert FeedbackData.decode(choices[0][2].callback_data) == FeedbackData(KEY, "2")
    assert FeedbackData.decode(choices[-1][0].callback_data) == FeedbackData(KEY, feedback.NONE_CHOICE)


def test_feedback_off_shows_only_why():
    assert [[b.text for b in row] for row in answer_keyboard(KEY, feedback_on=False).inline_keyboard] == [["Why?"]]


@pytest.mark.parametrize("junk", [None, "", "fb", "fb:", "fb:abc", "fb::ok", "fb:abc:yes", "fb:abc:-1", "fb:a/b:ok",
                                  "fb:a:b:c", "why:abc", "fb:abc:1.5"])
def test_malformed_callback_data_is_refused(junk):
    assert FeedbackData.decode(junk) is None


def test_choice_rows_offer_every_class_then_none_of_these():
    rows = choice_rows(KEY, ["kurti", "saree", "shirt", "t_shirt"])
    assert [[b.text for b in row] for row in rows] == [["Kurti", "Saree", "Shirt"], ["T shirt"], ["None of these"]]


def test_feedback_rows_are_replaced_other_rows_kept():
    markup = answer_keyboard(KEY, feedback_on=True)
    assert [[b.text for b in row] for row in markup.inline_keyboard] == [["Why?"], ["✓ Right", "✗ Wrong"]]
    done = with_feedback_rows(markup, thanks_rows(KEY, "saree"))
    assert [[b.text for b in row] for row in done.inline_keyboard] == [["Why?"], ["Thanks — noted as saree"]]
    assert with_feedback_rows(done, []).inline_keyboard == markup.inline_keyboard[:1]


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
                                  label=label, checkpoint_id=CHECKPOINT, chat_id=chat_id, user_id=chat_id)

    records = await asyncio.gather(judge("saree", 1), judge("kurti", 2), judge("saree", 1))
    assert len(fetches) == 1
    assert not store._photo_locks and not store._photo_users  # no lock left behind per photo
    inbox = Inbox(tmp_path / "inbox")
    assert inbox.photo_count() == 1 and len(inbox.records()) == 3
    assert {r.photo_file for r in records} == {"photos/AgADphoto.jpg"}
    assert records[0].chat == records[2].chat != records[1].chat
    assert records[0].user == records[2].user != records[1].user and records[0].user != records[0].chat
    assert (tmp_path / "inbox" / "salt").exists()  # made on first use, since no salt was given


async def test_store_uses_the_configured_salt_and_a_failed_download_stores_nothing(tmp_path):
    store = await FeedbackStore.open(tmp_path / "inbox", salt="operator-salt")
    assert not (tmp_path / "inbox" / "salt").exists()

    async def broken() -> bytes:
        raise OSError("network down")

    with pytest.raises(OSError):
        await store.record(photo_id="U1", fetch_photo=broken, predicted="a", confidence=0.5, label="b",
                           checkpoint_id=CHECKPOINT, chat_id=5, user_id=5)
    live, photos, checkpoints = await store.live_accuracy()
    assert live.judged == 0 and photos == 0 and checkpoints == []


def test_album_rows_change_only_the_pressed_photos_buttons():
    from bot.handlers.albums import AlbumPhoto
    from bot.handlers.feedback import album_keyboard, album_number

    photos = [AlbumPhoto(10, key="a" * 24), AlbumPhoto(11, key="b" * 24), AlbumPhoto(12)]  # #3 not classified
    markup = album_keyboard(photos, feedback_on=True)
    assert [[b.text for b in row] for row in markup.inline_keyboard] == [["Why? #1", "#1 ✓", "#1 ✗"],
                                                                         ["Why? #2", "#2 ✓", "#2 ✗"]]
    assert album_number(markup, "b" * 24) == 2 and album_number(answer_keyboard(KEY, True), KEY) is None
    asked = with_feedback_rows(markup, choice_rows("b" * 24, ["kurti", "saree"]), "b" * 24)
    texts = [[b.text for b in row] for row in asked.inline_keyboard]
    assert texts == [["Why? #1", "#1 ✓", "#1 ✗"], ["Why? #2"], ["Kurti", "Saree"], ["None of these"]]
    done = with_feedback_rows(asked, thanks_rows("b" * 24, "saree", number=2), "b" * 24)
    assert [[b.text for b in row] for row in done.inline_keyboard] == [["Why? #1", "#1 ✓", "#1 ✗"], ["Why? #2"],
                                                                       ["#2 Thanks — noted as saree"]]


def test_press_limits_per_photo_and_per_day_reset_with_the_day():
    from bot.state.feedback_records import PER_DAY, PER_PHOTO, FeedbackLimits, OverLimit, PressCounts

    now = [86400.0 * 100]
    counts = PressCounts(FeedbackLimits(per_photo=2, per_day=3), clock=lambda: now[0])
    counts.take("u", "P1")
    counts.take("u", "P1")
    with pytest.raises(OverLimit) as over:
        counts.take("u", "P1")
    assert over.value.limit == PER_PHOTO
    counts.take("v", "P1")  # another user has their own counts
    counts.take("u", "P2")
    with pytest.raises(OverLimit) as over:
        counts.take("u", "P3")
    assert over.value.limit == PER_DAY
    counts.give_back("u", "P2")  # a press that could not be stored does not count
    counts.take("u", "P3")
    now[0] += 86400.0
    counts.take("u", "P1")


async def test_a_press_over_the_limit_stores_nothing_and_a_failed_one_is_not_counted(tmp_path):
    from bot.state.feedback_records import FeedbackLimits, OverLimit

    store = await FeedbackStore.open(tmp_path / "inbox", salt="s", limits=FeedbackLimits(per_photo=1, per_day=5))

    async def broken() -> bytes:
        raise OSError("network down")

    async def fetch() -> bytes:
        return b"\xff\xd8\xff-photo"

    def judge(fetch_photo, user_id=7):
        return store.record(photo_id="AgADp", fetch_photo=fetch_photo, predicted="saree", confidence=0.9, label="saree",
                            checkpoint_id=CHECKPOINT, chat_id=-100, user_id=user_id)

    with pytest.raises(OSError):
        await judge(broken)
    await judge(fetch)  # the failed press gave its count back
    with pytest.raises(OverLimit):
        await judge(fetch)
    await judge(fetch, user_id=8)
    assert len(Inbox(tmp_path / "inbox").records()) == 2
