"""The Slack HTTP server's /healthz, /readyz and /metrics (bots.ops) around a real turn."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.bots.slack.conftest import HarnessFactory, message
from tests.bots.test_ops import sample
from tests.fakes.model_server import Reply


async def test_metrics_and_readiness(make_harness: HarnessFactory, tmp_path: Path) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    async with make_harness(f"sqlite+aiosqlite:///{folder}/s.db") as h:
        h.model.enqueue(Reply(text="Hello Ann!", usage=(11, 7)))
        assert await h.event(message("Hi", channel="D1", channel_type="im")) == 200
        await h.idle()
        assert [m.text for m in h.slack.posted()] == ["Hello Ann!"]

        async with h.session.get(h.url + "/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        assert sample(text, "chatbridge_turns_total", platform="slack", outcome="ok") == 1
        assert sample(text, "chatbridge_tokens_total", platform="slack",
                      direction="prompt") == 11
        assert sample(text, "chatbridge_tokens_total", platform="slack",
                      direction="completion") == 7
        assert sample(text, "chatbridge_turn_seconds_count", platform="slack") == 1
        assert sample(text, "chatbridge_inbox_depth") == 0
        assert "chatbridge_model_errors_total{" not in text

        async with h.session.get(h.url + "/readyz") as resp:
            assert resp.status == 200 and await resp.json() == {"ok": True}

        # The database goes away: its connections closed, its folder deleted.
        h.runtime.store.close()
        await h.runtime.store.engine.dispose()
        shutil.rmtree(folder)
        async with h.session.get(h.url + "/readyz") as resp:
            body = await resp.text()
            assert resp.status == 503
        assert json.loads(body) == {"ok": False,
                                    "error": "database unreachable (OperationalError)"}
        assert str(folder) not in body
        async with h.session.get(h.url + "/healthz") as resp:
            assert resp.status == 200  # the process is still up
