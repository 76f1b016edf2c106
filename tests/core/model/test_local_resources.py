"""Running out of file descriptors is this process's fault, not the model's.

A child process with a real RLIMIT_NOFILE exhausts its descriptors, then makes model
calls through the real stack (FallbackClient → RetryingClient → OpenAIClient → aiohttp)
against the loopback model server: they fail with ``LocalResourcesExhausted``, the
model's circuit breaker stays closed, no fallback model is tried, and once descriptors are
free again the very next call is answered.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp

from bots.fdlimit import descriptors_needed
from core.errors import LocalResourcesExhausted, ModelUnavailable
from core.model.faults import local_resource_fault
from tests.fakes.model_server import FakeModelServer, Reply

ROOT = Path(__file__).resolve().parents[3]

CHILD = textwrap.dedent("""
    import asyncio, json, resource, socket, sys
    import aiohttp
    from core.model import (CircuitBreaker, FallbackClient, OpenAIClient, RetryingClient,
                            RetryPolicy)
    from core.types import ContextMessage, ModelCall, Sampling, TextChunk

    async def main(base):
        connector = aiohttp.TCPConnector(force_close=True)  # a new socket for every call
        async with aiohttp.ClientSession(connector=connector) as http:
            inner = OpenAIClient(http, base_url=base, api_key=None, timeout=5)
            breaker = CircuitBreaker(failures=5, cooldown=300)
            model = FallbackClient(RetryingClient(inner, RetryPolicy(budget=0.5)),
                                   fallbacks=("qwen-flash",), breaker=breaker)
            call = ModelCall("qwen-plus", (ContextMessage("user", "hi"),), Sampling())

            async def one():
                try:
                    return "".join([c.text async for c in model.stream(call)
                                    if isinstance(c, TextChunk)])
                except Exception as err:
                    return type(err).__name__ + ": " + str(err)

            first = await one()  # warms up imports and the connection machinery
            await asyncio.sleep(0.2)  # its connection's socket is closed on a later loop turn
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
            held = []
            try:
                while True:
                    held.append(socket.socket())
            except OSError:
                pass
            starved = await asyncio.gather(*[one() for _ in range(20)])
            for s in held:
                s.close()
            after = [await one() for _ in range(3)]
            print(json.dumps({"first": first, "starved": starved, "after": after,
                              "open": [breaker.is_open(m) for m in ("qwen-plus", "qwen-flash")]}))

    asyncio.run(main(sys.argv[1]))
""")


def test_exhausted_descriptors_do_not_open_the_breaker(fake_model: FakeModelServer) -> None:
    fake_model.default = Reply(text="hello")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBRIDGE_")}
    done = subprocess.run([sys.executable, "-c", CHILD, fake_model.openai_base], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["first"] == "hello"
    assert all(r.startswith("LocalResourcesExhausted") and "EMFILE" in r
               for r in result["starved"]), result["starved"]
    assert result["after"] == ["hello"] * 3
    assert result["open"] == [False, False]
    asked = [r.json["model"] for r in fake_model.requests]
    assert "qwen-flash" not in asked  # no fallback for a local shortage


async def test_refused_connection_is_still_the_model_being_down() -> None:
    async with aiohttp.ClientSession() as http:
        try:
            await http.get("http://127.0.0.1:9/")
        except aiohttp.ClientError as err:
            assert local_resource_fault(err) is None
        else:
            raise AssertionError("nothing listens on port 9")
    assert issubclass(LocalResourcesExhausted, ModelUnavailable)  # still retried


def _run_ask(tmp_path: Path, fake: FakeModelServer, soft: int, hard: int,
             concurrency: int) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATBRIDGE_", "DASHSCOPE_"))}
    env.update({
        "CHATBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cb.db",
        "CHATBRIDGE_MODEL_BASE_URL": fake.openai_base, "CHATBRIDGE_MODEL_API_KEY": "",
        "CHATBRIDGE_CONCURRENCY": str(concurrency), "CHATBRIDGE_LOG_LEVEL": "INFO",
    })
    return subprocess.run([sys.executable, "-m", "bots.cli", "ask", "hi"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60, check=False,
                          preexec_fn=limit)


def test_startup_raises_the_soft_limit(tmp_path: Path, fake_model: FakeModelServer) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    needed = descriptors_needed(1000)
    if hard != resource.RLIM_INFINITY and hard < needed:
        hard_ok = False
    else:
        hard_ok = True
    assert hard_ok, "this test needs a hard RLIMIT_NOFILE of a few thousand"
    fake_model.enqueue(Reply(text="fine"))
    done = _run_ask(tmp_path, fake_model, 256, hard, 1000)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "fine"
    assert "raised the open-file limit from 256" in done.stderr


def test_startup_names_what_to_set(tmp_path: Path, fake_model: FakeModelServer) -> None:
    done = _run_ask(tmp_path, fake_model, 256, 512, 1000)
    assert done.returncode == 2
    line = done.stderr.strip().splitlines()[-1]
    assert "CHATBRIDGE_CONCURRENCY=1000" in line and "CHATBRIDGE_CONCURRENCY to 192" in line
    assert "ulimit -n" in line
    assert fake_model.requests == []
