"""Socket Mode: bolt's own socket-mode dispatch path into the same listeners (no signing)."""

from __future__ import annotations

from slack_bolt.adapter.socket_mode.async_internals import run_async_bolt_app
from slack_sdk.socket_mode.request import SocketModeRequest
from sqlalchemy import text

from tests.bots.slack.conftest import Harness, envelope, mention
from tests.fakes.model_server import Reply


async def test_socket_mode_event_and_retry(harness: Harness) -> None:
    h = harness
    h.model.enqueue(Reply(text="Over the socket."))
    payload = envelope(mention("via socket"), event_id="EvS1")
    first = SocketModeRequest(type="events_api", envelope_id="e1", payload=payload)
    resp = await run_async_bolt_app(h.bot.app, first)
    assert resp.status == 200
    await h.idle()
    retry = SocketModeRequest(type="events_api", envelope_id="e2", payload=payload,
                              retry_attempt=1, retry_reason="timeout")
    assert (await run_async_bolt_app(h.bot.app, retry)).status == 200
    await h.idle()
    assert len(h.model.requests) == 1
    assert h.slack.posted()[-1].text == "Over the socket."


async def test_socket_mode_slash_command(harness: Harness) -> None:
    payload = {"command": "/chatbridge-reset", "text": "", "team_id": "T0TEAM",
               "channel_id": "D5", "user_id": "U1", "response_url": "http://127.0.0.1:9/x",
               "trigger_id": "1"}
    req = SocketModeRequest(type="slash_commands", envelope_id="e3", payload=payload)
    resp = await run_async_bolt_app(harness.bot.app, req)
    assert resp.status == 200 and "new conversation" in resp.body


async def test_socket_mode_event_the_database_cannot_take_is_not_acknowledged(
    harness: Harness,
) -> None:
    h = harness
    async with h.runtime.store.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE inbox_leases RENAME TO inbox_leases_away"))
    payload = envelope(mention("try me later"), event_id="EvS2")
    req = SocketModeRequest(type="events_api", envelope_id="e4", payload=payload)
    # Not 200: bolt's socket-mode adapter then sends no acknowledgement, so Slack retries.
    assert (await run_async_bolt_app(h.bot.app, req)).status != 200
    async with h.runtime.store.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE inbox_leases_away RENAME TO inbox_leases"))
    h.model.enqueue(Reply(text="Now I can."))
    retry = SocketModeRequest(type="events_api", envelope_id="e5", payload=payload,
                              retry_attempt=1, retry_reason="timeout")
    assert (await run_async_bolt_app(h.bot.app, retry)).status == 200
    await h.idle()
    assert h.slack.posted()[-1].text == "Now I can."
