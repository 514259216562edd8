"""The buttons under an answer — "Why?", and "✓ Right" / "✗ Wrong" when FEEDBACK_DIR is set — the
feedback callbacks, /forget, and the feedback lines of /stats.

The flow: "✓ Right" keeps the answer as the label; "✗ Wrong" swaps the feedback row for the known classes
and "None of these"; a choice is stored (:mod:`bot.feedback_store`, on disk as :mod:`model.inbox`),
acknowledged with ``answerCallbackQuery``, and the buttons become "Thanks — noted as saree". The "Why?" row
stays as it is.

callback_data (under Telegram's 64 bytes; ``<key>`` is the photo's 12-hex key in :mod:`bot.store`, which
also keeps the answer given for it, so buttons keep working after a restart)::

    why:<key>        heat map (bot.why)
    fb:<key>:ok      the answer was right
    fb:<key>:no      the answer was wrong: show the classes
    fb:<key>:<i>     the user's class, by index into the checkpoint's class names
    fb:<key>:x       none of these
    fb:<key>:d       the "Thanks" button (does nothing)
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.error import BadRequest, TelegramError
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    filters,
)

from model.inbox import NONE_OF_THESE

from . import messages
from .config import ConfigError
from .feedback_store import FeedbackStore
from .photos import photo_in
from .request_handling import Outcome, answer_query, request
from .services import services
from .stats import is_admin
from .store import StoredPhoto
from .telegram_io import download

log = logging.getLogger(__name__)

PREFIX = "fb"
RIGHT, WRONG, NONE_CHOICE, DONE = "ok", "no", "x", "d"
CLASSES_PER_ROW = 3
MAX_CLASS_BUTTONS = 90  # Telegram allows 100 buttons per keyboard; the rest is for "None of these" and "Why?"


@dataclass(frozen=True)
class FeedbackData:
    """What a feedback button carries: the photo key and the choice (see the module docstring)."""

    key: str
    choice: str

    def encode(self) -> str:
        data = f"{PREFIX}:{self.key}:{self.choice}"
        assert len(data.encode()) <= 64, data  # Telegram's limit; keys are 12 hex characters
        return data

    @classmethod
    def decode(cls, data: str | None) -> FeedbackData | None:
        """``None`` for anything that is not a well-formed feedback button (old or forged data)."""
        parts = (data or "").split(":")
        if len(parts) != 3 or parts[0] != PREFIX or not parts[1].isalnum():
            return None
        if parts[2] not in (RIGHT, WRONG, NONE_CHOICE, DONE) and not parts[2].isdigit():
            return None
        return cls(parts[1], parts[2])


# ---- keyboards -----------------------------------------------------------------------------------------
def why_row(key: str) -> list[InlineKeyboardButton]:
    return [InlineKeyboardButton(messages.WHY_BUTTON, callback_data=f"why:{key}")]


def answer_keyboard(key: str, feedback_on: bool) -> InlineKeyboardMarkup:
    """"Why?", plus "✓ Right" / "✗ Wrong" when feedback is on (asking users to judge answers nobody keeps
    would waste their time, so the row is hidden when it is off)."""
    rows = [why_row(key)]
    if feedback_on:
        rows.append([InlineKeyboardButton(messages.RIGHT_BUTTON, callback_data=FeedbackData(key, RIGHT).encode()),
                     InlineKeyboardButton(messages.WRONG_BUTTON, callback_data=FeedbackData(key, WRONG).encode())])
    return InlineKeyboardMarkup(rows)


def choice_rows(key: str, class_names: list[str]) -> list[list[InlineKeyboardButton]]:
    """Every known class (the predicted one too: "Wrong" may have been a slip), then "None of these"."""
    buttons = [InlineKeyboardButton(messages.display_name(name), callback_data=FeedbackData(key, str(index)).encode())
               for index, name in enumerate(class_names)][:MAX_CLASS_BUTTONS]
    rows = [buttons[i : i + CLASSES_PER_ROW] for i in range(0, len(buttons), CLASSES_PER_ROW)]
    rows.append([InlineKeyboardButton(messages.NONE_OF_THESE_BUTTON, callback_data=FeedbackData(key, NONE_CHOICE).encode())])
    return rows


def thanks_rows(key: str, label: str | None) -> list[list[InlineKeyboardButton]]:
    return [[InlineKeyboardButton(messages.feedback_thanks(label), callback_data=FeedbackData(key, DONE).encode())]]


def is_feedback_button(button: InlineKeyboardButton) -> bool:
    return str(button.callback_data or "").startswith(f"{PREFIX}:")


def with_feedback_rows(markup: InlineKeyboardMarkup | None, rows: list[list[InlineKeyboardButton]]) -> InlineKeyboardMarkup:
    """``markup`` with its feedback rows replaced by ``rows``; rows of other buttons ("Why?") are kept."""
    kept = [list(row) for row in (markup.inline_keyboard if markup else ()) if not any(map(is_feedback_button, row))]
    return InlineKeyboardMarkup(kept + rows)


# ---- the button callback ---------------------------------------------------------------------------------
async def _photo_behind(message: Message | None, key: str, context: ContextTypes.DEFAULT_TYPE) -> StoredPhoto | None:
    """The photo the answer is about: the message it replies to (the same size the bot classified), or the
    bot's photo store by the button's key (when the user deleted their message)."""
    replied = message.reply_to_message if isinstance(message, Message) else None
    photo = photo_in(replied)
    if photo is None:
        photo = await asyncio.to_thread(services(context).store.by_key, key)
    return photo


async def _edit_buttons(message: Message | None, rows: list[list[InlineKeyboardButton]]) -> None:
    """Swap the feedback row; a message that can no longer be edited keeps its old buttons (logged)."""
    if not isinstance(message, Message):  # too old for Telegram to send it: nothing to edit
        return
    try:
        await message.edit_reply_markup(with_feedback_rows(message.reply_markup, rows))
    except BadRequest as error:
        if "not modified" not in str(error).lower():  # "not modified": a double press, the buttons already say so
            log.warning("feedback: could not edit the buttons: %s", error)


def _chosen_label(choice: str, predicted: str, class_names: list[str]) -> str | None:
    """The label a press means; ``None`` when a class index does not fit the classes."""
    if choice == RIGHT:
        return predicted
    if choice == NONE_CHOICE:
        return NONE_OF_THESE
    index = int(choice)
    return class_names[index] if index < len(class_names) else None


@request("feedback")
async def feedback_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Outcome:
    """Any ``fb:`` button. "Wrong" shows the classes; "Right" or a class stores the judgement, answers the
    query and turns the buttons into "Thanks — noted as …". Every press is answered, even a stale one."""
    svc = services(context)
    query = update.callback_query
    chat_id = update.effective_chat.id if update.effective_chat else None
    data = FeedbackData.decode(query.data)
    if data is None or data.choice == DONE:
        await answer_query(query)
        return Outcome.of("ignored", data=json.dumps(query.data))
    if svc.feedback is None:
        await answer_query(query, messages.FEEDBACK_OFF)
        await _edit_buttons(query.message, [])
        return Outcome.of("feedback_off")
    chat_model = svc.classifier_for(chat_id)
    class_names = chat_model.class_names
    if data.choice == WRONG:
        await answer_query(query, messages.FEEDBACK_WHICH)
        await _edit_buttons(query.message, choice_rows(data.key, class_names))
        return Outcome.of("asked_class")
    answer, photo = await asyncio.gather(asyncio.to_thread(svc.store.answer, data.key),
                                         _photo_behind(query.message, data.key, context))
    if answer is None or photo is None or chat_id is None:
        await answer_query(query, messages.FEEDBACK_PHOTO_GONE, alert=True)
        return Outcome.of("photo_gone")
    label = _chosen_label(data.choice, answer.label, class_names)
    # A class index means a class of the model serving now; if another checkpoint gave the answer, its
    # classes may differ, so ask for the photo again rather than store a guess.
    if label is None or (data.choice.isdigit() and answer.checkpoint_id != chat_model.checkpoint_id):
        await answer_query(query, messages.FEEDBACK_OUTDATED, alert=True)
        await _edit_buttons(query.message, [])
        return Outcome.of("outdated", data=json.dumps(query.data))
    try:
        record = await svc.feedback.record(
            photo_id=photo.file_unique_id,
            fetch_photo=lambda: download(context.bot, photo.file_id),
            predicted=answer.label,
            confidence=answer.confidence,
            label=label,
            checkpoint_id=answer.checkpoint_id,
            chat_id=chat_id,
        )
    except (TelegramError, OSError, ValueError) as error:
        log.warning("feedback not stored for chat %s: %s", chat_id, error)
        await answer_query(query, messages.FEEDBACK_SAVE_FAILED, alert=True)
        return Outcome.of("save_failed", error=json.dumps(str(error)))
    shown = None if label == NONE_OF_THESE else label
    await answer_query(query, messages.feedback_thanks(shown))
    await _edit_buttons(query.message, thanks_rows(data.key, shown))
    return Outcome.of("stored", predicted=record.predicted, label=record.label)


# ---- /forget and /stats --------------------------------------------------------------------------------
@request("forget")
async def forget_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Outcome:
    """/forget: delete this chat's judgements and the photos nobody else judged."""
    store = services(context).feedback
    chat_id = update.effective_chat.id
    if store is None:
        await update.effective_message.reply_text(messages.FORGET_OFF)
        return Outcome.of("feedback_off")
    records, photos = await store.forget(chat_id)
    await update.effective_message.reply_text(messages.forget_done(records, photos))
    return Outcome.of("deleted", records=records, photos=photos)


