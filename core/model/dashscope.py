"""DashScope-native generation endpoints (text-generation and multimodal-generation)."""

from __future__ import annotations

from typing import Any

from core.model.cache import cached_usage
from core.model.http import HTTPModelClient, ModelRequest, Piece
from core.model.openai import image_data_url, sampling_fields, sends_thinking_flag, video_frames
from core.model.sse import ServerSentEvent
from core.model.toolwire import chat_tool_message, chat_tools, fragments, parse_tool_calls
from core.types import (
    ContextMessage,
    FinishChunk,
    ModelCall,
    ModelChunk,
    ReasoningChunk,
    TextChunk,
    ToolCallsChunk,
    Usage,
)

__all__ = ["DashScopeClient", "is_multimodal"]

_MULTIMODAL_MARKERS = ("-vl", "vl-", "qvq", "omni", "qwen3.5", "qwen3.6")


def is_multimodal(call: ModelCall) -> bool:
    """Whether the call goes to multimodal-generation: images or videos, or a
    vision-native model."""
    name = call.model.lower()
    return (any(m.images or m.videos for m in call.messages)
            or any(k in name for k in _MULTIMODAL_MARKERS))


def _content(message: ContextMessage, multimodal: bool) -> str | list[dict[str, Any]]:
    if not multimodal:
        return message.text
    # The native multimodal shape: a video is its list of frames (and their rate); the
    # native API is always sent the frames (a whole file as a data URL is unconfirmed).
    items: list[dict[str, Any]] = [
        {"video": video_frames(v), "fps": v.fps} for v in message.videos
    ]
    items += [{"image": image_data_url(i.data, i.mime)} for i in message.images]
    if message.text or not items:
        items.append({"text": message.text})
    return items


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(i.get("text", "")) for i in content if isinstance(i, dict))
    return ""


def _status_of(comment: str) -> int:
    """The status in a ``:HTTP_STATUS/400`` comment line; 400 when absent or odd."""
    _, _, code = comment.partition("HTTP_STATUS/")
    return int(code) if code.isdigit() else 400


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    cached, created = cached_usage(raw)
    return Usage(int(raw.get("input_tokens") or 0), int(raw.get("output_tokens") or 0),
                 cached_tokens=cached, cache_creation_tokens=created)


def _messages(call: ModelCall, multimodal: bool) -> list[dict[str, Any]]:
    names = {c.id: c.name for m in call.messages for c in m.tool_calls}
    out: list[dict[str, Any]] = []
    for m in call.messages:
        # Older native docs name the tool on its result; send both (protocols-2 G.5).
        wire = chat_tool_message(m, with_name=names.get(m.tool_call_id, ""))
        out.append(wire or {"role": m.role, "content": _content(m, multimodal)})
    return out


class DashScopeClient(HTTPModelClient):
    """Qwen over DashScope's native API, over one pooled ``aiohttp.ClientSession``."""

    def _request(self, call: ModelCall, stream: bool) -> ModelRequest:
        multimodal = is_multimodal(call)
        task = "multimodal-generation" if multimodal else "text-generation"
        s = call.sampling
        parameters: dict[str, Any] = {"result_format": "message", "incremental_output": stream}
        thinking = sends_thinking_flag(call.model, s.enable_thinking)
        if thinking is not None:
            parameters["enable_thinking"] = thinking and stream
        parameters |= sampling_fields(s)
        body = {
            "model": call.model,
            "input": {"messages": _messages(call, multimodal)},
            "parameters": parameters,
        }
        if call.tools:
            parameters["tools"] = chat_tools(call.tools)
            if call.tool_choice:
                parameters["tool_choice"] = call.tool_choice
            else:
                parameters["parallel_tool_calls"] = True
        headers = self._headers()
        if stream:
            headers["X-DashScope-SSE"] = "enable"
            headers["Accept"] = "text/event-stream"
        url = f"{self._base}/services/aigc/{task}/generation"
        return ModelRequest(url, body, headers)

    def _parse_json(self, body: Any, model: str) -> list[ModelChunk]:
        if body.get("code"):
            raise self._error(400, body, model)
        choice = body["output"]["choices"][0]
        message = choice.get("message") or {}
        chunks: list[ModelChunk] = []
        if message.get("reasoning_content"):
            chunks.append(ReasoningChunk(str(message["reasoning_content"])))
        text = _text_of(message.get("content"))
        if text:
            chunks.append(TextChunk(text))
        if message.get("tool_calls"):
            chunks.append(ToolCallsChunk(parse_tool_calls(message["tool_calls"])))
        chunks.append(FinishChunk(choice.get("finish_reason") or "stop",
                                  _usage(body.get("usage")), model))
        return chunks

    def _parse_event(self, event: ServerSentEvent, data: dict[str, Any], model: str) -> Piece:
        if event.event == "error" or data.get("code"):
            return Piece(error=self._error(_status_of(event.comment), data, model))
        piece = Piece(usage=_usage(data.get("usage")))
        for choice in (data.get("output") or {}).get("choices") or ():
            message = choice.get("message") or {}
            piece.reasoning += str(message.get("reasoning_content") or "")
            piece.text += _text_of(message.get("content"))
            if message.get("tool_calls"):
                piece.tools += fragments(message["tool_calls"])
            reason = choice.get("finish_reason")
            if reason and reason != "null":
                piece.finish = reason
        return piece
