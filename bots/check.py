"""``chatbridge check``: are the settings, database, model and platforms all usable?

Prints one line per part in plain words and exits non-zero when any part is not.
Never prints a secret: the Telegram API URL holds the bot token, so it is not shown.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from bots import db
from bots.runtime import build_model
from bots.settings import Settings
from core.errors import ChatbridgeError, ModelError
from core.model.faults import redact
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
    if settings.local_model:
        from bots.local_model import gguf_path, server_command

        server_command(0)
        return f"the bundled local model ({gguf_path().name}) is installed"
    model = build_model(settings, http)
    call = ModelCall(settings.model, (ContextMessage("user", "Reply with: ok"),),
                     Sampling(max_tokens=5))
    text = "".join([c.text async for c in model.stream(call, stream=False)
                    if isinstance(c, TextChunk)])
    return f"{settings.model} at {settings.model_base_url} answered ({len(text)} characters)"


async def _slack(settings: Settings, http: httpx.AsyncClient) -> str:
    token = settings.env.get("SLACK_BOT_TOKEN", "")
    base = settings.env.get("CHATBRIDGE_SLACK_API_URL") or SLACK_API
    response = await http.post(base.rstrip("/") + "/auth.test",
                               headers={"Authorization": f"Bearer {token}"})
    data = response.json()
    if not data.get("ok"):
        raise ChatbridgeError(f"Slack refused the bot token (SLACK_BOT_TOKEN): "
                              f"{data.get('error', response.status_code)}")
    return f"Slack workspace {data.get('team')!r} as {data.get('user')!r}"


async def _telegram(settings: Settings, http: httpx.AsyncClient) -> str:
    token = settings.env.get("TELEGRAM_BOT_TOKEN", "")
    base = settings.env.get("CHATBRIDGE_TELEGRAM_API_URL") or TELEGRAM_API
    response = await http.post(f"{base}{token}/getMe")
    data = response.json()
    if not data.get("ok"):
        raise ChatbridgeError("Telegram refused the bot token (TELEGRAM_BOT_TOKEN): "
                              f"{data.get('description', response.status_code)}")
    return f"Telegram bot @{data['result'].get('username')}"


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
    async with httpx.AsyncClient(timeout=20) as http:
        for name, probe in parts:
            try:
                print(f"ok    {name}: {await probe(settings, http)}")
            except ModelError as err:
                failed += 1
                print(f"FAIL  {name}: {err.user_message}")
            except ChatbridgeError as err:
                failed += 1
                print(f"FAIL  {name}: {redact(err.user_message, *settings.secrets())}")
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as err:
                failed += 1
                print(f"FAIL  {name}: cannot reach it ({type(err).__name__})")
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
