"""Search knowledge bases: full-text in SQL, dense vectors, fused by weighted scores.

Full-text: SQLite FTS5 ranked by bm25 (headings weigh double); PostgreSQL ``tsvector`` with
its GIN index, ranked by ``ts_rank`` in the base's text-search configuration. The words
of a question are OR-ed (a question rarely shares all its words with the answer).
Dense: the chunks' stored vectors against the question's, in process
(``core.knowledge.vectors``), cached per base until the base changes.
Fusion: each ranking's scores scaled to [0, 1], then ``WEIGHTS`` (full-text, dense).
Without an embedding model everything works on full-text alone. A search is one
transaction; the question is embedded before it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Table, select, text
from sqlalchemy.engine import Connection

from core.errors import ModelError
from core.knowledge.embeddings import Embedder
from core.knowledge.models import KnowledgeBase, KnowledgeChunk, KnowledgeDocument
from core.knowledge.vectors import VectorSet
from core.store import Store

__all__ = ["MODES", "WEIGHTS", "Passage", "Searcher", "fts_terms"]

log = logging.getLogger(__name__)

MODES = ("hybrid", "fulltext", "dense")
# Full-text, dense: chosen on half of the benchmark's questions (the even ones) and
# measured on the other half (README "Knowledge-base retrieval"); dense leads, full-text
# adds exact names and numbers the embedding model does not know.
WEIGHTS = (0.3, 0.7)
DEFAULT_MIN_SIMILARITY = 0.35

_bases: Table = KnowledgeBase.__table__  # type: ignore[assignment]
_docs: Table = KnowledgeDocument.__table__  # type: ignore[assignment]
_chunks: Table = KnowledgeChunk.__table__  # type: ignore[assignment]

# Words too common to say what a question is about (SQLite has no stop list of its own).
_STOP = frozenset("""a about am an and any are as at be been but by can could did do does
for from had has have how i if in into is it its me my no not of on or our please should so
that the their them then there these they this to us was we were what when where which who
why will with would you your yours""".split())

_SQLITE_FTS = (
    "SELECT c.id, bm25(kb_chunks_fts, 2.0, 1.0) AS score FROM kb_chunks_fts "
    "JOIN kb_chunks c ON c.id = kb_chunks_fts.rowid "
    "WHERE kb_chunks_fts MATCH :q AND c.kb_id IN ({ids}) ORDER BY score LIMIT :n"
)
# When every base is searched, no join: reading each matching chunk's row (a page each,
# with its vector) to check its base made full-text two to four times slower at 50k.
_SQLITE_FTS_ALL = (
    "SELECT rowid AS id, bm25(kb_chunks_fts, 2.0, 1.0) AS score FROM kb_chunks_fts "
    "WHERE kb_chunks_fts MATCH :q ORDER BY score LIMIT :n"
)
_PG_FTS = (
    "SELECT c.id, ts_rank(c.tsv, q.q, 1) AS score FROM kb_chunks c, "
    "(SELECT CAST(:q AS tsquery) AS q) AS q "
    "WHERE c.kb_id IN ({ids}) AND c.tsv @@ q.q ORDER BY score DESC LIMIT :n"
)
# The question's lexemes (stemmed in the base's configuration) and how many passages
# each is in, estimated from the planner's statistics of kb_chunks.tsv (kept fresh by
# ANALYZE after `kb add` and by autovacuum): counting them exactly costs more than the search.
_PG_LEXEMES = (
    "WITH s AS (SELECT CAST(CAST(most_common_elems AS text) AS text[]) AS e, "
    "most_common_elem_freqs AS f FROM pg_stats "
    "WHERE tablename = 'kb_chunks' AND attname = 'tsv' LIMIT 1), "
    "n AS (SELECT greatest(reltuples, 0) AS n FROM pg_class WHERE relname = 'kb_chunks' LIMIT 1) "
    "SELECT q.lex, coalesce((SELECT s.f[array_position(s.e, q.lex)] FROM s), 0) "
    "* coalesce((SELECT n FROM n), 0) AS df "
    "FROM unnest(tsvector_to_array(to_tsvector(CAST(:cfg AS regconfig), :q))) AS q(lex)"
)


# A word found in more passages than this says little about any of them, and ranking
# every passage it matches is what makes a big base slow: such words are left out of
# the query (when every word is that common, the least common one is kept).
TERM_CAP = 1000
_COUNT_CAP = 4 * TERM_CAP
_SQLITE_COUNT = ("(SELECT count(*) FROM (SELECT rowid FROM kb_chunks_fts "
                 f"WHERE kb_chunks_fts MATCH :t{{n}} LIMIT {_COUNT_CAP}))")


def _discriminating(conn: Connection, terms: list[str], count_sql: str,
                    params: dict[str, str], quote: bool = False) -> list[str]:
    """``terms`` without those found in more than ``TERM_CAP`` passages (one statement)."""
    if len(terms) < 2:
        return terms
    columns = ", ".join(count_sql.replace("{n}", str(n)) for n in range(len(terms)))
    values = {f"t{n}": f'"{t}"' if quote else t for n, t in enumerate(terms)}
    row = conn.execute(text(f"SELECT {columns}"), {**params, **values}).one()
    counts = dict(zip(terms, (int(c) for c in row), strict=True))
    kept = [t for t in terms if counts[t] <= TERM_CAP]
    return kept or [min(terms, key=lambda t: counts[t])]


def fts_terms(query: str) -> list[str]:
    """The searchable words of a question, lower-cased, without stop words, once each."""
    seen: dict[str, None] = {}
    for word in re.findall(r"\w+", query.lower()):
        if word not in _STOP and (len(word) > 1 or word.isdigit()):
            seen.setdefault(word, None)
    return list(seen)[:32]


@dataclass(frozen=True, slots=True)
class Passage:
    """A ranked chunk with where it came from; ``score`` is the fused one (at most 1)."""

    chunk_id: int
    kb: str
    source: str
    title: str
    heading: str
    text: str
    score: float
    fts_rank: int | None = None
    fts_score: float | None = None
    dense_rank: int | None = None
    dense_score: float | None = None


@dataclass(frozen=True, slots=True)
class _Base:
    id: int
    name: str
    language: str
    embed_model: str | None
    updated_at: datetime


class Searcher:
    """Ranks passages of one or more bases for a question."""

    def __init__(self, store: Store, embedder: Embedder | None = None, *,
                 min_similarity: float = DEFAULT_MIN_SIMILARITY,
                 weights: tuple[float, float] = WEIGHTS) -> None:
        self._store = store
        self._weights = {"fts": weights[0], "dense": weights[1]}
        self._embedder = embedder
        self._min = min_similarity
        self._vectors: dict[int, tuple[datetime, VectorSet]] = {}
        # Whether each base named so far has vectors of this embedder: a question is
        # embedded only when one of the bases it is asked of may be searched by vector.
        self._embedded: dict[str, bool] = {}

    @property
    def embedder(self) -> Embedder | None:
        """The embedding client, if a model is configured."""
        return self._embedder

    @property
    def dense(self) -> bool:
        """Whether an embedding model is configured."""
        return self._embedder is not None

    async def search(self, kbs: Sequence[str], query: str, *, k: int = 5,
                     mode: str = "hybrid") -> list[Passage]:
        """The ``k`` best passages for ``query``, best first (none when nothing matches)."""
        pool = max(4 * k, 20)
        terms = fts_terms(query) if mode != "dense" else []
        vector = None
        embedder = self._embedder
        if (mode != "fulltext" and embedder is not None
                and any(self._embedded.get(name, True) for name in kbs)):
            try:
                vector = _unit((await embedder.embed([query]))[0])
            except ModelError as err:
                # The full-text ranking still answers; the operator learns why not both.
                log.warning("embedding the question failed, full-text only: %s", err.detail)

        wanted = set(kbs)

        def work(conn: Connection) -> list[Passage]:
            # One transaction: the bases, both rankings and the passages they chose.
            rows = conn.execute(select(_bases.c.id, _bases.c.name, _bases.c.language,
                                       _bases.c.embed_model, _bases.c.updated_at)).all()
            bases = [_Base(r.id, r.name, r.language, r.embed_model, r.updated_at)
                     for r in rows if r.name in wanted]
            model = embedder.model if embedder is not None else None
            for b in bases:
                self._embedded[b.name] = b.embed_model == model
            fts = self._fulltext(conn, bases, terms, pool, every=len(bases) == len(rows)
                                 ) if bases and terms else []
            dense: list[tuple[int, float]] = []
            if vector is not None:
                dense = self._nearest(conn, [b for b in bases if b.embed_model == model],
                                      vector, pool)
            fused = self._fuse(fts, dense)
            best = sorted(fused, key=lambda cid: -fused[cid][0])[:k]
            found = _details(conn, best) if best else {}
            return [replace(found[cid], score=fused[cid][0], **fused[cid][1])
                    for cid in best if cid in found]

        return await self._store.run(work, "search the knowledge base")

    def _fuse(self, fts: list[tuple[int, float]], dense: list[tuple[int, float]]
              ) -> dict[int, tuple[float, dict[str, Any]]]:
        """Each ranking's scores scaled to [0, 1] over its own list, then a weighted sum.

        Reciprocal-rank fusion (k = 60, equal weights) was measured worse than dense
        alone on the benchmark (recall@5 0.744 against 0.827): it gives a weak ranking's
        guesses the same pull as a strong one's, and ignores how far apart the scores
        are. Scaled scores keep "much better" apart from "a little better".
        """
        fused: dict[int, tuple[float, dict[str, Any]]] = {}
        for name, ranking in (("fts", fts), ("dense", dense)):
            if not ranking:
                continue
            high, low = ranking[0][1], ranking[-1][1]
            spread = high - low
            for rank, (chunk_id, score) in enumerate(ranking, 1):
                scaled = (score - low) / spread if spread > 0 else 1.0
                total, info = fused.get(chunk_id, (0.0, {}))
                info[f"{name}_rank"], info[f"{name}_score"] = rank, score
                fused[chunk_id] = (total + self._weights[name] * scaled, info)
        return fused

    def _fulltext(self, conn: Connection, bases: list[_Base], terms: list[str],
                  pool: int, *, every: bool = False) -> list[tuple[int, float]]:
        ids = ", ".join(str(int(b.id)) for b in bases)
        if conn.dialect.name == "sqlite":
            terms = _discriminating(conn, terms, _SQLITE_COUNT, {}, quote=True)
            match = " OR ".join(f'"{t}"' for t in terms)
            query = _SQLITE_FTS_ALL if every else _SQLITE_FTS.format(ids=ids)
            rows = conn.execute(text(query), {"q": match, "n": pool})
            return [(int(r.id), -float(r.score)) for r in rows]
        found: list[tuple[int, float]] = []
        for language in sorted({b.language for b in bases}):
            group = ", ".join(str(int(b.id)) for b in bases if b.language == language)
            counts = {r.lex: float(r.df) for r in conn.execute(
                text(_PG_LEXEMES), {"cfg": language, "q": " ".join(terms)})}
            if not counts:
                continue  # only stop words of this language
            kept = [lex for lex, df in counts.items() if df <= TERM_CAP] or [
                min(counts, key=lambda lex: counts[lex])]
            tsquery = " | ".join("'" + lex.replace("'", "''") + "'" for lex in kept)
            rows = conn.execute(text(_PG_FTS.format(ids=group)),
                                {"q": tsquery, "n": pool})
            found += [(int(r.id), float(r.score)) for r in rows]
        return sorted(found, key=lambda item: -item[1])[:pool]

    def _nearest(self, conn: Connection, bases: list[_Base], query: Any,
                 pool: int) -> list[tuple[int, float]]:
        found: list[tuple[int, float]] = []
        for base in bases:
            cached = self._vectors.get(base.id)
            if cached is None or cached[0] != base.updated_at:
                cached = (base.updated_at, _load(conn, base))
                self._vectors[base.id] = cached
            found += cached[1].nearest(query, pool, self._min)
        return sorted(found, key=lambda item: -item[1])[:pool]


def _unit(vector: Sequence[float]) -> Any:
    """The question's vector as unit float32 (``None`` for a zero vector)."""
    import numpy as np

    query = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(query))
    return query / norm if norm > 0 else None


def _load(conn: Connection, base: _Base) -> VectorSet:
    rows = conn.execute(select(_chunks.c.id, _chunks.c.embedding)
                        .where(_chunks.c.kb_id == base.id, _chunks.c.embedding.is_not(None))
                        .order_by(_chunks.c.id)).all()
    return VectorSet.build([int(r.id) for r in rows], [bytes(r.embedding) for r in rows])


def _details(conn: Connection, ids: list[int]) -> dict[int, Passage]:
    rows = conn.execute(
        select(_chunks.c.id, _chunks.c.heading, _chunks.c.text, _docs.c.source,
               _docs.c.title, _bases.c.name)
        .join(_docs, _docs.c.id == _chunks.c.document_id)
        .join(_bases, _bases.c.id == _chunks.c.kb_id)
        .where(_chunks.c.id.in_(ids))).all()
    return {int(r.id): Passage(int(r.id), r.name, r.source, r.title, r.heading, r.text, 0.0)
            for r in rows}
