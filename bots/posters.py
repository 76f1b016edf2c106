"""Posting relays on Slack and Telegram, and finding a relay Slack already shows.

A poster sends plain text to a place on one platform and returns the message's ref
(``channel/ts``, ``chat/message_id``). ``Unconfirmed`` means the request went out but its
answer never came (a timeout, a dropped connection): the message may be shown. On Slack a
relay carries its key as message metadata, so ``find`` can tell afterwards; on Telegram
nothing can (``can_find`` is false).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from bots.settings import Settings
from core.errors import ConfigError

__all__ = ["HANDOFF_START", "RELAY_EVENT", "RELEASE_ACTION", "LazyTelegramPoster", "Poster",
           "SlackPoster", "TelegramPoster", "Unconfirmed", "open_posters"]

log = logging.getLogger(__name__)
RELEASE_ACTION = "handoff_release"
HANDOFF_START = "handoff_start"  # the "Talk to a person" button under "I don't know"
RELAY_EVENT = "chatbridge_relay"  # Slack message metadata event_type of a relay
FIND_PAGES = 5  # conversations.replies / history pages read looking for a relay (200 each)
FIND_MARGIN = 120.0  # seconds before the relay was claimed that its copy may carry


class Unconfirmed(Exception):
    """The platform may have shown the message: the request went out, no answer came."""


class Poster(Protocol):
    """Posts plain text to a place on one platform; returns the message's ref."""

    can_find: bool

    async def post(self, target: Mapping[str, Any], text: str, *, button: bool = False,
                   relay: str | None = None) -> str:
        """Post ``text`` to ``target`` (the platform's reply target as a dict)."""
        ...

    async def find(self, target: Mapping[str, Any], relay: str, *,
                   since: datetime) -> str | None:
        """The ref of the message posted for ``relay`` at ``target``, if it is there."""
        ...


class SlackPoster:
    """Posts with a Slack Web API client; relays carry their key as message metadata."""

    can_find = True

    def __init__(self, client: Any) -> None:
        from slack_sdk.http_retry.builtin_async_handlers import (
            AsyncRateLimitErrorRetryHandler,
        )
        from slack_sdk.web.async_client import AsyncWebClient

        # The client's own retry on a dropped connection would post a relay that Slack
        # took a second time: without it a lost answer is Unconfirmed, and looked for.
        self._client = AsyncWebClient(
            token=client.token, base_url=client.base_url, timeout=client.timeout,
            session=client.session,
            retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=5)])

    async def post(self, target: Mapping[str, Any], text: str, *, button: bool = False,
                   relay: str | None = None) -> str:
        """``chat.postMessage``; the ref is ``channel/ts``."""
        import aiohttp

        blocks: list[dict[str, Any]] | None = None
        if button:
            blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}},
                      {"type": "actions", "elements": [{
                          "type": "button", "action_id": RELEASE_ACTION, "style": "primary",
                          "text": {"type": "plain_text", "text": "Release to the bot"},
                          "value": "release"}]}]
        metadata = {"event_type": RELAY_EVENT, "event_payload": {"relay": relay}} \
            if relay else None
        try:
            reply = await self._client.chat_postMessage(
                channel=target["channel"], thread_ts=target.get("thread_ts"), text=text,
                blocks=blocks, metadata=metadata)
        except (TimeoutError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError,
                aiohttp.ClientPayloadError) as err:
            if isinstance(err, aiohttp.ClientConnectorError):
                raise  # never connected: nothing was sent
            raise Unconfirmed(f"Slack did not answer chat.postMessage ({type(err).__name__})"
                              ) from err
        return f"{reply['channel']}/{reply['ts']}"

    async def find(self, target: Mapping[str, Any], relay: str, *,
                   since: datetime) -> str | None:
        """Look through the thread (or the channel's newest messages) for the relay's
        metadata; ``None`` when it is not there or Slack would not say."""
        from slack_sdk.errors import SlackApiError

        channel, thread = str(target["channel"]), target.get("thread_ts")
        oldest = f"{since.timestamp() - FIND_MARGIN:.6f}"
        cursor: str | None = None
        try:
            for _ in range(FIND_PAGES):
                if thread:
                    page = await self._client.conversations_replies(
                        channel=channel, ts=str(thread), oldest=oldest, limit=200,
                        include_all_metadata=True, cursor=cursor)
                else:
                    page = await self._client.conversations_history(
                        channel=channel, oldest=oldest, limit=200, include_all_metadata=True,
                        cursor=cursor)
                for message in page.get("messages") or []:
                    meta = message.get("metadata") or {}
                    if meta.get("event_type") == RELAY_EVENT and \
                            (meta.get("event_payload") or {}).get("relay") == relay:
                        return f"{channel}/{message['ts']}"
                cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
                if not cursor:
                    break
        except SlackApiError as err:
            log.warning("could not look for an earlier copy of a relay in %s: %s", channel,
                        err.response.get("error"))
        return None


