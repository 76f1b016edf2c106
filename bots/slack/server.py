"""Transports: HTTP (aiohttp: ``POST /slack/events``; ``GET /healthz``, ``/readyz``,
``/metrics`` from ``bots.ops``) and Socket Mode.

The events endpoint is bolt's aiohttp adapter: bolt checks the signature and the
5-minute window and answers 401. A body that cannot be parsed gets 400 (401 when it is
not signed either), never 500.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

from bots.ops import HEALTH_PATH, add_routes

if TYPE_CHECKING:
    from bots.runtime import Runtime

__all__ = ["EVENTS_PATH", "HEALTH_PATH", "http_app", "socket_handler"]

log = logging.getLogger(__name__)
EVENTS_PATH = "/slack/events"


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def http_app(app: AsyncApp, *, signing_secret: str, runtime: Runtime) -> web.Application:
    """The aiohttp application serving Slack's requests and the operations endpoints."""
    verifier = SignatureVerifier(signing_secret)

    async def events(request: web.Request) -> web.Response:
        try:
            bolt_request: AsyncBoltRequest = await to_bolt_request(request)
            if not isinstance(bolt_request.body, dict):
                raise ValueError("the body is not an object")
        except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
            raw = await request.read()
            signed = verifier.is_valid_request(raw, dict(request.headers))
            if not signed:
                return _json_error(401, "invalid request")
            return _json_error(400, "malformed body")
        try:
            bolt_response = await app.async_dispatch(bolt_request)
        except Exception as err:  # bolt handles its own errors; this is belt and braces
            log.error("dispatch failed: %s", type(err).__name__)
            return _json_error(400, "could not process the request")
        if bolt_response.status >= 500:
            # Only a payload bolt could not make sense of ends here (listeners run in the
            # background): tell Slack not to retry it.
            log.warning("bolt answered %s; reporting 400", bolt_response.status)
            return _json_error(400, "could not process the request")
        return await to_aiohttp_response(bolt_response)

    web_app = web.Application(client_max_size=1024 * 1024)
    web_app.router.add_post(EVENTS_PATH, events)
    add_routes(web_app, runtime)
    return web_app


def socket_handler(app: AsyncApp, *, app_token: str) -> AsyncSocketModeHandler:
    """A Socket Mode connection for ``app`` (it uses the app's Web API client)."""
    return AsyncSocketModeHandler(app, app_token=app_token)
