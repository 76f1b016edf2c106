"""The inbox worker: answers queued inbound events, one conversation key at a time.

Adapters call ``Inbox.receive`` before they acknowledge an event to the platform; the
event is then in the database, and a redelivery is recognised there. Each replica runs
one ``Inbox``: it claims conversation keys with waiting events (``core.store.queue``),
hands each claim to the handler its platform registered, renews the lease while the
handler works and gives the key back when it is done. Events that arrived for a key
while its turn was running wait in the database and are claimed together afterwards, so
they are answered in one turn, in order. Another replica — or this one after a restart —
takes over a key whose lease expired (its holder died).

``stop`` stops claiming, lets running handlers finish for a grace period and puts the
rest back in the inbox for another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from core.errors import StoreError
from core.store import Store
from core.store.queue import Claim, InboxStore, QueuedEvent

__all__ = ["LEASE_LOST", "Claim", "Inbox", "QueuedEvent", "replica_name"]

log = logging.getLogger(__name__)
Handler = Callable[[Claim], Coroutine[Any, Any, None]]
# The message of the cancellation a handler gets when another replica took its key over:
# it must then leave the platform messages alone (that replica edits them), unlike at
# shutdown, when it marks them as interrupted.
LEASE_LOST = "chatbridge: lease lost"


def replica_name() -> str:
    """A name for this process, unique among replicas: host, pid and a random tag."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(3)}"


