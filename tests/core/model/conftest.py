"""Model client fixtures: the real aiohttp client against the loopback server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from core.types import ContextMessage, ModelCall, ModelChunk


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def call(text: str = "hi", model: str = "qwen-plus", **kw: object) -> ModelCall:
    messages = (ContextMessage("system", "be brief"), ContextMessage("user", text))
    return ModelCall(model, messages, **kw)  # type: ignore[arg-type]


async def collect(stream: object) -> list[ModelChunk]:
    return [chunk async for chunk in stream]  # type: ignore[attr-defined]
