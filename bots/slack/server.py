"""Transports: HTTP (aiohttp: ``POST /slack/events``; ``GET /healthz``, ``/readyz``,
``/metrics`` from ``bots.ops``) and Socket Mode.

The events endpoint is bolt's aiohttp adapter: bolt checks the signature and the
5-minute window and answers 401. A body that cannot be parsed gets 400 (401 when it is
not signed either), never 500. A signed delivery no listener takes (an event type the bot
does not handle) gets 200, so that Slack does not deliver it again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

from bots.ops import HEALTH_PATH, add_routes

if TYPE_CHECKING:
    from bots.runtime import Runtime

__all__ = ["EVENTS_PATH", "HEALTH_PATH", "RECEIPT", "Receipt", "http_app", "socket_handler"]

log = logging.getLogger(__name__)
EVENTS_PATH = "/slack/events"
RECEIPT = "chatbridge_receipt"  # key in bolt's context: did the inbox take the event?


class Receipt:
    """Set by a listener whose event could not be recorded: the answer becomes 503, so
    Slack delivers the event again instead of it being lost."""

    failed = False


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _signed(verifier: SignatureVerifier, raw: bytes, headers: Mapping[str, str]) -> bool:
    """Slack's signature check, made total: a timestamp that is no number, or a body
    that is no UTF-8, is simply not signed (slack_sdk raises ValueError on both)."""
    try:
        return verifier.is_valid_request(raw, headers)
    except ValueError:
        return False


def _unwanted_event(body: Mapping[str, Any]) -> bool:
    """A well-formed Events API delivery that no listener takes (an event type the bot
    does not handle, ``app_rate_limited``)."""
    event = body.get("event")
    return body.get("type") == "app_rate_limited" or (
        body.get("type") == "event_callback" and isinstance(event, Mapping)
        and isinstance(event.get("type"), str))


def http_app(app: AsyncApp, *, signing_secret: str, runtime: Runtime) -> web.Application:
    """The aiohttp application serving Slack's requests and the operations endpoints."""
    verifier = SignatureVerifier(signing_secret)

    async def events(request: web.Request) -> web.Response:
        try:
            bolt_request: AsyncBoltRequest = await to_bolt_request(request)
            if not isinstance(bolt_request.body, dict) or not bolt_request.body:
                raise ValueError("the body is not an object")
        except (ValueError, TypeError, AttributeError, RecursionError):
            # RecursionError: JSON nested deeper than the parser goes.
            if not _signed(verifier, await request.read(), request.headers):
                return _json_error(401, "invalid request")
            return _json_error(400, "malformed body")
        receipt = Receipt()
        bolt_request.context[RECEIPT] = receipt
        try:
            bolt_response = await app.async_dispatch(bolt_request)
        except Exception as err:  # bolt handles its own errors; this is belt and braces
            log.error("dispatch failed: %s", type(err).__name__)
            if not _signed(verifier, await request.read(), request.headers):
                return _json_error(401, "invalid request")
            return _json_error(400, "could not process the request")
        if receipt.failed:
            return _json_error(503, "temporarily unavailable; please retry")
        if bolt_response.status >= 500:
            # Only a payload bolt could not make sense of ends here (listeners run in the
            # background): tell Slack not to retry it.
            log.warning("bolt answered %s; reporting 400", bolt_response.status)
            if not _signed(verifier, await request.read(), request.headers):
                return _json_error(401, "invalid request")
            return _json_error(400, "could not process the request")
        if bolt_response.status == 404 and _unwanted_event(bolt_request.body):
            # bolt verified it and found no listener: acknowledge it, as any answer but
            # 2xx makes Slack deliver it three more times.
            return web.Response(status=200)
        return await to_aiohttp_response(bolt_response)

    web_app = web.Application(client_max_size=1024 * 1024)
    web_app.router.add_post(EVENTS_PATH, events)
    add_routes(web_app, runtime)
    return web_app


def socket_handler(app: AsyncApp, *, app_token: str) -> AsyncSocketModeHandler:
    """A Socket Mode connection for ``app`` (it uses the app's Web API client)."""
    return AsyncSocketModeHandler(app, app_token=app_token)
