"""Profiles: per channel/chat system prompt, model, sampling and context settings.

Profiles are plain values built once at start-up; every check that can fail does so
here, as a ``ConfigError``, never at the first message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.answer_cap import DEFAULT_MAX_ANSWER_CHARS
from core.config import config_table
from core.errors import ConfigError
from core.handoff import HandoffSettings, parse_handoff
from core.hours import Hours, parse_hours
from core.types import Sampling

__all__ = ["DEFAULT_SYSTEM_PROMPT", "PRESETS", "Profile", "build_profile", "context_window"]

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant in a chat. Answer clearly and concisely; use Markdown "
    "when it helps."
)

PRESETS: Mapping[str, tuple[float, float]] = {
    "creative_writing": (0.9, 0.95),
    "code_generation": (0.2, 0.8),
    "factual_qa": (0.1, 0.7),
    "translation": (0.3, 0.8),
}

# Context windows (tokens) of models we know; anything else gets DEFAULT_WINDOW.
_WINDOWS: Mapping[str, int] = {
    "qwen3.5-plus": 1_000_000,
    "qwen3.5-flash": 1_000_000,
    "qwen-plus": 131_072,
    "qwen-flash": 1_000_000,
    "qwen-turbo": 1_000_000,
    "qwen-max": 32_768,
    "qwen3-max": 262_144,
    "qwen-long": 10_000_000,
    "smollm2": 2_048,
}
DEFAULT_WINDOW = 8_192
MAX_DEFAULT_BUDGET = 32_768


def context_window(model: str) -> int:
    """The context window we assume for ``model`` (longest known prefix match)."""
    name = model.lower()
    best = ""
    for known in _WINDOWS:
        if name.startswith(known) and len(known) > len(best):
            best = known
    return _WINDOWS[best] if best else DEFAULT_WINDOW


@dataclass(frozen=True, slots=True)
class Profile:
    """How the bot behaves in one place: prompt, model, sampling, memory size."""

    name: str = "default"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    model: str | None = None
    sampling: Sampling = field(default_factory=Sampling)
    context_tokens: int | None = None
    image_turns: int = 3
    max_context_messages: int = 200
    max_input_chars: int = 32_000
    # Longest answer shown (Slack, Telegram, console); a longer one is cut with a note.
    max_answer_chars: int = DEFAULT_MAX_ANSWER_CHARS
    tools: tuple[str, ...] = ()  # globs over tool keys: "fetch_url", "mcp:github/*"
    timezone: str | None = None  # IANA name, for current_time
    max_tool_rounds: int = 6
    tool_timeout_seconds: float = 20.0
    summary_model: str | None = None  # writes the rolling summary; None: the turn's model
    prompt_cache: bool | None = None  # explicit context cache; None: on where it exists
    retention_days: int | None = None  # messages older than this are deleted (None: kept)
    # Knowledge bases answered from; "auto": their best passages go into every turn,
    # "tool": the model calls kb_search.
    knowledge: tuple[str, ...] = ()
    kb_mode: str = "auto"
    kb_passages: int = 4
    show_thinking: bool = False  # the model's reasoning shown before the answer
    handoff: HandoffSettings | None = None  # [profiles.NAME.handoff]: where staff answer
    hours: Hours = field(default_factory=Hours)  # [profiles.NAME.hours]: opening hours

    def budget_for(self, model: str) -> int:
        """Token budget for the context: set explicitly, or half the model's window."""
        if self.context_tokens is not None:
            return self.context_tokens
        return min(context_window(model) // 2, MAX_DEFAULT_BUDGET)


def _number(name: str, raw: Any, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ConfigError(f"{where}: {name} must be a number, not {raw!r}")
    return float(raw)


def _sampling(raw: Mapping[str, Any], where: str) -> Sampling:
    temperature: float | None = None
    top_p: float | None = None
    preset = raw.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            names = ", ".join(PRESETS)
            raise ConfigError(f"{where}: unknown preset {preset!r} (known: {names})")
        temperature, top_p = PRESETS[preset]
    if "temperature" in raw:
        temperature = _number("temperature", raw["temperature"], where)
    if "top_p" in raw:
        top_p = _number("top_p", raw["top_p"], where)
    if temperature is not None and not 0 <= temperature < 2:
        raise ConfigError(f"{where}: temperature must lie in [0, 2), got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"{where}: top_p must lie in (0, 1], got {top_p}")
    max_tokens = raw.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise ConfigError(f"{where}: max_tokens must be a positive integer")
    thinking = raw.get("enable_thinking")
    if thinking is not None and not isinstance(thinking, bool):
        raise ConfigError(f"{where}: enable_thinking must be true or false")
    return Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                    enable_thinking=thinking)


_KNOWN_KEYS = {
    "system_prompt", "model", "preset", "temperature", "top_p", "max_tokens",
    "enable_thinking", "context_tokens", "image_turns", "max_context_messages",
    "max_input_chars", "max_answer_chars", "tools", "timezone", "max_tool_rounds",
    "tool_timeout_seconds",
    "summary_model", "prompt_cache", "retention_days",
    "knowledge", "kb_mode", "kb_passages",
    "show_thinking",
    "handoff", "hours",
}
_KB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _knowledge(profile: Profile, raw: Mapping[str, Any], where: str) -> Profile:
    """The profile's knowledge-base settings, checked."""
    if "knowledge" in raw:
        names = raw["knowledge"]
        if not isinstance(names, list) or not all(
                isinstance(n, str) and _KB_NAME.fullmatch(n) for n in names):
            raise ConfigError(f"{where}: knowledge must be a list of knowledge base names "
                              '(letters, digits, "-", "_", "."), e.g. ["shop-faq"]')
        profile = replace(profile, knowledge=tuple(names))
    if "kb_mode" in raw:
        mode = raw["kb_mode"]
        if mode not in ("auto", "tool"):
            raise ConfigError(f'{where}: kb_mode must be "auto" or "tool", not {mode!r}')
        profile = replace(profile, kb_mode=mode)
    if "kb_passages" in raw:
        count = raw["kb_passages"]
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 20:
            raise ConfigError(f"{where}: kb_passages must be an integer from 1 to 20")
        profile = replace(profile, kb_passages=count)
    return profile


def _tool_settings(profile: Profile, raw: Mapping[str, Any], where: str) -> Profile:
    if "tools" in raw:
        tools = raw["tools"]
        if not isinstance(tools, list) or not all(isinstance(t, str) and t for t in tools):
            raise ConfigError(f"{where}: tools must be a list of tool names or globs")
        profile = replace(profile, tools=tuple(tools))
    if "timezone" in raw:
        name = raw["timezone"]
        try:
            if not isinstance(name, str):
                raise ValueError(name)
            ZoneInfo(name)
        except (ValueError, ZoneInfoNotFoundError) as err:
            raise ConfigError(f"{where}: unknown timezone {name!r} "
                              "(use an IANA name such as 'Europe/Berlin')") from err
        profile = replace(profile, timezone=name)
    if "max_tool_rounds" in raw:
        rounds = raw["max_tool_rounds"]
        if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= 50:
            raise ConfigError(f"{where}: max_tool_rounds must be an integer from 1 to 50")
        profile = replace(profile, max_tool_rounds=rounds)
    if "tool_timeout_seconds" in raw:
        seconds = _number("tool_timeout_seconds", raw["tool_timeout_seconds"], where)
        if not 0 < seconds <= 3600:
            raise ConfigError(f"{where}: tool_timeout_seconds must lie in (0, 3600]")
        profile = replace(profile, tool_timeout_seconds=seconds)
    if "show_thinking" in raw:
        if not isinstance(raw["show_thinking"], bool):
            raise ConfigError(f"{where}: show_thinking must be true or false")
        profile = replace(profile, show_thinking=raw["show_thinking"])
    return profile


def build_profile(name: str, raw: Mapping[str, Any], base: Profile | None = None) -> Profile:
    """Validate one profile table; keys it leaves out come from ``base``."""
    where = f"profile {name!r}"
    raw = config_table(raw, where, _KNOWN_KEYS)
    base = base or Profile()
    merged_sampling = _sampling(raw, where)
    sampling = Sampling(
        temperature=merged_sampling.temperature
        if merged_sampling.temperature is not None else base.sampling.temperature,
        top_p=merged_sampling.top_p if merged_sampling.top_p is not None else base.sampling.top_p,
        max_tokens=merged_sampling.max_tokens or base.sampling.max_tokens,
        enable_thinking=merged_sampling.enable_thinking
        if merged_sampling.enable_thinking is not None else base.sampling.enable_thinking,
    )
    profile = replace(base, name=name, sampling=sampling)
    for key in ("context_tokens", "image_turns", "max_context_messages", "max_input_chars",
                "max_answer_chars"):
        if key in raw:
            value = raw[key]
            least = {"max_context_messages": 1, "context_tokens": 1,
                     "max_answer_chars": 100}.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{where}: {key} must be an integer of at least {least}")
            profile = replace(profile, **{key: value})  # type: ignore[arg-type]
    if "prompt_cache" in raw:
        if not isinstance(raw["prompt_cache"], bool):
            raise ConfigError(f"{where}: prompt_cache must be true or false")
        profile = replace(profile, prompt_cache=raw["prompt_cache"])
    if "retention_days" in raw:
        days = raw["retention_days"]
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise ConfigError(f"{where}: retention_days must be a whole number of days, "
                              "at least 1")
        profile = replace(profile, retention_days=days)
    for key in ("system_prompt", "model", "summary_model"):
        if key in raw:
            if not isinstance(raw[key], str) or not raw[key].strip():
                raise ConfigError(f"{where}: {key} must be a non-empty string")
            profile = replace(profile, **{key: raw[key]})
    if "handoff" in raw:
        profile = replace(profile, handoff=parse_handoff(raw["handoff"], where))
    if "hours" in raw:
        profile = replace(profile, hours=parse_hours(raw["hours"], where))
    return _knowledge(_tool_settings(profile, raw, where), raw, where)
