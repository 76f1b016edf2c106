"""The bolt listeners of the Slack bot: each event, action and command to what the
``SlackBot`` does with it (``bots.slack.app``)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncAssistant
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.context.save_thread_context.async_save_thread_context import (
    AsyncSaveThreadContext,
)
from slack_bolt.context.say.async_say import AsyncSay
from slack_bolt.context.set_suggested_prompts.async_set_suggested_prompts import (
    AsyncSetSuggestedPrompts,
)

from bots.posters import HANDOFF_START, RELEASE_ACTION
from bots.slack.agent import Focuses, event_stamp
from bots.slack.config import DENIED
from bots.slack.render import FEEDBACK_ACTION
from bots.slack.server import RECEIPT, Receipt
from bots.slack.translate import (
    PLATFORM,
    Incoming,
    ReplyTarget,
    focus_from_context,
    incoming_from_event,
)
from core.errors import StoreError

if TYPE_CHECKING:
    from bots.slack.app import SlackBot

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(bot: SlackBot) -> None:
    """Register every listener on ``bot.app``."""
    app, config = bot.app, bot.config
    assistant = AsyncAssistant()

    async def incoming(body: Mapping[str, Any], context: AsyncBoltContext,
                       in_assistant: bool = False) -> Incoming | None:
        event = body.get("event")
        direct = isinstance(event, Mapping) and event.get("channel_type") == "im"
        return incoming_from_event(
            body, bot_user_id=context.bot_user_id or "", bot_id=context.bot_id or "",
            allow_bots=config.allow_bots, assistant=in_assistant,
            agent=direct and not in_assistant and await bot.surface.agent())

    @assistant.thread_started
    async def thread_started(payload: dict[str, Any], body: dict[str, Any],
                             context: AsyncBoltContext, say: AsyncSay,
                             set_suggested_prompts: AsyncSetSuggestedPrompts) -> None:
        await bot._saw(agent=False, stamp=event_stamp(payload, body))
        thread = payload.get("assistant_thread") or {}
        team = context.team_id or str(body.get("team_id") or "")
        channel, thread_ts = str(thread.get("channel_id")), str(thread.get("thread_ts"))
        # The thread's identity, not the delivery's: retries and replicas share it.
        event_id = f"{team}/{channel}/{thread_ts}/started"
        user = str(thread.get("user_id") or "")
        if config.allow.decide(team=team, channel=channel, user=user,
                               direct=True) != "answer":
            bot.tasks.spawn(bot._refuse(event_id, ReplyTarget(
                channel, thread_ts, team, user, assistant=True)), "slack refusal")
            return
        bot.tasks.spawn(bot._greet(event_id, say, set_suggested_prompts),
                         "slack greeting")

    @assistant.thread_context_changed
    async def context_changed(payload: dict[str, Any],
                              save_thread_context: AsyncSaveThreadContext) -> None:
        new = (payload.get("assistant_thread") or {}).get("context") or {}
        bot.tasks.spawn(bot._save_context(save_thread_context, new),
                         "slack thread context")

    @assistant.user_message
    async def assistant_message(body: dict[str, Any], context: AsyncBoltContext) -> None:
        if (msg := await incoming(body, context, True)) is not None:
            await bot._receive(msg, context)

    app.assistant(assistant)

    @app.event("app_mention")
    @app.event("message")
    async def message(body: dict[str, Any], context: AsyncBoltContext) -> None:
        # Every message event is acknowledged (200), answered or not: an unmatched
        # event would get a 404 and Slack would deliver it again.
        if (msg := await incoming(body, context)) is not None:
            await bot._receive(msg, context)

    @app.event("app_home_opened")
    async def home_opened(event: dict[str, Any], body: dict[str, Any],
                          context: AsyncBoltContext) -> None:
        if event.get("tab") != "messages":
            return  # the Home tab: not used
        await bot._saw(agent=True, stamp=event_stamp(event, body))
        team = context.team_id or str(body.get("team_id") or "")
        user, channel = str(event.get("user") or ""), str(event.get("channel") or "")
        if channel and user and config.allow.permits(team=team, channel=channel,
                                                     user=user, direct=True):
            bot.tasks.spawn(bot._greet_tab(team, user, channel), "slack greeting")

    @app.event("app_context_changed")
    async def app_context_changed(event: dict[str, Any], body: dict[str, Any],
                                  context: AsyncBoltContext) -> None:
        team = context.team_id or str(body.get("team_id") or "")
        user = str(event.get("user") or context.user_id or "")
        # Stored before the ack: the next message may reach another replica.
        values = {**bot.surface.record(agent=True),
                  **Focuses.values(team, user, focus_from_context(event.get("context")))}
        try:
            await bot._state.put_many(platform=PLATFORM, values=values,
                                       stamp=event_stamp(event, body))
        except StoreError as err:
            log.error("could not store what %s looks at: %s; Slack will deliver it "
                      "again", user or "a person", err)
            if isinstance(receipt := context.get(RECEIPT), Receipt):
                receipt.failed = True  # HTTP: the answer becomes 503
            else:
                raise

    @app.command(config.reset_command)
    async def reset_command(ack: AsyncAck, body: dict[str, Any],
                            respond: AsyncRespond) -> None:
        channel, team = str(body.get("channel_id", "")), str(body.get("team_id", ""))
        user = str(body.get("user_id", ""))
        if config.allow.decide(team=team, channel=channel, user=user,
                               direct=channel.startswith("D")) != "answer":
            # Only the person who typed the command sees this answer, even in a channel.
            await ack(text=DENIED)
            return
        if str(body.get("text") or "").strip():
            await ack(text=f"`{config.reset_command}` takes nothing after it: send just "
                      f"`{config.reset_command}`.")
        elif channel.startswith("D") and team:
            # Acknowledge first (Slack waits 3 seconds at most); reset in the background.
            await ack(text="Done: I started a new conversation and forgot this one.")
            bot.tasks.spawn(bot._reset(f"{team}/{channel}", respond), "slack reset")
        else:
            await ack(text="In a channel each thread is its own conversation: mention me "
                      "with `reset` in the thread to start it over, or start a new thread.")

    @app.action(FEEDBACK_ACTION)
    async def feedback(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        container = body.get("container") or {}
        channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
        ts = container.get("message_ts") or (body.get("message") or {}).get("ts")
        user = (body.get("user") or {}).get("id")
        team = str((body.get("team") or {}).get("id") or body.get("team_id") or "")
        actions = body.get("actions") or [{}]
        value = actions[0].get("value")
        allowed = config.allow.permits(team=team, channel=str(channel), user=str(user),
                                       direct=str(channel).startswith("D"))
        if channel and ts and user and allowed and value in ("positive", "negative"):
            bot.tasks.spawn(bot._feedback(f"{channel}/{ts}", str(user),
                                            value == "positive"), "slack feedback")

    @app.action(RELEASE_ACTION)
    async def release(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        container = body.get("container") or {}
        channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
        ts = container.get("message_ts") or (body.get("message") or {}).get("ts")
        user = str((body.get("user") or {}).get("id") or "")
        if channel in bot._staff and ts:
            bot.tasks.spawn(bot._release(f"{channel}/{ts}", user), "handoff release")

    @app.action(HANDOFF_START)
    async def person(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        container = body.get("container") or {}
        message = body.get("message") or {}
        channel = str(container.get("channel_id") or (body.get("channel") or {}).get("id")
                      or "")
        user = str((body.get("user") or {}).get("id") or "")
        team = str((body.get("team") or {}).get("id") or body.get("team_id") or "")
        scope = str((body.get("actions") or [{}])[0].get("value") or "")
        allowed = config.allow.permits(team=team, channel=channel, user=user,
                                       direct=channel.startswith("D"))
        if channel and user and allowed and scope.startswith(f"{team}/{channel}"):
            thread = container.get("thread_ts") or message.get("thread_ts")
            customer = {"channel": channel, "thread_ts": thread, "team": team,
                        "user": user, "assistant": False}
            profile = config.dm_profile if channel.startswith("D") \
                else config.profile_for_channel(channel)
            bot.tasks.spawn(bot.desk.person_asked(
                platform=PLATFORM, scope=scope, customer=customer, profile=profile),
                "handoff on request")

    # Last, so it matches only what no listener above took: events the app may be
    # subscribed to that we do not act on (app_home_opened, reaction_added, …). Without
    # it bolt logs a multi-line "Unhandled request" warning for each.
    @app.event(re.compile(".*"))
    async def other_event(body: dict[str, Any]) -> None:
        log.debug("ignored event %s", (body.get("event") or {}).get("type"))
