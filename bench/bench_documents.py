"""Benchmark: reading posted documents — convert time per page and per MB, the SQL writes,
and the memory peak — for generated PDFs and DOCX files.

For each file (a PDF and a DOCX of ``--pages`` pages, about 45 lines of text a page,
generated here): the chat path's conversion (``core.media.documents.extract``: pypdf,
python-docx), keeping the text by hash in SQL (``DocumentStore.keep``), and the knowledge
base's path (``core.knowledge.convert`` + ``split_markdown`` + ``KnowledgeIndex.put_document``,
full-text index included). Each step runs ``--repeat`` times; the median is reported. Memory:
the peak of Python's allocations while converting (tracemalloc), and the process's peak RSS
growth (``VmHWM``) over the whole run, per file in a fresh child process.

Run:  .venv/bin/python -m bench.bench_documents [--pages 10,100] [--repeat 3]
      [--database sqlite|postgres] [--json results.json]
PostgreSQL is a throwaway cluster (tests/pg.py) unless CHATBRIDGE_BENCH_POSTGRES_URL is set.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from bots.db import create_engine, ensure_schema, open_store, upgrade
from core.knowledge.chunking import split_markdown
from core.knowledge.convert import convert
from core.knowledge.index import KnowledgeIndex
from core.media.documents import extract
from core.store.documents import DocumentStore
from tests.media_files import pdf_of_pages

T = TypeVar("T")
LINES = 45  # lines of text a page
WORDS = ("invoice", "delivery", "warranty", "customer", "refund", "shipment", "contract",
         "schedule", "payment", "support", "account", "order", "return", "policy")
MARKER = "The reference code is ZX-4711."


def _line(page: int, line: int) -> str:
    words = [WORDS[(page * 7 + line * 3 + i) % len(WORDS)] for i in range(11)]
    return f"{page}.{line} " + " ".join(words) + "."


def pdf(pages: int) -> bytes:
    """A text PDF of ``pages`` pages (Helvetica, ``LINES`` lines each), xref computed."""
    streams = []
    for page in range(pages):
        lines = [MARKER] if page == pages - 1 else []
        lines += [_line(page, i) for i in range(LINES - len(lines))]
        shown = " ".join(f"({text}) Tj T*" for text in lines)
        streams.append(f"BT /F1 10 Tf 14 TL 50 750 Td {shown} ET".encode("latin-1"))
    return pdf_of_pages(streams)


def docx(pages: int) -> bytes:
    """A Word document of about ``pages`` pages: a heading and ``LINES`` paragraphs each."""
    import docx as python_docx

    document = python_docx.Document()
    for page in range(pages):
        document.add_heading(f"Section {page + 1}", level=2)
        for i in range(LINES - 1):
            document.add_paragraph(_line(page, i))
    document.add_paragraph(MARKER)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _median(run: Callable[[], T], repeat: int) -> tuple[float, T]:
    times: list[float] = []
    result: Any = None
    for _ in range(repeat):
        began = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - began)
    return statistics.median(times), result


async def _amedian(run: Callable[[], Any], repeat: int) -> float:
    times: list[float] = []
    for _ in range(repeat):
        began = time.perf_counter()
        await run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _hwm_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


async def measure(kind: str, pages: int, db_url: str, repeat: int = 3) -> dict[str, Any]:
    """One file's numbers (see the module docstring); checks that the text was read."""
    data = pdf(pages) if kind == "pdf" else docx(pages)
    name = f"bench.{kind}"
    rss_before = _hwm_kb()
    tracemalloc.start()
    doc = extract(data, name)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert MARKER in doc.text, "the document's text was not read"
    convert_s, _ = _median(lambda: extract(data, name), repeat)
    kb_convert_s, document = _median(lambda: convert(data, name), repeat)
    chunks = split_markdown(document.markdown)
    assert any(MARKER in c.text for c in chunks)
    engine = create_engine(db_url)
    try:
        await (ensure_schema(engine) if db_url.startswith("sqlite") else upgrade(engine))
        store = open_store(engine)
        documents = DocumentStore(store)
        keep_s = await _amedian(lambda: documents.keep(doc), repeat)
        found = await documents.find(doc.sha256)
        assert found is not None and found.text == doc.text
        index = KnowledgeIndex(store)
        kb_id = await index.ensure_base("bench")
        index_s = await _amedian(lambda: index.put_document(kb_id, document, chunks), repeat)
    finally:
        await engine.dispose()
    mb = len(data) / 2**20
    return {
        "kind": kind, "pages": pages, "bytes": len(data), "chars": len(doc.text),
        "chunks": len(chunks),
        "convert_ms": convert_s * 1000, "convert_ms_per_page": convert_s * 1000 / pages,
        "convert_ms_per_mb": convert_s * 1000 / mb,
        "keep_ms": keep_s * 1000,
        "kb_convert_ms": kb_convert_s * 1000, "kb_index_ms": index_s * 1000,
        "kb_ms_per_page": (kb_convert_s + index_s) * 1000 / pages,
        "python_peak_mb": peak / 2**20,
        "rss_growth_mb": max(_hwm_kb() - rss_before, 0) / 1024,
    }


@contextlib.contextmanager
def _database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp}/bench.db"
        return
    given = os.environ.get("CHATBRIDGE_BENCH_POSTGRES_URL")
    if given:
        yield given
        return
    from tests.pg import Cluster

    cluster = Cluster()
    try:
        yield cluster.url
    finally:
        cluster.stop()


def _child(args: argparse.Namespace) -> None:
    """One file in this (fresh) process: its peak RSS is this file's alone."""
    result = asyncio.run(measure(args.kind, args.one, args.url, args.repeat))
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", default="10,100")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--json")
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        _child(args)
        return
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, _database(args.database, Path(tmp)) as url:
        for kind in ("pdf", "docx"):
            for pages in (int(p) for p in args.pages.split(",")):
                if url.startswith("sqlite"):
                    url = f"sqlite+aiosqlite:///{tmp}/bench-{kind}-{pages}.db"
                out = subprocess.run(
                    [sys.executable, "-m", "bench.bench_documents", "--kind", kind,
                     "--one", str(pages), "--url", url, "--repeat", str(args.repeat)],
                    check=True, capture_output=True, text=True)
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'file':<10}{'pages':>6}{'KB':>8}{'convert ms':>12}{'ms/page':>9}{'ms/MB':>9}"
          f"{'SQL keep ms':>13}{'kb ms/page':>12}{'py peak MB':>12}{'RSS +MB':>9}")
    for r in results:
        print(f"{r['kind']:<10}{r['pages']:>6}{r['bytes'] / 1024:>8.0f}{r['convert_ms']:>12.1f}"
              f"{r['convert_ms_per_page']:>9.2f}{r['convert_ms_per_mb']:>9.0f}"
              f"{r['keep_ms']:>13.1f}{r['kb_ms_per_page']:>12.2f}"
              f"{r['python_peak_mb']:>12.1f}{r['rss_growth_mb']:>9.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
