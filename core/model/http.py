"""What the OpenAI-compatible and DashScope-native clients share: the HTTP exchange.

A subclass says how to build the request and how to read one JSON answer or one SSE
event; this class sends it over the pooled client, turns HTTP failures into core errors
and keeps the rules for a stream that breaks: nothing received yet is worth a retry
(``ModelUnavailable``), a partial answer is kept (``ModelStreamBroken``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from core.errors import ModelError, ModelRefused, ModelStreamBroken, ModelUnavailable
from core.model.faults import error_from_body, error_from_response
from core.model.sse import ServerSentEvent, iter_sse
from core.model.toolwire import ToolAssembler, ToolFragment
from core.types import (
    FinishChunk,
    ModelCall,
    ModelChunk,
    ReasoningChunk,
    TextChunk,
    ToolCallsChunk,
    Usage,
)

__all__ = ["HTTPModelClient", "Piece"]


@dataclass(slots=True)
class Piece:
    """What one stream event says."""

    reasoning: str = ""
    text: str = ""
    finish: str | None = None
    usage: Usage | None = None
    model: str = ""
    error: ModelError | None = None
    done: bool = False
    tools: list[ToolFragment] = field(default_factory=list)


class HTTPModelClient:
    """A model client over one pooled ``httpx.AsyncClient``, streaming or not."""

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

    # ---- what a dialect provides ----------------------------------------------------

    def _request(self, call: ModelCall, stream: bool) -> httpx.Request:
        raise NotImplementedError

    def _parse_json(self, body: Any, model: str) -> list[ModelChunk]:
        """Chunks of a whole (non-streamed) answer; may raise KeyError/TypeError/…"""
        raise NotImplementedError

    def _parse_event(self, event: ServerSentEvent, data: dict[str, Any], model: str) -> Piece:
        raise NotImplementedError

    # ---- shared ---------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def _error(self, status: int, body: Any, model: str) -> ModelError:
        return error_from_body(status, body, model=model, secrets=(self._key,))

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
                try:
                    body = json.loads(await response.aread())
                    chunks = self._parse_json(body, call.model)
                except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError,
                        AttributeError) as err:
                    raise ModelUnavailable(f"unreadable answer: {type(err).__name__}") from err
                for chunk in chunks:
                    yield chunk
        finally:
            await response.aclose()

    async def _read_stream(
        self, response: httpx.Response, model: str
    ) -> AsyncIterator[ModelChunk]:
        text: list[str] = []
        finish: str | None = None
        usage: Usage | None = None
        answered_model = model
        tools = ToolAssembler()
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
                piece = self._parse_event(event, data, model)
                if piece.error is not None:
                    if isinstance(piece.error, ModelRefused) or not text:
                        raise piece.error
                    raise ModelStreamBroken(str(piece.error), partial="".join(text))
                if piece.reasoning:
                    yield ReasoningChunk(piece.reasoning)
                if piece.text:
                    text.append(piece.text)
                    yield TextChunk(piece.text)
                for fragment in piece.tools:
                    tools.add(fragment)
                finish = piece.finish or finish
                usage = piece.usage or usage
                answered_model = piece.model or answered_model
        except httpx.HTTPError as err:
            if not text:
                raise ModelUnavailable(
                    f"the answer stream failed: {type(err).__name__}"
                ) from err
            raise ModelStreamBroken(f"stream dropped: {type(err).__name__}",
                                    partial="".join(text)) from err
        if finish is None:
            if not text:
                raise ModelUnavailable("the answer stream ended before any answer")
            raise ModelStreamBroken("stream ended without a finish reason",
                                    partial="".join(text))
        if tools:  # only whole calls leave here: a stream cut mid-call runs nothing
            yield ToolCallsChunk(tools.calls())
        yield FinishChunk(finish, usage, answered_model)
