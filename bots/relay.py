"""The handoff desk: customers' messages to the staff place and staff replies back, across
Slack and Telegram.

Both adapters call one ``Desk``. Before a turn, ``intercept`` decides whether the bot
stays silent (an open handoff: the messages are stored and relayed to the staff thread) or
hands the conversation over (the person asked for a human, the shop is closed and
``after_hours = "handoff"``). On the staff side, a reply to the staff notice (a Slack
thread reply, a Telegram reply) is ``staff_reply``: stored in the customer's conversation
as a ``staff`` message once per event, then sent to the customer on their platform;
``/release`` (or the Slack button) ends the handoff. Each replica posts to the other
platform with a client of its own, built from that platform's token.

Every relay is stored before it is sent, keyed by the event that carried it, so a
redelivery or a second replica (the inbox's lease) never sends it twice; a relay the
platform refuses goes to the outbox (``chatbridge outbox retry``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bots.settings import Settings
from core.errors import ChatbridgeError, ConfigError
from core.handoff import HandoffRecord, Handoffs, HandoffSettings, wants_human
from core.outbox import Outbox
from core.profiles import Profile
from core.service import ChatService
from core.store import Store
from core.types import ChatRequest

__all__ = ["RELEASE_ACTION", "Desk", "Poster", "Verdict", "open_posters"]

log = logging.getLogger(__name__)
RELEASE_ACTION = "handoff_release"
RELEASE_WORDS = ("/release", "release")
SWEEP_SECONDS = 60.0
TOLD_CUSTOMER = ("I've asked a person from our team to take over; they will answer here"
                 "{when}. You can keep writing meanwhile.")
BACK = "Our team has handed the conversation back to me; ask me anything."
IDLE_CUSTOMER = ("Our team has not written here for a while, so I am answering again. "
                 "Write \"human\" to reach a person.")


class Poster(Protocol):
    """Posts plain text to a place on one platform; returns the message's ref."""

    async def post(self, target: Mapping[str, Any], text: str, *,
                   button: bool = False) -> str:
        """Post ``text`` to ``target`` (the platform's reply target as a dict)."""
        ...


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
                 clock: Callable[[], datetime] | None = None) -> None:
        self._service = service
        self._store = store
        self._handoffs = Handoffs(store)
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
        if not await self._service.first_time(platform=settings.staff_platform,
                                              event_id=f"ho{handoff.id}/notice"):
            return
        recent = await self._recent(handoff)
        notice = (f"Handoff from {handoff.platform} ({profile.name}): {handoff.reason}\n"
                  f"Reply to this message to answer the customer; reply /release to hand "
                  f"it back to the bot.\n\nRecent messages:\n{recent}")
        poster = self._posters[settings.staff_platform]
        ref = await poster.post(staff_target(settings), notice, button=True)
        await self._handoffs.set_notice(handoff.id, ref)

    async def _recent(self, handoff: HandoffRecord, count: int = 8) -> str:
        from core.export import conversation_lines  # the transcript's own reader

        lines = await conversation_lines(self._store, platform=handoff.platform,
                                         scope=handoff.scope, last=count)
        return "\n".join(lines) or "(none)"

    async def _to_staff(self, handoff: HandoffRecord, requests: Sequence[ChatRequest]) -> None:
        settings = HandoffSettings(handoff.staff)
        target = staff_target(settings, _thread_of(handoff.notice_ref))
        for r in requests:
            if not r.text.strip():
                continue
            stored = await self._handoffs.add_message(
                handoff, role="user", author_id=r.author.id, author_name=r.author.name,
                text=r.text, event_id=r.event_id)
            if stored:
                await self._send(settings.staff_platform, target,
                                 f"{r.author.name or 'Customer'}: {r.text}", f"{r.event_id}/relay")

    # ---------------------------------------------------------------- staff side
    async def staff_reply(self, *, platform: str, notice_ref: str, author_id: str,
                          author_name: str, text: str, event_id: str) -> bool:
        """A staff member's reply to a notice: relay it (or release on ``/release``).
        ``False`` when ``notice_ref`` is no open handoff's notice."""
        handoff = await self._handoffs.by_notice(notice_ref)
        if handoff is None:
            return False
        if text.strip().lower() in RELEASE_WORDS:
            await self.release(handoff, by=f"{platform}:{author_id}")
            return True
        stored = await self._handoffs.add_message(
            handoff, role="staff", author_id=f"{platform}:{author_id}", author_name=author_name,
            text=text, event_id=f"{platform}:{event_id}")
        if stored:
            await self._send(handoff.platform, handoff.customer, text,
                             f"{platform}:{event_id}/relay")
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
        handoff = await self._handoffs.by_notice(notice_ref)
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
        """Release idle handoffs every minute in the background (stopped by ``close``)."""
        if self._sweeper is None and any(p.handoff for p in self._profiles.values()):
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="handoff sweeper")

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as err:  # the database away, say: next minute again
                log.warning("idle handoff sweep failed: %s", type(err).__name__)
            await asyncio.sleep(SWEEP_SECONDS)

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
    async def _send(self, platform: str, target: Mapping[str, Any], text: str,
                    once: str) -> None:
        """Send once (claimed in SQL first); a refusal goes to the outbox."""
        if not await self._service.first_time(platform=platform, event_id=once):
            return
        poster = self._posters.get(platform)
        try:
            if poster is None:
                raise ChatbridgeError(f"no {platform} client in this process")
            await poster.post(target, text)
        except Exception as err:
            kind = getattr(err, "kind", None) or type(err).__name__
            await Outbox(self._store).add(platform=platform, event_id=once, target=target,
                                          text=text, error=str(kind)[:200])
            log.error("could not relay to %s (%s); kept in the outbox", platform, kind)


