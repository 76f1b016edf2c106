"""The tool registry the settings describe (built-in tools, MCP servers' tools), and
``chatbridge tools list``."""

from __future__ import annotations

import contextlib
import fnmatch
import textwrap
from collections.abc import AsyncIterator

import httpx

from bots.settings import Settings
from core.errors import ConfigError
from core.tools.builtin import builtin_tools
from core.tools.mcp import McpServers
from core.tools.registry import Registry

__all__ = ["open_registry", "run_tools_list"]


@contextlib.asynccontextmanager
async def open_registry(settings: Settings, *,
                        everything: bool = False) -> AsyncIterator[Registry]:
    """Every tool the settings describe; MCP servers run while the block does.

    Servers start only when some profile may call their tools (or ``everything``: for
    ``chatbridge tools list`` and ``check``); one that fails is logged and left out.
    """
    wanted = settings.mcp if everything else tuple(
        s for s in settings.mcp
        if any(p.startswith("mcp:") and fnmatch.fnmatchcase(s.name, p[4:].split("/", 1)[0])
               for profile in settings.profiles.values() for p in profile.tools))
    # fetch_url gets a client of its own: no proxy from the environment (it would be asked
    # for the checked address) and no kept-alive connections (see core.tools.fetch).
    fetch_http = httpx.AsyncClient(trust_env=False,
                                   limits=httpx.Limits(max_keepalive_connections=0))
    async with fetch_http, McpServers(wanted).running() as servers:
        registry = Registry([*builtin_tools(fetch_http, settings.fetch), *servers.tools()])
        registry.failures = servers.failures
        yield registry


async def run_tools_list(settings: Settings, *, profile: str | None) -> int:
    """Print the tools a profile may call (every tool when no profile is named)."""
    if profile is not None and profile not in settings.profiles:
        names = ", ".join(settings.profiles)
        raise ConfigError(f"no profile {profile!r} (profiles: {names})")
    async with open_registry(settings, everything=True) as registry:
        tools = (registry.select(settings.profiles[profile].tools) if profile is not None
                 else registry.tools)
        if profile is not None:
            print(f"profile {profile!r}: tools = {list(settings.profiles[profile].tools)}")
        listed = list(tools)
        for name, why in registry.failures.items():
            print(f"(MCP server {name!r} did not start: {why}; its tools are not listed)")
        if not listed:
            print("no tools" + (" (set tools = [...] in the profile)" if profile else ""))
            return 0
        width = max(len(t.name) for t in listed)
        for tool in listed:
            lines = textwrap.wrap(tool.description, 100 - width - 16) or [""]
            print(f"{tool.name.ljust(width)}  {tool.source:<12}  {lines[0]}")
            for more in lines[1:]:
                print(f"{'':{width}}  {'':<12}  {more}")
    return 0
