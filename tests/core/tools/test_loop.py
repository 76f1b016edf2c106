"""The tool loop end to end: ChatService, real store (both databases), real aiohttp, the
loopback model server scripting tool calls on Chat Completions and DashScope native."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.db import open_store
from bots.usage import render
from core.model import (
    DashScopeClient,
    OpenAIClient,
    ResponsesClient,
    RetryingClient,
    RetryPolicy,
)
from core.profiles import Profile
from core.service import ChatService, ServiceOptions
from core.store.models import Message, ToolCallRow
from core.store.toolcalls import PLACEHOLDER
from core.tools import Registry, Tool, ToolContext
from core.types import (
    Author,
    ChatRequest,
    ErrorEvent,
    FinalEvent,
    ReplyEvent,
    StatusEvent,
)
from tests.fakes.model_server import FakeModelServer, Reply

ADD_SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"},
                                               "b": {"type": "integer"}},
              "required": ["a", "b"]}


class Tools:
    """Test tools that record their calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.started = 0
        self.both = asyncio.Event()

    async def add(self, args: dict[str, Any], ctx: ToolContext) -> str:
        self.calls.append(("add", args))
        return str(args["a"] + args["b"])

    async def meet(self, args: dict[str, Any], ctx: ToolContext) -> str:
        # Finishes only once two calls run at the same time: proves they run concurrently.
        self.calls.append(("meet", args))
        self.started += 1
        if self.started >= 2:
            self.both.set()
        await self.both.wait()
        return f"met {args.get('who')}"

    async def slow(self, args: dict[str, Any], ctx: ToolContext) -> str:
        self.calls.append(("slow", args))
        await asyncio.sleep(30)
        return "never"

    async def boom(self, args: dict[str, Any], ctx: ToolContext) -> str:
        self.calls.append(("boom", args))
        raise RuntimeError("the disk is on fire")

    def registry(self) -> Registry:
        return Registry([
            Tool("add", "Add two integers.", self.add, ADD_SCHEMA),
            Tool("meet", "Meet someone.", self.meet,
                 {"type": "object", "properties": {"who": {"type": "string"}}}),
            Tool("slow", "Never finishes in time.", self.slow),
            Tool("boom", "Always fails.", self.boom),
        ])


@pytest.fixture
def tools() -> Tools:
    return Tools()


def make_service(engine: AsyncEngine, fake: FakeModelServer, tools: Tools,
                 http: aiohttp.ClientSession,
                 *, api: str = "openai", stream: bool = True, **profile: Any) -> ChatService:
    if api == "openai":
        inner: Any = OpenAIClient(http, base_url=fake.openai_base, api_key="k", timeout=5)
    elif api == "responses":
        inner = ResponsesClient(http, base_url=fake.openai_base, api_key="k", timeout=5)
    else:
        inner = DashScopeClient(http, base_url=fake.dashscope_base, api_key="k", timeout=5)

    async def no_sleep(_: float) -> None:
        return None

    model = RetryingClient(inner, RetryPolicy(max_attempts=2), sleep=no_sleep)
    settings: dict[str, Any] = {"tools": ("add", "meet", "slow", "boom"),
                                "tool_timeout_seconds": 0.5, **profile}
    return ChatService(store=open_store(engine), model=model, options=ServiceOptions(
        model="qwen-plus", profiles={"default": Profile(system_prompt="Use tools.", **settings)},
        stream=stream, tools=tools.registry()))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


_n = 0


async def ask(service: ChatService, text: str) -> list[ReplyEvent]:
    global _n
    _n += 1
    req = ChatRequest(platform="console", scope="console/tools", author=Author("u1", "Ann"),
                      text=text, event_id=f"t{_n}")
    return [e async for e in service.handle(req)]


def sent(fake: FakeModelServer, index: int = -1) -> list[dict[str, Any]]:
    body = fake.requests[index].json
    return list(body["messages"] if "messages" in body else body["input"]["messages"])


def tool_results(fake: FakeModelServer, index: int = -1) -> list[str]:
    body = fake.requests[index].json
    if "input" in body and isinstance(body["input"], list):  # the Responses API
        return [i["output"] for i in body["input"] if i.get("type") == "function_call_output"]
    return [m["content"] for m in sent(fake, index) if m["role"] == "tool"]


def tool_choice(fake: FakeModelServer, index: int = -1) -> Any:
    body = fake.requests[index].json
    return (body.get("parameters") or body).get("tool_choice")


APIS = ["openai", "responses", "dashscope"]


