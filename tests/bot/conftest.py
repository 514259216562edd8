"""Fixtures for end-to-end tests: the fake Bot API server and the real bot Application running against it.

tests/bot has no __init__.py on purpose: with one, pytest would import this folder as a package named
``bot`` and shadow the real ``bot`` package. Modules here import each other by plain name.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devtools.bot_env import settings_env
from devtools.fake_telegram import FakeTelegram

STEP_TIMEOUT = 20  # seconds for any single wait on the bot; a hanging bot fails instead of blocking


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeTelegram]:
    server = await FakeTelegram().start()
    try:
        yield server
    finally:
        await server.stop()
    unknown = [call.method for call in server.calls if call.status == 404 and call.method != "FILE"]
    assert not unknown, f"the bot called Bot API methods the fake does not know: {unknown}"


@pytest.fixture
def bot_settings(tmp_path, fake_api, tiny_checkpoint):
    """A function: ``bot_settings(QUEUE_SIZE=1, ...)`` → the bot's Settings from an environment dict."""
    from bot.config import Settings

    def make(data_dir: Path | None = None, **extra: str):
        env = settings_env(fake_api, tiny_checkpoint, data_dir or tmp_path / "data", **extra)
        return Settings.from_env(environ=env, env_file=tmp_path / "no.env")

    return make


@pytest.fixture
def running_bot(bot_settings, classifier):
    """``async with running_bot(**settings) as app:`` runs the real Application against the fake server.

    It stops the bot at the end, so a test can start a second one with the same ``data_dir`` (a restart).
    The session's random-init classifier is shared so that each start does not reload the checkpoint;
    ``own_classifier=True`` makes the bot load the checkpoint itself, as ``python -m bot`` does.
    """
    from bot.app import build_application

    @contextlib.asynccontextmanager
    async def run(settings=None, own_classifier: bool = False, webhook: bool = False, **extra: str):
        """``webhook=True``: PTB's webhook server (WEBHOOK_* settings) instead of polling."""
        from bot.app import webhook_arguments

        settings = settings or bot_settings(**extra)
        app = build_application(settings, classifier=None if own_classifier or settings.inference_address else classifier)
        async with asyncio.timeout(STEP_TIMEOUT):
            await app.initialize()
            if app.post_init:
                await app.post_init(app)
            await app.start()
            if webhook:
                await app.updater.start_webhook(**webhook_arguments(settings))
            else:
                await app.updater.start_polling(poll_interval=0, timeout=1)
        try:
            yield app
        finally:
            async with asyncio.timeout(STEP_TIMEOUT):
                await app.updater.stop()
                await app.stop()
                if app.post_stop:
                    await app.post_stop(app)
                await app.shutdown()
                if app.post_shutdown:
                    await app.post_shutdown(app)

    return run


FOUR_CLASSES = ["kurti", "lehenga", "saree", "shirt"]


@pytest.fixture(scope="session")
def four_class_checkpoint(tmp_path_factory):
    """Another random-init checkpoint, with a fourth class: what a retrained model (a reload, a canary) looks like."""
    import torch

    from model import build_network, save_checkpoint

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("four") / "model.pt"
    save_checkpoint(path, build_network(len(FOUR_CLASSES), "none").eval(), FOUR_CLASSES, training={"weights": "none"})
    return path
