"""show_thinking: the model's reasoning as ThinkingEvents, never part of the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.db import open_store
from core.model import OpenAIClient
from core.profiles import Profile
from core.service import ChatService, ServiceOptions
from core.types import Author, ChatRequest, FinalEvent, ThinkingEvent
from tests.fakes.model_server import FakeModelServer, Reply


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize("show", [True, False])
async def test_thinking_is_shown_only_when_the_profile_asks(
        engine: AsyncEngine, fake_model: FakeModelServer, http: aiohttp.ClientSession,
        show: bool) -> None:
    model = OpenAIClient(http, base_url=fake_model.openai_base, api_key="k", timeout=5)
    service = ChatService(store=open_store(engine), model=model, options=ServiceOptions(
        model="qwen-plus", profiles={"default": Profile(show_thinking=show)}))
    fake_model.enqueue(Reply(text="Four.", reasoning="Two and two make four.", chunk_size=5))
    request = ChatRequest(platform="console", scope=f"console/think{show}",
                          author=Author("u1"), text="2+2?", event_id=f"think{show}")
    events = [e async for e in service.handle(request)]
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingEvent))
    assert thinking == ("Two and two make four." if show else "")
    final = events[-1]
    assert isinstance(final, FinalEvent) and final.text == "Four."
