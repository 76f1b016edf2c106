"""ChatService: the one entry point adapters call.

A ``ChatRequest`` goes in; an async stream of reply events comes out. The user's
message is stored before the model is called; a failed turn is stored as failed; the
answer is stored before it is shown as final (``FinalEvent`` comes after the store).

A queued turn (from the inbox, under a lease) does not report a database failure to the
person: it keeps what it has in memory — the messages, the finished answer — and tries
the write again until the database is back, while the inbox keeps the lease (``_durably``).
Only losing the lease to another replica (``LeaseLost``) or a shutdown ends it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from sqlalchemy import Connection

from core.answer_cap import cap_answer
from core.context import build_messages, rounds_done
from core.errors import (
    ChatbridgeError,
    InputError,
    LeaseLost,
    ModelError,
    ModelRefused,
    ModelStreamBroken,
    StoreError,
)
from core.handoff import offer_line
from core.intake import Extras, Intake, storable_request
from core.knowledge.cite import NOT_FOUND, cited, context_block, store_sources
from core.knowledge.search import Passage
from core.knowledge.tool import kb_search_tool
from core.knowledge.turn import is_small_talk, make_room, passage_tokens, search_text
from core.profiles import Profile
from core.service_base import ServiceOptions
from core.service_commands import Commands
from core.stops import TurnStop, TurnStopped, stoppable
from core.store import ContextLimits, StoredMessage, TurnPart, TurnStart
from core.store.queue import Claim
from core.store.toolcalls import StoreJournal
from core.tokens import message_tokens
from core.tools import Tool, Toolbox, ToolContext, ToolSettings
from core.types import (
    ChatRequest,
    DeltaEvent,
    DuplicateEvent,
    ErrorEvent,
    FinalEvent,
    FinishChunk,
    Image,
    ModelCall,
    ModelChunk,
    ReasoningChunk,
    ReplyEvent,
    StatusEvent,
    TextChunk,
    ThinkingEvent,
    ToolActivity,
    Usage,
)
from core.vision import note_unseen_images

__all__ = ["ChatService", "ServiceOptions"]

log = logging.getLogger(__name__)
T = TypeVar("T")
STOPPED_NOTICE = "(Stopped.)"
STORE_RETRY_WAITS = (0.2, 0.5, 1.0)  # then every second, until the database is back


class ChatService(Commands, Intake):
    """Runs turns: record, serialize per conversation, build context, call, persist."""

    def toolbox(self, profile: Profile) -> Toolbox:
        """The tools ``profile`` may call (``handoff_to_human`` where it has a handoff)."""
        if profile.name not in self._toolboxes:
            patterns = profile.tools
            if profile.handoff is not None and "handoff_to_human" not in patterns:
                patterns = (*patterns, "handoff_to_human")
            box = self._options.tools.select(patterns)
            if profile.kb_mode == "tool" and profile.knowledge and self._knowledge is not None:
                box = Toolbox([*box, kb_search_tool(self._knowledge, profile.knowledge)])
            self._toolboxes[profile.name] = box
        return self._toolboxes[profile.name]

    def _handoff(self, request: ChatRequest,
                 profile: Profile) -> Callable[[str], Awaitable[str]] | None:
        """The ``handoff_to_human`` tool's action for this conversation: the handoff is
        opened in SQL; the adapter posts the staff notice after the turn."""
        settings = profile.handoff
        if settings is None:
            return None

        async def hand_over(reason: str) -> str:
            await self._handoffs.start(platform=request.platform, scope=request.scope,
                                       staff=settings.staff, reason=reason, trigger="tool",
                                       profile=profile.name)
            return ("Done: a person from the team will answer in this conversation. Tell the "
                    "customer so in one short sentence; do not promise a time.")

        return hand_over

    def _chunks(self, call: ModelCall, start: TurnStart, profile: Profile,
                history: tuple[StoredMessage, ...], request: ChatRequest, *,
                queued: bool = False,
                tools: Sequence[Tool] = ()) -> AsyncIterator[ModelChunk | ToolActivity]:
        """The turn's model calls, with the tools the profile may use (and the adapter's
        ``tools`` for this turn) run in between (a queued turn's tool calls are stored
        durably, like its answer)."""
        counter = self._counter(call.model)
        seconds = self._options.turn_seconds
        toolbox = self.toolbox(profile)
        if tools:
            toolbox = Toolbox([*toolbox, *tools])
        return self._agent.stream(
            call, toolbox=toolbox,
            settings=ToolSettings(profile.max_tool_rounds, profile.tool_timeout_seconds),
            context=ToolContext(profile.timezone, counter, self._handoff(request, profile)),
            journal=StoreJournal(self._store, start, counter,
                                 retry=lambda write, doing: self._durably(queued, write, doing)),
            rounds_done=rounds_done(history, start.message_id), stream=self._options.stream,
            deadline=None if seconds is None else time.monotonic() + seconds,
        )
    async def handle(self, request: ChatRequest) -> AsyncIterator[ReplyEvent]:
        """Answer one message received here (the console) as a stream of reply events.

        The event is recorded with the message; a second delivery of it yields a
        ``DuplicateEvent``.
        """
        async for event in self._guarded((storable_request(request),), None):
            yield event

    async def answer(
        self, requests: Sequence[ChatRequest], claim: Claim, *, stop: TurnStop | None = None,
        tools: Sequence[Tool] = (),
    ) -> AsyncIterator[ReplyEvent]:
        """Answer messages of one conversation that waited in the inbox, in one turn.

        ``requests`` (oldest first) are the claim's events that are chat messages; their
        events are already recorded and claimed. Messages an interrupted attempt stored
        are not stored twice. Cancelled (shutdown, a lost lease), the turn records
        nothing more: the events go back to the inbox and are answered again. ``stop``: the
        person may stop the answer (``core.stops``); what was written is then stored as
        partial and the turn ends with it. ``tools``: the adapter's own tools for this
        turn (Slack's ``read_channel``), offered beside the profile's; only profiles that
        have tools (``toolbox`` is not empty) should be given any.
        """
        if not requests:
            return
        async for event in self._guarded(tuple(storable_request(r) for r in requests), claim,
                                         stop, tools):
            yield event

    @staticmethod
    async def _durably(queued: bool, call: Callable[[], Awaitable[T]], doing: str) -> T:
        """Run a store call; for a queued turn, again and again while the database is
        away (the inbox holds the lease meanwhile; losing it raises ``LeaseLost``)."""
        attempt = 0
        while True:
            try:
                return await call()
            except LeaseLost:
                raise
            except StoreError as err:
                if not queued:
                    raise
                wait = STORE_RETRY_WAITS[min(attempt, len(STORE_RETRY_WAITS) - 1)]
                if attempt == 0:
                    log.warning("%s: %s; trying again until the database is back", doing, err)
                attempt += 1
            await asyncio.sleep(wait)

    async def _guarded(self, requests: tuple[ChatRequest, ...], claim: Claim | None,
                       stop: TurnStop | None = None,
                       tools: Sequence[Tool] = ()) -> AsyncIterator[ReplyEvent]:
        try:
            async for event in self._handle(requests, claim, stop, tools):
                yield event
        except LeaseLost as err:
            # Another replica took the conversation over and answers it: stay quiet.
            log.warning("%s; leaving the turn to the replica that holds it", err)
        except StoreError as err:
            log.error("database failure in %s: %s", requests[-1].scope, err)
            yield ErrorEvent(err.kind, err.user_message, requests[-1].scope)
    async def _handle(
        self, requests: tuple[ChatRequest, ...], claim: Claim | None,
        stop: TurnStop | None = None, tools: Sequence[Tool] = (),
    ) -> AsyncIterator[ReplyEvent]:
        request = requests[-1]
        profile = self.profile(request.profile)
        queued = claim is not None
        model = await self._durably(queued, lambda: self.current_model(
            platform=request.platform, scope=request.scope, profile=request.profile),
            "reading the model choice")
        bad_input: InputError | None = None
        images: dict[str, tuple[Image, ...]] = {}
        extras: dict[str, Extras] = {}  # videos' frames, the speech model's usage
        skipped: list[str] = []
        notes: list[str] = []
        if len(requests) > 1:
            # Several messages waited together: one that cannot be used is left out (and
            # named in the answer's notice) rather than costing the others their answer.
            requests, images, skipped = await self._usable(requests, profile, model, notes,
                                                           extras)
            if not requests:
                yield ErrorEvent("bad_input", skipped[0] if skipped else
                                 "Your message was empty; please write something.")
                return
            request = requests[-1]
        else:
            if (problem := self._check_text(requests, profile)) is not None:
                yield ErrorEvent("bad_input", problem)
                return
            try:
                request = await self._with_documents(request, profile, model, notes, skipped,
                                                     extras)
            except InputError as err:
                yield ErrorEvent(err.kind, err.user_message)
                return
            requests = (request,)
            try:
                images[request.event_id] = await self._prepare_images(request.images)
            except InputError as err:
                bad_input = err
        counter = self._counter(model)
        stored = {e.event_id: e.message_id for e in claim.events} if claim else {}
        order = {e.event_id: e.sort_key for e in claim.events} if claim else {}
        parts: list[TurnPart] = []
        for r in requests:
            extra = extras.get(r.event_id, Extras())
            if r.text.strip() or r.images or extra.videos:
                seen = images.get(r.event_id, ())
                parts.append(TurnPart(
                    r.event_id, r.author, r.text.strip(),
                    message_tokens(counter, r.text.strip(), seen, extra.videos), seen,
                    stored.get(r.event_id), order.get(r.event_id), extra.videos,
                    extra.asr_model, extra.asr_usage))
        limits = ContextLimits(
            budget_tokens=max(profile.budget_for(model) - counter.count(profile.system_prompt), 1),
            max_messages=profile.max_context_messages,
            image_turns=profile.image_turns,
        )
        key = (request.platform, request.scope)
        lock = self._locks.setdefault(key, asyncio.Lock())
        # One turn at a time per conversation. When no turn is running (the usual case)
        # the context is loaded in the same transaction that records the message; else
        # the message is recorded at once and the context loaded when its turn comes.
        # (Queued turns are one at a time per key across replicas: the inbox's lease.)
        held = not lock.locked()
        if held:
            await lock.acquire()
        try:
            start = await self._durably(queued, lambda: self._store.begin_turn(
                platform=request.platform, scope=request.scope, profile=profile.name,
                parts=parts, queued=queued, fence=claim.fence if claim else None,
                context=limits if held and bad_input is None else None,
                limits=self._rules if bad_input is None else (),
            ), "recording the message")
            if start is None:
                yield DuplicateEvent(request.event_id)
                return
            if bad_input is not None:
                await self._fail(start, request, model, bad_input, 0)
                yield ErrorEvent(bad_input.kind, bad_input.user_message, request.scope)
                return
            if start.limited is not None:
                await self._fail(start, request, model,
                                 ChatbridgeError(start.limited.message), 0)
                yield ErrorEvent("limited", start.limited.message, request.scope)
                return
            if not held:
                await lock.acquire()
                held = True
            history = start.history
            if history is None:
                history = tuple(await self._durably(queued, lambda: self._store.load_context(
                    start.conversation_id, limits, current_id=start.message_id
                ), "loading the conversation"))
            turn = self._run_turn(start, request, profile, model, history,
                                  queued=claim is not None, skipped=skipped, notes=notes,
                                  stop=stop, tools=tools)
            turn = note_unseen_images(turn, self._options.vision, model,
                                      any(p.images for p in parts),
                                      any(p.videos for p in parts))
            async for event in cap_answer(turn, profile.max_answer_chars):
                yield event
        finally:
            if held:
                lock.release()

    async def _run_turn(
        self, start: TurnStart, request: ChatRequest, profile: Profile, model: str,
        history: tuple[StoredMessage, ...], *, queued: bool = False,
        skipped: Sequence[str] = (), notes: Sequence[str] = (),
        stop: TurnStop | None = None, tools: Sequence[Tool] = (),
    ) -> AsyncIterator[ReplyEvent]:
        began = time.monotonic()
        yield StatusEvent("thinking…")
        counter = self._counter(model)
        try:
            passages = await self._passages(profile, request, history)
        except ChatbridgeError as err:  # the database failed while searching
            log.error("knowledge-base search failed in %s: %s", request.scope, err)
            await self._fail(start, request, model, err, int((time.monotonic() - began) * 1000))
            yield ErrorEvent(err.kind, err.user_message, request.scope)
            return
        if passages == []:  # a profile with a knowledge base that has nothing on this
            await self._finish(
                start, queued, event_id=request.event_id, platform=request.platform,
                text=NOT_FOUND,
                token_count=message_tokens(counter, NOT_FOUND), status="ok", model=model,
                latency_ms=int((time.monotonic() - began) * 1000))
            yield DeltaEvent(NOT_FOUND)
            yield FinalEvent(NOT_FOUND, request.scope, model, Usage(),
                             int((time.monotonic() - began) * 1000),
                             notice=offer_line(profile.handoff),
                             offer_person=profile.handoff is not None)
            return
        block = context_block(passages) if passages else ""
        # The history was loaded to fit the budget without the passages: make room.
        seen = make_room(history, passage_tokens(counter.count, block),
                         profile.budget_for(model) - counter.count(profile.system_prompt))
        call = ModelCall(
            model, build_messages(profile, seen, show_authors=request.shared, knowledge=block),
            profile.sampling, cache=profile.prompt_cache,
        )
        answer: list[str] = []
        reasoning: list[str] = []
        finish = FinishChunk("stop")
        try:
            async for chunk in stoppable(self._chunks(call, start, profile, history, request,
                                                      queued=queued, tools=tools), stop):
                if isinstance(chunk, TextChunk):
                    answer.append(chunk.text)
                    yield DeltaEvent(chunk.text)
                elif isinstance(chunk, ToolActivity):
                    busy = chunk.status == "in_progress"
                    yield StatusEvent(chunk.title if busy else "thinking…", tool=chunk)
                elif isinstance(chunk, ReasoningChunk):
                    reasoning.append(chunk.text)
                    if profile.show_thinking and chunk.text:
                        yield ThinkingEvent(chunk.text)
                elif isinstance(chunk, FinishChunk):
                    finish = chunk
        except TurnStopped:
            # The person pressed stop: the model stream is closed; keep what was written.
            text = "".join(answer)
            latency = int((time.monotonic() - began) * 1000)
            await self._finish(
                start, queued, event_id=request.event_id, platform=request.platform,
                text=text, token_count=message_tokens(counter, text),
                status="partial" if text.strip() else "failed",
                reasoning="".join(reasoning), model=model, latency_ms=latency,
                error="stopped by the person",
            )
            yield FinalEvent(text, request.scope, model, Usage(), latency, partial=True,
                             notice=STOPPED_NOTICE)
            return
        except ModelStreamBroken as err:
            partial = err.partial or "".join(answer)
            latency = int((time.monotonic() - began) * 1000)
            await self._finish(
                start, queued, event_id=request.event_id, platform=request.platform, text=partial,
                token_count=message_tokens(counter, partial), status="partial",
                reasoning="".join(reasoning), model=model, latency_ms=latency, error=str(err),
            )
            yield FinalEvent(partial, request.scope, model, Usage(), latency, partial=True,
                             notice="(The answer was cut off before it was finished.)")
            return
        except ModelError as err:
            log.warning("model %s gave no answer in %s: %s", model, request.scope, err.detail)
            await self._fail(start, request, model, err, int((time.monotonic() - began) * 1000))
            yield ErrorEvent(err.kind, err.user_message, request.scope, detail=err.detail)
            return
        except StoreError:
            raise  # (a tool round's write) the database's or the lease's failure, said above
        except Exception as err:  # a bug or an unforeseen fault: still end the turn cleanly
            log.exception("turn failed in %s", request.scope)
            await self._fail(start, request, model, ChatbridgeError(type(err).__name__),
                             int((time.monotonic() - began) * 1000))
            yield ErrorEvent("internal", ChatbridgeError.default_user_message, request.scope)
            return
        except BaseException:
            # Cancelled (shutdown, the adapter gave up) or the consumer went away. A queued
            # turn goes back to the inbox as it is; one received here is recorded as
            # partial/failed so a redelivery is not left unanswered forever.
            if queued:
                raise
            text = "".join(answer)
            await asyncio.shield(self._store.finish_turn(
                start, event_id=request.event_id, platform=request.platform, text=text,
                token_count=message_tokens(counter, text),
                status="partial" if text else "failed", model=model, error="interrupted",
                latency_ms=int((time.monotonic() - began) * 1000),
            ))
            raise
        if finish.reason == "content_filter" or not "".join(answer).strip():
            refusal = finish.reason == "content_filter"
            no_answer = ModelRefused("finish_reason content_filter") if refusal else ModelError(
                "empty answer", user_message="The model returned an empty answer; "
                "please try again or rephrase.")
            await self._fail(start, request, model, no_answer,
                             int((time.monotonic() - began) * 1000))
            yield ErrorEvent("refused" if refusal else "empty", no_answer.user_message,
                             request.scope)
            return
        text = "".join(answer)
        answer_tokens = message_tokens(counter, text)
        # Servers that report no usage (llama.cpp streaming) get our own count.
        prompt_tokens = (counter.count(profile.system_prompt) + passage_tokens(counter.count, block)
                         + sum(m.token_count for m in seen))
        usage = finish.usage or Usage(prompt_tokens, answer_tokens, estimated=True)
        latency = int((time.monotonic() - began) * 1000)
        await self._finish(
            start, queued, event_id=request.event_id, platform=request.platform, text=text,
            token_count=answer_tokens,
            status="ok", reasoning="".join(reasoning), model=finish.model or model,
            usage=usage, latency_ms=latency,
            also=(lambda conn, message_id: store_sources(conn, message_id, passages))
            if passages else None,
        )
        self._summarise_later(start, profile, model, history)  # in the background
        notices = ["(The answer hit the length limit.)"] if finish.reason == "length" else []
        notices += [f"(Not read: {why})" for why in skipped]
        notices += [f"({note})" for note in notes]
        notice = " ".join(notices)
        yield FinalEvent(text, request.scope, finish.model or model, usage, latency,
                         notice=notice, sources=cited(text, passages or ()))

    async def _passages(self, profile: Profile, request: ChatRequest,
                        history: Sequence[StoredMessage]) -> list[Passage] | None:
        """Knowledge-base passages for this turn (``None``: the profile answers without,
        as it does small talk)."""
        if self._knowledge is None or not profile.knowledge or profile.kb_mode != "auto":
            return None
        if is_small_talk(request.text):
            return None
        return await self._knowledge.search(profile.knowledge,
                                            search_text(request.text, history),
                                            k=profile.kb_passages)

    async def _fail(
        self, start: TurnStart, request: ChatRequest, model: str, err: ChatbridgeError,
        latency_ms: int,
    ) -> None:
        await self._finish(
            start, start.fence is not None, event_id=request.event_id,
            platform=request.platform, text="", token_count=0, status="failed", model=model,
            latency_ms=latency_ms, error=f"{err.kind}: {err}",
        )

    async def _finish(
        self, start: TurnStart, queued: bool, *, event_id: str, platform: str, text: str,
        token_count: int, status: str, reasoning: str | None = None, model: str | None = None,
        usage: Usage | None = None, latency_ms: int | None = None, error: str | None = None,
        also: Callable[[Connection, int], None] | None = None,
    ) -> None:
        """Store the turn's end; a queued turn waits out a database outage (the answer
        is kept in memory meanwhile and shown as final only once it is stored).
        ``also``: more to write in the same transaction (the knowledge passages used)."""
        await self._durably(queued, lambda: self._store.finish_turn(
            start, event_id=event_id, platform=platform, text=text, token_count=token_count,
            status=status, reasoning=reasoning, model=model, usage=usage,
            latency_ms=latency_ms, error=error, also=also), "storing the answer")
