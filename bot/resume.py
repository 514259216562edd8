"""Resuming the journal at start (bot.journal): what the last run accepted and did not answer is queued
again; suspects (in progress when the last run died) run one at a time; what the poison-pill rule set
aside is told to its user once; a row that cannot be read back is dropped with a log line.

Functions of the application (``bot.app.BotApplication`` calls them from ``initialize`` and ``start``).
"""
from __future__ import annotations

import asyncio
import json
import logging
import sqlite3

from telegram import ReplyParameters, Update
from telegram.error import TelegramError
from telegram.ext import Application

from . import messages
from .i18n import Languages
from .journal import Journal, JournalingQueue, OpenEntry

log = logging.getLogger(__name__)


async def resume_journal(application: Application, journal: Journal, languages: Languages,
                         max_age_s: float) -> list[Update]:
    """Queue again the open entries that were waiting; returns the suspects, to run by :func:`run_one_at_a_time`
    once the application has started (before polling: nothing new is queued ahead of what was open)."""
    queue: JournalingQueue = application.update_queue
    queue.journal = journal
    resumption = await asyncio.to_thread(journal.resume_all, max_age_s)
    suspects = []
    for entry in resumption.resumed:
        update = await read_back(application, journal, entry)
        if update is None:
            continue
        if entry.crashes:
            suspects.append(update)
        else:
            await queue.put_resumed(update)
    for entry in resumption.set_aside:
        await tell_set_aside(application, journal, languages, entry)
    if resumption.resumed:
        log.info("journal: resuming %d unfinished request(s) from the last run (%d one at a time)",
                 len(resumption.resumed), len(suspects))
    return suspects


async def run_one_at_a_time(application: Application, updates: list[Update]) -> None:
    """Each suspect alone (new updates still run beside it): if one kills the process again, it is the only
    suspect in progress, so the poison-pill rule sets aside the culprit, not the bystanders."""
    for update in updates:
        try:
            await application.process_update(update)
        except Exception:  # PTB's error handler has seen it; the next suspect still runs
            log.exception("journal: resumed update %d failed", update.update_id)


async def read_back(application: Application, journal: Journal, entry: OpenEntry) -> Update | None:
    """The entry's update, or None once a malformed row (not JSON, not an object, not an update) was closed."""
    try:
        update = Update.de_json(json.loads(entry.update_json), application.bot)
        if not isinstance(update, Update):
            raise TypeError(f"not an update but {type(update).__name__}")
        if update.update_id != entry.update_id:  # not the row's own update (its id is the table's key)
            raise ValueError(f"it names update_id {str(update.update_id)[:20]!r}")
        return update
    except Exception as error:  # whatever a bad row raises (AttributeError for a JSON list...): drop it, go on
        log.error("journal: update %d (%s) cannot be read back (%s: %s); dropped", entry.update_id, entry.kind,
                  type(error).__name__, error)
        try:
            await asyncio.to_thread(journal.done, entry.update_id)
        except sqlite3.Error as db_error:
            log.error("journal: cannot close update %d: %s", entry.update_id, db_error)
        return None


async def tell_set_aside(application: Application, journal: Journal, languages: Languages, entry: OpenEntry) -> None:
    """One message to the user whose update was set aside: in its chat, in their language, quoting it."""
    update = await read_back(application, journal, entry)
    chat = update.effective_chat if update is not None else None
    if chat is None:
        return
    message = update.effective_message
    lang = languages.for_user(update.effective_user)
    reply = ReplyParameters(message.message_id, allow_sending_without_reply=True) if message is not None else None
    try:
        await application.bot.send_message(chat.id, lang.gettext(messages.SET_ASIDE), reply_parameters=reply)
    except TelegramError as error:
        log.warning("journal: could not tell chat %s that update %d was set aside: %s", chat.id, entry.update_id, error)
