"""``chatbridge check``: are the settings, database, model and platforms all usable?

Prints one line per part in plain words and exits non-zero when any part is not.
Never prints a secret: the Telegram API URL holds the bot token, so it is not shown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import replace

import httpx

from bots import db
from bots.runtime import build_model, model_session
from bots.settings import Settings
from core.errors import ChatbridgeError, ModelError
from core.model.faults import redact
from core.model.transport import describe, shown_url
from core.tools.mcp import McpServers
from core.types import ContextMessage, ModelCall, Sampling, TextChunk

__all__ = ["run_check"]

SLACK_API = "https://slack.com/api/"
TELEGRAM_API = "https://api.telegram.org/bot"


async def _database(settings: Settings, http: httpx.AsyncClient) -> str:
    engine = db.create_engine(settings.database_url)
    where = engine.url.render_as_string(hide_password=True)
    try:
        await db.ensure_schema(engine)  # migrates a new SQLite file, as the bot would
        return f"{where} at revision {await db.current(engine)}"
    finally:
        await engine.dispose()


async def _model(settings: Settings, http: httpx.AsyncClient) -> str:
    call = ModelCall(settings.model, (ContextMessage("user", "Reply with: ok"),),
                     Sampling(max_tokens=5))
    async with model_session(settings) as session:
        model = build_model(settings, session)
        text = "".join([c.text async for c in model.stream(call, stream=False)
                        if isinstance(c, TextChunk)])
    return f"{settings.model} at {settings.model_base_url} answered ({len(text)} characters)"


async def _slack(settings: Settings, http: httpx.AsyncClient) -> str:
    token = settings.env.get("SLACK_BOT_TOKEN", "")
    base = settings.env.get("CHATBRIDGE_SLACK_API_URL") or SLACK_API
    url = base.rstrip("/") + "/auth.test"
    try:
        response = await http.post(url, headers={"Authorization": f"Bearer {token}"})
        data = response.json()
    except (httpx.HTTPError, ValueError) as err:
        raise ChatbridgeError(f"cannot reach the Slack Web API at {shown_url(url)}: "
                              f"{describe(err)}") from err
    if not data.get("ok"):
        raise ChatbridgeError(f"Slack refused the bot token (SLACK_BOT_TOKEN): "
                              f"{data.get('error', response.status_code)}")
    return f"Slack workspace {data.get('team')!r} as {data.get('user')!r}"


async def _telegram(settings: Settings, http: httpx.AsyncClient) -> str:
    token = settings.env.get("TELEGRAM_BOT_TOKEN", "")
    base = settings.env.get("CHATBRIDGE_TELEGRAM_API_URL") or TELEGRAM_API
    url = f"{base}{token}/getMe"
    try:
        response = await http.post(url)
        data = response.json()
    except (httpx.HTTPError, ValueError) as err:
        # The Bot API URL holds the token: it is masked.
        raise ChatbridgeError(f"cannot reach the Telegram Bot API at {shown_url(url, token)}: "
                              f"{describe(err)}") from err
    if not data.get("ok"):
        raise ChatbridgeError("Telegram refused the bot token (TELEGRAM_BOT_TOKEN): "
                              f"{data.get('description', response.status_code)}")
    return f"Telegram bot @{data['result'].get('username')}"


def _start_local_model(settings: Settings, stack: contextlib.ExitStack) -> Settings:
    """Start the bundled model as ``ask`` would, so that it is asked like a remote one."""
    from bots.local_model import gguf_path, local_server

    url = stack.enter_context(local_server())
    print(f"ok    local model: {gguf_path().name} started on {url}", flush=True)
    return replace(settings, model_base_url=url)


async def run_check(settings: Settings) -> int:
    """Check each part; print what works and what is wrong."""
    parts: list[tuple[str, Callable[[Settings, httpx.AsyncClient], Awaitable[str]]]] = [
        ("database", _database), ("model", _model),
    ]
    if settings.env.get("SLACK_BOT_TOKEN"):
        parts.append(("slack", _slack))
    if settings.env.get("TELEGRAM_BOT_TOKEN"):
        parts.append(("telegram", _telegram))
    print("ok    settings" + (f" (profiles from {settings.config_path})"
                              if settings.config_path else ""))
    failed = 0
    with contextlib.ExitStack() as stack:
        async with httpx.AsyncClient(timeout=20) as http:
            for name, probe in parts:
                try:
                    if name == "model" and settings.local_model:
                        settings = _start_local_model(settings, stack)
                    print(f"ok    {name}: {await probe(settings, http)}")
                except ModelError as err:
                    failed += 1
                    print(f"FAIL  {name}: {err.user_message} ({err.detail})")
                except ChatbridgeError as err:
                    failed += 1
                    print(f"FAIL  {name}: {redact(err.user_message, *settings.secrets())}")
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as err:
                    failed += 1
                    print(f"FAIL  {name}: {describe(err)}")
    failed += await _mcp(settings)
    return 1 if failed else 0


async def _mcp(settings: Settings) -> int:
    """One line per MCP server: its tools, or why it did not start."""
    if not settings.mcp:
        return 0
    async with McpServers(settings.mcp).running() as servers:
        tools = servers.tools()
        failures = servers.failures
    for server in settings.mcp:
        if server.name in failures:
            print(f"FAIL  mcp {server.name}: did not start: {failures[server.name]}")
        else:
            names = [t.key.split("/", 1)[1] for t in tools if t.source == f"mcp:{server.name}"]
            print(f"ok    mcp {server.name}: {len(names)} tools ({', '.join(names)})")
    return len(failures)
