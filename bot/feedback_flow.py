"""The buttons under an answer: "Why?", and (when FEEDBACK_DIR is set) "✓ Right" / "✗ Wrong".

callback_data (always under Telegram's 64 bytes; ``<key>`` is 12 hex characters, see ``bot.store``):

    why:<key>        heat map (``bot.why``)
    fb:<key>:ok      the answer was right
    fb:<key>:no      the answer was wrong: show the classes
    fb:<key>:<i>     the user's class, by index into the checkpoint's class names
    fb:<key>:x       none of these
"""
from __future__ import annotations

import asyncio
import time

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.error import BadRequest
from telegram.ext import ContextTypes

from . import messages
from .feedback import NONE_OF_THESE
from .services import services
from .stats import log_request
from .telegram_io import download


def why_row(key: str) -> list[InlineKeyboardButton]:
    return [InlineKeyboardButton(messages.WHY_BUTTON, callback_data=f"why:{key}")]


def answer_keyboard(key: str, feedback_on: bool) -> InlineKeyboardMarkup:
    rows = [why_row(key)]
    if feedback_on:
        rows.append([InlineKeyboardButton(messages.RIGHT_BUTTON, callback_data=f"fb:{key}:ok"),
                     InlineKeyboardButton(messages.WRONG_BUTTON, callback_data=f"fb:{key}:no")])
    return InlineKeyboardMarkup(rows)


def classes_keyboard(key: str, class_names: list[str]) -> InlineKeyboardMarkup:
    buttons = [InlineKeyboardButton(messages.display_name(name), callback_data=f"fb:{key}:{index}")
               for index, name in enumerate(class_names)]
    rows = [buttons[i:i + 2] for i in range(0, len(buttons), 2)]
    rows.append([InlineKeyboardButton(messages.NONE_OF_THESE_BUTTON, callback_data=f"fb:{key}:x")])
    rows.append(why_row(key))
    return InlineKeyboardMarkup(rows)


def parse_feedback(data: str, class_names: list[str]) -> tuple[str, str | None] | None:
    """``fb:<key>:<choice>`` -> (key, choice) where choice is "ok", "no", a class name or None (none of
    these); ``None`` when malformed or out of range."""
    parts = data.split(":")
    if len(parts) != 3 or parts[0] != "fb" or not parts[1]:
        return None
    key, choice = parts[1], parts[2]
    if choice in ("ok", "no"):
        return key, choice
    if choice == "x":
        return key, None
    if choice.isdigit() and int(choice) < len(class_names):
        return key, class_names[int(choice)]
    return None


async def feedback_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Right / Wrong / a class: acknowledge, store the judgement, replace the buttons by a thank-you."""
    svc = services(context)
    query = update.callback_query
    chat_id = update.effective_chat.id if update.effective_chat else None
    started = time.monotonic()
    parsed = parse_feedback(query.data or "", svc.classifier.class_names)
    if svc.feedback is None or parsed is None:
        await query.answer(messages.FEEDBACK_OFF if svc.feedback is None else messages.WHY_EXPIRED)
        return
    key, choice = parsed
    message = query.message if isinstance(query.message, Message) else None
    if choice == "no":
        await query.answer(messages.WHICH_ONE)
        if message is not None:
            await message.edit_reply_markup(classes_keyboard(key, svc.classifier.class_names))
        return
    photo, answer = await asyncio.gather(asyncio.to_thread(svc.store.by_key, key),
                                         asyncio.to_thread(svc.store.answer, key))
    if photo is None or answer is None:
        await query.answer(messages.WHY_EXPIRED)
        log_request(chat_id, "feedback", started, "expired")
        return
    label = answer.label if choice == "ok" else (choice or NONE_OF_THESE)
    stored = await asyncio.to_thread(svc.feedback.photo_path, photo.file_unique_id)
    if stored is None:  # the first judgement of this photo: fetch it once
        data = await download(context.bot, photo.file_id)
        stored = await asyncio.to_thread(svc.feedback.save_photo, photo.file_unique_id, data)
    await asyncio.to_thread(svc.feedback.record, chat_id=chat_id, file_unique_id=photo.file_unique_id, photo=stored,
                            predicted=answer.label, confidence=answer.confidence, label=label,
                            checkpoint_id=answer.checkpoint_id)
    if label == answer.label:
        svc.stats.feedback_right += 1
    else:
        svc.stats.feedback_wrong += 1
    thanks = messages.feedback_thanks(None if label == NONE_OF_THESE else label)
    await query.answer(thanks)
    if message is not None and message.text:
        try:
            await message.edit_text(f"{message.text}\n\n{thanks}", reply_markup=InlineKeyboardMarkup([why_row(key)]))
        except BadRequest:  # pressed twice quickly: the text is already there
            pass
    log_request(chat_id, "feedback", started, "stored", predicted=answer.label, label=label)

