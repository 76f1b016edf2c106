"""A turn retaken after its replica was SIGKILLed between a tool result and the next model
call resumes from the stored result: the tool does not run again (real processes, real
PostgreSQL, loopback model / Slack / web servers)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.bots.slack.fake_slack import TEAM, FakeSlack
from tests.core.tools.webserver import WebServer
from tests.fakes.model_server import Reply
from tests.test_replicas import (
    LEASE,
    EchoModel,
    _holder,
    assert_clean,
    deliver,
    dm,
    model,
    pg,
    replicas,
    replies_in,
    session,
    settled,
    slack,
    slack_env,
    until,
)

__all__ = ["model", "pg", "session", "slack"]  # the replica tests' fixtures, used here

pytestmark = pytest.mark.postgres


async def test_retaken_turn_does_not_run_a_finished_tool_again(
    tmp_path: Path, postgres_url: str, pg: asyncpg.Connection, model: EchoModel,
    slack: FakeSlack, session: aiohttp.ClientSession,
) -> None:
    config = tmp_path / "chatbridge.toml"
    config.write_text('[defaults]\ntools = ["fetch_url"]\n'
                      '[tools.fetch_url]\nallow_hosts = ["127.0.0.1"]\n')
    env = slack_env(postgres_url, model, slack, CHATBRIDGE_LEASE_SECONDS=str(LEASE),
                    CHATBRIDGE_CONFIG=str(config))
    with WebServer() as web:
        url = f"{web.url}/page"
        model.enqueue(Reply(text="", tool_calls=[("fetch_url", f'{{"url": "{url}"}}')]),
                      Reply(kind="hang"),  # round 2 never answers: the tool result is stored
                      Reply(text="Sea otters hold hands while they sleep."))
        async with replicas(["slack"], env, tmp_path, session) as pair:
            assert await deliver(session, pair[0], dm(f"what does {url} say?", "D9")) == 200
            await until(lambda: len(model.requests) == 2, 30, "the second model call")
            stored = await pg.fetch("SELECT name, status, output FROM tool_calls")
            assert [(r["name"], r["status"]) for r in stored] == [("fetch_url", "ok")]
            dead = await _holder(pg, f"{TEAM}/D9", pair)
            heir = next(r for r in pair if r is not dead)
            os.kill(dead.pid, signal.SIGKILL)
            dead.proc.wait(10)
            await until(lambda: bool(replies_in(slack, "D9")), 40, "the heir's answer")
            await settled(pg, 1)
            await asyncio.sleep(0.3)

            assert web.served("/page") == 1  # fetched once, by the replica that died
            assert [m.text for m in replies_in(slack, "D9")] == [
                "Sea otters hold hands while they sleep."]
            resumed = model.requests[2].json["messages"]
            assert [m["role"] for m in resumed] == ["system", "user", "assistant", "tool"]
            assert resumed[3]["content"] == stored[0]["output"]
            assert "hold hands" in resumed[3]["content"]
            rows = await pg.fetch("SELECT round, status FROM tool_calls ORDER BY id")
            assert [(r["round"], r["status"]) for r in rows] == [(1, "ok")]
        assert_clean(heir)
