"""Plain values that travel between the adapters and the core.

These are pure values: no database ids, no I/O. Identity (which row a message is,
which conversation is open under a key) is a storage concern and lives in ``core.store``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Image:
    """An image ready for a model: normalized bytes, their type and size."""

    data: bytes
    mime: str
    width: int
    height: int
    sha256: str

    @property
    def size(self) -> int:
        """Size of the bytes."""
        return len(self.data)


@dataclass(frozen=True, slots=True)
class Video:
    """A video ready for a model: frames sampled from it (images, in order), their rate
    in frames a second, the clip's length, and (small enough to send whole) the file."""

    frames: tuple[Image, ...]
    fps: float
    seconds: float = 0.0
    file: Image | None = None  # the video file itself (``mime`` video/…), as a data URL


@dataclass(frozen=True, slots=True)
class Upload:
    """A file a person posted that is not an image (a document, recording or video): its
    name, bytes, type."""

    name: str
    data: bytes
    mime: str = ""


@dataclass(frozen=True, slots=True)
class Author:
    """Who wrote a message, as the platform knows them."""

    id: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One inbound message for the core: where it belongs, who wrote it, what it says.

    ``shared``: several people write in this conversation (a channel thread, a group), so
    each message reaches the model with its author's name.
    """

    platform: str
    scope: str
    author: Author
    text: str
    event_id: str
    images: tuple[bytes, ...] = ()
    profile: str | None = None
    shared: bool = False
    files: tuple[Upload, ...] = ()  # documents, recordings and videos


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage reported by the model for one call."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of the prompt tokens, read from the provider's cache
    reasoning_tokens: int = 0  # of the completion tokens, spent thinking
    # Counted by chatbridge because the server reported none (llama.cpp streaming).
    estimated: bool = False
    cache_creation_tokens: int = 0  # of the prompt tokens, written into the provider's cache

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens,
                     self.completion_tokens + other.completion_tokens,
                     self.cached_tokens + other.cached_tokens,
                     self.reasoning_tokens + other.reasoning_tokens,
                     self.estimated or other.estimated,
                     self.cache_creation_tokens + other.cache_creation_tokens)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call the model asked for: its id, the tool's name, the arguments as JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as offered to the model: name, description, JSON Schema of its arguments."""

    name: str
    description: str
    parameters: Mapping[str, Any]


class ContextMessage(NamedTuple):
    """One message as the model will see it (a named tuple: many are built per turn)."""

    role: Role
    text: str
    images: tuple[Image, ...] = ()
    author_name: str = ""
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant message asking for tools
    tool_call_id: str = ""  # a tool message: the call it answers
    videos: tuple[Video, ...] = ()  # sampled frames, for models that take video


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling settings for one model call."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    enable_thinking: bool | None = None


@dataclass(frozen=True, slots=True)
class ModelCall:
    """Everything a model client needs for one call."""

    model: str
    messages: tuple[ContextMessage, ...]
    sampling: Sampling = field(default_factory=Sampling)
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str | None = None  # "none": answer now, call no tool
    # Mark the stable prefix for the provider's context cache: True, False, or None (where
    # the model has explicit caching, core.model.cache).
    cache: bool | None = False


# ---- what a model client yields ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextChunk:
    """A piece of the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningChunk:
    """A piece of the model's thinking; never part of the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class FinishChunk:
    """The model said why it stopped, and (when it reported it) what it used."""

    reason: str
    usage: Usage | None = None
    model: str = ""


@dataclass(frozen=True, slots=True)
class ToolCallsChunk:
    """The tools the model asks for, whole (streamed fragments already assembled)."""

    calls: tuple[ToolCall, ...]


ModelChunk = TextChunk | ReasoningChunk | ToolCallsChunk | FinishChunk


# ---- what ChatService yields to adapters ----------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolActivity:
    """A tool call's progress, for platforms that show tasks (Slack's task_update)."""

    call_id: str
    name: str
    status: Literal["in_progress", "complete", "error"]
    title: str
    url: str = ""  # the source a tool read, when it read one


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """Progress the person may be shown ("thinking…", "Reading example.com…")."""

    text: str
    tool: ToolActivity | None = None


@dataclass(frozen=True, slots=True)
class ThinkingEvent:
    """A piece of the model's reasoning, yielded only for a profile with show_thinking;
    shown apart from the answer, never as part of it."""

    text: str


@dataclass(frozen=True, slots=True)
class DeltaEvent:
    """New answer text to append."""

    text: str


@dataclass(frozen=True, slots=True)
class Citation:
    """A knowledge-base passage an answer cites as ``[number]``."""

    number: int
    title: str
    source: str  # a URL, or the path of the file it was indexed from
    heading: str = ""

    @property
    def url(self) -> str | None:
        """The source when people can open it (a web page)."""
        return self.source if self.source.startswith(("http://", "https://")) else None


@dataclass(frozen=True, slots=True)
class FinalEvent:
    """The turn is done: the whole answer and what it cost."""

    text: str
    conversation: str
    model: str
    usage: Usage
    latency_ms: int
    partial: bool = False
    notice: str = ""
    # Knowledge-base passages the answer cites, to be shown as links or source names.
    sources: tuple[Citation, ...] = ()
    # "I don't know" in a profile with a handoff: the adapter offers a person (a button).
    offer_person: bool = False


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """The turn produced no answer; ``message`` is fit to show the person."""

    kind: str
    message: str
    conversation: str = ""
    # What failed and where (URL and cause), for the operator's stderr and logs only.
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DuplicateEvent:
    """The event was already received; nothing is to be sent."""

    event_id: str


ReplyEvent = (StatusEvent | DeltaEvent | ThinkingEvent | FinalEvent | ErrorEvent
              | DuplicateEvent)
