"""The console and profiles: answers are cut at ``max_answer_chars``; stored whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.answer_cap import cut_notice
from core.errors import ConfigError
from core.profiles import build_profile
from tests.bots.answers import HUGE, stored_answers
from tests.bots.test_cli import run
from tests.fakes.model_server import FakeModelServer, Reply


def test_console_prints_a_capped_answer(tmp_path: Path, fake_model: FakeModelServer) -> None:
    (tmp_path / "chatbridge.toml").write_text("[defaults]\nmax_answer_chars = 1000\n")
    fake_model.enqueue(Reply(text=HUGE, chunk_size=4096))
    result = run(tmp_path, fake_model, "ask", "write a lot")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == HUGE[:1000].strip()
    assert cut_notice(1000, len(HUGE)) in result.stderr
    assert stored_answers(tmp_path / "cb.db") == [HUGE]


def test_max_answer_chars_is_validated() -> None:
    assert build_profile("p", {"max_answer_chars": 500}).max_answer_chars == 500
    with pytest.raises(ConfigError, match="max_answer_chars"):
        build_profile("p", {"max_answer_chars": 10})
