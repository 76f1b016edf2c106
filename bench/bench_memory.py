"""Benchmark: a fact from turn 1 reaches the model at turn 5,000 through the rolling summary,
and a turn costs the same with 10 or 10,000 messages in the conversation.

One conversation of ``--turns`` turns (default 5,000: 10,000 messages) through the real
ChatService, store and aiohttp client against the loopback model (in this process, so its
requests can be read), which summarises by keeping the lines that start with ``FACT:``.
Turn 1 says ``FACT: the vault code is 7391``; the last turn asks for it, and the benchmark
checks that the model's request carries it in the summary (the system message) and not
among the messages. chatbridge's own time per turn (the turn minus its model call; the
summariser's calls run beside the turns, as in production) is the median over the first
200 turns (up to 400 messages), the 200 around 1,000 messages and the last 200.

Run:  .venv/bin/python -m bench.bench_memory [--turns 5000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator

import aiohttp

from bots.db import create_engine, open_store, upgrade
from core.memory import SUMMARY_INSTRUCTIONS
from core.model import OpenAIClient
from core.service import ChatService, ServiceOptions
from core.types import Author, ChatRequest, FinalEvent, ModelCall, ModelChunk
from tests.fakes.model_server import FakeModelServer, Reply, is_summary_request

FACT = "FACT: the vault code is 7391"
AUTHOR = Author("bench", "Bench")
_SUMMARY_START = SUMMARY_INSTRUCTIONS[:40]
WINDOW = 200  # turns per median


class TimedModel:
    """Adds up the time spent inside turn calls (not the summariser's)."""

    def __init__(self, inner: OpenAIClient) -> None:
        self.inner = inner
        self.spent = 0.0
        self.summaries = 0

    async def stream(self, call: ModelCall, *, stream: bool = True) -> AsyncIterator[ModelChunk]:
        summary = call.messages[0].text.startswith(_SUMMARY_START)
        self.summaries += summary
        started = time.perf_counter()
        try:
            async for chunk in self.inner.stream(call, stream=stream):
                yield chunk
        finally:
            if not summary:
                self.spent += time.perf_counter() - started


async def measure(url: str, turns: int) -> dict[str, object]:
    """Run the conversation; return medians, the summary count and the final request."""
    engine = create_engine(url)
    await upgrade(engine)
    fake = FakeModelServer().start()
    fake.record = False
    fake.default = Reply(text="Noted; tell me more.", usage=(40, 6))
    own: list[float] = []
    summaries = 0
    try:
        async with aiohttp.ClientSession() as http:
            timed = TimedModel(OpenAIClient(http, base_url=fake.openai_base, api_key=None))
            service = ChatService(store=open_store(engine), model=timed,
                                  options=ServiceOptions(model="qwen-plus"))
            for n in range(1, turns + 1):
                last = n == turns
                text = (FACT if n == 1 else "What is the vault code?" if last
                        else f"Small talk number {n}: the weather, the news, lunch.")
                if last:
                    await service.memory.wait()  # the newest summary is finished
                    fake.record = True
                timed.spent = 0.0
                started = time.perf_counter()
                async for event in service.handle(ChatRequest(
                        platform="bench", scope="bench/memory", author=AUTHOR, text=text,
                        event_id=f"m{n}")):
                    final = event
                assert isinstance(final, FinalEvent), final
                own.append(time.perf_counter() - started - timed.spent)
            summaries = timed.summaries
            request = [r.json for r in fake.requests if not is_summary_request(r.json)][-1]
    finally:
        fake.stop()
        await engine.dispose()
    middle = min(500, turns // 2)
    half = WINDOW // 2
    return {
        "first": statistics.median(own[:WINDOW]) * 1000,
        "middle": statistics.median(own[max(middle - half, 0):middle + half]) * 1000,
        "last": statistics.median(own[-WINDOW:]) * 1000,
        "middle_messages": middle * 2,
        "summaries": summaries,
        "request": request,
    }


def main() -> None:
    """Run and print the result; exit 1 if the fact did not arrive through the summary."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=5000)
    parser.add_argument("--database-url", default=None,
                        help="default: a new SQLite file (postgresql+asyncpg://… works too)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{tmp}/bench.db"
        r = asyncio.run(measure(url, args.turns))
    request = r["request"]
    assert isinstance(request, dict)
    messages = request["messages"]
    system = messages[0]["content"]
    system = system if isinstance(system, str) else "".join(p["text"] for p in system)
    in_summary = FACT in system
    in_messages = any(FACT in str(m["content"]) for m in messages[1:])
    print(f"turns: {args.turns} ({args.turns * 2} messages); summary calls: {r['summaries']}")
    print(f"final request: {len(messages)} messages; fact in the summary: {in_summary}; "
          f"among the messages: {in_messages}")
    first, middle, last = (float(r[k]) for k in ("first", "middle", "last"))  # type: ignore[arg-type]
    print(f"chatbridge's own time per turn (median of {WINDOW} turns):")
    print(f"  first {WINDOW * 2} messages {first:.2f} ms · ~{r['middle_messages']:,} messages "
          f"{middle:.2f} ms · ~{args.turns * 2:,} messages {last:.2f} ms · "
          f"last/first {last / first:.2f}x")
    if not in_summary or in_messages:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
