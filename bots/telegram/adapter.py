"""Telegram updates in, core requests out; the core's replies back as Telegram calls.

The adapter only translates: which messages concern the bot, what they say, and how the
answer is shown. Conversation memory, duplicates, model calls and model choice are the
core's (``ChatService``). Every turn runs in its own task, so a slow model call never
holds up another chat; the turns of one conversation start in the order their messages
arrived. Whatever is sent without a turn (a command's answer, a note about what the bot
cannot read) is sent once per message: the database records the message's identity first
(``ChatService.first_time``), so a redelivery, or a second replica, stays silent.
``[telegram.allow]`` is applied before any of that: a message it keeps out never reaches
the core (nothing of it is stored), only a one-time refusal in a private chat.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from telegram import Message, Update, User
from telegram.error import BadRequest, NetworkError, TelegramError
from telegram.ext import Application, ContextTypes, MessageHandler, filters

from bots.ops import Metrics
from bots.telegram.commands import COMMANDS, NAMES, Commands
from bots.telegram.config import DENIED, Access, TelegramConfig
from bots.telegram.inbound import FileRef, Incoming, read_messages
from bots.telegram.queues import Albums, TurnQueue
from bots.telegram.render import Blocked, Replier, Target
from core.errors import ChatbridgeError
from core.service import ChatService
from core.types import ChatRequest, FinalEvent

__all__ = ["ALLOWED_UPDATES", "COMMANDS", "PLATFORM", "TelegramAdapter"]

log = logging.getLogger(__name__)
PLATFORM = "telegram"
ALLOWED_UPDATES = ["message", "business_message"]
PROMPT = "Yes? Ask me something after the mention."
SORRY = "Sorry, something went wrong on my side; please try again."
_App = Application[Any, Any, Any, Any, Any, Any]


class TelegramAdapter:
    """Turns Telegram messages into ``ChatRequest``s and shows the replies."""

    def __init__(self, *, service: ChatService, config: TelegramConfig,
                 application: _App, metrics: Metrics | None = None) -> None:
        self._service = service
        self._metrics = metrics or Metrics()
        self._config = config
        self._app = application
        self._albums = Albums(config.album_seconds, self._spawn)
        self._queue = TurnQueue()
        self._commands = Commands(service=service, config=config, platform=PLATFORM)

    def install(self) -> None:
        """Register the handlers on the Application."""
        kinds = filters.UpdateType.MESSAGE | filters.UpdateType.BUSINESS_MESSAGE
        self._app.add_handler(MessageHandler(kinds, self._on_message))
        self._app.add_error_handler(self._on_error)

    def flush(self) -> None:
        """Start the turns of albums still being gathered."""
        self._albums.flush()

    @property
    def _me(self) -> User:
        me: User = self._app.bot.bot
        return me

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("error while handling a Telegram update: %s", context.error,
                  exc_info=context.error)

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message or update.business_message
        if message is None:
            return
        sender = message.from_user
        if sender is not None and sender.id == self._me.id:
            return  # our own message echoed back
        if message.business_connection_id is not None and (
                message.sender_business_bot is not None or sender is None
                or sender.id != message.chat.id):
            return  # in a business chat, only the customer's messages are ours to answer
        if message.media_group_id:
            self._albums.add(message)
        else:
            self._spawn([message])

    def _spawn(self, messages: list[Message]) -> None:
        self._app.create_task(self._turn(messages), name="telegram-turn")

    async def _turn(self, messages: list[Message]) -> None:
        chat_id = messages[0].chat.id
        replier: Replier | None = None
        try:
            incoming = read_messages(messages, self._me)
            if not incoming.addressed or (incoming.empty and not incoming.bare_mention):
                return
            access = self._access(messages, incoming)
            if access != "answer":
                if access == "refuse":
                    await self._refuse(incoming)
                return
            # Taken before the first await, so turns of one chat start in arrival order.
            async with self._queue.turn(incoming.place.scope(self._me.id)):
                replier = self._replier(incoming)
                await self._answer(incoming, replier)
        except Blocked as err:
            log.warning("chat %s cannot be written to (%s); not answering", chat_id, err)
        except Exception:
            log.exception("failed to answer a message in chat %s", chat_id)
            if replier is not None and not replier.answered:
                try:
                    await replier.say(SORRY)
                except (Blocked, TelegramError):
                    log.warning("could not tell chat %s about the failure", chat_id)

    def _access(self, messages: list[Message], incoming: Incoming) -> Access:
        """``[telegram.allow]``'s verdict on the chat and the sender of the first message."""
        sender = min(messages, key=lambda m: m.message_id).from_user
        place = incoming.place
        return self._config.allow.decide(chat_id=place.chat_id,
                                         user_id=sender.id if sender else None,
                                         private=place.private)

    async def _refuse(self, incoming: Incoming) -> None:
        """Tell someone outside the allowlist, once per message, that the bot is not
        for them (a redelivery, or a second replica, stays silent)."""
        event_id = incoming.place.event_id(self._me.id, incoming.key)
        if await self._first(f"{event_id}/denied"):
            await self._replier(incoming).say(DENIED)

    def _replier(self, incoming: Incoming) -> Replier:
        place = incoming.place
        target = Target(
            chat_id=place.chat_id, thread_id=place.thread_id,
            business_connection_id=place.business_connection_id,
            reply_to=incoming.reply_to if place.group else None,
            drafts=place.private, draft_id=incoming.reply_to,
        )
        return Replier(self._app.bot, target, draft_interval=self._config.draft_interval,
                       edit_interval=self._config.edit_interval)

    def _profile(self, incoming: Incoming) -> str | None:
        place = incoming.place
        return self._config.profile_for(place.chat_id,
                                        business=place.business_connection_id is not None)

    async def _first(self, event_id: str) -> bool:
        """Claim a message's identity; ``False`` when it was handled before (stay silent)."""
        return await self._service.first_time(platform=PLATFORM, event_id=event_id)

    async def _answer(self, incoming: Incoming, replier: Replier) -> None:
        place = incoming.place
        bot_id = self._me.id
        event_id = place.event_id(bot_id, incoming.key)
        if incoming.bare_mention:
            if await self._first(event_id):
                await replier.say(PROMPT)
            return
        command = incoming.command
        if command is not None:
            if command.name in NAMES:
                if await self._first(event_id):
                    await self._commands.run(command.name, command.args,
                                             scope=place.scope(bot_id),
                                             profile=self._profile(incoming), replier=replier)
                return
            if place.group and not command.explicit:
                return  # a bare /command of some other bot
        if incoming.unsupported is not None:
            if await self._first(f"{event_id}/note"):  # the turn, if any, keeps event_id
                await replier.say(f"I can't read {incoming.unsupported} yet; I understand "
                                  "text and images (photos, or images sent as files).")
            if not incoming.text:
                return
        images = await self._download(incoming.images, replier, event_id)
        if images is None:
            return
        request = ChatRequest(
            platform=PLATFORM, scope=place.scope(bot_id), author=incoming.author,
            text=incoming.text, event_id=event_id, images=images,
            profile=self._profile(incoming), shared=place.group,
        )
        try:
            last = await replier.stream(
                self._metrics.metered(PLATFORM, self._service.handle(request)))
        except ChatbridgeError as err:  # the database failed, say
            log.warning("turn failed: %s", err)
            if not replier.answered:
                await replier.say(err.user_message)
            return
        if isinstance(last, FinalEvent) and replier.message_ids:
            try:
                await self._service.record_reply(
                    platform=PLATFORM, event_id=request.event_id,
                    ref=f"{place.chat_id}/{replier.message_ids[0]}")
            except Exception as err:  # the answer is delivered; only feedback loses its link
                log.warning("could not record where the answer to %s is: %s",
                            request.event_id, err)

    async def _download(self, refs: Sequence[FileRef], replier: Replier,
                        event_id: str) -> tuple[bytes, ...] | None:
        """The images' bytes; ``None`` when the person was told why not (once)."""
        limit = self._config.max_file_bytes
        too_big = (f"That file is too large: I can download files up to {limit // 1_000_000} "
                   "MB. Please send a smaller image, or send it as a photo.")
        found: list[bytes] = []
        for ref in refs:
            refusal: str | None = None
            if ref.size is not None and ref.size > limit:
                refusal = too_big
            else:
                try:
                    file = await self._app.bot.get_file(ref.file_id)
                    found.append(bytes(await file.download_as_bytearray()))
                except BadRequest as err:
                    if "too big" not in err.message.lower():
                        raise
                    refusal = too_big
                except NetworkError as err:
                    # The file URL holds the bot token: log the error's kind, never the URL.
                    log.warning("image download failed: %s", type(err).__name__)
                    refusal = ("I couldn't download your image from Telegram; please send "
                               "it again.")
            if refusal is not None:
                if await self._first(event_id):  # no turn follows under this identity
                    await replier.say(refusal)
                return None
        return tuple(found)
