"""Hybrid ranking on both databases: scaled scores, dense leading, full-text adding."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from bots.db import open_store
from core.knowledge.chunking import split_markdown
from core.knowledge.convert import Document
from core.knowledge.embeddings import pack
from core.knowledge.index import KnowledgeIndex
from core.knowledge.search import Searcher
from core.store import Store

POLICY = """# Help

## Sending things back

Changed your mind? Post the parcel back within 30 days and we pay the money back.

## Refund history

The refund rules of the old shop (before 2019): a refund was a voucher, refund requests
went by letter.

## Payment

We accept Visa, Mastercard and Klarna invoices.
"""


class Topics:
    """An embedding "model" that knows what each passage is about (a vector per topic)."""

    model = "topics"
    _TOPICS = (("money back", (1.0, 0.0, 0.0)), ("get a refund", (1.0, 0.0, 0.0)),
               ("refund rules", (0.6, 0.8, 0.0)), ("Klarna", (0.0, 0.0, 1.0)))

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return [next((list(v) for key, v in self._TOPICS if key in t), [0.0, 0.0, 0.1])
                for t in texts]


async def _base(engine: AsyncEngine, embedder: Topics | None) -> tuple[Store, Searcher]:
    store = open_store(engine)
    index = KnowledgeIndex(store)
    kb = await index.ensure_base("help", embed_model=embedder.model if embedder else None)
    doc = Document("/kb/help.md", "Help", POLICY)
    chunks = split_markdown(doc.markdown)
    vectors = None
    if embedder is not None:
        vectors = [pack(v) for v in await embedder.embed([c.text for c in chunks])]
    await index.put_document(kb, doc, chunks, vectors)
    return store, Searcher(store, embedder, min_similarity=0.1)


async def test_a_clear_dense_match_beats_a_full_text_word_match(engine: AsyncEngine) -> None:
    embedder = Topics()
    _, searcher = await _base(engine, embedder)
    question = "how do I get a refund?"
    fts = await searcher.search(["help"], question, mode="fulltext")
    assert fts[0].heading == "Help > Refund history"  # the word, three times
    found = await searcher.search(["help"], question)
    # Dense is sure (cosine 1 against 0.6); full-text only found the word "refund".
    # Reciprocal-rank fusion with equal weights put the word match first (in both lists).
    assert [p.heading for p in found[:2]] == ["Help > Sending things back",
                                              "Help > Refund history"]
    best = found[0]
    assert best.dense_rank == 1 and best.fts_rank is None and 0 < best.score <= 1
    assert found[1].fts_rank == 1 and found[1].dense_rank == 2
    assert found[0].score > found[1].score


async def test_full_text_alone_and_no_embedding_for_a_base_without_vectors(
        engine: AsyncEngine) -> None:
    store, _ = await _base(engine, None)
    embedder = Topics()
    with_model = Searcher(store, embedder)
    for _ in range(2):
        found = await with_model.search(["help"], "klarna invoices")
        assert found[0].heading == "Help > Payment" and found[0].dense_rank is None
        assert found[0].score == 0.3  # full-text's weight: the best of one ranking
    # The base has no vectors of this model: asked once, not embedded again.
    assert len(embedder.calls) == 1


async def test_only_the_bases_asked_are_searched(engine: AsyncEngine) -> None:
    store, searcher = await _base(engine, None)
    index = KnowledgeIndex(store)
    other = await index.ensure_base("staff-handbook")
    doc = Document("/kb/handbook.md", "Handbook", "# Handbook\n\n## Refunds\n\nA refund "
                   "over 500 SEK needs a manager's approval.\n")
    await index.put_document(other, doc, split_markdown(doc.markdown))
    help_only = await searcher.search(["help"], "refund")
    assert help_only and {p.kb for p in help_only} == {"help"}
    handbook = await searcher.search(["staff-handbook"], "refund")
    assert [p.kb for p in handbook] == ["staff-handbook"]
    both = await searcher.search(["help", "staff-handbook"], "refund approval")
    assert both[0].kb == "staff-handbook" and {p.kb for p in both} == {"help", "staff-handbook"}
