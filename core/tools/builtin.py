"""Built-in tools: ``current_time`` here, ``fetch_url`` in ``core.tools.fetch``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from core.tools.fetch import FetchSettings, fetch_url_tool
from core.tools.registry import Tool, ToolContext

__all__ = ["BUILTIN_NAMES", "builtin_tools", "current_time_tool"]

BUILTIN_NAMES = ("current_time", "fetch_url")


def current_time_tool() -> Tool:
    """Date and time now in the profile's time zone (UTC when it names none)."""

    async def run(args: Mapping[str, Any], ctx: ToolContext) -> str:
        zone = ZoneInfo(ctx.timezone) if ctx.timezone else UTC
        now = datetime.now(zone)
        name = ctx.timezone or "UTC"
        return f"{now:%A, %d %B %Y, %H:%M:%S} ({name}, UTC{now:%z}); ISO 8601: {now.isoformat()}"

    return Tool("current_time", "The current date, time and weekday where the bot is used.",
                run, label=lambda _: "Checking the time…")


def builtin_tools(http: httpx.AsyncClient, fetch: FetchSettings) -> list[Tool]:
    """Every built-in tool."""
    return [current_time_tool(), fetch_url_tool(http, fetch)]
