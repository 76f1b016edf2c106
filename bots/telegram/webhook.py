"""The webhook endpoint: ``POST /telegram/webhook`` (and ``GET /healthz``, ``/readyz``,
``/metrics`` from ``bots.ops``).

Our own small aiohttp server rather than PTB's, so that it listens *before* ``setWebhook``
tells Telegram to call it (PTB sets the webhook first). The secret token is compared in
constant time; a missing or wrong one is 403, a body that is not an update is 400. An
accepted update goes onto the Application's queue and is answered 200 at once: the turn
runs afterwards, and a redelivery is recognised by the database, not here.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from telegram import Update
from telegram.ext import Application

from bots.ops import add_routes

if TYPE_CHECKING:
    from bots.runtime import Runtime

__all__ = ["SECRET_HEADER", "WEBHOOK_PATH", "serve_webhook", "webhook_app"]

log = logging.getLogger(__name__)
WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
_AnyApp = Application[Any, Any, Any, Any, Any, Any]


def webhook_app(application: _AnyApp, *, secret: str, runtime: Runtime) -> web.Application:
    """The aiohttp application that feeds ``application.update_queue``."""
    expected = secret.encode()

    async def receive(request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, expected):
            log.warning("webhook call with a missing or wrong secret token from %s",
                        request.remote)
            return web.json_response({"ok": False, "error": "forbidden"}, status=403)
        try:
            data = json.loads(await request.read())
            if not isinstance(data, dict):
                raise ValueError("not an object")
            update = Update.de_json(data, application.bot)
        except Exception as err:  # any shape PTB cannot read is the sender's fault
            log.warning("webhook body is not an update: %s", type(err).__name__)
            return web.json_response({"ok": False, "error": "bad update"}, status=400)
        await application.update_queue.put(update)
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post(WEBHOOK_PATH, receive)
    add_routes(app, runtime)
    return app


async def serve_webhook(application: _AnyApp, *, secret: str, host: str, port: int,
                        runtime: Runtime) -> web.AppRunner:
    """Start listening; the caller cleans up the returned runner."""
    runner = web.AppRunner(webhook_app(application, secret=secret, runtime=runtime),
                           access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
