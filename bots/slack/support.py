"""What the Slack bot needs around bolt: its Web API client, quiet logs, background tasks
and the help text."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any

import aiohttp
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.config import SlackConfig
from bots.slack.errors import error_kind
from bots.slack.files import READABLE
from core.model.faults import redact

__all__ = ["TaskSet", "best_effort", "help_text", "make_client", "quiet_token_warning",
           "thread_title"]

log = logging.getLogger(__name__)


def make_client(config: SlackConfig,
                session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    """The Web API client: the configured base URL, and 429 Retry-After honoured.

    With ``session``, every call reuses its pooled connections (without one, slack-sdk
    opens and closes a connection per call).
    """
    client = AsyncWebClient(token=config.bot_token, base_url=config.api_url, timeout=30,
                            session=session)
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=5))
    return client


class DropMessage(logging.Filter):
    """Drops log records whose message is exactly ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every other record."""
        return record.getMessage() != self.text


def quiet_token_warning() -> None:
    """bolt reads SLACK_BOT_TOKEN from the environment even when given a client, then
    warns that the token is unused; we pass the client on purpose (one pooled session)."""
    logger = logging.getLogger("slack_bolt.AsyncApp")
    text = warning_client_prioritized_and_token_skipped()
    if not any(isinstance(f, DropMessage) and f.text == text for f in logger.filters):
        logger.addFilter(DropMessage(text))


class TaskSet:
    """Background tasks kept by reference, finished (or cancelled) on shutdown."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._secrets = secrets
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` in the background."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()
        if not task.cancelled() and (err := task.exception()) is not None:
            log.error("%s failed: %s: %s", task.get_name(), type(err).__name__,
                      redact(str(err), *self._secrets))

    async def wait_idle(self) -> None:
        """Wait until no task is running."""
        await self._idle.wait()

    async def drain(self, grace: float) -> None:
        """Let running tasks finish for up to ``grace`` seconds, then cancel the rest."""
        try:
            await asyncio.wait_for(self.wait_idle(), grace)
        except TimeoutError:
            tasks = list(self._tasks)
            log.warning("cancelling %d unfinished turn(s) at shutdown", len(tasks))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def help_text(config: SlackConfig) -> str:
    """What the bot tells people who write ``help``."""
    return (
        "I answer with an AI model and remember our conversation.\n\n"
        "• *Direct messages:* write to me; every message gets an answer.\n"
        "• *Channels:* mention me and I answer in a thread; later messages in that thread "
        "need no mention. Each thread is its own conversation.\n"
        f"• *Images:* attach them and I'll look (up to {config.max_file_bytes // 2**20} MB "
        f"each). I read {READABLE}; other files I can't read.\n"
        f"• *Start over:* write `reset` in a direct message (or use `{config.reset_command}`), "
        "or mention me with `reset` in a thread.\n"
        "• *Memory:* `summary` shows what I keep of the earlier conversation; `compact` "
        "folds the conversation so far into it now.\n"
        "• Rate answers with the thumbs under them."
    )


async def best_effort(what: str, call: Awaitable[object]) -> None:
    """Await a side call; a failure is logged (its kind only) and otherwise ignored."""
    try:
        await call
    except Exception as err:
        log.warning("%s failed: %s", what, error_kind(err))


def thread_title(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "Conversation"
    return line if len(line) <= 60 else line[:59].rstrip() + "…"
