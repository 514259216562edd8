"""Wiring: settings -> Application with every handler registered here, services started and stopped with it.

The model, the inference scheduler and the SQLite store start in :meth:`BotApplication.initialize` (so the
same code path serves ``run_polling``/``run_webhook`` and ``async with app: await app.start()`` in tests);
initialize returns once the scheduler has warmed up and the journal's unfinished requests are queued
again, so polling starts at full speed. They stop in :meth:`BotApplication.stop`/``shutdown``: queued
classifications are answered, heat maps end at their next pause point and stay in the journal for the
next start, so SIGINT/SIGTERM end the process within seconds. Open albums (bot.handlers.albums) end the same way.

Before anyone is served, state older than RETENTION_DAYS is purged (bot.state.retention), then hourly; the
clock it reads can be given (``build_application(..., clock=...)``) so tests can move time forward.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import signal
import sqlite3
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from telegram import BotCommand, ReplyParameters, Update
from telegram.error import InvalidToken, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    Defaults,
    MessageHandler,
    filters,
)
from telegram.warnings import PTBDeprecationWarning

from bot import messages
from bot.config import ConfigError, Settings
from bot.handlers import commands as handlers
from bot.handlers import feedback, why
from bot.handlers.albums import Albums
from bot.handlers.budget import BytesInFlight
from bot.handlers.buttons import WhyData, WhyNotData
from bot.handlers.request import DEFERRED_KEY, on_error
from bot.handlers.telegram_io import RetryAfterLimiter
from bot.handlers.webhook import webhook_arguments, with_webhook_secret
from bot.i18n import ENGLISH, CatalogError, Languages
from bot.inference.reload import reload_model
from bot.ops.health import HealthMonitor
from bot.ops.logging_setup import configure_logging, install_redacting_hooks, redacting_loop_handler
from bot.ops.metrics import BotMetrics, observe_inference
from bot.ops.metrics_server import MetricsServer
from bot.ops.stats import BotStats
from bot.services import SERVICES_KEY, BotServices
from bot.state.journal import Journal, JournalingQueue, OpenEntry
from bot.state.retention import purge_old_state
from bot.state.store import PhotoStore
from model import CheckpointError
from model.memory import keep_freed_memory

if TYPE_CHECKING:
    from bot.inference.cluster import ClusterInference as ClusterBackend
    from bot.inference.local import InferenceScheduler as LocalBackend
    from model import Classifier

log = logging.getLogger(__name__)

# Python's default 5 ms GIL turn: an eager forward pass takes the GIL back between layers and waited
# up to a turn each time the event loop was busy (bench/bench_gil.py measures the effect).
GIL_SWITCH_INTERVAL_S = 0.0005
JOURNAL_PURGE_EVERY_S = 3600.0  # also the retention purge (bot.state.retention)
PURGE_RETRY_S = (60.0, 3600.0)  # after a failed purge: first retry, then doubling up to this
POLLING_DIED_EXIT_STATUS = 1  # python -m bot's exit status when PTB's polling loop died: the supervisor restarts it


class BotApplication(Application):
    """PTB's Application plus the bot's services (model, inference threads, photo store)."""

    def __init__(self, *, settings: Settings, classifier: Classifier | None = None,
                 clock: Callable[[], float] = time.time, metrics: BotMetrics | None = None, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.metrics = metrics or BotMetrics()  # /metrics and /stats (bot.ops.metrics)
        self.health = HealthMonitor(self, self.metrics)  # /livez, /readyz, the systemd watchdog (bot.ops.health)
        self.metrics_server: MetricsServer | None = None  # METRICS_PORT's endpoint (bot.ops.metrics_server)
        self.clock = clock  # wall-clock seconds for the journal, the photo store and the retention purge
        self._given_classifier = classifier
        self._services: BotServices | None = None
        self._purging: asyncio.Task | None = None
        self._suspects: list[Update] = []  # resumed updates that were in progress at a crash: run one at a time
        self._running_suspects: asyncio.Task | None = None
        self.polling_error: BaseException | None = None  # set when PTB's polling loop died (see _watch_polling)
        self.reload_on_sighup = False  # python -m bot sets it: SIGHUP reloads the checkpoint (bot.inference.reload)

    async def initialize(self) -> None:
        await super().initialize()
        if self._services is None:
            await self._start_health()  # before the warm-up, so /readyz answers 503 while it runs
            try:
                self._services = await start_services(self.settings, self._given_classifier, self.clock, self.metrics)
            except BaseException:
                await self._stop_health()
                raise
            self.bot_data[SERVICES_KEY] = self._services
            await register_commands(self)
            await self._purge_old_state()
            await self._resume_journal()
            if self.reload_on_sighup:
                asyncio.get_running_loop().add_signal_handler(
                    signal.SIGHUP, lambda: asyncio.ensure_future(reload_model(self, "SIGHUP")))
            self._purging = asyncio.create_task(self._purge_every(JOURNAL_PURGE_EVERY_S))
            self.health.refresh()

    async def _start_health(self) -> None:
        self.health.start()
        if self.settings.metrics_port is not None and self.metrics_server is None:
            server = MetricsServer(self.settings.metrics_listen, self.settings.metrics_port, self.metrics.registry,
                                   self.health)
            try:
                server.start()
            except OSError as error:  # the port is taken, the address is not ours: a configuration error
                await self.health.stop()
                raise ConfigError(f"METRICS_PORT={self.settings.metrics_port} on {self.settings.metrics_listen} "
                                  f"cannot be used: {error.strerror or error}") from None
            self.metrics_server = server

    async def _stop_health(self) -> None:
        await self.health.stop()
        if self.metrics_server is not None:
            await asyncio.to_thread(self.metrics_server.stop)
            self.metrics_server = None

    def background_tasks(self) -> dict[str, asyncio.Task | None]:
        """The loops /livez checks (bot.ops.health): one that ended means the bot is no longer whole."""
        return {"purge": self._purging}

    async def _resume_journal(self) -> None:
        """Queue again what the last run accepted and did not answer (before polling starts). Suspects (in
        progress when the last run died) run one at a time once the bot has started; those set aside by the
        poison-pill rule (bot.state.journal) are told so. A row that cannot be read back is dropped, logged."""
        journal, max_age_s = self._services.journal, self.settings.journal_max_age_hours * 3600
        self.update_queue.journal = journal
        resumption = await asyncio.to_thread(journal.resume_all, max_age_s)
        for entry in resumption.resumed:
            update = await self._read_back(entry)
            if update is None:
                continue
            if entry.crashes:
                self._suspects.append(update)
            else:
                await self.update_queue.put_resumed(update)
            self.metrics.resumed(1)
        for entry in resumption.set_aside:
            self.metrics.poison_pill(1)
            await self._tell_set_aside(entry)
        if resumption.resumed:
            log.info("journal: resuming %d unfinished request(s) from the last run (%d one at a time)",
                     len(resumption.resumed), len(self._suspects))

    async def _read_back(self, entry: OpenEntry) -> Update | None:
        try:
            update = Update.de_json(json.loads(entry.update_json), self.bot)
            if not isinstance(update, Update):
                raise TypeError(f"not an update but {type(update).__name__}")
            if update.update_id != entry.update_id:  # not the row's own update (its id is the table's key)
                raise ValueError(f"it names update_id {str(update.update_id)[:20]!r}")
            return update
        except Exception as error:  # any malformed row (not JSON, not an object, not an update): drop it, go on
            log.error("journal: update %d (%s) cannot be read back (%s: %s); dropped", entry.update_id, entry.kind,
                      type(error).__name__, error)
            try:
                await asyncio.to_thread(self._services.journal.done, entry.update_id)
            except sqlite3.Error as db_error:
                log.error("journal: cannot close update %d: %s", entry.update_id, db_error)
            return None

    async def _tell_set_aside(self, entry: OpenEntry) -> None:
        """One message to the user whose update was set aside (its chat, in their language, quoting it)."""
        update = await self._read_back(entry)
        chat = update.effective_chat if update is not None else None
        if chat is None:
            return
        message = update.effective_message
        lang = self._services.languages.for_user(update.effective_user)
        reply = ReplyParameters(message.message_id, allow_sending_without_reply=True) if message is not None else None
        try:
            await self.bot.send_message(chat.id, lang.gettext(messages.SET_ASIDE), reply_parameters=reply)
        except TelegramError as error:
            log.warning("journal: could not tell chat %s that update %d was set aside: %s", chat.id, entry.update_id,
                        error)

    async def start(self) -> None:
        await super().start()
        if self._suspects:
            suspects, self._suspects = self._suspects, []
            self._running_suspects = asyncio.create_task(self._run_one_at_a_time(suspects))
        self._watch_polling()
        self.health.refresh()

    async def _run_one_at_a_time(self, updates: list[Update]) -> None:
        """Each suspect alone (new updates still run beside it): if one kills the process again, it is the
        only suspect in progress, so the poison-pill rule sets aside the culprit, not the bystanders."""
        for update in updates:
            try:
                await self.process_update(update)
            except Exception:  # PTB's error handler has seen it; the next suspect still runs
                log.exception("journal: resumed update %d failed", update.update_id)

    def _watch_polling(self) -> None:
        """If PTB's polling loop dies (an exception it does not retry), stop the application so that python -m
        bot exits with POLLING_DIED_EXIT_STATUS and its supervisor starts a fresh process, instead of a
        process that stays up and never polls again. PTB names the task; it has no public handle."""
        polling = next((task for task in asyncio.all_tasks() if task.get_name() == "Updater:start_polling:polling_task"),
                       None)
        if polling is None:  # webhook mode, or tests that start no updater
            return

        def on_done(task: asyncio.Task) -> None:
            if task.cancelled() or task.exception() is None or not self.running:
                return
            self.polling_error = task.exception()
            log.critical("polling for updates stopped (%s: %s); stopping so the supervisor restarts the bot",
                         type(self.polling_error).__name__, self.polling_error)
            asyncio.ensure_future(self._stop_after_polling_died())

        polling.add_done_callback(on_done)

    async def _stop_after_polling_died(self) -> None:
        """The updater stopped here, its polling task's error swallowed (logged above; main() reports it):
        otherwise PTB's run_polling raises it again from updater.stop() and never stops the services."""
        try:
            await self.updater.stop()
        except Exception:  # the polling loop's own error, raised again by awaiting its task
            pass
        self.stop_running()

    async def _purge_every(self, seconds: float, retry_s: tuple[float, float] = PURGE_RETRY_S) -> None:
        """The journal's answered entries after JOURNAL_MAX_AGE_HOURS, and everything after RETENTION_DAYS
        (initialize did that once already). A failure (a locked or full database, a bad record) is logged and
        tried again after ``retry_s[0]``, doubling up to ``retry_s[1]``: one error must not end retention for
        the life of the process."""
        wait, old_state_too = retry_s[0], False
        while True:
            try:
                removed = await asyncio.to_thread(self._services.journal.purge,
                                                  self.settings.journal_max_age_hours * 3600)
                if removed:
                    log.info("journal: %d finished entries older than %g h removed", removed,
                             self.settings.journal_max_age_hours)
                if old_state_too:
                    await self._purge_old_state()
            except Exception as error:
                log.error("purge failed (%s: %s); trying again in %g s", type(error).__name__, error, wait)
                await asyncio.sleep(wait)
                wait = min(2 * wait, retry_s[1])
                continue
            wait, old_state_too = retry_s[0], True
            await asyncio.sleep(seconds)

    async def _purge_old_state(self):
        """RETENTION_DAYS (bot.state.retention), in a thread."""
        svc = self._services
        inbox = svc.feedback.inbox if svc.feedback is not None else None
        return await asyncio.to_thread(purge_old_state, svc.store, svc.journal, inbox, self.settings.retention_days,
                                       self.clock)

    async def process_update(self, update: object) -> None:
        """PTB's dispatch, then the journal entry marked done: every handler for it has finished (a reply was
        sent, or the update needed none), unless the shutdown cut it short (it is resumed at the next start).
        Before the dispatch it is marked in progress: if the process dies meanwhile, the poison-pill rule
        (bot.state.journal) charges it a crash."""
        journaled = isinstance(update, Update) and self._services is not None
        if journaled:
            await self._journal_write(self._services.journal.start, update.update_id)
        await super().process_update(update)
        if journaled and self._services is not None:
            deferred = self.bot_data.get(DEFERRED_KEY, set())
            if update.update_id in deferred:
                deferred.discard(update.update_id)
                await self._journal_write(self._services.journal.put_back, update.update_id)
                return
            chat = update.effective_chat
            checkpoint = self._services.classifier_for(chat.id if chat else None).checkpoint_id
            await self._journal_write(self._services.journal.done, update.update_id, checkpoint)

    @staticmethod
    async def _journal_write(write, update_id: int, *args) -> None:
        """A journal write for a running update; a failing disk is logged, and does not stop the answer."""
        try:
            await asyncio.to_thread(write, update_id, *args)
        except sqlite3.Error as error:
            log.error("journal: cannot record update %d (%s: %s)", update_id, write.__name__, error)

    async def stop(self) -> None:
        # Before PTB waits for running handlers: end heat maps and answer what is queued, so a pending
        # /why (a minute of work) cannot hold up a SIGTERM.
        self.health.begin_stop()  # /readyz 503 and systemd's STOPPING=1 from now on
        if self._services is not None:
            self._services.albums.stop()
            await self._services.inference.stop()
        await super().stop()

    async def shutdown(self) -> None:
        if self._services is not None:
            for task in (self._purging, self._running_suspects):
                if task is not None:
                    task.cancel()
            await self._services.inference.stop()
            self._services.store.close()
            self._services.journal.close()
            self._services = None
        await self._stop_health()
        await super().shutdown()


