"""kb_search as a tool function; profile settings of knowledge bases."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core.errors import ConfigError
from core.knowledge.tool import KB_SEARCH_SCHEMA, kb_search
from core.profiles import build_profile
from tests.core.knowledge.test_index import index_faq


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
                       ({"kb_mode": "tool"}, "needs tool calling"),
                       ({"kb_passages": 0}, "kb_passages")]:
        with pytest.raises(ConfigError, match=match):
            build_profile("shop", bad)