def _hours(hours: float) -> timedelta:
    return timedelta(hours=hours)


class SlackPoster:
    """Posts with a Slack Web API client."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def post(self, target: Mapping[str, Any], text: str, *,
                   button: bool = False) -> str:
        """``chat.postMessage``; the ref is ``channel/ts``."""
        blocks = None
        if button:
            blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}},
                      {"type": "actions", "elements": [{
                          "type": "button", "action_id": RELEASE_ACTION, "style": "primary",
                          "text": {"type": "plain_text", "text": "Release to the bot"},
                          "value": "release"}]}]
        reply = await self._client.chat_postMessage(
            channel=target["channel"], thread_ts=target.get("thread_ts"), text=text,
            blocks=blocks)
        return f"{reply['channel']}/{reply['ts']}"


class TelegramPoster:
    """Posts with a Telegram ``Bot``."""

    def __init__(self, bot: Any) -> None:
        self._bot = bot

    async def post(self, target: Mapping[str, Any], text: str, *,
                   button: bool = False) -> str:
        """``sendMessage`` (as the business, in a business chat); the ref is ``chat/id``."""
        from telegram import InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters

        markup = InlineKeyboardMarkup([[InlineKeyboardButton(
            "Release to the bot", callback_data=RELEASE_ACTION)]]) if button else None
        reply_to = target.get("reply_to")
        sent = await self._bot.send_message(
            target["chat_id"], text[:4096], message_thread_id=target.get("thread_id"),
            business_connection_id=target.get("business_connection_id"),
            reply_parameters=ReplyParameters(reply_to, allow_sending_without_reply=True)
            if reply_to else None, reply_markup=markup)
        return f"{sent.chat.id}/{sent.message_id}"


class LazyTelegramPoster(TelegramPoster):
    """A Telegram poster whose ``Bot`` starts at the first post (for a Slack process)."""

    def __init__(self, settings: Settings) -> None:
        from telegram import Bot

        from bots.telegram import load_config

        config = load_config(settings)
        super().__init__(Bot(config.token, base_url=config.api_url,
                             base_file_url=config.file_url))
        self._started = False

    async def post(self, target: Mapping[str, Any], text: str, *,
                   button: bool = False) -> str:
        """Start the bot once, then post."""
        if not self._started:
            await self._bot.initialize()
            self._started = True
        return await super().post(target, text, button=button)

    async def aclose(self) -> None:
        """Shut the bot's HTTP client down."""
        if self._started:
            await self._bot.shutdown()


def open_posters(settings: Settings, own: Mapping[str, Poster]) -> dict[str, Poster]:
    """Posters for both platforms: ``own`` (the running adapter's) and, when its token is
    set, the other platform's (a client of its own; ``Desk.close`` closes it)."""
    posters: dict[str, Poster] = dict(own)
    env = settings.env
    if not any(p.handoff for p in settings.profiles.values()):
        return posters  # no handoff configured: nothing to post on the other platform
    if "slack" not in posters and env.get("SLACK_BOT_TOKEN", "").strip():
        from slack_sdk.web.async_client import AsyncWebClient

        token = env["SLACK_BOT_TOKEN"].strip()
        if not token.startswith("xoxb-"):
            raise ConfigError("SLACK_BOT_TOKEN must be the app's Bot User OAuth Token "
                              "(xoxb-…)")
        base = env.get("CHATBRIDGE_SLACK_API_URL", "").strip() or "https://slack.com/api/"
        posters["slack"] = SlackPoster(AsyncWebClient(token=token, base_url=base, timeout=30))
    if "telegram" not in posters and env.get("TELEGRAM_BOT_TOKEN", "").strip():
        posters["telegram"] = LazyTelegramPoster(settings)
    return posters
