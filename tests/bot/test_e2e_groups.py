"""End to end in a group: addressed commands work, photos are answered only when addressed to the bot."""
from __future__ import annotations

import pytest
from e2e_support import assert_prediction, expected_prediction

from devtools.samples import CLASS_NAMES, jpeg

pytestmark = pytest.mark.timeout(60)
GROUP = -100500


def is_help(call) -> bool:
    return call.method == "sendMessage" and all(name in call.text.lower() for name in CLASS_NAMES) and "/why" in call.text


async def test_group_answers_only_what_is_addressed_to_the_bot(fake_api, running_bot, classifier):
    in_group = dict(chat_id=GROUP, chat_type="supergroup")
    addressed_photo = jpeg(seed=8)
    async with running_bot():
        mark = fake_api.mark()
        unaddressed = await fake_api.push(fake_api.photo_update(jpeg(seed=9), user_id=31, **in_group))
        await fake_api.push(fake_api.command_update("/help@SomeOtherBot", user_id=32, **in_group))
        addressed = await fake_api.push(fake_api.photo_update(addressed_photo, user_id=33,
                                                              caption="@ProductIdBot which one is this?", **in_group))
        await fake_api.push(fake_api.command_update("/help@ProductIdBot", user_id=34, **in_group))
        answer = await fake_api.wait_for_answer(addressed["message"], after=mark)
        await fake_api.wait_for_call("sendMessage", lambda c: c.chat_id == GROUP and is_help(c), after=mark)
        # A last round trip in a private chat: anything the bot still meant to say in the group came before.
        private = await fake_api.push(fake_api.photo_update(jpeg(seed=10), user_id=35))
        await fake_api.wait_for_answer(private["message"])
    assert_prediction(answer, expected_prediction(classifier, addressed_photo))
    said = [c for c in fake_api.find_calls("sendMessage", after=mark) if c.chat_id == GROUP]
    assert not [c for c in said if c.reply_to == unaddressed["message"]["message_id"]], "answered an unaddressed photo"
    assert len([c for c in said if is_help(c)]) == 1, "answered /help meant for another bot"
    assert len(said) == 2, said


async def test_why_in_a_group_by_reply_to_a_photo(fake_api, running_bot):
    in_group = dict(chat_id=GROUP, chat_type="group")
    async with running_bot():
        photo = await fake_api.push(fake_api.photo_update(jpeg(seed=11), user_id=41,
                                                          caption="@ProductIdBot ?", **in_group))
        await fake_api.wait_for_answer(photo["message"])
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/why@ProductIdBot", user_id=42, reply_to=photo["message"], **in_group))
        heat_map = await fake_api.wait_for_call("sendPhoto", lambda c: c.chat_id == GROUP, after=mark, timeout=30)
    assert "red" in heat_map.text.lower()


async def test_group_photo_replying_to_the_bot_is_answered(fake_api, running_bot, classifier):
    in_group = dict(chat_id=GROUP, chat_type="group")
    async with running_bot():
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/help@ProductIdBot", user_id=51, **in_group))
        help_call = await fake_api.wait_for_call("sendMessage", after=mark)
        photo = jpeg(seed=12)
        reply = await fake_api.push(fake_api.photo_update(photo, user_id=52, reply_to=help_call.result, **in_group))
        answer = await fake_api.wait_for_answer(reply["message"])
    assert_prediction(answer, expected_prediction(classifier, photo))
