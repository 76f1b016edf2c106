"""Telegram updates that are not messages: a reaction on an answer, the draft's stop button.

Pure functions; no I/O.

* ``message_reaction`` (Bot API 7.0; delivered only when listed in ``allowed_updates``):
  👍 or 👎 among the person's new reactions is feedback on the answer at that message;
  neither, where the old reactions had one, takes the feedback back.
* ``stopped_message_generation`` (Bot API 10.3, newer than python-telegram-bot 22.8, so it
  arrives in ``Update.api_kwargs``): ``{chat, message_thread_id?, draft_id}``, no sender
  [protocols-2 L.3; core.telegram.org/bots/api/types/messagegenerationstopped]. Our draft
  id is the message id of the message being answered, so the stop names that message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from telegram import MessageReactionUpdated, ReactionType, ReactionTypeEmoji, Update

__all__ = ["STOP_UPDATE", "Reaction", "Stop", "read_reaction", "read_stop"]

STOP_UPDATE = "stopped_message_generation"
UP, DOWN = "👍", "👎"


@dataclass(frozen=True, slots=True)
class Reaction:
    """Feedback from a reaction: where, who, and up (True), down (False) or taken back."""

    chat_id: int
    message_id: int
    user_id: int
    positive: bool | None
    at: datetime

    @property
    def ref(self) -> str:
        """The answer's platform reference (as the adapter stores it)."""
        return f"{self.chat_id}/{self.message_id}"


@dataclass(frozen=True, slots=True)
class Stop:
    """The stop button of a draft was pressed."""

    chat_id: int
    thread_id: int | None
    draft_id: int


def _thumbs(reactions: tuple[ReactionType, ...]) -> bool | None:
    emoji = {r.emoji for r in reactions if isinstance(r, ReactionTypeEmoji)}
    if UP in emoji:
        return True
    if DOWN in emoji:
        return False
    return None


def read_reaction(update: MessageReactionUpdated) -> Reaction | None:
    """The feedback a reaction change gives, if any (anonymous reactions give none)."""
    if update.user is None or update.user.is_bot:
        return None
    new, old = _thumbs(update.new_reaction), _thumbs(update.old_reaction)
    if new is None and old is None:
        return None  # some other emoji: not feedback
    return Reaction(update.chat.id, update.message_id, update.user.id, new, update.date)


def read_stop(update: Update) -> Stop | None:
    """The stop this update carries, if it is one (read tolerantly: unknown to PTB)."""
    extra: Mapping[str, Any] = update.api_kwargs or {}
    data = extra.get(STOP_UPDATE)
    if not isinstance(data, Mapping):
        return None
    chat = data.get("chat")
    chat_id = chat.get("id") if isinstance(chat, Mapping) else None
    draft_id = data.get("draft_id")
    thread = data.get("message_thread_id")
    if not isinstance(chat_id, int) or not isinstance(draft_id, int) or not draft_id:
        return None
    return Stop(chat_id, thread if isinstance(thread, int) else None, draft_id)
