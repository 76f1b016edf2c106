"""Videos, video notes and animations sent to the Telegram bot: fetched with the real
getFile (PTB against the fake Bot API), sampled into frames and sent to a model that
watches video; a damaged one gets a note; on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests import media_files
from tests.bots.telegram.conftest import ALICE, TOKEN, Bot, make_settings, message, run_bot
from tests.bots.telegram.fake_bot_api import FakeBotApi
from tests.fakes.model_server import FakeModelServer, Reply


@pytest.fixture
async def bot(tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
              db_url: str, engine: AsyncEngine) -> AsyncIterator[Bot]:
    settings = make_settings(tmp_path, bot_api, fake_model, db_url,
                             CHATBRIDGE_MODEL="qwen3.5-plus")
    async with run_bot(settings, bot_api, fake_model) as running:
        yield running


def frames_sent(bot: Bot) -> list[str]:
    content = bot.model_texts()[-1]
    assert isinstance(content, list), content
    videos = [p for p in content if p.get("type") == "video"]
    assert len(videos) == 1
    return list(videos[0]["video"])


def video_field(file_id: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"file_id": file_id, "file_unique_id": file_id, "width": 96, "height": 64,
            "duration": 3, "file_size": len(data), **extra}


async def test_a_video_with_a_caption_is_watched(bot: Bot) -> None:
    data = media_files.video_clip(3.0)
    bot.api.add_file("vid", data)
    bot.model.enqueue(Reply(text="Red, green, blue."))
    bot.send(message(caption="what happens?",
                     video=video_field("vid", data, mime_type="video/mp4",
                                       file_name="clip.mp4")))
    assert await bot.answered(ALICE["id"]) == ["Red, green, blue."]
    frames = frames_sent(bot)
    assert len(frames) == 6 and all(f.startswith("data:image/jpeg;base64,") for f in frames)
    assert bot.model_texts()[-1][-1] == {"type": "text", "text": "what happens?"}
    body = b"".join(r.body for r in bot.model.requests)
    assert TOKEN.encode() not in body and b"/file/bot" not in body


async def test_a_video_note_without_text_is_watched(bot: Bot) -> None:
    data = media_files.video_clip(1.5, size=(64, 64))
    bot.api.add_file("round", data)
    bot.model.enqueue(Reply(text="A red circle."))
    bot.send(message(video_note={"file_id": "round", "file_unique_id": "round",
                                 "length": 64, "duration": 2, "file_size": len(data)}))
    assert await bot.answered(ALICE["id"]) == ["A red circle."]
    assert len(frames_sent(bot)) == 4  # 3 frames at 2 a second, padded to Qwen's minimum


async def test_an_animation_is_watched(bot: Bot) -> None:
    data = media_files.video_clip(2.0, colours=((30, 40, 220),))
    bot.api.add_file("gif", data)
    bot.model.enqueue(Reply(text="Blue."))
    animation = video_field("gif", data, mime_type="video/mp4", file_name="blue.gif.mp4")
    # The Bot API sends an animation as a document too, for old clients.
    bot.send(message(caption="colour?", animation=animation,
                     document={k: animation[k] for k in ("file_id", "file_unique_id",
                                                          "file_name", "mime_type",
                                                          "file_size")}))
    assert await bot.answered(ALICE["id"]) == ["Blue."]
    assert len(frames_sent(bot)) == 4


async def test_a_damaged_video_gets_a_note_and_the_caption_an_answer(bot: Bot) -> None:
    data = media_files.video_clip(2.0)[:700]
    bot.api.add_file("bad", data)
    bot.model.enqueue(Reply(text="Hello Alice."))
    bot.send(message(caption="hi, look",
                     video=video_field("bad", data, mime_type="video/mp4",
                                       file_name="bad.mp4")))
    texts = await bot.answered(ALICE["id"])
    assert "Hello Alice." in texts[-1]
    assert "bad.mp4: that video seems to be damaged; I couldn't play it." in texts[-1]
    assert bot.model_texts()[-1] == "hi, look"
    bot.api.add_file("bad2", data)
    bot.send(message(video=video_field("bad2", data, mime_type="video/mp4",
                                       file_name="bad2.mp4")))
    texts = await bot.answered(ALICE["id"], 2)
    assert texts[-1] == "bad2.mp4: that video seems to be damaged; I couldn't play it."
    assert len(bot.model.requests) == 1
