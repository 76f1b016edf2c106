"""Fault translation details: Retry-After forms, odd SSE data."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from core.model import OpenAIClient
from core.model.faults import retry_after_seconds
from core.types import FinishChunk, TextChunk
from tests.core.model.conftest import call, collect


def test_retry_after_forms() -> None:
    assert retry_after_seconds({"retry-after": "3"}) == 3
    assert retry_after_seconds({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 -0000"}) == 0
    assert retry_after_seconds({}) is None


async def test_odd_sse_data_is_skipped() -> None:
    body = (
        'data: null\n\ndata: [1]\n\ndata: "text"\n\n'
        'data: {"choices":[{"delta":{"content":"ok"},"finish_reason":null}],"error":null}\n\n'
        'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    )

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="text/event-stream")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as http:
            client = OpenAIClient(http, base_url=f"http://127.0.0.1:{port}/v1", api_key=None)
            chunks = await collect(client.stream(call()))
    finally:
        await runner.cleanup()
    assert chunks[0] == TextChunk("ok")
    assert isinstance(chunks[-1], FinishChunk) and chunks[-1].reason == "stop"
