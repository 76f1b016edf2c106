"""Build what the model sees: the profile's system prompt, then the stored turns."""

from __future__ import annotations

from collections.abc import Sequence

from core.profiles import Profile
from core.store import StoredMessage
from core.types import ContextMessage, Role

__all__ = ["build_messages"]


def _placeholder(count: int) -> str:
    noun = "image" if count == 1 else "images"
    return f"[{count} earlier {noun} not shown]"


def build_messages(
    profile: Profile, history: Sequence[StoredMessage], *, show_authors: bool = False,
    knowledge: str = "",
) -> tuple[ContextMessage, ...]:
    """System prompt (+ knowledge-base passages) plus history (oldest first); old images
    become a placeholder."""
    system = f"{profile.system_prompt}\n\n{knowledge}" if knowledge else profile.system_prompt
    messages = [ContextMessage("system", system)]
    for stored in history:
        text = stored.text
        if stored.image_count and len(stored.images) < stored.image_count:
            text = f"{text}\n{_placeholder(stored.image_count - len(stored.images))}".strip()
        if show_authors and stored.role == "user" and stored.author_name:
            text = f"{stored.author_name}: {text}"
        role: Role = "assistant" if stored.role == "assistant" else "user"
        messages.append(ContextMessage(role, text, stored.images, stored.author_name))
    return tuple(messages)
