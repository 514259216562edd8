"""End to end: /privacy (in /help and the menu), /forget of the chat's state, and the RETENTION_DAYS purge at
start and on its schedule, with an injected clock."""
from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from devtools.samples import jpeg
from model.inbox import Inbox

pytestmark = pytest.mark.timeout(60)

DAY = 86400.0


def rows(data_dir, table: str) -> int:
    with sqlite3.connect(data_dir / "bot.sqlite3") as db:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


async def send_and_judge(fake_api, seed: int) -> dict:
    """A photo, then "✓ Right" under its answer (a feedback record with the photo)."""
    update = await fake_api.push(fake_api.photo_update(jpeg(seed)))
    answer = await fake_api.wait_for_answer(update["message"])
    right = next(b["callback_data"] for row in answer.params["reply_markup"]["inline_keyboard"] for b in row
                 if b["text"] == "✓ Right")
    mark = fake_api.mark()
    await fake_api.push(fake_api.callback_update(right, answer.result))
    await fake_api.wait_for_call("editMessageReplyMarkup", after=mark)
    return update["message"]


async def test_privacy_says_what_is_kept_how_long_and_who_sees_it(fake_api, running_bot, tmp_path):
    async with running_bot(RETENTION_DAYS="30", FEEDBACK_DIR=str(tmp_path / "fb")):
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/privacy"))
        privacy = (await fake_api.wait_for_call("sendMessage", after=mark)).text
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/help"))
        help_text = (await fake_api.wait_for_call("sendMessage", after=mark)).text
    for told in ("last photo", "answer", "journal", "✓ Right", "30 days", "Who sees it", "/forget"):
        assert told in privacy, (told, privacy)
    assert "/privacy" in help_text
    assert "privacy" in {command["command"] for command in fake_api.commands}


async def test_state_older_than_the_retention_period_is_purged_at_start(fake_api, running_bot, bot_settings, tmp_path,
                                                                      classifier):
    data_dir, inbox_dir = tmp_path / "data", tmp_path / "fb"
    settings = bot_settings(data_dir, FEEDBACK_DIR=str(inbox_dir), RETENTION_DAYS="30")
    async with running_bot(settings):
        await send_and_judge(fake_api, 1)
    inbox = Inbox(inbox_dir)
    kept = {table: rows(data_dir, table) for table in ("last_photo", "photo_key", "answer", "journal")}
    assert all(kept.values()) and len(inbox.records()) == 1 and inbox.photo_count() == 1, kept

    from bot.app import build_application

    async def start_at(days_later: float):
        app = build_application(settings, classifier, clock=lambda: time.time() + days_later * DAY)
        await app.initialize()  # the purge runs here, before anyone is served
        await app.shutdown()

    await start_at(29)
    assert {table: rows(data_dir, table) for table in kept} == kept and len(inbox.records()) == 1
    await start_at(31)
    assert {table: rows(data_dir, table) for table in kept} == dict.fromkeys(kept, 0)
    assert inbox.records() == [] and inbox.photo_count() == 0
    async with running_bot(settings):  # and the bot then knows no photo of this chat
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/why"))
        hint = await fake_api.wait_for_call("sendMessage", after=mark)
    assert hint.text.startswith("Send me a photo first")


async def test_the_purge_also_runs_on_its_schedule(fake_api, bot_settings, tmp_path, monkeypatch, classifier):
    import bot.app

    monkeypatch.setattr(bot.app, "JOURNAL_PURGE_EVERY_S", 0.05)
    data_dir = tmp_path / "data"
    offset = [0.0]
    app = bot.app.build_application(bot_settings(data_dir, RETENTION_DAYS="1"), classifier,
                                    clock=lambda: time.time() + offset[0])
    await app.initialize()
    await app.start()
    await app.updater.start_polling(poll_interval=0, timeout=1)
    try:
        update = await fake_api.push(fake_api.photo_update(jpeg(2)))
        await fake_api.wait_for_answer(update["message"])
        store = app.bot_data["services"].store
        assert await asyncio.to_thread(store.last_photo, update["message"]["chat"]["id"]) is not None
        offset[0] = 2 * DAY
        for _ in range(100):
            if rows(data_dir, "last_photo") == 0:
                break
            await asyncio.sleep(0.05)
        assert rows(data_dir, "last_photo") == rows(data_dir, "photo_key") == rows(data_dir, "answer") == 0
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()


async def test_forget_deletes_the_chats_state_and_feedback(fake_api, running_bot, tmp_path):
    data_dir, inbox_dir = tmp_path / "data", tmp_path / "fb"
    async with running_bot(data_dir=data_dir, FEEDBACK_DIR=str(inbox_dir)):
        await send_and_judge(fake_api, 3)
        other = await fake_api.push(fake_api.photo_update(jpeg(4), user_id=1009))  # another chat keeps its state
        await fake_api.wait_for_answer(other["message"])
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/forget"))
        forgot = (await fake_api.wait_for_call("sendMessage", after=mark)).text
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/why"))
        hint = await fake_api.wait_for_call("sendMessage", after=mark)
    assert "deleted" in forgot and "1 judgement" in forgot
    assert hint.text.startswith("Send me a photo first")
    assert Inbox(inbox_dir).records() == []
    with sqlite3.connect(data_dir / "bot.sqlite3") as db:
        assert db.execute("SELECT chat_id FROM last_photo").fetchall() == [(1009,)]
        assert db.execute("SELECT COUNT(*) FROM photo_key").fetchone()[0] == 1
        kinds = [row[0] for row in db.execute("SELECT kind FROM journal WHERE chat_id = 1001 ORDER BY update_id")]
        others = db.execute("SELECT COUNT(*) FROM journal WHERE chat_id = 1009").fetchone()[0]
    assert kinds == ["command", "command"], kinds  # the photo and the button press went; /forget and /why stay
    assert others == 1
