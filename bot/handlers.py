"""One async function per kind of update: commands, photos, image files, text, /stats and errors.

The /why flow lives in :mod:`bot.why`. Every request ends in exactly one reply to the user and one
structured log line (``request chat=... kind=... latency_ms=... result=...``) for the operator.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback

from telegram import Message, Update
from telegram.error import BadRequest, TelegramError
from telegram.ext import ContextTypes

from model import ImageError

from . import feedback, messages
from .feedback import answer_keyboard
from .services import BotServices, services
from .stats import is_admin, log_request
from .store import StoredAnswer, StoredPhoto
from .telegram_io import choose_photo_size, command_for_other_bot, download, is_addressed
from .worker import Busy


def _bot_username(context: ContextTypes.DEFAULT_TYPE) -> str:
    return context.bot.username  # known since Application.initialize() called getMe


def _addressed(message: Message, context: ContextTypes.DEFAULT_TYPE) -> bool:
    return is_addressed(message, context.bot.username, context.bot.id)


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/start: greeting plus the help text."""
    svc = services(context)
    await update.effective_message.reply_text(messages.start_text(
        svc.classifier.class_names, _bot_username(context), svc.settings.confidence_threshold,
        feedback_stored=svc.feedback is not None))


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/help: classes, confidence, /why, limits, how to address the bot in groups."""
    svc = services(context)
    await update.effective_message.reply_text(messages.help_text(
        svc.classifier.class_names, _bot_username(context), svc.settings.confidence_threshold,
        feedback_stored=svc.feedback is not None))


async def photo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A photo (alone or in an album; the caption is ignored): reply with the product and confidence."""
    message = update.effective_message
    if not _addressed(message, context):
        return
    size = choose_photo_size(message.photo)
    await classify_and_reply(update, context, StoredPhoto(size.file_id, size.file_unique_id, message.message_id),
                             size.file_size, kind="photo")


