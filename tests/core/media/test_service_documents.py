"""Documents through a real turn: the store (SQLite and PostgreSQL), aiohttp, the loopback
model; what reaches the model, what is stored, what the person is told."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.db import open_store
from core.model import OpenAIClient
from core.profiles import Profile
from core.service import ChatService, ServiceOptions
from core.store.models import DocumentRow, Message
from core.types import Author, ChatRequest, ErrorEvent, FinalEvent, ReplyEvent, Upload
from tests import media_files
from tests.fakes.model_server import FakeModelServer, Reply


@pytest.fixture
async def service(engine: AsyncEngine, fake_model: FakeModelServer) -> AsyncIterator[ChatService]:
    async with aiohttp.ClientSession() as http:
        model = OpenAIClient(http, base_url=fake_model.openai_base, api_key="k", timeout=5)
        profile = Profile(system_prompt="You are terse.", context_tokens=2000)
        yield ChatService(store=open_store(engine), model=model,
                          options=ServiceOptions(model="qwen-plus",
                                                 profiles={"default": profile}))


_n = 0


def request(text: str, *files: Upload) -> ChatRequest:
    global _n
    _n += 1
    return ChatRequest(platform="console", scope="console/docs", author=Author("u1", "Ann"),
                       text=text, event_id=f"d{_n}", files=files)


async def run(service: ChatService, req: ChatRequest) -> list[ReplyEvent]:
    return [e async for e in service.handle(req)]


def last_user(fake: FakeModelServer) -> object:
    return fake.requests[-1].json["messages"][-1]["content"]


def text_of(content: object) -> str:
    """A message's text, whether sent as a string or as parts (a cache marker makes the
    long prefix a list of text parts)."""
    if isinstance(content, str):
        return content
    assert isinstance(content, list)
    return "".join(p["text"] for p in content if p.get("type") == "text")


async def test_pdf_and_docx_reach_the_model_and_are_stored_once(
        service: ChatService, fake_model: FakeModelServer, engine: AsyncEngine) -> None:
    plan = Upload("plan.pdf", media_files.pdf(["The launch code is 4242."]))
    memo = Upload("memo.docx", media_files.docx("Budget is 12 EUR."))
    fake_model.enqueue(Reply(text="4242 and 12 EUR."), Reply(text="Still 4242."))
    final = (await run(service, request("What do these say?", plan, memo)))[-1]
    assert isinstance(final, FinalEvent) and final.notice == ""
    sent = last_user(fake_model)
    assert isinstance(sent, str)
    assert sent.startswith("What do these say?\n\n[Document: plan.pdf (PDF, 1 pages)]\n")
    assert "The launch code is 4242." in sent and "Budget is 12 EUR." in sent
    assert "[End of memo.docx]" in sent
    await run(service, request("And again?", plan))  # the same file posted again
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(DocumentRow)) == 2
        stored = (await conn.scalars(select(Message.text).where(Message.role == "user")
                                     .order_by(Message.id))).all()
    assert "The launch code is 4242." in stored[0]  # the user's message holds what was read
    history = fake_model.requests[-1].json["messages"]
    assert "4242" in history[1]["content"]  # the first message, with its document, kept


async def test_long_document_is_cut_and_the_person_told(
        service: ChatService, fake_model: FakeModelServer) -> None:
    long_text = "\n".join(f"Line {i}: the quick brown fox jumps." for i in range(3000))
    fake_model.enqueue(Reply(text="A long file."))
    final = (await run(service, request("Summarise", Upload("log.txt", long_text.encode()))))[-1]
    assert isinstance(final, FinalEvent)
    assert "log.txt is too long to read whole: I read about the first" in final.notice
    sent = text_of(last_user(fake_model))
    assert "Line 0:" in sent and "Line 2999:" not in sent
    assert "[… the rest of log.txt was cut: it has about" in sent
    usage = fake_model.requests[-1].json["messages"]
    assert sum(len(text_of(m["content"])) for m in usage) < 8000  # a 2000-token budget


async def test_broken_document_gets_a_note_and_the_rest_is_answered(
        service: ChatService, fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(text="Hello."))
    final = (await run(service, request(
        "Hi, and see the files", Upload("locked.pdf", media_files.encrypted_pdf("x")),
        Upload("ok.csv", b"a,b\n1,2\n"))))[-1]
    assert isinstance(final, FinalEvent)
    assert "(Not read: locked.pdf is protected with a password" in final.notice
    sent = last_user(fake_model)
    assert isinstance(sent, str) and "a | b\n1 | 2" in sent and "locked" not in sent


async def test_only_an_unreadable_document_is_a_clear_error(
        service: ChatService, fake_model: FakeModelServer) -> None:
    error = (await run(service, request("", Upload("broken.pdf", b"%PDF-1.4 junk"))))[-1]
    assert isinstance(error, ErrorEvent) and error.kind == "bad_input"
    assert error.message == "broken.pdf seems to be damaged; I couldn't read it."
    assert fake_model.requests == []


async def test_scanned_pdf_goes_to_the_model_as_page_images(
        service: ChatService, fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(text="A blue box."))
    final = (await run(service, request("What is on it?",
                                        Upload("scan.pdf", media_files.pdf(scanned=6)))))[-1]
    assert isinstance(final, FinalEvent)
    assert "scan.pdf is a scan: I read its first 4 of 6 pages as images." in final.notice
    content = last_user(fake_model)
    assert isinstance(content, list)
    urls = [part["image_url"]["url"] for part in content if part["type"] == "image_url"]
    assert len(urls) == 4 and all(u.startswith("data:image/png;base64,") for u in urls)
    text = next(part["text"] for part in content if part["type"] == "text")
    assert "[Document: scan.pdf (PDF, 6 pages); it has no text layer" in text
