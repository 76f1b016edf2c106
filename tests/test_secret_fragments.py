"""A model error that echoes part of the key (no "sk-" prefix, cut short, masked in the
middle) shows none of it: not to the person, not in messages.error, not in the log."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from core.model.faults import MIN_SECRET_RUN, redact
from tests.bots.test_cli import run
from tests.fakes.model_server import FakeModelServer, Reply

KEY = "sk-live-7Hq2ZpX9wLmN4vB8cD1eF6gJ"


def _fragments(text: str, secret: str = KEY) -> list[str]:
    """Runs of MIN_SECRET_RUN characters of ``secret`` found in ``text``."""
    return [secret[i:i + MIN_SECRET_RUN] for i in range(len(secret) - MIN_SECRET_RUN + 1)
            if secret[i:i + MIN_SECRET_RUN] in text]


ECHOES = [
    f"Incorrect API key provided: {KEY[3:]}",                # without the prefix
    f"Invalid key {KEY[8:20]}...",                          # a cut-short middle part
    f"key {KEY[3:11]}****{KEY[-6:]} is not valid here",     # masked the usual way
]


@pytest.mark.parametrize("status", [400, 401])
@pytest.mark.parametrize("echo", ECHOES)
def test_echoed_key_fragments_never_shown_or_stored(tmp_path: Path, fake_model: FakeModelServer,
                                                    status: int, echo: str) -> None:
    fake_model.enqueue(Reply(kind="error", status=status,
                             body={"error": {"message": echo, "code": "invalid_request"}}))
    result = run(tmp_path, fake_model, "ask", "hi", CHATBRIDGE_MODEL_API_KEY=KEY,
                 CHATBRIDGE_LOG_LEVEL="DEBUG")
    assert result.returncode == 1
    assert _fragments(result.stdout + result.stderr) == []
    with sqlite3.connect(tmp_path / "cb.db") as conn:
        errors = [r[0] for r in conn.execute("SELECT error FROM messages WHERE error IS NOT NULL")]
    assert errors and all(_fragments(e) == [] for e in errors), errors
    if status == 400:
        assert "The model refused the request" in result.stderr


def test_redact_keeps_ordinary_text_and_public_bot_ids() -> None:
    token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawQ"
    text = "chat 123456789 said: AAHdqTcvCH1v is not a word; ordinary text stays."
    assert redact(text, token) == "chat 123456789 said: *** is not a word; ordinary text stays."
    assert redact("nothing secret here", KEY) == "nothing secret here"
    assert redact("abc 7Hq2ZpX", KEY) == "abc 7Hq2ZpX"  # 7 characters: not distinctive