async def stats_lines(context: ContextTypes.DEFAULT_TYPE, user_id: int | None) -> str:
    """Feedback counts and live accuracy for /stats, read from the inbox (so they survive restarts);
    operators only, empty when feedback is off."""
    svc = services(context)
    if svc.feedback is None or not is_admin(user_id, svc.settings.admin_user_ids):
        return ""
    live, photos, checkpoints = await svc.feedback.live_accuracy()
    return "\n" + messages.feedback_stats(live.judged, live.right, live.none_of_these, photos,
                                          live.per_class(svc.classifier.class_names), checkpoints,
                                          svc.classifier.checkpoint_id, svc.canary.checkpoint_id if svc.canary else "")


async def open_store(settings) -> FeedbackStore | None:
    """The store for ``settings.feedback_dir``, or ``None`` (feedback off) when it is not set.
    A folder that cannot be used stops the bot at start-up with one line (``ConfigError``)."""
    if settings.feedback_dir is None:
        return None
    try:
        store = await FeedbackStore.open(settings.feedback_dir, settings.feedback_salt)
    except OSError as error:
        raise ConfigError(f"FEEDBACK_DIR={settings.feedback_dir} cannot be used ({error.strerror or error}); "
                          "point it at a writable folder or unset it") from None
    log.info("feedback on: storing judged photos in %s", settings.feedback_dir)
    return store


def add_handlers(application: Application) -> None:
    """Register before the catch-all "unknown command" and stale-button handlers, so these reach us."""
    application.add_handler(CallbackQueryHandler(feedback_button, pattern=rf"^{PREFIX}:"))
    application.add_handler(CommandHandler("forget", forget_command, filters=filters.UpdateType.MESSAGE))
