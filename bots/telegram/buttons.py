"""Inline buttons pressed on Telegram: "Release to the bot" on a staff notice, "Talk to a
person" under "I don't know". Each press acts once and is answered once, also when its
``callback_query`` update is delivered again or reaches another replica."""

from __future__ import annotations

import logging
from collections.abc import Callable

from telegram import Bot, CallbackQuery, Message, User
from telegram.error import TelegramError

from bots.posters import HANDOFF_START, RELEASE_ACTION
from bots.relay import Desk
from bots.telegram.config import TelegramConfig
from bots.telegram.inbound import place_of
from core.service import ChatService

__all__ = ["ALREADY_RELEASED", "RELEASED", "Buttons"]

log = logging.getLogger(__name__)
PLATFORM = "telegram"
RELEASED = "Released: the bot answers this customer again."
ALREADY_RELEASED = "This conversation was already handed back to the bot."


class Buttons:
    """What a press of one of the bot's inline buttons does."""

    def __init__(self, *, desk: Desk, service: ChatService, config: TelegramConfig, bot: Bot,
                 me: Callable[[], User], staff: frozenset[str]) -> None:
        self._desk, self._service, self._config = desk, service, config
        self._bot, self._me, self._staff = bot, me, staff

    async def pressed(self, query: CallbackQuery) -> None:
        """Act on a press (once) and answer it (once); other buttons are ignored."""
        message = query.message
        if query.data == HANDOFF_START and isinstance(message, Message):
            place = place_of(message)
            if self._config.allow.decide(chat_id=place.chat_id, user_id=query.from_user.id,
                                         private=place.private) == "answer":
                await self._person_asked(query.id, message)
            return
        if query.data != RELEASE_ACTION or message is None \
                or str(message.chat.id) not in self._staff:
            return
        released = await self._desk.release_by_notice(
            f"{message.chat.id}/{message.message_id}", by=f"{PLATFORM}:{query.from_user.id}")
        await self._answer(query.id, RELEASED if released else ALREADY_RELEASED)

    async def _person_asked(self, query_id: str, message: Message) -> None:
        """The chat under "I don't know" is handed to staff (once)."""
        place = place_of(message)
        customer = {"chat_id": place.chat_id, "thread_id": place.thread_id,
                    "business_connection_id": place.business_connection_id, "reply_to": None}
        await self._desk.person_asked(
            platform=PLATFORM, scope=place.scope(self._me().id), customer=customer,
            profile=self._config.profile_for(
                place.chat_id, business=place.business_connection_id is not None))
        await self._answer(query_id, None)

    async def _answer(self, query_id: str, text: str | None) -> None:
        if not await self._service.first_time(platform=PLATFORM,
                                              event_id=f"callback/{query_id}"):
            return
        try:
            await self._bot.answer_callback_query(query_id, text=text)
        except TelegramError as err:  # the spinner stops by itself after a while
            log.warning("could not answer the button press: %s", type(err).__name__)
