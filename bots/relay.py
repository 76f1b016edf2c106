"""The handoff desk: customers' messages to the staff place and staff replies back, across
Slack and Telegram.

Both adapters call one ``Desk``. Before a turn, ``intercept`` decides whether the bot
stays silent (an open handoff: the messages are stored and relayed to the staff thread) or
hands the conversation over (the person asked for a human, the shop is closed and
``after_hours = "handoff"``). On the staff side, a reply to the staff notice or to a
relayed customer message (a Slack thread reply, a Telegram reply) is ``staff_reply``:
stored in the customer's conversation as a ``staff`` message once per event, then sent to
the customer on their platform; ``/release`` (or the button) ends the handoff. Each replica
posts to the other platform with a client of its own, built from that platform's token.

Every relay is stored before it is sent, then claimed in the relay ledger
(``core.relays``) with a lease, so a redelivery or a second replica never sends it twice. A
replica that dies between the claim and the platform's answer leaves the relay to the
sweeper of whichever replica comes next: after the lease it is sent again, on Slack only
after looking for the copy that may have arrived (each relay carries its key as message
metadata). Telegram has no such lookup: there a relay whose sender died after Telegram
took it and before the ledger heard back is sent twice (the window is one HTTP answer). A
relay the platform refuses goes to the outbox (``chatbridge outbox retry``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bots.posters import (
    HANDOFF_START,
    RELEASE_ACTION,
    LazyTelegramPoster,
    Poster,
    SlackPoster,
    TelegramPoster,
    Unconfirmed,
    open_posters,
)
from core.errors import ChatbridgeError, ConfigError
from core.handoff import HandoffRecord, Handoffs, HandoffSettings, wants_human
from core.handoff_summary import SUMMARY_SECONDS, summarise_for_staff
from core.inbox import replica_name
from core.outbox import Outbox
from core.profiles import Profile
from core.relays import RelayRecord, Relays
from core.service import ChatService
from core.store import Store
from core.types import ChatRequest

__all__ = ["HANDOFF_START", "RELEASE_ACTION", "Desk", "Poster", "SlackPoster", "TelegramPoster",
           "Verdict", "open_posters"]

log = logging.getLogger(__name__)
RELEASE_WORDS = ("/release", "release")
SWEEP_SECONDS = 60.0  # idle handoffs are looked for this often
MAX_ATTEMPTS = 5  # an unconfirmed Slack relay is looked for and sent again at most so often
TOLD_CUSTOMER = ("I've asked a person from our team to take over; they will answer here"
                 "{when}. You can keep writing meanwhile.")
BACK = "Our team has handed the conversation back to me; ask me anything."
IDLE_CUSTOMER = ("Our team has not written here for a while, so I am answering again. "
                 "Write \"human\" to reach a person.")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What ``Desk.intercept`` decided: ``handled`` (no turn), else a note for the answer."""

    handled: bool
    note: str = ""


def staff_target(settings: HandoffSettings, thread: str | None = None) -> dict[str, Any]:
    """The staff place as a reply target (``thread``: the notice, for a reply to it)."""
    place = settings.staff_place
    if settings.staff_platform == "slack":
        return {"channel": place, "thread_ts": thread, "team": "", "user": ""}
    return {"chat_id": int(place), "thread_id": None, "business_connection_id": None,
            "reply_to": int(thread) if thread else None}


def _thread_of(ref: str | None) -> str | None:
    """The notice's own id (Slack ts, Telegram message id) from ``place/id``."""
    return ref.split("/", 1)[1] if ref and "/" in ref else None


