""""✓ Right" / "✗ Wrong" under each answer: the buttons, their callbacks, /forget, and the /stats lines.

The flow: "✓ Right" keeps the answer as the label; "✗ Wrong" swaps the feedback buttons for the known
classes and "None of these"; a choice is stored (:mod:`bot.feedback_store`), acknowledged with
``answerCallbackQuery`` and the buttons become "Thanks — noted as saree". Other rows of the answer's
keyboard (the "Why?" button) stay as they are.

Everything a choice needs travels in ``callback_data`` (well under Telegram's 64 bytes), so buttons keep
working after a restart: the photo's key in the bot's photo store, the predicted class's index, the
confidence in permille and the first 8 characters of the checkpoint id (indices only mean something for
the checkpoint that made them).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, replace

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes

from model import Prediction
from model.inbox import NONE_OF_THESE

from . import handlers, messages
from .config import ConfigError
from .feedback_store import FeedbackStore
from .services import services
from .stats import is_admin
from .store import StoredPhoto
from .telegram_io import download

log = logging.getLogger(__name__)

FEEDBACK_KEY = "feedback"  # application.bot_data[FEEDBACK_KEY]: the FeedbackStore, absent when feedback is off
PREFIX = "fb"
CHECKPOINT_CHARS = 8
CLASSES_PER_ROW = 3
MAX_CLASS_BUTTONS = 90  # Telegram allows 100 buttons per keyboard; the rest is for "None of these" and others
NONE_CHOICE = "n"


@dataclass(frozen=True)
class FeedbackData:
    """What a feedback button carries. ``action``: ``r`` right, ``w`` wrong (show classes), ``c`` chosen
    (``choice``: a class index or :data:`NONE_CHOICE`), ``d`` done (the "Thanks" button, does nothing)."""

    action: str
    key: str = ""
    predicted: int = 0
    permille: int = 0
    checkpoint: str = ""
    choice: str = ""

    def encode(self) -> str:
        if self.action == "d":
            return f"{PREFIX}:d"
        parts = [PREFIX, self.action, self.key, str(self.predicted), str(self.permille), self.checkpoint]
        if self.action == "c":
            parts.append(self.choice)
        data = ":".join(parts)
        assert len(data.encode()) <= 64, data  # Telegram's limit; keys are 12 hex characters
        return data

    @classmethod
    def decode(cls, data: str | None) -> "FeedbackData | None":
        """``None`` for anything that is not a well-formed feedback button (old or forged data)."""
        parts = (data or "").split(":")
        if parts[:1] != [PREFIX] or len(parts) < 2:
            return None
        if parts[1] == "d":
            return cls("d")
        expected = 7 if parts[1] == "c" else 6
        if parts[1] not in ("r", "w", "c") or len(parts) != expected:
            return None
        _, action, key, predicted, permille, checkpoint, *choice = parts
        if not (key.isalnum() and predicted.isdigit() and permille.isdigit() and (checkpoint.isalnum() or not checkpoint)):
            return None
        choice_value = choice[0] if choice else ""
        if action == "c" and not (choice_value == NONE_CHOICE or choice_value.isdigit()):
            return None
        return cls(action, key, int(predicted), int(permille), checkpoint, choice_value)


# ---- keyboards -----------------------------------------------------------------------------------------
def is_feedback_button(button: InlineKeyboardButton) -> bool:
    return str(button.callback_data or "").startswith(f"{PREFIX}:")


def with_feedback_rows(markup: InlineKeyboardMarkup | None, rows: list[list[InlineKeyboardButton]]) -> InlineKeyboardMarkup:
    """``markup`` with its feedback rows replaced by ``rows``; rows of other buttons ("Why?") are kept."""
    kept = [list(row) for row in (markup.inline_keyboard if markup else ()) if not any(map(is_feedback_button, row))]
    return InlineKeyboardMarkup(kept + rows)


def answer_rows(key: str, prediction: Prediction, class_names: list[str], checkpoint_id: str) -> list[list[InlineKeyboardButton]]:
    """The "✓ Right" / "✗ Wrong" row under an answer."""
    base = FeedbackData("r", key, class_names.index(prediction.label), round(prediction.confidence * 1000),
                        checkpoint_id[:CHECKPOINT_CHARS])
    return [[InlineKeyboardButton(messages.RIGHT_BUTTON, callback_data=base.encode()),
             InlineKeyboardButton(messages.WRONG_BUTTON, callback_data=replace(base, action="w").encode())]]


def choice_rows(data: FeedbackData, class_names: list[str]) -> list[list[InlineKeyboardButton]]:
    """Every known class (the predicted one too: "Wrong" may have been a slip), then "None of these"."""
    buttons = [InlineKeyboardButton(messages.display_name(name),
                                    callback_data=replace(data, action="c", choice=str(index)).encode())
               for index, name in enumerate(class_names)][:MAX_CLASS_BUTTONS]
    rows = [buttons[i : i + CLASSES_PER_ROW] for i in range(0, len(buttons), CLASSES_PER_ROW)]
    rows.append([InlineKeyboardButton(messages.NONE_OF_THESE_BUTTON,
                                      callback_data=replace(data, action="c", choice=NONE_CHOICE).encode())])
    return rows


def thanks_rows(label: str | None) -> list[list[InlineKeyboardButton]]:
    return [[InlineKeyboardButton(messages.feedback_thanks(label), callback_data=FeedbackData("d").encode())]]


def feedback_store(context: ContextTypes.DEFAULT_TYPE) -> FeedbackStore | None:
    return context.application.bot_data.get(FEEDBACK_KEY)


def is_on(context: ContextTypes.DEFAULT_TYPE) -> bool:
    return feedback_store(context) is not None


def answer_keyboard(markup: InlineKeyboardMarkup, context: ContextTypes.DEFAULT_TYPE, prediction: Prediction,
                    key: str) -> InlineKeyboardMarkup:
    """The answer's keyboard plus the feedback row, or ``markup`` unchanged when feedback is off
    (asking users to judge answers that nobody keeps would waste their time)."""
    if not is_on(context):
        return markup
    classifier = services(context).classifier
    return with_feedback_rows(markup, answer_rows(key, prediction, classifier.class_names, classifier.checkpoint_id))


# ---- the button callback ---------------------------------------------------------------------------------
def _chosen_label(data: FeedbackData, class_names: list[str]) -> str | None:
    """The label the press means; ``None`` if its indices do not fit the classes."""
    if data.predicted >= len(class_names):
        return None
    if data.action == "r":
        return class_names[data.predicted]
    if data.choice == NONE_CHOICE:
        return NONE_OF_THESE
    index = int(data.choice)
    return class_names[index] if index < len(class_names) else None


async def _photo_behind(message: Message | None, key: str, context: ContextTypes.DEFAULT_TYPE) -> StoredPhoto | None:
    """The photo the answer is about: the message it replies to (the same size the bot classified), or the
    bot's photo store by the button's key (when the user deleted their message)."""
    from .why import photo_in  # here, not at the top: bot.why imports bot.handlers, which imports this module

    replied = message.reply_to_message if isinstance(message, Message) else None
    photo = photo_in(replied)
    if photo is None:
        photo = await asyncio.to_thread(services(context).store.by_key, key)
    return photo


async def _answer(query, text: str | None = None, alert: bool = False) -> None:
    """answerCallbackQuery; a query Telegram already dropped (answered too late) is only logged: the
    judgement is stored either way, and the user should not be told that something went wrong."""
    try:
        await query.answer(text, show_alert=alert)
    except BadRequest as error:
        log.warning("feedback: could not answer the button press: %s", error)


async def _edit_buttons(message: Message | None, rows: list[list[InlineKeyboardButton]]) -> None:
    """Swap the feedback row; a message that can no longer be edited keeps its old buttons (logged)."""
    if not isinstance(message, Message):  # too old for Telegram to send it: nothing to edit
        return
    try:
        await message.edit_reply_markup(with_feedback_rows(message.reply_markup, rows))
    except BadRequest as error:
        if "not modified" not in str(error).lower():  # "not modified": a double press, the buttons already say so
            log.warning("feedback: could not edit the buttons: %s", error)


async def feedback_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Any ``fb:`` button. "Wrong" shows the classes; "Right" or a class stores the judgement, answers the
    query and turns the buttons into "Thanks — noted as …". Every press is answered, even a stale one."""
    query = update.callback_query
    started = time.monotonic()
    chat_id = update.effective_chat.id if update.effective_chat else None
    data = FeedbackData.decode(query.data)
    store = feedback_store(context)
    if data is None or data.action == "d":
        await _answer(query)
        return
    if store is None:
        await _answer(query, messages.FEEDBACK_OFF)
        await _edit_buttons(query.message, [])
        return
    classifier = services(context).classifier
    label = _chosen_label(data, classifier.class_names) if data.action != "w" else ""
    stale = label is None or data.predicted >= len(classifier.class_names)
    if stale or not classifier.checkpoint_id.startswith(data.checkpoint):
        await _answer(query, messages.FEEDBACK_OUTDATED, alert=True)
        await _edit_buttons(query.message, [])
        handlers.log_request(chat_id, "feedback", started, "outdated", data=json.dumps(query.data))
        return
    if data.action == "w":
        await _answer(query, messages.FEEDBACK_WHICH)
        await _edit_buttons(query.message, choice_rows(data, classifier.class_names))
        return
    photo = await _photo_behind(query.message, data.key, context)
    if photo is None or chat_id is None:
        await _answer(query, messages.FEEDBACK_PHOTO_GONE, alert=True)
        handlers.log_request(chat_id, "feedback", started, "photo_gone")
        return
    try:
        record = await store.record(
            photo_id=photo.file_unique_id,
            fetch_photo=lambda: download(context.bot, photo.file_id),
            predicted=classifier.class_names[data.predicted],
            confidence=data.permille / 1000,
            label=label,
            checkpoint_id=classifier.checkpoint_id,
            chat_id=chat_id,
        )
    except (TelegramError, OSError, ValueError) as error:
        log.warning("feedback not stored for chat %s: %s", chat_id, error)
        await _answer(query, messages.FEEDBACK_SAVE_FAILED, alert=True)
        handlers.log_request(chat_id, "feedback", started, "save_failed", error=json.dumps(str(error)))
        return
    shown = None if label == NONE_OF_THESE else label
    await _answer(query, messages.feedback_thanks(shown))
    await _edit_buttons(query.message, thanks_rows(shown))
    handlers.log_request(chat_id, "feedback", started, "stored", predicted=record.predicted, label=record.label)


