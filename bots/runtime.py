"""The entry point's wiring: settings in, a ready ``ChatService`` out.

I/O objects (the database engine, the pooled HTTP client) are created here, once,
and passed down; they are closed when the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import aiohttp
import httpx

from bots.db import create_engine, ensure_schema, open_store
from bots.fdlimit import fit_descriptor_limit
from bots.lifecycle import retention_job
from bots.ops import Metrics
from bots.settings import Settings
from bots.tools import open_registry
from core.inbox import Inbox
from core.knowledge.embeddings import EmbeddingClient
from core.knowledge.index import KnowledgeIndex
from core.knowledge.search import Searcher
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

__all__ = ["Runtime", "build_searcher", "open_runtime", "warn_missing_bases"]

log = logging.getLogger(__name__)

SUMMARY_WAIT = 60.0  # seconds ask/chat wait, at exit, for a summary their last turn started


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


async def warn_missing_bases(settings: Settings, index: KnowledgeIndex) -> list[str]:
    """Log each knowledge base a profile names that has no documents (yet); their names."""
    wanted = {kb: name for name, p in settings.profiles.items() for kb in p.knowledge}
    if not wanted:
        return []
    have = {b.name for b in await index.bases() if b.documents}
    missing = sorted(set(wanted) - have)
    for kb in missing:
        log.warning("profile %r answers from knowledge base %r, which has no documents yet: "
                    "every question gets \"I don't know\" (chatbridge kb add --kb %s PATH|URL)",
                    wanted[kb], kb, kb)
    return missing


def build_searcher(settings: Settings, store: Store, http: httpx.AsyncClient) -> Searcher:
    """Knowledge-base search: full-text, plus dense vectors when a model is configured."""
    embedder = None
    if settings.embedding_model:
        base = settings.embedding_base_url or settings.model_base_url
        if settings.model_api == "dashscope" and not settings.embedding_base_url:
            base = base.replace("/api/v1", "/compatible-mode/v1")  # /embeddings lives there
        embedder = EmbeddingClient(
            http, base_url=base,
            api_key=settings.model_api_key, model=settings.embedding_model,
            dimensions=settings.embedding_dimensions)
    return Searcher(store, embedder)


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
    gated = ImageGate(retrying, vision or Vision(settings.vision, settings.video))
    return FallbackClient(gated, fallbacks=settings.model_fallbacks,
                          breaker=CircuitBreaker(), deadline=settings.turn_seconds)


def build_asr(settings: Settings, http: aiohttp.ClientSession) -> ModelClient:
    """The client that sends recordings to the speech model (OpenAI-compatible
    ``input_audio``, streamed), with the same retries as the chat model."""
    inner = AudioClient(http, base_url=settings.model_base_url,
                        api_key=settings.model_api_key, timeout=settings.model_timeout)
    return RetryingClient(inner, RetryPolicy(budget=settings.retry_budget))


@contextlib.asynccontextmanager
async def open_runtime(settings: Settings, *, bot: bool = False) -> AsyncIterator[Runtime]:
    """Open the database and HTTP pool, and start the local model if asked to.

    ``bot``: a long-running bot, which also runs the retention job (``retention_days``)."""
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
                vision = Vision(settings.vision, settings.video)
                await warn_missing_bases(settings, KnowledgeIndex(store))
                options = ServiceOptions(
                    model=settings.model, profiles=settings.profiles, stream=settings.stream,
                    max_image_side=settings.max_image_side,
                    image_memory_bytes=settings.image_memory_mb * 1024 * 1024,
                    max_video_frames=settings.max_video_frames,
                    max_video_seconds=settings.max_video_seconds,
                    video_file_bytes=int(settings.video_file_mb * 1024 * 1024),
                    model_choices=settings.model_choices,
                    limits=settings.limits, vision=vision, tools=registry,
                    turn_seconds=settings.turn_seconds, secrets=settings.secrets(),
                    asr_model=settings.asr_model,
                    asr_client=build_asr(settings, model_http) if settings.asr_model else None,
                )
                service = ChatService(store=store, model=build_model(settings, model_http, vision),
                                      options=options,
                                      knowledge=build_searcher(settings, store, http))
                inbox = Inbox(store, lease_seconds=settings.lease_seconds,
                              concurrency=settings.concurrency,
                              poll_seconds=settings.inbox_poll)
                retention = (asyncio.get_running_loop().create_task(
                    retention_job(store, settings.profiles), name="retention")
                    if bot else None)
                try:
                    yield Runtime(settings, service, store, http, inbox, model_http)
                finally:
                    if retention is not None:
                        retention.cancel()
                        await asyncio.gather(retention, return_exceptions=True)
                    if not bot:  # ask/chat: a summary a turn started is finished first
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(service.memory.wait(), SUMMARY_WAIT)
                    await service.memory.stop()
                    await inbox.stop(0)
        finally:
            if store is not None:
                store.close()
            await engine.dispose()
