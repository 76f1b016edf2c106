"""The Slack adapter's settings: credentials from the environment, options from ``[slack]``.

Read once at the entry point; every check that can fail does so here, as a ``ConfigError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bots.settings import Settings
from core.config import config_table
from core.errors import ConfigError

__all__ = ["DEFAULT_PROMPTS", "DENIED", "SURFACES", "Access", "Prompt", "SlackAllow",
           "SlackConfig", "Surface", "load_slack_config"]

DEFAULT_API_URL = "https://slack.com/api/"
MAX_MESSAGE_CHARS = 12_000  # Slack's limit on markdown_text per call and per markdown block


@dataclass(frozen=True, slots=True)
class Prompt:
    """A suggested prompt in the assistant container."""

    title: str
    message: str


DEFAULT_PROMPTS: tuple[Prompt, ...] = (
    Prompt("Summarize", "Summarize the following text in three bullet points:"),
    Prompt("Explain an image", "What is in this image?"),
    Prompt("Draft a reply", "Help me write a friendly, short reply to this message:"),
)

_KNOWN = {
    "reset_command", "allow_bots", "dm_profile", "channels", "prompts", "max_file_mb",
    "max_message_chars", "greeting", "update_interval", "stream_buffer", "allow",
    "surface", "stream_max_seconds", "stream_max_chars", "auto_reply_channels",
}
# Which DM surface the app uses: the Agent messaging experience (features.agent_view),
# the older assistant container (features.assistant_view), or whichever events arrive.
Surface = Literal["agent", "assistant", "auto"]
SURFACES: tuple[Surface, ...] = ("agent", "assistant", "auto")
_ALLOW_KNOWN = {"teams", "channels", "users", "dms"}

DENIED = "Sorry, I'm not enabled for you here."
# What to do with a message: answer it, refuse it with DENIED (once), or ignore it silently.
Access = Literal["answer", "refuse", "ignore"]


@dataclass(frozen=True, slots=True)
class SlackAllow:
    """``[slack.allow]``: who may use the bot. An empty list lets everyone through."""

    teams: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    dms: bool = True  # direct messages (and assistant threads) pass the channel list

    def permits(self, *, team: str, channel: str, user: str, direct: bool) -> bool:
        """Whether every list that is set holds this message's team, channel and user."""
        if self.teams and team not in self.teams:
            return False
        if self.users and user not in self.users:
            return False
        if direct:
            return self.dms or channel in self.channels
        return not self.channels or channel in self.channels

    def decide(self, *, team: str, channel: str, user: str, direct: bool) -> Access:
        """Answer; else a short refusal in a direct message, silence in a channel."""
        if self.permits(team=team, channel=channel, user=user, direct=direct):
            return "answer"
        return "refuse" if direct else "ignore"


@dataclass(frozen=True)
class SlackConfig:
    """Everything the Slack adapter reads from outside, validated."""

    bot_token: str = field(repr=False)
    signing_secret: str = field(default="", repr=False)
    app_token: str = field(default="", repr=False)
    api_url: str = DEFAULT_API_URL
    reset_command: str = "/chatbridge-reset"
    allow_bots: bool = False
    dm_profile: str | None = None
    channel_profiles: Mapping[str, str] = field(default_factory=dict)
    prompts: Mapping[str, tuple[Prompt, ...]] = field(default_factory=dict)
    max_file_bytes: int = 20 * 1024 * 1024
    max_message_chars: int = MAX_MESSAGE_CHARS
    greeting: str = "Hi! Ask me anything. I can read images, too."
    update_interval: float = 1.0
    stream_buffer: int = 256
    surface: Surface = "auto"
    # A streamed message rolls over to a new one before Slack's limits (≈5 min, ≈12k chars).
    stream_max_seconds: float = 240.0
    stream_max_chars: int = 10_000
    allow: SlackAllow = field(default_factory=SlackAllow)
    # Channels where every top-level message is answered in its thread, without a mention.
    auto_reply_channels: frozenset[str] = frozenset()
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def socket_mode(self) -> bool:
        """Whether the bot connects over Socket Mode (an app-level token is set)."""
        return bool(self.app_token)

    def profile_for_channel(self, channel: str) -> str | None:
        """The profile configured for a channel (``None``: the default profile)."""
        return self.channel_profiles.get(channel)

    def prompts_for(self, profile: str | None) -> tuple[Prompt, ...]:
        """Suggested prompts for a profile: its own list, else the default list."""
        return self.prompts.get(profile or "default") or self.prompts.get("default") \
            or DEFAULT_PROMPTS


def _prompts(raw: Any, profiles: Mapping[str, object]) -> dict[str, tuple[Prompt, ...]]:
    if not isinstance(raw, dict):
        raise ConfigError("[slack.prompts] must map profile names to lists of prompts")
    found: dict[str, tuple[Prompt, ...]] = {}
    for name, items in raw.items():
        if name not in profiles:
            raise ConfigError(f"[slack.prompts] names unknown profile {name!r}")
        if not isinstance(items, list) or not 1 <= len(items) <= 4:
            raise ConfigError(f"[slack.prompts] {name}: give 1 to 4 prompts")
        prompts = []
        for item in items:
            if (not isinstance(item, dict) or not isinstance(item.get("title"), str)
                    or not isinstance(item.get("message"), str)
                    or not item["title"].strip() or not item["message"].strip()):
                raise ConfigError(f"[slack.prompts] {name}: each prompt needs a title and a "
                                  "message")
            prompts.append(Prompt(item["title"], item["message"]))
        found[name] = tuple(prompts)
    return found


