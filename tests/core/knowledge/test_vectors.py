"""In-process vector search: exact for small sets; the projected first pass of large ones
finds what the exact product finds."""

from __future__ import annotations

import numpy as np

from core.knowledge.embeddings import pack
from core.knowledge.vectors import PROJECTED, VectorSet


def _rows(count: int, width: int, seed: int = 3) -> tuple[np.ndarray, list[bytes]]:
    # Vectors with structure (a few hundred topics plus noise), as embeddings have.
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((300, width)).astype(np.float32)
    data = topics[rng.integers(0, 300, count)] + 0.6 * rng.standard_normal(
        (count, width)).astype(np.float32)
    return data, [pack(row) for row in data]


def test_exact_for_a_small_set_best_first_with_the_minimum() -> None:
    data, rows = _rows(500, 64)
    vectors = VectorSet.build(list(range(100, 600)), rows)
    assert vectors.projection is None and vectors.width == 64
    query = data[7] / np.linalg.norm(data[7])
    found = vectors.nearest(query, 10, -1.0)
    assert found[0][0] == 107 and abs(found[0][1] - 1.0) < 1e-5
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    exact = np.argsort(-(unit @ query))[:10] + 100
    assert [i for i, _ in found] == [int(i) for i in exact]
    assert all(s >= 0.5 for _, s in vectors.nearest(query, 10, 0.5))
    assert vectors.nearest(np.zeros(32, dtype=np.float32), 10, -1.0) == []  # other width


def test_rows_of_another_width_are_left_out() -> None:
    _, rows = _rows(5, 16)
    vectors = VectorSet.build([1, 2, 3, 4, 5, 6], [*rows, b"\x00" * 12])
    assert len(vectors) == 5 and 6 not in vectors.ids
    assert len(VectorSet.build([], [])) == 0


def test_projected_first_pass_finds_the_exact_top() -> None:
    data, rows = _rows(6000, 2 * PROJECTED)
    vectors = VectorSet.build(list(range(6000)), rows, project_from=2000)
    assert vectors.projection is not None and vectors.projected.shape == (6000, PROJECTED)
    exact = VectorSet.build(list(range(6000)), rows, project_from=10**9)
    overlap = []
    for i in range(0, 6000, 150):
        query = data[i] / np.linalg.norm(data[i])
        got = vectors.nearest(query, 20, -1.0)
        want = exact.nearest(query, 20, -1.0)
        assert got[0] == want[0]  # the vector itself, scored exactly
        overlap.append(len({g for g, _ in got} & {w for w, _ in want}) / 20)
        # Scores are the exact cosines, not the projection's.
        assert all(abs(s - dict(want).get(g, s)) < 1e-5 for g, s in got)
    assert sum(overlap) / len(overlap) >= 0.98
