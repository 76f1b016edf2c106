"""``kb_search`` as a tool for the model (profiles with ``kb_mode = "tool"``).

A plain async function plus its JSON-schema description, and ``kb_search_tool``, which
makes it a ``core.tools`` tool bound to one profile's knowledge bases (the service adds it
to that profile's toolbox).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from core.knowledge.search import Passage, Searcher
from core.tools.registry import Tool, ToolContext

__all__ = ["KB_SEARCH_SCHEMA", "kb_search", "kb_search_tool"]

KB_SEARCH_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "kb_search",
        "description": (
            "Search the team's knowledge base (FAQ, policies, product documents). Returns "
            "numbered passages with their source; cite them in the answer as [n]. Call it "
            "before answering any question about the business."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string",
                          "description": "what to look for, in the customer's words"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 10,
                          "description": "how many passages (default 4)"},
            },
            "required": ["query"],
            "additionalProperties": False,
        },
    },
}


async def kb_search(searcher: Searcher, knowledge: Sequence[str], *, query: str,
                    limit: int = 4) -> dict[str, Any]:
    """Run the tool: the passages as JSON-ready data (``found: false`` when none)."""
    limit = max(1, min(int(limit), 10))
    passages: list[Passage] = await searcher.search(knowledge, query, k=limit)
    return {
        "found": bool(passages),
        "passages": [
            {"n": n, "title": p.title, "heading": p.heading, "source": p.source,
             "text": p.text, "score": round(p.score, 4)}
            for n, p in enumerate(passages, 1)
        ],
        "note": "" if passages else "Nothing relevant found: say you do not know.",
    }


def kb_search_tool(searcher: Searcher, knowledge: Sequence[str]) -> Tool:
    """``kb_search`` over ``knowledge`` (one profile's bases), as the model may call it."""
    spec = KB_SEARCH_SCHEMA["function"]

    async def run(args: Mapping[str, Any], ctx: ToolContext) -> str:
        found = await kb_search(searcher, knowledge, query=str(args["query"]),
                                limit=int(args.get("limit", 4)))
        return json.dumps(found, ensure_ascii=False)

    return Tool(spec["name"], spec["description"], run, parameters=spec["parameters"],
                label=lambda _: "Searching the knowledge base…")