def context_of(body: dict[str, Any]) -> list[Any]:
    """The context a request carried, whatever the protocol."""
    if isinstance(body.get("input"), list):
        return list(body["input"])
    return list(body["messages"] if "messages" in body else body["input"]["messages"])


@pytest.mark.parametrize("api", ["openai", "dashscope"])
async def test_call_split_over_chunks_then_second_round(
        engine: AsyncEngine, fake_model: FakeModelServer, tools: Tools,
        http: aiohttp.ClientSession, api: str) -> None:
    service = make_service(engine, fake_model, tools, http, api=api)
    fake_model.enqueue(Reply(text="", tool_calls=[("add", '{"a": 20, "b": 22}')], chunk_size=2),
                       Reply(text="It is 42."))
    events = await ask(service, "What is 20 + 22?")
    final = events[-1]
    assert isinstance(final, FinalEvent) and final.text == "It is 42."
    assert tools.calls == [("add", {"a": 20, "b": 22})]
    first = fake_model.requests[0].json
    offered = first["tools"] if api == "openai" else first["parameters"]["tools"]
    assert [t["function"]["name"] for t in offered] == ["add", "meet", "slow", "boom"]
    second = sent(fake_model)
    assert [m["role"] for m in second] == ["system", "user", "assistant", "tool"]
    call = second[2]["tool_calls"][0]
    assert call["function"] == {"name": "add", "arguments": '{"a": 20, "b": 22}'}
    assert second[3]["tool_call_id"] == call["id"] and second[3]["content"] == "42"
    status = [e for e in events if isinstance(e, StatusEvent) and e.tool is not None]
    assert [e.tool.status for e in status if e.tool] == ["in_progress", "complete"]
    assert final.usage.prompt_tokens == 22  # both rounds' usage


@pytest.mark.parametrize("api", APIS)
async def test_non_streamed_tool_call(engine: AsyncEngine, fake_model: FakeModelServer,
                                      tools: Tools, http: aiohttp.ClientSession, api: str) -> None:
    service = make_service(engine, fake_model, tools, http, stream=False, api=api)
    fake_model.enqueue(Reply(text="", tool_calls=[("add", '{"a": 1, "b": 2}')]),
                       Reply(text="3"))
    events = await ask(service, "1+2?")
    assert isinstance(events[-1], FinalEvent) and events[-1].text == "3"
    assert tool_results(fake_model) == ["3"]


@pytest.mark.parametrize("api", APIS)
async def test_parallel_calls_run_concurrently(engine: AsyncEngine, fake_model: FakeModelServer,
                                               tools: Tools, http: aiohttp.ClientSession,
                                               api: str) -> None:
    service = make_service(engine, fake_model, tools, http, api=api)
    fake_model.enqueue(Reply(text="", tool_calls=[("meet", '{"who": "Ann"}'),
                                                  ("meet", '{"who": "Bob"}')]),
                       Reply(text="Met both."))
    events = await ask(service, "Meet Ann and Bob")
    assert isinstance(events[-1], FinalEvent)
    assert tool_results(fake_model) == ["met Ann", "met Bob"]  # in call order
    first = fake_model.requests[0].json
    assert (first.get("parameters") or first)["parallel_tool_calls"] is True


@pytest.mark.parametrize(("call", "expected"), [
    (("add", '{"a": 1, "b": '), "error: the arguments are not valid JSON"),
    (("add", '{"a": 1, "b": "two"}'), "error: the arguments do not match the schema at b"),
    (("add", '[1, 2]'), "error: the arguments must be a JSON object"),
    (("nope", "{}"), "error: there is no tool named 'nope'"),
    (("slow", "{}"), "error: the tool 'slow' did not finish within 0.5 s"),
    (("boom", "{}"), "error: the tool 'boom' failed (RuntimeError: the disk is on fire)"),
])
@pytest.mark.parametrize("api", APIS)
async def test_failures_are_results_the_model_reads(
        engine: AsyncEngine, fake_model: FakeModelServer, tools: Tools,
        http: aiohttp.ClientSession, call: tuple[str, str], expected: str, api: str) -> None:
    service = make_service(engine, fake_model, tools, http, api=api)
    fake_model.enqueue(Reply(text="", tool_calls=[call]), Reply(text="Sorry, that failed."))
    events = await ask(service, "try it")
    assert isinstance(events[-1], FinalEvent) and events[-1].text == "Sorry, that failed."
    [result] = tool_results(fake_model)
    assert result.startswith(expected), result
    done = [e.tool for e in events if isinstance(e, StatusEvent) and e.tool]
    assert done[-1].status == "error"


