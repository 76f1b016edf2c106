"""Benchmark: the model client's own CPU per streamed call (the client, not the model).

The loopback model server (``tests.fakes.model_server``, its own process) streams its
default answer at once; ``OpenAIClient`` over the runtime's kind of session
(``bots.runtime.model_session``) makes ``--calls`` streamed calls, one at a time and 32
in flight, and this process's CPU time (user + system) is divided by the calls. Medians of
``--repeats``. A replica makes one such call per turn.

Run:  .venv/bin/python -m bench.bench_model_client [--calls 640] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from bots.local_model import free_port
from core.model import OpenAIClient
from core.types import ContextMessage, ModelCall

ROOT = Path(__file__).resolve().parents[1]


async def measure(base: str, calls: int, repeats: int) -> dict[int, float]:
    """Median CPU milliseconds per streamed call, by calls in flight."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:
        client = OpenAIClient(session, base_url=base, api_key=None)
        call = ModelCall("qwen-plus", (ContextMessage("user", "hello there"),))

        async def one() -> None:
            async for _ in client.stream(call):
                pass

        for _ in range(50):  # warm-up: connections, imports
            await one()
        results: dict[int, float] = {}
        for in_flight in (1, 32):
            gate = asyncio.Semaphore(in_flight)

            async def gated(gate: asyncio.Semaphore = gate) -> None:
                async with gate:
                    await one()

            runs = []
            for _ in range(repeats):
                began = time.process_time()
                await asyncio.gather(*(gated() for _ in range(calls)))
                runs.append((time.process_time() - began) / calls * 1000)
            results[in_flight] = statistics.median(runs)
        return results


async def wait_up(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("the fake model server did not come up")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the medians."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_model_client")
    parser.add_argument("--calls", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = str(ROOT)
    server = subprocess.Popen([sys.executable, "-m", "tests.fakes.model_server", "--port",
                               str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        asyncio.run(wait_up(f"http://127.0.0.1:{port}/_fake/stats"))
        results = asyncio.run(measure(f"http://127.0.0.1:{port}/compatible-mode/v1",
                                      args.calls, args.repeats))
    finally:
        server.terminate()
        server.wait()
    for in_flight, ms in results.items():
        print(f"model client CPU per streamed call, {in_flight:>2} in flight: {ms:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
