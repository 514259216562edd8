"""End to end as an operator runs it: ``python -m bot`` in its own process, logs without the token,
a clean stop on SIGTERM, and one clear line when the token or the checkpoint is missing."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import pytest

from devtools.bot_env import settings_env
from devtools.samples import jpeg

pytestmark = pytest.mark.timeout(90)


def source_root() -> Path:
    """Where this test run imports the bot from, so the child process runs the same code."""
    import bot

    return Path(bot.__file__).resolve().parents[1]


async def run_bot_process(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", cwd=cwd, env={**os.environ, "PYTHONPATH": str(source_root()), **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


@contextlib.asynccontextmanager
async def bot_process(env: dict[str, str], cwd: Path):
    """``python -m bot`` for the block; killed at the end if it is still running (a failed test)."""
    process = await run_bot_process(env, cwd)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def terminate(process: asyncio.subprocess.Process, timeout: float = 20) -> str:
    """SIGTERM, then everything the bot printed (stdout and stderr) once it has exited within ``timeout``."""
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(timeout):
        stdout, stderr = await process.communicate()
    return (stdout + stderr).decode(errors="replace")


async def test_bot_process_answers_logs_no_token_and_stops_on_sigterm(fake_api, tiny_checkpoint, tmp_path):
    env = settings_env(fake_api, tiny_checkpoint, tmp_path / "data", LOG_LEVEL="DEBUG", POLL_TIMEOUT="1")
    async with bot_process(env, tmp_path) as process:
        await fake_api.wait_for_call("getUpdates", timeout=60)  # torch import and model load take a while
        update = await fake_api.push(fake_api.photo_update(jpeg(seed=1)))
        await fake_api.wait_for_answer(update["message"], timeout=20)
        output = await terminate(process, 10)  # "SIGINT/SIGTERM stop the bot cleanly within a few seconds"
    assert process.returncode == 0, output[-3000:]
    assert "getUpdates" in output or "getMe" in output, "DEBUG logs should show the Bot API calls"
    secret = fake_api.token.split(":", 1)[1]
    leaked = [line for line in output.splitlines() if secret in line]
    assert not leaked, f"the token is in the log: {leaked[:3]}"


@pytest.mark.parametrize("missing, hint", [("TELEGRAM_BOT_TOKEN", "BotFather"), ("CHECKPOINT_PATH", "make train")])
def test_missing_token_or_checkpoint_stops_with_one_line(tmp_path, tiny_checkpoint, monkeypatch, capfd, missing, hint):
    from bot.app import main  # in-process: the same code path as `python -m bot`, without a second torch import

    class NoServer:
        token, api_base_url, file_base_url = "123:secret", "http://127.0.0.1:9/bot", "http://127.0.0.1:9/file/bot"

    env = settings_env(NoServer, tiny_checkpoint, tmp_path / "data")
    env[missing] = "" if missing == "TELEGRAM_BOT_TOKEN" else str(tmp_path / "nowhere" / "model.pt")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    assert main(["--env-file", str(tmp_path / "absent.env")]) == 2
    captured = capfd.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert len(lines) == 1 and hint in lines[0], lines


async def test_a_refused_token_is_one_redacted_line_and_exit_2(fake_api, tiny_checkpoint, tmp_path):
    """Telegram answers 401 to getMe: no traceback with the token in it, on any stream; exit 2 (systemd's
    RestartPreventExitStatus), so the token is not printed again at each restart."""
    refused = f"{fake_api.token.split(':')[0]}:AAH-revoked-{os.urandom(8).hex()}"
    env = settings_env(fake_api, tiny_checkpoint, tmp_path / "data", TELEGRAM_BOT_TOKEN=refused)
    async with bot_process(env, tmp_path) as process:
        async with asyncio.timeout(80):
            stdout, stderr = await process.communicate()
    output = (stdout + stderr).decode(errors="replace")
    assert process.returncode == 2, output[-3000:]
    assert refused.split(":", 1)[1] not in output, "the refused token is printed"
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "TELEGRAM_BOT_TOKEN" in errors[0], output[-3000:]
    lines = [line for line in output.splitlines() if line.strip() and " INFO " not in line]
    assert len(lines) <= 2, lines  # PTB's one log line (redacted), and the bot's (INFO lines of the start aside)


@contextlib.asynccontextmanager
async def refusing_cluster():
    """An HTTP server on 127.0.0.1 that answers every request as a replica answers a wrong token: 401."""
    from aiohttp import web

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": "unauthorized"}, status=401)

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("token", ["missing", "wrong"])
async def test_a_missing_or_refused_cluster_token_stops_the_start_with_one_line(fake_api, tmp_path, token):
    """The gateway (no torch) stops at its start, exit 2, with one line that says where the token is."""
    wrong = "not-the-inference-token-" + os.urandom(8).hex()
    async with refusing_cluster() as address:
        env = settings_env(fake_api, tmp_path / "unused.pt", tmp_path / "data", INFERENCE_ADDRESS=address)
        if token == "wrong":
            (tmp_path / "token").write_text(wrong + "\n")
            (tmp_path / "token").chmod(0o600)
            env["INFERENCE_TOKEN_FILE"] = str(tmp_path / "token")
        async with bot_process(env, tmp_path) as process:
            async with asyncio.timeout(60):
                stdout, stderr = await process.communicate()
    output = (stdout + stderr).decode(errors="replace")
    assert process.returncode == 2, output[-3000:]
    # The one line about it (other parts may log INFO lines of their own, e.g. a secret made on first start):
    lines = [line for line in output.splitlines() if line.startswith("error:") or " ERROR " in line or
             " WARNING " in line or "Traceback" in line]
    assert len(lines) == 1 and lines[0].startswith("error:") and "python -m model serve" in lines[0], output[-3000:]
    assert ("refused the token" in lines[0]) == (token == "wrong"), lines
    assert wrong not in output


async def test_a_stop_signal_while_the_cluster_is_unreachable_is_a_clean_stop(fake_api, tmp_path):
    """SIGTERM while the start waits for a cluster that does not answer: exit 0, no traceback."""
    from webhook_support import free_port

    env = settings_env(fake_api, tmp_path / "unused.pt", tmp_path / "data", INFERENCE_TOKEN="some-token",
                       INFERENCE_ADDRESS=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    async with bot_process(env, tmp_path) as process:
        seen = []
        async with asyncio.timeout(60):
            while not any("unreachable" in line for line in seen):
                seen.append((await process.stderr.readline()).decode(errors="replace"))
        output = "".join(seen) + await terminate(process, 20)
    assert process.returncode == 0, output[-3000:]
    assert "Traceback" not in output and "Error" not in output.replace("ERROR", ""), output[-3000:]


async def test_a_webhook_without_a_secret_registers_a_random_one_and_never_prints_it(fake_api, tiny_checkpoint, tmp_path):
    """``python -m bot`` with WEBHOOK_URL and no WEBHOOK_SECRET, at DEBUG (PTB logs every call's parameters):
    setWebhook gets a random secret, updates carrying it are answered, and it is in no output stream."""
    from webhook_support import free_port, local_webhook, webhook_settings

    port = free_port()
    hook = {name: value for name, value in webhook_settings(port).items() if name not in ("WEBHOOK_SECRET", "WEBHOOK_LISTEN")}
    env = settings_env(fake_api, tiny_checkpoint, tmp_path / "data", LOG_LEVEL="DEBUG", **hook)
    async with bot_process(env, tmp_path) as process:
        await fake_api.wait_for_call("setWebhook", timeout=60)
        secret = fake_api.webhook_secret
        assert secret and len(secret) >= 40
        fake_api.proxy_webhook_to(local_webhook(port))
        update = await fake_api.push(fake_api.photo_update(jpeg(seed=2)))  # retried until the server listens
        await fake_api.wait_for_answer(update["message"], timeout=20)
        assert await fake_api.post_update(fake_api.photo_update(jpeg(seed=3)), None) == 403
        output = await terminate(process, 20)
    assert process.returncode == 0, output[-3000:]
    assert "setWebhook" in output, "DEBUG logs should show the Bot API calls"
    assert secret not in output, [line for line in output.splitlines() if secret in line][:3]
    assert "a new random one is registered" in output
