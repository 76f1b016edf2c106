"""OpenAI-compatible client against the loopback server: SSE, JSON, faults."""

from __future__ import annotations

import hashlib

import aiohttp
import pytest

from core.errors import (
    ModelAuthError,
    ModelBadRequest,
    ModelRateLimited,
    ModelRefused,
    ModelStreamBroken,
    ModelUnavailable,
)
from core.model import OpenAIClient
from core.types import (
    ContextMessage,
    FinishChunk,
    Image,
    ModelCall,
    ReasoningChunk,
    Sampling,
    TextChunk,
    Usage,
)
from tests.core.model.conftest import call, collect
from tests.fakes.model_server import FakeModelServer, Reply

KEY = "sk-test-secret-0123456789"


def client(http: aiohttp.ClientSession, fake: FakeModelServer) -> OpenAIClient:
    return OpenAIClient(http, base_url=fake.openai_base, api_key=KEY, timeout=5)


async def test_stream_text_reasoning_and_usage(http: aiohttp.ClientSession,
                                               fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(text="The answer is 42.", reasoning="Let me think.",
                             usage=(20, 9)))
    chunks = await collect(client(http, fake_model).stream(call()))
    text = "".join(c.text for c in chunks if isinstance(c, TextChunk))
    thought = "".join(c.text for c in chunks if isinstance(c, ReasoningChunk))
    assert text == "The answer is 42." and thought == "Let me think."
    assert chunks[-1] == FinishChunk("stop", Usage(20, 9), "qwen-plus")
    sent = fake_model.requests[-1]
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json["stream"] is True
    assert sent.json["stream_options"] == {"include_usage": True}
    assert sent.json["enable_thinking"] is False  # sent explicitly for Qwen


async def test_non_stream_json(http: aiohttp.ClientSession, fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(text="plain", reasoning="hmm", usage=(5, 1)))
    chunks = await collect(client(http, fake_model).stream(call(), stream=False))
    assert chunks == [ReasoningChunk("hmm"), TextChunk("plain"),
                      FinishChunk("stop", Usage(5, 1), "qwen-plus")]
    assert fake_model.requests[-1].json["stream"] is False


async def test_sampling_and_thinking_sent(http: aiohttp.ClientSession,
                                          fake_model: FakeModelServer) -> None:
    sampling = Sampling(temperature=0.2, top_p=0.8, max_tokens=100, enable_thinking=True)
    await collect(client(http, fake_model).stream(call(sampling=sampling)))
    body = fake_model.requests[-1].json
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.2, 0.8, 100)
    assert body["enable_thinking"] is True


async def test_no_thinking_flag_for_other_models(http: aiohttp.ClientSession,
                                                 fake_model: FakeModelServer) -> None:
    await collect(client(http, fake_model).stream(call(model="gpt-4o-mini")))
    assert "enable_thinking" not in fake_model.requests[-1].json


async def test_images_as_base64_data_urls(http: aiohttp.ClientSession,
                                          fake_model: FakeModelServer) -> None:
    data = b"\x89PNG fake bytes"
    img = Image(data, "image/png", 20, 20, hashlib.sha256(data).hexdigest())
    msg = ContextMessage("user", "what is this?", (img,))
    await collect(client(http, fake_model).stream(ModelCall("qwen3.5-plus", (msg,))))
    content = fake_model.requests[-1].json["messages"][0]["content"]
    assert content[0]["type"] == "image_url"
    assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert content[1] == {"type": "text", "text": "what is this?"}


@pytest.mark.parametrize(("status", "error"), [
    (401, ModelAuthError), (403, ModelAuthError), (429, ModelRateLimited),
    (500, ModelUnavailable), (503, ModelUnavailable), (400, ModelRefused),
    (404, ModelBadRequest),
])
async def test_http_errors_map_to_the_tree(http: aiohttp.ClientSession, fake_model: FakeModelServer,
                                           status: int, error: type[Exception]) -> None:
    fake_model.enqueue(Reply(kind="error", status=status))
    with pytest.raises(error) as info:
        await collect(client(http, fake_model).stream(call()))
    assert KEY not in str(info.value) and KEY not in info.value.user_message  # type: ignore[attr-defined]


async def test_retry_after_is_read(http: aiohttp.ClientSession,
                                   fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(kind="error", status=429, retry_after="7"))
    with pytest.raises(ModelRateLimited) as info:
        await collect(client(http, fake_model).stream(call()))
    assert info.value.retry_after == 7


async def test_key_echoed_by_provider_is_redacted(http: aiohttp.ClientSession,
                                                  fake_model: FakeModelServer) -> None:
    body = {"error": {"message": f"Incorrect API key provided: {KEY}", "code": "invalid_api_key"}}
    fake_model.enqueue(Reply(kind="error", status=401, body=body))
    with pytest.raises(ModelAuthError) as info:
        await collect(client(http, fake_model).stream(call()))
    assert KEY not in str(info.value)


async def test_moderation_mid_stream_is_a_refusal(http: aiohttp.ClientSession,
                                                  fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(kind="moderation_midstream", text="a" * 40))
    with pytest.raises(ModelRefused):
        await collect(client(http, fake_model).stream(call()))


async def test_dropped_stream_keeps_partial(http: aiohttp.ClientSession,
                                            fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(kind="drop", text="0123456789" * 4))
    with pytest.raises(ModelStreamBroken) as info:
        await collect(client(http, fake_model).stream(call()))
    assert info.value.partial == "0123456789" * 2


async def test_stream_without_finish_reason_is_partial(http: aiohttp.ClientSession,
                                                       fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(kind="no_finish", text="all of it"))
    with pytest.raises(ModelStreamBroken) as info:
        await collect(client(http, fake_model).stream(call()))
    assert info.value.partial == "all of it"


async def test_unreachable_endpoint_is_unavailable(http: aiohttp.ClientSession) -> None:
    dead = OpenAIClient(http, base_url="http://127.0.0.1:9/v1", api_key=None, timeout=2)
    with pytest.raises(ModelUnavailable):
        await collect(dead.stream(call()))


async def test_cache_markers_and_cached_usage(fake_model: FakeModelServer) -> None:
    from core.types import ContextMessage, ModelCall, Usage

    long = "policy line. " * 400
    call = ModelCall("qwen-plus", (ContextMessage("system", long),
                                   ContextMessage("user", "first"),
                                   ContextMessage("assistant", "ok"),
                                   ContextMessage("user", "second")), cache=None)
    async with aiohttp.ClientSession() as http:
        client = OpenAIClient(http, base_url=fake_model.openai_base, api_key="k", timeout=5)
        usages = []
        for _ in range(2):
            chunks = [c async for c in client.stream(call)]
            usages.append(chunks[-1].usage)
        sent = fake_model.requests[-1].json["messages"]
        assert sent[0]["content"][0]["cache_control"] == {"type": "ephemeral"}
        assert sent[-1]["content"][0]["cache_control"] == {"type": "ephemeral"}
        assert sent[1]["content"] == "first" and sent[2]["content"] == "ok"
        first, second = usages
        assert isinstance(first, Usage) and first.cache_creation_tokens > 1024
        assert second is not None and second.cached_tokens == first.cache_creation_tokens
        for model, cache in (("qwen-max", None), ("qwen-plus", False)):  # no explicit cache
            fake_model.clear()
            [c async for c in client.stream(ModelCall(model, call.messages, cache=cache))]
            assert fake_model.requests[-1].json["messages"][0]["content"] == long
