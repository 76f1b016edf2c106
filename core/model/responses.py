"""The OpenAI-compatible Responses API (``POST {base}/responses``), streaming or not.

History stays in our database: the whole context is sent each turn with ``store: false``
(no ``previous_response_id``), so a conversation can move between protocols and models.
Function calls come back as ``function_call`` items and go back as ``function_call_output``
items right after their call. Thinking arrives as reasoning items or reasoning deltas
(``response.reasoning_text.delta`` on DashScope, ``…reasoning_summary_text.delta``
elsewhere) and is kept apart from the answer.
"""

from __future__ import annotations

from typing import Any

from core.model.http import HTTPModelClient, ModelRequest, Piece
from core.model.images import without_videos
from core.model.openai import image_data_url, sampling_fields, sends_thinking_flag
from core.model.sse import ServerSentEvent
from core.model.toolwire import ToolFragment
from core.types import (
    ContextMessage,
    FinishChunk,
    ModelCall,
    ModelChunk,
    ReasoningChunk,
    TextChunk,
    ToolCall,
    ToolCallsChunk,
    Usage,
)

__all__ = ["ResponsesClient"]

_REASONING_DELTAS = ("response.reasoning_text.delta", "response.reasoning_summary_text.delta")
_ENDS = ("response.completed", "response.incomplete")


def _items(message: ContextMessage) -> list[dict[str, Any]]:
    if message.tool_calls:
        items: list[dict[str, Any]] = (
            [{"role": "assistant", "content": message.text}] if message.text else [])
        return items + [{"type": "function_call", "call_id": c.id, "name": c.name,
                         "arguments": c.arguments} for c in message.tool_calls]
    if message.role == "tool":
        return [{"type": "function_call_output", "call_id": message.tool_call_id,
                 "output": message.text}]
    if not message.images:
        return [{"role": message.role, "content": message.text}]
    parts: list[dict[str, Any]] = [
        {"type": "input_image", "image_url": image_data_url(i.data, i.mime)}
        for i in message.images
    ]
    if message.text:
        parts.append({"type": "input_text", "text": message.text})
    return [{"role": message.role, "content": parts}]


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    inp = raw.get("input_tokens_details")
    out = raw.get("output_tokens_details")
    return Usage(
        int(raw.get("input_tokens") or 0), int(raw.get("output_tokens") or 0),
        int(inp.get("cached_tokens") or 0) if isinstance(inp, dict) else 0,
        int(out.get("reasoning_tokens") or 0) if isinstance(out, dict) else 0,
    )


def _texts(parts: Any, kinds: tuple[str, ...]) -> str:
    if not isinstance(parts, list):
        return ""
    return "".join(str(p.get("text") or "") for p in parts
                   if isinstance(p, dict) and p.get("type") in kinds)


def _calls(output: Any) -> list[ToolCall]:
    return [ToolCall(str(i.get("call_id") or i.get("id") or f"call_{n}"), str(i.get("name")),
                     str(i.get("arguments") or ""))
            for n, i in enumerate(output if isinstance(output, list) else ())
            if isinstance(i, dict) and i.get("type") == "function_call"]


def _finish(response: dict[str, Any], calls: list[ToolCall]) -> str:
    if response.get("status") == "incomplete":
        why = str((response.get("incomplete_details") or {}).get("reason") or "")
        return "content_filter" if why == "content_filter" else "length"
    return "tool_calls" if calls else "stop"


def _error_body(raw: Any) -> dict[str, Any]:
    """A failure as an error body; moderation named inside a message counts as moderation."""
    error = raw if isinstance(raw, dict) else {}
    code = str(error.get("code") or "")
    message = str(error.get("message") or "")
    if "datainspectionfailed" in (code + message).lower().replace("_", ""):
        code = "DataInspectionFailed"
    return {"error": {"code": code or "server_error", "message": message}}


class ResponsesClient(HTTPModelClient):
    """The Responses API over the model client's pooled aiohttp session."""

    def _body(self, call: ModelCall, stream: bool) -> dict[str, Any]:
        call = without_videos(call)  # the Responses API has no video input (protocols-2 J)
        body: dict[str, Any] = {
            "model": call.model,
            "input": [item for m in call.messages for item in _items(m)],
            "stream": stream,
            "store": False,
        }
        s = call.sampling
        body |= sampling_fields(s, max_tokens="max_output_tokens")
        thinking = sends_thinking_flag(call.model, s.enable_thinking)
        if thinking is not None:
            body["enable_thinking"] = thinking
            if thinking:
                body["reasoning"] = {"effort": "medium"}
        if call.tools:
            # strict: false, or OpenAI's default (true) refuses schemas with optional keys.
            body["tools"] = [{"type": "function", "name": t.name, "description": t.description,
                              "parameters": dict(t.parameters), "strict": False}
                             for t in call.tools]
            if call.tool_choice:
                body["tool_choice"] = call.tool_choice
            else:
                body["parallel_tool_calls"] = True
        return body

    def _request(self, call: ModelCall, stream: bool) -> ModelRequest:
        headers = self._headers()
        headers["Accept"] = "text/event-stream, application/json"
        return ModelRequest(f"{self._base}/responses", self._body(call, stream), headers)

    def _parse_json(self, body: Any, model: str) -> list[ModelChunk]:
        if body.get("status") == "failed" or body.get("error"):
            raise self._error(200, _error_body(body.get("error")), model)
        output = body["output"]
        chunks: list[ModelChunk] = []
        for item in output:
            if item.get("type") == "reasoning":
                text = (_texts(item.get("summary"), ("summary_text",))
                        or _texts(item.get("content"), ("reasoning_text",)))
                if text:
                    chunks.append(ReasoningChunk(text))
            elif item.get("type") == "message":
                text = _texts(item.get("content"), ("output_text",))
                if text:
                    chunks.append(TextChunk(text))
        calls = _calls(output)
        if calls:
            chunks.append(ToolCallsChunk(tuple(calls)))
        chunks.append(FinishChunk(_finish(body, calls), _usage(body.get("usage")),
                                  str(body.get("model") or model)))
        return chunks

    def _parse_event(self, event: ServerSentEvent, data: dict[str, Any], model: str) -> Piece:
        kind = str(data.get("type") or event.event)
        if kind == "response.output_text.delta":
            return Piece(text=str(data.get("delta") or ""))
        if kind in _REASONING_DELTAS:
            return Piece(reasoning=str(data.get("delta") or ""))
        if kind == "response.failed":
            response = data.get("response") or {}
            return Piece(error=self._error(200, _error_body(response.get("error")), model))
        if kind == "error":
            return Piece(error=self._error(200, _error_body(data), model))
        if kind in _ENDS:
            # Calls are taken whole from the final object; argument deltas, where a server
            # sends them, would only repeat them.
            response = data.get("response") or {}
            calls = _calls(response.get("output"))
            return Piece(
                finish=_finish(response, calls), usage=_usage(response.get("usage")),
                model=str(response.get("model") or ""),
                tools=[ToolFragment(n, c.id, c.name, c.arguments) for n, c in enumerate(calls)],
            )
        return Piece()
