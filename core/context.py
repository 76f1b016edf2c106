"""Build what the model sees: the profile's system prompt (+ the rolling summary), then the
stored turns."""

from __future__ import annotations

from collections.abc import Sequence

from core.profiles import Profile
from core.store import StoredMessage
from core.store.summaries import SUMMARY_ROLE
from core.store.toolcalls import StoredTool
from core.types import ContextMessage, Role, ToolCall

INTERRUPTED = ("error: this call was interrupted (the bot restarted) and was not run again; "
               "call it again if you still need it")

__all__ = ["SUMMARY_HEADING", "build_messages"]

SUMMARY_HEADING = "Summary of the earlier conversation (older messages are not shown):"


def _placeholder(count: int, kind: str = "image") -> str:
    noun = kind if count == 1 else f"{kind}s"
    return f"[{count} earlier {noun} not shown]"


def build_messages(
    profile: Profile, history: Sequence[StoredMessage], *, show_authors: bool = False,
    knowledge: str = "",
) -> tuple[ContextMessage, ...]:
    """System prompt (+ the rolling summary, + knowledge-base passages) plus history
    (oldest first); old images and videos become a placeholder."""
    system = profile.system_prompt
    if history and history[0].role == SUMMARY_ROLE:
        system = f"{system}\n\n{SUMMARY_HEADING}\n{history[0].text}"
        history = history[1:]
    if knowledge:
        system = f"{system}\n\n{knowledge}"
    messages = [ContextMessage("system", system)]
    said = ""  # what the model wrote before its tool calls: shown in the answer, replayed
    for stored in history:
        text = stored.text
        if stored.role == "assistant" and said and text.startswith(said):
            text = text[len(said):]  # ... with its round instead, as the model wrote it
        said = ""
        if stored.image_count and len(stored.images) < stored.image_count:
            text = f"{text}\n{_placeholder(stored.image_count - len(stored.images))}".strip()
        if stored.video_count and len(stored.videos) < stored.video_count:
            missing = stored.video_count - len(stored.videos)
            text = f"{text}\n{_placeholder(missing, 'video')}".strip()
        if show_authors and stored.role == "user" and stored.author_name:
            text = f"{stored.author_name}: {text}"
        if stored.role == "staff":  # a person of the team answered during a handoff
            text = f"[staff {stored.author_name or 'member'}] {text}"
        role: Role = "assistant" if stored.role in ("assistant", "staff") else "user"
        messages.append(ContextMessage(role, text, stored.images, stored.author_name,
                                       videos=stored.videos))
        if stored.tools:
            messages += tool_messages(stored.tools)
            said = "".join(t.preamble or "" for t in stored.tools)
    return tuple(messages)


def tool_messages(tools: Sequence[StoredTool]) -> list[ContextMessage]:
    """A turn's stored tool rounds as the model saw them: the calls, then each result."""
    out: list[ContextMessage] = []
    rounds: dict[int, list[StoredTool]] = {}
    for tool in tools:
        rounds.setdefault(tool.round, []).append(tool)
    for _, calls in sorted(rounds.items()):
        out.append(ContextMessage("assistant", calls[0].preamble or "", tool_calls=tuple(
            ToolCall(c.call_id, c.name, c.arguments) for c in calls)))
        out += [ContextMessage("tool", INTERRUPTED if c.output is None else c.output,
                               tool_call_id=c.call_id) for c in calls]
    return out


def rounds_done(history: Sequence[StoredMessage], message_id: int) -> int:
    """Tool rounds an earlier attempt of the turn of ``message_id`` finished."""
    for stored in reversed(history):
        if stored.id == message_id:
            return max((t.round for t in stored.tools), default=0)
    return 0
