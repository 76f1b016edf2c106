"""MCP servers' tools, over the official ``mcp`` SDK (stdio or streamable HTTP).

Each configured server runs in a task of its own for as long as the entry point's block
(the SDK's connections must be closed by the task that opened them). Its tools are listed
once at start-up and offered as ``SERVER__tool`` (names cleaned to what Qwen accepts);
profiles pick them with ``mcp:SERVER/tool`` globs. A server that does not start is
reported in one line and left out; one that hangs or dies mid-call costs the call its
timeout (the loop's), never the turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.config import config_table
from core.errors import ConfigError
from core.model.faults import redact
from core.tools.registry import EMPTY_SCHEMA, Tool, ToolContext, ToolError

__all__ = ["McpServerConfig", "McpServers", "mcp_servers"]

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_KEYS = {"command", "args", "env", "cwd", "url", "headers", "startup_seconds"}


@dataclass(frozen=True)
class McpServerConfig:
    """``[mcp.servers.NAME]``: a command to run (stdio) or a URL (streamable HTTP)."""

    name: str
    command: str = ""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    cwd: str | None = None
    url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    startup_seconds: float = 15.0

    def secrets(self) -> tuple[str, ...]:
        """Values that never reach logs, error text or the model."""
        return tuple(v for v in (*self.env.values(), *self.headers.values()) if v)


def _strings(raw: Any, where: str, what: str) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ConfigError(f"{where}: {what} must be a table of strings")
    return {str(k): v for k, v in raw.items()}


def mcp_servers(raw: Any) -> tuple[McpServerConfig, ...]:
    """Validate ``[mcp.servers.*]``; a ``ConfigError`` names what is wrong."""
    table = config_table(raw, "[mcp]", {"servers"})
    servers = table.get("servers") or {}
    if not isinstance(servers, dict):
        raise ConfigError("[mcp.servers] must be a table of tables")
    out = []
    for name, body in servers.items():
        where = f"[mcp.servers.{name}]"
        if not _NAME.match(name) or "__" in name:
            raise ConfigError(f"{where}: a server name is 1-32 of A-Z a-z 0-9 _ - "
                              "(and no '__')")
        spec = config_table(body, where, _KEYS)
        command, url = spec.get("command", ""), spec.get("url", "")
        if not isinstance(command, str) or not isinstance(url, str) or bool(command) == bool(url):
            raise ConfigError(f"{where}: give either command (stdio) or url (streamable HTTP)")
        args = spec.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ConfigError(f"{where}: args must be a list of strings")
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: url must be an http(s) URL")
        seconds = spec.get("startup_seconds", 15.0)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            raise ConfigError(f"{where}: startup_seconds must be a positive number")
        cwd = spec.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise ConfigError(f"{where}: cwd must be a string")
        out.append(McpServerConfig(
            name, command, tuple(args), _strings(spec.get("env", {}), where, "env"), cwd, url,
            _strings(spec.get("headers", {}), where, "headers"), float(seconds)))
    return tuple(out)


def offered_name(server: str, tool: str) -> str:
    """``SERVER__tool`` in the characters Qwen accepts, at most 64 of them."""
    return f"{server}__{re.sub(r'[^A-Za-z0-9_-]', '_', tool)}"[:64]


def _inline(schema: Any, defs: Mapping[str, Any], depth: int = 0) -> Any:
    """``schema`` with local ``$ref``s replaced by their definitions (Qwen takes no $ref)."""
    if depth > 8:
        return {}
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith(("#/$defs/", "#/definitions/")):
            return _inline(defs.get(ref.rsplit("/", 1)[1], {}), defs, depth + 1)
        return {k: _inline(v, defs, depth + 1) for k, v in schema.items()
                if k not in ("$defs", "definitions", "$schema")}
    if isinstance(schema, list):
        return [_inline(v, defs, depth + 1) for v in schema]
    return schema


def flat_schema(raw: Any) -> dict[str, Any]:
    """An MCP input schema as a function tool's ``parameters``: an object, no ``$ref``."""
    if not isinstance(raw, dict) or not raw:
        return dict(EMPTY_SCHEMA)
    defs = {**(raw.get("definitions") or {}), **(raw.get("$defs") or {})}
    schema = _inline(raw, defs)
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    return dict(schema)


def result_text(result: Any) -> str:
    """A ``CallToolResult`` as the string a tool message carries."""
    parts: list[str] = []
    for block in getattr(result, "content", None) or ():
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(str(block.text))
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} ({getattr(block, 'mime_type', '')}) not shown]")
        elif kind == "resource_link":
            parts.append(f"[resource {getattr(block, 'name', '')}: {getattr(block, 'uri', '')}]")
        elif kind == "resource":
            inner = getattr(block, "resource", None)
            parts.append(str(getattr(inner, "text", "")) or "[binary resource not shown]")
    structured = getattr(result, "structured_content", None)
    if not parts and structured is not None:
        parts.append(json.dumps(structured, ensure_ascii=False))
    return "\n".join(parts)


