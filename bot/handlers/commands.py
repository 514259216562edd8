"""One async function per kind of update: commands, photos, image files, text, /stats, /privacy.

The /why flow lives in :mod:`bot.handlers.why`, the feedback buttons in :mod:`bot.handlers.feedback`, the one reply per
album in :mod:`bot.handlers.albums`. Every user-facing text goes out in the user's language (:mod:`bot.i18n`). Each handler runs in
the one request wrapper (:func:`bot.handlers.request.request`), which counts it, replies if it fails and
writes its one log line from the :class:`Outcome` it returns.
"""
from __future__ import annotations

import asyncio
import json
import re

from telegram import Message, ReplyParameters, Update
from telegram.ext import ContextTypes

from bot import messages
from bot.handlers import feedback
from bot.handlers.albums import Album, AlbumPhoto
from bot.handlers.downloads import fetch_bytes
from bot.handlers.feedback import album_keyboard, answer_keyboard
from bot.handlers.request import Outcome, RequestEnded, answer_query, request
from bot.handlers.telegram_io import choose_photo_size, command_for_other_bot, is_addressed
from bot.i18n import Language
from bot.inference.contract import Busy, Stopping
from bot.inference.reload import reload_model
from bot.ops.stats import is_admin
from bot.services import BotServices, language_of, services
from bot.state.store import StoredAnswer, StoredPhoto
from model import ImageError


def _addressed(message: Message, context: ContextTypes.DEFAULT_TYPE) -> bool:
    return is_addressed(message, context.bot.username, context.bot.id)


@request("start")
async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Outcome:
    """/start: greeting plus the help text."""
    return await _reply_with_help(update, context, messages.start_text)


@request("help")
async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Outcome:
    """/help: classes, confidence, /why, limits, how to address the bot in groups."""
    return await _reply_with_help(update, context, messages.help_text)


async def _reply_with_help(update: Update, context: ContextTypes.DEFAULT_TYPE, text_of) -> Outcome:
    """``text_of`` (:func:`messages.start_text` or :func:`messages.help_text`) for this chat's model and language."""
    svc = services(context)
    await update.effective_message.reply_text(text_of(
        svc.classifier_for(update.effective_chat.id).class_names, context.bot.username, svc.settings.confidence_threshold,
        feedback_stored=svc.feedback is not None, journal_hours=svc.settings.journal_max_age_hours,
        lang=language_of(update, context)))
    return Outcome.of("sent")


@request("privacy")
async def privacy_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Outcome:
    """/privacy: what the bot keeps, for how long (RETENTION_DAYS), who sees it, and /forget."""
    svc = services(context)
    await update.effective_message.reply_text(messages.privacy_text(
        svc.settings.retention_days, svc.settings.journal_max_age_hours, svc.feedback is not None,
        lang=language_of(update, context)))
    return Outcome.of("sent")


@request("photo", counted=True)
async def photo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Outcome | None:
    """A photo (alone or in an album; the caption is ignored): reply with the product and confidence."""
    message = update.effective_message
    size = choose_photo_size(message.photo)
    return await answer_photo(update, context, StoredPhoto(size.file_id, size.file_unique_id, message.message_id),
                              size.file_size)


