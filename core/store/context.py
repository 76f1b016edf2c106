"""Reading a conversation's context window (the newest messages within the budget)."""

from __future__ import annotations

from sqlalchemy import (
    Connection,
    select,
)

from core.store.base import StoreBase
from core.store.summaries import SUMMARY_ROLE, MemoryRow, read_memory
from core.store.tables import (
    _CONTEXT,
    _CONTEXT_AFTER,
    WINDOW_CACHE_SIZE,
    ContextLimits,
    StoredMessage,
    _att,
    _link,
    _stored,
)
from core.store.toolcalls import attach_tools
from core.types import Image, Video


class ContextReads(StoreBase):
    """Loading the context the model gets."""

    async def load_context(
        self, conversation_id: int, limits: ContextLimits, *, current_id: int | None = None
    ) -> list[StoredMessage]:
        """The newest usable messages that fit the token budget, oldest first.

        Images (and videos' frames) are loaded for the newest ``image_turns`` user
        messages that have any; older messages keep only their ``image_count`` (and
        ``video_count``).
        """
        return await self._tx(
            lambda conn: self._context(conn, conversation_id, limits, current_id),
            "load the conversation",
        )

    def _window(
        self, conn: Connection, conversation_id: int, limit: int, epoch: int = 0
    ) -> list[StoredMessage]:
        """The newest ``limit`` usable messages, newest first.

        On SQLite, row ids are assigned under the file's write lock, so a committed row
        never appears below one already seen: the window is kept in memory and only
        newer rows are read, whatever the history's size. PostgreSQL reads it whole.
        """
        params = {"p_id": conversation_id, "p_limit": limit}
        if self._windows is None:
            return [_stored(row) for row in conn.execute(_CONTEXT, params)]
        with self._windows_lock:
            cached = self._windows.get(conversation_id)
        # (epoch: prune/forget deleted messages of the conversation, maybe in another process)
        if cached is not None and cached[0] == (limit, epoch):
            after = cached[1][0].id if cached[1] else 0
            fresh = [_stored(row)
                     for row in conn.execute(_CONTEXT_AFTER, {**params, "p_after": after})]
            window = (fresh + cached[1])[:limit] if fresh else cached[1]
        else:
            window = [_stored(row) for row in conn.execute(_CONTEXT, params)]
        with self._windows_lock:
            self._windows[conversation_id] = ((limit, epoch), window)
            self._windows.move_to_end(conversation_id)
            while len(self._windows) > WINDOW_CACHE_SIZE:
                self._windows.popitem(last=False)
        return window

    def _context(
        self, conn: Connection, conversation_id: int, limits: ContextLimits,
        current_id: int | None = None, *, memory: MemoryRow | bool | None = True,
        new: bool = False,
    ) -> list[StoredMessage]:
        """The context for the turn of message ``current_id``, in conversation order.

        User messages newer than the current one wait for their own turn. Each answer
        follows the message it answers (they share the inbound event id), even when a
        second message was recorded while the first was being answered.
        """
        picked: list[StoredMessage] = []
        used = 0
        # The rolling summary stands for the messages it covers (core.memory).
        # (``memory``: the row when the caller read it already; ``new``: the conversation
        # was opened in this transaction, so it has no summary and no tool calls yet.)
        if memory is True:
            memory = None if new else read_memory(conn, conversation_id)
        elif memory is False:
            memory = None
        covers = memory.covers_message_id if memory else 0
        summary = (StoredMessage(covers, SUMMARY_ROLE, memory.summary, "", memory.summary_tokens,
                                 0) if memory and memory.summary else None)
        budget = limits.budget_tokens - (summary.token_count if summary else 0)
        for message in self._window(conn, conversation_id, limits.max_messages,
                                    memory.epoch if memory else 0):
            if message.id <= covers:
                break
            if current_id is not None and message.role == "user" and message.id > current_id:
                continue
            if picked and used + message.token_count > budget:
                break
            used += message.token_count
            picked.append(message)
        if not new:
            picked = attach_tools(conn, conversation_id, picked, limits.budget_tokens - used)
        recent_turns = [m for m in picked if m.role == "user"][: limits.image_turns]
        with_images = [m.id for m in recent_turns if m.image_count or m.video_count]
        images = self._images_for(conn, with_images) if with_images else {}
        # User messages in the platform's order (their sort key; then as stored), each
        # answer after the message it answers.
        place = {m.event_id: (m.sort_key, m.id) for m in picked
                 if m.role == "user" and m.event_id}
        picked.sort(key=lambda m: (
            (m.sort_key, m.id) if m.role == "user" else place.get(m.event_id, ("", m.id)),
            m.role != "user", m.id))
        if images:
            picked = [m._replace(images=images[m.id][0], videos=images[m.id][1])
                      if m.id in images else m for m in picked]
        return [summary, *picked] if summary else picked

    @staticmethod
    def _images_for(conn: Connection, message_ids: list[int]
                    ) -> dict[int, tuple[tuple[Image, ...], tuple[Video, ...]]]:
        """The images and the videos (their frames) of these messages, in order."""
        rows = conn.execute(
            select(_link.c.message_id, _att.c.sha256, _att.c.mime, _att.c.width,
                   _att.c.height, _att.c.data, _link.c.video, _link.c.fps)
            .join(_att, _att.c.sha256 == _link.c.sha256)
            .where(_link.c.message_id.in_(message_ids))
            .order_by(_link.c.message_id, _link.c.position)
        )
        images: dict[int, list[Image]] = {}
        frames: dict[int, dict[int, list[Image]]] = {}
        rates: dict[tuple[int, int], float] = {}
        files: dict[tuple[int, int], Image] = {}
        for r in rows:
            image = Image(data=r.data, mime=r.mime, width=r.width, height=r.height,
                          sha256=r.sha256)
            if r.video is None:
                images.setdefault(r.message_id, []).append(image)
            elif r.mime.startswith("video/"):  # the file of a video sent whole
                files[(r.message_id, r.video)] = image
            else:
                frames.setdefault(r.message_id, {}).setdefault(r.video, []).append(image)
                rates[(r.message_id, r.video)] = float(r.fps or 0) or 2.0
        found: dict[int, tuple[tuple[Image, ...], tuple[Video, ...]]] = {}
        for message_id in {*images, *frames}:
            videos = tuple(
                Video(tuple(shots), rate, round(len(shots) / rate, 3), files.get(key))
                for number, shots in sorted(frames.get(message_id, {}).items())
                for key in [(message_id, number)] for rate in [rates[key]])
            found[message_id] = (tuple(images.get(message_id, ())), videos)
        return found
