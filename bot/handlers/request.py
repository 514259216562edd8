"""The one wrapper every handler runs in: it counts the request (bot.ops.metrics, through BotStats), replies when
the handler fails, and writes
the request's one log line (``request chat=.. kind=.. latency_ms=.. result=..``).

A handler returns an :class:`Outcome` (or ``None`` for an update that was not for the bot, e.g. a group
message addressed to somebody else), or raises :class:`RequestEnded` from a helper that has already told
the user why it stops (a file too large, a failed download). :class:`bot.inference.contract.Stopping` means the bot
is shutting down before it could answer: the user is told nothing now, and the journal
(:mod:`bot.state.journal`) keeps the update so the next start answers it.
"""
from __future__ import annotations

import functools
import json
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from telegram import Update
from telegram.error import BadRequest, TelegramError
from telegram.ext import ContextTypes

from bot import messages
from bot.inference.contract import Stopping
from bot.ops.stats import log_request
from bot.services import SERVICES_KEY, language_of, services

errors_log = logging.getLogger("bot.errors")

DEFERRED_KEY = "deferred_update_ids"  # application.bot_data: updates left for the journal to resume


@dataclass
class Outcome:
    """How a request ended: ``result`` for the log line (and the counters), ``answered`` when the user got what
    they asked for (its latency goes into /stats), and any extra ``key=value`` fields for the log line."""

    result: str
    answered: bool = False
    fields: dict = field(default_factory=dict)

    @classmethod
    def of(cls, result: str, answered: bool = False, **fields) -> Outcome:
        return cls(result, answered, fields)


class RequestEnded(Exception):
    """Raised by a helper that has already replied to the user: the request ends with ``outcome``."""

    def __init__(self, outcome: Outcome):
        super().__init__(outcome.result)
        self.outcome = outcome


Handler = Callable[[Update, ContextTypes.DEFAULT_TYPE], Awaitable["Outcome | None"]]


def request(kind: str, counted: bool = False) -> Callable[[Handler], Handler]:
    """Decorate a handler of ``kind`` requests; ``counted=True`` adds it to /stats' request count (photos, files, heat maps)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def run(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            svc = services(context)
            started = time.monotonic()
            chat_id = update.effective_chat.id if update.effective_chat else None
            try:
                outcome = await handler(update, context)
            except RequestEnded as ended:
                outcome = ended.outcome
            except Stopping as error:
                context.application.bot_data.setdefault(DEFERRED_KEY, set()).add(update.update_id)
                outcome = Outcome.of("deferred", reason=json.dumps(str(error)))
            except Exception as error:  # the handler's bug or Telegram's failure: the user still gets a reply
                _log_failure(update, error)
                await tell_something_went_wrong(update, context)
                outcome = Outcome.of("error", error=type(error).__name__)
            if outcome is None:
                return
            svc.stats.record(kind, outcome.result, outcome.answered, time.monotonic() - started, counted,
                             unsure=_unsure(outcome, svc.settings.confidence_threshold))
            log_request(chat_id, kind, started, outcome.result, **outcome.fields)

        return run

    return decorate


def _unsure(outcome: Outcome, confidence_threshold: float) -> bool:
    """An answer that said "I'm not sure" (its confidence below CONFIDENCE_THRESHOLD): counted apart in the metrics."""
    confidence = outcome.fields.get("confidence")
    return outcome.answered and confidence is not None and float(confidence) < confidence_threshold


def _log_failure(update: object, error: BaseException) -> None:
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    errors_log.error("unhandled error for update %s\n%s", update_summary(update), trace)


def update_summary(update: object) -> str:
    """Ids and kinds only (never names, texts, captions or file ids), so an error line is no copy of what users
    sent: the log outlives /forget and RETENTION_DAYS."""
    if not isinstance(update, Update):
        return type(update).__name__
    kinds = [name for name in ("message", "edited_message", "channel_post", "callback_query", "inline_query",
                               "my_chat_member", "chat_member") if getattr(update, name, None) is not None]
    message = update.effective_message
    chat, user = update.effective_chat, update.effective_user
    fields = {"update_id": update.update_id, "kind": ",".join(kinds) or "other",
              "chat": chat.id if chat else None, "chat_type": chat.type if chat else None,
              "user": user.id if user else None, "message": message.message_id if message else None}
    if message is not None:
        fields["content"] = ",".join(name for name in ("text", "photo", "document", "caption", "sticker", "video")
                                     if getattr(message, name, None))
    return json.dumps(fields)


async def tell_something_went_wrong(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    if not isinstance(update, Update):
        return
    if update.callback_query is not None:
        await answer_query(update.callback_query)
    if update.effective_chat is not None:
        try:
            await context.bot.send_message(update.effective_chat.id,
                                           language_of(update, context).gettext(messages.SOMETHING_WRONG))
        except TelegramError:
            errors_log.warning("could not tell chat %s about the error", update.effective_chat.id)


async def answer_query(query, text: str | None = None, alert: bool = False) -> None:
    """answerCallbackQuery; one Telegram already dropped (answered too late, e.g. resumed after a restart) is
    only logged: the button's work goes on either way."""
    try:
        await query.answer(text, show_alert=alert)
    except BadRequest as error:
        logging.getLogger(__name__).warning("could not answer the button press: %s", error)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """PTB's one error handler, for what fails outside a handler's wrapper (e.g. polling): log, tell the chat."""
    _log_failure(update, context.error)
    svc = context.application.bot_data.get(SERVICES_KEY)
    if svc is not None:
        svc.stats.metrics.unhandled_errors.inc()
    await tell_something_went_wrong(update, context)
