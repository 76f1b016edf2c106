"""Rolling summaries: older messages folded, in the background, into the summary of a context.

When a turn's context fills ``threshold`` of its budget (tokens, or the message limit), a
summariser is started for the conversation, after the reply: it claims the conversation's
``conversation_memory`` row (one summariser per conversation across replicas), folds the
messages outside the newest ``keep`` share into the old summary with ``summary_model``
(incremental: old summary + the next messages, a bounded step at a time) and stores the
result with the last message id it covers. Turns never wait for it: they use the last
finished summary (``core.store`` loads it with the context). A failed summary call is
logged, recorded and retried after a back-off, and never shown to anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, select

from core.errors import ChatbridgeError, ModelError
from core.model.base import ModelClient
from core.store import Store, StoredMessage
from core.store import summaries as sql
from core.store.models import Conversation
from core.store.summaries import SUMMARY_ROLE, Claimed, MemoryRow, SummaryInput
from core.tokens import TokenCounter
from core.types import ContextMessage, ModelCall, Sampling, TextChunk

__all__ = ["SUMMARY_INSTRUCTIONS", "MemoryOptions", "Outcome", "Summariser"]

log = logging.getLogger(__name__)
COVERED_KEPT = 10_000  # conversations whose newest summarised id is remembered here

SUMMARY_INSTRUCTIONS = (
    "You keep the running summary of a chat between people and an assistant. Merge the "
    "summary so far and the new messages into one updated summary. Keep names, facts, "
    "numbers, dates, decisions, preferences, open questions and promises; drop small talk. "
    "Copy every line that starts with FACT: unchanged. Plain text, at most {words} words, "
    "no preamble."
)


@dataclass(frozen=True, slots=True)
class MemoryOptions:
    """When summaries are written and how they are retried."""

    enabled: bool = True
    threshold: float = 0.75  # share of the budget (or message limit) that starts a summary
    keep: float = 0.5  # share the newest messages keep, unsummarised, after one
    lease_seconds: float = 300.0  # a summariser that died is replaced after this
    retry_seconds: tuple[float, ...] = (30.0, 120.0, 600.0, 1800.0)
    step_messages: int = 200  # messages folded in per model call, at most
    step_tokens: int = 12_000  # their tokens, at most (one message may exceed it)
    max_steps: int = 20  # model calls per run; a longer backlog continues next time


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a summariser run did."""

    status: Literal["written", "nothing", "busy", "failed", "lost"]
    summary: str = ""
    covers_message_id: int = 0
    error: str = ""


