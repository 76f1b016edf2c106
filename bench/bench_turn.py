"""Benchmark: what chatbridge adds to a turn, and whether history size changes it.

Against the loopback model server (a separate process, answering instantly):

(a) overhead: what a full ChatService turn takes beyond its own model HTTP call (the time
    spent inside the model client, measured per turn and subtracted), median over many
    turns in conversations of up to 20 messages, on SQLite and PostgreSQL; the median of a
    bare model call through the same client is printed beside it;
(b) the same per-turn memory work (storing, loading and building the context, recording
    the answer) and the full turn time, with 10, 1,000 and 10,000 messages already stored
    in the conversation.

Run:  .venv/bin/python -m bench.bench_turn [--turns 300] [--postgres-url URL]
Without --postgres-url a throwaway PostgreSQL cluster is started from the installed binaries.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.db import create_engine, open_store, upgrade
from core.model import OpenAIClient
from core.service import ChatService, ServiceOptions
from core.store import Store
from core.store.models import Message
from core.types import Author, ChatRequest, ContextMessage, FinalEvent, ModelCall, ModelChunk
from tests.pg import Cluster

AUTHOR = Author("bench", "Bench")


@contextlib.contextmanager
def model_server(module: str = "tests.fakes.model_server") -> Iterator[str]:
    """A loopback model server (``module``, run with ``--port``) in its own process;
    yields its OpenAI base URL once it answers."""
    from bots.local_model import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", module, "--port", str(port)],
                            stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/compatible-mode/v1"
    try:
        for _ in range(200):
            try:
                httpx.get(f"{base}/models", timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait()


class TimedModel:
    """Wraps the model client and adds up the time spent inside its calls."""

    def __init__(self, inner: OpenAIClient) -> None:
        self.inner = inner
        self.spent = 0.0

    async def stream(self, call: ModelCall, *, stream: bool = True) -> AsyncIterator[ModelChunk]:
        started = time.perf_counter()
        try:
            async for chunk in self.inner.stream(call, stream=stream):
                yield chunk
        finally:
            self.spent += time.perf_counter() - started


async def _drain(service: ChatService, req: ChatRequest) -> None:
    async for event in service.handle(req):
        last = event
    assert isinstance(last, FinalEvent), last


async def _raw(model: OpenAIClient) -> None:
    call = ModelCall("qwen-plus", (ContextMessage("system", "hi"), ContextMessage("user", "hi")))
    async for _ in model.stream(call):
        pass


async def _seed(engine: AsyncEngine, store: Store, scope: str, n: int) -> None:
    start = await store.begin_turn(platform="bench", scope=scope, event_id=f"seed-{scope}",
                                   profile="default", author=AUTHOR, text="seed", token_count=5)
    assert start is not None
    rows = [
        {"conversation_id": start.conversation_id, "role": "user" if i % 2 else "assistant",
         "text": f"stored message {i} " * 8, "token_count": 40, "image_count": 0,
         "status": "ok"}
        for i in range(n - 1)
    ]
    async with engine.begin() as conn:
        for i in range(0, len(rows), 1000):
            await conn.execute(insert(Message), rows[i:i + 1000])


async def measure(url: str, base_url: str, turns: int) -> dict[str, float]:
    """Median milliseconds: raw call, turn, and turns at 10/1,000/10,000 stored messages."""
    engine = create_engine(url)
    await upgrade(engine)
    store = open_store(engine)
    results: dict[str, float] = {}
    async with aiohttp.ClientSession() as http:
        model = OpenAIClient(http, base_url=base_url, api_key=None)
        timed = TimedModel(model)
        service = ChatService(store=store, model=timed,
                              options=ServiceOptions(model="qwen-plus"))
        n = 0

        def req(scope: str) -> ChatRequest:
            nonlocal n
            n += 1
            return ChatRequest(platform="bench", scope=scope, author=AUTHOR,
                               text=f"question {n}", event_id=f"ev-{n}")

        async def turn(scope: str) -> tuple[float, float]:
            """(whole turn, chatbridge's own part) in seconds."""
            timed.spent = 0.0
            t = time.perf_counter()
            await _drain(service, req(scope))
            whole = time.perf_counter() - t
            return whole, whole - timed.spent

        for i in range(20):  # warm-up: connections, tokenizer, statement caches
            await _raw(model)
            await turn(f"warm-{i}")
        raw: list[float] = []
        own: list[float] = []
        for i in range(turns):
            t = time.perf_counter()
            await _raw(model)
            raw.append(time.perf_counter() - t)
            own.append((await turn(f"overhead-{i // 10}"))[1])  # 10 turns a conversation
        results["raw"] = statistics.median(raw) * 1000
        results["own"] = statistics.median(own) * 1000
        sizes = (10, 1_000, 10_000)
        for size in sizes:
            await _seed(engine, store, f"history-{size}", size)
        samples: dict[int, list[tuple[float, float]]] = {size: [] for size in sizes}
        for _ in range(max(turns // 3, 30)):  # round-robin, so drift hits all sizes alike
            for size in sizes:
                samples[size].append(await turn(f"history-{size}"))
        for size in sizes:
            results[f"turn{size}"] = statistics.median(s[0] for s in samples[size]) * 1000
            results[f"own{size}"] = statistics.median(s[1] for s in samples[size]) * 1000
    await engine.dispose()
    return results


def main() -> None:
    """Run both measurements and print a table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--postgres-url", default=os.environ.get("CHATBRIDGE_BENCH_POSTGRES_URL"))
    args = parser.parse_args()
    cluster = None
    pg_url = args.postgres_url
    if not pg_url:
        cluster = Cluster()
        pg_url = cluster.url
    try:
        with model_server() as base, tempfile.TemporaryDirectory() as tmp:
            rows = {
                "SQLite": asyncio.run(measure(f"sqlite+aiosqlite:///{tmp}/bench.db", base,
                                              args.turns)),
                "PostgreSQL": asyncio.run(measure(pg_url, base, args.turns)),
            }
    finally:
        if cluster:
            cluster.stop()
    print(f"turns per measurement: {args.turns} (history sizes: {max(args.turns // 3, 30)})")
    print("(a) chatbridge's own time per turn, beyond the model HTTP call (median)")
    print(f"{'database':<11} {'bare model call':>16} {'overhead':>9}")
    for name, r in rows.items():
        print(f"{name:<11} {r['raw']:>14.2f}ms {r['own']:>7.2f}ms")
    print("(b) by messages stored: chatbridge's own time / whole turn (median)")
    print(f"{'database':<11} {'10':>17} {'1,000':>17} {'10,000':>17} {'own 10k/10':>11}")
    for name, r in rows.items():
        cells = " ".join(f"{r[f'own{k}']:>6.2f} / {r[f'turn{k}']:>5.2f}ms" for k in
                         (10, 1_000, 10_000))
        print(f"{name:<11} {cells} {r['own10000'] / r['own10']:>10.2f}x")


if __name__ == "__main__":
    main()
