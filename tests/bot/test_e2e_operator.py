"""End to end for the operator: /stats for admins only (issue 7)."""
from __future__ import annotations

import re

import pytest

from devtools.samples import PDF, jpeg

pytestmark = pytest.mark.timeout(60)
ADMIN, STRANGER = 4242, 1001


async def test_stats_for_admins_only(fake_api, running_bot):
    async with running_bot(ADMIN_USER_IDS=f"{ADMIN}, 7"):
        photo = await fake_api.push(fake_api.photo_update(jpeg(1), user_id=STRANGER))
        await fake_api.wait_for_answer(photo["message"])
        mark = fake_api.mark()
        await fake_api.push(fake_api.document_update(PDF, file_name="x.pdf", user_id=STRANGER))
        await fake_api.wait_for_call("sendMessage", after=mark)
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/stats", user_id=STRANGER))
        refusal = await fake_api.wait_for_call("sendMessage", after=mark)
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/stats", user_id=ADMIN))
        stats = await fake_api.wait_for_call("sendMessage", after=mark)
    assert "uptime" not in refusal.text.lower() and "queue" not in refusal.text.lower(), refusal.text
    text = stats.text.lower()
    for word in ("uptime", "request", "error", "queue", "heat map"):
        assert word in text, f"/stats should show {word!r}: {stats.text!r}"
    assert "p50" in text or "median" in text or "percentile" in text, "and latency percentiles"
    requests = re.search(r"requests?\D{0,5}(\d+)", text)
    assert requests and int(requests.group(1)) >= 2, f"a photo and a PDF were requests: {stats.text!r}"
