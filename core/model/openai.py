"""OpenAI-compatible chat completions (DashScope compatible-mode, OpenAI, vLLM, llama.cpp…)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from core.errors import ModelRefused, ModelStreamBroken, ModelUnavailable
from core.model.faults import error_from_body, error_from_response, redact
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

__all__ = ["OpenAIClient", "image_data_url", "sends_thinking_flag"]


def image_data_url(data: bytes, mime: str) -> str:
    """A base64 data URL: how images reach the model (never a platform URL)."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def sends_thinking_flag(model: str, explicit: bool | None) -> bool | None:
    """``enable_thinking`` to send: the setting, or ``False`` for Qwen models, else omitted."""
    if explicit is not None:
        return explicit
    return False if model.lower().startswith("qwen") else None


def _content(message: ContextMessage) -> str | list[dict[str, Any]]:
    if not message.images:
        return message.text
    parts: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": image_data_url(i.data, i.mime)}}
        for i in message.images
    ]
    if message.text:
        parts.append({"type": "text", "text": message.text})
    return parts


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0))


class OpenAIClient:
    """Chat completions over one pooled ``httpx.AsyncClient``, streaming or not."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        api_key: str | None,
        timeout: float = 120.0,
    ) -> None:
        self._http = http
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._key = api_key
        self._timeout = httpx.Timeout(timeout, connect=10.0)

    def _body(self, call: ModelCall, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": call.model,
            "messages": [{"role": m.role, "content": _content(m)} for m in call.messages],
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        s = call.sampling
        if s.temperature is not None:
            body["temperature"] = s.temperature
        if s.top_p is not None:
            body["top_p"] = s.top_p
        if s.max_tokens is not None:
            body["max_tokens"] = s.max_tokens
        thinking = sends_thinking_flag(call.model, s.enable_thinking)
        if thinking is not None:
            # Thinking is only allowed on streaming calls.
            body["enable_thinking"] = thinking and stream
        return body

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream, application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    async def stream(self, call: ModelCall, *, stream: bool = True) -> AsyncIterator[ModelChunk]:
        """Yield reasoning and text chunks, then one ``FinishChunk``."""
        request = self._http.build_request(
            "POST", self._url, json=self._body(call, stream), headers=self._headers(),
            timeout=self._timeout,
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as err:
            raise ModelUnavailable(
                f"could not reach the model endpoint: {type(err).__name__}"
            ) from err
        try:
            if response.status_code != 200:
                raise await error_from_response(response, model=call.model, secrets=(self._key,))
            if stream and "text/event-stream" in response.headers.get("content-type", ""):
                async for chunk in self._read_stream(response, call.model):
                    yield chunk
            else:
                for chunk in await self._read_json(response, call.model):
                    yield chunk
        finally:
            await response.aclose()

    async def _read_json(self, response: httpx.Response, model: str) -> list[ModelChunk]:
        try:
            body = json.loads(await response.aread())
            choice = body["choices"][0]
            message = choice.get("message") or {}
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as err:
            raise ModelUnavailable(f"unreadable answer: {type(err).__name__}") from err
        chunks: list[ModelChunk] = []
        if message.get("reasoning_content"):
            chunks.append(ReasoningChunk(message["reasoning_content"]))
        if message.get("content"):
            chunks.append(TextChunk(message["content"]))
        chunks.append(FinishChunk(choice.get("finish_reason") or "stop",
                                  _usage(body.get("usage")), body.get("model") or model))
        return chunks

    async def _read_stream(
        self, response: httpx.Response, model: str
    ) -> AsyncIterator[ModelChunk]:
        text: list[str] = []
        finish: str | None = None
        usage: Usage | None = None
        answered_model = model
        try:
            async for event in iter_sse(response.aiter_lines()):
                if event.data.strip() == "[DONE]":
                    break
                try:
                    data = json.loads(event.data)
                except ValueError:
                    continue
                if not isinstance(data, dict):
                    continue
                if data.get("error"):
                    err = error_from_body(200, data, model=model, secrets=(self._key,))
                    if isinstance(err, ModelRefused) or not text:
                        raise err
                    raise ModelStreamBroken(str(err), partial="".join(text)) from err
                answered_model = data.get("model") or answered_model
                usage = _usage(data.get("usage")) or usage
                for choice in data.get("choices") or ():
                    delta = choice.get("delta") or {}
                    if delta.get("reasoning_content"):
                        yield ReasoningChunk(delta["reasoning_content"])
                    if delta.get("content"):
                        text.append(delta["content"])
                        yield TextChunk(delta["content"])
                    finish = choice.get("finish_reason") or finish
        except httpx.HTTPError as err:
            reason = redact(type(err).__name__)
            if not text:
                raise ModelUnavailable(f"the answer stream failed: {reason}") from err
            raise ModelStreamBroken(f"stream dropped: {reason}",
                                    partial="".join(text)) from err
        if finish is None:
            if not text:
                raise ModelUnavailable("the answer stream ended before any answer")
            raise ModelStreamBroken("stream ended without a finish reason",
                                    partial="".join(text))
        yield FinishChunk(finish, usage, answered_model)
