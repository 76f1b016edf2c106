"""Exactly once under faults (issue 10), with real processes on a real PostgreSQL.

Each test runs its own throwaway PostgreSQL cluster (``tests/pg.py``) so that it can stop
the server (``pg_ctl stop -m immediate``: every connection cut, as in a crash) and start it
again, while real ``chatbridge slack`` / ``chatbridge telegram --webhook`` processes answer
through the loopback Slack, Telegram and model servers. What a person must see: one answer
per message, complete, no request to resend what the bot retries itself; what the
database must hold: every message and every answer once, every event closed.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from bots.db import create_engine, upgrade
from tests.bots.slack.conftest import mention, new_ts
from tests.bots.slack.fake_slack import FakeSlack
from tests.bots.telegram.conftest import ALICE, GROUP
from tests.bots.telegram.conftest import mention as tg_mention
from tests.bots.telegram.conftest import message as tg_message
from tests.bots.telegram.fake_bot_api import FakeBotApi
from tests.fakes.model_server import Reply
from tests.pg import Cluster, bin_dir
from tests.test_replicas import (  # the replica tests' fixtures too (model, slack, …)
    ECHO,
    EchoModel,
    bot_api,
    deliver,
    deliver_update,
    dm,
    model,
    owner_pid,
    replicas,
    replies_in,
    session,
    settled,
    slack,
    slack_env,
    telegram_env,
    tg_update,
    trailing_user,
    until,
)

pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(bin_dir() is None, reason="no PostgreSQL server binaries")]

__all__ = ["bot_api", "model", "session", "slack"]  # fixtures, used by the tests here

SLOW = Reply(text=ECHO, chunk_size=3, chunk_delay=0.25)  # an answer streamed over seconds


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A PostgreSQL server of this test's own, to stop and start."""
    server = Cluster(crash_safe=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def own_pg(cluster: Cluster) -> AsyncIterator[str]:
    """The cluster's database, migrated; its SQLAlchemy URL."""
    engine = create_engine(cluster.url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    yield cluster.url


async def connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))


async def outage(cluster: Cluster, seconds: float) -> None:
    """Stop PostgreSQL as a crash would, and start it again ``seconds`` later."""
    await asyncio.to_thread(cluster.stop_server)
    await asyncio.sleep(seconds)
    await asyncio.to_thread(cluster.start_server)


async def check_stored(url: str, events: int) -> None:
    """Every event closed as done; one user message and one answer per event."""
    conn = await connect(url)
    try:
        await settled(conn, events, within=90)
        rows = await conn.fetch("SELECT status, count(*) AS n FROM inbound_events "
                                "WHERE scope_key IS NOT NULL GROUP BY status")
        assert {r["status"]: r["n"] for r in rows} == {"done": events}
        users = await conn.fetch("SELECT event_id, count(*) AS n FROM messages "
                                 "WHERE role = 'user' GROUP BY event_id")
        assert len(users) == events and all(r["n"] == 1 for r in users)
        answers = await conn.fetch("SELECT event_id, status, text FROM messages "
                                   "WHERE role = 'assistant'")
        assert len(answers) == events, answers
        assert all(r["status"] == "ok" and r["text"].startswith("echo: ") for r in answers)
    finally:
        await conn.close()


# --------------------------------------------------------------------------- items 1 and 2
@pytest.mark.parametrize("down", [2.0, 6.0])
async def test_slack_postgres_restart_while_answers_stream_answers_each_once(
    tmp_path: Path, cluster: Cluster, own_pg: str, model: EchoModel, slack: FakeSlack,
    session: aiohttp.ClientSession, down: float,
) -> None:
    """PostgreSQL goes away while 2 replicas stream answers in 16 conversations: each
    person sees one answer, no ":warning:" asking to try again; all of it is stored."""
    model.default = SLOW
    conversations = 16
    env = slack_env(own_pg, model, slack)
    async with replicas(["slack"], env, tmp_path, session) as pair:
        for n in range(conversations):
            assert await deliver(session, pair[n % 2], dm(f"question {n}", f"D{n}")) == 200
        await until(lambda: len(model.calls()) >= conversations, 30, "every turn to start")
        await asyncio.sleep(0.5)  # streaming now
        await outage(cluster, down)
        await check_stored(own_pg, conversations)
        await asyncio.sleep(1.0)  # nothing more turns up
        for n in range(conversations):
            texts = [m.text for m in replies_in(slack, f"D{n}")]
            assert texts == [f"echo: question {n}"], (n, texts)
        assert len(model.calls()) == conversations  # nobody answered twice
    for replica in pair:
        assert "Traceback" not in replica.logs()


