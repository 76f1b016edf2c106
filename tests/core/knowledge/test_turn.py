"""What an auto-mode turn searches: small talk goes to the model, a short follow-up is
searched with the question before it, and the passages fit the context's budget."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.db import open_store
from core.knowledge.cite import NOT_FOUND
from core.knowledge.turn import is_follow_up, is_small_talk, make_room, search_text
from core.model import OpenAIClient
from core.profiles import Profile, build_profile
from core.service import ChatService, ServiceOptions
from core.store import StoredMessage
from core.store.summaries import SUMMARY_ROLE
from core.tokens import counter_for
from core.types import Author, ChatRequest, FinalEvent
from tests.core.knowledge.test_index import index_faq
from tests.fakes.model_server import FakeModelServer, Reply


def message(id: int, role: str, text: str, tokens: int = 10) -> StoredMessage:
    return StoredMessage(id, role, text, "", tokens, 0)


def test_small_talk_is_told_from_questions() -> None:
    for chat in ("thanks!", "Thank you so much", "ok, great", "hi", "good morning", "bye"):
        assert is_small_talk(chat), chat
    for asked in ("and how much is it?", "is it?", "refund please", "thanks, and do you "
                  "ship to Norway", "Hello, I want my money back", ""):
        assert not is_small_talk(asked), asked


def test_a_short_follow_up_is_searched_with_the_question_before_it() -> None:
    history = (message(1, "user", "Do you ship to Norway?"), message(2, "assistant", "Yes."),
               message(3, "user", "and what does it cost?"))
    assert search_text("and what does it cost?", history) == (
        "Do you ship to Norway?\nand what does it cost?")
    # A question of its own is searched alone, and so is the first of a conversation.
    assert search_text("Which cards do you accept for payment?", history) == (
        "Which cards do you accept for payment?")
    assert search_text("and the cost?", history[2:]) == "and the cost?"
    # Short, but a new subject: it does not point back at anything.
    assert search_text("tell me a joke", history) == "tell me a joke"
    for follow_up in ("what about Finland?", "how about express?", "is it free?",
                      "and to Denmark"):
        assert is_follow_up(follow_up), follow_up
    for alone in ("tell me a joke", "Which cards do you accept for payment and invoices?"):
        assert not is_follow_up(alone), alone


def test_make_room_drops_the_oldest_keeping_summary_and_this_turn() -> None:
    history = (message(1, SUMMARY_ROLE, "summary"), message(2, "user", "a"),
               message(3, "assistant", "b"), message(4, "user", "c"),
               message(5, "assistant", "d"), message(6, "user", "e"), message(7, "user", "f"))
    assert make_room(history, 0, 70) == history
    assert [m.id for m in make_room(history, 15, 70)] == [1, 4, 5, 6, 7]
    assert [m.id for m in make_room(history, 500, 70)] == [1, 6, 7]  # never this turn's


@pytest.fixture
async def shop(engine: AsyncEngine, fake_model: FakeModelServer
               ) -> AsyncIterator[tuple[ChatService, FakeModelServer]]:
    _, searcher = await index_faq(engine)
    profile = build_profile("shop", {"knowledge": ["shop-faq"],
                                     "system_prompt": "You answer customers."})
    async with aiohttp.ClientSession() as http:
        model = OpenAIClient(http, base_url=fake_model.openai_base, api_key="k", timeout=5)
        yield ChatService(store=open_store(engine), model=model, knowledge=searcher,
                          options=ServiceOptions(model="qwen-plus",
                                                 profiles={"default": Profile(),
                                                           "shop": profile})), fake_model


async def ask(service: ChatService, text: str, n: int) -> FinalEvent:
    request = ChatRequest(platform="console", scope="console/shop", author=Author("u", "U"),
                          text=text, event_id=f"shop{n}", profile="shop")
    events = [e async for e in service.handle(request)]
    assert isinstance(events[-1], FinalEvent), events
    return events[-1]


def system_prompt(fake: FakeModelServer, n: int) -> str:
    return str(fake.requests[n].json["messages"][0]["content"])


async def test_small_talk_goes_to_the_model_and_a_follow_up_finds_its_passage(
        shop: tuple[ChatService, FakeModelServer]) -> None:
    service, fake = shop
    fake.enqueue(Reply(text="You're welcome!"), Reply(text="Yes, to Norway [1]."),
                 Reply(text="Standard shipping is free [1]."))
    assert (await ask(service, "thanks!", 1)).text == "You're welcome!"
    assert "Shop FAQ" not in system_prompt(fake, 0)  # no passages for small talk
    # Nothing in the base about cost alone: a question of its own gets "I don't know".
    assert (await ask(service, "what does a gift card cost?", 2)).text == NOT_FOUND
    assert len(fake.requests) == 1
    assert (await ask(service, "Do you ship to Norway?", 3)).text.startswith("Yes")
    assert "Standard shipping" in system_prompt(fake, 1)
    # "cost" is in no passage; with the question before it, the shipping passage is found.
    answer = await ask(service, "and what does it cost?", 4)
    assert answer.text.startswith("Standard shipping")
    assert "Standard shipping" in system_prompt(fake, 2)


async def test_passages_are_counted_in_the_context_budget(
        engine: AsyncEngine, fake_model: FakeModelServer) -> None:
    _, searcher = await index_faq(engine)
    long = "We talked about many things before. " * 40  # about 300 tokens
    seen: list[int] = []
    for budget in (2000, 420):
        profile = build_profile("shop", {"knowledge": ["shop-faq"], "context_tokens": budget,
                                         "system_prompt": "You answer customers."})
        async with aiohttp.ClientSession() as http:
            model = OpenAIClient(http, base_url=fake_model.openai_base, api_key="k",
                                 timeout=5)
            service = ChatService(store=open_store(engine), model=model, knowledge=searcher,
                                  options=ServiceOptions(model="qwen-plus", profiles={
                                      "default": Profile(), "shop": profile}))
            fake_model.requests.clear()
            fake_model.enqueue(Reply(text="Noted."), Reply(text="Within 30 days [1]."))
            scope = f"console/budget{budget}"
            for n, text in enumerate((f"{long} Now: do you ship to Norway?",
                                      "How many days do I have to return an item for a "
                                      "refund?")):
                request = ChatRequest(platform="console", scope=scope,
                                      author=Author("u", "U"), text=text,
                                      event_id=f"{scope}/{n}", profile="shop")
                [e async for e in service.handle(request)]
            messages = fake_model.requests[-1].json["messages"]
            assert "30 days" in str(messages[0]["content"])  # the passages are there
            seen.append(len(messages))
            if budget == 420:
                # The history alone fitted (so it was loaded whole); with the passages
                # it does not, and the oldest message made way.
                count = counter_for("qwen-plus").count
                passages = str(messages[0]["content"]).removeprefix("You answer customers.")
                history = count("You answer customers.") + count(long) + 40
                assert history < budget < history + count(passages)
                assert long not in str(messages) and messages[1]["content"] == "Noted."
    assert seen == [4, 3]