class Summariser:
    """Writes conversations' rolling summaries; ``consider`` runs it in the background."""

    def __init__(self, *, store: Store, model: ModelClient, owner: str,
                 counter: Callable[[str], TokenCounter],
                 options: MemoryOptions | None = None) -> None:
        self._store = store
        self._model = model
        self._owner = owner
        self._counter = counter
        self._options = options or MemoryOptions()
        self._tasks: dict[int, asyncio.Task[Outcome]] = {}
        self._covered: dict[int, int] = {}  # conversation → newest id summarised here

    @property
    def options(self) -> MemoryOptions:
        """The options in force."""
        return self._options

    def consider(self, conversation_id: int, history: Sequence[StoredMessage], *,
                 summary_model: str, budget: int, max_messages: int) -> bool:
        """Start a summary in the background if this turn's context was near its limits;
        whether one was started."""
        o = self._options
        if not o.enabled or conversation_id in self._tasks:
            return False
        # A context loaded while a summary was being written still holds what it covers.
        covered = self._covered.get(conversation_id, 0)
        recent = [m for m in history if m.role == SUMMARY_ROLE or m.id > covered]
        tokens = sum(m.token_count for m in recent)
        count = sum(1 for m in recent if m.role != SUMMARY_ROLE)
        if tokens < o.threshold * budget and count < o.threshold * max_messages:
            return False
        task = asyncio.get_running_loop().create_task(self._background(
            conversation_id, summary_model=summary_model, budget=budget,
            max_messages=max_messages), name=f"summary {conversation_id}")
        self._tasks[conversation_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(conversation_id, None))
        return True

    async def _background(self, conversation_id: int, **kwargs: object) -> Outcome:
        try:
            return await self.summarise(conversation_id, **kwargs)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            raise
        except Exception as err:  # the database, a bug: logged, never shown to anyone
            log.warning("summary of conversation %s failed: %s", conversation_id,
                        getattr(err, "detail", "") or type(err).__name__)
            return Outcome("failed", error=type(err).__name__)

    async def wait(self) -> None:
        """Wait for the summaries running in the background (tests, benchmarks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def stop(self) -> None:
        """Cancel the summaries running here; their leases expire for another replica."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def summarise(self, conversation_id: int, *, summary_model: str, budget: int,
                        max_messages: int, force: bool = False) -> Outcome:
        """Fold the messages outside the newest ``keep`` share (all of them with
        ``force``) into the summary, now."""
        o = self._options
        upsert = self._store.upsert
        claimed = await self._store.run(
            lambda c: sql.claim(c, upsert, conversation_id, owner=self._owner,
                                lease_seconds=o.lease_seconds, force=force),
            "claim the summary")
        if claimed is None:
            return Outcome("busy")
        keep_tokens = 0 if force else int(budget * o.keep)
        keep_messages = 0 if force else int(max_messages * o.keep)
        summary, covers, written = claimed.summary, claimed.covers_message_id, False
        try:
            for _ in range(o.max_steps):
                batch = await self._store.run(functools.partial(
                    sql.to_summarise, conversation_id=conversation_id, after=covers,
                    keep_tokens=keep_tokens, keep_messages=keep_messages,
                    limit=o.step_messages), "read messages to summarise")
                batch = _bounded(batch, o.step_tokens)
                if not batch:
                    break
                summary = await self._call(summary_model, summary, batch, budget)
                covers = batch[-1].id
                tokens = self._counter(summary_model).count(summary)
                saved = await self._store.run(functools.partial(
                    sql.save, claimed=claimed, summary=summary, tokens=tokens, covers=covers,
                    model=summary_model, lease_seconds=o.lease_seconds), "store the summary")
                if not saved:  # lease lost, or prune/forget changed the conversation
                    return Outcome("lost")
                written = True
        except (ModelError, ChatbridgeError) as err:
            await self._failed(claimed, err)
            return Outcome("failed", error=str(err))
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._store.run(lambda c: sql.release(c, claimed),
                                                     "release the summary"))
            raise
        await self._store.run(lambda c: sql.release(c, claimed), "release the summary")
        if written:
            self._covered[conversation_id] = covers
            while len(self._covered) > COVERED_KEPT:
                self._covered.pop(next(iter(self._covered)))
        return Outcome("written" if written else "nothing", summary, covers)

    async def _failed(self, claimed: Claimed, err: ChatbridgeError) -> None:
        waits = self._options.retry_seconds
        done = await self._store.run(
            lambda c: sql.attempts(c, claimed.conversation_id), "read the summary")
        backoff = waits[min(done, len(waits) - 1)]
        log.warning("summary of conversation %s failed (retried in %gs): %s",
                    claimed.conversation_id, backoff, getattr(err, "detail", "") or err)
        await self._store.run(
            lambda c: sql.fail(c, claimed, error=f"{err.kind}: {err}", backoff=backoff),
            "record the failed summary")

    async def _call(self, model: str, summary: str, batch: Sequence[SummaryInput],
                    budget: int) -> str:
        cap = max(64, budget // 4)  # the summary's share of the context budget
        words = max(50, cap * 3 // 5)
        lines = ["Summary so far:", summary or "(none yet)", "",
                 "New messages (oldest first):"]
        for m in batch:
            who = f"[{m.role} {m.author_name}]" if m.author_name else f"[{m.role}]"
            lines += [who, m.text]
        call = ModelCall(model, (
            ContextMessage("system", SUMMARY_INSTRUCTIONS.format(words=words)),
            ContextMessage("user", "\n".join(lines)),
        ), Sampling(temperature=0.2, max_tokens=min(4096, cap * 2)))
        parts = [c.text async for c in self._model.stream(call, stream=False)
                 if isinstance(c, TextChunk)]
        text = "".join(parts).strip()
        if not text:
            raise ModelError("empty summary")
        counter = self._counter(model)
        while (size := counter.count(text)) > cap:  # a model that ignored the word limit
            text = text[: int(len(text) * cap / size * 0.95)]
        return text

    async def view(self, *, platform: str, scope: str) -> MemoryRow | None:
        """The open conversation's last finished summary, if it has one."""
        def work(conn: Connection) -> MemoryRow | None:
            conv = _open_id(conn, platform, scope)
            return sql.read_memory(conn, conv) if conv is not None else None

        return await self._store.run(work, "read the summary")

    async def conversation(self, *, platform: str, scope: str) -> int | None:
        """The id of the open conversation under this key."""
        return await self._store.run(lambda c: _open_id(c, platform, scope),
                                     "look up the conversation")


def _open_id(conn: Connection, platform: str, scope: str) -> int | None:
    conv = Conversation.__table__
    value = conn.scalar(select(conv.c.id).where(
        conv.c.platform == platform, conv.c.scope_key == scope, conv.c.status == "open"))
    return int(value) if value is not None else None


def _bounded(batch: list[SummaryInput], tokens: int) -> list[SummaryInput]:
    """The oldest messages of ``batch`` within ``tokens`` (at least one)."""
    used = 0
    for i, m in enumerate(batch):
        used += m.token_count
        if used > tokens and i:
            return batch[:i]
    return batch
