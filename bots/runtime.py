"""The entry point's wiring: settings in, a ready ``ChatService`` out.

I/O objects (the database engine, the pooled HTTP client) are created here, once,
and passed down; they are closed when the block ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import aiohttp
import httpx

from bots.db import create_engine, ensure_schema, open_store
from bots.fdlimit import fit_descriptor_limit
from bots.ops import Metrics
from bots.settings import Settings
from bots.tools import open_registry
from core.inbox import Inbox
from core.media.transcribe import AudioClient
from core.model import (
    CircuitBreaker,
    DashScopeClient,
    FallbackClient,
    ModelClient,
    OpenAIClient,
    ResponsesClient,
    RetryingClient,
    RetryPolicy,
)
from core.model.http import HTTPModelClient
from core.model.images import ImageGate
from core.service import ChatService, ServiceOptions
from core.store import Store
from core.vision import Vision

__all__ = ["Runtime", "open_runtime"]


@dataclass(frozen=True)
class Runtime:
    """What a running bot holds."""

    settings: Settings
    service: ChatService
    store: Store
    http: httpx.AsyncClient  # platform downloads (Slack files)
    inbox: Inbox
    model_http: aiohttp.ClientSession  # the model client's pool
    metrics: Metrics = field(default_factory=Metrics)


def model_session(settings: Settings) -> aiohttp.ClientSession:
    """The model client's connection pool: every turn in flight holds one connection.

    ``trust_env``: HTTP(S)_PROXY and NO_PROXY apply to the model endpoint, as they did
    when the model client was httpx.
    """
    size = max(100, settings.concurrency + 20)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=size, limit_per_host=0),
                                 trust_env=True)


def build_model(settings: Settings, http: aiohttp.ClientSession,
                vision: Vision | None = None) -> ModelClient:
    """The model client the settings ask for: retries, images only for models that take
    them, fallbacks, breaker, deadline."""
    clients: dict[str, type[HTTPModelClient]] = {
        "dashscope": DashScopeClient, "responses": ResponsesClient}
    cls = clients.get(settings.model_api, OpenAIClient)
    inner = cls(http, base_url=settings.model_base_url, api_key=settings.model_api_key,
                timeout=settings.model_timeout)
    retrying = RetryingClient(inner, RetryPolicy(budget=settings.retry_budget))
    gated = ImageGate(retrying, vision or Vision(settings.vision))
    return FallbackClient(gated, fallbacks=settings.model_fallbacks,
                          breaker=CircuitBreaker(), deadline=settings.turn_seconds)


def build_asr(settings: Settings, http: aiohttp.ClientSession) -> ModelClient:
    """The client that sends recordings to the speech model (OpenAI-compatible
    ``input_audio``, streamed), with the same retries as the chat model."""
    inner = AudioClient(http, base_url=settings.model_base_url,
                        api_key=settings.model_api_key, timeout=settings.model_timeout)
    return RetryingClient(inner, RetryPolicy(budget=settings.retry_budget))


@contextlib.asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """Open the database and HTTP pool, and start the local model if asked to."""
    fit_descriptor_limit(settings.concurrency)
    with contextlib.ExitStack() as stack:
        if settings.local_model:
            from bots.local_model import local_server

            settings = replace(settings, model_base_url=stack.enter_context(local_server()))
        engine = create_engine(settings.database_url)
        store: Store | None = None
        try:
            await ensure_schema(engine)
            # Downloads of the platforms' files (the model has its own pool).
            size = max(100, settings.concurrency + 20)
            limits = httpx.Limits(max_connections=size, max_keepalive_connections=20)
            async with (httpx.AsyncClient(limits=limits) as http,
                        model_session(settings) as model_http,
                        open_registry(settings) as registry):
                store = open_store(engine)
                vision = Vision(settings.vision)
                options = ServiceOptions(
                    model=settings.model, profiles=settings.profiles, stream=settings.stream,
                    max_image_side=settings.max_image_side,
                    image_memory_bytes=settings.image_memory_mb * 1024 * 1024,
                    model_choices=settings.model_choices,
                    limits=settings.limits, vision=vision, tools=registry,
                    turn_seconds=settings.turn_seconds, secrets=settings.secrets(),
                    asr_model=settings.asr_model,
                    asr_client=build_asr(settings, model_http) if settings.asr_model else None,
                )
                service = ChatService(store=store, model=build_model(settings, model_http, vision),
                                      options=options)
                inbox = Inbox(store, lease_seconds=settings.lease_seconds,
                              concurrency=settings.concurrency,
                              poll_seconds=settings.inbox_poll)
                try:
                    yield Runtime(settings, service, store, http, inbox, model_http)
                finally:
                    await inbox.stop(0)
        finally:
            if store is not None:
                store.close()
            await engine.dispose()
