"""Building, starting and stopping the bot around the python-telegram-bot ``Application``.

Long polling by default (``bots.telegram.polling``: an update is confirmed to Telegram
only once the inbox holds it); with ``webhook=True`` our endpoint listens first and only
then ``setWebhook`` points Telegram at it, with the secret token Telegram will send back.
The Application provides the bot and tracks side tasks; updates reach the adapter
directly, and are answered by the inbox's worker.

Stopping: no new updates first (the poll or the webhook server ends), then the turns in
flight get ``Settings.shutdown_grace`` seconds to finish; those that do not go back to the
inbox, for another replica or the next start.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from telegram.error import InvalidToken, NetworkError, TelegramError
from telegram.ext import Application

from bots.runtime import Runtime
from bots.telegram.adapter import ALLOWED_UPDATES, COMMANDS, TelegramAdapter
from bots.telegram.config import TelegramConfig
from bots.telegram.polling import Poller
from bots.telegram.webhook import serve_webhook
from core.errors import ChatbridgeError, ConfigError
from core.model.faults import redact
from core.model.transport import describe

__all__ = ["build_application", "running_bot"]

log = logging.getLogger(__name__)
_App = Application[Any, Any, Any, Any, Any, Any]


def build_application(config: TelegramConfig) -> _App:
    """A PTB Application talking to the configured Bot API (and file) base URLs, without
    PTB's Updater (``Poller`` polls)."""
    return (Application.builder().token(config.token)
            .base_url(config.api_url).base_file_url(config.file_url)
            .updater(None).build())


async def _start(app: _App, config: TelegramConfig) -> None:
    try:
        await app.initialize()  # getMe
    except InvalidToken as err:
        raise ConfigError("Telegram refused TELEGRAM_BOT_TOKEN; check it with @BotFather "
                          "(/mybots → API Token)") from err
    except NetworkError as err:  # not a setting's fault: exit 1, as for Slack
        raise ChatbridgeError(f"cannot reach the Telegram Bot API at {config.api_url}: "
                              f"{redact(describe(err), config.token)}") from err


@contextlib.asynccontextmanager
async def running_bot(runtime: Runtime, config: TelegramConfig, *, webhook: bool = False,
                      port: int = 8443, grace: float | None = None) -> AsyncIterator[_App]:
    """Run the bot (polling or webhook) until the block ends, then stop it cleanly
    (``grace``: seconds running turns get to finish; by default the settings')."""
    app = build_application(config)
    adapter = TelegramAdapter(runtime=runtime, config=config, application=app)
    adapter.install()
    await _start(app, config)
    runner: web.AppRunner | None = None
    poller: Poller | None = None
    try:
        try:
            await app.bot.set_my_commands(list(COMMANDS))
        except TelegramError as err:  # not fatal: the commands still work when typed
            log.warning("could not register the command menu: %s", err)
        await app.start()
        runtime.inbox.start()  # the bot knows who it is: claims can be answered
        if webhook:
            assert config.webhook_url and config.webhook_secret
            runner = await serve_webhook(adapter.receive, app.bot,
                                         secret=config.webhook_secret, host=config.listen,
                                         port=port, runtime=runtime)
            try:
                await app.bot.set_webhook(config.webhook_url,
                                          secret_token=config.webhook_secret,
                                          allowed_updates=ALLOWED_UPDATES)
            except TelegramError as err:
                raise ConfigError(f"Telegram refused the webhook {config.webhook_url}: "
                                  f"{err}") from err
        else:
            poller = Poller(app.bot, adapter.receive, allowed_updates=ALLOWED_UPDATES)
            await poller.start()
        yield app
    finally:
        if poller is not None:
            await poller.stop()
        if runner is not None:
            await runner.cleanup()
        await runtime.inbox.stop(runtime.settings.shutdown_grace if grace is None else grace)
        await adapter.close()
        if app.running:
            await app.stop()  # waits for the refusals still being sent
        await app.shutdown()
