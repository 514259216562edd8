"""Which photo a message means, and fetching its bytes within Telegram's limits (telling the user when not)."""
from __future__ import annotations

import json

from telegram import Message
from telegram.error import BadRequest, TelegramError

from bot import messages
from bot.handlers.request import Outcome, RequestEnded
from bot.handlers.telegram_io import FileTooLarge, choose_photo_size, download
from bot.i18n import ENGLISH, Language
from bot.state.store import StoredPhoto


def photo_in(message: Message | None) -> StoredPhoto | None:
    """The photo (or file) a message carries, if any."""
    if message is None:
        return None
    if message.photo:
        size = choose_photo_size(message.photo)
        return StoredPhoto(size.file_id, size.file_unique_id, message.message_id)
    if message.document is not None:
        return StoredPhoto(message.document.file_id, message.document.file_unique_id, message.message_id)
    return None


async def fetch_bytes(bot, message: Message | None, chat_id: int, photo_ref: StoredPhoto, file_size: int | None,
                      max_file_bytes: int, lang: Language = ENGLISH) -> bytes:
    """The file's bytes; raises :class:`RequestEnded` after telling the user why not (too big, download failed)."""

    async def tell(text: str) -> None:
        if message is not None:
            await message.reply_text(text, do_quote=True)
        else:
            await bot.send_message(chat_id, text)

    if file_size is not None and file_size > max_file_bytes:
        await tell(messages.too_large(lang))
        raise RequestEnded(Outcome.of("too_large", bytes=file_size))
    try:
        return await download(bot, photo_ref.file_id, max_file_bytes)  # getFile's size, when none was given
    except FileTooLarge as error:
        await tell(messages.too_large(lang))
        raise RequestEnded(Outcome.of("too_large", bytes=error.file_size)) from None
    except BadRequest as error:
        # Telegram refuses getFile past 20 MB ("File is too big") even when file_size was not given.
        too_big = "too big" in str(error).lower()
        await tell(messages.too_large(lang) if too_big else lang.gettext(messages.DOWNLOAD_FAILED))
        raise RequestEnded(Outcome.of("too_large" if too_big else "download_failed",
                                      error=json.dumps(str(error)))) from None
    except TelegramError as error:
        await tell(lang.gettext(messages.DOWNLOAD_FAILED))
        raise RequestEnded(Outcome.of("download_failed", error=json.dumps(str(error)))) from None
