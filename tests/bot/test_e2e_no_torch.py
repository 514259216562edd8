"""Torch must not creep back: ``python -m bot`` serving an OpenVINO export classifies a photo, draws its /why
maps, serves a canary (another export) to its share of chats, reloads on SIGHUP to a second exported checkpoint
and answers an admin's /stats, all without loading torch. Checked from outside the bot: no torch library is
mapped into its process (/proc/PID/maps), whatever imported it."""
from __future__ import annotations

import asyncio
import shutil
import signal
from pathlib import Path

import pytest
from test_e2e_process import bot_process, terminate

from bot.inference.canary import serves_canary
from devtools.bot_env import settings_env
from devtools.samples import jpeg
from model.export_manifest import export_dir, file_sha256

pytestmark = pytest.mark.timeout(420)

ADMIN = 4242
CANARY_SHARE = 0.5


def torch_libraries(pid: int) -> list[str]:
    """The torch shared libraries mapped into process ``pid`` (libtorch*.so, torch/_C*.so)."""
    mapped = {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines() if "/" in line}
    return sorted(path for path in mapped if "libtorch" in Path(path).name or "/torch/_C" in path)


@pytest.fixture(scope="session")
def exported_four_class(four_class_checkpoint, tmp_path_factory) -> Path:
    """The four-class checkpoint (a retrained model) with its export, written by ``python -m model export``."""
    from model.cli import main as model_cli

    checkpoint = tmp_path_factory.mktemp("exported-four") / "model.pt"
    shutil.copy(four_class_checkpoint, checkpoint)
    assert model_cli(["--threads", "2", "export", "--checkpoint", str(checkpoint)]) == 0
    return checkpoint


def install(checkpoint: Path, at: Path) -> None:
    """What an operator does: the checkpoint and its ``.openvino`` folder copied to ``at`` (replacing both)."""
    shutil.rmtree(export_dir(at), ignore_errors=True)
    shutil.copytree(export_dir(checkpoint), export_dir(at))
    shutil.copy(checkpoint, at)


async def help_for(fake_api, chat: int) -> str:
    mark = fake_api.mark()
    await fake_api.push(fake_api.command_update("/help", user_id=chat))
    return (await fake_api.wait_for_call("sendMessage", lambda c: c.chat_id == chat, after=mark, timeout=30)).text


async def test_the_bot_on_an_export_serves_a_canary_and_reloads_without_torch(
        fake_api, exported_checkpoint, exported_four_class, tmp_path):
    served = tmp_path / "models" / "model.pt"
    served.parent.mkdir()
    install(exported_checkpoint, served)
    salt = file_sha256(exported_four_class)  # the canary's checkpoint id
    canary_chat = next(chat for chat in range(1000, 5000) if serves_canary(chat, salt, CANARY_SHARE))
    main_chat = next(chat for chat in range(1000, 5000) if not serves_canary(chat, salt, CANARY_SHARE))
    env = settings_env(fake_api, served, tmp_path / "data", RUNTIME="auto", PRECISION="fp32", DEVICE="cpu",
                       POLL_TIMEOUT="1", CANARY_CHECKPOINT=str(exported_four_class), CANARY_SHARE=str(CANARY_SHARE),
                       ADMIN_USER_IDS=str(ADMIN))
    async with bot_process(env, tmp_path) as process:
        await fake_api.wait_for_call("getUpdates", timeout=120)
        photo = await fake_api.push(fake_api.photo_update(jpeg(seed=3), user_id=main_chat))
        answer = await fake_api.wait_for_answer(photo["message"], timeout=60)
        assert answer.method == "sendMessage" and answer.ok
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/why", user_id=main_chat))
        coarse = await fake_api.wait_for_call("sendPhoto", after=mark, timeout=120)
        await fake_api.wait_for_call("editMessageMedia", lambda c: c.params.get("message_id") == coarse.result["message_id"],
                                     after=mark, timeout=120)
        # the canary (an export too) answers its chats; the main model the others
        assert "lehenga" in await help_for(fake_api, canary_chat)
        assert "lehenga" not in await help_for(fake_api, main_chat)
        photo = await fake_api.push(fake_api.photo_update(jpeg(seed=4), user_id=canary_chat))
        assert (await fake_api.wait_for_answer(photo["message"], timeout=60)).ok
        # a reload to a second exported checkpoint
        install(exported_four_class, served)
        process.send_signal(signal.SIGHUP)
        async with asyncio.timeout(120):
            while "lehenga" not in await help_for(fake_api, main_chat):  # swapped in after its preparation
                await asyncio.sleep(0.5)
        photo = await fake_api.push(fake_api.photo_update(jpeg(seed=5), user_id=main_chat))
        assert (await fake_api.wait_for_answer(photo["message"], timeout=60)).ok
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/stats", user_id=ADMIN))
        stats = (await fake_api.wait_for_call("sendMessage", after=mark, timeout=30)).text
        loaded = torch_libraries(process.pid)
        output = await terminate(process, 20)
    assert process.returncode == 0, output[-3000:]
    assert loaded == [], f"torch was loaded by a bot serving an export: {loaded}"
    assert f"Canary: checkpoint {salt[:12]}" in stats, stats
    assert "reload (SIGHUP): now serving checkpoint" in output, output[-3000:]
    assert output.count("served by the OpenVINO export") >= 3, output[-3000:]  # main, canary, the reloaded main
    assert "served by torch" not in output, output[-3000:]
