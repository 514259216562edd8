"""/why and the "Why?" button: a progressive occlusion heat map.

The coarse map (WHY_COARSE_PATCH/STRIDE) is sent with sendPhoto as soon as it is ready; the fine map
(WHY_PATCH/STRIDE) then replaces it in the same message with editMessageMedia and a final caption.
Maps are cached by (checkpoint, image hash, patch, stride), so asking again answers at once.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time

from telegram import InputMediaPhoto, Message, ReplyParameters, Update
from telegram.constants import ChatAction
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from model import ImageError

from . import messages
from .handlers import fetch_bytes
from .services import services
from .stats import log_request
from .store import StoredPhoto
from .telegram_io import choose_photo_size
from .worker import Busy

CHAT_ACTION_EVERY_S = 4.5  # Telegram shows a chat action for about 5 s


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


def button_key_in(message: Message | None) -> str | None:
    """The photo key of a "Why?" button under one of the bot's answers (so /why can reply to the answer)."""
    markup = message.reply_markup if message is not None else None
    for row in markup.inline_keyboard if markup else ():
        for button in row:
            if button.callback_data and str(button.callback_data).startswith("why:"):
                return str(button.callback_data)[4:]
    return None


async def why_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/why: explain the photo it replies to (or the bot's answer to one), else the chat's latest photo."""
    svc = services(context)
    message = update.effective_message
    replied = message.reply_to_message
    photo_ref = photo_in(replied)
    if photo_ref is None and (key := button_key_in(replied)) is not None:
        photo_ref = await asyncio.to_thread(svc.store.by_key, key)
    if photo_ref is None:
        photo_ref = await asyncio.to_thread(svc.store.last_photo, update.effective_chat.id)
    if photo_ref is None:
        await message.reply_text(messages.WHY_NO_PHOTO)
        log_request(update.effective_chat.id, "why", time.monotonic(), "no_photo")
        return
    await explain_and_send(update, context, photo_ref, reply_to=message.message_id)


async def why_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The "Why?" button (callback_data ``why:<key>``): the same heat map, for the photo behind the button."""
    svc = services(context)
    query = update.callback_query
    photo_ref = await asyncio.to_thread(svc.store.by_key, (query.data or "")[4:])
    if photo_ref is None:
        await query.answer(messages.WHY_EXPIRED)
        log_request(update.effective_chat.id, "why_button", time.monotonic(), "expired")
        return
    await query.answer()  # stop the button's spinner at once; the map follows as a new message
    reply_to = query.message.message_id if isinstance(query.message, Message) else None
    await explain_and_send(update, context, photo_ref, reply_to=reply_to, kind="why_button")


async def explain_and_send(update: Update, context: ContextTypes.DEFAULT_TYPE, photo_ref: StoredPhoto,
                           reply_to: int | None, kind: str = "why") -> None:
    svc = services(context)
    chat_id = update.effective_chat.id
    started = time.monotonic()
    svc.stats.requests += 1
    data = await fetch_bytes(update, context, svc, photo_ref, None, kind, started)
    if data is None:
        return
    uploading = asyncio.create_task(_keep_uploading(context, chat_id))
    reply = ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
    sent: Message | None = None
    try:
        async for explanation in svc.inference.explain(chat_id, data, svc.why_levels):
            caption = messages.why_caption(explanation.label, explanation.confidence, explanation.patch,
                                           explanation.final)
            if sent is None:
                sent = await context.bot.send_photo(chat_id, explanation.png, caption=caption, reply_parameters=reply)
                log_request(chat_id, kind, started, "coarse_sent" if not explanation.final else "sent",
                            patch=explanation.patch, cached=explanation.cached)
            else:
                edited = await sent.edit_media(InputMediaPhoto(explanation.png, caption=caption))
                sent = edited if isinstance(edited, Message) else sent
                log_request(chat_id, kind, started, "fine_sent", patch=explanation.patch, cached=explanation.cached)
            if explanation.final:
                svc.stats.heatmaps += 1
                svc.stats.heatmaps_cached += explanation.cached
                svc.stats.answered(time.monotonic() - started)
    except ImageError as error:
        svc.stats.bad_input += 1
        await context.bot.send_message(chat_id, messages.bad_image(str(error)), reply_parameters=reply)
        log_request(chat_id, kind, started, "bad_image", reason=json.dumps(str(error)))
    except Busy as error:
        svc.stats.busy += 1
        await context.bot.send_message(chat_id, messages.BUSY, reply_parameters=reply)
        log_request(chat_id, kind, started, "busy", reason=json.dumps(str(error)))
    finally:
        uploading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await uploading


async def _keep_uploading(context: ContextTypes.DEFAULT_TYPE, chat_id: int) -> None:
    """Show "uploading photo…" until cancelled (a chat action fades after ~5 s)."""
    while True:
        with contextlib.suppress(TelegramError):
            await context.bot.send_chat_action(chat_id, ChatAction.UPLOAD_PHOTO)
        await asyncio.sleep(CHAT_ACTION_EVERY_S)
