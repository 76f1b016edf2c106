"""bots.ops: counting reply events, and /healthz, /readyz, /metrics on a real aiohttp app."""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from bots import ops
from bots.db import create_engine
from bots.ops import Metrics, add_routes
from bots.runtime import Runtime, open_runtime
from bots.settings import load_settings
from core.model import OpenAIClient
from core.service import ChatService, ServiceOptions
from core.store import Store
from core.types import (
    DeltaEvent,
    DuplicateEvent,
    ErrorEvent,
    FinalEvent,
    ReplyEvent,
    StatusEvent,
    Usage,
)


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text exposition (``None``: absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def final(partial: bool = False) -> FinalEvent:
    return FinalEvent("answer", "D1", "qwen-plus", Usage(11, 7), 1500, partial=partial)


def test_observe_counts_outcomes_latency_tokens_and_model_errors() -> None:
    m = Metrics()
    for event in (StatusEvent("thinking…"), DeltaEvent("ans"), final(),
                  final(partial=True), ErrorEvent("unavailable", "down"),
                  ErrorEvent("bad_input", "empty"), DuplicateEvent("ev1")):
        m.observe("slack", event)
    assert value(m, "chatbridge_turns_total", platform="slack", outcome="ok") == 1
    assert value(m, "chatbridge_turns_total", platform="slack", outcome="partial") == 1
    assert value(m, "chatbridge_turns_total", platform="slack", outcome="unavailable") == 1
    assert value(m, "chatbridge_turns_total", platform="slack", outcome="bad_input") == 1
    assert value(m, "chatbridge_turns_total", platform="slack", outcome="duplicate") == 1
    assert value(m, "chatbridge_turn_seconds_count", platform="slack") == 2
    assert value(m, "chatbridge_turn_seconds_sum", platform="slack") == 3.0
    assert value(m, "chatbridge_turn_seconds_bucket", platform="slack", le="2.5") == 2
    assert value(m, "chatbridge_tokens_total", platform="slack", direction="prompt") == 22
    assert value(m, "chatbridge_tokens_total", platform="slack", direction="completion") == 14
    assert value(m, "chatbridge_model_errors_total", kind="unavailable") == 1
    assert value(m, "chatbridge_model_errors_total", kind="partial") == 1
    assert value(m, "chatbridge_model_errors_total", kind="bad_input") is None  # not the model
    assert value(m, "chatbridge_turns_total", platform="telegram", outcome="ok") is None


def test_each_metrics_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()  # a second set of the same names must not clash
    a.observe("slack", final())
    assert value(a, "chatbridge_turns_total", platform="slack", outcome="ok") == 1
    assert value(b, "chatbridge_turns_total", platform="slack", outcome="ok") is None
    assert b"chatbridge_inbox_depth" in b.exposition()


async def test_metered_passes_events_through_and_observes_them() -> None:
    m = Metrics()
    events: list[ReplyEvent] = [StatusEvent("thinking…"), DeltaEvent("hi"), final()]

    async def turn() -> AsyncIterator[ReplyEvent]:
        for event in events:
            yield event

    assert [e async for e in m.metered("telegram", turn())] == events
    assert value(m, "chatbridge_turns_total", platform="telegram", outcome="ok") == 1


async def test_closing_metered_closes_the_turn() -> None:
    closed = asyncio.Event()

    async def turn() -> AsyncIterator[ReplyEvent]:
        try:
            yield StatusEvent("thinking…")
            yield DeltaEvent("never read")
        finally:
            closed.set()  # where the core records an interrupted turn

    wrapped = Metrics().metered("slack", turn())
    assert isinstance(await anext(wrapped), StatusEvent)
    await wrapped.aclose()  # type: ignore[attr-defined]
    assert closed.is_set()


@pytest.fixture
async def runtime(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Runtime]:
    settings = load_settings({"CHATBRIDGE_DATABASE_URL": sqlite_url,
                              "CHATBRIDGE_MODEL_BASE_URL": "http://127.0.0.1:9/v1",
                              "CHATBRIDGE_MODEL_API_KEY": ""}, cwd=tmp_path)
    async with open_runtime(settings) as running:
        yield running


async def client_for(runtime: Runtime) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    add_routes(app, runtime)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_routes_on_a_working_database(runtime: Runtime) -> None:
    client = await client_for(runtime)
    try:
        for path in ("/healthz", "/readyz"):
            resp = await client.get(path)
            assert resp.status == 200 and await resp.json() == {"ok": True}
        resp = await client.get("/metrics")
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        assert sample(await resp.text(), "chatbridge_inbox_depth") == 0
    finally:
        await client.close()


async def test_unreachable_database_is_503_without_secrets(runtime: Runtime) -> None:
    port = closed_port()
    engine = create_engine(f"postgresql+asyncpg://bridge:hunter2@127.0.0.1:{port}/chat")
    store = Store(engine)
    service = ChatService(store=store, options=ServiceOptions(model="m"),
                          model=OpenAIClient(runtime.model_http, base_url="http://127.0.0.1:9/v1",
                                             api_key=""))
    client = await client_for(replace(runtime, store=store, service=service))
    try:
        assert (await client.get("/healthz")).status == 200  # the process is up
        resp = await client.get("/readyz")
        body = await resp.text()
        assert resp.status == 503 and (await resp.json())["ok"] is False
        assert await resp.json() == {"ok": False,
                                     "error": "database unreachable (ConnectionRefusedError)"}
        assert "hunter2" not in body and str(port) not in body and "bridge" not in body
        resp = await client.get("/metrics")  # still served; the depth is unknown
        assert resp.status == 200
        depth = sample(await resp.text(), "chatbridge_inbox_depth")
        assert depth is not None and math.isnan(depth)
    finally:
        await client.close()
        await engine.dispose()


async def test_a_database_that_hangs_is_503_after_the_timeout(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    async def hang() -> None:
        await asyncio.sleep(30)

    monkeypatch.setattr(ops, "DB_TIMEOUT", 0.2)
    monkeypatch.setattr(runtime.store, "ping", hang)
    client = await client_for(runtime)
    try:
        resp = await client.get("/readyz")
        assert resp.status == 503
        assert await resp.json() == {"ok": False,
                                     "error": "database did not answer within 0.2 s"}
    finally:
        await client.close()
