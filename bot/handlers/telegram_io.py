"""Small Telegram-side helpers with no bot state: which photo size to fetch, whether a group message is
addressed to the bot, downloading with the size limit, and honouring 429 ``retry_after``.
"""
from __future__ import annotations

import asyncio
import datetime as dtm
import logging
import warnings
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from telegram import Bot, Message
from telegram.constants import ChatType
from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

log = logging.getLogger(__name__)

MODEL_MIN_SIDE = 224


class Sized(Protocol):
    width: int
    height: int


def choose_photo_size(sizes: Sequence[Sized], min_side: int = MODEL_MIN_SIDE):
    """The smallest size whose short side is at least ``min_side`` (enough for the model, cheapest to fetch
    and decode), else the largest there is. ``None`` for an empty list."""
    if not sizes:
        return None
    big_enough = [size for size in sizes if min(size.width, size.height) >= min_side]
    if big_enough:
        return min(big_enough, key=lambda size: size.width * size.height)
    return max(sizes, key=lambda size: size.width * size.height)


def is_addressed(message: Message, bot_username: str, bot_id: int | None) -> bool:
    """Private chats: always. Groups: a reply to one of the bot's messages, or ``@BotName`` in the text/caption."""
    if message.chat.type == ChatType.PRIVATE:
        return True
    replied = message.reply_to_message
    if replied is not None and replied.from_user is not None and bot_id is not None and replied.from_user.id == bot_id:
        return True
    text = (message.caption or message.text or "").lower()
    return bool(bot_username) and f"@{bot_username.lower()}" in text


def command_for_other_bot(message: Message, bot_username: str) -> bool:
    """``/cmd@OtherBot`` in a group is not for us and gets no "unknown command" reply."""
    first_word = (message.text or "").split(maxsplit=1)[0] if message.text else ""
    if "@" not in first_word:
        return False
    return first_word.split("@", 1)[1].lower() != bot_username.lower()


class FileTooLarge(Exception):
    """getFile says the file is larger than the caller's limit (MAX_FILE_BYTES); nothing was downloaded."""

    def __init__(self, file_size: int, limit: int):
        super().__init__(f"the file is {file_size} bytes; the limit is {limit}")
        self.file_size = file_size


async def download(bot: Bot, file_id: str, max_bytes: int | None = None) -> bytes:
    """The file's bytes (getFile, then the download); Telegram errors propagate to the caller. With
    ``max_bytes``, getFile's ``file_size`` is checked before downloading (:class:`FileTooLarge`): every
    download path checks it, also those that start from a stored ``file_id`` and know no size."""
    telegram_file = await bot.get_file(file_id)
    if max_bytes is not None and telegram_file.file_size is not None and telegram_file.file_size > max_bytes:
        raise FileTooLarge(telegram_file.file_size, max_bytes)
    return bytes(await telegram_file.download_as_bytearray())


def retry_after_seconds(error: RetryAfter) -> float:
    """``retry_after`` as seconds, whether PTB gives an int or a timedelta (PTB_TIMEDELTA)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = error.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


class RetryAfterLimiter(BaseRateLimiter[None]):
    """React to 429 only: wait ``retry_after`` and send again, up to ``max_retries`` times, and never more than
    ``max_total_wait_s`` in all for one request (a handler waiting on flood control holds its slot all that time;
    past the budget the 429 goes to the handler, which fails like any Telegram error).

    PTB's own AIORateLimiter needs the ``rate-limiter`` extra (aiolimiter); this needs nothing and covers
    every bot call, so no handler has to know about flood control. getUpdates never comes through here.
    """

    def __init__(self, max_retries: int = 3, max_wait_s: float = 60.0, max_total_wait_s: float = 60.0,
                 sleep: Callable[[float], Coroutine[Any, Any, None]] = asyncio.sleep,
                 observer: Callable[[str, bool], None] | None = None):
        self.max_retries = max_retries
        self.max_wait_s = max_wait_s
        self.max_total_wait_s = max_total_wait_s
        self._sleep = sleep
        self.observer = observer  # (method, retried) per 429: bot.ops.metrics.BotMetrics.telegram_429

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def process_request(self, callback, args, kwargs, endpoint, data, rate_limit_args):
        attempt, waited = 0, 0.0
        while True:
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as error:
                attempt += 1
                wait = retry_after_seconds(error)
                retrying = attempt <= self.max_retries and wait <= self.max_wait_s and waited + wait <= self.max_total_wait_s
                if self.observer is not None:
                    self.observer(str(endpoint), retrying)
                if not retrying:
                    log.warning("429 on %s: retry_after %.1f s is past the budget (%d retries, %.0f s waited); "
                                "giving up", endpoint, wait, attempt - 1, waited)
                    raise
                log.warning("429 on %s: waiting %.1f s before retry %d/%d", endpoint, wait, attempt, self.max_retries)
                await self._sleep(wait + 0.1)
                waited += wait + 0.1
