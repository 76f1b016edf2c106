"""Smoke test of bench/bench_tools.py, so the benchmark cannot rot: a few turns on SQLite
against its tool-calling model server (its own process). No timing is asserted."""

from __future__ import annotations

from pathlib import Path

from bench.bench_tools import measure
from bench.bench_turn import model_server


async def test_measure_runs_on_sqlite(tmp_path: Path) -> None:
    with model_server("bench.tool_model") as base:
        results = await measure(f"sqlite+aiosqlite:///{tmp_path}/b.db", base, 3)
    assert set(results) >= {"own0", "own3", "per_round", "turn10", "turn10000"}
    assert all(v == v for v in results.values())  # numbers, not NaN
