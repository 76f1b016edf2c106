"""The Telegram adapter: ``chatbridge telegram [--webhook] [--port N]``.

    config     TelegramConfig from the environment and the [telegram] table
    inbound    messages → where / who / what (scopes, event ids, addressing)
    markdown   the model's Markdown → Telegram HTML
    split      HTML → parts of at most 4096 visible characters
    render     reply events → drafts, messages, edits (throttled, flood-aware)
    commands   /start /help /reset /model
    adapter    updates → the inbox; the inbox's claims → ChatRequest → ChatService → render
    polling    getUpdates, confirming each update only once the inbox holds it
    webhook    POST /telegram/webhook with the secret-token check (503: not recorded)
    outbox     answers Telegram would not take, sent again
    app        lifecycle: polling or webhook, then the inbox; stopping in that order
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from bots.runtime import open_runtime
from bots.settings import Settings
from bots.telegram.app import build_application, running_bot
from bots.telegram.config import TelegramConfig, load_config

__all__ = ["TelegramConfig", "build_application", "load_config", "main", "running_bot"]

log = logging.getLogger(__name__)


async def _serve(settings: Settings, config: TelegramConfig, *, webhook: bool,
                 port: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_runtime(settings, bot=True) as runtime, \
            running_bot(runtime, config, webhook=webhook, port=port) as app:
        how = f"webhook on port {port} ({config.webhook_url})" if webhook else "long polling"
        print(f"chatbridge telegram: @{app.bot.username} is running ({how}); "
              "Ctrl-C stops", file=sys.stderr, flush=True)
        await stop.wait()
    return 0


def main(settings: Settings, *, webhook: bool, port: int) -> int:
    """Run the Telegram bot until SIGINT or SIGTERM; returns the exit code."""
    config = load_config(settings, webhook=webhook)
    return asyncio.run(_serve(settings, config, webhook=webhook, port=port))
