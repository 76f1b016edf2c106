"""Stop requests: a person's "stop generating" reaches the turn, in this replica or another.

A stop arrives as a platform update like any other, at whichever replica the platform
chose; the turn it stops may run in another. ``Stops.request`` records the stop in the
database (as the side event ``<answered event id>/stop``: a redelivery is a no-op) and, if
the turn runs here, stops it at once. Each replica with stoppable turns running polls for
the stops of all of them in one indexed query every ``poll_seconds`` (0.5 s): a stop made
elsewhere is noticed within about that long. Nothing is read per token, and nothing at all
while no stoppable turn runs.

A ``TurnStop`` is what the turn watches. Between model chunks the turn checks
``stopped`` (an attribute read); while it waits for the model (``reading``) a stop cancels
the turn's task with ``STOPPED``, which the turn takes as "end here": it closes the model
stream and stores what was written as partial (``core.service``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

from core.errors import StoreError
from core.store import Store

__all__ = ["STOPPED", "Stops", "TurnStop", "TurnStopped", "stop_event_id", "stoppable"]

log = logging.getLogger(__name__)
T = TypeVar("T")
STOPPED = "chatbridge: stopped by the person"  # the cancellation message of a stop


def stop_event_id(event_id: str) -> str:
    """The side event that records a stop of the answer to ``event_id``."""
    return f"{event_id}/stop"


class TurnStop:
    """The stop button of one running turn."""

    def __init__(self, platform: str, event_id: str) -> None:
        self.platform = platform
        self.event_id = event_id
        self.stopped = False
        self.reading = False  # the turn waits for the model: a stop cancels the wait
        self.task: asyncio.Task[object] | None = None

    def stop(self) -> None:
        """Stop the turn: at its next chunk, or now if it is waiting for the model."""
        if self.stopped:
            return
        self.stopped = True
        if self.reading and self.task is not None and not self.task.done():
            self.task.cancel(STOPPED)


class TurnStopped(Exception):
    """The person stopped the answer; the model stream is closed."""


async def stoppable(chunks: AsyncIterator[T], stop: TurnStop | None) -> AsyncIterator[T]:
    """``chunks`` until ``stop`` is pressed; then the source is closed (the model's HTTP
    stream with it) and ``TurnStopped`` raised. Costs an attribute read per chunk."""
    if stop is None:
        async for chunk in chunks:
            yield chunk
        return
    task = asyncio.current_task()
    stop.task = task
    source = aiter(chunks)
    try:
        while not stop.stopped:
            stop.reading = True
            try:
                chunk = await anext(source)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError as err:
                if STOPPED not in err.args or task is None:
                    raise
                task.uncancel()  # our own cancellation: it ends the stream, not the turn
                break
            finally:
                stop.reading = False
            yield chunk
    finally:
        stop.task = None
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()
    raise TurnStopped(stop.event_id)


class Stops:
    """This replica's stoppable turns, and the stops recorded for them anywhere."""

    def __init__(self, store: Store, *, poll_seconds: float = 0.5) -> None:
        self._store = store
        self._poll = poll_seconds
        self._turns: dict[tuple[str, str], TurnStop] = {}
        self._poller: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def watch(self, platform: str, event_id: str) -> Iterator[TurnStop]:
        """Make the answer to ``event_id`` stoppable while the block runs."""
        turn = TurnStop(platform, event_id)
        self._turns[(platform, event_id)] = turn
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(
                self._run(), name="chatbridge stops")
        try:
            yield turn
        finally:
            if self._turns.get((platform, event_id)) is turn:
                del self._turns[(platform, event_id)]
            if not self._turns and self._poller is not None:
                self._poller.cancel()  # nothing left to watch: no task outlives the turns
                self._poller = None

    async def request(self, *, platform: str, event_id: str) -> bool:
        """Stop the answer to ``event_id`` wherever it runs; ``False`` if this stop was
        recorded before (a redelivery). Raises ``StoreError`` if the database cannot
        take it and the turn does not run here."""
        turn = self._turns.get((platform, event_id))
        if turn is not None:
            turn.stop()
        try:
            return await self._store.record_event(platform=platform,
                                                  event_id=stop_event_id(event_id))
        except StoreError:
            if turn is None:
                raise
            return True  # stopped here; nobody else needs to know

    async def _run(self) -> None:
        """Poll for stops recorded by other replicas while stoppable turns run here."""
        while self._turns:
            await asyncio.sleep(self._poll)
            waiting = {stop_event_id(t.event_id): t for t in self._turns.values()
                       if not t.stopped}
            by_platform: dict[str, list[str]] = {}
            for sid, turn in waiting.items():
                by_platform.setdefault(turn.platform, []).append(sid)
            for platform, ids in by_platform.items():
                try:
                    found = await self._store.recorded_events(platform=platform,
                                                              event_ids=ids)
                except StoreError as err:
                    log.debug("could not look for stops: %s", err)
                    continue
                for sid in found:
                    waiting[sid].stop()