async def start_services(settings: Settings, classifier: Classifier | None,
                         clock: Callable[[], float] = time.time, metrics: BotMetrics | None = None) -> BotServices:
    try:
        languages = await asyncio.to_thread(Languages)
    except CatalogError as error:  # before any thread starts, like a bad FEEDBACK_DIR
        raise ConfigError(str(error)) from None
    feedback_store = await feedback.open_store(settings)  # before any thread starts: a bad FEEDBACK_DIR stops here
    inference = await asyncio.to_thread(backend_for(settings).from_settings, settings, classifier)
    metrics = metrics or BotMetrics()
    observe_inference(metrics, inference)
    started = time.monotonic()
    inference.start()
    try:
        store = await asyncio.to_thread(PhotoStore.in_dir, settings.data_dir, clock, settings.button_secret)
        journal = await asyncio.to_thread(Journal.in_dir, settings.data_dir, clock)
        await inference.ready()  # and the canary served, when set: a bad CANARY_CHECKPOINT stops the start here
    except GeneratorExit:  # a stop signal during the start: the loop is closing, nothing more can be awaited
        raise
    except BaseException:  # a bad DATA_DIR or CANARY_CHECKPOINT, a cluster refusing the token: no threads left behind
        await inference.stop()
        raise
    served = inference.classifier
    log.info("inference ready in %.2f s: classes=%s checkpoint=%s; %s", time.monotonic() - started,
             ",".join(served.class_names), served.checkpoint_id[:12], inference.stats_lines().get("forward", ""))
    return BotServices(settings=settings, inference=inference, store=store, journal=journal, stats=BotStats(metrics=metrics),
                       feedback=feedback_store, languages=languages, albums=Albums(settings.album_wait_s),
                       bytes_in_flight=BytesInFlight(settings.max_bytes_in_flight))


