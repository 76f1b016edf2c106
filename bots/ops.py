"""Operations: ``GET /healthz``, ``GET /readyz`` and ``GET /metrics`` for the HTTP modes.

``Metrics`` owns a Prometheus registry of its own (never the process-global one), so
several apps in one process, and tests, never clash. The adapters pass the core's reply
events through ``Metrics.metered``; the core knows nothing of Prometheus. The inbox depth
is read from the database at scrape time, so it counts the events of every replica.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from core.errors import StoreError
from core.types import DuplicateEvent, ErrorEvent, FinalEvent, ReplyEvent

if TYPE_CHECKING:
    from bots.runtime import Runtime

__all__ = [
    "HEALTH_PATH", "METRICS_PATH", "MODEL_ERROR_KINDS", "READY_PATH", "Metrics", "add_routes",
]

log = logging.getLogger(__name__)
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"
DB_TIMEOUT = 2.0  # seconds /readyz (and the inbox depth) wait for the database
# ErrorEvent kinds that mean the model gave no answer; the others are the person's input,
# a usage limit, the database or a bug. A partial answer (stream cut off) counts too.
MODEL_ERROR_KINDS = frozenset({
    "model", "auth", "bad_request", "refused", "partial", "rate_limited", "unavailable",
    "empty", "protocol",
})
TURN_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    """The bot's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.turns = Counter(
            "chatbridge_turns", "Turns by outcome: ok, partial, an error kind, duplicate.",
            ["platform", "outcome"], registry=reg)
        self.turn_seconds = Histogram(
            "chatbridge_turn_seconds", "Seconds from the model call to the final answer.",
            ["platform"], buckets=TURN_BUCKETS, registry=reg)
        self.model_errors = Counter(
            "chatbridge_model_errors", "Turns the model did not (fully) answer, by kind.",
            ["kind"], registry=reg)
        self.tokens = Counter(
            "chatbridge_tokens", "Tokens used, by direction (prompt or completion).",
            ["platform", "direction"], registry=reg)
        self.inbox_depth = Gauge(
            "chatbridge_inbox_depth",
            "Inbound events received but not finished (all replicas; NaN: database down).",
            registry=reg)

    def observe(self, platform: str, event: ReplyEvent) -> None:
        """Count one reply event (status and delta events count nothing)."""
        if isinstance(event, FinalEvent):
            self.turns.labels(platform, "partial" if event.partial else "ok").inc()
            self.turn_seconds.labels(platform).observe(event.latency_ms / 1000)
            self.tokens.labels(platform, "prompt").inc(event.usage.prompt_tokens)
            self.tokens.labels(platform, "completion").inc(event.usage.completion_tokens)
            if event.partial:
                self.model_errors.labels("partial").inc()
        elif isinstance(event, ErrorEvent):
            self.turns.labels(platform, event.kind).inc()
            if event.kind in MODEL_ERROR_KINDS:
                self.model_errors.labels(event.kind).inc()
        elif isinstance(event, DuplicateEvent):
            self.turns.labels(platform, "duplicate").inc()

    async def metered(self, platform: str,
                      events: AsyncIterator[ReplyEvent]) -> AsyncIterator[ReplyEvent]:
        """Pass ``events`` through unchanged, observing each one."""
        try:
            async for event in events:
                self.observe(platform, event)
                yield event
        finally:
            # Closing the wrapper closes the turn too, as closing the turn itself would.
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)


def _why(err: BaseException) -> str:
    # Only the failing exception's type: its text may hold the database URL or password.
    cause = err.__cause__ if isinstance(err, StoreError) and err.__cause__ else err
    return type(cause).__name__


def add_routes(app: web.Application, runtime: Runtime) -> None:
    """Serve ``/healthz``, ``/readyz`` and ``/metrics`` for ``runtime`` on ``app``."""

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def ready(_: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(runtime.store.ping(), DB_TIMEOUT)
        except TimeoutError:
            reason = f"database did not answer within {DB_TIMEOUT:g} s"
        except Exception as err:
            reason = f"database unreachable ({_why(err)})"
        else:
            return web.json_response({"ok": True})
        log.warning("not ready: %s", reason)
        return web.json_response({"ok": False, "error": reason}, status=503)

    async def metrics(_: web.Request) -> web.Response:
        try:
            depth = float(await asyncio.wait_for(runtime.service.pending_events(), DB_TIMEOUT))
        except Exception as err:
            log.warning("inbox depth unknown: %s", _why(err))
            depth = math.nan
        runtime.metrics.inbox_depth.set(depth)
        return web.Response(body=runtime.metrics.exposition(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get(HEALTH_PATH, health)
    app.router.add_get(READY_PATH, ready)
    app.router.add_get(METRICS_PATH, metrics)
