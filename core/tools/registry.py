"""Tool definitions, the registry of every tool, and a profile's selection of them by glob."""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from core.errors import ConfigError
from core.tokens import TokenCounter
from core.types import ToolSpec

__all__ = [
    "Registry", "Tool", "ToolContext", "ToolError", "ToolOutput", "Toolbox", "check_patterns",
]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
EMPTY_SCHEMA: Mapping[str, Any] = {"type": "object", "properties": {}}


class ToolError(Exception):
    """A tool could not do what was asked; the message goes to the model as the result."""


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool may know about the turn it runs in."""

    timezone: str | None = None
    counter: TokenCounter | None = None
    # Hands the conversation to staff (``handoff_to_human``); None where no handoff is set.
    handoff: Callable[[str], Awaitable[str]] | None = None


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """A tool's result: text for the model and, when it read one, the source URL."""

    text: str
    url: str = ""


ToolFunc = Callable[[dict[str, Any], ToolContext], Awaitable[ToolOutput | str]]


@dataclass(frozen=True)
class Tool:
    """One tool: offered ``name``, description, argument schema and the coroutine that runs it.

    ``key`` is what profile globs match (``fetch_url``, ``mcp:github/create_issue``);
    ``source`` says where it comes from (``built-in``, ``mcp:github``). ``label`` turns
    the arguments into what a person is shown while it runs ("Reading example.com…").
    """

    name: str
    description: str
    run: ToolFunc
    parameters: Mapping[str, Any] = field(default_factory=lambda: dict(EMPTY_SCHEMA))
    source: str = "built-in"
    key: str = ""
    label: Callable[[dict[str, Any]], str] | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"tool name {self.name!r} must be 1-64 of A-Z a-z 0-9 _ -")
        try:
            jsonschema.validators.validator_for(self.parameters).check_schema(self.parameters)
        except jsonschema.SchemaError as err:
            raise ConfigError(f"tool {self.name!r}: invalid JSON Schema: {err.message}") from err
        if not self.key:
            object.__setattr__(self, "key", self.name)
        cls = jsonschema.validators.validator_for(self.parameters)
        object.__setattr__(self, "_validator", cls(self.parameters))

    @property
    def spec(self) -> ToolSpec:
        """The tool as the model is told of it."""
        return ToolSpec(self.name, self.description, self.parameters)

    def check(self, arguments: str) -> dict[str, Any]:
        """The arguments parsed and checked against the schema; ``ToolError`` says why not."""
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except ValueError as err:
            raise ToolError(f"the arguments are not valid JSON ({err}); "
                            "send a JSON object that matches the tool's schema") from err
        if not isinstance(parsed, dict):
            raise ToolError("the arguments must be a JSON object")
        validator: jsonschema.protocols.Validator = getattr(self, "_validator")  # noqa: B009
        error = jsonschema.exceptions.best_match(validator.iter_errors(parsed))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise ToolError(f"the arguments do not match the schema at {where}: {error.message}")
        return parsed

    def status(self, arguments: dict[str, Any]) -> str:
        """What a person is shown while the tool runs."""
        if self.label is not None:
            try:
                return self.label(arguments)
            except Exception:  # a label is decoration; never let it break a turn
                pass
        return f"Using {self.name}…"


class Toolbox:
    """The tools one profile may call, by offered name."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools = {t.name: t for t in tools}

    def __bool__(self) -> bool:
        return bool(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def get(self, name: str) -> Tool | None:
        """The tool offered as ``name``."""
        return self._tools.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        """Offered names, in order."""
        return tuple(self._tools)

    @property
    def specs(self) -> tuple[ToolSpec, ...]:
        """What the model is told."""
        return tuple(t.spec for t in self._tools.values())


def check_patterns(patterns: Sequence[str], builtin: Sequence[str], servers: Sequence[str],
                   where: str) -> None:
    """A ``ConfigError`` for a pattern that can never match (a typo, an unknown server)."""
    for pattern in patterns:
        if pattern.startswith("mcp:"):
            server = pattern[4:].split("/", 1)[0]
            if not any(fnmatch.fnmatchcase(s, server) for s in servers):
                known = ", ".join(sorted(servers)) or "none configured"
                raise ConfigError(f"{where}: tools pattern {pattern!r} names no MCP server "
                                  f"([mcp.servers.NAME]: {known})")
        elif not any(fnmatch.fnmatchcase(name, pattern) for name in builtin):
            raise ConfigError(f"{where}: no tool matches {pattern!r} "
                              f"(built-in: {', '.join(builtin)}; MCP tools: mcp:SERVER/TOOL)")


class Registry:
    """Every tool chatbridge knows (built-in and from MCP servers)."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self.failures: dict[str, str] = {}  # MCP servers that did not start, and why
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        """Register ``tool``; a second tool under the same offered name is a config error."""
        if tool.name in self._tools:
            raise ConfigError(f"two tools are offered as {tool.name!r}")
        self._tools[tool.name] = tool

    @property
    def tools(self) -> tuple[Tool, ...]:
        """Every tool, in registration order."""
        return tuple(self._tools.values())

    def select(self, patterns: Sequence[str]) -> Toolbox:
        """The tools whose key matches one of ``patterns`` (``mcp:NAME`` means ``mcp:NAME/*``)."""
        expanded = [p + "/*" if p.startswith("mcp:") and "/" not in p else p for p in patterns]
        return Toolbox(t for t in self._tools.values()
                       if any(fnmatch.fnmatchcase(t.key, p) for p in expanded))
