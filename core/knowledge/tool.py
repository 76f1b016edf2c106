"""``kb_search`` as a tool for the model (profiles with ``kb_mode = "tool"``).

A plain async function plus its JSON-schema description; the tool registry of
``core/tools`` registers it (no tool loop lives here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.knowledge.search import Passage, Searcher

__all__ = ["KB_SEARCH_SCHEMA", "TOOL_MODE_READY", "kb_search"]

# Flipped when the tool loop (core/tools) registers kb_search; until then profiles may
# only use kb_mode = "auto".
TOOL_MODE_READY = False

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
