"""Retries: backoff with jitter, Retry-After, the time budget, no retry after text."""

from __future__ import annotations

import aiohttp
import pytest

from core.errors import ModelRateLimited, ModelStreamBroken, ModelUnavailable
from core.model import OpenAIClient, RetryingClient, RetryPolicy
from core.types import TextChunk
from tests.core.model.conftest import call, collect
from tests.fakes.model_server import FakeModelServer, Reply


class Clock:
    """A fake clock that sleeping advances."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def retrying(http: aiohttp.ClientSession, fake: FakeModelServer, clock: Clock,
             **policy: float) -> RetryingClient:
    inner = OpenAIClient(http, base_url=fake.openai_base, api_key="k", timeout=5)
    return RetryingClient(inner, RetryPolicy(**policy), sleep=clock.sleep, clock=clock)  # type: ignore[arg-type]


async def test_429_with_retry_after_then_success(http: aiohttp.ClientSession,
                                                 fake_model: FakeModelServer) -> None:
    clock = Clock()
    fake_model.enqueue(Reply(kind="error", status=429, retry_after="2"), Reply(text="ok now"))
    chunks = await collect(retrying(http, fake_model, clock).stream(call()))
    assert "".join(c.text for c in chunks if isinstance(c, TextChunk)) == "ok now"
    assert clock.sleeps == [2.0]
    assert len(fake_model.requests) == 2


async def test_5xx_backs_off_exponentially_with_jitter(http: aiohttp.ClientSession,
                                                       fake_model: FakeModelServer) -> None:
    clock = Clock()
    fake_model.enqueue(Reply(kind="error", status=500), Reply(kind="error", status=503),
                       Reply(kind="error", status=429), Reply(text="finally"))
    await collect(retrying(http, fake_model, clock, base_delay=1.0, max_delay=8.0).stream(call()))
    assert len(clock.sleeps) == 3
    for attempt, slept in enumerate(clock.sleeps):
        assert 0 <= slept <= 2**attempt


async def test_gives_up_after_attempts(http: aiohttp.ClientSession,
                                       fake_model: FakeModelServer) -> None:
    clock = Clock()
    fake_model.enqueue(*[Reply(kind="error", status=503) for _ in range(3)])
    with pytest.raises(ModelUnavailable):
        await collect(retrying(http, fake_model, clock, max_attempts=3).stream(call()))
    assert len(fake_model.requests) == 3


async def test_retry_after_beyond_budget_is_not_waited(http: aiohttp.ClientSession,
                                                       fake_model: FakeModelServer) -> None:
    clock = Clock()
    fake_model.enqueue(Reply(kind="error", status=429, retry_after="120"))
    with pytest.raises(ModelRateLimited):
        await collect(retrying(http, fake_model, clock, budget=30).stream(call()))
    assert clock.sleeps == [] and len(fake_model.requests) == 1


async def test_no_retry_once_text_was_sent(http: aiohttp.ClientSession,
                                           fake_model: FakeModelServer) -> None:
    clock = Clock()
    fake_model.enqueue(Reply(kind="drop", text="x" * 40))
    with pytest.raises(ModelStreamBroken):
        await collect(retrying(http, fake_model, clock).stream(call()))
    assert len(fake_model.requests) == 1
