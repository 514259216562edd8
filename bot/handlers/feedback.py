"""The buttons under an answer — "Why?", and "✓ Right" / "✗ Wrong" when FEEDBACK_DIR is set — the
feedback callbacks, /forget, and the feedback lines of /stats.

The flow: "✓ Right" keeps the answer as the label; "✗ Wrong" swaps the feedback buttons for the known
classes and "None of these"; a choice is stored (:mod:`bot.state.feedback_records`, on disk as :mod:`model.inbox`),
acknowledged with ``answerCallbackQuery``, and the buttons become "Thanks — noted as saree". The "Why?"
buttons stay as they are. Under an album's answer each photo has its own row ("Why? #2", "#2 ✓", "#2 ✗"),
and a press changes only the buttons of its own photo (by the key in their callback_data).

callback_data: the codecs of :mod:`bot.handlers.buttons` (``why:``, ``fb:``); each key names the chat it was made for,
and a press is served only from that chat. The store (:mod:`bot.state.store`) keeps the answer given for each photo,
so buttons keep working after a restart.

Each stored judgement carries the salted ids of the chat and of the user who pressed, and counts against the
user's limits (:mod:`bot.state.feedback_records`). /forget in a private chat deletes everything the bot keeps about
the chat; in a group, what the member who sends it judged there, unless a group admin sends it: then the
group's whole state.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.constants import ChatType
from telegram.error import BadRequest, TelegramError
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    filters,
)

from bot import messages
from bot.config import ConfigError
from bot.handlers.albums import AlbumPhoto
from bot.handlers.buttons import DONE, NONE_CHOICE, RIGHT, WRONG, FeedbackData, WhyData
from bot.handlers.downloads import photo_in
from bot.handlers.request import Outcome, answer_query, request
from bot.handlers.telegram_io import FileTooLarge, download
from bot.i18n import ENGLISH, Language
from bot.ops.stats import is_admin
from bot.services import language_of, services
from bot.state.feedback_records import PER_PHOTO, FeedbackStore, OverLimit
from bot.state.store import StoredPhoto
from model.inbox import NONE_OF_THESE

log = logging.getLogger(__name__)

CLASSES_PER_ROW = 3
MAX_CLASS_BUTTONS = 90  # Telegram allows 100 buttons per keyboard; the rest is for "None of these" and "Why?"
CHAT_ADMINS = ("creator", "administrator")  # getChatMember statuses that may /forget a whole group


# ---- keyboards -----------------------------------------------------------------------------------------
def why_key_button(key: str, lang: Language = ENGLISH, number: int | None = None) -> InlineKeyboardButton:
    return InlineKeyboardButton(messages.why_button_text(number, lang), callback_data=WhyData(key).encode())


def why_row(key: str, lang: Language = ENGLISH) -> list[InlineKeyboardButton]:
    return [why_key_button(key, lang)]


def judge_buttons(key: str, lang: Language = ENGLISH, number: int | None = None) -> list[InlineKeyboardButton]:
    right, wrong = messages.feedback_button_texts(number, lang)
    return [InlineKeyboardButton(right, callback_data=FeedbackData(key, RIGHT).encode()),
            InlineKeyboardButton(wrong, callback_data=FeedbackData(key, WRONG).encode())]


def answer_keyboard(key: str, feedback_on: bool, lang: Language = ENGLISH) -> InlineKeyboardMarkup:
    """"Why?", plus "✓ Right" / "✗ Wrong" when feedback is on (asking users to judge answers nobody keeps
    would waste their time, so the row is hidden when it is off)."""
    rows = [why_row(key, lang)]
    if feedback_on:
        rows.append(judge_buttons(key, lang))
    return InlineKeyboardMarkup(rows)


def album_keyboard(photos: list[AlbumPhoto], feedback_on: bool, lang: Language = ENGLISH) -> InlineKeyboardMarkup:
    """One row per classified photo of an album: "Why? #n", and "#n ✓" / "#n ✗" when feedback is on."""
    rows = []
    for number, photo in enumerate(photos, start=1):
        if photo.key is None:  # not classified: nothing to explain or judge
            continue
        rows.append([why_key_button(photo.key, lang, number)] + (judge_buttons(photo.key, lang, number) if feedback_on else []))
    return InlineKeyboardMarkup(rows)


def choice_rows(key: str, class_names: list[str], lang: Language = ENGLISH) -> list[list[InlineKeyboardButton]]:
    """Every known class (the predicted one too: "Wrong" may have been a slip), then "None of these"."""
    buttons = [InlineKeyboardButton(lang.product(name), callback_data=FeedbackData(key, str(index)).encode())
               for index, name in enumerate(class_names)][:MAX_CLASS_BUTTONS]
    rows = [buttons[i : i + CLASSES_PER_ROW] for i in range(0, len(buttons), CLASSES_PER_ROW)]
    rows.append([InlineKeyboardButton(lang.gettext(messages.NONE_OF_THESE_BUTTON),
                                      callback_data=FeedbackData(key, NONE_CHOICE).encode())])
    return rows


def thanks_rows(key: str, label: str | None, lang: Language = ENGLISH,
                number: int | None = None) -> list[list[InlineKeyboardButton]]:
    return [[InlineKeyboardButton(messages.feedback_thanks(label, lang, number), callback_data=FeedbackData(key, DONE).encode())]]


def is_feedback_button(button: InlineKeyboardButton, key: str | None = None) -> bool:
    """A feedback button (of the photo ``key``, when given)."""
    data = FeedbackData.decode(button.callback_data)
    return data is not None and (key is None or data.key == key)


def album_number(markup: InlineKeyboardMarkup | None, key: str) -> int | None:
    """The photo's number in an album's answer (its "Why? #n" button), or None under a single answer."""
    for row in markup.inline_keyboard if markup else ():
        for button in row:
            if WhyData.decode(button.callback_data) == WhyData(key) and "#" in button.text:
                number = button.text.rsplit("#", 1)[1]
                return int(number) if re.fullmatch(r"[0-9]{1,3}", number, re.ASCII) else None
    return None


def with_feedback_rows(markup: InlineKeyboardMarkup | None, rows: list[list[InlineKeyboardButton]],
                       key: str | None = None) -> InlineKeyboardMarkup:
    """``markup`` with the feedback buttons (of photo ``key``, when given) replaced by ``rows``, placed where the
    first of them was; other buttons ("Why?", the other photos of an album) are kept."""
    kept: list[list[InlineKeyboardButton]] = []
    place = None
    for row in markup.inline_keyboard if markup else ():
        others = [button for button in row if not is_feedback_button(button, key)]
        if len(others) < len(row) and place is None:
            place = len(kept) + (1 if others else 0)
        if others:
            kept.append(others)
    place = len(kept) if place is None else place
    return InlineKeyboardMarkup(kept[:place] + rows + kept[place:])


# ---- the button callback ---------------------------------------------------------------------------------
async def _photo_behind(message: Message | None, chat_id: int, key: str,
                        context: ContextTypes.DEFAULT_TYPE) -> StoredPhoto | None:
    """The photo the answer is about: the message it replies to (the same size the bot classified), or the
    bot's photo store by the button's key (the user deleted their message, or the button is for another
    photo of an album than the first one, which the answer replies to). Only this chat's: a key made for
    another chat finds nothing."""
    store = services(context).store
    replied = message.reply_to_message if isinstance(message, Message) else None
    photo = photo_in(replied)
    if photo is None or not store.keys.matches(key, chat_id, photo.file_unique_id):
        photo = await asyncio.to_thread(store.by_key, chat_id, key)
    return photo


async def _edit_buttons(message: Message | None, rows: list[list[InlineKeyboardButton]], key: str | None = None) -> None:
    """Swap the feedback buttons (of photo ``key``); a message that can no longer be edited keeps its old buttons
    (logged)."""
    if not isinstance(message, Message):  # too old for Telegram to send it: nothing to edit
        return
    try:
        await message.edit_reply_markup(with_feedback_rows(message.reply_markup, rows, key))
    except BadRequest as error:
        if "not modified" not in str(error).lower():  # "not modified": a double press, the buttons already say so
            log.warning("feedback: could not edit the buttons: %s", error)


def _chosen_label(data: FeedbackData, predicted: str, class_names: list[str]) -> str | None:
    """The label a press means; ``None`` when a class index does not fit the classes."""
    if data.choice == RIGHT:
        return predicted
    if data.choice == NONE_CHOICE:
        return NONE_OF_THESE
    index = data.class_index
    return class_names[index] if index is not None and index < len(class_names) else None


@request("feedback")
async def feedback_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Outcome:
    """Any ``fb:`` button. "Wrong" shows the classes; "Right" or a class stores the judgement, answers the
    query and turns the buttons into "Thanks — noted as …". Every press is answered, even a stale one."""
    svc = services(context)
    lang = language_of(update, context)
    query = update.callback_query
    chat_id = query.message.chat.id if query.message is not None else None  # the chat the key must name
    user_id = query.from_user.id
    data = FeedbackData.decode(query.data)
    if data is None or data.choice == DONE or chat_id is None:
        await answer_query(query)
        return Outcome.of("ignored", data=json.dumps(query.data))
    if svc.feedback is None:
        await answer_query(query, lang.gettext(messages.FEEDBACK_OFF))
        await _edit_buttons(query.message, [], data.key)
        return Outcome.of("feedback_off")
    chat_model = svc.classifier_for(chat_id)
    class_names = chat_model.class_names
    number = album_number(query.message.reply_markup if isinstance(query.message, Message) else None, data.key)
    answer, photo = await asyncio.gather(asyncio.to_thread(svc.store.answer, chat_id, data.key),
                                         _photo_behind(query.message, chat_id, data.key, context))
    if answer is None or photo is None:  # expired, /forget, or a key made for another chat
        await answer_query(query, lang.gettext(messages.FEEDBACK_PHOTO_GONE), alert=True)
        return Outcome.of("photo_gone")
    if data.choice == WRONG:
        await answer_query(query, lang.gettext(messages.FEEDBACK_WHICH) + (f" (#{number})" if number else ""))
        await _edit_buttons(query.message, choice_rows(data.key, class_names, lang), data.key)
        return Outcome.of("asked_class")
    label = _chosen_label(data, answer.label, class_names)
    # A class index means a class of the model serving now; if another checkpoint gave the answer, its
    # classes may differ, so ask for the photo again rather than store a guess.
    if label is None or (data.class_index is not None and answer.checkpoint_id != chat_model.checkpoint_id):
        await answer_query(query, lang.gettext(messages.FEEDBACK_OUTDATED), alert=True)
        await _edit_buttons(query.message, [], data.key)
        return Outcome.of("outdated", data=json.dumps(query.data))
    try:
        record = await svc.feedback.record(
            photo_id=photo.file_unique_id,
            fetch_photo=lambda: download(context.bot, photo.file_id, svc.settings.max_file_bytes),
            predicted=answer.label,
            confidence=answer.confidence,
            label=label,
            checkpoint_id=answer.checkpoint_id,
            chat_id=chat_id,
            user_id=user_id,
        )
    except OverLimit as over:
        text = messages.FEEDBACK_PHOTO_LIMIT if over.limit == PER_PHOTO else messages.FEEDBACK_DAY_LIMIT
        await answer_query(query, lang.gettext(text), alert=True)
        return Outcome.of("over_limit", limit=over.limit)
    except FileTooLarge as error:  # MAX_FILE_BYTES holds for this download too
        await answer_query(query, messages.too_large(lang), alert=True)
        return Outcome.of("too_large", bytes=error.file_size)
    except (TelegramError, OSError, ValueError) as error:
        log.warning("feedback not stored for chat %s: %s", chat_id, error)
        await answer_query(query, lang.gettext(messages.FEEDBACK_SAVE_FAILED), alert=True)
        return Outcome.of("save_failed", error=json.dumps(str(error)))
    svc.stats.metrics.feedback_given(record.label, record.predicted, NONE_OF_THESE)
    shown = None if label == NONE_OF_THESE else label
    await answer_query(query, messages.feedback_thanks(shown, lang, number))
    await _edit_buttons(query.message, thanks_rows(data.key, shown, lang, number), data.key)
    return Outcome.of("stored", predicted=record.predicted, label=record.label)


# ---- /forget and /stats --------------------------------------------------------------------------------
@request("forget")
async def forget_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Outcome:
    """/forget: in a private chat, or from a group's admin, delete the chat's last photo, answers, journal
    entries, cached maps and (when feedback is on) its judgements and the photos nobody else judged. From
    another group member: only what that member judged in the group (the rest is the group's, not theirs)."""
    svc = services(context)
    chat, user = update.effective_chat, update.effective_user
    lang = language_of(update, context)
    whole_chat = chat.type == ChatType.PRIVATE or (user is not None and await _is_chat_admin(context, chat.id, user.id))
    records = photos = state = 0
    if whole_chat:
        state = await asyncio.to_thread(forget_chat_state, svc, chat.id, update.update_id)
        await _forget_cached_maps(svc, chat.id)
    if svc.feedback is not None and (whole_chat or user is not None):
        records, photos = await svc.feedback.forget(chat.id, None if whole_chat else user.id)
    if whole_chat:
        text = messages.forget_done(records, photos, lang, feedback_on=svc.feedback is not None)
    else:
        text = messages.forget_member_done(records, photos, lang, feedback_on=svc.feedback is not None)
    await update.effective_message.reply_text(text)
    return Outcome.of("deleted" if whole_chat else "deleted_own", records=records, photos=photos, state=state)


async def _is_chat_admin(context: ContextTypes.DEFAULT_TYPE, chat_id: int, user_id: int) -> bool:
    """Whether Telegram says the user administers the group (getChatMember); a failed call is a no."""
    try:
        member = await context.bot.get_chat_member(chat_id, user_id)
    except TelegramError as error:
        log.warning("forget: getChatMember failed for chat %s, so only the member's own data goes: %s", chat_id, error)
        return False
    return member.status in CHAT_ADMINS


async def _forget_cached_maps(svc, chat_id: int) -> None:
    """The inference backend's in-memory maps and results of this chat, where the backend can drop them.
    ``forget`` is optional on a backend (getattr): one without it keeps them until they age out of its cache."""
    forget = getattr(svc.inference, "forget", None)
    if forget is None:
        return
    result = forget(chat_id)
    if inspect.isawaitable(result):
        await result


def forget_chat_state(svc, chat_id: int, keep_update_id: int) -> int:
    """The chat's rows in the photo store and the journal (but this /forget's own entry, still open)."""
    return svc.store.forget_chat(chat_id) + svc.journal.forget_chat(chat_id, keep_update_id)


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
    application.add_handler(CallbackQueryHandler(feedback_button, pattern=FeedbackData.decode))
    application.add_handler(CommandHandler("forget", forget_command, filters=filters.UpdateType.MESSAGE))
