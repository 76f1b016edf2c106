"""DashScope-native client against the loopback server."""

from __future__ import annotations

import hashlib

import aiohttp
import pytest

from core.errors import ModelAuthError, ModelRateLimited, ModelRefused, ModelStreamBroken
from core.model import DashScopeClient
from core.types import (
    ContextMessage,
    FinishChunk,
    Image,
    ModelCall,
    ReasoningChunk,
    TextChunk,
    Usage,
)
from tests.core.model.conftest import call, collect
from tests.fakes.model_server import FakeModelServer, Reply


def client(http: aiohttp.ClientSession, fake: FakeModelServer) -> DashScopeClient:
    return DashScopeClient(http, base_url=fake.dashscope_base, api_key="sk-ds", timeout=5)


async def test_text_generation_stream(http: aiohttp.ClientSession,
                                      fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(text="Native answer here.", reasoning="Thinking.", usage=(30, 4)))
    chunks = await collect(client(http, fake_model).stream(call()))
    assert "".join(c.text for c in chunks if isinstance(c, TextChunk)) == "Native answer here."
    assert "".join(c.text for c in chunks if isinstance(c, ReasoningChunk)) == "Thinking."
    assert chunks[-1] == FinishChunk("stop", Usage(30, 4), "qwen-plus")
    sent = fake_model.requests[-1]
    assert sent.path.endswith("/services/aigc/text-generation/generation")
    assert sent.headers["x-dashscope-sse"] == "enable"
    params = sent.json["parameters"]
    assert params["result_format"] == "message" and params["incremental_output"] is True
    assert params["enable_thinking"] is False
    assert sent.json["input"]["messages"][1] == {"role": "user", "content": "hi"}


async def test_images_go_to_multimodal_generation(http: aiohttp.ClientSession,
                                                  fake_model: FakeModelServer) -> None:
    data = b"jpeg bytes"
    img = Image(data, "image/jpeg", 30, 30, hashlib.sha256(data).hexdigest())
    fake_model.enqueue(Reply(text="A cat."))
    chunks = await collect(client(http, fake_model).stream(
        ModelCall("qwen-vl-plus", (ContextMessage("user", "what?", (img,)),))))
    assert "".join(c.text for c in chunks if isinstance(c, TextChunk)) == "A cat."
    sent = fake_model.requests[-1]
    assert sent.path.endswith("/services/aigc/multimodal-generation/generation")
    content = sent.json["input"]["messages"][0]["content"]
    assert content[0]["image"].startswith("data:image/jpeg;base64,")
    assert content[1] == {"text": "what?"}


async def test_non_stream(http: aiohttp.ClientSession, fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(text="whole", usage=(3, 1)))
    chunks = await collect(client(http, fake_model).stream(call(), stream=False))
    assert chunks == [TextChunk("whole"), FinishChunk("stop", Usage(3, 1), "qwen-plus")]
    assert "x-dashscope-sse" not in fake_model.requests[-1].headers


@pytest.mark.parametrize(("status", "error"), [
    (401, ModelAuthError), (429, ModelRateLimited), (400, ModelRefused),
])
async def test_flat_error_bodies(http: aiohttp.ClientSession, fake_model: FakeModelServer,
                                 status: int, error: type[Exception]) -> None:
    fake_model.enqueue(Reply(kind="error", status=status))
    with pytest.raises(error):
        await collect(client(http, fake_model).stream(call()))


async def test_moderation_event_mid_stream(http: aiohttp.ClientSession,
                                           fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(kind="moderation_midstream", text="b" * 40))
    with pytest.raises(ModelRefused):
        await collect(client(http, fake_model).stream(call()))


async def test_drop_keeps_partial(http: aiohttp.ClientSession, fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(kind="drop", text="abcdefghij" * 2))
    with pytest.raises(ModelStreamBroken) as info:
        await collect(client(http, fake_model).stream(call()))
    assert info.value.partial == "abcdefghij"
