"""End to end: METRICS_PORT's /metrics, /livez and /readyz on the real bot against the fake Bot API (issue 27).

The endpoint listens on port 0 (a free port the system picks; the bot reports the one it got), and every
request goes over HTTP on 127.0.0.1. /metrics is read with prometheus_client's own parser.
"""
from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import sys
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from telegram.error import InvalidToken

from devtools.samples import jpeg

pytestmark = pytest.mark.timeout(90)

ADMIN = 4242
BURST = 6


def url(app, path: str) -> str:
    return f"http://127.0.0.1:{app.metrics_server.port}{path}"


async def get(app, path: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(url(app, path), timeout=10)


async def scrape(app) -> dict:
    """``{family name: family}`` from one GET /metrics."""
    response = await get(app, "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def value(families: dict, sample_name: str, **labels: str) -> float:
    """The sum of the samples called ``sample_name`` whose labels include ``labels``."""
    family = families[re.sub(r"_(total|count|sum|bucket)$", "", sample_name)]
    return sum(s.value for s in family.samples
               if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()))


async def wait_for(check, what: str, timeout: float = 20.0):
    """Poll ``check()`` (a coroutine function) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def feedback_key(call) -> str:
    markup = call.params.get("reply_markup") or {}
    data = [b.get("callback_data", "") for row in markup.get("inline_keyboard", []) for b in row]
    return next(item.split(":")[1] for item in data if item.startswith("fb:"))


async def test_metrics_count_a_burst_and_a_why_and_stats_reads_the_same_registry(fake_api, running_bot, tmp_path):
    async with running_bot(METRICS_PORT="0", ADMIN_USER_IDS=str(ADMIN), FEEDBACK_DIR=str(tmp_path / "fb")) as app:
        mark = fake_api.mark()
        fake_api.fail_next("sendMessage", status=429, retry_after=1)  # one answer waits out a 429, then goes
        photos = [await fake_api.push(fake_api.photo_update(jpeg(user), user_id=user)) for user in range(3001, 3001 + BURST)]
        answers = [await fake_api.wait_for_answer(update["message"], timeout=30) for update in photos]
        for answer, choice in zip(answers[:2], ("ok", "x")):  # "Right", and "None of these"
            press_mark = fake_api.mark()
            message = fake_api.messages[(answer.chat_id, answer.result["message_id"])]
            await fake_api.push(fake_api.callback_update(f"fb:{feedback_key(answer)}:{choice}", message))
            await fake_api.wait_for_call("answerCallbackQuery", after=press_mark)
        why = await fake_api.push(fake_api.command_update("/why", user_id=3001))
        chat = why["message"]["chat"]["id"]
        await fake_api.wait_for_call("editMessageMedia", lambda c: c.chat_id == chat, after=mark, timeout=40)

        async def counted():  # the wrapper counts a request once its handler returned (just after the reply)
            families = await scrape(app)
            done = value(families, "productbot_requests_total", kind="why") == 1
            return families if done and value(families, "productbot_requests_total", kind="photo") == BURST else None

        families = await wait_for(counted, "the burst and the /why in productbot_requests_total")
        answered = sum(value(families, "productbot_requests_total", kind="photo", outcome=outcome)
                       for outcome in ("answered", "unsure"))
        assert answered == BURST, "a random-init model's answers are answered or unsure, none refused"
        assert value(families, "productbot_requests_total", kind="why", outcome="answered") == 1
        # The histograms counted every request.
        assert value(families, "productbot_photo_answer_seconds_count", kind="photo") == BURST
        assert value(families, "productbot_photo_answer_seconds_count", kind="photo") == \
            value(families, "productbot_requests_total", kind="photo"), "every photo's reply is timed"
        assert value(families, "productbot_photo_answer_seconds_bucket", kind="photo", le="+Inf") == BURST
        assert value(families, "productbot_why_first_map_seconds_count") == 1
        assert value(families, "productbot_why_final_map_seconds_count") == 1
        assert value(families, "productbot_heatmaps_total", cached="false") == 1
        assert value(families, "productbot_telegram_rate_limited_total", method="sendMessage") == 1
        assert value(families, "productbot_telegram_retries_total", method="sendMessage") == 1
        assert value(families, "productbot_feedback_total", verdict="right") == 1
        assert value(families, "productbot_feedback_total", verdict="none_of_these") == 1
        assert value(families, "productbot_feedback_total", verdict="wrong") == 0
        assert value(families, "productbot_journal_resumed_total") == 0, "nothing was left from a last run"
        assert value(families, "productbot_forward_batch_photos_sum", runtime="torch", precision="fp32") >= BURST
        assert value(families, "productbot_forward_pass_seconds_count", runtime="torch", precision="fp32") >= 1
        # The names carry their units; the process collector comes on top.
        for family in families.values():
            if family.name.startswith("productbot_") and family.type == "histogram":
                assert family.name.endswith(("_seconds", "_photos")), family.name
            if family.type == "counter":
                assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
        assert value(families, "process_resident_memory_bytes") > 0
        assert "process_cpu_seconds" in families
        checkpoint = app.bot_data["services"].classifier.checkpoint_id
        assert value(families, "productbot_model_info", checkpoint=checkpoint, role="main", runtime="torch",
                     precision="fp32") == 1
        assert "productbot_queue_depth" in families and "productbot_journal_open_entries" in families

        # /stats shows the registry's numbers.
        stats_mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/stats", user_id=ADMIN))
        stats = await fake_api.wait_for_call("sendMessage", lambda c: c.chat_id == ADMIN, after=stats_mark)
        families = await scrape(app)
    requests = sum(value(families, "productbot_requests_total", kind=kind) for kind in ("photo", "why"))
    assert f"Requests: {requests:.0f}  answers: {BURST + 1}" in stats.text, stats.text
    assert "Heat maps served: 1" in stats.text, stats.text


async def test_readyz_waits_for_polling_and_livez_fails_when_polling_dies(fake_api, bot_settings, classifier):
    from bot.app import build_application

    app = build_application(bot_settings(METRICS_PORT="0"), classifier=classifier)
    starting = asyncio.create_task(app.initialize())
    while app.metrics_server is None:  # it starts before the model warms up
        assert not starting.done() or starting.exception() is None
        await asyncio.sleep(0.005)
    before = await get(app, "/readyz")
    assert before.status_code == 503, before.text
    assert (await get(app, "/livez")).status_code == 200, "warming up is alive"
    await starting
    await app.start()
    not_polling = await get(app, "/readyz")
    assert not_polling.status_code == 503 and "not polling" in not_polling.text, "warmed up, but not polling yet"
    await app.updater.start_polling(poll_interval=0, timeout=1)
    try:
        async def ready():
            return (await get(app, "/readyz")).status_code == 200

        await wait_for(ready, "/readyz 200 once polling")
        assert (await get(app, "/livez")).text.strip() == "ok"
        assert await run_probe(app, "/livez") == (0, "healthy: /livez: HTTP 200"), "the Dockerfile's HEALTHCHECK"
        assert await run_probe(app, "/readyz") == (0, "healthy: /readyz: HTTP 200")

        fake_api.fail_next("getUpdates", status=401, retry_after=None, description="Unauthorized")  # PTB gives up

        async def dead():
            response = await get(app, "/livez")
            return response if response.status_code == 503 else None

        response = await wait_for(dead, "/livez 503 after the polling loop died")
        assert "polling" in response.text, response.text
        assert (await get(app, "/readyz")).status_code == 503
        assert await run_probe(app, "/livez") == (1, "unhealthy: /livez: HTTP 503")
        assert app.metrics.registry.get_sample_value("productbot_live") == 0
    finally:
        await stop(app)
    assert app.metrics_server is None, "the endpoint stops with the bot"


async def run_probe(app, path: str) -> tuple[int, str]:
    """``python -m bot.ops.probe`` (the Dockerfile's HEALTHCHECK) against the bot's endpoint: (exit status, its line)."""
    url = f"http://127.0.0.1:{app.metrics_server.port}{path}"
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot.ops.probe", url,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert not err, err
    return process.returncode, out.decode().strip()


async def stop(app) -> None:
    """Stop a bot whose polling loop may have died (PTB's Updater.stop raises its error again)."""
    with contextlib.suppress(InvalidToken):
        await app.updater.stop()
    await app.stop()
    await app.shutdown()


@contextlib.asynccontextmanager
async def polling_bot(app):
    async with asyncio.timeout(20):
        await app.initialize()
        await app.start()
        await app.updater.start_polling(poll_interval=0, timeout=1)
    try:
        yield app
    finally:
        await stop(app)


async def test_gateway_mode_is_not_ready_while_the_cluster_is_unreachable(bot_settings):
    from bot.app import build_application

    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        address = f"http://127.0.0.1:{closed.getsockname()[1]}"
    app = build_application(bot_settings(METRICS_PORT="0", INFERENCE_ADDRESS=address, INFERENCE_TOKEN="t" * 32))
    starting = asyncio.create_task(app.initialize())
    try:
        while app.metrics_server is None:
            await asyncio.sleep(0.005)
        response = await get(app, "/readyz")
        assert response.status_code == 503, response.text
        assert (await get(app, "/livez")).status_code == 200
        assert (await get(app, "/metrics")).status_code == 200, "the gateway exports its metrics too"
    finally:
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
    assert app.metrics_server is None, "a start that failed leaves no endpoint behind"


def blocking_get(address: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(address, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class NotifySocket:
    """systemd's side of sd_notify: a real datagram socket; each datagram kept with the time it came."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.received: list[tuple[float, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.received.append((time.monotonic(), data.decode()))

    def messages(self, text: str, after: float = 0.0, before: float = float("inf")) -> list[float]:
        return [at for at, message in self.received if message == text and after <= at <= before]

    def close(self):
        self._stop = True
        self._thread.join()
        self.sock.close()


async def test_watchdog_pings_stop_when_the_bot_is_wedged(fake_api, bot_settings, classifier, tmp_path, monkeypatch):
    from bot.app import build_application

    notify = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # systemd's WatchdogSec=0.2: a ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setattr("bot.ops.health.LOOP_STALL_S", 0.8)  # production waits 10 s before calling the loop wedged
    try:
        async with polling_bot(build_application(bot_settings(METRICS_PORT="0"), classifier=classifier)) as app:
            async def pinging():
                return notify.messages("READY=1") and len(notify.messages("WATCHDOG=1")) >= 3

            await wait_for(pinging, "READY=1 and the watchdog's pings")
            # Wedged: the event loop does not run for 2 s (a blocking call, as a bug would make). /livez, served
            # on its own thread, is asked meanwhile.
            livez_during: list[tuple[int, str]] = []
            asker = threading.Timer(1.4, lambda: livez_during.append(blocking_get(url(app, "/livez"))))
            wedged_at = time.monotonic()
            asker.start()
            time.sleep(2.0)  # noqa: ASYNC251 -- the point of the test
            freed_at = time.monotonic()
            asker.join()
            assert not notify.messages("WATCHDOG=1", after=wedged_at + 0.5, before=freed_at), "pinged while wedged"
            assert livez_during and livez_during[0][0] == 503 and "event loop" in livez_during[0][1], livez_during

            async def pinging_again():
                return notify.messages("WATCHDOG=1", after=freed_at)

            await wait_for(pinging_again, "pings once the loop runs again")
            # Wedged another way: the polling loop died while the event loop runs on.
            fake_api.fail_next("getUpdates", status=401, retry_after=None, description="Unauthorized")

            async def polling_dead():
                return not app.health.status().live

            await wait_for(polling_dead, "the bot to notice the polling loop died")
            dead_at = time.monotonic()
            await asyncio.sleep(1.0)
            assert not notify.messages("WATCHDOG=1", after=dead_at + 0.3), "pinged while the polling loop was dead"
        assert notify.messages("STOPPING=1"), "systemd hears the bot stop"
    finally:
        notify.close()


async def raw_request(app, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", app.metrics_server.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    """The status code; a request line that is not HTTP is answered HTTP/0.9 style: the error text alone."""
    first = response.split(b"\r\n", 1)[0].split(b" ")
    return int(first[1] if first[0].startswith(b"HTTP/") else first[0])


async def test_hostile_requests_get_4xx_and_the_bot_keeps_serving(fake_api, running_bot):
    async with running_bot(METRICS_PORT="0") as app:
        assert (await get(app, "/")).status_code == 404
        assert (await get(app, "/metrics/")).status_code == 404
        assert (await get(app, "/../etc/passwd")).status_code == 404
        assert (await get(app, "/metrics?name[]=x")).status_code == 200, "a query string does not change the path"
        async with httpx.AsyncClient() as client:
            for method in ("POST", "PUT", "DELETE", "HEAD"):
                response = await client.request(method, url(app, "/metrics"), content=b"x" * 1000)
                assert response.status_code == 405, (method, response.status_code)
            assert (await client.post(url(app, "/anything"))).status_code == 404
        huge_header = b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
        assert status_of(await raw_request(app, huge_header)) == 431
        many_headers = b"GET /metrics HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(500)) + b"\r\n"
        assert status_of(await raw_request(app, many_headers)) == 431
        garbage = await raw_request(app, b"\x00\x01\x02 garbage\r\n\r\n")
        assert status_of(garbage) == 400 and len(garbage) < 200, garbage
        silent = await asyncio.open_connection("127.0.0.1", app.metrics_server.port)  # says nothing, holds on
        try:
            update = await fake_api.push(fake_api.photo_update(jpeg(7)))
            answer = await fake_api.wait_for_answer(update["message"])
            assert "%" in answer.text, "the bot answers photos meanwhile"
            assert (await get(app, "/livez")).status_code == 200
            assert (await get(app, "/metrics")).status_code == 200
        finally:
            silent[1].close()


async def test_a_resumed_request_is_counted_and_the_journal_gauge_empties(fake_api, running_bot, bot_settings, tmp_path):
    from telegram import Update

    from bot.state.journal import Journal

    data_dir = tmp_path / "data"
    journal = Journal.in_dir(data_dir)
    left = fake_api.photo_update(jpeg(seed=11))  # accepted by the last run, never answered
    journal.accept(Update.de_json(left, None))
    journal.close()
    async with running_bot(settings=bot_settings(data_dir=data_dir, METRICS_PORT="0")) as app:
        await fake_api.wait_for_answer(left["message"], timeout=30)
        families = await scrape(app)
        assert value(families, "productbot_journal_resumed_total") == 1
        assert value(families, "productbot_journal_poison_pills_total") == 0
        assert "productbot_journal_open_entries" in families


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def start_bot_process(env: dict[str, str], cwd) -> asyncio.subprocess.Process:
    import os
    import sys
    from pathlib import Path

    import bot

    root = Path(bot.__file__).resolve().parents[1]  # the code this test run imports
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", cwd=cwd, env={**os.environ, "PYTHONPATH": str(root), **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_python_m_bot_under_a_systemd_like_supervisor(fake_api, tiny_checkpoint, tmp_path):
    """The real process: READY=1 once it serves, pings while it runs, /readyz 200, STOPPING=1 on SIGTERM."""
    import signal

    from devtools.bot_env import settings_env

    notify = NotifySocket(tmp_path / "notify")
    port = free_port()
    env = settings_env(fake_api, tiny_checkpoint, tmp_path / "data", METRICS_PORT=str(port), POLL_TIMEOUT="1",
                       NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="1000000")
    process = await start_bot_process(env, tmp_path)
    try:
        async def ready():
            return notify.messages("READY=1") and len(notify.messages("WATCHDOG=1")) >= 2

        await wait_for(ready, "READY=1 and pings from python -m bot", timeout=60)
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
            assert response.status_code == 200, response.text
            metrics = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=10)).text
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            stdout, stderr = await process.communicate()
        output = (stdout + stderr).decode(errors="replace")
        assert process.returncode == 0, output[-2000:]
        assert "process_resident_memory_bytes" in metrics and "productbot_model_info{" in metrics, output[-3000:]
        assert notify.messages("STOPPING=1")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        notify.close()


async def test_a_taken_metrics_port_stops_the_start_with_one_line(fake_api, tiny_checkpoint, tmp_path):
    from devtools.bot_env import settings_env

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = settings_env(fake_api, tiny_checkpoint, tmp_path / "data", METRICS_PORT=str(taken.getsockname()[1]))
        process = await start_bot_process(env, tmp_path)
        async with asyncio.timeout(60):
            stdout, stderr = await process.communicate()
    errors = stderr.decode(errors="replace")
    assert process.returncode == 2, errors[-2000:]
    assert "error: METRICS_PORT=" in errors and "Traceback" not in errors, errors[-2000:]


async def test_webhook_mode_is_ready_once_its_server_serves(fake_api, running_bot):
    from webhook_support import free_port, local_webhook, webhook_settings

    port = free_port()
    async with running_bot(webhook=True, METRICS_PORT="0", **webhook_settings(port)) as app:
        fake_api.proxy_webhook_to(local_webhook(port))

        async def ready():
            return (await get(app, "/readyz")).status_code == 200

        await wait_for(ready, "/readyz 200 in webhook mode")
        assert (await get(app, "/livez")).status_code == 200
        update = await fake_api.push(fake_api.photo_update(jpeg(3)))
        await fake_api.wait_for_answer(update["message"], timeout=20)

        async def counted():
            return value(await scrape(app), "productbot_photo_answer_seconds_count", kind="photo") == 1

        await wait_for(counted, "the webhook's photo in the histogram")


class FakeCluster:
    """The inference endpoint's two GET/POST /classify answers (model/serve/wire.py), on a port that can go away."""

    def __init__(self, classifier):
        self.info = {"class_names": list(classifier.class_names), "checkpoint_id": classifier.checkpoint_id,
                     "preprocess": classifier.preprocess_config.to_dict(), "runtime": "torch fp32", "replicas": {}}
        label = classifier.class_names[0]
        self.prediction = {"label": label, "confidence": 0.9, "top": [{"label": label, "confidence": 0.9}]}
        self.port = free_port()
        self.runner = None

    async def start(self):
        from aiohttp import web

        async def classify(request):
            if request.method == "GET":
                return web.json_response(self.info)
            await request.read()
            return web.json_response({"prediction": self.prediction, "batch": 1,
                                      "checkpoint_id": self.info["checkpoint_id"]})

        app = web.Application()
        app.router.add_route("*", "/classify", classify)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self):
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


async def test_a_gateway_is_not_ready_while_its_cluster_is_gone(fake_api, running_bot, classifier):
    cluster = await FakeCluster(classifier).start()
    try:
        async with running_bot(METRICS_PORT="0", INFERENCE_ADDRESS=f"http://127.0.0.1:{cluster.port}",
                               INFERENCE_TOKEN="t" * 32) as app:
            def readyz_is(code):
                async def check():
                    return (await get(app, "/readyz")).status_code == code
                return check

            await wait_for(readyz_is(200), "/readyz 200 with the cluster answering")
            await cluster.stop()
            update = await fake_api.push(fake_api.photo_update(jpeg(5)))
            answer = await fake_api.wait_for_answer(update["message"], timeout=20)
            assert "busy" in answer.text.lower(), answer.text
            await wait_for(readyz_is(503), "/readyz 503 once the cluster is unreachable")
            assert "unreachable" in (await get(app, "/readyz")).text
            assert (await get(app, "/livez")).status_code == 200, "an unreachable cluster is not a dead bot"
            await cluster.start()
            update = await fake_api.push(fake_api.photo_update(jpeg(6)))
            answer = await fake_api.wait_for_answer(update["message"], timeout=20)
            assert "%" in answer.text, answer.text
            await wait_for(readyz_is(200), "/readyz 200 again once the cluster answers")
            families = await scrape(app)
            assert value(families, "productbot_requests_total", kind="photo", outcome="busy") == 1
            assert value(families, "productbot_photo_answer_seconds_count", kind="photo", outcome="busy") == 1
            assert value(families, "productbot_photo_answer_seconds_count", kind="photo", outcome="answered") == 1
            assert value(families, "productbot_model_info", role="main", checkpoint=classifier.checkpoint_id) == 1
    finally:
        await cluster.stop()
