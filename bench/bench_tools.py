"""Benchmark: what chatbridge adds per tool round, and whether history size changes a
3-round turn.

Against a loopback model server in its own process (``bench.tool_model``: instant answers,
N rounds of one ``noop`` tool call when the question says ``rounds=N``):

(a) per round: chatbridge's own time in a turn (the whole turn minus the time inside model
    calls and inside the tool) for turns of 0 and 3 rounds, interleaved; the difference
    divided by 3 is what one round adds (storing its calls and results, building the next
    call, the loop), on SQLite and PostgreSQL;
(b) a 3-round turn with 10 and 10,000 messages already stored in the conversation.

Run:  .venv/bin/python -m bench.bench_tools [--turns 200] [--postgres-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from typing import Any

import aiohttp

from bench.bench_turn import AUTHOR, TimedModel, _seed, model_server
from bots.db import create_engine, open_store, upgrade
from core.model import OpenAIClient
from core.profiles import Profile
from core.service import ChatService, ServiceOptions
from core.tools import Registry, Tool, ToolContext
from core.types import ChatRequest, FinalEvent
from tests.pg import Cluster


class NoopTool:
    """A tool that answers at once and adds up the time spent inside it."""

    def __init__(self) -> None:
        self.spent = 0.0
        self.calls = 0

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> str:
        started = time.perf_counter()
        self.calls += 1
        result = "ok"
        self.spent += time.perf_counter() - started
        return result


async def measure(url: str, base_url: str, turns: int) -> dict[str, float]:
    """Median milliseconds of chatbridge's own time: 0 and 3 rounds; 3 rounds by history."""
    engine = create_engine(url)
    await upgrade(engine)
    store = open_store(engine)
    noop = NoopTool()
    results: dict[str, float] = {}
    async with aiohttp.ClientSession() as http:
        timed = TimedModel(OpenAIClient(http, base_url=base_url, api_key=None))
        profile = Profile(tools=("noop",))
        service = ChatService(store=store, model=timed, options=ServiceOptions(
            model="qwen-plus", profiles={"default": profile},
            tools=Registry([Tool("noop", "Does nothing.", noop.run)])))
        n = 0

        async def turn(scope: str, rounds: int) -> tuple[float, float]:
            """(whole turn, chatbridge's own part) in seconds."""
            nonlocal n
            n += 1
            timed.spent, noop.spent = 0.0, 0.0
            request = ChatRequest(platform="bench", scope=scope, author=AUTHOR,
                                  text=f"question {n} rounds={rounds}", event_id=f"ev-{n}")
            t = time.perf_counter()
            last = None
            async for event in service.handle(request):
                last = event
            whole = time.perf_counter() - t
            assert isinstance(last, FinalEvent), last
            return whole, whole - timed.spent - noop.spent

        for i in range(20):
            await turn(f"warm-{i}", 3)
            await turn(f"warm-{i}", 0)
        zero: list[float] = []
        three: list[float] = []
        for i in range(turns):
            zero.append((await turn(f"plain-{i // 10}", 0))[1])
            three.append((await turn(f"tools-{i // 10}", 3))[1])
        results["own0"] = statistics.median(zero) * 1000
        results["own3"] = statistics.median(three) * 1000
        results["per_round"] = (results["own3"] - results["own0"]) / 3
        sizes = (10, 10_000)
        for size in sizes:
            await _seed(engine, store, f"history-{size}", size)
        samples: dict[int, list[tuple[float, float]]] = {size: [] for size in sizes}
        for _ in range(max(turns // 3, 30)):
            for size in sizes:
                samples[size].append(await turn(f"history-{size}", 3))
        for size in sizes:
            results[f"turn{size}"] = statistics.median(s[0] for s in samples[size]) * 1000
            results[f"own{size}"] = statistics.median(s[1] for s in samples[size]) * 1000
    store.close()
    await engine.dispose()
    return results


def main() -> None:
    """Run both measurements and print a table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--postgres-url", default=os.environ.get("CHATBRIDGE_BENCH_POSTGRES_URL"))
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args()
    cluster = None
    pg_url = args.postgres_url
    if not pg_url and not args.sqlite_only:
        cluster = Cluster()
        pg_url = cluster.url
    try:
        with model_server("bench.tool_model") as base, tempfile.TemporaryDirectory() as tmp:
            rows = {"SQLite": asyncio.run(measure(f"sqlite+aiosqlite:///{tmp}/bench.db", base,
                                                  args.turns))}
            if pg_url:
                rows["PostgreSQL"] = asyncio.run(measure(pg_url, base, args.turns))
    finally:
        if cluster:
            cluster.stop()
    print(f"turns per measurement: {args.turns}")
    print("(a) chatbridge's own time per turn beyond model and tool calls (median)")
    print(f"{'database':<11} {'0 rounds':>9} {'3 rounds':>9} {'per round':>10}")
    for name, r in rows.items():
        print(f"{name:<11} {r['own0']:>7.2f}ms {r['own3']:>7.2f}ms {r['per_round']:>8.2f}ms")
    print("(b) a 3-round turn by messages stored: own / whole turn (median)")
    print(f"{'database':<11} {'10':>17} {'10,000':>17} {'whole 10k/10':>13}")
    for name, r in rows.items():
        cells = " ".join(f"{r[f'own{k}']:>6.2f} / {r[f'turn{k}']:>5.2f}ms" for k in (10, 10_000))
        print(f"{name:<11} {cells} {r['turn10000'] / r['turn10']:>12.2f}x")


if __name__ == "__main__":
    main()
