"""The Stop button of a streamed group answer (groups have no drafts, so no Bot API stop).

An inline keyboard button under the answer while it is edited into place; its
``callback_data`` names the answered message (``stop:<key>:<asker>``, ≤ 64 bytes). A press
arrives as a ``callback_query`` at whichever replica Telegram chose; it is recorded like
``MessageGenerationStopped`` (``core.stops``: the replica running the turn stops it at once
or within its poll), and the query is answered once — a redelivered update is recognised
by the query's id in the database. Only the person who asked may stop the answer (anyone,
when an anonymous admin asked).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from telegram import Bot, CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import TelegramError

from bots.telegram.inbound import Incoming, Place
from core.service import ChatService

__all__ = ["PREFIX", "StopPress", "handle_press", "read_press", "stop_markup"]

log = logging.getLogger(__name__)
PREFIX = "stop:"
LABEL = "⏹ Stop"
STOPPING = "Stopping the answer."
NOT_YOURS = "Only the person who asked can stop this answer."


def stop_markup(incoming: Incoming) -> InlineKeyboardMarkup | None:
    """The Stop button for the answer to ``incoming`` (``None`` if its data would not fit)."""
    data = f"{PREFIX}{incoming.key}:{incoming.author.id}"
    if len(data.encode()) > 64:
        return None
    return InlineKeyboardMarkup([[InlineKeyboardButton(LABEL, callback_data=data)]])


@dataclass(frozen=True, slots=True)
class StopPress:
    """A press of a Stop button: which answer, by whom."""

    query_id: str
    place: Place
    key: str
    asker: str
    user_id: int

    @property
    def allowed(self) -> bool:
        """The person who asked pressed it (or an anonymous admin asked)."""
        return not self.asker.isdigit() or self.asker == str(self.user_id)


def read_press(query: CallbackQuery) -> StopPress | None:
    """The Stop press this callback query is, if it is one of ours."""
    data = query.data or ""
    message = query.message
    if not data.startswith(PREFIX) or message is None:
        return None
    key, _, asker = data[len(PREFIX):].rpartition(":")
    if not key:
        return None
    chat = message.chat
    return StopPress(query.id, Place(chat.id, chat.type), key, asker, query.from_user.id)


async def handle_press(press: StopPress, *, service: ChatService, bot: Bot, platform: str,
                       bot_id: int) -> bool:
    """Record the stop (raises ``StoreError`` if the database cannot take it: the update
    is then not confirmed and comes again) and answer the query once."""
    if press.allowed:
        await service.stops.request(platform=platform,
                                    event_id=press.place.event_id(bot_id, press.key))
    if not await service.first_time(platform=platform,
                                    event_id=f"{bot_id}/callback/{press.query_id}"):
        return False  # a redelivered update: answered before
    try:
        await bot.answer_callback_query(press.query_id,
                                        text=STOPPING if press.allowed else NOT_YOURS)
    except TelegramError as err:  # the button's spinner ends by itself
        log.info("could not answer the Stop press: %s", err)
    return True