async def test_slack_postgres_down_before_the_turn_starts_loses_nothing(
    tmp_path: Path, cluster: Cluster, own_pg: str, model: EchoModel, slack: FakeSlack,
    session: aiohttp.ClientSession,
) -> None:
    """The database fails in begin_turn (the message recorded, then PostgreSQL gone) and
    is back later: the message is stored and answered once, its event not closed unread."""
    env = slack_env(own_pg, model, slack, CHATBRIDGE_INBOX_POLL_SECONDS="0.2")
    async with replicas(["slack"], env, tmp_path, session, count=1) as (one,):
        # The author's name is looked up between claiming and storing the message: Slack
        # rate-limits that call for 2 s, and PostgreSQL goes away meanwhile.
        slack.rate_limit("users.info", retry_after=2)
        assert await deliver(session, one, dm("are you there?", "D1")) == 200
        await until(lambda: bool(slack.of("users.info")), 20, "the name lookup")
        await outage(cluster, 4.0)
        await check_stored(own_pg, 1)
        assert [m.text for m in replies_in(slack, "D1")] == ["echo: are you there?"]
        assert len(model.calls()) == 1


# --------------------------------------------------------------------------- item 3
async def test_one_replica_does_not_retake_a_conversation_it_is_answering(
    tmp_path: Path, cluster: Cluster, own_pg: str, model: EchoModel, slack: FakeSlack,
    session: aiohttp.ClientSession,
) -> None:
    """A 4 s lease, an 8 s outage during a 12 s stream: the lease runs out while the
    database is away, and the replica's own claim loop must not take it again."""
    model.default = Reply(text=ECHO, chunk_size=1, chunk_delay=0.6)
    env = slack_env(own_pg, model, slack, CHATBRIDGE_LEASE_SECONDS="4")
    async with replicas(["slack"], env, tmp_path, session, count=1) as (one,):
        for n in range(3):
            assert await deliver(session, one, dm(f"long {n}", f"D{n}")) == 200
        await until(lambda: len(model.calls()) >= 3, 30, "every turn to start")
        await asyncio.sleep(1.0)
        await outage(cluster, 8.0)
        await check_stored(own_pg, 3)
        await asyncio.sleep(1.5)
        assert len(model.calls()) == 3, model.calls()
        for n in range(3):
            assert [m.text for m in replies_in(slack, f"D{n}")] == [f"echo: long {n}"]
    assert "Traceback" not in one.logs()


# --------------------------------------------------------------------------- item 5
async def test_sigterm_on_a_long_turn_marks_the_message_and_the_retake_edits_it(
    tmp_path: Path, own_pg: str, model: EchoModel, slack: FakeSlack,
    session: aiohttp.ClientSession,
) -> None:
    """SIGTERM during a thread answer longer than the grace: the half-written message gets
    a notice and its stream is stopped; the other replica finishes the answer in it."""
    model.enqueue(Reply(text=ECHO, chunk_size=2, chunk_delay=0.4))
    config = tmp_path / "chatbridge.toml"
    config.write_text("[slack]\nstream_buffer = 1\n")  # every piece reaches Slack at once
    env = slack_env(own_pg, model, slack, CHATBRIDGE_SHUTDOWN_GRACE="1.5",
                    CHATBRIDGE_CONFIG=str(config))
    async with replicas(["slack"], env, tmp_path, session) as pair:
        ts = new_ts()
        assert await deliver(session, pair[0], mention("tell me a long story please",
                                                       channel="C5", ts=ts)) == 200
        await until(lambda: any(m.text for m in replies_in(slack, "C5", ts)), 30,
                    "the answer to start streaming")
        conn = await connect(own_pg)
        try:
            owner = await conn.fetchval("SELECT owner FROM inbox_leases")
            leaving = next(r for r in pair if r.pid == owner_pid(owner))
            leaving.proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(leaving.proc.wait, 20) == 0, leaving.logs()
            stopped = replies_in(slack, "C5", ts)
            assert len(stopped) == 1 and stopped[0].stopped, stopped
            stops = [c for c in slack.of("chat.stopStream") if c.args.get("ts") == stopped[0].ts]
            assert stops, slack.methods()
            assert "interrupted; the answer continues shortly" in str(stops[0].args)
            await until(lambda: replies_in(slack, "C5", ts)[0].text
                        == "echo: Ann: tell me a long story please", 30, "the retake's edit")
            await settled(conn, 1)
        finally:
            await conn.close()
        thread = replies_in(slack, "C5", ts)
        assert len(thread) == 1  # edited in place: one answer
        assert thread[0].blocks  # final, with its feedback buttons
        assert len(model.calls()) == 2
        assert not [m for m in slack.posted() if m.streamed and not m.stopped]


