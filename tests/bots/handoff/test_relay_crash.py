"""A relay survives its sender: two real ``chatbridge slack`` replicas on PostgreSQL, the one
relaying a customer's message to the staff thread killed (SIGKILL) while Slack holds its
``chat.postMessage`` unanswered. After the lease the other replica sends it, once: when the
dead replica's post never reached Slack, it is posted; when Slack took it and only the
answer was lost, it is found by its metadata and not posted again."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.bots.slack.fake_slack import TEAM, FakeSlack
from tests.test_replicas import LEASE, EchoModel, _holder, deliver, dm, replicas, slack_env, until

pytestmark = pytest.mark.postgres

HANDOFF = """
[profiles.default.handoff]
staff = "slack:C0STAFF"
"""


def thread_of(slack: FakeSlack, ts: str) -> list[str]:
    return [m.text for m in slack.posted() if m.channel == "C0STAFF" and m.thread_ts == ts]


@pytest.mark.parametrize("carried_out", [False, True], ids=["never-sent", "answer-lost"])
async def test_a_relay_whose_sender_died_is_sent_once_by_the_other_replica(
    tmp_path: Path, postgres_url: str, pg: asyncpg.Connection, model: EchoModel,
    slack: FakeSlack, session: aiohttp.ClientSession, carried_out: bool,
) -> None:
    config = tmp_path / "chatbridge.toml"
    config.write_text(HANDOFF)
    env = slack_env(postgres_url, model, slack, CHATBRIDGE_LEASE_SECONDS=str(LEASE),
                    CHATBRIDGE_CONFIG=str(config))
    async with replicas(["slack"], env, tmp_path, session) as pair:
        assert await deliver(session, pair[0], dm("I need a human", "D1")) == 200
        await until(lambda: any(m.channel == "C0STAFF" for m in slack.posted()), 30,
                    "the staff notice")
        [notice] = [m for m in slack.posted() if m.channel == "C0STAFF"]
        await until(lambda: bool(dm_texts(slack)), 30, "the customer told")

        gate = slack.hold("chat.postMessage", carried_out=carried_out)
        assert await deliver(session, pair[1], dm("Order 42 never arrived", "D1")) == 200
        await until(lambda: bool(slack.held), 30, "the relay's post held by Slack")
        sender = await _holder(pg, f"{TEAM}/D1", pair)
        heir = next(r for r in pair if r is not sender)
        os.kill(sender.pid, signal.SIGKILL)
        sender.proc.wait(10)
        gate.set()

        expected = ["Ann: Order 42 never arrived"]
        await until(lambda: thread_of(slack, notice.ts) == expected, LEASE + 30,
                    "the relay in the staff thread")
        await asyncio.sleep(LEASE + 1.5)  # a second copy would have come by now
        assert thread_of(slack, notice.ts) == expected
        row = await pg.fetchrow("SELECT status, attempts FROM relays WHERE key LIKE '%/relay'")
        assert row is not None and row["status"] == "sent" and row["attempts"] >= 2
        looked = [c for c in slack.of("conversations.replies")
                  if c.args.get("ts") == notice.ts]
        assert looked and str(looked[0].args.get("include_all_metadata")).lower() in (
            "1", "true")
        assert "Traceback" not in heir.logs(), heir.logs()


def dm_texts(slack: FakeSlack) -> list[str]:
    return [m.text for m in slack.posted() if m.channel == "D1"]
