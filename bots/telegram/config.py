"""The Telegram adapter's settings, read once from ``Settings`` and checked at start-up.

Credentials and URLs come from the environment (``settings.env``); behaviour from the
``[telegram]`` table of chatbridge.toml.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bots.settings import Settings
from core.config import config_table
from core.errors import ConfigError

__all__ = ["DEFAULT_GREETING", "DENIED", "Access", "TelegramAllow", "TelegramConfig",
           "load_config"]

DEFAULT_API_URL = "https://api.telegram.org/bot"
DEFAULT_FILE_URL = "https://api.telegram.org/file/bot"
DEFAULT_GREETING = (
    "Hello! I'm an AI assistant. Write to me, or send a photo with a question, and I'll "
    "answer. /help lists what I can do."
)
_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]{20,}$")
_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_KEYS = {"owner_pause_minutes", "profile", "business_profile", "chats", "greeting", "greetings",
         "album_seconds",
         "draft_interval", "edit_interval", "max_file_mb", "listen", "allow"}
_ALLOW_KEYS = {"chats", "users"}

DENIED = "Sorry, I'm not enabled for you here."
# What to do with a message: answer it, refuse it with DENIED (once), or ignore it silently.
Access = Literal["answer", "refuse", "ignore"]


@dataclass(frozen=True, slots=True)
class TelegramAllow:
    """``[telegram.allow]``: who may use the bot. An empty list lets everyone through.

    In a Telegram Business chat the chat id is the customer's, and so is the sender.
    """

    chats: frozenset[int] = frozenset()
    users: frozenset[int] = frozenset()

    def permits(self, *, chat_id: int, user_id: int | None) -> bool:
        """Whether every list that is set holds this chat and sender."""
        if self.chats and chat_id not in self.chats:
            return False
        return not self.users or (user_id is not None and user_id in self.users)

    def decide(self, *, chat_id: int, user_id: int | None, private: bool) -> Access:
        """Answer; else a short refusal in a private chat, silence in groups and
        business chats (where the bot speaks for the account owner)."""
        if self.permits(chat_id=chat_id, user_id=user_id):
            return "answer"
        return "refuse" if private else "ignore"


@dataclass(frozen=True)
class TelegramConfig:
    """Everything the Telegram adapter reads from outside."""

    token: str = field(repr=False)
    api_url: str = DEFAULT_API_URL
    file_url: str = DEFAULT_FILE_URL
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    listen: str = "0.0.0.0"
    profile: str | None = None
    business_profile: str | None = None
    chat_profiles: Mapping[int, str] = field(default_factory=dict)
    greeting: str = DEFAULT_GREETING
    greetings: Mapping[str, str] = field(default_factory=dict)
    album_seconds: float = 1.0
    # Business chats: after the owner writes by hand, the bot keeps quiet this long.
    owner_pause_minutes: float = 30.0
    draft_interval: float = 0.5
    edit_interval: float = 1.5
    max_file_bytes: int = 20_000_000
    allow: TelegramAllow = field(default_factory=TelegramAllow)

    def profile_for(self, chat_id: int, *, business: bool) -> str | None:
        """The profile a chat uses: listed chats first, then business or general default."""
        if chat_id in self.chat_profiles:
            return self.chat_profiles[chat_id]
        return (self.business_profile if business else None) or self.profile

    def greeting_for(self, profile: str | None) -> str:
        """The /start greeting of a profile."""
        return self.greetings.get(profile or "default", self.greeting)


def _seconds(table: Mapping[str, Any], key: str, default: float) -> float:
    raw = table.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw) \
            or not 0 <= raw <= 60:
        raise ConfigError(f"[telegram] {key} must be a number of seconds from 0 to 60")
    return float(raw)


def _minutes(raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw) \
            or not 0 <= raw <= 7 * 24 * 60:
        raise ConfigError("[telegram] owner_pause_minutes must be a number of minutes from 0 "
                          "to 10080 (a week)")
    return float(raw)


def _text(table: Mapping[str, Any], key: str) -> str | None:
    raw = table.get(key)
    if raw is not None and (not isinstance(raw, str) or not raw.strip()):
        raise ConfigError(f"[telegram] {key} must be a non-empty string")
    return raw


def _profile_name(settings: Settings, name: str | None, where: str) -> str | None:
    if name is not None and name not in settings.profiles:
        known = ", ".join(sorted(settings.profiles))
        raise ConfigError(f"{where} names the profile {name!r}, which is not defined "
                          f"(profiles: {known})")
    return name


def _chats(settings: Settings, raw: Any) -> dict[int, str]:
    if not isinstance(raw, dict):
        raise ConfigError("[telegram.chats] must map chat ids to profile names")
    chats: dict[int, str] = {}
    for key, name in raw.items():
        try:
            chat_id = int(str(key))
        except ValueError as err:
            raise ConfigError(f"[telegram.chats] key {key!r} is not a chat id") from err
        if not isinstance(name, str):
            raise ConfigError(f"[telegram.chats] {key} must name a profile")
        chats[chat_id] = str(_profile_name(settings, name, f"[telegram.chats] {key}"))
    return chats


def _allow(raw: Any) -> TelegramAllow:
    raw = config_table(raw, "[telegram.allow]", _ALLOW_KEYS)

    def ids(key: str) -> frozenset[int]:
        value = raw.get(key, [])
        if not isinstance(value, list):
            raise ConfigError(f"[telegram.allow] {key} must be a list of numeric ids")
        found: set[int] = set()
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int | str):
                raise ConfigError(f"[telegram.allow] {key}: {item!r} is not a numeric id")
            try:
                found.add(int(str(item).strip()))
            except ValueError as err:
                raise ConfigError(f"[telegram.allow] {key}: {item!r} is not a numeric id "
                                  "(usernames are not accepted)") from err
        return frozenset(found)

    return TelegramAllow(chats=ids("chats"), users=ids("users"))


def _greetings(settings: Settings, raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ConfigError("[telegram.greetings] must map profile names to greetings")
    for name in raw:
        _profile_name(settings, name, "[telegram.greetings]")
    return dict(raw)


def load_config(settings: Settings, *, webhook: bool = False) -> TelegramConfig:
    """Read and check the Telegram settings; a ``ConfigError`` names what is wrong."""
    env = settings.env
    token = env.get("TELEGRAM_BOT_TOKEN", "").strip()
    if not token:
        raise ConfigError("TELEGRAM_BOT_TOKEN is not set: create a bot with @BotFather and "
                          "put its token in the environment or .env")
    if not _TOKEN.match(token):
        raise ConfigError("TELEGRAM_BOT_TOKEN does not look like a bot token "
                          "(digits, a colon, then letters; as @BotFather shows it)")
    table = config_table(settings.config.get("telegram"), "[telegram]", _KEYS)
    webhook_url = env.get("TELEGRAM_WEBHOOK_URL", "").strip() or None
    secret = env.get("TELEGRAM_WEBHOOK_SECRET", "").strip() or None
    if webhook:
        if not webhook_url or not webhook_url.startswith(("https://", "http://")):
            raise ConfigError("--webhook needs TELEGRAM_WEBHOOK_URL, the public https URL "
                              "that reaches POST /telegram/webhook")
        if not secret:
            raise ConfigError("--webhook needs TELEGRAM_WEBHOOK_SECRET (1-256 characters "
                              "A-Z a-z 0-9 _ -), so forged updates are refused")
    if secret is not None and not _SECRET.match(secret):
        raise ConfigError("TELEGRAM_WEBHOOK_SECRET may only hold 1-256 characters "
                          "A-Z a-z 0-9 _ -")
    max_mb = table.get("max_file_mb", 20)
    if isinstance(max_mb, bool) or not isinstance(max_mb, int) or max_mb < 1:
        raise ConfigError("[telegram] max_file_mb must be a whole number of megabytes")
    return TelegramConfig(
        token=token,
        api_url=env.get("CHATBRIDGE_TELEGRAM_API_URL", "").strip() or DEFAULT_API_URL,
        file_url=env.get("CHATBRIDGE_TELEGRAM_FILE_URL", "").strip() or DEFAULT_FILE_URL,
        webhook_url=webhook_url,
        webhook_secret=secret,
        listen=_text(table, "listen") or "0.0.0.0",
        profile=_profile_name(settings, _text(table, "profile"), "[telegram] profile"),
        business_profile=_profile_name(settings, _text(table, "business_profile"),
                                       "[telegram] business_profile"),
        chat_profiles=_chats(settings, table.get("chats", {})),
        greeting=_text(table, "greeting") or DEFAULT_GREETING,
        greetings=_greetings(settings, table.get("greetings", {})),
        album_seconds=_seconds(table, "album_seconds", 1.0),
        owner_pause_minutes=_minutes(table.get("owner_pause_minutes", 30)),
        draft_interval=_seconds(table, "draft_interval", 0.5),
        edit_interval=_seconds(table, "edit_interval", 1.5),
        max_file_bytes=max_mb * 1_000_000,
        allow=_allow(table.get("allow", {})),
    )
