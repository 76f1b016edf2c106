"""Recordings decoded with PyAV and transcribed over the model API (loopback model,
both databases): the request shape of protocols-2 J, the stored transcript, the notes."""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.db import open_store
from core.media.audio import AudioError, to_wav
from core.media.transcribe import AudioClient
from core.model import OpenAIClient
from core.service import ChatService, ServiceOptions
from core.store.models import Message
from core.types import Author, ChatRequest, ErrorEvent, FinalEvent, Upload
from tests import media_files
from tests.fakes.model_server import FakeModelServer, Reply


def test_voice_note_becomes_16k_mono_wav() -> None:
    wav, seconds = to_wav(media_files.voice_note(1.5))
    assert 1.4 < seconds < 1.6
    with wave.open(io.BytesIO(wav)) as read:
        assert (read.getnchannels(), read.getframerate(), read.getsampwidth()) == (1, 16000, 2)


def test_too_long_and_damaged_recordings_say_why() -> None:
    with pytest.raises(AudioError) as caught:
        to_wav(media_files.voice_note(3.0), max_seconds=2)
    assert "too long" in caught.value.user_message
    with pytest.raises(AudioError) as caught:
        to_wav(b"OggS" + b"\x00" * 100)
    assert "damaged" in caught.value.user_message


@pytest.fixture
async def service(engine: AsyncEngine, fake_model: FakeModelServer) -> AsyncIterator[ChatService]:
    async with aiohttp.ClientSession() as http:
        model = OpenAIClient(http, base_url=fake_model.openai_base, api_key="k", timeout=5)
        asr = AudioClient(http, base_url=fake_model.openai_base, api_key="k", timeout=5)
        yield ChatService(store=open_store(engine), model=model, options=ServiceOptions(
            model="qwen-plus", asr_model="qwen3-omni-flash", asr_client=asr))


def voice(event: str, text: str = "") -> ChatRequest:
    return ChatRequest(platform="console", scope="console/voice", author=Author("u1", "Ann"),
                       text=text, event_id=event,
                       files=(Upload("voice message", media_files.voice_note(1.0),
                                     "audio/ogg"),))


async def test_voice_note_is_transcribed_stored_and_answered(
        service: ChatService, fake_model: FakeModelServer, engine: AsyncEngine) -> None:
    fake_model.enqueue(Reply(text="What time is the meeting?"), Reply(text="At ten."))
    events = [e async for e in service.handle(voice("v1"))]
    final = events[-1]
    assert isinstance(final, FinalEvent) and final.text == "At ten."
    assert final.notice == "(Heard: \u201cWhat time is the meeting?\u201d)"
    asr, chat = fake_model.requests[-2].json, fake_model.requests[-1].json
    assert asr["model"] == "qwen3-omni-flash" and asr["stream"] is True
    assert asr["modalities"] == ["text"]
    audio, prompt = asr["messages"][0]["content"]
    assert audio["type"] == "input_audio" and audio["input_audio"]["format"] == "wav"
    data = audio["input_audio"]["data"]
    assert data.startswith("data:;base64,")
    with wave.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1]))) as read:
        assert read.getframerate() == 16000 and read.getnchannels() == 1
    assert prompt["type"] == "text" and "Transcribe" in prompt["text"]
    assert chat["model"] == "qwen-plus"
    assert chat["messages"][-1]["content"] == \
        "[voice message, transcribed] What time is the meeting?"
    async with engine.connect() as conn:
        stored = (await conn.scalars(select(Message.text).where(Message.role == "user"))).all()
    assert stored == ["[voice message, transcribed] What time is the meeting?"]


async def test_failed_transcription_is_a_clear_message(
        service: ChatService, fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(kind="error", status=400))
    events = [e async for e in service.handle(voice("v2"))]
    error = events[-1]
    assert isinstance(error, ErrorEvent) and "couldn't transcribe" in error.message
    fake_model.enqueue(Reply(kind="error", status=400), Reply(text="Hi Ann."))
    final = [e async for e in service.handle(voice("v3", "hello"))][-1]
    assert isinstance(final, FinalEvent) and final.text == "Hi Ann."
    assert "(Not read: I couldn't transcribe" in final.notice


async def test_the_speech_calls_usage_is_recorded_and_counted(
        service: ChatService, fake_model: FakeModelServer, engine: AsyncEngine) -> None:
    fake_model.enqueue(Reply(text="Book a room.", usage=(300, 4)),
                       Reply(text="Booked.", usage=(40, 2)))
    final = [e async for e in service.handle(voice("asr-usage"))][-1]
    assert isinstance(final, FinalEvent) and final.text == "Booked."
    async with engine.connect() as conn:
        row = (await conn.execute(select(Message.model, Message.prompt_tokens,
                                         Message.completion_tokens)
                                  .where(Message.role == "user"))).one()
    assert tuple(row) == ("qwen3-omni-flash", 300, 4)
    store = open_store(engine)
    since = datetime.now(UTC) - timedelta(hours=1)
    by_model = {r.model: r for r in await store.usage(since=since, by="model")}
    assert (by_model["qwen3-omni-flash"].turns, by_model["qwen3-omni-flash"].prompt_tokens,
            by_model["qwen3-omni-flash"].completion_tokens) == (0, 300, 4)
    assert (by_model["qwen-plus"].turns, by_model["qwen-plus"].prompt_tokens) == (1, 40)
    rows = await store.usage(since=since, by="user")  # one row per person and model
    assert {r.key for r in rows} == {"Ann"}
    assert (sum(r.turns for r in rows), sum(r.prompt_tokens for r in rows)) == (1, 340)
