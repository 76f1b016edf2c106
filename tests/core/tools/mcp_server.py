"""A real MCP server for the tests, written with the ``mcp`` package.

``python -m tests.core.tools.mcp_server`` serves stdio; ``… http PORT`` serves streamable
HTTP at ``/mcp``. Tools: ``add``, ``sleepy`` (sleeps), ``fail`` (raises), ``die`` (the
process exits mid-call), ``whoami`` (reports the env/header it was given), ``count``
(how often tools ran, across calls: a file named by MCP_COUNT_FILE).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("testtools")


def _count() -> None:
    name = os.environ.get("MCP_COUNT_FILE")
    if name:
        with Path(name).open("a") as f:
            f.write("x")


@server.tool(description="Add two integers.")
def add(a: int, b: int) -> int:
    _count()
    return a + b


@server.tool(description="Sleep for some seconds, then say so.")
async def sleepy(seconds: float) -> str:
    _count()
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@server.tool(description="Always fails.")
def fail() -> str:
    _count()
    raise ValueError("this tool always fails")


@server.tool(description="Ends the server process in the middle of the call.")
def die() -> str:
    _count()
    os._exit(3)


@server.tool(name="whoami", description="The token the server was started with (or sent).")
def whoami(ctx: Context) -> str:
    headers = ctx.headers or {}
    token = headers.get("authorization") or os.environ.get("TEST_TOKEN", "none")
    return "token ends in " + token[-2:]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
