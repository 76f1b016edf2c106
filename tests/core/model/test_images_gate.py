"""ImageGate against the loopback model server: images only for models that take them."""

from __future__ import annotations

import io

import aiohttp
import pytest
from PIL import Image as PILImage

from core.errors import ModelUnavailable
from core.images import prepare_image
from core.model import OpenAIClient, RetryingClient, RetryPolicy
from core.model.images import ImageGate
from core.types import ContextMessage, ModelCall, TextChunk
from core.vision import Vision, guess_takes_images
from tests.core.model.conftest import collect
from tests.fakes.model_server import FakeModelServer, Reply


def _call(model: str) -> ModelCall:
    buf = io.BytesIO()
    PILImage.new("RGB", (32, 32), "red").save(buf, "PNG")
    image = prepare_image(buf.getvalue())
    return ModelCall(model, (ContextMessage("system", "be brief"),
                             ContextMessage("user", "what colour?", (image,))))


def _gate(http: aiohttp.ClientSession, fake: FakeModelServer, vision: Vision) -> ImageGate:
    inner = OpenAIClient(http, base_url=fake.openai_base, api_key=None, timeout=5)
    return ImageGate(RetryingClient(inner, RetryPolicy(max_attempts=1)), vision)


def _content(fake: FakeModelServer, index: int = -1) -> object:
    return fake.requests[index].json["messages"][-1]["content"]


@pytest.mark.parametrize(("name", "expected"), [
    ("qwen3.5-plus", True), ("qwen3.6-flash", True), ("qwen-vl-max", True),
    ("qwen2.5-vl-72b-instruct", True), ("Qwen/Qwen2.5-VL-7B-Instruct", True),
    ("qvq-max", True), ("qwen3-omni-flash", True), ("gpt-4o-mini", True), ("o4-mini", True),
    ("llava:13b", True), ("smollm2", False), ("SmolLM2-135M-Instruct", False),
    ("qwen-plus", None), ("my-served-model", None),
])
def test_guesses_from_the_name(name: str, expected: bool | None) -> None:
    assert guess_takes_images(name) is expected


async def test_text_only_model_gets_placeholders(http: aiohttp.ClientSession,
                                                 fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(text="It is text."))
    chunks = await collect(_gate(http, fake_model, Vision({"qwen-max": False})).stream(
        _call("qwen-max")))
    assert "".join(c.text for c in chunks if isinstance(c, TextChunk)) == "It is text."
    assert _content(fake_model) == ("what colour?\n"
                                    "[an image attached here, not shown: qwen-max reads text only]")


async def test_unknown_model_that_refuses_images_is_asked_again_then_text_only(
        http: aiohttp.ClientSession, fake_model: FakeModelServer) -> None:
    vision = Vision()
    fake_model.enqueue(
        Reply(kind="error", status=400,
              body={"error": {"message": "image input not supported", "code": "invalid"}}),
        Reply(text="Answered from the text."), Reply(text="Again."))
    gate = _gate(http, fake_model, vision)
    await collect(gate.stream(_call("my-served-model")))
    assert isinstance(_content(fake_model, 0), list)
    assert isinstance(_content(fake_model, 1), str)
    assert not vision.takes_images("my-served-model")
    await collect(gate.stream(_call("my-served-model")))  # next turn: no failed call first
    assert len(fake_model.requests) == 3 and isinstance(_content(fake_model), str)


async def test_known_vision_model_outage_is_not_blamed_on_images(
        http: aiohttp.ClientSession, fake_model: FakeModelServer) -> None:
    vision = Vision()
    fake_model.enqueue(Reply(kind="error", status=503))
    with pytest.raises(ModelUnavailable):
        await collect(_gate(http, fake_model, vision).stream(_call("qwen3.5-plus")))
    assert len(fake_model.requests) == 1 and vision.takes_images("qwen3.5-plus")
