"""The gateway's client against a hostile cluster on 127.0.0.1 (a plain aiohttp server, no Ray): a frame
whose length prefix is huge is refused before it is buffered, and a token refused at the start stops it."""
from __future__ import annotations

import contextlib
import struct

import pytest
from aiohttp import web

from bot.config import ConfigError
from bot.inference.cluster import ClusterInference
from devtools.samples import jpeg
from model.preprocess import PreprocessConfig


@contextlib.asynccontextmanager
async def cluster(explain_body: bytes, token: str = "the-token"):
    posts = []

    async def route(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {token}":
            return web.json_response({"error": "unauthorized"}, status=401)
        if request.method == "GET":
            return web.json_response({"class_names": ["a", "b"], "checkpoint_id": "c" * 64,
                                      "preprocess": PreprocessConfig().to_dict(), "runtime": "test", "replicas": {}})
        posts.append(await request.read())
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(explain_body)
        return response

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", route)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}", posts
    finally:
        await runner.cleanup()


def client(address: str, token: str = "the-token") -> ClusterInference:
    return ClusterInference(address, token, queue_size=4, per_chat_queue=2, why_queue_size=2, deadline_s=10,
                            why_deadline_s=10)


async def test_a_frame_longer_than_the_cap_is_a_broken_stream_retried_once():
    async with cluster(struct.pack(">Q", 2**40) + b"x" * 100) as (address, posts):
        inference = client(address)
        inference.start()
        try:
            await inference.ready()
            with pytest.raises(RuntimeError, match="failed twice.*a frame of 1099511627776 bytes"):
                async for _ in inference.explain(1, jpeg(seed=1), [(112, 56)]):
                    pass
        finally:
            await inference.stop()
    assert len(posts) == 2 and inference.retries == 1


async def test_a_token_the_cluster_refuses_at_the_start_is_a_config_error():
    async with cluster(b"") as (address, _):
        inference = client(address, token="wrong")
        inference.start()
        try:
            with pytest.raises(ConfigError, match="python -m model serve"):
                await inference.ready()
        finally:
            await inference.stop()
