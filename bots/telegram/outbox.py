"""Sending a kept Telegram reply again (``chatbridge outbox retry``)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from telegram import Bot, ReplyParameters
from telegram.constants import ParseMode

from bots.settings import Settings
from bots.telegram.config import load_config
from bots.telegram.markdown import markdown_to_html
from bots.telegram.render import Target
from bots.telegram.split import split_html
from core.outbox import Pending

__all__ = ["resend", "sender"]


async def resend(bot: Bot, item: Pending) -> None:
    """Send the reply where it was meant to go, split over Telegram's message limit."""
    target = Target(**{k: v for k, v in item.target.items()
                       if k in Target.__dataclass_fields__})
    reply = (ReplyParameters(target.reply_to, allow_sending_without_reply=True)
             if target.reply_to else None)
    for chunk in split_html(markdown_to_html(item.text) or item.text):
        await bot.send_message(
            target.chat_id, chunk, parse_mode=ParseMode.HTML,
            message_thread_id=target.thread_id,
            business_connection_id=target.business_connection_id, reply_parameters=reply)
        reply = None  # only the first part quotes the question


async def sender(settings: Settings, stack: contextlib.AsyncExitStack
                 ) -> Callable[[Pending], Awaitable[None]]:
    """A function that re-sends one kept reply with the configured bot (shut down when
    ``stack`` closes)."""
    config = load_config(settings)
    bot = Bot(config.token, base_url=config.api_url, base_file_url=config.file_url)
    await bot.initialize()
    stack.push_async_callback(bot.shutdown)

    async def send(item: Pending) -> None:
        await resend(bot, item)

    return send
