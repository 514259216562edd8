"""/why and the "Why?" button: a progressive occlusion heat map.

The coarse map (WHY_COARSE_PATCH/STRIDE) is sent with sendPhoto as soon as it is ready; the fine map
(WHY_PATCH/STRIDE) then replaces it in the same message with editMessageMedia and a final caption.
Maps are cached by (checkpoint, image hash, patch, stride), so asking again answers at once. The id of
the sent message is kept in the journal, so a /why resumed after a restart edits that message instead of
sending a second one.
"""
from __future__ import annotations

import asyncio
import contextlib
import json

from telegram import InputMediaPhoto, Message, ReplyParameters, Update
from telegram.constants import ChatAction
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from model import ImageError

from . import messages
from .inference import Busy, Stopping
from .photos import fetch_bytes, photo_in
from .request_handling import Outcome, answer_query, request
from .services import services
from .store import StoredPhoto

CHAT_ACTION_EVERY_S = 4.5  # Telegram shows a chat action for about 5 s


def button_key_in(message: Message | None) -> str | None:
    """The photo key of a "Why?" button under one of the bot's answers (so /why can reply to the answer)."""
    markup = message.reply_markup if message is not None else None
    for row in markup.inline_keyboard if markup else ():
        for button in row:
            if button.callback_data and str(button.callback_data).startswith("why:"):
                return str(button.callback_data)[4:]
    return None


@request("why", counted=True)
async def why_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Outcome:
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
        return Outcome.of("no_photo")
    return await explain_and_send(update, context, photo_ref, reply_to=message.message_id)


@request("why_button", counted=True)
async def why_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Outcome:
    """The "Why?" button (callback_data ``why:<key>``): the same heat map, for the photo behind the button."""
    svc = services(context)
    query = update.callback_query
    photo_ref = await asyncio.to_thread(svc.store.by_key, (query.data or "")[4:])
    if photo_ref is None:
        await answer_query(query, messages.WHY_EXPIRED)
        return Outcome.of("expired")
    await answer_query(query)  # stop the button's spinner at once; the map follows as a new message
    reply_to = query.message.message_id if isinstance(query.message, Message) else None
    return await explain_and_send(update, context, photo_ref, reply_to=reply_to)


async def explain_and_send(update: Update, context: ContextTypes.DEFAULT_TYPE, photo_ref: StoredPhoto,
                           reply_to: int | None) -> Outcome:
    svc = services(context)
    chat_id = update.effective_chat.id
    data = await fetch_bytes(context.bot, update.effective_message, chat_id, photo_ref, None,
                             svc.settings.max_file_bytes)
    uploading = asyncio.create_task(_keep_uploading(context, chat_id))
    reply = ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
    sent_id = await asyncio.to_thread(svc.journal.progress, update.update_id)  # a resumed /why's message
    sent_levels = []
    try:
        async for explanation in svc.inference.explain(chat_id, data, svc.why_levels, svc.model_for(chat_id)):
            caption = messages.why_caption(explanation.label, explanation.confidence, explanation.patch,
                                           explanation.final)
            if sent_id is None:
                sent = await context.bot.send_photo(chat_id, explanation.png, caption=caption, reply_parameters=reply)
                sent_id = sent.message_id
                if not explanation.final:
                    await asyncio.to_thread(svc.journal.set_progress, update.update_id, sent_id)
            else:
                await context.bot.edit_message_media(InputMediaPhoto(explanation.png, caption=caption),
                                                     chat_id=chat_id, message_id=sent_id)
            sent_levels.append(explanation.patch)
            if explanation.final:
                svc.stats.heatmaps += 1
                svc.stats.heatmaps_cached += explanation.cached
                return Outcome.of("sent", answered=True, patches=",".join(map(str, sent_levels)),
                                  cached=explanation.cached)
    except ImageError as error:
        await context.bot.send_message(chat_id, messages.bad_image(str(error)), reply_parameters=reply)
        return Outcome.of("bad_image", reason=json.dumps(str(error)))
    except Stopping:
        raise
    except Busy as error:
        await context.bot.send_message(chat_id, messages.BUSY, reply_parameters=reply)
        return Outcome.of("busy", reason=json.dumps(str(error)))
    finally:
        uploading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await uploading
    raise RuntimeError("the heat maps ended without a final one")


async def _keep_uploading(context: ContextTypes.DEFAULT_TYPE, chat_id: int) -> None:
    """Show "uploading photo…" until cancelled (a chat action fades after ~5 s)."""
    while True:
        with contextlib.suppress(TelegramError):
            await context.bot.send_chat_action(chat_id, ChatAction.UPLOAD_PHOTO)
        await asyncio.sleep(CHAT_ACTION_EVERY_S)
