"""The Slack adapter: ``chatbridge slack``.

Socket Mode when ``SLACK_APP_TOKEN`` is set, else HTTP on ``--port``
(``POST /slack/events``; ``GET /healthz``, ``/readyz``, ``/metrics``). Modules:

    config     credentials and the ``[slack]`` table, validated at start-up
    translate  Slack events → where a message belongs and who wrote it (pure)
    text       Slack markup → plain text; long Markdown → messages (pure)
    files      attached images downloaded with the bot token; other files named
    people     cached display names (users.info)
    render     reply events → streamed / edited Slack messages with feedback buttons
    app        the bolt app: listeners that hand turns to background tasks
    server     the aiohttp endpoint and the Socket Mode handler
"""

from __future__ import annotations

import asyncio
import signal
import sys

import aiohttp
from aiohttp import ClientError, web
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.runtime import open_runtime
from bots.settings import Settings
from bots.slack.app import SlackBot
from bots.slack.config import SlackConfig, load_slack_config
from bots.slack.errors import error_kind
from bots.slack.server import EVENTS_PATH, http_app, socket_handler
from bots.slack.support import make_client
from core.errors import ChatbridgeError, ConfigError
from core.model.transport import describe

__all__ = ["SlackBot", "SlackConfig", "http_app", "load_slack_config", "main", "make_client"]


async def check_auth(client: AsyncWebClient) -> str:
    """Ask Slack who we are (auth.test); a bad token stops start-up with a clear line."""
    try:
        resp = await client.auth_test()
    except SlackApiError as err:
        raise ConfigError(f"Slack rejected SLACK_BOT_TOKEN ({error_kind(err)})") from err
    except (ClientError, TimeoutError, OSError) as err:
        raise ChatbridgeError(f"cannot reach the Slack Web API at {client.base_url}: "
                              f"{describe(err)}") from err
    return f"@{resp.get('user', '?')} in {resp.get('team', '?')}"


async def _serve(settings: Settings, config: SlackConfig, port: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_runtime(settings, bot=True) as runtime, aiohttp.ClientSession() as session:
        client = make_client(config, session)
        who = await check_auth(client)
        bot = SlackBot(runtime=runtime, config=config, client=client)
        if config.socket_mode:
            handler = socket_handler(bot.app, app_token=config.app_token)
            await handler.connect_async()  # type: ignore[no-untyped-call]
            print(f"chatbridge slack: {who}, connected over Socket Mode (Ctrl-C stops)",
                  file=sys.stderr)
            try:
                await stop.wait()
            finally:
                await handler.close_async()  # type: ignore[no-untyped-call]
        else:
            runner = web.AppRunner(http_app(bot.app, signing_secret=config.signing_secret,
                                            runtime=runtime), access_log=None)
            await runner.setup()
            try:
                await web.TCPSite(runner, "0.0.0.0", port).start()
                print(f"chatbridge slack: {who}, events at http://0.0.0.0:{port}{EVENTS_PATH} "
                      "(Ctrl-C stops)", file=sys.stderr)
                await stop.wait()
            finally:
                await runner.cleanup()
        await bot.close(settings.shutdown_grace)
    return 0


def main(settings: Settings, *, port: int) -> int:
    """Run the Slack bot until interrupted; returns the exit code."""
    config = load_slack_config(settings)
    return asyncio.run(_serve(settings, config, port))
