"""Tool calls on the wire: tool definitions, replayed calls and results, streamed fragments.

Chat Completions and DashScope native share the shapes (``tools`` with ``function``
objects, ``tool_calls`` on the assistant message, ``role: tool`` results); streamed calls
arrive as fragments keyed by ``index`` and are put together here, apart from the transport.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.types import ContextMessage, ToolCall, ToolSpec

__all__ = [
    "ToolAssembler", "ToolFragment", "chat_tool_message", "chat_tools", "fragments",
    "parse_tool_calls", "wire_calls",
]


@dataclass(slots=True)
class ToolFragment:
    """One piece of a streamed tool call."""

    index: int | None  # None: the server sent no index (DashScope native streams)
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(slots=True)
class _Partial:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolAssembler:
    """Puts streamed tool-call fragments together by index (``id: ""`` counts as absent)."""

    def __init__(self) -> None:
        self._calls: dict[int, _Partial] = {}

    def _slot(self, fragment: ToolFragment) -> int:
        """Where a fragment without an index goes: a new call when it names one (a name, or
        an id other than the current call's), else the current call."""
        if fragment.index is not None:
            return fragment.index
        if not self._calls:
            return 0
        last = max(self._calls)
        current = self._calls[last]
        if (fragment.name and current.name) or (
                fragment.id and current.id and fragment.id != current.id):
            return last + 1
        return last

    def add(self, fragment: ToolFragment) -> None:
        """Take one fragment."""
        partial = self._calls.setdefault(self._slot(fragment), _Partial())
        if fragment.id and not partial.id:
            partial.id = fragment.id
        if fragment.name and not partial.name:
            partial.name = fragment.name
        if fragment.arguments:
            partial.arguments.append(fragment.arguments)

    def __bool__(self) -> bool:
        return bool(self._calls)

    def calls(self) -> tuple[ToolCall, ...]:
        """The whole calls, in index order; a call without an id gets one."""
        return tuple(
            ToolCall(p.id or f"call_{index}", p.name, "".join(p.arguments))
            for index, p in sorted(self._calls.items())
        )


def chat_tools(specs: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    """``tools`` for Chat Completions and DashScope native."""
    return [{"type": "function", "function": {"name": s.name, "description": s.description,
                                              "parameters": dict(s.parameters)}}
            for s in specs]


def wire_calls(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    """An assistant message's ``tool_calls``, as the model sent them."""
    return [{"id": c.id, "type": "function", "index": i,
             "function": {"name": c.name, "arguments": c.arguments}}
            for i, c in enumerate(calls)]


def chat_tool_message(message: ContextMessage, *, with_name: str = "") -> dict[str, Any] | None:
    """The wire form of an assistant tool-call message or a tool result; else ``None``."""
    if message.tool_calls:
        return {"role": "assistant", "content": message.text,
                "tool_calls": wire_calls(message.tool_calls)}
    if message.role == "tool":
        out: dict[str, Any] = {"role": "tool", "content": message.text,
                               "tool_call_id": message.tool_call_id}
        if with_name:
            out["name"] = with_name
        return out
    return None


def fragments(raw: Any) -> list[ToolFragment]:
    """Fragments in a streamed delta's ``tool_calls`` (odd entries are skipped)."""
    found: list[ToolFragment] = []
    for position, item in enumerate(raw if isinstance(raw, list) else ()):
        if not isinstance(item, dict):
            continue
        raw_function = item.get("function")
        function: dict[str, Any] = raw_function if isinstance(raw_function, dict) else {}
        index = item.get("index")
        found.append(ToolFragment(
            index if isinstance(index, int) else (position if len(raw) > 1 else None),
            str(item.get("id") or ""),
            str(function.get("name") or ""),
            str(function.get("arguments") or ""),
        ))
    return found


def parse_tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    """Whole calls from a non-streamed message's ``tool_calls``."""
    assembler = ToolAssembler()
    for fragment in fragments(raw):
        assembler.add(fragment)
    return assembler.calls()
