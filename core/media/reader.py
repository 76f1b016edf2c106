"""A turn's posted documents as context: text blocks cut to the token budget, or the
page images of a scanned PDF, with notes for the person on what was cut or left out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.errors import StoreError
from core.image_prep import MemoryBudget
from core.media.documents import LABELS, DocumentError, Extracted, extract, render_pages
from core.store.documents import DocumentStore
from core.tokens import TokenCounter
from core.types import Upload

__all__ = ["SCAN_PAGES", "DocumentReader", "Reading"]

log = logging.getLogger(__name__)
SCAN_PAGES = 4  # pages of a scanned PDF sent to the vision model in one turn
_PAGE_SIDE = 1600
_PARSE_FACTOR = 8  # memory a parser holds per byte of file, roughly (DOM, strings)


@dataclass(slots=True)
class Reading:
    """What a message's documents add: text for the message, page images, notes."""

    text: str = ""
    images: list[bytes] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # for the person: cut, scanned
    refused: list[str] = field(default_factory=list)  # for the person: not read, and why


def _cut(counter: TokenCounter, text: str, budget: int) -> tuple[str, int]:
    """``text`` cut to about ``budget`` tokens at a line break; and its full count."""
    total = counter.count(text)
    if total <= budget:
        return text, total
    keep = max(int(len(text) * budget / total * 0.95), 0)
    while keep > 0 and counter.count(text[:keep]) > budget:
        keep = int(keep * 0.9)
    cut = text.rfind("\n", 0, keep)
    return text[: cut if cut > keep // 2 else keep], total


class DocumentReader:
    """Reads documents once (by hash, in SQL) and fits them into a turn."""

    def __init__(self, store: DocumentStore, budget: MemoryBudget, *,
                 max_bytes: int) -> None:
        self._store = store
        self._budget = budget
        self._max_bytes = max_bytes

    async def _extracted(self, upload: Upload) -> Extracted:
        import hashlib

        sha = hashlib.sha256(upload.data).hexdigest()
        # The table only spares a second conversion: while the database is away the file
        # is read anyway (the turn itself waits for the database when it stores).
        try:
            found = await self._store.find(sha)
        except StoreError as err:
            log.warning("document cache unavailable: %s", err)
            found = None
        if found is not None:
            return found
        async with self._budget.reserve(len(upload.data) * _PARSE_FACTOR):
            doc = await asyncio.to_thread(extract, upload.data, upload.name, upload.mime,
                                          max_bytes=self._max_bytes)
        try:
            await self._store.keep(doc)
        except StoreError as err:
            log.warning("could not keep a document's text: %s", err)
        return doc

    async def read(self, uploads: Sequence[Upload], *, counter: TokenCounter,
                   budget_tokens: int, max_images: int) -> Reading:
        """Text blocks for ``uploads`` within ``budget_tokens`` together, and at most
        ``max_images`` page images of scanned PDFs."""
        reading = Reading()
        blocks: list[str] = []
        share = max(budget_tokens // max(len(uploads), 1), 1)
        for upload in uploads:
            label = upload.name or "the document"
            try:
                doc = await self._extracted(upload)
            except DocumentError as err:
                reading.refused.append(err.user_message)
                continue
            kind = LABELS.get(doc.kind, doc.kind)
            pages = f", {doc.pages} pages" if doc.kind == "pdf" and doc.pages else ""
            if doc.scanned:
                room = max_images - len(reading.images)
                count = min(SCAN_PAGES, room, doc.pages)
                if count <= 0:
                    reading.refused.append(f"{label} is a scan (no text in it), and this "
                                           "message has no room for more page images.")
                    continue
                cost = count * _PAGE_SIDE * _PAGE_SIDE * 4 + len(upload.data)
                try:
                    async with self._budget.reserve(cost):
                        pngs = await asyncio.to_thread(render_pages, upload.data, count=count,
                                                       max_side=_PAGE_SIDE)
                except Exception as err:  # pdfium refuses what pypdf read: still damaged
                    log.warning("rendering %s failed: %s", doc.kind, type(err).__name__)
                    reading.refused.append(f"{label} seems to be damaged; I couldn't read "
                                           "it.")
                    continue
                reading.images += pngs
                blocks.append(f"[Document: {label} ({kind}{pages}); it has no text layer, "
                              f"so its first {len(pngs)} pages are attached as images]")
                if doc.pages > len(pngs):
                    reading.notes.append(f"{label} is a scan: I read its first {len(pngs)} "
                                         f"of {doc.pages} pages as images.")
                continue
            if not doc.text.strip():
                reading.refused.append(f"{label} has no text in it.")
                continue
            text, total = _cut(counter, doc.text, share)
            block = f"[Document: {label} ({kind}{pages})]\n{text}"
            if len(text) < len(doc.text):
                block += (f"\n[… the rest of {label} was cut: it has about {total:,} tokens, "
                          f"{counter.count(text):,} fit]")
                reading.notes.append(f"{label} is too long to read whole: I read about the "
                                     f"first {100 * len(text) // len(doc.text)}% of it.")
            blocks.append(block + f"\n[End of {label}]")
        reading.text = "\n\n".join(blocks)
        return reading
