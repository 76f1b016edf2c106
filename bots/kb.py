"""``chatbridge kb …``: add documents to knowledge bases, list, remove, search them."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bots.db import create_engine, ensure_schema, open_store
from bots.runtime import build_searcher
from bots.settings import Settings
from core.errors import ChatbridgeError, ConfigError, ModelError
from core.knowledge.chunking import split_markdown
from core.knowledge.cite import label
from core.knowledge.convert import Document, DocumentError, convert, find_files
from core.knowledge.embeddings import BATCH, pack
from core.knowledge.index import KnowledgeIndex, check_name
from core.knowledge.search import Searcher

__all__ = ["run_kb"]

MAX_DOWNLOAD = 50 * 1024 * 1024


@dataclass
class _Tally:
    indexed: int = 0
    unchanged: int = 0
    chunks: int = 0
    embedded: int = 0
    failed: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def _open(settings: Settings) -> AsyncIterator[tuple[KnowledgeIndex, Searcher,
                                                           httpx.AsyncClient]]:
    engine = create_engine(settings.database_url)
    store = None
    try:
        await ensure_schema(engine)
        store = open_store(engine)
        async with httpx.AsyncClient(follow_redirects=True) as http:
            yield KnowledgeIndex(store), build_searcher(settings, store, http), http
    finally:
        if store is not None:
            store.close()
        await engine.dispose()


def _err(line: str) -> None:
    print(f"chatbridge: {line}", file=sys.stderr)


async def _fetch(http: httpx.AsyncClient, url: str) -> Document:
    try:
        async with http.stream("GET", url, timeout=30.0) as response:
            if response.status_code != 200:
                raise DocumentError(f"{url}: the server answered HTTP {response.status_code}; "
                                    "not indexed")
            data = b""
            async for piece in response.aiter_bytes():
                data += piece
                if len(data) > MAX_DOWNLOAD:
                    raise DocumentError(f"{url}: larger than {MAX_DOWNLOAD // 2**20} MiB; "
                                        "not indexed")
            ctype = response.headers.get("content-type", "")
    except httpx.HTTPError as err:
        raise DocumentError(f"{url}: could not fetch it ({type(err).__name__}); "
                            "not indexed") from err
    return await asyncio.to_thread(convert, data, url, ctype)


def _targets(inputs: Sequence[str], tally: _Tally) -> list[str]:
    """URLs and files to read; folders are walked, missing paths reported."""
    found: list[str] = []
    for item in inputs:
        if item.startswith(("http://", "https://")):
            found.append(item)
            continue
        path = Path(item).expanduser()
        if path.is_dir():
            files = find_files(path)
            if not files:
                tally.failed.append(item)
                _err(f"{item}: no documents (Markdown, text, HTML, PDF, DOCX) in this folder")
            found += [str(f.resolve()) for f in files]
        elif path.is_file():
            found.append(str(path.resolve()))
        else:
            tally.failed.append(item)
            _err(f"{item}: no such file or folder")
    return list(dict.fromkeys(found))


async def _read(http: httpx.AsyncClient, target: str) -> Document:
    if target.startswith(("http://", "https://")):
        return await _fetch(http, target)
    try:
        data = await asyncio.to_thread(Path(target).read_bytes)
    except OSError as err:
        raise DocumentError(f"{target}: cannot read it ({err.strerror})") from err
    return await asyncio.to_thread(convert, data, target)


class _Progress:
    """A rich progress bar on a terminal; nothing otherwise (a summary line follows)."""

    def __init__(self, files: int, embedding: bool) -> None:
        self._bar: Any = None
        if not sys.stderr.isatty():
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                             MofNCompleteColumn(), console=Console(stderr=True))
        self._files = self._bar.add_task("files", total=files)
        self._chunks = self._bar.add_task("chunks", total=None)
        self._embeds = self._bar.add_task("embeddings", total=None, visible=embedding)
        self._bar.start()

    def file_done(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._files)

    def chunks(self, count: int, embedding: bool) -> None:
        if self._bar is not None:
            # Passages are known a file at a time: the totals grow as files are read.
            done = self._bar.tasks[self._chunks]
            self._bar.update(self._chunks, total=(done.total or 0) + count, advance=count)
            if embedding:
                task = self._bar.tasks[self._embeds]
                self._bar.update(self._embeds, total=(task.total or 0) + count)

    def embedded(self, count: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._embeds, count)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()


async def _add(settings: Settings, kb: str, inputs: Sequence[str], language: str) -> int:
    tally = _Tally()
    targets = _targets(inputs, tally)
    async with _open(settings) as (index, searcher, http):
        kb_id = await index.ensure_base(kb, language=language,
                                        embed_model=settings.embedding_model)
        embedder = searcher.embedder
        progress = _Progress(len(targets), embedder is not None)
        try:
            for target in targets:
                try:
                    document = await _read(http, target)
                except DocumentError as err:
                    tally.failed.append(target)
                    _err(err.user_message)
                    progress.file_done()
                    continue
                if await index.unchanged(kb_id, [document]):
                    tally.unchanged += 1
                    progress.file_done()
                    continue
                chunks = split_markdown(document.markdown)
                progress.chunks(len(chunks), embedder is not None)
                vectors: list[bytes | None] | None = None
                if embedder is not None:
                    vectors = []
                    for start in range(0, len(chunks), BATCH):
                        batch = chunks[start:start + BATCH]
                        got = await embedder.embed(
                            [f"{document.title}: {c.heading}\n{c.text}" for c in batch])
                        vectors += [pack(v) for v in got]
                        progress.embedded(len(batch))
                    tally.embedded += len(chunks)
                await index.put_document(kb_id, document, chunks, vectors)
                tally.indexed += 1
                tally.chunks += len(chunks)
                progress.file_done()
        finally:
            progress.stop()
        if tally.indexed:
            await index.analyze()
    summary = (f"{kb}: {tally.indexed} document(s) indexed ({tally.chunks} chunks"
               + (f", {tally.embedded} embedded" if settings.embedding_model else "")
               + f"), {tally.unchanged} unchanged, {len(tally.failed)} failed")
    print(summary)
    return 2 if tally.failed else 0


async def _list(settings: Settings, kb: str | None) -> int:
    async with _open(settings) as (index, _, _http):
        if kb is not None:
            docs = await index.documents(kb)
            if not docs:
                raise ConfigError(f"no knowledge base {kb!r} (or it has no documents)")
            for d in docs:
                print(f"{d.chunks:5d} chunks  {d.indexed_at:%Y-%m-%d %H:%M}  {d.title}  "
                      f"({d.source})")
            return 0
        bases = await index.bases()
        if not bases:
            print("no knowledge bases yet (chatbridge kb add --kb NAME PATH|URL...)")
        for b in bases:
            dense = f", {b.embedded} embedded with {b.embed_model}" if b.embed_model else ""
            print(f"{b.name}: {b.documents} document(s), {b.chunks} chunks{dense}; "
                  f"language {b.language}; updated {b.updated_at:%Y-%m-%d %H:%M}")
    return 0


def _resolved(sources: Sequence[str]) -> list[str]:
    return [s if s.startswith(("http://", "https://")) else str(Path(s).expanduser().resolve())
            for s in sources]


async def _remove(settings: Settings, kb: str, sources: Sequence[str]) -> int:
    resolved = _resolved(sources)
    async with _open(settings) as (index, _, _http):
        if sources:
            gone = await index.remove_sources(kb, resolved)
            print(f"{kb}: {gone} document(s) removed")
            return 0 if gone else 2
        if not await index.remove(kb):
            raise ConfigError(f"no knowledge base {kb!r}")
        print(f"{kb}: removed")
    return 0


def _ranks(p: Any) -> str:
    parts = []
    if p.fts_rank is not None:
        parts.append(f"full-text #{p.fts_rank} ({p.fts_score:.3f})")
    if p.dense_rank is not None:
        parts.append(f"dense #{p.dense_rank} (cosine {p.dense_score:.3f})")
    return ", ".join(parts)


async def _search(settings: Settings, kbs: Sequence[str], text: str, limit: int,
                  mode: str) -> int:
    async with _open(settings) as (index, searcher, _http):
        known = {b.name for b in await index.bases()}
        missing = [k for k in kbs if k not in known]
        if missing:
            raise ConfigError(f"no knowledge base {missing[0]!r}")
        if mode == "dense" and not searcher.dense:
            raise ConfigError("--mode dense needs CHATBRIDGE_EMBEDDING_MODEL")
        passages = await searcher.search(kbs, text, k=limit, mode=mode)
    if not passages:
        print("nothing found")
        return 1
    for n, p in enumerate(passages, 1):
        print(f"{n}. {p.score:.4f}  {label(p)}  ({p.source})  [{_ranks(p)}]")
        body = " ".join(p.text.split())
        print(f"   {body[:300]}{'…' if len(body) > 300 else ''}")
    return 0


def run_kb(settings: Settings, args: Any) -> int:
    """Run one ``kb`` action; the exit code."""
    for name in args.kb or ():
        check_name(name)
    try:
        if args.kb_command == "add":
            return asyncio.run(_add(settings, args.kb[0], args.inputs, args.language))
        if args.kb_command == "list":
            return asyncio.run(_list(settings, args.kb[0] if args.kb else None))
        if args.kb_command == "remove":
            return asyncio.run(_remove(settings, args.kb[0], args.sources))
        return asyncio.run(_search(settings, args.kb, " ".join(args.text), args.limit,
                                   args.mode))
    except ModelError as err:
        raise ChatbridgeError(f"embedding failed: {err.detail}") from err
