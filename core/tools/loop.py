"""The agent loop: model → tools → model, bounded in rounds, per-call time and the turn deadline.

Whatever goes wrong with a tool (unknown name, arguments that are not JSON or not valid
against the schema, a timeout, an exception) becomes an error *result* the model reads and
can recover from; the loop itself only fails when the model does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from core.errors import ModelError
from core.model.base import ModelClient
from core.model.faults import redact
from core.tools.registry import Tool, Toolbox, ToolContext, ToolError, ToolOutput
from core.types import (
    ContextMessage,
    FinishChunk,
    ModelCall,
    ModelChunk,
    TextChunk,
    ToolActivity,
    ToolCall,
    ToolCallsChunk,
    Usage,
)

__all__ = ["AgentLoop", "Journal", "NullJournal", "ToolResult", "ToolSettings"]

log = logging.getLogger(__name__)

Status = Literal["ok", "error", "timeout"]


@dataclass(frozen=True, slots=True)
class ToolSettings:
    """How far the loop may go: rounds of tool calls per turn, seconds per call."""

    max_rounds: int = 6
    timeout_seconds: float = 20.0


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What one call returned (or why it did not), and how long it took."""

    call_id: str
    output: str
    status: Status
    duration_ms: int
    url: str = ""


class Journal(Protocol):
    """Where the loop writes down each round (the store, so a retaken turn resumes)."""

    async def calls(self, round_no: int, calls: Sequence[ToolCall], text: str = "") -> None:
        """The model asked for ``calls`` in round ``round_no`` (1-based), after ``text``."""
        ...

    async def result(self, round_no: int, position: int, result: ToolResult) -> None:
        """Call number ``position`` of round ``round_no`` finished."""
        ...


class NullJournal:
    """A journal that keeps nothing (tests, the benchmark's baseline)."""

    async def calls(self, round_no: int, calls: Sequence[ToolCall], text: str = "") -> None:
        """Keep nothing."""

    async def result(self, round_no: int, position: int, result: ToolResult) -> None:
        """Keep nothing."""


def _limit_message(rounds: int) -> str:
    return (f"I needed more than {rounds} rounds of tool calls for this and stopped; "
            "please ask for less at once.")


