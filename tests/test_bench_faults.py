"""Smoke test of bench/bench_faults.py, so the fault benchmark cannot rot: tiny sizes, one
PostgreSQL restart, two real ``chatbridge slack`` replicas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import bench_faults
from tests.pg import bin_dir

pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(bin_dir() is None, reason="no PostgreSQL server binaries")]


def test_quick_fault_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.json"
    assert bench_faults.main(["--messages", "12", "--conversations", "4", "--restarts", "1",
                              "--down", "1.5", "--first", "0.5", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["answers_per_message"] == {"1": 12}
    assert result["stuck_events"] == 0 and result["warnings_shown"] == 0
    assert len(result["peak_rss_kib"]) == 2 and min(result["peak_rss_kib"]) > 50_000
    assert "answers seen per message" in capsys.readouterr().out
