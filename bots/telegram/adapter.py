"""Telegram updates in, core requests out; the core's replies back as Telegram calls.

Two halves, joined by the inbox (``core.inbox``):

* ``receive`` runs as an update arrives (a webhook request, a polling batch), before
  Telegram is told it arrived. Without any I/O it drops what is not the bot's: its own
  echoes, the owner's messages in business chats, group messages not addressed to it,
  other bots' commands, service messages. ``[telegram.allow]`` comes next: a message it
  keeps out never reaches the core (nothing of it is stored), only a one-time refusal in a
  private chat. The rest is recorded in the inbox under the message's identity (chat and
  message id), so a redelivery, or a copy at another replica, is recognised there. Album
  items wait ``album_seconds`` so that the album gathers; in groups they are all kept until
  then, since only the caption's item may address the bot.
* ``process`` is the inbox's handler: the waiting updates of one conversation, oldest
  first, in whichever replica claimed them. Commands, bare mentions and notes about what
  the bot cannot read run in their place; the chat messages between them (those sent
  while the previous turn ran, an album's items) are answered together in one turn, where
  the last of them would be answered.

Whatever is sent without a turn (a command's answer, a note, a refusal) is claimed in the
database first (``ChatService.first_time``), so it happens at most once, even when a claim
is retried. The adapter only translates: memory, order, model calls are the core's.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from telegram import Message, Update, User
from telegram.constants import ChatType
from telegram.error import BadRequest, NetworkError, TelegramError, TimedOut
from telegram.ext import Application, ContextTypes

from bots.posters import TelegramPoster, open_posters
from bots.relay import Desk
from bots.runtime import Runtime
from bots.telegram.business import Business
from bots.telegram.buttons import Buttons
from bots.telegram.commands import COMMANDS, NAMES, Commands
from bots.telegram.config import DENIED, TelegramConfig
from bots.telegram.inbound import Incoming, Place, read_messages
from bots.telegram.render import Blocked, Replier, Target
from bots.telegram.signals import STOP_UPDATE, read_reaction, read_stop
from bots.telegram.stop_button import handle_press, read_press, stop_markup
from core.answer_cap import add_notice
from core.errors import ChatbridgeError
from core.inbox import Claim
from core.outbox import Outbox, Tap
from core.stops import TurnStop
from core.types import ChatRequest, Upload

__all__ = ["ALLOWED_UPDATES", "COMMANDS", "PLATFORM", "TelegramAdapter"]

log = logging.getLogger(__name__)
PLATFORM = "telegram"
# message_reaction and stopped_message_generation come only when listed (protocols-2 L.1);
# callback_query: the Stop button of group answers, "Release to the bot" on a staff notice
# and "Talk to a person" under "I don't know".
ALLOWED_UPDATES = ["message", "business_message", "edited_business_message",
                   "deleted_business_messages", "business_connection", "message_reaction",
                   STOP_UPDATE, "callback_query"]
PROMPT = "Yes? Ask me something after the mention."
GIVEN_UP = ("Sorry, answering your message failed several times, so I gave up on it. "
            "Please send it again, perhaps in other words.")
SORRY = "Sorry, something went wrong on my side; please try again."
_App = Application[Any, Any, Any, Any, Any, Any]


def _message(update: Update) -> Message | None:
    """The update's message, if it has one a bot can answer (one without a chat, which
    Telegram never sends, is dropped: there is nowhere to answer)."""
    message = update.message or update.business_message
    if message is not None and message.chat is None:
        return None
    return message


def malformed(update: Update) -> str | None:
    """What is missing from an update Telegram would never send (for the webhook's 400)."""
    for name in ("message", "edited_message", "channel_post", "edited_channel_post",
                 "business_message", "edited_business_message"):
        message = getattr(update, name, None)
        if message is not None and getattr(message, "chat", None) is None:
            return f"{name} without a chat"
    return None


class TelegramAdapter:
    """Records Telegram messages in the inbox and answers them from there."""

    def __init__(self, *, runtime: Runtime, config: TelegramConfig,
                 application: _App) -> None:
        self._runtime = runtime
        self._service = runtime.service
        self._config = config
        self._app = application
        self._commands = Commands(service=runtime.service, config=config, platform=PLATFORM)
        self.desk = Desk(service=runtime.service, store=runtime.store,
                         posters=open_posters(runtime.settings,
                                              {"telegram": TelegramPoster(application.bot)}),
                         profiles=runtime.settings.profiles,
                         lease_seconds=runtime.settings.lease_seconds)
        self._staff = self.desk.staff_places(PLATFORM)
        self._buttons = Buttons(desk=self.desk, service=runtime.service, config=config,
                                bot=application.bot, me=lambda: self._me, staff=self._staff)
        self._business = Business(runtime.store, bot=application.bot, me=lambda: self._me,
                                  clock=lambda: self.desk.clock(),
                                  pause_minutes=config.owner_pause_minutes)

    def install(self) -> None:
        """Become the inbox's handler for Telegram (the caller starts the inbox once the
        bot is initialized: answering needs to know who the bot is)."""
        self._runtime.inbox.register(PLATFORM, self.process)
        self._app.add_error_handler(self._on_error)
        self.desk.start_sweeper()

    @property
    def _me(self) -> User:
        me: User = self._app.bot.bot
        return me

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("error in a Telegram task: %s", context.error, exc_info=context.error)

    # ---------------------------------------------------------------- receiving
    async def receive(self, update: Update) -> bool:
        """Record ``update`` in the inbox if it is the bot's to answer.

        ``False`` when it is not (or was recorded before). Raises ``StoreError`` when the
        database cannot take it: the update must then not be confirmed to Telegram.
        """
        if update.message_reaction is not None:
            return await self._reaction(update)
        if update.callback_query is not None:
            press = read_press(update.callback_query)
            if press is not None:
                return await handle_press(press, service=self._service, bot=self._app.bot,
                                          platform=PLATFORM, bot_id=self._me.id)
            await self._buttons.pressed(update.callback_query)
            return False
        if (stop := read_stop(update)) is not None:
            # Drafts are only in private chats, where the draft id is the answered message.
            place = Place(stop.chat_id, ChatType.PRIVATE)
            return await self._service.stops.request(
                platform=PLATFORM, event_id=place.event_id(self._me.id, str(stop.draft_id)))
        if await self._business.event(update):
            return False
        message = _message(update)
        if message is None:
            return False
        me = self._me
        sender = message.from_user
        if sender is not None and sender.id == me.id:
            return False  # our own message echoed back
        if message.business_connection_id is not None and (
                message.sender_business_bot is not None or sender is None
                or sender.id != message.chat.id):
            if message.sender_business_bot is None and sender is not None:
                await self._business.owner_wrote(message)
            return False  # in a business chat, only the customer's messages are ours
        incoming = read_messages([message], me)
        place, album = incoming.place, message.media_group_id
        if self._staff_reply(message) and not incoming.empty:
            # Staff answering a customer: a reply to a notice in a staff group.
            order = f"{int(message.date.timestamp()):012d}.{message.message_id:012d}"
            return await self._runtime.inbox.receive(
                platform=PLATFORM, event_id=place.event_id(me.id, incoming.key),
                scope=place.scope(me.id), payload=update.to_dict(), sort_key=order)
        if not (incoming.addressed or album) or (incoming.empty and not incoming.bare_mention):
            return False
        command = incoming.command
        if command is not None and command.name not in NAMES and place.group \
                and not command.explicit:
            return False  # a bare /command of some other bot
        access = self._config.allow.decide(chat_id=place.chat_id,
                                           user_id=sender.id if sender else None,
                                           private=place.private)
        if access != "answer":
            if access == "refuse":  # once per message; an album is one message here
                key = f"album{album}" if album else incoming.key
                self._app.create_task(self._refuse(incoming, place.event_id(me.id, key)),
                                      name="telegram refusal")
            return False
        # Telegram's order: the date, then the message id (ids grow within a chat).
        order = f"{int(message.date.timestamp()):012d}.{message.message_id:012d}"
        return await self._runtime.inbox.receive(
            platform=PLATFORM, event_id=place.event_id(me.id, incoming.key),
            scope=place.scope(me.id), payload=update.to_dict(),
            delay=self._config.album_seconds if album else 0.0, sort_key=order)

    async def _reaction(self, update: Update) -> bool:
        """A 👍/👎 on an answer is feedback (taken back when the reaction is removed)."""
        assert update.message_reaction is not None
        reaction = read_reaction(update.message_reaction)
        if reaction is None:
            return False
        chat = update.message_reaction.chat
        access = self._config.allow.decide(chat_id=chat.id, user_id=reaction.user_id,
                                           private=chat.type == ChatType.PRIVATE)
        if access != "answer":
            return False
        stored = await self._service.record_feedback(
            platform=PLATFORM, ref=reaction.ref, user_id=str(reaction.user_id),
            positive=reaction.positive, at=reaction.at)
        if not stored:
            log.info("reaction on %s: no answer recorded there", reaction.ref)
        return stored

    def _staff_reply(self, message: Message) -> bool:
        """A reply, in a staff group, to one of the bot's messages (a handoff notice)."""
        replied = message.reply_to_message
        return (str(message.chat.id) in self._staff and replied is not None
                and replied.from_user is not None and replied.from_user.id == self._me.id)

    async def _relay_staff(self, incoming: Incoming, message: Message) -> None:
        replied = message.reply_to_message
        assert replied is not None
        sender = message.from_user
        await self.desk.staff_reply(
            platform=PLATFORM, notice_ref=f"{message.chat.id}/{replied.message_id}",
            author_id=str(sender.id if sender else ""), author_name=incoming.author.name,
            text=incoming.text, event_id=self._event_id(incoming))

    async def close(self) -> None:
        """Stop the handoff desk (its sweeper, the other platform's client)."""
        await self.desk.close()

    async def _refuse(self, incoming: Incoming, event_id: str) -> None:
        """Tell someone outside the allowlist that the bot is not for them (once)."""
        try:
            if await self._once(event_id, "denied"):
                await self._replier(incoming).say(DENIED)
        except (Blocked, TelegramError, ChatbridgeError) as err:
            log.warning("could not send a refusal: %s", type(err).__name__)

    # ---------------------------------------------------------------- answering
    async def process(self, claim: Claim) -> None:
        """Answer a conversation's waiting messages (the inbox's handler)."""
        for event in claim.abandoned:
            await self._given_up(event.event_id, event.payload)
        waiting: list[Incoming] = []
        for messages in self._groups(claim):
            incoming = read_messages(messages, self._me)
            if self._staff_reply(messages[0]):
                await self._turn(waiting, claim)
                waiting = []
                if incoming.text.strip():
                    await self._guard(incoming, self._relay_staff(incoming, messages[0]))
                continue
            if not incoming.addressed or (incoming.empty and not incoming.bare_mention):
                continue  # an album in a group that does not address the bot
            if incoming.album and not incoming.text and await self._service.seen(
                    platform=PLATFORM, event_id=f"{self._album_full(incoming)}/answered"):
                # More photos of an album that was answered with as many images as a turn
                # reads (an "album" of more items than one claim takes; Telegram's hold
                # 10): one answer, not one per claim. A caption among them is answered.
                log.info("album %s already answered in full; %d more items left out",
                         incoming.album, len(messages))
                continue
            command = incoming.command
            if command is not None and command.name not in NAMES and incoming.place.group \
                    and not command.explicit:
                continue  # a bare /command of some other bot
            if incoming.bare_mention or command is not None:
                # Ours, or unknown and addressed to us: a one-line hint, never the model.
                await self._turn(waiting, claim)
                waiting = []
                await self._guard(incoming, self._command(incoming))
                continue
            if incoming.unsupported is not None and not (
                    incoming.recordings and self._service.transcribes):
                await self._guard(incoming, self._note(incoming))
                if not incoming.text:
                    continue
            waiting.append(incoming)
        await self._turn(waiting, claim)

    async def _given_up(self, event_id: str, payload: Mapping[str, Any]) -> None:
        """Tell the person that a message which failed again and again will not be
        answered (once; best effort)."""
        try:
            message = _message(Update.de_json(dict(payload), self._app.bot))
            if message is None:
                return
            incoming = read_messages([message], self._me)
            if await self._once(event_id, "given-up"):
                await self._replier(incoming).say(GIVEN_UP)
        except Exception as err:  # best effort: this message already failed many times
            log.warning("could not tell about the message given up: %s", type(err).__name__)

    def _groups(self, claim: Claim) -> list[list[Message]]:
        """The claim's messages, an album's items together at the place of its first."""
        groups: list[list[Message]] = []
        albums: dict[str, list[Message]] = {}
        for event in claim.events:
            try:
                message = _message(Update.de_json(dict(event.payload), self._app.bot))
            except Exception as err:  # recorded by an older or newer version, say
                log.error("unreadable inbox payload %s: %s", event.event_id,
                          type(err).__name__)
                continue
            if message is None:
                continue
            album = message.media_group_id
            if album is None:
                groups.append([message])
            elif album in albums:
                albums[album].append(message)
            else:
                albums[album] = [message]
                groups.append(albums[album])
        return groups

    async def _once(self, event_id: str, what: str) -> bool:
        """Claim a side effect of a message; ``False`` when it happened before."""
        return await self._service.first_time(platform=PLATFORM, event_id=f"{event_id}/{what}")

    def _event_id(self, incoming: Incoming) -> str:
        return incoming.place.event_id(self._me.id, incoming.key)

    async def _guard(self, incoming: Incoming, work: Awaitable[None]) -> None:
        """Run a command or note; a failure is logged, and the person told if possible."""
        replier = self._replier(incoming)
        try:
            await work
        except Blocked as err:
            log.warning("chat %s cannot be written to (%s); not answering",
                        incoming.place.chat_id, err)
        except Exception:
            log.exception("failed to answer a message in chat %s", incoming.place.chat_id)
            await self._sorry(replier)

    async def _sorry(self, replier: Replier) -> None:
        if replier.answered:
            return
        try:
            await replier.say(SORRY)
        except (Blocked, TelegramError):
            log.warning("could not tell chat %s about the failure", replier.target.chat_id)

    async def _command(self, incoming: Incoming) -> None:
        if not await self._once(self._event_id(incoming), "reply"):
            return
        replier = self._replier(incoming)
        if incoming.bare_mention:
            await replier.say(PROMPT)
            return
        command = incoming.command
        assert command is not None
        place = incoming.place
        await self._commands.run(command.name, command.args, scope=place.scope(self._me.id),
                                 profile=self._profile(incoming), replier=replier)

    async def _note(self, incoming: Incoming) -> None:
        if await self._once(self._event_id(incoming), "note"):
            await self._replier(incoming).say(
                f"I can't read {incoming.unsupported} yet; I understand text, images "
                "(photos, or images sent as files), videos and documents (PDF, Word, "
                "PowerPoint, Excel, text, Markdown, CSV, HTML).")

    def _replier(self, incoming: Incoming, *, reuse: Sequence[int] = (),
                 on_shown: Callable[[list[int]], Awaitable[None]] | None = None,
                 stop_button: bool = False) -> Replier:
        place = incoming.place
        target = Target(
            chat_id=place.chat_id, thread_id=place.thread_id,
            business_connection_id=place.business_connection_id,
            reply_to=incoming.reply_to if place.group else None,
            drafts=place.private, draft_id=incoming.reply_to,
        )
        # Groups have no drafts (no Bot API stop): their edited answers get a Stop button.
        button = stop_markup(incoming) if stop_button and place.group \
            and place.business_connection_id is None else None
        return Replier(self._app.bot, target, draft_interval=self._config.draft_interval,
                       edit_interval=self._config.edit_interval, reuse=reuse,
                       on_shown=on_shown, stop_button=button)

    def _profile(self, incoming: Incoming) -> str | None:
        place = incoming.place
        return self._config.profile_for(place.chat_id,
                                        business=place.business_connection_id is not None)

    async def _turn(self, waiting: Sequence[Incoming], claim: Claim) -> None:
        """One turn for chat messages that waited together; the answer goes where the last
        of them would be answered."""
        if not waiting:
            return
        replier: Replier | None = None
        try:
            requests: list[ChatRequest] = []
            answered: Incoming | None = None
            notes: list[str] = []
            for incoming in waiting:
                downloaded = await self._download(incoming)
                if downloaded is None:
                    continue
                images, missed = downloaded
                notes += missed
                files, unread = await self._documents(incoming)
                notes += unread
                if not files and not images and not incoming.text:
                    if unread and await self._once(self._event_id(incoming), "reply"):
                        await self._replier(incoming).say(unread[0].strip("()"))
                    continue
                requests.append(ChatRequest(
                    platform=PLATFORM, scope=incoming.place.scope(self._me.id),
                    author=incoming.author, text=incoming.text,
                    event_id=self._event_id(incoming), images=images,
                    profile=self._profile(incoming), shared=incoming.place.group,
                    files=files,
                ))
                answered = incoming
            if answered is None or not await self._business.allows(answered):
                return
            replier = self._answer_replier(answered, requests, claim)
            target = replier.target
            customer = {"chat_id": target.chat_id, "thread_id": target.thread_id,
                        "business_connection_id": target.business_connection_id,
                        "reply_to": None}
            verdict = await self.desk.intercept(requests, customer)
            if verdict.handled:
                return  # handed to staff: the bot stays silent in this chat
            if verdict.note:
                notes.append(verdict.note)
            await self._answer(requests, replier, claim, note=" ".join(notes))
            await self.desk.after_turn(requests, customer)
            for incoming in waiting:
                if incoming.album and len(incoming.images) > self._service.max_images:
                    await self._once(self._album_full(incoming), "answered")
        except Blocked as err:
            log.warning("chat %s cannot be written to (%s); not answering",
                        waiting[-1].place.chat_id, err)
        except Exception:
            log.exception("failed to answer a message in chat %s", waiting[-1].place.chat_id)
            await self._sorry(replier or self._replier(waiting[-1]))

    def _album_full(self, incoming: Incoming) -> str:
        """The album whose side event ``…/answered`` marks it answered with all the images
        a turn reads (``_once(…, "answered")`` records it)."""
        return incoming.place.event_id(self._me.id, f"album{incoming.album}")

    def _answer_replier(self, answered: Incoming, requests: Sequence[ChatRequest],
                        claim: Claim) -> Replier:
        """The replier of a turn: it edits what an interrupted attempt at these messages
        showed, and notes each message of the answer as soon as Telegram confirms it."""
        asked = [r.event_id for r in requests]
        chat = f"{answered.place.chat_id}/"
        shown = next((e.shown for e in claim.events if e.event_id in asked and e.shown), ())
        reuse = [int(ref[len(chat):]) for ref in shown
                 if ref.startswith(chat) and ref[len(chat):].isdigit()]

        async def on_shown(ids: list[int]) -> None:
            await self._service.note_shown(platform=PLATFORM, event_ids=asked,
                                           refs=[f"{chat}{i}" for i in ids])

        return self._replier(answered, reuse=reuse, on_shown=on_shown, stop_button=True)

    async def _answer(self, requests: list[ChatRequest], replier: Replier,
                      claim: Claim, *, note: str = "") -> None:
        # A draft has a stop button (Bot API 10.3), a group answer its own: the person may
        # stop the answer.
        event_id = requests[-1].event_id
        if not replier.target.drafts and not replier.stoppable:
            await self._answer_with(requests, replier, claim, note, None)
            return
        with self._service.stops.watch(PLATFORM, event_id) as stop:
            await self._answer_with(requests, replier, claim, note, stop)

    async def _answer_with(self, requests: list[ChatRequest], replier: Replier, claim: Claim,
                           note: str, stop: TurnStop | None) -> None:
        service = self._service
        event_id = requests[-1].event_id
        events = add_notice(service.answer(requests, claim, stop=stop), note)
        tap = Tap(self._runtime.metrics.metered(PLATFORM, events))
        try:
            await replier.stream(tap.events())
        except Blocked:
            raise
        except TimedOut:
            await tap.finish()
            # The final message was sent but Telegram's answer never came: it most likely
            # arrived. It is not sent again (that would be the duplicate), nor apologised for.
            log.warning("Telegram did not confirm the answer to %s in time; it is most "
                        "likely shown and is not sent again", event_id)
            return
        except TelegramError as err:
            text = await tap.finish()
            if not tap.answered:
                raise  # no answer to keep
            # Telegram would not take the answer even after retrying: keep it to send later.
            await Outbox(self._runtime.store).add(
                platform=PLATFORM, event_id=event_id, target=asdict(replier.target),
                text=text, error=type(err).__name__)
            log.error("could not deliver the answer to %s (%s); it is kept in the outbox "
                      "(chatbridge outbox retry sends it)", event_id, type(err).__name__)
            return
        except ChatbridgeError as err:  # the database failed, say
            log.warning("turn failed: %s", err)
            if not replier.answered:
                await replier.say(err.user_message)
            return
        # The answer was stored with its first message if that existed before the final
        # answer came; else where it is is noted now (only feedback needs it).
        ref = f"{replier.target.chat_id}/{replier.message_ids[0]}" \
            if replier.message_ids else ""
        if tap.answered and ref and replier.noted_first != replier.message_ids[0] \
                and not claim.note_reply(event_id, ref):  # (written with the release)
            try:
                await service.record_reply(platform=PLATFORM, event_id=event_id, ref=ref)
            except Exception as err:  # the answer is delivered; only feedback loses its link
                log.warning("could not record where the answer to %s is: %s", event_id, err)

    async def _documents(self, incoming: Incoming) -> tuple[tuple[Upload, ...], list[str]]:
        """The documents' bytes (read into text by the core), and notes on those that
        could not be had."""
        limit = self._config.max_file_bytes
        found: list[Upload] = []
        notes: list[str] = []
        heard = incoming.recordings if self._service.transcribes else ()
        for ref in incoming.documents + heard + incoming.videos:
            if ref.size is not None and ref.size > limit:
                notes.append(f"({ref.name} is too large: I can download files up to "
                             f"{limit // 1_000_000} MB.)")
                continue
            try:
                file = await self._app.bot.get_file(ref.file_id)
                found.append(Upload(ref.name, bytes(await file.download_as_bytearray()),
                                    ref.mime))
            except (BadRequest, NetworkError) as err:
                # The file URL holds the bot token: log the error's kind, never the URL.
                log.warning("document download failed: %s", type(err).__name__)
                notes.append(f"(I couldn't get {ref.name} from Telegram; please send it "
                             "again.)")
        return tuple(found), notes

    async def _download(self, incoming: Incoming) -> tuple[tuple[bytes, ...], list[str]] | None:
        """The images' bytes and notes on those left out; ``None`` when nothing is left to
        answer (the person was told why, once). A message keeps its caption when one of
        its images cannot be had, and an album keeps its first ``max_images`` images."""
        limit = self._config.max_file_bytes
        too_big = (f"That file is too large: I can download files up to {limit // 1_000_000} "
                   "MB. Please send a smaller image, or send it as a photo.")
        most = self._service.max_images
        refs = incoming.images[:most]
        notes: list[str] = []
        if len(incoming.images) > most:
            notes.append(f"(I read the first {most} images; I can read at most {most} "
                         "at a time.)")
        found: list[bytes] = []
        refusals: list[str] = []
        for ref in refs:
            if ref.size is not None and ref.size > limit:
                refusals.append(too_big)
                continue
            try:
                file = await self._app.bot.get_file(ref.file_id)
                found.append(bytes(await file.download_as_bytearray()))
            except BadRequest as err:
                # Telegram refused the file (too big, gone, not a file of this bot).
                log.warning("getFile refused an image: %s", err.message)
                refusals.append(too_big if "too big" in err.message.lower() else
                                "I couldn't get your image from Telegram (it refused to hand "
                                "it over); please send it again.")
            except NetworkError as err:
                # The file URL holds the bot token: log the error's kind, never the URL.
                log.warning("image download failed: %s", type(err).__name__)
                refusals.append("I couldn't download your image from Telegram; please send "
                                "it again.")
        if refusals and not found and not incoming.text and not incoming.documents:
            if await self._once(self._event_id(incoming), "reply"):
                await self._replier(incoming).say(refusals[0])
            return None
        if refusals:
            notes.append(f"({refusals[0]} I answered the rest.)" if len(refusals) == 1 else
                         f"({len(refusals)} images could not be downloaded; I answered the "
                         "rest.)")
        return tuple(found), notes
