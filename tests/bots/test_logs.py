"""Logs: JSON lines on request, and no secret ever written."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bots.logs import configure_logging

TOKEN = "123456:AAE-secret-telegram-token"


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_secrets_are_masked(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging("INFO", fmt, [TOKEN])
    log = logging.getLogger("chatbridge.test")
    log.info("fetching https://api.telegram.org/file/bot%s/photos/1.jpg", TOKEN)
    try:
        raise RuntimeError(f"boom at /bot{TOKEN}/getFile with sk-abcdef0123456789")
    except RuntimeError:
        log.exception("failed")
    out = stream.getvalue()
    logging.getLogger().handlers.clear()
    assert TOKEN not in out and "sk-abcdef0123456789" not in out
    assert "***" in out
    if fmt == "json":
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert lines[0]["level"] == "info" and "photos/1.jpg" in lines[0]["message"]
        assert "RuntimeError" in lines[1]["exception"]
