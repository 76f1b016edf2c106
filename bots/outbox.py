"""``chatbridge outbox list|retry``: replies a platform would not take, sent again.

``retry`` sends every pending reply of the platforms whose credentials are configured,
oldest first; a reply that fails again stays pending (its attempts are counted).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

from bots.db import create_engine, ensure_schema, open_store
from bots.settings import Settings
from core.errors import ChatbridgeError, ConfigError
from core.outbox import Outbox, Pending

__all__ = ["run_outbox"]

log = logging.getLogger(__name__)
Sender = Callable[[Pending], Awaitable[None]]


def _line(item: Pending) -> str:
    first = item.text.strip().splitlines()[0] if item.text.strip() else ""
    preview = first if len(first) <= 50 else first[:49] + "…"
    return (f"{item.id:>6}  {item.platform:<8}  {item.created_at:%Y-%m-%d %H:%M}  "
            f"{item.attempts:>3}  {item.error or '-':<20}  {preview}")


async def _slack_sender(settings: Settings, stack: contextlib.AsyncExitStack) -> Sender:
    from bots.slack import load_slack_config, make_client
    from bots.slack.outbox import resend

    config = load_slack_config(settings)
    client = make_client(config)

    async def send(item: Pending) -> None:
        await resend(client, config, item)

    return send


async def _telegram_sender(settings: Settings, stack: contextlib.AsyncExitStack) -> Sender:
    from bots.telegram.outbox import sender

    return await sender(settings, stack)


_SENDERS = {"slack": _slack_sender, "telegram": _telegram_sender}


async def run_outbox(settings: Settings, *, action: str, platform: str | None) -> int:
    """List or re-send pending replies; returns the exit code (1 if any still failed)."""
    engine = create_engine(settings.database_url)
    try:
        await ensure_schema(engine)
        store = open_store(engine)
        try:
            outbox = Outbox(store)
            items = await outbox.pending(platform)
            if action == "list":
                print(f"{len(items)} pending repl{'y' if len(items) == 1 else 'ies'}")
                if items:
                    print(f"{'id':>6}  {'platform':<8}  {'kept at (UTC)':<16}  "
                          f"{'try':>3}  {'last error':<20}  text")
                for item in items:
                    print(_line(item))
                return 0
            return await _retry(settings, outbox, items)
        finally:
            store.close()
    finally:
        await engine.dispose()


async def _retry(settings: Settings, outbox: Outbox, items: list[Pending]) -> int:
    async with contextlib.AsyncExitStack() as stack:  # closes the platforms' clients
        return await _send_all(settings, outbox, items, stack)


async def _send_all(settings: Settings, outbox: Outbox, items: list[Pending],
                    stack: contextlib.AsyncExitStack) -> int:
    senders: dict[str, Sender | None] = {}
    sent = failed = 0
    for item in items:
        if item.platform not in senders:
            make = _SENDERS.get(item.platform)
            if make is None:
                raise ConfigError(f"the outbox holds a reply for {item.platform!r}, which "
                                  "this version cannot send")
            try:
                senders[item.platform] = await make(settings, stack)
            except Exception as err:  # not configured here, say: the other platforms go on
                senders[item.platform] = None
                # A network error's text may hold the Bot API URL, and with it the token.
                why = str(err) if isinstance(err, ChatbridgeError) else type(err).__name__
                print(f"{item.platform}: cannot send ({why})")
        send = senders[item.platform]
        if send is None:
            failed += 1
            continue
        if not await outbox.take(item.id):
            print(f"{item.id}: being sent by another run; skipped")
            continue
        try:
            await send(item)
        except (ChatbridgeError, OSError, TimeoutError, Exception) as err:
            kind = getattr(err, "kind", None) or type(err).__name__
            await outbox.failed(item.id, str(kind))
            failed += 1
            print(f"{item.id}: still failing ({kind})")
            continue
        await outbox.sent(item.id)
        sent += 1
    print(f"sent {sent}, still pending {failed}")
    return 1 if failed else 0