class _Server:
    """One running MCP server connection, owned by its own task."""

    def __init__(self, config: McpServerConfig) -> None:
        self.config = config
        self.client: Any = None
        self.tools: list[Any] = []
        self.error: str | None = None
        self.ready = asyncio.Event()
        self.stop = asyncio.Event()
        self.broken = asyncio.Event()  # the connection failed: reconnect

    def _target(self) -> Any:
        from mcp import StdioServerParameters, stdio_client

        c = self.config
        if c.url:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            http = httpx2.AsyncClient(headers=dict(c.headers),
                                      timeout=httpx2.Timeout(30.0, read=300.0))
            return http, streamable_http_client(c.url, http_client=http)
        params = StdioServerParameters(command=c.command, args=list(c.args),
                                       env=dict(c.env) or None, cwd=c.cwd)
        # The server's own stderr (its tracebacks) would garble a terminal conversation.
        return None, stdio_client(params, errlog=self._devnull())

    def _devnull(self) -> Any:
        self._null = open(os.devnull, "w")  # closed when the server stops
        return self._null

    async def run(self) -> None:
        """Connect, list the tools, serve until stopped; reconnect (a new process, for
        stdio) after the connection broke, waiting longer each time, at most a minute."""
        wait = 1.0
        while not self.stop.is_set():
            started = await self._serve_once()
            if not started or self.stop.is_set():
                return
            log.warning("MCP server %r stopped answering (%s); starting it again in %g s",
                        self.config.name, self.error or "connection lost", wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), wait)
            wait = min(wait * 2, 60.0)

    async def _serve_once(self) -> bool:
        """One connection's life; whether it came up (and listed its tools)."""
        from mcp import Client

        started = False
        self.broken.clear()
        try:
            http, target = self._target()
            async with contextlib.AsyncExitStack() as stack:
                if http is not None:
                    await stack.enter_async_context(http)
                async with asyncio.timeout(self.config.startup_seconds):
                    client = await stack.enter_async_context(Client(target, mode="legacy"))
                    listed = await client.list_tools()
                if not self.tools:  # the tools offered are those listed at start-up
                    self.tools = list(listed.tools)
                self.client, self.error, started = client, None, True
                self.ready.set()
                stop = asyncio.ensure_future(self.stop.wait())
                broken = asyncio.ensure_future(self.broken.wait())
                try:
                    await asyncio.wait({stop, broken}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                    broken.cancel()
        except asyncio.CancelledError:
            raise
        except BaseException as err:  # any failure is this server's, reported
            self.error = self._describe(err)
        finally:
            self.client = None
            self.ready.set()
            null = getattr(self, "_null", None)
            if null is not None:
                null.close()
        return started

    def _describe(self, err: BaseException) -> str:
        while isinstance(err, BaseExceptionGroup) and err.exceptions:
            err = err.exceptions[0]
        if isinstance(err, TimeoutError):
            return f"no answer within {self.config.startup_seconds:g} s"
        text = redact(f"{type(err).__name__}: {err}".strip().rstrip(":"),
                      *self.config.secrets())
        return text.splitlines()[0][:200] if text else type(err).__name__

    async def call(self, tool: str, arguments: dict[str, Any]) -> str:
        client = self.client
        if client is None:
            raise ToolError(f"the MCP server {self.config.name!r} is not running"
                            + (f" ({self.error})" if self.error else ""))
        try:
            result = await client.call_tool(tool, arguments)
        except Exception as err:
            from mcp import MCPError

            if not isinstance(err, MCPError) or "closed" in str(err).lower():
                self.broken.set()  # not the tool's answer: the connection itself failed
            detail = redact(f"{type(err).__name__}: {err}", *self.config.secrets())
            raise ToolError(f"the MCP server {self.config.name!r} failed: {detail[:300]}"
                            ) from err
        text = result_text(result)
        if getattr(result, "is_error", False):
            raise ToolError(text or "the tool reported an error")
        return text


class McpServers:
    """The configured MCP servers, running; ``tools()`` offers what they listed."""

    def __init__(self, configs: tuple[McpServerConfig, ...]) -> None:
        self._servers = [_Server(c) for c in configs]
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def failures(self) -> dict[str, str]:
        """Servers that did not start, with why, in one line each."""
        return {s.config.name: s.error for s in self._servers if s.error and not s.tools}

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[McpServers]:
        """Start every server (at once), wait until each is up or failed, stop on exit."""
        self._tasks = [asyncio.create_task(s.run(), name=f"mcp-{s.config.name}")
                       for s in self._servers]
        try:
            await asyncio.gather(*(s.ready.wait() for s in self._servers))
            for name, why in self.failures.items():
                log.error("MCP server %r did not start (%s); its tools are left out",
                            name, why)
            yield self
        finally:
            for server in self._servers:
                server.stop.set()
            for task in self._tasks:
                try:
                    await asyncio.wait_for(asyncio.shield(task), 5)
                except TimeoutError:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
                except BaseException:  # shutting down regardless
                    pass

    def tools(self) -> list[Tool]:
        """A ``Tool`` for every tool the running servers listed."""
        out: list[Tool] = []
        for server in self._servers:
            for listed in server.tools:
                tool = self._tool(server, listed)
                if tool is not None:
                    out.append(tool)
        return out

    @staticmethod
    def _tool(server: _Server, listed: Any) -> Tool | None:
        name = str(listed.name)

        async def run(args: dict[str, Any], ctx: ToolContext) -> str:
            return await server.call(name, args)

        label = f"Asking {server.config.name} ({name})…"
        try:
            return Tool(offered_name(server.config.name, name),
                        str(listed.description or listed.title or name)[:1024], run,
                        flat_schema(listed.input_schema), source=f"mcp:{server.config.name}",
                        key=f"mcp:{server.config.name}/{name}", label=lambda _: label)
        except ConfigError as err:
            log.warning("MCP server %r: tool %r left out: %s", server.config.name, name, err)
            return None
