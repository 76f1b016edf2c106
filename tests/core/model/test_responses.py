"""The Responses API client against the loopback server speaking Model Studio's dialect."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from core.errors import ModelRefused, ModelUnavailable
from core.model import ResponsesClient
from core.types import (
    ContextMessage,
    FinishChunk,
    Image,
    ModelCall,
    ModelChunk,
    ReasoningChunk,
    Sampling,
    TextChunk,
    ToolCallsChunk,
    ToolSpec,
)
from tests.fakes.model_server import FakeModelServer, Reply


@pytest.fixture
async def client(fake_model: FakeModelServer) -> AsyncIterator[ResponsesClient]:
    async with aiohttp.ClientSession() as http:
        yield ResponsesClient(http, base_url=fake_model.openai_base, api_key="sk-test", timeout=5)


def call(*messages: ContextMessage, **kw: object) -> ModelCall:
    return ModelCall("qwen3.5-plus", messages or (ContextMessage("system", "Be brief."),
                                                  ContextMessage("user", "Hi")), **kw)  # type: ignore[arg-type]


async def collect(client: ResponsesClient, c: ModelCall, stream: bool = True) -> list[ModelChunk]:
    return [chunk async for chunk in client.stream(c, stream=stream)]


@pytest.mark.parametrize("stream", [True, False])
async def test_text_thinking_and_usage(client: ResponsesClient, fake_model: FakeModelServer,
                                       stream: bool) -> None:
    fake_model.enqueue(Reply(text="Hello there, friend.", reasoning="The user greets me.",
                             chunk_size=4, usage=(40, 12)))
    chunks = await collect(client, call(sampling=Sampling(enable_thinking=True)), stream)
    assert "".join(c.text for c in chunks if isinstance(c, TextChunk)) == "Hello there, friend."
    assert "".join(c.text for c in chunks
                   if isinstance(c, ReasoningChunk)) == "The user greets me."
    finish = chunks[-1]
    assert isinstance(finish, FinishChunk) and finish.reason == "stop"
    assert finish.usage is not None
    assert (finish.usage.prompt_tokens, finish.usage.completion_tokens,
            finish.usage.cached_tokens, finish.usage.reasoning_tokens) == (40, 12, 3, 2)
    rec = fake_model.requests[-1]
    assert rec.path == "/compatible-mode/v1/responses"
    assert rec.json["store"] is False and "previous_response_id" not in rec.json
    assert rec.json["input"] == [{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "Hi"}]
    assert rec.json["reasoning"] == {"effort": "medium"}
    assert rec.headers["authorization"] == "Bearer sk-test"


async def test_images_go_as_data_urls(client: ResponsesClient,
                                      fake_model: FakeModelServer) -> None:
    image = Image(b"\x89PNG fake", "image/png", 2, 2, "0" * 64)
    await collect(client, call(ContextMessage("user", "What is this?", (image,))))
    [item] = fake_model.requests[-1].json["input"]
    assert item["content"][0]["type"] == "input_image"
    assert item["content"][0]["image_url"].startswith("data:image/png;base64,")
    assert item["content"][1] == {"type": "input_text", "text": "What is this?"}


@pytest.mark.parametrize("stream", [True, False])
async def test_function_calls_and_their_outputs(client: ResponsesClient,
                                                fake_model: FakeModelServer,
                                                stream: bool) -> None:
    fake_model.enqueue(Reply(text="", tool_calls=[("get_weather", '{"city": "Rome"}'),
                                                  ("get_weather", '{"city": "Oslo"}')],
                             chunk_size=3))
    spec = ToolSpec("get_weather", "Weather.", {"type": "object",
                                                "properties": {"city": {"type": "string"}}})
    chunks = await collect(client, call(tools=(spec,)), stream)
    [calls] = [c for c in chunks if isinstance(c, ToolCallsChunk)]
    assert [(c.name, c.arguments) for c in calls.calls] == [
        ("get_weather", '{"city": "Rome"}'), ("get_weather", '{"city": "Oslo"}')]
    assert isinstance(chunks[-1], FinishChunk) and chunks[-1].reason == "tool_calls"
    body = fake_model.requests[-1].json
    assert body["tools"] == [{"type": "function", "name": "get_weather",
                              "description": "Weather.", "parameters": spec.parameters,
                              "strict": False}]
    first = calls.calls[0]
    replay = call(ContextMessage("user", "Weather in Rome?"),
                  ContextMessage("assistant", "", tool_calls=(first,)),
                  ContextMessage("tool", "Sunny", tool_call_id=first.id),
                  tools=(spec,), tool_choice="none")
    fake_model.enqueue(Reply(text="Sunny in Rome."))
    await collect(client, replay, stream)
    body = fake_model.requests[-1].json
    assert body["input"][1:] == [
        {"type": "function_call", "call_id": first.id, "name": "get_weather",
         "arguments": '{"city": "Rome"}'},
        {"type": "function_call_output", "call_id": first.id, "output": "Sunny"}]
    assert body["tool_choice"] == "none"


async def test_moderation_mid_stream_is_a_refusal(client: ResponsesClient,
                                                  fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(kind="moderation_midstream", text="some words here"))
    with pytest.raises(ModelRefused):
        await collect(client, call())


async def test_drop_during_a_function_call_yields_no_call(client: ResponsesClient,
                                                          fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(kind="drop", text="", tool_calls=[("f", '{"a": 1}')],
                             chunk_size=2))
    with pytest.raises(ModelUnavailable):
        await collect(client, call(tools=(ToolSpec("f", "", {"type": "object"}),)))


async def test_length_and_http_errors(client: ResponsesClient,
                                      fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(text="cut", finish_reason="length"))
    chunks = await collect(client, call())
    assert isinstance(chunks[-1], FinishChunk) and chunks[-1].reason == "length"
    fake_model.enqueue(Reply(kind="error", status=503))
    with pytest.raises(ModelUnavailable):
        await collect(client, call())

