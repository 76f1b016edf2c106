"""Slack's Agent messaging surface: which DM surface is used, what a person looks at.

Both are learned from events (``app_home_opened``, ``app_context_changed``,
``assistant_thread_started``) and kept in SQL (``core.platform_state``) as they arrive,
because the next message may reach another replica than the event did (HTTP behind a
load balancer; Socket Mode spreads envelopes over connections too). Whichever replica
handles the message reads them there.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from bots.slack.config import Surface
from bots.slack.translate import PLATFORM, Focus, sort_key
from core.errors import StoreError
from core.platform_state import SharedState

__all__ = ["Focuses", "SurfaceState", "asks_about_focus", "event_stamp"]

log = logging.getLogger(__name__)
SURFACE_KEY = "surface"
SURFACE_FRESH_SECONDS = 30.0  # a surface stored by a replica is read again after this
# "summarise this channel", "what is this thread about", "the message above", "here"…
_ABOUT_FOCUS = re.compile(
    r"\b(this|that|the|current)\s+(channel|conversation|thread|discussion|message|post)\b"
    r"|\bhere\b|\bin\s+#?[a-z0-9_-]+\s+channel\b", re.IGNORECASE)


def event_stamp(event: Mapping[str, Any], body: Mapping[str, Any]) -> str:
    """The event's place in Slack's order (``event_ts``, else the delivery's time)."""
    ts = event.get("event_ts") or body.get("event_time") or f"{time.time():.6f}"
    return sort_key(str(ts))


class SurfaceState:
    """Whether direct messages arrive on the Agent messaging surface (each one a thread
    root) or the older assistant container. ``auto`` follows the events that arrive, at
    any replica: ``app_home_opened`` (Messages tab) and ``app_context_changed`` come only
    with ``agent_view``; ``assistant_thread_started`` only with ``assistant_view``."""

    def __init__(self, setting: Surface, state: SharedState | None = None) -> None:
        self.setting = setting
        self._state = state
        self._seen_agent: bool | None = None  # the last answer here (used if SQL fails)
        self._read_at = -SURFACE_FRESH_SECONDS  # when the stored surface was last read

    async def agent(self) -> bool:
        """Whether each DM message is a thread root (``auto``: as stored by any replica,
        read again at most every ``SURFACE_FRESH_SECONDS``: it changes only when the app's
        settings do, and one read per message is a round trip per turn)."""
        if self.setting != "auto":
            return self.setting == "agent"
        now = time.monotonic()
        if self._state is not None and (self._seen_agent is None
                                        or now - self._read_at >= SURFACE_FRESH_SECONDS):
            # (until some replica learned it, every DM asks)
            self._read_at = now
            try:
                found = await self._state.get_many(platform=PLATFORM, keys=[SURFACE_KEY])
            except StoreError as err:
                log.warning("could not read the Slack DM surface: %s", err)
            else:
                if SURFACE_KEY in found:
                    self._learn(bool(found[SURFACE_KEY].get("agent")))
        return bool(self._seen_agent)

    def _learn(self, agent: bool) -> None:
        self._read_at = time.monotonic()
        if self._seen_agent is not agent:
            log.info("Slack DM surface: %s", "agent" if agent else "assistant")
            self._seen_agent = agent

    def record(self, *, agent: bool) -> dict[str, dict[str, Any]]:
        """What to store after an event only one surface sends (``{}``: not ``auto``)."""
        if self.setting != "auto":
            return {}
        self._learn(agent)
        return {SURFACE_KEY: {"agent": agent}}

    async def saw(self, *, agent: bool, stamp: str) -> None:
        """An event only one of the surfaces sends arrived: store it for every replica."""
        values = self.record(agent=agent)
        if values and self._state is not None:
            await self._state.put_many(platform=PLATFORM, values=values, stamp=stamp)


class Focuses:
    """The latest ``app_context_changed`` per person (and per thread, when the event names
    one), in SQL for every replica."""

    def __init__(self, state: SharedState) -> None:
        self._state = state

    @staticmethod
    def values(team: str, user: str, focus: Focus) -> dict[str, dict[str, Any]]:
        """What to store for what ``user`` looks at now (``{}`` context: nothing); an event
        without its user applies to the workspace's DMs until a person's own arrives."""
        base = f"focus/{team}/{user or '*'}"
        value = {"channel": focus.channel, "message_ts": focus.message_ts,
                 "thread_ts": focus.thread_ts}
        return {base: value, f"{base}/{focus.thread_ts}": value}

    async def get(self, team: str, user: str, thread_ts: str | None) -> Focus:
        """What the person looked at last when writing in ``thread_ts`` (nothing known, or
        the database failing: nothing)."""
        keys = [f"focus/{team}/{user}/{thread_ts or ''}", f"focus/{team}/{user}",
                f"focus/{team}/*"]
        try:
            found = await self._state.get_many(platform=PLATFORM, keys=keys)
        except StoreError as err:
            log.warning("could not read what %s looks at: %s", user, err)
            return Focus()
        for key in keys:
            if (value := found.get(key)) is not None:
                return Focus(str(value.get("channel") or ""),
                             str(value.get("message_ts") or ""),
                             str(value.get("thread_ts") or ""))
        return Focus()


def asks_about_focus(text: str) -> bool:
    """Whether a message is about what the person is looking at ("summarise this
    channel"): only then is the channel read (profiles without tools)."""
    return bool(_ABOUT_FOCUS.search(text))