def backend_for(settings: Settings) -> type[LocalBackend] | type[ClusterBackend]:
    """The one place that reads the mode: the cluster at INFERENCE_ADDRESS (a gateway: no torch, no Ray here),
    else the model in this process. Both implement :class:`bot.inference.contract.InferenceBackend`."""
    if settings.inference_address:
        from bot.inference.cluster import ClusterInference

        return ClusterInference
    from bot.inference.local import InferenceScheduler

    return InferenceScheduler


async def register_commands(application: Application) -> None:
    """setMyCommands, so Telegram shows the menu: English for everyone, then each shipped language for the
    users whose Telegram is set to it. A failure here is logged, not fatal."""
    languages = application.bot_data[SERVICES_KEY].languages
    for code in languages.codes:
        lang = languages.get(code)
        try:
            await application.bot.set_my_commands([BotCommand(name, lang.gettext(text)) for name, text in messages.COMMANDS],
                                                  language_code=None if lang is ENGLISH else code)
        except TelegramError as error:
            log.warning("setMyCommands (%s) failed (the menu may be stale): %s", code, error)


def build_application(settings: Settings, classifier: Classifier | None = None,
                      clock: Callable[[], float] = time.time) -> BotApplication:
    """The Application with every handler registered; the model loads in ``initialize`` unless given."""
    metrics = BotMetrics()
    application = (
        ApplicationBuilder()
        .application_class(BotApplication, kwargs={"settings": settings, "classifier": classifier, "clock": clock,
                                                   "metrics": metrics})
        .update_queue(JournalingQueue())
        .token(settings.token)
        .base_url(settings.api_base_url)
        .base_file_url(settings.file_base_url)
        # Every answer quotes what it answers (albums, busy groups), even if that message was deleted meanwhile.
        .defaults(Defaults(do_quote=True, allow_sending_without_reply=True))
        .concurrent_updates(256)  # handlers await the worker; without this, micro-batches would never form
        # httpcore checks every pooled connection (a few syscalls each) to place each request: with PTB's
        # 256, a burst of 100 photos opened 100+ connections and the scan took over half the event loop's
        # CPU. 16 still covers what the model can use (tens of photos/s x 3 requests x a tenth of a second per
        # Telegram round trip); the rest wait their turn, up to pool_timeout.
        .connection_pool_size(settings.http_connections)
        .pool_timeout(30.0)
        .rate_limiter(RetryAfterLimiter(max_retries=settings.retry_after_max_retries, observer=metrics.telegram_429))
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
    application.add_handler(CommandHandler("privacy", handlers.privacy_command, filters=new_message))
    application.add_handler(CommandHandler("stats", handlers.stats_command, filters=new_message))
    application.add_handler(CommandHandler("reload", handlers.reload_command, filters=new_message))
    # Each button's codec (bot.handlers.buttons) decides what reaches its handler; malformed data goes to stale_button.
    application.add_handler(CallbackQueryHandler(why.why_button, pattern=WhyData.decode))
    application.add_handler(CallbackQueryHandler(why.why_not_button, pattern=WhyNotData.decode))
    feedback.add_handlers(application)
    application.add_handler(CallbackQueryHandler(handlers.stale_button))
    application.add_handler(MessageHandler(new_message & filters.PHOTO, handlers.photo))
    application.add_handler(MessageHandler(new_message & filters.Document.ALL, handlers.document))
    application.add_handler(MessageHandler(new_message & filters.COMMAND, handlers.unknown_command))
    application.add_handler(MessageHandler(new_message & filters.TEXT, handlers.text))
    application.add_handler(MessageHandler(new_message & ~filters.StatusUpdate.ALL, handlers.other_message))
    application.add_error_handler(on_error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Run the product-recognition Telegram bot.")
    parser.add_argument("--env-file", type=Path, default=Path(".env"), help="settings file (default: .env)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(env_file=args.env_file)
        cluster_token = settings.cluster_token()  # a bad INFERENCE_TOKEN_FILE stops here, with one line
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    secret_generated = bool(settings.webhook_url and not settings.webhook_secret)
    settings = with_webhook_secret(settings)  # before the log starts: a generated secret is redacted too
    secrets_in_use = [*settings.secrets(), cluster_token]
    configure_logging(settings.log_level, secrets_in_use)
    install_redacting_hooks(secrets_in_use)  # whatever escapes logging (a final traceback) is redacted too
    if secret_generated:
        log.info("webhook: WEBHOOK_SECRET is unset: a new random one is registered with setWebhook at this start")
    # PTB warns on every 429 that RetryAfter.retry_after will become a timedelta; bot.handlers.telegram_io handles both.
    warnings.filterwarnings("ignore", message=".*retry_after.*", category=PTBDeprecationWarning)
    keep_freed_memory()  # before the model's threads start; see model/memory.py
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        # A gateway checks nothing here; the model in process is loaded before any network call, so a bad
        # checkpoint or DEVICE fails at once instead of after getMe retries.
        classifier = backend_for(settings).preflight(settings)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    application = build_application(settings, classifier)
    application.reload_on_sighup = True
    loop = asyncio.new_event_loop()  # PTB runs on the current loop: this one reports its errors redacted
    loop.set_exception_handler(redacting_loop_handler)
    asyncio.set_event_loop(loop)
    try:
        if settings.webhook_url:
            return run_webhook(application, settings)
        application.run_polling(poll_interval=0.0, timeout=settings.poll_timeout, bootstrap_retries=-1,
                                allowed_updates=Update.ALL_TYPES, stop_signals=(signal.SIGINT, signal.SIGTERM))
        if isinstance(application.polling_error, InvalidToken):  # the token was revoked meanwhile: said below
            raise application.polling_error
        if application.polling_error is not None:  # polling died: a non-zero status, so the supervisor restarts us
            return POLLING_DIED_EXIT_STATUS
    except (CheckpointError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except InvalidToken:  # its message quotes the token: not printed (the log line PTB wrote is redacted)
        print("error: Telegram refused TELEGRAM_BOT_TOKEN (401 Unauthorized): copy the token @BotFather gave "
              "again (a /revoke there replaces it)", file=sys.stderr)
        return 2
    return 0


def run_webhook(application: Application, settings: Settings) -> int:
    if importlib.util.find_spec("tornado") is None:
        print('error: WEBHOOK_URL needs python-telegram-bot[webhooks] (tornado): pip install '
              '"python-telegram-bot[webhooks]", or unset WEBHOOK_URL to use polling', file=sys.stderr)
        return 2
    application.run_webhook(**webhook_arguments(settings), bootstrap_retries=-1, stop_signals=(signal.SIGINT, signal.SIGTERM))
    return 0
