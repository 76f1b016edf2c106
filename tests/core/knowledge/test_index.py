"""Knowledge bases in SQL on SQLite and a real PostgreSQL: index, re-index, search, remove."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.db import open_store
from core.knowledge.chunking import split_markdown
from core.knowledge.convert import Document
from core.knowledge.index import KnowledgeIndex
from core.knowledge.search import Searcher

FAQ = """# Shop FAQ

## Returns

You can return any item within 30 days of delivery for a full refund.
Items must be unused and in their original packaging.

## Shipping

We ship to Sweden, Norway and Finland. Standard shipping takes 3-5 working days;
express shipping arrives the next working day.

## Payment

We accept Visa, Mastercard and Klarna invoices.
"""


def doc(source: str = "/kb/faq.md", body: str = FAQ) -> Document:
    return Document(source, "Shop FAQ", body)


async def index_faq(engine: AsyncEngine) -> tuple[KnowledgeIndex, Searcher]:
    store = open_store(engine)
    index = KnowledgeIndex(store)
    kb = await index.ensure_base("shop-faq")
    document = doc()
    await index.put_document(kb, document, split_markdown(document.markdown))
    return index, Searcher(store)


async def test_fulltext_finds_the_right_section(engine: AsyncEngine) -> None:
    _, searcher = await index_faq(engine)
    found = await searcher.search(["shop-faq"], "How many days do I have to return an item?")
    assert found and found[0].heading == "Shop FAQ > Returns"
    assert found[0].source == "/kb/faq.md" and found[0].title == "Shop FAQ"
    assert found[0].fts_rank == 1 and found[0].dense_rank is None
    ship = await searcher.search(["shop-faq"], "do you deliver to norway?")
    assert ship[0].heading == "Shop FAQ > Shipping"
    assert await searcher.search(["shop-faq"], "what is the meaning of life") == []
    assert await searcher.search(["shop-faq"], "is it?") == []  # only stop words
    assert await searcher.search(["other"], "refund") == []


async def test_reindex_replaces_chunks_and_remove_empties_the_index(engine: AsyncEngine) -> None:
    index, searcher = await index_faq(engine)
    kb = await index.ensure_base("shop-faq")
    assert await index.unchanged(kb, [doc()]) == {"/kb/faq.md"}
    changed = doc(body=FAQ.replace("Klarna invoices", "Swish payments"))
    assert await index.unchanged(kb, [changed]) == set()
    await index.put_document(kb, changed, split_markdown(changed.markdown))
    assert await searcher.search(["shop-faq"], "klarna") == []
    assert (await searcher.search(["shop-faq"], "swish"))[0].heading.endswith("Payment")
    [info] = await index.bases()
    assert (info.name, info.documents, info.chunks) == ("shop-faq", 1, 3)
    assert await index.remove_sources("shop-faq", ["/kb/faq.md"]) == 1
    assert await searcher.search(["shop-faq"], "swish") == []
    assert await index.remove("shop-faq") is True
    assert await index.remove("shop-faq") is False
    assert await index.bases() == []
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM kb_chunks"))).scalar() == 0
        if engine.dialect.name == "sqlite":  # the FTS index lost the rows too
            rows = await conn.execute(text(
                "SELECT count(*) FROM kb_chunks_fts WHERE kb_chunks_fts MATCH 'refund'"))
            assert rows.scalar() == 0


async def test_words_in_too_many_passages_are_left_out(
        engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.knowledge.search as search

    index, searcher = await index_faq(engine)
    await index.analyze()  # PostgreSQL estimates how common a word is from its statistics
    question = "working days visa"
    every = {p.heading for p in await searcher.search(["shop-faq"], question)}
    assert every == {"Shop FAQ > Returns", "Shop FAQ > Shipping", "Shop FAQ > Payment"}
    monkeypatch.setattr(search, "TERM_CAP", 1)  # "days" is in two passages: too common
    rare = {p.heading for p in await searcher.search(["shop-faq"], question)}
    assert rare == {"Shop FAQ > Shipping", "Shop FAQ > Payment"}
    # Only common words: the least common one is kept.
    assert [p.heading for p in await searcher.search(["shop-faq"], "days")] != []