@request("document", counted=True)
async def document(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Outcome | None:
    """A file: whether it is an image is decided by decoding its bytes, not by its declared MIME type."""
    message = update.effective_message
    doc = message.document
    return await answer_photo(update, context, StoredPhoto(doc.file_id, doc.file_unique_id, message.message_id),
                              doc.file_size)


async def answer_photo(update: Update, context: ContextTypes.DEFAULT_TYPE, photo_ref: StoredPhoto,
                       file_size: int | None) -> Outcome | None:
    """A photo or file addressed to the bot: its own answer, or its line in its album's one answer."""
    message = update.effective_message
    group = message.media_group_id
    in_open_album = group is not None and services(context).albums.is_open(update.effective_chat.id, group)
    if not (in_open_album or _addressed(message, context)):  # in a group, an album's caption is on one photo only
        return None
    if group is not None:
        return await classify_album_photo(update, context, photo_ref, file_size)
    return await classify_and_reply(update, context, photo_ref, file_size)


async def classify(update: Update, context: ContextTypes.DEFAULT_TYPE, photo_ref: StoredPhoto,
                   file_size: int | None, lang: Language):
    """Size check, download, classify (micro-batched by the scheduler), remember the photo: (prediction, key).
    Raises :class:`Busy`, :class:`model.ImageError`, or :class:`RequestEnded` once the user was told why not."""
    svc = services(context)
    chat_id = update.effective_chat.id
    # Before the download: a full queue refuses at once, and the batcher knows this photo is coming; so do
    # too many bytes in flight (a size past MAX_FILE_BYTES is refused by fetch_bytes, before any download).
    in_flight = min(file_size or svc.settings.max_file_bytes, svc.settings.max_file_bytes)
    with svc.inference.reserve(chat_id, svc.model_for(chat_id)) as reservation, svc.bytes_in_flight.hold(in_flight):
        data = await fetch_bytes(context.bot, update.effective_message, chat_id, photo_ref, file_size,
                                 svc.settings.max_file_bytes, lang)
        prediction = await reservation.classify(data)
    key = await asyncio.to_thread(remember, svc, chat_id, photo_ref, prediction)
    return prediction, key


async def classify_and_reply(update: Update, context: ContextTypes.DEFAULT_TYPE, photo_ref: StoredPhoto,
                             file_size: int | None) -> Outcome:
    """One photo or file: classify it and answer with the product, the confidence and the buttons."""
    svc = services(context)
    message = update.effective_message
    lang = language_of(update, context)
    try:
        prediction, key = await classify(update, context, photo_ref, file_size, lang)
    except Stopping:
        raise
    except Busy as error:
        return await reply_busy(message, error, lang)
    except ImageError as error:
        await message.reply_text(messages.bad_image(str(error), lang), do_quote=True)
        return Outcome.of("bad_image", reason=json.dumps(str(error)))
    text = messages.answer_text(prediction, svc.classifier_for(update.effective_chat.id).class_names,
                                svc.settings.confidence_threshold, svc.settings.unsure_threshold, lang)
    await message.reply_text(text, reply_markup=answer_keyboard(key, svc.feedback is not None, lang), do_quote=True)
    return Outcome.of("answered", answered=True, label=prediction.label, confidence=f"{prediction.confidence:.3f}")


async def classify_album_photo(update: Update, context: ContextTypes.DEFAULT_TYPE, photo_ref: StoredPhoto,
                               file_size: int | None) -> Outcome:
    """One photo of an album: classified like any photo; the album's first handler sends the one reply
    (bot.handlers.albums), and every handler returns only once it is sent, so the journal keeps the album open till then."""
    svc = services(context)
    message = update.effective_message
    lang = language_of(update, context)
    album, photo, sends = svc.albums.join(update.effective_chat.id, message.media_group_id, message.message_id)
    failure: BaseException | None = None
    try:
        prediction, key = await classify(update, context, photo_ref, file_size, lang)
        svc.albums.finish(album, photo, key=key, prediction=prediction)
        outcome = Outcome.of("answered", answered=True, label=prediction.label, confidence=f"{prediction.confidence:.3f}",
                             album=json.dumps(message.media_group_id))
    except Stopping:
        svc.albums.stop_photo(album)
        raise
    except Busy as error:
        svc.albums.finish(album, photo, problem=lang.gettext(messages.BUSY))
        outcome = Outcome.of("busy", reason=json.dumps(str(error)))
    except ImageError as error:
        svc.albums.finish(album, photo, problem=messages.bad_image(str(error), lang))
        outcome = Outcome.of("bad_image", reason=json.dumps(str(error)))
    except RequestEnded as ended:  # too large, download failed: the user was told; the album still answers
        svc.albums.finish(album, photo, problem=lang.gettext(messages.DOWNLOAD_FAILED))
        outcome = ended.outcome
    except Exception as error:  # a bug: this photo's line says so, the others are still answered
        svc.albums.finish(album, photo, problem=lang.gettext(messages.SOMETHING_WRONG))
        failure = error
    if sends:
        await send_album_reply(context, album, lang)
    else:
        try:
            await album.sent  # the first photo's handler sends it
        except Stopping:  # the bot stopped first: the journal keeps this photo for the next start
            raise
        except Exception as error:  # the sender failed and told the user; one apology is enough
            return Outcome.of("album_not_sent", error=type(error).__name__)
    if failure is not None:
        raise failure
    return outcome


async def send_album_reply(context: ContextTypes.DEFAULT_TYPE, album: Album, lang: Language) -> None:
    svc = services(context)
    try:
        photos: list[AlbumPhoto] = await album.complete
        lines = [messages.album_line(number, photo.prediction, svc.settings.confidence_threshold,
                                     svc.settings.unsure_threshold, lang, photo.problem)
                 for number, photo in enumerate(photos, start=1)]
        await context.bot.send_message(album.chat_id, messages.album_text(lines, lang),
                                       reply_parameters=ReplyParameters(photos[0].message_id, allow_sending_without_reply=True),
                                       reply_markup=album_keyboard(photos, svc.feedback is not None, lang))
    except BaseException as error:
        if not album.sent.done():
            album.sent.set_exception(error)
            album.sent.exception()  # retrieved: the other handlers may all have gone
        raise
    finally:
        svc.albums.close(album)
    album.sent.set_result(None)


async def reply_busy(message: Message, error: Busy, lang: Language) -> Outcome:
    await message.reply_text(lang.gettext(messages.BUSY), do_quote=True)
    return Outcome.of("busy", reason=json.dumps(str(error)))


def remember(svc: BotServices, chat_id: int, photo_ref: StoredPhoto, prediction) -> str:
    """The chat's latest photo and the answer given for it (for /why and feedback); returns the button key."""
    return svc.store.remember(chat_id, photo_ref,
                              StoredAnswer(prediction.label, prediction.confidence,
                                           prediction.checkpoint_id or svc.classifier_for(chat_id).checkpoint_id))


@request("text")
async def text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Outcome | None:
    """Plain text: a short hint (in groups only when the text is addressed to the bot)."""
    return await _hint_if_addressed(update, context, language_of(update, context).gettext(messages.TEXT_HINT))


@request("other")
async def other_message(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Outcome | None:
    """Stickers, videos, voice, locations...: say what the bot can read (in groups only when addressed)."""
    return await _hint_if_addressed(update, context, language_of(update, context).gettext(messages.ONLY_PHOTOS))


async def _hint_if_addressed(update: Update, context: ContextTypes.DEFAULT_TYPE, hint: str) -> Outcome | None:
    message = update.effective_message
    if not _addressed(message, context):
        return None
    await message.reply_text(hint)
    return Outcome.of("hint")


@request("unknown_command")
async def unknown_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Outcome | None:
    """Any command not handled above (unless it is addressed to another bot): point to /help."""
    message = update.effective_message
    if command_for_other_bot(message, context.bot.username):
        return None
    await message.reply_text(language_of(update, context).gettext(messages.UNKNOWN_COMMAND))
    # The command's name only, when it is one (a log line never carries what a user wrote: /privacy says so).
    first = (message.text or "").split(maxsplit=1)[0] if message.text else ""
    return Outcome.of("hint", command=json.dumps(first if re.fullmatch(r"/[A-Za-z0-9_]{1,32}(@\w{1,32})?", first, re.ASCII)
                                                 else "?"))


@request("stale_button")
async def stale_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Outcome:
    """A button this bot version does not know (old message, other version): stop its spinner politely."""
    await answer_query(update.callback_query, language_of(update, context).gettext(messages.WHY_EXPIRED))
    return Outcome.of("expired")


@request("stats")
async def stats_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Outcome:
    """/stats for the operators in ADMIN_USER_IDS; everybody else gets a polite refusal."""
    svc = services(context)
    user = update.effective_user
    user_id = user.id if user else None
    if not is_admin(user_id, svc.settings.admin_user_ids):
        await update.effective_message.reply_text(language_of(update, context).gettext(messages.NOT_ADMIN))
        return Outcome.of("not_admin")
    journal_open = await asyncio.to_thread(svc.journal.open_count)
    text_out = stats_reply(user_id, svc, journal_open) + await feedback.stats_lines(context, user_id)
    await update.effective_message.reply_text(text_out)
    return Outcome.of("sent")


def stats_reply(user_id: int | None, svc: BotServices, journal_open: int | None = None) -> str:
    if not is_admin(user_id, svc.settings.admin_user_ids):
        return messages.NOT_ADMIN
    snapshot = svc.stats.snapshot(svc.inference.queue_length())
    snapshot.update(svc.inference.stats_lines())
    if journal_open is not None:
        snapshot["journal_open"] = journal_open
    return messages.stats_text(snapshot)


@request("reload")
async def reload_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Outcome:
    """/reload for the operators in ADMIN_USER_IDS: serve CHECKPOINT_PATH again (as SIGHUP does)."""
    svc = services(context)
    user = update.effective_user
    if not is_admin(user.id if user else None, svc.settings.admin_user_ids):
        await update.effective_message.reply_text(language_of(update, context).gettext(messages.NOT_ADMIN))
        return Outcome.of("not_admin")
    result = await reload_model(context.application, f"/reload from user {user.id}")
    await update.effective_message.reply_text(result.text)
    return Outcome.of("reloaded" if result.ok else "refused")
