"""End to end: Telegram's 429, a dropped polling connection, a restart, and a full queue."""
from __future__ import annotations

import pytest
from e2e_support import assert_prediction, assert_short_notice, expected_prediction, file_ids, percentages

from devtools.samples import jpeg

pytestmark = pytest.mark.timeout(60)


async def test_429_on_the_answer_is_retried_after_retry_after(fake_api, running_bot, classifier):
    photo = jpeg(seed=1)
    async with running_bot():
        fake_api.fail_next("sendMessage", 429, retry_after=1)
        update = await fake_api.push(fake_api.photo_update(photo))
        answer = await fake_api.wait_for_answer(update["message"], timeout=20)
    (refused,) = fake_api.find_calls("sendMessage", ok=False)
    assert refused.status == 429 and refused.params["text"] == answer.params["text"]
    assert answer.at - refused.at >= 0.95, "the retry must wait for retry_after"
    assert_prediction(answer, expected_prediction(classifier, photo))


async def test_dropped_get_updates_connection_polling_goes_on(fake_api, running_bot, classifier):
    photo = jpeg(seed=2)
    async with running_bot():
        await fake_api.wait_for_call("getUpdates")
        fake_api.drop_next("getUpdates")
        dropped = await fake_api.wait_for_call("getUpdates", lambda c: c.dropped, ok=False)
        update = await fake_api.push(fake_api.photo_update(photo))
        answer = await fake_api.wait_for_answer(update["message"], timeout=20)
    assert answer.at > dropped.at
    assert_prediction(answer, expected_prediction(classifier, photo))


async def test_server_errors_while_polling_are_retried(fake_api, running_bot):
    async with running_bot():
        await fake_api.wait_for_call("getUpdates")
        fake_api.fail_next("getUpdates", 502, retry_after=None, description="Bad Gateway")
        await fake_api.wait_for_call("getUpdates", lambda c: c.status == 502, ok=False)
        update = await fake_api.push(fake_api.photo_update(jpeg(3)))
        await fake_api.wait_for_answer(update["message"], timeout=20)


async def test_restart_keeps_the_last_photo(fake_api, running_bot, bot_settings):
    settings = bot_settings()
    async with running_bot(settings):
        update = await fake_api.push(fake_api.photo_update(jpeg(seed=4)))
        await fake_api.wait_for_answer(update["message"])
    mark = fake_api.mark()
    async with running_bot(settings):  # a new Application and worker pool, the same data dir
        await fake_api.push(fake_api.command_update("/why"))
        first = await fake_api.wait_for_call(None, lambda c: c.method in ("sendPhoto", "sendMessage"), after=mark,
                                             timeout=30)
        assert first.method == "sendPhoto", f"after a restart /why answered {first.text!r}"
        assert not fake_api.find_calls("sendMessage", lambda c: c.reply_to == update["message"]["message_id"],
                                       after=mark), "the old photo was answered twice"
    fetched = {call.params["file_id"] for call in fake_api.find_calls("getFile", after=mark)}
    assert fetched & file_ids(update["message"]), fetched


async def test_busy_queue_says_busy_and_leaves_nobody_unanswered(fake_api, running_bot):
    users = range(2001, 2011)
    async with running_bot(QUEUE_SIZE=1, MAX_BATCH=1, WORKERS=1):
        mark = fake_api.mark()
        for user in users:  # all in one getUpdates answer: a burst
            await fake_api.push(fake_api.photo_update(jpeg(user), user_id=user))
        await fake_api.wait_for_calls("sendMessage", len(users), after=mark, timeout=40)
        # Every user got exactly one answer (a prediction or "busy"): nothing unanswered, nothing twice.
        first_answers = {}
        for call in fake_api.find_calls("sendMessage", after=mark):
            assert call.chat_id not in first_answers, f"two answers to user {call.chat_id}"
            first_answers[call.chat_id] = call
    assert set(first_answers) == set(users)
    busy = [call for call in first_answers.values() if "busy" in call.text.lower()]
    answered = [call for call in first_answers.values() if "%" in call.text]
    assert busy, "a queue of 1 under a burst of 10 should turn someone away"
    assert answered, "and still answer someone"
    assert len(busy) + len(answered) == len(users)
    # The queue's place is taken before the download: a user turned away cost no download.
    assert len(fake_api.find_calls("getFile", after=mark)) == len(answered)


async def test_one_users_burst_does_not_starve_another_user(fake_api, running_bot):
    async with running_bot(MAX_BATCH=2):
        mark = fake_api.mark()
        album = [await fake_api.push(fake_api.photo_update(jpeg(i), user_id=3001)) for i in range(10)]
        await fake_api.push(fake_api.photo_update(jpeg(20), user_id=3002))
        await fake_api.wait_for_calls("sendMessage", 11, after=mark, timeout=40)
    order = [call.chat_id for call in fake_api.find_calls("sendMessage", after=mark)]
    assert order.count(3001) == len(album) and order.count(3002) == 1
    assert order.index(3002) < 5, f"the other user waited behind the album: {order}"


async def test_429_on_the_heat_map_upload_is_retried(fake_api, running_bot):
    async with running_bot():
        update = await fake_api.push(fake_api.photo_update(jpeg(5)))
        await fake_api.wait_for_answer(update["message"])
        fake_api.fail_next("sendPhoto", 429, retry_after=1)
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/why"))
        heat_map = await fake_api.wait_for_call("sendPhoto", after=mark, timeout=30)
    (refused,) = fake_api.find_calls("sendPhoto", ok=False, after=mark)
    assert heat_map.at - refused.at >= 0.95 and heat_map.photo_bytes


async def test_a_dropped_get_file_gets_an_answer_or_a_notice(fake_api, running_bot, classifier):
    async with running_bot():
        fake_api.drop_next("getFile")
        mark = fake_api.mark()
        await fake_api.push(fake_api.photo_update(jpeg(6)))
        reply = await fake_api.wait_for_call("sendMessage", after=mark, timeout=20)
        if not percentages(reply.text):  # no retry: then a short notice, not silence
            assert_short_notice(reply)
        photo = jpeg(7)
        second = await fake_api.push(fake_api.photo_update(photo))
        answer = await fake_api.wait_for_answer(second["message"])
    assert_prediction(answer, expected_prediction(classifier, photo))