@pytest.mark.parametrize("api", APIS)
async def test_round_limit_gives_a_clear_message(engine: AsyncEngine,
                                                 fake_model: FakeModelServer, tools: Tools,
                                                 http: aiohttp.ClientSession, api: str) -> None:
    service = make_service(engine, fake_model, tools, http, max_tool_rounds=2, api=api)
    fake_model.default = Reply(text="", tool_calls=[("add", '{"a": 1, "b": 1}')])
    events = await ask(service, "loop forever")
    error = events[-1]
    assert isinstance(error, ErrorEvent)
    assert "more than 2 rounds of tool calls" in error.message
    assert len(tools.calls) == 2
    assert len(fake_model.requests) == 3
    assert tool_choice(fake_model) == "none"
    assert tool_choice(fake_model, 0) is None


@pytest.mark.parametrize("api", APIS)
async def test_drop_mid_tool_call_runs_nothing_partial(
        engine: AsyncEngine, fake_model: FakeModelServer, tools: Tools,
        http: aiohttp.ClientSession, api: str) -> None:
    service = make_service(engine, fake_model, tools, http, api=api)
    fake_model.enqueue(Reply(kind="drop", text="", tool_calls=[("add", '{"a": 5, "b": 6}')],
                             chunk_size=2),
                       Reply(text="", tool_calls=[("add", '{"a": 5, "b": 6}')]),
                       Reply(text="11"))
    events = await ask(service, "5+6")
    assert isinstance(events[-1], FinalEvent) and events[-1].text == "11"
    assert tools.calls == [("add", {"a": 5, "b": 6})]  # once, with the whole arguments


@pytest.mark.parametrize("api", APIS)
async def test_moderation_after_a_tool_result(engine: AsyncEngine, fake_model: FakeModelServer,
                                              tools: Tools, http: aiohttp.ClientSession,
                                              api: str) -> None:
    service = make_service(engine, fake_model, tools, http, api=api)
    fake_model.enqueue(Reply(text="", tool_calls=[("add", '{"a": 1, "b": 1}')]),
                       Reply(kind="moderation_midstream", text="bad words here"))
    events = await ask(service, "1+1")
    assert isinstance(events[-1], ErrorEvent) and events[-1].kind == "refused"


async def test_calls_are_stored_and_replayed_next_turn(
        engine: AsyncEngine, fake_model: FakeModelServer, tools: Tools,
        http: aiohttp.ClientSession) -> None:
    service = make_service(engine, fake_model, tools, http)
    fake_model.enqueue(Reply(text="", tool_calls=[("add", '{"a": 1, "b": 2}'),
                                                  ("boom", "{}")]),
                       Reply(text="", tool_calls=[("add", '{"a": 3, "b": 4}')]),
                       Reply(text="Done."))
    await ask(service, "go")
    async with engine.connect() as conn:
        rows = (await conn.execute(select(ToolCallRow.__table__)
                                   .order_by(ToolCallRow.id))).all()
    got = [(r.round, r.position, r.name, r.status, r.output[:6]) for r in rows]
    assert got == [(1, 0, "add", "ok", "3"), (1, 1, "boom", "error", "error:"),
                   (2, 0, "add", "ok", "7")]
    assert all(r.duration_ms is not None for r in rows)
    third_round = sent(fake_model)
    fake_model.enqueue(Reply(text="Next."))
    await ask(service, "and now?")
    replay = sent(fake_model)
    assert replay[:-2] == third_round  # the stored rounds, exactly as the model saw them
    assert [m["role"] for m in replay[-2:]] == ["assistant", "user"]
    assert replay[-2]["content"] == "Done."
    assert json.loads(replay[2]["tool_calls"][0]["function"]["arguments"]) == {"a": 1, "b": 2}
    [row] = await service._store.usage(since=datetime.now(UTC) - timedelta(hours=1), by="user")
    assert (row.turns, row.tool_calls) == (2, 3)  # `chatbridge usage` counts them
    assert "tool calls" in render([row], "user").splitlines()[0]


@pytest.mark.parametrize("stream", [True, False])
async def test_responses_api_runs_the_loop(engine: AsyncEngine, fake_model: FakeModelServer,
                                           tools: Tools, http: aiohttp.ClientSession,
                                           stream: bool) -> None:
    service = make_service(engine, fake_model, tools, http, api="responses", stream=stream)
    fake_model.enqueue(Reply(text="", tool_calls=[("add", '{"a": 2, "b": 2}')], chunk_size=2),
                       Reply(text="Four."))
    events = await ask(service, "2+2?")
    assert isinstance(events[-1], FinalEvent) and events[-1].text == "Four."
    assert tools.calls == [("add", {"a": 2, "b": 2})]
    items = fake_model.requests[-1].json["input"]
    assert [i.get("type") or i["role"] for i in items] == [
        "system", "user", "function_call", "function_call_output"]
    assert items[3] == {"type": "function_call_output", "call_id": items[2]["call_id"],
                        "output": "4"}
    fake_model.enqueue(Reply(text="Still four."))
    await ask(service, "sure?")
    again = fake_model.requests[-1].json["input"]
    assert again[:4] == items  # replayed from the database, exactly


