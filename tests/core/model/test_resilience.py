"""Fallback models, the circuit breaker and the per-turn deadline, against the loopback server."""

from __future__ import annotations

import aiohttp
import pytest

from core.errors import ModelAuthError, ModelStreamBroken, ModelUnavailable
from core.model import CircuitBreaker, FallbackClient, OpenAIClient, RetryingClient, RetryPolicy
from core.types import FinishChunk, TextChunk
from tests.core.model.conftest import call, collect
from tests.fakes.model_server import FakeModelServer, Reply


def stack(http: aiohttp.ClientSession, fake: FakeModelServer, **kw: object) -> FallbackClient:
    async def no_sleep(_: float) -> None:
        return None

    inner = OpenAIClient(http, base_url=fake.openai_base, api_key="k", timeout=5)
    retrying = RetryingClient(inner, RetryPolicy(max_attempts=2), sleep=no_sleep)
    return FallbackClient(retrying, fallbacks=("qwen-plus", "qwen-flash"), **kw)  # type: ignore[arg-type]


async def test_falls_back_when_the_primary_keeps_failing(http: aiohttp.ClientSession,
                                                         fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(kind="error", status=503), Reply(kind="error", status=503),
                       Reply(text="from plus"))
    chunks = await collect(stack(http, fake_model).stream(call(model="qwen3.5-plus")))
    assert [r.json["model"] for r in fake_model.requests] == ["qwen3.5-plus"] * 2 + ["qwen-plus"]
    assert "".join(c.text for c in chunks if isinstance(c, TextChunk)) == "from plus"
    assert isinstance(chunks[-1], FinishChunk) and chunks[-1].model == "qwen-plus"


async def test_no_fallback_for_a_wrong_key(http: aiohttp.ClientSession,
                                           fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(kind="error", status=401))
    with pytest.raises(ModelAuthError):
        await collect(stack(http, fake_model).stream(call(model="qwen3.5-plus")))
    assert len(fake_model.requests) == 1


async def test_breaker_skips_a_dead_model_then_probes(http: aiohttp.ClientSession,
                                                      fake_model: FakeModelServer) -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=1, cooldown=30, clock=lambda: now[0])
    client = stack(http, fake_model, breaker=breaker)
    fake_model.enqueue(Reply(kind="error", status=500), Reply(kind="error", status=500))
    await collect(client.stream(call(model="qwen3.5-plus")))  # falls back to qwen-plus
    assert breaker.is_open("qwen3.5-plus")
    fake_model.clear()
    await collect(client.stream(call(model="qwen3.5-plus")))
    assert [r.json["model"] for r in fake_model.requests] == ["qwen-plus"]  # not hammered
    now[0] = 31
    fake_model.clear()
    await collect(client.stream(call(model="qwen3.5-plus")))
    assert [r.json["model"] for r in fake_model.requests] == ["qwen3.5-plus"]  # probe worked
    assert not breaker.is_open("qwen3.5-plus")


async def test_all_models_down_is_unavailable(http: aiohttp.ClientSession,
                                              fake_model: FakeModelServer) -> None:
    fake_model.enqueue(*[Reply(kind="error", status=503) for _ in range(6)])
    with pytest.raises(ModelUnavailable):
        await collect(stack(http, fake_model).stream(call(model="qwen3.5-plus")))
    assert len(fake_model.requests) == 6


async def test_deadline_before_any_text(http: aiohttp.ClientSession,
                                        fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(kind="hang"))
    client = FallbackClient(OpenAIClient(http, base_url=fake_model.openai_base, api_key=None),
                            deadline=0.5)
    with pytest.raises(ModelUnavailable, match="deadline"):
        await collect(client.stream(call()))


async def test_deadline_after_text_keeps_the_partial(http: aiohttp.ClientSession,
                                                     fake_model: FakeModelServer) -> None:
    class Slow:
        async def stream(self, call: object, *, stream: bool = True):  # type: ignore[no-untyped-def]
            import asyncio

            yield TextChunk("first part")
            await asyncio.sleep(5)

    client = FallbackClient(Slow(), deadline=0.3)
    with pytest.raises(ModelStreamBroken) as info:
        await collect(client.stream(call()))
    assert info.value.partial == "first part"
