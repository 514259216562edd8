"""End to end against the fake Bot API (issue 25, §1 and §7): bombs from four chats at once, a journal poison
pill across two crashes, a journal that cannot be written, a purge loop that meets an error, and a process
whose polling died. The real bot each time (in process, or ``python -m bot`` where it must crash)."""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import time

import pytest
from e2e_support import assert_short_notice, percentages
from telegram import Update
from test_e2e_journal import answers_to
from test_e2e_process import bot_process, terminate

from bot import messages
from bot.services import SERVICES_KEY
from bot.state.journal import Journal
from bot.state.store import DB_NAME
from devtools import bombs
from devtools.bot_env import settings_env
from devtools.samples import jpeg

pytestmark = pytest.mark.timeout(240)


async def until(condition, what: str, timeout: float = 30) -> None:
    """Wait (without asserting how long) until ``condition()`` holds; fail after ``timeout`` s as a hang."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


async def test_four_bombs_from_four_chats_at_once_are_each_answered_and_the_bot_lives(fake_api, running_bot):
    async with running_bot():
        sent = await asyncio.gather(*(
            fake_api.push(fake_api.document_update(data, file_name=f"{name}.png", mime_type="image/png",
                                                   chat_id=4001 + number, user_id=4001 + number))
            for number, (name, data) in enumerate(bombs.four_bombs().items())))
        answers = {update["message"]["chat"]["id"]: await fake_api.wait_for_answer(update["message"], timeout=60)
                   for update in sent}
        later = await fake_api.push(fake_api.photo_update(jpeg(seed=2), chat_id=4100, user_id=4100))
        await fake_api.wait_for_answer(later["message"], timeout=30)  # alive, and still answering
    texts = [answers[4001 + n].text for n in range(4)]
    for number in range(3):  # the PNGs: refused from the header, with the reason
        assert_short_notice(answers[4001 + number])
        assert "too large" in texts[number] and "megapixels" in texts[number], texts[number]
    assert percentages(texts[3]), f"the 7000 x 7000 JPEG is classified (decoded at 1/8 scale): {texts[3]!r}"


async def test_a_poison_pill_is_set_aside_after_two_crashes_and_the_bystander_is_answered(fake_api, tiny_checkpoint,
                                                                                            tmp_path):
    env = settings_env(fake_api, tiny_checkpoint, tmp_path / "data", POLL_TIMEOUT="1")
    fake_api.hold_downloads()  # every run is caught with its download open: a crash "while decoding"
    async with bot_process(env, tmp_path) as first:
        await fake_api.wait_for_poll(timeout=90)
        polls = len(fake_api.polls)
        pill = await fake_api.push(fake_api.photo_update(jpeg(seed=5), chat_id=5001, user_id=5001))
        bystander = await fake_api.push(fake_api.photo_update(jpeg(seed=6), chat_id=5002, user_id=5002))
        await fake_api.wait_for_calls("FILE", 2, timeout=30)  # both in progress when the process dies
        await fake_api.wait_for_poll(after=polls + 1, timeout=20)
        first.kill()
        await first.wait()
    async with bot_process(env, tmp_path) as second:  # both are suspects: run one at a time, the pill first
        mark = fake_api.mark()
        await fake_api.wait_for_call("FILE", after=mark, timeout=90)
        await fake_api.wait_for_poll(after=len(fake_api.polls), timeout=20)
        second.kill()  # the pill dies again, alone: the bystander had not started
        await second.wait()
    assert len(fake_api.find_calls("FILE", after=mark)) == 1
    fake_api.release_downloads()
    async with bot_process(env, tmp_path) as third:
        told = await fake_api.wait_for_answer(pill["message"], timeout=90)
        await fake_api.wait_for_answer(bystander["message"], timeout=30)
        output = await terminate(third)
    assert told.text == messages.SET_ASIDE, told.text
    assert f"update {pill['update_id']} (photo) was in progress at 2 crashes; set aside" in output, output[-3000:]
    assert len(answers_to(fake_api, pill["message"])) == 1 and len(answers_to(fake_api, bystander["message"])) == 1
    assert percentages(answers_to(fake_api, bystander["message"])[0].text)


async def test_a_journal_that_cannot_write_stops_confirming_and_the_update_comes_again(fake_api, running_bot, caplog):
    caplog.set_level(logging.INFO)
    async with running_bot() as app:
        db = app.bot_data[SERVICES_KEY].journal._db
        db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")  # the disk is full
        pushed = []
        while not any("cannot write update" in r.getMessage() for r in caplog.records):
            pushed.append(await fake_api.push(fake_api.photo_update(jpeg(seed=len(pushed)), chat_id=6001)))
            await asyncio.sleep(0.05)
            assert len(pushed) < 500, "the journal never filled up"
        refused = next(r.getMessage() for r in caplog.records if "cannot write update" in r.getMessage())
        refused_id = int(refused.split("cannot write update ")[1].split()[0])
        refused_update = next(u for u in pushed if u["update_id"] == refused_id)
        polls = len(fake_api.polls)
        await fake_api.wait_for_poll(after=polls + 1, timeout=30)  # polling goes on, and does not confirm it
        assert answers_to(fake_api, refused_update["message"]) == []
        db.execute("PRAGMA max_page_count = 1073741823")  # space again
        for update in pushed:
            await fake_api.wait_for_answer(update["message"], timeout=30)
    for update in pushed:  # redelivered by "Telegram" and answered, once each
        assert len(answers_to(fake_api, update["message"])) == 1, update["update_id"]


async def test_the_purge_loop_survives_an_error_and_goes_on(fake_api, running_bot, bot_settings, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    data_dir = tmp_path / "data"
    async with running_bot(settings=bot_settings(data_dir=data_dir)) as app:
        old = Journal.in_dir(data_dir, clock=lambda: time.time() - 30 * 3600)  # answered 30 h ago: to be purged
        answered = Update.de_json(fake_api.photo_update(jpeg(seed=1)), None)
        old.accept(answered)
        old.done(answered.update_id)
        old.close()
        with sqlite3.connect(data_dir / DB_NAME) as other:
            other.execute("ALTER TABLE journal RENAME TO journal_elsewhere")  # every purge now fails (no such table)
        loop = asyncio.create_task(app._purge_every(0.05, retry_s=(0.05, 0.2)))
        await until(lambda: sum("purge failed" in r.getMessage() for r in caplog.records) >= 2, "two failures")
        with sqlite3.connect(data_dir / DB_NAME) as other:
            other.execute("ALTER TABLE journal_elsewhere RENAME TO journal")
        await until(lambda: any("finished entries older than" in r.getMessage() for r in caplog.records), "a purge")
        assert not loop.done()
        loop.cancel()
        later = await fake_api.push(fake_api.photo_update(jpeg(seed=3)))
        await fake_api.wait_for_answer(later["message"], timeout=30)
    assert Journal.in_dir(data_dir).resume(max_age_s=1e9) == []


async def test_a_process_whose_polling_died_exits_non_zero(fake_api, tiny_checkpoint, tmp_path):
    env = settings_env(fake_api, tiny_checkpoint, tmp_path / "data", POLL_TIMEOUT="1")
    async with bot_process(env, tmp_path) as process:
        await fake_api.wait_for_poll(timeout=90)
        fake_api.fail_next("getUpdates", status=401, retry_after=None, description="Unauthorized")  # PTB: not retried
        async with asyncio.timeout(60):
            stdout, stderr = await process.communicate()
    output = (stdout + stderr).decode(errors="replace")
    # A 401 is the one failure PTB's polling loop does not retry: the token was revoked meanwhile, so the process
    # stops (not a process that stays up and never polls) with the refused token's status, 2, which the systemd
    # unit does not restart in a loop (RestartPreventExitStatus=2).
    assert process.returncode == 2, output[-3000:]
    assert "Application.stop() complete" in output and "Task was destroyed" not in output, output[-3000:]  # a clean stop
    assert "polling for updates stopped" in output and "Telegram refused TELEGRAM_BOT_TOKEN" in output, output[-3000:]
    secret = fake_api.token.split(":", 1)[1]
    assert secret not in output


async def test_why_checks_the_size_from_get_file_before_downloading(fake_api, running_bot):
    from devtools.samples import png

    big = png(seed=1, width=900, height=700)  # a few hundred kB: over this bot's MAX_FILE_BYTES
    async with running_bot(MAX_FILE_BYTES=str(len(big) // 2), MAX_BYTES_IN_FLIGHT=str(len(big))):
        sent = await fake_api.push(fake_api.document_update(big, file_name="big.png", mime_type="image/png"))
        await fake_api.wait_for_answer(sent["message"])  # refused from the update's own size
        mark = fake_api.mark()
        why = await fake_api.push(fake_api.command_update("/why", reply_to=sent["message"]))  # knows no size
        answer = await fake_api.wait_for_answer(why["message"], timeout=30)
    assert "too big" in answer.text and "MB" in answer.text, answer.text
    assert fake_api.find_calls("getFile", after=mark) and not fake_api.find_calls("FILE", after=mark)


async def test_malformed_journal_rows_are_dropped_and_the_rest_resumed(fake_api, running_bot, bot_settings, tmp_path,
                                                                       caplog):
    caplog.set_level(logging.INFO)
    data_dir = tmp_path / "data"
    journal = Journal.in_dir(data_dir)
    good = fake_api.photo_update(jpeg(seed=8))
    journal.accept(Update.de_json(good, None))
    journal.close()
    with sqlite3.connect(data_dir / DB_NAME) as db:
        for update_id, row in ((900001, "[1, 2]"), (900002, '"text"'), (900003, "not json"), (900004, '{"update_id": []}')):
            db.execute("INSERT INTO journal (update_id, chat_id, kind, received_at, update_json) VALUES (?, 1, 'photo', ?, ?)",
                       (update_id, time.time(), row))
    async with running_bot(settings=bot_settings(data_dir=data_dir)):
        await fake_api.wait_for_answer(good["message"], timeout=30)
    dropped = [r.getMessage() for r in caplog.records if "cannot be read back" in r.getMessage()]
    assert len(dropped) == 4, dropped
    assert Journal.in_dir(data_dir).open_count() == 0


async def test_bytes_in_flight_are_capped_before_any_download(fake_api, running_bot):
    first, second = jpeg(seed=1, width=800, height=600), jpeg(seed=2, width=800, height=600)
    limit = len(first) + len(second) - 1  # both at once would pass MAX_BYTES_IN_FLIGHT
    async with running_bot(MAX_FILE_BYTES=str(limit), MAX_BYTES_IN_FLIGHT=str(limit)):
        fake_api.hold_downloads()
        held = await fake_api.push(fake_api.document_update(first, file_name="a.jpg", chat_id=7001, user_id=7001))
        await fake_api.wait_for_call("FILE", timeout=20)  # the first is downloading (its bytes reserved)
        mark = fake_api.mark()
        refused = await fake_api.push(fake_api.document_update(second, file_name="b.jpg", chat_id=7002, user_id=7002))
        busy = await fake_api.wait_for_answer(refused["message"], timeout=20)
        assert "busy" in busy.text.lower() and not fake_api.find_calls("FILE", after=mark)
        fake_api.release_downloads()
        answered = await fake_api.wait_for_answer(held["message"], timeout=30)
        again = await fake_api.push(fake_api.document_update(second, file_name="b.jpg", chat_id=7002, user_id=7002))
        retried = await fake_api.wait_for_answer(again["message"], timeout=30)  # released after the first's decode
    assert percentages(answered.text) and percentages(retried.text), (answered.text, retried.text)
