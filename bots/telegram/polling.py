"""Long polling that confirms an update to Telegram only once the inbox holds it.

``getUpdates`` with ``offset`` confirms every update below the offset: Telegram forgets
them. PTB's Updater moves the offset on as soon as it has fetched a batch, whatever
becomes of the updates; here each update is first recorded (``receive``) and only then
is the next batch asked for past it. If the database cannot take an update, the offset
stays where it is and the same batch is asked for again after a pause, so nothing
Telegram sent is lost. An update python-telegram-bot cannot read (a newer Bot API's
shape, say) is logged and passed over instead of blocking every update behind it.

Faults back off and go on: flood control waits as long as Telegram asks; a network
fault or Telegram's 5xx waits 1, 2, 4… up to 30 s; ``Conflict`` (another process
polls this bot, or a webhook is set) is logged as an error each time. ``stop`` cancels
the poll in flight and confirms what was recorded, so a restart does not fetch it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from telegram import Bot, Update
from telegram.error import Conflict, NetworkError, RetryAfter, TelegramError, TimedOut

from bots.telegram.render import retry_seconds
from core.errors import StoreError

__all__ = ["Poller"]

log = logging.getLogger(__name__)
Receive = Callable[[Update], Awaitable[object]]


class Poller:
    """Fetches updates with ``getUpdates`` and hands each to ``receive`` before
    confirming it."""

    def __init__(self, bot: Bot, receive: Receive, *, allowed_updates: Sequence[str],
                 timeout: int = 10, max_backoff: float = 30.0) -> None:
        self._bot = bot
        self._receive = receive
        self._allowed = list(allowed_updates)
        self._timeout = timeout
        self._max_backoff = max_backoff
        self._offset: int | None = None  # the next update_id wanted
        self._confirmed: int | None = None  # the offset Telegram was last sent
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Remove a webhook (Telegram refuses getUpdates while one is set) and poll."""
        try:
            await self._bot.delete_webhook()
        except TelegramError as err:
            log.warning("could not remove the webhook before polling: %s", err)
        self._task = asyncio.create_task(self._run(), name="telegram polling")

    async def stop(self) -> None:
        """Stop polling; confirm the updates recorded since the last request."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._offset is not None and self._offset != self._confirmed:
            try:
                await asyncio.wait_for(self._fetch(wait=0, limit=1), 5)
            except (TelegramError, TimeoutError) as err:
                log.info("could not confirm the last updates (%s); they will come again "
                         "and be recognised", type(err).__name__)

    async def _fetch(self, *, wait: int, limit: int = 100) -> list[Any]:
        """One ``getUpdates`` call (a long poll of ``wait`` seconds), its answer left
        unparsed.

        ``Bot.get_updates`` parses the whole batch at once: one update it cannot read would
        fail the batch, and with it every update behind it, for good.
        """
        offset = self._offset
        data = {"offset": offset, "timeout": wait, "limit": limit,
                "allowed_updates": self._allowed}
        result = await self._bot._post("getUpdates", data, read_timeout=wait + 10)
        self._confirmed = offset
        return result if isinstance(result, list) else []

    async def _run(self) -> None:
        failures = 0
        while True:
            wait = 0.0
            try:
                batch = await self._fetch(wait=self._timeout)
            except RetryAfter as err:
                wait = retry_seconds(err)
                log.info("Telegram flood control on getUpdates: waiting %.0f s", wait)
            except Conflict as err:
                failures += 1
                wait = self._backoff(failures)
                log.error("Telegram refused getUpdates: %s. Another process is polling this "
                          "bot, or a webhook is set; only one may receive its updates. "
                          "Retrying in %.0f s", err.message, wait)
            except TimedOut:
                failures += 1
                wait = 0.0 if failures < 3 else self._backoff(failures - 2)
            except NetworkError as err:
                failures += 1
                wait = self._backoff(failures)
                log.warning("getUpdates failed (%s); retrying in %.0f s", err.message, wait)
            except TelegramError as err:
                failures += 1
                wait = self._backoff(failures)
                log.error("getUpdates failed: %s; retrying in %.0f s", err.message, wait)
            except Exception as err:  # never stop polling for good; the URL holds the token
                failures += 1
                wait = self._backoff(failures)
                log.error("getUpdates failed (%s); retrying in %.0f s", type(err).__name__,
                          wait)
            else:
                if await self._record(batch):
                    failures = 0
                else:
                    failures += 1
                    wait = self._backoff(failures)
            if wait:
                await asyncio.sleep(wait)

    def _backoff(self, failures: int) -> float:
        return float(min(2.0 ** (failures - 1), self._max_backoff))

    async def _record(self, batch: list[Any]) -> bool:
        """Hand the batch's updates over in order; ``False`` if the database failed."""
        for data in batch:
            update_id = data.get("update_id") if isinstance(data, Mapping) else None
            if not isinstance(update_id, int):
                log.warning("getUpdates returned something that is not an update; skipped")
                continue
            try:
                update = Update.de_json(dict(data), self._bot)
            except Exception as err:  # a shape this python-telegram-bot does not know
                log.warning("skipping update %d, which cannot be read: %s", update_id,
                            type(err).__name__)
                self._offset = update_id + 1
                continue
            try:
                await self._receive(update)
            except StoreError as err:
                log.error("could not record update %d (%s); it stays with Telegram and is "
                          "fetched again", update_id, err)
                return False
            except Exception:  # a bug with this update: skip it rather than stall on it
                log.exception("update %d could not be handled; skipped", update_id)
            self._offset = update_id + 1
        return True
