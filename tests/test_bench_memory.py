"""The memory and cache benchmarks run (shortened); their correctness checks hold. Speed is
only printed by them, never asserted here."""

from __future__ import annotations

from pathlib import Path

from bench import bench_cache, bench_memory


async def test_fact_of_turn_one_reaches_a_late_turn_through_the_summary(
        tmp_path: Path) -> None:
    result = await bench_memory.measure(f"sqlite+aiosqlite:///{tmp_path}/m.db", 400)
    request = result["request"]
    assert isinstance(request, dict)
    system = request["messages"][0]["content"]
    text = system if isinstance(system, str) else "".join(p["text"] for p in system)
    assert bench_memory.FACT in text
    assert not any(bench_memory.FACT in str(m["content"]) for m in request["messages"][1:])
    assert int(result["summaries"]) > 0  # type: ignore[call-overload]


async def test_cache_benchmark_reads_the_prefix_from_the_cache(tmp_path: Path) -> None:
    off = await bench_cache.run(f"sqlite+aiosqlite:///{tmp_path}/a.db", 6, cache=False)
    on = await bench_cache.run(f"sqlite+aiosqlite:///{tmp_path}/b.db", 6, cache=True)
    assert all(c == w == 0 for _, c, w in off)
    assert on[0][1] == 0 and on[0][2] > 1024  # the first turn writes the cache
    assert all(c > 1024 for _, c, _ in on[1:])  # later turns read it
    assert [p for p, _, _ in on] == [p for p, _, _ in off]  # the same prompts