class Desk:
    """Hands conversations to staff and relays between them and the customer."""

    def __init__(self, *, service: ChatService, store: Store,
                 posters: Mapping[str, Poster], profiles: Mapping[str, Profile],
                 clock: Callable[[], datetime] | None = None,
                 lease_seconds: float = 60.0) -> None:
        self._service = service
        self._store = store
        self._handoffs = Handoffs(store)
        self._relays = Relays(store, owner=replica_name())
        self._lease = lease_seconds
        self.summary_seconds = SUMMARY_SECONDS  # the notice waits this long for a summary
        self._posters = dict(posters)
        self._profiles = profiles
        self.clock = clock or (lambda: datetime.now(UTC))  # tests freeze it
        self._sweeper: asyncio.Task[None] | None = None
        self._any_handoff = any(p.handoff for p in profiles.values())
        for profile in profiles.values():
            staff = profile.handoff.staff_platform if profile.handoff else None
            if staff is not None and staff not in self._posters:
                token = "SLACK_BOT_TOKEN" if staff == "slack" else "TELEGRAM_BOT_TOKEN"
                raise ConfigError(
                    f"profile {profile.name!r}: the handoff's staff place is on {staff}, "
                    f"but {token} is not set, so no message can be posted there")

    @property
    def handoffs(self) -> Handoffs:
        """The handoffs in SQL (``start`` is what the knowledge base calls)."""
        return self._handoffs

    def staff_places(self, platform: str) -> frozenset[str]:
        """The staff channels or chats on ``platform`` (their messages are relays)."""
        return frozenset(p.handoff.staff_place for p in self._profiles.values()
                         if p.handoff and p.handoff.staff_platform == platform)

    # ---------------------------------------------------------------- customer side
    async def intercept(self, requests: Sequence[ChatRequest],
                        customer: Mapping[str, Any]) -> Verdict:
        """Before a turn: relay to staff instead (an open handoff), hand over now, or let
        the bot answer (with the after-hours note, if any). ``customer`` is where replies
        to the person go (the platform's reply target as a dict)."""
        if not requests:
            return Verdict(False)
        last = requests[-1]
        profile = self._service.profile(last.profile)
        settings = profile.handoff
        if not self._any_handoff and profile.hours.always:
            return Verdict(False)  # nothing to look up: no turn pays for a handoff query
        open_one = await self._handoffs.active(platform=last.platform, scope=last.scope)
        if open_one is not None:
            await self._to_staff(open_one, requests)
            return Verdict(True)
        if settings is None:
            return Verdict(False)
        now = self.clock()
        closed = not profile.hours.is_open(now)
        trigger = reason = ""
        if any(wants_human(r.text, settings.phrases) for r in requests):
            trigger, reason = "phrase", "The customer asked for a person."
        elif closed and profile.hours.after_hours == "handoff":
            trigger, reason = "hours", "Written outside opening hours."
        if trigger:
            await self.start(requests, customer, settings, profile, trigger, reason)
            return Verdict(True)
        if closed and profile.hours.after_hours == "note":
            return Verdict(False, profile.hours.closed_note(now))
        return Verdict(False)

    async def person_asked(self, *, platform: str, scope: str, customer: Mapping[str, Any],
                           profile: str | None) -> None:
        """The person pressed "Talk to a person" under "I don't know": hand over (once,
        however often it is pressed; not at all when the profile has no handoff)."""
        chosen = self._service.profile(profile)
        if chosen.handoff is not None:
            await self.start((), customer, chosen.handoff, chosen, "button",
                             "The customer asked for a person (the bot did not know the "
                             "answer).", platform=platform, scope=scope)

    async def after_turn(self, requests: Sequence[ChatRequest],
                         customer: Mapping[str, Any]) -> None:
        """After a turn: announce a handoff the model opened (``handoff_to_human``), or
        hand over when the bot failed ``after_failures`` times in a row."""
        if not requests:
            return
        last = requests[-1]
        profile = self._service.profile(last.profile)
        settings = profile.handoff
        if settings is None:
            return
        opened = await self._handoffs.active(platform=last.platform, scope=last.scope)
        if opened is not None:
            if opened.notice_ref is None:
                await self._announce(opened, customer, settings, profile)
            return
        if settings.after_failures <= 0:
            return
        failed = await self._handoffs.failures_in_row(
            platform=last.platform, scope=last.scope, limit=settings.after_failures)
        if failed >= settings.after_failures:
            await self.start((), customer, settings, profile, "failures",
                             f"The bot could not answer {failed} times in a row.",
                             platform=last.platform, scope=last.scope)

    async def start(self, requests: Sequence[ChatRequest], customer: Mapping[str, Any],
                    settings: HandoffSettings, profile: Profile, trigger: str, reason: str,
                    *, platform: str | None = None, scope: str | None = None) -> None:
        """Open the handoff (once across replicas), tell the person, post the notice."""
        platform = platform or requests[-1].platform
        scope = scope or requests[-1].scope
        handoff, _ = await self._handoffs.start(
            platform=platform, scope=scope, staff=settings.staff, reason=reason,
            trigger=trigger, profile=profile.name, customer=customer)
        for r in requests:
            await self._handoffs.add_message(handoff, role="user", author_id=r.author.id,
                                             author_name=r.author.name, text=r.text,
                                             event_id=r.event_id)
        if handoff.notice_ref is None:
            await self._announce(handoff, customer, settings, profile)

    async def _announce(self, handoff: HandoffRecord, customer: Mapping[str, Any],
                        settings: HandoffSettings, profile: Profile) -> None:
        """Tell the person who answers and when; post the notice to the staff place
        (each once, whichever replica gets here first)."""
        if not handoff.customer:
            await self._handoffs.set_customer(handoff.id, customer)
        now = self.clock()
        when = "" if profile.hours.is_open(now) else profile.hours.when_open(now)
        await self._send(handoff.platform, customer, TOLD_CUSTOMER.format(when=when),
                         f"ho{handoff.id}/told")
        key = f"ho{handoff.id}/notice"
        if await self._relays.status(platform=settings.staff_platform, key=key) is not None:
            return  # posted (or being posted) by another replica, or an earlier attempt
        lines = await self._recent(handoff)
        summary = await summarise_for_staff(
            self._service.model_client, profile.summary_model or self._service.model_for(profile),
            lines, seconds=self.summary_seconds)
        notice = (f"Handoff from {handoff.platform} ({profile.name}): {handoff.reason}\n"
                  f"Reply to this message to answer the customer; reply /release to hand "
                  f"it back to the bot.\n\n"
                  + (f"Summary: {summary}\n\n" if summary else "")
                  + "Recent messages:\n" + ("\n".join(lines) or "(none)"))
        await self._send(settings.staff_platform, staff_target(settings), notice, key,
                         kind="notice", handoff_id=handoff.id)

    async def _recent(self, handoff: HandoffRecord, count: int = 8) -> list[str]:
        from core.export import conversation_lines  # the transcript's own reader

        return await conversation_lines(self._store, platform=handoff.platform,
                                        scope=handoff.scope, last=count)

    async def _to_staff(self, handoff: HandoffRecord, requests: Sequence[ChatRequest]) -> None:
        settings = HandoffSettings(handoff.staff)
        target = staff_target(settings, _thread_of(handoff.notice_ref))
        for r in requests:
            if not r.text.strip():
                continue
            await self._handoffs.add_message(
                handoff, role="user", author_id=r.author.id, author_name=r.author.name,
                text=r.text, event_id=r.event_id)
            # Also when stored before: a retaken turn finds the relay sent, or takes it over.
            await self._send(settings.staff_platform, target,
                             f"{r.author.name or 'Customer'}: {r.text}", f"{r.event_id}/relay",
                             handoff_id=handoff.id)

    # ---------------------------------------------------------------- staff side
    async def staff_reply(self, *, platform: str, notice_ref: str, author_id: str,
                          author_name: str, text: str, event_id: str) -> bool:
        """A staff member's reply to a notice, or to a customer message relayed to staff:
        relay it (or release on ``/release``). ``False`` when ``notice_ref`` is neither for
        an open handoff."""
        handoff = await self._handoffs.by_ref(notice_ref)
        if handoff is None:
            return False
        if text.strip().lower() in RELEASE_WORDS:
            await self.release(handoff, by=f"{platform}:{author_id}")
            return True
        await self._handoffs.add_message(
            handoff, role="staff", author_id=f"{platform}:{author_id}", author_name=author_name,
            text=text, event_id=f"{platform}:{event_id}")
        await self._send(handoff.platform, handoff.customer, text,
                         f"{platform}:{event_id}/relay", handoff_id=handoff.id)
        return True

    async def release(self, handoff: HandoffRecord, *, by: str, idle: bool = False) -> bool:
        """End the handoff (once) and tell both sides."""
        if not await self._handoffs.release(handoff.id, by=by):
            return False
        settings = HandoffSettings(handoff.staff)
        thread = staff_target(settings, _thread_of(handoff.notice_ref))
        staff_note = ("Released after no activity; the bot answers again." if idle else
                      "Released: the bot answers this customer again.")
        await self._send(settings.staff_platform, thread, staff_note, f"ho{handoff.id}/released")
        await self._send(handoff.platform, handoff.customer, IDLE_CUSTOMER if idle else BACK,
                         f"ho{handoff.id}/back")
        return True

    async def release_by_notice(self, notice_ref: str, *, by: str) -> bool:
        """The release button on a notice."""
        handoff = await self._handoffs.by_ref(notice_ref)
        return handoff is not None and await self.release(handoff, by=by)

    async def sweep(self) -> int:
        """Release handoffs idle longer than their profile allows; how many were."""
        released = 0
        for handoff in await self._handoffs.open_handoffs():
            profile = self._profiles.get(handoff.profile or "")
            hours = profile.handoff.idle_release_hours if profile and profile.handoff else 24.0
            if self.clock() - handoff.last_activity_at >= _hours(hours):
                released += await self.release(handoff, by="idle", idle=True)
        return released

    def start_sweeper(self) -> None:
        """In the background (stopped by ``close``): send again the relays of a sender
        that died (every third of a lease) and release idle handoffs (every minute)."""
        if self._sweeper is None and any(p.handoff for p in self._profiles.values()):
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="handoff sweeper")

    async def _sweep_forever(self) -> None:
        every = max(0.2, min(self._lease / 3, SWEEP_SECONDS))
        loop = asyncio.get_running_loop()
        idle_due = loop.time()
        while True:
            try:
                await self.resend_expired()
                if loop.time() >= idle_due:
                    idle_due = loop.time() + SWEEP_SECONDS
                    await self.sweep()
            except Exception as err:  # the database away, say: next round again
                log.warning("handoff sweep failed: %s", type(err).__name__)
            await asyncio.sleep(every)

    async def close(self) -> None:
        """Stop the sweeper."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for poster in self._posters.values():
            if isinstance(poster, LazyTelegramPoster):
                await poster.aclose()

    # ---------------------------------------------------------------- sending
    async def _send(self, platform: str, target: Mapping[str, Any], text: str, once: str, *,
                    kind: str = "text", handoff_id: int | None = None) -> None:
        """Send once: claimed in the relay ledger first (taken over after a crash); a
        refusal goes to the outbox."""
        relay = await self._relays.claim(platform=platform, key=once, target=target,
                                         text=text, lease=self._lease, kind=kind,
                                         handoff_id=handoff_id)
        if relay is not None:
            await self._deliver(relay)

    async def _deliver(self, relay: RelayRecord) -> None:
        """Post a claimed relay (looking for an earlier copy first when it is claimed again)
        while renewing its lease; record where it went."""
        poster = self._posters.get(relay.platform)
        ref: str | None = None
        try:
            if poster is None:
                raise ChatbridgeError(f"no {relay.platform} client in this process")
            async with self._leased(relay.id):
                if relay.attempts > 1 and poster.can_find:
                    ref = await poster.find(relay.target, relay.key, since=relay.created_at)
                    if ref is not None:
                        log.info("relay %s was shown before its sender stopped; not sent "
                                 "again", relay.key)
                if ref is None:
                    ref = await poster.post(relay.target, relay.text,
                                            button=relay.kind == "notice", relay=relay.key)
        except Unconfirmed as err:
            if poster is not None and poster.can_find and relay.attempts < MAX_ATTEMPTS:
                # Looked for (and sent if missing) once the lease runs out.
                log.warning("%s; relay %s is checked again in %g s", err, relay.key,
                            self._lease)
                return
            log.warning("%s; relay %s is most likely shown and is not sent again", err,
                        relay.key)
        except Exception as err:
            kind = getattr(err, "kind", None) or type(err).__name__
            await Outbox(self._store).add(platform=relay.platform, event_id=relay.key,
                                          target=relay.target, text=relay.text,
                                          error=str(kind)[:200])
            await self._relays.finish(relay.id, status="outbox")
            log.error("could not relay to %s (%s); kept in the outbox", relay.platform, kind)
            return
        await self._relays.finish(relay.id, status="sent", ref=ref)
        if relay.kind == "notice" and relay.handoff_id is not None and ref:
            await self._handoffs.set_notice(relay.handoff_id, ref)

    @contextlib.asynccontextmanager
    async def _leased(self, relay_id: int) -> AsyncIterator[None]:
        """Renew the relay's lease while the platform call runs (a slow answer is not a
        dead sender)."""
        async def renew() -> None:
            while True:
                await asyncio.sleep(self._lease / 3)
                with contextlib.suppress(ChatbridgeError):
                    await self._relays.renew(relay_id, self._lease)

        task = asyncio.create_task(renew(), name="relay lease")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def resend_expired(self) -> int:
        """Send the relays whose sender died before the platform answered; how many."""
        done = 0
        for relay_id in await self._relays.expired():
            relay = await self._relays.retake(relay_id, self._lease)
            if relay is not None:
                await self._deliver(relay)
                done += 1
        return done


def _hours(hours: float) -> timedelta:
    return timedelta(hours=hours)
