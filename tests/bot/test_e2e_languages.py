"""End to end: replies follow the user's Telegram language_code (Hindi, Spanish), English otherwise; the
command menu per language; the heat map's caption and picture in the user's language."""
from __future__ import annotations

import pytest
from e2e_support import assert_prediction, expected_prediction, percentages

from devtools.samples import jpeg

pytestmark = pytest.mark.timeout(60)

HINDI_CLASS = {"kurti": "कुर्ती", "saree": "साड़ी", "shirt": "शर्ट"}


def is_devanagari(text: str) -> bool:
    return any("\u0900" <= ch <= "\u097f" for ch in text)


async def help_and_answer(fake_api, user_id: int, photo: bytes):
    """/help, then a photo: (the help text, the answer call)."""
    mark = fake_api.mark()
    await fake_api.push(fake_api.command_update("/help", user_id=user_id))
    help_call = await fake_api.wait_for_call("sendMessage", lambda c: c.chat_id == user_id, after=mark)
    update = await fake_api.push(fake_api.photo_update(photo, user_id=user_id))
    return help_call.text, await fake_api.wait_for_answer(update["message"])


async def test_hindi_user_gets_help_answer_and_heat_map_in_hindi_and_english_user_english(fake_api, running_bot,
                                                                                          classifier):
    photo = jpeg(seed=2)
    expected = expected_prediction(classifier, photo)
    fake_api.set_language(2001, "hi")
    fake_api.set_language(2002, "en")
    async with running_bot(CONFIDENCE_THRESHOLD="0", UNSURE_THRESHOLD="0"):  # the plain answer: name and percent
        help_hi, answer_hi = await help_and_answer(fake_api, 2001, photo)
        help_en, answer_en = await help_and_answer(fake_api, 2002, photo)
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/why", user_id=2001))
        rough_hi = await fake_api.wait_for_call("sendPhoto", lambda c: c.chat_id == 2001, after=mark, timeout=30)
        final_hi = await fake_api.wait_for_call("editMessageMedia", lambda c: c.chat_id == 2001, after=mark, timeout=30)
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/why", user_id=2002))
        final_en = await fake_api.wait_for_call("sendPhoto", lambda c: c.chat_id == 2002, after=mark, timeout=30)

    assert "मुझे किसी कपड़े की फ़ोटो भेजें" in help_hi and all(name in help_hi for name in HINDI_CLASS.values()), help_hi
    assert "/privacy" in help_hi and "Send me a photo" not in help_hi
    assert answer_hi.text.startswith(HINDI_CLASS[expected.label]), answer_hi.text
    assert any(abs(p - expected.confidence * 100) <= 1 for p in percentages(answer_hi.text)), answer_hi.text
    assert [b["text"] for row in answer_hi.params["reply_markup"]["inline_keyboard"] for b in row] == ["क्यों?"]
    for caption in (rough_hi.text, final_hi.text):
        assert "लाल" in caption and HINDI_CLASS[expected.label] in caption and "Red" not in caption, caption

    assert help_en.startswith("Send me a photo of a clothing product") and not is_devanagari(help_en)
    assert_prediction(answer_en, expected)
    assert not is_devanagari(answer_en.text) and "Red" in final_en.text and not is_devanagari(final_en.text)
    # The same photo and map, drawn with Hindi and with English texts: different pictures.
    assert final_en.text != final_hi.text and final_en.photo_bytes != final_hi.photo_bytes


@pytest.mark.parametrize("language_code", ["fr", "zz-ZZ", None])
async def test_a_language_the_bot_lacks_gets_english(fake_api, running_bot, classifier, language_code):
    photo = jpeg(seed=4)
    fake_api.set_language(2003, language_code)
    async with running_bot():
        help_text, answer = await help_and_answer(fake_api, 2003, photo)
    assert help_text.startswith("Send me a photo of a clothing product"), help_text
    assert_prediction(answer, expected_prediction(classifier, photo))
    assert not is_devanagari(answer.text)


async def test_regional_variants_and_spanish(fake_api, running_bot):
    fake_api.set_language(2004, "hi-IN")
    fake_api.set_language(2005, "es")
    async with running_bot():
        for user_id in (2004, 2005):
            mark = fake_api.mark()
            await fake_api.push(fake_api.command_update("/frobnicate", user_id=user_id))
            hint = await fake_api.wait_for_call("sendMessage", lambda c, u=user_id: c.chat_id == u, after=mark)
            assert hint.text == {2004: "मैं यह कमांड नहीं जानता। /help आज़माएँ।",
                                 2005: "No conozco ese comando. Prueba /help."}[user_id]


async def test_command_menu_is_registered_per_language(fake_api, running_bot):
    async with running_bot():
        pass
    menus = fake_api.commands_for
    assert set(menus) == {("default", ""), ("default", "hi"), ("default", "es")}, set(menus)
    english, hindi = ({c["command"]: c["description"] for c in menus[("default", code)]} for code in ("", "hi"))
    assert set(english) == set(hindi) >= {"start", "help", "why", "privacy", "forget"}
    assert english["privacy"] == "What I keep about you, and for how long"
    assert all(is_devanagari(text) for text in hindi.values()), hindi
