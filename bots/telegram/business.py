"""Telegram Business in the adapter: connection news (asked for with
``getBusinessConnection`` when a message names one the store does not know), the owner's
pause, edits and deletions of customer messages still waiting in the inbox."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from telegram import BusinessConnection, Message, Update, User
from telegram.error import TelegramError

from bots.telegram.inbound import Incoming, read_messages
from core.business import BusinessLink, BusinessState
from core.store import Store

__all__ = ["Business"]

log = logging.getLogger(__name__)
PLATFORM = "telegram"


class Business:
    """What the adapter does with business updates, and whether it may answer now."""

    def __init__(self, store: Store, *, bot: Any, me: Callable[[], User],
                 clock: Callable[[], datetime], pause_minutes: float) -> None:
        self._state = BusinessState(store)
        self._bot = bot
        self._me_ = me
        self._clock = clock
        self._minutes = pause_minutes

    async def event(self, update: Update) -> bool:
        """A business connection's news, an edit or a deletion; ``True`` when handled."""
        me = self._me_()
        if (conn := update.business_connection) is not None:
            await self._save(conn)
            return True
        if (edited := update.edited_business_message) is not None:
            sender = edited.from_user
            if sender is not None and sender.id == edited.chat.id \
                    and edited.sender_business_bot is None:
                incoming = read_messages([edited], me)
                # Not answered yet: answered as edited; else the edit comes too late.
                await self._state.revise(
                    platform=PLATFORM, event_id=incoming.place.event_id(me.id, incoming.key),
                    payload={"update_id": update.update_id,
                             "business_message": edited.to_dict()})
            return True
        if (gone := update.deleted_business_messages) is not None:
            place = f"{me.id}/{gone.business_connection_id}/{gone.chat.id}"
            await self._state.withdraw(platform=PLATFORM, event_ids=[
                f"{place}/{mid}" for mid in gone.message_ids])
            return True
        return False

    async def _save(self, conn: BusinessConnection) -> BusinessLink:
        rights = conn.rights
        link = BusinessLink(conn.id, str(conn.user.id), conn.is_enabled,
                            bool(rights is not None and rights.can_reply))
        await self._state.save_connection(id=link.id, user_id=link.user_id,
                                          enabled=link.enabled, can_reply=link.can_reply)
        return link

    async def _ask(self, connection_id: str) -> BusinessLink | None:
        """The connection as Telegram has it now (stored); ``None`` when Telegram would not
        say (then the answer is tried, as before the connection was known)."""
        try:
            conn = await self._bot.get_business_connection(connection_id)
        except TelegramError as err:
            log.warning("getBusinessConnection %s failed: %s", connection_id,
                        type(err).__name__)
            return None
        if not isinstance(conn, BusinessConnection):
            return None
        return await self._save(conn)

    async def owner_wrote(self, message: Message) -> None:
        """The business owner answered by hand: the bot keeps quiet in that chat."""
        minutes = self._minutes
        if minutes <= 0:
            return
        place = read_messages([message], self._me_()).place
        await self._state.pause(platform=PLATFORM, scope=place.scope(self._me_().id),
                                   until=self._clock() + timedelta(minutes=minutes))

    async def allows(self, incoming: Incoming) -> bool:
        """Whether the bot may answer in this business chat now (the connection is on and
        may reply, and the owner has not written by hand lately)."""
        place = incoming.place
        if place.business_connection_id is None:
            return True
        conn = await self._state.connection(place.business_connection_id)
        if conn is None:  # connected before this bot ran, or its update went astray
            conn = await self._ask(place.business_connection_id)
        if conn is not None and not (conn.enabled and conn.can_reply):
            log.info("business connection %s is off or may not reply; not answering",
                     place.business_connection_id)
            return False
        until = await self._state.paused_until(platform=PLATFORM,
                                                  scope=place.scope(self._me_().id))
        if until is not None and until > self._clock():
            log.info("the owner wrote in business chat %s; the bot keeps quiet until %s",
                     place.chat_id, until.isoformat(timespec="minutes"))
            return False
        return True