# ---- /forget and /stats --------------------------------------------------------------------------------
async def forget_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/forget: delete this chat's judgements and the photos nobody else judged."""
    store = feedback_store(context)
    chat_id = update.effective_chat.id
    if store is None:
        await update.effective_message.reply_text(messages.FORGET_OFF)
        return
    records, photos = await store.forget(chat_id)
    await update.effective_message.reply_text(messages.forget_done(records, photos))
    handlers.log_request(chat_id, "forget", time.monotonic(), "deleted", records=records, photos=photos)


async def stats_lines(context: ContextTypes.DEFAULT_TYPE, user_id: int | None) -> str:
    """Feedback counts and live accuracy for /stats (operators only; empty when feedback is off)."""
    store = feedback_store(context)
    svc = services(context)
    if store is None or not is_admin(user_id, svc.settings.admin_user_ids):
        return ""
    live, photos = await store.live_accuracy()
    return "\n" + messages.feedback_stats(live.judged, live.right, live.none_of_these, photos,
                                          live.per_class(svc.classifier.class_names))


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
    """Register before the catch-all "unknown command" handler, so /forget reaches us."""
    application.add_handler(CallbackQueryHandler(feedback_button, pattern=rf"^{PREFIX}:"))
    application.add_handler(CommandHandler("forget", forget_command))
