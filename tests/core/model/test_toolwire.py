"""Putting streamed tool-call fragments together, with and without indexes."""

from __future__ import annotations

from typing import Any

from core.model.toolwire import ToolAssembler, fragments
from core.types import ToolCall


def assemble(*deltas: list[dict[str, Any]]) -> tuple[ToolCall, ...]:
    assembler = ToolAssembler()
    for delta in deltas:
        for fragment in fragments(delta):
            assembler.add(fragment)
    return assembler.calls()


def test_indexed_fragments_with_empty_ids() -> None:
    calls = assemble(
        [{"index": 0, "id": "call_a", "type": "function",
          "function": {"name": "weather", "arguments": ""}}],
        [{"index": 1, "id": "call_b", "type": "function",
          "function": {"name": "time", "arguments": "{}"}}],
        [{"index": 0, "id": "", "function": {"arguments": '{"city": '}}],
        [{"index": 0, "id": "", "function": {"arguments": '"Rome"}'}}],
        [{"index": 0, "id": "", "function": {"arguments": ""}}],
    )
    assert calls == (ToolCall("call_a", "weather", '{"city": "Rome"}'),
                     ToolCall("call_b", "time", "{}"))


def test_fragments_without_index_start_a_call_when_they_name_one() -> None:
    # DashScope native frames carry no index (protocols-2 G.5).
    calls = assemble(
        [{"type": "function", "id": "call_1", "function": {"name": "weather",
                                                            "arguments": '{"city":'}}],
        [{"type": "function", "id": "", "function": {"arguments": ' "Rome"}'}}],
        [{"type": "function", "id": "call_2", "function": {"name": "weather",
                                                            "arguments": '{"city":'}}],
        [{"type": "function", "id": "", "function": {"arguments": ' "Oslo"}'}}],
    )
    assert calls == (ToolCall("call_1", "weather", '{"city": "Rome"}'),
                     ToolCall("call_2", "weather", '{"city": "Oslo"}'))


def test_a_call_without_an_id_gets_one() -> None:
    [call] = assemble([{"index": 0, "function": {"name": "f", "arguments": "{}"}}])
    assert call.id == "call_0" and call.name == "f"
