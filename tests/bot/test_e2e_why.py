"""End to end: /why by reply and for the latest photo, the progressive finer map, the "Why?" button."""
from __future__ import annotations

import pytest
from e2e_support import file_ids, open_picture, why_button

from devtools.samples import jpeg

pytestmark = pytest.mark.timeout(60)


async def send_photos(fake_api, *seeds: int) -> list[dict]:
    """The user sends photos and waits for each answer; returns the photo messages."""
    messages = []
    for seed in seeds:
        update = await fake_api.push(fake_api.photo_update(jpeg(seed)))
        await fake_api.wait_for_answer(update["message"])
        messages.append(update["message"])
    return messages


def assert_heat_map(call) -> None:
    picture = open_picture(call.photo_bytes)
    assert min(picture.size) >= 200, picture.size
    assert "red" in call.text.lower(), f"the caption should say what the colours mean: {call.text!r}"


async def ask_why(fake_api, reply_to: dict | None = None):
    """Send /why; returns (the heat-map sendPhoto call, the mark before /why)."""
    mark = fake_api.mark()
    update = await fake_api.push(fake_api.command_update("/why", reply_to=reply_to))
    chat_id = update["message"]["chat"]["id"]
    heat_map = await fake_api.wait_for_call("sendPhoto", lambda c: c.chat_id == chat_id, after=mark, timeout=30)
    return heat_map, mark


def fetched_files(fake_api, after: int) -> set[str]:
    return {call.params["file_id"] for call in fake_api.find_calls("getFile", after=after)}


async def test_why_replying_to_a_photo_explains_that_photo(fake_api, running_bot):
    async with running_bot():
        first, second = await send_photos(fake_api, 0, 1)
        heat_map, mark = await ask_why(fake_api, reply_to=first)
        assert_heat_map(heat_map)
        action = fake_api.find_calls("sendChatAction", after=mark)
        assert action and action[0].params["action"] == "upload_photo", "the chat should show 'uploading photo…'"
        assert action[0].at <= heat_map.at
    fetched = fetched_files(fake_api, mark)
    assert fetched & file_ids(first) and not fetched & file_ids(second), fetched


async def test_why_alone_explains_the_latest_photo(fake_api, running_bot):
    async with running_bot():
        first, second = await send_photos(fake_api, 0, 1)
        heat_map, mark = await ask_why(fake_api)
        assert_heat_map(heat_map)
    fetched = fetched_files(fake_api, mark)
    assert fetched & file_ids(second) and not fetched & file_ids(first), fetched


async def test_why_sends_a_rough_map_then_edits_in_the_finer_one(fake_api, running_bot):
    async with running_bot():
        await send_photos(fake_api, 2)
        heat_map, _ = await ask_why(fake_api)
        sent = heat_map.result
        edit = await fake_api.wait_for_call(
            "editMessageMedia", lambda c: c.chat_id == sent["chat"]["id"] and c.params["message_id"] == sent["message_id"],
            timeout=30)
    assert edit.params["media"]["type"] == "photo"
    assert_heat_map(edit)
    assert edit.photo_bytes != heat_map.photo_bytes
    assert edit.text != heat_map.text, "the caption should change with the finer map"


async def test_why_before_any_photo_says_what_to_do(fake_api, running_bot):
    async with running_bot():
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/why"))
        hint = await fake_api.wait_for_call("sendMessage", after=mark)
        assert "photo" in hint.text.lower(), hint.text
        # Afterwards everything works as usual: a photo, then /why.
        await send_photos(fake_api, 3)
        heat_map, _ = await ask_why(fake_api)
    assert_heat_map(heat_map)
    assert not fake_api.find_calls("sendPhoto", after=mark, predicate=lambda c: c.at < hint.at)


async def test_why_button_answers_the_query_and_sends_the_map(fake_api, running_bot):
    async with running_bot():
        update = await fake_api.push(fake_api.photo_update(jpeg(4)))
        answer = await fake_api.wait_for_answer(update["message"])
        await send_photos(fake_api, 5)  # a later photo: the button must still explain its own photo
        mark = fake_api.mark()
        press = await fake_api.push(fake_api.callback_update(why_button(answer)["callback_data"], answer.result))
        query_id = press["callback_query"]["id"]
        await fake_api.wait_for_call("answerCallbackQuery", lambda c: c.params["callback_query_id"] == query_id,
                                     after=mark)
        heat_map = await fake_api.wait_for_call("sendPhoto", after=mark, timeout=30)
    assert_heat_map(heat_map)
    fetched = fetched_files(fake_api, mark)
    assert not fetched or fetched & file_ids(update["message"]), "the button explained another photo"


async def test_second_why_of_the_same_photo_reuses_the_map(fake_api, running_bot):
    async with running_bot():
        (photo,) = await send_photos(fake_api, 1)
        await ask_why(fake_api, reply_to=photo)
        finer = await fake_api.wait_for_call("editMessageMedia", timeout=30)
        second, mark = await ask_why(fake_api, reply_to=photo)
        # A round trip after it, so that a late edit would have shown up by now.
        round_trip = fake_api.mark()
        await fake_api.push(fake_api.text_update("thanks"))
        await fake_api.wait_for_call("sendMessage", after=round_trip)
    # The cached finer map comes at once: the final caption, and nothing to edit afterwards.
    assert_heat_map(second)
    assert second.text == finer.text
    assert not fake_api.find_calls("editMessageMedia", after=mark)


async def test_a_heat_map_does_not_hold_up_other_users(fake_api, running_bot, classifier):
    # A fine map of 27 x 27 = 729 occluded passes takes far longer than one classification here.
    async with running_bot(WHY_PATCH=16, WHY_STRIDE=8):
        (photo,) = await send_photos(fake_api, 0)
        rough, _ = await ask_why(fake_api, reply_to=photo)  # the fine map is now being computed
        other = await fake_api.push(fake_api.photo_update(jpeg(6), user_id=1002))
        answer = await fake_api.wait_for_answer(other["message"], timeout=20)
        assert not fake_api.find_calls("editMessageMedia"), "the other user waited for the whole heat map"
    assert "%" in answer.text


async def test_why_replying_to_the_bots_answer_explains_that_photo(fake_api, running_bot):
    async with running_bot():
        first = await fake_api.push(fake_api.photo_update(jpeg(0)))
        answer = await fake_api.wait_for_answer(first["message"])
        await send_photos(fake_api, 1)
        heat_map, mark = await ask_why(fake_api, reply_to=answer.result)
    assert_heat_map(heat_map)
    fetched = fetched_files(fake_api, mark)
    assert fetched & file_ids(first["message"]), fetched
