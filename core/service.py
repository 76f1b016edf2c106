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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypeVar
from weakref import WeakValueDictionary

from sqlalchemy import Connection

from core.answer_cap import cap_answer
from core.context import build_messages, rounds_done
from core.errors import (
    ChatbridgeError,
    ImageError,
    InputError,
    LeaseLost,
    ModelError,
    ModelRefused,
    ModelStreamBroken,
    StoreError,
)
from core.handoff import Handoffs
from core.image_prep import DEFAULT_MEMORY_BYTES, ImagePreparer
from core.images import DEFAULT_MAX_SIDE
from core.inbox import replica_name
from core.knowledge.cite import NOT_FOUND, cited, context_block, store_sources
from core.knowledge.search import Passage, Searcher
from core.knowledge.tool import kb_search_tool
from core.limits import Limits
from core.media.documents import MAX_DOCUMENT_BYTES
from core.media.reader import DocumentReader
from core.media.transcribe import Transcriber, is_recording, transcription_failed
from core.memory import MemoryOptions, Outcome, Summariser
from core.model.base import ModelClient
from core.profiles import Profile
from core.stops import Stops, TurnStop, TurnStopped, stoppable
from core.store import ContextLimits, Store, StoredMessage, TurnPart, TurnStart
from core.store.documents import DocumentStore
from core.store.queue import Claim
from core.store.toolcalls import StoreJournal
from core.tokens import TokenCounter, counter_for, message_tokens
from core.tools import AgentLoop, Registry, Toolbox, ToolContext, ToolSettings
from core.types import (
    Author,
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
    Upload,
    Usage,
)
from core.vision import Vision, note_unseen_images

__all__ = ["ChatService", "ServiceOptions"]

log = logging.getLogger(__name__)
T = TypeVar("T")
STOPPED_NOTICE = "(Stopped.)"
STORE_RETRY_WAITS = (0.2, 0.5, 1.0)  # then every second, until the database is back
TRANSCRIBED = "[voice message, transcribed]"  # marks a transcript in the stored text
HEARD_SHOWN = 300  # a transcript this short is shown back to the person


