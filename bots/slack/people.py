"""Display names of Slack users, looked up with ``users.info`` and cached for an hour."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable

from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.errors import error_kind

__all__ = ["Names"]

log = logging.getLogger(__name__)


class Names:
    """A small cache of user display names; a failed lookup falls back to the user ID.

    Lookups never raise: a name is a nicety, never a reason to lose a message.
    """

    def __init__(self, client: AsyncWebClient, *, ttl: float = 3600.0, size: int = 5000) -> None:
        self._client, self._ttl, self._size = client, ttl, size
        self._cache: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def cached(self, user: str) -> str | None:
        """The name if it is cached and fresh."""
        hit = self._cache.get(user)
        return hit[0] if hit and hit[1] > time.monotonic() else None

    async def name(self, user: str) -> str:
        """The user's display name (or real name, or handle)."""
        if (hit := self.cached(user)) is not None:
            return hit
        try:
            resp = await self._client.users_info(user=user)
            info = resp.get("user") or {}
            profile = info.get("profile") or {}
            name = str(profile.get("display_name") or profile.get("real_name")
                       or info.get("real_name") or info.get("name") or user)
        except Exception as err:  # Slack's refusal, timeouts, connection errors, garbage
            log.info("users.info %s failed: %s", user, error_kind(err))
            return user
        self._cache[user] = (name, time.monotonic() + self._ttl)
        self._cache.move_to_end(user)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return name

    async def load(self, users: Iterable[str]) -> None:
        """Make sure these users' names are cached."""
        for user in users:
            await self.name(user)