class Inbox:
    """Claims and answers queued events for the platforms that registered a handler."""

    def __init__(
        self, store: Store, *, owner: str | None = None, lease_seconds: float = 60.0,
        concurrency: int = 100, poll_seconds: float = 1.0, max_batch: int = 20,
    ) -> None:
        self.owner = owner or replica_name()
        self._queue = InboxStore(store)
        self._lease = lease_seconds
        self._concurrency = concurrency
        self._poll = poll_seconds
        self._max_batch = max_batch
        self._handlers: dict[str, Handler] = {}
        self._wake = asyncio.Event()
        self._running: dict[asyncio.Task[None], Claim] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._loop_task: asyncio.Task[None] | None = None
        # Whether events waited under a key when this replica released it (until _done).
        self._more: dict[tuple[str, str], bool] = {}
        self._held_back = False  # the last claim was limited by free slots, not by work

    @property
    def running(self) -> int:
        """Claims being answered in this process now."""
        return len(self._running)

    def register(self, platform: str, handler: Handler) -> None:
        """Answer ``platform``'s events with ``handler`` (one claim at a time per key)."""
        self._handlers[platform] = handler

    async def receive(
        self, *, platform: str, event_id: str, scope: str, payload: Mapping[str, Any],
        delay: float = 0.0, if_known: bool = False, sort_key: str | None = None,
    ) -> bool:
        """Record an inbound event to be answered; ``False`` if it was seen before.

        ``sort_key``: the platform's order of the event (Slack ``ts``, Telegram date and
        message id); a conversation's waiting events are answered in that order.
        ``delay``: claim the key no sooner (an album's items gather meanwhile).
        ``if_known``: record it only if the conversation key was ever used (a thread
        the bot takes part in). Raises ``StoreError`` if the database cannot take it: the
        adapter must then not acknowledge the event, so the platform delivers it again.
        """
        new = await self._queue.enqueue(platform=platform, event_id=event_id, scope=scope,
                                        payload=payload, delay=delay, if_known=if_known,
                                        sort_key=sort_key)
        if new:
            if delay > 0:
                asyncio.get_running_loop().call_later(delay, self._wake.set)
            self._wake.set()
        return new

    def start(self) -> None:
        """Start claiming in the background."""
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._run(), name="chatbridge inbox")

    async def _run(self) -> None:
        while not self._closing:
            self._wake.clear()
            free = self._concurrency - len(self._running)
            limit = min(free, 16)
            self._held_back = free < 16
            claimed = 0
            if limit > 0 and self._handlers:
                try:
                    claimed = await self._claim(limit)
                except Exception:  # a bug must not stop this replica answering for good
                    log.exception("inbox: claiming failed")
                    await asyncio.sleep(self._poll)
            if self._closing:
                break
            if claimed and claimed == limit:
                continue  # there may be more waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)

    async def _claim(self, limit: int) -> int:
        try:
            # Never a key this replica is answering now: its lease may have run out while
            # the database was away, and our own name would pass the fence twice.
            busy = {(c.platform, c.scope) for c in self._running.values()}
            claims = await self._queue.claim(owner=self.owner, lease_seconds=self._lease,
                                             limit=limit, max_batch=self._max_batch,
                                             platforms=tuple(self._handlers), busy=busy)
        except StoreError as err:
            log.warning("inbox: %s", err)
            await asyncio.sleep(self._poll)
            return 0
        for claim in claims:
            for dead in claim.abandoned:
                log.error("inbox: giving up on %s %s after %d attempts", claim.platform,
                          dead.event_id, dead.attempts - 1)
            task = asyncio.create_task(self._answer(claim),
                                       name=f"inbox {claim.platform} {claim.scope}")
            self._running[task] = claim
            self._idle.clear()
            task.add_done_callback(self._done)
        return len(claims)

    def _done(self, task: asyncio.Task[None]) -> None:
        claim = self._running.pop(task, None)
        if not self._running:
            self._idle.set()
        # Claim again only if it can find something: events wait under the released key
        # (the release looked), or claims were held back by the concurrency limit. An
        # empty claim after every turn was a round trip per turn (issue 11); events of
        # other keys woke us when they arrived, or the poll finds them.
        more = claim is None or self._more.pop((claim.platform, claim.scope), True)
        if more or self._held_back:
            self._wake.set()

    async def _answer(self, claim: Claim) -> None:
        handler = self._handlers[claim.platform]  # claims are of registered platforms only
        requeue = failed = False
        try:
            if claim.events or claim.abandoned:
                work = asyncio.create_task(handler(claim))
                keeper = asyncio.create_task(self._keep_lease(claim, work))
                try:
                    await asyncio.shield(work)
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():  # shutdown
                        work.cancel()
                        with contextlib.suppress(BaseException):
                            await work
                        raise
                    # The keeper cancelled the work: another replica holds the key now.
                    log.warning("inbox: lost the lease on %s %s; another replica answers",
                                claim.platform, claim.scope)
                except Exception as err:
                    failed = True
                    log.error("inbox: answering %s %s failed: %s", claim.platform,
                              claim.scope, type(err).__name__)
                finally:
                    keeper.cancel()
        except asyncio.CancelledError:
            requeue = True
            raise
        finally:
            try:
                status = "received" if requeue else "failed" if failed else "done"
                self._more[(claim.platform, claim.scope)] = await asyncio.shield(
                    self._queue.release(claim, owner=self.owner, status=status))
            except (StoreError, asyncio.CancelledError) as err:
                log.warning("inbox: could not release %s %s (%s); its lease will expire",
                            claim.platform, claim.scope, type(err).__name__)

    async def _keep_lease(self, claim: Claim, work: asyncio.Task[None]) -> None:
        """Renew the claim's lease while ``work`` runs; cancel it if the lease is lost.

        A renewal that cannot reach the database is tried again at the next beat; one that
        finds the lease expired but still in our name takes it again (the statement
        checks the owner, not the time): only another replica's claim ends the turn."""
        wait = self._lease / 3
        while True:
            await asyncio.sleep(wait)
            try:
                held = await self._queue.renew(platform=claim.platform, scope=claim.scope,
                                               owner=self.owner, lease_seconds=self._lease)
            except StoreError as err:
                log.warning("inbox: could not renew a lease: %s", err)
                wait = min(self._lease / 3, 0.5)  # renew as soon as the database is back
                continue
            wait = self._lease / 3
            if not held:
                work.cancel(LEASE_LOST)
                return

    async def stop(self, grace: float) -> None:
        """Stop claiming; give running claims ``grace`` seconds, then put them back."""
        self._closing = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        if not self._running:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            tasks = list(self._running)
            log.warning("inbox: handing %d unfinished conversation(s) back at shutdown",
                        len(tasks))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_idle(self) -> None:
        """Wait until nothing is waiting in this replica's reach and nothing runs (tests)."""
        while True:
            await self._idle.wait()
            await asyncio.sleep(0)
            # Events claimed but not yet handed to a task are "processing": next_due
            # counts them, so a claim in flight is not mistaken for idleness.
            if (not self._running and await self._queue.next_due(tuple(self._handlers)) is None
                    and not self._running):
                return
            await asyncio.sleep(0.01)
