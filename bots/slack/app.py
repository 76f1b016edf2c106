"""The bolt app: listeners that translate Slack events into core requests.

Every listener only translates and hands the work to a background task it keeps (so
Slack's 3-second ack never waits for a model); the core decides whether a message was
seen before, in the database. ``[slack.allow]`` is applied first: a message it keeps out
never reaches the core (nothing of it is stored), only a one-time refusal in a DM.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, replace
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.context.save_thread_context.async_save_thread_context import (
    AsyncSaveThreadContext,
)
from slack_bolt.context.say.async_say import AsyncSay
from slack_bolt.context.set_suggested_prompts.async_set_suggested_prompts import (
    AsyncSetSuggestedPrompts,
)
from slack_sdk.web.async_client import AsyncWebClient

from bots.posters import SlackPoster, open_posters
from bots.relay import Desk
from bots.runtime import Runtime
from bots.slack.agent import Focuses, SurfaceState, asks_about_focus
from bots.slack.channel import CHANNEL_TASK, channel_tool, read_channel
from bots.slack.config import DENIED, SlackConfig
from bots.slack.errors import error_kind
from bots.slack.files import Attachments, fetch_attachments
from bots.slack.listeners import register
from bots.slack.people import Names
from bots.slack.render import SEND_ERRORS, StreamLimits, render_reply
from bots.slack.server import RECEIPT, Receipt
from bots.slack.support import (
    TaskSet,
    best_effort,
    help_text,
    make_client,
    quiet_token_warning,
    thread_title,
)
from bots.slack.text import command_word, mentions, plain_text
from bots.slack.translate import (
    PLATFORM,
    Focus,
    Incoming,
    ReplyTarget,
)
from core.errors import StoreError
from core.export import first_author
from core.inbox import Claim
from core.model.faults import redact
from core.outbox import Outbox, Tap
from core.platform_state import SharedState
from core.types import Author, ChatRequest, ReplyEvent, StatusEvent, ToolActivity

__all__ = ["SlackBot", "TaskSet", "make_client"]

log = logging.getLogger(__name__)
GIVEN_UP = (":warning: Sorry, answering your message failed several times, so I gave up on "
            "it. Please send it again, perhaps in other words.")


class SlackBot:
    """The Slack adapter: a bolt ``AsyncApp`` wired to the core's ``ChatService``."""

    def __init__(self, *, runtime: Runtime, config: SlackConfig, client: AsyncWebClient) -> None:
        self.runtime, self.config, self.client = runtime, config, client
        self.names = Names(client)
        self.tasks = TaskSet(config.secrets)
        state = SharedState(runtime.store)  # seen by every replica
        self.surface = SurfaceState(config.surface, state)
        self.focuses = Focuses(state)
        self._state = state
        quiet_token_warning()
        self.app = AsyncApp(
            # bolt pins the level of the logger named after the app: keep it out of ours.
            name="slack_bolt.chatbridge", client=client, signing_secret=config.signing_secret,
            process_before_response=True,  # listeners only hand work to self.tasks
        )
        self.desk = Desk(service=runtime.service, store=runtime.store,
                         posters=open_posters(runtime.settings, {"slack": SlackPoster(client)}),
                         profiles=runtime.settings.profiles,
                         lease_seconds=runtime.settings.lease_seconds)
        self._staff = self.desk.staff_places(PLATFORM)
        self._auto = config.auto_reply_channels
        register(self)
        runtime.inbox.register(PLATFORM, self._process)
        self.desk.start_sweeper()
        runtime.inbox.start()

    # ---------------------------------------------------------------- listeners
    async def _saw(self, *, agent: bool, stamp: str) -> None:
        """Store which DM surface an event showed (``auto``); failing to is logged: the
        next such event stores it."""
        try:
            await self.surface.saw(agent=agent, stamp=stamp)
        except StoreError as err:
            log.warning("could not store the Slack DM surface: %s", err)

    async def _receive(self, msg: Incoming, context: AsyncBoltContext) -> None:
        """Put a message that ``[slack.allow]`` lets through into the inbox — before the
        event is acknowledged; refuse or ignore the others before the core sees them.

        Top-level channel messages that do not mention the bot are not stored; thread
        replies without a mention are, only in threads the bot takes part in.
        """
        access = self.config.allow.decide(team=msg.team, channel=msg.channel, user=msg.user,
                                          direct=msg.kind != "channel")
        staff = msg.kind == "channel" and msg.channel in self._staff and msg.in_thread
        if staff:
            access = "answer"  # staff answering a customer in the notice's thread
        elif msg.kind == "channel" and msg.channel in self._auto and not msg.in_thread:
            msg = replace(msg, mentioned=True)  # an auto-reply channel: every new message
        if access == "refuse":
            self.tasks.spawn(self._refuse(msg.event_id, msg.target()), "slack refusal")
        if access != "answer" or (msg.kind == "channel" and not msg.mentioned
                                  and not msg.in_thread):
            return
        try:
            await self.runtime.inbox.receive(
                platform=PLATFORM, event_id=msg.event_id, scope=msg.scope,
                payload=msg.to_payload(),
                if_known=msg.kind == "channel" and not msg.mentioned and not staff,
                sort_key=msg.sort_key)
        except StoreError as err:
            log.error("could not record %s: %s; Slack will deliver it again", msg.event_id,
                      err)
            if isinstance(receipt := context.get(RECEIPT), Receipt):
                receipt.failed = True  # HTTP: the answer becomes 503
            else:
                raise  # Socket Mode: bolt answers 500 and the envelope is not acknowledged

    async def idle(self) -> None:
        """Wait until every received message is answered and no side task runs."""
        while True:
            await self.runtime.inbox.wait_idle()
            await self.tasks.wait_idle()
            await asyncio.sleep(0.01)
            if not len(self.tasks) and not self.runtime.inbox.running:
                return

    async def close(self, grace: float) -> None:
        """Stop answering: running turns get ``grace`` seconds, then go back to the inbox."""
        await self.runtime.inbox.stop(grace)
        await self.tasks.drain(grace)
        await self.desk.close()

    # ---------------------------------------------------------------- background work
    async def _first_time(self, event_id: str, what: str) -> bool:
        """Claim ``event_id`` for a side message; unsure (the database failed) means yes."""
        try:
            return await self.runtime.service.first_time(platform=PLATFORM, event_id=event_id)
        except Exception as err:  # better a second greeting than none
            log.warning("could not record %s: %s", what, type(err).__name__)
            return True

    async def _refuse(self, event_id: str, target: ReplyTarget) -> None:
        """Tell someone outside ``[slack.allow]`` once per message (redeliveries stay
        silent) that the bot is not for them."""
        if await self._first_time(f"{event_id}/denied", "the refusal"):
            await best_effort("the refusal", self._post(target, DENIED))

    async def _greet(self, event_id: str, say: AsyncSay,
                     set_prompts: AsyncSetSuggestedPrompts) -> None:
        if not await self._first_time(event_id, "the greeting"):
            return
        if self.config.greeting:
            await best_effort("the greeting", say(self.config.greeting))
        prompts = self.config.prompts_for(self.config.dm_profile)
        await best_effort("assistant.threads.setSuggestedPrompts", set_prompts(
            prompts=[{"title": p.title, "message": p.message} for p in prompts]))

    async def _greet_tab(self, team: str, user: str, channel: str) -> None:
        """The greeting and suggested prompts at the top of a person's Messages tab, once
        per person (decided in the database: every replica, every restart)."""
        if not await self._first_time(f"{team}/{user}/messages-tab", "the greeting"):
            return
        prompts = self.config.prompts_for(self.config.dm_profile)
        await best_effort("assistant.threads.setSuggestedPrompts",
                           self.client.assistant_threads_setSuggestedPrompts(
                               channel_id=channel, title=self.config.greeting or None,
                               prompts=[{"title": p.title, "message": p.message}
                                        for p in prompts]))

    def _channel_room(self, msg: Incoming, text: str) -> int:
        """Characters of the channel's messages a turn may read: within the message limit
        and the model's token budget."""
        profile = self.runtime.service.profile(self._profile(msg))
        room = min(profile.max_input_chars // 2, profile.max_input_chars - len(text) - 500,
                   profile.budget_for(self.runtime.service.model_for(profile)) * 2)
        return max(room, 0)

    async def _with_channel(self, requests: list[ChatRequest], msg: Incoming, focus: Focus,
                            turn: Callable[[list[ChatRequest]], AsyncIterator[ReplyEvent]],
                            ) -> AsyncIterator[ReplyEvent]:
        """Before the turn, read the channel the person is looking at into their message
        (a "Reading the channel" task shows meanwhile), then run the ``turn``."""
        call = f"read-channel-{msg.ts}"
        yield StatusEvent(CHANNEL_TASK, tool=ToolActivity(
            call, "conversations.history", "in_progress", CHANNEL_TASK))
        last = requests[-1]
        read = await read_channel(self.client, focus,
                                  max_chars=self._channel_room(msg, last.text),
                                  name_of=self.names.cached)
        requests[-1] = replace(last, text=f"{read.text}\n\n{last.text}")
        yield StatusEvent("thinking…", tool=ToolActivity(
            call, "conversations.history", "complete" if read.ok else "error", CHANNEL_TASK))
        async for event in turn(requests):
            yield event

    async def _readable_focus(self, msg: Incoming) -> Focus | None:
        """The channel the person looked at when writing a DM, if the bot may read it
        there (a channel ``[slack.allow]`` keeps the bot out of is not read into a DM)."""
        if msg.kind != "assistant":  # only Agent messaging and assistant threads have one
            return None
        focus = await self.focuses.get(msg.team, msg.user, msg.thread_ts)
        if not focus.channel or not self.config.allow.permits(
                team=msg.team, channel=focus.channel, user=msg.user, direct=False):
            return None
        return focus

    async def _reset(self, scope: str, respond: AsyncRespond) -> None:
        try:
            await self.runtime.service.reset(platform=PLATFORM, scope=scope)
        except Exception as err:
            log.error("reset of %s failed: %s", scope, type(err).__name__)
            await best_effort("the reset failure notice", respond(
                text=":warning: Sorry, I couldn't start a new conversation; please try again."))

    async def _release(self, notice_ref: str, user: str) -> None:
        await self.desk.release_by_notice(notice_ref, by=f"{PLATFORM}:{user}")

    async def _relay_staff(self, msg: Incoming, text: str) -> None:
        """A staff reply in a notice's thread: to the customer (once), or a release."""
        assert msg.thread_ts is not None
        await self.desk.staff_reply(
            platform=PLATFORM, notice_ref=f"{msg.channel}/{msg.thread_ts}", author_id=msg.user,
            author_name=await self.names.name(msg.user), text=text, event_id=msg.event_id)

    async def _save_context(self, save: AsyncSaveThreadContext, new: dict[str, str]) -> None:
        await save(new)

    async def _feedback(self, ref: str, user: str, positive: bool) -> None:
        stored = await self.runtime.service.record_feedback(
            platform=PLATFORM, ref=ref, user_id=user, positive=positive)
        if not stored:
            log.info("feedback on %s: no answer recorded there", ref)

    async def _post(self, target: ReplyTarget, text: str) -> None:
        await self.client.chat_postMessage(channel=target.channel, thread_ts=target.thread_ts,
                                           markdown_text=text)

    async def _note(self, target: ReplyTarget, text: str) -> None:
        """Post a side note; failing to is logged, never the end of the turn."""
        await best_effort("chat.postMessage (note)", self._post(target, text))

    async def _joined(self, scope: str) -> bool:
        """Whether the bot took part in this thread: a conversation, open or closed by a
        reset, exists under its key."""
        return await self.runtime.service.knows_scope(platform=PLATFORM, scope=scope)

    async def _new_thread(self, scope: str) -> bool:
        """Whether an assistant thread is new (and gets a title); unsure means no."""
        try:
            return not await self._joined(scope)
        except Exception as err:
            log.warning("could not look up %s: %s", scope, type(err).__name__)
            return False

    def _profile(self, msg: Incoming) -> str | None:
        if msg.kind == "channel":
            return self.config.profile_for_channel(msg.channel)
        return self.config.dm_profile

    async def _process(self, claim: Claim) -> None:
        """Answer a conversation's waiting messages (the inbox's handler): commands in
        their place, the messages between them together in one turn each."""
        for event in claim.abandoned:
            await self._given_up(event.event_id, event.payload)
        waiting: list[tuple[Incoming, str]] = []
        for event in claim.events:
            try:
                msg = Incoming.from_payload(event.payload)
            except (TypeError, ValueError) as err:
                log.error("unreadable inbox payload %s: %s", event.event_id,
                          type(err).__name__)
                continue
            bot = msg.bot_user
            await self.names.load(mentions(msg.text) - {bot})
            text = plain_text(msg.text, name_of=self.names.cached, drop_user=bot)
            if msg.kind == "channel" and msg.channel in self._staff and msg.in_thread:
                await self._guard(waiting[-1][0] if waiting else msg,
                                  self._answer(waiting, claim))
                waiting = []
                if text.strip():
                    await self._guard(msg, self._relay_staff(msg, text))
                continue
            word = command_word(text) if (msg.kind != "channel" or msg.mentioned) else None
            if word or (not text and not msg.files):
                await self._guard(waiting[-1][0] if waiting else msg,
                                  self._answer(waiting, claim))
                waiting = []
                await self._guard(msg, self._command(msg, word))
            elif await self._someone_elses(msg):
                log.info("%s: a reply in a customer's thread of an auto-reply channel by "
                         "someone else (staff); not answered", msg.event_id)
            else:
                waiting.append((msg, text))
        if waiting:
            await self._guard(waiting[-1][0], self._answer(waiting, claim))

    async def _someone_elses(self, msg: Incoming) -> bool:
        """A reply in an auto-reply channel's thread by someone other than the customer
        who started it (staff helping in the thread): the bot keeps out of it."""
        if msg.kind != "channel" or msg.channel not in self._auto or not msg.in_thread \
                or msg.mentioned:
            return False
        starter = await first_author(self.runtime.store, platform=PLATFORM, scope=msg.scope)
        return starter is not None and starter != msg.user

    async def _given_up(self, event_id: str, payload: Mapping[str, Any]) -> None:
        """Tell the person that a message which failed again and again will not be
        answered (once; best effort)."""
        try:
            msg = Incoming.from_payload(payload)
        except (TypeError, ValueError):
            return
        if await self._first_time(f"{event_id}/given-up", "the give-up notice"):
            await best_effort("the give-up notice", self._post(msg.target(), GIVEN_UP))

    async def _guard(self, msg: Incoming, work: Awaitable[None]) -> None:
        """Run ``work``; if it fails, tell the person (best effort) instead of going quiet."""
        try:
            await work
        except Exception as err:
            log.error("turn %s failed: %s: %s", msg.event_id, type(err).__name__,
                      redact(str(err), *self.config.secrets))
            log.debug("turn %s traceback", msg.event_id, exc_info=True)
            try:
                await self._post(msg.target(), ":warning: Sorry, something went wrong on my "
                                 "side; please try again in a moment.")
            except Exception as post_err:
                log.error("could not report the failure: %s", type(post_err).__name__)

    async def _command(self, msg: Incoming, word: str | None) -> None:
        # Once per message, as a claim can be retaken (a hand-back at shutdown, a crash):
        # a second reset would close the conversation the next message was stored in.
        if not await self._first_time(f"{msg.event_id}/reply", "the command"):
            return
        target = msg.target()
        if word == "malformed":
            await self._post(target, "`reset`, `summary`, `compact` and `help` take nothing "
                             "after them: send just `reset` to start a new conversation, or "
                             "`help`.")
        elif word in ("summary", "compact"):
            service = self.runtime.service
            await self._post(target, await service.summary(platform=PLATFORM, scope=msg.scope)
                             if word == "summary" else await service.compact(
                                 platform=PLATFORM, scope=msg.scope, profile=self._profile(msg)))
        elif word == "reset":
            await self.runtime.service.reset(platform=PLATFORM, scope=msg.scope)
            await self._post(target, "Done: I started a new conversation and forgot what "
                             "we said before.")
        elif word == "help" or msg.mentioned:
            await self._post(target, help_text(self.config))

    async def _answer(self, waiting: list[tuple[Incoming, str]], claim: Claim) -> None:
        """One turn for messages that waited together (usually one); the answer goes
        where the last one would be answered."""
        if not waiting:
            return
        service = self.runtime.service
        last = waiting[-1][0]
        target = last.target()
        requests: list[ChatRequest] = []
        notes: list[str] = []
        for msg, text in waiting:
            files = Attachments()
            if msg.files:
                files = await fetch_attachments(
                    msg.files, client=self.client, http=self.runtime.http,
                    token=self.config.bot_token, api_url=self.config.api_url,
                    max_bytes=self.config.max_file_bytes, audio=service.transcribes)
            if files.skipped:
                text = (text + "\n\n" if text else "") + \
                    f"[Attached files the assistant cannot open: {', '.join(files.skipped)}]"
            notes.extend(files.notes)
            requests.append(ChatRequest(
                platform=PLATFORM, scope=msg.scope,
                author=Author(msg.user, await self.names.name(msg.user)),
                text=text, event_id=msg.event_id, images=files.images,
                profile=self._profile(msg), shared=msg.shared, files=files.files,
            ))
        customer = asdict(target)
        verdict = await self.desk.intercept(requests, customer)
        if verdict.handled:
            return  # handed to staff: the bot stays silent in this conversation
        if verdict.note:
            notes.append(verdict.note)
        first = last.kind == "assistant" and await self._new_thread(last.scope)
        title = thread_title(waiting[0][1])

        async def on_start() -> None:  # side calls only: none of them may end the turn
            for note in notes:
                await self._note(target, f"_{note}_")
            if first and target.thread_ts:
                await best_effort("assistant.threads.setTitle",
                                   self.client.assistant_threads_setTitle(
                                       channel_id=target.channel, thread_ts=target.thread_ts,
                                       title=title))

        asked = [msg.event_id for msg, _ in waiting]
        # What an interrupted attempt at these messages showed: edited, not posted beside.
        shown = next((e.shown for e in claim.events if e.event_id in asked and e.shown), ())
        reuse = [ref.split("/", 1)[1] for ref in shown
                 if ref.startswith(f"{target.channel}/")]
        stored_ref: list[str] = []  # the first message, if it existed before the answer

        async def on_shown(refs: list[str]) -> None:
            if tap.answered:
                return  # stored and final: no retake will come
            await service.note_shown(platform=PLATFORM, event_ids=asked, refs=refs)
            stored_ref[:1] = refs[:1]

        turn = service.answer(requests, claim)
        with_tools = bool(service.toolbox(service.profile(self._profile(last))))
        # (read only when it can be used: a round trip a turn otherwise)
        focus = (await self._readable_focus(last)
                 if with_tools or asks_about_focus(waiting[-1][1]) else None)
        if focus is not None and with_tools:
            # The model decides whether the question needs the channel (read_channel).
            tool = channel_tool(self.client, focus,
                                max_chars=self._channel_room(last, requests[-1].text),
                                name_of=self.names.cached)
            turn = service.answer(requests, claim, tools=(tool,))
        elif focus is not None and asks_about_focus(waiting[-1][1]):
            turn = self._with_channel(requests, last, focus,
                                      lambda reqs: service.answer(reqs, claim))
        tap = Tap(self.runtime.metrics.metered(PLATFORM, turn))
        try:
            rendered = await render_reply(
                self.client, target, tap.events(), limit=self.config.max_message_chars,
                interval=self.config.update_interval, buffer_size=self.config.stream_buffer,
                on_start=on_start, reuse=reuse, on_shown=on_shown,
                limits=StreamLimits(self.config.stream_max_seconds,
                                    self.config.stream_max_chars),
            )
        except SEND_ERRORS as err:
            # Slack would not take the answer even after retrying: keep it to send later.
            text = await tap.finish()
            await Outbox(self.runtime.store).add(
                platform=PLATFORM, event_id=last.event_id, target=asdict(target), text=text,
                error=error_kind(err))
            log.error("could not deliver the answer to %s (%s); it is kept in the outbox "
                      "(chatbridge outbox retry sends it)", last.event_id, error_kind(err))
            return
        # The answer was stored with its first message (noted as it appeared); only a
        # final answer that ends in another message (buttons on a later part) is noted
        # again. Shown already: failing to note where is only logged.
        if rendered.ref and rendered.ref != (stored_ref[0] if stored_ref else None) \
                and not claim.note_reply(last.event_id, rendered.ref):
            # (A queued turn's ref is written with the claim's release: no transaction
            # of its own.)
            await best_effort("recording the reply", service.record_reply(
                platform=PLATFORM, event_id=last.event_id, ref=rendered.ref))
        await self.desk.after_turn(requests, customer)
