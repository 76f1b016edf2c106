"""The webhook endpoint: ``POST /telegram/webhook`` (and ``GET /healthz``, ``/readyz``,
``/metrics`` from ``bots.ops``).

Our own small aiohttp server rather than PTB's, so that it listens *before* ``setWebhook``
tells Telegram to call it (PTB sets the webhook first). The secret token is compared in
constant time; a missing or wrong one is 403, a body that is not an update is 400. An
update is answered 200 only once the inbox has recorded it (or decided it is not the
bot's); when the database cannot take it the answer is 503, and Telegram delivers it
again. A redelivery is recognised by the database, not here.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from telegram import Bot, Update

from bots.ops import add_routes
from bots.telegram.adapter import malformed
from core.errors import StoreError

if TYPE_CHECKING:
    from bots.runtime import Runtime

__all__ = ["SECRET_HEADER", "WEBHOOK_PATH", "serve_webhook", "webhook_app"]

log = logging.getLogger(__name__)
WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
Receive = Callable[[Update], Awaitable[object]]


def webhook_app(receive: Receive, bot: Bot, *, secret: str,
                runtime: Runtime) -> web.Application:
    """The aiohttp application that hands each update to ``receive`` before the 200."""
    expected = secret.encode()

    async def endpoint(request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, expected):
            log.warning("webhook call with a missing or wrong secret token from %s",
                        request.remote)
            return web.json_response({"ok": False, "error": "forbidden"}, status=403)
        try:
            data = json.loads(await request.read())
            if not isinstance(data, dict):
                raise ValueError("not an object")
            update = Update.de_json(data, bot)
            if (missing := malformed(update)) is not None:
                raise ValueError(missing)  # PTB reads it, but nothing could answer it
        except Exception as err:  # any shape PTB cannot read is the sender's fault
            log.warning("webhook body is not an update: %s: %s", type(err).__name__, err)
            return web.json_response({"ok": False, "error": "bad update"}, status=400)
        try:
            await receive(update)
        except StoreError as err:
            log.error("could not record update %s (%s); Telegram will deliver it again",
                      update.update_id, err)
            return web.json_response({"ok": False, "error": "temporarily unavailable"},
                                     status=503)
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post(WEBHOOK_PATH, endpoint)
    add_routes(app, runtime)
    return app


async def serve_webhook(receive: Receive, bot: Bot, *, secret: str, host: str, port: int,
                        runtime: Runtime) -> web.AppRunner:
    """Start listening; the caller cleans up the returned runner."""
    runner = web.AppRunner(webhook_app(receive, bot, secret=secret, runtime=runtime),
                           access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