def _allow(raw: Any) -> SlackAllow:
    raw = config_table(raw, "[slack.allow]", _ALLOW_KNOWN)

    def ids(key: str) -> frozenset[str]:
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(
                isinstance(item, str) and item.strip() for item in value):
            raise ConfigError(f"[slack.allow] {key} must be a list of Slack IDs (strings)")
        return frozenset(item.strip() for item in value)

    dms = raw.get("dms", True)
    if not isinstance(dms, bool):
        raise ConfigError("[slack.allow] dms must be true or false")
    return SlackAllow(teams=ids("teams"), channels=ids("channels"), users=ids("users"),
                      dms=dms)


def _int(table: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"[slack] {key} must be a whole number from {lo} to {hi}")
    return value


def load_slack_config(settings: Settings) -> SlackConfig:
    """Validate the Slack credentials and the ``[slack]`` table."""
    env = settings.env
    bot_token = env.get("SLACK_BOT_TOKEN", "").strip()
    if not bot_token:
        raise ConfigError("SLACK_BOT_TOKEN is not set (the app's Bot User OAuth Token, xoxb-…)")
    if not bot_token.startswith("xoxb-"):
        raise ConfigError("SLACK_BOT_TOKEN must be the app's Bot User OAuth Token (xoxb-…), "
                          "not another kind of token")
    app_token = env.get("SLACK_APP_TOKEN", "").strip()
    secret = env.get("SLACK_SIGNING_SECRET", "").strip()
    if not app_token and not secret:
        raise ConfigError("SLACK_SIGNING_SECRET is not set (needed for HTTP mode; or set "
                          "SLACK_APP_TOKEN to use Socket Mode)")
    if app_token and not app_token.startswith("xapp-"):
        raise ConfigError("SLACK_APP_TOKEN must be an app-level token (xapp-…)")
    table = config_table(settings.config.get("slack"), "[slack]", _KNOWN)
    profiles = settings.profiles
    command = table.get("reset_command", "/chatbridge-reset")
    if not isinstance(command, str) or not command.startswith("/") or len(command) < 2 \
            or " " in command:
        raise ConfigError("[slack] reset_command must look like /name")
    allow_bots = table.get("allow_bots", False)
    if not isinstance(allow_bots, bool):
        raise ConfigError("[slack] allow_bots must be true or false")
    dm_profile = table.get("dm_profile")
    if dm_profile is not None and dm_profile not in profiles:
        raise ConfigError(f"[slack] dm_profile names unknown profile {dm_profile!r}")
    channels = table.get("channels") or {}
    if not isinstance(channels, dict):
        raise ConfigError("[slack.channels] must map channel IDs to profile names")
    for channel, name in channels.items():
        if name not in profiles:
            raise ConfigError(f"[slack.channels] {channel} names unknown profile {name!r}")
    greeting = table.get("greeting", SlackConfig.greeting)
    if not isinstance(greeting, str):
        raise ConfigError("[slack] greeting must be a string")
    interval = table.get("update_interval", 1.0)
    if isinstance(interval, bool) or not isinstance(interval, int | float) \
            or not 0.2 <= interval <= 10:
        raise ConfigError("[slack] update_interval must be between 0.2 and 10 seconds")
    surface = table.get("surface", "auto")
    if surface not in SURFACES:
        raise ConfigError('[slack] surface must be "agent", "assistant" or "auto"')
    max_seconds = table.get("stream_max_seconds", SlackConfig.stream_max_seconds)
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, int | float) \
            or not 1 <= max_seconds <= 290:
        raise ConfigError("[slack] stream_max_seconds must be between 1 and 290 seconds "
                          "(Slack ends a streamed message after about 5 minutes)")
    auto = table.get("auto_reply_channels", [])
    if not isinstance(auto, list) or not all(isinstance(c, str) and c for c in auto):
        raise ConfigError("[slack] auto_reply_channels must be a list of channel IDs")
    api_url = env.get("CHATBRIDGE_SLACK_API_URL", "").strip() or DEFAULT_API_URL
    if not api_url.startswith(("https://", "http://")):
        raise ConfigError("CHATBRIDGE_SLACK_API_URL must be an http(s) URL")
    return SlackConfig(
        bot_token=bot_token,
        signing_secret=secret,
        app_token=app_token,
        api_url=api_url,
        reset_command=command,
        allow_bots=allow_bots,
        dm_profile=dm_profile,
        channel_profiles=dict(channels),
        prompts=_prompts(table.get("prompts") or {}, profiles),
        max_file_bytes=_int(table, "max_file_mb", 20, 1, 1024) * 1024 * 1024,
        max_message_chars=_int(table, "max_message_chars", MAX_MESSAGE_CHARS, 200,
                               MAX_MESSAGE_CHARS),
        greeting=greeting,
        update_interval=float(interval),
        stream_buffer=_int(table, "stream_buffer", 256, 1, 4000),
        surface=surface,
        stream_max_seconds=float(max_seconds),
        stream_max_chars=_int(table, "stream_max_chars", SlackConfig.stream_max_chars, 1000,
                              MAX_MESSAGE_CHARS),
        allow=_allow(table.get("allow", {})),
        auto_reply_channels=frozenset(auto),
        secrets=settings.secrets(),
    )
