"""Benchmark: Slack turns per second over 1 and 2 replicas, and memory per waiting conversation.

Every replica is a real ``chatbridge slack --port N`` process; around them run the loopback
model server (``tests.fakes.model_server``, its own process), a fake Slack Web API (its own
process: the tests' ``FakeSlack`` answers, served by aiohttp, answering any user and
counting final replies) and the database (a SQLite file shared by the replicas in WAL
mode, or a throwaway PostgreSQL cluster; a new database for each configuration).

(A) throughput: the driver POSTs signed direct-message events (Slack's Events API, signed
    as Slack signs them) for C conversations x M messages, at most ``--senders`` requests
    at a time, a conversation's messages in order, round-robin over the replicas (so a
    conversation's messages land on different replicas). Each conversation is another
    person, so each replica also looks their name up once (users.info). The model answers
    at once. Measured from the first POST to the last final reply the fake Slack sees (a
    reply carrying its feedback buttons): messages/s, turns/s (messages that reach a
    conversation while its turn runs are answered together in one turn, so turns <=
    messages; turns are counted in the database as stored answers), the acknowledgement
    (HTTP 200) latency, median and 95th percentile, and the CPU time per turn of the
    replicas and of every process taking part (PostgreSQL's server on its own). The
    replicas run as ``python -m bench.counted slack``, which counts their SQL statements,
    commits and — on PostgreSQL — server round trips (every request asyncpg waits on);
    the table shows them per turn. ``--seed N`` first fills the database with N past
    conversations (``bench.seed``: bulk SQL, then ANALYZE), so a fresh database and one
    that has served for months can be compared (``--seed 0,50000``). Each configuration
    runs ``--repeats`` times after a warm-up; the table shows medians (and the turns/s
    range).
(C) latency with no load: after the warm-up, ``--latency`` messages (default 20) are sent
    one at a time, each in a new DM of one person (looked up once, before), and each
    is timed from its POST to the fake model receiving its turn's request (the fake
    model notes when, on CLOCK_MONOTONIC: ``/_fake/last``); p50 and p95 per database.
(B) memory: one replica with CHATBRIDGE_CONCURRENCY=N and a model that waits
    ``--memory-delay`` seconds before answering. Once ``--memory-baseline`` conversations
    wait on the model (the fake model counts its open requests), the replica's RSS is read
    (/proc/PID/status VmRSS); then more conversations are started until N =
    ``--memory-conversations`` wait, and RSS is read again: (RSS_N - RSS_baseline) /
    (N - baseline) is what one waiting conversation costs. The replica is then killed.

Run:  .venv/bin/python -m bench.bench_replicas [--quick] [--json results.json]
      [--databases sqlite,postgres] [--replicas 1,2] [--load 200x1 --load 50x4]
      [--repeats 3] [--seed 0,50000] [--latency 20] [--senders 32]
      [--memory-conversations 1000]
      [--memory-delay 240]
      [--no-throughput] [--no-memory] [--postgres-url URL] [--keep] [--profile DIR]
Without --postgres-url (or CHATBRIDGE_BENCH_POSTGRES_URL) a throwaway PostgreSQL cluster
is started from the installed binaries (tests/pg.py). A full run takes about 5-10 minutes
on 2 cores; ``--quick`` about a minute. The processes' logs are kept when a run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from slack_sdk.signature import SignatureVerifier

from bench.databases import new_database as create_database
from bench.databases import postgres_cluster
from bots.local_model import free_port
from tests.bots.slack.fake_slack import BOT_ID, BOT_USER, TEAM, TOKEN, FakeSlack

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-signing-secret-0123456789ab"
PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


# ------------------------------------------------------------------------ the fake Slack
class BenchSlack(FakeSlack):
    """The tests' fake Slack Web API, lean for a benchmark: it keeps counts, not calls.

    A final reply is a message call that carries the feedback buttons (what the bot adds
    when an answer is complete); a ``:warning:`` message is a failed turn. The driver
    reads the counts with ``bench.stats``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stats: dict[str, Any] = {"calls": 0, "finals": 0, "warnings": 0,
                                      "last_final": None, "by_method": {}}

    def answer(self, method: str, args: dict[str, Any], headers: dict[str, str]
               ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        if method == "bench.stats":
            with self._lock:
                return 200, {"ok": True, **self.stats}, {}
        if headers.get("authorization") != f"Bearer {TOKEN}":
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        channel = str(args.get("channel") or args.get("channel_id") or "")
        blocks = args.get("blocks") or []
        final = isinstance(blocks, list) and any(
            isinstance(b, dict) and b.get("type") == "context_actions" for b in blocks)
        text = str(args.get("text") or args.get("markdown_text") or "")
        with self._lock:
            st = self.stats
            st["calls"] += 1
            st["by_method"][method] = st["by_method"].get(method, 0) + 1
            if final:
                now = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
                st["finals"] += 1
                st["last_final"] = now
            elif ":warning:" in text:
                st["warnings"] += 1
            ts = self._new_ts()
        if method == "auth.test":
            return 200, {"ok": True, "url": "https://bench.slack.com/", "team": "Bench",
                         "user": "chatbridge", "team_id": TEAM, "user_id": BOT_USER,
                         "bot_id": BOT_ID}, {}
        if method == "users.info":
            user = str(args.get("user"))
            return 200, {"ok": True, "user": {"id": user, "name": user.lower(),
                                              "profile": {"display_name": user}}}, {}
        if method in ("chat.postMessage", "chat.startStream"):
            return 200, {"ok": True, "channel": channel, "ts": ts,
                         "message": {"type": "message", "text": text, "bot_id": BOT_ID,
                                     "ts": ts}}, {}
        if method in ("chat.update", "chat.appendStream", "chat.stopStream"):
            return 200, {"ok": True, "channel": channel, "ts": str(args.get("ts"))}, {}
        return 200, {"ok": True}, {}


def serve_fake_slack() -> None:
    """Serve ``BenchSlack`` until killed (the ``--serve-fake-slack`` mode of this module).

    The tests serve the fake with the standard library's threaded HTTP server, which
    answers about 300 calls/s on a small machine (a new thread, and an email-module header
    parse, per connection): about 100 turns/s at three Web API calls a turn, close to what
    two replicas ask for. Here the same ``answer`` is served by aiohttp, parsing requests
    as the fake's handler does (query string, then a JSON or form body).
    """
    from aiohttp import web

    slack = BenchSlack()
    slack._httpd.server_close()  # its threaded server is not used

    async def api(request: web.Request) -> web.Response:
        args: dict[str, Any] = dict(request.query)
        raw = await request.read()
        if raw and request.content_type == "application/json":
            args.update(json.loads(raw))
        elif raw:
            args.update(dict(parse_qsl(raw.decode(), keep_blank_values=True)))
        for key in ("blocks", "chunks", "prompts"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        headers = {k.lower(): v for k, v in request.headers.items()}
        status, payload, extra = slack.answer(request.match_info["method"], args, headers)
        return web.json_response(payload, status=status, headers=extra)

    async def serve() -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", api)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port = runner.addresses[0][1]
        print(f"http://127.0.0.1:{port}/api/", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


# ------------------------------------------------------------------------ processes
class Proc:
    """A child process with its output in a log file; stopped politely, then killed."""

    def __init__(self, name: str, cmd: list[str], *, env: dict[str, str], cwd: Path,
                 logdir: Path, stdout_pipe: bool = False) -> None:
        self.name = name
        self.log = logdir / f"{name}.log"
        self._log = self.log.open("wb")
        self.popen = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self._log, stderr=self._log,
            text=stdout_pipe)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def first_line(self, timeout: float = 30.0) -> str:
        """The first line the process prints (its address)."""
        stdout = self.popen.stdout
        assert stdout is not None
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not out or not out[0]:
            raise RuntimeError(f"{self.name} printed nothing; see {self.log}:\n{self.tail()}")
        return out[0].strip()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, grace: float = 30.0, *, kill: bool = False) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._log.close()


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child: no proxies and none of the caller's chatbridge or
    Slack settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in PROXIES
           and not k.startswith(("CHATBRIDGE_", "SLACK_", "DASHSCOPE_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def rss_kib(pid: int) -> int:
    """The process's resident set size (VmRSS) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """User + system CPU time the process has used so far (``reaped``: and its children
    that ended and were waited for)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def children(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (PostgreSQL's backends)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == parent:
                    found.append(int(entry.name))
    return found


Pids = list[int] | Callable[[], float]


class CpuMeter:
    """CPU seconds used by groups of processes (and this one) between two points.

    A group is a list of pids, or a function that reads the group's CPU seconds so far
    (PostgreSQL: ``Postgres.cpu``).
    """

    def __init__(self, groups: dict[str, Pids]) -> None:
        self.groups = groups
        self._start = self._read()

    def _read(self) -> dict[str, float]:
        got = {"driver": time.process_time()}
        for name, pids in self.groups.items():
            if callable(pids):
                got[name] = pids()
                continue
            got[name] = 0.0
            for pid in pids:
                with contextlib.suppress(OSError):
                    got[name] += cpu_seconds(pid)
        return got

    def used(self) -> dict[str, float]:
        end = self._read()
        return {name: end[name] - self._start[name] for name in end}


async def wait_http(session: aiohttp.ClientSession, url: str, proc: Proc,
                    within: float = 60.0) -> None:
    """Wait until ``url`` answers 200 (or the process dies)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited; see {proc.log}:\n{proc.tail()}")
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not come up at {url}; see {proc.log}:\n{proc.tail()}")


class Fakes:
    """The fake model server (its own process) and the fake Slack (its own process)."""

    def __init__(self, logdir: Path, *, delay: float = 0.0, tag: str = "") -> None:
        port = free_port()
        cmd = [sys.executable, "-m", "tests.fakes.model_server", "--port", str(port)]
        if delay:
            cmd += ["--delay", str(delay)]
        self.model = Proc(f"model{tag}", cmd, env=child_env(), cwd=ROOT, logdir=logdir)
        self.model_url = f"http://127.0.0.1:{port}"
        self.slack = Proc(f"slack-api{tag}", [sys.executable, "-m", "bench.bench_replicas",
                                              "--serve-fake-slack"],
                          env=child_env(), cwd=ROOT, logdir=logdir, stdout_pipe=True)
        try:
            self.slack_api = self.slack.first_line()
        except BaseException:
            self.stop()
            raise

    async def ready(self, session: aiohttp.ClientSession) -> None:
        await wait_http(session, self.model_url + "/_fake/stats", self.model)

    def stop(self) -> None:
        self.slack.stop(5)
        self.model.stop(5)


class Replicas:
    """``n`` ``chatbridge slack`` processes on one database."""

    def __init__(self, n: int, db_url: str, fakes: Fakes, logdir: Path, workdir: Path,
                 *, tag: str, profile: str | None = None, **settings: str) -> None:
        self.ports = [free_port() for _ in range(n)]
        self.urls = [f"http://127.0.0.1:{p}/slack/events" for p in self.ports]
        env = child_env(
            CHATBRIDGE_DATABASE_URL=db_url,
            CHATBRIDGE_MODEL_BASE_URL=fakes.model_url + "/compatible-mode/v1",
            CHATBRIDGE_MODEL_API_KEY="", CHATBRIDGE_MODEL="qwen-plus",
            SLACK_BOT_TOKEN=TOKEN, SLACK_SIGNING_SECRET=SECRET,
            CHATBRIDGE_SLACK_API_URL=fakes.slack_api, CHATBRIDGE_LOG_LEVEL="WARNING",
            **settings)
        workdir.mkdir(parents=True, exist_ok=True)  # no .env or chatbridge.toml there
        self.procs = []
        self.count_files = []
        for i, port in enumerate(self.ports):
            name = f"replica{tag}-{i}"
            python = [sys.executable]
            if profile:  # cProfile writes its file when the replica exits on SIGTERM
                python += ["-m", "cProfile", "-o", str(Path(profile) / f"{name}.prof")]
            counts = logdir / f"{name}.counts.json"
            self.count_files.append(counts)
            # bench.counted: `chatbridge` with counters of its statements and round trips
            self.procs.append(Proc(name, [*python, "-m", "bench.counted", "slack", "--port",
                                          str(port)],
                                   env={**env, "CHATBRIDGE_BENCH_COUNTS": str(counts)},
                                   cwd=workdir, logdir=logdir))

    def counts(self) -> dict[str, int]:
        """The replicas' database counters so far (bench.counted), summed."""
        total: dict[str, int] = {}
        for path in self.count_files:
            with contextlib.suppress(OSError, ValueError):
                for key, value in json.loads(path.read_text()).items():
                    total[key] = total.get(key, 0) + int(value)
        return total

    async def ready(self, session: aiohttp.ClientSession) -> None:
        await asyncio.gather(*(wait_http(session, f"http://127.0.0.1:{port}/healthz", proc)
                               for port, proc in zip(self.ports, self.procs, strict=True)))

    def stop(self, *, kill: bool = False) -> None:
        for proc in self.procs:
            if proc.alive():
                proc.popen.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        for proc in self.procs:
            proc.stop(40)


# ------------------------------------------------------------------------ databases
@dataclass
class Postgres:
    url: str
    pid: int | None = None  # the postmaster, when it is our throwaway cluster

    def cpu(self) -> float:
        """CPU seconds of the server so far: the postmaster, the backends that ended
        (reaped by it) and the running ones."""
        if self.pid is None:
            return 0.0
        total = cpu_seconds(self.pid, reaped=True)
        for pid in children(self.pid):
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total


@contextlib.contextmanager
def postgres_server(url: str | None) -> Iterator[Postgres]:
    """A PostgreSQL server: the given one, or a throwaway cluster (tests/pg.py)."""
    with postgres_cluster(url) as (server, pid):
        yield Postgres(server, pid)


async def new_database(kind: str, workdir: Path, pg: Postgres | None, seeded: int = 0) -> str:
    """A new, migrated database with ``seeded`` past conversations; returns its URL."""
    from bench.seed import seed
    from bots.db import create_engine

    url = await create_database(kind, workdir, pg.url if pg else None)
    engine = create_engine(url)
    try:
        began = time.monotonic()
        await seed(engine, seeded)
        if seeded:
            print(f"  {kind:<10} seeded {seeded} past conversations in "
                  f"{time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
    finally:
        await engine.dispose()
    return url


class Counts:
    """Reads the turn and message counts from the database."""

    def __init__(self, url: str) -> None:
        from bots.db import create_engine

        self.engine = create_engine(url)

    async def read(self) -> tuple[int, int, int]:
        """(user messages, assistant messages, events still waiting)."""
        from sqlalchemy import text

        async with self.engine.connect() as conn:
            row = (await conn.execute(text(
                "SELECT (SELECT count(*) FROM messages WHERE role = 'user'),"
                " (SELECT count(*) FROM messages WHERE role = 'assistant'),"
                " (SELECT count(*) FROM inbound_events"
                "  WHERE status IN ('received', 'processing'))"))).one()
        return int(row[0]), int(row[1]), int(row[2])

    async def sessions(self) -> int | None:
        """PostgreSQL: connections ever opened to the server (``None`` on SQLite)."""
        from sqlalchemy import text

        if self.engine.dialect.name != "postgresql":
            return None
        async with self.engine.connect() as conn:
            return int((await conn.execute(text(
                "SELECT coalesce(sum(sessions), 0) FROM pg_stat_database"))).scalar_one())

    async def close(self) -> None:
        await self.engine.dispose()


# ------------------------------------------------------------------------ the driver
@dataclass
class Load:
    conversations: int
    messages: int  # per conversation

    @classmethod
    def parse(cls, text: str) -> Load:
        c, _, m = text.lower().partition("x")
        return cls(int(c), int(m or 1))

    def __str__(self) -> str:
        return f"{self.conversations}x{self.messages}"


@dataclass
class Run:
    messages: int
    turns: int
    seconds: float
    acks: int
    ack_p50_ms: float
    ack_p95_ms: float
    not_200: int
    replies: int  # final replies posted: more than turns would be an answer given twice
    warnings: int
    slack_calls: int
    cpu_ms_per_turn: dict[str, float] = field(default_factory=dict)  # by process group
    db_connections: int | None = None  # PostgreSQL: connections opened during the run
    # The replicas' statements, commits and (PostgreSQL) server round trips, per turn
    db_per_turn: dict[str, float] = field(default_factory=dict)

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds

    @property
    def turns_per_s(self) -> float:
        return self.turns / self.seconds


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Driver:
    """Sends signed Slack events and watches the fake Slack for the replies."""

    def __init__(self, session: aiohttp.ClientSession, slack_api: str,
                 cpu_groups: dict[str, Pids] | None = None,
                 db_counts: Callable[[], dict[str, int]] | None = None) -> None:
        self.session = session
        self.slack_api = slack_api
        self.cpu_groups = cpu_groups or {}
        self.db_counts = db_counts or dict
        self.verifier = SignatureVerifier(SECRET)
        self._ids = itertools.count(1)

    async def slack(self, method: str) -> dict[str, Any]:
        async with self.session.post(self.slack_api + method) as resp:
            return dict(await resp.json())

    def _bodies(self, tag: str, load: Load, first: int = 0) -> list[list[tuple[bytes, str]]]:
        """Per conversation, its messages' (body, timestamp) in order; DMs from one user."""
        stamp = str(int(time.time()))
        convs = []
        for c in range(first, first + load.conversations):
            channel, user = f"D{tag}{c:06d}", f"U{tag}{c:06d}"
            msgs = []
            for k in range(load.messages):
                n = next(self._ids)
                ts = f"{1_700_000_000 + n}.{n % 1_000_000:06d}"
                event = {"type": "message", "user": user, "text": f"question {k + 1} of {c}",
                         "ts": ts, "event_ts": ts, "channel": channel, "channel_type": "im",
                         "team": TEAM}
                body = {"token": "verification-token", "team_id": TEAM, "api_app_id": "A0APP",
                        "event": event, "type": "event_callback",
                        "event_id": f"Ev{tag}{n:08d}", "event_time": int(stamp),
                        "authorizations": [{"enterprise_id": None, "team_id": TEAM,
                                            "user_id": BOT_USER, "is_bot": True,
                                            "is_enterprise_install": False}],
                        "is_ext_shared_channel": False}
                msgs.append((json.dumps(body).encode(), stamp))
            convs.append(msgs)
        return convs

    async def send(self, urls: Sequence[str], convs: list[list[tuple[bytes, str]]],
                   senders: int) -> tuple[list[float], int]:
        """POST every message (a conversation's in order, each after the previous one is
        acknowledged), at most ``senders`` at a time, round-robin over ``urls``.
        Returns the acknowledgement latencies (s) and how many were not 200."""
        gate = asyncio.Semaphore(senders)
        turn = itertools.count()
        latencies: list[float] = []
        failed = 0

        async def post(raw: bytes, stamp: str) -> None:
            nonlocal failed
            headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": stamp,
                       "X-Slack-Signature": self.verifier.generate_signature(
                           timestamp=stamp, body=raw.decode()) or ""}
            url = urls[next(turn) % len(urls)]
            for _attempt in range(4):  # as Slack would: a failed delivery comes again
                began = time.perf_counter()
                try:
                    async with self.session.post(url, data=raw, headers=headers) as resp:
                        await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                latencies.append(time.perf_counter() - began)
                if status == 200:
                    return
                failed += 1
                await asyncio.sleep(0.2)

        async def conversation(msgs: list[tuple[bytes, str]]) -> None:
            for raw, stamp in msgs:
                async with gate:
                    await post(raw, stamp)

        await asyncio.gather(*(conversation(m) for m in convs))
        return latencies, failed

    async def finished(self, counts: Counts, base: tuple[int, int], finals_before: int,
                       load: Load, within: float) -> tuple[dict[str, Any], int]:
        """Wait until every message of the run is answered; the fake Slack's stats then,
        and the number of turns (assistant messages stored) in the run."""
        deadline = time.monotonic() + within
        messages = load.conversations * load.messages
        while True:
            st = await self.slack("bench.stats")
            users, assistants, waiting = None, None, None
            # Every conversation takes one turn at least: the database is asked only then.
            if st["finals"] + st["warnings"] - finals_before >= load.conversations:
                users, assistants, waiting = await counts.read()
                turns = assistants - base[1]
                if (users - base[0] >= messages and waiting == 0
                        and st["finals"] + st["warnings"] - finals_before >= turns):
                    return st, turns
            if time.monotonic() > deadline:
                raise RuntimeError(f"run did not finish in {within:.0f}s: slack {st}, "
                                   f"db users/assistants/waiting {users}/{assistants}/{waiting}")
            await asyncio.sleep(0.05)

    async def latency(self, urls: Sequence[str], model_url: str, n: int, tag: str
                      ) -> list[float]:
        """With nothing else to do: seconds from a message's POST to the model request
        of its turn (the fake model notes each arrival, CLOCK_MONOTONIC), one message
        at a time, each in a new conversation, each answered before the next."""
        found = []
        # One person (looked up once, in a first message not timed), in new DMs each time.
        bodies = self._bodies(tag, Load(n + 1, 1))
        person = json.loads(bodies[0][0][0])["event"]["user"]
        for i, [(raw, stamp)] in enumerate(bodies):
            body = json.loads(raw)
            body["event"]["user"] = person
            raw = json.dumps(body).encode()
            finals = (await self.slack("bench.stats"))["finals"]
            began = time.monotonic()
            await self.send([urls[i % len(urls)]], [[(raw, stamp)]], 1)
            while True:
                async with self.session.get(model_url + "/_fake/last") as resp:
                    at = float((await resp.json())["at"])
                if at > began:
                    if i:
                        found.append(at - began)
                    break
                await asyncio.sleep(0.001)
            while (await self.slack("bench.stats"))["finals"] <= finals:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        return found

    async def run(self, urls: Sequence[str], counts: Counts, load: Load, senders: int,
                  tag: str, within: float = 300.0) -> Run:
        convs = self._bodies(tag, load)
        users, assistants, _ = await counts.read()
        before = await self.slack("bench.stats")
        finals_before = before["finals"] + before["warnings"]
        sessions = await counts.sessions()
        await asyncio.sleep(0.3)  # the counters are written every 0.2 s
        db_before = self.db_counts()
        meter = CpuMeter(self.cpu_groups)
        began = time.monotonic()
        latencies, not_200 = await self.send(urls, convs, senders)
        st, turns = await self.finished(counts, (users, assistants), finals_before, load,
                                        within)
        cpu = meter.used()  # (includes the last polls: a few ms)
        opened = None if sessions is None else (await counts.sessions() or 0) - sessions - 1
        await asyncio.sleep(0.3)  # (and the replicas' idle polls meanwhile)
        db_after = self.db_counts()
        db = {k: (db_after.get(k, 0) - db_before.get(k, 0)) / max(turns, 1)
              for k in ("statements", "commits", "round_trips") if k in db_after}
        return Run(
            messages=load.conversations * load.messages, turns=turns,
            seconds=st["last_final"] - began,
            acks=len(latencies), ack_p50_ms=statistics.median(latencies) * 1000,
            ack_p95_ms=percentile(latencies, 0.95) * 1000, not_200=not_200,
            replies=st["finals"] - before["finals"], warnings=st["warnings"] - before["warnings"],
            slack_calls=st["calls"] - before["calls"],
            cpu_ms_per_turn={k: v * 1000 / max(turns, 1) for k, v in cpu.items()},
            db_connections=opened, db_per_turn=db,
        )


# ------------------------------------------------------------------------ (A) throughput
@dataclass
class Throughput:
    database: str
    replicas: int
    load: str
    seeded: int = 0  # past conversations in the database before the runs
    latency_ms: dict[str, float] = field(default_factory=dict)  # POST -> model, no load
    runs: list[dict[str, Any]] = field(default_factory=list)
    median: dict[str, float] = field(default_factory=dict)


async def throughput(kind: str, n: int, loads: Sequence[Load], args: argparse.Namespace,
                     work: Path, pg: Postgres | None, seeded: int = 0) -> list[Throughput]:
    """Start ``n`` replicas on a new database (with ``seeded`` past conversations) and
    run every load ``--repeats`` times."""
    url = await new_database(kind, work, pg, seeded)
    tag = f"{kind[:2]}{n}s{seeded}"
    fakes = Fakes(work, tag=f"-{tag}")
    replicas: Replicas | None = None
    counts = Counts(url)
    results = [Throughput(kind, n, str(load), seeded) for load in loads]
    try:
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=max(args.senders, 8) + 8)) as session:
            await fakes.ready(session)
            replicas = Replicas(n, url, fakes, work, work / f"cwd-{tag}", tag=f"-{tag}",
                                profile=args.profile)
            await replicas.ready(session)
            groups: dict[str, Pids] = {
                "replicas": [p.pid for p in replicas.procs], "fake_slack": [fakes.slack.pid],
                "fake_model": [fakes.model.pid]}
            if kind == "postgres" and pg is not None and pg.pid is not None:
                groups["postgres"] = pg.cpu
            driver = Driver(session, fakes.slack_api, groups, replicas.counts)
            await driver.run(replicas.urls, counts, Load(10 * n, 1), args.senders,
                             tag + "w")  # warm-up: imports, connections, statement caches
            if args.latency:
                took = await driver.latency(replicas.urls, fakes.model_url, args.latency,
                                            tag + "lat")
                for result in results:
                    result.latency_ms = {"p50": statistics.median(took) * 1000,
                                         "p95": percentile(took, 0.95) * 1000}
                print(f"  {kind:<10} {n} replica(s) seeded {seeded}: POST -> model request, "
                      f"no load: p50 {statistics.median(took) * 1000:.2f} ms "
                      f"p95 {percentile(took, 0.95) * 1000:.2f} ms", file=sys.stderr,
                      flush=True)
            for rep in range(args.repeats):
                for i, load in enumerate(loads):
                    run = await driver.run(replicas.urls, counts, load, args.senders,
                                           f"{tag}r{rep}l{i}")
                    results[i].runs.append({**asdict(run), "messages_per_s": run.messages_per_s,
                                            "turns_per_s": run.turns_per_s})
                    print(f"  {kind:<10} {n} replica(s) {load!s:>6} seeded {seeded}: "
                          f"{run.messages_per_s:7.1f} "
                          f"msg/s {run.turns_per_s:7.1f} turns/s ({run.turns} turns) ack p50 "
                          f"{run.ack_p50_ms:6.1f} ms p95 {run.ack_p95_ms:6.1f} ms"
                          + (f"  non-200: {run.not_200}" if run.not_200 else "")
                          + (f"  failed turns: {run.warnings}" if run.warnings else "")
                          + ("" if run.db_connections is None
                             else f"  connections opened: {run.db_connections}")
                          + "  CPU ms/turn: " + " ".join(
                              f"{k} {v:.2f}" for k, v in run.cpu_ms_per_turn.items())
                          + "  per turn: " + " ".join(
                              f"{k} {v:.1f}" for k, v in run.db_per_turn.items()),
                          file=sys.stderr, flush=True)
    finally:
        await counts.close()
        if replicas is not None:
            replicas.stop()
        fakes.stop()
    for result in results:
        for key in ("messages_per_s", "turns_per_s", "ack_p50_ms", "ack_p95_ms", "turns",
                    "not_200", "warnings"):
            result.median[key] = statistics.median(r[key] for r in result.runs)
        result.median["cpu_replicas_ms"] = statistics.median(
            r["cpu_ms_per_turn"]["replicas"] for r in result.runs)
        result.median["cpu_all_ms"] = statistics.median(
            sum(r["cpu_ms_per_turn"].values()) for r in result.runs)
        if "postgres" in result.runs[0]["cpu_ms_per_turn"]:
            result.median["cpu_server_ms"] = statistics.median(
                r["cpu_ms_per_turn"]["postgres"] for r in result.runs)
        for key in result.runs[0]["db_per_turn"]:
            result.median[f"{key}_per_turn"] = statistics.median(
                r["db_per_turn"].get(key, 0.0) for r in result.runs)
        if result.runs[0]["db_connections"] is not None:
            result.median["db_connections_per_turn"] = statistics.median(
                r["db_connections"] / max(r["turns"], 1) for r in result.runs)
        result.median["turns_per_s_min"] = min(r["turns_per_s"] for r in result.runs)
        result.median["turns_per_s_max"] = max(r["turns_per_s"] for r in result.runs)
    return results


# ------------------------------------------------------------------------ (B) memory
async def memory(kind: str, args: argparse.Namespace, work: Path,
                 pg: Postgres | None) -> dict[str, Any]:
    """RSS of one replica with ``baseline`` and then ``total`` conversations waiting on
    a slow model."""
    total, baseline = args.memory_conversations, args.memory_baseline
    url = await new_database(kind, work, pg)
    tag = f"{kind[:2]}m"
    fakes = Fakes(work, delay=args.memory_delay, tag=f"-{tag}")
    replicas: Replicas | None = None
    slow = str(int(args.memory_delay * 3 + 60))
    try:
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=max(args.senders, 8) + 8)) as session:
            await fakes.ready(session)
            replicas = Replicas(1, url, fakes, work, work / f"cwd-{tag}", tag=f"-{tag}",
                                profile=args.profile, CHATBRIDGE_CONCURRENCY=str(max(total, 1)),
                                CHATBRIDGE_MODEL_TIMEOUT=slow, CHATBRIDGE_TURN_SECONDS=slow)
            await replicas.ready(session)
            pid = replicas.procs[0].pid
            driver = Driver(session, fakes.slack_api)

            async def in_flight() -> int:
                async with session.get(fakes.model_url + "/_fake/stats") as resp:
                    return int((await resp.json())["in_flight"])

            async def waiting(n: int, within: float) -> float:
                began = time.monotonic()
                while (now := await in_flight()) < n:
                    if time.monotonic() - began > within or not replicas.procs[0].alive():
                        raise RuntimeError(f"only {now} of {n} conversations reached the "
                                           f"model; see {replicas.procs[0].log}")
                    await asyncio.sleep(0.1)
                took = time.monotonic() - began
                await asyncio.sleep(2.0)  # let the last claims settle (leases, buffers)
                return took

            await driver.send(replicas.urls, driver._bodies(tag + "b", Load(baseline, 1)),
                              args.senders)
            await waiting(baseline, 60)
            rss_base = rss_kib(pid)
            began = time.monotonic()
            latencies, not_200 = await driver.send(
                replicas.urls, driver._bodies(tag + "n", Load(total - baseline, 1), baseline),
                args.senders)
            sent = time.monotonic() - began
            reached = sent + await waiting(total, max(60.0, args.memory_delay - 10))
            rss_total = rss_kib(pid)
    finally:
        if replicas is not None:
            if args.profile:  # a clean exit writes the profile: end the turns first
                fakes.stop()
            # 1,000 turns are waiting on purpose: no grace
            replicas.stop(kill=not args.profile)
        fakes.stop()
    per = (rss_total - rss_base) / max(total - baseline, 1)
    result = {"database": kind, "conversations": total, "baseline": baseline,
              "rss_baseline_kib": rss_base, "rss_kib": rss_total,
              "kib_per_waiting_conversation": per, "send_seconds": sent,
              "all_waiting_after_seconds": reached,
              "ack_p50_ms": statistics.median(latencies) * 1000,
              "ack_p95_ms": percentile(latencies, 0.95) * 1000, "not_200": not_200}
    print(f"  {kind:<10} memory: {rss_base / 1024:.1f} MiB with {baseline} waiting, "
          f"{rss_total / 1024:.1f} MiB with {total}: {per:.1f} KiB per waiting conversation",
          file=sys.stderr, flush=True)
    return result


# ------------------------------------------------------------------------ the fake's capacity
async def fake_slack_capacity(work: Path, seconds: float = 2.0, clients: int = 16) -> float:
    """Web API calls per second the fake Slack answers alone, each on a new connection
    (as slack_sdk's client makes them when it is given no session)."""
    fakes = Fakes(work, tag="-capacity")
    done = 0
    try:
        async with aiohttp.ClientSession() as probe:
            await fakes.ready(probe)
        body = {"channel": "D1", "markdown_text": "an answer"}
        headers = {"Authorization": f"Bearer {TOKEN}"}
        stop_at = time.monotonic() + seconds

        async def client() -> None:
            nonlocal done
            while time.monotonic() < stop_at:
                async with aiohttp.ClientSession() as fresh, fresh.post(
                        fakes.slack_api + "chat.postMessage", json=body,
                        headers=headers) as resp:
                    await resp.read()
                done += 1

        began = time.monotonic()
        await asyncio.gather(*(client() for _ in range(clients)))
        return done / (time.monotonic() - began)
    finally:
        fakes.stop()


# ------------------------------------------------------------------------ report
def table(results: dict[str, Any]) -> str:
    lines = []
    cap = results.get("fake_slack_calls_per_s")
    if cap:
        lines.append(f"Fake Slack alone: at least {cap:.0f} Web API calls/s (each on a new "
                     "connection, as the replicas make them).")
        lines.append("")
    if results.get("throughput"):
        lines += [
            f"(A) throughput, instant model; medians of {results['repeats']} run(s), "
            f"{results['senders']} concurrent senders; CPU per turn: user+system time of "
            "the replicas, and of every process (replicas, fakes, driver, PostgreSQL)",
            "",
            "| database | seeded | replicas | load (conv x msg) | messages/s "
            "| turns/s (min-max) | turns | ack p50 | ack p95 | non-200 | CPU/turn: replicas "
            "| PostgreSQL server | all processes | statements/turn | commits/turn "
            "| server round trips/turn | new PG connections/turn |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]

        def cell(m: dict[str, float], key: str, fmt: str = "{:.1f}") -> str:
            return fmt.format(m[key]) if key in m else "-"

        for r in results["throughput"]:
            m = r["median"]
            lines.append(
                f"| {r['database']} | {r.get('seeded', 0)} | {r['replicas']} | {r['load']} | "
                f"{m['messages_per_s']:.1f} | {m['turns_per_s']:.1f} "
                f"({m['turns_per_s_min']:.0f}-{m['turns_per_s_max']:.0f}) | "
                f"{m['turns']:.0f} | {m['ack_p50_ms']:.1f} ms | {m['ack_p95_ms']:.1f} ms | "
                f"{m['not_200']:.0f} | {m['cpu_replicas_ms']:.2f} ms | "
                f"{cell(m, 'cpu_server_ms', '{:.2f} ms')} | {m['cpu_all_ms']:.1f} ms | "
                f"{cell(m, 'statements_per_turn')} | {cell(m, 'commits_per_turn')} | "
                f"{cell(m, 'round_trips_per_turn')} | "
                + (f"{m['db_connections_per_turn']:.2f} |" if "db_connections_per_turn" in m
                   else "- |"))
    latency = [r for r in results.get("throughput", []) if r.get("latency_ms")]
    if latency:
        lines += ["", "(C) no load: from a message's POST to its turn's model request, "
                  "one message at a time", "",
                  "| database | seeded | replicas | p50 | p95 |", "|---|---|---|---|---|"]
        seen = set()
        for r in latency:
            key = (r["database"], r.get("seeded", 0), r["replicas"])
            if key not in seen:
                seen.add(key)
                lines.append(f"| {key[0]} | {key[1]} | {key[2]} | "
                             f"{r['latency_ms']['p50']:.2f} ms | {r['latency_ms']['p95']:.2f} ms |")
    if results.get("memory"):
        if lines:
            lines.append("")
        lines += [
            "(B) memory of one replica, conversations waiting on a slow model (RSS; "
            "'all waiting after': from the first of the later POSTs)",
            "",
            "| database | RSS, baseline waiting | RSS, all waiting | per waiting conversation "
            "| all waiting after | ack p50 / p95 meanwhile |",
            "|---|---|---|---|---|---|",
        ]
        for m in results["memory"]:
            lines.append(
                f"| {m['database']} | {m['rss_baseline_kib'] / 1024:.1f} MiB "
                f"({m['baseline']}) | {m['rss_kib'] / 1024:.1f} MiB ({m['conversations']}) | "
                f"{m['kib_per_waiting_conversation']:.1f} KiB | "
                f"{m['all_waiting_after_seconds']:.1f} s | {m['ack_p50_ms']:.0f} / "
                f"{m['ack_p95_ms']:.0f} ms |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_replicas",
        description="Slack turns/s over 1 and 2 replicas; memory per waiting conversation.")
    parser.add_argument("--quick", action="store_true",
                        help="a ~1-minute smoke run: small loads, one repeat, 100 waiting")
    parser.add_argument("--databases", default="sqlite,postgres",
                        help="comma-separated: sqlite, postgres (default both)")
    parser.add_argument("--replicas", default="1,2", help="replica counts (default 1,2)")
    parser.add_argument("--load", action="append", type=Load.parse, metavar="CxM",
                        help="C conversations x M messages (repeatable; default 200x1 and "
                             "50x4, --quick 40x1 and 10x4)")
    parser.add_argument("--repeats", type=int, help="runs per configuration (default 3, "
                                                    "--quick 1)")
    parser.add_argument("--seed", default="0",
                        help="past conversations in the database before the runs, "
                             "comma-separated (e.g. 0,50000: fresh and seeded; default 0)")
    parser.add_argument("--latency", type=int, default=20, metavar="N",
                        help="messages sent one at a time, with no load, to time POST -> "
                             "model request (default 20; 0: skip)")
    parser.add_argument("--senders", type=int, default=32,
                        help="POSTs in flight at most (default 32)")
    parser.add_argument("--memory-conversations", type=int,
                        help="conversations waiting at the end (default 1000, --quick 100)")
    parser.add_argument("--memory-baseline", type=int, default=10,
                        help="conversations waiting when the baseline RSS is read (default 10)")
    parser.add_argument("--memory-delay", type=float, default=240.0,
                        help="seconds the slow model waits before answering (default 240)")
    parser.add_argument("--no-throughput", action="store_true", help="skip (A)")
    parser.add_argument("--no-memory", action="store_true", help="skip (B)")
    parser.add_argument("--no-capacity", action="store_true",
                        help="skip measuring the fake Slack alone")
    parser.add_argument("--postgres-url",
                        default=os.environ.get("CHATBRIDGE_BENCH_POSTGRES_URL"),
                        help="a PostgreSQL server to create databases in (default: a "
                             "throwaway cluster)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--keep", action="store_true",
                        help="keep the processes' logs and databases (always kept on failure)")
    parser.add_argument("--profile", metavar="DIR",
                        help="run the replicas under cProfile, writing DIR/*.prof")
    parser.add_argument("--serve-fake-slack", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.loads = args.load or ([Load(40, 1), Load(10, 4)] if args.quick
                               else [Load(200, 1), Load(50, 4)])
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.memory_conversations = args.memory_conversations or (100 if args.quick else 1000)
    args.db_kinds = [d.strip() for d in args.databases.split(",") if d.strip()]
    for kind in args.db_kinds:
        if kind not in ("sqlite", "postgres"):
            parser.error(f"unknown database {kind!r}")
    args.replica_counts = [int(n) for n in args.replicas.split(",") if n.strip()]
    args.seeds = [int(n) for n in args.seed.split(",") if n.strip()] or [0]
    if args.memory_baseline >= args.memory_conversations:
        parser.error("--memory-baseline must be below --memory-conversations")
    return args


async def bench(args: argparse.Namespace, work: Path, pg: Postgres | None) -> dict[str, Any]:
    results: dict[str, Any] = {
        "cpus": os.cpu_count(), "load_average": os.getloadavg(), "repeats": args.repeats,
        "senders": args.senders, "throughput": [], "memory": [],
    }
    if not args.no_capacity and not args.no_throughput:
        results["fake_slack_calls_per_s"] = await fake_slack_capacity(work)
        print(f"  fake Slack alone: {results['fake_slack_calls_per_s']:.0f} calls/s",
              file=sys.stderr, flush=True)
    if not args.no_throughput:
        for kind in args.db_kinds:
            for n in args.replica_counts:
                for seeded in args.seeds:
                    for result in await throughput(kind, n, args.loads, args, work, pg,
                                                   seeded):
                        results["throughput"].append(asdict(result))
    if not args.no_memory:
        for kind in args.db_kinds:
            results["memory"].append(await memory(kind, args, work, pg))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print a markdown table (and write JSON with --json)."""
    args = parse_args(argv)
    if args.serve_fake_slack:
        serve_fake_slack()
        return 0
    for name in PROXIES:
        os.environ.pop(name, None)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="chatbridge-bench-"))
    try:
        with contextlib.ExitStack() as stack:
            pg = None
            if "postgres" in args.db_kinds:
                pg = stack.enter_context(postgres_server(args.postgres_url))
            results = asyncio.run(bench(args, work, pg))
    except BaseException:
        print(f"(the processes' logs and databases are kept in {work})", file=sys.stderr)
        raise
    if args.keep:
        print(f"(the processes' logs and databases are kept in {work})", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    results["seconds"] = time.monotonic() - started
    print(table(results))
    print(f"\n({results['seconds']:.0f} s; load average at the start "
          f"{results['load_average'][0]:.2f} on {results['cpus']} CPUs)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
