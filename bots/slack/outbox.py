"""Sending a kept Slack reply again (``chatbridge outbox retry``)."""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.config import SlackConfig
from bots.slack.text import split_markdown
from bots.slack.translate import ReplyTarget
from core.outbox import Pending

__all__ = ["resend"]


async def resend(client: AsyncWebClient, config: SlackConfig, item: Pending) -> None:
    """Post the reply where it was meant to go, split over Slack's message limit."""
    target = ReplyTarget(**{k: v for k, v in item.target.items()
                            if k in ReplyTarget.__dataclass_fields__})
    for chunk in split_markdown(item.text, config.max_message_chars):
        await client.chat_postMessage(channel=target.channel, thread_ts=target.thread_ts,
                                      markdown_text=chunk)
