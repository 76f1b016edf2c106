"""The entry point's wiring: settings in, a ready ``ChatService`` out.

I/O objects (the database engine, the pooled HTTP client) are created here, once,
and passed down; they are closed when the block ends.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import httpx

from bots.db import create_engine, ensure_schema, open_store
from bots.ops import Metrics
from bots.settings import Settings
from core.inbox import Inbox
from core.knowledge.embeddings import EmbeddingClient
from core.knowledge.index import KnowledgeIndex
from core.knowledge.search import Searcher
from core.model import (
    CircuitBreaker,
    DashScopeClient,
    FallbackClient,
    ModelClient,
    OpenAIClient,
    RetryingClient,
    RetryPolicy,
)
from core.service import ChatService, ServiceOptions
from core.store import Store

__all__ = ["Runtime", "build_searcher", "open_runtime", "warn_missing_bases"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """What a running bot holds."""

    settings: Settings
    service: ChatService
    store: Store
    http: httpx.AsyncClient
    inbox: Inbox
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


def build_model(settings: Settings, http: httpx.AsyncClient) -> ModelClient:
    """The model client the settings ask for: retries, fallbacks, breaker, deadline."""
    cls = DashScopeClient if settings.model_api == "dashscope" else OpenAIClient
    inner = cls(http, base_url=settings.model_base_url, api_key=settings.model_api_key,
                timeout=settings.model_timeout)
    retrying = RetryingClient(inner, RetryPolicy(budget=settings.retry_budget))
    return FallbackClient(retrying, fallbacks=settings.model_fallbacks,
                          breaker=CircuitBreaker(), deadline=settings.turn_seconds)


@contextlib.asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """Open the database and HTTP pool, and start the local model if asked to."""
    with contextlib.ExitStack() as stack:
        if settings.local_model:
            from bots.local_model import local_server

            settings = replace(settings, model_base_url=stack.enter_context(local_server()))
        engine = create_engine(settings.database_url)
        store: Store | None = None
        try:
            await ensure_schema(engine)
            # Every turn in flight holds one model connection: the pool fits them all.
            size = max(100, settings.concurrency + 20)
            limits = httpx.Limits(max_connections=size, max_keepalive_connections=20)
            async with httpx.AsyncClient(limits=limits) as http:
                store = open_store(engine)
                await warn_missing_bases(settings, KnowledgeIndex(store))
                options = ServiceOptions(
                    model=settings.model, profiles=settings.profiles, stream=settings.stream,
                    max_image_side=settings.max_image_side,
                    model_choices=settings.model_choices,
                    limits=settings.limits,
                )
                service = ChatService(store=store, model=build_model(settings, http),
                                      options=options,
                                      knowledge=build_searcher(settings, store, http))
                inbox = Inbox(store, lease_seconds=settings.lease_seconds,
                              concurrency=settings.concurrency,
                              poll_seconds=settings.inbox_poll)
                try:
                    yield Runtime(settings, service, store, http, inbox)
                finally:
                    await inbox.stop(0)
        finally:
            if store is not None:
                store.close()
            await engine.dispose()
