"""Smoke test of bench/bench_replicas.py, so the benchmark cannot rot: its quick path with
tiny sizes, on SQLite only (two real ``chatbridge slack`` replicas, then one for the memory
part; the fake model and the fake Slack in their own processes). Needs nothing CI lacks,
so it runs there and never skips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import bench_replicas


def test_quick_run_on_sqlite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.json"
    assert bench_replicas.main([
        "--quick", "--databases", "sqlite", "--replicas", "2", "--load", "6x1",
        "--load", "3x3", "--senders", "4", "--no-capacity", "--seed", "25", "--latency", "3",
        "--memory-conversations", "20",
        "--memory-baseline", "5", "--memory-delay", "60", "--json", str(out),
    ]) == 0
    results = json.loads(out.read_text())
    rows = {(r["replicas"], r["load"]): r for r in results["throughput"]}
    assert set(rows) == {(2, "6x1"), (2, "3x3")}  # (one replica: the memory part)
    for (_, load), row in rows.items():
        (run,) = row["runs"]
        assert run["messages"] == (6 if load == "6x1" else 9)
        assert run["not_200"] == 0 and run["warnings"] == 0
        assert run["replies"] == run["turns"]  # every turn answered once, none twice
        # One message per conversation is one turn each; three may be answered together.
        assert (run["turns"] == 6) if load == "6x1" else (3 <= run["turns"] <= 9)
        assert run["turns_per_s"] > 0 and run["ack_p95_ms"] >= run["ack_p50_ms"] > 0
        assert run["cpu_ms_per_turn"]["replicas"] > 0
        assert run["db_per_turn"]["statements"] > 0 and run["db_per_turn"]["commits"] > 0
        assert row["seeded"] == 25
        assert row["latency_ms"]["p95"] >= row["latency_ms"]["p50"] > 0  # POST -> model
    (memory,) = results["memory"]
    assert memory["database"] == "sqlite" and memory["conversations"] == 20
    assert memory["rss_kib"] > 50_000 and memory["rss_baseline_kib"] > 50_000
    table = capsys.readouterr().out
    assert "| sqlite | 25 | 2 | 3x3 |" in table and "per waiting conversation" in table