def storable(text: str) -> str:
    """``text`` as every database can keep it: a lone surrogate (from JSON's ``\\ud800``)
    becomes U+FFFD and NUL characters (which PostgreSQL's text refuses) are dropped."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _storable(request: ChatRequest) -> ChatRequest:
    author = request.author
    clean = Author(storable(author.id), storable(author.name))
    text = storable(request.text)
    if clean == author and text == request.text:
        return request
    return replace(request, author=clean, text=text)



@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """Settings the service needs, read once at the entry point."""

    model: str
    profiles: Mapping[str, Profile] = field(default_factory=lambda: {"default": Profile()})
    default_profile: str = "default"
    stream: bool = True
    max_image_side: int = DEFAULT_MAX_SIDE
    # Bytes all turns' image decoding may hold at once (see core.image_prep).
    image_memory_bytes: int = DEFAULT_MEMORY_BYTES
    max_images: int = 10
    max_document_bytes: int = MAX_DOCUMENT_BYTES
    model_choices: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    # Which models take images; shared with the model stack's ImageGate.
    vision: Vision = field(default_factory=Vision)
    tools: Registry = field(default_factory=Registry)
    # Speech to text for voice notes and audio (CHATBRIDGE_ASR_MODEL and the client that
    # sends recordings to it, core.media.transcribe.AudioClient); unset: a note.
    asr_model: str | None = None
    asr_client: ModelClient | None = None
    turn_seconds: float | None = None
    secrets: tuple[str, ...] = ()
    memory: MemoryOptions = field(default_factory=MemoryOptions)


class ChatService:
    """Runs turns: record, serialize per conversation, build context, call, persist."""

    def __init__(self, *, store: Store, model: ModelClient, options: ServiceOptions,
                 knowledge: Searcher | None = None) -> None:
        self._store = store
        self._knowledge = knowledge
        self._model = model
        self._options = options
        self._locks: WeakValueDictionary[tuple[str, str], asyncio.Lock] = WeakValueDictionary()
        self._counters: dict[str, TokenCounter] = {}
        self._rules = options.limits.rules()
        self._images = ImagePreparer(max_side=options.max_image_side,
                                     memory_bytes=options.image_memory_bytes)
        self._documents = DocumentReader(DocumentStore(store), self._images.budget,
                                         max_bytes=options.max_document_bytes)
        self._transcriber = Transcriber(options.asr_client, options.asr_model,
                                        self._images.budget) \
            if options.asr_client is not None and options.asr_model else None
        self._agent = AgentLoop(model, secrets=options.secrets)
        self._toolboxes: dict[str, Toolbox] = {}
        self.memory = Summariser(store=store, model=model, owner=replica_name(),
                                 counter=self._counter, options=options.memory)
        self.stops = Stops(store)  # "stop generating", across replicas
        self._handoffs = Handoffs(store)

    def profile(self, name: str | None) -> Profile:
        """The named profile, or the default one."""
        profiles = self._options.profiles
        return profiles.get(name or "", profiles[self._options.default_profile])

    def model_for(self, profile: Profile) -> str:
        """The model a profile uses."""
        return profile.model or self._options.model

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
                queued: bool = False) -> AsyncIterator[ModelChunk | ToolActivity]:
        """The turn's model calls, with the tools the profile may use run in between (a
        queued turn's tool calls are stored durably, like its answer)."""
        counter = self._counter(call.model)
        seconds = self._options.turn_seconds
        return self._agent.stream(
            call, toolbox=self.toolbox(profile),
            settings=ToolSettings(profile.max_tool_rounds, profile.tool_timeout_seconds),
            context=ToolContext(profile.timezone, counter, self._handoff(request, profile)),
            journal=StoreJournal(self._store, start, counter,
                                 retry=lambda write, doing: self._durably(queued, write, doing)),
            rounds_done=rounds_done(history, start.message_id), stream=self._options.stream,
            deadline=None if seconds is None else time.monotonic() + seconds,
        )

    def _counter(self, model: str) -> TokenCounter:
        if model not in self._counters:
            self._counters[model] = counter_for(model)
        return self._counters[model]

    # ---- rolling summary (core.memory): /summary, /compact and the call after a turn ----

    def _memory_limits(self, profile: Profile, model: str) -> tuple[str, int, int]:
        budget = profile.budget_for(model) - self._counter(model).count(profile.system_prompt)
        return profile.summary_model or model, max(budget, 1), profile.max_context_messages

    async def summary(self, *, platform: str, scope: str) -> str:
        """What ``/summary`` shows: the conversation's rolling summary, or why there is none."""
        row = await self.memory.view(platform=platform, scope=scope)
        if row is None or not row.covers_message_id:
            return ("No summary yet: the whole conversation still fits in what the model "
                    "reads. (/compact writes one now.)")
        if not row.summary:
            return "The summary is empty: nothing in the earlier messages needed keeping."
        when = f" (written {row.updated_at:%Y-%m-%d %H:%M} UTC)" if row.updated_at else ""
        return f"Summary of the earlier conversation{when}:\n{row.summary}"

    async def compact(self, *, platform: str, scope: str, profile: str | None) -> str:
        """What ``/compact`` answers: every message so far is folded into the summary now."""
        conversation = await self.memory.conversation(platform=platform, scope=scope)
        if conversation is None:
            return "Nothing to compact yet: the conversation is empty."
        model = await self.current_model(platform=platform, scope=scope, profile=profile)
        summary_model, budget, count = self._memory_limits(self.profile(profile), model)
        outcome: Outcome = await self.memory.summarise(
            conversation, summary_model=summary_model, budget=budget, max_messages=count,
            force=True)
        if outcome.status == "written":
            return ("Compacted: the conversation so far is now a summary (/summary shows "
                    "it); the next answers start from it.")
        if outcome.status == "nothing":
            return "Nothing new to compact: the summary already covers the conversation."
        if outcome.status == "busy":
            return "A summary is being written right now; try /compact again in a minute."
        return ("The summary could not be written now (the model did not answer); it is "
                "tried again later. The conversation is unchanged.")

    def _summarise_later(self, start: TurnStart, profile: Profile, model: str,
                         history: tuple[StoredMessage, ...]) -> None:
        summary_model, budget, count = self._memory_limits(profile, model)
        self.memory.consider(start.conversation_id, history, summary_model=summary_model,
                             budget=budget, max_messages=count)

    async def reset(self, *, platform: str, scope: str) -> bool:
        """Close the conversation under this key; the next message starts a new one."""
        return await self._store.reset(platform=platform, scope=scope)

    async def knows_scope(self, *, platform: str, scope: str) -> bool:
        """Whether a conversation (open or closed by a reset) ever existed under this key."""
        return await self._store.scope_known(platform=platform, scope=scope)

    async def first_time(self, *, platform: str, event_id: str) -> bool:
        """Record an event that starts no turn (a greeting…); ``False`` if seen before.

        The database decides, so a redelivery or a second replica gets ``False``.
        """
        return await self._store.record_event(platform=platform, event_id=event_id)

    async def seen(self, *, platform: str, event_id: str) -> bool:
        """Whether ``first_time`` (or a message) ever recorded this event id; records nothing."""
        return await self._store.event_recorded(platform=platform, event_id=event_id)

    @property
    def transcribes(self) -> bool:
        """Whether recordings are transcribed (a speech model is set up)."""
        return self._transcriber is not None

    @property
    def max_images(self) -> int:
        """Images one message may carry."""
        return self._options.max_images

    @property
    def model_choices(self) -> tuple[str, ...]:
        """Models people may switch to (empty: switching is off)."""
        return self._options.model_choices

    async def current_model(self, *, platform: str, scope: str, profile: str | None) -> str:
        """The model this conversation key uses now."""
        chosen = None
        if self._options.model_choices:
            chosen = await self._store.scope_model(platform=platform, scope=scope)
        return chosen or self.model_for(self.profile(profile))

    async def choose_model(self, *, platform: str, scope: str, model: str | None) -> None:
        """Switch this conversation key to ``model`` (``None``: back to the profile's)."""
        if model is not None and model not in self._options.model_choices:
            choices = ", ".join(self._options.model_choices) or "none configured"
            raise InputError(user_message=f"Unknown model {model!r}; choose one of: {choices}.")
        await self._store.set_scope_model(platform=platform, scope=scope, model=model)

    async def pending_events(self) -> int:
        """Inbound events received but not yet finished, across all replicas."""
        return await self._store.pending_events()

    async def record_reply(self, *, platform: str, event_id: str, ref: str) -> None:
        """Remember where the answer to ``event_id`` was posted (for feedback), when the
        final answer started a message of its own after the answer was stored."""
        await self._store.record_reply_ref(platform=platform, event_id=event_id, ref=ref)

    async def note_shown(self, *, platform: str, event_ids: Sequence[str],
                         refs: Sequence[str]) -> None:
        """Remember the platform messages a queued turn shows (as soon as they exist): the
        answer is stored with the first (feedback), and a retake edits them."""
        await self._store.note_shown(platform=platform, event_ids=event_ids, refs=refs)

    async def record_feedback(
        self, *, platform: str, ref: str, user_id: str, positive: bool | None,
        at: datetime | None = None,
    ) -> bool:
        """Store a thumbs up/down on the answer posted at ``ref`` (``None``: taken back).
        ``at``: when the person gave it; an older rating never replaces a newer one (a
        redelivered update arriving late)."""
        value = "none" if positive is None else "up" if positive else "down"
        return await self._store.record_feedback(
            platform=platform, ref=ref, user_id=user_id, value=value, at=at)

    async def _prepare_images(self, raw: tuple[bytes, ...]) -> tuple[Image, ...]:
        if len(raw) > self._options.max_images:
            raise InputError(user_message=f"Please send at most {self._options.max_images} "
                             "images at a time.")
        try:
            return await self._images.prepare(raw)
        except InputError:
            raise
        except Exception as err:  # a decoder bug on hostile input is still bad input
            raise ImageError(f"image decoder failed: {type(err).__name__}") from err

    async def handle(self, request: ChatRequest) -> AsyncIterator[ReplyEvent]:
        """Answer one message received here (the console) as a stream of reply events.

        The event is recorded with the message; a second delivery of it yields a
        ``DuplicateEvent``.
        """
        async for event in self._guarded((_storable(request),), None):
            yield event

    async def answer(
        self, requests: Sequence[ChatRequest], claim: Claim, *, stop: TurnStop | None = None,
    ) -> AsyncIterator[ReplyEvent]:
        """Answer messages of one conversation that waited in the inbox, in one turn.

        ``requests`` (oldest first) are the claim's events that are chat messages; their
        events are already recorded and claimed. Messages an interrupted attempt stored
        are not stored twice. Cancelled (shutdown, a lost lease), the turn records
        nothing more: the events go back to the inbox and are answered again. ``stop``: the
        person may stop the answer (``core.stops``); what was written is then stored as
        partial and the turn ends with it.
        """
        if not requests:
            return
        async for event in self._guarded(tuple(_storable(r) for r in requests), claim,
                                         stop):
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
                       stop: TurnStop | None = None) -> AsyncIterator[ReplyEvent]:
        try:
            async for event in self._handle(requests, claim, stop):
                yield event
        except LeaseLost as err:
            # Another replica took the conversation over and answers it: stay quiet.
            log.warning("%s; leaving the turn to the replica that holds it", err)
        except StoreError as err:
            log.error("database failure in %s: %s", requests[-1].scope, err)
            yield ErrorEvent(err.kind, err.user_message, requests[-1].scope)

    def _check_text(self, requests: tuple[ChatRequest, ...], profile: Profile) -> str | None:
        """Why the messages cannot be answered as written, if they cannot."""
        if not any(r.text.strip() or r.images or r.files for r in requests):
            return "Your message was empty; please write something."
        for r in requests:
            size = len(r.text.strip())
            if size > profile.max_input_chars:
                return (f"Your message is too long ({size} characters); "
                        f"the limit is {profile.max_input_chars}.")
        return None

    async def _with_documents(self, request: ChatRequest, profile: Profile, model: str,
                              notes: list[str], refused: list[str]) -> ChatRequest:
        """``request`` with its documents read into its text (and a scanned PDF's pages
        into its images); what was cut or not read goes to ``notes``/``refused``. A
        message with nothing left to answer raises the first refusal."""
        if not request.files:
            return request
        recordings = [u for u in request.files if is_recording(u)]
        documents = [u for u in request.files if not is_recording(u)]
        mine: list[str] = []  # this message's refusals
        heard = await self._heard(recordings, notes, mine)
        counter = self._counter(model)
        room = profile.budget_for(model) - counter.count(profile.system_prompt)
        reading = await self._documents.read(
            documents, counter=counter,
            budget_tokens=max(room // 2 - counter.count(request.text), 1),
            max_images=max(self._options.max_images - len(request.images), 0))
        notes += reading.notes
        text = "\n\n".join(t for t in (*heard, request.text.strip()) if t)
        if reading.text:
            text = f"{text}\n\n{storable(reading.text)}" if text else storable(reading.text)
        mine += reading.refused
        if not text and not request.images and not reading.images:
            raise InputError(user_message=mine[0] if mine else
                             "Your message was empty; please write something.")
        refused += mine
        return replace(request, text=text, images=request.images + tuple(reading.images),
                       files=())

    async def _heard(self, recordings: Sequence[Upload], notes: list[str],
                     refused: list[str]) -> list[str]:
        """Each recording's transcript, marked as transcribed (what was heard is noted
        for the person when it is short)."""
        heard: list[str] = []
        for upload in recordings:
            transcriber = self._transcriber
            if transcriber is None:
                refused.append("I can't listen to recordings here (no speech model is set "
                               "up); please write your message.")
                continue
            try:
                words, _ = await transcriber.transcribe(upload.data)
            except InputError as err:
                refused.append(err.user_message)
                continue
            except ModelError as err:
                log.warning("transcription with %s failed: %s", transcriber.model, err.detail)
                refused.append(transcription_failed(err))
                continue
            words = storable(words)
            heard.append(f"{TRANSCRIBED} {words}")
            if len(words) <= HEARD_SHOWN:
                notes.append(f"Heard: \u201c{words}\u201d")
        return heard

    async def _usable(
        self, requests: tuple[ChatRequest, ...], profile: Profile, model: str,
        notes: list[str],
    ) -> tuple[tuple[ChatRequest, ...], dict[str, tuple[Image, ...]], list[str]]:
        """The messages of a batch that can be answered, their images, and why the
        others (or their images) were left out."""
        kept: list[ChatRequest] = []
        images: dict[str, tuple[Image, ...]] = {}
        skipped: list[str] = []
        for r in requests:
            if not r.text.strip() and not r.images and not r.files:
                continue
            if (problem := self._check_text((r,), profile)) is not None:
                skipped.append(problem)
                continue
            try:
                r = await self._with_documents(r, profile, model, notes, skipped)
            except InputError as err:
                skipped.append(err.user_message)
                continue
            try:
                images[r.event_id] = await self._prepare_images(r.images)
            except InputError as err:
                skipped.append(err.user_message)
                if not r.text.strip():
                    continue
                images[r.event_id] = ()
            kept.append(r)
        return tuple(kept), images, skipped

    async def _handle(
        self, requests: tuple[ChatRequest, ...], claim: Claim | None,
        stop: TurnStop | None = None,
    ) -> AsyncIterator[ReplyEvent]:
        request = requests[-1]
        profile = self.profile(request.profile)
        queued = claim is not None
        model = await self._durably(queued, lambda: self.current_model(
            platform=request.platform, scope=request.scope, profile=request.profile),
            "reading the model choice")
        bad_input: InputError | None = None
        images: dict[str, tuple[Image, ...]] = {}
        skipped: list[str] = []
        notes: list[str] = []
        if len(requests) > 1:
            # Several messages waited together: one that cannot be used is left out (and
            # named in the answer's notice) rather than costing the others their answer.
            requests, images, skipped = await self._usable(requests, profile, model, notes)
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
                request = await self._with_documents(request, profile, model, notes, skipped)
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
        parts = [
            TurnPart(r.event_id, r.author, r.text.strip(),
                     message_tokens(counter, r.text.strip(), images.get(r.event_id, ())),
                     images.get(r.event_id, ()), stored.get(r.event_id),
                     order.get(r.event_id))
            for r in requests if r.text.strip() or r.images
        ]
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
                                  stop=stop)
            turn = note_unseen_images(turn, self._options.vision, model,
                                      any(p.images for p in parts))
            async for event in cap_answer(turn, profile.max_answer_chars):
                yield event
        finally:
            if held:
                lock.release()

    async def _run_turn(
        self, start: TurnStart, request: ChatRequest, profile: Profile, model: str,
        history: tuple[StoredMessage, ...], *, queued: bool = False,
        skipped: Sequence[str] = (), notes: Sequence[str] = (),
        stop: TurnStop | None = None,
    ) -> AsyncIterator[ReplyEvent]:
        began = time.monotonic()
        yield StatusEvent("thinking…")
        counter = self._counter(model)
        try:
            passages = await self._passages(profile, request)
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
                             int((time.monotonic() - began) * 1000))
            return
        call = ModelCall(
            model, build_messages(profile, history, show_authors=request.shared,
                                  knowledge=context_block(passages) if passages else ""),
            profile.sampling, cache=profile.prompt_cache,
        )
        answer: list[str] = []
        reasoning: list[str] = []
        finish = FinishChunk("stop")
        try:
            async for chunk in stoppable(self._chunks(call, start, profile, history, request,
                                                      queued=queued), stop):
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
        prompt_tokens = counter.count(profile.system_prompt) + sum(m.token_count for m in history)
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

    async def _passages(self, profile: Profile, request: ChatRequest) -> list[Passage] | None:
        """Knowledge-base passages for this turn (``None``: the profile answers without)."""
        if self._knowledge is None or not profile.knowledge or profile.kb_mode != "auto":
            return None
        return await self._knowledge.search(profile.knowledge, request.text,
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
