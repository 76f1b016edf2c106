"""Documents sent to the Telegram bot: fetched with the real getFile, read into the turn,
on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests import media_files
from tests.bots.telegram.conftest import ALICE, TOKEN, Bot, make_settings, message, run_bot
from tests.bots.telegram.fake_bot_api import FakeBotApi
from tests.fakes.model_server import FakeModelServer, Reply


@pytest.fixture
async def bot(tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
              db_url: str, engine: AsyncEngine) -> AsyncIterator[Bot]:
    # (``engine`` migrates the database first: a bot never migrates PostgreSQL itself)
    settings = make_settings(tmp_path, bot_api, fake_model, db_url)
    async with run_bot(settings, bot_api, fake_model) as running:
        yield running


def document(file_id: str, name: str, mime: str, size: int) -> dict[str, object]:
    return {"file_id": file_id, "file_unique_id": file_id, "file_name": name,
            "mime_type": mime, "file_size": size}


async def test_pdf_document_is_read_and_answered(bot: Bot) -> None:
    data = media_files.pdf(["Invoice total: 315 EUR."])
    bot.api.add_file("inv", data)
    bot.model.enqueue(Reply(text="It is 315 EUR."))
    bot.send(message(caption="how much?",
                     document=document("inv", "invoice.pdf", "application/pdf", len(data))))
    assert await bot.answered(ALICE["id"]) == ["It is 315 EUR."]
    sent = bot.model_texts()[-1]
    assert isinstance(sent, str) and sent.startswith("how much?\n\n[Document: invoice.pdf")
    assert "Invoice total: 315 EUR." in sent
    body = b"".join(r.body for r in bot.model.requests)
    assert TOKEN.encode() not in body and b"/file/bot" not in body


async def test_docx_without_caption_and_a_broken_file(bot: Bot) -> None:
    data = media_files.docx("Meeting moved to Friday.")
    bot.api.add_file("memo", data)
    bot.model.enqueue(Reply(text="Friday."))
    mime = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    bot.send(message(document=document("memo", "memo.docx", mime, len(data))))
    assert await bot.answered(ALICE["id"]) == ["Friday."]
    assert "Meeting moved to Friday." in bot.model_texts()[-1]
    bot.api.add_file("bad", b"%PDF-1.4 nothing")
    bot.send(message(document=document("bad", "bad.pdf", "application/pdf", 16)))
    texts = await bot.answered(ALICE["id"], 2)
    assert texts[-1] == "bad.pdf seems to be damaged; I couldn't read it."
    assert len(bot.model.requests) == 1


async def test_other_files_still_get_a_note(bot: Bot) -> None:
    bot.send(message(document=document("z", "archive.zip", "application/zip", 10)))
    texts = await bot.answered(ALICE["id"])
    assert "files of this type" in texts[0] and "documents (PDF, Word" in texts[0]
    assert bot.model.requests == []


async def test_voice_note_is_transcribed_when_a_speech_model_is_set(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        db_url: str, engine: AsyncEngine) -> None:
    settings = make_settings(tmp_path, bot_api, fake_model, db_url,
                             CHATBRIDGE_ASR_MODEL="qwen3-omni-flash")
    async with run_bot(settings, bot_api, fake_model) as bot:
        data = media_files.voice_note(1.0)
        bot.api.add_file("v1", data)
        bot.model.enqueue(Reply(text="Remind me to call Bo."), Reply(text="Noted."))
        bot.send(message(voice={"file_id": "v1", "file_unique_id": "v1", "duration": 1,
                                "mime_type": "audio/ogg", "file_size": len(data)}))
        texts = await bot.answered(ALICE["id"])
        assert "Noted." in texts[-1] and "Heard: \u201cRemind me to call Bo.\u201d" in texts[-1]
        asr = bot.model.requests[0].json
        assert asr["model"] == "qwen3-omni-flash"
        assert asr["messages"][0]["content"][0]["type"] == "input_audio"
        assert bot.model_texts()[-1] == "[voice message, transcribed] Remind me to call Bo."


async def test_voice_note_without_a_speech_model_gets_the_note(bot: Bot) -> None:
    bot.send(message(voice={"file_id": "v", "file_unique_id": "v", "duration": 3}))
    texts = await bot.answered(ALICE["id"])
    assert "voice messages" in texts[0]
    assert bot.model.requests == []
