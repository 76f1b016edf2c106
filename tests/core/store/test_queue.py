"""The inbox in SQL (``core.store.queue``) on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.db import create_engine, open_store, upgrade
from core.store import Store, TurnPart
from core.store.models import InboundEvent, InboxLease
from core.store.queue import Claim, InboxStore
from core.types import Author

ALICE = Author("U1", "Alice")


@pytest.fixture
async def store(engine: AsyncEngine) -> AsyncIterator[Store]:
    store = open_store(engine)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def queue(store: Store) -> InboxStore:
    return InboxStore(store)


async def put(queue: InboxStore, event_id: str, scope: str = "k1", *, platform: str = "slack",
              delay: float = 0.0, if_known: bool = False) -> bool:
    return await queue.enqueue(platform=platform, event_id=event_id, scope=scope,
                               payload={"text": f"text of {event_id}", "n": 1},
                               delay=delay, if_known=if_known)


async def claim(queue: InboxStore, owner: str = "A", *, lease: float = 30.0, limit: int = 10,
                max_batch: int = 20, max_attempts: int = 5) -> list[Claim]:
    return await queue.claim(owner=owner, lease_seconds=lease, limit=limit,
                             max_batch=max_batch, max_attempts=max_attempts)


def ids(claim: Claim) -> list[str]:
    return [e.event_id for e in claim.events]


async def rows(engine: AsyncEngine) -> dict[str, tuple[str, int, str | None]]:
    """Each event's (status, attempts, lease_owner), by event id."""
    async with engine.connect() as conn:
        found = (await conn.execute(select(InboundEvent.event_id, InboundEvent.status,
                                           InboundEvent.attempts, InboundEvent.lease_owner)
                                    )).all()
    return {r.event_id: (r.status, r.attempts, r.lease_owner) for r in found}


# ------------------------------------------------------------------ enqueue


async def test_enqueue_dedupes_on_platform_and_event_id(queue: InboxStore,
                                                        engine: AsyncEngine) -> None:
    assert await put(queue, "e1")
    assert not await put(queue, "e1")
    assert not await put(queue, "e1", scope="another key")  # same event, wherever it points
    assert await put(queue, "e1", platform="telegram")  # another platform's e1 is another event
    async with engine.connect() as conn:
        events = (await conn.execute(select(InboundEvent.platform, InboundEvent.scope_key,
                                            InboundEvent.status, InboundEvent.payload)
                                     .order_by(InboundEvent.id))).all()
        leases = (await conn.execute(select(InboxLease.platform, InboxLease.scope_key,
                                            InboxLease.owner))).all()
    assert [(e.platform, e.scope_key, e.status) for e in events] == [
        ("slack", "k1", "received"), ("telegram", "k1", "received")]
    assert sorted((r.platform, r.scope_key, r.owner) for r in leases) == [
        ("slack", "k1", None), ("telegram", "k1", None)]
    [first, second] = await claim(queue)
    assert first.events[0].payload == {"text": "text of e1", "n": 1}
    assert (second.platform, ids(second)) == ("telegram", ["e1"])


async def test_if_known_records_only_under_a_known_key(queue: InboxStore, store: Store,
                                                       engine: AsyncEngine) -> None:
    assert not await put(queue, "x1", "thread", if_known=True)  # nothing ever said there
    assert await rows(engine) == {}
    # A conversation under the key (the bot answered there) makes it known…
    start = await store.begin_turn(platform="slack", scope="thread", event_id="c1",
                                   profile="default", author=ALICE, text="hi", token_count=1)
    assert start is not None
    assert await put(queue, "x2", "thread", if_known=True)
    # …but only on its own platform.
    assert not await put(queue, "x3", "thread", platform="telegram", if_known=True)
    # An inbox event under the key makes it known too (a mention waiting to be answered).
    assert not await put(queue, "y1", "other", if_known=True)
    assert await put(queue, "y2", "other")
    assert await put(queue, "y3", "other", if_known=True)
    assert not await put(queue, "y3", "other", if_known=True)  # and still deduplicated
    assert set(await rows(engine)) == {"c1", "x2", "y2", "y3"}


# ------------------------------------------------------------------ claim and release


