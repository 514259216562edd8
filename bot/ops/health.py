"""Liveness, readiness and the systemd watchdog, judged on the event loop once a second.

A :class:`HealthMonitor` task wakes every tick (1 s, or half of systemd's ``WATCHDOG_USEC`` if shorter) and
- checks that what must run runs: the polling task (or the webhook server), the inference threads, the
  bot's background loops; one that ended makes the bot not *live*;
- decides whether it is *ready*: the model warmed (the services started), the Application running, polling
  (or its webhook server up), not stopping, and in gateway mode the cluster reachable;
- samples the gauges of :mod:`bot.ops.metrics` (queues, models; the journal and live accuracy less often, in a
  thread), so the HTTP thread never touches the bot's objects;
- pings systemd's watchdog (``WATCHDOG=1``) while live. The ping is sent from the event loop, so a wedged
  loop stops it as surely as a dead component, and systemd restarts the bot (``WatchdogSec=`` in
  deploy/product-id-bot.service).
The HTTP endpoint (bot/ops/metrics_server.py) reads :meth:`HealthMonitor.status`, which also calls the bot dead
when the loop has not ticked for ``LOOP_STALL_S``.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

from bot.ops.metrics import BotMetrics

log = logging.getLogger(__name__)

TICK_S = 1.0
LOOP_STALL_S = 10.0  # an event loop that has not ticked for this long is wedged: /livez says so
SLOW_SAMPLE_EVERY_S = 15.0  # the journal's open entries and live accuracy (SQLite, the inbox): in a thread
POLLING_TASK_NAME = "Updater:start_polling:polling_task"  # python-telegram-bot's name for its polling task
SERVICES_KEY = "services"  # bot.services.SERVICES_KEY (not imported: bot.services imports the handlers' world)


def sd_notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """One datagram to systemd's ``$NOTIFY_SOCKET`` (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``); False when
    not run by systemd (no socket) or when it could not be sent. Never blocks."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(message.encode(), address)
        return True
    except OSError as error:
        log.warning("sd_notify %s to %s failed: %s", message, address, error)
        return False


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """Half of systemd's ``WATCHDOG_USEC`` (its advice), if the watchdog is on for this process."""
    environ = os.environ if environ is None else environ
    usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid.isdigit() and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6


@dataclass(frozen=True)
class Status:
    live: bool
    live_reason: str
    ready: bool
    ready_reason: str


