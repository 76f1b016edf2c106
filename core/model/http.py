"""What the OpenAI-compatible and DashScope-native clients share: the HTTP exchange.

A subclass says how to build the request and how to read one JSON answer or one SSE
event; this class sends it over the pooled client, turns HTTP failures into core errors
and keeps the rules for a stream that breaks: nothing received yet is worth a retry
(``ModelUnavailable``), a partial answer is kept (``ModelStreamBroken``).

The client is an ``aiohttp.ClientSession``: a streamed call costs about a quarter of the
CPU it costs through httpx (measured for issue 11), and a replica makes one per turn.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from core.errors import (
    LocalResourcesExhausted,
    ModelError,
    ModelProtocolError,
    ModelRefused,
    ModelStreamBroken,
    ModelUnavailable,
)
from core.model.faults import error_from_body, error_from_status, local_resource_fault
from core.model.sse import ServerSentEvent, iter_sse
from core.model.toolwire import ToolAssembler, ToolFragment
from core.model.transport import describe, shown_url
from core.types import (
    FinishChunk,
    ModelCall,
    ModelChunk,
    ReasoningChunk,
    TextChunk,
    ToolCallsChunk,
    Usage,
)

__all__ = ["HTTPModelClient", "ModelRequest", "Piece"]

# What a failed exchange raises: aiohttp's errors (refused, reset, a broken chunked body…)
# and its timeouts (TimeoutError; aiohttp's own timeout errors are both).
HTTP_ERRORS = (aiohttp.ClientError, TimeoutError)


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """One POST to the model endpoint."""

    url: str
    body: Any  # sent as JSON
    headers: dict[str, str]

# What a parser raises on an answer of the wrong shape ({"content": 5}, a list for a dict…).
_SHAPE_ERRORS = (KeyError, IndexError, TypeError, AttributeError, ValueError)


def _check_types(chunks: list[ModelChunk]) -> list[ModelChunk]:
    for chunk in chunks:
        if isinstance(chunk, TextChunk | ReasoningChunk) and not isinstance(chunk.text, str):
            raise TypeError(f"{type(chunk).__name__} of type {type(chunk.text).__name__}")
    return chunks


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
    """A model client over one pooled ``aiohttp.ClientSession``, streaming or not."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: str | None,
        timeout: float = 120.0,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._key = api_key
        # As before with httpx: ``timeout`` for a free connection and between two reads
        # (a stream may last longer, as long as it keeps coming), 10 s to connect.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_connect=10.0,
                                              sock_read=timeout)

    # ---- what a dialect provides ----------------------------------------------------

    def _request(self, call: ModelCall, stream: bool) -> ModelRequest:
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
        request = self._request(call, stream)
        where = shown_url(request.url, self._key)
        try:
            response = await self._http.post(
                request.url, data=json.dumps(request.body).encode(), headers=request.headers,
                timeout=self._timeout)
        except HTTP_ERRORS as err:
            if (shortage := local_resource_fault(err)) is not None:
                raise LocalResourcesExhausted(
                    f"no local resources to reach the model endpoint ({shortage})"
                ) from err
            unreachable = ModelUnavailable(
                "could not reach the model endpoint: "
                f"{describe(err, timeout=self._timeout.sock_read)}"
            )
            unreachable.endpoint = where
            raise unreachable from err
        try:
            if response.status != 200:
                try:
                    raw = await response.read()
                except HTTP_ERRORS:
                    raw = b""
                error = error_from_status(response.status, response.headers, raw,
                                          model=call.model, secrets=(self._key,))
                error.endpoint = where
                raise error
            if "text/event-stream" in response.headers.get("content-type", ""):
                async for chunk in self._read_stream(response, call.model):
                    yield chunk
            else:
                try:
                    body = json.loads(await response.read())
                except (*HTTP_ERRORS, ValueError) as err:
                    raise ModelUnavailable(f"unreadable answer: {type(err).__name__}") from err
                try:
                    chunks = _check_types(self._parse_json(body, call.model))
                except _SHAPE_ERRORS as err:
                    raise ModelProtocolError(
                        f"answer not in the API's format: {type(err).__name__}: {err}"
                    ) from err
                for chunk in chunks:
                    yield chunk
        except ModelError as err:
            err.endpoint = err.endpoint or where
            raise
        finally:
            # Back to the pool when the body was read to its end; otherwise closed.
            response.release()

    async def _read_stream(
        self, response: aiohttp.ClientResponse, model: str
    ) -> AsyncIterator[ModelChunk]:
        text: list[str] = []
        finish: str | None = None
        usage: Usage | None = None
        answered_model = model
        tools = ToolAssembler()
        try:
            async for event in iter_sse(_lines(response.content)):
                if event.data.strip() == "[DONE]":
                    break
                try:
                    data = json.loads(event.data)
                except ValueError:
                    continue
                if not isinstance(data, dict):
                    continue
                try:
                    piece = self._parse_event(event, data, model)
                    if not isinstance(piece.text, str) or not isinstance(piece.reasoning, str):
                        raise TypeError("text is not a string")
                except _SHAPE_ERRORS as err:
                    detail = f"stream event not in the API's format: {type(err).__name__}: {err}"
                    if text:
                        raise ModelStreamBroken(detail, partial="".join(text)) from err
                    raise ModelProtocolError(detail) from err
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
        except HTTP_ERRORS as err:
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


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The body's lines, whatever their length (aiohttp's own line reader stops at
    64 KiB, and a DashScope event carrying a whole answer may be longer)."""
    pending = b""
    async for data in content.iter_any():
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace")
    if pending:
        yield pending.decode("utf-8", "replace")
