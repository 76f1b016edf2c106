"""The documents benchmark runs (shortened) on both databases; its checks hold (the text
is read, kept by hash and indexed). Speed is only printed by it, never asserted here."""

from __future__ import annotations

import pytest

from bench import bench_documents


@pytest.mark.parametrize("kind", ["pdf", "docx"])
async def test_documents_benchmark_reads_and_keeps_the_text(db_url: str, engine: object,
                                                             kind: str) -> None:
    result = await bench_documents.measure(kind, 3, db_url, repeat=1)
    assert result["pages"] == 3 and result["chars"] > 3 * 1000
    assert result["chunks"] >= 1 and result["python_peak_mb"] > 0
    assert all(result[k] > 0 for k in ("convert_ms", "keep_ms", "kb_index_ms"))