async def test_claim_takes_every_waiting_event_of_a_key_oldest_first(
    queue: InboxStore, engine: AsyncEngine
) -> None:
    for event_id, scope in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("c1", "c"), ("a3", "a"),
                            ("b2", "b")]:
        assert await put(queue, event_id, scope)
    [only] = await claim(queue, limit=1)  # the key whose oldest event is oldest
    assert (only.platform, only.scope, ids(only)) == ("slack", "a", ["a1", "a2", "a3"])
    assert [e.attempts for e in only.events] == [1, 1, 1]
    assert [e.message_id for e in only.events] == [None, None, None]
    assert only.abandoned == ()
    rest = await claim(queue, "B")
    assert [(c.scope, ids(c)) for c in rest] == [("b", ["b1", "b2"]), ("c", ["c1"])]
    state = await rows(engine)
    assert {k: v[0] for k, v in state.items()} == dict.fromkeys(state, "processing")
    assert state["a2"] == ("processing", 1, "A") and state["b2"] == ("processing", 1, "B")
    assert await claim(queue, "C") == []
    assert await queue.held_by("A") == 1 and await queue.held_by("B") == 2


async def test_a_held_key_is_not_claimed_again_until_released(
    queue: InboxStore, engine: AsyncEngine
) -> None:
    await put(queue, "e1")
    [held] = await claim(queue, "A")
    await put(queue, "e2")  # arrives while e1 is being answered
    assert await claim(queue, "B") == []
    assert await claim(queue, "A") == []  # not even by its holder: one batch at a time
    await queue.release(held, owner="A")
    state = await rows(engine)
    assert state["e1"][0] == "done" and state["e2"] == ("received", 0, None)
    assert await queue.held_by("A") == 0
    [later] = await claim(queue, "B")
    assert ids(later) == ["e2"]
    await queue.release(later, owner="B", status="failed")
    assert (await rows(engine))["e2"][0] == "failed"
    assert await claim(queue, "C") == []
    async with engine.connect() as conn:
        finished = (await conn.execute(select(InboundEvent.finished_at))).scalars().all()
    assert all(f is not None for f in finished)


async def test_release_as_received_puts_the_events_back(queue: InboxStore,
                                                        engine: AsyncEngine) -> None:
    await put(queue, "e1")
    await put(queue, "e2")
    [first] = await claim(queue, "A")
    await queue.release(first, owner="A", status="received")
    # Handed back, not failed: the attempt is not counted.
    assert await rows(engine) == {"e1": ("received", 0, None), "e2": ("received", 0, None)}
    [again] = await claim(queue, "B")
    assert ids(again) == ["e1", "e2"]
    assert [e.attempts for e in again.events] == [1, 1]
    assert (await rows(engine))["e1"] == ("processing", 1, "B")


async def test_max_batch_leaves_the_rest_for_the_next_claim(queue: InboxStore) -> None:
    for i in range(5):
        await put(queue, f"e{i}")
    got: list[list[str]] = []
    while found := await claim(queue, max_batch=2):
        [one] = found
        got.append(ids(one))
        await queue.release(one, owner="A")
    assert got == [["e0", "e1"], ["e2", "e3"], ["e4"]]


async def test_delayed_event_makes_its_key_wait(queue: InboxStore) -> None:
    began = datetime.now(UTC)
    await put(queue, "d1", "album", delay=0.3)
    await put(queue, "n1", "plain")
    await put(queue, "d2", "album", delay=0.6)  # the album is quiet only once d2 is due
    due = await queue.next_due()
    assert due is not None and due <= datetime.now(UTC)  # n1 is due now
    [plain] = await claim(queue)
    assert plain.scope == "plain"
    await queue.release(plain, owner="A")
    due = await queue.next_due()
    assert due is not None
    assert timedelta(seconds=0.1) < due - datetime.now(UTC) < timedelta(seconds=0.4)
    assert await claim(queue) == []
    await asyncio.sleep(max(0.0, (began + timedelta(seconds=0.4) - datetime.now(UTC))
                            .total_seconds()))
    assert await claim(queue) == []  # d1 is due, d2 is not: the key waits for its last
    await asyncio.sleep(max(0.0, (began + timedelta(seconds=0.7) - datetime.now(UTC))
                            .total_seconds()))
    [album] = await claim(queue)
    assert (album.scope, ids(album)) == ("album", ["d1", "d2"])
    await queue.release(album, owner="A")
    assert await queue.next_due() is None