# --------------------------------------------------------------------------- item 6
async def test_slack_messages_recorded_out_of_order_are_answered_in_slack_order(
    tmp_path: Path, own_pg: str, model: EchoModel, slack: FakeSlack,
    session: aiohttp.ClientSession,
) -> None:
    """Two replicas record one conversation's messages in the other order than Slack's
    ``ts`` says: the batch and the stored history follow ``ts``."""
    env = slack_env(own_pg, model, slack)
    async with replicas(["slack"], env, tmp_path, session) as (a, b):
        model.enqueue(Reply(text=ECHO, delay=2.0))  # the first turn runs while 1, 2 come
        assert await deliver(session, a, dm("zero", "D9")) == 200
        await until(lambda: len(model.calls()) == 1, 20, "the first turn")
        one, two = new_ts(), new_ts()
        assert await deliver(session, a, dm("two", "D9", ts=two)) == 200  # recorded first
        assert await deliver(session, b, dm("one", "D9", ts=one)) == 200
        conn = await connect(own_pg)
        try:
            await settled(conn, 3)
            stored = await conn.fetch("SELECT text FROM messages WHERE role = 'user' "
                                      "ORDER BY sort_key")
        finally:
            await conn.close()
        calls = model.calls()
        assert [trailing_user(c) for c in calls] == [["zero"], ["one", "two"]], calls
        assert [r["text"] for r in stored] == ["zero", "one", "two"]


# --------------------------------------------------------------------------- Telegram
async def test_telegram_postgres_restart_while_answering_answers_once(
    tmp_path: Path, cluster: Cluster, own_pg: str, model: EchoModel, bot_api: FakeBotApi,
    session: aiohttp.ClientSession,
) -> None:
    """Telegram, a 6 s outage while the answer streams: no "I couldn't reach my memory",
    one answer."""
    model.default = SLOW
    env = telegram_env(own_pg, model, bot_api)
    async with replicas(["telegram", "--webhook"], env, tmp_path, session) as pair:
        update = tg_update(tg_message("what a day"))
        assert await deliver_update(session, pair[0], update) == 200
        await until(lambda: len(model.calls()) == 1, 20, "the turn to start")
        await asyncio.sleep(0.5)
        await outage(cluster, 6.0)
        await check_stored(own_pg, 1)
        await asyncio.sleep(1.0)
        assert bot_api.texts(ALICE["id"]) == ["echo: what a day"]
        assert len(model.calls()) == 1


async def test_telegram_final_send_that_timed_out_but_arrived_is_not_repeated(
    tmp_path: Path, own_pg: str, model: EchoModel, bot_api: FakeBotApi,
    session: aiohttp.ClientSession,
) -> None:
    """The final sendMessage takes effect but its answer stalls past the client's timeout
    (twice): the answer is shown once, and no "Sorry, something went wrong" follows."""
    env = telegram_env(own_pg, model, bot_api, CHATBRIDGE_TELEGRAM_TIMEOUT="2")
    async with replicas(["telegram", "--webhook"], env, tmp_path, session, count=1) as (one,):
        bot_api.stall("sendMessage", 6.0, times=2)
        assert await deliver_update(session, one, tg_update(tg_message("hello there"))) == 200
        conn = await connect(own_pg)
        try:
            await settled(conn, 1, within=60)
        finally:
            await conn.close()
        await asyncio.sleep(8)  # the stalled calls end; nothing else is sent
        assert bot_api.texts(ALICE["id"]) == ["echo: hello there"]


# --------------------------------------------------------------------------- retakes
async def test_slack_retake_after_sigkill_edits_the_message_the_dead_attempt_showed(
    tmp_path: Path, own_pg: str, model: EchoModel, slack: FakeSlack,
    session: aiohttp.ClientSession,
) -> None:
    """A replica killed while its answer is half shown in a DM: the heir's answer replaces
    that message instead of appearing as a second answer below it."""
    model.enqueue(Reply(text=ECHO, chunk_size=2, chunk_delay=0.4))
    env = slack_env(own_pg, model, slack, CHATBRIDGE_LEASE_SECONDS="3")
    async with replicas(["slack"], env, tmp_path, session) as pair:
        assert await deliver(session, pair[0], dm("half and half", "D3")) == 200
        await until(lambda: any(m.text for m in replies_in(slack, "D3")), 30,
                    "the answer to appear")
        conn = await connect(own_pg)
        try:
            await until(lambda: conn.fetchval("SELECT shown IS NOT NULL FROM inbound_events"),
                        10, "the shown message to be noted")
            owner = await conn.fetchval("SELECT owner FROM inbox_leases")
            dead = next(r for r in pair if r.pid == owner_pid(owner))
            dead.proc.kill()
            dead.proc.wait(10)
            half = replies_in(slack, "D3")[0].text
            assert half != "echo: half and half"
            await settled(conn, 1)
            ref = await conn.fetchval("SELECT platform_ref FROM messages "
                                      "WHERE role = 'assistant'")
        finally:
            await conn.close()
        posted = replies_in(slack, "D3")
        assert [m.text for m in posted] == ["echo: half and half"]  # the same message
        assert ref == f"D3/{posted[0].ts}"  # feedback on it reaches the stored answer
        assert len(model.calls()) == 2


