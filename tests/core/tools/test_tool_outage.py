"""A queued turn's tool rounds survive a PostgreSQL outage like its answer does.

Real PostgreSQL (a cluster of the test's own, stopped as a crash would and started
again), the real model client against the loopback model, the real inbox claim: the tool
that runs stops the database, so storing its result meets the outage. The turn must wait
it out (not tell the person the database is unreachable) and answer once, with the tool
round stored once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import asyncpg

from bots.db import create_engine, open_store, upgrade
from core.model import OpenAIClient
from core.profiles import Profile
from core.service import ChatService, ServiceOptions
from core.store.queue import InboxStore
from core.tools import Registry
from core.tools.registry import Tool, ToolContext
from core.types import Author, ChatRequest, ErrorEvent, FinalEvent
from tests.fakes.model_server import FakeModelServer, Reply
from tests.pg import Cluster


async def test_a_tool_round_waits_out_a_database_outage(fake_model: FakeModelServer) -> None:
    cluster = Cluster(crash_safe=True)
    engine = create_engine(cluster.url)
    try:
        await upgrade(engine)
        store = open_store(engine)
        restarted: list[asyncio.Task[None]] = []

        async def crash_the_database(args: Mapping[str, Any], ctx: ToolContext) -> str:
            await asyncio.to_thread(cluster.stop_server)

            async def back_later() -> None:
                await asyncio.sleep(2.0)
                await asyncio.to_thread(cluster.start_server)

            restarted.append(asyncio.create_task(back_later()))
            return "done"

        tool = Tool("crash", "Stops the database.", crash_the_database)
        fake_model.enqueue(Reply(text="", tool_calls=[("crash", "{}")]),
                           Reply(text="All done."))
        queue = InboxStore(store)
        assert await queue.enqueue(platform="console", event_id="q1", scope="console/q",
                                   payload={})
        [claim] = await queue.claim(owner="A", lease_seconds=60, limit=1)
        request = ChatRequest(platform="console", scope="console/q", author=Author("u", "U"),
                              text="go", event_id="q1")
        async with aiohttp.ClientSession() as http:
            model = OpenAIClient(http, base_url=fake_model.openai_base, api_key="k", timeout=10)
            service = ChatService(store=store, model=model, options=ServiceOptions(
                model="qwen-plus", profiles={"default": Profile(tools=("crash",))},
                tools=Registry([tool])))
            events = [e async for e in service.answer([request], claim)]
        await asyncio.gather(*restarted)
        assert not [e for e in events if isinstance(e, ErrorEvent)], events
        assert isinstance(events[-1], FinalEvent) and events[-1].text == "All done."
        db = await asyncpg.connect(cluster.url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            calls = await db.fetch("SELECT name, status, output FROM tool_calls")
            answers = await db.fetch("SELECT text FROM messages WHERE role = 'assistant'")
        finally:
            await db.close()
        assert [(c["name"], c["status"], c["output"]) for c in calls] == [("crash", "ok", "done")]
        assert [a["text"] for a in answers] == ["All done."]
    finally:
        await engine.dispose()
        cluster.stop()
