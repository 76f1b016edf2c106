"""The console shows tools working: one dim status line per tool call."""

from __future__ import annotations

import io

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.console.ask import stream_turn
from bots.db import open_store
from core.model import OpenAIClient
from core.profiles import Profile
from core.service import ChatService, ServiceOptions
from core.tools import Registry
from core.tools.builtin import current_time_tool
from core.types import Author, ChatRequest, FinalEvent
from tests.fakes.model_server import FakeModelServer, Reply


async def test_console_prints_a_dim_status_line(engine: AsyncEngine,
                                                fake_model: FakeModelServer) -> None:
    async with aiohttp.ClientSession() as http:
        model = OpenAIClient(http, base_url=fake_model.openai_base, api_key="k", timeout=5)
        service = ChatService(store=open_store(engine), model=model, options=ServiceOptions(
            model="qwen-plus", profiles={"default": Profile(tools=("current_time",))},
            tools=Registry([current_time_tool()])))
        out, status = io.StringIO(), io.StringIO()
        request = ChatRequest(platform="console", scope="console/s", author=Author("me"),
                              text="time?", event_id="s1")
        fake_model.enqueue(Reply(text="", tool_calls=[("current_time", "{}")]),
                           Reply(text="It is noon."))
        result = await stream_turn(service, request, out, status)
        assert isinstance(result, FinalEvent) and out.getvalue() == "It is noon."
        assert status.getvalue() == "\x1b[2m· Checking the time…\x1b[0m\n"
