"""The real bolt app in HTTP mode on a loopback port, against the fake Slack Web API and the
loopback model server; events arrive as signed POSTs, as Slack sends them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from bots.db import create_engine, upgrade
from bots.runtime import Runtime, open_runtime
from bots.settings import Settings, load_settings
from bots.slack import SlackBot, http_app, load_slack_config, make_client
from tests.bots.slack.fake_slack import BOT_USER, TEAM, TOKEN, FakeSlack
from tests.fakes.model_server import FakeModelServer

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
_ts = itertools.count(1)


def new_ts() -> str:
    """A fresh Slack message timestamp."""
    return f"1710000000.{next(_ts):06d}"


def envelope(event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    """An Events API delivery of ``event``."""
    return {
        "token": "verification-token", "team_id": TEAM, "api_app_id": "A0APP",
        "event": event, "type": "event_callback",
        "event_id": event_id or f"Ev{next(_ts):08d}", "event_time": int(time.time()),
        "authorizations": [{"enterprise_id": None, "team_id": TEAM, "user_id": BOT_USER,
                            "is_bot": True, "is_enterprise_install": False}],
        "is_ext_shared_channel": False,
    }


def mention(text: str, *, user: str = "U1", channel: str = "C1", ts: str | None = None,
            thread_ts: str | None = None, **extra: Any) -> dict[str, Any]:
    """An app_mention event."""
    event = {"type": "app_mention", "user": user, "text": f"<@{BOT_USER}> {text}",
             "ts": ts or new_ts(), "channel": channel, "team": TEAM, **extra}
    event["event_ts"] = event["ts"]
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def message(text: str, *, user: str = "U1", channel: str = "C1", channel_type: str = "channel",
            ts: str | None = None, thread_ts: str | None = None, **extra: Any
            ) -> dict[str, Any]:
    """A message event (message.channels, message.im, …)."""
    event = {"type": "message", "user": user, "text": text, "ts": ts or new_ts(),
             "channel": channel, "channel_type": channel_type, "team": TEAM, **extra}
    event["event_ts"] = event["ts"]
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


@dataclass
class Harness:
    """A running bot and the fakes around it."""

    slack: FakeSlack
    model: FakeModelServer
    bot: SlackBot
    runtime: Runtime
    url: str
    session: aiohttp.ClientSession

    async def post(self, body: str | bytes, *, headers: dict[str, str] | None = None,
                   timestamp: int | None = None, secret: str = SECRET,
                   content_type: str = "application/json", sign: bool = True
                   ) -> tuple[int, str]:
        """POST a raw body to /slack/events, signed as Slack signs it."""
        raw = body.encode() if isinstance(body, str) else body
        stamp = str(timestamp if timestamp is not None else int(time.time()))
        sent = {"Content-Type": content_type, **(headers or {})}
        if sign:
            sent["X-Slack-Request-Timestamp"] = stamp
            sent["X-Slack-Signature"] = SignatureVerifier(secret).generate_signature(
                timestamp=stamp, body=raw.decode("utf-8", "replace"))
        async with self.session.post(self.url + "/slack/events", data=raw,
                                     headers=sent) as resp:
            return resp.status, await resp.text()

    async def event(self, event: dict[str, Any], *, event_id: str | None = None,
                    retry: int | None = None) -> int:
        """Deliver one event; returns the HTTP status."""
        headers = {}
        if retry:
            headers = {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        status, _ = await self.post(json.dumps(envelope(event, event_id)), headers=headers)
        return status

    async def form(self, fields: dict[str, str]) -> tuple[int, str]:
        """A form-encoded POST (slash commands, interactivity)."""
        return await self.post(urlencode(fields),
                               content_type="application/x-www-form-urlencoded")

    async def idle(self) -> None:
        """Wait until the bot has finished every turn it started."""
        await asyncio.wait_for(self.bot.idle(), 20)


HarnessFactory = Callable[..., contextlib.AbstractAsyncContextManager[Harness]]


@pytest.fixture
def make_harness(tmp_path: Path, fake_model: FakeModelServer) -> HarnessFactory:
    """Start a harness on a given database with an optional ``[slack]`` config."""

    @contextlib.asynccontextmanager
    async def start(db_url: str | None = None, toml: str = "",
                    **env: str) -> AsyncIterator[Harness]:
        if db_url and not db_url.startswith("sqlite"):
            engine = create_engine(db_url)  # PostgreSQL is migrated explicitly, as deployed
            try:
                await upgrade(engine)
            finally:
                await engine.dispose()
        with FakeSlack() as slack:
            slack.users.update({"U1": "Ann", "U2": "Bob"})
            if toml:
                (tmp_path / "chatbridge.toml").write_text(toml)
            settings = load_settings({
                "CHATBRIDGE_DATABASE_URL": db_url or f"sqlite+aiosqlite:///{tmp_path}/s.db",
                "CHATBRIDGE_MODEL_BASE_URL": fake_model.openai_base,
                "CHATBRIDGE_MODEL_API_KEY": "",
                "CHATBRIDGE_MODEL": "qwen-plus",
                "CHATBRIDGE_RETRY_SECONDS": "1",
                "SLACK_BOT_TOKEN": TOKEN,
                "SLACK_SIGNING_SECRET": SECRET,
                "CHATBRIDGE_SLACK_API_URL": slack.api_url,
                **env,
            }, cwd=tmp_path)
            async with serve(settings, slack, fake_model) as harness:
                yield harness

    return start


@contextlib.asynccontextmanager
async def serve(settings: Settings, slack: FakeSlack,
                model: FakeModelServer) -> AsyncIterator[Harness]:
    """The real bolt app over HTTP on a loopback port, with ``settings``."""
    config = load_slack_config(settings)
    async with open_runtime(settings) as runtime:
        bot = SlackBot(runtime=runtime, config=config, client=make_client(config))
        runner = web.AppRunner(http_app(bot.app, signing_secret=config.signing_secret,
                                        runtime=runtime))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session:
            try:
                yield Harness(slack, model, bot, runtime, f"http://127.0.0.1:{port}", session)
            finally:
                await bot.close(10)
                await runner.cleanup()


@pytest.fixture
async def harness(make_harness: HarnessFactory) -> AsyncIterator[Harness]:
    """A harness on a fresh SQLite database with the default settings."""
    async with make_harness() as h:
        yield h
