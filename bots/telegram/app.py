"""Building, starting and stopping the python-telegram-bot ``Application``.

Long polling by default; with ``webhook=True`` our endpoint listens first and only then
``setWebhook`` points Telegram at it, with the secret token Telegram will send back.
"""

from __future__ import annotations

import asyncio
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
from bots.telegram.webhook import serve_webhook
from core.errors import ConfigError
from core.model.faults import redact

__all__ = ["build_application", "running_bot"]

log = logging.getLogger(__name__)
_App = Application[Any, Any, Any, Any, Any, Any]
_DRAIN_SECONDS = 30.0


def build_application(config: TelegramConfig, *, polling: bool = True) -> _App:
    """A PTB Application talking to the configured Bot API (and file) base URLs."""
    builder = (Application.builder().token(config.token)
               .base_url(config.api_url).base_file_url(config.file_url))
    if not polling:
        builder = builder.updater(None)
    return builder.build()


async def _start(app: _App, config: TelegramConfig) -> None:
    try:
        await app.initialize()  # getMe
    except InvalidToken as err:
        raise ConfigError("Telegram refused TELEGRAM_BOT_TOKEN; check it with @BotFather "
                          "(/mybots → API Token)") from err
    except NetworkError as err:
        raise ConfigError(f"cannot reach the Telegram Bot API at {config.api_url}: "
                          f"{redact(str(err), config.token)}") from err


@contextlib.asynccontextmanager
async def running_bot(runtime: Runtime, config: TelegramConfig, *, webhook: bool = False,
                      port: int = 8443) -> AsyncIterator[_App]:
    """Run the bot (polling or webhook) until the block ends, then stop it cleanly."""
    app = build_application(config, polling=not webhook)
    adapter = TelegramAdapter(service=runtime.service, config=config, application=app,
                              metrics=runtime.metrics)
    adapter.install()
    await _start(app, config)
    runner: web.AppRunner | None = None
    try:
        try:
            await app.bot.set_my_commands(list(COMMANDS))
        except TelegramError as err:  # not fatal: the commands still work when typed
            log.warning("could not register the command menu: %s", err)
        await app.start()
        if webhook:
            assert config.webhook_url and config.webhook_secret
            runner = await serve_webhook(app, secret=config.webhook_secret,
                                         host=config.listen, port=port, runtime=runtime)
            try:
                await app.bot.set_webhook(config.webhook_url,
                                          secret_token=config.webhook_secret,
                                          allowed_updates=ALLOWED_UPDATES)
            except TelegramError as err:
                raise ConfigError(f"Telegram refused the webhook {config.webhook_url}: "
                                  f"{err}") from err
        else:
            assert app.updater is not None
            await app.updater.start_polling(allowed_updates=ALLOWED_UPDATES)
        yield app
    finally:
        if app.updater is not None and app.updater.running:
            await app.updater.stop()
        if runner is not None:
            await runner.cleanup()
        if app.running:
            # Handle the updates already queued first: album items among them are only
            # gathered, and must be handed over before stop() waits for the turns.
            try:
                await asyncio.wait_for(app.update_queue.join(), _DRAIN_SECONDS)
            except TimeoutError:
                log.warning("pending updates not handled within %s s of stopping",
                            _DRAIN_SECONDS)
        adapter.flush()
        if app.running:
            await app.stop()  # waits for the turns still running
        await app.shutdown()
