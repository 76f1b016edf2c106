"""Benchmark: prompt tokens billed at full price per turn over a 50-turn conversation, with and
without explicit context caching (``prompt_cache``).

The real ChatService, store and aiohttp client talk to the loopback model, which counts the
request's tokens (about 4 characters a token) and applies Model Studio's explicit-cache
rules (protocols-2 H: markers on content parts, ≥ 1024 tokens, lookup ≤ 20 blocks back,
created after the response, hits reported as ``cached_tokens`` and writes as
``cache_creation_input_tokens``). The numbers come from the usage recorded in the database.
Input cost is in full-price tokens: a cache hit costs 10 %, a cache write 125 %.

Run:  .venv/bin/python -m bench.bench_cache [--turns 50]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile

import aiohttp
from sqlalchemy import select

from bots.db import create_engine, open_store, upgrade
from core.model import OpenAIClient
from core.profiles import Profile
from core.service import ChatService, ServiceOptions
from core.store.models import Message
from core.types import Author, ChatRequest, FinalEvent
from tests.fakes.model_server import FakeModelServer, Reply

SYSTEM = ("You are the support assistant of a hardware shop. Follow the handbook below.\n"
          + "".join(f"Handbook rule {i}: answer politely, cite the order number, and never "
                    f"promise delivery dates you cannot check.\n" for i in range(60)))


async def run(url: str, turns: int, cache: bool) -> list[tuple[int, int, int]]:
    """(prompt, cached, created) tokens of each turn."""
    engine = create_engine(url)
    await upgrade(engine)
    fake = FakeModelServer().start()
    fake.count_tokens = True
    fake.default = Reply(text="Thanks for the details. Order 4711 ships from the main "
                         "warehouse; I will check the carrier and come back to you.",
                         usage=(0, 30))
    profile = Profile(system_prompt=SYSTEM, prompt_cache=cache)
    try:
        async with aiohttp.ClientSession() as http:
            service = ChatService(
                store=open_store(engine),
                model=OpenAIClient(http, base_url=fake.openai_base, api_key=None),
                options=ServiceOptions(model="qwen-plus", profiles={"default": profile}))
            for n in range(turns):
                req = ChatRequest(platform="bench", scope="bench/cache", author=Author("b"),
                                  text=f"Question {n}: where is my order 4711 and when will "
                                  "it arrive? I need it before the weekend.",
                                  event_id=f"c{n}")
                async for event in service.handle(req):
                    final = event
                assert isinstance(final, FinalEvent), final
        async with engine.connect() as conn:
            rows = (await conn.execute(
                select(Message.prompt_tokens, Message.cached_tokens,
                       Message.cache_creation_tokens)
                .where(Message.role == "assistant").order_by(Message.id))).all()
    finally:
        fake.stop()
        await engine.dispose()
    return [(int(p or 0), int(c or 0), int(w or 0)) for p, c, w in rows]


def main() -> None:
    """Run both arms and print a table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=50)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for cache in (False, True):
            url = f"sqlite+aiosqlite:///{tmp}/cache-{cache}.db"
            results[cache] = asyncio.run(run(url, args.turns, cache))
    print(f"{args.turns} turns, system prompt ~{len(SYSTEM) // 4} tokens (per turn means)")
    print(f"{'prompt_cache':<13} {'prompt':>8} {'cached':>8} {'written':>8} "
          f"{'full price':>10} {'input cost':>10}")
    costs = {}
    for cache, rows in results.items():
        n = len(rows)
        prompt = sum(r[0] for r in rows) / n
        cached = sum(r[1] for r in rows) / n
        written = sum(r[2] for r in rows) / n
        full = prompt - cached - written
        costs[cache] = full + 0.1 * cached + 1.25 * written
        print(f"{'on' if cache else 'off':<13} {prompt:>8.0f} {cached:>8.0f} {written:>8.0f} "
              f"{full:>10.0f} {costs[cache]:>10.0f}")
    print(f"input cost with caching: {costs[True] / costs[False]:.2f}x of without")


if __name__ == "__main__":
    main()
