"""kb_search as a tool function; profile settings of knowledge bases."""

from __future__ import annotations

import json

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.db import open_store
from core.errors import ConfigError
from core.knowledge.tool import KB_SEARCH_SCHEMA, kb_search
from core.model import OpenAIClient
from core.profiles import Profile, build_profile
from core.service import ChatService, ServiceOptions
from core.types import Author, ChatRequest, FinalEvent
from tests.core.knowledge.test_index import index_faq
from tests.core.tools.test_loop import tool_results
from tests.fakes.model_server import FakeModelServer, Reply


async def test_kb_search_returns_json_ready_passages(engine: AsyncEngine) -> None:
    _, searcher = await index_faq(engine)
    result = await kb_search(searcher, ["shop-faq"], query="which cards do you accept", limit=2)
    assert result["found"] is True
    assert result["passages"][0]["heading"] == "Shop FAQ > Payment"
    assert result["passages"][0]["n"] == 1 and "Klarna" in result["passages"][0]["text"]
    json.dumps(result)  # a tool result must serialise
    none = await kb_search(searcher, ["shop-faq"], query="weather tomorrow")
    assert none == {"found": False, "passages": [],
                    "note": "Nothing relevant found: say you do not know."}
    assert KB_SEARCH_SCHEMA["function"]["name"] == "kb_search"
    assert KB_SEARCH_SCHEMA["function"]["parameters"]["required"] == ["query"]


def test_profile_knowledge_settings() -> None:
    profile = build_profile("shop", {"knowledge": ["shop-faq", "returns"], "kb_passages": 6})
    assert profile.knowledge == ("shop-faq", "returns") and profile.kb_mode == "auto"
    assert profile.kb_passages == 6
    for bad, match in [({"knowledge": "shop-faq"}, "knowledge must be a list"),
                       ({"knowledge": ["bad name"]}, "knowledge must be a list"),
                       ({"kb_mode": "magic"}, "kb_mode must be"),
                       ({"kb_passages": 0}, "kb_passages")]:
        with pytest.raises(ConfigError, match=match):
            build_profile("shop", bad)


async def test_tool_mode_the_model_calls_kb_search(engine: AsyncEngine,
                                                   fake_model: FakeModelServer) -> None:
    """kb_mode = "tool": the profile's toolbox has kb_search over its bases; the model's
    call is answered with the passages (no passages go into the system prompt)."""
    _, searcher = await index_faq(engine)
    profile = build_profile("shop", {"knowledge": ["shop-faq"], "kb_mode": "tool",
                                     "system_prompt": "You answer customers."})
    async with aiohttp.ClientSession() as http:
        model = OpenAIClient(http, base_url=fake_model.openai_base, api_key="k", timeout=5)
        service = ChatService(store=open_store(engine), model=model, knowledge=searcher,
                              options=ServiceOptions(model="qwen-plus",
                                                     profiles={"default": Profile(),
                                                               "shop": profile}))
        assert [t.name for t in service.toolbox(profile)] == ["kb_search"]
        fake_model.enqueue(
            Reply(text="", tool_calls=[("kb_search", '{"query": "which cards do you accept"}')]),
            Reply(text="We take Visa and Klarna [1]."))
        request = ChatRequest(platform="console", scope="console/kb", author=Author("u", "U"),
                              text="Can I pay with Klarna?", event_id="kb1", profile="shop")
        events = [e async for e in service.handle(request)]
    assert isinstance(events[-1], FinalEvent) and "Klarna" in events[-1].text
    [result] = tool_results(fake_model)
    found = json.loads(result)
    assert found["found"] is True and "Klarna" in found["passages"][0]["text"]
    first = fake_model.requests[0].json["messages"][0]["content"]
    assert "Klarna" not in str(first)  # tool mode: nothing searched up front
    assert fake_model.requests[0].json["tools"][0]["function"]["name"] == "kb_search"
