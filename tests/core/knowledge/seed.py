"""A small shop knowledge base, indexed into a database before a bot starts."""

from __future__ import annotations

from sqlalchemy import text

from bots.db import create_engine, open_store, upgrade
from core.knowledge.chunking import split_markdown
from core.knowledge.convert import Document
from core.knowledge.index import KnowledgeIndex

FAQ_URL = "https://shop.example/help/faq"
FAQ = """# Shop FAQ

## Returns

You can return any item within 30 days of delivery for a full refund.
Items must be unused and in their original packaging.

## Shipping

We ship to Sweden, Norway and Finland. Standard shipping takes 3-5 working days.

## Payment

We accept Visa, Mastercard and Klarna invoices.
"""
PROFILE_TOML = """
[profiles.shop]
system_prompt = "You answer customers of a small shop."
knowledge = ["shop-faq"]
"""


async def seed(db_url: str) -> None:
    """Migrate the database and index the FAQ (as a web page) into ``shop-faq``."""
    engine = create_engine(db_url)
    try:
        await upgrade(engine)
        store = open_store(engine)
        try:
            index = KnowledgeIndex(store)
            kb = await index.ensure_base("shop-faq")
            doc = Document(FAQ_URL, "Shop FAQ", FAQ)
            await index.put_document(kb, doc, split_markdown(doc.markdown))
        finally:
            store.close()
    finally:
        await engine.dispose()


async def stored_sources(db_url: str) -> list[tuple[str, int, str, str]]:
    """(answer text, citation number, heading, source) of every stored source."""
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text(
                "SELECT m.text, s.number, s.heading, s.source FROM message_sources s "
                "JOIN messages m ON m.id = s.message_id ORDER BY m.id, s.number"))
            return [(r[0], r[1], r[2], r[3]) for r in rows]
    finally:
        await engine.dispose()
