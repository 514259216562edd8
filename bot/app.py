"""Wiring: settings -> Application with every handler registered here, services started and stopped with it.

The model, the inference threads and the SQLite store start in :meth:`BotApplication.initialize` (so the
same code path serves ``run_polling``/``run_webhook`` and ``async with app: await app.start()`` in tests)
and stop in :meth:`BotApplication.stop`/``shutdown``: queued classifications are answered, heat maps are
cancelled, so SIGINT/SIGTERM end the process within seconds.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import signal
import sys
import warnings
from pathlib import Path
from urllib.parse import urlparse

from telegram import BotCommand, Update
from telegram.error import TelegramError
from telegram.warnings import PTBDeprecationWarning
from telegram.ext import (Application, ApplicationBuilder, CallbackQueryHandler, CommandHandler, Defaults,
                          MessageHandler, filters)

from model import CheckpointError, Classifier, load_classifier
from model.memory import keep_freed_memory

from . import feedback, handlers, messages, why
from .config import ConfigError, Settings
from .logging_setup import configure_logging
from .services import SERVICES_KEY, BotServices
from .stats import BotStats
from .store import PhotoStore
from .telegram_io import RetryAfterLimiter
from .worker import InferenceService, ServiceConfig

log = logging.getLogger(__name__)

GIL_SWITCH_INTERVAL_S = 0.0005


class BotApplication(Application):
    """PTB's Application plus the bot's services (model, inference threads, photo store)."""

    def __init__(self, *, settings: Settings, classifier: Classifier | None = None, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self._given_classifier = classifier
        self._services: BotServices | None = None

    async def initialize(self) -> None:
        await super().initialize()
        if self._services is None:
            self._services = await start_services(self.settings, self._given_classifier)
            self.bot_data[SERVICES_KEY] = self._services
            await register_commands(self)

    async def stop(self) -> None:
        # Before PTB waits for running handlers: cancel heat maps and answer what is queued, so a pending
        # /why (a minute of work) cannot hold up a SIGTERM.
        if self._services is not None:
            await self._services.inference.stop()
        await super().stop()

    async def shutdown(self) -> None:
        if self._services is not None:
            await self._services.inference.stop()
            self._services.store.close()
            self._services = None
        await super().shutdown()


async def start_services(settings: Settings, classifier: Classifier | None) -> BotServices:
    feedback_store = await feedback.open_store(settings)  # before any thread starts: a bad FEEDBACK_DIR stops here
    if classifier is None:
        classifier = await asyncio.to_thread(load_classifier, settings.checkpoint_path)
    inference = InferenceService(classifier, ServiceConfig(
        max_batch=settings.max_batch,
        max_batch_wait_s=settings.max_batch_wait_s,
        queue_size=settings.queue_size,
        per_chat_queue=settings.per_chat_queue,
        why_queue_size=settings.why_queue_size,
        decode_workers=settings.workers,
        torch_threads=settings.torch_threads,
        explain_batch_size=settings.why_batch_size,
        explain_cache_size=settings.explain_cache_size,
        warm_up_batch=settings.warm_up_photos,
        frozen_graph=settings.frozen_graph,
        classify_workers=settings.classify_worker_count,
    ))
    inference.start()
    store = await asyncio.to_thread(PhotoStore.in_dir, settings.data_dir)
    log.info("model loaded: classes=%s checkpoint=%s torch_threads=%d classify_workers=%d decode_workers=%d",
             ",".join(classifier.class_names), classifier.checkpoint_id[:12], settings.torch_threads,
             settings.classify_worker_count, settings.workers)
    return BotServices(settings=settings, classifier=classifier, inference=inference, store=store, stats=BotStats(),
                       feedback=feedback_store)


async def register_commands(application: Application) -> None:
    """setMyCommands, so Telegram shows the menu; a failure here is logged, not fatal."""
    try:
        await application.bot.set_my_commands([BotCommand(name, text) for name, text in messages.COMMANDS])
    except TelegramError as error:
        log.warning("setMyCommands failed (the menu may be stale): %s", error)


def build_application(settings: Settings, classifier: Classifier | None = None) -> BotApplication:
    """The Application with every handler registered; the model loads in ``initialize`` unless given."""
    application = (
        ApplicationBuilder()
        .application_class(BotApplication, kwargs={"settings": settings, "classifier": classifier})
        .token(settings.token)
        .base_url(settings.api_base_url)
        .base_file_url(settings.file_base_url)
        # Every answer quotes what it answers (albums, busy groups), even if that message was deleted meanwhile.
        .defaults(Defaults(do_quote=True, allow_sending_without_reply=True))
        .concurrent_updates(256)  # handlers await the worker; without this, micro-batches would never form
        # httpcore checks every pooled connection (a few syscalls each) to place each request: with PTB's
        # 256, a burst of 100 photos opened 100+ connections and the scan took over half the event loop's
        # CPU. 16 still covers what the model can use (~20 photos/s x 3 requests x a tenth of a second per
        # Telegram round trip); the rest wait their turn, up to pool_timeout.
        .connection_pool_size(settings.http_connections)
        .pool_timeout(30.0)
        .rate_limiter(RetryAfterLimiter(max_retries=settings.retry_after_max_retries))
        .get_updates_read_timeout(settings.poll_timeout + 5)
        .build()
    )
    add_handlers(application)
    return application


def add_handlers(application: Application) -> None:
    """Every handler, in the order PTB tries them (first match wins). Only new messages count: an edited
    caption or a channel post must not start a second classification."""
    new_message = filters.UpdateType.MESSAGE
    application.add_handler(CommandHandler("start", handlers.start, filters=new_message))
    application.add_handler(CommandHandler("help", handlers.help_command, filters=new_message))
    application.add_handler(CommandHandler("why", why.why_command, filters=new_message))
    application.add_handler(CommandHandler("stats", handlers.stats_command, filters=new_message))
    application.add_handler(CallbackQueryHandler(why.why_button, pattern=r"^why:"))
    feedback.add_handlers(application)
    application.add_handler(CallbackQueryHandler(handlers.stale_button))
    application.add_handler(MessageHandler(new_message & filters.PHOTO, handlers.photo))
    application.add_handler(MessageHandler(new_message & filters.Document.ALL, handlers.document))
    application.add_handler(MessageHandler(new_message & filters.COMMAND, handlers.unknown_command))
    application.add_handler(MessageHandler(new_message & filters.TEXT, handlers.text))
    application.add_handler(MessageHandler(new_message & ~filters.StatusUpdate.ALL, handlers.other_message))
    application.add_error_handler(handlers.on_error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Run the product-recognition Telegram bot.")
    parser.add_argument("--env-file", type=Path, default=Path(".env"), help="settings file (default: .env)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(env_file=args.env_file)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not settings.checkpoint_path.is_file():
        print(f"error: no model checkpoint at {settings.checkpoint_path}: train one with `make train` "
              "(or set CHECKPOINT_PATH)", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, [settings.token, settings.webhook_secret, settings.feedback_salt])
    # PTB warns on every 429 that RetryAfter.retry_after will become a timedelta; bot.telegram_io handles both.
    warnings.filterwarnings("ignore", message=".*retry_after.*", category=PTBDeprecationWarning)
    keep_freed_memory()  # before the model's threads start; see model/memory.py
    # The classifier thread takes the GIL back between layers, hundreds of times a forward pass; while the
    # event loop is busy it waited up to Python's default 5 ms turn each time. bench/bench_gil.py: a
    # forward pass beside a busy Python thread, 200 ms/photo at 5 ms turns, 149 at 1 ms, 130 at 0.5 ms.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        # Loaded before any network call, so a bad checkpoint fails at once instead of after getMe retries.
        classifier = load_classifier(settings.checkpoint_path)
    except CheckpointError as error:
        print(f"error: cannot load {settings.checkpoint_path}: {error} (retrain with `make train`)", file=sys.stderr)
        return 2
    application = build_application(settings, classifier)
    try:
        if settings.webhook_url:
            return run_webhook(application, settings)
        application.run_polling(poll_interval=0.0, timeout=settings.poll_timeout, bootstrap_retries=-1,
                                allowed_updates=Update.ALL_TYPES, stop_signals=(signal.SIGINT, signal.SIGTERM))
    except (CheckpointError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def run_webhook(application: Application, settings: Settings) -> int:
    if importlib.util.find_spec("tornado") is None:
        print('error: WEBHOOK_URL needs python-telegram-bot[webhooks] (tornado): pip install '
              '"python-telegram-bot[webhooks]", or unset WEBHOOK_URL to use polling', file=sys.stderr)
        return 2
    application.run_webhook(
        listen=settings.webhook_listen,
        port=settings.webhook_port,
        url_path=urlparse(settings.webhook_url).path.lstrip("/"),
        webhook_url=settings.webhook_url,
        secret_token=settings.webhook_secret or None,
        bootstrap_retries=-1,
        allowed_updates=Update.ALL_TYPES,
        stop_signals=(signal.SIGINT, signal.SIGTERM),
    )
    return 0