class TelegramPoster:
    """Posts with a Telegram ``Bot`` (Telegram cannot be asked what a chat shows)."""

    can_find = False

    def __init__(self, bot: Any) -> None:
        self._bot = bot

    async def post(self, target: Mapping[str, Any], text: str, *, button: bool = False,
                   relay: str | None = None) -> str:
        """``sendMessage`` (as the business, in a business chat); the ref is ``chat/id``."""
        from telegram import InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters
        from telegram.error import TimedOut

        markup = InlineKeyboardMarkup([[InlineKeyboardButton(
            "Release to the bot", callback_data=RELEASE_ACTION)]]) if button else None
        reply_to = target.get("reply_to")
        try:
            sent = await self._bot.send_message(
                target["chat_id"], text[:4096], message_thread_id=target.get("thread_id"),
                business_connection_id=target.get("business_connection_id"),
                reply_parameters=ReplyParameters(reply_to, allow_sending_without_reply=True)
                if reply_to else None, reply_markup=markup)
        except TimedOut as err:
            raise Unconfirmed("Telegram did not answer sendMessage in time") from err
        return f"{sent.chat.id}/{sent.message_id}"

    async def find(self, target: Mapping[str, Any], relay: str, *,
                   since: datetime) -> str | None:
        """Telegram has no way to ask: never found."""
        return None


class LazyTelegramPoster(TelegramPoster):
    """A Telegram poster whose ``Bot`` starts at the first post (for a Slack process)."""

    def __init__(self, settings: Settings) -> None:
        from telegram import Bot

        from bots.telegram import load_config

        config = load_config(settings)
        super().__init__(Bot(config.token, base_url=config.api_url,
                             base_file_url=config.file_url))
        self._started = False

    async def post(self, target: Mapping[str, Any], text: str, *, button: bool = False,
                   relay: str | None = None) -> str:
        """Start the bot once, then post."""
        if not self._started:
            await self._bot.initialize()
            self._started = True
        return await super().post(target, text, button=button, relay=relay)

    async def aclose(self) -> None:
        """Shut the bot's HTTP client down."""
        if self._started:
            await self._bot.shutdown()


def open_posters(settings: Settings, own: Mapping[str, Poster]) -> dict[str, Poster]:
    """Posters for both platforms: ``own`` (the running adapter's) and, when its token is
    set, the other platform's (a client of its own; ``Desk.close`` closes it)."""
    posters: dict[str, Poster] = dict(own)
    env = settings.env
    if not any(p.handoff for p in settings.profiles.values()):
        return posters  # no handoff configured: nothing to post on the other platform
    if "slack" not in posters and env.get("SLACK_BOT_TOKEN", "").strip():
        from slack_sdk.web.async_client import AsyncWebClient

        token = env["SLACK_BOT_TOKEN"].strip()
        if not token.startswith("xoxb-"):
            raise ConfigError("SLACK_BOT_TOKEN must be the app's Bot User OAuth Token "
                              "(xoxb-…)")
        base = env.get("CHATBRIDGE_SLACK_API_URL", "").strip() or "https://slack.com/api/"
        posters["slack"] = SlackPoster(AsyncWebClient(token=token, base_url=base, timeout=30))
    if "telegram" not in posters and env.get("TELEGRAM_BOT_TOKEN", "").strip():
        posters["telegram"] = LazyTelegramPoster(settings)
    return posters