async def document(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A file: whether it is an image is decided by decoding its bytes, not by its declared MIME type."""
    message = update.effective_message
    if not _addressed(message, context):
        return
    doc = message.document
    await classify_and_reply(update, context, StoredPhoto(doc.file_id, doc.file_unique_id, message.message_id),
                             doc.file_size, kind="document")


async def classify_and_reply(update: Update, context: ContextTypes.DEFAULT_TYPE, photo_ref: StoredPhoto,
                             file_size: int | None, kind: str) -> None:
    """Size check, download, classify (micro-batched in the worker), remember the photo, answer with a button."""
    svc = services(context)
    message = update.effective_message
    chat_id = update.effective_chat.id
    started = time.monotonic()
    svc.stats.requests += 1
    try:
        # Before the download: a full queue refuses at once, and the batcher knows this photo is coming.
        reservation = svc.inference.reserve(chat_id)
    except Busy as error:
        await reply_busy(svc, message, chat_id, kind, started, error)
        return
    with reservation:
        data = await fetch_bytes(update, context, svc, photo_ref, file_size, kind, started)
        if data is None:
            return
        try:
            prediction = await reservation.classify(data)
        except ImageError as error:
            svc.stats.bad_input += 1
            await message.reply_text(messages.bad_image(str(error)), do_quote=True)
            log_request(chat_id, kind, started, "bad_image", reason=json.dumps(str(error)))
            return
        except Busy as error:  # the bot is shutting down
            await reply_busy(svc, message, chat_id, kind, started, error)
            return
    key = await asyncio.to_thread(remember, svc, chat_id, photo_ref, prediction)
    text = messages.answer_text(prediction, svc.classifier.class_names, svc.settings.confidence_threshold,
                                svc.settings.unsure_threshold)
    await message.reply_text(text, reply_markup=answer_keyboard(key, svc.feedback is not None), do_quote=True)
    svc.stats.answered(time.monotonic() - started)
    log_request(chat_id, kind, started, "answered", label=prediction.label, confidence=f"{prediction.confidence:.3f}")


async def reply_busy(svc: BotServices, message: Message, chat_id: int, kind: str, started: float, error: Busy) -> None:
    svc.stats.busy += 1
    await message.reply_text(messages.BUSY, do_quote=True)
    log_request(chat_id, kind, started, "busy", reason=json.dumps(str(error)))


def remember(svc: BotServices, chat_id: int, photo_ref: StoredPhoto, prediction) -> str:
    """The chat's latest photo and the answer given for it (for /why and feedback); returns the button key."""
    return svc.store.remember(chat_id, photo_ref,
                              StoredAnswer(prediction.label, prediction.confidence, svc.classifier.checkpoint_id))


async def fetch_bytes(update: Update, context: ContextTypes.DEFAULT_TYPE, svc: BotServices,
                           photo_ref: StoredPhoto, file_size: int | None, kind: str, started: float) -> bytes | None:
    """The file's bytes, or ``None`` after telling the user why not (too big, download failed)."""
    message = update.effective_message
    chat_id = update.effective_chat.id
    if file_size is not None and file_size > svc.settings.max_file_bytes:
        svc.stats.bad_input += 1
        await message.reply_text(messages.TOO_LARGE, do_quote=True)
        log_request(chat_id, kind, started, "too_large", bytes=file_size)
        return None
    try:
        return await download(context.bot, photo_ref.file_id)
    except BadRequest as error:
        # Telegram refuses getFile past 20 MB ("File is too big") even when file_size was not given.
        too_big = "too big" in str(error).lower()
        svc.stats.bad_input += too_big
        await message.reply_text(messages.TOO_LARGE if too_big else messages.DOWNLOAD_FAILED, do_quote=True)
        log_request(chat_id, kind, started, "too_large" if too_big else "download_failed", error=json.dumps(str(error)))
    except TelegramError as error:
        svc.stats.errors += 1
        await message.reply_text(messages.DOWNLOAD_FAILED, do_quote=True)
        log_request(chat_id, kind, started, "download_failed", error=json.dumps(str(error)))
    return None


async def text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Plain text: a short hint (in groups only when the text is addressed to the bot)."""
    await _hint_if_addressed(update, context, messages.TEXT_HINT, "text")


async def other_message(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Stickers, videos, voice, locations...: say what the bot can read (in groups only when addressed)."""
    await _hint_if_addressed(update, context, messages.ONLY_PHOTOS, "other")


async def _hint_if_addressed(update: Update, context: ContextTypes.DEFAULT_TYPE, hint: str, kind: str) -> None:
    message = update.effective_message
    if not _addressed(message, context):
        return
    await message.reply_text(hint)
    log_request(update.effective_chat.id, kind, time.monotonic(), "hint")


async def unknown_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Any command not handled above (unless it is addressed to another bot): point to /help."""
    message = update.effective_message
    if command_for_other_bot(message, _bot_username(context)):
        return
    await message.reply_text(messages.UNKNOWN_COMMAND)
    log_request(update.effective_chat.id, "unknown_command", time.monotonic(), "hint",
                command=json.dumps((message.text or "").split(maxsplit=1)[0][:40]))


async def stale_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A button this bot version does not know (old message, other version): stop its spinner politely."""
    await update.callback_query.answer(messages.WHY_EXPIRED)


async def stats_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/stats for the operators in ADMIN_USER_IDS; everybody else gets a polite refusal."""
    svc = services(context)
    user = update.effective_user
    text_out = stats_reply(user.id if user else None, svc)
    text_out += await feedback.stats_lines(context, user.id if user else None)
    await update.effective_message.reply_text(text_out)


def stats_reply(user_id: int | None, svc: BotServices) -> str:
    if not is_admin(user_id, svc.settings.admin_user_ids):
        return messages.NOT_ADMIN
    snapshot = svc.stats.snapshot(svc.inference.queue_length())
    sizes = list(svc.inference.batch_sizes)
    snapshot["mean_batch"] = f"{sum(sizes) / len(sizes):.1f}" if sizes else "n/a"
    return messages.stats_text(snapshot) + f"\nMean batch size: {snapshot['mean_batch']}"


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The one error handler: log the update and the traceback, tell the user something went wrong."""
    error = context.error
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__)) if error else ""
    summary = update.to_dict() if isinstance(update, Update) else repr(update)
    logging.getLogger("bot.errors").error("unhandled error for update %s\n%s",
                                          json.dumps(summary, default=str)[:2000], trace)
    svc = context.application.bot_data.get("services")
    if svc is not None:
        svc.stats.errors += 1
    if isinstance(update, Update):
        if update.callback_query is not None:
            try:
                await update.callback_query.answer()
            except TelegramError:
                pass
        if update.effective_chat is not None:
            try:
                await context.bot.send_message(update.effective_chat.id, messages.SOMETHING_WRONG)
            except TelegramError:
                logging.getLogger("bot.errors").warning("could not tell chat %s about the error", update.effective_chat.id)