# ------------------------------------------------------------------ leases


async def test_expired_lease_is_taken_over(queue: InboxStore, engine: AsyncEngine) -> None:
    await put(queue, "e1")
    [dead] = await claim(queue, "A", lease=0.3)  # A dies holding it
    assert await claim(queue, "B") == []
    await asyncio.sleep(0.35)
    [taken] = await claim(queue, "B")
    assert ids(taken) == ["e1"] and taken.events[0].attempts == 2
    assert await queue.held_by("B") == 1 and await queue.held_by("A") == 0
    # A coming back to life cannot close B's events nor free B's lease.
    await queue.release(dead, owner="A")
    assert (await rows(engine))["e1"] == ("processing", 2, "B")
    assert await claim(queue, "C") == []
    await queue.release(taken, owner="B")
    assert (await rows(engine))["e1"][0] == "done"


async def test_renew_extends_a_held_lease_only(queue: InboxStore) -> None:
    await put(queue, "e1")
    await claim(queue, "A", lease=0.3)
    await asyncio.sleep(0.15)
    assert await queue.renew(platform="slack", scope="k1", owner="A", lease_seconds=0.6)
    await asyncio.sleep(0.25)  # past the first lease, within the renewed one
    assert await claim(queue, "B") == []
    assert not await queue.renew(platform="slack", scope="k1", owner="B", lease_seconds=5)
    await asyncio.sleep(0.4)  # now the renewed one has expired too
    [taken] = await claim(queue, "B")
    assert ids(taken) == ["e1"]
    assert not await queue.renew(platform="slack", scope="k1", owner="A", lease_seconds=5)
    assert await queue.renew(platform="slack", scope="k1", owner="B", lease_seconds=5)
    assert not await queue.renew(platform="slack", scope="nothing", owner="B", lease_seconds=5)


async def test_events_tried_too_often_are_abandoned(queue: InboxStore,
                                                    engine: AsyncEngine) -> None:
    await put(queue, "e1")
    await put(queue, "e2")
    for attempt in (1, 2):  # each holder dies: its lease runs out, nothing is released
        [c] = await claim(queue, max_attempts=2, lease=0.05)
        assert [e.attempts for e in c.events] == [attempt, attempt]
        await asyncio.sleep(0.1)
    [last] = await claim(queue, max_attempts=2)
    assert last.events == ()
    assert [(e.event_id, e.attempts) for e in last.abandoned] == [("e1", 3), ("e2", 3)]
    state = await rows(engine)
    assert state["e1"][0] == state["e2"][0] == "failed"
    assert await claim(queue, "B", max_attempts=2) == []  # held, and nothing left anyway
    await queue.release(last, owner="A")
    assert (await rows(engine))["e1"][0] == "failed"
    await put(queue, "e3")  # the key itself is not dead
    [fresh] = await claim(queue, "B", max_attempts=2)
    assert ids(fresh) == ["e3"]


async def test_free_keys_are_found_behind_many_held_ones(queue: InboxStore) -> None:
    for i in range(6):
        await put(queue, f"e{i}", f"k{i}")
    held = await claim(queue, "A", limit=5)
    assert [c.scope for c in held] == ["k0", "k1", "k2", "k3", "k4"]
    [free] = await claim(queue, "B", limit=1)  # the oldest due keys are all held by A
    assert free.scope == "k5"


async def test_pending_events_counts_received_and_processing(queue: InboxStore, store: Store,
                                                             engine: AsyncEngine) -> None:
    for event_id, scope in [("a1", "a"), ("a2", "a"), ("b1", "b")]:
        await put(queue, event_id, scope)
    assert await store.pending_events() == 3
    [a, b] = await claim(queue)
    assert await store.pending_events() == 3
    await queue.release(a, owner="A")
    assert await store.pending_events() == 1
    await queue.release(b, owner="A", status="received")
    assert await store.pending_events() == 1
    [b] = await claim(queue)
    await queue.release(b, owner="A", status="failed")
    assert await store.pending_events() == 0


