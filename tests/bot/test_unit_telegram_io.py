"""Photo size choice, group addressing, and the 429 retry wrapper."""
from types import SimpleNamespace

import pytest
from telegram import Chat, Message, User
from telegram.error import NetworkError, RetryAfter

from bot.handlers.telegram_io import RetryAfterLimiter, choose_photo_size, command_for_other_bot, is_addressed


def size(width, height):
    return SimpleNamespace(width=width, height=height)


def test_smallest_size_big_enough_for_the_model():
    sizes = [size(90, 60), size(320, 240), size(800, 600), size(1280, 960)]
    assert choose_photo_size(sizes) is sizes[1]


def test_portrait_short_side_counts():
    sizes = [size(200, 400), size(300, 600), size(900, 1800)]
    assert choose_photo_size(sizes) is sizes[1]


def test_all_too_small_takes_the_largest():
    sizes = [size(90, 60), size(200, 150), size(120, 90)]
    assert choose_photo_size(sizes) is sizes[1]


def test_empty_sizes():
    assert choose_photo_size([]) is None


BOT = User(id=42, first_name="Bot", is_bot=True, username="ProductIdBot")
ALICE = User(id=1, first_name="Alice", is_bot=False)


def message(chat_type="group", caption=None, text=None, reply_from=None):
    chat = Chat(id=-100 if chat_type != "private" else 1, type=chat_type)
    replied = Message(5, date=None, chat=chat, from_user=reply_from, text="x") if reply_from else None
    return Message(9, date=None, chat=chat, from_user=ALICE, caption=caption, text=text, reply_to_message=replied)


def test_private_chat_is_always_addressed():
    assert is_addressed(message("private"), "ProductIdBot", 42)


def test_group_photo_needs_mention_or_reply():
    assert not is_addressed(message(caption="look at this"), "ProductIdBot", 42)
    assert is_addressed(message(caption="what is it @productidbot?"), "ProductIdBot", 42)
    assert is_addressed(message(reply_from=BOT), "ProductIdBot", 42)
    assert not is_addressed(message(reply_from=ALICE), "ProductIdBot", 42)


def test_command_for_other_bot():
    assert command_for_other_bot(message(text="/foo@OtherBot"), "ProductIdBot")
    assert not command_for_other_bot(message(text="/foo@ProductIdBot"), "ProductIdBot")
    assert not command_for_other_bot(message(text="/foo"), "ProductIdBot")


async def test_retry_after_waits_and_retries():
    waits, attempts = [], []

    async def fake_sleep(seconds):
        waits.append(seconds)

    async def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise RetryAfter(2)
        return {"ok": True}

    limiter = RetryAfterLimiter(max_retries=3, sleep=fake_sleep)
    assert await limiter.process_request(flaky, (), {}, "sendMessage", {}, None) == {"ok": True}
    assert len(attempts) == 3
    assert waits == [pytest.approx(2.1), pytest.approx(2.1)]


async def test_retry_after_gives_up_after_max_retries_and_passes_other_errors():
    async def fake_sleep(seconds):
        return None

    async def always_429():
        raise RetryAfter(1)

    async def broken():
        raise NetworkError("down")

    limiter = RetryAfterLimiter(max_retries=2, sleep=fake_sleep)
    with pytest.raises(RetryAfter):
        await limiter.process_request(always_429, (), {}, "sendMessage", {}, None)
    with pytest.raises(NetworkError):
        await limiter.process_request(broken, (), {}, "sendMessage", {}, None)


async def test_retry_after_waits_at_most_its_total_budget_per_request():
    waits = []

    async def fake_sleep(seconds):
        waits.append(seconds)

    async def always_429():
        raise RetryAfter(25)

    # Each wait is under max_wait_s and the retries are not used up: the total budget is what stops it.
    limiter = RetryAfterLimiter(max_retries=5, max_wait_s=60.0, max_total_wait_s=60.0, sleep=fake_sleep)
    with pytest.raises(RetryAfter):
        await limiter.process_request(always_429, (), {}, "sendMessage", {}, None)
    assert len(waits) == 2 and sum(waits) <= 60.0, waits
