"""What adapters ask the service besides a turn: memory commands, choices, feedback."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from core.errors import (
    InputError,
)
from core.memory import Outcome
from core.profiles import Profile
from core.service_base import ServiceBase
from core.store import StoredMessage, TurnStart


class Commands(ServiceBase):
    """Commands and small records around the turns."""

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
