"""Explicit context caching on Model Studio: which models have it and how requests are marked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.tokens import image_tokens
from core.types import ContextMessage

__all__ = [
    "EXPLICIT_CACHE_MODELS", "MARK", "MIN_CACHE_TOKENS", "cached_usage", "mark", "uses_cache",
    "worth_caching",
]

# protocols-2 H.2 (International): not the snapshot or -latest names of these models.
EXPLICIT_CACHE_MODELS = frozenset({
    "qwen3-max", "qwen3.5-plus", "qwen-plus", "qwen3.5-flash", "qwen-flash",
    "qwen3-coder-plus", "qwen3-coder-flash", "qwen3-vl-plus", "deepseek-v3.2",
})
MARK: dict[str, str] = {"type": "ephemeral"}
MIN_CACHE_TOKENS = 1024  # an explicit cache is created only for a prefix this long (H.1)


def worth_caching(prefix: Sequence[ContextMessage]) -> bool:
    """Whether a prefix may reach the cache's minimum: a text token is at least one
    character, so a shorter one cannot (and is sent unmarked, as plain strings)."""
    size = 0
    for message in prefix:
        size += len(message.text) + sum(image_tokens(i) for i in message.images)
        if size >= MIN_CACHE_TOKENS:
            return True
    return False


def uses_cache(model: str, setting: bool | None) -> bool:
    """Whether to mark a call's prefix: the setting, or (``None``) whether the model has
    explicit caching."""
    if setting is not None:
        return setting
    return model.lower() in EXPLICIT_CACHE_MODELS


def mark(message: dict[str, Any]) -> None:
    """Put a cache marker on the last content part of an OpenAI-style message (its
    ``content`` becomes a list of parts if it was a string)."""
    content = message.get("content")
    if isinstance(content, str):
        if not content:
            return
        message["content"] = [{"type": "text", "text": content, "cache_control": dict(MARK)}]
    elif isinstance(content, list) and content:
        content[-1] = {**content[-1], "cache_control": dict(MARK)}


def cached_usage(raw: dict[str, Any]) -> tuple[int, int]:
    """(cached, cache-creation) prompt tokens from a usage object (Chat Completions,
    DashScope native or its VL variant)."""
    details = raw.get("prompt_tokens_details") or raw.get("input_tokens_details") or {}
    if not isinstance(details, dict):
        details = {}
    cached = details.get("cached_tokens", raw.get("cached_tokens"))
    created = details.get("cache_creation_input_tokens")
    return int(cached or 0), int(created or 0)
