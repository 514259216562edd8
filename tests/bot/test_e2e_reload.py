"""A new model without a restart: a reload during a burst answers every photo, /help then lists the new classes,
a corrupt or truncated file is refused while the old model answers, /reload is for admins, and a real
``python -m bot`` process reloads on SIGHUP."""
from __future__ import annotations

import asyncio
import shutil
import signal

import pytest
from e2e_support import assert_prediction, expected_prediction
from test_e2e_process import bot_process, terminate

from bot.inference.reload import reload_model
from devtools.bot_env import settings_env
from devtools.samples import jpeg
from model import load_classifier

pytestmark = pytest.mark.timeout(180)

NEW_CLASSES = ["kurti", "lehenga", "saree", "shirt"]  # conftest's four_class_checkpoint
ADMIN = 4242


async def help_text(fake_api, user_id=1001) -> str:
    mark = fake_api.mark()
    await fake_api.push(fake_api.command_update("/help", user_id=user_id))
    return (await fake_api.wait_for_call("sendMessage", after=mark, timeout=20)).text


async def test_a_reload_during_a_burst_answers_every_photo_and_serves_the_new_classes(
        fake_api, running_bot, tiny_checkpoint, four_class_checkpoint, tmp_path):
    served = tmp_path / "model.pt"
    shutil.copy(tiny_checkpoint, served)
    async with running_bot(CHECKPOINT_PATH=str(served)) as app:
        assert "lehenga" not in await help_text(fake_api)
        shutil.copy(four_class_checkpoint, served)
        burst = [await fake_api.push(fake_api.photo_update(jpeg(seed=i), user_id=2000 + i)) for i in range(8)]
        result = await reload_model(app, "test")
        assert result.ok and "now serving" in result.text, result.text
        for update in burst:
            answer = await fake_api.wait_for_answer(update["message"], timeout=30)
            assert any(name in answer.text.lower() for name in NEW_CLASSES), answer.text
        assert "lehenga" in await help_text(fake_api)
        later = await fake_api.push(fake_api.photo_update(jpeg(seed=20), user_id=3000))
        answer = await fake_api.wait_for_answer(later["message"], timeout=30)
        assert_prediction(answer, expected_prediction(load_classifier(four_class_checkpoint), jpeg(seed=20)))
        again = await reload_model(app, "test")
        assert again.ok and "already served" in again.text


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing"])
async def test_a_bad_file_is_refused_and_the_old_model_keeps_answering(
        fake_api, running_bot, classifier, tiny_checkpoint, four_class_checkpoint, tmp_path, damage):
    served = tmp_path / "model.pt"
    shutil.copy(tiny_checkpoint, served)
    async with running_bot(CHECKPOINT_PATH=str(served)) as app:
        if damage == "garbage":
            served.write_bytes(b"not a checkpoint at all")
        elif damage == "truncated":
            data = four_class_checkpoint.read_bytes()
            served.write_bytes(data[: len(data) // 2])
        else:
            served.unlink()
        result = await reload_model(app, "test")
        assert not result.ok and "refused" in result.text and classifier.checkpoint_id[:12] in result.text
        update = await fake_api.push(fake_api.photo_update(jpeg(seed=5)))
        assert_prediction(await fake_api.wait_for_answer(update["message"], timeout=30),
                          expected_prediction(classifier, jpeg(seed=5)))
        assert "lehenga" not in await help_text(fake_api)


async def test_reload_command_is_for_admins(fake_api, running_bot, tiny_checkpoint, four_class_checkpoint, tmp_path):
    served = tmp_path / "model.pt"
    shutil.copy(four_class_checkpoint, served)
    async with running_bot(CHECKPOINT_PATH=str(served), ADMIN_USER_IDS=str(ADMIN)):
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/reload", user_id=1001))
        refused = await fake_api.wait_for_call("sendMessage", after=mark, timeout=20)
        assert "only for the bot's operators" in refused.text
        assert "lehenga" not in await help_text(fake_api)
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/reload", user_id=ADMIN))
        done = await fake_api.wait_for_call("sendMessage", after=mark, timeout=60)
        assert "now serving" in done.text, done.text
        assert "lehenga" in await help_text(fake_api)


async def test_the_bot_process_reloads_on_sighup_with_photos_in_flight(
        fake_api, tiny_checkpoint, four_class_checkpoint, tmp_path):
    served = tmp_path / "model.pt"
    shutil.copy(tiny_checkpoint, served)
    env = settings_env(fake_api, served, tmp_path / "data", POLL_TIMEOUT="1", LOG_LEVEL="INFO")
    async with bot_process(env, tmp_path) as process:
        await fake_api.wait_for_poll(timeout=90)
        burst = [await fake_api.push(fake_api.photo_update(jpeg(seed=i), user_id=5000 + i)) for i in range(10)]
        shutil.copy(four_class_checkpoint, served)
        process.send_signal(signal.SIGHUP)
        for update in burst:
            await fake_api.wait_for_answer(update["message"], timeout=60)
        async with asyncio.timeout(60):
            while "lehenga" not in await help_text(fake_api):  # the swap comes after the new model's warm-up
                await asyncio.sleep(0.5)
        output = await terminate(process)
    assert process.returncode == 0, output[-3000:]
    assert "reload (SIGHUP): now serving checkpoint" in output, output[-3000:]
