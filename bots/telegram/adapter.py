"""Telegram updates in, core requests out; the core's replies back as Telegram calls.

The adapter only translates: which messages concern the bot, what they say, and how the
answer is shown. Conversation memory, duplicates, model calls and model choice are the
core's (``ChatService``). Every turn runs in its own task, so a slow model call never
holds up another chat.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from telegram import BotCommand, Message, Update, User
from telegram.error import BadRequest, NetworkError, TelegramError
from telegram.ext import Application, ContextTypes, MessageHandler, filters

from bots.telegram.config import TelegramConfig
from bots.telegram.inbound import FileRef, Incoming, read_messages
from bots.telegram.render import Blocked, Replier, Target
from core.errors import ChatbridgeError
from core.service import ChatService
from core.types import ChatRequest, FinalEvent

__all__ = ["ALLOWED_UPDATES", "COMMANDS", "PLATFORM", "TelegramAdapter"]

log = logging.getLogger(__name__)
PLATFORM = "telegram"
ALLOWED_UPDATES = ["message", "business_message"]
COMMANDS = (
    BotCommand("start", "Say hello"),
    BotCommand("help", "What I can read and do"),
    BotCommand("reset", "Start a new conversation"),
    BotCommand("model", "Show or switch the model"),
)
HELP = (
    "Write to me and I answer, remembering our conversation. I can read text and images "
    "(photos, albums, and images sent as files up to {mb} MB).\n\n"
    "In groups I answer when you mention me, reply to one of my messages, or use a command; "
    "each forum topic is its own conversation.\n\n"
    "/reset starts a new conversation (the old one is kept)\n"
    "/model shows the model{switch}\n"
    "/help shows this"
)
_App = Application[Any, Any, Any, Any, Any, Any]


class _Albums:
    """Gathers the messages of one album (``media_group_id``) for a short while."""

    def __init__(self, wait: float, ready: Callable[[list[Message]], None]) -> None:
        self._wait = wait
        self._ready = ready
        self._items: dict[tuple[int, str | None, str], list[Message]] = {}
        self._timers: dict[tuple[int, str | None, str], asyncio.TimerHandle] = {}

    def add(self, message: Message) -> None:
        key = (message.chat.id, message.business_connection_id, str(message.media_group_id))
        self._items.setdefault(key, []).append(message)
        if (timer := self._timers.pop(key, None)) is not None:
            timer.cancel()  # wait until the album has been quiet for a moment
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(self._wait, self._fire, key)

    def _fire(self, key: tuple[int, str | None, str]) -> None:
        self._timers.pop(key, None)
        messages = self._items.pop(key, [])
        if messages:
            self._ready(messages)

    def flush(self) -> None:
        """Hand over every album still gathering (at shutdown)."""
        for key in list(self._timers):
            self._timers[key].cancel()
            self._fire(key)


class TelegramAdapter:
    """Turns Telegram messages into ``ChatRequest``s and shows the replies."""

    def __init__(self, *, service: ChatService, config: TelegramConfig,
                 application: _App) -> None:
        self._service = service
        self._config = config
        self._app = application
        self._albums = _Albums(config.album_seconds, self._spawn)

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
            if incoming.empty or not incoming.addressed:
                return
            replier = self._replier(incoming)
            await self._answer(incoming, replier)
        except Blocked as err:
            log.warning("chat %s cannot be written to (%s); not answering", chat_id, err)
        except Exception:
            log.exception("failed to answer a message in chat %s", chat_id)
            if replier is not None:
                try:
                    await replier.say("Sorry, something went wrong on my side; please try "
                                      "again.")
                except (Blocked, TelegramError):
                    log.warning("could not tell chat %s about the failure", chat_id)

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

    async def _answer(self, incoming: Incoming, replier: Replier) -> None:
        command = incoming.command
        if command is not None:
            if await self._command(incoming, replier):
                return
            if incoming.place.group and not command.explicit:
                return  # a bare /command of some other bot
        if incoming.unsupported is not None:
            await replier.say(f"I can't read {incoming.unsupported} yet; I understand text "
                              "and images (photos, or images sent as files).")
            if not incoming.text:
                return
        images = await self._download(incoming.images, replier)
        if images is None:
            return
        bot_id = self._me.id
        place = incoming.place
        request = ChatRequest(
            platform=PLATFORM, scope=place.scope(bot_id), author=incoming.author,
            text=incoming.text, event_id=place.event_id(bot_id, incoming.key), images=images,
            profile=self._profile(incoming), shared=place.group,
        )
        try:
            last = await replier.stream(self._service.handle(request))
        except ChatbridgeError as err:  # the database failed, say
            log.warning("turn failed: %s", err)
            await replier.say(err.user_message)
            return
        if isinstance(last, FinalEvent) and replier.message_ids:
            await self._service.record_reply(
                platform=PLATFORM, event_id=request.event_id,
                ref=f"{place.chat_id}/{replier.message_ids[0]}")

    async def _download(self, refs: Sequence[FileRef],
                        replier: Replier) -> tuple[bytes, ...] | None:
        """The images' bytes; ``None`` when the person was told why not."""
        limit = self._config.max_file_bytes
        too_big = (f"That file is too large: I can download files up to {limit // 1_000_000} "
                   "MB. Please send a smaller image, or send it as a photo.")
        found: list[bytes] = []
        for ref in refs:
            if ref.size is not None and ref.size > limit:
                await replier.say(too_big)
                return None
            try:
                file = await self._app.bot.get_file(ref.file_id)
                found.append(bytes(await file.download_as_bytearray()))
            except BadRequest as err:
                if "too big" not in err.message.lower():
                    raise
                await replier.say(too_big)
                return None
            except NetworkError as err:
                # The file URL holds the bot token: log the error's kind, never the URL.
                log.warning("image download failed: %s", type(err).__name__)
                await replier.say("I couldn't download your image from Telegram; please "
                                  "send it again.")
                return None
        return tuple(found)

    async def _command(self, incoming: Incoming, replier: Replier) -> bool:
        """Run one of our commands; ``False`` when the command is not ours."""
        assert incoming.command is not None
        name, args = incoming.command.name, incoming.command.args
        scope = incoming.place.scope(self._me.id)
        profile = self._profile(incoming)
        service = self._service
        if name == "start":
            await replier.say(self._config.greeting_for(profile))
        elif name == "help":
            choices = service.model_choices
            switch = f"; /model NAME switches to one of: {', '.join(choices)}" if choices else ""
            await replier.say(HELP.format(mb=self._config.max_file_bytes // 1_000_000,
                                          switch=switch))
        elif name == "reset":
            await service.reset(platform=PLATFORM, scope=scope)
            await replier.say("Started a new conversation. (The earlier one is kept.)")
        elif name == "model":
            await self._model(scope, profile, args, replier)
        else:
            return False
        return True

    async def _model(self, scope: str, profile: str | None, args: str,
                     replier: Replier) -> None:
        service = self._service
        choices = service.model_choices
        if args and choices:
            wanted = args.split()[0]
            try:
                await service.choose_model(
                    platform=PLATFORM, scope=scope,
                    model=None if wanted.lower() == "default" else wanted)
            except ChatbridgeError as err:
                await replier.say(err.user_message)
                return
        current = await service.current_model(platform=PLATFORM, scope=scope, profile=profile)
        if not choices:
            await replier.say(f"Model: {current}. (Switching is not enabled here.)")
        elif args:
            await replier.say(f"Switched to {current} for this conversation.")
        else:
            await replier.say(f"Model: {current}. Switch with /model NAME, one of: "
                              f"{', '.join(choices)} (or /model default).")