class HealthMonitor:
    """Judges the bot (a :class:`bot.app.BotApplication`) on its event loop; see the module docstring."""

    def __init__(self, application, metrics: BotMetrics, environ: Mapping[str, str] | None = None):
        self.application = application
        self.metrics = metrics
        self._environ = dict(os.environ if environ is None else environ)
        self._watchdog_s = watchdog_interval_s(self._environ)
        self.tick_s = min(TICK_S, self._watchdog_s) if self._watchdog_s else TICK_S
        self.stopping = False
        self.ready_sent = False
        self._status = Status(True, "starting", False, "warming up")
        self._last_tick = time.monotonic()
        self._task: asyncio.Task | None = None
        self._slow: asyncio.Task | None = None
        self._last_slow = -SLOW_SAMPLE_EVERY_S
        self._polling_task: asyncio.Task | None = None

    # ---- life cycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self.stopping, self._polling_task = False, None  # an Application started again after a shutdown
            self._last_tick = time.monotonic()
            self._task = asyncio.create_task(self._run(), name="health-monitor")

    def refresh(self) -> None:
        """Judge and sample now, not at the next tick (the Application calls it when its state changed)."""
        self._judge()
        self._sample()

    def begin_stop(self) -> None:
        """Not ready from now on (PTB is about to stop); systemd hears STOPPING=1."""
        if not self.stopping:
            self.stopping = True
            self._judge()
            sd_notify("STOPPING=1", self._environ)

    async def stop(self) -> None:
        self.begin_stop()
        for task in (self._task, self._slow):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = self._slow = None

    async def _run(self) -> None:
        while True:
            try:
                self._judge()
                self._sample()
            except Exception:  # a bug here must not end the monitor (that would read as a wedged bot)
                log.exception("health check failed")
            await asyncio.sleep(self.tick_s)

    # ---- what the HTTP thread reads --------------------------------------------------------------------
    def status(self) -> Status:
        stalled = time.monotonic() - self._last_tick
        if self._task is not None and stalled > LOOP_STALL_S:
            reason = f"the event loop has not run for {stalled:.0f} s"
            return Status(False, reason, False, reason)
        return self._status

    # ---- judging ---------------------------------------------------------------------------------------
    def _judge(self) -> None:
        self._last_tick = time.monotonic()
        dead = self._dead_part()
        not_ready = dead or self._not_ready()
        self._status = Status(not dead, dead or "ok", not not_ready, not_ready or "ok")
        self.metrics.live.set(0 if dead else 1)
        self.metrics.ready.set(0 if not_ready else 1)
        if not not_ready and not self.ready_sent:
            self.ready_sent = True
            sd_notify("READY=1", self._environ)
        if not dead and self._watchdog_s and not self.stopping:
            sd_notify("WATCHDOG=1", self._environ)

    def _services(self):
        return self.application.bot_data.get(SERVICES_KEY)

    def _dead_part(self) -> str:
        """What should run and has ended ("" when all is well)."""
        if self.stopping:
            return ""
        updater = self.application.updater
        if self._polling_task is None:
            self._polling_task = next((task for task in asyncio.all_tasks() if task.get_name() == POLLING_TASK_NAME), None)
        if updater is not None and updater.running:
            if self._polling_task is not None and self._polling_task.done():
                return "the polling loop ended"
            httpd = getattr(updater, "_httpd", None)  # PTB's webhook server, while run_webhook serves
            if self._polling_task is None and httpd is not None and not httpd.is_running:
                return "the webhook server stopped"
        svc = self._services()
        if svc is not None:
            for thread in getattr(svc.inference, "threads", ()):
                if not thread.is_alive():
                    return f"inference thread {thread.name} ended"
        for name, task in getattr(self.application, "background_tasks", dict)().items():
            if task is not None and task.done():
                return f"the {name} loop ended"
        return ""

    def _not_ready(self) -> str:
        if self.stopping:
            return "stopping"
        svc = self._services()
        if svc is None:
            return "warming up"
        if not self.application.running:
            return "not started"
        updater = self.application.updater
        polling = self._polling_task is not None and not self._polling_task.done()
        httpd = getattr(updater, "_httpd", None) if updater is not None else None
        if not (updater is not None and updater.running and (polling or (httpd is not None and httpd.is_running))):
            return "not polling (nor serving a webhook)"
        if not getattr(svc.inference, "reachable", True):
            return "the inference cluster is unreachable"
        return ""

    # ---- gauges ----------------------------------------------------------------------------------------
    def _sample(self) -> None:
        svc = self._services()
        if svc is None:
            return
        inference, metrics = svc.inference, self.metrics
        for queue, depth in inference.queue_depths().items():
            metrics.queue_depth.labels(queue).set(depth)
        metrics.maps_cached.set(inference.maps_cached())
        metrics.set_models(sorted(getattr(inference, "models", {}).items()))
        now = time.monotonic()
        if now - self._last_slow >= SLOW_SAMPLE_EVERY_S and (self._slow is None or self._slow.done()):
            self._last_slow = now
            self._slow = asyncio.create_task(self._sample_slowly(svc), name="health-slow-sample")

    async def _sample_slowly(self, svc) -> None:
        try:
            self.metrics.journal_open.set(await asyncio.to_thread(svc.journal.open_count))
            if svc.feedback is not None:
                _, _, checkpoints = await svc.feedback.live_accuracy()
                self.metrics.set_live_accuracy(checkpoints)
        except Exception as error:  # a closed store at shutdown, a bad inbox record: the next sample retries
            log.debug("slow health sample failed: %s", error)
