"""The journal end to end: a photo accepted and then the process SIGKILLed is answered after the restart
(a real ``python -m bot`` process against the fake Bot API), once; entries past the age limit and entries
already done are not answered again."""
from __future__ import annotations

import time

import pytest
from telegram import Update
from test_e2e_process import bot_process, terminate

from bot.state.journal import Journal
from devtools.bot_env import settings_env
from devtools.samples import jpeg

pytestmark = pytest.mark.timeout(180)


def answers_to(fake_api, message: dict) -> list:
    return [call for call in fake_api.calls if call.method == "sendMessage" and call.ok
            and call.reply_to == message["message_id"] and call.chat_id == message["chat"]["id"]]


async def test_a_photo_accepted_before_a_sigkill_is_answered_once_after_the_restart(fake_api, tiny_checkpoint, tmp_path):
    env = settings_env(fake_api, tiny_checkpoint, tmp_path / "data", POLL_TIMEOUT="1")
    async with bot_process(env, tmp_path) as first:
        await fake_api.wait_for_poll(timeout=90)  # torch import, model load and warm-up take a while
        fake_api.hold_downloads()  # the bot accepts the photo and is caught before it can answer
        polls = len(fake_api.polls)
        update = await fake_api.push(fake_api.photo_update(jpeg(seed=3)))
        await fake_api.wait_for_call("FILE", timeout=20)
        await fake_api.wait_for_poll(after=polls, timeout=20)  # that getUpdates confirmed it to "Telegram"
        first.kill()
        await first.wait()
    fake_api.release_downloads()
    assert answers_to(fake_api, update["message"]) == []

    async with bot_process(env, tmp_path) as second:
        await fake_api.wait_for_answer(update["message"], timeout=90)
        output = await terminate(second)
    assert second.returncode == 0, output[-3000:]
    assert "resuming 1 unfinished request" in output, output[-3000:]
    assert len(answers_to(fake_api, update["message"])) == 1

    async with bot_process(env, tmp_path) as third:  # the answered one is done: not answered a second time
        await fake_api.wait_for_poll(after=len(fake_api.polls), timeout=90)
        later = await fake_api.push(fake_api.photo_update(jpeg(seed=4)))
        await fake_api.wait_for_answer(later["message"], timeout=30)
        output = await terminate(third)
    assert "resuming" not in output, output[-3000:]
    assert len(answers_to(fake_api, update["message"])) == 1


async def test_only_young_unfinished_entries_are_resumed(fake_api, running_bot, bot_settings, tmp_path):
    data_dir = tmp_path / "data"
    journal_clock = [time.time()]
    journal = Journal.in_dir(data_dir, clock=lambda: journal_clock[0])
    old, done, fresh = (fake_api.photo_update(jpeg(seed=seed)) for seed in (1, 2, 3))
    journal_clock[0] -= 25 * 3600  # received 25 h ago: past JOURNAL_MAX_AGE_HOURS=24
    journal.accept(Update.de_json(old, None))
    journal_clock[0] += 25 * 3600
    for raw in (done, fresh):
        journal.accept(Update.de_json(raw, None))
    journal.done(done["update_id"])
    journal.close()
    async with running_bot(settings=bot_settings(data_dir=data_dir)):
        await fake_api.wait_for_answer(fresh["message"], timeout=30)
        later = await fake_api.push(fake_api.photo_update(jpeg(seed=4)))  # polled after the resumed ones
        await fake_api.wait_for_answer(later["message"], timeout=30)
        assert answers_to(fake_api, old["message"]) == [] and answers_to(fake_api, done["message"]) == []
        assert len(answers_to(fake_api, fresh["message"])) == 1
    reopened = Journal.in_dir(data_dir)
    assert reopened.open_count() == 0 and reopened.resume(max_age_s=1e9) == []


async def test_a_why_cut_short_by_a_stop_is_finished_after_the_restart_in_the_same_message(
        fake_api, running_bot, bot_settings, tmp_path):
    # A fine map slow enough (16/8: hundreds of positions) that the stop comes while it runs.
    settings = bot_settings(data_dir=tmp_path / "data", WHY_COARSE_PATCH="112", WHY_COARSE_STRIDE="112",
                            WHY_PATCH="16", WHY_STRIDE="8")
    async with running_bot(settings=settings):
        photo = await fake_api.push(fake_api.photo_update(jpeg(seed=7)))
        await fake_api.wait_for_answer(photo["message"], timeout=30)
        mark = fake_api.mark()
        why = await fake_api.push(fake_api.command_update("/why"))
        coarse = await fake_api.wait_for_call("sendPhoto", after=mark, timeout=30)
    # Stopped mid-map: the user was told nothing (no "busy"), and the request stays in the journal.
    replies = [call for call in fake_api.calls[mark:] if call.method in ("sendMessage", "editMessageMedia")]
    assert replies == [], replies
    restart = fake_api.mark()
    async with running_bot(settings=settings):
        final = await fake_api.wait_for_call(
            "editMessageMedia", lambda call: call.ok and "squares of 16 px" in call.text,
            after=restart, timeout=120)
    assert final.params["message_id"] == coarse.result["message_id"]  # edited in place: no second photo
    assert not [call for call in fake_api.calls[restart:] if call.method == "sendPhoto"]
    assert why["message"]["message_id"] == coarse.reply_to
