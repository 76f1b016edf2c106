"""The real PTB Application and ChatService against the fake Bot API and fake model."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from bots.runtime import Runtime, open_runtime
from bots.settings import Settings, load_settings
from bots.telegram import load_config, running_bot
from tests.bots.telegram.fake_bot_api import BOT_USER, FakeBotApi
from tests.fakes.model_server import FakeModelServer

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawQ"
ALICE = {"id": 111111111, "is_bot": False, "first_name": "Alice", "username": "alice"}
BOB = {"id": 222222222, "is_bot": False, "first_name": "Bob", "last_name": "Stone"}
GROUP = {"id": -1001234567890, "type": "supergroup", "title": "Team"}
FORUM = {"id": -1009876543210, "type": "supergroup", "title": "Forum", "is_forum": True}
TOML = """
[telegram]
album_seconds = 0.3
draft_interval = 0.05
edit_interval = 0.05
"""
_ids = itertools.count(100)


def png(colour: str = "red", size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def message(text: str | None = None, *, chat: dict[str, Any] | None = None,
            sender: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A Message object as the Bot API sends it (private chat with Alice by default)."""
    sender = sender or ALICE
    chat = chat or {"id": sender["id"], "type": "private", "first_name": sender["first_name"]}
    msg: dict[str, Any] = {"message_id": next(_ids), "date": int(time.time()), "from": sender,
                           "chat": chat}
    if text is not None:
        msg["text"] = text
        if text.startswith("/"):
            command = text.split()[0]
            msg["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
    msg.update(extra)
    return msg


def mention(text: str, **kw: Any) -> dict[str, Any]:
    """A group message that starts with @bridge_bot."""
    handle = "@" + str(BOT_USER["username"])
    full = f"{handle} {text}"
    return message(full, chat=kw.pop("chat", GROUP),
                   entities=[{"type": "mention", "offset": 0, "length": len(handle)}], **kw)


def update(msg: dict[str, Any], kind: str = "message") -> dict[str, Any]:
    return {kind: msg}


@dataclass
class Bot:
    """A running bot and its surroundings."""

    api: FakeBotApi
    model: FakeModelServer
    runtime: Runtime
    app: Any = None  # the running PTB Application

    def send(self, msg: dict[str, Any], kind: str = "message") -> dict[str, Any]:
        return self.api.push(update(msg, kind))

    async def answered(self, chat_id: int, count: int = 1) -> list[str]:
        """Wait until the bot's messages in a chat settle at ``count`` or more."""
        await self.api.wait_for(lambda: len(self.api.texts(chat_id)) >= count)
        await self.settle()
        return self.api.texts(chat_id)

    async def settle(self, quiet: float = 0.3) -> None:
        """Wait until no Bot API call has come for ``quiet`` seconds."""
        while True:
            last = self.api.calls[-1].at if self.api.calls else 0.0
            if time.monotonic() - last >= quiet:
                return
            await asyncio.sleep(0.05)

    async def idle(self) -> None:
        """Wait until every recorded message is answered (albums gathered included)."""
        await asyncio.wait_for(self.runtime.inbox.wait_idle(), 20)

    def model_texts(self, index: int = -1) -> list[Any]:
        """Contents of the messages in one model request (system prompt dropped)."""
        return [m["content"] for m in self.model.requests[index].json["messages"]][1:]


def make_settings(tmp_path: Path, api: FakeBotApi, model: FakeModelServer, db_url: str,
                  toml: str = TOML, **env: str) -> Settings:
    (tmp_path / "chatbridge.toml").write_text(toml)
    environ = {
        "CHATBRIDGE_DATABASE_URL": db_url,
        "CHATBRIDGE_MODEL_BASE_URL": model.openai_base,
        "CHATBRIDGE_MODEL_API_KEY": "",
        "CHATBRIDGE_MODEL": "qwen-plus",
        "CHATBRIDGE_RETRY_SECONDS": "1",
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "CHATBRIDGE_TELEGRAM_API_URL": api.api_url,
        "CHATBRIDGE_TELEGRAM_FILE_URL": api.file_url,
        **env,
    }
    return load_settings(environ, cwd=tmp_path)


@contextlib.asynccontextmanager
async def run_bot(settings: Settings, api: FakeBotApi, model: FakeModelServer, *,
                  webhook: bool = False, port: int = 0, **options: Any) -> AsyncIterator[Bot]:
    config = load_config(settings, webhook=webhook)
    async with open_runtime(settings) as runtime, \
            running_bot(runtime, config, webhook=webhook, port=port, **options) as app:
        yield Bot(api, model, runtime, app)


@pytest.fixture
async def bot_api() -> AsyncIterator[FakeBotApi]:
    async with FakeBotApi(TOKEN) as api:
        yield api


BotFactory = Callable[..., contextlib.AbstractAsyncContextManager[Bot]]


@pytest.fixture
async def bot(tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
              sqlite_url: str) -> AsyncIterator[Bot]:
    """A polling bot on SQLite with default settings (fast throttles)."""
    settings = make_settings(tmp_path, bot_api, fake_model, sqlite_url,
                             CHATBRIDGE_MODELS="qwen-plus,qwen-max")
    async with run_bot(settings, bot_api, fake_model) as running:
        yield running
