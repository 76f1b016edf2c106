"""Built-in tools: ``current_time`` here, ``fetch_url`` in ``core.tools.fetch``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from core.tools.fetch import FetchSettings, fetch_url_tool
from core.tools.registry import Tool, ToolContext

__all__ = ["BUILTIN_NAMES", "builtin_tools", "current_time_tool", "handoff_tool"]

BUILTIN_NAMES = ("current_time", "fetch_url", "handoff_to_human")
HANDOFF_SCHEMA = {
    "type": "object",
    "properties": {"reason": {"type": "string", "description":
                              "Why a person should take over, in one sentence for the staff."}},
    "required": ["reason"],
    "additionalProperties": False,
}


def handoff_tool() -> Tool:
    """Hand the conversation to a person of the team (the profile's ``[handoff]``)."""

    async def run(args: Mapping[str, Any], ctx: ToolContext) -> str:
        if ctx.handoff is None:
            return ("No staff can be reached from here; tell the person you cannot hand "
                    "them over and help as well as you can.")
        return await ctx.handoff(str(args.get("reason") or "").strip() or "(no reason given)")

    return Tool("handoff_to_human",
                "Hand this conversation to a person of the team, when the customer needs "
                "someone who can act (refunds, complaints, account changes) or asks for "
                "a human.", run, parameters=HANDOFF_SCHEMA,
                label=lambda _: "Asking a person from the team…")


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
    return [current_time_tool(), fetch_url_tool(http, fetch), handoff_tool()]