class AgentLoop:
    """Runs one turn's model calls and the tools they ask for."""

    def __init__(self, model: ModelClient, *, secrets: tuple[str, ...] = ()) -> None:
        self._model = model
        self._secrets = secrets

    async def stream(
        self,
        call: ModelCall,
        *,
        toolbox: Toolbox,
        settings: ToolSettings,
        context: ToolContext,
        journal: Journal,
        rounds_done: int = 0,
        stream: bool = True,
        deadline: float | None = None,
    ) -> AsyncIterator[ModelChunk | ToolActivity]:
        """Yield text and reasoning chunks, tool activity, then one ``FinishChunk``.

        ``rounds_done``: rounds an earlier attempt of this turn finished (they are in
        ``call.messages`` already). ``deadline``: ``time.monotonic()`` the turn must end by.
        """
        if not toolbox:
            async for chunk in self._model.stream(call, stream=stream):
                yield chunk
            return
        messages = list(call.messages)
        rounds = rounds_done
        usage: Usage | None = None
        while True:
            if deadline is not None and rounds > rounds_done and time.monotonic() >= deadline:
                raise ModelError("the turn's deadline passed during its tool calls",
                                 user_message="This took too long: the tools and the model "
                                 "together ran past the turn's time limit. Please try again "
                                 "or ask for less at once.")
            last = rounds >= settings.max_rounds
            this = replace(call, messages=tuple(messages), tools=toolbox.specs,
                           tool_choice="none" if last else None)
            calls: tuple[ToolCall, ...] = ()
            finish = FinishChunk("stop")
            said: list[str] = []  # this call's text (a preamble, if tools follow)
            async for chunk in self._model.stream(this, stream=stream):
                if isinstance(chunk, ToolCallsChunk):
                    calls = chunk.calls
                elif isinstance(chunk, FinishChunk):
                    finish = chunk
                else:
                    if isinstance(chunk, TextChunk):
                        said.append(chunk.text)
                    yield chunk
            if finish.usage is not None:
                usage = finish.usage if usage is None else usage + finish.usage
            if not calls:
                yield replace(finish, usage=usage)
                return
            if last:
                raise ModelError(f"tool round limit ({settings.max_rounds}) reached",
                                 user_message=_limit_message(settings.max_rounds))
            rounds += 1
            preamble = "".join(said)
            await journal.calls(rounds, calls, preamble)
            results: list[ToolResult | None] = [None] * len(calls)
            async for position, activity, result in self._run_round(
                    calls, toolbox, settings, context, deadline):
                yield activity
                if result is not None:
                    results[position] = result
                    await journal.result(rounds, position, result)
            messages.append(ContextMessage("assistant", preamble, tool_calls=calls))
            messages += [ContextMessage("tool", r.output, tool_call_id=c.id)
                         for c, r in zip(calls, results, strict=True) if r is not None]

    async def _run_round(
        self, calls: Sequence[ToolCall], toolbox: Toolbox, settings: ToolSettings,
        context: ToolContext, deadline: float | None,
    ) -> AsyncIterator[tuple[int, ToolActivity, ToolResult | None]]:
        """Run a round's calls concurrently; yield each one's start, then each end as it comes."""
        timeout = settings.timeout_seconds
        if deadline is not None:
            timeout = max(min(timeout, deadline - time.monotonic()), 0.0)
        tasks: dict[asyncio.Task[ToolResult], tuple[int, ToolCall, Tool | None, str]] = {}
        for position, tool_call in enumerate(calls):
            tool = toolbox.get(tool_call.name)
            title = tool_call.name
            if tool is not None:
                try:
                    title = tool.status(tool.check(tool_call.arguments))
                except ToolError:
                    title = tool.status({})
            task = asyncio.create_task(self._run_one(tool_call, tool, toolbox, context, timeout))
            tasks[task] = (position, tool_call, tool, title)
            yield position, ToolActivity(tool_call.id, tool_call.name, "in_progress", title), None
        pending = set(tasks)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=lambda t: tasks[t][0]):
                    position, tool_call, _, title = tasks[task]
                    result = task.result()
                    state: Literal["complete", "error"] = (
                        "complete" if result.status == "ok" else "error")
                    yield position, ToolActivity(tool_call.id, tool_call.name, state, title,
                                                 result.url), result
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _run_one(self, call: ToolCall, tool: Tool | None, toolbox: Toolbox,
                       context: ToolContext, seconds: float) -> ToolResult:
        began = time.monotonic()

        def done(output: str, status: Status, url: str = "") -> ToolResult:
            return ToolResult(call.id, output, status, int((time.monotonic() - began) * 1000),
                              url)

        if tool is None:
            names = ", ".join(toolbox.names)
            return done(f"error: there is no tool named {call.name!r}; the tools are: {names}",
                        "error")
        try:
            arguments = tool.check(call.arguments)
        except ToolError as err:
            return done(f"error: {err}", "error")
        try:
            async with asyncio.timeout(seconds):
                output = await tool.run(arguments, context)
        except TimeoutError:
            return done(f"error: the tool {call.name!r} did not finish within {seconds:g} s",
                        "timeout")
        except ToolError as err:
            return done(f"error: {redact(str(err), *self._secrets)}", "error")
        except Exception as err:  # a tool's bug or fault must not end the turn
            log.warning("tool %s failed: %s", call.name, type(err).__name__)
            detail = redact(f"{type(err).__name__}: {err}", *self._secrets)
            return done(f"error: the tool {call.name!r} failed ({detail})", "error")
        if isinstance(output, ToolOutput):
            return done(output.text, "ok", output.url)
        return done(str(output), "ok")
