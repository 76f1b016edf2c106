"""DashScope-native generation endpoints (text-generation and multimodal-generation)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from core.errors import ModelRefused, ModelStreamBroken, ModelUnavailable
from core.model.faults import error_from_body, error_from_response, redact
from core.model.openai import image_data_url, sends_thinking_flag
from core.model.sse import iter_sse
from core.types import (
    ContextMessage,
    FinishChunk,
    ModelCall,
    ModelChunk,
    ReasoningChunk,
    TextChunk,
    Usage,
)

__all__ = ["DashScopeClient", "is_multimodal"]

_MULTIMODAL_MARKERS = ("-vl", "vl-", "qvq", "omni", "qwen3.5", "qwen3.6")


def is_multimodal(call: ModelCall) -> bool:
    """Whether the call goes to multimodal-generation: images, or a vision-native model."""
    name = call.model.lower()
    return any(m.images for m in call.messages) or any(k in name for k in _MULTIMODAL_MARKERS)


def _content(message: ContextMessage, multimodal: bool) -> str | list[dict[str, str]]:
    if not multimodal:
        return message.text
    items: list[dict[str, str]] = [
        {"image": image_data_url(i.data, i.mime)} for i in message.images
    ]
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
    return Usage(int(raw.get("input_tokens") or 0), int(raw.get("output_tokens") or 0))


class DashScopeClient:
    """Qwen over DashScope's native API, over one pooled ``httpx.AsyncClient``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        api_key: str | None,
        timeout: float = 120.0,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._timeout = httpx.Timeout(timeout, connect=10.0)

    def _request(self, call: ModelCall, stream: bool) -> httpx.Request:
        multimodal = is_multimodal(call)
        task = "multimodal-generation" if multimodal else "text-generation"
        s = call.sampling
        parameters: dict[str, Any] = {"result_format": "message", "incremental_output": stream}
        thinking = sends_thinking_flag(call.model, s.enable_thinking)
        if thinking is not None:
            parameters["enable_thinking"] = thinking and stream
        for name in ("temperature", "top_p", "max_tokens"):
            value = getattr(s, name)
            if value is not None:
                parameters[name] = value
        body = {
            "model": call.model,
            "input": {"messages": [{"role": m.role, "content": _content(m, multimodal)}
                                   for m in call.messages]},
            "parameters": parameters,
        }
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        if stream:
            headers["X-DashScope-SSE"] = "enable"
            headers["Accept"] = "text/event-stream"
        url = f"{self._base}/services/aigc/{task}/generation"
        return self._http.build_request("POST", url, json=body, headers=headers,
                                        timeout=self._timeout)

    async def stream(self, call: ModelCall, *, stream: bool = True) -> AsyncIterator[ModelChunk]:
        """Yield reasoning and text chunks, then one ``FinishChunk``."""
        try:
            response = await self._http.send(self._request(call, stream), stream=True)
        except httpx.HTTPError as err:
            raise ModelUnavailable(
                f"could not reach the model endpoint: {type(err).__name__}"
            ) from err
        try:
            if response.status_code != 200:
                raise await error_from_response(response, model=call.model, secrets=(self._key,))
            if "text/event-stream" in response.headers.get("content-type", ""):
                async for chunk in self._read_stream(response, call.model):
                    yield chunk
            else:
                async for chunk in self._read_json(response, call.model):
                    yield chunk
        finally:
            await response.aclose()

    async def _read_json(self, response: httpx.Response, model: str) -> AsyncIterator[ModelChunk]:
        try:
            body = json.loads(await response.aread())
            if body.get("code"):
                raise error_from_body(400, body, model=model, secrets=(self._key,))
            choice = body["output"]["choices"][0]
            message = choice.get("message") or {}
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as err:
            raise ModelUnavailable(f"unreadable answer: {type(err).__name__}") from err
        if message.get("reasoning_content"):
            yield ReasoningChunk(str(message["reasoning_content"]))
        text = _text_of(message.get("content"))
        if text:
            yield TextChunk(text)
        yield FinishChunk(choice.get("finish_reason") or "stop", _usage(body.get("usage")), model)

    async def _read_stream(
        self, response: httpx.Response, model: str
    ) -> AsyncIterator[ModelChunk]:
        text: list[str] = []
        finish: str | None = None
        usage: Usage | None = None
        try:
            async for event in iter_sse(response.aiter_lines()):
                try:
                    data = json.loads(event.data)
                except ValueError:
                    continue
                if not isinstance(data, dict):
                    continue
                if event.event == "error" or data.get("code"):
                    status = _status_of(event.comment)
                    err = error_from_body(status, data, model=model, secrets=(self._key,))
                    if isinstance(err, ModelRefused) or not text:
                        raise err
                    raise ModelStreamBroken(str(err), partial="".join(text)) from err
                usage = _usage(data.get("usage")) or usage
                for choice in (data.get("output") or {}).get("choices") or ():
                    message = choice.get("message") or {}
                    if message.get("reasoning_content"):
                        yield ReasoningChunk(str(message["reasoning_content"]))
                    piece = _text_of(message.get("content"))
                    if piece:
                        text.append(piece)
                        yield TextChunk(piece)
                    reason = choice.get("finish_reason")
                    if reason and reason != "null":
                        finish = reason
        except httpx.HTTPError as err:
            reason_name = redact(type(err).__name__)
            if not text:
                raise ModelUnavailable(f"the answer stream failed: {reason_name}") from err
            raise ModelStreamBroken(f"stream dropped: {reason_name}",
                                    partial="".join(text)) from err
        if finish is None:
            if not text:
                raise ModelUnavailable("the answer stream ended before any answer")
            raise ModelStreamBroken("stream ended without a finish reason",
                                    partial="".join(text))
        yield FinishChunk(finish, usage, model)