async def test_turn_deadline_bounds_the_loop(engine: AsyncEngine, fake_model: FakeModelServer,
                                             tools: Tools, http: aiohttp.ClientSession) -> None:
    service = make_service(engine, fake_model, tools, http, tool_timeout_seconds=30)
    service._options = replace(service._options, turn_seconds=0.5)
    fake_model.default = Reply(text="", tool_calls=[("slow", "{}")])
    began = time.monotonic()
    events = await ask(service, "slow please")
    assert time.monotonic() - began < 5  # the 30 s tool timeout was cut to the turn's time
    error = events[-1]
    assert isinstance(error, ErrorEvent) and "time limit" in error.message
    assert len(fake_model.requests) == 1 and tools.calls == [("slow", {})]


async def test_thinking_with_tools_is_kept_apart(engine: AsyncEngine, fake_model: FakeModelServer,
                                                 tools: Tools, http: aiohttp.ClientSession) -> None:
    service = make_service(engine, fake_model, tools, http)
    fake_model.enqueue(Reply(text="", reasoning="I should add them.",
                             tool_calls=[("add", '{"a": 1, "b": 2}')]),
                       Reply(text="Three.", reasoning="The tool said 3."))
    events = await ask(service, "1+2?")
    assert isinstance(events[-1], FinalEvent) and events[-1].text == "Three."
    async with engine.connect() as conn:
        answer = (await conn.execute(select(Message.text, Message.reasoning)
                                     .where(Message.role == "assistant"))).one()
    assert answer.text == "Three."
    assert answer.reasoning == "I should add them.The tool said 3."
    assert all("reasoning" not in str(m.get("content")) for m in sent(fake_model))


async def test_old_tool_results_leave_the_budget_with_a_placeholder(
        engine: AsyncEngine, fake_model: FakeModelServer, tools: Tools,
        http: aiohttp.ClientSession) -> None:
    service = make_service(engine, fake_model, tools, http, context_tokens=300)
    big = '{"a": 1, "b": 2}'
    fake_model.enqueue(Reply(text="", tool_calls=[("add", big)]), Reply(text="3"))
    await ask(service, "first")
    assert tool_results(fake_model) == ["3"]  # fits: shown in full
    tools_big = Tool("add", "Add.", _big_add, ADD_SCHEMA)
    service._toolboxes.clear()
    service._options = replace(service._options, tools=Registry([tools_big]))
    fake_model.enqueue(Reply(text="", tool_calls=[("add", big)]), Reply(text="done"))
    await ask(service, "second")
    fake_model.enqueue(Reply(text="ok"))
    await ask(service, "third")
    results = tool_results(fake_model)
    assert results[-1] == PLACEHOLDER  # the huge result no longer fits the budget
    roles = [m["role"] for m in sent(fake_model)]
    assert roles.count("tool") == len(results)  # every call keeps its (placeholder) result


async def _big_add(args: dict[str, Any], ctx: ToolContext) -> str:
    return "lots of digits " * 400


@pytest.mark.parametrize("api", APIS)
async def test_text_before_the_calls_is_replayed_with_its_round(
        engine: AsyncEngine, fake_model: FakeModelServer, tools: Tools,
        http: aiohttp.ClientSession, api: str) -> None:
    service = make_service(engine, fake_model, tools, http, api=api)
    fake_model.enqueue(Reply(text="Let me add. ", tool_calls=[("add", '{"a": 1, "b": 2}')]),
                       Reply(text="It is 3."))
    events = await ask(service, "1+2?")
    final = events[-1]
    assert isinstance(final, FinalEvent) and final.text == "Let me add. It is 3."  # as seen
    second_round = fake_model.requests[-1].json
    fake_model.enqueue(Reply(text="ok"))
    await ask(service, "thanks")
    replay = fake_model.requests[-1].json
    before, after = context_of(second_round), context_of(replay)
    assert after[:len(before)] == before  # the rounds exactly as the model saw them
    answer = after[len(before)]
    assert answer.get("content") == "It is 3."  # without the replayed preamble