# ------------------------------------------------------------------ concurrency


async def claim_loop(queue: InboxStore, owner: str, *, total: int, done: list[int],
                     intervals: dict[str, list[tuple[float, float, str]]],
                     order: dict[str, list[int]], deadline: float) -> None:
    """Claim keys and release them after a short random wait, until ``total`` events are
    closed; record who held which key when, and the events in the order they came."""
    rng = random.Random(owner)
    while len(done) < total:
        assert time.monotonic() < deadline, f"{owner}: inbox not drained in time"
        claims = await queue.claim(owner=owner, lease_seconds=30, limit=8, max_batch=20)
        if not claims:
            await asyncio.sleep(0.005)
            continue

        async def work(c: Claim) -> None:
            began = time.monotonic()
            await asyncio.sleep(rng.uniform(0, 0.01))
            order[c.scope].extend(e.id for e in c.events)
            done.extend(e.id for e in c.events)
            intervals[c.scope].append((began, time.monotonic(), owner))
            await queue.release(c, owner=owner)

        await asyncio.gather(*(work(c) for c in claims))


async def run_replicas(queues: list[InboxStore], engine: AsyncEngine, *, keys: int = 50,
                       per_key: int = 4, loops: int = 2) -> None:
    """``per_key`` events under each of ``keys`` keys, half of them enqueued while the
    claim loops of every queue run; every event must be answered once, in order."""
    total = keys * per_key
    names = [f"key{k}" for k in range(keys)]
    done: list[int] = []
    intervals: dict[str, list[tuple[float, float, str]]] = {n: [] for n in names}
    order: dict[str, list[int]] = {n: [] for n in names}

    async def produce(rounds: range) -> None:
        for r in rounds:  # a round's events concurrently, through either replica
            new = await asyncio.gather(*(
                queues[k % len(queues)].enqueue(platform="slack", event_id=f"{n}/{r}",
                                                scope=n, payload={"r": r})
                for k, n in enumerate(names)))
            assert all(new)
            await asyncio.sleep(0.01)

    await produce(range(per_key // 2))
    deadline = time.monotonic() + 20
    await asyncio.gather(
        produce(range(per_key // 2, per_key)),
        *(claim_loop(q, f"replica{i}/loop{j}", total=total, done=done, intervals=intervals,
                     order=order, deadline=deadline)
          for i, q in enumerate(queues) for j in range(loops)),
    )
    assert sorted(done) == sorted(set(done)) and len(done) == total  # each exactly once
    state = await rows(engine)
    assert len(state) == total and {s for s, _, _ in state.values()} == {"done"}
    assert {a for _, a, _ in state.values()} == {1}
    for n in names:
        assert order[n] == sorted(order[n]) and len(order[n]) == per_key
        spans = sorted(intervals[n])
        for (_, end, who), (start, _, other) in itertools.pairwise(spans):
            assert end <= start, f"{n} held by {who} and {other} at once"
    owners = {who for spans in intervals.values() for _, _, who in spans}
    assert len(owners) > 1  # the work really was shared


async def test_two_replicas_share_the_inbox(engine: AsyncEngine) -> None:
    """Two stores over two engines (two replicas; on SQLite two connections to one file)."""
    second = create_engine(engine.url.render_as_string(hide_password=False))
    stores = [open_store(engine), open_store(second)]
    try:
        await run_replicas([InboxStore(s) for s in stores], engine)
    finally:
        for s in stores:
            s.close()
        await second.dispose()


async def test_sqlite_claims_that_waited_for_the_lock_do_not_share_a_key(
    sqlite_url: str,
) -> None:
    """Two processes' claims wait on a third one's write lock: when it is gone, only one of
    them may get the key (SQLite reads outside the write transaction)."""
    import sqlite3

    engine = create_engine(sqlite_url)
    await upgrade(engine)
    stores = [open_store(engine), open_store(create_engine(sqlite_url))]
    queues = [InboxStore(s) for s in stores]
    await put(queues[0], "e1")
    other = sqlite3.connect(sqlite_url.split("///", 1)[1], isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        claims = [asyncio.create_task(claim(q, f"owner{i}")) for i, q in enumerate(queues)]
        await asyncio.sleep(0.3)
        assert not any(c.done() for c in claims)
    finally:
        other.execute("ROLLBACK")
        other.close()
    got = [c for task in claims for c in await asyncio.wait_for(task, 5)]
    assert [ids(c) for c in got] == [["e1"]]
    assert await queues[0].held_by("owner0") + await queues[0].held_by("owner1") == 1
    for s in stores:
        s.close()
        await s.engine.dispose()


async def test_lease_row_upserted_once_per_key(queue: InboxStore) -> None:
    # The key's lease row is written with its first event; later events of the key skip
    # the upsert (one statement less per message) and are claimed all the same.
    from sqlalchemy import Engine, event

    seen: list[str] = []

    def record(*args: object) -> None:
        seen.append(str(args[2]))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        assert await put(queue, "e1")
        first = list(seen)
        seen.clear()
        [got] = await claim(queue)
        await queue.release(got, owner="A")
        seen.clear()
        assert await put(queue, "e2")
        second = list(seen)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert any("INSERT INTO inbox_leases" in s for s in first)
    assert not any("inbox_leases" in s for s in second)
    [again] = await claim(queue)
    assert ids(again) == ["e2"]


# ------------------------------------------------------------------ issue 10


async def test_release_done_puts_back_an_event_whose_turn_never_stored_its_end(
        queue: InboxStore, store: Store, engine: AsyncEngine) -> None:
    """The user message was stored, the answer was not (the database failed then), and
    the database is back by the release: the event waits again, payload kept."""
    await put(queue, "asked")
    await put(queue, "command")
    (taken,) = await claim(queue)
    start = await store.begin_turn(platform="slack", scope="k1", profile=None, queued=True,
                                   parts=[_part("asked")], fence=taken.fence)
    assert start is not None
    await queue.release(taken, owner="A", status="done")
    assert (await rows(engine))["asked"] == ("received", 1, None)
    assert (await rows(engine))["command"][0] == "done"  # no turn began on it
    (again,) = await claim(queue)
    assert ids(again) == ["asked"] and again.events[0].payload  # nothing lost
    assert again.events[0].message_id == start.message_id  # not stored twice


async def test_claim_never_takes_a_key_the_caller_is_answering(
        queue: InboxStore) -> None:
    await put(queue, "e1")
    await put(queue, "e2", scope="k2")
    assert len(await claim(queue, lease=0.01)) == 2
    await asyncio.sleep(0.05)  # both leases ran out (the database was away, say)
    await put(queue, "e3")
    taken = await queue.claim(owner="A", lease_seconds=30, limit=10, busy={("slack", "k1")})
    assert [c.scope for c in taken] == ["k2"]


async def test_batch_is_in_the_platforms_order_not_the_order_recorded(
        queue: InboxStore) -> None:
    for event_id, order in (("late", "0002"), ("early", "0001"), ("none", None)):
        await queue.enqueue(platform="slack", event_id=event_id, scope="k1", payload={},
                            sort_key=order)
    (taken,) = await claim(queue)
    assert ids(taken) == ["none", "early", "late"]


async def test_begin_and_finish_turn_again_after_an_unconfirmed_commit_write_once(
        queue: InboxStore, store: Store, engine: AsyncEngine) -> None:
    """A queued turn retries a write whose COMMIT it did not see confirmed: the second
    attempt finds the first's rows and writes nothing twice."""
    await put(queue, "e1")
    (taken,) = await claim(queue)
    parts = [_part("e1")]
    first = await store.begin_turn(platform="slack", scope="k1", profile=None, queued=True,
                                   parts=parts, fence=taken.fence)
    second = await store.begin_turn(platform="slack", scope="k1", profile=None, queued=True,
                                    parts=parts, fence=taken.fence)
    assert first is not None and second is not None
    assert first.message_id == second.message_id
    for _ in range(2):
        await store.finish_turn(second, event_id="e1", platform="slack", text="answer",
                                token_count=1, status="ok")
    assert await store.count_messages(platform="slack", scope="k1") == 2  # question, answer


def _part(event_id: str) -> TurnPart:
    return TurnPart(event_id, ALICE, f"text of {event_id}", 3)
