"""A turn retaken after its replica stopped mid-answer (the real bolt app, one SQLite
file, the second replica started after the first): the retake edits the interrupted
streamed message, and an answer longer than it streams the rest (chat.startStream) in the
thread instead of posting it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from bots.runtime import open_runtime
from bots.settings import load_settings
from bots.slack import SlackBot, http_app, load_slack_config, make_client
from bots.slack.render import CONTINUED
from tests.bots.slack.conftest import SECRET, Harness, mention, serve
from tests.bots.slack.fake_slack import TOKEN, FakeSlack
from tests.fakes.model_server import FakeModelServer, Reply

LONG = " ".join(f"word{i}" for i in range(700))  # ~5,500 characters: several messages


async def _until(check: object, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_retaken_answer_longer_than_the_interrupted_message_streams_the_rest(
        tmp_path: Path, fake_model: FakeModelServer) -> None:
    (tmp_path / "chatbridge.toml").write_text(
        "[slack]\nstream_buffer = 1\nstream_max_chars = 2000\n")
    with FakeSlack() as slack:
        slack.users.update({"U1": "Ann"})
        settings = load_settings({
            "CHATBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/s.db",
            "CHATBRIDGE_MODEL_BASE_URL": fake_model.openai_base,
            "CHATBRIDGE_MODEL_API_KEY": "", "CHATBRIDGE_MODEL": "qwen-plus",
            "CHATBRIDGE_RETRY_SECONDS": "1", "CHATBRIDGE_INBOX_POLL_SECONDS": "0.2",
            "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET,
            "CHATBRIDGE_SLACK_API_URL": slack.api_url,
        }, cwd=tmp_path)
        asked = mention("tell me a long story", channel="C5")
        thread = lambda: [m for m in slack.posted()  # noqa: E731
                          if m.channel == "C5" and m.thread_ts == asked["ts"]]
        # The first replica streams slowly and is stopped (a short grace) mid-answer.
        fake_model.enqueue(Reply(text=LONG, chunk_size=8, chunk_delay=0.05),
                           Reply(text=LONG, chunk_size=200))
        config = load_slack_config(settings)
        async with open_runtime(settings) as runtime:
            bot = SlackBot(runtime=runtime, config=config, client=make_client(config))
            runner = web.AppRunner(http_app(bot.app, signing_secret=config.signing_secret,
                                            runtime=runtime))
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            async with aiohttp.ClientSession() as session:
                first = Harness(slack, fake_model, bot, runtime,
                                f"http://127.0.0.1:{runner.addresses[0][1]}", session)
                assert await first.event(asked) == 200
                await _until(lambda: any(len(m.text) > 100 for m in thread()))
                await bot.close(0.1)
            await runner.cleanup()
        [interrupted] = thread()
        assert interrupted.streamed and interrupted.stopped and not interrupted.blocks
        # The second replica retakes the turn from the inbox.
        async with serve(settings, slack, fake_model):
            await _until(lambda: any(m.blocks for m in thread()))
        parts = thread()
        assert parts[0].ts == interrupted.ts  # edited in place (chat.update)
        assert len(parts) >= 3
        assert all(m.streamed and m.stopped for m in parts[1:])  # the rest streamed
        assert " ".join(m.text.removesuffix(CONTINUED) for m in parts).split() \
            == LONG.split()
        assert parts[-1].blocks and not any(m.blocks for m in parts[:-1])
        assert not slack.of("chat.postMessage")
