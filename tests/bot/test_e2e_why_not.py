"""End to end: "Why not …?" buttons under the final heat map; a press sends the map for that class, captioned
with it, drawn from the cached grid (no new inference), equal to the map computed directly for that class."""
from __future__ import annotations

import asyncio

import pytest

from devtools.samples import jpeg

pytestmark = pytest.mark.timeout(60)


def buttons(markup: dict | None) -> list[tuple[str, str]]:
    return [(b["text"], b.get("callback_data", "")) for row in (markup or {}).get("inline_keyboard", []) for b in row]


async def test_why_not_button_sends_the_other_class_map_from_the_cache(fake_api, running_bot, classifier):
    from bot.i18n import ENGLISH
    from bot.inference.contract import render_explanation
    from model.occlusion import OcclusionExplainer

    data = jpeg(seed=3)
    async with running_bot() as app:
        update = await fake_api.push(fake_api.photo_update(data))
        await fake_api.wait_for_answer(update["message"])
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/why"))
        final = await fake_api.wait_for_call("editMessageMedia", after=mark, timeout=30)
        svc = app.bot_data["services"]
        settings, cached_before = svc.settings, svc.stats.heatmaps_cached

        image = classifier.open(data)
        predicted = classifier.predict_image(image).label
        others = [name for name in classifier.class_names if name != predicted]  # 3 classes: both are in the top 3
        offered = buttons(final.params.get("reply_markup"))
        assert [text for text, _ in offered] == [f"Why not {name.capitalize()}?" for name in _by_probability(
            classifier, image, others)], offered

        text, data_key = offered[0]
        other = text.removeprefix("Why not ").removesuffix("?").lower()
        mark = fake_api.mark()
        await fake_api.push(fake_api.callback_update(data_key, fake_api.messages[(final.chat_id, final.params["message_id"])]))
        why_not = await fake_api.wait_for_call("sendPhoto", after=mark, timeout=30)
        for _ in range(100):  # the handler counts the map once sendPhoto has returned
            if svc.stats.heatmaps == 2:
                break
            await asyncio.sleep(0.02)
        assert svc.stats.heatmaps == 2 and svc.stats.heatmaps_cached == cached_before + 1, "from the cached grid"
        assert not fake_api.find_calls("editMessageMedia", after=mark), "one fine map, no coarse one first"

    assert why_not.text.startswith(f"Why not {other.capitalize()}?"), why_not.text
    assert f"its answer: {predicted.capitalize()}" in why_not.text
    assert [t for t, _ in buttons(why_not.params.get("reply_markup"))] == [f"Why not {n.capitalize()}?" for n in others
                                                                          if n != other]
    # The same numbers as the map explained directly for that class: the same picture, byte for byte.
    target = classifier.class_names.index(other)
    direct = OcclusionExplainer(classifier.network, patch=settings.why_patch, stride=settings.why_stride,
                                batch_size=settings.why_batch_size).explain(classifier.preprocess(image), target=target)
    assert direct.target == target
    expected = render_explanation(image, direct, target, ENGLISH, classifier.class_names, classifier.preprocess_config,
                                  settings.why_patch, settings.why_stride)
    assert why_not.photo_bytes == expected


def _by_probability(classifier, image, names: list[str]) -> list[str]:
    scores = dict(classifier.predict_image(image, top_k=len(classifier.class_names)).top)
    return sorted(names, key=lambda name: -scores[name])


async def test_a_forged_why_not_button_is_answered(fake_api, running_bot):
    async with running_bot():
        update = await fake_api.push(fake_api.photo_update(jpeg(seed=1)))
        answer = await fake_api.wait_for_answer(update["message"])
        mark = fake_api.mark()
        await fake_api.push(fake_api.callback_update("wn:nothere:1", answer.result))
        query = await fake_api.wait_for_call("answerCallbackQuery", after=mark)
    assert "no longer have that photo" in query.params["text"]
    assert not fake_api.find_calls("sendPhoto", after=mark)
