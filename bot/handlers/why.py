"""/why and the "Why?" button: a progressive occlusion heat map.

The coarse map (WHY_COARSE_PATCH/STRIDE) is sent with sendPhoto as soon as it is ready; the fine map
(WHY_PATCH/STRIDE) then replaces it in the same message with editMessageMedia and a final caption.
Maps are cached by (checkpoint, image hash, patch, stride), so asking again answers at once. The id of
the sent message is kept in the journal, so a /why resumed after a restart edits that message instead of
sending a second one.

Under the final map, "Why not …?" buttons (:class:`bot.handlers.buttons.WhyNotData`) offer the other likely
classes (top 3). A press sends the fine map for that class as a new photo, captioned with the class: the
cached result keeps every class's grid (model.occlusion), so it costs no new inference while it is cached.
Captions and the picture's texts are in the user's language.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputMediaPhoto, Message, ReplyParameters, Update
from telegram.constants import ChatAction
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from bot import messages
from bot.handlers.buttons import WhyData, WhyNotData
from bot.handlers.downloads import fetch_bytes, photo_in
from bot.handlers.request import Outcome, answer_query, request
from bot.i18n import Language
from bot.inference.contract import Busy, Explanation, Stopping
from bot.services import language_of, services
from bot.state.store import StoredPhoto
from model import ImageError

CHAT_ACTION_EVERY_S = 4.5  # Telegram shows a chat action for about 5 s


def why_not_keyboard(key: str, explanation: Explanation, lang: Language) -> InlineKeyboardMarkup | None:
    """One "Why not …?" button per other likely class of a final map; None when there is none."""
    buttons = [InlineKeyboardButton(messages.why_not_button(label, lang), callback_data=WhyNotData(key, index).encode())
               for index, label in explanation.others]
    return InlineKeyboardMarkup([[button] for button in buttons]) if buttons else None


def caption_of(explanation: Explanation, why_not: bool, lang: Language) -> str:
    if why_not:
        return messages.why_not_caption(explanation.label, explanation.confidence, explanation.predicted,
                                        explanation.patch, lang)
    return messages.why_caption(explanation.label, explanation.confidence, explanation.patch, explanation.final, lang)


def button_key_in(message: Message | None, bot_id: int) -> str | None:
    """The photo key of a "Why?" button under one of this bot's own answers (so /why can reply to the answer);
    another bot's message, or a user's, is never read for keys."""
    if message is None or message.from_user is None or message.from_user.id != bot_id:
        return None
    for row in message.reply_markup.inline_keyboard if message.reply_markup else ():
        for button in row:
            if (data := WhyData.decode(button.callback_data)) is not None:
                return data.key
    return None


def _pressed_in(update: Update) -> int | None:
    """The chat of the message under the pressed button: the only chat whose keys the press may use."""
    message = update.callback_query.message
    return message.chat.id if message is not None else None


@request("why", counted=True)
async def why_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Outcome:
    """/why: explain the photo it replies to (or the bot's answer to one), else the chat's latest photo."""
    svc = services(context)
    message = update.effective_message
    replied = message.reply_to_message
    photo_ref = photo_in(replied)
    if photo_ref is None and (key := button_key_in(replied, context.bot.id)) is not None:
        photo_ref = await asyncio.to_thread(svc.store.by_key, update.effective_chat.id, key)
    if photo_ref is None:
        photo_ref = await asyncio.to_thread(svc.store.last_photo, update.effective_chat.id)
    if photo_ref is None:
        await message.reply_text(language_of(update, context).gettext(messages.WHY_NO_PHOTO))
        return Outcome.of("no_photo")
    return await explain_and_send(update, context, photo_ref, reply_to=message.message_id)


@request("why_button", counted=True)
async def why_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Outcome:
    """The "Why?" button (:class:`WhyData`): the same heat map, for the photo behind the button, if the key is
    this chat's (a key from another chat, or forged, is answered as an expired button)."""
    svc = services(context)
    query = update.callback_query
    data, chat_id = WhyData.decode(query.data), _pressed_in(update)
    photo_ref = None
    if data is not None and chat_id is not None:
        photo_ref = await asyncio.to_thread(svc.store.by_key, chat_id, data.key)
    if photo_ref is None:
        await answer_query(query, language_of(update, context).gettext(messages.WHY_EXPIRED))
        return Outcome.of("expired")
    await answer_query(query)  # stop the button's spinner at once; the map follows as a new message
    reply_to = query.message.message_id if isinstance(query.message, Message) else None
    return await explain_and_send(update, context, photo_ref, reply_to=reply_to)


@request("why_not_button", counted=True)
async def why_not_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Outcome:
    """A "Why not …?" button (:class:`WhyNotData`): the fine map for that class, from the cached grid."""
    svc = services(context)
    query = update.callback_query
    data, chat_id = WhyNotData.decode(query.data), _pressed_in(update)
    photo_ref = None
    # A class the serving model does not have (an older model's button, or edited data) is an expired button.
    if data is not None and chat_id is not None and data.class_index < len(svc.classifier_for(chat_id).class_names):
        photo_ref = await asyncio.to_thread(svc.store.by_key, chat_id, data.key)
    if photo_ref is None:
        await answer_query(query, language_of(update, context).gettext(messages.WHY_EXPIRED))
        return Outcome.of("expired", data=json.dumps(query.data))
    await answer_query(query)
    reply_to = query.message.message_id if isinstance(query.message, Message) else None
    return await explain_and_send(update, context, photo_ref, reply_to=reply_to, target=data.class_index)


async def explain_and_send(update: Update, context: ContextTypes.DEFAULT_TYPE, photo_ref: StoredPhoto,
                           reply_to: int | None, target: int | None = None) -> Outcome:
    """The maps of ``photo_ref`` (for class ``target``, or the predicted one), coarse then fine, in one message."""
    svc = services(context)
    started = time.monotonic()
    lang = language_of(update, context)
    chat_id = update.effective_chat.id
    key = await asyncio.to_thread(svc.store.keep_key, chat_id, photo_ref)  # so the "Why not …?" buttons find the photo
    reply = ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
    try:
        # Admitted before the download, so a full queue refuses without fetching the photo.
        with svc.inference.reserve_explain(chat_id) as reservation:
            data = await fetch_bytes(context.bot, update.effective_message, chat_id, photo_ref, None,
                                     svc.settings.max_file_bytes, lang)
            return await _send_maps(update, context, svc, reservation, data, key, reply, target, lang, started)
    except ImageError as error:
        await context.bot.send_message(chat_id, messages.bad_image(str(error), lang), reply_parameters=reply)
        return Outcome.of("bad_image", reason=json.dumps(str(error)))
    except Stopping:
        raise
    except Busy as error:
        await context.bot.send_message(chat_id, lang.gettext(messages.BUSY), reply_parameters=reply)
        return Outcome.of("busy", reason=json.dumps(str(error)))


async def _send_maps(update: Update, context: ContextTypes.DEFAULT_TYPE, svc, reservation, data: bytes, key: str,
                     reply: ReplyParameters | None, target: int | None, lang: Language, started: float) -> Outcome:
    """Send the first map, then edit each finer one into the same message (the journal keeps its id)."""
    chat_id = update.effective_chat.id
    why_not = target is not None
    uploading = asyncio.create_task(_keep_uploading(context, chat_id))
    sent_id = await asyncio.to_thread(svc.journal.progress, update.update_id)  # a resumed /why's message
    sent_levels = []
    try:
        # A "Why not …?" map is the fine level only: its grid is the one the /why before it cached.
        levels = svc.why_levels[-1:] if why_not else svc.why_levels
        async for explanation in reservation.explain(data, levels, svc.model_for(chat_id), target=target, language=lang):
            caption = caption_of(explanation, why_not, lang)
            markup = why_not_keyboard(key, explanation, lang) if explanation.final else None
            if sent_id is None:
                sent = await context.bot.send_photo(chat_id, explanation.png, caption=caption, reply_parameters=reply,
                                                    reply_markup=markup)
                sent_id = sent.message_id
                if not explanation.final:
                    await asyncio.to_thread(svc.journal.set_progress, update.update_id, sent_id)
            else:
                await context.bot.edit_message_media(InputMediaPhoto(explanation.png, caption=caption),
                                                     chat_id=chat_id, message_id=sent_id, reply_markup=markup)
            sent_levels.append(explanation.patch)
            metrics = svc.stats.metrics
            if len(sent_levels) == 1:
                metrics.why_first_map_seconds.observe(time.monotonic() - started)
            if explanation.final:
                metrics.why_final_map_seconds.observe(time.monotonic() - started)
                metrics.heatmap_sent(explanation.cached)
                return Outcome.of("sent", answered=True, patches=",".join(map(str, sent_levels)),
                                  cached=explanation.cached, target=json.dumps(explanation.label))
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
