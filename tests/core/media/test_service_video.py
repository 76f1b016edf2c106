"""Videos through a real turn: sampled frames stored in SQL (SQLite and PostgreSQL), sent
as Qwen's video frame list over Chat Completions and DashScope native (the loopback model
checks the shape), placeholders and a note where the model takes no video."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.db import open_store
from core.model import DashScopeClient, OpenAIClient
from core.model.base import ModelClient
from core.model.images import ImageGate
from core.profiles import Profile
from core.service import ChatService, ServiceOptions
from core.store.models import Attachment, Message, MessageAttachment
from core.types import Author, ChatRequest, ErrorEvent, FinalEvent, ReplyEvent, Upload
from core.vision import Vision
from tests import media_files
from tests.fakes.model_server import FakeModelServer, Reply

_n = 0


def request(text: str, *files: Upload, scope: str = "console/video") -> ChatRequest:
    global _n
    _n += 1
    return ChatRequest(platform="console", scope=scope, author=Author("u1", "Ann"),
                       text=text, event_id=f"v{_n}", files=files)


async def run(service: ChatService, req: ChatRequest) -> list[ReplyEvent]:
    return [e async for e in service.handle(req)]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def make_service(engine: AsyncEngine, client: ModelClient, model: str,
                 image_turns: int = 3, video_file_bytes: int = 0) -> ChatService:
    vision = Vision()
    profile = Profile(system_prompt="You are terse.", context_tokens=60_000,
                      image_turns=image_turns)
    return ChatService(store=open_store(engine), model=ImageGate(client, vision),
                       options=ServiceOptions(model=model, profiles={"default": profile},
                                              vision=vision,
                                              video_file_bytes=video_file_bytes))


def colour_of(url: str) -> str:
    head, _, data = url.partition(",")
    assert head == "data:image/jpeg;base64"
    with PILImage.open(io.BytesIO(base64.b64decode(data))) as picture:
        red, green, blue = picture.convert("RGB").getpixel((5, 5))
    return max((red, "red"), (green, "green"), (blue, "blue"))[1]


def user_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    content = body["messages"][-1]["content"]
    assert isinstance(content, list)
    return content


async def test_video_frames_reach_the_model_and_are_stored(
        engine: AsyncEngine, fake_model: FakeModelServer,
        http: aiohttp.ClientSession) -> None:
    client = OpenAIClient(http, base_url=fake_model.openai_base, api_key="k", timeout=10)
    service = make_service(engine, client, "qwen3.5-plus", image_turns=2)
    fake_model.enqueue(Reply(text="Red, then green, then blue."), Reply(text="Blue."),
                       Reply(text="Still."), Reply(text="Gone."))
    clip = Upload("clip.mp4", media_files.video_clip(3.0))  # no type: known by its bytes
    final = (await run(service, request("What colours?", clip)))[-1]
    assert isinstance(final, FinalEvent) and final.notice == ""
    parts = user_parts(fake_model.requests[-1].json)
    video, text = parts
    assert video["type"] == "video" and video["fps"] == 2.0
    assert [colour_of(u) for u in video["video"]] == ["red", "red", "green", "green",
                                                      "blue", "blue"]
    assert text == {"type": "text", "text": "What colours?"}
    async with engine.connect() as conn:
        row = (await conn.execute(select(Message.video_count, Message.image_count, Message.text)
                                  .where(Message.role == "user"))).one()
        links = (await conn.execute(select(MessageAttachment.video, MessageAttachment.fps)
                                    .order_by(MessageAttachment.position))).all()
    assert tuple(row) == (1, 0, "What colours?")
    assert [tuple(link) for link in links] == [(1, 2.0)] * 6
    # Later turns read the stored frames again, for image_turns user turns (here 2) ...
    await run(service, request("And the last one?"))
    earlier = fake_model.requests[-1].json["messages"][1]["content"]
    assert earlier[0]["type"] == "video" and len(earlier[0]["video"]) == 6
    await run(service, request("Anything else?"))
    earlier = fake_model.requests[-1].json["messages"][1]["content"]
    assert earlier == "What colours?\n[1 earlier video not shown]"  # ... then a placeholder


async def test_a_small_video_goes_whole_as_a_video_url_when_allowed(
        engine: AsyncEngine, fake_model: FakeModelServer,
        http: aiohttp.ClientSession) -> None:
    client = OpenAIClient(http, base_url=fake_model.openai_base, api_key="k", timeout=10)
    service = make_service(engine, client, "qwen3-vl-plus", video_file_bytes=1024 * 1024)
    data = media_files.video_clip(2.0)
    fake_model.enqueue(Reply(text="Colours."), Reply(text="Again."))
    await run(service, request("What is it?", Upload("clip.mp4", data)))
    part, _ = user_parts(fake_model.requests[-1].json)
    assert part == {"type": "video_url", "video_url": {
        "url": "data:video/mp4;base64," + base64.b64encode(data).decode()}}
    async with engine.connect() as conn:
        mimes = (await conn.scalars(select(Attachment.mime).join(
            MessageAttachment, MessageAttachment.sha256 == Attachment.sha256)
            .order_by(MessageAttachment.position))).all()
    assert mimes == ["image/jpeg"] * 4 + ["video/mp4"]  # the frames are kept as well
    await run(service, request("And now?"))
    earlier = fake_model.requests[-1].json["messages"][1]["content"][0]
    assert earlier["type"] == "video_url"  # later turns send it whole again
    big = make_service(engine, client, "qwen3-vl-plus", video_file_bytes=len(data) - 1)
    fake_model.enqueue(Reply(text="Frames."))
    await run(big, request("This one?", Upload("clip.mp4", data), scope="console/big"))
    assert user_parts(fake_model.requests[-1].json)[0]["type"] == "video"


async def test_a_model_without_video_gets_a_placeholder_and_the_person_a_note(
        engine: AsyncEngine, fake_model: FakeModelServer,
        http: aiohttp.ClientSession) -> None:
    client = OpenAIClient(http, base_url=fake_model.openai_base, api_key="k", timeout=10)
    service = make_service(engine, client, "qwen-plus")
    fake_model.enqueue(Reply(text="I can't see it."))
    clip = Upload("clip.mp4", media_files.video_clip(1.0), "video/mp4")
    final = (await run(service, request("What is this?", clip)))[-1]
    assert isinstance(final, FinalEvent)
    assert final.notice == ("(The model qwen-plus does not watch videos, so it did not see "
                            "the video; I answered from the rest.)")
    sent = fake_model.requests[-1].json["messages"][-1]["content"]
    assert sent == ("What is this?\n[a video attached here, not shown: qwen-plus does not "
                    "watch videos]")


async def test_native_api_gets_the_multimodal_video_shape(
        engine: AsyncEngine, fake_model: FakeModelServer,
        http: aiohttp.ClientSession) -> None:
    client = DashScopeClient(http, base_url=fake_model.dashscope_base, api_key="k",
                             timeout=10)
    service = make_service(engine, client, "qwen3-vl-plus")
    fake_model.enqueue(Reply(text="Green."))
    clip = Upload("clip.mp4", media_files.video_clip(2.0, colours=((20, 160, 40),)))
    final = (await run(service, request("Colour?", clip)))[-1]
    assert isinstance(final, FinalEvent) and final.text == "Green."
    sent = fake_model.requests[-1]
    assert sent.path.endswith("/multimodal-generation/generation")
    video, text = sent.json["input"]["messages"][-1]["content"]
    assert set(video) == {"video", "fps"} and video["fps"] == 2.0
    assert [colour_of(u) for u in video["video"]] == ["green"] * 4
    assert text == {"text": "Colour?"}


async def test_a_damaged_video_gets_a_note_and_the_text_is_answered(
        engine: AsyncEngine, fake_model: FakeModelServer,
        http: aiohttp.ClientSession) -> None:
    client = OpenAIClient(http, base_url=fake_model.openai_base, api_key="k", timeout=10)
    service = make_service(engine, client, "qwen3.5-plus")
    fake_model.enqueue(Reply(text="Hello."))
    broken = Upload("broken.mp4", media_files.video_clip(2.0)[:700], "video/mp4")
    final = (await run(service, request("Hi, see this", broken)))[-1]
    assert isinstance(final, FinalEvent) and final.text == "Hello."
    assert final.notice == ("(Not read: broken.mp4: that video seems to be damaged; I "
                            "couldn't play it.)")
    assert fake_model.requests[-1].json["messages"][-1]["content"] == "Hi, see this"
    alone = (await run(service, request("", broken)))[-1]
    assert isinstance(alone, ErrorEvent)
    assert alone.message == "broken.mp4: that video seems to be damaged; I couldn't play it."
    assert len(fake_model.requests) == 1


async def test_fake_model_refuses_a_malformed_video_part(fake_model: FakeModelServer) -> None:
    async with aiohttp.ClientSession() as session:
        body = {"model": "qwen3.5-plus", "messages": [{"role": "user", "content": [
            {"type": "video", "video": ["https://example.com/a.jpg"]}]}]}
        async with session.post(fake_model.openai_base + "/chat/completions",
                                json=body) as resp:
            assert resp.status == 400
            assert "data:image" in (await resp.json())["error"]["message"]