async def test_telegram_retake_after_sigkill_edits_the_message_the_dead_attempt_showed(
    tmp_path: Path, own_pg: str, model: EchoModel, bot_api: FakeBotApi,
    session: aiohttp.ClientSession,
) -> None:
    """The same in a Telegram group (a first message, then edits)."""
    model.enqueue(Reply(text=ECHO, chunk_size=2, chunk_delay=0.4))
    env = telegram_env(own_pg, model, bot_api, CHATBRIDGE_LEASE_SECONDS="3")
    async with replicas(["telegram", "--webhook"], env, tmp_path, session) as pair:
        assert await deliver_update(session, pair[0], tg_update(tg_mention("go on"))) == 200
        await until(lambda: bool(bot_api.texts(GROUP["id"])), 30, "the answer to appear")
        conn = await connect(own_pg)
        try:
            await until(lambda: conn.fetchval("SELECT shown IS NOT NULL FROM inbound_events "
                                              "WHERE scope_key IS NOT NULL"),
                        10, "the shown message to be noted")
            owner = await conn.fetchval("SELECT owner FROM inbox_leases")
            dead = next(r for r in pair if r.pid == owner_pid(owner))
            dead.proc.kill()
            dead.proc.wait(10)
            await settled(conn, 1)
        finally:
            await conn.close()
        assert bot_api.texts(GROUP["id"]) == ["echo: Alice: go on"]
        assert len(bot_api.calls_to("sendMessage")) == 1  # the heir edited it
        assert len(model.calls()) == 2


async def test_telegram_sigterm_marks_the_message_and_the_retake_edits_it(
    tmp_path: Path, own_pg: str, model: EchoModel, bot_api: FakeBotApi,
    session: aiohttp.ClientSession,
) -> None:
    """SIGTERM during a group answer longer than the grace: the message shown so far gets
    the notice; the replica taking over edits it into the answer."""
    model.enqueue(Reply(text=ECHO, chunk_size=2, chunk_delay=0.4))
    env = telegram_env(own_pg, model, bot_api, CHATBRIDGE_SHUTDOWN_GRACE="1.5")
    async with replicas(["telegram", "--webhook"], env, tmp_path, session) as pair:
        assert await deliver_update(session, pair[0],
                                    tg_update(tg_mention("a long one please"))) == 200
        await until(lambda: bool(bot_api.texts(GROUP["id"])), 30, "the answer to appear")
        conn = await connect(own_pg)
        try:
            await until(lambda: conn.fetchval("SELECT shown IS NOT NULL FROM inbound_events "
                                              "WHERE scope_key IS NOT NULL"),
                        10, "the shown message to be noted")
            owner = await conn.fetchval("SELECT owner FROM inbox_leases")
            leaving = next(r for r in pair if r.pid == owner_pid(owner))
            leaving.proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(leaving.proc.wait, 20) == 0, leaving.logs()
            edits = [str(c.get("text")) for c in bot_api.calls_to("editMessageText")]
            assert any("interrupted; the answer continues shortly" in t for t in edits), edits
            await settled(conn, 1)
        finally:
            await conn.close()
        assert bot_api.texts(GROUP["id"]) == ["echo: Alice: a long one please"]
        assert len(bot_api.calls_to("sendMessage")) == 1
        assert len(model.calls()) == 2


async def test_telegram_messages_recorded_out_of_order_are_answered_in_telegram_order(
    tmp_path: Path, own_pg: str, model: EchoModel, bot_api: FakeBotApi,
    session: aiohttp.ClientSession,
) -> None:
    """Telegram's order is the date, then the message id, whichever replica records first."""
    env = telegram_env(own_pg, model, bot_api)
    async with replicas(["telegram", "--webhook"], env, tmp_path, session) as (a, b):
        model.enqueue(Reply(text=ECHO, delay=2.0))
        assert await deliver_update(session, a, tg_update(tg_message("zero"))) == 200
        await until(lambda: len(model.calls()) == 1, 20, "the first turn")
        one, two = tg_message("one"), tg_message("two")
        assert await deliver_update(session, a, tg_update(two)) == 200  # recorded first
        assert await deliver_update(session, b, tg_update(one)) == 200
        conn = await connect(own_pg)
        try:
            await settled(conn, 3)
        finally:
            await conn.close()
        assert [trailing_user(c) for c in model.calls()] == [["zero"], ["one", "two"]]
