"""Fault benchmark: a burst over 2 Slack replicas while PostgreSQL restarts (issue 10).

Two real ``chatbridge slack --port N`` processes share a throwaway PostgreSQL cluster
(``tests/pg.py``); the loopback model (``tests.fakes.model_server``, streaming each answer
over a fraction of a second) and the fake Slack Web API run in this process. The driver
POSTs signed direct-message events: ``--messages`` messages in ``--conversations``
conversations, a conversation's messages one after the other (each waits for the previous
one's HTTP 200), alternating between the replicas. A delivery the bot refuses (503 while
the database is away) is delivered again, with the same event id, as Slack does. During
the burst PostgreSQL is stopped as a crash would stop it (``pg_ctl stop -m immediate``) and
started again ``--restarts`` times, ``--down`` seconds each.

Printed: how many answers each message got (the turns that answered it whose reply Slack
shows; every message must have exactly 1), whether each conversation was answered in the
order it was written, the ``:warning:`` replies people saw, the messages stored (user and
assistant rows), the events left unfinished ("stuck") and the peak RSS of each replica
(VmHWM).

Run:  .venv/bin/python -m bench.bench_faults [--messages 200] [--conversations 50]
      [--restarts 2] [--down 3] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from slack_sdk.signature import SignatureVerifier

from bots.db import create_engine, upgrade
from tests.bots.slack.fake_slack import TEAM, TOKEN, FakeSlack
from tests.fakes.model_server import Reply
from tests.pg import Cluster
from tests.test_replicas import ECHO, EchoModel, trailing_user

SECRET = "bench-signing-secret"
HOST = "127.0.0.1"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def vm_kib(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` figure in KiB (VmRSS, VmHWM), 0 if unreadable."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def replica_env(db_url: str, model: EchoModel, slack: FakeSlack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CHATBRIDGE_", "DASHSCOPE_", "SLACK_", "TELEGRAM_"))
           and not k.lower().endswith("_proxy")}
    env.update({
        "CHATBRIDGE_DATABASE_URL": db_url, "CHATBRIDGE_MODEL_BASE_URL": model.openai_base,
        "CHATBRIDGE_MODEL_API_KEY": "", "CHATBRIDGE_MODEL": "qwen-plus",
        "CHATBRIDGE_RETRY_SECONDS": "1", "CHATBRIDGE_LEASE_SECONDS": "20",
        "CHATBRIDGE_INBOX_POLL_SECONDS": "0.2", "CHATBRIDGE_LOG_LEVEL": "INFO",
        "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET,
        "CHATBRIDGE_SLACK_API_URL": slack.api_url,
    })
    return env


class Replica:
    """One ``chatbridge slack`` process."""

    def __init__(self, env: dict[str, str], work: Path, n: int) -> None:
        self.port = free_port()
        where = work / f"r{n}"
        where.mkdir(parents=True, exist_ok=True)
        self.log = where / "replica.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bots.cli", "slack", "--port", str(self.port)],
                cwd=where, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT)
        self.url = f"http://{HOST}:{self.port}"

    async def ready(self, session: aiohttp.ClientSession, within: float = 60) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"replica exited:\n{self.log.read_text()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(self.url + "/readyz",
                                       timeout=aiohttp.ClientTimeout(total=3)) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise RuntimeError("replica not ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


def envelope(event: dict[str, Any], event_id: str) -> bytes:
    return json.dumps({
        "token": "t", "team_id": TEAM, "api_app_id": "A0APP", "event": event,
        "type": "event_callback", "event_id": event_id, "event_time": int(time.time()),
        "authorizations": [{"enterprise_id": None, "team_id": TEAM, "user_id": "UBOT",
                            "is_bot": True, "is_enterprise_install": False}],
    }).encode()


async def deliver(session: aiohttp.ClientSession, url: str, event: dict[str, Any],
                  event_id: str, refused: Counter[int]) -> None:
    """POST until the bot takes it (HTTP 200), as Slack redelivers a failed event."""
    raw = envelope(event, event_id)
    deadline = time.monotonic() + 120
    while True:
        stamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": stamp,
                   "X-Slack-Signature": SignatureVerifier(SECRET).generate_signature(
                       timestamp=stamp, body=raw)}
        status = 0
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.post(url + "/slack/events", data=raw, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=30)) as resp:
                status = resp.status
        if status == 200:
            return
        refused[status] += 1
        if time.monotonic() > deadline:
            raise RuntimeError(f"{event_id} never taken (last status {status})")
        await asyncio.sleep(0.5)


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    cluster = Cluster(crash_safe=True)
    replicas: list[Replica] = []
    try:
        engine = create_engine(cluster.url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()
        with EchoModel() as model, FakeSlack() as slack:
            model.default = Reply(text=ECHO, chunk_size=4, chunk_delay=args.chunk_delay)
            env = replica_env(cluster.url, model, slack)
            replicas = [Replica(env, work, n) for n in range(2)]
            async with aiohttp.ClientSession() as session:
                await asyncio.gather(*(r.ready(session) for r in replicas))
                result = await burst(args, cluster, model, slack, replicas, session)
            result["peak_rss_kib"] = [vm_kib(r.proc.pid, "VmHWM") for r in replicas]
            result["logs"] = [str(r.log) for r in replicas]
            text = "".join(r.log.read_text(errors="replace") for r in replicas)
            # How often a turn met the outage and waited for the database (one line per
            # write that had to wait), and how often a delivery could not be recorded.
            result["turn_writes_waited"] = text.count("until the database is back")
            result["deliveries_not_recorded"] = text.count("Slack will deliver it again")
            return result
    finally:
        for replica in replicas:
            replica.stop()
        cluster.stop()


async def burst(args: argparse.Namespace, cluster: Cluster, model: EchoModel,
                slack: FakeSlack, replicas: Sequence[Replica],
                session: aiohttp.ClientSession) -> dict[str, Any]:
    per = args.messages // args.conversations
    refused: Counter[int] = Counter()
    sent: dict[str, list[str]] = defaultdict(list)
    gate = asyncio.Semaphore(args.senders)

    async def converse(n: int) -> None:
        channel = f"D{n:03d}"
        for k in range(per):
            text = f"{channel} message {k}"
            ts = f"1720000000.{n * 1000 + k:06d}"
            event = {"type": "message", "user": f"U{n}", "text": text, "ts": ts,
                     "event_ts": ts, "channel": channel, "channel_type": "im", "team": TEAM}
            async with gate:
                await deliver(session, replicas[(n + k) % 2].url, event, f"Ev{n:03d}{k:03d}",
                              refused)
            sent[channel].append(text)

    async def outages() -> list[float]:
        began, marks = time.monotonic(), []
        for i in range(args.restarts):
            await asyncio.sleep(args.first if i == 0 else args.every)
            marks.append(round(time.monotonic() - began, 1))
            await asyncio.to_thread(cluster.stop_server)
            await asyncio.sleep(args.down)
            await asyncio.to_thread(cluster.start_server)
        return marks

    began = time.monotonic()
    faults = asyncio.create_task(outages())
    await asyncio.gather(*(converse(n) for n in range(args.conversations)))
    marks = await faults
    sending = time.monotonic() - began
    conn = await asyncpg.connect(cluster.url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        deadline = time.monotonic() + args.settle
        while time.monotonic() < deadline:
            open_events = await conn.fetchval(
                "SELECT count(*) FROM inbound_events WHERE scope_key IS NOT NULL "
                "AND status IN ('received', 'processing')")
            if open_events == 0:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # anything late (a duplicate) has time to show
        answered = time.monotonic() - began
        statuses = {r["status"]: r["n"] for r in await conn.fetch(
            "SELECT status, count(*) AS n FROM inbound_events WHERE scope_key IS NOT NULL "
            "GROUP BY status")}
        roles = {r["role"]: r["n"] for r in await conn.fetch(
            "SELECT role, count(*) AS n FROM messages GROUP BY role")}
        duplicates = await conn.fetchval(
            "SELECT count(*) FROM (SELECT event_id FROM messages WHERE role = 'user' "
            "GROUP BY event_id HAVING count(*) > 1) d")
    finally:
        await conn.close()
    # Which messages each turn answered (the model call's trailing user messages) and
    # which replies Slack shows: "echo: <the turn's last message>".
    turns: dict[str, list[list[str]]] = defaultdict(list)
    for call in model.calls():
        batch = trailing_user(call)
        if batch:
            turns[batch[-1].split()[0]].append(batch)
    # A reply counts as an answer seen whatever follows it (a warning, a notice).
    shown = Counter(m.text.split("\n\n")[0] for m in slack.posted())
    seen: Counter[str] = Counter()
    in_order = 0
    for channel, texts in sent.items():
        answering: dict[str, set[str]] = defaultdict(set)  # message -> its turns' last
        for batch in turns[channel]:
            for text in batch:
                answering[text].add(batch[-1])
        for text, lasts in answering.items():
            seen[text] = sum(shown.get("echo: " + last, 0) for last in lasts)
        order = [t for batch in turns[channel] for t in batch]
        in_order += order == texts
    every = [t for texts in sent.values() for t in texts]
    per_message = Counter(seen[t] for t in every)
    warnings = sum(1 for m in slack.posted() if ":warning:" in m.text)
    return {
        "messages": len(every), "conversations": args.conversations,
        "restarts_at_s": marks, "down_s": args.down, "refused_deliveries": dict(refused),
        "answers_per_message": dict(sorted(per_message.items())),
        "conversations_in_order": in_order, "model_calls": len(model.calls()),
        "slack_messages": len(slack.posted()), "warnings_shown": warnings,
        "stored": roles, "user_rows_twice": duplicates, "events": statuses,
        "stuck_events": statuses.get("received", 0) + statuses.get("processing", 0),
        "sent_s": round(sending, 1), "answered_s": round(answered, 1),
    }


def report(result: dict[str, Any]) -> str:
    rss = ", ".join(f"{kib / 1024:.0f} MiB" for kib in result["peak_rss_kib"])
    return "\n".join([
        f"burst: {result['messages']} messages in {result['conversations']} conversations "
        f"over 2 replicas; PostgreSQL stopped at {result['restarts_at_s']} s for "
        f"{result['down_s']} s each",
        f"deliveries refused (redelivered): {result['refused_deliveries']}; turn writes that "
        f"waited for the database: {result['turn_writes_waited']}",
        f"answers seen per message: {result['answers_per_message']} "
        "(must be {1: N}: every message answered exactly once)",
        f"conversations answered in the order written: {result['conversations_in_order']}"
        f"/{result['conversations']}",
        f"model calls: {result['model_calls']}; Slack messages: {result['slack_messages']}; "
        f":warning: replies: {result['warnings_shown']}",
        f"stored: {result['stored']}; user messages stored twice: {result['user_rows_twice']}",
        f"events: {result['events']}; stuck: {result['stuck_events']}",
        f"sent in {result['sent_s']} s; all answered after {result['answered_s']} s",
        f"peak RSS per replica: {rss}",
    ])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.bench_faults", description=__doc__.split(
        "\n", 1)[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--senders", type=int, default=16, help="deliveries in flight")
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--down", type=float, default=3.0, help="seconds PostgreSQL is down")
    parser.add_argument("--first", type=float, default=1.5,
                        help="seconds into the burst of the first stop")
    parser.add_argument("--every", type=float, default=4.0,
                        help="seconds between a restart and the next stop")
    parser.add_argument("--chunk-delay", type=float, default=0.1,
                        help="seconds between streamed pieces of each answer")
    parser.add_argument("--settle", type=float, default=180.0)
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fault benchmark; 0 if every message was answered exactly once."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chatbridge-faults-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
        print(report(result))
        ok = (set(result["answers_per_message"]) == {1} and not result["stuck_events"]
              and not result["warnings_shown"] and not result["user_rows_twice"])
        if not ok:
            for log in result["logs"]:
                print(f"--- {log}\n{Path(log).read_text(errors='replace')[-4000:]}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
