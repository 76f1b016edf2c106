"""Ordering incoming messages: albums gathered briefly, turns of a conversation in order.

``Albums`` holds the items of one album (``media_group_id``) until the album has been quiet
for a moment, then hands them over together; an item arriving later forms a group of its
own, identified by its own message id, so it is answered rather than taken for a repeat.
``TurnQueue`` lets the turns of one conversation start in the order their messages
arrived (a FIFO lock per conversation key), while other conversations run freely.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from weakref import WeakValueDictionary

from telegram import Message

__all__ = ["Albums", "TurnQueue"]

_AlbumKey = tuple[int, str | None, str]


class Albums:
    """Gathers the messages of one album (``media_group_id``) for a short while."""

    def __init__(self, wait: float, ready: Callable[[list[Message]], None]) -> None:
        self._wait = wait
        self._ready = ready
        self._items: dict[_AlbumKey, list[Message]] = {}
        self._timers: dict[_AlbumKey, asyncio.TimerHandle] = {}

    def add(self, message: Message) -> None:
        """Hold an album item until its album has been quiet for ``wait`` seconds."""
        key = (message.chat.id, message.business_connection_id, str(message.media_group_id))
        self._items.setdefault(key, []).append(message)
        if (timer := self._timers.pop(key, None)) is not None:
            timer.cancel()  # wait until the album has been quiet for a moment
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(self._wait, self._fire, key)

    def _fire(self, key: _AlbumKey) -> None:
        self._timers.pop(key, None)
        messages = self._items.pop(key, [])
        if messages:
            self._ready(messages)

    def flush(self) -> None:
        """Hand over every album still gathering (at shutdown)."""
        for key in list(self._timers):
            self._timers[key].cancel()
            self._fire(key)


class TurnQueue:
    """One turn at a time per conversation key, started in arrival order."""

    def __init__(self) -> None:
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

    @contextlib.asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        """Hold the key's place; enter before the first ``await`` of a turn to keep order."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:  # asyncio.Lock wakes its waiters first in, first out
            yield
