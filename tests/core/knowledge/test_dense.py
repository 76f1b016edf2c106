"""Dense vectors from the loopback /embeddings, fused with full-text; faults fall back."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.db import open_store
from core.errors import ModelError
from core.knowledge.chunking import split_markdown
from core.knowledge.convert import Document
from core.knowledge.embeddings import EmbeddingClient, pack
from core.knowledge.index import KnowledgeIndex
from core.knowledge.search import Searcher
from tests.core.knowledge.test_index import FAQ
from tests.fakes.model_server import FakeModelServer


async def test_batches_of_ten_in_order(fake_model: FakeModelServer) -> None:
    async with httpx.AsyncClient() as http:
        client = EmbeddingClient(http, base_url=fake_model.openai_base, api_key="sk-x",
                                 model="text-embedding-v4", dimensions=128)
        vectors = await client.embed([f"text {i}" for i in range(23)])
    calls = [r for r in fake_model.requests if r.path.endswith("/embeddings")]
    assert [len(r.json["input"]) for r in calls] == [10, 10, 3]
    assert all(r.json["dimensions"] == 128 and r.json["encoding_format"] == "float"
               for r in calls)
    assert calls[0].headers["authorization"] == "Bearer sk-x"
    assert len(vectors) == 23 and len(vectors[0]) == 128
    assert vectors[22] == (await _one(fake_model, "text 22"))


async def _one(fake: FakeModelServer, text: str) -> list[float]:
    async with httpx.AsyncClient() as http:
        client = EmbeddingClient(http, base_url=fake.openai_base, api_key=None,
                                 model="text-embedding-v4", dimensions=128)
        return (await client.embed([text]))[0]


async def test_errors_name_the_endpoint_without_the_key(fake_model: FakeModelServer) -> None:
    fake_model.embedding_status = 401
    async with httpx.AsyncClient() as http:
        client = EmbeddingClient(http, base_url=fake_model.openai_base, api_key="sk-secret",
                                 model="text-embedding-v4")
        with pytest.raises(ModelError) as caught:
            await client.embed(["hello"])
    assert "/embeddings" in caught.value.detail and "sk-secret" not in caught.value.detail


async def test_hybrid_search_and_full_text_when_embedding_fails(
        engine: AsyncEngine, fake_model: FakeModelServer) -> None:
    store = open_store(engine)
    index = KnowledgeIndex(store)
    async with httpx.AsyncClient() as http:
        embedder = EmbeddingClient(http, base_url=fake_model.openai_base, api_key=None,
                                   model="text-embedding-v4")
        kb = await index.ensure_base("shop-faq", embed_model=embedder.model)
        doc = Document("/kb/faq.md", "Shop FAQ", FAQ)
        chunks = split_markdown(doc.markdown)
        vectors = await embedder.embed([f"{c.heading}\n{c.text}" for c in chunks])
        await index.put_document(kb, doc, chunks, [pack(v) for v in vectors])
        searcher = Searcher(store, embedder, min_similarity=0.1)

        found = await searcher.search(["shop-faq"], "return an item for a refund")
        assert found[0].heading.endswith("Returns")
        assert found[0].fts_rank == 1 and found[0].dense_rank == 1
        dense = await searcher.search(["shop-faq"], "refunds returning", mode="dense")
        assert dense[0].heading.endswith("Returns") and dense[0].fts_rank is None

        fake_model.embedding_status = 503
        fallback = await searcher.search(["shop-faq"], "return an item for a refund")
        assert fallback[0].heading.endswith("Returns")
        assert fallback[0].dense_rank is None  # full-text alone still answers
        fake_model.embedding_status = 0

        # A base embedded with another model is searched by full-text only.
        other = Searcher(store, EmbeddingClient(http, base_url=fake_model.openai_base,
                                                api_key=None, model="another-model"))
        assert (await other.search(["shop-faq"], "refund"))[0].dense_rank is None
