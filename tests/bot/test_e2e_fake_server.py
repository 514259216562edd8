"""The fake Bot API server itself, driven by python-telegram-bot's own Bot: if these fail, the other
end-to-end tests would be testing the fake, not the bot."""
from __future__ import annotations

import asyncio
import io
import zlib

import pytest
import telegram
from PIL import Image
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputMediaPhoto, ReplyParameters

from devtools.fake_telegram import DOWNLOAD_LIMIT
from devtools.samples import decompression_bomb, image_bytes

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def ptb_bot(fake_api):
    bot = telegram.Bot(fake_api.token, base_url=fake_api.api_base_url, base_file_url=fake_api.file_base_url)
    async with bot:
        yield bot


async def test_identity_messages_and_replies(fake_api, ptb_bot, photo_jpeg):
    assert ptb_bot.username == "ProductIdBot"
    update = await fake_api.push(fake_api.photo_update(photo_jpeg, user_id=5))
    incoming = await ptb_bot.get_updates(timeout=1)
    assert [u.update_id for u in incoming] == [update["update_id"]]
    message = incoming[0].message
    assert [p.width for p in message.photo] == [90, 320]  # Telegram's smaller sizes, then the original
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Why?", callback_data="why:1")]])
    sent = await ptb_bot.send_message(5, "Kurti (64%)", reply_parameters=ReplyParameters(message.message_id),
                                      reply_markup=keyboard)
    assert sent.reply_to_message.message_id == message.message_id
    assert sent.message_id > message.message_id
    call = await fake_api.wait_for_answer(update["message"])
    assert call.text == "Kurti (64%)"
    # Confirmed updates are gone; a long poll with nothing queued waits and returns nothing.
    assert await ptb_bot.get_updates(offset=update["update_id"] + 1, timeout=0) == ()


async def test_photo_upload_edit_and_download(fake_api, ptb_bot, photo_jpeg):
    fake_api.chat(5)
    picture = image_bytes(Image.new("RGB", (64, 48), "red"), "PNG")
    sent = await ptb_bot.send_photo(5, picture, caption="red = important")
    call = await fake_api.wait_for_call("sendPhoto")
    assert call.photo_bytes == picture and call.text == "red = important"
    assert sent.photo[-1].width == 64
    finer = image_bytes(Image.new("RGB", (64, 48), "blue"), "PNG")
    await ptb_bot.edit_message_media(InputMediaPhoto(finer, caption="finer"), chat_id=5, message_id=sent.message_id)
    edit = await fake_api.wait_for_call("editMessageMedia")
    assert edit.photo_bytes == finer and edit.text == "finer"
    file_id, _ = fake_api.add_file(photo_jpeg)
    downloaded = await (await ptb_bot.get_file(file_id)).download_as_bytearray()
    assert bytes(downloaded) == photo_jpeg


async def test_telegram_errors(fake_api, ptb_bot):
    fake_api.chat(5)
    with pytest.raises(telegram.error.BadRequest, match="[Mm]essage to be replied not found"):
        await ptb_bot.send_message(5, "hi", reply_parameters=ReplyParameters(999))
    with pytest.raises(telegram.error.BadRequest, match="Button_data_invalid|BUTTON_DATA_INVALID"):
        await ptb_bot.send_message(5, "hi", reply_markup=InlineKeyboardMarkup(
            [[InlineKeyboardButton("x", callback_data="x" * 65)]]))
    with pytest.raises(telegram.error.BadRequest, match="parse entities"):
        await ptb_bot.send_message(5, "Saree (93%).", parse_mode="MarkdownV2")
    with pytest.raises(telegram.error.BadRequest, match="[Cc]hat not found"):
        await ptb_bot.send_message(6, "nobody there")
    big_id, _ = fake_api.add_file(b"x", reported_size=DOWNLOAD_LIMIT + 1)
    with pytest.raises(telegram.error.BadRequest, match="too big"):
        await ptb_bot.get_file(big_id)


async def test_fault_injection(fake_api, ptb_bot):
    fake_api.chat(5)
    fake_api.fail_next("sendMessage", 429, retry_after=3)
    with pytest.raises(telegram.error.RetryAfter) as caught:
        await ptb_bot.send_message(5, "hi")
    assert "Retry in 3 seconds" in str(caught.value)
    fake_api.drop_next("getUpdates")
    with pytest.raises(telegram.error.NetworkError):
        await ptb_bot.get_updates(timeout=0)
    assert fake_api.find_calls("getUpdates", ok=False)[0].dropped
    await ptb_bot.send_message(5, "after the faults")  # both faults were one-shot


async def test_long_poll_wakes_on_push(fake_api, ptb_bot):
    poll = asyncio.create_task(ptb_bot.get_updates(timeout=5))
    await fake_api.wait_for_call("getMe")  # the poll is on its way; push while it waits
    update = await fake_api.push(fake_api.text_update("/help@ProductIdBot", chat_id=-100, chat_type="group"))
    async with asyncio.timeout(3):
        got = await poll
    assert got[0].message.text == "/help@ProductIdBot"
    assert got[0].message.entities[0].type == "bot_command"
    assert update["message"]["chat"]["type"] == "group"


def test_decompression_bomb_is_small_and_huge():
    bomb = decompression_bomb()
    assert len(bomb) < 200_000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(bomb))
    decoded = zlib.decompressobj()  # the pixel data is complete: 30000 rows of 1 + 3750 bytes
    data = bomb[41:-16]  # IDAT's payload, between its type and its CRC (then IEND)
    total = sum(len(decoded.decompress(data[i : i + 65536])) for i in range(0, len(data), 65536))
    assert total == 30000 * 3751


async def test_a_long_poll_is_seen_when_it_arrives_and_unconfirmed_updates_come_again(fake_api, ptb_bot, photo_jpeg):
    polling = asyncio.ensure_future(ptb_bot.get_updates(timeout=5))
    arrived = await fake_api.wait_for_poll(0, timeout=3)  # long before the poll returns
    assert not polling.done() and not fake_api.find_calls("getUpdates", ok=None)
    first = await fake_api.push(fake_api.photo_update(photo_jpeg, user_id=5))
    assert [u.update_id for u in await polling] == [first["update_id"]]
    assert fake_api.find_calls("getUpdates")[0].at == pytest.approx(arrived, abs=0.5)
    # Like Telegram: an update is delivered again until a getUpdates offset past it confirms it.
    second = await fake_api.push(fake_api.photo_update(photo_jpeg, user_id=6))
    again = await ptb_bot.get_updates(timeout=0)
    assert [u.update_id for u in again] == [first["update_id"], second["update_id"]]
    assert [u.update_id for u in await ptb_bot.get_updates(offset=first["update_id"] + 1, timeout=0)] == [second["update_id"]]
    assert len(fake_api.polls) == 3
